package local

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/dray-dev/dray/internal/executor"
	"github.com/dray-dev/dray/internal/executor/executortest"
)

// TestRecoverKillsLiveGroup checks that Recover kills an attempt whose
// process group still runs under its leader, and reports it lost.
func TestRecoverKillsLiveGroup(t *testing.T) {
	ctx := testCtx(t)
	e := newTestExecutor(t)
	rec := executortest.NewRecorder()
	h, err := e.Start(ctx, &executor.Spec{Run: `sleep 300 & echo "child $!"; echo ready; wait`}, rec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.Stop(context.Background(), 0) })
	if err := rec.WaitFor(ctx, executor.Stdout, "ready"); err != nil {
		t.Fatal(err)
	}
	child := childPIDs(t, rec.Texts(executor.Stdout))[0]
	killOnCleanup(t, child)

	// A second executor stands for the restarted agent.
	got, err := newTestExecutor(t).Recover(ctx, &executor.Spec{}, h.State(), nil)
	if !errors.Is(err, executor.ErrLost) || got != nil {
		t.Fatalf("Recover = %v, %v; want nil and an error wrapping ErrLost", got, err)
	}
	res, err := h.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if res.Reason != "killed by signal 9" {
		t.Fatalf("result of the recovered attempt %+v; want killed by signal 9", res)
	}
	waitGone(t, ctx, child)
}

// TestRecoverKillsOrphans checks the usual case after an agent crash: the
// leader died with the agent (Pdeathsig), its background children did not.
func TestRecoverKillsOrphans(t *testing.T) {
	ctx := testCtx(t)
	st, child := orphanGroup(t)
	if !processAlive(child) {
		t.Fatalf("orphan %d is not running before Recover", child)
	}
	dir := filepath.Join(t.TempDir(), "dray-outputs-123")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	st.Outputs = filepath.Join(dir, "7-1.json")
	if err := os.WriteFile(st.Outputs, []byte("{}"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := newTestExecutor(t).Recover(ctx, &executor.Spec{}, mustJSON(t, st), nil)
	if !errors.Is(err, executor.ErrLost) {
		t.Fatalf("Recover error %v; want one wrapping ErrLost", err)
	}
	waitGone(t, ctx, child)
	if _, err := os.Stat(st.Outputs); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("outputs file %s still there after Recover (%v)", st.Outputs, err)
	}
}

// orphanGroup starts a process group whose leader exits at once and leaves a
// background child, as an agent crash would. It returns the state an agent
// would have saved and the child's pid.
func orphanGroup(t *testing.T) (procState, int) {
	t.Helper()
	cmd := exec.Command("sh", "-c", `sleep 300 & echo $!`)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Not reaped yet, so its stat is still there even if it has exited.
	ps, err := readStat(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	child, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil {
		t.Fatal(err)
	}
	killOnCleanup(t, child)
	if err := cmd.Wait(); err != nil {
		t.Fatal(err)
	}
	return procState{PID: cmd.Process.Pid, PGID: cmd.Process.Pid, StartTime: ps.startTime}, child
}

// TestRecoverLeavesOthersAlone checks that Recover reports ErrLost without
// killing a process that is not the attempt's.
func TestRecoverLeavesOthersAlone(t *testing.T) {
	other := exec.Command("sleep", "300")
	other.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := other.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = other.Process.Kill(); _ = other.Wait() })
	ps, err := readStat(other.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	pid := other.Process.Pid

	// A free pid: one that existed and was reaped. Reuse within the test
	// is possible but harmless: a pid with another start time is left alone.
	gone := exec.Command("true")
	if err := gone.Run(); err != nil {
		t.Fatal(err)
	}
	free := gone.Process.Pid
	keep := filepath.Join(t.TempDir(), "outputs.json")
	if err := os.WriteFile(keep, []byte("{}"), 0o600); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name  string
		state string
	}{
		{"pid reused by another process", string(mustJSON(t, procState{PID: pid, PGID: pid, StartTime: ps.startTime + 1}))},
		{"pid reused, leader started earlier", string(mustJSON(t, procState{PID: pid, PGID: pid, StartTime: ps.startTime - 1}))},
		{"start time unknown", string(mustJSON(t, procState{PID: pid, PGID: pid}))},
		{"pid does not exist", string(mustJSON(t, procState{PID: free, PGID: free, StartTime: ps.startTime}))},
		{"pid beyond pid_max", `{"pid": 1073741824, "pgid": 1073741824, "start_time": 1}`},
		{"pid 1", `{"pid": 1, "pgid": 1, "start_time": 1}`},
		{"pid 0", `{"pid": 0, "pgid": 0, "start_time": 1}`},
		{"negative pid", `{"pid": -1, "pgid": -1, "start_time": 1}`},
		{"not JSON", `pid 42`},
		{"empty", ``},
		{"a file outside the executor's folders is kept", fmt.Sprintf(`{"pid": 1073741824, "pgid": 1073741824, "start_time": 1, "outputs": %q}`, keep)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := testCtx(t)
			h, err := newTestExecutor(t).Recover(ctx, &executor.Spec{}, []byte(tt.state), nil)
			if !errors.Is(err, executor.ErrLost) || h != nil {
				t.Fatalf("Recover = %v, %v; want nil and an error wrapping ErrLost", h, err)
			}
			if !processAlive(pid) {
				t.Fatalf("Recover killed process %d, which is not the attempt's", pid)
			}
		})
	}
	if _, err := os.Stat(keep); err != nil {
		t.Fatalf("Recover removed %s, which is not an outputs file of the executor: %v", keep, err)
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestParseStat(t *testing.T) {
	tail := " 100 100 0 -1 4194560 97 0 0 0 0 0 0 0 20 0 1 0 123456 2396160 211 18446744073709551615"
	tests := []struct {
		name    string
		stat    string
		want    procStat
		wantErr bool
	}{
		{"plain", "42 (sleep) S 1" + tail, procStat{state: 'S', pgrp: 100, startTime: 123456}, false},
		{"name with spaces and parentheses", "42 (a) b) (c) Z 1" + tail, procStat{state: 'Z', pgrp: 100, startTime: 123456}, false},
		{"no name", "42 sleep S 1" + tail, procStat{}, true},
		{"too short", "42 (sleep) S 1 100", procStat{}, true},
		{"bad start time", "42 (sleep) S 1" + strings.Replace(tail, "123456", "x", 1), procStat{}, true},
		{"empty", "", procStat{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseStat([]byte(tt.stat))
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Fatalf("parseStat = %+v, %v; want %+v, error %v", got, err, tt.want, tt.wantErr)
			}
		})
	}
}

func TestReadStatSelf(t *testing.T) {
	ps, err := readStat(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if ps.pgrp != syscall.Getpgrp() || ps.startTime == 0 || ps.state == 'Z' {
		t.Fatalf("readStat(self) = %+v; want pgrp %d, a start time, a live state", ps, syscall.Getpgrp())
	}
	if _, err := readStat(1 << 30); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("readStat of a missing pid: %v; want ErrNotExist", err)
	}
}
