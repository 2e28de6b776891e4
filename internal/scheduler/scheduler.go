// Package scheduler owns time in dray: it fires the pipelines' cron and
// interval schedules (with time zones, catch-up and pause), creates backfill
// runs, and drives the control plane's time-driven work (retry timers, dead
// agents, log sealing). One scheduler is active at a time: Run holds a lease
// in the store, and the others stand by until it expires.
//
// Every fire goes through control.Service.Trigger with Once set, which records
// the pipeline's logical time in the run's own transaction: a fire time gets
// one run however many schedulers (or `dray scheduler --once` processes) tick
// at once, and a crash between a fire and the cursor update fires nothing
// twice.
package scheduler

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/dray-dev/dray/internal/control"
	"github.com/dray-dev/dray/internal/spec"
	"github.com/dray-dev/dray/internal/store"
)

// Errors callers test with errors.Is.
var (
	// ErrUnknownPipeline: no pipeline of that name in the project.
	ErrUnknownPipeline = errors.New("unknown pipeline")
	// ErrNoSchedule: the pipeline has no schedule.
	ErrNoSchedule = errors.New("pipeline has no schedule")
	// ErrBadRange: a backfill range that is empty, reversed or too long.
	ErrBadRange = errors.New("bad backfill range")
)

// LeaseName is the store lease that the active scheduler holds.
const LeaseName = "scheduler"

// MaxBackfill is how many runs one Backfill may create.
const MaxBackfill = 1000

// maxSkipCount bounds how many skipped fire times a tick counts for its log
// line, so a schedule that was off for years costs no more than this.
const maxSkipCount = 10000

// Config holds a Scheduler's dependencies. Store and Control are required.
type Config struct {
	Store   store.Store
	Control *control.Service
	// Pipelines returns the current good version of the project's
	// pipelines; it is called on every tick, so reloaded files take effect at
	// the next one.
	Pipelines func() []*spec.Pipeline
	// Now is the clock (default time.Now).
	Now    func() time.Time
	Logger *slog.Logger
	// Holder names this scheduler in the lease (default host:pid).
	Holder string
	// LeaseTTL is how long the lease lasts without renewal (default 15s). The
	// active scheduler renews it, and ticks, every LeaseTTL/3; a stand-by
	// takes over at most LeaseTTL plus LeaseTTL/3 after the active one stopped.
	LeaseTTL time.Duration
}

// Scheduler fires schedules and drives the control plane's timers.
type Scheduler struct {
	cfg Config
	log *slog.Logger
	// timer returns a channel that receives after d, and a stop function;
	// tests replace it to drive Run with their clock.
	timer func(d time.Duration) (<-chan time.Time, func() bool)

	// tickMu keeps one Tick at a time in this process (others are safe, just
	// wasted work).
	tickMu sync.Mutex

	activeMu sync.Mutex
	active   bool
}

// New returns a Scheduler.
func New(cfg Config) *Scheduler {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Pipelines == nil {
		cfg.Pipelines = func() []*spec.Pipeline { return nil }
	}
	if cfg.Holder == "" {
		cfg.Holder = control.Hostname() + ":" + strconv.Itoa(os.Getpid())
	}
	if cfg.LeaseTTL <= 0 {
		cfg.LeaseTTL = 15 * time.Second
	}
	return &Scheduler{
		cfg: cfg,
		log: cfg.Logger,
		timer: func(d time.Duration) (<-chan time.Time, func() bool) {
			t := time.NewTimer(d)
			return t.C, t.Stop
		},
	}
}

// now is the clock, in UTC, to the microsecond the store keeps.
func (s *Scheduler) now() time.Time { return s.cfg.Now().UTC().Truncate(time.Microsecond) }

// Tick does one tick: it fires every schedule that is due, moves the
// schedules' cursors to now, and then does the control plane's time-driven
// work (control.Service.Tick). It returns when it next has something to do:
// the earliest next fire time or retry timer (zero when there is none).
//
// Tick is idempotent: two Ticks at the same instant, or on two schedulers at
// once, create each scheduled run once. It does not need the lease, so `dray
// scheduler --once` can call it from an external cron. Schedules that failed
// to fire (a store error) keep their cursor, so the next tick tries them
// again; the error is returned after the rest of the tick is done.
func (s *Scheduler) Tick(ctx context.Context) (time.Time, error) {
	s.tickMu.Lock()
	defer s.tickMu.Unlock()
	now := s.now()
	pipelines := s.cfg.Pipelines()
	rows, err := s.rows(ctx)
	if err != nil {
		return time.Time{}, err
	}
	var next time.Time
	var errs []error
	var advance []string // pipelines whose cursor moves to now
	for _, p := range pipelines {
		row := rows[p.Name]
		if p.Schedule == nil {
			if row != nil {
				// The schedule was removed from the file: keep its cursor
				// current, so putting it back does not catch up.
				advance = append(advance, p.Name)
			}
			continue
		}
		if err := s.fire(ctx, p, row, now); err != nil {
			errs = append(errs, err)
			continue
		}
		advance = append(advance, p.Name)
		if !paused(p, row) {
			next = earliest(next, p.Schedule.Next(now))
		}
	}
	if err := s.advance(ctx, advance, now); err != nil {
		errs = append(errs, err)
	}
	retry, err := s.cfg.Control.Tick(ctx)
	if err != nil {
		errs = append(errs, fmt.Errorf("control tick: %w", err))
	}
	// A retry timer in the past waits for a slot (a pool, concurrency), which
	// frees when an attempt ends, not at a time.
	if retry.After(now) {
		next = earliest(next, retry)
	}
	return next, errors.Join(errs...)
}

// rows reads every schedule's recorded state, by pipeline.
func (s *Scheduler) rows(ctx context.Context) (map[string]*store.Schedule, error) {
	var list []*store.Schedule
	err := s.cfg.Store.View(ctx, func(tx store.Tx) error {
		var err error
		list, err = tx.Schedules(ctx)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("read schedules: %w", err)
	}
	rows := make(map[string]*store.Schedule, len(list))
	for _, r := range list {
		rows[r.Pipeline] = r
	}
	return rows, nil
}

// paused reports whether a pipeline's schedule is paused: by SetPaused when it
// was called, else by the file.
func paused(p *spec.Pipeline, row *store.Schedule) bool {
	if row != nil && row.PausedSet {
		return row.Paused
	}
	return p.Schedule.Paused
}

// fire creates the runs of a schedule's fire times in (cursor, now]: the most
// recent one, or with catchup up to catchup_limit of the most recent ones,
// oldest first. It returns an error only when a run could not be created for
// a reason that may pass (the store), so the cursor stays put.
func (s *Scheduler) fire(ctx context.Context, p *spec.Pipeline, row *store.Schedule, now time.Time) error {
	sched := p.Schedule
	switch {
	case row == nil || row.Cursor.IsZero():
		s.log.Info("schedule seen for the first time: it fires from now on", "pipeline", p.Name, "next", sched.Next(now))
		return nil
	case paused(p, row) || !now.After(row.Cursor):
		return nil
	}
	keep := 1
	if sched.Catchup {
		keep = sched.CatchupLimit
	}
	d := due(sched.Next, row.Cursor, now, keep)
	if d.skipped > 0 {
		level := slog.LevelInfo // catchup: false asks for this
		if sched.Catchup {
			level = slog.LevelWarn
		}
		s.log.Log(ctx, level, "schedule skipped missed fire times", "pipeline", p.Name, "skipped", skippedText(d),
			"first", d.first.In(sched.Location), "catchup", sched.Catchup, "catchup_limit", sched.CatchupLimit)
	}
	for _, at := range d.fire {
		r, err := s.cfg.Control.Trigger(ctx, p, control.TriggerRequest{
			Params: maps.Clone(sched.Params), Trigger: "schedule", LogicalTime: at, Once: true,
		})
		var perr *spec.ParamError
		switch {
		case errors.Is(err, control.ErrFired):
			s.log.Debug("schedule fired already", "pipeline", p.Name, "logical_time", at.In(sched.Location))
		case errors.As(err, &perr):
			// It would fail the same way at every tick.
			s.log.Error("schedule cannot fire: bad params", "pipeline", p.Name, "logical_time", at.In(sched.Location), "err", err)
		case err != nil:
			return fmt.Errorf("fire schedule of %s at %s: %w", p.Name, at.Format(time.RFC3339), err)
		default:
			s.log.Info("schedule fired", "pipeline", p.Name, "run", r.ID, "logical_time", at.In(sched.Location))
		}
	}
	return nil
}

// advance moves the cursors of pipelines to now, in one transaction, never
// backwards (another scheduler may have ticked later), and records the
// schedules seen for the first time.
func (s *Scheduler) advance(ctx context.Context, pipelines []string, now time.Time) error {
	if len(pipelines) == 0 {
		return nil
	}
	err := s.cfg.Store.Update(ctx, func(tx store.Tx) error {
		for _, name := range pipelines {
			row, err := tx.Schedule(ctx, name)
			switch {
			case errors.Is(err, store.ErrNotFound):
				row = &store.Schedule{Pipeline: name}
			case err != nil:
				return err
			case !row.Cursor.Before(now):
				continue
			}
			row.Cursor, row.UpdatedAt = now, now
			if err := tx.PutSchedule(ctx, row); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("move schedule cursors: %w", err)
	}
	return nil
}

// dueTimes is what one tick does with one schedule.
type dueTimes struct {
	fire    []time.Time // to run, oldest first
	skipped int         // fire times not run (counted up to about maxSkipCount)
	capped  bool        // there were more skipped than counted
	first   time.Time   // the oldest skipped
}

// due returns the fire times in (after, now] to run, at most keep of them
// (the most recent), and counts the older ones it skips. Its cost depends on
// keep, not on how long ago after is: it first looks back from now for a
// window holding keep fire times.
func due(next func(time.Time) time.Time, after, now time.Time, keep int) dueTimes {
	var d dueTimes
	if keep <= 0 || !now.After(after) {
		return d
	}
	start := after
	for w := time.Minute; w < 100*365*24*time.Hour; w *= 2 {
		from := now.Add(-w)
		if !from.After(after) {
			break
		}
		if count(next, from, now, keep) >= keep {
			start = from
			break
		}
	}
	// Skipped before the window, then in it.
	if start.After(after) {
		for t := next(after); !t.IsZero() && !t.After(start); t = next(t) {
			if d.skipped == 0 {
				d.first = t
			}
			if d.skipped++; d.skipped >= maxSkipCount {
				d.capped = true
				break
			}
		}
	}
	for t := next(start); !t.IsZero() && !t.After(now); t = next(t) {
		if len(d.fire) == keep {
			if d.skipped == 0 {
				d.first = d.fire[0]
			}
			if !d.capped {
				d.skipped++
			}
			d.fire = append(d.fire[:0], d.fire[1:]...)
		}
		d.fire = append(d.fire, t)
	}
	return d
}

// count counts the fire times in (from, to], up to limit.
func count(next func(time.Time) time.Time, from, to time.Time, limit int) int {
	n := 0
	for t := next(from); n < limit && !t.IsZero() && !t.After(to); t = next(t) {
		n++
	}
	return n
}

func skippedText(d dueTimes) string {
	if d.capped {
		return "more than " + strconv.Itoa(d.skipped)
	}
	return strconv.Itoa(d.skipped)
}

// earliest returns the earlier of two times, a zero time counting as none.
func earliest(a, b time.Time) time.Time {
	if a.IsZero() || (!b.IsZero() && b.Before(a)) {
		return b
	}
	return a
}
