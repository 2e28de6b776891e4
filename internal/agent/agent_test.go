package agent

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dray-dev/dray/internal/control"
	"github.com/dray-dev/dray/internal/engine"
	"github.com/dray-dev/dray/internal/executor"
	"github.com/dray-dev/dray/internal/executor/local"
	"github.com/dray-dev/dray/internal/secrets"
	"github.com/dray-dev/dray/internal/store"
)

// fakeControl hands out the attempts it is given and records what the agent
// reports. It stands for the control plane, which the agent reaches only
// through the Control interface.
type fakeControl struct {
	mu       sync.Mutex
	queue    []*engine.Attempt
	results  map[int64]engine.Result
	logs     map[int64][]store.LogLine
	finishOK bool
	finished chan int64
	cancels  []int64 // asked to cancel: sent with every heartbeat, as the control plane does
}

func newFake(attempts ...*engine.Attempt) *fakeControl {
	return &fakeControl{queue: attempts, results: map[int64]engine.Result{}, logs: map[int64][]store.LogLine{},
		finishOK: true, finished: make(chan int64, 100)}
}

func (f *fakeControl) Register(context.Context, control.AgentInfo) ([]*engine.Attempt, error) {
	return nil, nil
}

func (f *fakeControl) Claim(ctx context.Context, _ control.AgentInfo, slots int, wait time.Duration) ([]*engine.Attempt, error) {
	f.mu.Lock()
	n := min(slots, len(f.queue))
	got := f.queue[:n]
	f.queue = f.queue[n:]
	f.mu.Unlock()
	if len(got) == 0 {
		select {
		case <-time.After(wait):
		case <-ctx.Done():
		}
	}
	return got, nil
}

func (f *fakeControl) Started(context.Context, string, int64, []byte, time.Time) error { return nil }

func (f *fakeControl) AgentLogs(_ context.Context, _ string, id int64, lines []store.LogLine) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.logs[id] = append(f.logs[id], lines...)
	return nil
}

func (f *fakeControl) Finish(_ context.Context, _ control.AgentInfo, id int64, res engine.Result, _ int) ([]*engine.Attempt, error) {
	f.mu.Lock()
	ok := f.finishOK
	if ok {
		f.results[id] = res
	}
	f.mu.Unlock()
	if !ok {
		return nil, errors.New("database or disk is full")
	}
	f.finished <- id
	return nil, nil
}

func (f *fakeControl) Heartbeat(ctx context.Context, _ string, _ []int64, wait time.Duration) (control.Beat, error) {
	select {
	case <-time.After(wait):
	case <-ctx.Done():
		return control.Beat{}, ctx.Err()
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return control.Beat{Cancel: append([]int64(nil), f.cancels...)}, nil
}

func (f *fakeControl) Deregister(context.Context, string) error { return nil }

func attempt(id int64, w *engine.Work) *engine.Attempt {
	w.ExecutorType = "local"
	w.Params = json.RawMessage(`{"day":"2026-01-31"}`)
	return &engine.Attempt{ID: id, RunID: "r1", Pipeline: "p", Task: "t", Number: 1, Work: w}
}

// start runs an agent over the fake until the test ends.
func start(t *testing.T, f *fakeControl, env map[string]string) (*Agent, <-chan error) {
	t.Helper()
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	envProvider := secrets.NewEnv(secrets.EnvPrefix)
	envProvider.LookupEnv = lookup
	a := New(Config{
		Info:          control.AgentInfo{ID: "a1", Capacity: 4},
		Control:       f,
		Executors:     map[string]executor.Executor{"local": local.New(local.Config{TempDir: t.TempDir()})},
		Secrets:       secrets.NewResolver(envProvider),
		Dir:           t.TempDir(),
		Poll:          50 * time.Millisecond,
		KillGrace:     100 * time.Millisecond,
		ReportTimeout: 300 * time.Millisecond,
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	stopped := make(chan struct{})
	go func() {
		done <- a.Run(ctx)
		close(stopped)
	}()
	t.Cleanup(func() {
		cancel()
		<-stopped
	})
	return a, done
}

func (f *fakeControl) wait(t *testing.T, id int64) engine.Result {
	t.Helper()
	timeout := time.After(20 * time.Second)
	for {
		f.mu.Lock()
		res, ok := f.results[id]
		f.mu.Unlock()
		if ok {
			return res
		}
		select {
		case <-f.finished: // some report came: look again
		case <-timeout:
			t.Fatalf("attempt %d was not reported", id)
		}
	}
}

func (f *fakeControl) lines(id int64) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, l := range f.logs[id] {
		out = append(out, l.Text)
	}
	return out
}

func TestAttemptResults(t *testing.T) {
	marker := engine.SecretMarker("n0nce", "pw")
	f := newFake(
		attempt(1, &engine.Work{Run: `echo "::dray-output::{\"a\": 1, \"b\": 1}"; echo '{"b": 2}' > "$DRAY_OUTPUT"; echo "day=$DRAY_PARAMS"`}),
		attempt(2, &engine.Work{Run: "exit 3"}),
		attempt(3, &engine.Work{Run: "sleep 30", Timeout: 300 * time.Millisecond}),
		attempt(4, &engine.Work{Run: "echo pw=" + marker, Secrets: []string{"pw"}, Nonce: "n0nce",
			Env: map[string]string{"PW": marker}}),
		attempt(5, &engine.Work{Run: `echo "::dray-output::{\"note\": \"$PW\"}"`, Secrets: []string{"pw"}, Nonce: "n0nce",
			Env: map[string]string{"PW": marker}}),
		attempt(6, &engine.Work{Run: "true", Secrets: []string{"missing"}, Nonce: "n0nce"}),
	)
	start(t, f, map[string]string{"DRAY_SECRET_PW": "hunter22"})

	if r := f.wait(t, 1); r.State != engine.AttemptSucceeded || string(r.Outputs) != `{"a":1,"b":2}` {
		t.Errorf("outputs: %s %s %q", r.State, r.Outputs, r.Reason)
	}
	if got := strings.Join(f.lines(1), "\n"); !strings.Contains(got, `day={"day":"2026-01-31"}`) {
		t.Errorf("DRAY_PARAMS not seen: %q", got)
	}
	if r := f.wait(t, 2); r.State != engine.AttemptFailed || r.Reason != "exit 3" || r.ExitCode == nil || *r.ExitCode != 3 {
		t.Errorf("exit 3: %+v", r)
	}
	if r := f.wait(t, 3); r.State != engine.AttemptFailed || r.Reason != "timeout after 300ms" {
		t.Errorf("timeout: %s %q", r.State, r.Reason)
	}
	if r := f.wait(t, 4); r.State != engine.AttemptSucceeded {
		t.Errorf("secret task: %s %q", r.State, r.Reason)
	}
	if got := strings.Join(f.lines(4), "\n"); got != "pw=***" {
		t.Errorf("log of the secret task = %q, want the value masked", got)
	}
	if r := f.wait(t, 5); string(r.Outputs) != `{"note":"***"}` {
		t.Errorf("outputs with a secret = %s, want it masked", r.Outputs)
	}
	if r := f.wait(t, 6); r.State != engine.AttemptFailed || !strings.Contains(r.Reason, "secret missing not found") {
		t.Errorf("missing secret: %s %q", r.State, r.Reason)
	}
}

// A cancel from the control plane stops the task and reports it canceled.
func TestCancel(t *testing.T) {
	f := newFake(attempt(1, &engine.Work{Run: "sleep 30"}))
	start(t, f, nil)
	f.mu.Lock()
	f.cancels = append(f.cancels, 1) // delivered by every heartbeat, so also once the attempt runs
	f.mu.Unlock()
	if r := f.wait(t, 1); r.State != engine.AttemptCanceled {
		t.Errorf("canceled attempt: %s %q", r.State, r.Reason)
	}
}

// When a result cannot be reported (a full disk), the agent stops with the
// error instead of losing it silently.
func TestReportFailureStopsTheAgent(t *testing.T) {
	f := newFake(attempt(1, &engine.Work{Run: "true"}))
	f.finishOK = false
	_, done := start(t, f, nil)
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "database or disk is full") {
			t.Fatalf("agent stopped with %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the agent did not stop")
	}
}
