package crashtest

import (
	"bufio"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Environment variables the test gives the processes it starts, which their
// tasks inherit.
const (
	// envMark holds a value unique to one test, so its processes can be
	// found on the host (see strays).
	envMark = "DRAY_CRASHTEST_MARK"
	// envGen is the generation of the process that started a task.
	envGen = "DRAY_CRASHTEST_GEN"
)

// entry is one line of the ledger.
type entry struct {
	event   string // start or end
	at      time.Time
	gen     int // of the server whose agent ran the task
	run     string
	task    string
	index   int
	number  int   // attempt number
	attempt int64 // attempt id
	line    string
}

// instance names a task instance: a task of a run, and its for_each index (0
// for an ordinary task).
type instance struct {
	run   string
	task  string
	index int
}

func (in instance) String() string {
	return fmt.Sprintf("run %s task %s[%d]", in.run, in.task, in.index)
}

// readLedger parses the ledger that the tasks (testdata/task) wrote.
func readLedger(path string) ([]entry, error) {
	f, err := os.Open(path)
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []entry
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		fields := strings.Fields(line)
		bad := func(what string) error { return fmt.Errorf("%s:%d: %s in %q", path, n, what, line) }
		if len(fields) == 0 {
			continue // each record starts a line of its own
		}
		if len(fields) < 8 && (fields[0] == "start" || fields[0] == "end") {
			// A record cut short by a SIGKILL of its task (alone on its
			// line): the task was killed before it could report, so its
			// attempt did not succeed, and nothing rests on the record.
			continue
		}
		if len(fields) != 8 || (fields[0] != "start" && fields[0] != "end") {
			return nil, bad("not a ledger line")
		}
		nums := make([]int64, 0, 5)
		for _, i := range []int{1, 2, 5, 6, 7} {
			v, err := strconv.ParseInt(fields[i], 10, 64)
			if err != nil {
				return nil, bad("field " + strconv.Itoa(i+1) + " is not a number")
			}
			nums = append(nums, v)
		}
		out = append(out, entry{
			event: fields[0], at: time.Unix(0, nums[0]), gen: int(nums[1]), run: fields[3], task: fields[4],
			index: int(nums[2]), number: int(nums[3]), attempt: nums[4], line: line,
		})
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	slices.SortStableFunc(out, func(a, b entry) int { return a.at.Compare(b.at) })
	return out, nil
}
