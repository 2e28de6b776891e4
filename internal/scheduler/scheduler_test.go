package scheduler

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/dray-dev/dray/internal/control"
	"github.com/dray-dev/dray/internal/engine"
	"github.com/dray-dev/dray/internal/spec"
	"github.com/dray-dev/dray/internal/store"
)

// TestTickFires drives schedules with a clock across ordinary days and DST
// changes, ticking at every step, and checks the runs' logical times: a time
// that does not exist fires at the end of the gap, a repeated time fires once
// for a fixed hour, and an hourly schedule fires at every real hour.
func TestTickFires(t *testing.T) {
	berlin, newYork := mustLocation(t, "Europe/Berlin"), mustLocation(t, "America/New_York")
	tests := []struct {
		name       string
		schedule   string
		loc        *time.Location
		start, end time.Time
		step       time.Duration
		want       []string // logical times in loc
	}{
		{
			name: "every 15m", schedule: "{every: 15m}", loc: time.UTC,
			start: time.Date(2026, 11, 23, 10, 7, 0, 0, time.UTC), end: time.Date(2026, 11, 23, 11, 0, 0, 0, time.UTC), step: 4 * time.Minute,
			want: []string{"2026-11-23 10:15 +00:00", "2026-11-23 10:30 +00:00", "2026-11-23 10:45 +00:00", "2026-11-23 11:00 +00:00"},
		},
		{
			name: "Berlin 02:30 across spring forward", schedule: `{cron: "30 2 * * *", timezone: Europe/Berlin}`, loc: berlin,
			start: time.Date(2026, 3, 28, 12, 0, 0, 0, berlin), end: time.Date(2026, 3, 30, 12, 0, 0, 0, berlin), step: 20 * time.Minute,
			want: []string{"2026-03-29 03:00 +02:00", "2026-03-30 02:30 +02:00"},
		},
		{
			name: "Berlin 02:30 across fall back", schedule: `{cron: "30 2 * * *", timezone: Europe/Berlin}`, loc: berlin,
			start: time.Date(2026, 10, 24, 12, 0, 0, 0, berlin), end: time.Date(2026, 10, 26, 12, 0, 0, 0, berlin), step: 20 * time.Minute,
			want: []string{"2026-10-25 02:30 +02:00", "2026-10-26 02:30 +01:00"},
		},
		{
			name: "Berlin hourly across spring forward", schedule: `{cron: "0 * * * *", timezone: Europe/Berlin}`, loc: berlin,
			start: time.Date(2026, 3, 29, 0, 30, 0, 0, berlin), end: time.Date(2026, 3, 29, 4, 30, 0, 0, berlin), step: 20 * time.Minute,
			want: []string{"2026-03-29 01:00 +01:00", "2026-03-29 03:00 +02:00", "2026-03-29 04:00 +02:00"},
		},
		{
			name: "New York hourly across fall back", schedule: `{cron: "@hourly", timezone: America/New_York}`, loc: newYork,
			start: time.Date(2026, 11, 1, 0, 30, 0, 0, newYork), end: time.Date(2026, 11, 1, 8, 30, 0, 0, time.UTC), step: 20 * time.Minute,
			want: []string{"2026-11-01 01:00 -04:00", "2026-11-01 01:00 -05:00", "2026-11-01 02:00 -05:00", "2026-11-01 03:00 -05:00"},
		},
		{
			name: "New York 02:30 across spring forward", schedule: `{cron: "30 2 * * *", timezone: America/New_York}`, loc: newYork,
			start: time.Date(2026, 3, 7, 12, 0, 0, 0, newYork), end: time.Date(2026, 3, 9, 12, 0, 0, 0, newYork), step: 20 * time.Minute,
			want: []string{"2026-03-08 03:00 -04:00", "2026-03-09 02:30 -04:00"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := scheduled(t, "p", tt.schedule)
			f := newFixture(t, tt.start, p)
			f.tick() // first sight: the cursor starts now
			for f.clock.Now().Before(tt.end) {
				f.clock.Advance(tt.step)
				f.tick()
			}
			runs := f.runs("p")
			if got := times(runs, tt.loc); !slices.Equal(got, tt.want) {
				t.Errorf("runs at\n %q\nwant\n %q", got, tt.want)
			}
			for _, r := range runs {
				if date := r.LogicalTime.In(tt.loc).Format("2006-01-02"); r.Trigger != "schedule" || r.LogicalDate != date {
					t.Errorf("run %s: trigger %q, logical date %s; want schedule, %s", r.ID, r.Trigger, r.LogicalDate, date)
				}
			}
		})
	}
}

// TestFirstSight checks that a schedule fires nothing when first seen, only
// what is due after, and that Tick returns the next fire time.
func TestFirstSight(t *testing.T) {
	start := time.Date(2026, 11, 23, 10, 0, 30, 0, time.UTC)
	f := newFixture(t, start, scheduled(t, "p", "{every: 1m}"))
	if next := f.tick(); !next.Equal(start.Add(30 * time.Second)) {
		t.Errorf("first tick: next %s, want 10:01:00", next)
	}
	if row := f.row("p"); row == nil || !row.Cursor.Equal(start) {
		t.Fatalf("cursor after the first tick = %+v, want %s", row, start)
	}
	if n := len(f.runs("p")); n != 0 {
		t.Fatalf("first tick made %d runs, want none", n)
	}
	f.clock.Advance(45 * time.Second)
	if next := f.tick(); !next.Equal(start.Add(90 * time.Second)) {
		t.Errorf("second tick: next %s, want 10:02:00", next)
	}
	if got := times(f.runs("p"), time.UTC); !slices.Equal(got, []string{"2026-11-23 10:01 +00:00"}) {
		t.Errorf("runs %v", got)
	}
}

// TestCatchup stops the scheduler for five hours of an hourly schedule and
// checks which of the missed fire times run, in which order, and that the
// others are logged as skipped.
func TestCatchup(t *testing.T) {
	tests := []struct {
		schedule    string
		want        []string // UTC, in the order fired
		wantSkipped int
	}{
		{`{cron: "0 * * * *", catchup: false}`, []string{"15:00"}, 4},
		{`{cron: "0 * * * *", catchup: true, catchup_limit: 1}`, []string{"15:00"}, 4},
		{`{cron: "0 * * * *", catchup: true, catchup_limit: 3}`, []string{"13:00", "14:00", "15:00"}, 2},
		{`{cron: "0 * * * *", catchup: true}`, []string{"11:00", "12:00", "13:00", "14:00", "15:00"}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.schedule, func(t *testing.T) {
			f := newFixture(t, time.Date(2026, 11, 23, 10, 0, 30, 0, time.UTC), scheduled(t, "p", tt.schedule))
			f.tick()
			f.clock.Set(time.Date(2026, 11, 23, 15, 10, 0, 0, time.UTC))
			f.tick()
			if got := f.logs.fired(); !slices.Equal(got, tt.want) {
				t.Errorf("fired %v, want %v", got, tt.want)
			}
			if n := len(f.runs("p")); n != len(tt.want) {
				t.Errorf("%d runs, want %d", n, len(tt.want))
			}
			skipped := f.logs.find("schedule skipped missed fire times")
			switch {
			case tt.wantSkipped == 0 && len(skipped) > 0:
				t.Errorf("logged skips %v, want none", skipped[0].attrs)
			case tt.wantSkipped > 0 && (len(skipped) != 1 || skipped[0].attrs["skipped"] != fmt.Sprint(tt.wantSkipped)):
				t.Errorf("skip log lines %v, want one with skipped=%d", skipped, tt.wantSkipped)
			case tt.wantSkipped > 0 && !skipped[0].attrs["first"].(time.Time).Equal(time.Date(2026, 11, 23, 11, 0, 0, 0, time.UTC)):
				t.Errorf("first skipped %v, want 11:00", skipped[0].attrs["first"])
			}
			// Ticking again fires nothing more.
			f.tick()
			if n := len(f.runs("p")); n != len(tt.want) {
				t.Errorf("%d runs after another tick, want %d", n, len(tt.want))
			}
		})
	}
}

// TestDue checks the choice of fire times on long gaps, where the cost must
// not grow with the gap.
func TestDue(t *testing.T) {
	everyMinute := func(t time.Time) time.Time { return t.Truncate(time.Minute).Add(time.Minute) }
	now := time.Date(2026, 11, 23, 10, 0, 30, 0, time.UTC)
	tests := []struct {
		name        string
		after       time.Time
		keep        int
		wantFire    []time.Time
		wantSkipped int
		wantCapped  bool
	}{
		{"nothing due", now.Add(-20 * time.Second), 1, nil, 0, false},
		{"one due", now.Add(-time.Minute), 1, []time.Time{now.Add(-30 * time.Second)}, 0, false},
		{"three due, keep 2", now.Add(-3 * time.Minute), 2, []time.Time{now.Add(-90 * time.Second), now.Add(-30 * time.Second)}, 1, false},
		{"a day, keep 1", now.Add(-24 * time.Hour), 1, []time.Time{now.Add(-30 * time.Second)}, 1439, false},
		{"two years, keep 3", now.Add(-2 * 365 * 24 * time.Hour), 3,
			[]time.Time{now.Add(-150 * time.Second), now.Add(-90 * time.Second), now.Add(-30 * time.Second)}, maxSkipCount, true},
		{"keep 0 (paused)", now.Add(-time.Hour), 0, nil, 0, false},
		{"cursor ahead", now.Add(time.Hour), 1, nil, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			calls := 0
			next := func(t time.Time) time.Time { calls++; return everyMinute(t) }
			d := due(next, tt.after, now, tt.keep)
			if !slices.EqualFunc(d.fire, tt.wantFire, time.Time.Equal) || d.skipped != tt.wantSkipped || d.capped != tt.wantCapped {
				t.Errorf("due = fire %v, skipped %d, capped %v; want %v, %d, %v", d.fire, d.skipped, d.capped, tt.wantFire, tt.wantSkipped, tt.wantCapped)
			}
			if calls > 2*maxSkipCount {
				t.Errorf("%d calls of Next", calls)
			}
		})
	}
}

// TestTickIsIdempotent ticks twice at the same instant, and on two schedulers
// (two store handles, like two processes) at once: every fire time gets one
// run.
func TestTickIsIdempotent(t *testing.T) {
	p := scheduled(t, "p", `{every: 1m, catchup: true, catchup_limit: 5}`)
	f := newFixture(t, time.Date(2026, 11, 23, 10, 0, 30, 0, time.UTC), p)
	other, _, _ := f.scheduler(f.open(), "other")
	f.tick()
	for round := 1; round <= 3; round++ {
		f.clock.Advance(5 * time.Minute)
		var wg sync.WaitGroup
		errs := make([]error, 4)
		for i, s := range []*Scheduler{f.sched, other, f.sched, other} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, errs[i] = s.Tick(f.ctx)
			}()
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			t.Fatal(err)
		}
		f.tick()
		runs := f.runs("p")
		if len(runs) != 5*round {
			t.Fatalf("round %d: %d runs, want %d: %v", round, len(runs), 5*round, times(runs, time.UTC))
		}
		for i := 1; i < len(runs); i++ {
			if !runs[i].LogicalTime.Equal(runs[i-1].LogicalTime.Add(time.Minute)) {
				t.Fatalf("round %d: runs at %v, want one a minute", round, times(runs, time.UTC))
			}
		}
	}
}

// failingStore fails PutSchedule while fail is set: a crash between the fires
// and the cursor update.
type failingStore struct {
	store.Store
	mu   sync.Mutex
	fail bool
}

func (s *failingStore) Update(ctx context.Context, fn func(store.Tx) error) error {
	s.mu.Lock()
	fail := s.fail
	s.mu.Unlock()
	return s.Store.Update(ctx, func(tx store.Tx) error { return fn(&failingTx{Tx: tx, fail: fail}) })
}

type failingTx struct {
	store.Tx
	fail bool
}

func (tx *failingTx) PutSchedule(ctx context.Context, s *store.Schedule) error {
	if tx.fail {
		return errors.New("injected: the process died")
	}
	return tx.Tx.PutSchedule(ctx, s)
}

// TestCursorNotMoved checks that fires whose cursor update failed are neither
// fired again nor lost at the next tick.
func TestCursorNotMoved(t *testing.T) {
	p := scheduled(t, "p", `{every: 1m, catchup: true, catchup_limit: 3}`)
	f := newFixture(t, time.Date(2026, 11, 23, 10, 0, 30, 0, time.UTC), p)
	fs := &failingStore{Store: f.store}
	s, _, _ := f.scheduler(fs, "main")
	if _, err := s.Tick(f.ctx); err != nil {
		t.Fatal(err)
	}
	f.clock.Advance(2 * time.Minute) // 10:01 and 10:02 due
	fs.fail = true
	if _, err := s.Tick(f.ctx); err == nil {
		t.Fatal("tick with a failing cursor update: no error")
	}
	if got := times(f.runs("p"), time.UTC); len(got) != 2 {
		t.Fatalf("runs %v, want 10:01 and 10:02", got)
	}
	fs.fail = false
	f.clock.Advance(time.Minute) // and 10:03
	if _, err := s.Tick(f.ctx); err != nil {
		t.Fatal(err)
	}
	want := []string{"2026-11-23 10:01 +00:00", "2026-11-23 10:02 +00:00", "2026-11-23 10:03 +00:00"}
	if got := times(f.runs("p"), time.UTC); !slices.Equal(got, want) {
		t.Errorf("runs %v, want %v", got, want)
	}
}

// TestScheduleParamsAndMaxActiveRuns checks that a scheduled run gets the
// schedule's params, and that a schedule firing while a run is active leaves
// the new run queued under max_active_runs until the first ends.
func TestScheduleParamsAndMaxActiveRuns(t *testing.T) {
	p := load(t, "p", `version: 1
max_active_runs: 1
schedule: { every: 1m, params: { full: true, day: "2026-01-01" } }
params:
  full: false
  day: { type: string, default: "${{ run.logical_date }}" }
  limit: 3
tasks: [{name: a, run: 'true'}]
`)
	f := newFixture(t, time.Date(2026, 11, 23, 10, 0, 30, 0, time.UTC), p)
	f.tick()
	f.clock.Advance(time.Minute)
	f.tick()
	f.clock.Advance(time.Minute)
	f.tick()
	runs := f.runs("p")
	if len(runs) != 2 {
		t.Fatalf("%d runs, want 2", len(runs))
	}
	first, second := runs[0], runs[1]
	if want := map[string]any{"full": true, "day": "2026-01-01", "limit": 3}; fmt.Sprint(first.Params) != fmt.Sprint(want) {
		t.Errorf("params %v, want %v", first.Params, want)
	}
	if first.State != engine.RunRunning || second.State != engine.RunQueued {
		t.Fatalf("runs %s and %s, want running and queued", first.State, second.State)
	}
	agent := control.AgentInfo{ID: "a1", Host: "elsewhere", Executors: []string{spec.ExecLocal}, Capacity: 10}
	if _, err := f.svc.Register(f.ctx, agent); err != nil {
		t.Fatal(err)
	}
	got, err := f.svc.Claim(f.ctx, agent, 10, 0)
	if err != nil || len(got) != 1 || got[0].RunID != first.ID {
		t.Fatalf("claimed %v, %v; want the first run's attempt only", got, err)
	}
	if _, err := f.svc.Finish(f.ctx, agent, got[0].ID, engine.Result{State: engine.AttemptSucceeded}, 0); err != nil {
		t.Fatal(err)
	}
	runs = f.runs("p")
	if runs[0].State != engine.RunSucceeded || runs[1].State != engine.RunRunning {
		t.Errorf("after the first ended: %s and %s, want succeeded and running", runs[0].State, runs[1].State)
	}
}

// TestScheduleRemoved checks that a schedule taken out of the file and put
// back does not catch up the time it was out.
func TestScheduleRemoved(t *testing.T) {
	with := scheduled(t, "p", `{every: 1m, catchup: true}`)
	without := load(t, "p", "version: 1\ntasks: [{name: a, run: 'true'}]\n")
	f := newFixture(t, time.Date(2026, 11, 23, 10, 0, 30, 0, time.UTC), with)
	f.tick()
	f.setPipelines(without)
	f.clock.Advance(5 * time.Minute)
	if next := f.tick(); !next.IsZero() {
		t.Errorf("next %s with no schedule, want zero", next)
	}
	f.setPipelines(with)
	f.clock.Advance(30 * time.Second)
	f.tick()
	if got := times(f.runs("p"), time.UTC); !slices.Equal(got, []string{"2026-11-23 10:06 +00:00"}) {
		t.Errorf("runs %v, want 10:06 only", got)
	}
}

// TestCursorNeverMovesBack checks that a scheduler whose clock is behind
// does not move a cursor back, so it cannot bring back fire times that
// another scheduler skipped.
func TestCursorNeverMovesBack(t *testing.T) {
	start := time.Date(2026, 11, 23, 10, 0, 30, 0, time.UTC)
	f := newFixture(t, start, scheduled(t, "p", "{every: 1m}"))
	f.tick()
	f.clock.Advance(5 * time.Minute)
	f.tick()
	svc := control.New(control.Config{Store: f.store, Now: f.clock.Now})
	t.Cleanup(svc.Close)
	late := New(Config{
		Store: f.store, Control: svc, Pipelines: f.sched.cfg.Pipelines,
		Now: func() time.Time { return f.clock.Now().Add(-2 * time.Minute) },
	})
	if _, err := late.Tick(f.ctx); err != nil {
		t.Fatal(err)
	}
	if c := f.row("p").Cursor; !c.Equal(f.clock.Now()) {
		t.Errorf("cursor %s after a late tick, want %s", c, f.clock.Now())
	}
}
