package server_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/dray-dev/dray/internal/agent"
	"github.com/dray-dev/dray/internal/auth"
	"github.com/dray-dev/dray/internal/blob"
	"github.com/dray-dev/dray/internal/control"
	"github.com/dray-dev/dray/internal/executor"
	"github.com/dray-dev/dray/internal/executor/local"
	"github.com/dray-dev/dray/internal/project"
	"github.com/dray-dev/dray/internal/scheduler"
	"github.com/dray-dev/dray/internal/server"
	"github.com/dray-dev/dray/internal/spec"
	"github.com/dray-dev/dray/internal/store"
	"github.com/dray-dev/dray/internal/store/sqlite"
)

// fastHash keeps password hashing cheap in tests.
var fastHash = auth.HashParams{Memory: 64, Time: 1, Threads: 1}

// The admin user every fixture has.
const (
	adminUser     = "admin"
	adminPassword = "admin-password-1"
)

// schedNow is the scheduler's clock: fixed, so next fire times are known
// and no schedule fires while a test runs. The next fire of nightly ("0 2 *
// * *" in Europe/Berlin) after it is 2026-03-11T01:00:00Z.
var schedNow = time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC)

// offsetClock is the real time moved by a settable offset, for the auth
// service: tokens and sessions expire when a test moves it on.
type offsetClock struct{ off atomic.Int64 }

func (c *offsetClock) now() time.Time { return time.Now().Add(time.Duration(c.off.Load())) }

func (c *offsetClock) advance(d time.Duration) { c.off.Add(int64(d)) }

// syncBuffer collects the fixture's logs, shown when a test fails.
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

// fixture is a dray server wired as `dray server` wires it: a SQLite store,
// the control plane, auth, the project watcher, the scheduler and an
// in-process agent with the local executor, served over loopback HTTP.
type fixture struct {
	t         *testing.T
	ctx       context.Context
	dir       string // the project folder (a copy of testdata/project)
	store     *sqlite.Store
	svc       *control.Service
	auth      *auth.Service
	watcher   *project.Watcher
	sched     *scheduler.Scheduler
	cfg       server.Config
	srv       *server.Server
	ts        *httptest.Server
	authClock *offsetClock
	logs      *syncBuffer

	closeStoreOnce sync.Once

	// tokens are bearer tokens by role, made by the system; tokenIDs their ids.
	tokens   map[auth.Role]string
	tokenIDs map[auth.Role]string
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	if err := os.CopyFS(dir, os.DirFS("testdata/project")); err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	f := &fixture{t: t, ctx: ctx, dir: dir, logs: logs, authClock: &offsetClock{},
		tokens: map[auth.Role]string{}, tokenIDs: map[auth.Role]string{}}

	watcher, err := project.Open(ctx, dir, log)
	if err != nil {
		t.Fatal(err)
	}
	if errs := watcher.Current().Errors; len(errs) > 0 {
		t.Fatalf("testdata/project has errors: %v", errs)
	}
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "dray.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	bucket, err := blob.Open(ctx, "file://storage", t.TempDir())
	if err != nil {
		st.Close()
		t.Fatal(err)
	}
	svc := control.New(control.Config{Store: st, Blob: bucket, Logger: log, Host: control.Hostname()})
	authSvc := auth.New(auth.Config{Store: st, Logger: log, Now: f.authClock.now, Hash: fastHash,
		Limits: auth.LoginLimits{MaxUserFailures: 3, Lockout: time.Minute}})
	sched := scheduler.New(scheduler.Config{Store: st, Control: svc, Pipelines: watcher.Pipelines, Logger: log,
		Now: func() time.Time { return schedNow }})
	f.store, f.svc, f.auth, f.watcher, f.sched = st, svc, authSvc, watcher, sched
	f.cfg = server.Config{Store: st, Control: svc, Auth: authSvc, Project: watcher, Scheduler: sched, Logger: log,
		Version: "test", LogPoll: 20 * time.Millisecond}
	f.srv = server.New(f.cfg)
	f.ts = httptest.NewServer(f.srv)

	execs := map[string]executor.Executor{spec.ExecLocal: local.New(local.Config{Logger: log, TempDir: t.TempDir()})}
	ag := agent.New(agent.Config{
		Info:      control.AgentInfo{ID: "server-test", Host: control.Hostname(), PID: os.Getpid(), Version: "test", Capacity: 8},
		Control:   svc,
		Executors: execs,
		Dir:       dir,
		Logger:    log,
		KillGrace: 2 * time.Second,
	})
	workCtx, stopWork := context.WithCancel(ctx)
	g, gctx := errgroup.WithContext(workCtx)
	g.Go(func() error { watcher.Run(gctx, time.Hour); return nil }) // tests call Reload themselves
	g.Go(func() error { return svc.Listen(gctx) })
	g.Go(func() error { return sched.Run(gctx) })
	g.Go(func() error { return ag.Run(gctx) })

	t.Cleanup(func() {
		f.ts.Close()
		stopWork()
		if err := g.Wait(); err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("workers: %v", err)
		}
		svc.Close()
		bucket.Close()
		f.closeStore()
		if t.Failed() {
			t.Logf("server logs:\n%s", logs.String())
		}
	})

	// Tick as Run does, so that every schedule has been seen (checked_until
	// is the scheduler's clock) before a test looks; Run may tick as well.
	if _, err := sched.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := authSvc.CreateUser(ctx, auth.System("test"), adminUser, auth.RoleAdmin, adminPassword); err != nil {
		t.Fatal(err)
	}
	for _, role := range auth.Roles() {
		secret, info := f.newToken(string(role)+"-token", role, 0)
		f.tokens[role], f.tokenIDs[role] = secret, info.ID
	}
	return f
}

// closeStore closes the SQLite store (once).
func (f *fixture) closeStore() { f.closeStoreOnce.Do(func() { f.store.Close() }) }

// newToken creates an API token as the system.
func (f *fixture) newToken(name string, role auth.Role, ttl time.Duration) (string, auth.TokenInfo) {
	f.t.Helper()
	secret, info, err := f.auth.CreateToken(f.ctx, auth.System("test"), name, role, ttl)
	if err != nil {
		f.t.Fatal(err)
	}
	return secret, info
}

// response is an HTTP answer, read whole.
type response struct {
	status int
	header http.Header
	body   []byte
}

func (r *response) String() string { return fmt.Sprintf("%d %s", r.status, r.body) }

// req is a request to the fixture's server.
type req struct {
	method, path string
	token        string // bearer token, or ""
	body         any    // nil: none; a string or []byte: sent as is; else JSON
	cookie       *http.Cookie
	csrf         string
	header       map[string]string
}

// send sends a request and reads the answer.
func (f *fixture) send(t *testing.T, rq req) *response {
	t.Helper()
	return sendTo(t, f.ts.URL, rq)
}

func sendTo(t *testing.T, base string, rq req) *response {
	t.Helper()
	var body io.Reader
	switch b := rq.body.(type) {
	case nil:
	case string:
		body = strings.NewReader(b)
	case []byte:
		body = bytes.NewReader(b)
	default:
		data, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		body = bytes.NewReader(data)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	hr, err := http.NewRequestWithContext(ctx, rq.method, base+rq.path, body)
	if err != nil {
		t.Fatal(err)
	}
	if body != nil {
		hr.Header.Set("Content-Type", "application/json")
	}
	if rq.token != "" {
		hr.Header.Set("Authorization", "Bearer "+rq.token)
	}
	if rq.cookie != nil {
		hr.AddCookie(rq.cookie)
	}
	if rq.csrf != "" {
		hr.Header.Set(auth.CSRFHeader, rq.csrf)
	}
	for k, v := range rq.header {
		hr.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(hr)
	if err != nil {
		t.Fatalf("%s %s: %v", rq.method, rq.path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", rq.method, rq.path, err)
	}
	return &response{status: resp.StatusCode, header: resp.Header, body: data}
}

// get sends a GET with a bearer token.
func (f *fixture) get(t *testing.T, path, token string) *response {
	t.Helper()
	return f.send(t, req{method: "GET", path: path, token: token})
}

// post sends a POST with a bearer token and a JSON body.
func (f *fixture) post(t *testing.T, path, token string, body any) *response {
	t.Helper()
	return f.send(t, req{method: "POST", path: path, token: token, body: body})
}

// wantJSON checks the status and that the answer is JSON, and decodes it
// into v (when not nil).
func wantJSON(t *testing.T, r *response, status int, v any) {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d, want %d: %s", r.status, status, r.body)
	}
	if mt, _, _ := mime.ParseMediaType(r.header.Get("Content-Type")); mt != "application/json" {
		t.Fatalf("Content-Type %q, want application/json: %s", r.header.Get("Content-Type"), r.body)
	}
	if v == nil {
		return
	}
	dec := json.NewDecoder(bytes.NewReader(r.body))
	if err := dec.Decode(v); err != nil {
		t.Fatalf("decode %s: %v", r.body, err)
	}
}

// apiError is the body of every error the API answers.
type apiError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Param   string `json:"param"`
}

// errorBody checks that r is an error of the one JSON shape
// {"error": {"code", "message"[, "param"]}} with nothing else, and returns it.
func errorBody(t *testing.T, r *response) apiError {
	t.Helper()
	if mt, _, _ := mime.ParseMediaType(r.header.Get("Content-Type")); mt != "application/json" {
		t.Fatalf("error answer has Content-Type %q, want application/json: %s", r.header.Get("Content-Type"), r.body)
	}
	var outer map[string]json.RawMessage
	if err := json.Unmarshal(r.body, &outer); err != nil {
		t.Fatalf("error answer is not a JSON object: %v: %s", err, r.body)
	}
	if len(outer) != 1 || outer["error"] == nil {
		t.Fatalf("error answer %s: want exactly one key, error", r.body)
	}
	dec := json.NewDecoder(bytes.NewReader(outer["error"]))
	dec.DisallowUnknownFields()
	var e apiError
	if err := dec.Decode(&e); err != nil {
		t.Fatalf("error answer %s: %v", r.body, err)
	}
	if e.Code == "" || e.Message == "" {
		t.Fatalf("error answer %s: want a code and a message", r.body)
	}
	return e
}

// wantError checks that r is a JSON error with this status and code.
func wantError(t *testing.T, r *response, status int, code string) apiError {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d, want %d (%s): %s", r.status, status, code, r.body)
	}
	e := errorBody(t, r)
	if e.Code != code {
		t.Fatalf("error code %q, want %q: %s", e.Code, code, r.body)
	}
	return e
}

// runDoc is the run record as the API shows it.
type runDoc struct {
	ID          string         `json:"id"`
	Pipeline    string         `json:"pipeline"`
	State       string         `json:"state"`
	Reason      string         `json:"reason"`
	Params      map[string]any `json:"params"`
	Trigger     string         `json:"trigger"`
	LogicalDate string         `json:"logical_date"`
	CreatedAt   *time.Time     `json:"created_at"`
	StartedAt   *time.Time     `json:"started_at"`
	EndedAt     *time.Time     `json:"ended_at"`
	Tasks       []struct {
		Name     string          `json:"name"`
		State    string          `json:"state"`
		Reason   string          `json:"reason"`
		Attempts int             `json:"attempts"`
		Outputs  json.RawMessage `json:"outputs"`
	} `json:"tasks"`
}

// trigger triggers a run through the API and returns its record.
func (f *fixture) trigger(t *testing.T, token string, body any) runDoc {
	t.Helper()
	var run runDoc
	wantJSON(t, f.post(t, "/api/v1/runs", token, body), http.StatusCreated, &run)
	if run.ID == "" {
		t.Fatalf("trigger %v: no run id", body)
	}
	return run
}

// sseEvent is one Server-Sent Event.
type sseEvent struct {
	name string
	data []byte
}

// stream is a followed run log.
type stream struct {
	t      *testing.T
	resp   *http.Response
	r      *bufio.Reader
	cancel context.CancelFunc
}

// follow opens GET path (a run's logs, with follow=true or else with Accept:
// text/event-stream) as an event stream. It fails the test unless the answer
// is 200 text/event-stream. The stream ends within 45s at the latest.
func (f *fixture) follow(t *testing.T, path, token string) *stream {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	hr, err := http.NewRequestWithContext(ctx, "GET", f.ts.URL+path, nil)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	hr.Header.Set("Authorization", "Bearer "+token)
	if !strings.Contains(path, "follow=") {
		hr.Header.Set("Accept", "text/event-stream")
	}
	resp, err := http.DefaultClient.Do(hr)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	s := &stream{t: t, resp: resp, r: bufio.NewReader(resp.Body), cancel: cancel}
	t.Cleanup(s.close)
	if resp.StatusCode != http.StatusOK {
		data, _ := io.ReadAll(resp.Body)
		t.Fatalf("follow %s: status %d: %s", path, resp.StatusCode, data)
	}
	if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); mt != "text/event-stream" {
		t.Fatalf("follow %s: Content-Type %q, want text/event-stream", path, resp.Header.Get("Content-Type"))
	}
	return s
}

func (s *stream) close() {
	s.cancel()
	s.resp.Body.Close()
}

// next returns the next event, or false at the end of the stream.
func (s *stream) next() (sseEvent, bool) {
	s.t.Helper()
	var ev sseEvent
	for {
		line, err := s.r.ReadString('\n')
		if err != nil {
			if errors.Is(err, io.EOF) && line == "" && ev.name == "" {
				return sseEvent{}, false
			}
			s.t.Fatalf("read event stream: %v (partial line %q)", err, line)
		}
		line = strings.TrimSuffix(line, "\n")
		switch {
		case line == "":
			if ev.name != "" || ev.data != nil {
				return ev, true
			}
		case strings.HasPrefix(line, ":"): // a comment: keep-alive
		case strings.HasPrefix(line, "event: "):
			ev.name = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			ev.data = append(ev.data, strings.TrimPrefix(line, "data: ")...)
		default:
			s.t.Fatalf("event stream: unexpected line %q", line)
		}
	}
}

// logLineDoc is a log line as the API shows it.
type logLineDoc struct {
	AttemptID int64     `json:"attempt_id"`
	Task      string    `json:"task"`
	Index     int       `json:"index"`
	Attempt   int       `json:"attempt"`
	Seq       int64     `json:"seq"`
	Time      time.Time `json:"time"`
	Stream    string    `json:"stream"`
	Text      string    `json:"text"`
}

// attemptDoc is an attempt as the API shows it.
type attemptDoc struct {
	ID       int64    `json:"id"`
	RunID    string   `json:"run_id"`
	Task     string   `json:"task"`
	Index    int      `json:"index"`
	Number   int      `json:"number"`
	State    string   `json:"state"`
	Executor string   `json:"executor"`
	Labels   []string `json:"labels"`
	Agent    string   `json:"agent"`
	ExitCode *int     `json:"exit_code"`
}

// followed is what following a run's log until its end saw.
type followed struct {
	lines    []logLineDoc
	attempts []attemptDoc
	end      runDoc
}

// untilEnd reads the stream to its end event, which must be the last.
func (s *stream) untilEnd() followed {
	s.t.Helper()
	var out followed
	for {
		ev, ok := s.next()
		if !ok {
			s.t.Fatal("the event stream ended without an end event")
		}
		switch ev.name {
		case "line":
			var l logLineDoc
			mustUnmarshal(s.t, ev.data, &l)
			out.lines = append(out.lines, l)
		case "attempt":
			var a attemptDoc
			mustUnmarshal(s.t, ev.data, &a)
			out.attempts = append(out.attempts, a)
		case "end":
			mustUnmarshal(s.t, ev.data, &out.end)
			if ev, ok := s.next(); ok {
				s.t.Fatalf("event %s %s after the end event", ev.name, ev.data)
			}
			return out
		default:
			s.t.Fatalf("unknown event %q: %s", ev.name, ev.data)
		}
	}
}

// waitRun follows a run's log until the run ends and returns its summary.
func (f *fixture) waitRun(t *testing.T, id, token string) runDoc {
	t.Helper()
	s := f.follow(t, "/api/v1/runs/"+id+"/logs?follow=true", token)
	defer s.close()
	return s.untilEnd().end
}

func mustUnmarshal(t *testing.T, data []byte, v any) {
	t.Helper()
	if err := json.Unmarshal(data, v); err != nil {
		t.Fatalf("decode %s: %v", data, err)
	}
}

// counts are how many of each thing the store holds.
type counts struct {
	runs, attempts, users, tokens, audit int
}

// count reads the store's counts of runs, attempts, users, tokens and audit
// entries.
func (f *fixture) count(t *testing.T) counts {
	t.Helper()
	var c counts
	err := f.store.View(f.ctx, func(tx store.Tx) error {
		runs, err := tx.Runs(f.ctx, store.RunFilter{})
		if err != nil {
			return err
		}
		c.runs = len(runs)
		atts, err := tx.Attempts(f.ctx, store.AttemptFilter{})
		if err != nil {
			return err
		}
		c.attempts = len(atts)
		users, err := tx.Users(f.ctx)
		if err != nil {
			return err
		}
		c.users = len(users)
		toks, err := tx.Tokens(f.ctx)
		if err != nil {
			return err
		}
		c.tokens = len(toks)
		entries, err := tx.Audit(f.ctx, store.AuditFilter{Limit: 100000})
		if err != nil {
			return err
		}
		c.audit = len(entries)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// auditDoc is an audit entry as the API shows it.
type auditDoc struct {
	ID      int64          `json:"id"`
	Time    time.Time      `json:"time"`
	Actor   string         `json:"actor"`
	Action  string         `json:"action"`
	Target  string         `json:"target"`
	Detail  map[string]any `json:"detail"`
	Address string         `json:"address"`
}

// audit lists every audit entry through the API, newest first.
func (f *fixture) audit(t *testing.T, query string) []auditDoc {
	t.Helper()
	var out []auditDoc
	cursor := ""
	for {
		path := "/api/v1/audit?limit=500" + query
		if cursor != "" {
			path += "&cursor=" + cursor
		}
		var page struct {
			Entries    []auditDoc `json:"entries"`
			NextCursor string     `json:"next_cursor"`
		}
		wantJSON(t, f.get(t, path, f.tokens[auth.RoleAdmin]), http.StatusOK, &page)
		out = append(out, page.Entries...)
		if page.NextCursor == "" {
			return out
		}
		cursor = page.NextCursor
	}
}

// findAudit returns the entries with this action and target.
func findAudit(entries []auditDoc, action, target string) []auditDoc {
	var out []auditDoc
	for _, e := range entries {
		if e.Action == action && e.Target == target {
			out = append(out, e)
		}
	}
	return out
}

// writeFile writes a project file and gives it a modification time of its
// own, so the watcher sees the change whatever the file system's clock.
func (f *fixture) writeFile(t *testing.T, name, content string) {
	t.Helper()
	path := filepath.Join(f.dir, name)
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	mtime := time.Now().Add(time.Duration(fileGen.Add(1)) * time.Second)
	if err := os.Chtimes(path, mtime, mtime); err != nil {
		t.Fatal(err)
	}
}

var fileGen atomic.Int64

// reload makes the watcher load the project again; it must see a change.
func (f *fixture) reload(t *testing.T) {
	t.Helper()
	changed, err := f.watcher.Reload(f.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !changed {
		t.Fatal("the watcher saw no change")
	}
}

// session is a login session: its cookie and CSRF token.
type session struct {
	cookie *http.Cookie
	csrf   string
}

// login logs in through the API.
func (f *fixture) login(t *testing.T, user, password string) session {
	t.Helper()
	r := f.send(t, req{method: "POST", path: "/api/v1/auth/login", body: map[string]string{"username": user, "password": password}})
	var me struct {
		CSRFToken string `json:"csrf_token"`
	}
	wantJSON(t, r, http.StatusOK, &me)
	for _, c := range (&http.Response{Header: r.header}).Cookies() {
		if c.Name == auth.SessionCookieName {
			return session{cookie: &http.Cookie{Name: c.Name, Value: c.Value}, csrf: me.CSRFToken}
		}
	}
	t.Fatalf("login as %s set no %s cookie", user, auth.SessionCookieName)
	return session{}
}
