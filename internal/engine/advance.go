package engine

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/dray-dev/dray/internal/expr"
	"github.com/dray-dev/dray/internal/spec"
)

// task returns a task's row, reading it when the view does not hold it.
func (e *Engine) task(name string) (*Task, error) {
	if t, ok := e.v.Tasks[name]; ok {
		return t, nil
	}
	t, err := e.v.Data.Task(name)
	if err != nil {
		return nil, fmt.Errorf("read task %s: %w", name, err)
	}
	if e.v.Tasks == nil {
		e.v.Tasks = map[string]*Task{}
	}
	e.v.Tasks[name] = t
	return t, nil
}

// mark puts a task on the worklist of advance.
func (e *Engine) mark(name string) {
	if e.work == nil {
		e.work = make([]bool, len(e.plan.Tasks))
	}
	e.work[e.plan.Position(name)] = true
}

// markDown puts a task's downstream tasks on the worklist.
func (e *Engine) markDown(name string) {
	for _, d := range e.plan.Downstream(name) {
		e.mark(d)
	}
}

// advance works through the marked tasks in topological order: a pending task
// whose upstream tasks have all ended is decided (run, skipped, failed), and a
// running for_each task gets instances for its free slots. A task that ends
// marks its downstream tasks, so decisions cascade in one pass.
func (e *Engine) advance() error {
	order := e.plan.Order()
	for i := 0; i < len(e.work); i++ {
		if !e.work[i] {
			continue
		}
		e.work[i] = false
		t := order[i]
		rt, err := e.task(t.Name)
		if err != nil {
			return err
		}
		switch {
		case rt.State == TaskPending:
			err = e.decide(t, rt)
		case rt.State == TaskRunning && t.IsForEach():
			err = e.fill(t, rt)
		}
		if err != nil {
			return err
		}
	}
	return e.maybeFinishRun()
}

// end moves a task to a final state and marks its downstream tasks.
func (e *Engine) end(rt *Task, state TaskState, reason string) {
	rt.Active = 0
	e.setTask(rt, state, reason)
	e.v.Run.Unfinished--
	e.touchRun()
	e.markDown(rt.Name)
}

// decide runs, skips or fails a pending task whose upstream tasks have ended.
func (e *Engine) decide(t *spec.Task, rt *Task) error {
	ups := make([]*Task, 0, len(t.Needs))
	for _, n := range t.Needs {
		up, err := e.task(n)
		if err != nil {
			return err
		}
		if !up.State.Final() {
			return nil
		}
		ups = append(ups, up)
	}
	if e.v.Run.CancelRequested && (t.Trigger != spec.TriggerAlways || e.force) {
		e.end(rt, TaskCanceled, "run canceled")
		return nil
	}
	if run, state, reason := trigger(t, ups); !run {
		e.end(rt, state, reason)
		return nil
	}
	vars, err := e.taskVars(t, nil)
	if err != nil {
		e.end(rt, TaskFailed, err.Error())
		return nil
	}
	if t.If != nil {
		ok, err := t.If.EvalBool(vars)
		if err != nil {
			e.end(rt, TaskFailed, "if: "+err.Error())
			return nil
		}
		if !ok {
			e.end(rt, TaskSkipped, "if is false: "+strings.TrimSpace(t.If.Source))
			return nil
		}
	}
	if t.IsForEach() {
		return e.fanOut(t, rt, vars)
	}
	rt.Attempts++
	work, err := e.render(t, 0, nil, rt.Attempts)
	if err != nil {
		e.end(rt, TaskFailed, err.Error())
		return nil
	}
	e.newAttempt(t, 0, rt.Attempts, rt.Base, work, e.now)
	rt.Active = 1
	e.setTask(rt, TaskRunning, "")
	return nil
}

// trigger applies a task's trigger rule to its ended upstream tasks. When the
// task must not run, it returns the state and reason to end it with.
func trigger(t *spec.Task, ups []*Task) (run bool, state TaskState, reason string) {
	var failed, skipped, canceled, notFailed []string
	for _, u := range ups {
		switch u.State {
		case TaskFailed, TaskUpstreamFailed:
			failed = append(failed, u.Name)
		case TaskSkipped:
			skipped = append(skipped, u.Name)
			notFailed = append(notFailed, u.Name)
		case TaskCanceled:
			canceled = append(canceled, u.Name)
		default:
			notFailed = append(notFailed, u.Name)
		}
	}
	switch t.Trigger {
	case spec.TriggerAllDone, spec.TriggerAlways:
		return true, "", ""
	case spec.TriggerAnyFailed:
		if len(failed) == 0 {
			return false, TaskSkipped, "trigger any_failed: no upstream task failed"
		}
		return true, "", ""
	case spec.TriggerAllFailed:
		if len(notFailed)+len(canceled) > 0 {
			return false, TaskSkipped, "trigger all_failed: " + upstream(append(notFailed, canceled...), "did not fail")
		}
		return true, "", ""
	}
	// all_success and none_failed
	switch {
	case len(failed) > 0:
		return false, TaskUpstreamFailed, upstream(failed, "failed")
	case len(canceled) > 0:
		return false, TaskCanceled, upstream(canceled, "was canceled")
	case len(skipped) > 0 && t.Trigger == spec.TriggerAllSuccess:
		return false, TaskSkipped, upstream(skipped, "was skipped") + " (trigger none_failed runs after skipped tasks)"
	}
	return true, "", ""
}

// upstream says what happened to upstream tasks: "upstream a failed",
// "upstream a, b were skipped".
func upstream(names []string, what string) string {
	if len(names) > 1 {
		what = strings.Replace(what, "was ", "were ", 1)
	}
	return "upstream " + joinNames(names, 5) + " " + what
}

// fanOut evaluates a for_each task's items and starts its first instances.
func (e *Engine) fanOut(t *spec.Task, rt *Task, vars expr.Vars) error {
	list := t.ForEachList
	if t.ForEach != nil {
		v, err := t.ForEach.Eval(vars, nil)
		if err != nil {
			e.end(rt, TaskFailed, "for_each: "+err.Error())
			return nil
		}
		l, ok := v.([]any)
		if !ok {
			e.end(rt, TaskFailed, fmt.Sprintf("for_each: want a list, got %s", expr.Describe(v)))
			return nil
		}
		list = l
	}
	if len(list) > spec.MaxForEachItems {
		e.end(rt, TaskFailed, fmt.Sprintf("for_each: %d items, more than the limit of %d", len(list), spec.MaxForEachItems))
		return nil
	}
	rt.Items = len(list)
	if len(list) == 0 {
		rt.Outputs = json.RawMessage("[]")
		e.end(rt, TaskSkipped, "for_each: no items")
		return nil
	}
	values := make([]json.RawMessage, len(list))
	for i, item := range list {
		data, err := expr.Marshal(item)
		if err != nil {
			e.end(rt, TaskFailed, fmt.Sprintf("for_each: item %d: %v", i, err))
			return nil
		}
		values[i] = data
	}
	e.step.Items = append(e.step.Items, Items{Task: t.Name, Values: values})
	if e.items == nil {
		e.items = map[string][]json.RawMessage{}
	}
	e.items[t.Name] = values
	e.setTask(rt, TaskRunning, "")
	return e.fill(t, rt)
}

// item returns item index of a for_each task, from this step or the store.
func (e *Engine) item(task string, index int) (json.RawMessage, error) {
	if values, ok := e.items[task]; ok {
		return values[index], nil
	}
	data, err := e.v.Data.Item(task, index)
	if err != nil {
		return nil, fmt.Errorf("read item %d of %s: %w", index, task, err)
	}
	return data, nil
}

// fill starts instances of a running for_each task while it has free slots:
// first instances that a retry runs again, then new ones in item order. It
// ends the task when every instance has ended.
func (e *Engine) fill(t *spec.Task, rt *Task) error {
	stopping := e.v.Run.CancelRequested && (t.Trigger != spec.TriggerAlways || e.force)
	free := t.MaxParallel - rt.Active
	if !stopping && free > 0 && rt.Redo > 0 {
		// One read a step: the attempts this step creates are not in the store
		// yet, so a second read would return the same instances.
		want := min(free, rt.Redo)
		redo, err := e.v.Data.RedoInstances(t.Name, want)
		if err != nil {
			return fmt.Errorf("read instances of %s to retry: %w", t.Name, err)
		}
		for _, in := range redo {
			if err := e.startInstance(t, rt, in.Index, in.LastNumber+1, in.LastNumber); err != nil {
				return err
			}
			free--
		}
		rt.Redo -= len(redo)
		if len(redo) < want {
			rt.Redo = 0
		}
		e.touch(rt)
	}
	for !stopping && free > 0 && rt.Next < rt.Items {
		index := rt.Next
		rt.Next++
		if err := e.startInstance(t, rt, index, 1, 0); err != nil {
			return err
		}
		free--
		e.touch(rt)
	}
	if rt.Active > 0 || (!stopping && (rt.Next < rt.Items || rt.Redo > 0)) {
		return nil
	}
	return e.endForEach(t, rt)
}

// startInstance creates the first attempt of one instance (or its first after
// a retry of the run). An instance whose work cannot be rendered fails at once.
func (e *Engine) startInstance(t *spec.Task, rt *Task, index, number, base int) error {
	item, err := e.item(t.Name, index)
	if err != nil {
		return err
	}
	work, err := e.render(t, index, item, number)
	if err != nil {
		a := e.newAttempt(t, index, number, base, &Work{Item: item}, e.now)
		a.State, a.Reason, a.EndedAt = AttemptFailed, err.Error(), e.now
		rt.Failed++
		e.event(Event{Task: t.Name, Index: index, Attempt: number, State: string(AttemptFailed), Reason: a.Reason})
		return nil
	}
	e.newAttempt(t, index, number, base, work, e.now)
	rt.Active++
	return nil
}

// endForEach ends a for_each task whose instances have all ended, with its
// outputs: a list of every instance's outputs in item order.
func (e *Engine) endForEach(t *spec.Task, rt *Task) error {
	outs, err := e.v.Data.InstanceOutputs(t.Name, rt.Items)
	if err != nil {
		return fmt.Errorf("read outputs of %s: %w", t.Name, err)
	}
	// Attempts of this step are not in the store yet.
	for _, a := range e.step.Attempts {
		if a.Task == t.Name && a.State == AttemptSucceeded && a.Index < len(outs) {
			outs[a.Index] = a.Outputs
		}
	}
	rt.Outputs = joinList(outs)
	switch {
	case rt.Failed == 0 && rt.Succeeded == rt.Items:
		e.end(rt, TaskSucceeded, "")
	case e.v.Run.CancelRequested:
		e.end(rt, TaskCanceled, "run canceled")
	default:
		e.end(rt, TaskFailed, fmt.Sprintf("%d of %d instances failed", rt.Items-rt.Succeeded, rt.Items))
	}
	return nil
}

// joinList makes a JSON list of raw values, null for a missing one.
func joinList(values []json.RawMessage) json.RawMessage {
	n := 2
	for _, v := range values {
		n += len(v) + 1
	}
	out := make([]byte, 0, n)
	out = append(out, '[')
	for i, v := range values {
		if i > 0 {
			out = append(out, ',')
		}
		if len(v) == 0 {
			v = json.RawMessage("null")
		}
		out = append(out, v...)
	}
	return append(out, ']')
}
