// Package api holds the documents of dray's HTTP API, as the OpenAPI
// document (internal/server/openapi.yaml) describes them: the server writes
// them and the client reads them, so the two cannot drift apart. A run is a
// control.RunRecord: the same record `dray runs show --json` prints.
package api

import (
	"encoding/json"
	"time"

	"github.com/dray-dev/dray/internal/control"
)

// Status is the answer of /healthz and /readyz.
type Status struct {
	Status string `json:"status"`
	Error  string `json:"error,omitempty"`
}

// Me is the caller, as the server sees it.
type Me struct {
	Name      string `json:"name"`
	Role      string `json:"role"`
	Kind      string `json:"kind"` // user or token
	CSRFToken string `json:"csrf_token,omitempty"`
}

// SpecError is a validation error of a project file.
type SpecError struct {
	File    string `json:"file"`
	Line    int    `json:"line"`
	Col     int    `json:"col"`
	Message string `json:"message"`
}

// PipelineList is the project's pipelines and every validation error.
type PipelineList struct {
	Pipelines []PipelineSummary `json:"pipelines"`
	Errors    []SpecError       `json:"errors"`
	LoadedAt  *time.Time        `json:"loaded_at"`
}

// PipelineSummary is a pipeline in a list.
type PipelineSummary struct {
	Name        string    `json:"name"`
	Description string    `json:"description"`
	File        string    `json:"file"`
	Tags        []string  `json:"tags"`
	Tasks       int       `json:"tasks"`
	Schedule    *Schedule `json:"schedule"`
	// Broken is set when the pipeline's files have errors now and the last
	// good version is served.
	Broken bool `json:"broken"`
}

// Pipeline is one pipeline with its DAG, params, schedule and errors.
type Pipeline struct {
	Name          string      `json:"name"`
	Description   string      `json:"description"`
	File          string      `json:"file"`
	Hash          string      `json:"hash"`
	Tags          []string    `json:"tags"`
	MaxActiveRuns int         `json:"max_active_runs"`
	Concurrency   int         `json:"concurrency"`
	Params        []Param     `json:"params"`
	Schedule      *Schedule   `json:"schedule"`
	Tasks         []TaskSpec  `json:"tasks"`
	Errors        []SpecError `json:"errors"`
}

// Param is a pipeline param.
type Param struct {
	Name        string   `json:"name"`
	Type        string   `json:"type"`
	Required    bool     `json:"required"`
	Default     any      `json:"default"` // the value, or its expression as a string
	Values      []string `json:"values"`
	Description string   `json:"description"`
}

// TaskSpec is a task of a pipeline's DAG.
type TaskSpec struct {
	Name     string   `json:"name"`
	Needs    []string `json:"needs"`
	Kind     string   `json:"kind"` // run, image or uses
	Executor string   `json:"executor"`
	ForEach  bool     `json:"for_each"`
	If       bool     `json:"if"`
	Trigger  string   `json:"trigger"`
}

// Schedule is a pipeline's schedule.
type Schedule struct {
	Pipeline     string     `json:"pipeline"`
	Cron         string     `json:"cron"`
	Every        string     `json:"every"`
	Timezone     string     `json:"timezone"`
	Catchup      bool       `json:"catchup"`
	CatchupLimit int        `json:"catchup_limit"`
	Paused       bool       `json:"paused"`
	NextFire     *time.Time `json:"next_fire"`
	// CheckedUntil is the time up to which the scheduler has dealt with the
	// fire times (its last tick).
	CheckedUntil *time.Time `json:"checked_until"`
}

// TriggerRequest asks for a run. Params are typed values; Args are
// "name=value" strings that the server reads by each param's type, as `dray
// run -p` does. Both may be given.
type TriggerRequest struct {
	Pipeline string         `json:"pipeline"`
	Params   map[string]any `json:"params,omitempty"`
	Args     []string       `json:"args,omitempty"`
	// LogicalTime is the time the run is for; LogicalDate (YYYY-MM-DD) is
	// midnight of that day in the schedule's time zone.
	LogicalTime *time.Time `json:"logical_time,omitempty"`
	LogicalDate string     `json:"logical_date,omitempty"`
}

// RunList is a page of runs, newest first, without their tasks.
type RunList struct {
	Runs       []*control.RunRecord `json:"runs"`
	NextCursor string               `json:"next_cursor"` // empty on the last page
}

// Attempt is one attempt of a task (or of a for_each instance).
type Attempt struct {
	ID       int64           `json:"id"`
	RunID    string          `json:"run_id"`
	Task     string          `json:"task"`
	Index    int             `json:"index"`
	Number   int             `json:"number"`
	Item     json.RawMessage `json:"item"` // null unless the task is a for_each
	State    string          `json:"state"`
	Reason   string          `json:"reason"`
	Executor string          `json:"executor"`
	Labels   []string        `json:"labels"`
	Agent    string          `json:"agent"`
	ExitCode *int            `json:"exit_code"`
	Created  *time.Time      `json:"created_at"`
	Queued   *time.Time      `json:"queued_at"`
	Claimed  *time.Time      `json:"claimed_at"`
	Started  *time.Time      `json:"started_at"`
	Ended    *time.Time      `json:"ended_at"`
}

// HasItem reports whether the attempt is of a for_each instance.
func (a *Attempt) HasItem() bool {
	return len(a.Item) > 0 && string(a.Item) != "null"
}

// LogLine is one line of an attempt's log.
type LogLine struct {
	AttemptID int64     `json:"attempt_id"`
	Task      string    `json:"task"`
	Index     int       `json:"index"`
	Attempt   int       `json:"attempt"` // the attempt's number
	Seq       int64     `json:"seq"`     // 1-based, per attempt
	Time      time.Time `json:"time"`
	Stream    string    `json:"stream"`
	Text      string    `json:"text"`
}

// LogPage is a page of log lines. Next is the after of the next page of an
// attempt's log.
type LogPage struct {
	Lines []LogLine `json:"lines"`
	Next  int64     `json:"next"`
}

// Agent is an agent with its labels and last heartbeat.
type Agent struct {
	ID          string     `json:"id"`
	Host        string     `json:"host"`
	Labels      []string   `json:"labels"`
	Executors   []string   `json:"executors"`
	Version     string     `json:"version"`
	Capacity    int        `json:"capacity"`
	State       string     `json:"state"`
	Running     int        `json:"running"`
	StartedAt   *time.Time `json:"started_at"`
	HeartbeatAt *time.Time `json:"heartbeat_at"`
}

// BackfillRequest asks for a run for every fire time of a pipeline's
// schedule in [From, To]: RFC 3339 times or YYYY-MM-DD dates.
type BackfillRequest struct {
	Pipeline string `json:"pipeline"`
	From     string `json:"from"`
	To       string `json:"to"`
}

// ScheduleList is every pipeline schedule.
type ScheduleList struct {
	Schedules []Schedule `json:"schedules"`
}

// AttemptList is the attempts of a run.
type AttemptList struct {
	Attempts []Attempt `json:"attempts"`
}

// AgentList is every agent.
type AgentList struct {
	Agents []Agent `json:"agents"`
}

// Backfill is the runs a backfill made, and the fire times that had a run.
type Backfill struct {
	Runs    []*control.RunRecord `json:"runs"`
	Skipped []time.Time          `json:"skipped"`
}

// User is a user account.
type User struct {
	Name      string     `json:"name"`
	Role      string     `json:"role"`
	CreatedAt *time.Time `json:"created_at"`
}

// UserRequest creates a user.
type UserRequest struct {
	Name     string `json:"name"`
	Role     string `json:"role"`
	Password string `json:"password"`
}

// Token is an API token (never its secret).
type Token struct {
	ID         string     `json:"id"`
	Name       string     `json:"name"`
	Role       string     `json:"role"`
	CreatedBy  string     `json:"created_by"`
	CreatedAt  *time.Time `json:"created_at"`
	ExpiresAt  *time.Time `json:"expires_at"`
	LastUsedAt *time.Time `json:"last_used_at"`
	RevokedAt  *time.Time `json:"revoked_at"`
}

// NewToken is a token just made, with its secret (shown this once).
type NewToken struct {
	Token
	Secret string `json:"token"`
}

// TokenRequest creates a token. ExpiresIn is a duration such as 720h; empty
// for a token that does not expire.
type TokenRequest struct {
	Name      string `json:"name"`
	Role      string `json:"role"`
	ExpiresIn string `json:"expires_in,omitempty"`
}

// AuditEntry is one change in the audit log.
type AuditEntry struct {
	ID      int64          `json:"id"`
	Time    time.Time      `json:"time"`
	Actor   string         `json:"actor"`
	Action  string         `json:"action"`
	Target  string         `json:"target"`
	Detail  map[string]any `json:"detail,omitempty"`
	Address string         `json:"address"`
}

// AuditList is a page of the audit log.
type AuditList struct {
	Entries    []AuditEntry `json:"entries"`
	NextCursor string       `json:"next_cursor"`
}
