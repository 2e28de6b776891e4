package server_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/dray-dev/dray/internal/agent"
	"github.com/dray-dev/dray/internal/auth"
	"github.com/dray-dev/dray/internal/blob"
	"github.com/dray-dev/dray/internal/control"
	"github.com/dray-dev/dray/internal/executor"
	"github.com/dray-dev/dray/internal/executor/local"
	"github.com/dray-dev/dray/internal/nettest"
	"github.com/dray-dev/dray/internal/project"
	"github.com/dray-dev/dray/internal/scheduler"
	"github.com/dray-dev/dray/internal/server"
	"github.com/dray-dev/dray/internal/spec"
	"github.com/dray-dev/dray/internal/store/postgres"
	"github.com/dray-dev/dray/internal/store/postgres/pgtest"
)

// TestDatabaseGoesAway: a PostgreSQL that goes away while a task runs makes
// the server report not-ready; when it comes back the server is ready again
// by itself, and the run finishes with its logs, losing nothing.
func TestDatabaseGoesAway(t *testing.T) {
	raw := pgtest.URL(t)
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	proxy := nettest.NewCutter(t, u.Host)
	u.Host = proxy.Addr()

	ctx := context.Background()
	log := slog.New(slog.DiscardHandler)
	st, err := postgres.Open(ctx, u.String(), postgres.Options{Logger: log, LockTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	dir := t.TempDir()
	if err := os.CopyFS(dir, os.DirFS("testdata/project")); err != nil {
		t.Fatal(err)
	}
	// A task that is running when the database goes away.
	if err := os.WriteFile(dir+"/pipelines/cut.yaml", []byte(`version: 1
tasks:
  - name: long
    run: |
      echo "before the cut"
      for i in $(seq 600); do [ -f cut-over ] && break; sleep 0.05; done
      echo "after the cut"
      touch ended
  - name: next
    needs: [long]
    run: echo "next ran"
`), 0o644); err != nil {
		t.Fatal(err)
	}
	watcher, err := project.Open(ctx, dir, log)
	if err != nil {
		t.Fatal(err)
	}
	bucket, err := blob.Open(ctx, "file://storage", t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { bucket.Close() })
	svc := control.New(control.Config{Store: st, Blob: bucket, Logger: log, Host: control.Hostname()})
	t.Cleanup(svc.Close)
	authSvc := auth.New(auth.Config{Store: st, Logger: log, Hash: fastHash})
	sched := scheduler.New(scheduler.Config{Store: st, Control: svc, Pipelines: watcher.Pipelines, Logger: log})
	ts := httptest.NewServer(server.New(server.Config{Store: st, Control: svc, Auth: authSvc, Project: watcher, Scheduler: sched, Logger: log}))
	t.Cleanup(ts.Close)
	ag := agent.New(agent.Config{
		Info:      control.AgentInfo{ID: "agent-dbdown", Host: control.Hostname(), PID: os.Getpid(), Capacity: 4},
		Control:   svc,
		Executors: map[string]executor.Executor{spec.ExecLocal: local.New(local.Config{Logger: log, TempDir: t.TempDir()})},
		Dir:       dir, Logger: log, Poll: 500 * time.Millisecond,
	})
	workCtx, stop := context.WithCancel(ctx)
	g, gctx := errgroup.WithContext(workCtx)
	g.Go(func() error { return svc.Listen(gctx) })
	g.Go(func() error { return ag.Run(gctx) })
	t.Cleanup(func() {
		stop()
		if err := g.Wait(); err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("workers: %v", err)
		}
	})

	token, _, err := authSvc.CreateToken(ctx, auth.System("test"), "op", auth.RoleOperator, 0)
	if err != nil {
		t.Fatal(err)
	}
	call := func(method, path, body string) (int, string) {
		req, _ := http.NewRequest(method, ts.URL+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := ts.Client().Do(req)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	waitFor := func(what string, timeout time.Duration, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(timeout)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within %s", what, timeout)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}

	code, body := call("POST", "/api/v1/runs", `{"pipeline":"cut"}`)
	if code != http.StatusCreated {
		t.Fatalf("trigger: %d %s", code, body)
	}
	waitFor("the task to start", 30*time.Second, func() bool {
		code, body := call("GET", "/api/v1/runs/last/logs", "")
		return code == 200 && strings.Contains(body, "before the cut")
	})

	proxy.Cut()
	waitFor("readyz to say not ready", 20*time.Second, func() bool {
		code, body := call("GET", "/readyz", "")
		return code == http.StatusServiceUnavailable && strings.Contains(body, `"not_ready"`)
	})
	if code, body := call("GET", "/api/v1/runs/last", ""); code < 500 || !strings.Contains(body, `"error"`) {
		t.Errorf("an API call without a database: %d %s, want a JSON 5xx error", code, body)
	}
	// The task ends while the database is away: its result waits in the agent.
	if err := os.WriteFile(dir+"/cut-over", nil, 0o644); err != nil {
		t.Fatal(err)
	}
	waitFor("the task to end", 30*time.Second, func() bool {
		_, err := os.Stat(dir + "/ended")
		return err == nil
	})
	proxy.Restore()
	waitFor("readyz to recover", 30*time.Second, func() bool {
		code, _ := call("GET", "/readyz", "")
		return code == http.StatusOK
	})
	var rec string
	waitFor("the run to end", 60*time.Second, func() bool {
		code, body := call("GET", "/api/v1/runs/last", "")
		rec = body
		return code == 200 && (strings.Contains(body, `"state":"succeeded","params"`) || strings.Contains(body, `"state":"failed","params"`))
	})
	if !strings.Contains(rec, `"state":"succeeded","params"`) {
		t.Fatalf("run after the database came back: %s", rec)
	}
	_, logs := call("GET", "/api/v1/runs/last/logs", "")
	for _, line := range []string{"before the cut", "after the cut", "next ran"} {
		if !strings.Contains(logs, line) {
			t.Errorf("the run's logs lack %q: %s", line, logs)
		}
	}
	_, atts := call("GET", "/api/v1/runs/last/attempts", "")
	if n := strings.Count(atts, `"number":`); n != 2 {
		t.Errorf("%d attempts, want 2 (nothing ran twice): %s", n, atts)
	}
}
