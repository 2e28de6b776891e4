package scheduler

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/dray-dev/dray/internal/spec"
	"github.com/dray-dev/dray/internal/store"
)

// Info describes a pipeline's schedule and its state.
type Info struct {
	Pipeline     string
	Cron         string        // "" for an every schedule
	Every        time.Duration // 0 for a cron schedule
	Timezone     string
	Catchup      bool
	CatchupLimit int
	// Paused is whether the schedule is paused now: as set by SetPaused when
	// PausedSet, else as the file says.
	Paused    bool
	PausedSet bool
	// Next is the next fire time after now, in the schedule's time zone;
	// zero while paused.
	Next time.Time
	// Cursor is the instant up to which the scheduler has dealt with the fire
	// times (run or skipped): its last tick. Zero until a scheduler first saw
	// the schedule.
	Cursor time.Time
}

// Schedules lists every pipeline that has a schedule, in the order of
// Config.Pipelines.
func (s *Scheduler) Schedules(ctx context.Context) ([]Info, error) {
	rows, err := s.rows(ctx)
	if err != nil {
		return nil, err
	}
	now := s.now()
	var out []Info
	for _, p := range s.cfg.Pipelines() {
		sched := p.Schedule
		if sched == nil {
			continue
		}
		row := rows[p.Name]
		info := Info{
			Pipeline: p.Name, Cron: sched.Cron, Every: sched.Every, Timezone: sched.Timezone,
			Catchup: sched.Catchup, CatchupLimit: sched.CatchupLimit, Paused: paused(p, row),
		}
		if row != nil {
			info.PausedSet, info.Cursor = row.PausedSet, row.Cursor
		}
		if !info.Paused {
			info.Next = sched.Next(now)
		}
		out = append(out, info)
	}
	return out, nil
}

// SetPaused pauses or resumes a pipeline's schedule, overriding the paused of
// its file until ClearPaused. A paused schedule fires nothing; resuming it
// runs nothing of the time it was paused, whatever its catchup says (a
// backfill runs that time): it fires from the moment it is resumed. It fails
// with ErrUnknownPipeline or ErrNoSchedule.
func (s *Scheduler) SetPaused(ctx context.Context, pipeline string, pause bool) error {
	op := "pause"
	if !pause {
		op = "resume"
	}
	return s.setPaused(ctx, op, pipeline, func(row *store.Schedule) {
		row.Paused, row.PausedSet = pause, true
	})
}

// ClearPaused ends SetPaused's override: the schedule is paused or not as its
// file says. When that resumes it, it fires from now, as with SetPaused.
func (s *Scheduler) ClearPaused(ctx context.Context, pipeline string) error {
	return s.setPaused(ctx, "clear the pause of", pipeline, func(row *store.Schedule) {
		row.Paused, row.PausedSet = false, false
	})
}

// setPaused changes a schedule's pause override with set.
func (s *Scheduler) setPaused(ctx context.Context, op, pipeline string, set func(*store.Schedule)) error {
	var p *spec.Pipeline
	for _, x := range s.cfg.Pipelines() {
		if x.Name == pipeline {
			p = x
		}
	}
	switch {
	case p == nil:
		return fmt.Errorf("%s %s: %w %q", op, pipeline, ErrUnknownPipeline, pipeline)
	case p.Schedule == nil:
		return fmt.Errorf("%s %s: %w: its file has no schedule key", op, pipeline, ErrNoSchedule)
	}
	now := s.now()
	var was, is bool
	err := s.cfg.Store.Update(ctx, func(tx store.Tx) error {
		row, err := tx.Schedule(ctx, pipeline)
		switch {
		case errors.Is(err, store.ErrNotFound):
			row = &store.Schedule{Pipeline: pipeline, Cursor: now}
		case err != nil:
			return err
		}
		was = paused(p, row)
		set(row)
		is = paused(p, row)
		if was && !is && row.Cursor.Before(now) {
			row.Cursor = now // the paused time is not caught up
		}
		row.UpdatedAt = now
		return tx.PutSchedule(ctx, row)
	})
	if err != nil {
		return fmt.Errorf("%s %s: %w", op, pipeline, err)
	}
	s.log.Info("schedule pause set", "pipeline", pipeline, "paused", is, "was_paused", was)
	return nil
}
