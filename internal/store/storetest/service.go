package storetest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/dray-dev/dray/internal/store"
)

// testUsers: "PutUser inserts or replaces a user." "User returns a user by
// name (ErrNotFound)." "Users lists every user by name." "DeleteUser deletes a
// user and their sessions (ErrNotFound)."
func testUsers(t *testing.T, s store.Store) {
	alice := &store.User{Name: "alice", Role: "admin", PasswordHash: "$argon2id$v=19$m=65536,t=1,p=2$c2FsdA$aGFzaA", CreatedAt: t0, UpdatedAt: t0.Add(time.Minute)}
	bob := &store.User{Name: "bob", Role: "viewer", PasswordHash: "h", CreatedAt: t0}
	update(t, s, func(ctx context.Context, tx store.Tx) error {
		for _, u := range []*store.User{bob, alice} {
			if err := tx.PutUser(ctx, deepCopy(u)); err != nil {
				return err
			}
		}
		return tx.PutSession(ctx, &store.Session{ID: "s-bob", User: "bob", CSRF: "c", CreatedAt: t0, ExpiresAt: t0.Add(time.Hour)})
	})
	checkEqual(t, "user", alice, get(t, s, func(ctx context.Context, tx store.Tx) (*store.User, error) { return tx.User(ctx, "alice") }))
	checkEqual(t, "users", []*store.User{alice, bob}, get(t, s, func(ctx context.Context, tx store.Tx) ([]*store.User, error) { return tx.Users(ctx) }))

	alice2 := &store.User{Name: "alice", Role: "operator", PasswordHash: "new", CreatedAt: t0, UpdatedAt: t0.Add(time.Hour)}
	update(t, s, func(ctx context.Context, tx store.Tx) error { return tx.PutUser(ctx, deepCopy(alice2)) })
	checkEqual(t, "replaced user", alice2, get(t, s, func(ctx context.Context, tx store.Tx) (*store.User, error) { return tx.User(ctx, "alice") }))

	update(t, s, func(ctx context.Context, tx store.Tx) error { return tx.DeleteUser(ctx, "bob") })
	view(t, s, func(ctx context.Context, tx store.Tx) error {
		_, err := tx.User(ctx, "bob")
		wantNotFound(t, "deleted user", err)
		_, err = tx.Session(ctx, "s-bob")
		wantNotFound(t, "session of a deleted user", err)
		_, err = tx.User(ctx, "carol")
		wantNotFound(t, "unknown user", err)
		return nil
	})
	err := s.Update(t.Context(), func(tx store.Tx) error { return tx.DeleteUser(t.Context(), "bob") })
	wantNotFound(t, "delete an unknown user", err)
}

// testTokens: "PutToken inserts or replaces an API token." "Token returns a
// token by id (ErrNotFound)." "Tokens lists every token, oldest first (by
// CreatedAt, then ID)."
func testTokens(t *testing.T, s store.Store) {
	full := &store.Token{ID: "k2", Name: "ci", Role: "operator", Hash: "abc", CreatedBy: "alice",
		CreatedAt: t0, ExpiresAt: t0.Add(720 * time.Hour), LastUsedAt: t0.Add(time.Minute), RevokedAt: t0.Add(time.Hour)}
	bare := &store.Token{ID: "k1", Name: "agent", Role: "agent", Hash: "def", CreatedBy: "alice", CreatedAt: t0}
	later := &store.Token{ID: "k0", Name: "late", Role: "viewer", Hash: "ghi", CreatedBy: "bob", CreatedAt: t0.Add(time.Second)}
	update(t, s, func(ctx context.Context, tx store.Tx) error {
		for _, k := range []*store.Token{later, full, bare} {
			if err := tx.PutToken(ctx, deepCopy(k)); err != nil {
				return err
			}
		}
		return nil
	})
	checkEqual(t, "token", full, get(t, s, func(ctx context.Context, tx store.Tx) (*store.Token, error) { return tx.Token(ctx, "k2") }))
	checkEqual(t, "token without times", bare, get(t, s, func(ctx context.Context, tx store.Tx) (*store.Token, error) { return tx.Token(ctx, "k1") }))
	checkEqual(t, "tokens", []*store.Token{bare, full, later}, get(t, s, func(ctx context.Context, tx store.Tx) ([]*store.Token, error) { return tx.Tokens(ctx) }))
	bare.LastUsedAt = t0.Add(2 * time.Minute)
	update(t, s, func(ctx context.Context, tx store.Tx) error { return tx.PutToken(ctx, deepCopy(bare)) })
	checkEqual(t, "replaced token", bare, get(t, s, func(ctx context.Context, tx store.Tx) (*store.Token, error) { return tx.Token(ctx, "k1") }))
	view(t, s, func(ctx context.Context, tx store.Tx) error {
		_, err := tx.Token(ctx, "nope")
		wantNotFound(t, "unknown token", err)
		return nil
	})
}

// testSessions: "PutSession inserts or replaces a login session." "Session
// returns a session by id (ErrNotFound)." DeleteSessions deletes by id, by
// user and by expiry, and says how many.
func testSessions(t *testing.T, s store.Store) {
	mk := func(id, user string, expires time.Duration) *store.Session {
		return &store.Session{ID: id, User: user, CSRF: "csrf-" + id, CreatedAt: t0, ExpiresAt: t0.Add(expires)}
	}
	all := []*store.Session{mk("a1", "alice", time.Hour), mk("a2", "alice", 2*time.Hour), mk("b1", "bob", time.Minute), mk("b2", "bob", 3*time.Hour), mk("c1", "carol", 3*time.Hour)}
	update(t, s, func(ctx context.Context, tx store.Tx) error {
		for _, x := range all {
			if err := tx.PutSession(ctx, deepCopy(x)); err != nil {
				return err
			}
		}
		return nil
	})
	checkEqual(t, "session", all[0], get(t, s, func(ctx context.Context, tx store.Tx) (*store.Session, error) { return tx.Session(ctx, "a1") }))
	del := func(id, user string, expired time.Time) int {
		var n int
		update(t, s, func(ctx context.Context, tx store.Tx) error {
			var err error
			n, err = tx.DeleteSessions(ctx, id, user, expired)
			return err
		})
		return n
	}
	if n := del("", "", time.Time{}); n != 0 {
		t.Errorf("DeleteSessions with no selector deleted %d, want 0", n)
	}
	if n := del("", "", t0.Add(time.Hour)); n != 2 {
		t.Errorf("DeleteSessions expired at t0+1h deleted %d, want 2 (a1, b1)", n)
	}
	if n := del("", "alice", time.Time{}); n != 1 {
		t.Errorf("DeleteSessions of alice deleted %d, want 1 (a2)", n)
	}
	if n := del("c1", "", time.Time{}); n != 1 {
		t.Errorf("DeleteSessions c1 deleted %d, want 1", n)
	}
	view(t, s, func(ctx context.Context, tx store.Tx) error {
		for _, id := range []string{"a1", "a2", "b1", "c1"} {
			_, err := tx.Session(ctx, id)
			wantNotFound(t, "deleted session "+id, err)
		}
		_, err := tx.Session(ctx, "b2")
		return err
	})
}

// testAudit: "InsertAudit records an audit entry and sets its ID (unique,
// increasing)." "Audit lists audit entries newest first (by ID)."
func testAudit(t *testing.T, s store.Store) {
	var written []*store.AuditEntry
	update(t, s, func(ctx context.Context, tx store.Tx) error {
		for i := range 5 {
			e := &store.AuditEntry{Time: t0.Add(time.Duration(i) * time.Second), Actor: []string{"alice", "token:k1"}[i%2],
				Action: "run.trigger", Target: fmt.Sprintf("run-%d", i), Detail: `{"params":{"day":"2024-03-10"}}`, Address: "10.0.0.1:5555"}
			if i == 4 {
				e.Detail, e.Address = "", ""
			}
			if err := tx.InsertAudit(ctx, e); err != nil {
				return err
			}
			if len(written) > 0 && e.ID <= written[len(written)-1].ID {
				return fmt.Errorf("entry %d has id %d, not above the last (%d)", i, e.ID, written[len(written)-1].ID)
			}
			written = append(written, deepCopy(e))
		}
		return nil
	})
	rev := slices.Clone(written)
	slices.Reverse(rev)
	all := func(f store.AuditFilter) []*store.AuditEntry {
		return get(t, s, func(ctx context.Context, tx store.Tx) ([]*store.AuditEntry, error) { return tx.Audit(ctx, f) })
	}
	checkEqual(t, "audit", rev, all(store.AuditFilter{}))
	checkEqual(t, "audit page 1", rev[:2], all(store.AuditFilter{Limit: 2}))
	checkEqual(t, "audit page 2", rev[2:4], all(store.AuditFilter{Limit: 2, Before: rev[1].ID}))
	checkEqual(t, "audit of alice", []*store.AuditEntry{rev[0], rev[2], rev[4]}, all(store.AuditFilter{Actor: "alice"}))
}

// testSchedules: "PutSchedule inserts or replaces a pipeline's schedule
// state." "Schedule returns a pipeline's schedule state (ErrNotFound)."
// "Schedules lists every schedule state by pipeline."
func testSchedules(t *testing.T, s store.Store) {
	a := &store.Schedule{Pipeline: "nightly", Paused: true, PausedSet: true, Cursor: t0, UpdatedAt: t0.Add(time.Second)}
	b := &store.Schedule{Pipeline: "hourly", Cursor: t0.Add(-time.Hour)}
	update(t, s, func(ctx context.Context, tx store.Tx) error {
		if err := tx.PutSchedule(ctx, deepCopy(a)); err != nil {
			return err
		}
		return tx.PutSchedule(ctx, deepCopy(b))
	})
	checkEqual(t, "schedule", a, get(t, s, func(ctx context.Context, tx store.Tx) (*store.Schedule, error) { return tx.Schedule(ctx, "nightly") }))
	checkEqual(t, "schedules", []*store.Schedule{b, a}, get(t, s, func(ctx context.Context, tx store.Tx) ([]*store.Schedule, error) { return tx.Schedules(ctx) }))
	a2 := &store.Schedule{Pipeline: "nightly", Cursor: t0.Add(24 * time.Hour)}
	update(t, s, func(ctx context.Context, tx store.Tx) error { return tx.PutSchedule(ctx, deepCopy(a2)) })
	checkEqual(t, "replaced schedule", a2, get(t, s, func(ctx context.Context, tx store.Tx) (*store.Schedule, error) { return tx.Schedule(ctx, "nightly") }))
	view(t, s, func(ctx context.Context, tx store.Tx) error {
		_, err := tx.Schedule(ctx, "nope")
		wantNotFound(t, "unknown schedule", err)
		return nil
	})
}

// testMarkFired: "It returns false, and records nothing, when a run for that
// pipeline and time was recorded already: a fire happens once however many
// schedulers try it." Concurrent transactions included.
func testMarkFired(t *testing.T, s store.Store) {
	mark := func(pipeline string, at time.Time, run string) bool {
		var ok bool
		update(t, s, func(ctx context.Context, tx store.Tx) error {
			var err error
			ok, err = tx.MarkFired(ctx, pipeline, at, run)
			return err
		})
		return ok
	}
	if !mark("nightly", t0, "r1") {
		t.Errorf("first fire of nightly at t0: got false")
	}
	if mark("nightly", t0, "r2") {
		t.Errorf("second fire of nightly at t0: got true")
	}
	if !mark("nightly", t0.Add(24*time.Hour), "r3") || !mark("hourly", t0, "r4") {
		t.Errorf("fires at another time or of another pipeline: got false")
	}
	// A rolled-back fire records nothing.
	boom := errors.New("boom")
	err := s.Update(t.Context(), func(tx store.Tx) error {
		if _, err := tx.MarkFired(t.Context(), "weekly", t0, "r5"); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("Update: %v", err)
	}
	if !mark("weekly", t0, "r6") {
		t.Errorf("fire after a rolled-back fire: got false")
	}

	// Concurrent schedulers: exactly one wins each time.
	at := t0.Add(48 * time.Hour)
	var wg sync.WaitGroup
	var mu sync.Mutex
	wins := 0
	for i := range 8 {
		wg.Go(func() {
			err := s.Update(t.Context(), func(tx store.Tx) error {
				ok, err := tx.MarkFired(t.Context(), "nightly", at, fmt.Sprintf("c%d", i))
				if ok {
					mu.Lock()
					wins++
					mu.Unlock()
				}
				return err
			})
			if err != nil {
				t.Errorf("concurrent MarkFired: %v", err)
			}
		})
	}
	wg.Wait()
	if wins != 1 {
		t.Errorf("8 concurrent fires of one time: %d won, want 1", wins)
	}
}

// testLeases: "AcquireLease takes or renews the lease name for holder until
// now+ttl when it is free, expired at or before now, or held by holder
// already." "ReleaseLease gives up the lease name if holder holds it."
func testLeases(t *testing.T, s store.Store) {
	acquire := func(holder string, now time.Time) (store.Lease, bool) {
		var l store.Lease
		var ok bool
		update(t, s, func(ctx context.Context, tx store.Tx) error {
			var err error
			l, ok, err = tx.AcquireLease(ctx, "scheduler", holder, now, 15*time.Second)
			return err
		})
		return l, ok
	}
	check := func(what string, l store.Lease, ok bool, wantHolder string, wantOK bool, wantExpires time.Time) {
		t.Helper()
		if ok != wantOK || l.Holder != wantHolder || l.Name != "scheduler" || !l.ExpiresAt.Equal(wantExpires.Truncate(time.Microsecond)) {
			t.Errorf("%s: got %+v held=%v, want holder %s until %s held=%v", what, l, ok, wantHolder, wantExpires, wantOK)
		}
	}
	l, ok := acquire("a", t0)
	check("free lease", l, ok, "a", true, t0.Add(15*time.Second))
	l, ok = acquire("b", t0.Add(5*time.Second))
	check("held by another", l, ok, "a", false, t0.Add(15*time.Second))
	l, ok = acquire("a", t0.Add(10*time.Second))
	check("renewed", l, ok, "a", true, t0.Add(25*time.Second))
	l, ok = acquire("b", t0.Add(25*time.Second))
	check("expired", l, ok, "b", true, t0.Add(40*time.Second))
	update(t, s, func(ctx context.Context, tx store.Tx) error { return tx.ReleaseLease(ctx, "scheduler", "a") })
	l, ok = acquire("a", t0.Add(26*time.Second))
	check("release by a non-holder does nothing", l, ok, "b", false, t0.Add(40*time.Second))
	update(t, s, func(ctx context.Context, tx store.Tx) error { return tx.ReleaseLease(ctx, "scheduler", "b") })
	l, ok = acquire("a", t0.Add(27*time.Second))
	check("released", l, ok, "a", true, t0.Add(42*time.Second))
}

// testNotify: "Notify publishes an event to Store.Listen once the
// transaction commits (nothing if it rolls back)." Ping answers.
func testNotify(t *testing.T, s store.Store) {
	if err := s.Ping(t.Context()); err != nil {
		t.Fatalf("Ping: %v", err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	got := make(chan string, 16)
	done := make(chan error, 1)
	ready := make(chan struct{})
	var once sync.Once
	go func() {
		done <- s.Listen(ctx, func(ev string) {
			once.Do(func() { close(ready) })
			if ev != "warmup" {
				got <- ev
			}
		})
	}()
	// Listen may need a moment to subscribe: notify until it hears.
	deadline := time.After(10 * time.Second)
	for warm := false; !warm; {
		update(t, s, func(ctx context.Context, tx store.Tx) error { return tx.Notify(ctx, "warmup") })
		select {
		case <-ready:
			warm = true
		case <-time.After(50 * time.Millisecond):
		case <-deadline:
			t.Fatal("Listen heard nothing in 10s")
		}
	}
	err := s.Update(t.Context(), func(tx store.Tx) error {
		if err := tx.Notify(t.Context(), "rolled-back"); err != nil {
			return err
		}
		return errors.New("boom")
	})
	if err == nil {
		t.Fatal("Update returned nil for an error")
	}
	update(t, s, func(ctx context.Context, tx store.Tx) error { return tx.Notify(ctx, "queued") })
	for {
		select {
		case ev := <-got:
			if ev == "rolled-back" {
				t.Fatalf("got the event of a rolled-back transaction")
			}
			if ev != "queued" {
				continue // a store may add events of its own (SQLite's "changed")
			}
		case <-time.After(10 * time.Second):
			t.Fatal("committed event not delivered in 10s")
		}
		break
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Listen after cancel: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Listen did not return after its context ended")
	}
}
