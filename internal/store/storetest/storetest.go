// Package storetest is the conformance suite every store.Store implementation
// passes: SQLite now, PostgreSQL later. An implementation's test calls Run with
// a function that opens a fresh, empty, migrated store and registers its
// cleanup:
//
//	func TestConformance(t *testing.T) {
//		storetest.Run(t, func(t *testing.T) store.Store {
//			s, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "dray.db"), sqlite.Options{})
//			if err != nil {
//				t.Fatal(err)
//			}
//			t.Cleanup(func() { s.Close() })
//			return s
//		})
//	}
//
// Every case is a parallel subtest with a store of its own, and checks the doc
// comments of store.Store and store.Tx; a case's comment quotes the sentences
// it checks. Durability across a reopen is the implementation's own test.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/dray-dev/dray/internal/engine"
	"github.com/dray-dev/dray/internal/store"
)

// Run runs the conformance suite as parallel subtests of t. open is called once
// per subtest and returns a fresh, empty store.
func Run(t *testing.T, open func(t *testing.T) store.Store) {
	for _, c := range []struct {
		name string
		f    func(t *testing.T, s store.Store)
		// fresh is for a case whose subtests need a store each.
		fresh func(t *testing.T, open func(t *testing.T) store.Store)
	}{
		// Transactions.
		{"UpdateCommits", testUpdateCommits, nil},
		{"UpdateRollsBackOnError", testUpdateRollsBackOnError, nil},
		{"UpdateRollsBackOnPanic", testUpdateRollsBackOnPanic, nil},
		{"ViewIsReadOnly", testViewIsReadOnly, nil},
		{"ViewSnapshot", testViewSnapshot, nil},
		{"RunLockSerializesUpdates", testRunLock, nil},
		{"NotFound", testNotFound, nil},

		// Specs and runs.
		{"Specs", testSpecs, nil},
		{"RunRoundTrip", testRunRoundTrip, nil},
		{"RunVariants", testRunVariants, nil},
		{"RunTimes", testRunTimes, nil},
		{"InsertRunDuplicate", testInsertRunDuplicate, nil},
		{"ResolveRunID", testResolveRunID, nil},
		{"Runs", testRuns, nil},
		{"RunsPaging", testRunsPaging, nil},
		{"CountRuns", testCountRuns, nil},

		// Tasks and items.
		{"TaskRoundTrip", testTaskRoundTrip, nil},
		{"PutTasksReplaces", testPutTasksReplaces, nil},
		{"Tasks", testTasks, nil},
		{"Items", testItems, nil},

		// Attempts.
		{"AttemptRoundTrip", testAttemptRoundTrip, nil},
		{"AttemptVariants", testAttemptVariants, nil},
		{"AttemptIDs", testAttemptIDs, nil},
		{"Attempts", testAttempts, nil},
		{"InstanceOutputs", testInstanceOutputs, nil},
		{"RedoInstances", testRedoInstances, nil},

		// The queue.
		{"Claim", nil, testClaim},
		{"ClaimSetsFields", testClaimSetsFields, nil},
		{"ClaimInTurn", testClaimInTurn, nil},
		{"ClaimConcurrent", testClaimConcurrent, nil},
		{"Due", testDue, nil},
		{"DueZeroNotBefore", testDueZeroNotBefore, nil},
		{"NextDue", testNextDue, nil},
		{"CountActive", testCountActive, nil},

		// Logs.
		{"Logs", testLogs, nil},
		{"AppendLogsTwice", testAppendLogsTwice, nil},
		{"SealLogs", testSealLogs, nil},
		{"Unsealed", testUnsealed, nil},

		// Agents.
		{"AgentRoundTrip", testAgentRoundTrip, nil},
		{"Agents", testAgents, nil},

		// The service: auth, audit, schedules, leases, events.
		{"Users", testUsers, nil},
		{"Tokens", testTokens, nil},
		{"Sessions", testSessions, nil},
		{"Audit", testAudit, nil},
		{"Schedules", testSchedules, nil},
		{"MarkFired", testMarkFired, nil},
		{"Leases", testLeases, nil},
		{"Notify", testNotify, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			if c.fresh != nil {
				c.fresh(t, open)
				return
			}
			c.f(t, open(t))
		})
	}
}

// t0 is the suite's clock: fixtures are placed relative to it. It has
// nanoseconds and is not in UTC, so that every time written is one the store
// must truncate and convert.
var t0 = time.Date(2024, 3, 10, 13, 4, 5, 123456789, time.FixedZone("CET", 3600))

// update runs fn in s.Update and fails the test if it returns an error.
func update(t *testing.T, s store.Store, fn func(ctx context.Context, tx store.Tx) error) {
	t.Helper()
	ctx := t.Context()
	if err := s.Update(ctx, func(tx store.Tx) error { return fn(ctx, tx) }); err != nil {
		t.Fatalf("Update: %v", err)
	}
}

// view runs fn in s.View and fails the test if it returns an error.
func view(t *testing.T, s store.Store, fn func(ctx context.Context, tx store.Tx) error) {
	t.Helper()
	ctx := t.Context()
	if err := s.View(ctx, func(tx store.Tx) error { return fn(ctx, tx) }); err != nil {
		t.Fatalf("View: %v", err)
	}
}

// get returns what fn reads in a View of its own, failing the test on an error.
func get[T any](t *testing.T, s store.Store, fn func(ctx context.Context, tx store.Tx) (T, error)) T {
	t.Helper()
	var v T
	view(t, s, func(ctx context.Context, tx store.Tx) error {
		var err error
		v, err = fn(ctx, tx)
		return err
	})
	return v
}

// wantNotFound fails the test unless err is store.ErrNotFound.
func wantNotFound(t *testing.T, what string, err error) {
	t.Helper()
	if !errors.Is(err, store.ErrNotFound) {
		t.Errorf("%s: got error %v, want store.ErrNotFound", what, err)
	}
}

// newRun returns a run with the fields a fresh run has.
func newRun(id, pipeline string, state engine.RunState, created time.Time) *engine.Run {
	return &engine.Run{
		ID:        id,
		Pipeline:  pipeline,
		SpecHash:  "spec-" + pipeline,
		State:     state,
		Trigger:   "manual",
		Salt:      "salt",
		CreatedAt: created,
	}
}

// insertRuns records runs and the specs they refer to, in one transaction.
func insertRuns(ctx context.Context, tx store.Tx, runs ...*engine.Run) error {
	for _, r := range runs {
		if err := tx.PutSpec(ctx, r.SpecHash, map[string][]byte{"dray.yaml": []byte("pipelines: {}\n")}); err != nil {
			return fmt.Errorf("put spec %s: %w", r.SpecHash, err)
		}
		if err := tx.InsertRun(ctx, deepCopy(r)); err != nil {
			return fmt.Errorf("insert run %s: %w", r.ID, err)
		}
	}
	return nil
}

// newAttempt returns a routable attempt of an instance in a state, created at
// t0 and queued at t0 unless it is pending.
func newAttempt(runID, task string, index, number int, state engine.AttemptState) *engine.Attempt {
	a := &engine.Attempt{
		RunID:     runID,
		Pipeline:  "pipe",
		Task:      task,
		Index:     index,
		Number:    number,
		State:     state,
		Executor:  "local",
		Work:      &engine.Work{Run: "true", Profile: "default", ExecutorType: "local"},
		CreatedAt: t0,
	}
	if state != engine.AttemptPending {
		a.QueuedAt = t0
	}
	return a
}

// insertAttempts records attempts in order in one transaction, first
// recording the runs and tasks they belong to where missing, so that a store
// may enforce foreign keys. It sets each attempt's ID.
func insertAttempts(t *testing.T, s store.Store, as ...*engine.Attempt) {
	t.Helper()
	update(t, s, func(ctx context.Context, tx store.Tx) error {
		if err := insertParents(ctx, tx, as...); err != nil {
			return err
		}
		for _, a := range as {
			// Write a copy: the expected value must not change with what
			// the store does to its argument, except for the ID it sets.
			c := deepCopy(a)
			if err := tx.InsertAttempt(ctx, c); err != nil {
				return fmt.Errorf("insert attempt of %s/%s[%d] #%d: %w", a.RunID, a.Task, a.Index, a.Number, err)
			}
			a.ID = c.ID
		}
		return nil
	})
}

// insertParents records the runs and tasks the attempts belong to, where they
// are not recorded yet.
func insertParents(ctx context.Context, tx store.Tx, as ...*engine.Attempt) error {
	for _, a := range as {
		_, err := tx.Run(ctx, a.RunID)
		if errors.Is(err, store.ErrNotFound) {
			err = insertRuns(ctx, tx, newRun(a.RunID, a.Pipeline, engine.RunRunning, t0))
		}
		if err != nil {
			return err
		}
		_, err = tx.Task(ctx, a.RunID, a.Task)
		if errors.Is(err, store.ErrNotFound) {
			err = tx.PutTasks(ctx, []*engine.Task{{RunID: a.RunID, Name: a.Task, State: engine.TaskRunning, Items: -1}})
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// attemptIDs returns the IDs of attempts.
func attemptIDs(as []*engine.Attempt) []int64 {
	ids := make([]int64, len(as))
	for i, a := range as {
		ids[i] = a.ID
	}
	return ids
}

// runIDs returns the IDs of runs.
func runIDs(rs []*engine.Run) []string {
	ids := make([]string, len(rs))
	for i, r := range rs {
		ids[i] = r.ID
	}
	return ids
}

func intPtr(i int) *int { return &i }
