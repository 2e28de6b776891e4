package storetest

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/dray-dev/dray/internal/engine"
	"github.com/dray-dev/dray/internal/store"
)

// fullAttempt returns an attempt with every field set but its ID.
func fullAttempt(runID, task string, index int) *engine.Attempt {
	return &engine.Attempt{
		RunID:    runID,
		Pipeline: "etl",
		Task:     task,
		Index:    index,
		Number:   3,
		Base:     1,
		State:    engine.AttemptRunning,
		Reason:   "retrying after exit 1",
		Work: &engine.Work{
			Run:     "python load.py --date ${DATE}",
			Image:   "ghcr.io/acme/etl:1.2",
			Command: []string{"sh", "-c", "echo \"$X\" && exit 0"},
			Env:     map[string]string{"DATE": "2024-03-10", "EMPTY": ""},
			Workdir: "/work",
			Profile: "prod",
			// Options as the spec decodes them: Go types that JSON turns
			// into others, so they compare as JSON.
			Options: map[string]any{
				"network":           "host",
				"subnets":           []string{"subnet-1", "subnet-2"},
				"assign_public_ip":  true,
				"ephemeral_storage": 30,
				"kill_grace":        10 * time.Second,
				"tags":              map[string]string{"team": "data"},
				"nested":            map[string]any{"sidecars": []any{map[string]any{"image": "envoy"}}},
			},
			ExecutorType: "docker",
			Resources:    engine.Resources{CPU: "500m", Memory: "1Gi", Region: "eu-west-1", MilliCPU: 500, MemoryBytes: 1 << 30},
			Timeout:      90*time.Minute + 1500*time.Millisecond,
			Item:         json.RawMessage(`{"id":7,"name":"seven","tags":["x"]}`),
			Params:       json.RawMessage(`{"date":"2024-03-10","n":2}`),
			Secrets:      []string{"DB_PASSWORD", "API_TOKEN"},
			Nonce:        "n0nce",
		},
		Pool:            "warehouse",
		Labels:          []string{"gpu", "linux"},
		Executor:        "docker",
		NotBefore:       t0.Add(-time.Minute),
		CreatedAt:       t0.Add(-2 * time.Minute),
		QueuedAt:        t0.Add(-time.Minute + time.Nanosecond),
		ClaimedAt:       t0.Add(-30 * time.Second),
		StartedAt:       t0.Add(-29*time.Second + 999*time.Nanosecond),
		EndedAt:         t0,
		Agent:           "agent-7",
		Handle:          []byte{'{', 0, 1, 0x7f, 0x80, 0xfe, 0xff, '}'},
		ExitCode:        intPtr(137),
		Outputs:         json.RawMessage(`{"rows":12,"path":"s3://b/k"}`),
		Warnings:        []string{"output x is not declared", "second"},
		CancelRequested: true,
	}
}

// testAttemptRoundTrip: "InsertAttempt records a new attempt", "UpdateAttempt
// writes every field of an attempt", "Attempt returns an attempt by id":
// every field comes back, the work's too.
func testAttemptRoundTrip(t *testing.T, s store.Store) {
	a := fullAttempt("run-1", "load", 4)
	other := fullAttempt("run-1", "load", 5)
	insertAttempts(t, s, a, other)
	if a.ID == 0 {
		t.Fatal("InsertAttempt did not set the ID")
	}
	got := get(t, s, func(ctx context.Context, tx store.Tx) (*engine.Attempt, error) { return tx.Attempt(ctx, a.ID) })
	checkEqual(t, "inserted attempt", a, got)

	// Change every field but the ID and where it belongs.
	u := &engine.Attempt{
		ID:       a.ID,
		RunID:    a.RunID,
		Pipeline: a.Pipeline,
		Task:     a.Task,
		Index:    a.Index,
		Number:   4,
		Base:     2,
		State:    engine.AttemptFailed,
		Reason:   "exit 2",
		Work: &engine.Work{
			Run:          "true",
			Profile:      "default",
			ExecutorType: "local",
			Options:      map[string]any{"shell": "bash"},
			Timeout:      time.Second,
		},
		Pool:            "other",
		Labels:          []string{"arm"},
		Executor:        "local",
		NotBefore:       t0.Add(time.Hour),
		CreatedAt:       t0.Add(time.Hour + time.Microsecond),
		QueuedAt:        t0.Add(2 * time.Hour),
		ClaimedAt:       t0.Add(3 * time.Hour),
		StartedAt:       t0.Add(4 * time.Hour),
		EndedAt:         t0.Add(5 * time.Hour),
		Agent:           "agent-8",
		Handle:          []byte(`{"pid":42}`),
		ExitCode:        intPtr(2),
		Outputs:         json.RawMessage(`{"rows":0}`),
		Warnings:        []string{"third"},
		CancelRequested: false,
	}
	update(t, s, func(ctx context.Context, tx store.Tx) error { return tx.UpdateAttempt(ctx, deepCopy(u)) })
	// UpdateAttempt writes every field but Work, which never changes.
	stored := deepCopy(u)
	stored.Work = a.Work
	view(t, s, func(ctx context.Context, tx store.Tx) error {
		got, err := tx.Attempt(ctx, a.ID)
		if err != nil {
			return err
		}
		checkEqual(t, "updated attempt", stored, got)
		got, err = tx.Attempt(ctx, other.ID)
		if err != nil {
			return err
		}
		checkEqual(t, "attempt not updated", other, got)
		return nil
	})
}

// testAttemptVariants: optional fields of an attempt round-trip through
// InsertAttempt, and through UpdateAttempt from an attempt with every field
// set: ExitCode nil, 0 and 137 are three values; outputs nil and {} are two.
func testAttemptVariants(t *testing.T, s store.Store) {
	for i, c := range []struct {
		name string
		edit func(*engine.Attempt)
	}{
		{"exit code nil", func(a *engine.Attempt) { a.ExitCode = nil }},
		{"exit code 0", func(a *engine.Attempt) { a.ExitCode = intPtr(0) }},
		{"exit code 137", func(a *engine.Attempt) { a.ExitCode = intPtr(137) }},
		{"exit code -1", func(a *engine.Attempt) { a.ExitCode = intPtr(-1) }},
		{"outputs nil", func(a *engine.Attempt) { a.Outputs = nil }},
		{"outputs empty object", func(a *engine.Attempt) { a.Outputs = json.RawMessage(`{}`) }},
		{"pending, no work yet", func(a *engine.Attempt) {
			a.State, a.Work, a.QueuedAt, a.ClaimedAt, a.StartedAt, a.EndedAt = engine.AttemptPending, nil, time.Time{}, time.Time{}, time.Time{}, time.Time{}
			a.Agent, a.Handle, a.ExitCode, a.Outputs, a.Warnings = "", nil, nil, nil, nil
		}},
		{"no labels, pool or not-before", func(a *engine.Attempt) { a.Labels, a.Pool, a.NotBefore = nil, "", time.Time{} }},
		{"minimal work", func(a *engine.Attempt) { a.Work = &engine.Work{Profile: "default", ExecutorType: "local"} }},
		{"no handle", func(a *engine.Attempt) { a.Handle = nil }},
		{"cancel not requested", func(a *engine.Attempt) { a.CancelRequested = false }},
	} {
		t.Run(c.name, func(t *testing.T) {
			inserted := fullAttempt("run-1", "task", 2*i)
			c.edit(inserted)
			updated := fullAttempt("run-1", "task", 2*i+1)
			insertAttempts(t, s, inserted, updated)
			want := fullAttempt("run-1", "task", 2*i+1)
			want.ID = updated.ID
			c.edit(want)
			update(t, s, func(ctx context.Context, tx store.Tx) error { return tx.UpdateAttempt(ctx, deepCopy(want)) })
			view(t, s, func(ctx context.Context, tx store.Tx) error {
				got, err := tx.Attempt(ctx, inserted.ID)
				if err != nil {
					return err
				}
				checkEqual(t, "inserted attempt", inserted, got)
				got, err = tx.Attempt(ctx, updated.ID)
				if err != nil {
					return err
				}
				// UpdateAttempt keeps the Work the attempt was inserted with.
				stored := deepCopy(want)
				stored.Work = updated.Work
				checkEqual(t, "updated attempt", stored, got)
				return nil
			})
		})
	}
}

// testAttemptIDs: InsertAttempt "sets its ID (unique, increasing)", within a
// transaction and across transactions.
func testAttemptIDs(t *testing.T, s store.Store) {
	var all []*engine.Attempt
	for batch := range 3 {
		var as []*engine.Attempt
		for i := range 4 {
			as = append(as, newAttempt("run-1", "fan", batch*4+i, 1, engine.AttemptQueued))
		}
		insertAttempts(t, s, as...)
		all = append(all, as...)
	}
	for i, a := range all {
		if a.ID <= 0 {
			t.Errorf("attempt %d: ID %d, want a positive ID", i, a.ID)
		}
		if i > 0 && a.ID <= all[i-1].ID {
			t.Errorf("attempt %d: ID %d after %d; want increasing IDs", i, a.ID, all[i-1].ID)
		}
	}
	view(t, s, func(ctx context.Context, tx store.Tx) error {
		for _, a := range all {
			got, err := tx.Attempt(ctx, a.ID)
			if err != nil {
				return fmt.Errorf("attempt %d: %w", a.ID, err)
			}
			if got.Index != a.Index {
				t.Errorf("Attempt(%d) has index %d, want %d", a.ID, got.Index, a.Index)
			}
		}
		return nil
	})
}

// testAttempts: "Attempts lists attempts by ID, ascending"; AttemptFilter:
// "Zero fields select everything", RunID, Task, HasIndex and Index, Agent,
// States, Limit.
func testAttempts(t *testing.T, s store.Store) {
	named := map[string]*engine.Attempt{}
	var order []string
	add := func(name, run, task string, index int, state engine.AttemptState, agent string) {
		a := newAttempt(run, task, index, 1, state)
		a.Agent = agent
		// Created in the reverse of ID order: the list is by ID all the same.
		a.CreatedAt = t0.Add(-time.Duration(len(order)) * time.Second)
		named[name] = a
		order = append(order, name)
	}
	add("1/extract/0", "run-1", "extract", 0, engine.AttemptFailed, "a1")
	add("1/extract/0#2", "run-1", "extract", 0, engine.AttemptSucceeded, "a2")
	add("1/fan/0", "run-1", "fan", 0, engine.AttemptSucceeded, "a1")
	add("1/fan/1", "run-1", "fan", 1, engine.AttemptRunning, "a2")
	add("1/fan/2", "run-1", "fan", 2, engine.AttemptQueued, "")
	add("2/extract/0", "run-2", "extract", 0, engine.AttemptClaimed, "a1")
	add("2/fan/1", "run-2", "fan", 1, engine.AttemptPending, "")
	add("10/fan/1", "run-10", "fan", 1, engine.AttemptLost, "a10")
	named["1/extract/0#2"].Number = 2
	var as []*engine.Attempt
	for _, name := range order {
		as = append(as, named[name])
	}
	insertAttempts(t, s, as...)

	for _, c := range []struct {
		name string
		f    store.AttemptFilter
		want []string
	}{
		{"all", store.AttemptFilter{}, order},
		{"run", store.AttemptFilter{RunID: "run-1"}, []string{"1/extract/0", "1/extract/0#2", "1/fan/0", "1/fan/1", "1/fan/2"}},
		{"run and task", store.AttemptFilter{RunID: "run-1", Task: "fan"}, []string{"1/fan/0", "1/fan/1", "1/fan/2"}},
		{"task of every run", store.AttemptFilter{Task: "fan"}, []string{"1/fan/0", "1/fan/1", "1/fan/2", "2/fan/1", "10/fan/1"}},
		{"index 0", store.AttemptFilter{RunID: "run-1", Task: "fan", HasIndex: true, Index: 0}, []string{"1/fan/0"}},
		{"index 1", store.AttemptFilter{Task: "fan", HasIndex: true, Index: 1}, []string{"1/fan/1", "2/fan/1", "10/fan/1"}},
		{"index without HasIndex", store.AttemptFilter{RunID: "run-1", Task: "fan", Index: 1}, []string{"1/fan/0", "1/fan/1", "1/fan/2"}},
		{"no such index", store.AttemptFilter{HasIndex: true, Index: 9}, nil},
		{"agent", store.AttemptFilter{Agent: "a1"}, []string{"1/extract/0", "1/fan/0", "2/extract/0"}},
		{"one state", store.AttemptFilter{States: []engine.AttemptState{engine.AttemptSucceeded}}, []string{"1/extract/0#2", "1/fan/0"}},
		{"states", store.AttemptFilter{States: []engine.AttemptState{engine.AttemptQueued, engine.AttemptClaimed, engine.AttemptPending}}, []string{"1/fan/2", "2/extract/0", "2/fan/1"}},
		{"run and states", store.AttemptFilter{RunID: "run-2", States: []engine.AttemptState{engine.AttemptQueued}}, nil},
		{"agent and state", store.AttemptFilter{Agent: "a2", States: []engine.AttemptState{engine.AttemptRunning}}, []string{"1/fan/1"}},
		{"limit", store.AttemptFilter{Limit: 2}, []string{"1/extract/0", "1/extract/0#2"}},
		{"run and limit", store.AttemptFilter{RunID: "run-2", Limit: 1}, []string{"2/extract/0"}},
		{"task, index and limit", store.AttemptFilter{Task: "fan", HasIndex: true, Index: 1, Limit: 2}, []string{"1/fan/1", "2/fan/1"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			got := get(t, s, func(ctx context.Context, tx store.Tx) ([]*engine.Attempt, error) { return tx.Attempts(ctx, c.f) })
			var want []int64
			for _, name := range c.want {
				want = append(want, named[name].ID)
			}
			if ids := attemptIDs(got); !slices.Equal(ids, want) {
				t.Fatalf("Attempts(%+v): got IDs %v, want %v (%q)", c.f, ids, want, c.want)
			}
			for i, a := range got {
				checkEqual(t, "listed attempt "+c.want[i], named[c.want[i]], a)
			}
		})
	}
}

// testInstanceOutputs: "InstanceOutputs returns the outputs of instances
// 0..n-1 of a for_each task: for each index the outputs of its succeeded
// attempt, nil where none succeeded."
func testInstanceOutputs(t *testing.T, s store.Store) {
	at := func(run, task string, index, number int, state engine.AttemptState, outputs string) *engine.Attempt {
		a := newAttempt(run, task, index, number, state)
		if outputs != "" {
			a.Outputs = json.RawMessage(outputs)
		}
		return a
	}
	insertAttempts(t, s,
		// 0: succeeded at once.
		at("run-1", "fan", 0, 1, engine.AttemptSucceeded, `{"i":0}`),
		// 1: failed, then succeeded.
		at("run-1", "fan", 1, 1, engine.AttemptFailed, `{"i":"1 failed"}`),
		at("run-1", "fan", 1, 2, engine.AttemptSucceeded, `{"i":1}`),
		// 2: succeeded; a later attempt of it is queued (not final) and
		// another one failed.
		at("run-1", "fan", 2, 1, engine.AttemptSucceeded, `{"i":2}`),
		at("run-1", "fan", 2, 2, engine.AttemptFailed, `{"i":"2 failed"}`),
		at("run-1", "fan", 2, 3, engine.AttemptQueued, ""),
		// 3: failed only.
		at("run-1", "fan", 3, 1, engine.AttemptFailed, `{"i":"3 failed"}`),
		// 4: running.
		at("run-1", "fan", 4, 1, engine.AttemptRunning, ""),
		// 5: succeeded with empty outputs.
		at("run-1", "fan", 5, 1, engine.AttemptSucceeded, `{}`),
		// 6: no attempt. 7: beyond n.
		at("run-1", "fan", 7, 1, engine.AttemptSucceeded, `{"i":7}`),
		// The same indexes of another task and another run.
		at("run-1", "other", 3, 1, engine.AttemptSucceeded, `{"other":3}`),
		at("run-1", "other", 6, 1, engine.AttemptSucceeded, `{"other":6}`),
		at("run-2", "fan", 3, 1, engine.AttemptSucceeded, `{"run":2}`),
		at("run-2", "fan", 6, 1, engine.AttemptSucceeded, `{"run":2}`),
	)
	for _, c := range []struct {
		n    int
		want []string // "" for nil
	}{
		{7, []string{`{"i":0}`, `{"i":1}`, `{"i":2}`, "", "", `{}`, ""}},
		{3, []string{`{"i":0}`, `{"i":1}`, `{"i":2}`}},
		{9, []string{`{"i":0}`, `{"i":1}`, `{"i":2}`, "", "", `{}`, "", `{"i":7}`, ""}},
		{0, nil},
	} {
		got := get(t, s, func(ctx context.Context, tx store.Tx) ([]json.RawMessage, error) {
			return tx.InstanceOutputs(ctx, "run-1", "fan", c.n)
		})
		want := make([]json.RawMessage, len(c.want))
		for i, w := range c.want {
			if w != "" {
				want[i] = json.RawMessage(w)
			}
		}
		if len(got) != c.n {
			t.Errorf("InstanceOutputs(n=%d): got %d entries, want %d", c.n, len(got), c.n)
			continue
		}
		checkEqual(t, fmt.Sprintf("InstanceOutputs(n=%d)", c.n), want, got)
	}
}

// testRedoInstances: "RedoInstances returns up to limit instances of a task
// whose attempt with the highest number ended failed, canceled or lost, in
// index order, with that number."
func testRedoInstances(t *testing.T, s store.Store) {
	type try struct {
		number int
		state  engine.AttemptState
	}
	// Instances in the order their attempts are inserted: not index order,
	// and for some not number order either.
	instances := []struct {
		index int
		tries []try
	}{
		{6, []try{{1, engine.AttemptFailed}, {2, engine.AttemptFailed}, {3, engine.AttemptLost}}},
		{0, []try{{1, engine.AttemptFailed}}},
		{1, []try{{1, engine.AttemptFailed}, {2, engine.AttemptSucceeded}}},
		{2, []try{{1, engine.AttemptSucceeded}, {2, engine.AttemptFailed}}},
		{3, []try{{1, engine.AttemptFailed}, {2, engine.AttemptQueued}}},
		{4, []try{{1, engine.AttemptFailed}, {2, engine.AttemptRunning}}},
		{5, []try{{1, engine.AttemptCanceled}}},
		// 7 has no attempt.
		{8, []try{{1, engine.AttemptFailed}, {2, engine.AttemptClaimed}}},
		{9, []try{{1, engine.AttemptPending}}},
		{10, []try{{2, engine.AttemptFailed}, {1, engine.AttemptSucceeded}}},
		{11, []try{{2, engine.AttemptSucceeded}, {1, engine.AttemptLost}}},
		{12, []try{{1, engine.AttemptSucceeded}}},
		{13, []try{{1, engine.AttemptFailed}, {2, engine.AttemptPending}}},
	}
	var as []*engine.Attempt
	for _, in := range instances {
		for _, tr := range in.tries {
			as = append(as, newAttempt("run-1", "fan", in.index, tr.number, tr.state))
		}
	}
	// Failed instances of another task and another run.
	as = append(as,
		newAttempt("run-1", "other", 1, 1, engine.AttemptFailed),
		newAttempt("run-1", "other", 7, 1, engine.AttemptFailed),
		newAttempt("run-2", "fan", 7, 1, engine.AttemptFailed),
	)
	insertAttempts(t, s, as...)

	all := []engine.Instance{{Index: 0, LastNumber: 1}, {Index: 2, LastNumber: 2}, {Index: 5, LastNumber: 1}, {Index: 6, LastNumber: 3}, {Index: 10, LastNumber: 2}}
	for _, c := range []struct {
		limit int
		want  []engine.Instance
	}{
		{100, all},
		{5, all},
		{2, all[:2]},
		{1, all[:1]},
	} {
		got := get(t, s, func(ctx context.Context, tx store.Tx) ([]engine.Instance, error) {
			return tx.RedoInstances(ctx, "run-1", "fan", c.limit)
		})
		if !slices.Equal(got, c.want) {
			t.Errorf("RedoInstances(limit %d):\n got  %+v\n want %+v", c.limit, got, c.want)
		}
	}
}
