package agent_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dray-dev/dray/internal/agent"
	"github.com/dray-dev/dray/internal/auth"
	"github.com/dray-dev/dray/internal/blob"
	"github.com/dray-dev/dray/internal/client"
	"github.com/dray-dev/dray/internal/control"
	"github.com/dray-dev/dray/internal/engine"
	"github.com/dray-dev/dray/internal/executor"
	"github.com/dray-dev/dray/internal/executor/local"
	"github.com/dray-dev/dray/internal/nettest"
	"github.com/dray-dev/dray/internal/project"
	"github.com/dray-dev/dray/internal/server"
	"github.com/dray-dev/dray/internal/spec"
	"github.com/dray-dev/dray/internal/store"
	"github.com/dray-dev/dray/internal/store/sqlite"
)

// The pipelines of the remote agent tests.
const remotePipelines = `version: 1
name: routed
tasks:
  - {name: anywhere, run: "echo anywhere"}
  - {name: on_gpu, labels: [gpu], run: "echo gpu"}
  - {name: on_eu_gpu, labels: [eu, gpu], run: "echo eu-gpu"}
---
version: 1
name: nowhere
tasks:
  - {name: needs_tpu, labels: [tpu], run: "echo never"}
---
version: 1
name: chatty
tasks:
  - name: talk
    run: |
      i=1
      while [ $i -le 3000 ]; do
        echo "line $i"
        if [ $((i % 100)) -eq 0 ]; then sleep 0.1; fi
        i=$((i+1))
      done
---
version: 1
name: slow
tasks:
  - {name: sleep, run: "sleep ${{ params.seconds }}"}
params:
  seconds: {type: integer, default: 30}
`

// remote is a dray server on loopback HTTP with no agent of its own; tests
// start remote agents that reach it through the agent protocol.
type remote struct {
	t       *testing.T
	ctx     context.Context
	dir     string
	store   *sqlite.Store
	svc     *control.Service
	auth    *auth.Service
	watcher *project.Watcher
	srv     *server.Server
	ts      *httptest.Server
	logs    *syncBuffer
	token   string // of role agent
	admin   string // of role admin
}

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

// newRemote starts a server whose agent lease is 10s, or lease when given.
// Nothing sweeps unless a test calls Sweep.
func newRemote(t *testing.T, lease ...time.Duration) *remote {
	t.Helper()
	agentLease := 10 * time.Second
	if len(lease) > 0 {
		agentLease = lease[0]
	}
	ctx := context.Background()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, spec.ConfigFile), []byte("version: 1\nproject: remote\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "pipelines"), 0o755); err != nil {
		t.Fatal(err)
	}
	for i, doc := range strings.Split(remotePipelines, "---\n") {
		if err := os.WriteFile(filepath.Join(dir, "pipelines", fmt.Sprintf("p%d.yaml", i)), []byte(doc), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	logs := &syncBuffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	watcher, err := project.Open(ctx, dir, log)
	if err != nil {
		t.Fatal(err)
	}
	if errs := watcher.Current().Errors; len(errs) > 0 {
		t.Fatalf("project errors: %v", errs)
	}
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "dray.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	bucket, err := blob.Open(ctx, "file://storage", t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	svc := control.New(control.Config{Store: st, Blob: bucket, Logger: log, AgentLease: agentLease})
	authSvc := auth.New(auth.Config{Store: st, Logger: log, Hash: auth.HashParams{Memory: 64, Time: 1, Threads: 1}})
	srv := server.New(server.Config{Store: st, Control: svc, Auth: authSvc, Project: watcher, Logger: log, Version: "test"})
	r := &remote{t: t, ctx: ctx, dir: dir, store: st, svc: svc, auth: authSvc, watcher: watcher, srv: srv,
		ts: httptest.NewServer(srv), logs: logs}
	r.token = r.newToken("agents", auth.RoleAgent)
	r.admin = r.newToken("root", auth.RoleAdmin)
	t.Cleanup(func() {
		srv.Stop()
		r.ts.Close()
		svc.Close()
		bucket.Close()
		st.Close()
		if t.Failed() {
			t.Logf("server logs:\n%s", logs.String())
		}
	})
	return r
}

func (r *remote) newToken(name string, role auth.Role) string {
	r.t.Helper()
	secret, _, err := r.auth.CreateToken(r.ctx, auth.System("test"), name, role, 0)
	if err != nil {
		r.t.Fatal(err)
	}
	return secret
}

// agentOpts configure a remote agent.
type agentOpts struct {
	url    string // the server's URL (default: the test server)
	token  string // default: the agent token
	labels []string
	ctx    context.Context // the agent stops when it ends (default: with the test)
}

// startAgent runs a remote agent until the test ends; the channel gets what
// Run returned, and is closed after.
func (r *remote) startAgent(id string, o agentOpts) <-chan error {
	r.t.Helper()
	if o.url == "" {
		o.url = r.ts.URL
	}
	if o.token == "" {
		o.token = r.token
	}
	c, err := client.New(o.url, o.token, client.WithTimeout(5*time.Second))
	if err != nil {
		r.t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(r.logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	a := agent.New(agent.Config{
		Info:      control.AgentInfo{ID: id, Host: "test", Labels: o.labels, Version: "test", Capacity: 4},
		Control:   client.NewAgentControl(c, "test"),
		Executors: map[string]executor.Executor{spec.ExecLocal: local.New(local.Config{Logger: log, TempDir: r.t.TempDir()})},
		Dir:       r.dir, Logger: log.With("side", "agent"), Poll: time.Second, KillGrace: 500 * time.Millisecond,
		SpoolDir: r.t.TempDir(), SendTimeout: time.Second,
	})
	if o.ctx == nil {
		o.ctx = r.ctx
	}
	ctx, cancel := context.WithCancel(o.ctx)
	ch := make(chan error, 1)
	stopped := make(chan struct{})
	go func() {
		ch <- a.Run(ctx)
		close(ch)
		close(stopped)
	}()
	r.t.Cleanup(func() {
		cancel()
		select {
		case <-stopped:
		case <-time.After(30 * time.Second):
			r.t.Errorf("agent %s did not stop", id)
		}
	})
	return ch
}

func (r *remote) trigger(pipeline string, params map[string]any) *engine.Run {
	r.t.Helper()
	var p *spec.Pipeline
	for _, q := range r.watcher.Pipelines() {
		if q.Name == pipeline {
			p = q
		}
	}
	if p == nil {
		r.t.Fatalf("no pipeline %s", pipeline)
	}
	run, err := r.svc.Trigger(r.ctx, p, control.TriggerRequest{Params: params})
	if err != nil {
		r.t.Fatal(err)
	}
	return run
}

// waitRun waits for a run to end.
func (r *remote) waitRun(id string) *control.RunRecord {
	r.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		rec, err := r.svc.Record(r.ctx, id)
		if err != nil {
			r.t.Fatal(err)
		}
		if engine.RunState(rec.State).Final() {
			return rec
		}
		time.Sleep(20 * time.Millisecond)
	}
	r.t.Fatalf("run %s did not end", id)
	return nil
}

func (r *remote) attempts(runID, task string) []*engine.Attempt {
	r.t.Helper()
	atts, err := r.svc.Attempts(r.ctx, runID, task)
	if err != nil {
		r.t.Fatal(err)
	}
	return atts
}

func (r *remote) lines(attemptID int64) []store.LogLine {
	r.t.Helper()
	// Through the service: an ended attempt's lines move to blob storage.
	out, err := r.svc.Logs(r.ctx, attemptID, 0, 1_000_000)
	if err != nil {
		r.t.Fatal(err)
	}
	return out
}

// Attempts go to an agent whose labels include all of theirs (a subset, not
// an exact match); one that no live agent can take says why.
func TestRemoteRouting(t *testing.T) {
	r := newRemote(t)
	r.startAgent("plain", agentOpts{})
	r.startAgent("gpu-box", agentOpts{labels: []string{"eu", "gpu", "big"}})
	run := r.trigger("routed", nil)
	if rec := r.waitRun(run.ID); rec.State != "succeeded" {
		t.Fatalf("run: %+v", rec)
	}
	for task, want := range map[string]string{"on_gpu": "gpu-box", "on_eu_gpu": "gpu-box"} {
		if atts := r.attempts(run.ID, task); len(atts) != 1 || atts[0].Agent != want {
			t.Errorf("task %s ran on %v, want %s", task, atts, want)
		}
	}

	stuck := r.trigger("nowhere", nil)
	var rec *control.RunRecord
	for range 100 {
		var err error
		if rec, err = r.svc.Record(r.ctx, stuck.ID); err != nil {
			t.Fatal(err)
		}
		if rec.Tasks[0].Waiting != "" {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	why := rec.Tasks[0].Waiting
	for _, want := range []string{"executor local with labels tpu", "no live agent offers", "plain lacks label tpu", "gpu-box lacks label tpu"} {
		if !strings.Contains(why, want) {
			t.Errorf("waiting = %q, want it to say %q", why, want)
		}
	}
	// The API serves the same reason.
	c, _ := client.New(r.ts.URL, r.admin)
	got, err := c.Run(r.ctx, stuck.ID)
	if err != nil || got.Tasks[0].Waiting != why {
		t.Errorf("API record waiting = %q (%v), want %q", got.Tasks[0].Waiting, err, why)
	}
	if _, err := r.svc.SetAgentState(r.ctx, "gpu-box", control.AgentCordoned); err != nil {
		t.Fatal(err)
	}
	r.trigger("routed", nil)
	// A task only a cordoned agent could take says so.
	deadline := time.Now().Add(10 * time.Second)
	for {
		recs, _ := r.svc.ListRuns(r.ctx, store.RunFilter{Pipeline: "routed", Limit: 1})
		rec, _ := r.svc.Record(r.ctx, recs[0].ID)
		if w := taskWaiting(rec, "on_gpu"); strings.Contains(w, "only gpu-box (cordoned) offer") {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("waiting of a task for a cordoned agent = %q", w)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func taskWaiting(rec *control.RunRecord, task string) string {
	for _, t := range rec.Tasks {
		if t.Name == task {
			return t.Waiting
		}
	}
	return ""
}

// A cancel reaches a remote agent through its heartbeat's long poll and
// stops the task at once.
func TestRemoteCancel(t *testing.T) {
	r := newRemote(t)
	r.startAgent("a1", agentOpts{})
	run := r.trigger("slow", nil)
	for r.attempts(run.ID, "sleep")[0].State != engine.AttemptRunning {
		time.Sleep(10 * time.Millisecond)
	}
	start := time.Now()
	if err := r.svc.Cancel(r.ctx, run.ID, false); err != nil {
		t.Fatal(err)
	}
	rec := r.waitRun(run.ID)
	took := time.Since(start)
	if rec.State != "canceled" || r.attempts(run.ID, "sleep")[0].State != engine.AttemptCanceled {
		t.Fatalf("run %s, attempt %s", rec.State, r.attempts(run.ID, "sleep")[0].State)
	}
	t.Logf("cancel to canceled: %s", took) // bench/ measures it; the contract is 2s
}

// A network cut between agent and server for longer than several log
// batches loses no line and adds none twice, and the result is recorded
// once.
func TestRemoteNetworkCut(t *testing.T) {
	r := newRemote(t)
	proxy := nettest.NewCutter(t, strings.TrimPrefix(r.ts.URL, "http://"))
	r.startAgent("a1", agentOpts{url: "http://" + proxy.Addr()})
	run := r.trigger("chatty", nil)
	for len(r.attempts(run.ID, "talk")) == 0 || r.attempts(run.ID, "talk")[0].State != engine.AttemptRunning {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond)
	proxy.Cut()
	time.Sleep(2 * time.Second) // 10 batch periods
	proxy.Restore()
	rec := r.waitRun(run.ID)
	atts := r.attempts(run.ID, "talk")
	if rec.State != "succeeded" || len(atts) != 1 {
		t.Fatalf("run %s with %d attempts", rec.State, len(atts))
	}
	lines := r.lines(atts[0].ID)
	if len(lines) != 3000 {
		t.Fatalf("%d lines stored, want 3000", len(lines))
	}
	for i, l := range lines {
		if l.Seq != int64(i+1) || l.Text != fmt.Sprintf("line %d", i+1) {
			t.Fatalf("line %d = seq %d %q", i+1, l.Seq, l.Text)
		}
	}
	if !strings.Contains(r.logs.String(), "ship log lines failed; keeping them") {
		t.Error("the cut was not felt: no shipping failed")
	}
}

// Bad credentials and old agents get a clear error and the server keeps
// working.
func TestRemoteRefusals(t *testing.T) {
	r := newRemote(t)
	viewer := r.newToken("looker", auth.RoleViewer)
	done := r.startAgent("nosy", agentOpts{token: viewer})
	if err := waitErr(t, done); err == nil || !strings.Contains(err.Error(), "403") {
		t.Errorf("agent with a viewer token: %v", err)
	}
	done = r.startAgent("bad", agentOpts{token: "dray_000000000000_nope"})
	if err := waitErr(t, done); err == nil || !strings.Contains(err.Error(), "401") {
		t.Errorf("agent with a bad token: %v", err)
	}
	// Revoked while running: the agent stops with the error.
	secret, info, err := r.auth.CreateToken(r.ctx, auth.System("test"), "doomed", auth.RoleAgent, 0)
	if err != nil {
		t.Fatal(err)
	}
	done = r.startAgent("doomed", agentOpts{token: secret})
	waitAgent(t, r, "doomed")
	if err := r.auth.RevokeToken(r.ctx, auth.System("test"), info.ID); err != nil {
		t.Fatal(err)
	}
	if err := waitErr(t, done); err == nil || !strings.Contains(err.Error(), "401") {
		t.Errorf("agent whose token was revoked: %v", err)
	}
	// An agent of another protocol version.
	body := `{"id": "old", "protocol": 0, "capacity": 1}`
	req, _ := http.NewRequest("POST", r.ts.URL+"/api/v1/agent/register", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+r.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	msg, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 400 || !strings.Contains(string(msg), "agent protocol 0") || !strings.Contains(string(msg), `"param":"protocol"`) {
		t.Errorf("old agent: %d %s", resp.StatusCode, msg)
	}
	// The server still works for a good agent.
	r.startAgent("good", agentOpts{})
	if rec := r.waitRun(r.trigger("slow", map[string]any{"seconds": 0}).ID); rec.State != "succeeded" {
		t.Errorf("run after refusals: %s", rec.State)
	}
}

// An admin drains an agent: it claims nothing more, finishes what it runs,
// and stops. It heartbeats while it drains, so a task that outlasts the
// lease is not taken for lost.
func TestRemoteDrain(t *testing.T) {
	r := newRemote(t, 2*time.Second)
	done := r.startAgent("a1", agentOpts{})
	run := r.trigger("slow", map[string]any{"seconds": 4})
	for r.attempts(run.ID, "sleep")[0].State != engine.AttemptRunning {
		time.Sleep(10 * time.Millisecond)
	}
	sweeping, stopSweeping := context.WithCancel(r.ctx)
	defer stopSweeping()
	go func() {
		for sweeping.Err() == nil {
			r.svc.Sweep(sweeping)
			time.Sleep(200 * time.Millisecond)
		}
	}()
	c, _ := client.New(r.ts.URL, r.admin)
	ag, err := c.SetAgentState(r.ctx, "a1", "drain")
	if err != nil || ag.State != control.AgentDraining {
		t.Fatalf("drain: %+v %v", ag, err)
	}
	second := r.trigger("slow", map[string]any{"seconds": 0})
	if err := waitErr(t, done); err != nil {
		t.Fatalf("drained agent stopped with %v", err)
	}
	stopSweeping()
	if atts := r.attempts(run.ID, "sleep"); len(atts) != 1 || atts[0].State != engine.AttemptSucceeded {
		t.Errorf("the running task of a drained agent: %d attempts, the first %s %q", len(atts), atts[0].State, atts[0].Reason)
	}
	if atts := r.attempts(second.ID, "sleep"); atts[0].State != engine.AttemptQueued {
		t.Errorf("a drained agent claimed: %s", atts[0].State)
	}
	if _, err := c.SetAgentState(r.ctx, "nobody", "cordon"); err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("cordon of no agent: %v", err)
	}
}

// An agent token cannot report for an attempt another agent holds, nor
// leave the agent out, and another token cannot act for an agent at all.
func TestRemoteOwnAttemptsOnly(t *testing.T) {
	r := newRemote(t)
	r.startAgent("a1", agentOpts{})
	run := r.trigger("slow", nil)
	for r.attempts(run.ID, "sleep")[0].State != engine.AttemptRunning {
		time.Sleep(10 * time.Millisecond)
	}
	id := r.attempts(run.ID, "sleep")[0].ID
	// a2 is a live agent of the same token; other is another agent token.
	r.startAgent("a2", agentOpts{labels: []string{"nothing-routes-here"}})
	waitAgent(t, r, "a2")
	other := r.newToken("other", auth.RoleAgent)
	attempt := fmt.Sprintf("/api/v1/agent/attempts/%d/", id)
	for _, tc := range []struct{ token, path, body, want string }{
		{r.token, attempt + "finish", `{"agent_id": "", "state": "succeeded", "outputs": {"forged": true}}`, "400"},
		{r.token, attempt + "finish", `{"agent_id": "a2", "state": "succeeded", "outputs": {"forged": true}}`, "409"},
		{r.token, attempt + "finish", `{"agent_id": "ghost", "state": "succeeded"}`, "404"},
		{r.token, attempt + "logs", `{"agent_id": "", "lines": [{"seq": 99, "text": "forged"}]}`, "400"},
		{r.token, attempt + "logs", `{"agent_id": "a2", "lines": [{"seq": 99, "text": "forged"}]}`, "409"},
		{r.token, attempt + "started", `{"agent_id": "", "handle": {"container": "x"}}`, "400"},
		// Another token can neither act for a1 nor take its name while it lives.
		{other, attempt + "finish", `{"agent_id": "a1", "state": "succeeded", "outputs": {"forged": true}}`, "403"},
		{other, attempt + "logs", `{"agent_id": "a1", "lines": [{"seq": 99, "text": "forged"}]}`, "403"},
		{other, "/api/v1/agent/heartbeat", `{"agent_id": "a1", "running": [], "wait_ms": 0}`, "403"},
		{other, "/api/v1/agent/deregister", `{"agent_id": "a1"}`, "403"},
		{other, "/api/v1/agent/register", `{"id": "a1", "protocol": 1, "capacity": 1}`, "403"},
	} {
		req, _ := http.NewRequest("POST", r.ts.URL+tc.path, strings.NewReader(tc.body))
		req.Header.Set("Authorization", "Bearer "+tc.token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		msg, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if fmt.Sprint(resp.StatusCode) != tc.want {
			t.Errorf("%s %s: %d %s, want %s", tc.path, tc.body, resp.StatusCode, msg, tc.want)
		}
	}
	if a := r.attempts(run.ID, "sleep")[0]; a.State != engine.AttemptRunning {
		t.Errorf("the attempt after forged reports: %s", a.State)
	}
	if err := r.svc.Cancel(r.ctx, run.ID, false); err != nil {
		t.Fatal(err)
	}
	r.waitRun(run.ID)
}

func waitAgent(t *testing.T, r *remote, id string) {
	t.Helper()
	for range 500 {
		var ag *store.Agent
		r.store.View(r.ctx, func(tx store.Tx) error {
			var err error
			ag, err = tx.Agent(r.ctx, id)
			return err
		})
		if ag != nil && ag.State == control.AgentActive {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("agent %s did not register", id)
}

func waitErr(t *testing.T, done <-chan error) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(30 * time.Second):
		t.Fatal("the agent did not stop")
		return nil
	}
}

// An agent told to stop while its server is unreachable gives up what the
// server has not taken after its grace periods, and stops; the server
// records the attempt lost once the agent's lease passes.
func TestRemoteStopWhileCutOff(t *testing.T) {
	r := newRemote(t)
	proxy := nettest.NewCutter(t, strings.TrimPrefix(r.ts.URL, "http://"))
	ctx, stop := context.WithCancel(r.ctx)
	done := r.startAgent("a1", agentOpts{url: "http://" + proxy.Addr(), ctx: ctx})
	run := r.trigger("chatty", nil)
	for len(r.attempts(run.ID, "talk")) == 0 || r.attempts(run.ID, "talk")[0].State != engine.AttemptRunning {
		time.Sleep(10 * time.Millisecond)
	}
	proxy.Cut()
	stop()
	start := time.Now()
	err := waitErr(t, done)
	if err == nil || !strings.Contains(err.Error(), "could not record the result") {
		t.Errorf("agent stopped with %v, want the result it could not report", err)
	}
	t.Logf("stopped %s after the signal", time.Since(start).Round(time.Millisecond))
	if !strings.Contains(r.logs.String(), "giving up on log lines and results") {
		t.Error("the agent did not say it gave up")
	}
}
