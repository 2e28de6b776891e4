package client_test

import (
	"context"
	"errors"
	"github.com/dray-dev/dray/internal/api"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/dray-dev/dray/internal/agent"
	"github.com/dray-dev/dray/internal/auth"
	"github.com/dray-dev/dray/internal/blob"
	"github.com/dray-dev/dray/internal/client"
	"github.com/dray-dev/dray/internal/control"
	"github.com/dray-dev/dray/internal/executor"
	"github.com/dray-dev/dray/internal/executor/local"
	"github.com/dray-dev/dray/internal/project"
	"github.com/dray-dev/dray/internal/scheduler"
	"github.com/dray-dev/dray/internal/server"
	"github.com/dray-dev/dray/internal/spec"
	"github.com/dray-dev/dray/internal/store/sqlite"
)

// The client against the real server (internal/server), wired as `dray
// server` wires it: SQLite, the control plane, auth, the project watcher, the
// scheduler and an in-process agent with the local executor.

var projectFiles = map[string]string{
	"dray.yaml": "version: 1\n",
	"pipelines/hello.yaml": `version: 1
params:
  who: { type: string, default: world }
  n: { type: integer, default: 1 }
tasks:
  - name: greet
    run: echo "hello ${{ params.who }} ${{ params.n }}"
  - name: list
    needs: [greet]
    run: |
      echo '::dray-output::{"ids": ["a", "b"]}'
  - name: each
    needs: [list]
    for_each: ${{ tasks.list.outputs.ids }}
    run: echo "item ${{ item }}"
`,
	"pipelines/fails.yaml": `version: 1
tasks:
  - name: boom
    run: echo "about to fail"; test -f fixed
`,
	"pipelines/block.yaml": `version: 1
tasks:
  - name: work
    run: touch started; sleep 60
`,
	"pipelines/nightly.yaml": `version: 1
schedule: { cron: "0 2 * * *", timezone: UTC }
tasks:
  - name: t
    run: "true"
`,
}

// schedNow is the scheduler's clock: fixed, so no schedule fires by itself.
var schedNow = time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC)

type fixture struct {
	dir    string
	url    string
	auth   *auth.Service
	tokens map[auth.Role]string
}

// logBuffer keeps the server's logs, shown when a test fails.
type logBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	for name, content := range projectFiles {
		path := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	logs := &logBuffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	watcher, err := project.Open(ctx, dir, log)
	if err != nil {
		t.Fatal(err)
	}
	if errs := watcher.Current().Errors; len(errs) > 0 {
		t.Fatalf("the project has errors: %v", errs)
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
	authSvc := auth.New(auth.Config{Store: st, Logger: log, Hash: auth.HashParams{Memory: 64, Time: 1, Threads: 1}})
	sched := scheduler.New(scheduler.Config{Store: st, Control: svc, Pipelines: watcher.Pipelines, Logger: log,
		Now: func() time.Time { return schedNow }})
	srv := server.New(server.Config{Store: st, Control: svc, Auth: authSvc, Project: watcher, Scheduler: sched,
		Logger: log, Version: "test", LogPoll: 20 * time.Millisecond})
	ts := httptest.NewServer(srv)
	ag := agent.New(agent.Config{
		Info:      control.AgentInfo{ID: "client-test", Host: control.Hostname(), PID: os.Getpid(), Version: "test", Capacity: 8},
		Control:   svc,
		Executors: map[string]executor.Executor{spec.ExecLocal: local.New(local.Config{Logger: log, TempDir: t.TempDir()})},
		Dir:       dir,
		Logger:    log,
		KillGrace: 2 * time.Second,
	})
	workCtx, stopWork := context.WithCancel(ctx)
	g, gctx := errgroup.WithContext(workCtx)
	g.Go(func() error { return svc.Listen(gctx) })
	g.Go(func() error { return sched.Run(gctx) })
	g.Go(func() error { return ag.Run(gctx) })
	t.Cleanup(func() {
		ts.Close()
		stopWork()
		if err := g.Wait(); err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("workers: %v", err)
		}
		svc.Close()
		bucket.Close()
		st.Close()
		if t.Failed() {
			logs.mu.Lock()
			t.Logf("server logs:\n%s", logs.b.String())
			logs.mu.Unlock()
		}
	})
	if _, err := sched.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	f := &fixture{dir: dir, url: ts.URL, auth: authSvc, tokens: map[auth.Role]string{}}
	if _, err := authSvc.CreateUser(ctx, auth.System("test"), "ann", auth.RoleAdmin, "ann-password-1"); err != nil {
		t.Fatal(err)
	}
	for _, role := range []auth.Role{auth.RoleViewer, auth.RoleOperator, auth.RoleAdmin} {
		secret, _, err := authSvc.CreateToken(ctx, auth.System("test"), string(role)+"-token", role, 0)
		if err != nil {
			t.Fatal(err)
		}
		f.tokens[role] = secret
	}
	return f
}

func (f *fixture) client(t *testing.T, role auth.Role) *client.Client {
	t.Helper()
	c, err := client.New(f.url, f.tokens[role])
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// follow follows a run's log to its end and returns the events.
func follow(t *testing.T, c *client.Client, id string, opts client.LogOptions) []client.LogEvent {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	var events []client.LogEvent
	if err := c.FollowLogs(ctx, id, opts, func(ev client.LogEvent) error {
		events = append(events, ev)
		return nil
	}); err != nil {
		t.Fatalf("follow run %s: %v", id, err)
	}
	if len(events) == 0 || events[len(events)-1].Kind != client.EventEnd {
		t.Fatalf("follow run %s: the last event is not the end: %+v", id, events)
	}
	return events
}

func wantAPIError(t *testing.T, err error, status int, code string) *client.Error {
	t.Helper()
	var apiErr *client.Error
	if !errors.As(err, &apiErr) {
		t.Fatalf("err %v (%T), want a *client.Error %d %s", err, err, status, code)
	}
	if apiErr.Status != status || apiErr.Code != code || apiErr.Message == "" {
		t.Fatalf("error %+v, want %d %s with a message", apiErr, status, code)
	}
	return apiErr
}

func TestAgainstServerRuns(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	op := f.client(t, auth.RoleOperator)

	me, err := op.Me(ctx)
	if err != nil || me.Role != "operator" || me.Kind != "token" {
		t.Fatalf("Me = %+v, %v", me, err)
	}
	if st, err := op.Healthz(ctx); err != nil || st.Status == "" {
		t.Fatalf("Healthz = %+v, %v", st, err)
	}
	if st, err := op.Readyz(ctx); err != nil || st.Status == "" {
		t.Fatalf("Readyz = %+v, %v", st, err)
	}
	pl, err := op.Pipelines(ctx)
	if err != nil || len(pl.Pipelines) != 4 || len(pl.Errors) != 0 {
		t.Fatalf("Pipelines = %+v, %v", pl, err)
	}
	p, err := op.Pipeline(ctx, "hello")
	if err != nil || len(p.Params) != 2 || len(p.Tasks) != 3 || !p.Tasks[2].ForEach {
		t.Fatalf("Pipeline = %+v, %v", p, err)
	}

	// Args are read by type; typed params go as they are.
	rec, err := op.Trigger(ctx, api.TriggerRequest{Pipeline: "hello", Args: []string{"n=3"}, Params: map[string]any{"who": "client"}, LogicalDate: "2026-02-01"})
	if err != nil {
		t.Fatal(err)
	}
	if rec.ID == "" || rec.Params["n"] != 3.0 || rec.Params["who"] != "client" || rec.LogicalDate != "2026-02-01" || rec.Trigger != "api" || len(rec.Tasks) != 3 {
		t.Fatalf("Trigger = %+v", rec)
	}
	events := follow(t, op, rec.ID, client.LogOptions{})
	var texts []string
	attempts := 0
	for _, ev := range events {
		switch ev.Kind {
		case client.EventLine:
			texts = append(texts, ev.Line.Task+": "+ev.Line.Text)
		case client.EventAttempt:
			attempts++
		}
	}
	if end := events[len(events)-1].Run; end.ID != rec.ID || end.State != "succeeded" {
		t.Errorf("end event %+v", end)
	}
	if got := strings.Join(texts, "\n"); !strings.Contains(got, "greet: hello client 3") || !strings.Contains(got, "each: item b") {
		t.Errorf("lines:\n%s", got)
	}
	if attempts < 4 {
		t.Errorf("%d attempt events, want one for each of the 4 attempts at least", attempts)
	}

	// The run by prefix and as last: the full record.
	for _, id := range []string{rec.ID[:12], "last"} {
		got, err := op.Run(ctx, id)
		if err != nil || got.ID != rec.ID || got.State != "succeeded" || len(got.Tasks[2].Instances) != 2 {
			t.Fatalf("Run(%s) = %+v, %v", id, got, err)
		}
	}
	atts, err := op.Attempts(ctx, rec.ID, "each")
	if err != nil || len(atts) != 2 || !atts[1].HasItem() || atts[1].Index != 1 {
		t.Fatalf("Attempts = %+v, %v", atts, err)
	}
	page, err := op.AttemptLogs(ctx, atts[1].ID, 0, 0)
	if err != nil || len(page.Lines) != 1 || page.Lines[0].Text != "item b" || page.Next != page.Lines[0].Seq {
		t.Fatalf("AttemptLogs = %+v, %v", page, err)
	}
	if page, err = op.AttemptLogs(ctx, atts[1].ID, page.Next, 10); err != nil || len(page.Lines) != 0 {
		t.Fatalf("AttemptLogs after the last = %+v, %v", page, err)
	}
	all, err := op.RunLogs(ctx, rec.ID, client.LogOptions{Task: "greet"})
	if err != nil || len(all.Lines) != 1 || all.Lines[0].Text != "hello client 3" {
		t.Fatalf("RunLogs = %+v, %v", all, err)
	}

	// A failed run, retried once it can succeed.
	failed, err := op.Trigger(ctx, api.TriggerRequest{Pipeline: "fails"})
	if err != nil {
		t.Fatal(err)
	}
	if end := follow(t, op, failed.ID, client.LogOptions{Task: "boom"}); end[len(end)-1].Run.State != "failed" {
		t.Fatalf("fails ended %+v", end[len(end)-1].Run)
	}
	if err := os.WriteFile(filepath.Join(f.dir, "fixed"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := op.Retry(ctx, failed.ID); err != nil {
		t.Fatal(err)
	}
	if end := follow(t, op, failed.ID, client.LogOptions{}); end[len(end)-1].Run.State != "succeeded" {
		t.Fatalf("the retry ended %+v", end[len(end)-1].Run)
	}
	_, err = op.Retry(ctx, failed.ID)
	wantAPIError(t, err, http.StatusConflict, "conflict")

	// Cancel a run whose task blocks.
	blocked, err := op.Trigger(ctx, api.TriggerRequest{Pipeline: "block"})
	if err != nil {
		t.Fatal(err)
	}
	started := false
	ctxF, cancelF := context.WithTimeout(ctx, 45*time.Second)
	defer cancelF()
	err = op.FollowLogs(ctxF, blocked.ID, client.LogOptions{}, func(ev client.LogEvent) error {
		if ev.Kind == client.EventAttempt && ev.Attempt.State == "running" && !started {
			started = true
			if _, err := op.Cancel(ctx, blocked.ID, true); err != nil {
				return err
			}
		}
		if ev.Kind == client.EventEnd && ev.Run.State != "canceled" {
			t.Errorf("the blocked run ended %s", ev.Run.State)
		}
		return nil
	})
	if err != nil || !started {
		t.Fatalf("follow the canceled run: %v (started %v)", err, started)
	}
	_, err = op.Cancel(ctx, blocked.ID, false)
	wantAPIError(t, err, http.StatusConflict, "conflict")

	// Pages of runs, newest first.
	var ids []string
	filter := client.RunFilter{Limit: 2}
	for {
		list, err := op.Runs(ctx, filter)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range list.Runs {
			ids = append(ids, r.Pipeline)
			if r.Tasks != nil {
				t.Errorf("run %s in a list has tasks", r.ID)
			}
		}
		if list.NextCursor == "" {
			break
		}
		filter.Cursor = list.NextCursor
	}
	if got := strings.Join(ids, " "); got != "block fails hello" {
		t.Errorf("runs %q, want block fails hello", got)
	}
	list, err := op.Runs(ctx, client.RunFilter{Pipeline: "fails", States: []string{"succeeded", "failed"}})
	if err != nil || len(list.Runs) != 1 || list.Runs[0].ID != failed.ID {
		t.Fatalf("Runs(fails) = %+v, %v", list, err)
	}
}

func TestAgainstServerErrors(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	op := f.client(t, auth.RoleOperator)

	_, err := op.Trigger(ctx, api.TriggerRequest{Pipeline: "hello", Args: []string{"n=abc"}})
	if e := wantAPIError(t, err, http.StatusBadRequest, "bad_param"); e.Param != "n" {
		t.Errorf("bad param %+v, want param n", e)
	}
	_, err = op.Trigger(ctx, api.TriggerRequest{Pipeline: "nope"})
	wantAPIError(t, err, http.StatusNotFound, "not_found")
	_, err = op.Run(ctx, "zzzz")
	wantAPIError(t, err, http.StatusNotFound, "not_found")
	_, err = op.Runs(ctx, client.RunFilter{States: []string{"bogus"}})
	wantAPIError(t, err, http.StatusBadRequest, "bad_request")

	_, err = f.client(t, auth.RoleViewer).Trigger(ctx, api.TriggerRequest{Pipeline: "hello"})
	wantAPIError(t, err, http.StatusForbidden, "forbidden")
	_, err = f.client(t, auth.RoleOperator).Users(ctx)
	wantAPIError(t, err, http.StatusForbidden, "forbidden")

	for _, tok := range []string{"", "dray_bogus"} {
		c, err := client.New(f.url, tok)
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.Runs(ctx, client.RunFilter{})
		wantAPIError(t, err, http.StatusUnauthorized, "unauthenticated")
		// Health needs no token.
		if _, err := c.Healthz(ctx); err != nil {
			t.Errorf("Healthz without a good token: %v", err)
		}
	}
}

func TestAgainstServerAdmin(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	admin := f.client(t, auth.RoleAdmin)

	u, err := admin.CreateUser(ctx, api.UserRequest{Name: "bob", Role: "viewer", Password: "bob-password-1"})
	if err != nil || u.Name != "bob" || u.Role != "viewer" {
		t.Fatalf("CreateUser = %+v, %v", u, err)
	}
	_, err = admin.CreateUser(ctx, api.UserRequest{Name: "bob", Role: "viewer", Password: "bob-password-1"})
	wantAPIError(t, err, http.StatusConflict, "conflict")
	users, err := admin.Users(ctx)
	if err != nil || len(users) != 2 {
		t.Fatalf("Users = %+v, %v", users, err)
	}
	if err := admin.DeleteUser(ctx, "bob"); err != nil {
		t.Fatal(err)
	}
	wantAPIError(t, admin.DeleteUser(ctx, "bob"), http.StatusNotFound, "not_found")

	tok, err := admin.CreateToken(ctx, api.TokenRequest{Name: "ci", Role: "operator", ExpiresIn: "1h"})
	if err != nil || tok.ID == "" || tok.Secret == "" || tok.ExpiresAt == nil {
		t.Fatalf("CreateToken = %+v, %v", tok, err)
	}
	ci, err := client.New(f.url, tok.Secret)
	if err != nil {
		t.Fatal(err)
	}
	if me, err := ci.Me(ctx); err != nil || me.Role != "operator" || !strings.Contains(me.Name, tok.ID) {
		t.Fatalf("Me with the new token = %+v, %v", me, err)
	}
	toks, err := admin.Tokens(ctx)
	if err != nil || len(toks) != 4 {
		t.Fatalf("Tokens = %+v, %v", toks, err)
	}
	if err := admin.RevokeToken(ctx, tok.ID); err != nil {
		t.Fatal(err)
	}
	_, err = ci.Me(ctx)
	wantAPIError(t, err, http.StatusUnauthorized, "unauthenticated")

	audit, err := admin.Audit(ctx, client.AuditFilter{Limit: 500})
	if err != nil {
		t.Fatal(err)
	}
	actions := map[string]bool{}
	for _, e := range audit.Entries {
		actions[e.Action] = true
	}
	if len(audit.Entries) == 0 || len(actions) < 2 {
		t.Errorf("Audit = %+v", audit)
	}

	// Schedules: pause, resume, backfill.
	scheds, err := admin.Schedules(ctx)
	if err != nil || len(scheds) != 1 || scheds[0].Pipeline != "nightly" || scheds[0].NextFire == nil {
		t.Fatalf("Schedules = %+v, %v", scheds, err)
	}
	if s, err := admin.Pause(ctx, "nightly"); err != nil || !s.Paused {
		t.Fatalf("Pause = %+v, %v", s, err)
	}
	if s, err := admin.Resume(ctx, "nightly"); err != nil || s.Paused {
		t.Fatalf("Resume = %+v, %v", s, err)
	}
	_, err = admin.Pause(ctx, "hello")
	wantAPIError(t, err, http.StatusNotFound, "not_found")
	bf, err := admin.Backfill(ctx, api.BackfillRequest{Pipeline: "nightly", From: "2026-01-01", To: "2026-01-03"})
	if err != nil || len(bf.Runs) != 3 || bf.Runs[0].Trigger != "backfill" { // "to" takes the whole day
		t.Fatalf("Backfill = %+v, %v", bf, err)
	}
	bf, err = admin.Backfill(ctx, api.BackfillRequest{Pipeline: "nightly", From: "2026-01-01", To: "2026-01-03"})
	if err != nil || len(bf.Runs) != 0 || len(bf.Skipped) != 3 {
		t.Fatalf("second Backfill = %+v, %v", bf, err)
	}

	agents, err := admin.Agents(ctx)
	if err != nil || len(agents) != 1 || agents[0].ID != "client-test" {
		t.Fatalf("Agents = %+v, %v", agents, err)
	}
}
