package agent

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/dray-dev/dray/internal/engine"
	"github.com/dray-dev/dray/internal/executor"
	"github.com/dray-dev/dray/internal/secrets"
	"github.com/dray-dev/dray/internal/spec"
)

// Why an attempt was stopped.
type stopReason int

const (
	stopCanceled stopReason = iota + 1
	stopTimeout
	stopShutdown
)

func (r stopReason) String() string {
	switch r {
	case stopCanceled:
		return "canceled"
	case stopTimeout:
		return "timeout"
	case stopShutdown:
		return "shutdown"
	}
	return "unknown"
}

// startedDelay is how long an attempt runs before its start is reported on
// its own; a shorter one reports it with its result.
const startedDelay = 50 * time.Millisecond

// run is one attempt this agent is running.
type run struct {
	a  *Agent
	at *engine.Attempt
	// startedAt is set once the executor started the attempt.
	startedAt time.Time

	// resumed is an attempt an earlier process of this agent started: the
	// executor re-attaches to it instead of starting it.
	resumed bool

	mu     sync.Mutex
	reason stopReason
	stopCh chan struct{}
}

// resume re-attaches to an attempt that an earlier process of this agent
// held, or reports it lost when its executor cannot.
func (a *Agent) resume(ctx context.Context, at *engine.Attempt) {
	a.launch(ctx, &run{a: a, at: at, resumed: true, stopCh: make(chan struct{})})
}

func (a *Agent) start(ctx context.Context, at *engine.Attempt) {
	a.launch(ctx, &run{a: a, at: at, stopCh: make(chan struct{})})
}

func (a *Agent) launch(ctx context.Context, r *run) {
	at := r.at
	a.mu.Lock()
	a.running[at.ID] = r
	if a.draining {
		// Claimed by a report sent just before the agent began to stop: hand
		// it back rather than start what nobody would stop.
		r.stop(stopShutdown)
	}
	a.mu.Unlock()
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		res := r.execute(ctx)
		next := r.report(ctx, res)
		// The next attempts take over this one's slot.
		for _, n := range next {
			a.start(ctx, n)
		}
		a.release(at.ID)
	}()
}

func (a *Agent) release(id int64) {
	a.mu.Lock()
	delete(a.running, id)
	a.mu.Unlock()
	select {
	case a.freed <- struct{}{}:
	default:
	}
}

// stop asks the attempt to stop; the first reason wins.
func (r *run) stop(why stopReason) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.reason == 0 {
		r.reason = why
		close(r.stopCh)
	}
}

func (r *run) stopped() stopReason {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.reason
}

// stoppedBeforeStart is the result of an attempt stopped before it started.
func stoppedBeforeStart(why stopReason) engine.Result {
	if why == stopCanceled {
		return engine.Result{State: engine.AttemptCanceled, Reason: "canceled"}
	}
	return engine.Result{State: engine.AttemptLost, Reason: "its agent stopped before it started"}
}

func failed(reason string) engine.Result {
	return engine.Result{State: engine.AttemptFailed, Reason: reason}
}

// execute runs the attempt to its end and says how it ended.
func (r *run) execute(ctx context.Context) engine.Result {
	at, w := r.at, r.at.Work
	log := r.a.log.With("run", at.RunID, "task", at.Task, "index", at.Index, "attempt", at.Number)
	if r.stopped() == stopShutdown && !r.resumed {
		return engine.Result{State: engine.AttemptLost, Reason: "its agent was stopping when it got it"}
	}
	ex, ok := r.a.cfg.Executors[w.ExecutorType]
	if !ok && r.resumed {
		// Restarted without that executor: another agent runs it again.
		return engine.Result{State: engine.AttemptLost, Reason: fmt.Sprintf("its agent %s restarted without the %s executor", r.a.cfg.Info.ID, w.ExecutorType)}
	}
	if !ok {
		return failed(fmt.Sprintf("agent %s has no %s executor", r.a.cfg.Info.ID, w.ExecutorType))
	}
	// Resolving secrets and starting (an image pull) end early when the
	// attempt is stopped meanwhile: a cancel need not wait for a pull.
	startCtx, cancelStart := context.WithCancel(ctx)
	defer cancelStart()
	go func() {
		select {
		case <-r.stopCh:
			cancelStart()
		case <-startCtx.Done():
		}
	}()
	values, err := r.a.cfg.Secrets.Resolve(startCtx, w.Secrets)
	if why := r.stopped(); why != 0 {
		return stoppedBeforeStart(why)
	}
	if err != nil {
		return failed(err.Error())
	}
	secretValues := make([]string, 0, len(values))
	for _, v := range values {
		secretValues = append(secretValues, v)
	}
	ship := newShipper(r.a.giveUp, r.a.cfg.Control, r.a.cfg.Info.ID, at.ID, secrets.NewMasker(secretValues...), log, r.a.spoolDir())
	defer ship.close()
	sp := r.spec(values)
	var h executor.Handle
	if r.resumed {
		h, err = ex.Recover(startCtx, sp, at.Handle, ship)
		if err != nil {
			ship.close()
			log.Info("could not re-attach to an attempt after a restart", "err", err)
			return engine.Result{State: engine.AttemptLost, Reason: fmt.Sprintf("its agent %s restarted and could not re-attach: %v", r.a.cfg.Info.ID, err)}
		}
		log.Info("re-attached to an attempt after a restart")
	} else if h, err = ex.Start(startCtx, sp, ship); err != nil {
		ship.close()
		if why := r.stopped(); why != 0 {
			return stoppedBeforeStart(why)
		}
		return failed(err.Error())
	}
	start := time.Now()
	r.startedAt = start
	// A short task reports its start with its result: one write instead of
	// two, and no handle to save for an attempt that has ended.
	startedReport := time.AfterFunc(startedDelay, func() {
		if err := r.a.cfg.Control.Started(ctx, r.a.cfg.Info.ID, at.ID, h.State(), start); err != nil {
			log.Warn("report started", "err", err)
		}
	})
	defer startedReport.Stop()
	type waited struct {
		res executor.Result
		err error
	}
	done := make(chan waited, 1)
	go func() {
		res, err := h.Wait(ctx)
		done <- waited{res, err}
	}()
	var timeout <-chan time.Time
	if w.Timeout > 0 {
		left := w.Timeout
		if r.resumed && !at.StartedAt.IsZero() {
			left -= time.Since(at.StartedAt)
		}
		t := time.NewTimer(max(left, 0))
		defer t.Stop()
		timeout = t.C
	}
	var end waited
	ended := false
	select {
	case end = <-done:
		ended = true
	case <-timeout:
		r.stop(stopTimeout)
	case <-r.stopCh:
	}
	if why := r.stopped(); why != 0 && !ended {
		grace := durationOption(w.Options["kill_grace"], r.a.cfg.KillGrace)
		log.Info("stopping attempt", "why", why, "grace", grace)
		if err := h.Stop(ctx, grace); err != nil {
			log.Warn("stop attempt", "err", err)
		}
		end = <-done
	}
	ship.close()
	log.Debug("attempt ended", "exit_code", end.res.ExitCode, "reason", end.res.Reason, "took", time.Since(start))
	switch r.stopped() {
	case stopCanceled:
		return engine.Result{State: engine.AttemptCanceled, Reason: "canceled"}
	case stopTimeout:
		return failed("timeout after " + w.Timeout.String())
	case stopShutdown:
		return engine.Result{State: engine.AttemptLost, Reason: "its agent stopped before it ended"}
	}
	if end.err != nil {
		return engine.Result{State: engine.AttemptLost, Reason: "could not follow it: " + end.err.Error()}
	}
	code := end.res.ExitCode
	if code != 0 {
		res := failed(end.res.Reason)
		res.ExitCode = &code
		return res
	}
	outputs, err := ship.outputs(end.res)
	if err == nil {
		outputs, err = maskOutputs(outputs, secretValues)
	}
	if err != nil {
		res := failed(err.Error())
		res.ExitCode = &code
		return res
	}
	return engine.Result{State: engine.AttemptSucceeded, ExitCode: &code, Outputs: outputs}
}

// spec builds what the executor runs, with secrets put in.
func (r *run) spec(secrets map[string]string) *executor.Spec {
	at, w := r.at, r.at.Work
	fill := func(s string) string {
		if !strings.Contains(s, "@@dray-secret:") {
			return s
		}
		for name, v := range secrets {
			s = strings.ReplaceAll(s, engine.SecretMarker(w.Nonce, name), v)
		}
		return s
	}
	var where []string // where secrets go, for executors that care
	env := make(map[string]string, len(w.Env)+8)
	for k, v := range w.Env {
		env[k] = fill(v)
		if env[k] != v {
			where = append(where, k)
		}
	}
	slices.Sort(where)
	env["DRAY_RUN_ID"] = at.RunID
	env["DRAY_PIPELINE"] = at.Pipeline
	env["DRAY_TASK"] = at.Task
	env["DRAY_ATTEMPT"] = strconv.Itoa(at.Number)
	env["DRAY_ATTEMPT_ID"] = strconv.FormatInt(at.ID, 10)
	env["DRAY_PARAMS"] = string(w.Params)
	if w.Item != nil {
		env["DRAY_ITEM"] = string(w.Item)
		env["DRAY_INDEX"] = strconv.Itoa(at.Index)
	}
	command := make([]string, len(w.Command))
	for i, c := range w.Command {
		command[i] = fill(c)
		if command[i] != c && !slices.Contains(where, "command") {
			where = append(where, "command")
		}
	}
	run := fill(w.Run)
	if run != w.Run {
		where = append(where, "run")
	}
	image := fill(w.Image)
	if image != w.Image {
		where = append(where, "image")
	}
	workdir := w.Workdir
	if w.ExecutorType == spec.ExecLocal && !filepath.IsAbs(workdir) {
		workdir = filepath.Join(r.a.cfg.Dir, workdir)
	}
	return &executor.Spec{
		AttemptID: at.ID, RunID: at.RunID, Pipeline: at.Pipeline, Task: at.Task, Index: at.Index, Attempt: at.Number,
		Run: run, Image: image, Command: command, Env: env, Workdir: workdir, Secrets: where,
		Resources: executor.Resources{MilliCPU: w.Resources.MilliCPU, MemoryBytes: w.Resources.MemoryBytes, Region: w.Resources.Region},
		Options:   w.Options,
		Labels: map[string]string{
			"dray.run": at.RunID, "dray.pipeline": at.Pipeline, "dray.task": at.Task,
			"dray.index":   strconv.Itoa(at.Index),
			"dray.attempt": strconv.FormatInt(at.ID, 10), "dray.agent": r.a.cfg.Info.ID,
		},
	}
}

// report tells the control plane how the attempt ended and claims the
// attempts that take over its slot, trying again for a while when the control
// plane cannot take it (unreachable, a full disk). If it never can, the agent
// stops with the error: the attempt stays running there until the agent is
// found gone, and is then retried.
func (r *run) report(ctx context.Context, res engine.Result) []*engine.Attempt {
	res.StartedAt = r.startedAt
	ctx, cancel := context.WithTimeout(ctx, r.a.cfg.ReportTimeout)
	defer cancel()
	defer context.AfterFunc(r.a.giveUp, cancel)()
	b := newBackoff()
	for {
		claim := 1
		r.a.mu.Lock()
		if r.a.draining {
			claim = 0
		}
		r.a.mu.Unlock()
		next, err := r.a.cfg.Control.Finish(ctx, r.a.cfg.Info, r.at.ID, res, claim)
		if err == nil {
			return next
		}
		if !Transient(err) {
			// Not this agent's any more (declared gone and handed on), or
			// refused: nothing to record.
			r.a.log.Error("the control plane refused the result of an attempt", "attempt", r.at.ID, "state", res.State, "err", err)
			return nil
		}
		if ctx.Err() != nil {
			r.a.log.Error("could not report the result of an attempt", "attempt", r.at.ID, "state", res.State, "err", err)
			r.a.die(fmt.Errorf("could not record the result of task %s (attempt %d): %w", r.at.Task, r.at.ID, err))
			return nil
		}
		r.a.log.Warn("report result failed; trying again", "attempt", r.at.ID, "err", err)
		b.wait(ctx)
	}
}

// durationOption reads a profile duration option, which arrives as a
// time.Duration, a number of nanoseconds (after JSON) or a string.
func durationOption(v any, def time.Duration) time.Duration {
	switch x := v.(type) {
	case time.Duration:
		return x
	case float64:
		return time.Duration(x)
	case int:
		return time.Duration(x)
	case string:
		if d, err := spec.ParseDuration(x); err == nil {
			return d
		}
	}
	return def
}
