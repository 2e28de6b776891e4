package server_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/dray-dev/dray/internal/auth"
)

// TestBadInput sends every endpoint that takes a body or parameters bad
// ones. Each answers the JSON error with the right status, code and param,
// and changes nothing: the store holds as many runs, attempts, users,
// tokens and audit entries after as before.
func TestBadInput(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	admin := f.tokens[auth.RoleAdmin]
	run := f.trigger(t, admin, map[string]any{"pipeline": "quick"})
	f.waitRun(t, run.ID, admin)
	var atts struct {
		Attempts []attemptDoc `json:"attempts"`
	}
	wantJSON(t, f.get(t, "/api/v1/runs/"+run.ID+"/attempts", admin), http.StatusOK, &atts)
	if len(atts.Attempts) != 1 {
		t.Fatalf("attempts of run %s: %+v", run.ID, atts.Attempts)
	}
	attempt := fmt.Sprint(atts.Attempts[0].ID)

	const (
		bad      = http.StatusBadRequest
		notFound = http.StatusNotFound
		conflict = http.StatusConflict
	)
	tests := []struct {
		name         string
		method, path string
		body         any // a string is sent as is
		status       int
		code         string
		param        string // "" for any
	}{
		// Trigger.
		{"trigger: no body", "POST", "/api/v1/runs", nil, bad, "bad_request", ""},
		{"trigger: malformed", "POST", "/api/v1/runs", `{"pipeline": "hello",`, bad, "bad_request", ""},
		{"trigger: not JSON", "POST", "/api/v1/runs", `pipeline=hello`, bad, "bad_request", ""},
		{"trigger: two values", "POST", "/api/v1/runs", `{"pipeline": "quick"} {"pipeline": "quick"}`, bad, "bad_request", ""},
		{"trigger: pipeline a number", "POST", "/api/v1/runs", `{"pipeline": 5}`, bad, "bad_request", "pipeline"},
		{"trigger: params a list", "POST", "/api/v1/runs", `{"pipeline": "hello", "params": [1]}`, bad, "bad_request", "params"},
		{"trigger: args a string", "POST", "/api/v1/runs", `{"pipeline": "hello", "args": "region=eu"}`, bad, "bad_request", "args"},
		{"trigger: unknown field", "POST", "/api/v1/runs", `{"pipeline": "quick", "pipelin": "quick"}`, bad, "bad_request", "pipelin"},
		{"trigger: no pipeline", "POST", "/api/v1/runs", `{}`, bad, "bad_request", "pipeline"},
		{"trigger: unknown pipeline", "POST", "/api/v1/runs", `{"pipeline": "nope"}`, notFound, "not_found", ""},
		{"trigger: missing required param", "POST", "/api/v1/runs", `{"pipeline": "hello"}`, bad, "bad_param", "region"},
		{"trigger: unknown param", "POST", "/api/v1/runs", `{"pipeline": "hello", "params": {"region": "eu", "nope": 1}}`, bad, "bad_param", "nope"},
		{"trigger: param of the wrong type", "POST", "/api/v1/runs", `{"pipeline": "hello", "params": {"region": "eu", "count": "three"}}`, bad, "bad_param", "count"},
		{"trigger: boolean param a string", "POST", "/api/v1/runs", `{"pipeline": "hello", "params": {"region": "eu", "loud": "yes"}}`, bad, "bad_param", "loud"},
		{"trigger: enum value not allowed", "POST", "/api/v1/runs", `{"pipeline": "hello", "params": {"region": "eu", "mode": "medium"}}`, bad, "bad_param", "mode"},
		{"trigger: arg of the wrong type", "POST", "/api/v1/runs", `{"pipeline": "hello", "args": ["region=eu", "count=many"]}`, bad, "bad_param", "count"},
		{"trigger: arg without =", "POST", "/api/v1/runs", `{"pipeline": "hello", "args": ["region"]}`, bad, "bad_param", "region"},
		{"trigger: unknown arg", "POST", "/api/v1/runs", `{"pipeline": "hello", "args": ["region=eu", "nope=1"]}`, bad, "bad_param", "nope"},
		{"trigger: param in params and args", "POST", "/api/v1/runs", `{"pipeline": "hello", "args": ["region=eu"], "params": {"region": "us"}}`, bad, "bad_param", "region"},
		{"trigger: bad logical_date", "POST", "/api/v1/runs", `{"pipeline": "quick", "logical_date": "2026-13-01"}`, bad, "bad_request", "logical_date"},
		{"trigger: logical_date not a date", "POST", "/api/v1/runs", `{"pipeline": "quick", "logical_date": "yesterday"}`, bad, "bad_request", "logical_date"},
		{"trigger: logical_date and logical_time", "POST", "/api/v1/runs", `{"pipeline": "quick", "logical_date": "2026-03-01", "logical_time": "2026-03-01T00:00:00Z"}`, bad, "bad_request", "logical_date"},
		{"trigger: bad logical_time", "POST", "/api/v1/runs", `{"pipeline": "quick", "logical_time": "2026-03-01"}`, bad, "bad_request", "logical_time"},
		{"trigger: logical_time a number", "POST", "/api/v1/runs", `{"pipeline": "quick", "logical_time": 1772330400}`, bad, "bad_request", "logical_time"},
		{"trigger: body an array", "POST", "/api/v1/runs", `[{"pipeline": "quick"}]`, bad, "bad_request", ""},
		{"trigger: body a string", "POST", "/api/v1/runs", `"quick"`, bad, "bad_request", ""},
		{"trigger: body too large", "POST", "/api/v1/runs", `{"pipeline": "quick", "args": ["` + strings.Repeat("x", 1<<20) + `"]}`, http.StatusRequestEntityTooLarge, "bad_request", ""},

		// Runs.
		{"list runs: limit 0", "GET", "/api/v1/runs?limit=0", nil, bad, "bad_request", "limit"},
		{"list runs: limit too big", "GET", "/api/v1/runs?limit=501", nil, bad, "bad_request", "limit"},
		{"list runs: limit not a number", "GET", "/api/v1/runs?limit=ten", nil, bad, "bad_request", "limit"},
		{"list runs: unknown state", "GET", "/api/v1/runs?state=bogus", nil, bad, "bad_request", "state"},
		{"list runs: one unknown state of two", "GET", "/api/v1/runs?state=succeeded,bogus", nil, bad, "bad_request", "state"},
		{"list runs: unknown cursor", "GET", "/api/v1/runs?cursor=unknown", nil, bad, "bad_request", "cursor"},
		{"get run: unknown", "GET", "/api/v1/runs/nope", nil, notFound, "not_found", ""},
		{"cancel: unknown run", "POST", "/api/v1/runs/nope/cancel", nil, notFound, "not_found", ""},
		{"cancel: malformed", "POST", "/api/v1/runs/" + run.ID + "/cancel", `{"force": `, bad, "bad_request", ""},
		{"cancel: force a string", "POST", "/api/v1/runs/" + run.ID + "/cancel", `{"force": "yes"}`, bad, "bad_request", "force"},
		{"cancel: unknown field", "POST", "/api/v1/runs/" + run.ID + "/cancel", `{"forced": true}`, bad, "bad_request", "forced"},
		{"cancel: ended run", "POST", "/api/v1/runs/" + run.ID + "/cancel", nil, conflict, "conflict", ""},
		{"retry: unknown run", "POST", "/api/v1/runs/nope/retry", nil, notFound, "not_found", ""},
		{"retry: succeeded run", "POST", "/api/v1/runs/" + run.ID + "/retry", nil, conflict, "conflict", ""},
		{"attempts: unknown run", "GET", "/api/v1/runs/nope/attempts", nil, notFound, "not_found", ""},
		{"attempts: unknown task", "GET", "/api/v1/runs/" + run.ID + "/attempts?task=nope", nil, notFound, "not_found", ""},
		{"run logs: unknown run", "GET", "/api/v1/runs/nope/logs", nil, notFound, "not_found", ""},
		{"run logs: unknown task", "GET", "/api/v1/runs/" + run.ID + "/logs?task=nope", nil, notFound, "not_found", ""},
		{"run logs: followed, unknown task", "GET", "/api/v1/runs/" + run.ID + "/logs?task=nope&follow=true", nil, notFound, "not_found", ""},
		{"run logs: attempt not a number", "GET", "/api/v1/runs/" + run.ID + "/logs?attempt=first", nil, bad, "bad_request", "attempt"},
		{"run logs: negative attempt", "GET", "/api/v1/runs/" + run.ID + "/logs?attempt=-1", nil, bad, "bad_request", "attempt"},
		{"run logs: follow not a boolean", "GET", "/api/v1/runs/" + run.ID + "/logs?follow=maybe", nil, bad, "bad_request", "follow"},
		{"attempt logs: id not a number", "GET", "/api/v1/attempts/nope/logs", nil, bad, "bad_request", "id"},
		{"attempt logs: id 0", "GET", "/api/v1/attempts/0/logs", nil, bad, "bad_request", "id"},
		{"attempt logs: unknown attempt", "GET", "/api/v1/attempts/999999/logs", nil, notFound, "not_found", ""},
		{"attempt logs: negative after", "GET", "/api/v1/attempts/" + attempt + "/logs?after=-1", nil, bad, "bad_request", "after"},
		{"attempt logs: limit 0", "GET", "/api/v1/attempts/" + attempt + "/logs?limit=0", nil, bad, "bad_request", "limit"},
		{"attempt logs: limit too big", "GET", "/api/v1/attempts/" + attempt + "/logs?limit=10001", nil, bad, "bad_request", "limit"},

		// Pipelines and schedules.
		{"pipeline: unknown", "GET", "/api/v1/pipelines/nope", nil, notFound, "not_found", ""},
		{"pause: unknown pipeline", "POST", "/api/v1/schedules/nope/pause", nil, notFound, "not_found", ""},
		{"resume: unknown pipeline", "POST", "/api/v1/schedules/nope/resume", nil, notFound, "not_found", ""},
		{"pause: pipeline without schedule", "POST", "/api/v1/schedules/hello/pause", nil, notFound, "not_found", ""},
		{"backfill: no body", "POST", "/api/v1/backfills", nil, bad, "bad_request", ""},
		{"backfill: malformed", "POST", "/api/v1/backfills", `{"pipeline": `, bad, "bad_request", ""},
		{"backfill: unknown field", "POST", "/api/v1/backfills", `{"pipeline": "nightly", "from": "2026-03-01", "to": "2026-03-02", "until": "x"}`, bad, "bad_request", "until"},
		{"backfill: from a number", "POST", "/api/v1/backfills", `{"pipeline": "nightly", "from": 20260301, "to": "2026-03-02"}`, bad, "bad_request", "from"},
		{"backfill: no pipeline", "POST", "/api/v1/backfills", `{"from": "2026-03-01", "to": "2026-03-02"}`, bad, "bad_request", "pipeline"},
		{"backfill: unknown pipeline", "POST", "/api/v1/backfills", `{"pipeline": "nope", "from": "2026-03-01", "to": "2026-03-02"}`, notFound, "not_found", ""},
		{"backfill: pipeline without schedule", "POST", "/api/v1/backfills", `{"pipeline": "hello", "from": "2026-03-01", "to": "2026-03-02"}`, bad, "bad_request", "pipeline"},
		{"backfill: no from", "POST", "/api/v1/backfills", `{"pipeline": "nightly", "to": "2026-03-02"}`, bad, "bad_request", "from"},
		{"backfill: bad from", "POST", "/api/v1/backfills", `{"pipeline": "nightly", "from": "March 1", "to": "2026-03-02"}`, bad, "bad_request", "from"},
		{"backfill: bad to", "POST", "/api/v1/backfills", `{"pipeline": "nightly", "from": "2026-03-01", "to": "2026-02-30"}`, bad, "bad_request", "to"},
		{"backfill: to before from", "POST", "/api/v1/backfills", `{"pipeline": "nightly", "from": "2026-03-05", "to": "2026-03-01"}`, bad, "bad_request", "from"},
		{"backfill: no fire time", "POST", "/api/v1/backfills", `{"pipeline": "nightly", "from": "2026-03-01T03:00:00+01:00", "to": "2026-03-01T04:00:00+01:00"}`, bad, "bad_request", "from"},
		{"backfill: too many fire times", "POST", "/api/v1/backfills", `{"pipeline": "nightly", "from": "2020-01-01", "to": "2026-01-01"}`, bad, "bad_request", "from"},

		// Users.
		{"create user: no body", "POST", "/api/v1/users", nil, bad, "bad_request", ""},
		{"create user: malformed", "POST", "/api/v1/users", `{"name": "bob"`, bad, "bad_request", ""},
		{"create user: name a number", "POST", "/api/v1/users", `{"name": 7, "role": "viewer", "password": "bob-password-1"}`, bad, "bad_request", "name"},
		{"create user: unknown field", "POST", "/api/v1/users", `{"name": "bob", "role": "viewer", "password": "bob-password-1", "admin": true}`, bad, "bad_request", "admin"},
		{"create user: short password", "POST", "/api/v1/users", `{"name": "bob", "role": "viewer", "password": "short"}`, bad, "bad_request", "password"},
		{"create user: password is the name", "POST", "/api/v1/users", `{"name": "bobbobbob", "role": "viewer", "password": "bobbobbob"}`, bad, "bad_request", "password"},
		{"create user: bad name", "POST", "/api/v1/users", `{"name": "Bob Smith", "role": "viewer", "password": "bob-password-1"}`, bad, "bad_request", "name"},
		{"create user: unknown role", "POST", "/api/v1/users", `{"name": "bob", "role": "boss", "password": "bob-password-1"}`, bad, "bad_request", "role"},
		{"create user: agent role", "POST", "/api/v1/users", `{"name": "bob", "role": "agent", "password": "bob-password-1"}`, bad, "bad_request", "role"},
		{"create user: name taken", "POST", "/api/v1/users", `{"name": "admin", "role": "viewer", "password": "bob-password-1"}`, conflict, "conflict", ""},
		{"delete user: unknown", "DELETE", "/api/v1/users/nope", nil, notFound, "not_found", ""},
		{"delete user: the last admin", "DELETE", "/api/v1/users/admin", nil, conflict, "conflict", ""},

		// Tokens.
		{"create token: no body", "POST", "/api/v1/tokens", nil, bad, "bad_request", ""},
		{"create token: role a list", "POST", "/api/v1/tokens", `{"name": "ci", "role": ["viewer"]}`, bad, "bad_request", "role"},
		{"create token: no name", "POST", "/api/v1/tokens", `{"role": "viewer"}`, bad, "bad_request", "name"},
		{"create token: unknown role", "POST", "/api/v1/tokens", `{"name": "ci", "role": "root"}`, bad, "bad_request", "role"},
		{"create token: bad expiry", "POST", "/api/v1/tokens", `{"name": "ci", "role": "viewer", "expires_in": "soon"}`, bad, "bad_request", "expires_in"},
		{"create token: negative expiry", "POST", "/api/v1/tokens", `{"name": "ci", "role": "viewer", "expires_in": "-1h"}`, bad, "bad_request", "expires_in"},
		{"create token: unknown field", "POST", "/api/v1/tokens", `{"name": "ci", "role": "viewer", "secret": "x"}`, bad, "bad_request", "secret"},
		{"revoke token: unknown", "DELETE", "/api/v1/tokens/nope", nil, notFound, "not_found", ""},

		// Audit.
		{"audit: limit 0", "GET", "/api/v1/audit?limit=0", nil, bad, "bad_request", "limit"},
		{"audit: limit too big", "GET", "/api/v1/audit?limit=501", nil, bad, "bad_request", "limit"},
		{"audit: bad cursor", "GET", "/api/v1/audit?cursor=abc", nil, bad, "bad_request", "cursor"},
		{"audit: cursor 0", "GET", "/api/v1/audit?cursor=0", nil, bad, "bad_request", "cursor"},

		// Login (no credentials needed).
		{"login: malformed", "POST", "/api/v1/auth/login", `{"username": `, bad, "bad_request", ""},
		{"login: no password", "POST", "/api/v1/auth/login", `{"username": "admin"}`, bad, "bad_request", ""},
		{"login: unknown field", "POST", "/api/v1/auth/login", `{"username": "admin", "password": "x", "remember": true}`, bad, "bad_request", "remember"},

		// No such route.
		{"unknown path", "GET", "/api/v1/nope", nil, notFound, "not_found", ""},
		{"unknown method", "DELETE", "/api/v1/runs", nil, notFound, "not_found", ""},
	}
	before := f.count(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := f.send(t, req{method: tt.method, path: tt.path, token: admin, body: tt.body})
			e := wantError(t, r, tt.status, tt.code)
			if tt.param != "" && e.Param != tt.param {
				t.Errorf("param %q, want %q: %s", e.Param, tt.param, r.body)
			}
			if strings.Contains(e.Message, "field :") {
				t.Errorf("the message names an empty field: %s", e.Message)
			}
			if tt.code == "bad_param" && !strings.Contains(e.Message, tt.param) {
				t.Errorf("the message does not name param %s: %s", tt.param, e.Message)
			}
		})
	}
	if after := f.count(t); after != before {
		t.Errorf("bad input changed the store: before %+v, after %+v", before, after)
	}
}
