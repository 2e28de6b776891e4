package engine

import (
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"slices"
	"time"

	"github.com/dray-dev/dray/internal/expr"
	"github.com/dray-dev/dray/internal/spec"
)

// Result is how an attempt ended, as its agent (or the sweep of a dead agent)
// reports it.
type Result struct {
	State    AttemptState // succeeded, failed, canceled or lost
	Reason   string
	ExitCode *int
	Outputs  json.RawMessage // a JSON object; nil for none
	// StartedAt says when the attempt started, for an agent that did not
	// report it separately (a short task).
	StartedAt time.Time
}

// ErrAttemptEnded is returned for a result of an attempt that has ended already.
var ErrAttemptEnded = errors.New("attempt has ended already")

// MaxRetryDelay caps the exponential back-off between attempts.
const MaxRetryDelay = time.Hour

// newAttempt adds a new attempt of a task instance to the step. It is queued at
// once unless it must wait: until notBefore, or for a slot of its pool or of the
// pipeline's concurrency, which the caller's admission gives out.
func (e *Engine) newAttempt(t *spec.Task, index, number, base int, w *Work, notBefore time.Time) *Attempt {
	labels := slices.Concat(t.Labels, t.Executor.Labels)
	slices.Sort(labels)
	a := &Attempt{
		RunID:     e.v.Run.ID,
		Pipeline:  e.plan.Name,
		Task:      t.Name,
		Index:     index,
		Number:    number,
		Base:      base,
		Work:      w,
		Pool:      t.Pool,
		Labels:    slices.Compact(labels),
		Executor:  t.Executor.Type,
		NotBefore: notBefore,
		CreatedAt: e.now,
		State:     AttemptQueued,
	}
	if t.Pool != "" || e.plan.Concurrency > 0 || notBefore.After(e.now) {
		a.State = AttemptPending
	} else {
		a.QueuedAt = e.now
	}
	e.step.Attempts = append(e.step.Attempts, a)
	return a
}

// Finish records how an attempt ended: it runs the task's checks on a success,
// retries a failure while the task has retries left, ends the task (or the
// instance) otherwise, and advances the run.
func (e *Engine) Finish(a *Attempt, res Result) (*Step, error) {
	if a.State.Final() {
		return nil, fmt.Errorf("attempt %d of %s: %w", a.ID, a.Task, ErrAttemptEnded)
	}
	t := e.plan.Task(a.Task)
	if t == nil {
		return nil, fmt.Errorf("attempt %d: the run's pipeline has no task %s", a.ID, a.Task)
	}
	rt, err := e.task(a.Task)
	if err != nil {
		return nil, err
	}
	state, reason := res.State, res.Reason
	if state == AttemptSucceeded {
		if res.Outputs == nil {
			res.Outputs = json.RawMessage("{}")
		}
		var warnings []string
		state, reason, warnings = e.check(t, a, res.Outputs)
		a.Warnings = append(a.Warnings, warnings...)
	}
	a.State, a.Reason, a.EndedAt = state, reason, e.now
	a.ExitCode, a.Outputs = res.ExitCode, res.Outputs
	if a.StartedAt.IsZero() {
		a.StartedAt = res.StartedAt.UTC().Truncate(time.Microsecond)
	}
	e.step.Attempts = append(e.step.Attempts, a)
	e.endAttempt(t, rt, a)
	if err := e.advance(); err != nil {
		return nil, err
	}
	return e.step, nil
}

// MaxLostRetries is how many attempts an instance may lose beyond its
// retries. Losing its agent (a restart, a crashed machine) is not the task's
// failure, so a task with no retries still runs again after its agent was
// stopped; but a task that brings its agent down every time must end.
const MaxLostRetries = 3

// endAttempt retries a failed instance or ends it, and ends the task when that
// was its last instance.
func (e *Engine) endAttempt(t *spec.Task, rt *Task, a *Attempt) {
	forEach := t.IsForEach()
	n := a.Number - a.Base
	retry := !e.v.Run.CancelRequested &&
		(a.State == AttemptFailed && n <= t.Retries || a.State == AttemptLost && n <= t.Retries+MaxLostRetries)
	if forEach && !retry {
		e.event(Event{Task: t.Name, Index: a.Index, Attempt: a.Number, State: string(a.State), Reason: a.Reason})
	}
	if retry {
		delay := Backoff(t.RetryDelay, a.Number-a.Base, e.v.Run.ID, t.Name, a.Index)
		next := e.newAttempt(t, a.Index, a.Number+1, a.Base, a.Work, e.now.Add(delay))
		why := fmt.Sprintf("attempt %d %s: %s; retry in %s", a.Number, a.State, a.Reason, roundDelay(delay))
		if forEach {
			e.event(Event{Task: t.Name, Index: a.Index, Attempt: next.Number, State: string(TaskRetrying), Reason: why})
		} else {
			rt.Attempts = next.Number
			e.setTask(rt, TaskRetrying, why)
		}
		return
	}
	if !forEach {
		switch a.State {
		case AttemptSucceeded:
			rt.Outputs = a.Outputs
			e.end(rt, TaskSucceeded, "")
		case AttemptCanceled:
			e.end(rt, TaskCanceled, a.Reason)
		default:
			e.end(rt, TaskFailed, a.Reason)
		}
		return
	}
	rt.Active--
	if a.State == AttemptSucceeded {
		rt.Succeeded++
	} else {
		rt.Failed++
	}
	e.touch(rt)
	e.mark(t.Name)
}

// check runs a task's checks on a successful attempt's outputs. A failed check
// of severity error fails the attempt; one of severity warn adds a warning.
func (e *Engine) check(t *spec.Task, a *Attempt, outputs json.RawMessage) (AttemptState, string, []string) {
	if len(t.Checks) == 0 {
		return AttemptSucceeded, "", nil
	}
	var warnings []string
	var vars expr.Vars
	for _, c := range t.Checks {
		var err error
		if c.Schema != "" {
			err = c.ValidateSchema(outputs)
		} else {
			if vars == nil {
				if vars, err = e.checkVars(a, outputs); err != nil {
					return AttemptFailed, "check: " + err.Error(), warnings
				}
			}
			var ok bool
			if ok, err = c.Expr.EvalBool(vars); err == nil && !ok {
				err = errors.New("is false")
			}
		}
		if err == nil {
			continue
		}
		msg := fmt.Sprintf("check %s: %v", c.Describe(), err)
		if c.Warn {
			warnings = append(warnings, msg)
			continue
		}
		return AttemptFailed, msg, warnings
	}
	return AttemptSucceeded, "", warnings
}

func (e *Engine) checkVars(a *Attempt, outputs json.RawMessage) (expr.Vars, error) {
	out, err := expr.Decode(outputs)
	if err != nil {
		return nil, fmt.Errorf("decode outputs: %w", err)
	}
	vars := expr.Vars{expr.RootOutputs: out, expr.RootRun: RunVars(e.v.Run)}
	if a.Work != nil && a.Work.Item != nil {
		item, err := expr.Decode(a.Work.Item)
		if err != nil {
			return nil, fmt.Errorf("decode item: %w", err)
		}
		vars[expr.RootItem] = item
	}
	return vars, nil
}

// Backoff returns the delay before the attempt after the n-th failed one:
// base × 2^(n-1), capped at MaxRetryDelay, plus up to 25% of jitter. The jitter
// is derived from the run, task and instance, so it is spread across
// instances yet the same every time it is computed.
func Backoff(base time.Duration, n int, run, task string, index int) time.Duration {
	d := base
	for i := 1; i < n && d < MaxRetryDelay; i++ {
		d *= 2
	}
	d = min(d, MaxRetryDelay)
	h := fnv.New64a()
	fmt.Fprintf(h, "%s\x00%s\x00%d\x00%d", run, task, index, n)
	frac := float64(h.Sum64()%1000) / 1000
	return d + time.Duration(frac*0.25*float64(d))
}

// roundDelay rounds a delay for people: 150ms, 2.5s, 40s, 2m0s.
func roundDelay(d time.Duration) time.Duration {
	switch {
	case d < time.Second:
		return d.Round(10 * time.Millisecond)
	case d < 10*time.Second:
		return d.Round(100 * time.Millisecond)
	}
	return d.Round(time.Second)
}
