package auth

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/dray-dev/dray/internal/store"
	"github.com/dray-dev/dray/internal/store/sqlite"
)

// fastHash keeps tests fast: a real argon2id hash at the smallest cost.
var fastHash = HashParams{Memory: 64, Time: 1, Threads: 1}

// clock is a settable time.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// syncBuffer collects log output from many goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

type fixture struct {
	t     *testing.T
	ctx   context.Context
	svc   *Service
	store *sqlite.Store
	clock *clock
	logs  *syncBuffer
	dir   string
	cfg   Config
}

func newFixture(t *testing.T, tune ...func(*Config)) *fixture {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	st, err := sqlite.Open(ctx, filepath.Join(dir, "dray.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	c := &clock{t: time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)}
	logs := &syncBuffer{}
	cfg := Config{
		Store:  st,
		Now:    c.now,
		Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Hash:   fastHash,
	}
	for _, f := range tune {
		f(&cfg)
	}
	return &fixture{t: t, ctx: ctx, svc: New(cfg), store: st, clock: c, logs: logs, dir: dir, cfg: cfg}
}

// user creates a user as the system.
func (f *fixture) user(name string, role Role, password string) {
	f.t.Helper()
	if _, err := f.svc.CreateUser(f.ctx, System("test"), name, role, password); err != nil {
		f.t.Fatal(err)
	}
}

// login logs in and fails the test on an error.
func (f *fixture) login(name, password string) *LoginResult {
	f.t.Helper()
	res, err := f.svc.Login(f.ctx, name, password, "192.0.2.1")
	if err != nil {
		f.t.Fatalf("login %s: %v", name, err)
	}
	return res
}

// token creates a token as the system.
func (f *fixture) token(name string, role Role, ttl time.Duration) (string, TokenInfo) {
	f.t.Helper()
	secret, info, err := f.svc.CreateToken(f.ctx, System("test"), name, role, ttl)
	if err != nil {
		f.t.Fatal(err)
	}
	return secret, info
}

// request builds a request with a bearer token, a session cookie, a CSRF
// header: whichever is not "".
func request(method, bearer, cookie, csrf string) *http.Request {
	r := httptest.NewRequest(method, "/api/v1/runs", nil)
	r.RemoteAddr = "198.51.100.7:41234"
	if bearer != "" {
		r.Header.Set("Authorization", "Bearer "+bearer)
	}
	if cookie != "" {
		r.AddCookie(SessionCookie(cookie, false, time.Time{}))
	}
	if csrf != "" {
		r.Header.Set(CSRFHeader, csrf)
	}
	return r
}

// audit returns every audit entry, oldest first.
func (f *fixture) audit() []*store.AuditEntry {
	f.t.Helper()
	var out []*store.AuditEntry
	if err := f.store.View(f.ctx, func(tx store.Tx) error {
		var err error
		out, err = tx.Audit(f.ctx, store.AuditFilter{})
		return err
	}); err != nil {
		f.t.Fatal(err)
	}
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return out
}

// wantErr fails unless err is target (nil: no error).
func wantErr(t *testing.T, what string, err, target error) {
	t.Helper()
	switch {
	case target == nil && err != nil:
		t.Fatalf("%s: %v", what, err)
	case target != nil && !errors.Is(err, target):
		t.Fatalf("%s: got error %v, want %v", what, err, target)
	}
}

func TestPrincipalRequire(t *testing.T) {
	var nobody *Principal
	wantErr(t, "nil principal", nobody.Require(RoleViewer), ErrUnauthenticated)
	if nobody.Can(RoleViewer) {
		t.Error("a nil principal can view")
	}
	op := &Principal{Name: "olga", Role: RoleOperator, Kind: KindUser}
	wantErr(t, "operator as viewer", op.Require(RoleViewer), nil)
	wantErr(t, "operator as admin", op.Require(RoleAdmin), ErrForbidden)
	agent := &Principal{Name: "token:abc", Role: RoleAgent, Kind: KindToken}
	wantErr(t, "agent as viewer", agent.Require(RoleViewer), ErrForbidden)
	wantErr(t, "agent as agent", agent.Require(RoleAgent), nil)
	sys := System("cli")
	if sys.Name != "system:cli" || sys.Role != RoleAdmin || sys.Kind != KindSystem {
		t.Errorf("System(cli) = %+v", sys)
	}
}
