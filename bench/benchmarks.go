package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// result is what one benchmark measured, against its target.
type result struct {
	Name     string
	Measured string // what was measured, in words
	Figure   string
	Target   string
	Verdict  string // PASS, FAIL, INFO (no target) or ERROR (could not measure)
	Notes    []string
	Timeline string // how the run progressed, for reading where time goes
	// TimelineNote says what Timeline shows, when it is not progress lines.
	TimelineNote string
	Load         string // the load average at start and end
	Err          error
}

func failed(measured string, err error) *result {
	return &result{Measured: measured, Figure: "—", Target: "—", Verdict: "ERROR", Err: err, Notes: []string{firstLine(err.Error())}}
}

func verdict(ok bool) string {
	if ok {
		return "PASS"
	}
	return "FAIL"
}

func (h *harness) floorSeqBench(ctx context.Context) *result {
	n := h.sz.seqSpawns
	measured := fmt.Sprintf("%s × `sh -c true` one after another from Go (os/exec): mean per spawn", count(n))
	var mean time.Duration
	cpu, err := measureCPU(n, func() (err error) {
		mean, err = spawnSeq(ctx, n)
		return err
	})
	if err != nil {
		return failed(measured, err)
	}
	h.floorSeq, h.floorSeqCPU = mean, cpu
	return &result{Measured: measured, Figure: fmt.Sprintf("%.2f ms/spawn", ms(mean)), Target: "— (the floor)", Verdict: "INFO",
		Notes: []string{"CPU per spawn: " + cpu.String()}}
}

func (h *harness) floorParBench(ctx context.Context) *result {
	n, w := h.sz.parSpawns, h.sz.parWorkers
	measured := fmt.Sprintf("%s × `sh -c true` from %d goroutines: spawns per second", count(n), w)
	var rate float64
	cpu, err := measureCPU(n, func() (err error) {
		rate, err = spawnPar(ctx, n, w)
		return err
	})
	if err != nil {
		return failed(measured, err)
	}
	h.floorPar, h.floorParCPU = rate, cpu
	return &result{Measured: measured, Figure: fmt.Sprintf("%.0f spawns/s", rate), Target: "— (the floor)", Verdict: "INFO",
		Notes: []string{"CPU per spawn: " + cpu.String()}}
}

func (h *harness) chainBench(ctx context.Context) *result {
	n := h.sz.chain
	measured := fmt.Sprintf("`dray run chain`: %s tasks `run: \"true\"`, each needing the one before; wall / tasks", count(n))
	dir, err := writeProject(h.tmp, "chain", map[string]string{"pipelines/chain.yaml": chainPipeline(n)})
	if err != nil {
		return failed(measured, err)
	}
	limit := h.sz.runLimit(h.sz.chainLimit)
	run, err := runDray(ctx, h.bin, dir, limit, "run", "chain")
	// The machine's load drifts: judge by the floor before and after the run.
	floor := h.floorSeq
	after, aerr := spawnSeq(ctx, h.sz.seqSpawns)
	if aerr == nil {
		floor = (h.floorSeq + after) / 2
	}
	target := fmt.Sprintf("≤ 1.5 × floor-seq = %.2f ms/task", 1.5*ms(floor))
	if aerr == nil {
		target += fmt.Sprintf(" (floor-seq %.2f ms before the run, %.2f after: mean %.2f)", ms(h.floorSeq), ms(after), ms(floor))
	}
	r := &result{Measured: measured, Target: target}
	if run != nil {
		r.Timeline = chainTimeline(run, n) + "\n" + cpuNote(run)
	}
	switch {
	case errors.Is(err, errTimedOut):
		done, at := chainDone(run)
		if done == 0 {
			return failed(measured, stalled(run, limit))
		}
		r.Verdict = "FAIL"
		r.Figure = fmt.Sprintf("did not finish in %s: %d of %d tasks", limit, done, n)
		if done > 0 {
			r.Figure += fmt.Sprintf(", %.1f ms/task so far (%.1f× floor-seq)", ms(at)/float64(done), ms(at)/float64(done)/ms(floor))
		}
		return r
	case err != nil:
		return failed(measured, err)
	}
	per := run.Wall / time.Duration(n)
	r.Figure = fmt.Sprintf("%.2f ms/task (%.1f s wall) = %.1f× floor-seq", ms(per), run.Wall.Seconds(), ms(per)/ms(floor))
	r.Verdict = verdict(float64(per) <= 1.5*float64(floor))
	r.Notes = append(r.Notes, taskCPU(run, n), fmt.Sprintf("floor-seq CPU per spawn: %s", h.floorSeqCPU))
	r.Notes = append(r.Notes, "Dagu: 11.8 ms/step on a 100-step chain on this machine kind")
	return r
}

func (h *harness) fanoutBench(ctx context.Context) *result {
	n, mp := h.sz.fanout, h.sz.fanoutParallel
	measured := fmt.Sprintf("`dray run fanout --capacity 64`: one task, for_each over %s items, max_parallel %d, `run: \"true\"`; items / wall", count(n), mp)
	run, err := h.runFanout(ctx, "fanout", n, mp, h.sz.runLimit(h.sz.fanoutLimit))
	// The machine's load drifts: judge by the floor before and after the run.
	floor := h.floorPar
	after, aerr := spawnPar(ctx, h.sz.parSpawns, h.sz.parWorkers)
	if aerr == nil {
		floor = (h.floorPar + after) / 2
	}
	target := fmt.Sprintf("≥ 80%% of floor-par = %.0f tasks/s", 0.8*floor)
	if aerr == nil {
		target += fmt.Sprintf(" (floor-par %.0f/s before the run, %.0f after: mean %.0f)", h.floorPar, after, floor)
	}
	r := &result{Measured: measured, Target: target}
	if run != nil {
		r.Timeline = fanoutTimeline(run) + "\n" + cpuNote(run)
	}
	switch {
	case errors.Is(err, errTimedOut):
		if done, _, _ := fanoutProgress(run); done <= 0 {
			return failed(measured, stalled(run, h.sz.runLimit(h.sz.fanoutLimit)))
		}
		r.Verdict = "FAIL"
		r.Figure = h.unfinished(run, n, floor)
		return r
	case err != nil:
		return failed(measured, err)
	}
	rate := float64(n) / run.Wall.Seconds()
	r.Figure = fmt.Sprintf("%.0f tasks/s (%.1f s wall) = %.0f%% of floor-par", rate, run.Wall.Seconds(), 100*rate/floor)
	r.Verdict = verdict(rate >= 0.8*floor)
	r.Notes = append(r.Notes, taskCPU(run, n), fmt.Sprintf("floor-par CPU per spawn: %s", h.floorParCPU))
	r.Notes = append(r.Notes, "Dagu: about 63 steps/s on 200 parallel steps")
	return r
}

func (h *harness) bigBench(ctx context.Context) *result {
	n, mp := h.sz.big, h.sz.fanoutParallel
	measured := fmt.Sprintf("`dray run fanout --capacity 64`: for_each over %s items, max_parallel %d: peak RSS of the dray process (wait4 maxrss)", count(n), mp)
	target := "< 300 MB peak RSS"
	run, err := h.runFanout(ctx, "fanout-big", n, mp, h.sz.runLimit(h.sz.bigLimit))
	r := &result{Measured: measured, Target: target}
	if run != nil {
		r.Timeline = fanoutTimeline(run) + "\n" + cpuNote(run)
	}
	switch {
	case errors.Is(err, errTimedOut):
		if done, _, _ := fanoutProgress(run); done <= 0 {
			return failed(measured, stalled(run, h.sz.runLimit(h.sz.bigLimit)))
		}
		// The peak so far says nothing about the peak at the end.
		r.Verdict = "FAIL"
		r.Figure = h.unfinished(run, n, h.floorPar) + fmt.Sprintf("; peak RSS until stopped %s (%s with the cancel)", mb(run.HWMAtStop), mb(run.MaxRSS))
		return r
	case err != nil:
		return failed(measured, err)
	}
	rate := float64(n) / run.Wall.Seconds()
	r.Figure = fmt.Sprintf("peak RSS %s; %.1f s wall, %.0f tasks/s (%.0f%% of floor-par)", mb(run.MaxRSS), run.Wall.Seconds(), rate, 100*rate/h.floorPar)
	r.Verdict = verdict(run.MaxRSS < 300e6)
	r.Notes = append(r.Notes, taskCPU(run, n), "Dagu: a one-step run alone peaks at 84 MB")
	return r
}

// runFanout runs a fan-out of n items in a fresh project.
func (h *harness) runFanout(ctx context.Context, project string, n, maxParallel int, limit time.Duration) (*drayRun, error) {
	dir, err := writeProject(h.tmp, project, map[string]string{"pipelines/fanout.yaml": fanoutPipeline("fanout", n, maxParallel)})
	if err != nil {
		return nil, err
	}
	return runDray(ctx, h.bin, dir, limit, "run", "fanout", "--capacity", "64")
}

// stalled is the error of a run that finished no task before its time limit:
// dray is stuck or broken, which is not a measurement.
func stalled(run *drayRun, limit time.Duration) error {
	return fmt.Errorf("dray finished no task in %s; it is stuck (last output: %q)", limit, strings.TrimSpace(tail(run.Lines, 2)))
}

// unfinished describes a fan-out stopped at its time limit.
func (h *harness) unfinished(run *drayRun, n int, floor float64) string {
	done, _, at := fanoutProgress(run)
	s := fmt.Sprintf("did not finish in the time limit: %s of %s items in %.0f s", count(max(done, 0)), count(n), at.Seconds())
	if done > 0 {
		rate := float64(done) / at.Seconds()
		s += fmt.Sprintf(" (%.0f tasks/s = %.0f%% of floor-par)", rate, 100*rate/floor)
	}
	return s
}

func (h *harness) validateBench(ctx context.Context) *result {
	n := h.sz.pipelines
	measured := fmt.Sprintf("`dray validate` of %d pipelines × 10 tasks (needs, params, expressions, a for_each, a template use): median wall of %d runs", n, h.sz.validateRuns)
	dir, err := writeProject(h.tmp, "validate", validateFiles(n))
	if err != nil {
		return failed(measured, err)
	}
	var walls []time.Duration
	var peak int64
	for range h.sz.validateRuns {
		run, err := runDray(ctx, h.bin, dir, h.sz.runLimit(h.sz.validateLimit), "validate")
		if err != nil {
			return failed(measured, err)
		}
		if want := fmt.Sprintf("ok: %d pipelines", n); len(run.Lines) == 0 || run.Lines[0].Text != want {
			return failed(measured, fmt.Errorf("dray validate printed %q, want %q", tail(run.Lines, 3), want))
		}
		walls = append(walls, run.Wall)
		peak = max(peak, run.MaxRSS)
	}
	slices.Sort(walls)
	med := walls[len(walls)/2]
	return &result{
		Measured: measured,
		Figure:   fmt.Sprintf("%.0f ms (min %.0f, max %.0f; peak RSS %s)", ms(med), ms(walls[0]), ms(walls[len(walls)-1]), mb(peak)),
		Target:   "< 1 s",
		Verdict:  verdict(med < time.Second),
	}
}

// chainDone counts the tasks of a chain run that succeeded and when the
// last of them was read.
func chainDone(run *drayRun) (int, time.Duration) {
	n, at := 0, time.Duration(0)
	for _, l := range run.Lines {
		if f := strings.Fields(l.Text); len(f) == 3 && f[2] == "succeeded" && strings.HasPrefix(f[1], "t") {
			n++
			at = l.At
		}
	}
	return n, at
}

// chainTimeline shows, for each tenth of a chain, how long its tasks took.
func chainTimeline(run *drayRun, n int) string {
	var b strings.Builder
	b.WriteString("tasks done   at (s)   ms/task in this stretch   dray RSS\n")
	step := max(1, n/10)
	done, prevAt, prevDone := 0, time.Duration(0), 0
	for _, l := range run.Lines {
		f := strings.Fields(l.Text)
		if len(f) != 3 || f[2] != "succeeded" || !strings.HasPrefix(f[1], "t") {
			continue
		}
		done++
		if done%step == 0 {
			fmt.Fprintf(&b, "%10d   %6.1f   %23.2f   %s\n", done, l.At.Seconds(), ms(l.At-prevAt)/float64(done-prevDone), mb(l.RSS))
			prevAt, prevDone = l.At, done
		}
	}
	fmt.Fprintf(&b, "exit at %.1f s", run.Wall.Seconds())
	return b.String()
}

// fanoutProgress returns the last progress figure of the fan-out task and
// when it was read.
func fanoutProgress(run *drayRun) (done, total int, at time.Duration) {
	for i := len(run.Lines) - 1; i >= 0; i-- {
		if d, t, ok := parseProgress(run.Lines[i].Text, "fan"); ok {
			return d, t, run.Lines[i].At
		}
	}
	return -1, -1, 0
}

// fanoutTimeline shows the fan-out's progress lines with the rate between them.
func fanoutTimeline(run *drayRun) string {
	var b strings.Builder
	b.WriteString("items done   at (s)   tasks/s in this stretch   dray RSS\n")
	prevDone, prevAt := 0, time.Duration(0)
	for _, l := range run.Lines {
		d, _, ok := parseProgress(l.Text, "fan")
		if !ok {
			continue
		}
		rate := 0.0
		if l.At > prevAt {
			rate = float64(d-prevDone) / (l.At - prevAt).Seconds()
		}
		fmt.Fprintf(&b, "%10d   %6.1f   %23.0f   %s\n", d, l.At.Seconds(), rate, mb(l.RSS))
		prevDone, prevAt = d, l.At
	}
	fmt.Fprintf(&b, "exit at %.1f s", run.Wall.Seconds())
	return b.String()
}

// taskCPU says how much CPU dray itself and its tasks used per task, to
// compare with the CPU per spawn of the floors: unlike wall time, it hardly
// depends on what else the machine is doing.
func taskCPU(run *drayRun, n int) string {
	s := run.Last
	return fmt.Sprintf("CPU per task: %.2f ms in dray + %.2f ms in sh", ms((s.User+s.Sys)/time.Duration(n)), ms((s.ChildUser+s.ChildSys)/time.Duration(n)))
}

// cpuNote says how much CPU dray itself and its tasks used over the run,
// from the last 50 ms sample of /proc/PID/stat.
func cpuNote(run *drayRun) string {
	s := run.Last
	own := s.User + s.Sys
	return fmt.Sprintf("peak RSS (VmHWM) %s, reached at %.1f s; ", mb(s.HWM), run.HWMRose.Seconds()) +
		fmt.Sprintf("dray's own CPU: %.1f s user + %.1f s sys = %.0f%% of one CPU over %.1f s; its tasks (reaped children): %.1f s; up to %d threads",
			s.User.Seconds(), s.Sys.Seconds(), 100*own.Seconds()/run.Wall.Seconds(), run.Wall.Seconds(),
			(s.ChildUser+s.ChildSys).Seconds(), run.MaxThreads)
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func mb(bytes int64) string { return fmt.Sprintf("%.0f MB", float64(bytes)/1e6) }

// count writes n with thousands separators.
func count(n int) string {
	s := fmt.Sprint(n)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

func firstLine(s string) string {
	first, _, _ := strings.Cut(s, "\n")
	return first
}
