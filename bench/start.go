package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// The benchmarks of a server's start and of an idle server (issue 5).

// Dagu's figures on this machine kind, for scale.
const (
	daguReady   = "Dagu: 338 ms to healthy on this machine kind"
	daguIdleRSS = "Dagu's server: 99.5 MB idle RSS, 338 ms to healthy on this machine kind"
)

// initProject runs `dray init` into a new folder under the scratch folder.
func (h *harness) initProject(ctx context.Context, name string) (string, error) {
	dir := filepath.Join(h.tmp, name)
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, h.bin, "init", dir).CombinedOutput(); err != nil {
		return "", fmt.Errorf("dray init %s: %w\n%s", dir, err, out)
	}
	return dir, nil
}

// coldStartBench measures exec → first 200 from /readyz.
func (h *harness) coldStartBench(ctx context.Context, postgres bool) *result {
	n := h.sz.coldStarts
	measured := fmt.Sprintf("`dray server` (API, scheduler and agent in the process) on %s, the project `dray init` makes: exec → first 200 from /readyz (address file polled, then /readyz, every 1 ms); %d first starts on an empty store (migrations run) and %d restarts on the store left by them: median",
		stores[postgres], n, n)
	target := "restarts and first starts: median < 100 ms"
	if postgres {
		target = "— (the target, median < 100 ms, is SQLite's)"
	}
	if postgres && os.Getenv(envPostgres) == "" {
		return skippedOrFailed(measured, target, errNoPostgres)
	}
	var first, again, listening []time.Duration
	for i := range n {
		dir, err := h.initProject(ctx, fmt.Sprintf("coldstart-%s-%d", strings.ToLower(stores[postgres]), i))
		if err != nil {
			return failed(measured, err)
		}
		st, drop, err := openStore(ctx, postgres)
		if err != nil {
			return failed(measured, err)
		}
		for round := range 2 {
			ready, listen, err := timeStart(ctx, h.bin, dir, st)
			if err != nil {
				drop()
				return failed(measured, err)
			}
			if round == 0 {
				first = append(first, ready)
			} else {
				again = append(again, ready)
			}
			listening = append(listening, listen)
		}
		drop()
	}
	version, err := h.timeVersion(ctx, n)
	if err != nil {
		return failed(measured, err)
	}
	inits, err := h.initTrace(ctx, n)
	if err != nil {
		return failed(measured, err)
	}
	r := &result{Measured: measured, Target: target, Verdict: "INFO",
		Figure: fmt.Sprintf("restart: median %.0f ms (min %.0f, max %.0f); first start: median %.0f ms (min %.0f, max %.0f)",
			ms(median(again)), ms(slices.Min(again)), ms(slices.Max(again)), ms(median(first)), ms(slices.Min(first)), ms(slices.Max(first))),
		Notes: []string{
			fmt.Sprintf("exec → listening (address file written), all starts: median %.0f ms; `dray --version`, exec to exit (loading the binary and its init): median %.0f ms; %s", ms(median(listening)), ms(version), inits.summary()),
			daguReady,
		},
		TimelineNote: "Each start's parts (the server's first and later starts, the binary's start alone) and the Go package initializers, from GODEBUG=inittrace=1 on `dray --version`.",
		Timeline: stageTable([]stage{
			{"exec → listening (all starts)", listening},
			{"exec → /readyz 200, first start", first},
			{"exec → /readyz 200, restart", again},
		}) + "\n\n" + inits.table(),
	}
	if !postgres {
		r.Verdict = verdict(median(again) < 100*time.Millisecond && median(first) < 100*time.Millisecond)
	} else {
		conn, err := pgConnect(ctx, n)
		if err != nil {
			return failed(measured, err)
		}
		r.Notes = append(r.Notes, fmt.Sprintf("one PostgreSQL connection from the harness (pgx: TCP, SCRAM authentication, SELECT 1): median %.1f ms", ms(conn)))
	}
	return r
}

// timeStart starts a server, waits for /readyz and stops it. It returns when
// it became ready and when it listened, after exec.
func timeStart(ctx context.Context, bin, dir string, st stateStore) (ready, listening time.Duration, err error) {
	srv, err := startServer(bin, dir, serverOptions{store: st})
	if err != nil {
		return 0, 0, err
	}
	defer srv.stop()
	if listening, err = srv.waitListening(ctx, 30*time.Second); err != nil {
		return 0, 0, err
	}
	if ready, err = srv.waitReady(ctx, 30*time.Second); err != nil {
		return 0, 0, err
	}
	return ready, listening, nil
}

// timeVersion is the median time of n runs of `dray --version`: what
// starting the binary costs before dray does anything.
func (h *harness) timeVersion(ctx context.Context, n int) (time.Duration, error) {
	var walls []time.Duration
	for range n {
		start := time.Now()
		if out, err := exec.CommandContext(ctx, h.bin, "--version").CombinedOutput(); err != nil {
			return 0, fmt.Errorf("dray --version: %w\n%s", err, out)
		}
		walls = append(walls, time.Since(start))
	}
	return median(walls), nil
}

// inits is what the Go package initializers of dray cost, over several
// starts of the binary.
type inits struct {
	main  []time.Duration          // from the runtime's start to the last init's end
	total []time.Duration          // the initializers' clock time, summed
	pkg   map[string]time.Duration // clock time per package, summed over the starts
	runs  int
}

// initTrace runs `dray --version` n times with GODEBUG=inittrace=1.
func (h *harness) initTrace(ctx context.Context, n int) (*inits, error) {
	in := &inits{pkg: map[string]time.Duration{}, runs: n}
	for range n {
		cmd := exec.CommandContext(ctx, h.bin, "--version")
		cmd.Env = append(os.Environ(), "GODEBUG=inittrace=1")
		var stderr strings.Builder
		cmd.Stderr = &stderr
		if err := cmd.Run(); err != nil {
			return nil, fmt.Errorf("GODEBUG=inittrace=1 dray --version: %w\n%s", err, stderr.String())
		}
		var total, end time.Duration
		for _, l := range strings.Split(stderr.String(), "\n") {
			pkg, at, clock, ok := parseInitTrace(l)
			if !ok {
				continue
			}
			in.pkg[pkg] += clock
			total += clock
			end = max(end, at+clock)
		}
		if end == 0 {
			return nil, errors.New("GODEBUG=inittrace=1 dray --version printed no init lines")
		}
		in.main = append(in.main, end)
		in.total = append(in.total, total)
	}
	return in, nil
}

// parseInitTrace reads a line such as
// "init internal/bytealg @0.008 ms, 0.011 ms clock, 0 bytes, 0 allocs".
func parseInitTrace(l string) (pkg string, at, clock time.Duration, ok bool) {
	f := strings.Fields(strings.ReplaceAll(l, ",", ""))
	if len(f) < 6 || f[0] != "init" || !strings.HasPrefix(f[2], "@") || f[3] != "ms" || f[5] != "ms" {
		return "", 0, 0, false
	}
	a, err1 := strconv.ParseFloat(strings.TrimPrefix(f[2], "@"), 64)
	c, err2 := strconv.ParseFloat(f[4], 64)
	if err1 != nil || err2 != nil {
		return "", 0, 0, false
	}
	return f[1], time.Duration(a * float64(time.Millisecond)), time.Duration(c * float64(time.Millisecond)), true
}

func (in *inits) summary() string {
	return fmt.Sprintf("package initializers: median %.1f ms of clock, done %.0f ms after the runtime started", ms(median(in.total)), ms(median(in.main)))
}

// table lists the costliest initializers.
func (in *inits) table() string {
	names := make([]string, 0, len(in.pkg))
	for p := range in.pkg {
		names = append(names, p)
	}
	slices.SortFunc(names, func(a, b string) int { return int(in.pkg[b] - in.pkg[a]) })
	var b strings.Builder
	fmt.Fprintf(&b, "package initializers, mean clock per start over %d starts (total: median %.1f ms, the last done at %.0f ms):\n", in.runs, ms(median(in.total)), ms(median(in.main)))
	for _, p := range names[:min(8, len(names))] {
		fmt.Fprintf(&b, "%8.2f ms  %s\n", ms(in.pkg[p]/time.Duration(in.runs)), p)
	}
	return strings.TrimRight(b.String(), "\n")
}

// idleRSSBench measures the resident memory of an idle embedded server.
func (h *harness) idleRSSBench(ctx context.Context) *result {
	wait := h.sz.idleWait
	when := fmt.Sprintf("%.0f s after /readyz", wait.Seconds())
	if wait < 10*time.Second {
		when += " (quick: a shorter wait than the 10 s the target is for)"
	}
	measured := "`dray server` with its defaults (SQLite under .dray/, scheduler and agent in the process; only --listen set, to a free port) on the project `dray init` makes, no runs: VmRSS " + when
	target := "< 40 MB"
	dir, err := h.initProject(ctx, "idle")
	if err != nil {
		return failed(measured, err)
	}
	srv, err := startServer(h.bin, dir, serverOptions{store: sqliteStore})
	if err != nil {
		return failed(measured, err)
	}
	defer srv.stop()
	if _, err := srv.waitReady(ctx, 30*time.Second); err != nil {
		return failed(measured, err)
	}
	var tl strings.Builder
	tl.WriteString("  at (s)   VmRSS    VmHWM   threads   CPU since ready\n")
	s0, ok := sample(srv.pid)
	if !ok {
		return failed(measured, fmt.Errorf("read /proc/%d: the server is gone", srv.pid))
	}
	start := time.Now()
	last := s0
	for elapsed := time.Duration(0); elapsed < wait; {
		step := min(time.Second, wait-elapsed)
		select {
		case <-ctx.Done():
			return failed(measured, ctx.Err())
		case <-srv.exited:
			return failed(measured, fmt.Errorf("dray server exited: %v\n%s", srv.waitErr, lastBytes(srv.stderr.String(), 3000)))
		case <-time.After(step):
		}
		elapsed = time.Since(start)
		s, ok := sample(srv.pid)
		if !ok {
			return failed(measured, fmt.Errorf("read /proc/%d: the server is gone", srv.pid))
		}
		last = s
		fmt.Fprintf(&tl, "%8.1f   %6s   %6s   %7d   %.2f s\n", elapsed.Seconds(), mb(s.RSS), mb(s.HWM), s.Threads, (s.User + s.Sys - s0.User - s0.Sys).Seconds())
	}
	idleCPU := (last.User + last.Sys - s0.User - s0.Sys).Seconds() / time.Since(start).Seconds()
	r := &result{Measured: measured, Target: target,
		Figure:       fmt.Sprintf("VmRSS %s (VmHWM %s, %d threads, %.1f%% of a CPU while idle)", mb(last.RSS), mb(last.HWM), last.Threads, 100*idleCPU),
		Verdict:      verdict(last.RSS < 40e6),
		Notes:        []string{daguIdleRSS},
		TimelineNote: "The idle server's /proc/PID/status and stat, sampled every second after /readyz answered 200.",
		Timeline:     strings.TrimRight(tl.String(), "\n"),
	}
	return r
}
