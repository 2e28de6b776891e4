package server_test

import (
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"github.com/dray-dev/dray/internal/auth"
	"github.com/dray-dev/dray/internal/server"
)

// sessionCookie returns the session cookie an answer sets.
func sessionCookie(t *testing.T, r *response) *http.Cookie {
	t.Helper()
	for _, c := range (&http.Response{Header: r.header}).Cookies() {
		if c.Name == auth.SessionCookieName {
			return c
		}
	}
	t.Fatalf("no %s cookie in %v", auth.SessionCookieName, r.header.Values("Set-Cookie"))
	return nil
}

type meDoc struct {
	Name      string `json:"name"`
	Role      string `json:"role"`
	Kind      string `json:"kind"`
	CSRFToken string `json:"csrf_token"`
}

func TestSessions(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	if _, err := f.auth.CreateUser(f.ctx, auth.System("test"), "olga", auth.RoleOperator, "olga-password-1"); err != nil {
		t.Fatal(err)
	}
	login := func(t *testing.T, base, user, password string) *response {
		t.Helper()
		return sendTo(t, base, req{method: "POST", path: "/api/v1/auth/login", body: map[string]string{"username": user, "password": password}})
	}

	// Login sets an HttpOnly SameSite cookie, not Secure over plain HTTP.
	r := login(t, f.ts.URL, "olga", "olga-password-1")
	var me meDoc
	wantJSON(t, r, http.StatusOK, &me)
	if me.Name != "olga" || me.Role != "operator" || me.Kind != "user" || me.CSRFToken == "" {
		t.Fatalf("login answered %+v", me)
	}
	c := sessionCookie(t, r)
	if !c.HttpOnly || c.SameSite == http.SameSiteDefaultMode || c.SameSite == http.SameSiteNoneMode || c.Secure || c.Path != "/" || c.Value == "" {
		t.Errorf("session cookie %+v: want HttpOnly, SameSite Lax or Strict, not Secure, Path /", c)
	}
	if c.Expires.IsZero() {
		t.Errorf("session cookie %+v does not expire", c)
	}
	cookie := &http.Cookie{Name: c.Name, Value: c.Value}

	// With Config.Secure the cookie is Secure.
	cfg := f.cfg
	cfg.Secure = true
	secure := httptest.NewServer(server.New(cfg))
	defer secure.Close()
	if sc := sessionCookie(t, login(t, secure.URL, "olga", "olga-password-1")); !sc.Secure || !sc.HttpOnly {
		t.Errorf("with Secure, session cookie %+v: want Secure and HttpOnly", sc)
	}

	// The cookie authenticates reads.
	var got meDoc
	wantJSON(t, f.send(t, req{method: "GET", path: "/api/v1/auth/me", cookie: cookie}), http.StatusOK, &got)
	if got.Name != "olga" || got.Kind != "user" || got.CSRFToken != me.CSRFToken {
		t.Errorf("me with the cookie: %+v", got)
	}
	wantJSON(t, f.send(t, req{method: "GET", path: "/api/v1/runs", cookie: cookie}), http.StatusOK, nil)
	// An operator may not list users.
	wantError(t, f.send(t, req{method: "GET", path: "/api/v1/users", cookie: cookie}), http.StatusForbidden, "forbidden")

	// A change needs the CSRF token.
	before := f.count(t)
	for _, csrf := range []string{"", "wrong", me.CSRFToken + "x"} {
		r := f.send(t, req{method: "POST", path: "/api/v1/runs", cookie: cookie, csrf: csrf, body: map[string]any{"pipeline": "quick"}})
		wantError(t, r, http.StatusForbidden, "forbidden")
		r = f.send(t, req{method: "POST", path: "/api/v1/auth/logout", cookie: cookie, csrf: csrf})
		wantError(t, r, http.StatusForbidden, "forbidden")
	}
	if after := f.count(t); after != before {
		t.Errorf("requests without the CSRF token changed the store: %+v, then %+v", before, after)
	}
	var run runDoc
	r = f.send(t, req{method: "POST", path: "/api/v1/runs", cookie: cookie, csrf: me.CSRFToken, body: map[string]any{"pipeline": "quick"}})
	wantJSON(t, r, http.StatusCreated, &run)
	entries := findAudit(f.audit(t, ""), "run.trigger", run.ID)
	if len(entries) != 1 || entries[0].Actor != "olga" {
		t.Errorf("audit of the trigger: %+v", entries)
	}
	f.waitRun(t, run.ID, f.tokens[auth.RoleViewer])

	// A bearer token needs no CSRF token, and a bad one is not rescued by a
	// good cookie.
	wantJSON(t, f.post(t, "/api/v1/schedules/nightly/pause", f.tokens[auth.RoleOperator], nil), http.StatusOK, nil)
	r = f.send(t, req{method: "GET", path: "/api/v1/auth/me", cookie: cookie, token: "not-a-token"})
	wantError(t, r, http.StatusUnauthorized, "unauthenticated")

	// Logout ends the session and clears the cookie.
	r = f.send(t, req{method: "POST", path: "/api/v1/auth/logout", cookie: cookie, csrf: me.CSRFToken})
	if r.status != http.StatusNoContent {
		t.Fatalf("logout: %s", r)
	}
	if cleared := sessionCookie(t, r); cleared.Value != "" || cleared.MaxAge >= 0 {
		t.Errorf("logout set cookie %+v: want it cleared", cleared)
	}
	wantError(t, f.send(t, req{method: "GET", path: "/api/v1/auth/me", cookie: cookie}), http.StatusUnauthorized, "unauthenticated")
	r = f.send(t, req{method: "POST", path: "/api/v1/auth/logout", cookie: cookie, csrf: me.CSRFToken})
	wantError(t, r, http.StatusUnauthorized, "unauthenticated")
	if n := len(findAudit(f.audit(t, ""), "auth.logout", "user:olga")); n != 1 {
		t.Errorf("%d auth.logout entries, want 1", n)
	}

	// A token has no session to end.
	e := wantError(t, f.post(t, "/api/v1/auth/logout", f.tokens[auth.RoleViewer], nil), http.StatusBadRequest, "bad_request")
	t.Logf("logout with a token: %s", e.Message)

	// A session expires.
	s := f.login(t, "olga", "olga-password-1")
	wantJSON(t, f.send(t, req{method: "GET", path: "/api/v1/auth/me", cookie: s.cookie}), http.StatusOK, nil)
	f.authClock.advance(13 * time.Hour)
	wantError(t, f.send(t, req{method: "GET", path: "/api/v1/auth/me", cookie: s.cookie}), http.StatusUnauthorized, "unauthenticated")
	// An unknown cookie is no session.
	bogus := &http.Cookie{Name: auth.SessionCookieName, Value: "bogus"}
	wantError(t, f.send(t, req{method: "GET", path: "/api/v1/auth/me", cookie: bogus}), http.StatusUnauthorized, "unauthenticated")

	// A wrong password, or an unknown user, is a 401 that sets no cookie.
	for _, who := range []struct{ user, password string }{{"olga", "wrong-password"}, {"nobody", "wrong-password"}} {
		r := login(t, f.ts.URL, who.user, who.password)
		wantError(t, r, http.StatusUnauthorized, "unauthenticated")
		if len(r.header.Values("Set-Cookie")) != 0 {
			t.Errorf("a failed login set cookies %v", r.header.Values("Set-Cookie"))
		}
	}

	// Repeated failures lock the user name out, the right password too, with
	// Retry-After (the fixture allows 3 failures; olga failed once above).
	for range 2 {
		wantError(t, login(t, f.ts.URL, "olga", "wrong-password"), http.StatusUnauthorized, "unauthenticated")
	}
	for _, password := range []string{"wrong-password", "olga-password-1"} {
		r := login(t, f.ts.URL, "olga", password)
		wantError(t, r, http.StatusTooManyRequests, "rate_limited")
		secs, err := strconv.Atoi(r.header.Get("Retry-After"))
		if err != nil || secs <= 0 || secs > 61 {
			t.Errorf("Retry-After %q: want whole seconds up to the lockout (1m)", r.header.Get("Retry-After"))
		}
	}
	if n := len(findAudit(f.audit(t, ""), "auth.lockout", "user:olga")); n != 1 {
		t.Errorf("%d auth.lockout entries for olga, want 1", n)
	}
	// Other users may still log in.
	f.login(t, adminUser, adminPassword)
	// After the lockout, olga may again.
	f.authClock.advance(2 * time.Minute)
	wantJSON(t, login(t, f.ts.URL, "olga", "olga-password-1"), http.StatusOK, nil)
}
