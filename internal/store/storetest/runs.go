package storetest

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/dray-dev/dray/internal/engine"
	"github.com/dray-dev/dray/internal/store"
)

// testSpecs: "PutSpec records the source files of a pipeline spec under its
// hash. It is idempotent." "Spec returns the sources recorded under hash."
func testSpecs(t *testing.T, s store.Store) {
	a := map[string][]byte{
		"dray.yaml":          []byte("version: 1\n"),
		"pipelines/etl.yaml": []byte("tasks:\n  extract: {run: echo ${{ params.x }}}\n"),
		"binary":             {0, 1, 2, 0xfe, 0xff, '\n'},
		"empty":              {},
	}
	b := map[string][]byte{"dray.yaml": []byte("version: 2\n")}
	update(t, s, func(ctx context.Context, tx store.Tx) error {
		if err := tx.PutSpec(ctx, "hash-a", deepCopy(a)); err != nil {
			return err
		}
		// Twice in one transaction.
		if err := tx.PutSpec(ctx, "hash-a", a); err != nil {
			return err
		}
		return tx.PutSpec(ctx, "hash-b", deepCopy(b))
	})
	// And again in another.
	update(t, s, func(ctx context.Context, tx store.Tx) error { return tx.PutSpec(ctx, "hash-a", deepCopy(a)) })

	view(t, s, func(ctx context.Context, tx store.Tx) error {
		got, err := tx.Spec(ctx, "hash-a")
		if err != nil {
			return err
		}
		checkEqual(t, "Spec(hash-a)", a, got)
		got, err = tx.Spec(ctx, "hash-b")
		if err != nil {
			return err
		}
		checkEqual(t, "Spec(hash-b)", b, got)
		_, err = tx.Spec(ctx, "hash-c")
		wantNotFound(t, "Spec(hash-c)", err)
		_, err = tx.Spec(ctx, "hash")
		wantNotFound(t, "Spec(hash), a prefix of recorded hashes", err)
		return nil
	})
}

// fullRun returns a run with every field set.
func fullRun(id string) *engine.Run {
	return &engine.Run{
		ID:       id,
		Pipeline: "etl",
		SpecHash: "spec-etl",
		State:    engine.RunRunning,
		Reason:   "started by alice",
		// Params hold expression values (expr.Decode): whole numbers are int,
		// others float64. They must come back with the same types, or a
		// reloaded run would evaluate its expressions differently.
		Params: map[string]any{
			"date":  "2024-03-10",
			"count": 3,
			"big":   -1 << 40,
			"ratio": 0.25,
			"dry":   true,
			"none":  nil,
			"list":  []any{1, "two", map[string]any{"three": 3.5}, []any{}},
			"nested": map[string]any{
				"deep":  map[string]any{"deeper": []any{"x", false}},
				"empty": map[string]any{},
				"text":  "quotes \" and \\ and ünïcode ✓",
			},
		},
		Env:             map[string]string{"REGION": "eu-west-1", "EMPTY": "", "MULTI": "a\nb"},
		Trigger:         "schedule",
		LogicalTime:     t0.Add(-24 * time.Hour),
		LogicalDate:     "2024-03-09",
		Salt:            "s4lt",
		Driver:          "agent-local-1",
		CancelRequested: true,
		Unfinished:      7,
		CreatedAt:       t0,
		StartedAt:       t0.Add(1500 * time.Millisecond),
		EndedAt:         t0.Add(time.Hour + 999*time.Nanosecond),
	}
}

// testRunRoundTrip: "InsertRun records a new run", "UpdateRun writes a run's
// progress", "Run returns a run by id": every field comes back, and an update
// changes the progress fields only.
func testRunRoundTrip(t *testing.T, s store.Store) {
	r := fullRun("run-1")
	other := newRun("run-2", "etl", engine.RunQueued, t0)
	update(t, s, func(ctx context.Context, tx store.Tx) error { return insertRuns(ctx, tx, r, other) })
	got := get(t, s, func(ctx context.Context, tx store.Tx) (*engine.Run, error) { return tx.Run(ctx, r.ID) })
	checkEqual(t, "inserted run", r, got)

	// Change every field but the ID; only the progress is written.
	u := &engine.Run{
		ID:          r.ID,
		Pipeline:    "etl2",
		SpecHash:    "spec-etl2",
		State:       engine.RunFailed,
		Reason:      "task load failed",
		Params:      map[string]any{"date": "2024-03-11", "added": map[string]any{"k": []any{2}}},
		Env:         map[string]string{"REGION": "us-east-1"},
		Trigger:     "retry",
		LogicalTime: t0,
		LogicalDate: "2024-03-10",
		Salt:        "other",
		Driver:      "agent-local-2",
		Unfinished:  0,
		CreatedAt:   t0.Add(time.Minute),
		StartedAt:   t0.Add(2 * time.Minute),
		EndedAt:     t0.Add(3 * time.Minute),
	}
	update(t, s, func(ctx context.Context, tx store.Tx) error {
		if err := tx.PutSpec(ctx, u.SpecHash, map[string][]byte{"dray.yaml": []byte("x")}); err != nil {
			return err
		}
		return tx.UpdateRun(ctx, deepCopy(u))
	})
	view(t, s, func(ctx context.Context, tx store.Tx) error {
		got, err := tx.Run(ctx, r.ID)
		if err != nil {
			return err
		}
		checkEqual(t, "updated run", progressed(r, u), got)
		got, err = tx.Run(ctx, other.ID)
		if err != nil {
			return err
		}
		checkEqual(t, "run not updated", other, got)
		return nil
	})
}

// testRunVariants: optional fields of a run round-trip through InsertRun and
// through UpdateRun from a run with every field set.
func testRunVariants(t *testing.T, s store.Store) {
	for i, c := range []struct {
		name string
		edit func(r *engine.Run)
	}{
		{"zero times", func(r *engine.Run) { r.LogicalTime, r.StartedAt, r.EndedAt = time.Time{}, time.Time{}, time.Time{} }},
		{"no params or env", func(r *engine.Run) { r.Params, r.Env = nil, nil }},
		{"cancel not requested", func(r *engine.Run) { r.CancelRequested = false }},
		{"no unfinished tasks", func(r *engine.Run) { r.Unfinished = 0 }},
		{"empty strings", func(r *engine.Run) { r.Reason, r.Salt, r.Trigger, r.Driver, r.LogicalDate = "", "", "", "", "" }},
	} {
		t.Run(c.name, func(t *testing.T) {
			inserted := fullRun("run-insert-" + string(rune('a'+i)))
			c.edit(inserted)
			updated := fullRun("run-update-" + string(rune('a'+i)))
			update(t, s, func(ctx context.Context, tx store.Tx) error { return insertRuns(ctx, tx, inserted, updated) })
			want := fullRun(updated.ID)
			c.edit(want)
			update(t, s, func(ctx context.Context, tx store.Tx) error { return tx.UpdateRun(ctx, deepCopy(want)) })
			view(t, s, func(ctx context.Context, tx store.Tx) error {
				got, err := tx.Run(ctx, inserted.ID)
				if err != nil {
					return err
				}
				checkEqual(t, "inserted run", inserted, got)
				got, err = tx.Run(ctx, updated.ID)
				if err != nil {
					return err
				}
				checkEqual(t, "updated run", progressed(updated, want), got)
				return nil
			})
		})
	}
}

// testRunTimes: "Times are stored with microsecond precision, in UTC; a zero
// time stays zero", spelled out for a run's times.
func testRunTimes(t *testing.T, s store.Store) {
	r := newRun("run-1", "pipe", engine.RunRunning, time.Date(2024, 1, 2, 3, 4, 5, 678901234, time.FixedZone("X", -7*3600)))
	r.StartedAt = time.Date(1999, 12, 31, 23, 59, 59, 999999999, time.UTC)
	update(t, s, func(ctx context.Context, tx store.Tx) error { return insertRuns(ctx, tx, r) })
	got := get(t, s, func(ctx context.Context, tx store.Tx) (*engine.Run, error) { return tx.Run(ctx, r.ID) })
	for _, c := range []struct {
		name      string
		got, want time.Time
	}{
		{"CreatedAt", got.CreatedAt, time.Date(2024, 1, 2, 10, 4, 5, 678901000, time.UTC)},
		{"StartedAt", got.StartedAt, time.Date(1999, 12, 31, 23, 59, 59, 999999000, time.UTC)},
		{"EndedAt", got.EndedAt, time.Time{}},
		{"LogicalTime", got.LogicalTime, time.Time{}},
	} {
		if c.want.IsZero() {
			if !c.got.IsZero() {
				t.Errorf("%s: got %v, want the zero time", c.name, c.got)
			}
			continue
		}
		if !c.got.Equal(c.want) || c.got.Location() != time.UTC {
			t.Errorf("%s: got %s (%s), want %s in UTC", c.name, c.got.Format(time.RFC3339Nano), c.got.Location(), c.want.Format(time.RFC3339Nano))
		}
	}
}

// testInsertRunDuplicate: InsertRun: "its ID must be unique". A second run
// with the ID is refused and the first stays as it was.
func testInsertRunDuplicate(t *testing.T, s store.Store) {
	r := fullRun("run-1")
	update(t, s, func(ctx context.Context, tx store.Tx) error { return insertRuns(ctx, tx, r) })
	dup := newRun(r.ID, r.Pipeline, engine.RunQueued, t0.Add(time.Hour))
	var ierr error
	err := s.Update(t.Context(), func(tx store.Tx) error {
		ierr = tx.InsertRun(t.Context(), dup)
		return ierr
	})
	if ierr == nil || err == nil {
		t.Errorf("InsertRun with a recorded ID: got error %v (Update: %v), want an error", ierr, err)
	}
	got := get(t, s, func(ctx context.Context, tx store.Tx) (*engine.Run, error) { return tx.Run(ctx, r.ID) })
	checkEqual(t, "run after a duplicate InsertRun", r, got)
}

// testResolveRunID: "ResolveRunID returns the id of the one run whose id
// starts with prefix (ErrNotFound, ErrAmbiguous). A full id resolves to
// itself."
func testResolveRunID(t *testing.T, s store.Store) {
	update(t, s, func(ctx context.Context, tx store.Tx) error {
		var runs []*engine.Run
		for _, id := range []string{"abc123", "abc456", "abd789", "xyz1", "xyz12", "p%q", "u_v"} {
			runs = append(runs, newRun(id, "pipe", engine.RunQueued, t0))
		}
		return insertRuns(ctx, tx, runs...)
	})
	for _, c := range []struct {
		prefix string
		want   string
		err    error
	}{
		{prefix: "abc123", want: "abc123"},
		{prefix: "abc1", want: "abc123"},
		{prefix: "abc4", want: "abc456"},
		{prefix: "abd", want: "abd789"},
		{prefix: "abc", err: store.ErrAmbiguous},
		{prefix: "a", err: store.ErrAmbiguous},
		{prefix: "abe", err: store.ErrNotFound},
		{prefix: "abc1234", err: store.ErrNotFound},
		{prefix: "zzz", err: store.ErrNotFound},
		// A full id that is also a prefix of another id.
		{prefix: "xyz1", want: "xyz1"},
		{prefix: "xyz12", want: "xyz12"},
		// The prefix is literal: no pattern characters.
		{prefix: "p%", want: "p%q"},
		{prefix: "%", err: store.ErrNotFound},
		{prefix: "ab_", err: store.ErrNotFound},
		{prefix: "u_", want: "u_v"},
		{prefix: "_", err: store.ErrNotFound},
	} {
		var got string
		var err error
		view(t, s, func(ctx context.Context, tx store.Tx) error {
			got, err = tx.ResolveRunID(ctx, c.prefix)
			return nil
		})
		switch {
		case c.err != nil && !errors.Is(err, c.err):
			t.Errorf("ResolveRunID(%q) = %q, %v; want error %v", c.prefix, got, err, c.err)
		case c.err == nil && (err != nil || got != c.want):
			t.Errorf("ResolveRunID(%q) = %q, %v; want %q", c.prefix, got, err, c.want)
		}
	}
}

// listedRuns records the runs of testRuns and testRunsPaging. Their IDs do
// not sort the way they were created, some share a CreatedAt, and they are
// inserted in neither order.
func listedRuns(t *testing.T, s store.Store) map[string]*engine.Run {
	t.Helper()
	at := func(sec int) time.Time { return t0.Add(time.Duration(sec) * time.Second) }
	runs := []*engine.Run{
		newRun("run-x", "p1", engine.RunRunning, at(3)),
		newRun("run-k", "p1", engine.RunSucceeded, at(1)),
		newRun("run-e", "p1", engine.RunCanceled, at(6)),
		newRun("run-c", "p2", engine.RunFailed, at(2)),
		newRun("run-m", "p2", engine.RunSucceeded, at(3)),
		newRun("run-f", "p1", engine.RunSucceeded, at(7)),
		newRun("run-a", "p1", engine.RunQueued, at(3)),
		newRun("run-z", "p1", engine.RunSucceeded, at(5)),
		newRun("run-d", "p2", engine.RunRunning, at(6)),
		newRun("run-b", "p1", engine.RunFailed, at(4)),
	}
	// Runs a `dray run` drives.
	for _, r := range runs {
		switch r.ID {
		case "run-x", "run-e", "run-d", "run-k":
			r.Driver = "agent-" + r.ID
		}
	}
	update(t, s, func(ctx context.Context, tx store.Tx) error { return insertRuns(ctx, tx, runs...) })
	m := make(map[string]*engine.Run)
	for _, r := range runs {
		m[r.ID] = r
	}
	return m
}

// newestFirst is the order of listedRuns newest first: by CreatedAt, then by
// ID, both descending.
var newestFirst = []string{"run-f", "run-e", "run-d", "run-z", "run-b", "run-x", "run-m", "run-a", "run-c", "run-k"}

// testRuns: "Runs lists runs, newest first (by CreatedAt, then ID)";
// RunFilter: "Zero fields select everything", Pipeline, States, Before
// ("runs created before this run"), Oldest ("oldest first instead"), Driven
// ("runs that have a Driver"), Limit.
func testRuns(t *testing.T, s store.Store) {
	written := listedRuns(t, s)
	oldest := slices.Clone(newestFirst)
	slices.Reverse(oldest)
	for _, c := range []struct {
		name string
		f    store.RunFilter
		want []string
	}{
		{"all", store.RunFilter{}, newestFirst},
		{"oldest", store.RunFilter{Oldest: true}, oldest},
		{"pipeline", store.RunFilter{Pipeline: "p2"}, []string{"run-d", "run-m", "run-c"}},
		{"no such pipeline", store.RunFilter{Pipeline: "p3"}, nil},
		{"one state", store.RunFilter{States: []engine.RunState{engine.RunSucceeded}}, []string{"run-f", "run-z", "run-m", "run-k"}},
		{"states", store.RunFilter{States: []engine.RunState{engine.RunFailed, engine.RunCanceled}}, []string{"run-e", "run-b", "run-c"}},
		{"pipeline and states", store.RunFilter{Pipeline: "p1", States: []engine.RunState{engine.RunSucceeded, engine.RunQueued}}, []string{"run-f", "run-z", "run-a", "run-k"}},
		{"limit", store.RunFilter{Limit: 3}, []string{"run-f", "run-e", "run-d"}},
		{"limit over count", store.RunFilter{Limit: 100}, newestFirst},
		{"oldest limit", store.RunFilter{Oldest: true, Limit: 4}, []string{"run-k", "run-c", "run-a", "run-m"}},
		{"before", store.RunFilter{Before: "run-x"}, []string{"run-m", "run-a", "run-c", "run-k"}},
		{"before a tie", store.RunFilter{Before: "run-e", Limit: 2}, []string{"run-d", "run-z"}},
		{"before the last", store.RunFilter{Before: "run-k"}, nil},
		{"before with pipeline", store.RunFilter{Before: "run-d", Pipeline: "p1", Limit: 2}, []string{"run-z", "run-b"}},
		{"before with states", store.RunFilter{Before: "run-f", States: []engine.RunState{engine.RunSucceeded}}, []string{"run-z", "run-m", "run-k"}},
		{"driven", store.RunFilter{Driven: true}, []string{"run-e", "run-d", "run-x", "run-k"}},
		{"driven with pipeline", store.RunFilter{Driven: true, Pipeline: "p1"}, []string{"run-e", "run-x", "run-k"}},
		{"driven with states", store.RunFilter{Driven: true, States: []engine.RunState{engine.RunRunning, engine.RunQueued}}, []string{"run-d", "run-x"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			got := get(t, s, func(ctx context.Context, tx store.Tx) ([]*engine.Run, error) { return tx.Runs(ctx, c.f) })
			if ids := runIDs(got); !slices.Equal(ids, c.want) {
				t.Fatalf("Runs(%+v):\n got  %q\n want %q", c.f, ids, c.want)
			}
			for _, r := range got {
				checkEqual(t, "listed run "+r.ID, written[r.ID], r)
			}
		})
	}
}

// testRunsPaging: paging with RunFilter.Before and Limit, passing the last id
// of a page, visits every run once, newest first.
func testRunsPaging(t *testing.T, s store.Store) {
	listedRuns(t, s)
	for _, c := range []struct {
		name string
		f    store.RunFilter
		want []string
	}{
		{"all", store.RunFilter{}, newestFirst},
		{"pipeline", store.RunFilter{Pipeline: "p1"}, []string{"run-f", "run-e", "run-z", "run-b", "run-x", "run-a", "run-k"}},
	} {
		for _, size := range []int{1, 2, 3, 4} {
			var pages [][]string
			f := c.f
			f.Limit = size
			for len(pages) <= len(c.want) {
				page := runIDs(get(t, s, func(ctx context.Context, tx store.Tx) ([]*engine.Run, error) { return tx.Runs(ctx, f) }))
				if len(page) == 0 {
					break
				}
				if len(page) > size {
					t.Errorf("%s: a page of Limit %d has %d runs", c.name, size, len(page))
				}
				pages = append(pages, page)
				f.Before = page[len(page)-1]
			}
			if got := slices.Concat(pages...); !slices.Equal(got, c.want) {
				t.Errorf("%s: pages of %d: %q; want %q in order, once each", c.name, size, pages, c.want)
			}
		}
	}
}

// testCountRuns: "CountRuns counts the runs of a pipeline in a state."
func testCountRuns(t *testing.T, s store.Store) {
	listedRuns(t, s)
	for _, c := range []struct {
		pipeline string
		state    engine.RunState
		want     int
	}{
		{"p1", engine.RunSucceeded, 3},
		{"p2", engine.RunSucceeded, 1},
		{"p1", engine.RunQueued, 1},
		{"p1", engine.RunRunning, 1},
		{"p2", engine.RunRunning, 1},
		{"p2", engine.RunCanceled, 0},
		{"p3", engine.RunSucceeded, 0},
	} {
		got := get(t, s, func(ctx context.Context, tx store.Tx) (int, error) { return tx.CountRuns(ctx, c.pipeline, c.state) })
		if got != c.want {
			t.Errorf("CountRuns(%q, %q) = %d, want %d", c.pipeline, c.state, got, c.want)
		}
	}
}

// progressed is run as stored after UpdateRun(u): run with u's progress
// fields, the only ones UpdateRun writes.
func progressed(run, u *engine.Run) *engine.Run {
	out := deepCopy(run)
	out.State, out.Reason, out.Env, out.Driver = u.State, u.Reason, deepCopy(u.Env), u.Driver
	out.CancelRequested, out.Unfinished, out.StartedAt, out.EndedAt = u.CancelRequested, u.Unfinished, u.StartedAt, u.EndedAt
	return out
}
