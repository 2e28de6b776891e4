package control

import (
	"context"
	"testing"
	"time"

	"github.com/dray-dev/dray/internal/store/postgres"
	"github.com/dray-dev/dray/internal/store/postgres/pgtest"
)

// A task queued through one server replica wakes an agent waiting in another
// replica's long poll at once: the store's LISTEN/NOTIFY carries the queued
// event between processes (here two Services, each with its own PostgreSQL
// store, on one database). Without it the claim would wait out its poll and
// return nothing.
func TestQueuedWakesOtherReplicas(t *testing.T) {
	url := pgtest.URL(t)
	ctx := context.Background()
	open := func() *Service {
		st, err := postgres.Open(ctx, url, postgres.Options{})
		if err != nil {
			t.Fatal(err)
		}
		svc := New(Config{Store: st})
		t.Cleanup(func() { svc.Close(); st.Close() })
		return svc
	}
	a, b := open(), open()
	listenCtx, stop := context.WithCancel(ctx)
	defer stop()
	heard := make(chan error, 1)
	go func() { heard <- b.Listen(listenCtx) }()

	info := AgentInfo{ID: "agent-b", Host: "elsewhere", Executors: []string{"local"}, Capacity: 1}
	if _, err := b.Register(ctx, info); err != nil {
		t.Fatal(err)
	}
	p := pipeline(t, "p", "version: 1\ntasks: [{name: a, run: 'true'}]\n")
	got := make(chan int, 1)
	go func() {
		as, err := b.Claim(ctx, info, 1, time.Minute)
		if err != nil {
			t.Error(err)
		}
		got <- len(as)
	}()
	// The claimer may look before or after the trigger; either way it must
	// end up with the attempt long before its minute is up.
	// Give the claimer time to start waiting, so the wake-up is what is tested.
	time.Sleep(100 * time.Millisecond)
	if _, err := a.Trigger(ctx, p, TriggerRequest{}); err != nil {
		t.Fatal(err)
	}
	select {
	case n := <-got:
		if n != 1 {
			t.Fatalf("the waiting claim got %d attempts, want 1", n)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the waiting claim on the other replica was not woken within 30s")
	}
	stop()
	if err := <-heard; err != nil {
		t.Errorf("Listen: %v", err)
	}
}
