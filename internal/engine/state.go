// Package engine is dray's run engine: a pure state machine. Given a pipeline's
// spec, the recorded state of one of its runs and what just happened (the run
// started, an attempt ended, a cancel or a retry was asked for), it returns
// what to record and do next as a Step. It does no I/O: the caller reads the
// state, calls the engine and writes the Step in one transaction, and time
// comes in as a value.
//
// The package also holds dray's domain types (runs, tasks, attempts and their
// states), which the store persists and the API shows.
package engine

import (
	"encoding/json"
	"time"
)

// RunState is the state of a run: queued → running → succeeded | failed | canceled.
type RunState string

// Run states.
const (
	RunQueued    RunState = "queued"
	RunRunning   RunState = "running"
	RunSucceeded RunState = "succeeded"
	RunFailed    RunState = "failed"
	RunCanceled  RunState = "canceled"
)

// Final reports whether the run has ended.
func (s RunState) Final() bool { return s == RunSucceeded || s == RunFailed || s == RunCanceled }

// TaskState is the state of a task within a run.
type TaskState string

// Task states. A task is pending until its upstream tasks end, running while it
// has attempts, retrying while it waits to try again, and then ends in one of
// the final states.
const (
	TaskPending        TaskState = "pending"
	TaskRunning        TaskState = "running"
	TaskRetrying       TaskState = "retrying"
	TaskSucceeded      TaskState = "succeeded"
	TaskFailed         TaskState = "failed"
	TaskSkipped        TaskState = "skipped"
	TaskUpstreamFailed TaskState = "upstream_failed"
	TaskCanceled       TaskState = "canceled"
)

// Final reports whether the task has ended.
func (s TaskState) Final() bool {
	switch s {
	case TaskSucceeded, TaskFailed, TaskSkipped, TaskUpstreamFailed, TaskCanceled:
		return true
	}
	return false
}

// AttemptState is the state of one attempt: pending → queued → claimed →
// running → succeeded | failed | canceled | lost.
type AttemptState string

// Attempt states. Pending attempts wait for a retry delay or a free slot of
// their pool or pipeline; queued ones wait for an agent.
const (
	AttemptPending   AttemptState = "pending"
	AttemptQueued    AttemptState = "queued"
	AttemptClaimed   AttemptState = "claimed"
	AttemptRunning   AttemptState = "running"
	AttemptSucceeded AttemptState = "succeeded"
	AttemptFailed    AttemptState = "failed"
	AttemptCanceled  AttemptState = "canceled"
	AttemptLost      AttemptState = "lost"
)

// Final reports whether the attempt has ended.
func (s AttemptState) Final() bool {
	switch s {
	case AttemptSucceeded, AttemptFailed, AttemptCanceled, AttemptLost:
		return true
	}
	return false
}

// Run is one run of a pipeline.
type Run struct {
	ID       string
	Pipeline string
	SpecHash string // the spec.Pipeline.Hash it runs
	State    RunState
	Reason   string
	Params   map[string]any
	// Env is the pipeline env, evaluated when the run started.
	Env         map[string]string
	Trigger     string // manual, schedule, backfill, retry, api
	LogicalTime time.Time
	// Salt makes secret markers unguessable; it is never shown.
	Salt string
	// Driver is the agent of the process that drives the run (a `dray run`),
	// or "" for a run that any agent may take; when the driver is gone the
	// run is abandoned.
	Driver string
	// LogicalDate is the date the run is for (YYYY-MM-DD), in the time zone of
	// the pipeline's schedule (UTC when it has none).
	LogicalDate     string
	CancelRequested bool
	// Unfinished counts the run's tasks that have not ended.
	Unfinished int
	CreatedAt  time.Time
	StartedAt  time.Time
	EndedAt    time.Time
}

// Task is the state of one task in one run.
type Task struct {
	RunID  string
	Name   string
	State  TaskState
	Reason string
	// Outputs is set when the task ends: an object for an ordinary task, a list
	// in item order for a for_each task.
	Outputs json.RawMessage
	// Items is how many items a for_each task fans out over; -1 before it has.
	Items int
	// Next is how many instances have been created, in index order.
	Next int
	// Active counts instances that have not ended; Succeeded and Failed count
	// those that have (Failed includes canceled ones).
	Active    int
	Succeeded int
	Failed    int
	// Redo counts instances of a for_each task that `retry` will run again.
	Redo int
	// Attempts is the highest attempt number of an ordinary task; Base the
	// number of attempts before the last retry of the run, which the retries
	// budget does not count.
	Attempts  int
	Base      int
	Version   int // changes whenever the task is reset, for caches of outputs
	StartedAt time.Time
	EndedAt   time.Time
}

// Attempt is one try of one task instance on an agent.
type Attempt struct {
	ID       int64
	RunID    string
	Pipeline string
	Task     string
	Index    int // instance index of a for_each task; 0 otherwise
	Number   int // 1-based
	Base     int // attempts of this instance before the run's last retry
	State    AttemptState
	Reason   string
	Work     *Work
	Pool     string
	// Labels route the attempt: an agent may claim it when they are a subset
	// of the agent's labels.
	Labels          []string
	Executor        string // the executor type, which the agent must offer
	NotBefore       time.Time
	CreatedAt       time.Time
	QueuedAt        time.Time
	ClaimedAt       time.Time
	StartedAt       time.Time
	EndedAt         time.Time
	Agent           string
	Handle          []byte // the executor's saved handle
	ExitCode        *int
	Outputs         json.RawMessage
	Warnings        []string
	CancelRequested bool
}

// Work is what an attempt runs, rendered when it was queued.
type Work struct {
	Run          string            `json:"run,omitempty"`
	Image        string            `json:"image,omitempty"`
	Command      []string          `json:"command,omitempty"`
	Env          map[string]string `json:"env,omitempty"`
	Workdir      string            `json:"workdir,omitempty"`
	Profile      string            `json:"profile"`
	ExecutorType string            `json:"executor_type"`
	Options      map[string]any    `json:"options,omitempty"`
	Resources    Resources         `json:"resources"`
	Timeout      time.Duration     `json:"timeout,omitempty"`
	Item         json.RawMessage   `json:"item,omitempty"`
	Params       json.RawMessage   `json:"params,omitempty"`
	// Secrets are the names of the secrets the work uses. Each use stands in
	// the strings as SecretMarker(Nonce, name) until the agent resolves it.
	Secrets []string `json:"secrets,omitempty"`
	Nonce   string   `json:"nonce,omitempty"`
}

// Resources are a task's resources as rendered into its work.
type Resources struct {
	CPU         string `json:"cpu,omitempty"`
	Memory      string `json:"memory,omitempty"`
	Region      string `json:"region,omitempty"`
	MilliCPU    int64  `json:"millicpu,omitempty"`
	MemoryBytes int64  `json:"memory_bytes,omitempty"`
}

// SecretMarker is what stands for a secret in rendered work until an agent
// replaces it with the value.
func SecretMarker(nonce, name string) string {
	return "@@dray-secret:" + nonce + ":" + name + "@@"
}

// Event is a change worth telling a person about: a task or instance changed state.
type Event struct {
	Time    time.Time
	RunID   string
	Task    string // "" for the run itself
	Index   int    // instance index; -1 for the task as a whole
	Attempt int
	State   string
	Reason  string
	// Done and Total report a for_each task's progress.
	Done, Total int
}
