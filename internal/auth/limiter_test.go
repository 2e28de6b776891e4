package auth

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
)

// loginFrom tries a login from addr and returns its error.
func (f *fixture) loginFrom(name, password, addr string) error {
	_, err := f.svc.Login(f.ctx, name, password, addr)
	return err
}

// retryAfter returns the wait of a rate limit error, failing the test for
// any other error.
func retryAfter(t *testing.T, err error) time.Duration {
	t.Helper()
	var rl *RateLimitError
	if !errors.As(err, &rl) || !errors.Is(err, ErrRateLimited) {
		t.Fatalf("got %v, want a *RateLimitError", err)
	}
	return rl.RetryAfter
}

func TestRateLimitPerUser(t *testing.T) {
	f := newFixture(t)
	f.user("alice", RoleViewer, "alice's password")
	// Five failures from five addresses: the address limit plays no part.
	for i := range 5 {
		err := f.loginFrom("alice", "guess", fmt.Sprintf("203.0.113.%d", i))
		wantErr(t, "failure", err, ErrUnauthenticated)
		if i < 4 {
			f.clock.add(time.Minute) // all five within the window
		}
	}
	// Locked out: the right password does not help, nor does a new address
	// or another spelling of the name.
	for _, name := range []string{"alice", "ALICE"} {
		err := f.loginFrom(name, "alice's password", "203.0.113.99")
		if d := retryAfter(t, err); d != time.Minute {
			t.Errorf("retry after %s, want 1m", d)
		}
	}
	// Other users are not locked out.
	f.user("bob", RoleViewer, "bob's password")
	if err := f.loginFrom("bob", "bob's password", "203.0.113.1"); err != nil {
		t.Fatalf("bob: %v", err)
	}
	f.clock.add(30 * time.Second)
	if d := retryAfter(t, f.loginFrom("alice", "alice's password", "203.0.113.99")); d != 30*time.Second {
		t.Errorf("retry after %s, want 30s", d)
	}
	f.clock.add(30 * time.Second)
	if err := f.loginFrom("alice", "alice's password", "203.0.113.99"); err != nil {
		t.Fatalf("after the lockout: %v", err)
	}

	// The success reset the count: four failures, a success, four more do not
	// lock her out.
	for round := range 2 {
		for range 4 {
			wantErr(t, "failure", f.loginFrom("alice", "guess", "203.0.113.5"), ErrUnauthenticated)
		}
		if err := f.loginFrom("alice", "alice's password", "203.0.113.5"); err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
	}

	// An unknown user is counted like a known one.
	for range 5 {
		wantErr(t, "unknown user", f.loginFrom("mallory", "guess", "203.0.113.6"), ErrUnauthenticated)
	}
	retryAfter(t, f.loginFrom("mallory", "guess", "203.0.113.6"))
}

func TestRateLimitBackoff(t *testing.T) {
	f := newFixture(t)
	f.user("alice", RoleViewer, "alice's password")
	lockOut := func() time.Duration {
		t.Helper()
		for range 5 {
			wantErr(t, "failure", f.loginFrom("alice", "guess", "203.0.113.1"), ErrUnauthenticated)
		}
		return retryAfter(t, f.loginFrom("alice", "alice's password", "203.0.113.1"))
	}
	// Each lockout doubles the block, up to 15 minutes.
	for _, want := range []time.Duration{time.Minute, 2 * time.Minute, 4 * time.Minute, 8 * time.Minute, 15 * time.Minute, 15 * time.Minute} {
		if got := lockOut(); got != want {
			t.Fatalf("lockout of %s, want %s", got, want)
		}
		f.clock.add(want)
	}
	// A quiet window forgets the strikes.
	f.clock.add(15 * time.Minute)
	if got := lockOut(); got != time.Minute {
		t.Fatalf("lockout after a quiet window %s, want 1m", got)
	}
	// Failures older than the window do not count.
	f.clock.add(time.Hour)
	for range 4 {
		wantErr(t, "failure", f.loginFrom("alice", "guess", "203.0.113.1"), ErrUnauthenticated)
	}
	f.clock.add(15 * time.Minute)
	wantErr(t, "failure", f.loginFrom("alice", "guess", "203.0.113.1"), ErrUnauthenticated)
	if err := f.loginFrom("alice", "alice's password", "203.0.113.1"); err != nil {
		t.Fatalf("old failures counted: %v", err)
	}
}

func TestRateLimitPerAddress(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.Limits = LoginLimits{MaxAddrFailures: 8} })
	f.user("alice", RoleViewer, "alice's password")
	// Spraying: one guess at each of many names from one address.
	for i := range 8 {
		wantErr(t, "spray", f.loginFrom(fmt.Sprintf("user%d", i), "guess", "203.0.113.66"), ErrUnauthenticated)
	}
	// The address is blocked, whoever logs in from it, even rightly.
	if d := retryAfter(t, f.loginFrom("alice", "alice's password", "203.0.113.66")); d != time.Minute {
		t.Errorf("retry after %s, want 1m", d)
	}
	// Alice from elsewhere is fine: her own count is untouched.
	if err := f.loginFrom("alice", "alice's password", "203.0.113.1"); err != nil {
		t.Fatal(err)
	}
	// A success does not reset the address's count.
	f.clock.add(time.Minute)
	for i := range 7 {
		wantErr(t, "spray", f.loginFrom(fmt.Sprint("bob", i), "guess", "203.0.113.66"), ErrUnauthenticated)
		if err := f.loginFrom("alice", "alice's password", "203.0.113.66"); err != nil {
			t.Fatal(err)
		}
		f.clock.add(time.Second)
	}
	wantErr(t, "spray", f.loginFrom("carol", "guess", "203.0.113.66"), ErrUnauthenticated)
	retryAfter(t, f.loginFrom("alice", "alice's password", "203.0.113.66"))
}

func TestRateLimitConcurrent(t *testing.T) {
	// A burst of guesses at once gets no more tries than one after another.
	f := newFixture(t)
	f.user("alice", RoleViewer, "alice's password")
	var wg sync.WaitGroup
	errs := make(chan error, 40)
	for i := range 40 {
		wg.Go(func() { errs <- f.loginFrom("alice", fmt.Sprintf("guess %d", i), "203.0.113.1") })
	}
	wg.Wait()
	close(errs)
	var tried int
	for err := range errs {
		switch {
		case errors.Is(err, ErrUnauthenticated):
			tried++
		case errors.Is(err, ErrRateLimited):
		default:
			t.Fatalf("unexpected: %v", err)
		}
	}
	if tried > 5 {
		t.Errorf("%d guesses checked, want at most 5", tried)
	}
}

func TestRateLimitNotCountingErrors(t *testing.T) {
	// A canceled login is not a failed one.
	f := newFixture(t)
	f.user("alice", RoleViewer, "alice's password")
	ctx, cancel := context.WithCancel(f.ctx)
	cancel()
	for range 10 {
		if _, err := f.svc.Login(ctx, "alice", "alice's password", "203.0.113.1"); err == nil || errors.Is(err, ErrUnauthenticated) {
			t.Fatalf("canceled login: %v", err)
		}
	}
	if err := f.loginFrom("alice", "alice's password", "203.0.113.1"); err != nil {
		t.Fatal(err)
	}
}

func TestLimiterPrunes(t *testing.T) {
	l := newLimiter(DefaultLoginLimits())
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := range 2 * pruneAt {
		name := fmt.Sprint("u", i)
		if err := l.begin(name, "a", now); err != nil {
			t.Fatal(err)
		}
		l.end(name, "a", loginOK, now)
	}
	l.begin("x", "b", now.Add(time.Hour))
	l.end("x", "b", loginOK, now.Add(time.Hour))
	if n := len(l.users) + len(l.addrs); n > 4 {
		t.Errorf("%d buckets after pruning, want the few in use", n)
	}
}

func TestRateLimitInvalidNames(t *testing.T) {
	// Names no user can have share one counter.
	f := newFixture(t)
	f.user("alice", RoleViewer, "alice's password")
	for i := range 5 {
		wantErr(t, "invalid name", f.loginFrom(fmt.Sprintf("Bad Name %d", i), "guess", fmt.Sprint("203.0.113.", i)), ErrUnauthenticated)
	}
	retryAfter(t, f.loginFrom("Yet Another!", "guess", "203.0.113.50"))
	if err := f.loginFrom("alice", "alice's password", "203.0.113.50"); err != nil {
		t.Fatal(err)
	}
	if n := len(f.svc.limiter.users); n != 2 {
		t.Errorf("%d user counters, want 2 (alice and the invalid names)", n)
	}
}

func TestRateLimitChangePassword(t *testing.T) {
	// Guessing the current password through a session is limited too.
	f := newFixture(t)
	f.user("alice", RoleViewer, "alice's password")
	p := f.login("alice", "alice's password").Principal
	for range 5 {
		wantErr(t, "wrong current", f.svc.ChangePassword(f.ctx, p, "guess", "a new password"), ErrForbidden)
	}
	retryAfter(t, f.svc.ChangePassword(f.ctx, p, "alice's password", "a new password"))
	retryAfter(t, f.loginFrom("alice", "alice's password", "203.0.113.1"))
	f.clock.add(time.Minute)
	if err := f.svc.ChangePassword(f.ctx, p, "alice's password", "a new password"); err != nil {
		t.Fatal(err)
	}
}
