package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/dray-dev/dray/internal/api"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/dray-dev/dray/internal/control"
)

func newTestClient(t *testing.T, url string, opts ...Option) *Client {
	t.Helper()
	c, err := New(url, "tok", opts...)
	if err != nil {
		t.Fatalf("New(%q): %v", url, err)
	}
	return c
}

func TestNewChecksTheURL(t *testing.T) {
	for _, bad := range []string{"", "localhost:8080", "ftp://host", "http://", "http://h/?q=1", "://x"} {
		if _, err := New(bad, ""); err == nil {
			t.Errorf("New(%q): no error", bad)
		}
	}
	c, err := New("http://127.0.0.1:8080/dray/", "")
	if err != nil {
		t.Fatal(err)
	}
	if got := c.URL(); got != "http://127.0.0.1:8080/dray" {
		t.Errorf("URL() = %q", got)
	}
}

// recorder is a server that answers every request with its answer and
// records the requests.
type recorder struct {
	method, path, query, auth, contentType string
	body                                   map[string]any
	status                                 int
	answer                                 string
}

func (rec *recorder) server(t *testing.T) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec.method, rec.path, rec.query = r.Method, r.URL.EscapedPath(), r.URL.RawQuery
		rec.auth, rec.contentType = r.Header.Get("Authorization"), r.Header.Get("Content-Type")
		rec.body = nil
		if b, _ := io.ReadAll(r.Body); len(b) > 0 {
			if err := json.Unmarshal(b, &rec.body); err != nil {
				t.Errorf("request body %q: %v", b, err)
			}
		}
		w.Header().Set("Content-Type", "application/json")
		status := rec.status
		if status == 0 {
			status = http.StatusOK
		}
		w.WriteHeader(status)
		fmt.Fprint(w, rec.answer)
	}))
	t.Cleanup(srv.Close)
	return srv
}

func TestCalls(t *testing.T) {
	rec := &recorder{}
	c := newTestClient(t, rec.server(t).URL+"/base")
	ctx := context.Background()
	logical := time.Date(2026, 1, 31, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		name   string
		answer string
		call   func() (any, error)
		method string
		path   string
		query  string
		body   string // JSON, compared after a round trip
		check  func(t *testing.T, got any)
	}{
		{name: "me", answer: `{"name":"ann","role":"admin","kind":"token"}`,
			call:   func() (any, error) { return c.Me(ctx) },
			method: "GET", path: "/base/api/v1/auth/me",
			check: func(t *testing.T, got any) {
				if m := got.(*api.Me); m.Name != "ann" || m.Role != "admin" || m.Kind != "token" {
					t.Errorf("me = %+v", m)
				}
			}},
		{name: "trigger", answer: `{"id":"01abc","pipeline":"p","state":"running","params":{"n":3},"trigger":"api"}`,
			call: func() (any, error) {
				return c.Trigger(ctx, api.TriggerRequest{Pipeline: "p", Params: map[string]any{"n": 3}, Args: []string{"day=2026-01-31"}, LogicalTime: &logical})
			},
			method: "POST", path: "/base/api/v1/runs",
			body: `{"pipeline":"p","params":{"n":3},"args":["day=2026-01-31"],"logical_time":"2026-01-31T00:00:00Z"}`,
			check: func(t *testing.T, got any) {
				if r := got.(*control.RunRecord); r.ID != "01abc" || r.Params["n"] != 3.0 || r.Trigger != "api" {
					t.Errorf("run = %+v", r)
				}
			}},
		{name: "runs", answer: `{"runs":[{"id":"01abc","state":"failed"}],"next_cursor":"c2"}`,
			call: func() (any, error) {
				return c.Runs(ctx, RunFilter{Pipeline: "p q", States: []string{"failed", "canceled"}, Limit: 7, Cursor: "c1"})
			},
			method: "GET", path: "/base/api/v1/runs", query: "cursor=c1&limit=7&pipeline=p+q&state=failed%2Ccanceled",
			check: func(t *testing.T, got any) {
				if l := got.(*api.RunList); len(l.Runs) != 1 || l.Runs[0].ID != "01abc" || l.NextCursor != "c2" {
					t.Errorf("runs = %+v", l)
				}
			}},
		{name: "run by escaped prefix", answer: `{"id":"01abc"}`,
			call:   func() (any, error) { return c.Run(ctx, "a/b") },
			method: "GET", path: "/base/api/v1/runs/a%2Fb"},
		{name: "cancel", answer: `{"id":"01abc","state":"running"}`,
			call:   func() (any, error) { return c.Cancel(ctx, "01abc", true) },
			method: "POST", path: "/base/api/v1/runs/01abc/cancel", body: `{"force":true}`},
		{name: "retry", answer: `{"id":"01abc","state":"running"}`,
			call:   func() (any, error) { return c.Retry(ctx, "01abc") },
			method: "POST", path: "/base/api/v1/runs/01abc/retry"},
		{name: "attempts", answer: `{"attempts":[{"id":4,"task":"t","number":2,"item":null,"exit_code":1}]}`,
			call:   func() (any, error) { return c.Attempts(ctx, "01abc", "t") },
			method: "GET", path: "/base/api/v1/runs/01abc/attempts", query: "task=t",
			check: func(t *testing.T, got any) {
				as := got.([]api.Attempt)
				if len(as) != 1 || as[0].ID != 4 || as[0].HasItem() || as[0].ExitCode == nil || *as[0].ExitCode != 1 {
					t.Errorf("attempts = %+v", as)
				}
			}},
		{name: "attempt logs", answer: `{"lines":[{"seq":5,"text":"x"}],"next":5}`,
			call:   func() (any, error) { return c.AttemptLogs(ctx, 4, 4, 100) },
			method: "GET", path: "/base/api/v1/attempts/4/logs", query: "after=4&limit=100"},
		{name: "run logs", answer: `{"lines":[]}`,
			call:   func() (any, error) { return c.RunLogs(ctx, "01abc", LogOptions{Task: "t", Attempt: 2}) },
			method: "GET", path: "/base/api/v1/runs/01abc/logs", query: "attempt=2&task=t"},
		{name: "pipelines", answer: `{"pipelines":[{"name":"p","tasks":3}],"errors":[]}`,
			call:   func() (any, error) { return c.Pipelines(ctx) },
			method: "GET", path: "/base/api/v1/pipelines"},
		{name: "pipeline", answer: `{"name":"p","params":[{"name":"day","default":"${{ run.logical_date }}"}]}`,
			call:   func() (any, error) { return c.Pipeline(ctx, "p") },
			method: "GET", path: "/base/api/v1/pipelines/p"},
		{name: "schedules", answer: `{"schedules":[{"pipeline":"p","cron":"0 2 * * *","next_fire":null}]}`,
			call:   func() (any, error) { return c.Schedules(ctx) },
			method: "GET", path: "/base/api/v1/schedules"},
		{name: "pause", answer: `{"pipeline":"p","paused":true}`,
			call:   func() (any, error) { return c.Pause(ctx, "p") },
			method: "POST", path: "/base/api/v1/schedules/p/pause"},
		{name: "resume", answer: `{"pipeline":"p","paused":false}`,
			call:   func() (any, error) { return c.Resume(ctx, "p") },
			method: "POST", path: "/base/api/v1/schedules/p/resume"},
		{name: "backfill", answer: `{"runs":[],"skipped":["2026-01-01T02:00:00Z"]}`,
			call: func() (any, error) {
				return c.Backfill(ctx, api.BackfillRequest{Pipeline: "p", From: "2026-01-01", To: "2026-01-03"})
			},
			method: "POST", path: "/base/api/v1/backfills", body: `{"pipeline":"p","from":"2026-01-01","to":"2026-01-03"}`},
		{name: "agents", answer: `{"agents":[{"id":"a1","labels":["gpu"]}]}`,
			call:   func() (any, error) { return c.Agents(ctx) },
			method: "GET", path: "/base/api/v1/agents"},
		{name: "users", answer: `{"users":[{"name":"ann","role":"admin"}]}`,
			call:   func() (any, error) { return c.Users(ctx) },
			method: "GET", path: "/base/api/v1/users"},
		{name: "create user", answer: `{"name":"bob","role":"viewer"}`,
			call: func() (any, error) {
				return c.CreateUser(ctx, api.UserRequest{Name: "bob", Role: "viewer", Password: "pw"})
			},
			method: "POST", path: "/base/api/v1/users", body: `{"name":"bob","role":"viewer","password":"pw"}`},
		{name: "delete user", call: func() (any, error) { return nil, c.DeleteUser(ctx, "bob") },
			method: "DELETE", path: "/base/api/v1/users/bob"},
		{name: "tokens", answer: `{"tokens":[{"id":"t1","name":"ci"}]}`,
			call:   func() (any, error) { return c.Tokens(ctx) },
			method: "GET", path: "/base/api/v1/tokens"},
		{name: "create token", answer: `{"id":"t2","name":"ci","role":"operator","token":"dray_secret"}`,
			call: func() (any, error) {
				return c.CreateToken(ctx, api.TokenRequest{Name: "ci", Role: "operator", ExpiresIn: "720h"})
			},
			method: "POST", path: "/base/api/v1/tokens", body: `{"name":"ci","role":"operator","expires_in":"720h"}`,
			check: func(t *testing.T, got any) {
				if tok := got.(*api.NewToken); tok.ID != "t2" || tok.Secret != "dray_secret" {
					t.Errorf("token = %+v", tok)
				}
			}},
		{name: "revoke token", call: func() (any, error) { return nil, c.RevokeToken(ctx, "t2") },
			method: "DELETE", path: "/base/api/v1/tokens/t2"},
		{name: "audit", answer: `{"entries":[{"id":1,"actor":"ann","action":"trigger"}],"next_cursor":""}`,
			call:   func() (any, error) { return c.Audit(ctx, AuditFilter{Actor: "ann", Limit: 5}) },
			method: "GET", path: "/base/api/v1/audit", query: "actor=ann&limit=5"},
		{name: "healthz", answer: `{"status":"ok"}`,
			call:   func() (any, error) { return c.Healthz(ctx) },
			method: "GET", path: "/base/healthz"},
		{name: "readyz", answer: `{"status":"ok"}`,
			call:   func() (any, error) { return c.Readyz(ctx) },
			method: "GET", path: "/base/readyz"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec.answer = tt.answer
			got, err := tt.call()
			if err != nil {
				t.Fatalf("call: %v", err)
			}
			if rec.method != tt.method || rec.path != tt.path || rec.query != tt.query {
				t.Errorf("request %s %s?%s, want %s %s?%s", rec.method, rec.path, rec.query, tt.method, tt.path, tt.query)
			}
			if rec.auth != "Bearer tok" {
				t.Errorf("Authorization %q", rec.auth)
			}
			if tt.body != "" {
				var want map[string]any
				if err := json.Unmarshal([]byte(tt.body), &want); err != nil {
					t.Fatal(err)
				}
				if g, w := fmt.Sprint(rec.body), fmt.Sprint(want); g != w {
					t.Errorf("body %s, want %s", g, w)
				}
				if rec.contentType != "application/json" {
					t.Errorf("Content-Type %q", rec.contentType)
				}
			}
			if tt.check != nil {
				tt.check(t, got)
			}
		})
	}
}

func TestNoTokenNoHeader(t *testing.T) {
	rec := &recorder{answer: `{"status":"ok"}`}
	c, err := New(rec.server(t).URL, "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Healthz(context.Background()); err != nil {
		t.Fatal(err)
	}
	if rec.auth != "" {
		t.Errorf("Authorization %q without a token", rec.auth)
	}
}

func TestAPIErrors(t *testing.T) {
	tests := []struct {
		name    string
		status  int
		answer  string
		want    Error
		message string
	}{
		{"bad param", 400, `{"error":{"code":"bad_param","message":"want an integer, got \"abc\"","param":"limit"}}`,
			Error{Status: 400, Code: "bad_param", Message: `want an integer, got "abc"`, Param: "limit"},
			`param limit: want an integer, got "abc" (HTTP 400 bad_param)`},
		{"not found", 404, `{"error":{"code":"not_found","message":"no run \"zz\""}}`,
			Error{Status: 404, Code: "not_found", Message: `no run "zz"`}, `no run "zz" (HTTP 404 not_found)`},
		{"unauthenticated", 401, `{"error":{"code":"unauthenticated","message":"token unknown or revoked"}}`,
			Error{Status: 401, Code: "unauthenticated", Message: "token unknown or revoked"}, "token unknown or revoked (HTTP 401 unauthenticated)"},
		{"not the API's document", 502, `<html>Bad Gateway</html>`,
			Error{Status: 502, Message: "<html>Bad Gateway</html>"}, "<html>Bad Gateway</html> (HTTP 502 bad_gateway)"},
		{"empty body", 503, ``, Error{Status: 503}, "Service Unavailable (HTTP 503 service_unavailable)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := &recorder{status: tt.status, answer: tt.answer}
			_, err := newTestClient(t, rec.server(t).URL).Run(context.Background(), "zz")
			var apiErr *Error
			if !errors.As(err, &apiErr) {
				t.Fatalf("err %v (%T), want *Error", err, err)
			}
			if *apiErr != tt.want {
				t.Errorf("error %+v, want %+v", *apiErr, tt.want)
			}
			if apiErr.Error() != tt.message {
				t.Errorf("message %q, want %q", apiErr.Error(), tt.message)
			}
			if !strings.HasPrefix(err.Error(), "GET /api/v1/runs/zz: ") {
				t.Errorf("err %q does not name the call", err)
			}
		})
	}
}

func TestUnreachable(t *testing.T) {
	// A port that was just free: nothing listens there.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + l.Addr().String()
	l.Close()
	_, err = newTestClient(t, url).Runs(context.Background(), RunFilter{})
	var ue *UnreachableError
	if !errors.As(err, &ue) || ue.URL != url {
		t.Fatalf("err %v, want *UnreachableError for %s", err, url)
	}
	if msg := err.Error(); !strings.Contains(msg, "is `dray server` running at "+url+"?") || !strings.Contains(msg, "connection refused") {
		t.Errorf("message %q does not say what to check", msg)
	}
}

func TestTimeout(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done()
	}))
	defer srv.Close()
	c := newTestClient(t, srv.URL, WithTimeout(50*time.Millisecond))
	_, err := c.Me(context.Background())
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err %v, want context.DeadlineExceeded", err)
	}
}

func TestBadAnswer(t *testing.T) {
	rec := &recorder{answer: `{"id": 3`}
	_, err := newTestClient(t, rec.server(t).URL).Run(context.Background(), "x")
	if err == nil || !strings.Contains(err.Error(), "read answer") {
		t.Fatalf("err %v, want a decode error", err)
	}
}

func TestErrorText(t *testing.T) {
	tests := []struct {
		e    Error
		want string
	}{
		{Error{Status: 400, Message: `want an integer, got "x"`, Param: "n"}, `param n: want an integer, got "x"`},
		{Error{Status: 400, Message: `param n: want an integer`, Param: "n"}, `param n: want an integer`},
		{Error{Status: 400, Message: "state bogus: want queued", Param: "state"}, "state bogus: want queued"},
		{Error{Status: 400, Message: "logical_dates are odd", Param: "logical_date"}, "param logical_date: logical_dates are odd"},
		{Error{Status: 404}, "Not Found"},
	}
	for _, tt := range tests {
		if got := tt.e.Text(); got != tt.want {
			t.Errorf("Text() of %+v = %q, want %q", tt.e, got, tt.want)
		}
	}
}
