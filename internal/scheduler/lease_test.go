package scheduler

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/dray-dev/dray/internal/store"
)

// runLoop runs s.Run until the returned stop is called; stop waits for it.
func runLoop(t *testing.T, s *Scheduler) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("Run did not return after its context ended")
		}
	}
	t.Cleanup(stop)
	return stop
}

// TestLeaseHandover runs two schedulers, each on its own store handle (like
// two processes), on an every-minute schedule. Only the holder of the lease
// fires; when it stops (crashing without releasing the lease, or releasing
// it), the stand-by takes over (after the lease's TTL, or at its next try) and
// every minute gets exactly one run across the handover, including the minute
// that passed while nobody was active.
func TestLeaseHandover(t *testing.T) {
	start := time.Date(2026, 11, 23, 10, 0, 30, 0, time.UTC)
	stopAt := time.Date(2026, 11, 23, 10, 3, 50, 0, time.UTC) // A last renewed the lease now: until 10:04:05
	tests := []struct {
		name         string
		crash        bool // A stops without releasing the lease
		wantTakeover time.Time
	}{
		{"crash", true, stopAt.Add(15 * time.Second)},
		{"graceful", false, stopAt.Add(5 * time.Second)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, start, scheduled(t, "p", "{every: 1m}"))
			storeA := f.open()
			a, _, logsA := f.scheduler(storeA, "a")
			b, _, logsB := f.scheduler(f.open(), "b")

			stopA := runLoop(t, a)
			f.clock.waitTimers(t, 1)
			runLoop(t, b)
			f.clock.waitTimers(t, 2)
			if !a.Active() || b.Active() {
				t.Fatalf("active: a %v, b %v; want a only", a.Active(), b.Active())
			}
			for f.clock.Now().Before(stopAt) {
				f.clock.Advance(5 * time.Second)
				f.clock.waitTimers(t, 2)
			}
			if b.Active() {
				t.Fatal("b became active while a held the lease")
			}
			if tt.crash {
				storeA.Close() // its lease cannot be released
			}
			stopA()
			f.clock.waitTimers(t, 1)
			var takeover time.Time
			for f.clock.Now().Before(time.Date(2026, 11, 23, 10, 6, 10, 0, time.UTC)) {
				f.clock.Advance(5 * time.Second)
				f.clock.waitTimers(t, 1)
				if b.Active() && takeover.IsZero() {
					takeover = f.clock.Now()
				}
			}
			if !takeover.Equal(tt.wantTakeover) {
				t.Errorf("b took over at %s, want %s", takeover.Format("15:04:05"), tt.wantTakeover.Format("15:04:05"))
			}
			if got, want := logsA.fired(), []string{"10:01", "10:02", "10:03"}; !slices.Equal(got, want) {
				t.Errorf("a fired %v, want %v", got, want)
			}
			if got, want := logsB.fired(), []string{"10:04", "10:05", "10:06"}; !slices.Equal(got, want) {
				t.Errorf("b fired %v, want %v", got, want)
			}
			want := []string{"10:01", "10:02", "10:03", "10:04", "10:05", "10:06"}
			var got []string
			for _, r := range f.runs("p") {
				got = append(got, r.LogicalTime.UTC().Format("15:04"))
			}
			if !slices.Equal(got, want) {
				t.Errorf("runs at %v, want %v", got, want)
			}
		})
	}
}

// TestRunReleasesLease checks that Run gives the lease up when its context
// ends, so another scheduler can take it at once.
func TestRunReleasesLease(t *testing.T) {
	f := newFixture(t, time.Date(2026, 11, 23, 10, 0, 30, 0, time.UTC))
	stop := runLoop(t, f.sched)
	f.clock.waitTimers(t, 1)
	if !f.sched.Active() {
		t.Fatal("the only scheduler is not active")
	}
	take := func() bool {
		var ok bool
		err := f.store.Update(f.ctx, func(tx store.Tx) error {
			var err error
			_, ok, err = tx.AcquireLease(f.ctx, LeaseName, "other", f.clock.Now(), time.Minute)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}
	if take() {
		t.Fatal("another holder took the lease while Run held it")
	}
	stop()
	if f.sched.Active() {
		t.Error("active after Run returned")
	}
	if !take() {
		t.Error("the lease was not released when Run returned")
	}
}
