package auth

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/dray-dev/dray/internal/store"
)

func TestSessionLoginLogout(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.SessionTTL = 2 * time.Hour })
	f.user("alice", RoleEditor, "alice's password")
	res := f.login("Alice", "alice's password") // names are lower case; a login folds
	p := res.Principal
	if p.Name != "alice" || p.Role != RoleEditor || p.Kind != KindUser || p.SessionCSRF == "" || p.Addr != "192.0.2.1" {
		t.Fatalf("principal %+v", p)
	}
	if want := f.clock.now().Add(2 * time.Hour); !res.ExpiresAt.Equal(want) {
		t.Errorf("expires at %s, want %s", res.ExpiresAt, want)
	}
	got, err := f.svc.Authenticate(f.ctx, request(http.MethodGet, "", res.Cookie, ""))
	if err != nil {
		t.Fatal(err)
	}
	if got.Name != "alice" || got.Role != RoleEditor || got.SessionCSRF != p.SessionCSRF || got.Addr != "198.51.100.7" {
		t.Errorf("authenticated %+v", got)
	}

	// A second session; logging out of the first leaves it.
	res2 := f.login("alice", "alice's password")
	if err := f.svc.Logout(f.ctx, got); err != nil {
		t.Fatal(err)
	}
	_, err = f.svc.Authenticate(f.ctx, request(http.MethodGet, "", res.Cookie, ""))
	wantErr(t, "after logout", err, ErrUnauthenticated)
	if _, err := f.svc.Authenticate(f.ctx, request(http.MethodGet, "", res2.Cookie, "")); err != nil {
		t.Fatalf("other session after logout: %v", err)
	}
	tokP := &Principal{Name: "token:x", Role: RoleAdmin, Kind: KindToken}
	wantErr(t, "logout of a token", f.svc.Logout(f.ctx, tokP), ErrUnauthenticated)

	// Expiry.
	f.clock.add(2*time.Hour - time.Microsecond)
	if _, err := f.svc.Authenticate(f.ctx, request(http.MethodGet, "", res2.Cookie, "")); err != nil {
		t.Fatalf("just before expiry: %v", err)
	}
	f.clock.add(time.Microsecond)
	_, err = f.svc.Authenticate(f.ctx, request(http.MethodGet, "", res2.Cookie, ""))
	wantErr(t, "at expiry", err, ErrUnauthenticated)

	res3 := f.login("alice", "alice's password") // not expired
	n, err := f.svc.SweepSessions(f.ctx)
	if err != nil || n != 1 {
		t.Fatalf("sweep = %d, %v; want 1 expired session", n, err)
	}
	if _, err := f.svc.Authenticate(f.ctx, request(http.MethodGet, "", res3.Cookie, "")); err != nil {
		t.Fatalf("live session after sweep: %v", err)
	}
}

func TestLoginWrong(t *testing.T) {
	f := newFixture(t)
	f.user("alice", RoleViewer, "alice's password")
	var msgs []string
	for _, tt := range []struct{ name, password string }{
		{"alice", "wrong password"},
		{"alice", ""},
		{"mallory", "alice's password"},
		{"", ""},
		{"Not A Name!", "alice's password"},
	} {
		_, err := f.svc.Login(f.ctx, tt.name, tt.password, "192.0.2.1")
		wantErr(t, "login "+tt.name, err, ErrUnauthenticated)
		msgs = append(msgs, err.Error())
	}
	// The error does not tell an unknown user from a wrong password.
	for _, m := range msgs[1:] {
		if m != msgs[0] {
			t.Errorf("login errors differ: %q and %q", msgs[0], m)
		}
	}
	// A user unknown and a user known are checked against a hash of the same
	// cost, so a login takes as long either way.
	dummy, _, _, err := parsePHC(f.svc.dummyHash())
	if err != nil {
		t.Fatal(err)
	}
	if dummy != f.svc.cfg.Hash {
		t.Errorf("dummy hash parameters %+v, want %+v", dummy, f.svc.cfg.Hash)
	}
	if strings.Contains(f.logs.String(), "unreadable") {
		t.Errorf("a login checked against an unreadable hash:\n%s", f.logs)
	}
	// An unknown user's login waits for a hasher like a known one's: with
	// every hasher busy, it cannot answer before its context ends.
	for range cap(f.svc.hashers) {
		f.svc.hashers <- struct{}{}
	}
	ctx, cancel := context.WithTimeout(f.ctx, 20*time.Millisecond)
	defer cancel()
	for _, name := range []string{"alice", "mallory", "Not A Name!"} {
		_, err := f.svc.Login(ctx, name, "wrong password", "192.0.2.2")
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("login of %q with no hasher free: %v, want it to wait for one", name, err)
		}
	}
}

func TestCSRF(t *testing.T) {
	f := newFixture(t)
	f.user("alice", RoleOperator, "alice's password")
	res := f.login("alice", "alice's password")
	csrf := res.Principal.SessionCSRF
	bearer, _ := f.token("ci", RoleOperator, 0)
	tests := []struct {
		name           string
		method         string
		bearer, cookie string
		csrf           string
		err            error
	}{
		{"cookie GET", http.MethodGet, "", res.Cookie, "", nil},
		{"cookie HEAD", http.MethodHead, "", res.Cookie, "", nil},
		{"cookie OPTIONS", http.MethodOptions, "", res.Cookie, "", nil},
		{"cookie POST without", http.MethodPost, "", res.Cookie, "", ErrForbidden},
		{"cookie POST wrong", http.MethodPost, "", res.Cookie, csrf + "x", ErrForbidden},
		{"cookie POST other", http.MethodPost, "", res.Cookie, res.Cookie, ErrForbidden},
		{"cookie POST right", http.MethodPost, "", res.Cookie, csrf, nil},
		{"cookie PUT without", http.MethodPut, "", res.Cookie, "", ErrForbidden},
		{"cookie PATCH without", http.MethodPatch, "", res.Cookie, "", ErrForbidden},
		{"cookie DELETE without", http.MethodDelete, "", res.Cookie, "", ErrForbidden},
		{"cookie DELETE right", http.MethodDelete, "", res.Cookie, csrf, nil},
		{"cookie odd method", "PROPFIND", "", res.Cookie, "", ErrForbidden},
		{"bearer POST", http.MethodPost, bearer, "", "", nil},
		{"bearer DELETE", http.MethodDelete, bearer, "", "", nil},
		{"bad bearer beats a cookie", http.MethodGet, "dray_nope", res.Cookie, "", ErrUnauthenticated},
		{"nothing", http.MethodGet, "", "", "", ErrUnauthenticated},
		{"unknown cookie", http.MethodGet, "", "not-a-session", "", ErrUnauthenticated},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := f.svc.Authenticate(f.ctx, request(tt.method, tt.bearer, tt.cookie, tt.csrf))
			wantErr(t, "authenticate", err, tt.err)
		})
	}
}

func TestAuthorizationHeader(t *testing.T) {
	f := newFixture(t)
	secret, _ := f.token("ci", RoleViewer, 0)
	tests := []struct {
		header string
		err    error
	}{
		{"Bearer " + secret, nil},
		{"bearer " + secret, nil},
		{"Bearer  " + secret + " ", nil},
		{"Basic " + secret, ErrUnauthenticated},
		{"Bearer", ErrUnauthenticated},
		{"Bearer ", ErrUnauthenticated},
		{secret, ErrUnauthenticated},
	}
	for _, tt := range tests {
		r := request(http.MethodGet, "", "", "")
		r.Header.Set("Authorization", tt.header)
		_, err := f.svc.Authenticate(f.ctx, r)
		wantErr(t, "Authorization: "+tt.header, err, tt.err)
	}
}

func TestSessionCookie(t *testing.T) {
	exp := time.Date(2026, 11, 23, 22, 0, 0, 0, time.UTC)
	for _, secure := range []bool{false, true} {
		c := SessionCookie("v", secure, exp)
		if c.Name != SessionCookieName || c.Value != "v" || c.Path != "/" || !c.HttpOnly || c.Secure != secure ||
			c.SameSite != http.SameSiteLaxMode || !c.Expires.Equal(exp) || c.Domain != "" {
			t.Errorf("SessionCookie(secure=%v) = %+v", secure, c)
		}
		if err := c.Valid(); err != nil {
			t.Error(err)
		}
		clear := ClearSessionCookie(secure)
		if clear.Name != SessionCookieName || clear.Value != "" || clear.MaxAge >= 0 || clear.Secure != secure || clear.Path != "/" {
			t.Errorf("ClearSessionCookie(%v) = %+v", secure, clear)
		}
	}
}

func TestRehashOnLogin(t *testing.T) {
	f := newFixture(t)
	f.user("alice", RoleViewer, "alice's password")
	// The same store, served with a higher cost.
	cfg := f.cfg
	cfg.Hash = HashParams{Memory: 128, Time: 2, Threads: 1}
	svc := New(cfg)
	if _, err := svc.Login(f.ctx, "alice", "alice's password", "192.0.2.1"); err != nil {
		t.Fatal(err)
	}
	var hash string
	if err := f.store.View(f.ctx, func(tx store.Tx) error {
		u, err := tx.User(f.ctx, "alice")
		if u != nil {
			hash = u.PasswordHash
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	p, _, _, err := parsePHC(hash)
	if err != nil || p.Memory != 128 || p.Time != 2 {
		t.Fatalf("hash after login = %s (%v), want m=128,t=2", hash, err)
	}
	// Both services still log her in.
	f.login("alice", "alice's password")
}
