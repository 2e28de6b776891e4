// Package executortest is the conformance suite every executor passes: the
// local one, and later docker, ECS, Cloud Run and Kubernetes.
//
// An executor's test calls Run with a way to make the executor and a way to
// turn a shell line into a Spec for it. The shell lines use only what a static
// busybox has: sh, echo, printf, sleep, head, tr and /dev/zero.
package executortest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dray-dev/dray/internal/executor"
)

// Options say how to run the suite on one executor.
type Options struct {
	// Spec returns a Spec that runs shell, a POSIX shell line, on the executor
	// under test (for a container executor, with an image that has sh). The
	// suite may add to the returned Spec's Env. Required.
	Spec func(t *testing.T, shell string) *executor.Spec

	// Leftovers reports what of an attempt is still running after Wait has
	// returned (processes, containers, cloud tasks), one description each; none
	// means nothing is left. stdout is the attempt's stdout, which includes a
	// line "child PID" naming a background process the shell started. The suite
	// calls it repeatedly until it reports nothing or Timeout passes, since
	// killed things take a moment to go. Required.
	Leftovers func(ctx context.Context, t *testing.T, h executor.Handle, stdout []string) ([]string, error)

	// Timeout bounds each wait in a case: for a line, for Wait, for Stop. It
	// must be well under 60s, which is how long the tasks to be stopped would
	// otherwise run. Zero means 30s.
	Timeout time.Duration

	// Concurrent is how many attempts the concurrency case runs at once. Zero
	// means 20.
	Concurrent int

	// MergedStreams says the executor's platform keeps one stream (ECS's
	// CloudWatch Logs): stderr lines arrive as stdout, each stream's lines
	// in their order, but a stderr line may come before a stdout line the
	// task wrote earlier (the engine reads the two pipes on their own).
	MergedStreams bool
	// NoOutputsFile says the executor cannot read $DRAY_OUTPUT back after
	// the attempt (ECS): outputs come only from stdout marker lines, which
	// the agent reads, so the cases about the file are not run.
	NoOutputsFile bool
}

// Run runs the conformance suite as parallel subtests of t. newExec is called
// once per subtest and returns the executor under test.
func Run(t *testing.T, newExec func(t *testing.T) executor.Executor, opts Options) {
	if opts.Spec == nil || opts.Leftovers == nil {
		t.Fatal("executortest.Options: Spec and Leftovers are required")
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 30 * time.Second
	}
	if opts.Concurrent <= 0 {
		opts.Concurrent = 20
	}
	s := &suite{newExec: newExec, opts: opts}
	outputsFile := map[string]bool{"Outputs": true, "OutputsOverLimit": true}
	for _, c := range []struct {
		name string
		f    func(t *testing.T)
	}{
		{"Success", s.success},
		{"Stderr", s.stderr},
		{"ExitCode", s.exitCode},
		{"Outputs", s.outputs},
		{"NoOutputs", s.noOutputs},
		{"OutputsOverLimit", s.outputsOverLimit},
		{"Env", s.env},
		{"State", s.state},
		{"StartContextDoesNotBoundTask", s.startContext},
		{"WaitContext", s.waitContext},
		{"StopTerminates", s.stopTerminates},
		{"StopGraceful", s.stopGraceful},
		{"StopEscalatesToKill", s.stopKill},
		{"StopLeavesNothing", s.stopLeavesNothing},
		{"StopAfterEnd", s.stopAfterEnd},
		{"StopConcurrentWithWait", s.stopConcurrent},
		{"Concurrent", s.concurrent},
	} {
		if opts.NoOutputsFile && outputsFile[c.name] {
			continue
		}
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			c.f(t)
		})
	}
}

type suite struct {
	newExec func(t *testing.T) executor.Executor
	opts    Options
}

// attempt is one started attempt of a case.
type attempt struct {
	h   executor.Handle
	rec *Recorder
}

// start starts shell with env added to its Spec, and makes sure it is stopped
// when the test ends.
func (s *suite) start(t *testing.T, ctx context.Context, shell string, env map[string]string) attempt {
	t.Helper()
	spec := s.opts.Spec(t, shell)
	if len(env) > 0 && spec.Env == nil {
		spec.Env = map[string]string{}
	}
	for k, v := range env {
		spec.Env[k] = v
	}
	rec := NewRecorder()
	h, err := s.newExec(t).Start(ctx, spec, rec)
	if err != nil {
		t.Fatalf("Start(%q): %v", shell, err)
	}
	if h == nil {
		t.Fatalf("Start(%q) returned a nil handle and no error", shell)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), s.opts.Timeout)
		defer cancel()
		if err := h.Stop(ctx, 0); err != nil {
			t.Errorf("cleanup: Stop: %v", err)
		}
		if _, err := h.Wait(ctx); err != nil {
			t.Errorf("cleanup: Wait: %v", err)
		}
	})
	return attempt{h: h, rec: rec}
}

func (s *suite) ctx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), s.opts.Timeout)
	t.Cleanup(cancel)
	return ctx
}

// wait waits for a to end and fails the test if it cannot.
func (a attempt) wait(t *testing.T, ctx context.Context) executor.Result {
	t.Helper()
	res, err := a.h.Wait(ctx)
	if err != nil {
		t.Fatalf("Wait: %v (stdout %q, stderr %q)", err, a.rec.Texts(executor.Stdout), a.rec.Texts(executor.Stderr))
	}
	return res
}

// waitFor waits for a line on stdout.
func (a attempt) waitFor(t *testing.T, ctx context.Context, text string) {
	t.Helper()
	if err := a.rec.WaitFor(ctx, executor.Stdout, text); err != nil {
		t.Fatalf("%v (stdout %q, stderr %q)", err, a.rec.Texts(executor.Stdout), a.rec.Texts(executor.Stderr))
	}
}

func wantSuccess(t *testing.T, res executor.Result, a attempt) {
	t.Helper()
	if res.ExitCode != 0 || res.Reason != "" {
		t.Fatalf("result: exit code %d, reason %q; want 0, \"\" (stderr %q)", res.ExitCode, res.Reason, a.rec.Texts(executor.Stderr))
	}
}

func wantFailure(t *testing.T, res executor.Result) {
	t.Helper()
	if res.ExitCode == 0 || res.Reason == "" {
		t.Fatalf("result: exit code %d, reason %q; want a failure (non-zero code and a reason)", res.ExitCode, res.Reason)
	}
}

func wantLines(t *testing.T, a attempt, stream string, want []string) {
	t.Helper()
	got := a.rec.Texts(stream)
	if slices.Equal(got, want) {
		return
	}
	if len(got) > 20 || len(want) > 20 {
		for i := range min(len(got), len(want)) {
			if got[i] != want[i] {
				t.Fatalf("%s line %d = %q; want %q (%d lines; want %d)", stream, i+1, got[i], want[i], len(got), len(want))
			}
		}
		t.Fatalf("%s has %d lines; want %d", stream, len(got), len(want))
	}
	t.Fatalf("%s lines = %q; want %q", stream, got, want)
}

func (s *suite) success(t *testing.T) {
	ctx := s.ctx(t)
	before := time.Now()
	a := s.start(t, ctx, `i=1; while [ $i -le 100 ]; do echo "line $i"; i=$((i+1)); done`, nil)
	res := a.wait(t, ctx)
	after := time.Now()
	wantSuccess(t, res, a)
	var want []string
	for i := 1; i <= 100; i++ {
		want = append(want, fmt.Sprintf("line %d", i))
	}
	wantLines(t, a, executor.Stdout, want)
	wantLines(t, a, executor.Stderr, nil)

	var prev time.Time
	for i, l := range a.rec.Lines() {
		if l.Time.Before(before.Add(-time.Second)) || l.Time.After(after.Add(time.Second)) {
			t.Fatalf("line %d time %v is not between start %v and end %v", i+1, l.Time, before, after)
		}
		if l.Time.Before(prev) {
			t.Fatalf("line %d time %v is before the line before it (%v)", i+1, l.Time, prev)
		}
		prev = l.Time
	}

	// Every Wait returns the same result.
	again := a.wait(t, ctx)
	if again.ExitCode != res.ExitCode || again.Reason != res.Reason {
		t.Fatalf("second Wait = %+v; first was %+v", again, res)
	}
}

func (s *suite) stderr(t *testing.T) {
	ctx := s.ctx(t)
	a := s.start(t, ctx, `echo out; echo err1 >&2; echo err2 1>&2`, nil)
	wantSuccess(t, a.wait(t, ctx), a)
	if s.opts.MergedStreams {
		// One stream, as CloudWatch Logs keeps it: the engine reads stdout
		// and stderr on their own, so only the order within each is kept.
		got := a.rec.Texts(executor.Stdout)
		errs := slices.DeleteFunc(slices.Clone(got), func(l string) bool { return l == "out" })
		if len(got) != 3 || !slices.Contains(got, "out") || !slices.Equal(errs, []string{"err1", "err2"}) {
			t.Fatalf("stdout lines = %q; want \"out\", \"err1\" and \"err2\", with err1 before err2", got)
		}
	} else {
		wantLines(t, a, executor.Stdout, []string{"out"})
		wantLines(t, a, executor.Stderr, []string{"err1", "err2"})
	}
	for _, l := range a.rec.Lines() {
		if l.Stream != executor.Stdout && l.Stream != executor.Stderr {
			t.Fatalf("line %q has stream %q; want %q or %q", l.Text, l.Stream, executor.Stdout, executor.Stderr)
		}
	}
}

func (s *suite) exitCode(t *testing.T) {
	ctx := s.ctx(t)
	a := s.start(t, ctx, `echo bye; exit 3`, nil)
	res := a.wait(t, ctx)
	if res.ExitCode != 3 || res.Reason != "exit 3" {
		t.Fatalf("result: exit code %d, reason %q; want 3, \"exit 3\"", res.ExitCode, res.Reason)
	}
	wantLines(t, a, executor.Stdout, []string{"bye"})
}

func (s *suite) outputs(t *testing.T) {
	ctx := s.ctx(t)
	const out = `{"rows": 42, "uri": "s3://b/k"}`
	a := s.start(t, ctx, `test -n "$DRAY_OUTPUT" || exit 9; printf '%s' "$OUT" > "$DRAY_OUTPUT"`, map[string]string{"OUT": out})
	res := a.wait(t, ctx)
	wantSuccess(t, res, a)
	if string(res.Outputs) != out || res.OutputsSize != int64(len(out)) {
		t.Fatalf("outputs %q (size %d); want %q (size %d)", res.Outputs, res.OutputsSize, out, len(out))
	}
}

func (s *suite) noOutputs(t *testing.T) {
	ctx := s.ctx(t)
	a := s.start(t, ctx, `true`, nil)
	res := a.wait(t, ctx)
	wantSuccess(t, res, a)
	if len(res.Outputs) != 0 || res.OutputsSize != 0 {
		t.Fatalf("outputs %q (size %d); want none", res.Outputs, res.OutputsSize)
	}
}

func (s *suite) outputsOverLimit(t *testing.T) {
	ctx := s.ctx(t)
	const size = executor.MaxOutputs + executor.MaxOutputs/2
	a := s.start(t, ctx, fmt.Sprintf(`head -c %d /dev/zero > "$DRAY_OUTPUT"`, size), nil)
	res := a.wait(t, ctx)
	wantSuccess(t, res, a)
	if res.OutputsSize != size {
		t.Fatalf("OutputsSize = %d; want %d", res.OutputsSize, size)
	}
	if len(res.Outputs) > executor.MaxOutputs+1 {
		t.Fatalf("read %d bytes of outputs; want at most MaxOutputs+1 = %d", len(res.Outputs), executor.MaxOutputs+1)
	}
}

func (s *suite) env(t *testing.T) {
	ctx := s.ctx(t)
	env := map[string]string{
		"DRAY_TEST_GREETING": "hello, world",
		"DRAY_TEST_QUOTES":   `it's "quoted" $HOME`,
		"DRAY_TEST_EMPTY":    "",
	}
	a := s.start(t, ctx, `echo "$DRAY_TEST_GREETING"; echo "$DRAY_TEST_QUOTES"; echo "[${DRAY_TEST_EMPTY-unset}]"`, env)
	wantSuccess(t, a.wait(t, ctx), a)
	wantLines(t, a, executor.Stdout, []string{"hello, world", `it's "quoted" $HOME`, "[]"})
}

func (s *suite) state(t *testing.T) {
	ctx := s.ctx(t)
	a := s.start(t, ctx, `true`, nil)
	st := a.h.State()
	if len(st) == 0 || !json.Valid(st) {
		t.Fatalf("State() = %q; want a JSON document", st)
	}
	wantSuccess(t, a.wait(t, ctx), a)
}

// startContext checks that the ctx given to Start bounds Start only: an
// agent may pass a short one.
func (s *suite) startContext(t *testing.T) {
	ctx := s.ctx(t)
	startCtx, cancel := context.WithCancel(ctx)
	a := s.start(t, startCtx, `echo ready; sleep 1; echo after`, nil)
	cancel()
	res := a.wait(t, ctx)
	wantSuccess(t, res, a)
	wantLines(t, a, executor.Stdout, []string{"ready", "after"})
}

func (s *suite) waitContext(t *testing.T) {
	ctx := s.ctx(t)
	a := s.start(t, ctx, `echo ready; sleep 60`, nil)
	a.waitFor(t, ctx, "ready")
	canceled, cancel := context.WithCancel(ctx)
	cancel()
	if res, err := a.h.Wait(canceled); !errors.Is(err, context.Canceled) {
		t.Fatalf("Wait with a canceled context = %+v, %v; want an error wrapping context.Canceled", res, err)
	}
	// The task is still there to be stopped and waited for.
	if err := a.h.Stop(ctx, 0); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	wantFailure(t, a.wait(t, ctx))
}

func (s *suite) stopTerminates(t *testing.T) {
	ctx := s.ctx(t)
	a := s.start(t, ctx, `echo ready; sleep 60`, nil)
	a.waitFor(t, ctx, "ready")
	if err := a.h.Stop(ctx, 100*time.Millisecond); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	wantFailure(t, a.wait(t, ctx))
}

// stopGraceful checks that Stop sends a signal the task can catch before it
// kills it, and lets it exit in its own way within grace.
func (s *suite) stopGraceful(t *testing.T) {
	ctx := s.ctx(t)
	a := s.start(t, ctx, `trap 'echo got TERM; exit 7' TERM; echo ready; while :; do sleep 1; done`, nil)
	a.waitFor(t, ctx, "ready")
	if err := a.h.Stop(ctx, s.opts.Timeout); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	res := a.wait(t, ctx)
	if res.ExitCode != 7 || res.Reason != "exit 7" {
		t.Fatalf("result: exit code %d, reason %q; want 7, \"exit 7\" from the task's TERM trap", res.ExitCode, res.Reason)
	}
	wantLines(t, a, executor.Stdout, []string{"ready", "got TERM"})
}

func (s *suite) stopKill(t *testing.T) {
	ctx := s.ctx(t)
	a := s.start(t, ctx, `trap '' TERM; echo ready; sleep 60`, nil)
	a.waitFor(t, ctx, "ready")
	if err := a.h.Stop(ctx, 200*time.Millisecond); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	wantFailure(t, a.wait(t, ctx))
}

func (s *suite) stopLeavesNothing(t *testing.T) {
	ctx := s.ctx(t)
	a := s.start(t, ctx, `sleep 300 & echo "child $!"; echo ready; while :; do sleep 1; done`, nil)
	a.waitFor(t, ctx, "ready")
	if err := a.h.Stop(ctx, time.Second); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	wantFailure(t, a.wait(t, ctx))
	stdout := a.rec.Texts(executor.Stdout)
	if !slices.ContainsFunc(stdout, func(s string) bool { return strings.HasPrefix(s, "child ") }) {
		t.Fatalf("stdout %q has no line \"child PID\"", stdout)
	}
	s.wantNothingLeft(t, ctx, a.h, stdout)
}

// wantNothingLeft waits until Options.Leftovers reports nothing left of h.
func (s *suite) wantNothingLeft(t *testing.T, ctx context.Context, h executor.Handle, stdout []string) {
	t.Helper()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		left, err := s.opts.Leftovers(ctx, t, h, stdout)
		if err != nil {
			t.Fatalf("Leftovers: %v", err)
		}
		if len(left) == 0 {
			return
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			t.Fatalf("still running after Stop and Wait: %s", strings.Join(left, ", "))
		}
	}
}

func (s *suite) stopAfterEnd(t *testing.T) {
	ctx := s.ctx(t)
	a := s.start(t, ctx, `true`, nil)
	res := a.wait(t, ctx)
	wantSuccess(t, res, a)
	for i := range 2 {
		if err := a.h.Stop(ctx, time.Second); err != nil {
			t.Fatalf("Stop #%d after the attempt ended: %v; want nil", i+1, err)
		}
	}
	if again := a.wait(t, ctx); again.ExitCode != 0 || again.Reason != "" {
		t.Fatalf("Wait after Stop = %+v; want the success it returned before", again)
	}
}

func (s *suite) stopConcurrent(t *testing.T) {
	ctx := s.ctx(t)
	a := s.start(t, ctx, `echo ready; sleep 60`, nil)
	a.waitFor(t, ctx, "ready")
	var wg sync.WaitGroup
	results := make([]executor.Result, 3)
	waitErrs := make([]error, 3)
	stopErrs := make([]error, 3)
	for i := range 3 {
		wg.Go(func() { results[i], waitErrs[i] = a.h.Wait(ctx) })
		wg.Go(func() { stopErrs[i] = a.h.Stop(ctx, 100*time.Millisecond) })
	}
	wg.Wait()
	for i := range 3 {
		if stopErrs[i] != nil {
			t.Errorf("Stop #%d: %v", i+1, stopErrs[i])
		}
		if waitErrs[i] != nil {
			t.Fatalf("Wait #%d: %v", i+1, waitErrs[i])
		}
		wantFailure(t, results[i])
		if results[i].ExitCode != results[0].ExitCode || results[i].Reason != results[0].Reason {
			t.Errorf("Wait #%d = %+v; Wait #1 = %+v; want the same", i+1, results[i], results[0])
		}
	}
}

func (s *suite) concurrent(t *testing.T) {
	ctx := s.ctx(t)
	n := s.opts.Concurrent
	attempts := make([]attempt, n)
	for i := range n {
		attempts[i] = s.start(t, ctx, `echo "hello $N"; sleep 0.2; echo "err $N" >&2; printf '{"n": %s}' "$N" > "$DRAY_OUTPUT"`,
			map[string]string{"N": fmt.Sprint(i)})
	}
	var wg sync.WaitGroup
	results := make([]executor.Result, n)
	errs := make([]error, n)
	for i, a := range attempts {
		wg.Go(func() { results[i], errs[i] = a.h.Wait(ctx) })
	}
	wg.Wait()
	for i, a := range attempts {
		if errs[i] != nil {
			t.Fatalf("attempt %d: Wait: %v", i, errs[i])
		}
		wantSuccess(t, results[i], a)
		if s.opts.MergedStreams {
			wantLines(t, a, executor.Stdout, []string{fmt.Sprintf("hello %d", i), fmt.Sprintf("err %d", i)})
		} else {
			wantLines(t, a, executor.Stdout, []string{fmt.Sprintf("hello %d", i)})
			wantLines(t, a, executor.Stderr, []string{fmt.Sprintf("err %d", i)})
		}
		if s.opts.NoOutputsFile {
			continue
		}
		if want := fmt.Sprintf(`{"n": %d}`, i); string(results[i].Outputs) != want {
			t.Fatalf("attempt %d: outputs %q; want %q", i, results[i].Outputs, want)
		}
	}
}
