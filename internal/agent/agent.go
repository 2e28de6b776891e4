// Package agent claims task attempts from the control plane and runs them with
// its executors: it resolves secrets into the work, follows the attempt's
// output into its log, reads its outputs, enforces its timeout, stops it when
// asked, and reports how it ended. It reaches the control plane only through
// the Control interface: in process (control.Service) or over HTTP.
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/dray-dev/dray/internal/control"
	"github.com/dray-dev/dray/internal/engine"
	"github.com/dray-dev/dray/internal/executor"
	"github.com/dray-dev/dray/internal/secrets"
	"github.com/dray-dev/dray/internal/store"
)

// Control is what an agent needs from the control plane.
type Control interface {
	// Register returns the attempts the agent's id still holds from an
	// earlier process, to re-attach to or report lost.
	Register(ctx context.Context, info control.AgentInfo) ([]*engine.Attempt, error)
	Claim(ctx context.Context, info control.AgentInfo, slots int, wait time.Duration) ([]*engine.Attempt, error)
	Started(ctx context.Context, agentID string, attemptID int64, handle []byte, at time.Time) error
	// AgentLogs records log lines; lines already recorded (by Seq) are ignored.
	AgentLogs(ctx context.Context, agentID string, attemptID int64, lines []store.LogLine) error
	// Finish reports a result and, when claim > 0, claims up to that many
	// attempts for the slot the attempt held.
	Finish(ctx context.Context, info control.AgentInfo, attemptID int64, res engine.Result, claim int) ([]*engine.Attempt, error)
	// Heartbeat says the agent is alive and which attempts it runs.
	Heartbeat(ctx context.Context, agentID string, running []int64, wait time.Duration) (control.Beat, error)
	Deregister(ctx context.Context, agentID string) error
}

var _ Control = (*control.Service)(nil)

// Config holds an Agent's settings and dependencies.
type Config struct {
	Info    control.AgentInfo
	Control Control
	// Executors run attempts, by executor type (local, docker, …).
	Executors map[string]executor.Executor
	Secrets   *secrets.Resolver
	// Dir is the project folder: local tasks run in it.
	Dir string
	// SpoolDir holds log lines on disk that the control plane cannot take yet
	// (default: dray-spool-<agent id> in the temporary directory).
	SpoolDir string
	Logger   *slog.Logger
	// Poll is how long a claim or heartbeat long poll waits (default 5s).
	Poll time.Duration
	// KillGrace is how long a stopped task gets between SIGTERM and SIGKILL
	// (default 10s); a profile's kill_grace option overrides it.
	KillGrace time.Duration
	// DrainGrace is how long a stopping agent lets running attempts finish
	// before it stops them (default 0: stop them at once).
	DrainGrace time.Duration
	// ReportTimeout is how long the agent tries to report a result before it
	// gives up and stops with an error (default 2m). The attempt is then
	// recorded as lost when the agent is found gone, and retried.
	ReportTimeout time.Duration
	// SendTimeout is how long a stopping agent keeps trying to send log
	// lines and results the control plane has not taken, past DrainGrace
	// and KillGrace (default 15s). Then it gives them up and stops; the
	// control plane records the attempts lost.
	SendTimeout time.Duration
}

// Agent runs attempts. Make one with New and call Run.
type Agent struct {
	cfg Config
	log *slog.Logger

	mu       sync.Mutex
	running  map[int64]*run
	draining bool          // no more claims
	drained  bool          // an admin drained the agent: it stops once its attempts end
	freed    chan struct{} // a slot freed
	wg       sync.WaitGroup

	// giveUp ends some time after a shutdown began: log lines and results
	// that could not be sent by then are given up, so that an agent whose
	// server is away still stops (the server records the attempts lost).
	giveUp    context.Context
	giveUpNow context.CancelFunc

	// fatal is closed, with fatalErr set, when the agent cannot go on (a
	// result it could not report).
	fatalOnce sync.Once
	fatal     chan struct{}
	fatalErr  error
}

// New returns an agent.
func New(cfg Config) *Agent {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Poll == 0 {
		cfg.Poll = 5 * time.Second
	}
	if cfg.KillGrace == 0 {
		cfg.KillGrace = 10 * time.Second
	}
	if cfg.ReportTimeout == 0 {
		cfg.ReportTimeout = 2 * time.Minute
	}
	if cfg.SendTimeout == 0 {
		cfg.SendTimeout = 15 * time.Second
	}
	if cfg.Info.Capacity <= 0 {
		cfg.Info.Capacity = 1
	}
	if cfg.Secrets == nil {
		cfg.Secrets = secrets.NewResolver(secrets.NewEnv(secrets.EnvPrefix))
	}
	for typ := range cfg.Executors {
		cfg.Info.Executors = append(cfg.Info.Executors, typ)
	}
	slices.Sort(cfg.Info.Executors)
	a := &Agent{cfg: cfg, log: cfg.Logger.With("agent", cfg.Info.ID), running: map[int64]*run{}, freed: make(chan struct{}, 1), fatal: make(chan struct{})}
	a.giveUp, a.giveUpNow = context.WithCancel(context.Background())
	return a
}

// Run registers the agent, re-attaches to what its id still holds, and
// claims and runs attempts until ctx ends or an admin drains it. Then it stops
// claiming, gives running attempts DrainGrace to finish (all the time they
// need when drained), stops the rest, reports them, and deregisters; it
// heartbeats until then. An agent the control plane declared gone (cut off
// for longer than its lease) stops what it runs, which was handed to others,
// and registers again.
func (a *Agent) Run(ctx context.Context) error {
	// Attempts outlive ctx: they end by being stopped, and report after.
	runCtx, stopRuns := context.WithCancel(context.WithoutCancel(ctx))
	defer stopRuns()
	defer a.giveUpNow()
	// A fatal error stops claiming as ctx would.
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	go func() {
		select {
		case <-a.fatal:
			stop()
		case <-ctx.Done():
		}
	}()
	a.clearSpool()
	var err error
	for {
		err = a.session(ctx, runCtx)
		if !errors.Is(err, control.ErrAgentStopped) {
			break
		}
		a.log.Warn("the control plane declared this agent gone (no heartbeat within its lease); stopping what it ran, which was handed to other agents, and registering again")
		a.stopAll(stopShutdown)
		a.waitAttempts(ctx)
		if ctx.Err() != nil {
			break
		}
	}
	stopRuns()
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if derr := a.cfg.Control.Deregister(dctx, a.cfg.Info.ID); derr != nil {
		a.log.Warn("deregister", "err", derr)
	}
	select {
	case <-a.fatal:
		return a.fatalErr
	default:
	}
	if err == nil || errors.Is(err, errDrained) || (errors.Is(err, context.Canceled) && ctx.Err() != nil) {
		return nil
	}
	return err
}

// session registers, re-attaches to what the agent's id holds, and claims
// until ctx ends, an admin drains the agent, or the control plane refuses
// it. Then it lets the running attempts end (see Run) and returns. It
// heartbeats all along, so that attempts ending during a drain are not
// taken for lost. It returns ErrAgentStopped, without waiting for the
// attempts, when the control plane declared the agent gone.
func (a *Agent) session(ctx, runCtx context.Context) error {
	held, err := a.register(ctx)
	if err != nil {
		return err
	}
	a.mu.Lock()
	a.draining = false
	a.mu.Unlock()
	a.log.Info("agent started", "labels", a.cfg.Info.Labels, "executors", a.cfg.Info.Executors, "capacity", a.cfg.Info.Capacity, "held", len(held))
	for _, at := range held {
		a.resume(runCtx, at)
	}
	a.reconcile(ctx, held)

	claimCtx, stopClaims := context.WithCancelCause(ctx)
	defer stopClaims(nil)
	beatCtx, stopBeats := context.WithCancel(context.WithoutCancel(ctx))
	defer stopBeats()
	beatErr := make(chan error, 1)
	go func() {
		err := a.heartbeats(beatCtx, func() { stopClaims(errDrained) })
		if err != nil {
			stopClaims(err)
		}
		beatErr <- err
	}()
	err = a.claimLoop(claimCtx, runCtx)
	if cause := context.Cause(claimCtx); cause != nil && !errors.Is(cause, context.Canceled) {
		err = cause
	}
	if errors.Is(err, control.ErrAgentStopped) {
		stopBeats()
		<-beatErr
		return err
	}

	// Stopping: drained, asked to stop (ctx), or refused.
	a.mu.Lock()
	a.draining = true
	drained := a.drained
	a.mu.Unlock()
	if drained {
		a.log.Info("draining: waiting for running attempts to end", "running", a.count())
		a.wg.Wait()
	} else {
		// What cannot reach the server within the grace periods and a
		// little more is given up, so that the agent stops.
		t := time.AfterFunc(a.cfg.DrainGrace+a.cfg.KillGrace+a.cfg.SendTimeout, func() {
			a.log.Warn("stopping: giving up on log lines and results the server has not taken")
			a.giveUpNow()
		})
		defer t.Stop()
		a.drain()
	}
	stopBeats()
	<-beatErr
	return err
}

// register registers the agent, trying again while the control plane cannot
// be reached: an agent may start before its server.
func (a *Agent) register(ctx context.Context) ([]*engine.Attempt, error) {
	b := newBackoff()
	for {
		held, err := a.cfg.Control.Register(ctx, a.cfg.Info)
		if err == nil {
			return held, nil
		}
		if ctx.Err() != nil || !Transient(err) {
			return nil, fmt.Errorf("register agent %s: %w", a.cfg.Info.ID, err)
		}
		a.log.Warn("register failed; trying again", "err", err)
		b.wait(ctx)
	}
}

// reconcile stops what the agent's executors started for it that nobody
// holds any more (containers of attempts handed to others while it was away).
func (a *Agent) reconcile(ctx context.Context, held []*engine.Attempt) {
	if a.cfg.Info.RunID != "" {
		return // the agent of one `dray run`: a new identity each time, nothing to find
	}
	keep := map[int64]bool{}
	for _, at := range held {
		keep[at.ID] = true
	}
	for typ, ex := range a.cfg.Executors {
		r, ok := ex.(executor.Reconciler)
		if !ok {
			continue
		}
		removed, err := r.Orphans(ctx, a.cfg.Info.ID, func(id int64) bool { return keep[id] })
		if err != nil {
			// An engine that is down (no Docker on this machine) has nothing
			// to find now; the next start looks again.
			a.log.Info("could not look for orphaned attempts", "executor", typ, "err", err)
			continue
		}
		if len(removed) > 0 {
			a.log.Info("stopped orphaned attempts", "executor", typ, "removed", removed)
		}
	}
}

// stopAll stops every running attempt.
func (a *Agent) stopAll(why stopReason) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, r := range a.running {
		r.stop(why)
	}
}

// die stops the agent with err.
func (a *Agent) die(err error) {
	a.fatalOnce.Do(func() {
		a.fatalErr = err
		close(a.fatal)
	})
}

func (a *Agent) claimLoop(ctx, runCtx context.Context) error {
	backoff := newBackoff()
	for ctx.Err() == nil {
		free := a.cfg.Info.Capacity - a.count()
		if free <= 0 {
			select {
			case <-a.freed:
			case <-ctx.Done():
			}
			continue
		}
		got, err := a.cfg.Control.Claim(ctx, a.cfg.Info, free, a.cfg.Poll)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if errors.Is(err, control.ErrAgentStopped) || !Transient(err) {
				return err
			}
			a.log.Warn("claim failed; trying again", "err", err)
			backoff.wait(ctx)
			continue
		}
		backoff.reset()
		for _, at := range got {
			a.start(runCtx, at)
		}
	}
	return ctx.Err()
}

func (a *Agent) count() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.running)
}

// drain waits DrainGrace for running attempts, then stops the rest and waits
// for their reports.
func (a *Agent) drain() {
	done := make(chan struct{})
	go func() {
		a.wg.Wait()
		close(done)
	}()
	if a.cfg.DrainGrace > 0 {
		select {
		case <-done:
			return
		case <-time.After(a.cfg.DrainGrace):
		}
	}
	a.mu.Lock()
	for _, r := range a.running {
		r.stop(stopShutdown)
	}
	a.mu.Unlock()
	<-done
}

// heartbeats keeps the agent alive at the control plane and stops the
// attempts it is asked to cancel until ctx ends. It calls drained (once) when
// an admin drains the agent, and returns when the control plane refuses the
// agent: ErrAgentStopped when it was declared gone.
func (a *Agent) heartbeats(ctx context.Context, drained func()) error {
	backoff := newBackoff()
	for ctx.Err() == nil {
		beat, err := a.cfg.Control.Heartbeat(ctx, a.cfg.Info.ID, a.runningIDs(), a.cfg.Poll)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, control.ErrAgentStopped) || !Transient(err) {
				return err
			}
			a.log.Warn("heartbeat failed; trying again", "err", err)
			backoff.wait(ctx)
			continue
		}
		backoff.reset()
		unknown := 0
		a.mu.Lock()
		for _, id := range beat.Cancel {
			if r, ok := a.running[id]; ok {
				r.stop(stopCanceled)
			} else {
				unknown++
			}
		}
		first := beat.Drain && !a.drained
		if first {
			a.drained = true
		}
		a.mu.Unlock()
		if first {
			a.log.Info("drained by an admin: claiming nothing more, finishing what runs, then stopping")
			drained()
		}
		if unknown > 0 {
			// Claimed but not started yet (or not ours any more): the control
			// plane repeats the cancel at once, so pause rather than spin.
			sleep(ctx, min(a.cfg.Poll, 200*time.Millisecond))
		}
	}
	return nil
}

// runningIDs lists the attempts the agent runs (never nil).
func (a *Agent) runningIDs() []int64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	ids := make([]int64, 0, len(a.running))
	for id := range a.running {
		ids = append(ids, id)
	}
	return ids
}

// errDrained ends a session whose agent was drained.
var errDrained = errors.New("agent drained")

func (a *Agent) spoolDir() string {
	if a.cfg.SpoolDir != "" {
		return a.cfg.SpoolDir
	}
	return filepath.Join(os.TempDir(), "dray-spool-"+strings.Map(func(r rune) rune {
		if r == '/' || r == '\\' || r == os.PathSeparator {
			return '_'
		}
		return r
	}, a.cfg.Info.ID))
}

// waitAttempts waits for the running attempts to end and report. Should ctx
// end meanwhile (the agent is asked to stop), what cannot be reported within
// KillGrace and SendTimeout more is given up.
func (a *Agent) waitAttempts(ctx context.Context) {
	done := make(chan struct{})
	go func() {
		a.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return
	case <-ctx.Done():
	}
	t := time.AfterFunc(a.cfg.KillGrace+a.cfg.SendTimeout, a.giveUpNow)
	defer t.Stop()
	<-done
}

// clearSpool removes the spool files an earlier process of this agent left
// (it was killed while the server was away): their attempts were recorded
// lost and run again.
func (a *Agent) clearSpool() {
	files, _ := filepath.Glob(filepath.Join(a.spoolDir(), "attempt-*.jsonl"))
	for _, f := range files {
		if err := os.Remove(f); err == nil {
			a.log.Info("removed the log spool of an earlier process", "file", f)
		}
	}
}

// Transient reports whether a failed call to the control plane may succeed
// if tried again (the server is unreachable, restarting or busy), as opposed
// to a refusal (a revoked token, a wrong role, an old protocol).
func Transient(err error) bool {
	var te interface{ Transient() bool }
	if errors.As(err, &te) {
		return te.Transient()
	}
	// In process: an attempt that is not there or not this agent's will not be.
	return !errors.Is(err, store.ErrNotFound) && !errors.Is(err, store.ErrConflict)
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// backoff waits between retries of a failing call: 100ms doubling to 5s.
type backoff struct{ d time.Duration }

func newBackoff() *backoff { return &backoff{d: 100 * time.Millisecond} }

func (b *backoff) reset() { b.d = 100 * time.Millisecond }

func (b *backoff) wait(ctx context.Context) {
	sleep(ctx, b.d)
	b.d = min(2*b.d, 5*time.Second)
}
