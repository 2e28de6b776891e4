package engine

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/dray-dev/dray/internal/expr"
	"github.com/dray-dev/dray/internal/spec"
)

// world is an in-memory record of one run. It gives the engine copies of its
// rows and applies only what the engine returns in a Step, so a change the
// engine forgets to return is lost here as it would be in a store.
type world struct {
	t        *testing.T
	plan     *spec.Pipeline
	run      *Run
	tasks    map[string]*Task
	items    map[string][]json.RawMessage
	attempts []*Attempt
	events   []Event
	now      time.Time
	reads    int // task rows read lazily
}

// load builds a pipeline from YAML files; "p.yaml" is the pipeline itself.
func load(t *testing.T, files map[string]string) *spec.Pipeline {
	t.Helper()
	fsys := fstest.MapFS{
		"dray.yaml":         {Data: []byte("version: 1\npools: {db: {slots: 2}}\n")},
		"schemas/rows.json": {Data: []byte(`{"type": "object", "required": ["rows"], "properties": {"rows": {"type": "integer"}}}`)},
	}
	for name, src := range files {
		if name == "p.yaml" {
			name = "pipelines/p.yaml"
		}
		fsys[name] = &fstest.MapFile{Data: []byte(src)}
	}
	proj, err := spec.Load(fsys)
	if err != nil {
		t.Fatal(err)
	}
	p, err := proj.Pipeline("p")
	if err != nil {
		t.Fatalf("load pipeline: %v", err)
	}
	return p
}

func newWorld(t *testing.T, pipeline string, params map[string]any) *world {
	t.Helper()
	plan := load(t, map[string]string{"p.yaml": pipeline})
	now := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	if params == nil {
		params = map[string]any{}
	}
	run := &Run{ID: "r1", Pipeline: "p", State: RunQueued, Trigger: "manual", LogicalTime: now, Salt: "salt", CreatedAt: now}
	params, err := spec.ResolveParams(plan.Params, params, expr.Vars{expr.RootRun: RunVars(run)})
	if err != nil {
		t.Fatal(err)
	}
	run.Params = params
	w := &world{t: t, plan: plan, now: now, run: run, tasks: map[string]*Task{}, items: map[string][]json.RawMessage{}}
	w.step(func(e *Engine) (*Step, error) { return e.Start() })
	return w
}

func clone[T any](v *T) *T {
	c := *v
	return &c
}

func (w *world) view() *View {
	return &View{Run: clone(w.run), Tasks: map[string]*Task{}, Data: worldData{w}}
}

// fullView holds every task, as Cancel and Retry require.
func (w *world) fullView() *View {
	v := w.view()
	for name, t := range w.tasks {
		v.Tasks[name] = clone(t)
	}
	return v
}

// step runs one engine decision and applies its Step.
func (w *world) step(fn func(e *Engine) (*Step, error)) *Step {
	w.t.Helper()
	return w.stepView(w.view(), fn)
}

func (w *world) stepView(v *View, fn func(e *Engine) (*Step, error)) *Step {
	w.t.Helper()
	s, err := fn(New(w.plan, v, w.now))
	if err != nil {
		w.t.Fatalf("engine: %v", err)
	}
	w.apply(s)
	return s
}

func (w *world) apply(s *Step) {
	if s.Run != nil {
		w.run = clone(s.Run)
	}
	for _, t := range s.Tasks {
		w.tasks[t.Name] = clone(t)
	}
	for _, it := range s.Items {
		w.items[it.Task] = it.Values
	}
	for _, a := range s.Attempts {
		if a.ID == 0 {
			a.ID = int64(len(w.attempts) + 1)
			w.attempts = append(w.attempts, clone(a))
			continue
		}
		w.attempts[a.ID-1] = clone(a)
	}
	w.events = append(w.events, s.Events...)
}

// outcome is what a scripted agent reports for an attempt.
type outcome func(a *Attempt) Result

func ok(outputs string) Result {
	if outputs == "" {
		return Result{State: AttemptSucceeded}
	}
	return Result{State: AttemptSucceeded, Outputs: json.RawMessage(outputs)}
}

func fail(reason string) Result { return Result{State: AttemptFailed, Reason: reason} }

// queued returns the attempts an agent could claim now, admitting pending ones
// whose time has come (the store's admission, without pools).
func (w *world) queued() []*Attempt {
	var out []*Attempt
	for _, a := range w.attempts {
		if a.State == AttemptPending && !a.NotBefore.After(w.now) {
			a.State, a.QueuedAt = AttemptQueued, w.now
		}
		if a.State == AttemptQueued {
			out = append(out, a)
		}
	}
	return out
}

// finish reports one attempt's result.
func (w *world) finish(a *Attempt, res Result) {
	w.t.Helper()
	w.step(func(e *Engine) (*Step, error) { return e.Finish(clone(a), res) })
}

// drive plays agents until the run ends: it claims every queued attempt, reports
// what fn says, and moves the clock to the next retry when nothing is queued.
// It checks max_parallel and returns the most instances that ran at once per task.
func (w *world) drive(fn outcome) map[string]int {
	w.t.Helper()
	peak := map[string]int{}
	for i := 0; i < 1_000_000 && !w.run.State.Final(); i++ {
		q := w.queued()
		if len(q) == 0 {
			next := time.Time{}
			for _, a := range w.attempts {
				if a.State == AttemptPending && (next.IsZero() || a.NotBefore.Before(next)) {
					next = a.NotBefore
				}
			}
			if next.IsZero() {
				w.t.Fatalf("run %s is stuck: nothing queued or pending\n%s", w.run.State, w.dump())
			}
			w.now = next
			continue
		}
		running := map[string]int{}
		for _, a := range q {
			running[a.Task]++
		}
		for task, n := range running {
			peak[task] = max(peak[task], n)
		}
		for _, a := range q {
			a.State, a.ClaimedAt, a.StartedAt, a.Agent = AttemptRunning, w.now, w.now, "agent"
		}
		for _, a := range q {
			w.finish(a, fn(a))
		}
		w.now = w.now.Add(time.Second)
	}
	return peak
}

func (w *world) dump() string {
	var b strings.Builder
	fmt.Fprintf(&b, "run %s %q unfinished=%d\n", w.run.State, w.run.Reason, w.run.Unfinished)
	for _, t := range w.plan.Tasks {
		rt := w.tasks[t.Name]
		fmt.Fprintf(&b, "  task %s %s %q outputs=%s items=%d next=%d active=%d ok=%d failed=%d\n",
			t.Name, rt.State, rt.Reason, rt.Outputs, rt.Items, rt.Next, rt.Active, rt.Succeeded, rt.Failed)
	}
	for _, a := range w.attempts {
		fmt.Fprintf(&b, "  attempt %d %s[%d]#%d %s %q\n", a.ID, a.Task, a.Index, a.Number, a.State, a.Reason)
	}
	return b.String()
}

func (w *world) task(name string) *Task {
	t, ok := w.tasks[name]
	if !ok {
		w.t.Fatalf("no task %s", name)
	}
	return t
}

func (w *world) attemptsOf(task string) []*Attempt {
	var out []*Attempt
	for _, a := range w.attempts {
		if a.Task == task {
			out = append(out, a)
		}
	}
	return out
}

// worldData reads the world for the engine, returning copies.
type worldData struct{ w *world }

func (d worldData) Task(name string) (*Task, error) {
	d.w.reads++
	t, ok := d.w.tasks[name]
	if !ok {
		return nil, fmt.Errorf("no task %s", name)
	}
	return clone(t), nil
}

func (d worldData) Tasks() ([]*Task, error) {
	var out []*Task
	for _, t := range d.w.tasks {
		out = append(out, clone(t))
	}
	return out, nil
}

func (d worldData) Outputs(t *Task) (any, error) {
	row := d.w.tasks[t.Name]
	if row.Outputs == nil {
		return nil, fmt.Errorf("task %s has no outputs", t.Name)
	}
	return expr.Decode(row.Outputs)
}

func (d worldData) Item(task string, index int) (json.RawMessage, error) {
	return d.w.items[task][index], nil
}

func (d worldData) InstanceOutputs(task string, n int) ([]json.RawMessage, error) {
	out := make([]json.RawMessage, n)
	for _, a := range d.w.attempts {
		if a.Task == task && a.State == AttemptSucceeded {
			out[a.Index] = a.Outputs
		}
	}
	return out, nil
}

func (d worldData) ActiveAttempts() ([]*Attempt, error) {
	var out []*Attempt
	for _, a := range d.w.attempts {
		if !a.State.Final() {
			out = append(out, clone(a))
		}
	}
	return out, nil
}

func (d worldData) RedoInstances(task string, limit int) ([]Instance, error) {
	last := map[int]*Attempt{}
	for _, a := range d.w.attempts {
		if a.Task == task {
			last[a.Index] = a
		}
	}
	var out []Instance
	for i := 0; len(out) < limit; i++ {
		if i > d.w.tasks[task].Items {
			break
		}
		a, ok := last[i]
		if ok && a.State.Final() && a.State != AttemptSucceeded {
			out = append(out, Instance{Index: i, LastNumber: a.Number})
		}
	}
	slices.SortFunc(out, func(a, b Instance) int { return a.Index - b.Index })
	return out, nil
}
