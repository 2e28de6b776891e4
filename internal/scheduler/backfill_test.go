package scheduler

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/dray-dev/dray/internal/engine"
	"github.com/dray-dev/dray/internal/spec"
)

// TestBackfill checks which runs a backfill creates, in which order, what it
// skips, and its errors.
func TestBackfill(t *testing.T) {
	berlin := mustLocation(t, "Europe/Berlin")
	nightly := scheduled(t, "nightly", `{cron: "0 2 * * *", timezone: Europe/Berlin, paused: true, params: {full: true}}`, "params: {full: false}\n")
	often := scheduled(t, "often", `{every: 1m}`)
	plain := load(t, "plain", "version: 1\ntasks: [{name: a, run: 'true'}]\n")
	f := newFixture(t, time.Date(2026, 4, 1, 12, 0, 0, 0, berlin), nightly, often, plain)

	// Fire times in [from, to], oldest first; the one at 02:00 on the day
	// the clock skips 02:00 is at 03:00.
	created, skipped, err := f.sched.Backfill(f.ctx, nightly, time.Date(2026, 3, 27, 2, 0, 0, 0, berlin), time.Date(2026, 3, 30, 2, 0, 0, 0, berlin))
	if err != nil || len(skipped) != 0 {
		t.Fatalf("backfill: %v, skipped %v", err, skipped)
	}
	want := []string{"2026-03-27 02:00 +01:00", "2026-03-28 02:00 +01:00", "2026-03-29 03:00 +02:00", "2026-03-30 02:00 +02:00"}
	if got := times(created, berlin); !slices.Equal(got, want) {
		t.Errorf("created %v, want %v", got, want)
	}
	for _, r := range created {
		if r.Trigger != "backfill" || r.Params["full"] != true {
			t.Errorf("run %s: trigger %s, params %v; want backfill with the schedule's params", r.ID, r.Trigger, r.Params)
		}
	}

	// Again, wider: the runs made already are skipped.
	created, skipped, err = f.sched.Backfill(f.ctx, nightly, time.Date(2026, 3, 26, 0, 0, 0, 0, berlin), time.Date(2026, 3, 31, 0, 0, 0, 0, berlin))
	if err != nil {
		t.Fatal(err)
	}
	if got := times(created, berlin); !slices.Equal(got, []string{"2026-03-26 02:00 +01:00"}) {
		t.Errorf("second backfill created %v, want 03-26 only (03-31 02:00 is after the end)", got)
	}
	if len(skipped) != 4 || !skipped[0].Equal(time.Date(2026, 3, 27, 2, 0, 0, 0, berlin)) {
		t.Errorf("second backfill skipped %v, want the 4 made before", skipped)
	}
	if n := len(f.runs("nightly")); n != 5 {
		t.Errorf("%d runs, want 5", n)
	}

	// A fire time the schedule fired is skipped too.
	f.tick()
	f.clock.Advance(90 * time.Second)
	f.tick()
	scheduledRuns := f.runs("often")
	if len(scheduledRuns) != 1 {
		t.Fatalf("%d scheduled runs, want 1", len(scheduledRuns))
	}
	at := scheduledRuns[0].LogicalTime
	created, skipped, err = f.sched.Backfill(f.ctx, often, at.Add(-time.Minute), at)
	if err != nil || len(created) != 1 || len(skipped) != 1 || !skipped[0].Equal(at) {
		t.Errorf("backfill over a scheduled run: created %v, skipped %v, %v", times(created, time.UTC), skipped, err)
	}

	errs := []struct {
		name     string
		from, to time.Time
		pipeline string
		want     error
	}{
		{"no schedule", time.Date(2026, 3, 1, 0, 0, 0, 0, berlin), time.Date(2026, 3, 2, 0, 0, 0, 0, berlin), "plain", ErrNoSchedule},
		{"reversed", time.Date(2026, 3, 2, 0, 0, 0, 0, berlin), time.Date(2026, 3, 1, 0, 0, 0, 0, berlin), "nightly", ErrBadRange},
		{"no fire time", time.Date(2026, 3, 1, 3, 0, 0, 0, berlin), time.Date(2026, 3, 2, 1, 0, 0, 0, berlin), "nightly", ErrBadRange},
		{"too many", time.Date(2026, 3, 1, 0, 0, 0, 0, berlin), time.Date(2026, 3, 2, 0, 0, 0, 0, berlin), "often", ErrBadRange},
	}
	pipes := map[string]*spec.Pipeline{"plain": plain, "nightly": nightly, "often": often}
	before := len(f.runs("often"))
	for _, tt := range errs {
		t.Run(tt.name, func(t *testing.T) {
			created, _, err := f.sched.Backfill(f.ctx, pipes[tt.pipeline], tt.from, tt.to)
			if !errors.Is(err, tt.want) || len(created) != 0 {
				t.Errorf("Backfill = %d runs, %v; want %v", len(created), err, tt.want)
			}
		})
	}
	if n := len(f.runs("often")); n != before {
		t.Errorf("a refused backfill created %d runs", n-before)
	}
}

// TestBackfillMaxActiveRuns checks that a backfill respects max_active_runs:
// one run starts, the rest wait queued.
func TestBackfillMaxActiveRuns(t *testing.T) {
	p := scheduled(t, "p", `{cron: "0 2 * * *"}`, "max_active_runs: 1\n")
	f := newFixture(t, time.Date(2026, 4, 1, 12, 0, 0, 0, time.UTC), p)
	created, _, err := f.sched.Backfill(f.ctx, p, time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC), time.Date(2026, 3, 4, 0, 0, 0, 0, time.UTC))
	if err != nil || len(created) != 3 {
		t.Fatalf("backfill: %d runs, %v", len(created), err)
	}
	var states []engine.RunState
	for _, r := range f.runs("p") {
		states = append(states, r.State)
	}
	if want := []engine.RunState{engine.RunRunning, engine.RunQueued, engine.RunQueued}; !slices.Equal(states, want) {
		t.Errorf("states %v, want %v", states, want)
	}
}
