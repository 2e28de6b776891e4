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
	Register(ctx context.Context, info control.AgentInfo) error
	Claim(ctx context.Context, info control.AgentInfo, slots int, wait time.Duration) ([]*engine.Attempt, error)
	Started(ctx context.Context, agentID string, attemptID int64, handle []byte, at time.Time) error
	AppendLogs(ctx context.Context, attemptID int64, lines []store.LogLine) error
	// Finish reports a result and, when claim > 0, claims up to that many
	// attempts for the slot the attempt held.
	Finish(ctx context.Context, info control.AgentInfo, attemptID int64, res engine.Result, claim int) ([]*engine.Attempt, error)
	Heartbeat(ctx context.Context, agentID string, wait time.Duration) ([]int64, error)
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
	Dir    string
	Logger *slog.Logger
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
}

// Agent runs attempts. Make one with New and call Run.
type Agent struct {
	cfg Config
	log *slog.Logger

	mu       sync.Mutex
	running  map[int64]*run
	draining bool          // no more claims
	freed    chan struct{} // a slot freed
	wg       sync.WaitGroup

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
	if cfg.Info.Capacity <= 0 {
		cfg.Info.Capacity = 1
	}
	if cfg.Secrets == nil {
		cfg.Secrets = secrets.NewResolver(secrets.NewEnv(secrets.EnvPrefix))
	}
	for typ := range cfg.Executors {
		cfg.Info.Executors = append(cfg.Info.Executors, typ)
	}
	return &Agent{cfg: cfg, log: cfg.Logger.With("agent", cfg.Info.ID), running: map[int64]*run{}, freed: make(chan struct{}, 1), fatal: make(chan struct{})}
}

// Run registers the agent and claims and runs attempts until ctx ends. Then it
// stops claiming, gives running attempts DrainGrace to finish, stops the rest,
// reports them, and deregisters.
func (a *Agent) Run(ctx context.Context) error {
	if err := a.cfg.Control.Register(ctx, a.cfg.Info); err != nil {
		return fmt.Errorf("register agent %s: %w", a.cfg.Info.ID, err)
	}
	a.log.Info("agent started", "labels", a.cfg.Info.Labels, "executors", a.cfg.Info.Executors, "capacity", a.cfg.Info.Capacity)
	// Attempts outlive ctx: they end by being stopped, and report after.
	runCtx, stopRuns := context.WithCancel(context.WithoutCancel(ctx))
	defer stopRuns()
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
	hbDone := make(chan struct{})
	go func() {
		defer close(hbDone)
		a.heartbeats(ctx)
	}()
	err := a.claimLoop(ctx, runCtx)
	a.mu.Lock()
	a.draining = true
	a.mu.Unlock()
	a.drain()
	<-hbDone
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
	if errors.Is(err, context.Canceled) && ctx.Err() != nil {
		return nil
	}
	return err
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
			if errors.Is(err, control.ErrAgentStopped) {
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

// heartbeats keeps the agent alive at the control plane and stops the attempts
// it is asked to cancel.
func (a *Agent) heartbeats(ctx context.Context) {
	backoff := newBackoff()
	for ctx.Err() == nil {
		ids, err := a.cfg.Control.Heartbeat(ctx, a.cfg.Info.ID, a.cfg.Poll)
		if err != nil {
			if ctx.Err() == nil {
				a.log.Warn("heartbeat failed; trying again", "err", err)
				backoff.wait(ctx)
			}
			continue
		}
		backoff.reset()
		a.mu.Lock()
		for _, id := range ids {
			if r, ok := a.running[id]; ok {
				r.stop(stopCanceled)
			}
		}
		a.mu.Unlock()
	}
}

// backoff waits between retries of a failing call: 100ms doubling to 5s.
type backoff struct{ d time.Duration }

func newBackoff() *backoff { return &backoff{d: 100 * time.Millisecond} }

func (b *backoff) reset() { b.d = 100 * time.Millisecond }

func (b *backoff) wait(ctx context.Context) {
	t := time.NewTimer(b.d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
	b.d = min(2*b.d, 5*time.Second)
}
