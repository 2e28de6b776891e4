// Package local runs task attempts as processes on the agent's machine.
//
// Each attempt runs in its own process group, so stopping it reaches whatever
// it started in the background. The child also gets SIGKILL if the agent's
// thread that started it dies (Pdeathsig), so a crashed agent does not leave
// its tasks running. A local process cannot be re-attached after an agent
// restart: Recover kills what is left of it and reports executor.ErrLost.
package local

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/dray-dev/dray/internal/executor"
)

// DefaultWaitDelay is how long Wait waits, after the task's main process has
// exited, for its stdout and stderr to reach end of file when Config.WaitDelay
// is zero.
const DefaultWaitDelay = time.Second

// maxLine is the longest line handed to the sink in one piece; longer lines are
// split. It is above executor.MaxOutputs so that a `::dray-output::` marker of
// the maximum size arrives as one line.
const maxLine = 2 << 20

// Config configures an Executor. The zero value is usable.
type Config struct {
	// Logger receives the executor's own diagnostics (not the task's output).
	// Nil means slog.Default().
	Logger *slog.Logger
	// WaitDelay is how long Wait waits, after the main process exited and its
	// process group was killed, for stdout and stderr to be drained. A process
	// that escaped the group (setsid, a daemon) may hold them open; after
	// WaitDelay they are closed and Wait returns. Zero means DefaultWaitDelay.
	WaitDelay time.Duration
	// TempDir is where the executor makes its folder for $DRAY_OUTPUT files
	// (one a process, removed by Wait). Empty means os.TempDir().
	TempDir string
}

// Executor runs attempts as local processes. It implements executor.Executor
// and is safe for concurrent use.
type Executor struct {
	log       *slog.Logger
	waitDelay time.Duration
	tempDir   string

	dirOnce sync.Once
	dir     string // made on first use
	dirErr  error
	seq     atomic.Uint64

	baseOnce sync.Once
	base     []string // the agent's environment without its credentials

	shells sync.Map // program name -> resolved path
}

var _ executor.Executor = (*Executor)(nil)

// New returns an Executor configured by cfg.
func New(cfg Config) *Executor {
	e := &Executor{log: cfg.Logger, waitDelay: cfg.WaitDelay, tempDir: cfg.TempDir}
	if e.log == nil {
		e.log = slog.Default()
	}
	if e.waitDelay <= 0 {
		e.waitDelay = DefaultWaitDelay
	}
	return e
}

// Start starts spec as a process and returns at once.
//
// spec.Run runs as `sh -c <Run>` (the shell is spec.Options["shell"] when that
// is a non-empty string); otherwise spec.Command is run directly as argv.
// spec.Image is refused: this executor runs processes, not images. The process
// runs in spec.Workdir, which must be an existing directory (empty means the
// agent's own working directory; a relative path is taken from it), in a
// process group of its own. The shell option names a program run as
// `<shell> -c <Run>`, not a command line.
//
// Its environment is the agent's, less the agent's credentials (DRAY_SECRET_*,
// DRAY_TOKEN, DRAY_ADMIN_PASSWORD), plus spec.Env, plus DRAY_OUTPUT naming a
// file of its own (not there yet) in the executor's folder, which Wait reads
// back and removes.
//
// Output lines go to sink one call at a time (stdout and stderr are read
// concurrently, but calls are serialized), so sink need not be safe for
// concurrent use; a nil sink discards them.
//
// ctx bounds Start only: canceling it later does not stop the process; Stop
// does. An error means nothing was started.
func (e *Executor) Start(ctx context.Context, spec *executor.Spec, sink executor.LogSink) (executor.Handle, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("start local process: %w", err)
	}
	if spec == nil {
		return nil, errors.New("start local process: no spec")
	}
	if sink == nil {
		sink = executor.LogFunc(func(executor.Line) {})
	}
	argv, err := commandLine(spec)
	if err != nil {
		return nil, fmt.Errorf("start local process: %w", err)
	}
	if spec.Workdir != "" {
		fi, err := os.Stat(spec.Workdir)
		if err != nil {
			return nil, fmt.Errorf("start local process: workdir %s: %w (it must be an existing directory)", spec.Workdir, err)
		}
		if !fi.IsDir() {
			return nil, fmt.Errorf("start local process: workdir %s is not a directory", spec.Workdir)
		}
	}
	for k := range spec.Env {
		if k == "" || strings.ContainsAny(k, "=\x00") {
			return nil, fmt.Errorf("start local process: env name %q is not valid", k)
		}
	}

	dir, err := e.outputsDir()
	if err != nil {
		return nil, fmt.Errorf("start local process: make a folder for outputs: %w", err)
	}
	// The folder is this executor's own and the sequence never repeats, so
	// no earlier file can pass as this attempt's outputs.
	outputs := filepath.Join(dir, fmt.Sprintf("%d-%d.json", spec.AttemptID, e.seq.Add(1)))

	path, err := e.lookPath(argv[0])
	if err != nil {
		return nil, fmt.Errorf("start local process %q: %w", argv[0], err)
	}
	cmd := &exec.Cmd{Path: path, Args: argv, Dir: spec.Workdir}
	cmd.Env = environ(e.baseEnv(), spec.Env, outputs)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}

	h, err := start(e, cmd, outputs, sink)
	if err != nil {
		return nil, fmt.Errorf("start local process %q: %w", argv[0], err)
	}
	e.log.Debug("local process started", "pid", h.pid, "run", spec.RunID, "task", spec.Task,
		"attempt", spec.Attempt, "attempt_id", spec.AttemptID)
	return h, nil
}

// commandLine returns the argv that runs spec.
func commandLine(spec *executor.Spec) ([]string, error) {
	if spec.Image != "" {
		return nil, fmt.Errorf("task has image %q: the local executor runs processes, not images; use the docker executor", spec.Image)
	}
	if spec.Run != "" {
		shell := "sh"
		if v, ok := spec.Options["shell"]; ok {
			s, ok := v.(string)
			if !ok || s == "" {
				return nil, fmt.Errorf("option shell is %v (%T); want a program name such as sh or bash", v, v)
			}
			shell = s
		}
		return []string{shell, "-c", spec.Run}, nil
	}
	if len(spec.Command) == 0 || spec.Command[0] == "" {
		return nil, errors.New("task has neither run nor command")
	}
	return spec.Command, nil
}

// outputsDir returns the executor's folder for $DRAY_OUTPUT files, made on
// first use.
func (e *Executor) outputsDir() (string, error) {
	e.dirOnce.Do(func() { e.dir, e.dirErr = os.MkdirTemp(e.tempDir, "dray-outputs-") })
	return e.dir, e.dirErr
}

// lookPath resolves a program name once; paths with a slash are used as given.
func (e *Executor) lookPath(name string) (string, error) {
	if strings.Contains(name, "/") {
		return name, nil
	}
	if p, ok := e.shells.Load(name); ok {
		return p.(string), nil
	}
	p, err := exec.LookPath(name)
	if err != nil {
		return "", err
	}
	e.shells.Store(name, p)
	return p, nil
}

// baseEnv is the agent's environment without its credentials, read once.
func (e *Executor) baseEnv() []string {
	e.baseOnce.Do(func() {
		for _, kv := range os.Environ() {
			if k, _, ok := strings.Cut(kv, "="); ok && !agentCredential(k) {
				e.base = append(e.base, kv)
			}
		}
	})
	return e.base
}

// environ returns the environment of a task: base, then env (which wins), then
// DRAY_OUTPUT (which wins over both, since Wait reads that file back). The
// result is sorted by name.
func environ(base []string, env map[string]string, outputs string) []string {
	out := make([]string, 0, len(base)+len(env)+1)
	for _, kv := range base {
		k, _, ok := strings.Cut(kv, "=")
		if _, overridden := env[k]; !ok || overridden || k == "DRAY_OUTPUT" || agentCredential(k) {
			continue
		}
		out = append(out, kv)
	}
	for k, v := range env {
		if k != "DRAY_OUTPUT" {
			out = append(out, k+"="+v)
		}
	}
	out = append(out, "DRAY_OUTPUT="+outputs)
	sort.Strings(out)
	return out
}

// agentCredential reports whether the agent's environment variable name holds
// one of the agent's own secrets, which tasks must not inherit. Secrets a task
// needs reach it through Spec.Env.
func agentCredential(name string) bool {
	return strings.HasPrefix(name, "DRAY_SECRET_") || name == "DRAY_TOKEN" || name == "DRAY_ADMIN_PASSWORD"
}
