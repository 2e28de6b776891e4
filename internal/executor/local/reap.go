package local

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"syscall"
)

// AttemptEnv and RunEnv are the variables that mark a local task's processes
// with its attempt and run, so they can be found after the agent died without
// a handle. Attempt ids are unique within one state store only; run ids are
// unique everywhere, so both must match.
const (
	AttemptEnv = "DRAY_ATTEMPT_ID"
	RunEnv     = "DRAY_RUN_ID"
)

// Reap kills every process on this host whose environment marks it as part
// of the attempt (RunEnv and AttemptEnv), wherever it went: its process
// group, a new session, a daemon. It returns how many it killed. It is for
// attempts whose agent died, when Recover has no handle or the processes left
// the group.
func Reap(runID string, attemptID int64) (int, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0, fmt.Errorf("list processes: %w", err)
	}
	marker := []byte(AttemptEnv + "=" + strconv.FormatInt(attemptID, 10) + "\x00")
	run := []byte(RunEnv + "=" + runID + "\x00")
	self := os.Getpid()
	killed := 0
	for _, ent := range entries {
		pid, err := strconv.Atoi(ent.Name())
		if err != nil || pid == self || pid <= 1 {
			continue
		}
		env, err := os.ReadFile("/proc/" + ent.Name() + "/environ")
		env = append(env, 0)
		if err != nil || !bytes.Contains(env, marker) || !bytes.Contains(env, run) {
			continue
		}
		if err := syscall.Kill(pid, syscall.SIGKILL); err == nil {
			killed++
		}
	}
	return killed, nil
}
