// Command bench measures dray from the outside: it builds the dray binary,
// generates projects in temporary folders, runs the real binary on them and
// compares what it measured with dray's targets. Every figure is reported
// next to the cost of starting a process on the same machine in the same run
// (the floor), since a task that runs `true` costs at least that. The
// server benchmarks run `dray server` (on SQLite, and on PostgreSQL when
// DRAY_TEST_POSTGRES names one, as scripts/postgres prints) and measure it
// over its HTTP API: trigger latency, task-to-task latency, start time, idle
// memory and API latency under load.
//
//	go run ./bench                 # everything (about 10 minutes on 2 cores)
//	go run ./bench -quick          # smaller sizes, a smoke test (under a minute)
//	go run ./bench -only chain     # one benchmark (and the floor it is judged by)
//	go run ./bench -only hop-sqlite,hop-pg   # several
//
// It prints a table and writes it, with the machine it ran on, to
// bench/RESULTS.md (or -out). It exits 1 when a benchmark could not be
// measured (dray failed, a project was invalid), not when a target is missed.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// sizes are how big each benchmark is, and how long a dray run may take.
type sizes struct {
	seqSpawns, parSpawns, parWorkers int
	chain                            int
	fanout, fanoutParallel           int
	big                              int
	pipelines, validateRuns          int
	limit                            time.Duration // per dray run, 0: each benchmark's own
	chainLimit, fanoutLimit          time.Duration
	bigLimit, validateLimit          time.Duration

	// The server benchmarks (issue 5).
	triggers                int // triggers of a one-task pipeline
	hopTasks, hopRuns       int // chain length and how many runs of it
	coldStarts              int // first starts (and as many restarts)
	idleWait                time.Duration
	apiClients, apiRequests int
	apiFor                  time.Duration

	// The agent benchmarks (issue 6).
	claims, agentTasks, logLines, dockerRuns int

	// The ECS benchmark (issue 7): concurrent attempts, each sleeping ecsSleep seconds.
	ecsTasks, ecsSleep int
}

var fullSizes = sizes{
	seqSpawns: 500, parSpawns: 5000, parWorkers: 50,
	chain:  1000,
	fanout: 10_000, fanoutParallel: 50,
	big:       100_000,
	pipelines: 200, validateRuns: 5,
	chainLimit: 2 * time.Minute, fanoutLimit: 4 * time.Minute,
	bigLimit: 10 * time.Minute, validateLimit: time.Minute,
	triggers: 100,
	hopTasks: 50, hopRuns: 4,
	coldStarts: 10,
	idleWait:   10 * time.Second,
	apiClients: 100, apiRequests: 20_000, apiFor: 10 * time.Second,
	claims: 100, agentTasks: 1000, logLines: 500_000, dockerRuns: 10,
	ecsTasks: 500, ecsSleep: 30,
}

// quickSizes keep the whole run under a minute, as a smoke test of the
// harness and of dray (scripts/test runs it); their figures are not the
// targets' measurements.
var quickSizes = sizes{
	seqSpawns: 100, parSpawns: 1000, parWorkers: 50,
	chain:  100,
	fanout: 1000, fanoutParallel: 50,
	big:       2000,
	pipelines: 200, validateRuns: 3,
	chainLimit: 30 * time.Second, fanoutLimit: 30 * time.Second,
	bigLimit: 40 * time.Second, validateLimit: 30 * time.Second,
	triggers: 5,
	hopTasks: 20, hopRuns: 1,
	coldStarts: 3,
	idleWait:   2 * time.Second,
	apiClients: 100, apiRequests: 2000, apiFor: 2 * time.Second,
	claims: 10, agentTasks: 200, logLines: 50_000, dockerRuns: 2,
	ecsTasks: 20, ecsSleep: 2,
}

func (s sizes) runLimit(own time.Duration) time.Duration {
	if s.limit > 0 {
		return s.limit
	}
	return own
}

// harness holds what the benchmarks share: the binary, a scratch folder and
// the floors measured so far.
type harness struct {
	bin     string
	tmp     string
	sz      sizes
	verbose bool
	// profile has the servers write a CPU profile (DRAY_CPUPROFILE), whose
	// top functions go to the results: in full runs only.
	profile bool

	floorSeq    time.Duration // mean per sequential spawn; 0 until measured
	floorPar    float64       // spawns per second from many goroutines; 0 until measured
	floorSeqCPU cpuCost       // CPU per spawn in floor-seq
	floorParCPU cpuCost       // CPU per spawn in floor-par
}

// benchmark is one named measurement. needs names the benchmarks whose
// figures its target is relative to.
type benchmark struct {
	name  string
	needs []string
	run   func(*harness, context.Context) *result
}

var benchmarks = []benchmark{
	{name: "floor-seq", run: (*harness).floorSeqBench},
	{name: "floor-par", run: (*harness).floorParBench},
	{name: "chain", needs: []string{"floor-seq"}, run: (*harness).chainBench},
	{name: "fanout", needs: []string{"floor-par"}, run: (*harness).fanoutBench},
	{name: "fanout-100k", needs: []string{"floor-par"}, run: (*harness).bigBench},
	{name: "validate", run: (*harness).validateBench},
	{name: "trigger-sqlite", needs: []string{"floor-seq"}, run: func(h *harness, ctx context.Context) *result { return h.triggerBench(ctx, false) }},
	{name: "trigger-pg", needs: []string{"floor-seq"}, run: func(h *harness, ctx context.Context) *result { return h.triggerBench(ctx, true) }},
	{name: "hop-sqlite", needs: []string{"floor-seq"}, run: func(h *harness, ctx context.Context) *result { return h.hopBench(ctx, false) }},
	{name: "hop-pg", needs: []string{"floor-seq"}, run: func(h *harness, ctx context.Context) *result { return h.hopBench(ctx, true) }},
	{name: "coldstart", run: func(h *harness, ctx context.Context) *result { return h.coldStartBench(ctx, false) }},
	{name: "coldstart-pg", run: func(h *harness, ctx context.Context) *result { return h.coldStartBench(ctx, true) }},
	{name: "idle-rss", run: (*harness).idleRSSBench},
	{name: "api-get-sqlite", run: func(h *harness, ctx context.Context) *result { return h.apiGetBench(ctx, false) }},
	{name: "api-get-pg", run: func(h *harness, ctx context.Context) *result { return h.apiGetBench(ctx, true) }},
	{name: "claim-10-agents", run: (*harness).claimBench},
	{name: "agents-fanout", needs: []string{"floor-par"}, run: (*harness).agentsFanoutBench},
	{name: "agent-logs", run: (*harness).agentLogsBench},
	{name: "docker-task", run: (*harness).dockerBench},
	{name: "ecs-500", run: (*harness).ecsBench},
}

func main() {
	only := flag.String("only", "", "run only these benchmarks, comma-separated (and the floors they are judged by): "+strings.Join(names(), ", "))
	quick := flag.Bool("quick", false, "smaller sizes, for a smoke test")
	out := flag.String("out", "", "the results file (default bench/RESULTS.md of the module)")
	limit := flag.Duration("timeout", 0, "stop any dray run after this long (default: each benchmark's own limit)")
	rev := flag.String("rev", "", "build this git revision (via git archive) instead of the working tree")
	keep := flag.Bool("keep", false, "keep the generated projects and the binary")
	verbose := flag.Bool("v", false, "print each dray run's progress timeline")
	flag.Parse()

	if err := run(*only, *quick, *out, *rev, *limit, *keep, *verbose); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func names() []string {
	var n []string
	for _, b := range benchmarks {
		n = append(n, b.name)
	}
	return n
}

// selected returns the benchmarks to run for -only: those named (a
// comma-separated list) and those they need, in the harness's order.
func selected(only string) ([]benchmark, error) {
	if only == "" {
		return benchmarks, nil
	}
	want := map[string]bool{}
	for _, name := range strings.Split(only, ",") {
		name = strings.TrimSpace(name)
		i := slices.IndexFunc(benchmarks, func(b benchmark) bool { return b.name == name })
		if i < 0 {
			return nil, fmt.Errorf("-only %s: no such benchmark (benchmarks: %s)", name, strings.Join(names(), ", "))
		}
		want[name] = true
		for _, n := range benchmarks[i].needs {
			want[n] = true
		}
	}
	var out []benchmark
	for _, b := range benchmarks {
		if want[b.name] {
			out = append(out, b)
		}
	}
	return out, nil
}

func run(only string, quick bool, out, rev string, limit time.Duration, keep, verbose bool) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()

	todo, err := selected(only)
	if err != nil {
		return err
	}
	root, err := moduleRoot()
	if err != nil {
		return err
	}
	if out == "" {
		out = filepath.Join(root, "bench", "RESULTS.md")
	}
	sz := fullSizes
	if quick {
		sz = quickSizes
	}
	sz.limit = limit

	tmp, err := os.MkdirTemp("", "dray-bench-")
	if err != nil {
		return err
	}
	if keep {
		fmt.Fprintln(os.Stderr, "keeping", tmp)
	} else {
		defer os.RemoveAll(tmp)
	}

	m := describeMachine(ctx, root, rev)
	fmt.Printf("%s, %d CPUs, %s memory, %s, dray %s\n", m.CPU, m.NProc, m.Memory, m.GoVersion, m.Commit)
	fmt.Println("building dray…")
	bin, err := buildDray(ctx, root, rev, tmp)
	if err != nil {
		return err
	}
	h := &harness{bin: bin, tmp: tmp, sz: sz, verbose: verbose, profile: !quick}

	var results []*result
	for _, b := range todo {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		fmt.Printf("%-14s running…\n", b.name)
		start, load := time.Now(), loadAvg()
		r := b.run(h, ctx)
		r.Name = b.name
		r.Load = fmt.Sprintf("%s → %s", load, loadAvg())
		fmt.Printf("%-14s %s  %s (%s)\n", b.name, r.Verdict, r.Figure, time.Since(start).Round(100*time.Millisecond))
		if verbose && r.Timeline != "" {
			fmt.Println(r.Timeline)
		}
		results = append(results, r)
	}

	fmt.Println()
	printTable(os.Stdout, results)
	rep := &report{Machine: m, Args: os.Args[1:], Quick: quick, Sizes: sz, Results: results}
	if err := os.WriteFile(out, []byte(rep.markdown()), 0o644); err != nil {
		return fmt.Errorf("write results: %w", err)
	}
	fmt.Println("\nwrote", out)

	var errs []error
	for _, r := range results {
		if r.Err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", r.Name, r.Err))
		}
	}
	return errors.Join(errs...)
}

// moduleRoot finds the folder of go.mod from the working folder up.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod here or above: run from the dray module")
		}
		dir = parent
	}
}
