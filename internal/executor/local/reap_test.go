package local

import (
	"context"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Reap finds an attempt's processes by their environment, even one that left
// the process group with setsid, and leaves other processes alone: other
// attempts, and the same attempt id of another project's run.
func TestReap(t *testing.T) {
	start := func(run, id string) int {
		t.Helper()
		cmd := exec.Command("sh", "-c", "setsid sleep 300 > /dev/null 2>&1 & echo $!")
		cmd.Env = append(cmd.Environ(), AttemptEnv+"="+id, RunEnv+"="+run)
		out, err := cmd.Output()
		if err != nil {
			t.Fatal(err)
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(out)))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { syscall.Kill(pid, syscall.SIGKILL) })
		return pid
	}
	mine, other, prefix, otherRun := start("r1", "4242"), start("r1", "4243"), start("r1", "42"), start("r2", "4242")
	n, err := Reap("r1", 4242)
	if err != nil || n != 1 {
		t.Fatalf("Reap = %d, %v; want 1 killed", n, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for alive(mine) {
		if ctx.Err() != nil {
			t.Fatalf("process %d of the attempt is still alive", mine)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if !alive(other) || !alive(prefix) || !alive(otherRun) {
		t.Error("Reap killed a process of another attempt, or of the same attempt id in another run")
	}
}

// alive reports whether pid exists and is not a zombie.
func alive(pid int) bool {
	st, err := readStat(pid)
	return err == nil && st.state != 'Z'
}
