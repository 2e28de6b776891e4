package engine

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

func TestCancelKeepsCleanupTasks(t *testing.T) {
	w := newWorld(t, `
version: 1
tasks:
  - name: a
    run: sleep 100
  - name: b
    needs: [a]
    run: "true"
  - name: fan
    for_each: [1, 2, 3, 4, 5]
    max_parallel: 2
    run: sleep ${{ item }}
  - name: cleanup
    needs: [b, fan]
    trigger: always
    run: ./cleanup.sh
`, nil)
	q := w.queued()
	if len(q) != 3 {
		t.Fatalf("%d queued, want a and two instances of fan", len(q))
	}
	// a and fan[0] are on an agent; fan[1] is still queued.
	q[0].State, q[1].State = AttemptRunning, AttemptRunning
	w.stepView(w.fullView(), func(e *Engine) (*Step, error) { return e.Cancel(false) })

	if !w.attempts[0].CancelRequested || !w.attempts[1].CancelRequested {
		t.Error("running attempts were not asked to stop")
	}
	if w.attempts[2].State != AttemptCanceled {
		t.Errorf("queued attempt = %s, want canceled", w.attempts[2].State)
	}
	if b := w.task("b"); b.State != TaskCanceled || b.Reason != "run canceled" {
		t.Errorf("b = %s %q", b.State, b.Reason)
	}
	if w.task("cleanup").State != TaskPending || w.run.State != RunRunning {
		t.Fatalf("cleanup = %s, run = %s; want pending, running", w.task("cleanup").State, w.run.State)
	}
	// The agent stops a and fan[0] and reports them.
	w.finish(w.attempts[0], Result{State: AttemptCanceled, Reason: "canceled"})
	w.finish(w.attempts[1], Result{State: AttemptCanceled, Reason: "canceled"})
	if fan := w.task("fan"); fan.State != TaskCanceled || fan.Next != 2 {
		t.Errorf("fan = %s next=%d; no new instance may start after a cancel", fan.State, fan.Next)
	}
	if got := string(w.task("fan").Outputs); got != "[null,null,null,null,null]" {
		t.Errorf("fan outputs = %s", got)
	}
	q = w.queued()
	if len(q) != 1 || q[0].Task != "cleanup" {
		t.Fatalf("queued after cancel: %v\n%s", q, w.dump())
	}
	q[0].State = AttemptRunning
	w.finish(q[0], ok(""))
	if w.run.State != RunCanceled || w.task("cleanup").State != TaskSucceeded {
		t.Errorf("run = %s, cleanup = %s", w.run.State, w.task("cleanup").State)
	}
	_, err := New(w.plan, w.fullView(), w.now).Cancel(false)
	if !errors.Is(err, ErrRunEnded) {
		t.Errorf("cancel of an ended run: %v", err)
	}
}

func TestForceCancelStopsCleanupToo(t *testing.T) {
	w := newWorld(t, `
version: 1
tasks:
  - {name: a, run: sleep 100}
  - {name: cleanup, needs: [a], trigger: always, run: ./cleanup.sh}
`, nil)
	w.queued()[0].State = AttemptRunning
	w.stepView(w.fullView(), func(e *Engine) (*Step, error) { return e.Cancel(true) })
	w.finish(w.attempts[0], Result{State: AttemptCanceled, Reason: "canceled"})
	if w.run.State != RunCanceled || w.task("cleanup").State != TaskCanceled {
		t.Errorf("run = %s cleanup = %s", w.run.State, w.task("cleanup").State)
	}
}

func TestCancelQueuedRun(t *testing.T) {
	plan := load(t, map[string]string{"p.yaml": "version: 1\ntasks: [{name: a, run: 'true'}]\n"})
	w := &world{t: t, plan: plan, tasks: map[string]*Task{}, run: &Run{ID: "r", State: RunQueued}}
	w.stepView(w.fullView(), func(e *Engine) (*Step, error) { return e.Cancel(false) })
	if w.run.State != RunCanceled {
		t.Errorf("run = %s", w.run.State)
	}
}

func TestRetryRunsOnlyWhatFailed(t *testing.T) {
	w := newWorld(t, `
version: 1
tasks:
  - {name: a, run: "true"}
  - {name: b, run: ./b.sh, needs: [a], retries: 1, retry_delay: 1s}
  - {name: d, run: "true", needs: [b]}
  - name: fan
    needs: [a]
    for_each: [0, 1, 2, 3]
    max_parallel: 4
    run: ./fan.sh ${{ item }}
  - name: total
    needs: [fan]
    run: echo ${{ tasks.fan.outputs }}
`, nil)
	broken := true
	runs := map[string]int{}
	script := func(a *Attempt) Result {
		key := fmt.Sprintf("%s[%d]", a.Task, a.Index)
		runs[key]++
		if broken && (a.Task == "b" || (a.Task == "fan" && a.Index%2 == 1)) {
			return fail("exit 1")
		}
		if a.Task == "fan" {
			return ok(fmt.Sprintf(`{"i": %d}`, a.Index))
		}
		return ok("")
	}
	w.drive(script)
	if w.run.State != RunFailed || w.task("d").State != TaskUpstreamFailed || w.task("fan").State != TaskFailed {
		t.Fatalf("before retry:\n%s", w.dump())
	}
	if r := w.task("fan").Reason; r != "2 of 4 instances failed" {
		t.Errorf("fan reason = %q", r)
	}
	broken = false
	w.stepView(w.fullView(), func(e *Engine) (*Step, error) { return e.Retry() })
	if w.run.State != RunRunning {
		t.Fatalf("run = %s after retry", w.run.State)
	}
	w.drive(script)
	if w.run.State != RunSucceeded {
		t.Fatalf("after retry:\n%s", w.dump())
	}
	want := map[string]int{"a[0]": 1, "b[0]": 3, "d[0]": 1, "fan[0]": 1, "fan[1]": 2, "fan[2]": 1, "fan[3]": 2, "total[0]": 1}
	for k, n := range want {
		if runs[k] != n {
			t.Errorf("%s ran %d times, want %d", k, runs[k], n)
		}
	}
	if got := string(w.task("fan").Outputs); got != `[{"i": 0},{"i": 1},{"i": 2},{"i": 3}]` {
		t.Errorf("fan outputs = %s", got)
	}
	last := w.attemptsOf("b")
	if n := last[len(last)-1]; n.Number != 3 || n.Base != 2 {
		t.Errorf("b's retry attempt = number %d base %d, want 3 and 2", n.Number, n.Base)
	}
	_, err := New(w.plan, w.fullView(), w.now).Retry()
	if !errors.Is(err, ErrNothingToRetry) {
		t.Errorf("retry of a run that succeeded: %v", err)
	}
}

// A run whose pipeline env fails has its tasks canceled, not left pending,
// and a retry tries the env again.
func TestPipelineEnvFailureIsRetryable(t *testing.T) {
	w := newWorld(t, `
version: 1
params: { n: { type: integer, default: 0 } }
env: { RATIO: "${{ 10 / params.n }}" }
tasks:
  - {name: a, run: echo $RATIO}
`, nil)
	if w.run.State != RunFailed || !strings.Contains(w.run.Reason, "pipeline env RATIO") {
		t.Fatalf("run = %s %q", w.run.State, w.run.Reason)
	}
	if a := w.task("a"); a.State != TaskCanceled || !strings.HasPrefix(a.Reason, "not run: pipeline env RATIO") {
		t.Errorf("a = %s %q", a.State, a.Reason)
	}
	w.run.Params["n"] = 2 // as if the cause were fixed
	w.stepView(w.fullView(), func(e *Engine) (*Step, error) { return e.Retry() })
	w.drive(succeedAll)
	if w.run.State != RunSucceeded || w.run.Env["RATIO"] != "5" {
		t.Errorf("after retry: run = %s env %v", w.run.State, w.run.Env)
	}
}
