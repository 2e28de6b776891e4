package local

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dray-dev/dray/internal/executor"
	"github.com/dray-dev/dray/internal/executor/executortest"
)

const testTimeout = 30 * time.Second

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func newTestExecutor(t *testing.T) *Executor {
	return New(Config{Logger: testLogger(t), TempDir: t.TempDir()})
}

func TestConformance(t *testing.T) {
	executortest.Run(t,
		func(t *testing.T) executor.Executor { return newTestExecutor(t) },
		executortest.Options{
			Spec: func(t *testing.T, shell string) *executor.Spec {
				return &executor.Spec{Run: shell, Workdir: t.TempDir()}
			},
			Leftovers: leftovers,
			Timeout:   testTimeout,
		})
}

// leftovers reports the live processes of h's process group and the live
// processes named by "child PID" lines.
func leftovers(ctx context.Context, t *testing.T, h executor.Handle, stdout []string) ([]string, error) {
	var st procState
	if err := json.Unmarshal(h.State(), &st); err != nil {
		return nil, fmt.Errorf("decode state %q: %w", h.State(), err)
	}
	var left []string
	alive, err := groupAlive(st.PGID, st.StartTime)
	if err != nil {
		return nil, err
	}
	if alive {
		left = append(left, fmt.Sprintf("process group %d", st.PGID))
	}
	for _, pid := range childPIDs(t, stdout) {
		if processAlive(pid) {
			left = append(left, fmt.Sprintf("process %d", pid))
		}
	}
	return left, nil
}

// childPIDs returns the pids named by lines "child PID".
func childPIDs(t *testing.T, stdout []string) []int {
	t.Helper()
	var pids []int
	for _, l := range stdout {
		if s, ok := strings.CutPrefix(l, "child "); ok {
			pid, err := strconv.Atoi(s)
			if err != nil || pid <= 1 {
				t.Fatalf("bad line %q: want \"child PID\"", l)
			}
			pids = append(pids, pid)
		}
	}
	return pids
}

// processAlive reports whether pid is a process that has not exited. A
// zombie has exited: an orphan's zombie stays until PID 1 reaps it, which a
// container's PID 1 may never do.
func processAlive(pid int) bool {
	ps, err := readStat(pid)
	return err == nil && ps.state != 'Z' && ps.state != 'X'
}

// waitGone waits until pid has exited.
func waitGone(t *testing.T, ctx context.Context, pid int) {
	t.Helper()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for processAlive(pid) {
		select {
		case <-tick.C:
		case <-ctx.Done():
			t.Fatalf("process %d still alive: %v", pid, ctx.Err())
		}
	}
}

// killOnCleanup makes sure pid is dead when the test ends, whatever happened.
func killOnCleanup(t *testing.T, pid int) {
	t.Cleanup(func() {
		if pid > 1 && processAlive(pid) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	})
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

// run starts spec on e and waits for it to end.
func run(t *testing.T, ctx context.Context, e *Executor, spec *executor.Spec) (executor.Result, *executortest.Recorder) {
	t.Helper()
	rec := executortest.NewRecorder()
	h, err := e.Start(ctx, spec, rec)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { _ = h.Stop(context.Background(), 0) })
	res, err := h.Wait(ctx)
	if err != nil {
		t.Fatalf("Wait: %v (stdout %q, stderr %q)", err, rec.Texts(executor.Stdout), rec.Texts(executor.Stderr))
	}
	return res, rec
}

func TestStartErrors(t *testing.T) {
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	tests := []struct {
		name string
		ctx  context.Context
		spec *executor.Spec
		want string
	}{
		{"missing workdir", nil, &executor.Spec{Run: "true", Workdir: "/nonexistent/dray"}, "workdir /nonexistent/dray"},
		{"workdir is a file", nil, &executor.Spec{Run: "true", Workdir: file}, "is not a directory"},
		{"image", nil, &executor.Spec{Image: "busybox", Command: []string{"true"}}, "runs processes, not images; use the docker executor"},
		{"nothing to run", nil, &executor.Spec{}, "neither run nor command"},
		{"empty command", nil, &executor.Spec{Command: []string{""}}, "neither run nor command"},
		{"shell missing", nil, &executor.Spec{Run: "true", Options: map[string]any{"shell": "/nonexistent/sh"}}, "/nonexistent/sh"},
		{"shell not a string", nil, &executor.Spec{Run: "true", Options: map[string]any{"shell": 3}}, "option shell"},
		{"command missing", nil, &executor.Spec{Command: []string{"dray-no-such-program"}}, "dray-no-such-program"},
		{"bad env name", nil, &executor.Spec{Run: "true", Env: map[string]string{"A=B": "c"}}, `env name "A=B"`},
		{"canceled context", canceled, &executor.Spec{Run: "true"}, "context canceled"},
		{"no spec", nil, nil, "no spec"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tmp := t.TempDir()
			e := New(Config{Logger: testLogger(t), TempDir: tmp})
			ctx := tt.ctx
			if ctx == nil {
				ctx = testCtx(t)
			}
			h, err := e.Start(ctx, tt.spec, nil)
			if err == nil {
				_ = h.Stop(context.Background(), 0)
				t.Fatalf("Start succeeded; want an error containing %q", tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Start error %q; want it to contain %q", err, tt.want)
			}
			leftovers, _ := filepath.Glob(filepath.Join(tmp, "*", "*"))
			if len(leftovers) != 0 {
				t.Fatalf("Start left files behind: %v", leftovers)
			}
		})
	}
}

func TestCommandAndShell(t *testing.T) {
	tests := []struct {
		name string
		spec executor.Spec
		want []string
	}{
		{"command is argv, not shell", executor.Spec{Command: []string{"printf", `%s|%s\n`, "a b", "$HOME"}}, []string{"a b|$HOME"}},
		{"run wins over command", executor.Spec{Run: "echo run", Command: []string{"echo", "command"}}, []string{"run"}},
		{"shell option", executor.Spec{Run: `echo "${BASH_VERSION:+bash}"`, Options: map[string]any{"shell": "bash"}}, []string{"bash"}},
		{"default shell is sh", executor.Spec{Run: `echo "${BASH_VERSION:-sh}"`}, []string{"sh"}},
		{"workdir", executor.Spec{Run: "pwd", Workdir: "/"}, []string{"/"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx := testCtx(t)
			res, rec := run(t, ctx, newTestExecutor(t), &tt.spec)
			if res.ExitCode != 0 {
				t.Fatalf("result %+v; stderr %q", res, rec.Texts(executor.Stderr))
			}
			if got := rec.Texts(executor.Stdout); !equal(got, tt.want) {
				t.Fatalf("stdout %q; want %q", got, tt.want)
			}
		})
	}
}

func equal(a, b []string) bool {
	return strings.Join(a, "\x00") == strings.Join(b, "\x00") && len(a) == len(b)
}

func TestEnviron(t *testing.T) {
	tests := []struct {
		name string
		base []string
		env  map[string]string
		want []string
	}{
		{
			name: "agent credentials dropped",
			base: []string{"PATH=/bin", "DRAY_SECRET_DB=x", "DRAY_TOKEN=t", "DRAY_ADMIN_PASSWORD=p", "DRAY_SERVER=https://d", "DRAY_SECRETX=kept"},
			want: []string{"DRAY_OUTPUT=/o", "DRAY_SECRETX=kept", "DRAY_SERVER=https://d", "PATH=/bin"},
		},
		{
			name: "spec env wins over the agent's",
			base: []string{"A=agent", "B=agent"},
			env:  map[string]string{"A": "spec", "C": ""},
			want: []string{"A=spec", "B=agent", "C=", "DRAY_OUTPUT=/o"},
		},
		{
			name: "spec may pass a credential on purpose",
			base: []string{"DRAY_TOKEN=agent"},
			env:  map[string]string{"DRAY_TOKEN": "task"},
			want: []string{"DRAY_OUTPUT=/o", "DRAY_TOKEN=task"},
		},
		{
			name: "DRAY_OUTPUT is the executor's",
			base: []string{"DRAY_OUTPUT=/agent"},
			env:  map[string]string{"DRAY_OUTPUT": "/spec"},
			want: []string{"DRAY_OUTPUT=/o"},
		},
		{
			name: "values with = and malformed entries",
			base: []string{"A=b=c", "junk"},
			want: []string{"A=b=c", "DRAY_OUTPUT=/o"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := environ(tt.base, tt.env, "/o"); !equal(got, tt.want) {
				t.Fatalf("environ = %q; want %q", got, tt.want)
			}
		})
	}
}

// TestEnvHidesAgentCredentials checks, end to end, that a task does not see
// the agent's credentials. Not parallel: it sets the process environment.
func TestEnvHidesAgentCredentials(t *testing.T) {
	t.Setenv("DRAY_SECRET_X", "agent-secret")
	t.Setenv("DRAY_TOKEN", "agent-token")
	t.Setenv("DRAY_ADMIN_PASSWORD", "agent-password")
	t.Setenv("DRAY_TEST_INHERITED", "agent")
	t.Setenv("DRAY_TEST_OVERRIDDEN", "agent")
	ctx := testCtx(t)
	res, rec := run(t, ctx, newTestExecutor(t), &executor.Spec{
		Run: "env",
		Env: map[string]string{"DRAY_TEST_OVERRIDDEN": "spec"},
	})
	if res.ExitCode != 0 {
		t.Fatalf("result %+v", res)
	}
	got := map[string]string{}
	for _, l := range rec.Texts(executor.Stdout) {
		if k, v, ok := strings.Cut(l, "="); ok {
			got[k] = v
		}
	}
	for _, k := range []string{"DRAY_SECRET_X", "DRAY_TOKEN", "DRAY_ADMIN_PASSWORD"} {
		if v, ok := got[k]; ok {
			t.Errorf("task sees %s=%q; want it hidden", k, v)
		}
	}
	if got["DRAY_TEST_INHERITED"] != "agent" || got["DRAY_TEST_OVERRIDDEN"] != "spec" {
		t.Errorf("task sees DRAY_TEST_INHERITED=%q, DRAY_TEST_OVERRIDDEN=%q; want agent, spec",
			got["DRAY_TEST_INHERITED"], got["DRAY_TEST_OVERRIDDEN"])
	}
	for _, l := range rec.Texts(executor.Stdout) {
		if strings.Contains(l, "agent-secret") || strings.Contains(l, "agent-token") || strings.Contains(l, "agent-password") {
			t.Errorf("task output %q holds an agent credential", l)
		}
	}
}

func TestLines(t *testing.T) {
	const mib = 1 << 20
	tests := []struct {
		name       string
		run        string
		wantStdout []string
		wantStderr []string
	}{
		{"line endings", `printf 'a\r\nb\n\nc\r\r\n'`, []string{"a", "b", "", "c\r"}, nil},
		{"last line without newline", `printf 'one\ntwo'; printf 'e1\ne2' >&2`, []string{"one", "two"}, []string{"e1", "e2"}},
		{"no output", `true`, nil, nil},
		{"empty last line is not a line", `printf 'x\n'`, []string{"x"}, nil},
		{"1.5 MiB line arrives whole", fmt.Sprintf(`head -c %d /dev/zero | tr '\0' x; echo; echo next`, mib+mib/2),
			[]string{strings.Repeat("x", mib+mib/2), "next"}, nil},
		{"outputs marker of 1 MiB arrives whole", fmt.Sprintf(`printf '::dray-output::'; head -c %d /dev/zero | tr '\0' y; echo`, mib),
			[]string{"::dray-output::" + strings.Repeat("y", mib)}, nil},
		{"2 MiB line and CRLF is one line", fmt.Sprintf(`head -c %d /dev/zero | tr '\0' z; printf '\r\n'`, maxLine),
			[]string{strings.Repeat("z", maxLine)}, nil},
		{"5 MiB line is split in 2 MiB pieces", fmt.Sprintf(`head -c %d /dev/zero | tr '\0' w; echo`, 5*mib),
			[]string{strings.Repeat("w", 2*mib), strings.Repeat("w", 2*mib), strings.Repeat("w", mib)}, nil},
		{"long last line without newline is split", fmt.Sprintf(`head -c %d /dev/zero | tr '\0' v`, 3*mib),
			[]string{strings.Repeat("v", 2*mib), strings.Repeat("v", mib)}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx := testCtx(t)
			res, rec := run(t, ctx, newTestExecutor(t), &executor.Spec{Run: tt.run})
			if res.ExitCode != 0 {
				t.Fatalf("result %+v; stderr %q", res, rec.Texts(executor.Stderr))
			}
			for _, s := range []struct {
				stream string
				want   []string
			}{{executor.Stdout, tt.wantStdout}, {executor.Stderr, tt.wantStderr}} {
				got := rec.Texts(s.stream)
				if !equal(got, s.want) {
					t.Fatalf("%s: %s; want %s", s.stream, describe(got), describe(s.want))
				}
			}
		})
	}
}

// describe shortens lines for a failure message.
func describe(lines []string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d lines [", len(lines))
	for i, l := range lines {
		if i > 0 {
			b.WriteString(", ")
		}
		if len(l) > 40 {
			fmt.Fprintf(&b, "%q... (%d bytes)", l[:40], len(l))
		} else {
			fmt.Fprintf(&b, "%q", l)
		}
	}
	b.WriteString("]")
	return b.String()
}

func TestResult(t *testing.T) {
	tests := []struct {
		name   string
		run    string
		stop   bool
		want   executor.Result
		stdout []string
	}{
		{"success", `exit 0`, false, executor.Result{}, nil},
		{"exit code", `exit 42`, false, executor.Result{ExitCode: 42, Reason: "exit 42"}, nil},
		{"killed by a signal of its own", `kill -KILL $$`, false, executor.Result{ExitCode: -1, Reason: "killed by signal 9"}, nil},
		{"stopped with SIGTERM", `echo ready; sleep 60`, true, executor.Result{ExitCode: -1, Reason: "killed by signal 15"}, []string{"ready"}},
		{"TERM ignored, stopped with SIGKILL", `trap '' TERM; echo ready; sleep 60`, true, executor.Result{ExitCode: -1, Reason: "killed by signal 9"}, []string{"ready"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx := testCtx(t)
			rec := executortest.NewRecorder()
			h, err := newTestExecutor(t).Start(ctx, &executor.Spec{Run: tt.run}, rec)
			if err != nil {
				t.Fatalf("Start: %v", err)
			}
			t.Cleanup(func() { _ = h.Stop(context.Background(), 0) })
			if tt.stop {
				if err := rec.WaitFor(ctx, executor.Stdout, "ready"); err != nil {
					t.Fatal(err)
				}
				if err := h.Stop(ctx, 200*time.Millisecond); err != nil {
					t.Fatalf("Stop: %v", err)
				}
			}
			res, err := h.Wait(ctx)
			if err != nil {
				t.Fatalf("Wait: %v", err)
			}
			if res.ExitCode != tt.want.ExitCode || res.Reason != tt.want.Reason {
				t.Fatalf("result: exit code %d, reason %q; want %d, %q", res.ExitCode, res.Reason, tt.want.ExitCode, tt.want.Reason)
			}
			if got := rec.Texts(executor.Stdout); !equal(got, tt.stdout) {
				t.Fatalf("stdout %q; want %q", got, tt.stdout)
			}
		})
	}
}

func TestOutputs(t *testing.T) {
	tests := []struct {
		name     string
		run      string
		want     string
		wantSize int64
		wantErr  string
	}{
		{"json", `printf '{"a": 1}' > "$DRAY_OUTPUT"`, `{"a": 1}`, 8, ""},
		{"none", `true`, "", 0, ""},
		{"empty file", `: > "$DRAY_OUTPUT"`, "", 0, ""},
		{"over the limit is cut at MaxOutputs+1", fmt.Sprintf(`head -c %d /dev/zero | tr '\0' o > "$DRAY_OUTPUT"`, 3*executor.MaxOutputs/2),
			strings.Repeat("o", executor.MaxOutputs+1), 3 * executor.MaxOutputs / 2, ""},
		{"a FIFO does not block Wait", `mkfifo "$DRAY_OUTPUT"`, "", 0, "not a regular file"},
		{"a directory", `mkdir "$DRAY_OUTPUT"`, "", 0, "not a regular file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx := testCtx(t)
			h, err := newTestExecutor(t).Start(ctx, &executor.Spec{Run: tt.run}, nil)
			if err != nil {
				t.Fatalf("Start: %v", err)
			}
			res, err := h.Wait(ctx)
			if err != nil {
				t.Fatalf("Wait: %v", err)
			}
			if tt.wantErr == "" && res.OutputsError != "" || tt.wantErr != "" && !strings.Contains(res.OutputsError, tt.wantErr) {
				t.Fatalf("OutputsError %q; want %q", res.OutputsError, tt.wantErr)
			}
			if res.ExitCode != 0 {
				t.Fatalf("result %+v; want exit 0", res)
			}
			if string(res.Outputs) != tt.want || res.OutputsSize != tt.wantSize {
				t.Fatalf("outputs %d bytes (size %d); want %d bytes (size %d)", len(res.Outputs), res.OutputsSize, len(tt.want), tt.wantSize)
			}
		})
	}
}

// TestOutputsFile checks that each attempt's DRAY_OUTPUT is a file of its own
// that does not exist when it starts, and is gone after Wait.
func TestOutputsFile(t *testing.T) {
	ctx := testCtx(t)
	tmp := t.TempDir()
	e := New(Config{Logger: testLogger(t), TempDir: tmp})
	var files []string
	for range 2 {
		res, rec := run(t, ctx, e, &executor.Spec{Run: `echo "$DRAY_OUTPUT"; test ! -e "$DRAY_OUTPUT" && echo '{}' > "$DRAY_OUTPUT"`})
		if res.ExitCode != 0 {
			t.Fatalf("result %+v: DRAY_OUTPUT existed already or could not be written", res)
		}
		out := rec.Texts(executor.Stdout)
		if len(out) != 1 || !strings.HasPrefix(out[0], tmp+"/") {
			t.Fatalf("DRAY_OUTPUT = %q; want a file under %s", out, tmp)
		}
		if _, err := os.Stat(out[0]); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("%s is still there after Wait (%v)", out[0], err)
		}
		files = append(files, out[0])
	}
	if files[0] == files[1] {
		t.Fatalf("two attempts share the outputs file %s", files[0])
	}
}

// TestState checks that State names the process group and the start time of
// its leader.
func TestState(t *testing.T) {
	ctx := testCtx(t)
	rec := executortest.NewRecorder()
	h, err := newTestExecutor(t).Start(ctx, &executor.Spec{Run: `echo "pid $$"; exec sleep 60`}, rec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.Stop(context.Background(), 0) })
	var st procState
	if err := json.Unmarshal(h.State(), &st); err != nil {
		t.Fatalf("decode State %q: %v", h.State(), err)
	}
	if err := rec.WaitFor(ctx, executor.Stdout, fmt.Sprintf("pid %d", st.PID)); err != nil {
		t.Fatalf("State %s does not name the task's shell: %v (stdout %q)", h.State(), err, rec.Texts(executor.Stdout))
	}
	ps, err := readStat(st.PID)
	if err != nil {
		t.Fatal(err)
	}
	if st.PGID != st.PID || ps.pgrp != st.PID || st.StartTime == 0 || st.StartTime != ps.startTime {
		t.Fatalf("State %s; want pgid = pid = %d (the group leader) and start_time %d", h.State(), ps.pgrp, ps.startTime)
	}
	if err := h.Stop(ctx, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Wait(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestBackgroundChildren checks that background children die with the task,
// whether it is stopped or exits on its own.
func TestBackgroundChildren(t *testing.T) {
	tests := []struct {
		name string
		run  string
		stop bool
	}{
		{"stopped", `sleep 300 & echo "child $!"; echo ready; wait`, true},
		{"stopped with its child ignoring TERM", `(trap '' TERM; exec sleep 300) & echo "child $!"; echo ready; wait`, true},
		{"main process exits", `sleep 300 & echo "child $!"; echo ready`, false},
		{"grandchild", `sh -c 'sleep 300 & echo "child $!"; echo ready; wait' & wait`, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx := testCtx(t)
			rec := executortest.NewRecorder()
			h, err := newTestExecutor(t).Start(ctx, &executor.Spec{Run: tt.run}, rec)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = h.Stop(context.Background(), 0) })
			if err := rec.WaitFor(ctx, executor.Stdout, "ready"); err != nil {
				t.Fatal(err)
			}
			if tt.stop {
				if err := h.Stop(ctx, 5*time.Second); err != nil {
					t.Fatalf("Stop: %v", err)
				}
			}
			if _, err := h.Wait(ctx); err != nil {
				t.Fatalf("Wait: %v", err)
			}
			pids := childPIDs(t, rec.Texts(executor.Stdout))
			if len(pids) != 1 {
				t.Fatalf("stdout %q; want one child line", rec.Texts(executor.Stdout))
			}
			killOnCleanup(t, pids[0])
			waitGone(t, ctx, pids[0])
		})
	}
}

// TestStopContext checks that Stop kills at once when its context ends before
// the grace period does.
func TestStopContext(t *testing.T) {
	ctx := testCtx(t)
	rec := executortest.NewRecorder()
	h, err := newTestExecutor(t).Start(ctx, &executor.Spec{Run: `trap '' TERM; echo ready; sleep 60`}, rec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.Stop(context.Background(), 0) })
	if err := rec.WaitFor(ctx, executor.Stdout, "ready"); err != nil {
		t.Fatal(err)
	}
	canceled, cancel := context.WithCancel(ctx)
	cancel()
	if err := h.Stop(canceled, time.Hour); !errors.Is(err, context.Canceled) {
		t.Fatalf("Stop with a canceled context = %v; want an error wrapping context.Canceled", err)
	}
	res, err := h.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if res.Reason != "killed by signal 9" {
		t.Fatalf("result %+v; want killed by signal 9", res)
	}
}

// TestWaitDelay checks that a process that left the task's process group and
// keeps its stdout open does not make Wait hang.
func TestWaitDelay(t *testing.T) {
	ctx := testCtx(t)
	e := New(Config{Logger: testLogger(t), TempDir: t.TempDir(), WaitDelay: 100 * time.Millisecond})
	// setsid puts the child in a session of its own, out of reach of the group
	// kill; the FIFO makes the task wait until it got there.
	res, rec := run(t, ctx, e, &executor.Spec{
		Run:     `mkfifo f; setsid sh -c 'echo "child $$"; echo x > f; exec sleep 300' & read x < f; echo done`,
		Workdir: t.TempDir(),
	})
	pids := childPIDs(t, rec.Texts(executor.Stdout))
	if len(pids) != 1 {
		t.Fatalf("stdout %q; want a child line", rec.Texts(executor.Stdout))
	}
	killOnCleanup(t, pids[0])
	if res.ExitCode != 0 {
		t.Fatalf("result %+v; want success", res)
	}
	if got := rec.Texts(executor.Stdout); got[len(got)-1] != "done" {
		t.Fatalf("stdout %q; want it to end with done", got)
	}
	// The escaped process is out of the executor's reach, not killed.
	if !processAlive(pids[0]) {
		t.Fatalf("process %d that left the group is gone; the test did not test WaitDelay", pids[0])
	}
}

// TestPdeathsig checks that a task dies with the agent that started it. The
// agent is this test binary run again as TestHelperAgent.
func TestPdeathsig(t *testing.T) {
	ctx := testCtx(t)
	agent := exec.Command(os.Args[0], "-test.run=^TestHelperAgent$", "-test.count=1")
	agent.Env = append(os.Environ(), "DRAY_TEST_HELPER_AGENT=1")
	stdin, err := agent.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	defer stdin.Close()
	stdout, err := agent.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	agent.Stderr = t.Output()
	if err := agent.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = agent.Process.Kill(); _ = agent.Wait() })

	// The helper prints the task's pid once it has started it.
	lines := make(chan string)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	var task int
	for task == 0 {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatal("helper agent ended without starting a task")
			}
			if s, found := strings.CutPrefix(l, "task "); found {
				task, _ = strconv.Atoi(s)
			}
		case <-ctx.Done():
			t.Fatalf("helper agent did not start a task: %v", ctx.Err())
		}
	}
	killOnCleanup(t, task)
	if !processAlive(task) {
		t.Fatalf("task %d is not running before the agent dies", task)
	}
	if err := agent.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitGone(t, ctx, task)
}

// TestHelperAgent is TestPdeathsig's agent: it starts a task, prints its pid
// and waits for stdin to close. Run otherwise, it does nothing.
func TestHelperAgent(t *testing.T) {
	if os.Getenv("DRAY_TEST_HELPER_AGENT") != "1" {
		return
	}
	h, err := New(Config{Logger: testLogger(t)}).Start(context.Background(), &executor.Spec{Command: []string{"sleep", "300"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var st procState
	if err := json.Unmarshal(h.State(), &st); err != nil {
		t.Fatal(err)
	}
	fmt.Printf("task %d\n", st.PID)
	_, _ = io.Copy(io.Discard, os.Stdin)
	_ = h.Stop(context.Background(), 0)
}

// TestNoGoroutineLeak checks that every goroutine of an attempt ends once it
// has ended: normally, stopped, or cut short by WaitDelay. Not parallel, so
// that other tests' goroutines do not count.
func TestNoGoroutineLeak(t *testing.T) {
	ctx := testCtx(t)
	before := runtime.NumGoroutine()
	e := New(Config{Logger: testLogger(t), TempDir: t.TempDir(), WaitDelay: 50 * time.Millisecond})
	for _, script := range []string{
		`echo hi; echo ho >&2`,
		`exit 3`,
		`mkfifo f; setsid sh -c 'echo "child $$"; echo x > f; exec sleep 300' & read x < f`,
	} {
		_, rec := run(t, ctx, e, &executor.Spec{Run: script, Workdir: t.TempDir()})
		for _, pid := range childPIDs(t, rec.Texts(executor.Stdout)) {
			killOnCleanup(t, pid)
		}
	}
	h, err := e.Start(ctx, &executor.Spec{Run: `sleep 60`}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Stop(ctx, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	// Goroutines end just after they close what Wait waits for.
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for runtime.NumGoroutine() > before {
		select {
		case <-tick.C:
		case <-ctx.Done():
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines before, %d after:\n%s", before, runtime.NumGoroutine(), buf[:runtime.Stack(buf, true)])
		}
	}
}
