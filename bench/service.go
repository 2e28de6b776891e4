package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// The benchmarks of dray as a service (issue 5): a `dray server` process on
// SQLite or PostgreSQL, driven over its HTTP API.

// stores names the two state stores in benchmark names.
var stores = map[bool]string{false: "SQLite", true: "PostgreSQL"}

// openStore returns the state store of a benchmark: SQLite in the project
// folder, or a fresh PostgreSQL schema. done drops what it made.
func openStore(ctx context.Context, postgres bool) (st stateStore, done func(), err error) {
	if !postgres {
		return sqliteStore, func() {}, nil
	}
	return postgresStore(ctx)
}

// skippedOrFailed is the result of a benchmark whose store could not be opened.
func skippedOrFailed(measured, target string, err error) *result {
	if errors.Is(err, errNoPostgres) {
		return &result{Measured: measured, Figure: err.Error(), Target: target, Verdict: "SKIP"}
	}
	return failed(measured, err)
}

// serverSetup is a project with a token and a running server over it.
type serverSetup struct {
	dir    string
	srv    *serverProc
	api    *apiClient
	ready  time.Duration
	closed bool
}

// startProject writes a project of files, creates a token on st and starts
// a server on it. The caller calls close, also when it fails.
func (h *harness) startProject(ctx context.Context, name string, files map[string]string, st stateStore, profile bool, conns int, args ...string) (*serverSetup, error) {
	dir, err := writeProject(h.tmp, name, files)
	if err != nil {
		return nil, err
	}
	tok, err := createToken(ctx, h.bin, dir, st, "operator")
	if err != nil {
		return nil, err
	}
	o := serverOptions{store: st, args: args}
	if profile {
		o.profile = filepath.Join(h.tmp, name+".pprof")
	}
	srv, err := startServer(h.bin, dir, o)
	if err != nil {
		return nil, err
	}
	s := &serverSetup{dir: dir, srv: srv}
	if s.ready, err = srv.waitReady(ctx, 30*time.Second); err != nil {
		s.close()
		return nil, err
	}
	s.api = newAPIClient(srv.url, tok, conns)
	return s, nil
}

func (s *serverSetup) close() {
	if s == nil || s.closed {
		return
	}
	s.closed = true
	if s.api != nil {
		s.api.close()
	}
	s.srv.stop()
}

// triggerBench measures how long a triggered run takes to start its first task.
func (h *harness) triggerBench(ctx context.Context, postgres bool) *result {
	n := h.sz.triggers
	measured := fmt.Sprintf("`dray server` on %s: POST /api/v1/runs of a pipeline of one task (a shell that outputs `date +%%s%%N`) → its attempt's started_at (set once the executor started the process); %s triggers one after another, each once the run before ended: median and p95",
		stores[postgres], count(n))
	target := "— (none set)"
	st, drop, err := openStore(ctx, postgres)
	if err != nil {
		return skippedOrFailed(measured, target, err)
	}
	defer drop()
	s, err := h.startProject(ctx, "trigger-"+strings.ToLower(stores[postgres]), map[string]string{"pipelines/first.yaml": firstPipeline}, st, h.profile, 4)
	if err != nil {
		return failed(measured, err)
	}
	defer s.close()

	var total, own, post, toCreated, toQueued, toStarted []time.Duration
	for range n {
		t0 := time.Now()
		run, err := s.api.trigger(ctx, "first")
		if err != nil {
			return failed(measured, err)
		}
		answered := time.Since(t0)
		// Poll late and seldom: the polls share the CPUs with what they measure.
		rec, err := s.api.waitRun(ctx, run.ID, 50*time.Millisecond, 20*time.Millisecond, 30*time.Second)
		if err != nil {
			return failed(measured, err)
		}
		ran, err := shellClock(rec)
		if err != nil {
			return failed(measured, err)
		}
		atts, err := s.api.attempts(ctx, run.ID)
		if err != nil {
			return failed(measured, err)
		}
		if len(atts) != 1 || atts[0].StartedAt == nil || atts[0].QueuedAt == nil {
			return failed(measured, fmt.Errorf("run %s: want one started attempt, got %+v", run.ID, atts))
		}
		a := atts[0]
		total = append(total, a.StartedAt.Sub(t0))
		own = append(own, ran.Sub(t0))
		post = append(post, answered)
		toCreated = append(toCreated, run.CreatedAt.Sub(t0))
		toQueued = append(toQueued, a.QueuedAt.Sub(run.CreatedAt))
		toStarted = append(toStarted, a.StartedAt.Sub(*a.QueuedAt))
	}
	s.close()

	r := &result{Measured: measured, Target: target, Verdict: "INFO",
		Figure: fmt.Sprintf("median %.1f ms, p95 %.1f ms (min %.1f, max %.1f)", ms(median(total)), ms(percentile(total, 0.95)), ms(slices.Min(total)), ms(slices.Max(total))),
		Notes: []string{
			fmt.Sprintf("medians: POST sent → run created_at %.1f ms; created → first task queued_at %.1f ms; queued → process started %.1f ms; the POST answered after %.1f ms",
				ms(median(toCreated)), ms(median(toQueued)), ms(median(toStarted)), ms(median(post))),
			fmt.Sprintf("by the task's own clock (`date +%%s%%N` in its shell, which then had started `date` too): median %.1f ms, p95 %.1f ms", ms(median(own)), ms(percentile(own, 0.95))),
		},
	}
	if postgres {
		costs, err := pgCost(ctx, st, 50)
		if err != nil {
			return failed(measured, err)
		}
		r.Notes = append(r.Notes, costs.String())
	}
	if h.floorSeq > 0 {
		r.Notes = append(r.Notes, fmt.Sprintf("queued → started includes the fork and exec of the task's shell: floor-seq, a whole `sh -c true` from Go, is %.2f ms in this run", ms(h.floorSeq)))
	}
	r.TimelineNote = "Where the time between the POST and the task's start went, from the run's and the attempt's timestamps (the server's clock; the POST's from the harness, on the same machine)."
	r.Timeline = stageTable([]stage{
		{"POST sent → run created_at", toCreated},
		{"run created_at → task queued_at", toQueued},
		{"queued_at → started_at (claim, spawn)", toStarted},
		{"total: POST sent → started_at", total},
		{"(POST sent → the task's date +%s%N)", own},
		{"(POST sent → answer read)", post},
	})
	if h.profile {
		r.Timeline += "\n\nCPU profile of the server over the whole benchmark (DRAY_CPUPROFILE):\n" + profileTop(ctx, h.bin, s.srv.profile)
	}
	return r
}

// shellClock reads the output t of the task of a run of firstPipeline: the
// time its shell read the clock.
func shellClock(rec *apiRun) (time.Time, error) {
	for _, t := range rec.Tasks {
		var out struct {
			T string `json:"t"`
		}
		if err := json.Unmarshal(t.Outputs, &out); err != nil || out.T == "" {
			return time.Time{}, fmt.Errorf("run %s: task %s output %s, want {\"t\": \"<ns since 1970>\"}", rec.ID, t.Name, t.Outputs)
		}
		ns, err := strconv.ParseInt(out.T, 10, 64)
		if err != nil {
			return time.Time{}, fmt.Errorf("run %s: task %s output t = %q: %w", rec.ID, t.Name, out.T, err)
		}
		return time.Unix(0, ns), nil
	}
	return time.Time{}, fmt.Errorf("run %s has no task", rec.ID)
}

// hopBench measures task-to-task latency on a chain run by the server.
func (h *harness) hopBench(ctx context.Context, postgres bool) *result {
	n, runs := h.sz.hopTasks, h.sz.hopRuns
	hops := runs * (n - 1)
	measured := fmt.Sprintf("`dray server` on %s: a chain of %d tasks `run: \"true\"`, each needing the one before, triggered over the API, %d run(s); per hop: the next task's attempt started_at − this task's attempt ended_at (when the server recorded its end): median of %s hops",
		stores[postgres], n, runs, count(hops))
	target := "median < 10 ms"
	if !postgres {
		target = "— (the target, median < 10 ms, is PostgreSQL's; SQLite for comparison)"
	}
	st, drop, err := openStore(ctx, postgres)
	if err != nil {
		return skippedOrFailed(measured, target, err)
	}
	defer drop()
	s, err := h.startProject(ctx, "hop-"+strings.ToLower(stores[postgres]), map[string]string{"pipelines/chain.yaml": chainPipeline(n)}, st, h.profile, 4)
	if err != nil {
		return failed(measured, err)
	}
	defer s.close()

	var hop, cycle, ran, toQueued, toStarted, wall []time.Duration
	for range runs {
		run, err := s.api.trigger(ctx, "chain")
		if err != nil {
			return failed(measured, err)
		}
		if _, err := s.api.waitRun(ctx, run.ID, 100*time.Millisecond, 100*time.Millisecond, h.sz.runLimit(2*time.Minute)); err != nil {
			return failed(measured, err)
		}
		atts, err := s.api.attempts(ctx, run.ID)
		if err != nil {
			return failed(measured, err)
		}
		byTask := map[string]apiAttempt{}
		for _, a := range atts {
			byTask[a.Task] = a
		}
		var prev *apiAttempt
		for i := range n {
			a, ok := byTask[fmt.Sprintf("t%d", i)]
			if !ok || a.StartedAt == nil || a.EndedAt == nil || a.QueuedAt == nil {
				return failed(measured, fmt.Errorf("run %s: task t%d has no ended attempt", run.ID, i))
			}
			ran = append(ran, a.EndedAt.Sub(*a.StartedAt))
			if prev != nil {
				hop = append(hop, a.StartedAt.Sub(*prev.EndedAt))
				cycle = append(cycle, a.StartedAt.Sub(*prev.StartedAt))
				toQueued = append(toQueued, a.QueuedAt.Sub(*prev.EndedAt))
				toStarted = append(toStarted, a.StartedAt.Sub(*a.QueuedAt))
			}
			prev = &a
		}
		first, last := byTask["t0"], byTask[fmt.Sprintf("t%d", n-1)]
		wall = append(wall, last.EndedAt.Sub(*first.StartedAt)/time.Duration(n))
	}
	s.close()

	med := median(hop)
	r := &result{Measured: measured, Target: target, Verdict: "INFO",
		Figure: fmt.Sprintf("median %.2f ms, p95 %.2f ms (min %.2f, max %.2f)", ms(med), ms(percentile(hop, 0.95)), ms(slices.Min(hop)), ms(slices.Max(hop))),
		Notes: []string{
			fmt.Sprintf("a task's whole cycle, started_at to the next task's started_at: median %.2f ms; first start to last end / tasks: %.2f ms/task", ms(median(cycle)), ms(median(wall))),
			fmt.Sprintf("medians of its parts: started → ended (the `true` process, its exit reported and recorded) %.2f ms; ended → next queued_at %.2f ms; queued → started (agent claims, spawns) %.2f ms", ms(median(ran)), ms(median(toQueued)), ms(median(toStarted))),
		},
	}
	if h.floorSeq > 0 {
		r.Notes = append(r.Notes, fmt.Sprintf("a hop includes the fork and exec of the next task's shell (started_at is taken once it runs): floor-seq, a whole `sh -c true` from Go, is %.2f ms in this run", ms(h.floorSeq)))
	}
	if postgres {
		r.Verdict = verdict(med < 10*time.Millisecond)
		costs, err := pgCost(ctx, st, 50)
		if err != nil {
			return failed(measured, err)
		}
		r.Notes = append(r.Notes, "a hop includes the end of the transaction that records the task's end and claims the next one, with its statements and its commit: "+costs.String())
	}
	r.TimelineNote = "The hops of the chain split at the attempts' timestamps (the server's clock)."
	r.Timeline = stageTable([]stage{
		{"started_at → ended_at of a task", ran},
		{"ended_at → next task's queued_at", toQueued},
		{"queued_at → started_at (claim, spawn)", toStarted},
		{"hop: ended_at → next started_at", hop},
		{"cycle: started_at → next started_at", cycle},
	})
	if h.profile {
		r.Timeline += "\n\nCPU profile of the server over the whole benchmark (DRAY_CPUPROFILE):\n" + profileTop(ctx, h.bin, s.srv.profile)
	}
	return r
}

// apiGetBench measures GET /api/v1/runs/{id} under 100 concurrent clients.
func (h *harness) apiGetBench(ctx context.Context, postgres bool) *result {
	clients, limit, dur := h.sz.apiClients, h.sz.apiRequests, h.sz.apiFor
	measured := fmt.Sprintf("`dray server` on %s: GET /api/v1/runs/{id} of a finished run of 4 tasks (one a for_each of 3 items), from %d concurrent clients with keep-alive on loopback (the harness, on the same CPUs), for %.0f s or %s requests, whichever comes first: p99 latency",
		stores[postgres], clients, dur.Seconds(), count(limit))
	target := "— (none set)"
	st, drop, err := openStore(ctx, postgres)
	if err != nil {
		return skippedOrFailed(measured, target, err)
	}
	defer drop()
	s, err := h.startProject(ctx, "api-"+strings.ToLower(stores[postgres]), map[string]string{"pipelines/few.yaml": fewPipeline}, st, h.profile, clients)
	if err != nil {
		return failed(measured, err)
	}
	defer s.close()
	run, err := s.api.trigger(ctx, "few")
	if err != nil {
		return failed(measured, err)
	}
	if _, err := s.api.waitRun(ctx, run.ID, 100*time.Millisecond, 50*time.Millisecond, time.Minute); err != nil {
		return failed(measured, err)
	}

	s0, _ := sample(s.srv.pid)
	self0, _ := cpuTimes()
	lat, errs, wall := loadGet(ctx, s.api, "/api/v1/runs/"+run.ID, clients, limit, dur)
	self1, _ := cpuTimes()
	s1, _ := sample(s.srv.pid)
	s.close()
	if len(lat) == 0 {
		return failed(measured, fmt.Errorf("no request succeeded: %v", errors.Join(errs...)))
	}
	n := len(lat) + len(errs)
	r := &result{Measured: measured, Target: target, Verdict: "INFO",
		Figure: fmt.Sprintf("p99 %.1f ms (p50 %.1f, p90 %.1f, max %.1f); %s requests in %.1f s = %.0f/s; %d errors",
			ms(percentile(lat, 0.99)), ms(median(lat)), ms(percentile(lat, 0.90)), ms(slices.Max(lat)), count(n), wall.Seconds(), float64(n)/wall.Seconds(), len(errs)),
		Notes: []string{fmt.Sprintf("CPU per request: %.2f ms in the server, %.2f ms in the clients (the harness); server peak RSS %s",
			ms((s1.User+s1.Sys-s0.User-s0.Sys)/time.Duration(n)), ms((self1-self0)/time.Duration(n)), mb(s1.HWM))},
	}
	// With clients each waiting for its answer before the next request, the
	// mean latency is clients / throughput (Little's law): the server's
	// throughput sets it, not any one request.
	r.Notes = append(r.Notes, fmt.Sprintf("%d clients / %.0f requests/s = %.1f ms: the mean latency the throughput alone implies (Little's law)", clients, float64(n)/wall.Seconds(), 1000*float64(clients)/(float64(n)/wall.Seconds())))
	if postgres {
		costs, err := pgCost(ctx, st, 50)
		if err != nil {
			return failed(measured, err)
		}
		r.Notes = append(r.Notes, costs.String())
	}
	if len(errs) > 0 {
		r.Notes = append(r.Notes, "first error: "+firstLine(errs[0].Error()))
		r.Err = fmt.Errorf("%d of %d requests failed: %w", len(errs), n, errs[0])
		r.Verdict = "ERROR"
	}
	if h.profile {
		r.TimelineNote = "Where the server's CPU went."
		r.Timeline = "CPU profile of the server over the whole benchmark (DRAY_CPUPROFILE):\n" + profileTop(ctx, h.bin, s.srv.profile)
	}
	return r
}

// loadGet sends GET path from clients goroutines until limit requests were
// sent or dur passed, and returns the latencies of the requests that got a
// 200, the errors of the others and the wall time.
func loadGet(ctx context.Context, api *apiClient, path string, clients, limit int, dur time.Duration) ([]time.Duration, []error, time.Duration) {
	var next atomic.Int64
	var mu sync.Mutex
	var lat []time.Duration
	var errs []error
	var wg sync.WaitGroup
	start := time.Now()
	deadline := start.Add(dur)
	for range clients {
		wg.Go(func() {
			var mine []time.Duration
			var bad []error
			for next.Add(1) <= int64(limit) && time.Now().Before(deadline) && ctx.Err() == nil {
				t0 := time.Now()
				if err := api.do(ctx, http.MethodGet, path, nil, nil); err != nil {
					bad = append(bad, err)
					continue
				}
				mine = append(mine, time.Since(t0))
			}
			mu.Lock()
			lat = append(lat, mine...)
			errs = append(errs, bad...)
			mu.Unlock()
		})
	}
	wg.Wait()
	return lat, errs, time.Since(start)
}

// stage is one part of a latency, measured many times.
type stage struct {
	name string
	ds   []time.Duration
}

// stageTable shows the median, p95 and max of each stage.
func stageTable(stages []stage) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%-40s %9s %9s %9s\n", "stage (ms)", "median", "p95", "max")
	for _, s := range stages {
		if len(s.ds) == 0 {
			continue
		}
		fmt.Fprintf(&b, "%-40s %9.2f %9.2f %9.2f\n", s.name, ms(median(s.ds)), ms(percentile(s.ds, 0.95)), ms(slices.Max(s.ds)))
	}
	return strings.TrimRight(b.String(), "\n")
}

// percentile returns the p-th quantile (0 < p ≤ 1) of ds by nearest rank.
func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(math.Ceil(float64(len(s))*p)) - 1
	return s[min(max(i, 0), len(s)-1)]
}

// median is the middle value of ds (the mean of the two middle ones for an
// even count).
func median(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
