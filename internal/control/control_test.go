package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/dray-dev/dray/internal/blob"
	"github.com/dray-dev/dray/internal/engine"
	"github.com/dray-dev/dray/internal/spec"
	"github.com/dray-dev/dray/internal/store"
	"github.com/dray-dev/dray/internal/store/sqlite"
)

// clock is a settable time for the service.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

type fixture struct {
	t     *testing.T
	ctx   context.Context
	svc   *Service
	store *sqlite.Store
	clock *clock
	path  string
}

func newFixture(t *testing.T, opts sqlite.Options) *fixture {
	t.Helper()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "dray.db")
	st, err := sqlite.Open(ctx, path, opts)
	if err != nil {
		t.Fatal(err)
	}
	bucket, err := blob.Open(ctx, "file://storage", t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	c := &clock{t: time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)}
	svc := New(Config{Store: st, Blob: bucket, Now: c.now, AgentLease: 30 * time.Second})
	t.Cleanup(func() {
		svc.Close()
		bucket.Close()
		st.Close()
	})
	return &fixture{t: t, ctx: ctx, svc: svc, store: st, clock: c, path: path}
}

// pipeline loads one pipeline (with dray.yaml pools db: 2) from YAML.
func pipeline(t *testing.T, name, src string) *spec.Pipeline {
	t.Helper()
	proj, err := spec.Load(fstest.MapFS{
		"dray.yaml":                   {Data: []byte("version: 1\npools: {db: {slots: 2}}\n")},
		"pipelines/" + name + ".yaml": {Data: []byte(src)},
	})
	if err != nil {
		t.Fatal(err)
	}
	p, err := proj.Pipeline(name)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func (f *fixture) agent(id string) AgentInfo {
	f.t.Helper()
	info := AgentInfo{ID: id, Host: "elsewhere", Executors: []string{spec.ExecLocal}, Capacity: 100}
	if _, err := f.svc.Register(f.ctx, info); err != nil {
		f.t.Fatal(err)
	}
	return info
}

func (f *fixture) trigger(p *spec.Pipeline, req TriggerRequest) *engine.Run {
	f.t.Helper()
	r, err := f.svc.Trigger(f.ctx, p, req)
	if err != nil {
		f.t.Fatal(err)
	}
	return r
}

func (f *fixture) claim(info AgentInfo, n int) []*engine.Attempt {
	f.t.Helper()
	got, err := f.svc.Claim(f.ctx, info, n, 0)
	if err != nil {
		f.t.Fatal(err)
	}
	return got
}

func (f *fixture) finish(info AgentInfo, a *engine.Attempt, res engine.Result) {
	f.t.Helper()
	if _, err := f.svc.Finish(f.ctx, info, a.ID, res, 0); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fixture) run(id string) *engine.Run {
	f.t.Helper()
	r, err := f.svc.Run(f.ctx, id)
	if err != nil {
		f.t.Fatal(err)
	}
	return r
}

var ok = engine.Result{State: engine.AttemptSucceeded}

// A pool caps attempts across runs and pipelines; so does a pipeline's
// concurrency; slots free as attempts end and the waiting ones are queued.
func TestPoolsAndConcurrency(t *testing.T) {
	f := newFixture(t, sqlite.Options{})
	pooled := pipeline(t, "pooled", `
version: 1
tasks:
  - name: load
    for_each: [1, 2, 3, 4, 5]
    pool: db
    run: load ${{ item }}
`)
	gentle := pipeline(t, "gentle", `
version: 1
concurrency: 1
tasks:
  - {name: a, run: "true"}
  - {name: b, run: "true"}
`)
	runs := []*engine.Run{f.trigger(pooled, TriggerRequest{}), f.trigger(pooled, TriggerRequest{}), f.trigger(gentle, TriggerRequest{})}
	ag := f.agent("a1")
	peakPool, peakGentle := 0, 0
	for i := 0; i < 100; i++ {
		got := f.claim(ag, 100)
		if len(got) == 0 {
			break
		}
		pool, gent := 0, 0
		for _, a := range got {
			if a.Pipeline == "pooled" {
				pool++
			} else {
				gent++
			}
		}
		peakPool, peakGentle = max(peakPool, pool), max(peakGentle, gent)
		for _, a := range got {
			f.finish(ag, a, ok)
		}
	}
	if peakPool != 2 || peakGentle != 1 {
		t.Errorf("at most %d attempts of the pool and %d of the pipeline ran at once; want 2 and 1", peakPool, peakGentle)
	}
	for _, r := range runs {
		if got := f.run(r.ID); got.State != engine.RunSucceeded {
			t.Errorf("run %s of %s = %s", r.ID, r.Pipeline, got.State)
		}
	}
}

// max_active_runs keeps further runs queued until one ends.
func TestMaxActiveRuns(t *testing.T) {
	f := newFixture(t, sqlite.Options{})
	p := pipeline(t, "single", "version: 1\nmax_active_runs: 1\ntasks: [{name: a, run: 'true'}]\n")
	first, second := f.trigger(p, TriggerRequest{}), f.trigger(p, TriggerRequest{})
	if f.run(second.ID).State != engine.RunQueued {
		t.Fatalf("second run = %s, want queued", f.run(second.ID).State)
	}
	ag := f.agent("a1")
	got := f.claim(ag, 10)
	if len(got) != 1 || got[0].RunID != first.ID {
		t.Fatalf("claimed %d attempts, want the first run's one", len(got))
	}
	f.finish(ag, got[0], ok)
	if f.run(second.ID).State != engine.RunRunning {
		t.Fatalf("second run = %s after the first ended, want running", f.run(second.ID).State)
	}
}

// Reports sent at once are written in batches; every one is recorded, the
// outputs are in item order, and a bad report does not fail the others.
func TestGroupCommit(t *testing.T) {
	f := newFixture(t, sqlite.Options{})
	p := pipeline(t, "fan", "version: 1\ntasks:\n  - {name: f, for_each: '${{ 0..199 }}', max_parallel: 200, run: 'echo ${{ item }}'}\n")
	r := f.trigger(p, TriggerRequest{})
	ag := f.agent("a1")
	got := f.claim(ag, 200)
	if len(got) != 200 {
		t.Fatalf("claimed %d", len(got))
	}
	var wg sync.WaitGroup
	errs := make(chan error, 201)
	for _, a := range got {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out := json.RawMessage(fmt.Sprintf(`{"i": %s}`, a.Work.Item))
			_, err := f.svc.Finish(f.ctx, ag, a.ID, engine.Result{State: engine.AttemptSucceeded, Outputs: out}, 0)
			errs <- err
		}()
	}
	// A report of another agent's attempt fails alone.
	wg.Add(1)
	go func() {
		defer wg.Done()
		_, err := f.svc.Finish(f.ctx, AgentInfo{ID: "intruder"}, got[0].ID, ok, 0)
		if !errors.Is(err, store.ErrConflict) && err != nil {
			errs <- fmt.Errorf("intruder: %v", err)
		}
	}()
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	rec, err := f.svc.Record(f.ctx, r.ID)
	if err != nil {
		t.Fatal(err)
	}
	if rec.State != string(engine.RunSucceeded) {
		t.Fatalf("run = %s", rec.State)
	}
	var outs []map[string]int
	if err := json.Unmarshal(rec.Tasks[0].Outputs, &outs); err != nil || len(outs) != 200 {
		t.Fatalf("outputs %s: %v", rec.Tasks[0].Outputs, err)
	}
	for i, o := range outs {
		if o["i"] != i {
			t.Fatalf("outputs[%d] = %v", i, o)
		}
	}
}

// An agent that stops heartbeating loses its attempts; they are retried on
// another agent.
func TestDeadAgentsAttemptsAreRetried(t *testing.T) {
	f := newFixture(t, sqlite.Options{})
	p := pipeline(t, "p", "version: 1\ntasks: [{name: a, run: 'true', retries: 1, retry_delay: 1s}]\n")
	r := f.trigger(p, TriggerRequest{})
	dead, alive := f.agent("dead"), f.agent("alive")
	first := f.claim(dead, 1)
	if len(first) != 1 {
		t.Fatal("no claim")
	}
	f.clock.add(20 * time.Second)
	if _, err := f.svc.Heartbeat(f.ctx, alive.ID, nil, 0); err != nil {
		t.Fatal(err)
	}
	f.clock.add(20 * time.Second) // dead: 40s silent; alive: 20s
	if _, err := f.svc.Tick(f.ctx); err != nil {
		t.Fatal(err)
	}
	atts, _ := f.svc.Attempts(f.ctx, r.ID, "a")
	if atts[0].State != engine.AttemptLost || atts[0].Reason != "agent dead stopped heartbeating 40s ago" {
		t.Fatalf("first attempt = %s %q", atts[0].State, atts[0].Reason)
	}
	if _, err := f.svc.Claim(f.ctx, dead, 1, 0); !errors.Is(err, ErrAgentStopped) {
		t.Errorf("claim by a dead agent: %v", err)
	}
	f.clock.add(2 * time.Second)
	f.svc.Tick(f.ctx)
	second := f.claim(alive, 1)
	if len(second) != 1 || second[0].Number != 2 {
		t.Fatalf("the retry was not claimed by the live agent: %v", second)
	}
	f.finish(alive, second[0], ok)
	if f.run(r.ID).State != engine.RunSucceeded {
		t.Errorf("run = %s", f.run(r.ID).State)
	}
}

// A run whose driver is gone is abandoned: it fails as interrupted, its
// attempts are lost and hold no slot, and a retry finishes it.
func TestAbandonedRunFreesItsSlots(t *testing.T) {
	f := newFixture(t, sqlite.Options{})
	p := pipeline(t, "p", "version: 1\nconcurrency: 1\ntasks:\n  - {name: a, run: 'true', retries: 3}\n  - {name: b, needs: [a], run: 'true'}\n")
	driver := f.agent("driver")
	r := f.trigger(p, TriggerRequest{Driver: driver.ID})
	if len(f.claim(driver, 1)) != 1 {
		t.Fatal("no claim")
	}
	f.clock.add(time.Minute)
	if err := f.svc.Sweep(f.ctx); err != nil {
		t.Fatal(err)
	}
	got := f.run(r.ID)
	if got.State != engine.RunFailed || got.Reason == "" {
		t.Fatalf("run = %s %q, want failed as interrupted", got.State, got.Reason)
	}
	atts, _ := f.svc.Attempts(f.ctx, r.ID, "")
	for _, a := range atts {
		if !a.State.Final() {
			t.Errorf("attempt %d is %s after the run was abandoned", a.ID, a.State)
		}
	}
	// The pipeline's slot is free for a new run.
	ag := f.agent("next")
	r2 := f.trigger(p, TriggerRequest{})
	c := f.claim(ag, 1)
	if len(c) != 1 || c[0].RunID != r2.ID {
		t.Fatalf("a new run could not take the slot: %v", c)
	}
	f.finish(ag, c[0], ok)
	// dray retry finishes the interrupted run.
	if err := f.svc.Retry(f.ctx, r.ID, ""); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 10 && !f.run(r.ID).State.Final(); i++ {
		for _, a := range f.claim(ag, 10) {
			f.finish(ag, a, ok)
		}
	}
	if got := f.run(r.ID); got.State != engine.RunSucceeded {
		t.Errorf("after retry run = %s %q", got.State, got.Reason)
	}
}

// A full disk fails the write with store.ErrFull and loses nothing that was
// recorded before: reopened, the store holds a consistent run.
func TestFullDisk(t *testing.T) {
	f := newFixture(t, sqlite.Options{MaxPages: 64})
	small := pipeline(t, "small", "version: 1\ntasks: [{name: a, run: 'true'}]\n")
	big := pipeline(t, "big", "version: 1\ntasks: [{name: f, for_each: '${{ 0..20000 }}', run: 'echo ${{ item }} padding padding padding padding'}]\n")
	r := f.trigger(small, TriggerRequest{})
	_, err := f.svc.Trigger(f.ctx, big, TriggerRequest{})
	if !errors.Is(err, store.ErrFull) {
		t.Fatalf("trigger on a full disk: %v, want ErrFull", err)
	}
	ag := f.agent("a1")
	got := f.claim(ag, 10)
	if len(got) != 1 || got[0].RunID != r.ID {
		t.Fatalf("after the full disk, claimed %v", got)
	}
	f.finish(ag, got[0], ok)
	f.svc.Close()
	f.store.Close()
	st, err := sqlite.Open(f.ctx, f.path, sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	err = st.View(f.ctx, func(tx store.Tx) error {
		runs, err := tx.Runs(f.ctx, store.RunFilter{})
		if err != nil {
			return err
		}
		if len(runs) != 1 || runs[0].State != engine.RunSucceeded {
			return fmt.Errorf("runs after reopening: %d, first %v", len(runs), runs)
		}
		return nil
	})
	if err != nil {
		t.Error(err)
	}
}

// A database another process keeps locked fails with store.ErrLocked after
// the busy timeout, and works again once it is free.
func TestLockedDatabase(t *testing.T) {
	f := newFixture(t, sqlite.Options{BusyTimeout: 100 * time.Millisecond})
	p := pipeline(t, "p", "version: 1\ntasks: [{name: a, run: 'true'}]\n")
	other, err := sqlite.Open(f.ctx, f.path, sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	held := make(chan struct{})
	release := make(chan struct{})
	go other.Update(f.ctx, func(tx store.Tx) error {
		tx.PutAgent(f.ctx, &store.Agent{ID: "holder"})
		close(held)
		<-release
		return nil
	})
	<-held
	_, err = f.svc.Trigger(f.ctx, p, TriggerRequest{})
	if !errors.Is(err, store.ErrLocked) {
		t.Fatalf("trigger on a locked database: %v, want ErrLocked", err)
	}
	close(release)
	if _, err := f.svc.Trigger(f.ctx, p, TriggerRequest{}); err != nil {
		t.Fatalf("after the lock was released: %v", err)
	}
}

// An ended attempt's log moves to blob storage and reads the same; when blob
// storage fails, the lines stay in the store and still read.
func TestLogsAreSealed(t *testing.T) {
	for _, broken := range []bool{false, true} {
		t.Run(fmt.Sprintf("broken=%v", broken), func(t *testing.T) {
			f := newFixture(t, sqlite.Options{})
			if broken {
				dir := t.TempDir()
				bucket, err := blob.Open(f.ctx, "file://storage", dir)
				if err != nil {
					t.Fatal(err)
				}
				// A file where the logs folder must go: every write fails.
				if err := os.WriteFile(filepath.Join(dir, "storage", "logs"), nil, 0o644); err != nil {
					t.Fatal(err)
				}
				f.svc.Close()
				f.svc = New(Config{Store: f.store, Blob: bucket, Now: f.clock.now})
				t.Cleanup(f.svc.Close)
			}
			p := pipeline(t, "p", "version: 1\ntasks: [{name: a, run: 'true'}]\n")
			f.trigger(p, TriggerRequest{})
			ag := f.agent("a1")
			a := f.claim(ag, 1)[0]
			lines := []store.LogLine{{Seq: 1, Stream: "stdout", Text: "one"}, {Seq: 2, Stream: "stderr", Text: "two"}}
			if err := f.svc.AppendLogs(f.ctx, a.ID, lines); err != nil {
				t.Fatal(err)
			}
			if err := f.svc.AppendLogs(f.ctx, a.ID, lines); err != nil { // sent twice: stored once
				t.Fatal(err)
			}
			f.finish(ag, a, ok)
			f.svc.Close() // waits for sealing
			err := f.store.View(f.ctx, func(tx store.Tx) error {
				_, err := tx.Segment(f.ctx, a.ID)
				if broken != errors.Is(err, store.ErrNotFound) {
					return fmt.Errorf("segment: %v", err)
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			got, err := f.svc.Logs(f.ctx, a.ID, 0, 100)
			if err != nil || len(got) != 2 || got[0].Text != "one" || got[1].Text != "two" {
				t.Fatalf("logs = %v, %v", got, err)
			}
		})
	}
}

// A sweep that died after it marked an agent stopped but before it stopped
// the agent's attempts (separate transactions) leaves them to the next
// sweep, which loses and retries them: none stays running forever.
func TestSweepFinishesAnInterruptedSweep(t *testing.T) {
	f := newFixture(t, sqlite.Options{})
	p := pipeline(t, "p", "version: 1\ntasks: [{name: a, run: 'true'}]\n")
	r := f.trigger(p, TriggerRequest{})
	half, other := f.agent("half"), f.agent("other")
	if got := f.claim(half, 1); len(got) != 1 {
		t.Fatal("no claim")
	}
	// What the interrupted sweep did: mark the agent stopped, nothing more.
	if err := f.svc.markStopped(f.ctx, half.ID); err != nil {
		t.Fatal(err)
	}
	if err := f.svc.Sweep(f.ctx); err != nil {
		t.Fatal(err)
	}
	atts, _ := f.svc.Attempts(f.ctx, r.ID, "a")
	if len(atts) != 2 || atts[0].State != engine.AttemptLost || atts[0].Reason != "its agent half is gone" {
		t.Fatalf("attempts after the sweep: %+v", atts)
	}
	f.clock.add(20 * time.Second) // the retry delay
	if _, err := f.svc.Heartbeat(f.ctx, other.ID, nil, 0); err != nil {
		t.Fatal(err)
	}
	f.svc.Tick(f.ctx)
	second := f.claim(other, 1)
	if len(second) != 1 || second[0].Number != 2 {
		t.Fatalf("the retry was not claimed: %v", second)
	}
	f.finish(other, second[0], ok)
	if f.run(r.ID).State != engine.RunSucceeded {
		t.Errorf("run = %s", f.run(r.ID).State)
	}
}

// An agent that registers again with the same id (an agent or a server
// restarted with the same identity) is given what its id still holds, to
// re-attach to or report lost. A cordoned agent claims nothing, a draining one
// hears so in its heartbeats, and one that registers again is active.
func TestRegisterAgainReturnsWhatTheIDHeld(t *testing.T) {
	f := newFixture(t, sqlite.Options{})
	p := pipeline(t, "p", "version: 1\ntasks: [{name: a, run: 'true'}, {name: b, run: 'true'}]\n")
	r := f.trigger(p, TriggerRequest{})
	ag := f.agent("server-host-1")
	got := f.claim(ag, 2)
	if len(got) != 2 {
		t.Fatal("no claim")
	}
	if err := f.svc.Started(f.ctx, ag.ID, got[0].ID, []byte(`{"container":"c1"}`), f.clock.now()); err != nil {
		t.Fatal(err)
	}
	held, err := f.svc.Register(f.ctx, ag) // the restarted process
	if err != nil {
		t.Fatal(err)
	}
	if len(held) != 2 || held[0].ID != got[0].ID || string(held[0].Handle) != `{"container":"c1"}` || held[0].State != engine.AttemptRunning {
		t.Fatalf("held after the second register: %+v", held)
	}
	// It re-attached to the first and could not to the second.
	if _, err := f.svc.Finish(f.ctx, ag, held[1].ID, engine.Result{State: engine.AttemptLost, Reason: "could not re-attach"}, 0); err != nil {
		t.Fatal(err)
	}
	f.finish(ag, held[0], ok)
	f.clock.add(20 * time.Second) // the retry delay
	if _, err := f.svc.Heartbeat(f.ctx, ag.ID, nil, 0); err != nil {
		t.Fatal(err)
	}
	f.svc.Tick(f.ctx)
	again := f.claim(ag, 1)
	if len(again) != 1 || again[0].Number != 2 {
		t.Fatalf("the retry was not claimed: %v", again)
	}
	f.finish(ag, again[0], ok)
	if f.run(r.ID).State != engine.RunSucceeded {
		t.Errorf("run = %s", f.run(r.ID).State)
	}

	if _, err := f.svc.SetAgentState(f.ctx, ag.ID, AgentCordoned); err != nil {
		t.Fatal(err)
	}
	if beat, err := f.svc.Heartbeat(f.ctx, ag.ID, nil, 0); err != nil || beat.Drain {
		t.Fatalf("beat of a cordoned agent: %+v %v", beat, err)
	}
	f.trigger(p, TriggerRequest{})
	if got := f.claim(ag, 2); len(got) != 0 {
		t.Fatalf("a cordoned agent claimed %d attempts", len(got))
	}
	if _, err := f.svc.SetAgentState(f.ctx, ag.ID, AgentDraining); err != nil {
		t.Fatal(err)
	}
	if beat, err := f.svc.Heartbeat(f.ctx, ag.ID, nil, 0); err != nil || !beat.Drain {
		t.Fatalf("beat of a draining agent: %+v %v", beat, err)
	}
	f.agent(ag.ID) // a restart
	if got := f.claim(ag, 2); len(got) != 2 {
		t.Fatalf("a restarted agent claimed %d attempts, want 2", len(got))
	}
	if _, err := f.svc.SetAgentState(f.ctx, ag.ID, "sleeping"); err == nil {
		t.Error("a bad agent state was taken")
	}
}

// An attempt whose claim never reached its agent (the answer was lost in a
// network cut) is recorded lost once the agent's heartbeats have not listed
// it for ClaimGrace, and retried.
func TestClaimLostOnTheWay(t *testing.T) {
	f := newFixture(t, sqlite.Options{})
	p := pipeline(t, "p", "version: 1\ntasks: [{name: a, run: 'true'}, {name: b, run: 'true'}]\n")
	r := f.trigger(p, TriggerRequest{})
	ag := f.agent("remote-1")
	got := f.claim(ag, 2)
	if len(got) != 2 {
		t.Fatal("no claim")
	}
	// Within the grace, an attempt not listed yet is being started.
	if _, err := f.svc.Heartbeat(f.ctx, ag.ID, []int64{got[0].ID}, 0); err != nil {
		t.Fatal(err)
	}
	if atts, _ := f.svc.Attempts(f.ctx, r.ID, "b"); atts[0].State != engine.AttemptClaimed {
		t.Fatalf("b within the grace: %s", atts[0].State)
	}
	f.clock.add(ClaimGrace + time.Second)
	if _, err := f.svc.Heartbeat(f.ctx, ag.ID, []int64{got[0].ID}, 0); err != nil {
		t.Fatal(err)
	}
	atts, _ := f.svc.Attempts(f.ctx, r.ID, "b")
	if atts[0].State != engine.AttemptLost || !strings.Contains(atts[0].Reason, "never got it") {
		t.Fatalf("b after the grace: %s %q", atts[0].State, atts[0].Reason)
	}
	if a, _ := f.svc.Attempts(f.ctx, r.ID, "a"); a[0].State != engine.AttemptClaimed {
		t.Errorf("a, which the agent runs: %s", a[0].State)
	}
	// A heartbeat that does not say what runs changes nothing.
	f.clock.add(ClaimGrace + time.Second)
	if _, err := f.svc.Heartbeat(f.ctx, ag.ID, nil, 0); err != nil {
		t.Fatal(err)
	}
	if a, _ := f.svc.Attempts(f.ctx, r.ID, "a"); a[0].State != engine.AttemptClaimed {
		t.Errorf("a after a heartbeat without a list: %s", a[0].State)
	}
}

// A control plane that was down itself does not count its downtime against
// the agents: after a restart, an agent is given its whole lease from the
// restart to heartbeat again.
func TestSweepAfterControlPlaneDowntime(t *testing.T) {
	f := newFixture(t, sqlite.Options{})
	p := pipeline(t, "p", "version: 1\ntasks: [{name: a, run: 'true'}]\n")
	r := f.trigger(p, TriggerRequest{})
	ag := f.agent("remote-1")
	f.claim(ag, 1)
	f.clock.add(45 * time.Second) // the server was down for longer than the lease
	bucket, err := blob.Open(f.ctx, "mem://", "")
	if err != nil {
		t.Fatal(err)
	}
	f.svc.Close()
	f.svc = New(Config{Store: f.store, Blob: bucket, Now: f.clock.now, AgentLease: 30 * time.Second})
	t.Cleanup(f.svc.Close)
	if err := f.svc.Sweep(f.ctx); err != nil {
		t.Fatal(err)
	}
	if atts, _ := f.svc.Attempts(f.ctx, r.ID, "a"); atts[0].State != engine.AttemptClaimed {
		t.Fatalf("after the restart, the attempt of a silent agent is %s", atts[0].State)
	}
	f.clock.add(31 * time.Second) // and then silent for a whole lease
	if err := f.svc.Sweep(f.ctx); err != nil {
		t.Fatal(err)
	}
	if atts, _ := f.svc.Attempts(f.ctx, r.ID, "a"); atts[0].State != engine.AttemptLost {
		t.Fatalf("a lease after the restart: %s", atts[0].State)
	}
}
