package client

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/dray-dev/dray/internal/api"
	"github.com/dray-dev/dray/internal/control"
	"github.com/dray-dev/dray/internal/engine"
	"github.com/dray-dev/dray/internal/store"
)

// AgentControl is the control plane as a remote agent reaches it: the agent
// protocol of the /api/v1/agent routes, with a token of role agent. It
// implements agent.Control, as control.Service does in process.
type AgentControl struct {
	c *Client
	// Version is the agent's dray version, sent when it registers.
	Version string
}

// NewAgentControl returns the agent protocol over c.
func NewAgentControl(c *Client, version string) *AgentControl {
	return &AgentControl{c: c, Version: version}
}

// Register registers the agent and returns the attempts its id still holds.
func (a *AgentControl) Register(ctx context.Context, info control.AgentInfo) ([]*engine.Attempt, error) {
	req := api.AgentRegister{ID: info.ID, Host: info.Host, Labels: orNone(info.Labels), Executors: orNone(info.Executors),
		Version: a.Version, Protocol: api.AgentProtocol, Capacity: info.Capacity}
	var out api.AgentRegistered
	if err := a.c.call(ctx, request{method: "POST", path: "/api/v1/agent/register", body: req}, &out); err != nil {
		return nil, agentError(err)
	}
	return attempts(out.Held), nil
}

// Claim claims up to slots attempts, waiting up to wait for one.
func (a *AgentControl) Claim(ctx context.Context, info control.AgentInfo, slots int, wait time.Duration) ([]*engine.Attempt, error) {
	var out api.AgentAttempts
	req := api.AgentClaim{AgentID: info.ID, Slots: slots, WaitMS: int(wait.Milliseconds())}
	if err := a.poll(ctx, wait, request{method: "POST", path: "/api/v1/agent/claim", body: req}, &out); err != nil {
		return nil, agentError(err)
	}
	return attempts(out.Attempts), nil
}

// Started reports that an attempt started.
func (a *AgentControl) Started(ctx context.Context, agentID string, attemptID int64, handle []byte, at time.Time) error {
	req := api.AgentStarted{AgentID: agentID, Handle: handle, At: at}
	return agentError(a.c.call(ctx, request{method: "POST", path: attemptPath(attemptID, "started"), body: req}, nil))
}

// AgentLogs ships a batch of log lines; a batch sent again is stored once.
func (a *AgentControl) AgentLogs(ctx context.Context, agentID string, attemptID int64, lines []store.LogLine) error {
	req := api.AgentLogs{AgentID: agentID, Lines: make([]api.AgentLogLine, len(lines))}
	for i, l := range lines {
		req.Lines[i] = api.AgentLogLine{Seq: l.Seq, Time: l.Time, Stream: l.Stream, Text: l.Text}
	}
	return agentError(a.c.call(ctx, request{method: "POST", path: attemptPath(attemptID, "logs"), body: req}, nil))
}

// Finish reports how an attempt ended and claims up to claim attempts for
// its slot.
func (a *AgentControl) Finish(ctx context.Context, info control.AgentInfo, attemptID int64, res engine.Result, claim int) ([]*engine.Attempt, error) {
	req := api.AgentFinish{AgentID: info.ID, State: string(res.State), Reason: res.Reason, ExitCode: res.ExitCode,
		Outputs: res.Outputs, Claim: claim}
	if !res.StartedAt.IsZero() {
		req.StartedAt = &res.StartedAt
	}
	var out api.AgentAttempts
	if err := a.c.call(ctx, request{method: "POST", path: attemptPath(attemptID, "finish"), body: req}, &out); err != nil {
		return nil, agentError(err)
	}
	return attempts(out.Attempts), nil
}

// Heartbeat says the agent is alive and waits up to wait for a cancel or a
// drain.
func (a *AgentControl) Heartbeat(ctx context.Context, agentID string, running []int64, wait time.Duration) (control.Beat, error) {
	var out api.AgentBeat
	req := api.AgentHeartbeat{AgentID: agentID, Running: running, WaitMS: int(wait.Milliseconds())}
	if err := a.poll(ctx, wait, request{method: "POST", path: "/api/v1/agent/heartbeat", body: req}, &out); err != nil {
		return control.Beat{}, agentError(err)
	}
	return control.Beat{Cancel: out.Cancel, Drain: out.Drain}, nil
}

// Deregister says the agent stops.
func (a *AgentControl) Deregister(ctx context.Context, agentID string) error {
	return agentError(a.c.call(ctx, request{method: "POST", path: "/api/v1/agent/deregister", body: api.AgentRef{AgentID: agentID}}, nil))
}

// poll makes a long-poll call: the client's timeout counts from the end of
// the wait.
func (a *AgentControl) poll(ctx context.Context, wait time.Duration, r request, out any) error {
	if a.c.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, wait+a.c.timeout)
		defer cancel()
	}
	c := *a.c
	c.timeout = 0
	return c.call(ctx, r, out)
}

func attemptPath(id int64, what string) string {
	return "/api/v1/agent/attempts/" + strconv.FormatInt(id, 10) + "/" + what
}

func attempts(in []api.AgentAttempt) []*engine.Attempt {
	out := make([]*engine.Attempt, len(in))
	for i, a := range in {
		out[i] = a.Attempt()
	}
	return out
}

func orNone(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// agentError turns the server's "agent stopped" answer back into
// control.ErrAgentStopped.
func agentError(err error) error {
	var e *Error
	if errors.As(err, &e) && e.Code == "agent_stopped" {
		return fmt.Errorf("%w: %s", control.ErrAgentStopped, e.Message)
	}
	return err
}

// Transient reports whether the call may succeed if made again: the server
// is busy, restarting or behind a failing proxy. A refusal (a bad token, a
// wrong role, bad input, a conflict) is not.
func (e *Error) Transient() bool {
	return e.Status >= 500 || e.Status == http.StatusTooManyRequests || e.Status == http.StatusRequestTimeout
}

// Transient is true: an unreachable server may come back.
func (e *UnreachableError) Transient() bool { return true }
