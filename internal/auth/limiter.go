package auth

import (
	"sync"
	"time"
)

// LoginLimits is the rate limit of failed logins. Failures count per user
// name (whether or not the user exists) and per client address. When either
// reaches its maximum within Window, logins for that name, or from that
// address, are blocked for Lockout; each further lockout before the counter
// is forgotten doubles the time, up to MaxLockout.
type LoginLimits struct {
	Window          time.Duration // how long a failure counts (default 15m)
	MaxUserFailures int           // failures of one user name (default 5)
	MaxAddrFailures int           // failures from one address (default 20)
	Lockout         time.Duration // first block (default 1m)
	MaxLockout      time.Duration // longest block (default 15m)
}

// DefaultLoginLimits returns the default rate limit of failed logins. An
// address may fail more often than a user name because many people may
// share one address (an office's NAT).
func DefaultLoginLimits() LoginLimits {
	return LoginLimits{Window: 15 * time.Minute, MaxUserFailures: 5, MaxAddrFailures: 20,
		Lockout: time.Minute, MaxLockout: 15 * time.Minute}
}

func (l LoginLimits) withDefaults() LoginLimits {
	d := DefaultLoginLimits()
	if l.Window <= 0 {
		l.Window = d.Window
	}
	if l.MaxUserFailures <= 0 {
		l.MaxUserFailures = d.MaxUserFailures
	}
	if l.MaxAddrFailures <= 0 {
		l.MaxAddrFailures = d.MaxAddrFailures
	}
	if l.Lockout <= 0 {
		l.Lockout = d.Lockout
	}
	if l.MaxLockout < l.Lockout {
		l.MaxLockout = max(d.MaxLockout, l.Lockout)
	}
	return l
}

// limiter counts failed logins in memory. A login reserves a slot with begin
// before it checks the password and settles it with end, so a burst of
// concurrent guesses cannot run past the limit before their failures are
// counted.
type limiter struct {
	limits LoginLimits

	mu        sync.Mutex
	users     map[string]*bucket
	addrs     map[string]*bucket
	lastPrune time.Time
}

// bucket is the failures of one user name or address.
type bucket struct {
	failures     []time.Time // within the window, oldest first
	pending      int         // logins begun and not ended
	blockedUntil time.Time
	strikes      int // lockouts since the failures were last forgotten
}

// pruneAt is how many buckets a map holds before forgotten ones are swept.
const pruneAt = 1024

func newLimiter(l LoginLimits) *limiter {
	return &limiter{limits: l, users: map[string]*bucket{}, addrs: map[string]*bucket{}}
}

// forget drops failures that left the window; a bucket with none, whose last
// block ended a window ago, forgets its strikes too.
func (b *bucket) forget(now time.Time, window time.Duration) {
	i := 0
	for i < len(b.failures) && !now.Before(b.failures[i].Add(window)) {
		i++
	}
	b.failures = b.failures[i:]
	if len(b.failures) == 0 && !now.Before(b.blockedUntil.Add(window)) {
		b.strikes = 0
	}
}

// wait returns how long b blocks a new login, or 0.
func (b *bucket) wait(now time.Time, max int) time.Duration {
	if now.Before(b.blockedUntil) {
		return b.blockedUntil.Sub(now)
	}
	if len(b.failures)+b.pending >= max {
		// Logins in progress could reach the limit: wait for them.
		return time.Second
	}
	return 0
}

func (b *bucket) idle(now time.Time, window time.Duration) bool {
	b.forget(now, window)
	return b.pending == 0 && len(b.failures) == 0 && b.strikes == 0 && !now.Before(b.blockedUntil)
}

func get(m map[string]*bucket, key string) *bucket {
	b := m[key]
	if b == nil {
		b = &bucket{}
		m[key] = b
	}
	return b
}

// begin reserves a login for user from addr, or returns a *RateLimitError.
func (l *limiter) begin(user, addr string, now time.Time) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.prune(now)
	u, a := get(l.users, user), get(l.addrs, addr)
	u.forget(now, l.limits.Window)
	a.forget(now, l.limits.Window)
	if d := max(u.wait(now, l.limits.MaxUserFailures), a.wait(now, l.limits.MaxAddrFailures)); d > 0 {
		return &RateLimitError{RetryAfter: d}
	}
	u.pending++
	a.pending++
	return nil
}

// lockout says that a failure blocked a user name or an address.
type lockout struct {
	user     bool // else the address
	key      string
	failures int
	until    time.Time
}

// outcome is how a login ended.
type outcome int

const (
	loginOK     outcome = iota // the password was right
	loginFailed                // wrong user name or password
	loginError                 // neither: a database error, a canceled request
)

// end settles a login begun with begin. A success forgets the user's
// failures (not the address's: one good account must not let an address
// guess others' passwords without limit). A failure counts for both and
// returns the lockouts it caused. An error counts for neither.
func (l *limiter) end(user, addr string, o outcome, now time.Time) []lockout {
	l.mu.Lock()
	defer l.mu.Unlock()
	u, a := get(l.users, user), get(l.addrs, addr)
	u.pending--
	a.pending--
	switch o {
	case loginOK:
		u.failures, u.strikes, u.blockedUntil = nil, 0, time.Time{}
		return nil
	case loginError:
		return nil
	}
	var out []lockout
	for _, x := range []struct {
		b    *bucket
		user bool
		key  string
		max  int
	}{{u, true, user, l.limits.MaxUserFailures}, {a, false, addr, l.limits.MaxAddrFailures}} {
		b := x.b
		b.forget(now, l.limits.Window)
		b.failures = append(b.failures, now)
		if len(b.failures) < x.max {
			continue
		}
		d := l.limits.Lockout << min(b.strikes, 20)
		if d > l.limits.MaxLockout || d <= 0 {
			d = l.limits.MaxLockout
		}
		b.strikes++
		b.blockedUntil = now.Add(d)
		out = append(out, lockout{user: x.user, key: x.key, failures: len(b.failures), until: b.blockedUntil})
		// The block counts now; after it a name or address gets its full
		// number of tries again, and one more lockout doubles the block.
		b.failures = nil
	}
	return out
}

// prune drops idle buckets when the maps have grown, at most once a minute.
// Only failures inside the window and blocks in force are kept, and both are
// bounded by how fast passwords can be hashed.
func (l *limiter) prune(now time.Time) {
	if len(l.users)+len(l.addrs) < pruneAt || now.Sub(l.lastPrune) < time.Minute {
		return
	}
	l.lastPrune = now
	for _, m := range []map[string]*bucket{l.users, l.addrs} {
		for k, b := range m {
			if b.idle(now, l.limits.Window) {
				delete(m, k)
			}
		}
	}
}
