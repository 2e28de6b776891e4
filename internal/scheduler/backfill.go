package scheduler

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"time"

	"github.com/dray-dev/dray/internal/control"
	"github.com/dray-dev/dray/internal/engine"
	"github.com/dray-dev/dray/internal/spec"
)

// Backfill creates one run (trigger "backfill") for every fire time of p's
// schedule in [from, to], oldest first, with the schedule's params and the
// fire time as the logical time. Fire times are those the schedule has in its
// time zone, DST rules included (see spec.Schedule.Next). A fire time that
// has its run already (fired by the schedule or an earlier backfill) is
// skipped and returned in skipped. The schedule's pause does not apply: a
// backfill is asked for. The pipeline's max_active_runs keeps the runs beyond
// it queued.
//
// It fails with ErrNoSchedule for a pipeline without a schedule, and with
// ErrBadRange, creating nothing, when to is before from or the range holds no
// fire time or more than MaxBackfill. An error part way returns the runs
// created so far.
func (s *Scheduler) Backfill(ctx context.Context, p *spec.Pipeline, from, to time.Time) (created []*engine.Run, skipped []time.Time, err error) {
	sched := p.Schedule
	if sched == nil {
		return nil, nil, fmt.Errorf("backfill %s: %w: add a schedule to pipelines/%s", p.Name, ErrNoSchedule, p.Name)
	}
	if to.Before(from) {
		return nil, nil, fmt.Errorf("backfill %s: %w: the end %s is before the start %s", p.Name, ErrBadRange,
			to.In(sched.Location).Format(time.RFC3339), from.In(sched.Location).Format(time.RFC3339))
	}
	var times []time.Time
	// Next is strictly after its argument; a nanosecond back includes from.
	for t := sched.Next(from.Add(-time.Nanosecond)); !t.IsZero() && !t.After(to); t = sched.Next(t) {
		if len(times) == MaxBackfill {
			return nil, nil, fmt.Errorf("backfill %s: %w: more than %d fire times from %s to %s; backfill a shorter range",
				p.Name, ErrBadRange, MaxBackfill, from.In(sched.Location).Format(time.RFC3339), to.In(sched.Location).Format(time.RFC3339))
		}
		times = append(times, t)
	}
	if len(times) == 0 {
		return nil, nil, fmt.Errorf("backfill %s: %w: the schedule does not fire from %s to %s", p.Name, ErrBadRange,
			from.In(sched.Location).Format(time.RFC3339), to.In(sched.Location).Format(time.RFC3339))
	}
	for _, at := range times {
		r, err := s.cfg.Control.Trigger(ctx, p, control.TriggerRequest{
			Params: maps.Clone(sched.Params), Trigger: "backfill", LogicalTime: at, Once: true,
		})
		switch {
		case errors.Is(err, control.ErrFired):
			skipped = append(skipped, at)
		case err != nil:
			return created, skipped, fmt.Errorf("backfill %s at %s: %w", p.Name, at.Format(time.RFC3339), err)
		default:
			created = append(created, r)
		}
	}
	s.log.Info("backfill", "pipeline", p.Name, "from", from, "to", to, "created", len(created), "skipped", len(skipped))
	return created, skipped, nil
}

// ParseWhen reads an end of a backfill range: an RFC 3339 time, or a date
// (YYYY-MM-DD) in loc. A date starts at its midnight, or, for the end of a
// range (end), takes the whole day.
func ParseWhen(v string, loc *time.Location, end bool) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339, v); err == nil {
		return t, nil
	}
	if loc == nil {
		loc = time.UTC
	}
	t, err := time.ParseInLocation("2006-01-02", v, loc)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q: want an RFC 3339 time (2026-03-01T02:00:00Z) or a date (2026-03-01)", v)
	}
	if end {
		t = t.AddDate(0, 0, 1).Add(-time.Microsecond)
	}
	return t, nil
}
