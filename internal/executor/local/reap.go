package local

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"syscall"
)

// AttemptEnv is the variable that marks a local task's processes with its
// attempt id, so they can be found after the agent died without a handle.
const AttemptEnv = "DRAY_ATTEMPT_ID"

// Reap kills every process on this host whose environment marks it as part
// of the attempt (AttemptEnv), wherever it went: its process group, a new
// session, a daemon. It returns how many it killed. It is for attempts whose
// agent died, when Recover has no handle or the processes left the group.
func Reap(attemptID int64) (int, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0, fmt.Errorf("list processes: %w", err)
	}
	marker := []byte(AttemptEnv + "=" + strconv.FormatInt(attemptID, 10) + "\x00")
	self := os.Getpid()
	killed := 0
	for _, ent := range entries {
		pid, err := strconv.Atoi(ent.Name())
		if err != nil || pid == self || pid <= 1 {
			continue
		}
		env, err := os.ReadFile("/proc/" + ent.Name() + "/environ")
		if err != nil || !bytes.Contains(append(env, 0), marker) {
			continue
		}
		if err := syscall.Kill(pid, syscall.SIGKILL); err == nil {
			killed++
		}
	}
	return killed, nil
}
