package control

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"syscall"
	"time"

	"github.com/dray-dev/dray/internal/engine"
	"github.com/dray-dev/dray/internal/store"
)

// AgentInfo describes an agent when it registers.
type AgentInfo struct {
	ID        string
	Host      string
	PID       int
	Labels    []string
	Executors []string
	Version   string
	Capacity  int
	// RunID limits the agent to one run's attempts (the agent of `dray run`).
	RunID string
	// Token is the id of the API token a remote agent registers with; its
	// later calls must come with the same token. Empty in process.
	Token string
}

// Agent states.
const (
	AgentActive   = "active"
	AgentCordoned = "cordoned" // claims nothing more
	AgentDraining = "draining" // claims nothing more, and stops once its attempts end
	AgentStopped  = "stopped"
)

// ErrAgentStopped is returned to an agent that was declared gone: its
// attempts were handed to others, so it must register again.
var ErrAgentStopped = errors.New("agent was declared stopped")

// ErrOtherToken is returned for a call about an agent that another token
// registered (and, for a register, that is live).
var ErrOtherToken = errors.New("the agent was registered with another token")

// Register records an agent as active and returns the attempts that its id
// still holds (claimed or running): an agent restarted with the same identity
// re-attaches to them with its executors, or reports them lost, so nothing runs
// twice and nothing is left claimed under the new process's heartbeats. The
// agent is active: a cordon or drain lasts until the agent stops.
func (s *Service) Register(ctx context.Context, info AgentInfo) ([]*engine.Attempt, error) {
	now := s.now()
	var held []*engine.Attempt
	err := s.store.Update(ctx, func(tx store.Tx) error {
		old, err := tx.Agent(ctx, info.ID)
		switch {
		case errors.Is(err, store.ErrNotFound):
		case err != nil:
			return err
		case old.Token != info.Token && old.State != AgentStopped && now.Sub(lastSeen(old, s.since)) <= s.cfg.AgentLease:
			// Another token's agent (or the server's own) is live under
			// this name: it cannot be taken over.
			return fmt.Errorf("agent %s is live (last heard %s ago from %s): %w; give this agent another name",
				info.ID, now.Sub(old.HeartbeatAt).Round(time.Second), old.Host, ErrOtherToken)
		}
		held, err = tx.Attempts(ctx, store.AttemptFilter{Agent: info.ID, States: []engine.AttemptState{engine.AttemptClaimed, engine.AttemptRunning}})
		if err != nil {
			return err
		}
		return tx.PutAgent(ctx, &store.Agent{Token: info.Token,
			ID: info.ID, Host: info.Host, PID: info.PID, Labels: info.Labels, Executors: info.Executors,
			Version: info.Version, Capacity: info.Capacity, StartedAt: now, HeartbeatAt: now, State: AgentActive,
		})
	})
	if err != nil {
		return nil, fmt.Errorf("register agent %s: %w", info.ID, err)
	}
	return held, nil
}

// Claim claims up to slots attempts for an agent. When none is claimable it
// waits up to wait for one to be queued (a long poll), and returns none if
// none came.
func (s *Service) Claim(ctx context.Context, info AgentInfo, slots int, wait time.Duration) ([]*engine.Attempt, error) {
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		// Take the signal before looking, so a queue between the look and the
		// wait is not missed.
		queued, _ := s.signals()
		got, err := s.claimOnce(ctx, info, slots)
		if err != nil || len(got) > 0 || wait <= 0 {
			return got, err
		}
		select {
		case <-queued:
		case <-timer.C:
			return nil, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

func (s *Service) claimOnce(ctx context.Context, info AgentInfo, slots int) ([]*engine.Attempt, error) {
	var got []*engine.Attempt
	var out changes
	err := s.store.Update(ctx, func(tx store.Tx) error {
		out = changes{}
		var err error
		got, err = s.claim(ctx, tx, info, slots, &out)
		return err
	})
	if err != nil {
		return nil, err
	}
	s.after(out)
	return got, nil
}

// claim claims attempts for an agent inside tx.
func (s *Service) claim(ctx context.Context, tx store.Tx, info AgentInfo, slots int, out *changes) ([]*engine.Attempt, error) {
	now := s.now()
	ag, err := tx.Agent(ctx, info.ID)
	if err != nil {
		return nil, fmt.Errorf("claim for agent %s: %w", info.ID, err)
	}
	switch ag.State {
	case AgentStopped:
		return nil, fmt.Errorf("agent %s: %w", info.ID, ErrAgentStopped)
	case AgentCordoned, AgentDraining:
		return nil, nil
	}
	got, err := tx.Claim(ctx, store.Claim{Agent: info.ID, Labels: ag.Labels, Executors: ag.Executors, RunID: info.RunID, Limit: slots, Now: now})
	if err != nil {
		return nil, err
	}
	for _, a := range got {
		if a.Number == 1 || a.Index != 0 {
			continue
		}
		// The first claim after a retry delay: the task runs again.
		t, err := tx.Task(ctx, a.RunID, a.Task)
		if err != nil {
			return nil, err
		}
		if t.State == engine.TaskRetrying {
			t.State, t.Reason = engine.TaskRunning, ""
			if err := tx.PutTasks(ctx, []*engine.Task{t}); err != nil {
				return nil, err
			}
			out.events = append(out.events, engine.Event{Time: now, RunID: a.RunID, Task: a.Task, Index: -1, Attempt: a.Number, State: string(engine.TaskRunning)})
		}
	}
	return got, nil
}

// Started records that an attempt's process (container, task) started, with
// the executor handle to re-attach to it. Reports that arrive together are
// written in one transaction, with results (see Finish).
func (s *Service) Started(ctx context.Context, agentID string, attemptID int64, handle []byte, at time.Time) error {
	_, err := s.finisher.submit(ctx, &finishReq{info: AgentInfo{ID: agentID}, id: attemptID, started: true, handle: handle, at: at})
	return err
}

func (s *Service) started(ctx context.Context, tx store.Tx, agentID string, attemptID int64, handle []byte, at time.Time) error {
	a, err := s.agentAttempt(ctx, tx, agentID, attemptID)
	if err != nil {
		return err
	}
	if a.State != engine.AttemptClaimed {
		return nil
	}
	a.State, a.StartedAt, a.Handle = engine.AttemptRunning, at.UTC().Truncate(time.Microsecond), handle
	return tx.UpdateAttempt(ctx, a)
}

// agentAttempt reads an attempt and checks that the agent holds it.
func (s *Service) agentAttempt(ctx context.Context, tx store.Tx, agentID string, attemptID int64) (*engine.Attempt, error) {
	a, err := tx.Attempt(ctx, attemptID)
	if err != nil {
		return nil, err
	}
	if agentID != "" && a.Agent != agentID {
		return nil, fmt.Errorf("attempt %d belongs to agent %q, not %q: %w", attemptID, a.Agent, agentID, store.ErrConflict)
	}
	return a, nil
}

// CheckToken refuses a call about an agent with a token other than the one it
// registered with: one agent's token cannot act for another agent.
func (s *Service) CheckToken(ctx context.Context, agentID, token string) error {
	return s.store.View(ctx, func(tx store.Tx) error {
		ag, err := tx.Agent(ctx, agentID)
		if err != nil {
			return fmt.Errorf("agent %s: %w (it must register first)", agentID, err)
		}
		if ag.Token != token {
			return fmt.Errorf("agent %s: %w", agentID, ErrOtherToken)
		}
		return nil
	})
}

// AgentLease is how long an agent may go without a heartbeat before it is
// declared gone.
func (s *Service) AgentLease() time.Duration { return s.cfg.AgentLease }

// AgentLogs is AppendLogs for a remote agent: the attempt must be one it was
// given.
func (s *Service) AgentLogs(ctx context.Context, agentID string, attemptID int64, lines []store.LogLine) error {
	return s.appendLogs(ctx, agentID, attemptID, lines)
}

// AppendLogs records log lines of an attempt; lines already recorded (by Seq)
// are ignored, so a batch may be sent again.
func (s *Service) AppendLogs(ctx context.Context, attemptID int64, lines []store.LogLine) error {
	return s.appendLogs(ctx, "", attemptID, lines)
}

// appendLogs records log lines, in the transaction that checks, for a
// remote agent (agentID set), that the attempt is its own.
func (s *Service) appendLogs(ctx context.Context, agentID string, attemptID int64, lines []store.LogLine) error {
	if len(lines) == 0 {
		return nil
	}
	err := s.store.Update(ctx, func(tx store.Tx) error {
		if agentID != "" {
			if _, err := s.agentAttempt(ctx, tx, agentID, attemptID); err != nil {
				return err
			}
		}
		return tx.AppendLogs(ctx, attemptID, lines)
	})
	if err != nil {
		return fmt.Errorf("append logs of attempt %d: %w", attemptID, err)
	}
	s.loggedMu.Lock()
	s.logged[attemptID] = true
	s.loggedMu.Unlock()
	return nil
}

// Finish records how an attempt ended and advances its run. When claim > 0
// it also claims up to that many attempts for the agent in the same
// transaction (the slot the attempt held), so a chain of tasks costs one
// transaction a step. Reports that arrive together are written in one
// transaction (group commit): one sync to disk for many results. Reporting
// an attempt that has ended already is not an error, so a report may be sent
// again.
func (s *Service) Finish(ctx context.Context, info AgentInfo, attemptID int64, res engine.Result, claim int) ([]*engine.Attempt, error) {
	return s.finisher.submit(ctx, &finishReq{info: info, id: attemptID, res: res, claim: claim})
}

// finishOne records one report inside tx.
func (s *Service) finishOne(ctx context.Context, tx store.Tx, r *finishReq, out *changes) error {
	if err := s.finish(ctx, tx, r.info.ID, r.id, r.res, out); err != nil {
		return fmt.Errorf("record result of attempt %d: %w", r.id, err)
	}
	if r.claim <= 0 {
		return nil
	}
	got, err := s.claim(ctx, tx, r.info, r.claim, out)
	if errors.Is(err, ErrAgentStopped) {
		return nil
	}
	r.got = got
	return err
}

func (s *Service) finish(ctx context.Context, tx store.Tx, agentID string, attemptID int64, res engine.Result, out *changes) error {
	a, err := s.agentAttempt(ctx, tx, agentID, attemptID)
	if err != nil {
		return err
	}
	if a.State.Final() {
		return nil
	}
	return s.advance(ctx, tx, a.RunID, false, out, func(e *engine.Engine) (*engine.Step, error) { return e.Finish(a, res) })
}

// Beat is the control plane's answer to a heartbeat.
type Beat struct {
	// Cancel lists the agent's attempts it must stop.
	Cancel []int64
	// Drain asks the agent to claim nothing more, finish what it runs and
	// stop (an admin drains it).
	Drain bool
}

// ClaimGrace is how long an attempt may be claimed by an agent that does not
// list it as running in its heartbeats before it is recorded lost: the
// answer to the claim was lost on the way (a network cut), so the agent never
// started it.
const ClaimGrace = 10 * time.Second

// Heartbeat records that an agent is alive and returns which of its attempts
// it must stop and whether it must drain. When there is nothing to stop it
// waits up to wait for a cancel or a drain (a long poll), so either reaches
// the agent at once. running lists the attempts the agent runs (nil: not
// said); an attempt it holds but does not run, claimed over ClaimGrace ago,
// is lost and retried.
func (s *Service) Heartbeat(ctx context.Context, agentID string, running []int64, wait time.Duration) (Beat, error) {
	// However long the agent asks to wait, it beats often enough for its lease.
	wait = min(wait, s.cfg.AgentLease/3)
	// running is as of when the agent sent it: judge claims against then.
	arrived := s.now()
	timer := time.NewTimer(wait)
	defer timer.Stop()
	first := true
	for {
		_, cancels := s.signals()
		beat, err := s.heartbeatOnce(ctx, agentID, first, running, arrived)
		// A drain in force since before the call does not end the wait,
		// or a draining agent would spin; one that came while waiting does.
		if err != nil || len(beat.Cancel) > 0 || (beat.Drain && !first) || wait <= 0 {
			return beat, err
		}
		first = false
		select {
		case <-cancels:
		case <-timer.C:
			return beat, nil
		case <-ctx.Done():
			return Beat{}, ctx.Err()
		}
	}
}

func (s *Service) heartbeatOnce(ctx context.Context, agentID string, beat bool, running []int64, arrived time.Time) (Beat, error) {
	var out Beat
	var ch changes
	read := s.store.View
	if beat {
		read = s.store.Update
	}
	err := read(ctx, func(tx store.Tx) error {
		out, ch = Beat{}, changes{}
		ag, err := tx.Agent(ctx, agentID)
		if err != nil {
			return fmt.Errorf("heartbeat of agent %s: %w", agentID, err)
		}
		if ag.State == AgentStopped {
			return fmt.Errorf("agent %s: %w", agentID, ErrAgentStopped)
		}
		out.Drain = ag.State == AgentDraining
		now := s.now()
		if beat {
			ag.HeartbeatAt = now
			if err := tx.PutAgent(ctx, ag); err != nil {
				return err
			}
		}
		mine, err := tx.Attempts(ctx, store.AttemptFilter{Agent: agentID, States: []engine.AttemptState{engine.AttemptClaimed, engine.AttemptRunning}})
		if err != nil {
			return err
		}
		for _, a := range mine {
			if beat && running != nil && !slices.Contains(running, a.ID) && arrived.Sub(a.ClaimedAt) > ClaimGrace {
				res := engine.Result{State: engine.AttemptLost, Reason: "its agent " + agentID + " never got it (the answer to its claim was lost)"}
				if err := s.finish(ctx, tx, "", a.ID, res, &ch); err != nil {
					return err
				}
				continue
			}
			if a.CancelRequested {
				out.Cancel = append(out.Cancel, a.ID)
			}
		}
		return nil
	})
	if err == nil {
		s.after(ch)
	}
	return out, err
}

// SetAgentState cordons an agent (it claims nothing more), drains it (it
// also finishes what it runs and stops) or makes it active again, and wakes
// its heartbeat so it hears at once.
func (s *Service) SetAgentState(ctx context.Context, agentID, state string) (*store.Agent, error) {
	if state != AgentActive && state != AgentCordoned && state != AgentDraining {
		return nil, fmt.Errorf("agent state %q: want active, cordoned or draining", state)
	}
	var ag *store.Agent
	err := s.store.Update(ctx, func(tx store.Tx) error {
		var err error
		ag, err = tx.Agent(ctx, agentID)
		if err != nil {
			return err
		}
		if ag.State == AgentStopped {
			return fmt.Errorf("agent %s has stopped: %w", agentID, store.ErrConflict)
		}
		ag.State = state
		if err := tx.PutAgent(ctx, ag); err != nil {
			return err
		}
		return s.notify(ctx, tx, eventCancel)
	})
	if err != nil {
		return nil, err
	}
	s.wake(state == AgentActive, true)
	return ag, nil
}

// Deregister marks an agent stopped. Attempts it still holds are lost, and
// retried like failures.
func (s *Service) Deregister(ctx context.Context, agentID string) error {
	return s.stopAgent(ctx, agentID, "its agent stopped before it ended")
}

// Sweep declares agents gone whose heartbeat is older than the lease, or whose
// process on this host has exited, and marks their attempts lost.
func (s *Service) Sweep(ctx context.Context) error {
	var agents []*store.Agent
	if err := s.store.View(ctx, func(tx store.Tx) error {
		var err error
		agents, err = tx.Agents(ctx)
		return err
	}); err != nil {
		return err
	}
	now := s.now()
	for _, ag := range agents {
		if ag.State == AgentStopped {
			continue
		}
		var why string
		local := s.cfg.Host != "" && ag.Host == s.cfg.Host && ag.PID > 0
		switch {
		case local && !processAlive(ag.PID):
			why = fmt.Sprintf("agent %s is gone (its process %d on %s has exited)", ag.ID, ag.PID, ag.Host)
		case local:
			// Its process is alive (perhaps stopped with Ctrl-Z): not gone.
			continue
		case now.Sub(lastSeen(ag, s.since)) > s.cfg.AgentLease:
			why = fmt.Sprintf("agent %s stopped heartbeating %s ago", ag.ID, now.Sub(ag.HeartbeatAt).Round(time.Second))
		default:
			continue
		}
		s.log.Info("agent lost", "agent", ag.ID, "reason", why)
		if s.cfg.OnAgentGone != nil {
			var held []*engine.Attempt
			if err := s.store.View(ctx, func(tx store.Tx) error {
				var err error
				held, err = tx.Attempts(ctx, store.AttemptFilter{Agent: ag.ID, States: []engine.AttemptState{engine.AttemptClaimed, engine.AttemptRunning}})
				return err
			}); err != nil {
				return err
			}
			s.cfg.OnAgentGone(ctx, ag, held)
		}
		// Its runs end first, so their attempts are not retried only to be
		// abandoned; then what it held of other runs is lost and retried.
		if err := s.markStopped(ctx, ag.ID); err != nil {
			return err
		}
		if err := s.abandonOrphans(ctx); err != nil {
			return err
		}
		if err := s.stopAgent(ctx, ag.ID, why); err != nil {
			return err
		}
	}
	if err := s.abandonOrphans(ctx); err != nil {
		return err
	}
	return s.stopLeftovers(ctx, agents)
}

// stopLeftovers finishes what stopped agents still hold: a sweep that died
// between marking an agent stopped and stopping its attempts (the steps are
// transactions of their own) leaves them to the next sweep.
func (s *Service) stopLeftovers(ctx context.Context, agents []*store.Agent) error {
	stopped := map[string]bool{}
	for _, ag := range agents {
		if ag.State == AgentStopped {
			stopped[ag.ID] = true
		}
	}
	if len(stopped) == 0 {
		return nil
	}
	var held []*engine.Attempt
	if err := s.store.View(ctx, func(tx store.Tx) error {
		var err error
		held, err = tx.Attempts(ctx, store.AttemptFilter{States: []engine.AttemptState{engine.AttemptClaimed, engine.AttemptRunning}})
		return err
	}); err != nil {
		return err
	}
	done := map[string]bool{}
	for _, a := range held {
		if !stopped[a.Agent] || done[a.Agent] {
			continue
		}
		done[a.Agent] = true
		if err := s.stopAgent(ctx, a.Agent, "its agent "+a.Agent+" is gone"); err != nil {
			return err
		}
	}
	return nil
}

// markStopped records that an agent is gone.
func (s *Service) markStopped(ctx context.Context, agentID string) error {
	return s.store.Update(ctx, func(tx store.Tx) error {
		ag, err := tx.Agent(ctx, agentID)
		if err != nil {
			return err
		}
		ag.State = AgentStopped
		return tx.PutAgent(ctx, ag)
	})
}

// abandonOrphans ends the runs whose driver is gone (see engine.Engine.Abandon).
func (s *Service) abandonOrphans(ctx context.Context) error {
	var orphans []*engine.Run
	var gone map[string]*store.Agent
	err := s.store.View(ctx, func(tx store.Tx) error {
		runs, err := tx.Runs(ctx, store.RunFilter{States: []engine.RunState{engine.RunQueued, engine.RunRunning}, Driven: true})
		if err != nil {
			return err
		}
		gone = map[string]*store.Agent{}
		for _, r := range runs {
			ag, err := tx.Agent(ctx, r.Driver)
			if errors.Is(err, store.ErrNotFound) {
				continue // its process has not registered yet
			}
			if err != nil {
				return err
			}
			if ag.State == AgentStopped {
				orphans = append(orphans, r)
				gone[r.ID] = ag
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, r := range orphans {
		ag := gone[r.ID]
		why := fmt.Sprintf("interrupted: the dray process that ran it (pid %d on %s) is gone; `dray retry %s` finishes it", ag.PID, ag.Host, r.ID)
		var out changes
		err := s.store.Update(ctx, func(tx store.Tx) error {
			out = changes{}
			err := s.advance(ctx, tx, r.ID, true, &out, func(e *engine.Engine) (*engine.Step, error) { return e.Abandon(why) })
			if errors.Is(err, engine.ErrRunEnded) {
				return nil
			}
			return err
		})
		if err != nil {
			return fmt.Errorf("abandon run %s: %w", r.ID, err)
		}
		s.after(out)
	}
	return nil
}

// stopAgent marks an agent stopped and its unfinished attempts lost.
func (s *Service) stopAgent(ctx context.Context, agentID, why string) error {
	var out changes
	err := s.store.Update(ctx, func(tx store.Tx) error {
		out = changes{}
		ag, err := tx.Agent(ctx, agentID)
		if err != nil {
			return err
		}
		ag.State = AgentStopped
		if err := tx.PutAgent(ctx, ag); err != nil {
			return err
		}
		held, err := tx.Attempts(ctx, store.AttemptFilter{Agent: agentID, States: []engine.AttemptState{engine.AttemptClaimed, engine.AttemptRunning}})
		if err != nil {
			return err
		}
		for _, a := range held {
			res := engine.Result{State: engine.AttemptLost, Reason: why}
			if a.CancelRequested {
				res = engine.Result{State: engine.AttemptCanceled, Reason: "canceled (" + why + ")"}
			}
			if err := s.finish(ctx, tx, "", a.ID, res, &out); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("stop agent %s: %w", agentID, err)
	}
	s.after(out)
	return nil
}

// processAlive reports whether a process with the pid exists on this host.
func processAlive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// Tick does the time-driven work once: it declares dead agents gone, queues
// attempts whose retry delay has passed, and seals the logs of ended
// attempts. It returns when the next retry is due (zero if none).
func (s *Service) Tick(ctx context.Context) (time.Time, error) {
	if err := s.Sweep(ctx); err != nil {
		return time.Time{}, err
	}
	var out changes
	var next time.Time
	err := s.store.Update(ctx, func(tx store.Tx) error {
		out = changes{}
		if err := s.admit(ctx, tx, s.now(), &out); err != nil {
			return err
		}
		t, ok, err := tx.NextDue(ctx)
		if ok {
			next = t
		}
		return err
	})
	if err != nil {
		return time.Time{}, fmt.Errorf("tick: %w", err)
	}
	s.after(out)
	if err := s.sealer.sweep(ctx); err != nil {
		s.log.Warn("seal logs", "err", err)
	}
	return next, nil
}

// Hostname returns this machine's name for AgentInfo and Config.Host.
func Hostname() string {
	h, err := os.Hostname()
	if err != nil {
		return "localhost"
	}
	return h
}
