package postgres

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// Notify queues an event, which the commit publishes with pg_notify on the
// schema's channel: PostgreSQL delivers it to every listener once the
// transaction commits, and never if it rolls back. An event is a short text
// (under 8000 bytes, no NUL). A View never commits: its events go nowhere.
func (t *txn) Notify(ctx context.Context, event string) error {
	if len(event) >= 8000 || strings.IndexByte(event, 0) >= 0 || clean(event) != event {
		return fmt.Errorf("notify %q: an event is under 8000 bytes of UTF-8 text without NUL", event)
	}
	if t.write && !slices.Contains(t.events, event) {
		t.events = append(t.events, event)
	}
	return nil
}

// Listen calls fn with every event committed on the schema's channel: this
// store's as its Updates commit, other processes' (and other Store values')
// as PostgreSQL delivers them, on a connection of its own that LISTENs. When
// that connection drops, it connects again with back-off; events committed
// meanwhile by others are lost, so a caller should also look for work now and
// then. It returns nil when ctx ends or the store closes.
func (s *Store) Listen(ctx context.Context, fn func(event string)) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(s.closed, cancel)()
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

	const minBackoff, maxBackoff = 100 * time.Millisecond, 5 * time.Second
	backoff := minBackoff
	for {
		err := s.listen(ctx, fn, func() { backoff = minBackoff })
		if ctx.Err() != nil {
			return nil
		}
		wait := backoff/2 + rand.N(backoff/2+1)
		s.log.Warn("postgres store: listen connection lost; connecting again", "channel", s.channel, "err", err, "in", wait)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		backoff = min(2*backoff, maxBackoff)
	}
}

// listen connects, LISTENs and passes on notifications until the connection
// fails or ctx ends. It calls listening once it listens.
func (s *Store) listen(ctx context.Context, fn func(string), listening func()) error {
	conn, err := pgx.ConnectConfig(ctx, s.cfg)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, `LISTEN `+pgx.Identifier{s.channel}.Sanitize()); err != nil {
		return fmt.Errorf("listen %s: %w", s.channel, err)
	}
	listening()
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return err
		}
		if n.Channel != s.channel {
			continue
		}
		// This store's own events were delivered as their Updates committed.
		if _, own := s.pids.Load(n.PID); own {
			continue
		}
		fn(n.Payload)
	}
}

// deliver hands the events of a committed Update to this store's listeners.
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
