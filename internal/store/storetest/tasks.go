package storetest

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dray-dev/dray/internal/engine"
	"github.com/dray-dev/dray/internal/store"
)

// fullTask returns a task with every field set. Its outputs are JSON as a
// person or a tool might write it: odd spacing, keys out of order, a number
// with a trailing zero.
func fullTask(runID, name string) *engine.Task {
	return &engine.Task{
		RunID:     runID,
		Name:      name,
		State:     engine.TaskSucceeded,
		Reason:    "checks passed",
		Outputs:   json.RawMessage(`{ "z": 1.50,"a" : [1, "two", {"b":null}],  "é": "\u00e9" }`),
		Items:     12,
		Next:      11,
		Active:    3,
		Succeeded: 5,
		Failed:    2,
		Redo:      1,
		Attempts:  4,
		Base:      2,
		Version:   9,
		StartedAt: t0,
		EndedAt:   t0.Add(90 * time.Second),
	}
}

// testTaskRoundTrip: "PutTasks inserts ... task rows", "Task returns one task
// of a run, with its outputs": every field comes back, and the outputs byte
// for byte.
func testTaskRoundTrip(t *testing.T, s store.Store) {
	update(t, s, func(ctx context.Context, tx store.Tx) error {
		return insertRuns(ctx, tx, newRun("run-1", "pipe", engine.RunRunning, t0))
	})
	for _, c := range []struct {
		name string
		edit func(*engine.Task)
	}{
		{"every field", func(*engine.Task) {}},
		{"no outputs, no items yet", func(k *engine.Task) {
			k.State, k.Outputs, k.Items, k.EndedAt = engine.TaskPending, nil, -1, time.Time{}
		}},
		{"for_each outputs", func(k *engine.Task) { k.Outputs = json.RawMessage("[{\"x\":1},\n null, {}]") }},
		{"empty object outputs", func(k *engine.Task) { k.Outputs = json.RawMessage(`{}`) }},
		{"zero counters and times", func(k *engine.Task) {
			k.Next, k.Active, k.Succeeded, k.Failed, k.Redo, k.Attempts, k.Base, k.Version = 0, 0, 0, 0, 0, 0, 0, 0
			k.StartedAt, k.EndedAt = time.Time{}, time.Time{}
		}},
		{"upstream failed", func(k *engine.Task) { k.State, k.Reason = engine.TaskUpstreamFailed, "upstream extract failed" }},
	} {
		t.Run(c.name, func(t *testing.T) {
			k := fullTask("run-1", c.name)
			c.edit(k)
			update(t, s, func(ctx context.Context, tx store.Tx) error { return tx.PutTasks(ctx, deepCopy([]*engine.Task{k})) })
			got := get(t, s, func(ctx context.Context, tx store.Tx) (*engine.Task, error) { return tx.Task(ctx, "run-1", k.Name) })
			checkEqualExact(t, "task", k, got)
		})
	}
}

// testPutTasksReplaces: "PutTasks inserts or replaces task rows (keyed by run
// and name)": a second put replaces every field, including outputs with none.
func testPutTasksReplaces(t *testing.T, s store.Store) {
	update(t, s, func(ctx context.Context, tx store.Tx) error {
		return insertRuns(ctx, tx, newRun("run-1", "pipe", engine.RunRunning, t0))
	})
	first := fullTask("run-1", "load")
	other := fullTask("run-1", "extract")
	update(t, s, func(ctx context.Context, tx store.Tx) error {
		return tx.PutTasks(ctx, deepCopy([]*engine.Task{first, other}))
	})

	// A retry resets the task: outputs go, the version moves on.
	reset := &engine.Task{RunID: "run-1", Name: "load", State: engine.TaskPending, Items: -1, Base: 4, Version: 10}
	added := fullTask("run-1", "notify")
	update(t, s, func(ctx context.Context, tx store.Tx) error {
		return tx.PutTasks(ctx, deepCopy([]*engine.Task{reset, added}))
	})
	view(t, s, func(ctx context.Context, tx store.Tx) error {
		for _, want := range []*engine.Task{reset, other, added} {
			got, err := tx.Task(ctx, "run-1", want.Name)
			if err != nil {
				return err
			}
			checkEqualExact(t, "task "+want.Name, want, got)
		}
		tasks, err := tx.Tasks(ctx, "run-1")
		if err != nil {
			return err
		}
		if len(tasks) != 3 {
			t.Errorf("Tasks after a replace: got %d tasks, want 3", len(tasks))
		}
		return nil
	})

	// Replacing in the same transaction as the insert.
	update(t, s, func(ctx context.Context, tx store.Tx) error {
		k := fullTask("run-1", "twice")
		if err := tx.PutTasks(ctx, []*engine.Task{k}); err != nil {
			return err
		}
		k.State, k.Version = engine.TaskRunning, 11
		return tx.PutTasks(ctx, []*engine.Task{k})
	})
	got := get(t, s, func(ctx context.Context, tx store.Tx) (*engine.Task, error) { return tx.Task(ctx, "run-1", "twice") })
	if got.State != engine.TaskRunning || got.Version != 11 {
		t.Errorf("task put twice in one transaction: got state %q, version %d; want running, 11", got.State, got.Version)
	}
}

// testTasks: "Tasks returns every task of a run, in no particular order",
// and no task of another run.
func testTasks(t *testing.T, s store.Store) {
	update(t, s, func(ctx context.Context, tx store.Tx) error {
		return insertRuns(ctx, tx,
			newRun("run-1", "pipe", engine.RunRunning, t0),
			newRun("run-10", "pipe", engine.RunRunning, t0),
			newRun("run-2", "pipe", engine.RunRunning, t0))
	})
	want := map[string]*engine.Task{}
	var all []*engine.Task
	for _, name := range []string{"extract", "transform", "load"} {
		k := fullTask("run-1", name)
		want[name] = k
		all = append(all, k)
		// The same names in other runs, one of whose ids starts with run-1.
		all = append(all, fullTask("run-2", name), fullTask("run-10", name))
	}
	all = append(all, fullTask("run-2", "only-in-run-2"))
	update(t, s, func(ctx context.Context, tx store.Tx) error { return tx.PutTasks(ctx, deepCopy(all)) })

	got := get(t, s, func(ctx context.Context, tx store.Tx) ([]*engine.Task, error) { return tx.Tasks(ctx, "run-1") })
	var names []string
	for _, k := range got {
		names = append(names, k.RunID+"/"+k.Name)
		if w := want[k.Name]; w != nil && k.RunID == "run-1" {
			checkEqualExact(t, "task "+k.Name, w, k)
		}
	}
	slices.Sort(names)
	if w := []string{"run-1/extract", "run-1/load", "run-1/transform"}; !slices.Equal(names, w) {
		t.Errorf("Tasks(run-1): got %q, want %q", names, w)
	}
	none := get(t, s, func(ctx context.Context, tx store.Tx) ([]*engine.Task, error) { return tx.Tasks(ctx, "run-3") })
	if len(none) != 0 {
		t.Errorf("Tasks of a run with no tasks: got %d, want none", len(none))
	}
}

// testItems: "InsertItems records the items of a for_each task, index 0
// upward." "Item returns one item (ErrNotFound)." A thousand items keep their
// order and do not mix with another task's.
func testItems(t *testing.T, s store.Store) {
	const n = 1000
	item := func(task string, i int) json.RawMessage {
		switch i % 5 {
		case 0:
			return json.RawMessage(fmt.Sprintf(`{"task":%q,"i":%d,"tags":["a","b"]}`, task, i))
		case 1:
			return json.RawMessage(fmt.Sprintf(`%d`, i))
		case 2:
			return json.RawMessage(fmt.Sprintf(`"%s-%d %s"`, task, i, strings.Repeat("x", i%50)))
		case 3:
			return json.RawMessage(fmt.Sprintf(`[%d,null,true]`, i))
		}
		return json.RawMessage(fmt.Sprintf(`{"s3":"s3://bucket/%s/%06d.parquet"}`, task, i))
	}
	values := make([]json.RawMessage, n)
	for i := range values {
		values[i] = item("fan", i)
	}
	update(t, s, func(ctx context.Context, tx store.Tx) error {
		if err := insertRuns(ctx, tx, newRun("run-1", "pipe", engine.RunRunning, t0)); err != nil {
			return err
		}
		if err := tx.PutTasks(ctx, []*engine.Task{
			{RunID: "run-1", Name: "fan", State: engine.TaskRunning, Items: n},
			{RunID: "run-1", Name: "other", State: engine.TaskRunning, Items: 3},
		}); err != nil {
			return err
		}
		if err := tx.InsertItems(ctx, "run-1", "fan", deepCopy(values)); err != nil {
			return err
		}
		return tx.InsertItems(ctx, "run-1", "other", []json.RawMessage{item("other", 0), item("other", 1), item("other", 2)})
	})
	view(t, s, func(ctx context.Context, tx store.Tx) error {
		for i, want := range values {
			got, err := tx.Item(ctx, "run-1", "fan", i)
			if err != nil {
				return fmt.Errorf("item %d: %w", i, err)
			}
			checkEqual(t, fmt.Sprintf("item %d", i), want, got)
		}
		for i := range 3 {
			got, err := tx.Item(ctx, "run-1", "other", i)
			if err != nil {
				return fmt.Errorf("item %d of other: %w", i, err)
			}
			checkEqual(t, fmt.Sprintf("item %d of other", i), item("other", i), got)
		}
		_, err := tx.Item(ctx, "run-1", "fan", n)
		wantNotFound(t, "Item past the end", err)
		_, err = tx.Item(ctx, "run-1", "other", 3)
		wantNotFound(t, "Item past the end of the other task", err)
		_, err = tx.Item(ctx, "run-1", "fan", -1)
		wantNotFound(t, "Item -1", err)
		return nil
	})
}
