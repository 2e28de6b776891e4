package crashtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dray-dev/dray/internal/api"
	"github.com/dray-dev/dray/internal/client"
	"github.com/dray-dev/dray/internal/store"
	"github.com/dray-dev/dray/internal/store/postgres"
	"github.com/dray-dev/dray/internal/store/postgres/pgtest"
	"github.com/dray-dev/dray/internal/store/sqlite"
)

// The processes and the chaos.
const (
	// capacity is how many attempts a server's agent runs at once.
	capacity = 32
	// A server lives between killMin and killMax after it serves.
	killMin = 200 * time.Millisecond
	killMax = 1500 * time.Millisecond
	// drainTimeout bounds the wait, once the kills stop, for every run to
	// end: the scheduler's lease (15s) must expire, then lost attempts are
	// retried with back-off.
	drainTimeout = 3 * time.Minute
	// clockSlack is how long after its server was reaped a task's ledger
	// line may still be stamped (the task dies with SIGKILL at once).
	clockSlack = 100 * time.Millisecond
)

// envKeep names a folder where the test keeps its project, ledger and
// process logs for a look afterwards (default: a temporary folder, removed).
const envKeep = "DRAY_CRASHTEST_DIR"

// workload is one case of the test: the store, how many server replicas
// share it, how many runs the test triggers and how fast, and whether it
// kills processes meanwhile.
type workload struct {
	name     string
	postgres bool // else SQLite
	servers  int
	runs     int           // each acknowledged once
	gap      time.Duration // the mean time between two triggers
	// kills says whether the test kills servers (one replica at a time: the
	// others keep serving) and the scheduler. Without kills every task
	// instance runs exactly once, and with more than one replica each
	// replica's agent runs some of them.
	kills bool
}

// workloads are the cases of TestCrash. The cases with two replicas run
// fewer runs, so that the package takes less than four minutes on a machine
// of two cores.
var workloads = []workload{
	{name: "sqlite", servers: 1, runs: 220, gap: 200 * time.Millisecond, kills: true},
	{name: "postgres", postgres: true, servers: 1, runs: 220, gap: 200 * time.Millisecond, kills: true},
	{name: "postgres-2-servers", postgres: true, servers: 2, runs: 100, gap: 200 * time.Millisecond, kills: true},
	{name: "postgres-2-servers-no-kills", postgres: true, servers: 2, runs: 100, gap: 50 * time.Millisecond},
}

// TestCrash is the crash-safety test of issue 5: see the package comment.
func TestCrash(t *testing.T) {
	bin := build(t, "github.com/dray-dev/dray/cmd/dray")
	task := build(t, "./testdata/task")
	// The cases run side by side, however few -parallel allows: they mostly
	// wait (for triggers, restarts, the scheduler's lease), and the package
	// then takes as long as its longest case, not two of them in a row.
	var wg sync.WaitGroup
	for _, w := range workloads {
		wg.Go(func() {
			t.Run(w.name, func(t *testing.T) {
				work := workDir(t)
				if !w.postgres {
					path := filepath.Join(work, "dray.db")
					crash(t, w, bin, task, work, path, func(ctx context.Context) (store.Store, error) {
						return sqlite.Open(ctx, path, sqlite.Options{})
					})
					return
				}
				url := postgresURL(t)
				crash(t, w, bin, task, work, url, func(ctx context.Context) (store.Store, error) {
					return postgres.Open(ctx, url, postgres.Options{MaxConns: 2})
				})
			})
		})
	}
	wg.Wait()
}

// build builds a command as dray ships (CGO_ENABLED=0, no -race) and
// returns the binary's path.
func build(t *testing.T, pkg string) string {
	t.Helper()
	goCmd, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the test builds dray with the go command, which is not on PATH: %v", err)
	}
	bin := filepath.Join(t.TempDir(), filepath.Base(pkg))
	cmd := exec.Command(goCmd, "build", "-o", bin, pkg)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, out)
	}
	return bin
}

// crash runs the workload w (under chaos, if it kills) on the store db (a
// SQLite path or a postgres URL), with its files in work, and checks the
// outcome; open opens the store directly.
func crash(t *testing.T, w workload, bin, task, work, db string, open func(context.Context) (store.Store, error)) {
	ctx, cancel := context.WithTimeout(t.Context(), 8*time.Minute)
	defer cancel()
	dir := filepath.Join(work, "project")
	ledger := filepath.Join(work, "ledger")
	writeProject(t, dir, task, ledger)

	out, err := exec.CommandContext(ctx, bin, "token", "create", "--dir", dir, "--db", db, "--name", "crash", "--role", "operator").Output()
	if err != nil {
		t.Fatalf("dray token create: %v\n%s", err, stderrOf(err))
	}
	mark := randomHex()
	c := newCluster(t, bin, dir, work, db, mark, w.servers)
	c.token = strings.TrimSpace(string(out))
	if err := c.startScheduler(); err != nil {
		t.Fatal(err)
	}
	for slot := range w.servers {
		srv, err := c.startServer(slot)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.awaitServer(ctx, srv); err != nil {
			t.Fatal(err)
		}
	}

	// Trigger runs in this goroutine while two others kill the processes.
	start := time.Now()
	chaosCtx, stopChaos := context.WithCancel(ctx)
	var wg sync.WaitGroup
	if w.kills {
		for _, chaos := range []func(context.Context) error{c.serverChaos, c.schedulerChaos} {
			wg.Go(func() {
				if err := chaos(chaosCtx); err != nil {
					t.Error(err)
					cancel()
				}
			})
		}
	}
	acked, err := triggerAll(ctx, c, w.runs, w.gap)
	stopChaos()
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	if t.Failed() {
		t.FailNow()
	}
	chaosTook := time.Since(start)

	// Every run ends, with nothing killed any more.
	start = time.Now()
	if err := waitFinal(ctx, c); err != nil {
		t.Errorf("%v", err)
		diagnose(t, ctx, c, open)
		t.FailNow()
	}
	drainTook := time.Since(start)
	shown := checkAPI(t, ctx, c, acked)

	// Then look at what the store and the ledger say, with every process
	// gone.
	c.stop()
	if left := killStrays(mark); len(left) > 0 {
		t.Errorf("processes of the test outlived it (killed now):\n  %s", strings.Join(left, "\n  "))
	}
	entries, err := readLedger(ledger)
	if err != nil {
		t.Fatal(err)
	}
	st, err := open(ctx)
	if err != nil {
		t.Fatalf("open the store: %v", err)
	}
	defer st.Close()
	h, err := readHistory(ctx, st)
	if err != nil {
		t.Fatal(err)
	}
	n := checkHistory(t, h, shown, entries, c.serverDeaths())
	byReplica := c.startsByReplica(entries)
	if !w.kills {
		checkCalm(t, c, h, n, len(acked))
	}

	t.Logf("%d runs acknowledged (%d in the store: %d made twice by a trigger that got no answer); triggers %s, drain %s",
		len(acked), len(h.runs), len(h.runs)-len(acked), chaosTook.Round(time.Second), drainTook.Round(time.Second))
	t.Logf("kills: server %d (%d more while it started), scheduler %d (%d in a sweep, %d at random, %d with the server; active %d times)",
		c.stats.serverKills.Load(), c.stats.serverKillsStarting.Load(),
		c.stats.schedKillsSweep.Load()+c.stats.schedKillsRandom.Load()+c.stats.schedKillsWithServer.Load(),
		c.stats.schedKillsSweep.Load(), c.stats.schedKillsRandom.Load(), c.stats.schedKillsWithServer.Load(),
		c.stats.schedulerActivations.Load())
	t.Logf("triggers sent again: %d refused, %d unanswered; acknowledged by server replica: %v, runs read back at once from another server: %d",
		c.stats.triggerRefused.Load(), c.stats.triggerUnanswered.Load(), loads(c.stats.acked), c.stats.seenElsewhere.Load())
	t.Logf("attempts: %d for %d task instances, %d lost and retried (%d before they started, %d killed mid-task, %d after the task had ended: run again, at least once), highest attempt number %d; %d agents; tasks started by server replica: %v",
		n.attempts, n.instances, n.lost, n.lostUnstarted, n.lostMidTask, n.lostEnded, n.maxNumber, n.agents, byReplica)
}

// postgresURL returns the URL of a schema of the test's own: one that
// pgtest drops when the test ends, or one that stays when the test keeps its
// files (envKeep).
func postgresURL(t *testing.T) string {
	if os.Getenv(envKeep) == "" {
		return pgtest.URL(t)
	}
	schema := "dray_crashtest_" + randomHex()
	t.Logf("keeping the PostgreSQL schema %s (drop it when done)", schema)
	return pgtest.WithSchema(t, pgtest.BaseURL(t), schema)
}

// workDir returns the folder for the test's files.
func workDir(t *testing.T) string {
	keep := os.Getenv(envKeep)
	if keep == "" {
		return t.TempDir()
	}
	dir := filepath.Join(keep, strings.ReplaceAll(t.Name(), "/", "-"))
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Logf("keeping the test's files in %s", dir)
	return dir
}

// writeProject writes the project: a small DAG whose tasks are the program
// task (testdata/task), which exec replaces the shell with, so that it dies
// with the agent that started it (Pdeathsig).
func writeProject(t *testing.T, dir, task, ledger string) {
	t.Helper()
	run := fmt.Sprintf("exec '%s' '%s'", task, ledger)
	files := map[string]string{
		"dray.yaml": "version: 1\nproject: crash\n",
		"pipelines/crash.yaml": `version: 1
name: crash
params:
  n: { type: integer, description: "which trigger of the test made the run" }
defaults: { retries: 10, retry_delay: 200ms, timeout: 1m }
tasks:
  - name: prepare
    run: RUN prepare
  - name: fan
    needs: [prepare]
    for_each: ${{ tasks.prepare.outputs.items }}
    run: RUN fan
  - name: sum
    needs: [fan]
    run: RUN sum '${{ tasks.fan.outputs }}'
`,
	}
	for name, text := range files {
		path := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(strings.ReplaceAll(text, "RUN", run)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// instancesPerRun is how many task instances a run of the crash pipeline
// has: prepare, three of fan, sum.
const instancesPerRun = 5

// triggerAll triggers runs, a random while apart (gap on average), each to a
// replica chosen at random, and returns the id of each (by its param n); with
// more than one replica it reads each run back from another (seeRun). A
// trigger that failed is sent again, to a replica that serves: one refused
// did not reach a server, one unanswered may have made a run.
func triggerAll(ctx context.Context, c *cluster, runs int, gap time.Duration) (map[int]string, error) {
	acked := map[int]string{}
	for n := 1; n <= runs; n++ {
		if err := pause(ctx, randDur(0, 2*gap)); err != nil {
			return acked, err
		}
		for {
			cl, err := c.client(ctx)
			if err != nil {
				return acked, err
			}
			rec, err := cl.Trigger(ctx, api.TriggerRequest{Pipeline: "crash", Params: map[string]any{"n": n}})
			if err == nil {
				acked[n] = rec.ID
				if slot := c.slotOf(cl.URL()); slot >= 0 {
					c.stats.acked[slot].Add(1)
				}
				if len(c.servers) > 1 {
					if err := seeRun(ctx, c, n, rec.ID, cl.URL()); err != nil {
						return acked, err
					}
				}
				break
			}
			var apiErr *client.Error
			switch {
			case ctx.Err() != nil:
				return acked, fmt.Errorf("trigger run %d: %w", n, err)
			case errors.As(err, &apiErr) && apiErr.Status < 500:
				return acked, fmt.Errorf("trigger run %d: %w", n, err)
			case refused(err):
				c.stats.triggerRefused.Add(1)
			default:
				c.stats.triggerUnanswered.Add(1)
			}
			// The server is down or going: try again once another serves.
			if err := pause(ctx, 20*time.Millisecond); err != nil {
				return acked, err
			}
		}
	}
	return acked, nil
}

// seeRun reads the run n, just acknowledged by the replica at url, from
// another replica when another serves: a run one replica acknowledged is
// known to every other at once.
func seeRun(ctx context.Context, c *cluster, n int, id, url string) error {
	for {
		cl, err := c.clientBut(ctx, url)
		if err != nil {
			return err
		}
		rec, err := cl.Run(ctx, id)
		if err == nil {
			if got, _ := rec.Params["n"].(float64); rec.ID != id || int(got) != n {
				return fmt.Errorf("run %s (n=%d), acknowledged by %s: %s answers run %s with params %v", id, n, url, cl.URL(), rec.ID, rec.Params)
			}
			if cl.URL() != url {
				c.stats.seenElsewhere.Add(1)
			}
			return nil
		}
		var apiErr *client.Error
		if ctx.Err() != nil || errors.As(err, &apiErr) && apiErr.Status < 500 {
			return fmt.Errorf("run %s (n=%d), acknowledged by %s: get it from %s: %w", id, n, url, cl.URL(), err)
		}
		// That server is going: ask the next.
		if err := pause(ctx, 20*time.Millisecond); err != nil {
			return err
		}
	}
}

// serverChaos kills a server a random while after it serves, and starts
// another in its place at once, until ctx ends; it kills one replica at a
// time, chosen at random, and leaves each serving. Now and then it kills the
// new server while it starts, or the active scheduler at the same moment as
// the server.
func (c *cluster) serverChaos(ctx context.Context) error {
	for {
		if pause(ctx, randDur(killMin, killMax)) != nil {
			return nil
		}
		slot := mrand.IntN(len(c.servers))
		var both sync.WaitGroup
		if sched := c.currentScheduler(); mrand.IntN(20) == 0 && isClosed(sched.active) {
			both.Go(func() {
				if killed, err := c.restartScheduler(sched); err != nil {
					c.t.Error(err)
				} else if killed {
					c.stats.schedKillsWithServer.Add(1)
				}
			})
		}
		c.killServer(slot)
		c.stats.serverKills.Add(1)
		both.Wait()
		for {
			p, err := c.startServer(slot)
			if err != nil {
				return err
			}
			if mrand.IntN(10) == 0 {
				// Kill it while it opens the store and loads the project.
				_ = pause(context.Background(), randDur(0, 150*time.Millisecond))
				c.killServer(slot)
				c.stats.serverKillsStarting.Add(1)
				continue
			}
			if err := c.awaitServer(context.WithoutCancel(ctx), p); err != nil {
				return err
			}
			break
		}
	}
}

// schedulerChaos kills the scheduler a random while after it became active
// (a scheduler standing by does nothing worth a kill), half the time just
// after it declared a server's agent gone, in the middle of its sweep. It
// starts another at once, which stands by until the dead one's lease expires.
func (c *cluster) schedulerChaos(ctx context.Context) error {
	for {
		p := c.currentScheduler()
		select {
		case <-p.active:
		case <-p.done:
			if c.currentScheduler() == p {
				return nil // it exited by itself: start reported it
			}
			continue // killed with a server
		case <-ctx.Done():
			return nil
		}
		c.stats.schedulerActivations.Add(1)
		sweeps := -1 // kill at a random time
		if mrand.IntN(2) == 0 {
			sweeps = 1 + mrand.IntN(3) // kill in the sweeps'th sweep of an agent
		}
		timer := time.NewTimer(randDur(time.Second, 8*time.Second))
		inSweep := false
	wait:
		for {
			select {
			case <-p.lost:
				if sweeps--; sweeps == 0 {
					// Into the sweep: the reaping of its processes, marking it
					// stopped, marking its attempts lost.
					_ = pause(ctx, randDur(0, 60*time.Millisecond))
					inSweep = true
					break wait
				}
			case <-timer.C:
				break wait
			case <-p.done:
				break wait
			case <-ctx.Done():
				timer.Stop()
				return nil
			}
		}
		timer.Stop()
		killed, err := c.restartScheduler(p)
		switch {
		case err != nil:
			return err
		case killed && inSweep:
			c.stats.schedKillsSweep.Add(1)
		case killed:
			c.stats.schedKillsRandom.Add(1)
		}
	}
}

// waitFinal waits until no run is queued or running.
func waitFinal(ctx context.Context, c *cluster) error {
	deadline := time.Now().Add(drainTimeout)
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	var last string
	for {
		cl, err := c.client(ctx)
		if err != nil {
			return err
		}
		page, err := cl.Runs(ctx, client.RunFilter{States: []string{"queued", "running"}, Limit: 500})
		if err == nil && len(page.Runs) == 0 {
			return nil
		}
		if err != nil {
			last = err.Error()
		} else {
			ids := make([]string, 0, len(page.Runs))
			for _, r := range page.Runs {
				ids = append(ids, r.ID+" "+r.State)
			}
			last = fmt.Sprintf("%d runs have not ended: %s", len(ids), strings.Join(ids[:min(len(ids), 10)], ", "))
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("runs still not ended %s after the kills stopped: %s", drainTimeout, last)
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			return fmt.Errorf("%w: %s", ctx.Err(), last)
		}
	}
}

// pause waits d, or until ctx ends.
func pause(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// randDur returns a random duration in [lo, hi).
func randDur(lo, hi time.Duration) time.Duration {
	if hi <= lo {
		return lo
	}
	return lo + mrand.N(hi-lo)
}

func isClosed(ch chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

func randomHex() string {
	var b [8]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// stderrOf returns what a failed command wrote on stderr.
func stderrOf(err error) string {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return string(ee.Stderr)
	}
	return ""
}

func loads(ns []atomic.Int64) []int64 {
	out := make([]int64, len(ns))
	for i := range ns {
		out[i] = ns[i].Load()
	}
	return out
}
