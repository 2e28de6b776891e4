// Package executor defines how an agent runs one task attempt somewhere: as a
// local process, a Docker container, an ECS task, a Cloud Run job or a
// Kubernetes Job. Each kind is a subpackage that implements Executor.
//
// The shape follows Nomad's task drivers: Start returns a Handle; the handle's
// State can be saved and given to Recover after an agent restart, so a restart
// never runs an attempt twice.
package executor

import (
	"context"
	"errors"
	"time"
)

// Spec is one attempt to run, fully rendered: expressions evaluated and secrets
// already put in by the agent.
type Spec struct {
	AttemptID int64
	RunID     string
	Pipeline  string
	Task      string
	Index     int // instance index of a for_each task; 0 otherwise
	Attempt   int // 1-based attempt number

	// Run is a shell line, run with `sh -c`. Otherwise Image and Command say
	// what to run.
	Run     string
	Image   string
	Command []string

	// Env is what the task sees besides what the executor adds: DRAY_* and the
	// pipeline's and task's env, with secrets resolved.
	Env     map[string]string
	Workdir string // for local: absolute; for containers: inside the container

	Resources Resources
	// Options are the executor profile's options (see spec.Profile).
	Options map[string]any
	// Secrets says where the agent put secret values: the names of Env
	// variables, and "command" or "run". An executor that would send them
	// where others can read them (ECS RunTask overrides) may refuse.
	Secrets []string
	// Labels identify what the executor starts (container labels, ECS tags), so a
	// restarted agent can find them.
	Labels map[string]string
}

// Resources a task asks for; zero means the executor's default.
type Resources struct {
	MilliCPU    int64
	MemoryBytes int64
	Region      string
}

// Line is one line of an attempt's output.
type Line struct {
	Time   time.Time
	Stream string // "stdout" or "stderr"
	Text   string // without the line ending
}

// Stream names.
const (
	Stdout = "stdout"
	Stderr = "stderr"
)

// LogSink receives an attempt's output lines, in order per stream, as they are
// written. Calls for one attempt are serialized (never concurrent); they come
// from the executor's goroutines and must not block long.
type LogSink interface {
	Line(Line)
}

// LogFunc adapts a function to LogSink.
type LogFunc func(Line)

// Line calls f.
func (f LogFunc) Line(l Line) { f(l) }

// MaxOutputs is the most a task's outputs may weigh (1 MiB).
const MaxOutputs = 1 << 20

// Result is how an attempt ended.
type Result struct {
	// ExitCode is the process's exit code; -1 when it was killed by a signal or
	// never started.
	ExitCode int
	// Reason describes a failure in a few words ("exit 1", "killed by signal 9",
	// "exit 137: OOMKilled"). Empty on success.
	Reason string
	// Outputs is the content of the file named by $DRAY_OUTPUT, if the task
	// wrote one, read up to MaxOutputs+1 bytes; OutputsSize is the file's full size.
	Outputs     []byte
	OutputsSize int64
	// OutputsError says why the outputs file could not be read (it is a FIFO
	// or a directory, an I/O error); the attempt then fails with it.
	OutputsError string
}

// Executor runs task attempts of one kind.
type Executor interface {
	// Start starts an attempt and returns at once with a handle. Output lines go
	// to sink until the attempt ends. An error means the attempt did not start
	// (a bad image, a missing binary); its message becomes the attempt's reason.
	// ctx bounds Start only, not the attempt: Stop ends an attempt. An empty
	// Spec.Workdir means the executor's default (the agent's folder for local).
	Start(ctx context.Context, spec *Spec, sink LogSink) (Handle, error)
	// Recover re-attaches to an attempt started earlier by this kind of
	// executor, from the handle's saved State. When the attempt cannot be
	// followed any more, Recover stops whatever is left of it and returns an error
	// that wraps ErrLost.
	Recover(ctx context.Context, spec *Spec, state []byte, sink LogSink) (Handle, error)
}

// Handle is a started attempt.
type Handle interface {
	// State is what Recover needs to re-attach (a process group, a container id,
	// an ECS task ARN), as JSON.
	State() []byte
	// Wait blocks until the attempt has ended and every output line has been
	// given to the sink, and returns how it ended. The error is for a failure to
	// follow the attempt (the agent then reports it lost), not for a task that
	// failed or wrote bad outputs. Exit codes differ between executors (a
	// signal is -1 here, 137 in a container): compare Reason, not codes.
	Wait(ctx context.Context) (Result, error)
	// Stop asks the attempt to stop (SIGTERM or the platform's equivalent) and
	// forces it (SIGKILL) after grace. Wait then returns. If ctx ends during
	// the grace period, Stop forces the attempt at once and returns ctx's error.
	Stop(ctx context.Context, grace time.Duration) error
}

// ErrLost means an attempt can no longer be followed: its agent restarted and
// the executor cannot re-attach to it.
var ErrLost = errors.New("attempt lost")

// Reconciler is an executor that can find what it started for an agent
// (containers, cloud tasks, by their labels or tags), so that a restarted
// agent stops what nobody holds any more.
type Reconciler interface {
	// Orphans stops and removes what the executor started for agentID whose
	// attempt keep does not keep, and describes what it removed.
	Orphans(ctx context.Context, agentID string, keep func(attemptID int64) bool) ([]string, error)
}
