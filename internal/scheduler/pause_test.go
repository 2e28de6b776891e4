package scheduler

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/dray-dev/dray/internal/store"
)

// TestPause checks that a paused schedule fires nothing, and that resuming
// it runs nothing of the paused time, with or without catchup, whether the
// scheduler ticked during the pause or was down.
func TestPause(t *testing.T) {
	start := time.Date(2026, 11, 23, 10, 0, 30, 0, time.UTC)
	tests := []struct {
		name      string
		schedule  string
		ticking   bool // the scheduler ticks during the pause
		pause     func(f *fixture)
		resume    func(f *fixture)
		wantAfter []string // runs, all after the resume at 10:05:30
	}{
		{
			name: "API pause, catchup", schedule: `{every: 1m, catchup: true}`, ticking: true,
			pause:     func(f *fixture) { f.setPaused("p", true) },
			resume:    func(f *fixture) { f.setPaused("p", false) },
			wantAfter: []string{"10:06", "10:07"},
		},
		{
			name: "API pause, no catchup, scheduler down meanwhile", schedule: `{every: 1m}`, ticking: false,
			pause:     func(f *fixture) { f.setPaused("p", true) },
			resume:    func(f *fixture) { f.setPaused("p", false) },
			wantAfter: []string{"10:06", "10:07"},
		},
		{
			name: "API pause, catchup, scheduler down meanwhile", schedule: `{every: 1m, catchup: true}`, ticking: false,
			pause:     func(f *fixture) { f.setPaused("p", true) },
			resume:    func(f *fixture) { f.setPaused("p", false) },
			wantAfter: []string{"10:06", "10:07"},
		},
		{
			name: "paused in the file, resumed in the file", schedule: `{every: 1m, catchup: true}`, ticking: true,
			pause:     func(f *fixture) { f.setPipelines(scheduled(f.t, "p", `{every: 1m, catchup: true, paused: true}`)) },
			resume:    func(f *fixture) { f.setPipelines(scheduled(f.t, "p", `{every: 1m, catchup: true}`)) },
			wantAfter: []string{"10:06", "10:07"},
		},
		{
			name: "paused in the file, resumed by the API", schedule: `{every: 1m, catchup: true}`, ticking: false,
			pause:     func(f *fixture) { f.setPipelines(scheduled(f.t, "p", `{every: 1m, catchup: true, paused: true}`)) },
			resume:    func(f *fixture) { f.setPaused("p", false) },
			wantAfter: []string{"10:06", "10:07"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, start, scheduled(t, "p", tt.schedule))
			f.tick()
			f.clock.Advance(time.Minute) // 10:01:30: fires 10:01
			f.tick()
			tt.pause(f)
			for range 4 { // to 10:05:30
				f.clock.Advance(time.Minute)
				if tt.ticking {
					if next := f.tick(); !next.IsZero() {
						t.Errorf("paused: tick returned next %s, want zero", next)
					}
				}
			}
			if got := f.logs.fired(); !slices.Equal(got, []string{"10:01"}) {
				t.Fatalf("fired %v while paused, want 10:01 only", got)
			}
			tt.resume(f)
			f.tick()
			for range 2 {
				f.clock.Advance(time.Minute)
				f.tick()
			}
			if got := f.logs.fired()[1:]; !slices.Equal(got, tt.wantAfter) {
				t.Errorf("fired after resuming %v, want %v", got, tt.wantAfter)
			}
		})
	}
}

func (f *fixture) setPaused(pipeline string, paused bool) {
	f.t.Helper()
	if err := f.sched.SetPaused(f.ctx, pipeline, paused); err != nil {
		f.t.Fatal(err)
	}
}

// TestSetPausedOverridesFile checks that SetPaused overrides the file's paused
// both ways, and Schedules shows it.
func TestSetPausedOverridesFile(t *testing.T) {
	f := newFixture(t, time.Date(2026, 11, 23, 10, 0, 30, 0, time.UTC), scheduled(t, "p", `{every: 1m, paused: true}`))
	info := f.info("p")
	if !info.Paused || info.PausedSet || !info.Next.IsZero() {
		t.Errorf("paused in the file: %+v", info)
	}
	f.setPaused("p", false)
	f.tick()
	f.clock.Advance(time.Minute)
	f.tick()
	if got := f.logs.fired(); !slices.Equal(got, []string{"10:01"}) {
		t.Errorf("resumed by the API: fired %v, want 10:01", got)
	}
	if info := f.info("p"); info.Paused || !info.PausedSet || !info.Next.Equal(time.Date(2026, 11, 23, 10, 2, 0, 0, time.UTC)) {
		t.Errorf("resumed by the API: %+v", info)
	}
	// The file says not paused; the API pauses it.
	f.setPipelines(scheduled(t, "p", `{every: 1m}`))
	f.setPaused("p", true)
	f.clock.Advance(time.Minute)
	f.tick()
	if got := f.logs.fired(); len(got) != 1 {
		t.Errorf("paused by the API: fired %v", got)
	}
	// Clearing the override resumes it, as the file says, from now.
	f.clock.Advance(2 * time.Minute)
	if err := f.sched.ClearPaused(f.ctx, "p"); err != nil {
		t.Fatal(err)
	}
	if info := f.info("p"); info.Paused || info.PausedSet {
		t.Errorf("override cleared: %+v", info)
	}
	f.tick()
	f.clock.Advance(time.Minute)
	f.tick()
	if got := f.logs.fired(); !slices.Equal(got, []string{"10:01", "10:05"}) {
		t.Errorf("override cleared: fired %v, want 10:01 and then 10:05 only", got)
	}
}

func (f *fixture) info(pipeline string) Info {
	f.t.Helper()
	infos, err := f.sched.Schedules(f.ctx)
	if err != nil {
		f.t.Fatal(err)
	}
	for _, in := range infos {
		if in.Pipeline == pipeline {
			return in
		}
	}
	f.t.Fatalf("no schedule of %s in %+v", pipeline, infos)
	return Info{}
}

// TestSetPausedErrors checks the errors the HTTP layer maps to 404 and 400.
func TestSetPausedErrors(t *testing.T) {
	f := newFixture(t, time.Date(2026, 11, 23, 10, 0, 30, 0, time.UTC), load(t, "plain", "version: 1\ntasks: [{name: a, run: 'true'}]\n"))
	tests := []struct {
		pipeline string
		want     error
	}{
		{"nope", ErrUnknownPipeline},
		{"plain", ErrNoSchedule},
	}
	for _, tt := range tests {
		if err := f.sched.SetPaused(f.ctx, tt.pipeline, true); !errors.Is(err, tt.want) {
			t.Errorf("SetPaused(%s) = %v, want %v", tt.pipeline, err, tt.want)
		}
		if err := f.sched.ClearPaused(f.ctx, tt.pipeline); !errors.Is(err, tt.want) {
			t.Errorf("ClearPaused(%s) = %v, want %v", tt.pipeline, err, tt.want)
		}
	}
	if err := f.store.View(f.ctx, func(tx store.Tx) error {
		_, err := tx.Schedule(f.ctx, "plain")
		return err
	}); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("a failed SetPaused recorded a schedule: %v", err)
	}
}

// TestSchedules checks the listing: only pipelines with a schedule, with
// their settings, next fire time and cursor.
func TestSchedules(t *testing.T) {
	start := time.Date(2026, 11, 23, 10, 0, 30, 0, time.UTC)
	f := newFixture(t, start,
		scheduled(t, "nightly", `{cron: "0 2 * * *", timezone: Europe/Berlin, catchup: true, catchup_limit: 3}`),
		load(t, "plain", "version: 1\ntasks: [{name: a, run: 'true'}]\n"),
		scheduled(t, "often", `{every: 15m}`),
	)
	infos, err := f.sched.Schedules(f.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(infos) != 2 || infos[0].Pipeline != "nightly" || infos[1].Pipeline != "often" {
		t.Fatalf("schedules %+v, want nightly and often", infos)
	}
	n := infos[0]
	if n.Cron != "0 2 * * *" || n.Timezone != "Europe/Berlin" || !n.Catchup || n.CatchupLimit != 3 || n.Paused || !n.Cursor.IsZero() ||
		!n.Next.Equal(time.Date(2026, 11, 24, 1, 0, 0, 0, time.UTC)) || n.Next.Location().String() != "Europe/Berlin" {
		t.Errorf("nightly: %+v", n)
	}
	if o := infos[1]; o.Every != 15*time.Minute || o.Cron != "" || !o.Next.Equal(time.Date(2026, 11, 23, 10, 15, 0, 0, time.UTC)) {
		t.Errorf("often: %+v", o)
	}
	f.tick()
	if c := f.info("often").Cursor; !c.Equal(start) {
		t.Errorf("cursor after a tick %s, want %s", c, start)
	}
}
