package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dray-dev/dray/internal/engine"
	"github.com/dray-dev/dray/internal/store"
	"github.com/dray-dev/dray/internal/store/postgres/pgtest"
)

// BenchmarkHop measures the transactions of one task-to-task hop as the
// control plane writes them: the attempt's result (lock the run, end the
// attempt, update the task and the run, queue the next attempt, notify), then
// a claim of the next attempt. Parallel runs hop at once on runs of their own.
func BenchmarkHop(b *testing.B) {
	s := pgtest.Open(b)
	retried := s.Retried()
	ctx := context.Background()
	var runs atomic.Int64
	b.RunParallel(func(pb *testing.PB) {
		runID := fmt.Sprintf("run-%d", runs.Add(1))
		agent := "agent-" + runID
		if err := s.Update(ctx, func(tx store.Tx) error {
			if err := tx.InsertRun(ctx, &engine.Run{ID: runID, Pipeline: "p", State: engine.RunRunning, Unfinished: 1 << 30}); err != nil {
				return err
			}
			if err := tx.PutTasks(ctx, []*engine.Task{{RunID: runID, Name: "t0", State: engine.TaskRunning}}); err != nil {
				return err
			}
			return tx.InsertAttempt(ctx, &engine.Attempt{RunID: runID, Pipeline: "p", Task: "t0", Number: 1,
				State: engine.AttemptRunning, Executor: "local", Labels: []string{runID}, Work: &engine.Work{Run: "true"}})
		}); err != nil {
			b.Fatal(err)
		}
		var running *engine.Attempt
		if err := s.View(ctx, func(tx store.Tx) error {
			as, err := tx.Attempts(ctx, store.AttemptFilter{RunID: runID})
			if len(as) > 0 {
				running = as[0]
			}
			return err
		}); err != nil {
			b.Fatal(err)
		}
		for i := 1; pb.Next(); i++ {
			now := time.Now()
			next := &engine.Attempt{RunID: runID, Pipeline: "p", Task: fmt.Sprintf("t%d", i), Number: 1,
				State: engine.AttemptQueued, Executor: "local", Labels: []string{runID}, Work: &engine.Work{Run: "true"}, CreatedAt: now, QueuedAt: now}
			err := s.Update(ctx, func(tx store.Tx) error {
				r, err := tx.Run(ctx, runID)
				if err != nil {
					return err
				}
				a, err := tx.Attempt(ctx, running.ID)
				if err != nil {
					return err
				}
				a.State, a.EndedAt = engine.AttemptSucceeded, now
				if err := tx.UpdateAttempt(ctx, a); err != nil {
					return err
				}
				if err := tx.PutTasks(ctx, []*engine.Task{
					{RunID: runID, Name: a.Task, State: engine.TaskSucceeded, EndedAt: now},
					{RunID: runID, Name: next.Task, State: engine.TaskRunning, StartedAt: now},
				}); err != nil {
					return err
				}
				if err := tx.InsertAttempt(ctx, next); err != nil {
					return err
				}
				r.Unfinished--
				if err := tx.UpdateRun(ctx, r); err != nil {
					return err
				}
				return tx.Notify(ctx, "queued")
			})
			if err != nil {
				b.Fatal(err)
			}
			var claimed []*engine.Attempt
			err = s.Update(ctx, func(tx store.Tx) error {
				if _, err := tx.Agent(ctx, agent); err != nil && !isNotFound(err) {
					return err
				}
				claimed, err = tx.Claim(ctx, store.Claim{Agent: agent, Labels: []string{runID}, Executors: []string{"local"}, Limit: 1, Now: now})
				return err
			})
			if err != nil {
				b.Fatal(err)
			}
			if len(claimed) != 1 {
				b.Fatalf("claimed %d attempts, want 1", len(claimed))
			}
			running = claimed[0]
		}
	})
	b.ReportMetric(float64(s.Retried()-retried)/float64(b.N), "retries/op")
}

func isNotFound(err error) bool { return errors.Is(err, store.ErrNotFound) }
