package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/dray-dev/dray/internal/api"
	"github.com/dray-dev/dray/internal/auth"
	"github.com/dray-dev/dray/internal/control"
	"github.com/dray-dev/dray/internal/engine"
	"github.com/dray-dev/dray/internal/store"
)

// maxWait bounds an agent's long poll.
const maxWait = 60 * time.Second

// The agent protocol: routes of role agent, which remote agents call through
// internal/client's AgentControl. Each is one call of control.Service, the
// same the in-process agent makes.

func (s *Server) agentRegister(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	var req api.AgentRegister
	if err := decode(r, &req, false); err != nil {
		return err
	}
	if req.Protocol != api.AgentProtocol {
		ae := errorf(http.StatusBadRequest, codeBadRequest,
			"agent %s speaks agent protocol %d, this server (dray %s) speaks %d: run the same dray version on agents and server",
			req.ID, req.Protocol, s.cfg.Version, api.AgentProtocol)
		ae.param = "protocol"
		return ae
	}
	if err := agentID(req.ID); err != nil {
		return err
	}
	if req.Capacity < 1 || req.Capacity > 10000 {
		return badParam("capacity", "capacity %d: want 1 to 10000", req.Capacity)
	}
	info := control.AgentInfo{ID: req.ID, Host: req.Host, Labels: req.Labels, Executors: req.Executors,
		Version: req.Version, Capacity: req.Capacity, Token: p.TokenID}
	held, err := s.cfg.Control.Register(r.Context(), info)
	if err != nil {
		return err
	}
	s.log.Info("agent registered", "agent", req.ID, "host", req.Host, "labels", req.Labels,
		"executors", req.Executors, "version", req.Version, "token", p.Name, "held", len(held))
	out := api.AgentRegistered{Held: []api.AgentAttempt{}, LeaseSeconds: s.cfg.Control.AgentLease().Seconds()}
	for _, a := range held {
		out.Held = append(out.Held, api.ToAgentAttempt(a))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) agentClaim(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	var req api.AgentClaim
	if err := decode(r, &req, false); err != nil {
		return err
	}
	if err := s.checkAgent(r, p, req.AgentID); err != nil {
		return err
	}
	if req.Slots < 1 || req.Slots > 10000 {
		return badParam("slots", "slots %d: want 1 to 10000", req.Slots)
	}
	ctx, cancel := s.longPoll(r.Context())
	defer cancel()
	got, err := s.cfg.Control.Claim(ctx, control.AgentInfo{ID: req.AgentID}, req.Slots, waitOf(req.WaitMS))
	if r.Context().Err() != nil {
		return nil // the agent went away (it stops): nobody to answer
	}
	if err != nil && !s.stopping() {
		return err
	}
	out := api.AgentAttempts{Attempts: []api.AgentAttempt{}}
	for _, a := range got {
		out.Attempts = append(out.Attempts, api.ToAgentAttempt(a))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) agentStarted(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	id, err := attemptID(r)
	if err != nil {
		return err
	}
	var req api.AgentStarted
	if err := decode(r, &req, false); err != nil {
		return err
	}
	if err := s.checkAgent(r, p, req.AgentID); err != nil {
		return err
	}
	if err := s.cfg.Control.Started(r.Context(), req.AgentID, id, []byte(req.Handle), req.At); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) agentLogs(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	id, err := attemptID(r)
	if err != nil {
		return err
	}
	var req api.AgentLogs
	if err := decode(r, &req, false); err != nil {
		return err
	}
	if err := s.checkAgent(r, p, req.AgentID); err != nil {
		return err
	}
	lines := make([]store.LogLine, len(req.Lines))
	for i, l := range req.Lines {
		if l.Seq < 1 {
			return badParam("lines", "line %d has seq %d: sequence numbers start at 1", i, l.Seq)
		}
		lines[i] = store.LogLine{Seq: l.Seq, Time: l.Time, Stream: l.Stream, Text: l.Text}
	}
	if err := s.cfg.Control.AgentLogs(r.Context(), req.AgentID, id, lines); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) agentFinish(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	id, err := attemptID(r)
	if err != nil {
		return err
	}
	var req api.AgentFinish
	if err := decode(r, &req, false); err != nil {
		return err
	}
	if err := s.checkAgent(r, p, req.AgentID); err != nil {
		return err
	}
	state := engine.AttemptState(req.State)
	switch state {
	case engine.AttemptSucceeded, engine.AttemptFailed, engine.AttemptCanceled, engine.AttemptLost:
	default:
		return badParam("state", "state %q: want succeeded, failed, canceled or lost", req.State)
	}
	res := engine.Result{State: state, Reason: req.Reason, ExitCode: req.ExitCode, Outputs: req.Outputs}
	if req.StartedAt != nil {
		res.StartedAt = *req.StartedAt
	}
	if req.Claim < 0 || req.Claim > 10000 {
		return badParam("claim", "claim %d: want 0 to 10000", req.Claim)
	}
	next, err := s.cfg.Control.Finish(r.Context(), control.AgentInfo{ID: req.AgentID}, id, res, req.Claim)
	if err != nil {
		return err
	}
	out := api.AgentAttempts{Attempts: []api.AgentAttempt{}}
	for _, a := range next {
		out.Attempts = append(out.Attempts, api.ToAgentAttempt(a))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) agentHeartbeat(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	var req api.AgentHeartbeat
	if err := decode(r, &req, false); err != nil {
		return err
	}
	if err := s.checkAgent(r, p, req.AgentID); err != nil {
		return err
	}
	ctx, cancel := s.longPoll(r.Context())
	defer cancel()
	beat, err := s.cfg.Control.Heartbeat(ctx, req.AgentID, req.Running, waitOf(req.WaitMS))
	if r.Context().Err() != nil {
		return nil // the agent went away
	}
	if err != nil && (!s.stopping() || errors.Is(err, control.ErrAgentStopped)) {
		return err
	}
	writeJSON(w, http.StatusOK, api.AgentBeat{Cancel: orEmptyIDs(beat.Cancel), Drain: beat.Drain})
	return nil
}

func (s *Server) agentDeregister(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	var req api.AgentRef
	if err := decode(r, &req, false); err != nil {
		return err
	}
	if err := s.checkAgent(r, p, req.AgentID); err != nil {
		return err
	}
	if err := s.cfg.Control.Deregister(r.Context(), req.AgentID); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// setAgentState returns the handler of an admin's cordon, uncordon or drain.
func (s *Server) setAgentState(state, action string) handler {
	return func(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
		id := r.PathValue("id")
		ctx := r.Context()
		var ag *store.Agent
		err := s.cfg.Store.View(ctx, func(tx store.Tx) error {
			var err error
			ag, err = tx.Agent(ctx, id)
			return err
		})
		if errors.Is(err, store.ErrNotFound) {
			return notFoundf("no agent %q: see GET /api/v1/agents", id)
		}
		if err != nil {
			return err
		}
		if ag, err = s.cfg.Control.SetAgentState(ctx, id, state); err != nil {
			return err
		}
		s.audit(r, p, action, "agent "+id, nil)
		var held []*engine.Attempt
		err = s.cfg.Store.View(ctx, func(tx store.Tx) error {
			held, err = tx.Attempts(ctx, store.AttemptFilter{Agent: id, States: []engine.AttemptState{engine.AttemptClaimed, engine.AttemptRunning}})
			return err
		})
		if err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, agentDoc(ag, len(held)))
		return nil
	}
}

// longPoll bounds a long poll by the request and by the server stopping, so
// a server shutdown does not wait for waiting agents.
func (s *Server) longPoll(ctx context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(s.stop, cancel)
	return ctx, func() { stop(); cancel() }
}

// stopping reports whether Stop was called.
func (s *Server) stopping() bool { return s.stop.Err() != nil }

func waitOf(ms int) time.Duration {
	return min(max(time.Duration(ms)*time.Millisecond, 0), maxWait)
}

// checkAgent checks an agent id and that the caller's token is the one the
// agent registered with.
func (s *Server) checkAgent(r *http.Request, p *auth.Principal, id string) error {
	if err := agentID(id); err != nil {
		return err
	}
	return s.cfg.Control.CheckToken(r.Context(), id, p.TokenID)
}

func agentID(id string) error {
	if id == "" || len(id) > 200 {
		return badParam("agent_id", "agent id %q: want 1 to 200 characters", id)
	}
	return nil
}

func attemptID(r *http.Request) (int64, error) {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil || id < 1 {
		return 0, badParam("id", "attempt id %q: want a positive whole number", r.PathValue("id"))
	}
	return id, nil
}

func badParam(param, format string, args ...any) error {
	ae := errorf(http.StatusBadRequest, codeBadParam, "%s", fmt.Sprintf(format, args...))
	ae.param = param
	return ae
}

func orEmptyIDs(ids []int64) []int64 {
	if ids == nil {
		return []int64{}
	}
	return ids
}
