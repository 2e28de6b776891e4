package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
)

// The benchmarks of remote agents and the Docker executor (issue 6): a
// `dray server --no-agent` on SQLite and `dray agent` processes that reach it
// over loopback HTTP.

// agentProc is a running `dray agent`.
type agentProc struct {
	cmd    *exec.Cmd
	stderr *tailBuffer
	done   chan struct{}
}

// startAgents starts n agents of the server that run local processes,
// named <prefix>-<i>, with a token of role agent.
func (h *harness) startAgents(ctx context.Context, s *serverSetup, prefix string, n, capacity int) ([]*agentProc, error) {
	return h.startAgentsOf(ctx, s, prefix, n, capacity, "local", nil)
}

// startAgentsOf starts n agents that run executors (a comma-separated
// list), with env added to their environment.
func (h *harness) startAgentsOf(ctx context.Context, s *serverSetup, prefix string, n, capacity int, executors string, env []string) ([]*agentProc, error) {
	tok, err := createToken(ctx, h.bin, s.dir, sqliteStore, "agent")
	if err != nil {
		return nil, err
	}
	var out []*agentProc
	for i := range n {
		cmd := exec.Command(h.bin, "agent", "--name", fmt.Sprintf("%s-%d", prefix, i), "--executors", executors,
			"--capacity", fmt.Sprint(capacity), "--poll", "10s", "--spool-dir", filepath.Join(h.tmp, "spool"))
		cmd.Dir = s.dir
		cmd.Env = append(append(os.Environ(), "DRAY_SERVER="+s.srv.url, "DRAY_TOKEN="+tok, "NO_COLOR=1"), env...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
		p := &agentProc{cmd: cmd, stderr: &tailBuffer{max: 16 << 10}, done: make(chan struct{})}
		cmd.Stderr = p.stderr
		if err := cmd.Start(); err != nil {
			stopAgents(out)
			return nil, err
		}
		go func() { cmd.Wait(); close(p.done) }()
		out = append(out, p)
	}
	// Wait until every agent has registered and waits in a claim.
	deadline := time.Now().Add(30 * time.Second)
	for {
		var list struct {
			Agents []struct {
				ID, State string
			} `json:"agents"`
		}
		if err := s.api.do(ctx, http.MethodGet, "/api/v1/agents", nil, &list); err != nil {
			stopAgents(out)
			return nil, err
		}
		active := 0
		for _, a := range list.Agents {
			if strings.HasPrefix(a.ID, prefix+"-") && a.State == "active" {
				active++
			}
		}
		if active == n {
			time.Sleep(200 * time.Millisecond) // into their long polls
			return out, nil
		}
		if time.Now().After(deadline) {
			stopAgents(out)
			return nil, fmt.Errorf("%d of %d agents registered in 30s; the first said: %s", active, n, lastBytes(out[0].stderr.String(), 800))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func stopAgents(agents []*agentProc) {
	for _, a := range agents {
		a.cmd.Process.Signal(syscall.SIGTERM)
	}
	for _, a := range agents {
		select {
		case <-a.done:
		case <-time.After(10 * time.Second):
			syscall.Kill(-a.cmd.Process.Pid, syscall.SIGKILL)
		}
	}
}

// claimBench measures how long a queued attempt waits for one of 10 idle
// remote agents to claim it.
func (h *harness) claimBench(ctx context.Context) *result {
	n := h.sz.claims
	measured := fmt.Sprintf("`dray server --no-agent` on SQLite and 10 idle `dray agent` processes in long polls over loopback HTTP: a run of one task `true`, triggered %s times one after another; per attempt claimed_at − queued_at: median and p95", count(n))
	target := "median < 20 ms"
	s, err := h.startProject(ctx, "claim", map[string]string{"pipelines/first.yaml": firstPipeline}, sqliteStore, false, 4, "--no-agent")
	if err != nil {
		return failed(measured, err)
	}
	defer s.close()
	agents, err := h.startAgents(ctx, s, "idle", 10, 1)
	if err != nil {
		return failed(measured, err)
	}
	defer stopAgents(agents)
	var waits []time.Duration
	for range n {
		run, err := s.api.trigger(ctx, "first")
		if err != nil {
			return failed(measured, err)
		}
		if _, err := s.api.waitRun(ctx, run.ID, 20*time.Millisecond, 10*time.Millisecond, 30*time.Second); err != nil {
			return failed(measured, err)
		}
		atts, err := s.api.attempts(ctx, run.ID)
		if err != nil {
			return failed(measured, err)
		}
		if len(atts) != 1 || atts[0].QueuedAt == nil || atts[0].ClaimedAt == nil {
			return failed(measured, fmt.Errorf("run %s: want one claimed attempt, got %+v", run.ID, atts))
		}
		waits = append(waits, atts[0].ClaimedAt.Sub(*atts[0].QueuedAt))
	}
	med := median(waits)
	return &result{Measured: measured, Target: target, Verdict: verdict(med < 20*time.Millisecond),
		Figure: fmt.Sprintf("median %.2f ms, p95 %.2f ms (min %.2f, max %.2f)", ms(med), ms(percentile(waits, 0.95)), ms(slices.Min(waits)), ms(slices.Max(waits)))}
}

// agentsFanoutBench runs many no-op tasks across 4 remote agents.
func (h *harness) agentsFanoutBench(ctx context.Context) *result {
	n := h.sz.agentTasks
	measured := fmt.Sprintf("`dray server --no-agent` on SQLite and 4 `dray agent` processes (capacity 16 each) over loopback HTTP: one run of a for_each of %s tasks `true`; tasks / (last ended_at − first started_at)", count(n))
	s, err := h.startProject(ctx, "agents-fanout", map[string]string{"pipelines/fan.yaml": fanoutPipeline("fan", n, 64)}, sqliteStore, false, 4, "--no-agent")
	if err != nil {
		return failed(measured, err)
	}
	defer s.close()
	agents, err := h.startAgents(ctx, s, "worker", 4, 16)
	if err != nil {
		return failed(measured, err)
	}
	defer stopAgents(agents)
	t0 := time.Now()
	run, err := s.api.trigger(ctx, "fan")
	if err != nil {
		return failed(measured, err)
	}
	rec, err := s.api.waitRun(ctx, run.ID, 500*time.Millisecond, 200*time.Millisecond, h.sz.runLimit(5*time.Minute))
	if err != nil {
		return failed(measured, err)
	}
	wall := time.Since(t0)
	if rec.State != "succeeded" {
		return failed(measured, fmt.Errorf("run %s %s: %s", run.ID, rec.State, rec.Reason))
	}
	atts, err := s.api.attempts(ctx, run.ID)
	if err != nil {
		return failed(measured, err)
	}
	var first, last time.Time
	for _, a := range atts {
		if a.StartedAt != nil && (first.IsZero() || a.StartedAt.Before(first)) {
			first = *a.StartedAt
		}
		if a.EndedAt != nil && a.EndedAt.After(last) {
			last = *a.EndedAt
		}
	}
	rate := float64(len(atts)) / last.Sub(first).Seconds()
	r := &result{Measured: measured, Target: "— (none set)", Verdict: "INFO",
		Figure: fmt.Sprintf("%.0f tasks/s (%s attempts; trigger to end %.1f s)", rate, count(len(atts)), wall.Seconds())}
	if h.floorPar > 0 {
		r.Notes = append(r.Notes, fmt.Sprintf("floor-par, spawns of `sh -c true` from Go on this machine, is %.0f/s in this run", h.floorPar))
	}
	return r
}

// agentLogsBench measures how fast one remote agent ships a task's log.
func (h *harness) agentLogsBench(ctx context.Context) *result {
	n := h.sz.logLines
	measured := fmt.Sprintf("one `dray agent` over loopback HTTP to `dray server --no-agent` on SQLite: a task that prints %s numbered lines at once (`seq`); lines / (attempt ended_at − started_at), its end being reported only once every line is stored; then every line is read back and checked", count(n))
	target := "> 50,000 lines/s, no line lost"
	s, err := h.startProject(ctx, "agent-logs", map[string]string{"pipelines/talk.yaml": fmt.Sprintf(talkPipeline, n)}, sqliteStore, false, 4, "--no-agent")
	if err != nil {
		return failed(measured, err)
	}
	defer s.close()
	agents, err := h.startAgents(ctx, s, "talker", 1, 1)
	if err != nil {
		return failed(measured, err)
	}
	defer stopAgents(agents)
	run, err := s.api.trigger(ctx, "talk")
	if err != nil {
		return failed(measured, err)
	}
	if _, err := s.api.waitRun(ctx, run.ID, 200*time.Millisecond, 100*time.Millisecond, h.sz.runLimit(5*time.Minute)); err != nil {
		return failed(measured, err)
	}
	atts, err := s.api.attempts(ctx, run.ID)
	if err != nil || len(atts) != 1 || atts[0].StartedAt == nil || atts[0].EndedAt == nil {
		return failed(measured, fmt.Errorf("run %s: want one ended attempt, got %+v (%v)", run.ID, atts, err))
	}
	took := atts[0].EndedAt.Sub(*atts[0].StartedAt)
	got, err := s.api.allLogLines(ctx, atts[0].ID)
	if err != nil {
		return failed(measured, err)
	}
	lost := 0
	for i := range n {
		if i >= len(got) || got[i] != fmt.Sprint(i+1) {
			lost++
		}
	}
	rate := float64(n) / took.Seconds()
	r := &result{Measured: measured, Target: target, Verdict: verdict(rate > 50_000 && lost == 0 && len(got) == n),
		Figure: fmt.Sprintf("%.0f lines/s (%s lines in %.2f s; %d stored, %d missing or out of place)", rate, count(n), took.Seconds(), len(got), lost)}
	return r
}

// allLogLines reads every line of an attempt's log.
func (c *apiClient) allLogLines(ctx context.Context, attemptID int64) ([]string, error) {
	var out []string
	after := int64(0)
	for {
		var page struct {
			Lines []struct {
				Text string `json:"text"`
			} `json:"lines"`
			Next int64 `json:"next"`
		}
		if err := c.do(ctx, http.MethodGet, fmt.Sprintf("/api/v1/attempts/%d/logs?after=%d&limit=10000", attemptID, after), nil, &page); err != nil {
			return nil, err
		}
		for _, l := range page.Lines {
			out = append(out, l.Text)
		}
		if len(page.Lines) == 0 || page.Next <= after {
			return out, nil
		}
		after = page.Next
	}
}

// dockerBench sets a Docker task of dray next to `docker run --rm` of the
// same image and command.
func (h *harness) dockerBench(ctx context.Context) *result {
	n := h.sz.dockerRuns
	measured := fmt.Sprintf("a task `image: busybox, command: [true]` (an image built FROM scratch with Debian's static busybox) on `dray server`'s in-process agent: attempt ended_at − claimed_at (create, start, wait, logs, remove), %d runs one after another; next to `docker run --rm` of the same image and command, timed from the harness: medians", n)
	image, err := busyboxImage(ctx, h.tmp)
	if err != nil {
		return &result{Measured: measured, Figure: "no Docker engine or no static busybox: " + firstLine(err.Error()), Target: "—", Verdict: "SKIP"}
	}
	var plain []time.Duration
	for range n {
		t0 := time.Now()
		if out, err := exec.CommandContext(ctx, "docker", "run", "--rm", image, "true").CombinedOutput(); err != nil {
			return failed(measured, fmt.Errorf("docker run: %v: %s", err, out))
		}
		plain = append(plain, time.Since(t0))
	}
	files := map[string]string{"pipelines/box.yaml": fmt.Sprintf("version: 1\nname: box\ntasks:\n  - {name: box, image: %q, command: [\"true\"]}\n", image),
		"dray.yaml": "version: 1\nproject: bench\nexecutors:\n  docker: {type: docker, pull: never}\n"}
	s, err := h.startProject(ctx, "docker", files, sqliteStore, false, 4)
	if err != nil {
		return failed(measured, err)
	}
	defer s.close()
	var dray []time.Duration
	for range n {
		run, err := s.api.trigger(ctx, "box")
		if err != nil {
			return failed(measured, err)
		}
		rec, err := s.api.waitRun(ctx, run.ID, 300*time.Millisecond, 50*time.Millisecond, time.Minute)
		if err != nil {
			return failed(measured, err)
		}
		atts, err := s.api.attempts(ctx, run.ID)
		if err != nil || rec.State != "succeeded" || len(atts) != 1 || atts[0].ClaimedAt == nil || atts[0].EndedAt == nil {
			return failed(measured, fmt.Errorf("run %s %s: %s (%v)", run.ID, rec.State, rec.Reason, err))
		}
		dray = append(dray, atts[0].EndedAt.Sub(*atts[0].ClaimedAt))
	}
	return &result{Measured: measured, Target: "— (none set; for comparison)", Verdict: "INFO",
		Figure: fmt.Sprintf("dray %.0f ms, docker run --rm %.0f ms (min %.0f and %.0f)", ms(median(dray)), ms(median(plain)), ms(slices.Min(dray)), ms(slices.Min(plain)))}
}

// busyboxImage builds (once; the tag is kept) an image FROM scratch with the
// static busybox.
func busyboxImage(ctx context.Context, tmp string) (string, error) {
	const tag = "dray-bench-busybox:1"
	if exec.CommandContext(ctx, "docker", "image", "inspect", tag).Run() == nil {
		return tag, nil
	}
	dir := filepath.Join(tmp, "busybox-image")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	bin, err := os.ReadFile("/bin/busybox")
	if err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(dir, "busybox"), bin, 0o755); err != nil {
		return "", err
	}
	dockerfile := "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n"
	if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte(dockerfile), 0o644); err != nil {
		return "", err
	}
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, "docker", "build", "-q", "-t", tag, dir)
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("docker build: %v: %s", err, stderr.String())
	}
	return tag, nil
}

const talkPipeline = `version: 1
name: talk
tasks:
  - {name: talk, run: "seq 1 %d"}
`
