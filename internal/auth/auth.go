// Package auth authenticates and authorizes requests to the dray server: users
// and their argon2id passwords, API tokens (agents use them), login sessions
// with CSRF tokens, roles, the rate limit on failed logins, and the audit log
// of every change.
//
// There is no default account: the first admin comes from the host's CLI or
// from EnsureAdmin on a store with no users. Secrets (passwords, token
// secrets, session cookies) are never stored, logged or audited: the store
// keeps an argon2id hash of a password and SHA-256 hashes of tokens and
// cookies.
package auth

import (
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"sync"
	"time"

	"github.com/dray-dev/dray/internal/store"
)

// Errors callers test with errors.Is. Errors of this package wrap them (or
// store.ErrNotFound for a user or token that does not exist).
var (
	// ErrUnauthenticated: no credentials, or wrong, expired or revoked ones
	// (HTTP 401).
	ErrUnauthenticated = errors.New("unauthenticated")
	// ErrForbidden: the credentials are good but their role does not allow the
	// action, or a cookie-authenticated request lacks its CSRF token (HTTP 403).
	ErrForbidden = errors.New("forbidden")
	// ErrRateLimited: too many failed logins for the user or from the address
	// (HTTP 429). The error is a *RateLimitError that says how long to wait.
	ErrRateLimited = errors.New("too many failed logins")
	// ErrInvalid: bad input, such as a short password or an unknown role (HTTP
	// 400). The error is an *InputError.
	ErrInvalid = errors.New("invalid input")
	// ErrExists: a user with that name exists already (HTTP 409).
	ErrExists = errors.New("already exists")
	// ErrLastAdmin: the change would leave no admin (HTTP 409).
	ErrLastAdmin = errors.New("no admin would be left")
)

// RateLimitError says that logins are blocked and for how long.
type RateLimitError struct {
	// RetryAfter is how long until a login may be tried again (for the
	// Retry-After header).
	RetryAfter time.Duration
}

func (e *RateLimitError) Error() string {
	return fmt.Sprintf("too many failed logins: try again in %s", e.RetryAfter.Round(time.Second))
}

// Unwrap makes errors.Is(err, ErrRateLimited) true.
func (e *RateLimitError) Unwrap() error { return ErrRateLimited }

// InputError is bad input, with the field at fault and a message that says
// what to do.
type InputError struct {
	Field   string // name, password, role, ttl, ...
	Message string
}

func (e *InputError) Error() string { return e.Message }

// Unwrap makes errors.Is(err, ErrInvalid) true.
func (e *InputError) Unwrap() error { return ErrInvalid }

// Config configures a Service.
type Config struct {
	Store  store.Store
	Logger *slog.Logger // default slog.Default()
	// Now is the clock (default time.Now).
	Now func() time.Time
	// SessionTTL is how long a login session lasts (default 12h).
	SessionTTL time.Duration
	// Hash sets the cost of new password hashes; zero fields take the
	// defaults of DefaultHashParams. Tests set a tiny Memory to stay fast.
	Hash HashParams
	// MaxHashers bounds the password hashes computed at once, so a burst of
	// logins cannot take all memory (default GOMAXPROCS).
	MaxHashers int
	// Limits sets the rate limit of failed logins; zero fields take the
	// defaults of DefaultLoginLimits.
	Limits LoginLimits
	// TokenTouch is how often at most a token's LastUsedAt is written
	// (default 1m), so a busy agent does not write on every request.
	TokenTouch time.Duration
}

// Service authenticates requests and manages users, tokens, sessions and the
// audit log over one store. It is safe for concurrent use.
type Service struct {
	cfg     Config
	store   store.Store
	log     *slog.Logger
	limiter *limiter
	hashers chan struct{} // a semaphore: one value for each hash in progress

	dummyOnce sync.Once
	dummy     string // a hash of nothing, to verify against for unknown users
}

// New returns a Service.
func New(cfg Config) *Service {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.SessionTTL <= 0 {
		cfg.SessionTTL = 12 * time.Hour
	}
	cfg.Hash = cfg.Hash.withDefaults()
	if cfg.MaxHashers <= 0 {
		cfg.MaxHashers = runtime.GOMAXPROCS(0)
	}
	cfg.Limits = cfg.Limits.withDefaults()
	if cfg.TokenTouch <= 0 {
		cfg.TokenTouch = time.Minute
	}
	return &Service{
		cfg:     cfg,
		store:   cfg.Store,
		log:     cfg.Logger,
		limiter: newLimiter(cfg.Limits),
		hashers: make(chan struct{}, cfg.MaxHashers),
	}
}

// now is the clock at the store's precision.
func (s *Service) now() time.Time { return s.cfg.Now().UTC().Truncate(time.Microsecond) }

// Kind says how a principal authenticated.
type Kind string

// The kinds of principal.
const (
	KindUser   Kind = "user"   // a login session
	KindToken  Kind = "token"  // an API token
	KindSystem Kind = "system" // this process or the host's CLI
)

// Principal is who makes a request.
type Principal struct {
	// Name is the user's name, "token:<id>" for a token, or "system:<name>";
	// it is the actor in the audit log.
	Name string
	Role Role
	Kind Kind
	// TokenID and TokenName are set for a token.
	TokenID   string
	TokenName string
	// SessionCSRF is the session's CSRF token, for the UI to send back in the
	// X-CSRF-Token header; set for a session.
	SessionCSRF string
	// Addr is the client's address, for the audit log.
	Addr string

	session string // the session's id (the hash of its cookie)
}

// System returns an admin principal for work done by this process or on the
// server's host (such as `dray user create`), named "system:<name>". Never
// build one from anything a request says.
func System(name string) *Principal {
	return &Principal{Name: "system:" + name, Role: RoleAdmin, Kind: KindSystem}
}

// Can reports whether p's role allows need. A nil p can do nothing.
func (p *Principal) Can(need Role) bool { return p != nil && p.Role.Allows(need) }

// Require returns nil when p's role allows need, an error that wraps
// ErrUnauthenticated when p is nil, and one that wraps ErrForbidden otherwise.
func (p *Principal) Require(need Role) error {
	if p == nil {
		return fmt.Errorf("no credentials: %w", ErrUnauthenticated)
	}
	if !p.Role.Allows(need) {
		return fmt.Errorf("%s has role %s; this needs role %s: %w", p.Name, p.Role, need, ErrForbidden)
	}
	return nil
}

func (p *Principal) actor() string {
	if p == nil {
		return ""
	}
	return p.Name
}

func (p *Principal) addr() string {
	if p == nil {
		return ""
	}
	return p.Addr
}
