package storetest

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/dray-dev/dray/internal/engine"
	"github.com/dray-dev/dray/internal/store"
)

// queued returns attempts of one task, one per spec, each created and queued
// a second after the one before, so that list order is oldest first by every
// measure (ID, CreatedAt, QueuedAt, NotBefore).
func queued(specs ...queuedSpec) []*engine.Attempt {
	as := make([]*engine.Attempt, len(specs))
	for i, sp := range specs {
		state := sp.state
		if state == "" {
			state = engine.AttemptQueued
		}
		run := sp.run
		if run == "" {
			run = "run-1"
		}
		a := newAttempt(run, "fan", i, 1, state)
		a.Labels = sp.labels
		if sp.executor != "" {
			a.Executor = sp.executor
			a.Work.ExecutorType = sp.executor
		}
		a.CreatedAt = t0.Add(time.Duration(i) * time.Second)
		a.NotBefore = a.CreatedAt
		if state != engine.AttemptPending {
			a.QueuedAt = a.CreatedAt
		}
		as[i] = a
	}
	return as
}

type queuedSpec struct {
	run      string // "" for run-1
	labels   []string
	executor string              // "" for local
	state    engine.AttemptState // "" for queued
}

// q is a queued attempt with labels, for the local executor.
func q(labels ...string) queuedSpec { return queuedSpec{labels: labels} }

// testClaim: Claim "marks up to c.Limit queued attempts claimed ... and
// returns them, oldest first. An attempt is claimable when its Executor is one
// of c.Executors, its Labels are a subset of c.Labels and, if c.RunID is set,
// it belongs to that run."
func testClaim(t *testing.T, open func(t *testing.T) store.Store) {
	var manyGPU []queuedSpec
	for range 50 {
		manyGPU = append(manyGPU, q("gpu"))
	}
	everyState := []queuedSpec{}
	for _, st := range []engine.AttemptState{
		engine.AttemptPending, engine.AttemptClaimed, engine.AttemptRunning, engine.AttemptSucceeded,
		engine.AttemptQueued, engine.AttemptFailed, engine.AttemptCanceled, engine.AttemptLost,
	} {
		everyState = append(everyState, queuedSpec{state: st})
	}
	for _, c := range []struct {
		name      string
		attempts  []queuedSpec
		labels    []string
		executors []string
		limit     int
		want      []int // indexes into attempts, in claim order
		runID     string
	}{
		{"labels a, agent a b", []queuedSpec{q("a")}, []string{"a", "b"}, []string{"local"}, 10, []int{0}, ""},
		{"labels a b, agent a", []queuedSpec{q("a", "b")}, []string{"a"}, []string{"local"}, 10, nil, ""},
		{"labels a b, agent a b", []queuedSpec{q("a", "b")}, []string{"a", "b"}, []string{"local"}, 10, []int{0}, ""},
		{"labels b a, agent a c b", []queuedSpec{q("b", "a")}, []string{"a", "c", "b"}, []string{"local"}, 10, []int{0}, ""},
		{"labels a, agent b", []queuedSpec{q("a")}, []string{"b"}, []string{"local"}, 10, nil, ""},
		{"labels a, agent none", []queuedSpec{q("a")}, nil, []string{"local"}, 10, nil, ""},
		{"no labels, agent none", []queuedSpec{q()}, nil, []string{"local"}, 10, []int{0}, ""},
		{"no labels, agent x", []queuedSpec{q()}, []string{"x"}, []string{"local"}, 10, []int{0}, ""},
		{"labels gpu, agent gpu-large", []queuedSpec{q("gpu")}, []string{"gpu-large"}, []string{"local"}, 10, nil, ""},
		{"executor not offered", []queuedSpec{{executor: "ecs"}}, nil, []string{"local", "docker"}, 10, nil, ""},
		{"executor one of several", []queuedSpec{{executor: "ecs"}}, nil, []string{"docker", "ecs"}, 10, []int{0}, ""},
		{"no executors", []queuedSpec{q()}, nil, nil, 10, nil, ""},
		{"labels and executor", []queuedSpec{{labels: []string{"a"}, executor: "ecs"}, {labels: []string{"a"}}}, []string{"a"}, []string{"ecs"}, 10, []int{0}, ""},
		{"only queued", everyState, nil, []string{"local"}, 10, []int{4}, ""},
		{"oldest first", []queuedSpec{q(), q(), q(), q()}, nil, []string{"local"}, 10, []int{0, 1, 2, 3}, ""},
		{"limit", []queuedSpec{q(), q(), q(), q(), q()}, nil, []string{"local"}, 3, []int{0, 1, 2}, ""},
		{"unroutable head", []queuedSpec{q("gpu"), q()}, nil, []string{"local"}, 1, []int{1}, ""},
		{"many unroutable ahead", append(slices.Clone(manyGPU), q(), q()), nil, []string{"local"}, 1, []int{50}, ""},
		{"routable among unroutable", []queuedSpec{q("gpu"), q(), {executor: "ecs"}, q("a"), q("gpu"), q()}, []string{"a"}, []string{"local"}, 10, []int{1, 3, 5}, ""},
		{"routable among unroutable, limit", []queuedSpec{q("gpu"), q(), {executor: "ecs"}, q("a"), q("gpu"), q()}, []string{"a"}, []string{"local"}, 2, []int{1, 3}, ""},
		{"run", []queuedSpec{{run: "run-1"}, {run: "run-2"}, {run: "run-10"}, {run: "run-2"}}, nil, []string{"local"}, 10, []int{1, 3}, "run-2"},
		{"run, limit", []queuedSpec{{run: "run-1"}, {run: "run-2"}, {run: "run-2"}}, nil, []string{"local"}, 1, []int{1}, "run-2"},
		{"run and labels", []queuedSpec{{run: "run-2", labels: []string{"gpu"}}, {run: "run-1"}, {run: "run-2"}}, nil, []string{"local"}, 10, []int{2}, "run-2"},
		{"no such run", []queuedSpec{{run: "run-1"}}, nil, []string{"local"}, 10, nil, "run-2"},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			s := open(t)
			as := queued(c.attempts...)
			insertAttempts(t, s, as...)
			cl := store.Claim{Agent: "agent-1", Labels: c.labels, Executors: c.executors, RunID: c.runID, Limit: c.limit, Now: t0.Add(time.Hour)}
			claimed := claim(t, s, cl)
			var want []int64
			for _, i := range c.want {
				want = append(want, as[i].ID)
			}
			if ids := attemptIDs(claimed); !slices.Equal(ids, want) {
				t.Errorf("Claim(%+v): got %v, want %v", cl, ids, want)
			}
		})
	}
}

// claim runs Claim in an Update of its own.
func claim(t *testing.T, s store.Store, c store.Claim) []*engine.Attempt {
	t.Helper()
	var claimed []*engine.Attempt
	update(t, s, func(ctx context.Context, tx store.Tx) error {
		var err error
		claimed, err = tx.Claim(ctx, c)
		return err
	})
	return claimed
}

// testClaimSetsFields: Claim "marks ... attempts claimed by agent at now and
// returns them": state claimed, Agent and ClaimedAt set, every other field as
// it was, both in what it returns and in what it records; the attempts it
// does not claim do not change.
func testClaimSetsFields(t *testing.T, s store.Store) {
	a := fullAttempt("run-1", "load", 0)
	a.State, a.ClaimedAt, a.StartedAt, a.EndedAt = engine.AttemptQueued, time.Time{}, time.Time{}, time.Time{}
	a.Agent, a.Handle, a.ExitCode, a.Outputs, a.Warnings, a.CancelRequested = "", nil, nil, nil, nil, false
	unroutable := deepCopy(a)
	unroutable.Index = 1
	unroutable.Labels = []string{"arm"}
	insertAttempts(t, s, a, unroutable)

	now := t0.Add(time.Hour + 456789*time.Nanosecond)
	claimed := claim(t, s, store.Claim{Agent: "agent-9", Labels: []string{"gpu", "linux", "x86"}, Executors: []string{"local", "docker"}, Limit: 10, Now: now})
	want := deepCopy(a)
	want.State, want.Agent, want.ClaimedAt = engine.AttemptClaimed, "agent-9", now
	if len(claimed) != 1 {
		t.Fatalf("Claim: got %d attempts, want 1", len(claimed))
	}
	checkEqual(t, "claimed attempt returned", want, claimed[0])
	view(t, s, func(ctx context.Context, tx store.Tx) error {
		got, err := tx.Attempt(ctx, a.ID)
		if err != nil {
			return err
		}
		checkEqual(t, "claimed attempt recorded", want, got)
		got, err = tx.Attempt(ctx, unroutable.ID)
		if err != nil {
			return err
		}
		checkEqual(t, "attempt not claimed", unroutable, got)
		return nil
	})
}

// testClaimInTurn: claims one after another hand out the queue oldest first,
// each attempt once, limit at a time.
func testClaimInTurn(t *testing.T, s store.Store) {
	as := queued(q(), q(), q(), q(), q())
	insertAttempts(t, s, as...)
	ids := attemptIDs(as)
	for i, want := range [][]int64{ids[0:2], ids[2:4], ids[4:5], nil} {
		agent := fmt.Sprintf("agent-%d", i)
		got := claim(t, s, store.Claim{Agent: agent, Executors: []string{"local"}, Limit: 2, Now: t0.Add(time.Duration(i) * time.Minute)})
		if g := attemptIDs(got); !slices.Equal(g, want) {
			t.Errorf("claim %d: got %v, want %v", i, g, want)
		}
	}
}

// testClaimConcurrent: "Two transactions never claim the same attempt."
// Eight agents claim concurrently, each claim in an Update of its own, until
// the queue is empty: every attempt is handed out once. A store may
// serialize the transactions; none may fail.
func testClaimConcurrent(t *testing.T, s store.Store) {
	const n, agents, limit = 200, 8, 7
	specs := make([]queuedSpec, n)
	as := queued(specs...)
	insertAttempts(t, s, as...)

	start := make(chan struct{})
	var (
		mu    sync.Mutex
		owner = map[int64][]string{} // attempt ID -> agents that claimed it
		total int                    // attempts handed out, counting repeats
		wg    sync.WaitGroup
	)
	for i := range agents {
		agent := fmt.Sprintf("agent-%d", i)
		wg.Go(func() {
			<-start
			for {
				var claimed []*engine.Attempt
				err := s.Update(t.Context(), func(tx store.Tx) error {
					var err error
					claimed, err = tx.Claim(t.Context(), store.Claim{Agent: agent, Executors: []string{"local"}, Limit: limit, Now: t0})
					return err
				})
				if err != nil {
					t.Errorf("%s: Update with Claim: %v", agent, err)
					return
				}
				if len(claimed) == 0 {
					return
				}
				if len(claimed) > limit {
					t.Errorf("%s: Claim with limit %d returned %d attempts", agent, limit, len(claimed))
				}
				mu.Lock()
				for _, a := range claimed {
					owner[a.ID] = append(owner[a.ID], agent)
				}
				total += len(claimed)
				over := total > n
				mu.Unlock()
				if over {
					// More handed out than were queued: a store that
					// hands out the same attempt again would never stop.
					return
				}
			}
		})
	}
	close(start)
	wg.Wait()

	if total > n {
		t.Errorf("%d attempts handed out for %d queued", total, n)
	}
	for id, agents := range owner {
		if len(agents) > 1 {
			t.Errorf("attempt %d claimed %d times, by %q", id, len(agents), agents)
		}
	}
	var missing []int64
	for _, a := range as {
		if _, ok := owner[a.ID]; !ok {
			missing = append(missing, a.ID)
		}
	}
	if len(missing) > 0 {
		t.Errorf("%d of %d queued attempts were never claimed: %v", len(missing), n, missing)
	}
	recorded := get(t, s, func(ctx context.Context, tx store.Tx) ([]*engine.Attempt, error) {
		return tx.Attempts(ctx, store.AttemptFilter{})
	})
	for _, a := range recorded {
		if got := owner[a.ID]; a.State != engine.AttemptClaimed || len(got) != 1 || a.Agent != got[0] {
			t.Errorf("attempt %d is recorded %s by %q; it was claimed by %q", a.ID, a.State, a.Agent, got)
		}
	}
}

// testDue: "Due returns up to limit pending attempts whose NotBefore is at or
// before now, oldest first."
func testDue(t *testing.T, s store.Store) {
	now := t0
	offsets := []struct {
		state     engine.AttemptState
		notBefore time.Duration
	}{
		{engine.AttemptPending, -2 * time.Hour},   // 0
		{engine.AttemptQueued, -3 * time.Hour},    // 1: not pending
		{engine.AttemptPending, -time.Hour},       // 2
		{engine.AttemptFailed, -3 * time.Hour},    // 3: not pending
		{engine.AttemptPending, 0},                // 4: at now
		{engine.AttemptPending, time.Microsecond}, // 5: just after now
		{engine.AttemptPending, time.Hour},        // 6
		{engine.AttemptRunning, -3 * time.Hour},   // 7: not pending
		{engine.AttemptCanceled, -3 * time.Hour},  // 8: not pending
	}
	var as []*engine.Attempt
	for i, o := range offsets {
		a := newAttempt("run-1", "fan", i, 1, o.state)
		a.CreatedAt = t0.Add(-4*time.Hour + time.Duration(i)*time.Second)
		a.NotBefore = now.Add(o.notBefore)
		as = append(as, a)
	}
	insertAttempts(t, s, as...)
	for _, c := range []struct {
		name  string
		now   time.Time
		limit int
		want  []int
	}{
		{"now", now, 10, []int{0, 2, 4}},
		{"limit", now, 2, []int{0, 2}},
		{"later", now.Add(time.Hour), 10, []int{0, 2, 4, 5, 6}},
		{"earlier", now.Add(-90 * time.Minute), 10, []int{0}},
		{"before all", now.Add(-3 * time.Hour), 10, nil},
	} {
		got := get(t, s, func(ctx context.Context, tx store.Tx) ([]*engine.Attempt, error) { return tx.Due(ctx, c.now, c.limit) })
		var want []int64
		for _, i := range c.want {
			want = append(want, as[i].ID)
		}
		if ids := attemptIDs(got); !slices.Equal(ids, want) {
			t.Errorf("Due %s (limit %d): got %v, want %v", c.name, c.limit, ids, want)
			continue
		}
		for i, a := range got {
			checkEqual(t, fmt.Sprintf("due attempt %d", c.want[i]), as[c.want[i]], a)
		}
	}
}

// testDueZeroNotBefore: an attempt pending for a slot of its pool, not for a
// time, has a zero NotBefore: it is due at any time ("a zero time stays
// zero", and zero is before now), and it is the earliest for NextDue.
func testDueZeroNotBefore(t *testing.T, s store.Store) {
	slot := newAttempt("run-1", "fan", 0, 1, engine.AttemptPending)
	slot.Pool = "warehouse"
	later := newAttempt("run-1", "fan", 1, 1, engine.AttemptPending)
	later.NotBefore = t0.Add(time.Hour)
	insertAttempts(t, s, slot, later)
	got := get(t, s, func(ctx context.Context, tx store.Tx) ([]*engine.Attempt, error) { return tx.Due(ctx, t0, 10) })
	if ids, want := attemptIDs(got), []int64{slot.ID}; !slices.Equal(ids, want) {
		t.Errorf("Due: got %v, want %v (the attempt with a zero NotBefore)", ids, want)
	}
	var next time.Time
	var ok bool
	view(t, s, func(ctx context.Context, tx store.Tx) error {
		var err error
		next, ok, err = tx.NextDue(ctx)
		return err
	})
	if !ok || !next.IsZero() {
		t.Errorf("NextDue = %v, %v; want the zero time, true", next, ok)
	}
}

// testNextDue: "NextDue returns the earliest NotBefore of the pending
// attempts, or false when there is none."
func testNextDue(t *testing.T, s store.Store) {
	nextDue := func() (time.Time, bool) {
		var next time.Time
		var ok bool
		view(t, s, func(ctx context.Context, tx store.Tx) error {
			var err error
			next, ok, err = tx.NextDue(ctx)
			return err
		})
		return next, ok
	}
	if next, ok := nextDue(); ok {
		t.Errorf("NextDue on an empty store = %v, true; want false", next)
	}

	queuedEarly := newAttempt("run-1", "fan", 0, 1, engine.AttemptQueued)
	queuedEarly.NotBefore = t0.Add(-5 * time.Hour)
	failedEarly := newAttempt("run-1", "fan", 1, 1, engine.AttemptFailed)
	failedEarly.NotBefore = t0.Add(-5 * time.Hour)
	insertAttempts(t, s, queuedEarly, failedEarly)
	if next, ok := nextDue(); ok {
		t.Errorf("NextDue with no pending attempt = %v, true; want false", next)
	}

	late := newAttempt("run-1", "fan", 2, 1, engine.AttemptPending)
	late.NotBefore = t0.Add(2 * time.Hour)
	insertAttempts(t, s, late)
	if next, ok := nextDue(); !ok || !next.Equal(late.NotBefore.Truncate(time.Microsecond)) {
		t.Errorf("NextDue = %v, %v; want %v, true", next, ok, late.NotBefore)
	}

	early := newAttempt("run-1", "fan", 3, 1, engine.AttemptPending)
	early.NotBefore = t0.Add(-time.Hour)
	insertAttempts(t, s, early)
	next, ok := nextDue()
	if !ok || !next.Equal(early.NotBefore.Truncate(time.Microsecond)) {
		t.Errorf("NextDue = %v, %v; want %v, true", next, ok, early.NotBefore)
	}
	if ok && next.Location() != time.UTC {
		t.Errorf("NextDue = %v in %s, want UTC", next, next.Location())
	}

	// The pending attempts are queued: none is pending any more.
	update(t, s, func(ctx context.Context, tx store.Tx) error {
		for _, a := range []*engine.Attempt{late, early} {
			a.State, a.QueuedAt = engine.AttemptQueued, t0
			if err := tx.UpdateAttempt(ctx, a); err != nil {
				return err
			}
		}
		return nil
	})
	if next, ok := nextDue(); ok {
		t.Errorf("NextDue after every pending attempt was queued = %v, true; want false", next)
	}
}

// testCountActive: "CountActive counts the queued, claimed and running
// attempts of a pipeline (pool == "") or of a pool (pipeline == "")."
func testCountActive(t *testing.T, s store.Store) {
	var as []*engine.Attempt
	add := func(run, pipeline, pool string, states ...engine.AttemptState) {
		for _, st := range states {
			a := newAttempt(run, "task", len(as), 1, st)
			a.Pipeline, a.Pool = pipeline, pool
			as = append(as, a)
		}
	}
	every := []engine.AttemptState{
		engine.AttemptPending, engine.AttemptQueued, engine.AttemptClaimed, engine.AttemptRunning,
		engine.AttemptSucceeded, engine.AttemptFailed, engine.AttemptCanceled, engine.AttemptLost,
	}
	add("run-1", "p1", "A", every...)                                                          // p1: 3, A: 3
	add("run-2", "p1", "", engine.AttemptQueued, engine.AttemptRunning, engine.AttemptPending) // p1: 2
	add("run-3", "p2", "A", engine.AttemptClaimed, engine.AttemptSucceeded)                    // p2: 1, A: 1
	add("run-4", "p2", "B", engine.AttemptRunning, engine.AttemptFailed)                       // p2: 1, B: 1
	add("run-5", "p10", "A2", engine.AttemptRunning)                                           // p10: 1, A2: 1
	insertAttempts(t, s, as...)
	for _, c := range []struct {
		pipeline, pool string
		want           int
	}{
		{"p1", "", 5},
		{"p2", "", 2},
		{"p10", "", 1},
		{"p3", "", 0},
		{"", "A", 4},
		{"", "B", 1},
		{"", "A2", 1},
		{"", "C", 0},
	} {
		got := get(t, s, func(ctx context.Context, tx store.Tx) (int, error) { return tx.CountActive(ctx, c.pipeline, c.pool) })
		if got != c.want {
			t.Errorf("CountActive(pipeline %q, pool %q) = %d, want %d", c.pipeline, c.pool, got, c.want)
		}
	}
}
