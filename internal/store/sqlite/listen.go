package sqlite

import (
	"context"
	"fmt"
	"slices"
	"time"
)

// ChangedEvent is the event Listen delivers when another process changed the
// database: SQLite cannot say what it changed.
const ChangedEvent = "changed"

// pollChanges is how often Listen looks for commits of other processes.
const pollChanges = time.Second

// Ping checks that the database file can be read.
func (s *Store) Ping(ctx context.Context) error {
	var v int
	if err := s.r.QueryRowContext(ctx, `SELECT 1`).Scan(&v); err != nil {
		return s.wrap("ping", err)
	}
	return nil
}

// Notify queues an event for delivery after the transaction commits.
func (t *txn) Notify(ctx context.Context, event string) error {
	if !slices.Contains(t.events, event) {
		t.events = append(t.events, event)
	}
	return nil
}

// Listen delivers this process's events as their transactions commit. Other
// processes' commits (a `dray trigger` on the same file) are noticed by
// polling SQLite's data_version once a second and delivered as ChangedEvent.
func (s *Store) Listen(ctx context.Context, fn func(event string)) error {
	s.listenMu.Lock()
	if s.listeners == nil {
		s.listeners = map[*func(string)]struct{}{}
	}
	s.listeners[&fn] = struct{}{}
	s.listenMu.Unlock()
	defer func() {
		s.listenMu.Lock()
		delete(s.listeners, &fn)
		s.listenMu.Unlock()
	}()

	// data_version is per connection: hold one for the poll.
	conn, err := s.r.Conn(ctx)
	if err != nil {
		return s.wrap("listen", err)
	}
	defer conn.Close()
	version := func() (int64, error) {
		var v int64
		err := conn.QueryRowContext(ctx, `PRAGMA data_version`).Scan(&v)
		return v, err
	}
	last, err := version()
	if err != nil {
		return s.wrap("listen", err)
	}
	tick := time.NewTicker(pollChanges)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		v, err := version()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("listen %s: %w", s.path, err)
		}
		if v != last {
			last = v
			fn(ChangedEvent)
		}
	}
}

// deliver hands committed events to the listeners.
func (s *Store) deliver(events []string) {
	if len(events) == 0 {
		return
	}
	s.listenMu.Lock()
	defer s.listenMu.Unlock()
	for l := range s.listeners {
		for _, ev := range events {
			(*l)(ev)
		}
	}
}
