package server_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/dray-dev/dray/internal/auth"
)

func TestUsers(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	admin := f.tokens[auth.RoleAdmin]

	r := f.post(t, "/api/v1/users", admin, map[string]string{"name": "bob", "role": "editor", "password": "bob-password-1"})
	var u map[string]any
	wantJSON(t, r, http.StatusCreated, &u)
	if u["name"] != "bob" || u["role"] != "editor" || u["created_at"] == nil {
		t.Errorf("create user answered %s", r.body)
	}
	if bytes.Contains(r.body, []byte("bob-password-1")) || bytes.Contains(bytes.ToLower(r.body), []byte("hash")) {
		t.Errorf("create user shows the password or its hash: %s", r.body)
	}
	e := wantError(t, f.post(t, "/api/v1/users", admin, map[string]string{"name": "bob", "role": "viewer", "password": "other-password-1"}),
		http.StatusConflict, "conflict")
	t.Logf("duplicate: %s", e.Message)
	e = wantError(t, f.post(t, "/api/v1/users", admin, map[string]string{"name": "carl", "role": "viewer", "password": "short"}),
		http.StatusBadRequest, "bad_request")
	if e.Param != "password" {
		t.Errorf("short password: param %q, want password", e.Param)
	}

	var list struct {
		Users []map[string]any `json:"users"`
	}
	r = f.get(t, "/api/v1/users", admin)
	wantJSON(t, r, http.StatusOK, &list)
	var names []string
	for _, u := range list.Users {
		names = append(names, u["name"].(string))
	}
	if strings.Join(names, ",") != "admin,bob" || bytes.Contains(bytes.ToLower(r.body), []byte("hash")) {
		t.Errorf("users: %s", r.body)
	}

	// bob logs in; deleting him ends his session.
	bob := f.login(t, "bob", "bob-password-1")
	wantJSON(t, f.send(t, req{method: "GET", path: "/api/v1/auth/me", cookie: bob.cookie}), http.StatusOK, nil)
	// bob (an editor) may not delete users.
	r = f.send(t, req{method: "DELETE", path: "/api/v1/users/admin", cookie: bob.cookie, csrf: bob.csrf})
	wantError(t, r, http.StatusForbidden, "forbidden")
	if r := f.send(t, req{method: "DELETE", path: "/api/v1/users/bob", token: admin}); r.status != http.StatusNoContent || len(r.body) != 0 {
		t.Fatalf("delete bob: %s", r)
	}
	wantError(t, f.send(t, req{method: "GET", path: "/api/v1/auth/me", cookie: bob.cookie}), http.StatusUnauthorized, "unauthenticated")
	wantError(t, f.send(t, req{method: "DELETE", path: "/api/v1/users/bob", token: admin}), http.StatusNotFound, "not_found")
	wantError(t, f.send(t, req{method: "POST", path: "/api/v1/auth/login", body: map[string]string{"username": "bob", "password": "bob-password-1"}}),
		http.StatusUnauthorized, "unauthenticated")

	entries := f.audit(t, "")
	for _, action := range []string{"user.create", "user.delete"} {
		got := findAudit(entries, action, "user:bob")
		if len(got) != 1 || got[0].Actor != "token:"+f.tokenIDs[auth.RoleAdmin] {
			t.Errorf("audit of %s: %+v", action, got)
		}
	}
	for _, e := range entries {
		if raw, _ := json.Marshal(e); bytes.Contains(raw, []byte("password-1")) {
			t.Errorf("an audit entry holds a password: %s", raw)
		}
	}
}

// tokenFields are the keys a token may have in the API.
var tokenFields = map[string]bool{"id": true, "name": true, "role": true, "created_by": true, "created_at": true,
	"expires_at": true, "last_used_at": true, "revoked_at": true}

func TestTokens(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	admin := f.tokens[auth.RoleAdmin]

	r := f.post(t, "/api/v1/tokens", admin, map[string]string{"name": "ci", "role": "operator", "expires_in": "720h"})
	var created struct {
		ID        string    `json:"id"`
		Name      string    `json:"name"`
		Role      string    `json:"role"`
		CreatedBy string    `json:"created_by"`
		ExpiresAt time.Time `json:"expires_at"`
		Token     string    `json:"token"`
	}
	wantJSON(t, r, http.StatusCreated, &created)
	if created.ID == "" || created.Name != "ci" || created.Role != "operator" || created.CreatedBy != "token:"+f.tokenIDs[auth.RoleAdmin] ||
		!strings.HasPrefix(created.Token, "dray_"+created.ID+"_") {
		t.Fatalf("create token answered %s", r.body)
	}
	if d := time.Until(created.ExpiresAt); d < 719*time.Hour || d > 721*time.Hour {
		t.Errorf("expires_at %v: want in 720h", created.ExpiresAt)
	}

	// The secret works as a bearer token, with its role.
	var me meDoc
	wantJSON(t, f.get(t, "/api/v1/auth/me", created.Token), http.StatusOK, &me)
	if me.Name != "token:"+created.ID || me.Role != "operator" || me.Kind != "token" || me.CSRFToken != "" {
		t.Errorf("me with the new token: %+v", me)
	}
	run := f.trigger(t, created.Token, map[string]any{"pipeline": "quick"})
	wantError(t, f.get(t, "/api/v1/tokens", created.Token), http.StatusForbidden, "forbidden")

	// A token without expiry.
	var forever map[string]any
	wantJSON(t, f.post(t, "/api/v1/tokens", admin, map[string]string{"name": "agent eu-1", "role": "agent"}), http.StatusCreated, &forever)
	if _, ok := forever["expires_at"]; ok {
		t.Errorf("a token without expiry has expires_at: %v", forever)
	}

	// The list never holds a secret or a hash.
	r = f.get(t, "/api/v1/tokens", admin)
	var list struct {
		Tokens []map[string]any `json:"tokens"`
	}
	wantJSON(t, r, http.StatusOK, &list)
	if len(list.Tokens) != len(f.tokens)+2 {
		t.Errorf("%d tokens listed, want %d", len(list.Tokens), len(f.tokens)+2)
	}
	secrets := []string{created.Token, forever["token"].(string)}
	for _, s := range f.tokens {
		secrets = append(secrets, s)
	}
	for _, s := range secrets {
		_, secret, _ := strings.Cut(strings.TrimPrefix(s, "dray_"), "_")
		if bytes.Contains(r.body, []byte(secret)) {
			t.Errorf("the token list holds a secret: %s", r.body)
		}
	}
	for _, tok := range list.Tokens {
		for k := range tok {
			if !tokenFields[k] {
				t.Errorf("a listed token has key %q: %v", k, tok)
			}
		}
	}

	// A session revokes only with its CSRF token.
	sess := f.login(t, adminUser, adminPassword)
	r = f.send(t, req{method: "DELETE", path: "/api/v1/tokens/" + created.ID, cookie: sess.cookie})
	wantError(t, r, http.StatusForbidden, "forbidden")
	wantJSON(t, f.get(t, "/api/v1/auth/me", created.Token), http.StatusOK, nil)

	// Revoked, the token is refused.
	if r := f.send(t, req{method: "DELETE", path: "/api/v1/tokens/" + created.ID, token: admin}); r.status != http.StatusNoContent {
		t.Fatalf("revoke: %s", r)
	}
	wantError(t, f.get(t, "/api/v1/auth/me", created.Token), http.StatusUnauthorized, "unauthenticated")
	wantError(t, f.get(t, "/api/v1/runs/"+run.ID, created.Token), http.StatusUnauthorized, "unauthenticated")
	wantJSON(t, f.get(t, "/api/v1/tokens", admin), http.StatusOK, &list)
	for _, tok := range list.Tokens {
		if tok["id"] == created.ID && tok["revoked_at"] == nil {
			t.Errorf("the revoked token has no revoked_at: %v", tok)
		}
	}
	// Revoking again does nothing; an unknown token is a 404.
	if r := f.send(t, req{method: "DELETE", path: "/api/v1/tokens/" + created.ID, token: admin}); r.status != http.StatusNoContent {
		t.Errorf("revoke again: %s", r)
	}
	wantError(t, f.send(t, req{method: "DELETE", path: "/api/v1/tokens/000000000000", token: admin}), http.StatusNotFound, "not_found")

	entries := f.audit(t, "")
	for _, action := range []string{"token.create", "token.revoke"} {
		got := findAudit(entries, action, "token:"+created.ID)
		if len(got) != 1 || got[0].Actor != "token:"+f.tokenIDs[auth.RoleAdmin] {
			t.Errorf("audit of %s: %+v", action, got)
		}
	}
	f.waitRun(t, run.ID, admin)
}

func TestAuditPaging(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	admin := f.tokens[auth.RoleAdmin]
	for range 3 {
		wantJSON(t, f.post(t, "/api/v1/schedules/nightly/pause", f.tokens[auth.RoleOperator], nil), http.StatusOK, nil)
	}
	all := f.audit(t, "")
	var paged []auditDoc
	cursor := ""
	for {
		path := "/api/v1/audit?limit=2"
		if cursor != "" {
			path += "&cursor=" + cursor
		}
		var page struct {
			Entries    []auditDoc `json:"entries"`
			NextCursor string     `json:"next_cursor"`
		}
		wantJSON(t, f.get(t, path, admin), http.StatusOK, &page)
		if len(page.Entries) > 2 {
			t.Fatalf("a page of %d entries with limit=2", len(page.Entries))
		}
		paged = append(paged, page.Entries...)
		if page.NextCursor == "" {
			break
		}
		cursor = page.NextCursor
	}
	if len(paged) != len(all) || len(all) < 3+len(f.tokens)+1 {
		t.Fatalf("paged %d entries, listed %d", len(paged), len(all))
	}
	for i := range all {
		if paged[i].ID != all[i].ID {
			t.Errorf("entry %d: paged %d, listed %d", i, paged[i].ID, all[i].ID)
		}
		if i > 0 && all[i].ID >= all[i-1].ID {
			t.Errorf("entries not newest first: %d after %d", all[i].ID, all[i-1].ID)
		}
	}
	if e := all[0]; e.Action != "schedule.pause" || e.Target != "nightly" || e.Address != "127.0.0.1" {
		t.Errorf("the newest entry: %+v", e)
	}
	byOperator := f.audit(t, "&actor=token:"+f.tokenIDs[auth.RoleOperator])
	if len(byOperator) != 3 {
		t.Errorf("%d entries by the operator, want 3", len(byOperator))
	}
}
