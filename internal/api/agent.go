package api

import (
	"encoding/json"
	"time"

	"github.com/dray-dev/dray/internal/engine"
)

// AgentProtocol is the version of the agent protocol (the /api/v1/agent
// routes). A server refuses an agent of another version, saying which to
// run; it goes up only when the documents below change incompatibly.
const AgentProtocol = 1

// AgentRegister is what an agent says of itself when it starts.
type AgentRegister struct {
	ID        string   `json:"id"`
	Host      string   `json:"host"`
	Labels    []string `json:"labels"`
	Executors []string `json:"executors"`
	Version   string   `json:"version"`
	Protocol  int      `json:"protocol"`
	Capacity  int      `json:"capacity"`
}

// AgentRegistered answers a register: the attempts the agent's id still holds
// (it re-attaches to them or reports them lost) and how long it may go
// without a heartbeat before its attempts are lost.
type AgentRegistered struct {
	Held         []AgentAttempt `json:"held"`
	LeaseSeconds float64        `json:"lease_seconds"`
}

// AgentClaim asks for up to Slots attempts, waiting up to WaitMS for one.
type AgentClaim struct {
	AgentID string `json:"agent_id"`
	Slots   int    `json:"slots"`
	WaitMS  int    `json:"wait_ms"`
}

// AgentAttempt is an attempt handed to an agent: what to run.
type AgentAttempt struct {
	ID       int64        `json:"id"`
	RunID    string       `json:"run_id"`
	Pipeline string       `json:"pipeline"`
	Task     string       `json:"task"`
	Index    int          `json:"index"`
	Number   int          `json:"number"`
	State    string       `json:"state"`
	Work     *engine.Work `json:"work"`
	// Handle is the executor's saved handle, and StartedAt when the attempt
	// started (held attempts only).
	Handle    json.RawMessage `json:"handle,omitempty"`
	StartedAt *time.Time      `json:"started_at,omitempty"`
}

// AgentAttempts is a list of attempts for an agent.
type AgentAttempts struct {
	Attempts []AgentAttempt `json:"attempts"`
}

// AgentStarted reports that an attempt started, with the executor's handle.
type AgentStarted struct {
	AgentID string          `json:"agent_id"`
	Handle  json.RawMessage `json:"handle"`
	At      time.Time       `json:"at"`
}

// AgentLogs is a batch of an attempt's log lines. Lines carry their sequence
// number, so a batch sent twice is stored once.
type AgentLogs struct {
	AgentID string         `json:"agent_id"`
	Lines   []AgentLogLine `json:"lines"`
}

// AgentLogLine is one log line of an attempt.
type AgentLogLine struct {
	Seq    int64     `json:"seq"`
	Time   time.Time `json:"time"`
	Stream string    `json:"stream"`
	Text   string    `json:"text"`
}

// AgentFinish reports how an attempt ended and asks for up to Claim attempts
// for the slot it held.
type AgentFinish struct {
	AgentID   string          `json:"agent_id"`
	State     string          `json:"state"`
	Reason    string          `json:"reason"`
	ExitCode  *int            `json:"exit_code"`
	Outputs   json.RawMessage `json:"outputs,omitempty"`
	StartedAt *time.Time      `json:"started_at,omitempty"`
	Claim     int             `json:"claim"`
}

// AgentHeartbeat says an agent is alive and which attempts it runs, and
// waits up to WaitMS for a cancel or a drain. An attempt the agent holds but
// does not list (the answer to its claim was lost) is recorded lost.
type AgentHeartbeat struct {
	AgentID string  `json:"agent_id"`
	Running []int64 `json:"running"`
	WaitMS  int     `json:"wait_ms"`
}

// AgentBeat answers a heartbeat: attempts to stop, and whether to drain.
type AgentBeat struct {
	Cancel []int64 `json:"cancel"`
	Drain  bool    `json:"drain"`
}

// AgentRef names an agent (deregister).
type AgentRef struct {
	AgentID string `json:"agent_id"`
}

// ToAgentAttempt is the wire form of an attempt.
func ToAgentAttempt(a *engine.Attempt) AgentAttempt {
	out := AgentAttempt{ID: a.ID, RunID: a.RunID, Pipeline: a.Pipeline, Task: a.Task, Index: a.Index,
		Number: a.Number, State: string(a.State), Work: a.Work}
	if json.Valid(a.Handle) {
		out.Handle = a.Handle
	}
	if !a.StartedAt.IsZero() {
		t := a.StartedAt
		out.StartedAt = &t
	}
	return out
}

// Attempt is the engine's form of a wire attempt.
func (a AgentAttempt) Attempt() *engine.Attempt {
	out := &engine.Attempt{ID: a.ID, RunID: a.RunID, Pipeline: a.Pipeline, Task: a.Task, Index: a.Index,
		Number: a.Number, State: engine.AttemptState(a.State), Work: a.Work, Handle: []byte(a.Handle)}
	if a.StartedAt != nil {
		out.StartedAt = *a.StartedAt
	}
	return out
}
