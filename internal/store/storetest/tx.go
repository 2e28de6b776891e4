package storetest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/dray-dev/dray/internal/engine"
	"github.com/dray-dev/dray/internal/store"
)

// testUpdateCommits: "Update runs fn in a read-write transaction and commits
// when fn returns nil." "View ... sees one consistent snapshot": here, what
// was committed before it began.
func testUpdateCommits(t *testing.T, s store.Store) {
	r := newRun("run-1", "pipe", engine.RunQueued, t0)
	update(t, s, func(ctx context.Context, tx store.Tx) error {
		if err := insertRuns(ctx, tx, r); err != nil {
			return err
		}
		// Within the transaction its own writes are visible.
		got, err := tx.Run(ctx, r.ID)
		if err != nil {
			return fmt.Errorf("read own write: %w", err)
		}
		checkEqual(t, "run read in its own transaction", r, got)
		return nil
	})
	got := get(t, s, func(ctx context.Context, tx store.Tx) (*engine.Run, error) { return tx.Run(ctx, r.ID) })
	checkEqual(t, "committed run", r, got)

	// View returns fn's error.
	errView := errors.New("view failed")
	if err := s.View(t.Context(), func(store.Tx) error { return errView }); !errors.Is(err, errView) {
		t.Errorf("View with fn failing: got %v, want fn's error", err)
	}
}

// writeEverything writes a row of every kind, for testUpdateRollsBack* to
// roll back, and sets *attemptID to the attempt it inserts. Before it runs,
// the store holds one run, "run-0", whose state it changes.
func writeEverything(ctx context.Context, tx store.Tx, attemptID *int64) error {
	r0, err := tx.Run(ctx, "run-0")
	if err != nil {
		return err
	}
	r0.State = engine.RunFailed
	r0.Reason = "rolled back"
	if err := tx.UpdateRun(ctx, r0); err != nil {
		return err
	}
	if err := insertRuns(ctx, tx, newRun("run-1", "other", engine.RunQueued, t0)); err != nil {
		return err
	}
	if err := tx.PutTasks(ctx, []*engine.Task{{RunID: "run-1", Name: "fan", State: engine.TaskRunning, Items: 2}}); err != nil {
		return err
	}
	if err := tx.InsertItems(ctx, "run-1", "fan", []json.RawMessage{json.RawMessage(`1`), json.RawMessage(`2`)}); err != nil {
		return err
	}
	a := newAttempt("run-1", "fan", 0, 1, engine.AttemptQueued)
	a.Pipeline = "other"
	if err := tx.InsertAttempt(ctx, a); err != nil {
		return err
	}
	*attemptID = a.ID
	if err := tx.AppendLogs(ctx, a.ID, []store.LogLine{{Seq: 1, Time: t0, Stream: "stdout", Text: "hello"}}); err != nil {
		return err
	}
	if err := tx.PutAgent(ctx, &store.Agent{ID: "agent-1", State: "active", StartedAt: t0, HeartbeatAt: t0}); err != nil {
		return err
	}
	return tx.PutSpec(ctx, "spec-rolled-back", map[string][]byte{"dray.yaml": []byte("x")})
}

// checkNothingWritten fails the test if anything writeEverything wrote is
// visible.
func checkNothingWritten(t *testing.T, s store.Store, r0 *engine.Run, attemptID int64) {
	t.Helper()
	view(t, s, func(ctx context.Context, tx store.Tx) error {
		got, err := tx.Run(ctx, "run-0")
		if err != nil {
			return err
		}
		checkEqual(t, "run-0 after the rolled back UpdateRun", r0, got)
		_, err = tx.Run(ctx, "run-1")
		wantNotFound(t, "Run of the rolled back InsertRun", err)
		runs, err := tx.Runs(ctx, store.RunFilter{})
		if err != nil {
			return err
		}
		if ids := runIDs(runs); len(ids) != 1 {
			t.Errorf("Runs after the rollback: got %q, want [run-0]", ids)
		}
		_, err = tx.Task(ctx, "run-1", "fan")
		wantNotFound(t, "Task of the rolled back PutTasks", err)
		_, err = tx.Item(ctx, "run-1", "fan", 0)
		wantNotFound(t, "Item of the rolled back InsertItems", err)
		as, err := tx.Attempts(ctx, store.AttemptFilter{})
		if err != nil {
			return err
		}
		if len(as) != 0 {
			t.Errorf("Attempts after the rollback: got %d attempts, want none", len(as))
		}
		_, err = tx.Attempt(ctx, attemptID)
		wantNotFound(t, "Attempt of the rolled back InsertAttempt", err)
		lines, err := tx.Logs(ctx, attemptID, 0, 10)
		if err != nil {
			return err
		}
		if len(lines) != 0 {
			t.Errorf("Logs after the rollback: got %d lines, want none", len(lines))
		}
		_, err = tx.Agent(ctx, "agent-1")
		wantNotFound(t, "Agent of the rolled back PutAgent", err)
		_, err = tx.Spec(ctx, "spec-rolled-back")
		wantNotFound(t, "Spec of the rolled back PutSpec", err)
		return nil
	})
}

// testUpdateRollsBackOnError: Update "rolls back when fn returns an error";
// nothing the transaction wrote is visible afterwards, and Update returns fn's
// error.
func testUpdateRollsBackOnError(t *testing.T, s store.Store) {
	r0 := newRun("run-0", "pipe", engine.RunRunning, t0)
	update(t, s, func(ctx context.Context, tx store.Tx) error { return insertRuns(ctx, tx, r0) })

	errFn := errors.New("fn failed")
	var id int64
	err := s.Update(t.Context(), func(tx store.Tx) error {
		if err := writeEverything(t.Context(), tx, &id); err != nil {
			t.Errorf("writing in the transaction to roll back: %v", err)
		}
		return errFn
	})
	if !errors.Is(err, errFn) {
		t.Errorf("Update with fn failing: got %v, want fn's error", err)
	}
	checkNothingWritten(t, s, r0, id)
}

// testUpdateRollsBackOnPanic: Update "rolls back when fn ... panics". The
// panic goes on to the caller, nothing is written, and the store still works.
func testUpdateRollsBackOnPanic(t *testing.T, s store.Store) {
	r0 := newRun("run-0", "pipe", engine.RunRunning, t0)
	update(t, s, func(ctx context.Context, tx store.Tx) error { return insertRuns(ctx, tx, r0) })

	type boom struct{}
	var id int64
	func() {
		defer func() {
			if p := recover(); p != (boom{}) {
				t.Errorf("Update with fn panicking: recovered %v, want fn's panic value", p)
			}
		}()
		err := s.Update(t.Context(), func(tx store.Tx) error {
			if err := writeEverything(t.Context(), tx, &id); err != nil {
				t.Errorf("writing in the transaction to roll back: %v", err)
			}
			panic(boom{})
		})
		t.Errorf("Update with fn panicking returned %v; want the panic to propagate", err)
	}()

	// A transaction left open would hold the store: bound the next ones.
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := s.Update(ctx, func(tx store.Tx) error {
		return tx.PutAgent(ctx, &store.Agent{ID: "agent-after", State: "active"})
	}); err != nil {
		t.Fatalf("Update after a panic: %v", err)
	}
	checkNothingWritten(t, s, r0, id)
}

// testViewIsReadOnly: "View runs fn in a read-only transaction": a write in it
// fails and is not recorded.
func testViewIsReadOnly(t *testing.T, s store.Store) {
	var werr error
	err := s.View(t.Context(), func(tx store.Tx) error {
		werr = tx.PutAgent(t.Context(), &store.Agent{ID: "agent-1", State: "active"})
		return nil
	})
	if werr == nil && err == nil {
		t.Errorf("PutAgent in View succeeded; want an error from a read-only transaction")
	}
	view(t, s, func(ctx context.Context, tx store.Tx) error {
		_, err := tx.Agent(ctx, "agent-1")
		wantNotFound(t, "Agent written in View", err)
		return nil
	})
}

// testViewSnapshot: View "sees one consistent snapshot": an Update that
// commits while a View is open does not show in that View.
func testViewSnapshot(t *testing.T, s store.Store) {
	update(t, s, func(ctx context.Context, tx store.Tx) error {
		return insertRuns(ctx, tx, newRun("run-0", "pipe", engine.RunQueued, t0))
	})
	committed := make(chan error, 1)
	view(t, s, func(ctx context.Context, tx store.Tx) error {
		before, err := tx.Runs(ctx, store.RunFilter{})
		if err != nil {
			return err
		}
		go func() {
			committed <- s.Update(ctx, func(tx store.Tx) error {
				return insertRuns(ctx, tx, newRun("run-1", "pipe", engine.RunQueued, t0.Add(time.Second)))
			})
		}()
		// A store may make writers wait for readers; then there is no
		// concurrent commit to miss, and the second read below must see what
		// the first did all the same. The wait is a bound, not a sleep: a store
		// that lets the writer through ends it at once.
		select {
		case err := <-committed:
			if err != nil {
				t.Errorf("Update during a View: %v", err)
			}
			committed <- nil
		case <-time.After(2 * time.Second):
			t.Log("the Update did not commit while the View was open: the snapshot was not put to the test")
		}
		after, err := tx.Runs(ctx, store.RunFilter{})
		if err != nil {
			return err
		}
		if b, a := runIDs(before), runIDs(after); len(a) != len(b) {
			t.Errorf("one View read runs %q, then %q after an Update committed; want one snapshot", b, a)
		}
		return nil
	})
	if err := <-committed; err != nil {
		t.Errorf("Update during a View: %v", err)
	}
	n := get(t, s, func(ctx context.Context, tx store.Tx) (int, error) {
		return tx.CountRuns(ctx, "pipe", engine.RunQueued)
	})
	if n != 2 {
		t.Errorf("CountRuns after the View: got %d, want 2", n)
	}
}

// testRunLock: "Update transactions of one run are serialized: in Update,
// Tx.Run locks the run's row until the transaction ends." Concurrent
// read-modify-write increments through Tx.Run lose no update and fail none.
func testRunLock(t *testing.T, s store.Store) {
	update(t, s, func(ctx context.Context, tx store.Tx) error {
		return insertRuns(ctx, tx, newRun("run-1", "pipe", engine.RunRunning, t0))
	})
	const workers, increments = 8, 10
	start := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, workers*increments)
	for range workers {
		wg.Go(func() {
			<-start
			for range increments {
				errs <- s.Update(t.Context(), func(tx store.Tx) error {
					r, err := tx.Run(t.Context(), "run-1")
					if err != nil {
						return err
					}
					runtime.Gosched() // let another transaction read the run now if it can
					r.Unfinished++
					return tx.UpdateRun(t.Context(), r)
				})
			}
		})
	}
	close(start)
	wg.Wait()
	close(errs)
	failed := 0
	for err := range errs {
		if err != nil {
			if failed < 3 {
				t.Errorf("Update incrementing the run: %v", err)
			}
			failed++
		}
	}
	r := get(t, s, func(ctx context.Context, tx store.Tx) (*engine.Run, error) { return tx.Run(ctx, "run-1") })
	if want := workers*increments - failed; r.Unfinished != want {
		t.Errorf("after %d committed increments by %d goroutines, Unfinished = %d: updates were lost", want, workers, r.Unfinished)
	}
	if failed > 0 {
		t.Errorf("%d of %d Updates failed", failed, workers*increments)
	}
}

// testNotFound: Run, Task, Item, Attempt, Agent, Segment and Spec return an
// error that is store.ErrNotFound for a key that is not recorded, on a store
// that holds rows next to it.
func testNotFound(t *testing.T, s store.Store) {
	a := newAttempt("run-1", "fan", 0, 1, engine.AttemptRunning)
	insertAttempts(t, s, a)
	update(t, s, func(ctx context.Context, tx store.Tx) error {
		if err := tx.InsertItems(ctx, "run-1", "fan", []json.RawMessage{json.RawMessage(`"x"`)}); err != nil {
			return err
		}
		if err := tx.AppendLogs(ctx, a.ID, []store.LogLine{{Seq: 1, Time: t0, Stream: "stdout", Text: "x"}}); err != nil {
			return err
		}
		return tx.PutAgent(ctx, &store.Agent{ID: "agent-1", State: "active"})
	})
	for _, c := range []struct {
		name string
		f    func(ctx context.Context, tx store.Tx) error
	}{
		{"Run", func(ctx context.Context, tx store.Tx) error { _, err := tx.Run(ctx, "run-2"); return err }},
		{"Run/prefix", func(ctx context.Context, tx store.Tx) error { _, err := tx.Run(ctx, "run-"); return err }},
		{"Task/name", func(ctx context.Context, tx store.Tx) error { _, err := tx.Task(ctx, "run-1", "other"); return err }},
		{"Task/run", func(ctx context.Context, tx store.Tx) error { _, err := tx.Task(ctx, "run-2", "fan"); return err }},
		{"Item/index", func(ctx context.Context, tx store.Tx) error { _, err := tx.Item(ctx, "run-1", "fan", 1); return err }},
		{"Item/task", func(ctx context.Context, tx store.Tx) error { _, err := tx.Item(ctx, "run-1", "other", 0); return err }},
		{"Item/run", func(ctx context.Context, tx store.Tx) error { _, err := tx.Item(ctx, "run-2", "fan", 0); return err }},
		{"Attempt", func(ctx context.Context, tx store.Tx) error { _, err := tx.Attempt(ctx, a.ID+1000); return err }},
		{"Agent", func(ctx context.Context, tx store.Tx) error { _, err := tx.Agent(ctx, "agent-2"); return err }},
		{"Segment/unsealed", func(ctx context.Context, tx store.Tx) error { _, err := tx.Segment(ctx, a.ID); return err }},
		{"Segment/no attempt", func(ctx context.Context, tx store.Tx) error { _, err := tx.Segment(ctx, a.ID+1000); return err }},
		{"Spec", func(ctx context.Context, tx store.Tx) error { _, err := tx.Spec(ctx, "spec-none"); return err }},
		{"ResolveRunID", func(ctx context.Context, tx store.Tx) error { _, err := tx.ResolveRunID(ctx, "nope"); return err }},
	} {
		t.Run(c.name, func(t *testing.T) {
			var err error
			view(t, s, func(ctx context.Context, tx store.Tx) error {
				err = c.f(ctx, tx)
				return nil
			})
			wantNotFound(t, c.name, err)
		})
	}
}
