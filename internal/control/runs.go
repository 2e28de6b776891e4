package control

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/dray-dev/dray/internal/engine"
	"github.com/dray-dev/dray/internal/expr"
	"github.com/dray-dev/dray/internal/spec"
	"github.com/dray-dev/dray/internal/store"
)

// TriggerRequest asks for a run.
type TriggerRequest struct {
	// Params are typed values (from spec.ParseArgs or JSON); defaults fill the rest.
	Params  map[string]any
	Trigger string // manual (default), schedule, backfill, api
	// LogicalTime is the time the run is for (default: now).
	LogicalTime time.Time
	// Driver is the agent of the process that will drive the run (`dray
	// run`); the run is abandoned when that agent is gone. Empty for a run
	// any agent may take.
	Driver string
	// Once records the run's pipeline and logical time (store.Tx.MarkFired)
	// and fails with ErrFired when a run was recorded for them already: how a
	// schedule fires exactly once however many schedulers try.
	Once bool
}

// ErrFired is returned by Trigger with Once for a logical time that has its
// run already.
var ErrFired = errors.New("a run for this logical time exists already")

// Trigger creates a run of a pipeline and starts it, unless the pipeline's
// max_active_runs makes it wait in the queue. Bad params return a
// *spec.ParamError.
func (s *Service) Trigger(ctx context.Context, p *spec.Pipeline, req TriggerRequest) (*engine.Run, error) {
	now := s.now()
	r := &engine.Run{
		ID:          NewRunID(now),
		Pipeline:    p.Name,
		SpecHash:    p.Hash,
		State:       engine.RunQueued,
		Trigger:     req.Trigger,
		LogicalTime: req.LogicalTime.UTC().Truncate(time.Microsecond),
		Salt:        randomHex(16),
		Driver:      req.Driver,
		CreatedAt:   now,
	}
	if r.Trigger == "" {
		r.Trigger = "manual"
	}
	if r.LogicalTime.IsZero() {
		r.LogicalTime = now
	}
	loc := time.UTC
	if p.Schedule != nil && p.Schedule.Location != nil {
		loc = p.Schedule.Location
	}
	r.LogicalDate = r.LogicalTime.In(loc).Format("2006-01-02")
	params, err := spec.ResolveParams(p.Params, req.Params, expr.Vars{expr.RootRun: engine.RunVars(r)})
	if err != nil {
		return nil, err
	}
	r.Params = params
	s.AddPlan(p)
	var out changes
	err = s.store.Update(ctx, func(tx store.Tx) error {
		out = changes{}
		if err := tx.PutSpec(ctx, p.Hash, p.Sources); err != nil {
			return err
		}
		if req.Once {
			ok, err := tx.MarkFired(ctx, p.Name, r.LogicalTime, r.ID)
			if err != nil {
				return err
			}
			if !ok {
				return ErrFired
			}
		}
		if err := tx.InsertRun(ctx, r); err != nil {
			return err
		}
		if p.MaxActiveRuns > 0 {
			n, err := tx.CountRuns(ctx, p.Name, engine.RunRunning)
			if err != nil {
				return err
			}
			if n >= p.MaxActiveRuns {
				return nil
			}
		}
		return s.advance(ctx, tx, r.ID, true, &out, func(e *engine.Engine) (*engine.Step, error) { return e.Start() })
	})
	if err != nil {
		return nil, fmt.Errorf("trigger %s: %w", p.Name, err)
	}
	s.after(out)
	return r, nil
}

// Cancel cancels a run (see engine.Engine.Cancel). force also stops tasks with
// trigger always.
func (s *Service) Cancel(ctx context.Context, runID string, force bool) error {
	var out changes
	err := s.store.Update(ctx, func(tx store.Tx) error {
		out = changes{}
		return s.advance(ctx, tx, runID, true, &out, func(e *engine.Engine) (*engine.Step, error) { return e.Cancel(force) })
	})
	if err != nil {
		return err
	}
	s.after(out)
	return nil
}

// Retry runs a run's failed and unfinished tasks again (see engine.Engine.Retry),
// driven from now on by driver ("" for any agent). It first settles agents
// that are gone, so a run whose `dray run` was killed can be finished.
func (s *Service) Retry(ctx context.Context, runID, driver string) error {
	if err := s.Sweep(ctx); err != nil {
		return err
	}
	var out changes
	err := s.store.Update(ctx, func(tx store.Tx) error {
		out = changes{}
		r, err := tx.Run(ctx, runID)
		if err != nil {
			return err
		}
		if r.Driver != driver {
			r.Driver = driver
			if err := tx.UpdateRun(ctx, r); err != nil {
				return err
			}
		}
		if !r.State.Final() {
			// Still running (its process died): only the failed tasks restart.
			// The attempts that were lost are being retried already.
			tasks, err := tx.Tasks(ctx, runID)
			if err != nil {
				return err
			}
			failed := false
			for _, t := range tasks {
				failed = failed || (t.State.Final() && t.State != engine.TaskSucceeded)
			}
			if !failed {
				return nil
			}
		}
		return s.advance(ctx, tx, runID, true, &out, func(e *engine.Engine) (*engine.Step, error) { return e.Retry() })
	})
	if err != nil {
		return err
	}
	s.after(out)
	return nil
}

// changes collects what a transaction did, to act on after it commits.
type changes struct {
	events   []engine.Event
	queued   bool // attempts became claimable
	queuedN  int  // how many
	cancels  bool // attempts were asked to stop
	timers   bool // attempts wait for a time
	ended    []int64
	runEnded bool
}

// after acts on committed changes: it tells subscribers, wakes claimers and
// cancel watchers, and seals the logs of ended attempts.
func (s *Service) after(c changes) {
	s.publish(c.events)
	if c.queued || c.cancels {
		s.wake(c.queued, c.cancels)
	}
	if c.timers {
		select {
		case s.timers <- struct{}{}:
		default:
		}
	}
	s.loggedMu.Lock()
	for _, id := range c.ended {
		if s.logged[id] {
			delete(s.logged, id)
			s.sealer.add(id)
		}
	}
	s.loggedMu.Unlock()
}

// advance runs one engine decision on a run inside tx and writes its Step.
// full loads every task of the run first (Start, Cancel and Retry need it).
func (s *Service) advance(ctx context.Context, tx store.Tx, runID string, full bool, out *changes,
	decide func(*engine.Engine) (*engine.Step, error)) error {
	r, err := tx.Run(ctx, runID)
	if err != nil {
		return err
	}
	plan, err := s.plan(ctx, tx, r)
	if err != nil {
		return err
	}
	view := &engine.View{Run: r, Tasks: map[string]*engine.Task{}, Data: &txData{ctx: ctx, tx: tx, run: r, cache: s.outputs}}
	if full {
		tasks, err := tx.Tasks(ctx, runID)
		if err != nil {
			return err
		}
		for _, t := range tasks {
			view.Tasks[t.Name] = t
		}
	}
	now := s.now()
	step, err := decide(engine.New(plan, view, now))
	if err != nil {
		return err
	}
	return s.apply(ctx, tx, plan, r.ID, step, now, out)
}

// apply writes a Step, admits attempts waiting for slots, and starts queued
// runs of the pipeline when this one ended.
func (s *Service) apply(ctx context.Context, tx store.Tx, plan *spec.Pipeline, runID string, step *engine.Step, now time.Time, out *changes) error {
	if step.Run != nil {
		if err := tx.UpdateRun(ctx, step.Run); err != nil {
			return err
		}
	}
	if len(step.Tasks) > 0 {
		if err := tx.PutTasks(ctx, step.Tasks); err != nil {
			return err
		}
	}
	for _, it := range step.Items {
		if err := tx.InsertItems(ctx, runID, it.Task, it.Values); err != nil {
			return err
		}
	}
	admit := false
	for _, a := range step.Attempts {
		var err error
		if a.ID == 0 {
			err = tx.InsertAttempt(ctx, a)
		} else {
			err = tx.UpdateAttempt(ctx, a)
		}
		if err != nil {
			return err
		}
		switch {
		case a.State == engine.AttemptQueued:
			out.queued = true
			out.queuedN++
			if err := s.notify(ctx, tx, eventQueued); err != nil {
				return err
			}
		case a.State == engine.AttemptPending && !a.NotBefore.After(now):
			admit = true
		case a.State == engine.AttemptPending:
			out.timers = true
		case a.CancelRequested && !a.State.Final():
			out.cancels = true
			if err := s.notify(ctx, tx, eventCancel); err != nil {
				return err
			}
		case a.State.Final():
			out.ended = append(out.ended, a.ID)
			admit = admit || a.Pool != "" || plan.Concurrency > 0
		}
	}
	out.events = append(out.events, step.Events...)
	if admit {
		if err := s.admit(ctx, tx, now, out); err != nil {
			return err
		}
	}
	if step.Run != nil && step.Run.State.Final() {
		out.runEnded = true
		if plan.MaxActiveRuns > 0 {
			return s.startQueued(ctx, tx, plan, out)
		}
	}
	return nil
}

// admit queues pending attempts that are due and fit their pool's slots and
// their pipeline's concurrency, oldest first.
func (s *Service) admit(ctx context.Context, tx store.Tx, now time.Time, out *changes) error {
	due, err := tx.Due(ctx, now, 500)
	if err != nil {
		return err
	}
	active := map[string]int{} // "pool:x" or "pipeline:y" -> attempts holding a slot
	count := func(pipeline, pool string) (int, error) {
		key := "pipeline:" + pipeline
		if pool != "" {
			key = "pool:" + pool
		}
		if n, ok := active[key]; ok {
			return n, nil
		}
		n, err := tx.CountActive(ctx, pipeline, pool)
		active[key] = n
		return n, err
	}
	runs := map[string]*engine.Run{}
	for _, a := range due {
		r, ok := runs[a.RunID]
		if !ok {
			if r, err = tx.Run(ctx, a.RunID); err != nil {
				return err
			}
			runs[a.RunID] = r
		}
		plan, err := s.plan(ctx, tx, r)
		if err != nil {
			return err
		}
		if a.Pool != "" {
			pool, ok := plan.Config.Pools[a.Pool]
			n, err := count("", a.Pool)
			if err != nil {
				return err
			}
			if ok && n >= pool.Slots {
				continue
			}
		}
		if plan.Concurrency > 0 {
			n, err := count(a.Pipeline, "")
			if err != nil {
				return err
			}
			if n >= plan.Concurrency {
				continue
			}
		}
		a.State, a.QueuedAt = engine.AttemptQueued, now
		if err := tx.UpdateAttempt(ctx, a); err != nil {
			return err
		}
		out.queuedN++
		if a.Pool != "" {
			active["pool:"+a.Pool]++
		}
		if plan.Concurrency > 0 {
			active["pipeline:"+a.Pipeline]++
		}
		out.queued = true
		if err := s.notify(ctx, tx, eventQueued); err != nil {
			return err
		}
	}
	return nil
}

// startQueued starts the oldest queued runs of a pipeline while it has fewer
// than max_active_runs running.
func (s *Service) startQueued(ctx context.Context, tx store.Tx, plan *spec.Pipeline, out *changes) error {
	running, err := tx.CountRuns(ctx, plan.Name, engine.RunRunning)
	if err != nil {
		return err
	}
	free := plan.MaxActiveRuns - running
	if free <= 0 {
		return nil
	}
	queued, err := tx.Runs(ctx, store.RunFilter{Pipeline: plan.Name, States: []engine.RunState{engine.RunQueued}, Oldest: true, Limit: free})
	if err != nil {
		return err
	}
	for _, r := range queued {
		err := s.advance(ctx, tx, r.ID, true, out, func(e *engine.Engine) (*engine.Step, error) { return e.Start() })
		if err != nil {
			return err
		}
	}
	return nil
}

// LastRun names the newest run where a run id is expected. Run ids never
// contain an "l", so it is no id's prefix.
const LastRun = "last"

// ResolveRun returns the full id of the run whose id starts with prefix, or
// of the newest run for LastRun.
func (s *Service) ResolveRun(ctx context.Context, prefix string) (string, error) {
	var id string
	err := s.store.View(ctx, func(tx store.Tx) error {
		if prefix == LastRun {
			runs, err := tx.Runs(ctx, store.RunFilter{Limit: 1})
			if err != nil {
				return err
			}
			if len(runs) == 0 {
				return fmt.Errorf("no runs yet: %w", store.ErrNotFound)
			}
			id = runs[0].ID
			return nil
		}
		var err error
		id, err = tx.ResolveRunID(ctx, prefix)
		return err
	})
	switch {
	case errors.Is(err, store.ErrNotFound):
		return "", fmt.Errorf("no run %q: %w", prefix, store.ErrNotFound)
	case errors.Is(err, store.ErrAmbiguous):
		return "", fmt.Errorf("run id %q matches more than one run: give more of it (%w)", prefix, store.ErrAmbiguous)
	}
	return id, err
}

// NewRunID returns a run id that sorts by creation time: 10 characters of
// milliseconds and 6 random ones, lower-case base32 (Crockford).
func NewRunID(t time.Time) string {
	const alphabet = "0123456789abcdefghjkmnpqrstvwxyz"
	var b strings.Builder
	ms := uint64(t.UnixMilli())
	for i := 9; i >= 0; i-- {
		b.WriteByte(alphabet[(ms>>(5*uint(i)))&31])
	}
	var rnd [8]byte
	rand.Read(rnd[:])
	r := binary.BigEndian.Uint64(rnd[:])
	for i := 0; i < 6; i++ {
		b.WriteByte(alphabet[r&31])
		r >>= 5
	}
	return b.String()
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}
