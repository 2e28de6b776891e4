package engine

import (
	"errors"
	"fmt"

	"github.com/dray-dev/dray/internal/spec"
)

// ErrRunEnded is returned when a run that has ended is canceled.
var ErrRunEnded = errors.New("run has ended")

// ErrNothingToRetry is returned when a run that succeeded is retried.
var ErrNothingToRetry = errors.New("run succeeded: nothing to retry")

// Cancel cancels a run. Tasks that have not started are canceled at once;
// attempts that wait for an agent are canceled; attempts on an agent are asked
// to stop (the agent reports them canceled). Tasks with trigger always still
// run after their upstream tasks end, to clean up, unless force is set.
// The View must hold every task of the run.
func (e *Engine) Cancel(force bool) (*Step, error) {
	return e.stop(force, "")
}

// Abandon ends a run whose driver is gone (the `dray run` process that ran
// it was killed): every unfinished attempt ends lost and is not retried, tasks
// that have not started are canceled, and the run fails with reason, so it
// holds no slot; Retry finishes it. The View must hold every task of the run.
func (e *Engine) Abandon(reason string) (*Step, error) {
	return e.stop(true, reason)
}

func (e *Engine) stop(force bool, abandon string) (*Step, error) {
	r := e.v.Run
	if r.State.Final() {
		return nil, fmt.Errorf("cancel run %s: %w (%s)", r.ID, ErrRunEnded, r.State)
	}
	e.force = force
	e.abandon = abandon
	r.CancelRequested = true
	e.touchRun()
	if r.State == RunQueued {
		if abandon != "" {
			e.finishRun(RunFailed, abandon)
		} else {
			e.finishRun(RunCanceled, "canceled before it started")
		}
		return e.step, nil
	}
	spare := func(t *spec.Task) bool { return t.Trigger == spec.TriggerAlways && !force }
	active, err := e.v.Data.ActiveAttempts()
	if err != nil {
		return nil, fmt.Errorf("read attempts of run %s: %w", r.ID, err)
	}
	for _, a := range active {
		t := e.plan.Task(a.Task)
		if t == nil || spare(t) {
			continue
		}
		switch {
		case abandon != "":
			// No agent will report these: end them now; one that never
			// started was not lost, only never run.
			rt, err := e.task(a.Task)
			if err != nil {
				return nil, err
			}
			ended := AttemptLost
			if a.State == AttemptPending || a.State == AttemptQueued {
				ended = AttemptCanceled
			}
			a.State, a.Reason, a.EndedAt = ended, abandon, e.now
			e.step.Attempts = append(e.step.Attempts, a)
			e.endAttempt(t, rt, a)
		case a.State == AttemptPending || a.State == AttemptQueued:
			rt, err := e.task(a.Task)
			if err != nil {
				return nil, err
			}
			a.State, a.Reason, a.EndedAt = AttemptCanceled, "run canceled", e.now
			e.step.Attempts = append(e.step.Attempts, a)
			e.endAttempt(t, rt, a)
		default:
			if !a.CancelRequested {
				a.CancelRequested = true
				e.step.Attempts = append(e.step.Attempts, a)
			}
		}
	}
	for _, t := range e.plan.Order() {
		rt, err := e.task(t.Name)
		if err != nil {
			return nil, err
		}
		switch {
		case rt.State == TaskPending && !spare(t):
			e.end(rt, TaskCanceled, "run canceled")
		case rt.State == TaskRetrying && !spare(t):
			// Its next attempt was pending and is canceled above.
			e.end(rt, TaskCanceled, "run canceled")
		case rt.State == TaskRunning && t.IsForEach():
			e.mark(t.Name)
		}
	}
	if err := e.advance(); err != nil {
		return nil, err
	}
	return e.step, nil
}

// Retry runs a run's failed, canceled and skipped tasks again, keeping the
// tasks that succeeded and their outputs. A for_each task that fanned out
// keeps its items and runs only its instances that did not succeed. Each
// retried task gets its full retries budget again. The View must hold every
// task of the run.
func (e *Engine) Retry() (*Step, error) {
	r := e.v.Run
	switch {
	case r.State == RunSucceeded:
		return nil, fmt.Errorf("retry run %s: %w", r.ID, ErrNothingToRetry)
	case r.State == RunQueued:
		return nil, fmt.Errorf("retry run %s: it has not started", r.ID)
	}
	r.State, r.Reason, r.EndedAt, r.CancelRequested = RunRunning, "", zeroTime, false
	r.Unfinished = 0
	for _, t := range e.plan.Tasks {
		if rt, err := e.task(t.Name); err == nil && !rt.State.Final() {
			r.Unfinished++
		}
	}
	e.touchRun()
	e.event(Event{Index: -1, State: string(RunRunning), Reason: "retry"})
	for _, t := range e.plan.Order() {
		rt, err := e.task(t.Name)
		if err != nil {
			return nil, err
		}
		if !rt.State.Final() || rt.State == TaskSucceeded {
			continue
		}
		r.Unfinished++
		rt.Version++
		rt.Reason, rt.Outputs, rt.EndedAt = "", nil, zeroTime
		if t.IsForEach() && rt.Items > 0 && rt.Next > 0 {
			// Keep the items and the instances that succeeded.
			rt.Redo, rt.Failed, rt.Active = rt.Failed, 0, 0
			e.setTask(rt, TaskRunning, "retry")
			e.mark(t.Name)
			continue
		}
		rt.Items, rt.Next, rt.Active, rt.Succeeded, rt.Failed, rt.Redo = -1, 0, 0, 0, 0, 0
		rt.Base = rt.Attempts
		rt.StartedAt = zeroTime
		e.setTask(rt, TaskPending, "")
		e.mark(t.Name)
	}
	if r.Env == nil && len(e.plan.Env) > 0 && !e.setEnv() {
		return e.step, nil
	}
	if err := e.advance(); err != nil {
		return nil, err
	}
	return e.step, nil
}
