package server_test

import (
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/dray-dev/dray/internal/auth"
)

// harmlessPath fills a route's path values with ones no fixture has, so
// that an allowed call changes nothing.
func harmlessPath(path string) string {
	return regexp.MustCompile(`\{[^}]+\}`).ReplaceAllString(path, "nope")
}

// TestAuthorizationMatrix calls every route with every kind of credentials:
// none, a malformed token, a revoked one, an expired one, and a token of
// every role. Missing or bad credentials are 401 on every route that needs
// credentials; a role the route does not allow is 403; an allowed role gets
// past authorization. Every 401 and 403 is the JSON error.
func TestAuthorizationMatrix(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	revoked, revokedInfo := f.newToken("revoked", auth.RoleAdmin, 0)
	if err := f.auth.RevokeToken(f.ctx, auth.System("test"), revokedInfo.ID); err != nil {
		t.Fatal(err)
	}
	expired, _ := f.newToken("expired", auth.RoleAdmin, time.Minute)
	f.authClock.advance(2 * time.Minute)

	type credential struct {
		name  string
		token string
		role  auth.Role // "" for credentials that are not good
		// user, for a login session (with its CSRF token) instead of a token.
		user, password string
		header         map[string]string
	}
	creds := []credential{
		{name: "none"},
		{name: "basic auth", header: map[string]string{"Authorization": "Basic YWRtaW46YWRtaW4="}},
		{name: "empty bearer", header: map[string]string{"Authorization": "Bearer "}},
		{name: "malformed", token: "not-a-dray-token"},
		// The shape of a token, but no token of the store.
		{name: "unknown", token: "dray_000000000000_" + strings.Repeat("A", 43)},
		{name: "revoked", token: revoked},
		{name: "expired", token: expired},
	}
	for _, role := range auth.Roles() {
		creds = append(creds, credential{name: string(role), token: f.tokens[role], role: role})
	}
	if _, err := f.auth.CreateUser(f.ctx, auth.System("test"), "vera", auth.RoleViewer, "vera-password-1"); err != nil {
		t.Fatal(err)
	}
	creds = append(creds,
		credential{name: "viewer session", role: auth.RoleViewer, user: "vera", password: "vera-password-1"},
		credential{name: "admin session", role: auth.RoleAdmin, user: adminUser, password: adminPassword})

	// Sessions log in once each (logout ends one: it gets a new one after).
	sessions := map[string]session{}
	for _, c := range creds {
		if c.user != "" {
			sessions[c.user] = f.login(t, c.user, c.password)
		}
	}

	before := f.count(t)
	for _, rt := range sortedRoutes(f.srv.Routes()) {
		for _, c := range creds {
			t.Run(rt.Method+" "+rt.Path+" as "+c.name, func(t *testing.T) {
				rq := req{method: rt.Method, path: harmlessPath(rt.Path), token: c.token, header: c.header}
				if rt.Method == "POST" {
					rq.body = "{}"
				}
				if c.user != "" {
					sess := sessions[c.user]
					rq.cookie, rq.csrf = sess.cookie, sess.csrf
				}
				r := f.send(t, rq)
				if c.user != "" && rt.Path == "/api/v1/auth/logout" && r.status == http.StatusNoContent {
					sessions[c.user] = f.login(t, c.user, c.password)
				}
				switch {
				case rt.Role == "none":
					if r.status == http.StatusUnauthorized || r.status == http.StatusForbidden {
						t.Fatalf("a public route answered %s", r)
					}
				case c.role == "":
					if e := wantError(t, r, http.StatusUnauthorized, "unauthenticated"); c.token != "" && strings.Contains(e.Message, c.token) {
						t.Errorf("the 401 shows the token: %s", e.Message)
					}
				case rt.Role == "any" || c.role.Allows(auth.Role(rt.Role)):
					if r.status == http.StatusUnauthorized || r.status == http.StatusForbidden {
						t.Fatalf("role %s may call a %s route, but got %s", c.role, rt.Role, r)
					}
					if r.status >= 500 {
						t.Fatalf("an allowed call failed: %s", r)
					}
				default:
					wantError(t, r, http.StatusForbidden, "forbidden")
				}
			})
		}
	}
	after := f.count(t)
	// Logging out and in again is audited; nothing else may have changed.
	after.audit -= 2 * 2
	if after != before {
		t.Errorf("the harmless calls changed the store: before %+v, after %+v", before, after)
	}
}
