package postgres_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/dray-dev/dray/internal/store"
	"github.com/dray-dev/dray/internal/store/postgres"
	"github.com/dray-dev/dray/internal/store/postgres/pgtest"
	"github.com/jackc/pgx/v5"
)

// events collects what a Listen hears.
type events struct {
	mu   sync.Mutex
	seen map[string]int
	ch   chan string
}

func listen(t *testing.T, s *postgres.Store) *events {
	t.Helper()
	e := &events{seen: map[string]int{}, ch: make(chan string, 1000)}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- s.Listen(ctx, func(ev string) {
			e.mu.Lock()
			e.seen[ev]++
			e.mu.Unlock()
			e.ch <- ev
		})
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Listen: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Listen did not return after its context ended")
		}
	})
	return e
}

func (e *events) count(ev string) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.seen[ev]
}

// await notifies ev from s until e hears it (a Listen may need a moment to
// subscribe), or fails the test after 10s.
func (e *events) await(t *testing.T, s store.Store, ev string) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		notify(t, s, ev)
		tick := time.After(50 * time.Millisecond)
		for waiting := true; waiting; {
			select {
			case got := <-e.ch:
				if got == ev {
					return
				}
			case <-tick:
				waiting = false
			case <-deadline:
				t.Fatalf("event %q not heard in 10s", ev)
			}
		}
	}
}

func notify(t *testing.T, s store.Store, events ...string) {
	t.Helper()
	err := s.Update(t.Context(), func(tx store.Tx) error {
		for _, ev := range events {
			if err := tx.Notify(t.Context(), ev); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("Update with Notify: %v", err)
	}
}

// An event committed by one Store reaches the Listen of another on the same
// schema, once; a rolled-back one does not; a Store hears its own events
// once, not again from PostgreSQL; and another schema's events are not heard.
func TestListenAcrossStores(t *testing.T) {
	url := pgtest.EmptyURL(t)
	open := func() *postgres.Store {
		s, err := postgres.Open(t.Context(), url, postgres.Options{MaxConns: 2})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	a, b := open(), open()
	other := pgtest.Open(t) // another schema of the same database
	heardA, heardB, heardOther := listen(t, a), listen(t, b), listen(t, other)
	heardB.await(t, a, "warmup-b")
	heardA.await(t, b, "warmup-a")
	heardOther.await(t, other, "warmup-other")

	err := a.Update(t.Context(), func(tx store.Tx) error {
		if err := tx.Notify(t.Context(), "rolled-back"); err != nil {
			return err
		}
		return errors.New("roll back")
	})
	if err == nil {
		t.Fatal("Update returned nil for fn's error")
	}
	// Events of one transaction with the same name: once. Quotes survive.
	notify(t, a, "queued", "queued", "it's")
	// Committed after the events above: when B hears it, it heard them.
	notify(t, a, "marker")
	heardB.await(t, a, "marker2")
	heardA.await(t, b, "marker3") // and A heard its own by then too

	for _, c := range []struct {
		who   string
		e     *events
		event string
		want  int
	}{
		{"B", heardB, "queued", 1},
		{"B", heardB, "it's", 1},
		{"B", heardB, "rolled-back", 0},
		{"A (its own)", heardA, "queued", 1},
		{"A (its own)", heardA, "it's", 1},
		{"A (its own)", heardA, "rolled-back", 0},
		{"the other schema", heardOther, "queued", 0},
		{"the other schema", heardOther, "marker", 0},
	} {
		if got := c.e.count(c.event); got != c.want {
			t.Errorf("%s heard %q %d times, want %d", c.who, c.event, got, c.want)
		}
	}
}

// Listen connects again when its connection is cut, and hears events
// committed after that.
func TestListenReconnects(t *testing.T) {
	url := pgtest.EmptyURL(t)
	sender, err := postgres.Open(t.Context(), url, postgres.Options{MaxConns: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sender.Close() })
	s, err := postgres.Open(t.Context(), url, postgres.Options{MaxConns: 2, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	heard := listen(t, s)
	heard.await(t, sender, "before")

	// Cut every LISTENing connection on the schema's channel.
	conn, err := pgx.Connect(t.Context(), pgtest.BaseURL(t))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var cut int
	err = conn.QueryRow(t.Context(), `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
		WHERE query = 'LISTEN ' || quote_ident($1)`, "dray:"+s.Schema()).Scan(&cut)
	if err != nil {
		t.Fatal(err)
	}
	if cut != 1 {
		t.Fatalf("cut %d listening connections, want 1", cut)
	}
	heard.await(t, sender, "after")
}
