package engine

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/dray-dev/dray/internal/spec"
)

var zeroTime time.Time

// View is the recorded state of one run that the engine decides on: the run,
// every task of it, and lazy reads of the larger data.
type View struct {
	Run   *Run
	Tasks map[string]*Task
	Data  Data
}

// Data reads what a View does not hold in memory. Implementations read it
// from the same transaction as the View.
type Data interface {
	// Task returns one task of the run.
	Task(name string) (*Task, error)
	// Tasks returns every task of the run.
	Tasks() ([]*Task, error)
	// Outputs returns the decoded outputs of an ended task.
	Outputs(task *Task) (any, error)
	// Item returns item index of a for_each task's items, as JSON.
	Item(task string, index int) (json.RawMessage, error)
	// InstanceOutputs returns the outputs of a for_each task's n instances in
	// index order, JSON null for an instance that did not succeed.
	InstanceOutputs(task string, n int) ([]json.RawMessage, error)
	// ActiveAttempts returns the run's attempts that have not ended.
	ActiveAttempts() ([]*Attempt, error)
	// RedoInstances returns up to limit instances of a for_each task whose last
	// attempt ended without success (failed, canceled or lost), with that
	// attempt's number, in index order.
	RedoInstances(task string, limit int) ([]Instance, error)
}

// Instance identifies one instance of a for_each task and its last attempt.
type Instance struct {
	Index      int
	LastNumber int
}

// Items are the items a for_each task fans out over, to be recorded.
type Items struct {
	Task   string
	Values []json.RawMessage
}

// Step is what the engine decided: rows to write (the run if changed, changed
// tasks, new items, new or changed attempts) and events to tell.
type Step struct {
	Run      *Run
	Tasks    []*Task
	Items    []Items
	Attempts []*Attempt
	Events   []Event
}

// Engine decides for one run of one pipeline. Make one per decision with New.
type Engine struct {
	plan *spec.Pipeline
	v    *View
	now  time.Time
	step *Step
	// changed tracks which tasks the step must write.
	changed map[string]bool
	// work marks tasks for advance, by topological position.
	work []bool
	// items holds the items of for_each tasks fanned out in this step.
	items map[string][]json.RawMessage
	// force cancels tasks with trigger always too.
	force bool
	// abandon is the reason a run whose driver is gone ends with.
	abandon string
}

// New returns an engine for one decision at time now.
func New(plan *spec.Pipeline, v *View, now time.Time) *Engine {
	return &Engine{plan: plan, v: v, now: now.UTC(), step: &Step{}, changed: map[string]bool{}}
}

func (e *Engine) touchRun() { e.step.Run = e.v.Run }

func (e *Engine) touch(t *Task) {
	if !e.changed[t.Name] {
		e.changed[t.Name] = true
		e.step.Tasks = append(e.step.Tasks, t)
	}
}

func (e *Engine) event(ev Event) {
	ev.Time = e.now
	ev.RunID = e.v.Run.ID
	e.step.Events = append(e.step.Events, ev)
}

// setTask moves a task to a state and records the event.
func (e *Engine) setTask(t *Task, state TaskState, reason string) {
	t.State, t.Reason = state, reason
	if state == TaskRunning && t.StartedAt.IsZero() {
		t.StartedAt = e.now
	}
	if state.Final() {
		t.EndedAt = e.now
		if t.StartedAt.IsZero() {
			t.StartedAt = e.now
		}
		if t.Outputs == nil {
			t.Outputs = emptyOutputs(e.plan.Task(t.Name))
		}
	}
	e.touch(t)
	ev := Event{Task: t.Name, Index: -1, State: string(state), Reason: reason}
	if e.plan.Task(t.Name).IsForEach() && t.Items >= 0 {
		ev.Done, ev.Total = t.Succeeded+t.Failed, t.Items
	}
	e.event(ev)
}

// emptyOutputs are the outputs of a task that produced none: {} for an
// ordinary task, [] for a for_each task.
func emptyOutputs(t *spec.Task) json.RawMessage {
	if t != nil && t.IsForEach() {
		return json.RawMessage("[]")
	}
	return json.RawMessage("{}")
}

// NewTasks returns the tasks of a run that has not started: every task pending.
func NewTasks(plan *spec.Pipeline, runID string) []*Task {
	out := make([]*Task, 0, len(plan.Tasks))
	for _, t := range plan.Tasks {
		out = append(out, &Task{RunID: runID, Name: t.Name, State: TaskPending, Items: -1})
	}
	return out
}

// Start starts a queued run: it evaluates the pipeline env, creates the task
// rows and queues every task that is ready.
func (e *Engine) Start() (*Step, error) {
	r := e.v.Run
	if r.State != RunQueued {
		return nil, fmt.Errorf("start run %s: it is %s, not queued", r.ID, r.State)
	}
	r.State = RunRunning
	r.StartedAt = e.now
	e.touchRun()
	e.event(Event{Index: -1, State: string(RunRunning)})
	e.v.Tasks = map[string]*Task{}
	for _, t := range NewTasks(e.plan, r.ID) {
		e.v.Tasks[t.Name] = t
		e.touch(t)
		if len(e.plan.Task(t.Name).Needs) == 0 {
			e.mark(t.Name)
		}
	}
	r.Unfinished = len(e.plan.Tasks)
	if !e.setEnv() {
		return e.step, nil
	}
	if err := e.advance(); err != nil {
		return nil, err
	}
	return e.step, nil
}

// setEnv evaluates the pipeline env into the run. When it fails, no task can
// run: they end canceled and the run fails with the reason (a retry tries again).
func (e *Engine) setEnv() bool {
	env, err := e.pipelineEnv()
	if err == nil {
		e.v.Run.Env = env
		return true
	}
	for _, t := range e.plan.Order() {
		if rt := e.v.Tasks[t.Name]; rt != nil && !rt.State.Final() {
			e.end(rt, TaskCanceled, "not run: "+err.Error())
		}
	}
	e.finishRun(RunFailed, err.Error())
	return false
}

// pipelineEnv evaluates the pipeline's env over params and run.
func (e *Engine) pipelineEnv() (map[string]string, error) {
	if len(e.plan.Env) == 0 {
		return nil, nil
	}
	vars := e.vars()
	env := make(map[string]string, len(e.plan.Env))
	for _, ev := range e.plan.Env {
		s, err := ev.Value.Render(vars, nil)
		if err != nil {
			return nil, fmt.Errorf("pipeline env %s: %v", ev.Name, err)
		}
		env[ev.Name] = s
	}
	return env, nil
}

// finishRun ends the run.
func (e *Engine) finishRun(state RunState, reason string) {
	r := e.v.Run
	r.State, r.Reason, r.EndedAt = state, reason, e.now
	e.touchRun()
	e.event(Event{Index: -1, State: string(state), Reason: reason})
}

// maybeFinishRun ends the run once every task has ended.
func (e *Engine) maybeFinishRun() error {
	r := e.v.Run
	if r.State.Final() || r.Unfinished > 0 {
		return nil
	}
	tasks, err := e.v.Data.Tasks()
	if err != nil {
		return fmt.Errorf("read tasks: %w", err)
	}
	rows := make(map[string]*Task, len(tasks))
	for _, t := range tasks {
		rows[t.Name] = t
	}
	var failed []string
	for _, st := range e.plan.Tasks {
		t, ok := e.v.Tasks[st.Name]
		if !ok {
			t = rows[st.Name]
		}
		if t == nil {
			return fmt.Errorf("run %s has no row for task %s", r.ID, st.Name)
		}
		if !t.State.Final() {
			return fmt.Errorf("run %s counts no unfinished task, but task %s is %s", r.ID, t.Name, t.State)
		}
		if t.State == TaskFailed {
			failed = append(failed, t.Name)
		}
	}
	switch {
	case e.abandon != "":
		e.finishRun(RunFailed, e.abandon)
	case r.CancelRequested:
		e.finishRun(RunCanceled, "canceled")
	case len(failed) == 1:
		e.finishRun(RunFailed, "task "+failed[0]+" failed")
	case len(failed) > 1:
		e.finishRun(RunFailed, fmt.Sprintf("%d tasks failed: %s", len(failed), joinNames(failed, 5)))
	default:
		e.finishRun(RunSucceeded, "")
	}
	return nil
}

func joinNames(names []string, max int) string {
	if len(names) <= max {
		return strings.Join(names, ", ")
	}
	return strings.Join(names[:max], ", ") + fmt.Sprintf(" and %d more", len(names)-max)
}
