package local

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dray-dev/dray/internal/executor"
)

// procState is a handle's saved State.
type procState struct {
	PID  int `json:"pid"`
	PGID int `json:"pgid"`
	// StartTime is field 22 of /proc/<pid>/stat (clock ticks after boot), which
	// tells the process from a later one that reused its pid. Zero if unknown.
	StartTime uint64 `json:"start_time"`
	// Outputs is the attempt's $DRAY_OUTPUT file.
	Outputs string `json:"outputs,omitempty"`
}

// handle is a started local process. It implements executor.Handle.
type handle struct {
	e       *Executor
	cmd     *exec.Cmd
	pid     int // also the process group id
	outputs string

	stateOnce sync.Once
	state     []byte

	stdout, stderr *os.File // read ends of the pipes

	sinkMu sync.Mutex // serializes calls to sink, so a sink need not be safe for concurrent use
	sink   executor.LogSink

	readers     atomic.Int32  // readers still running
	readersDone chan struct{} // closed when both readers returned

	// mu guards ended and orders it with signals: once ended is set the
	// process group may be reaped and its id reused, so nothing is sent after.
	mu     sync.Mutex
	ended  bool
	exited chan struct{} // closed once the main process has exited

	done   chan struct{} // closed once result and err are final
	result executor.Result
	err    error
}

var _ executor.Handle = (*handle)(nil)

// start starts cmd with its stdout and stderr on fresh pipes and begins
// following it.
func start(e *Executor, cmd *exec.Cmd, outputs string, sink executor.LogSink) (*handle, error) {
	outR, outW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("make stdout pipe: %w", err)
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		outR.Close()
		outW.Close()
		return nil, fmt.Errorf("make stderr pipe: %w", err)
	}
	cmd.Stdout, cmd.Stderr = outW, errW
	err = cmd.Start()
	// The child has its own copies of the write ends; the parent's must go so
	// that the readers see end of file when the task's processes are done.
	outW.Close()
	errW.Close()
	if err != nil {
		outR.Close()
		errR.Close()
		return nil, err
	}

	pid := cmd.Process.Pid
	h := &handle{
		e:           e,
		cmd:         cmd,
		pid:         pid,
		outputs:     outputs,
		stdout:      outR,
		stderr:      errR,
		sink:        sink,
		readersDone: make(chan struct{}),
		exited:      make(chan struct{}),
		done:        make(chan struct{}),
	}
	h.readers.Store(2)
	go h.read(outR, executor.Stdout)
	go h.read(errR, executor.Stderr)
	go h.follow()
	return h, nil
}

// State returns {"pid", "pgid", "start_time", "outputs"} as JSON. The start
// time is read from /proc on the first call (most attempts end before anyone
// asks), while the process is known not to have been reaped; later it is 0.
func (h *handle) State() []byte {
	h.stateOnce.Do(func() {
		st := procState{PID: h.pid, PGID: h.pid, Outputs: h.outputs}
		h.mu.Lock()
		if !h.ended {
			if ps, err := readStat(h.pid); err == nil {
				st.StartTime = ps.startTime
			} else {
				h.e.log.Warn("read start time of local process; Recover will not be able to kill it", "pid", h.pid, "err", err)
			}
		}
		h.mu.Unlock()
		h.state, _ = json.Marshal(st)
	})
	return bytes.Clone(h.state)
}

// Wait blocks until the process has exited, its process group has been
// killed, its output has been given to the sink (or WaitDelay passed), and its
// outputs file has been read; or until ctx ends, which leaves the process
// running. It may be called many times and concurrently; each call returns the
// same result.
//
// The error is not about the task (a failed task is a Result with a non-zero
// ExitCode; an outputs file that cannot be read is Result.OutputsError) but
// about following it: a failure to reap it. Result is filled as far as it is
// known even then.
func (h *handle) Wait(ctx context.Context) (executor.Result, error) {
	select {
	case <-h.done:
		return h.result, h.err
	default:
	}
	select {
	case <-h.done:
		return h.result, h.err
	case <-ctx.Done():
		return executor.Result{ExitCode: -1}, fmt.Errorf("wait for local process %d: %w", h.pid, ctx.Err())
	}
}

// Stop sends SIGTERM to the process group and, if the main process has not
// exited after grace, SIGKILL. It returns once the main process has exited;
// Wait then returns once the output is drained. If ctx ends first, Stop sends
// SIGKILL at once and returns ctx's error. Stop on a process that has already
// exited does nothing and returns nil. It is safe to call concurrently with
// Wait and with itself.
func (h *handle) Stop(ctx context.Context, grace time.Duration) error {
	sent, err := h.signal(syscall.SIGTERM)
	if err != nil || !sent {
		return err
	}
	if grace > 0 {
		t := time.NewTimer(grace)
		defer t.Stop()
		select {
		case <-h.exited:
			return nil
		case <-t.C:
			h.e.log.Info("local process did not stop within its grace period; killing it", "pid", h.pid, "grace", grace)
		case <-ctx.Done():
			_, _ = h.signal(syscall.SIGKILL)
			return fmt.Errorf("stop local process %d: %w", h.pid, ctx.Err())
		}
	}
	if _, err := h.signal(syscall.SIGKILL); err != nil {
		return err
	}
	select {
	case <-h.exited:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("stop local process %d: %w", h.pid, ctx.Err())
	}
}

// signal sends sig to the process group unless the main process has already
// exited, and reports whether it sent it.
func (h *handle) signal(sig syscall.Signal) (bool, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.ended {
		return false, nil
	}
	// The leader is not reaped while ended is false, so the group id is still
	// ours. ESRCH cannot really happen then; it would mean nothing is left.
	if err := syscall.Kill(-h.pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return false, fmt.Errorf("signal local process group %d with %v: %w", h.pid, sig, err)
	}
	return true, nil
}

// follow waits for the process to exit, kills what is left of its group,
// reaps it, waits for the output to drain, reads the outputs file and
// publishes the result. It removes the attempt's outputs file.
func (h *handle) follow() {
	defer close(h.done)
	found := false
	defer func() {
		if !found {
			return // no file was written: nothing to remove
		}
		if err := os.Remove(h.outputs); err != nil && !errors.Is(err, fs.ErrNotExist) {
			h.e.log.Warn("remove outputs file", "file", h.outputs, "err", err)
		}
	}()

	// Wait for the exit without reaping, so that the group id cannot be
	// reused while the rest of the group is killed.
	exitErr := waitExit(h.pid)
	if exitErr != nil {
		h.e.log.Warn("wait for local process exit; reaping it instead", "pid", h.pid, "err", exitErr)
	}
	var waitErr error
	if exitErr != nil {
		waitErr = h.cmd.Wait()
	}
	h.mu.Lock()
	h.ended = true
	// Background children die with the task; ESRCH means there are none.
	if err := syscall.Kill(-h.pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		h.e.log.Warn("kill rest of local process group", "pgid", h.pid, "err", err)
	}
	h.mu.Unlock()
	close(h.exited)
	if exitErr == nil {
		waitErr = h.cmd.Wait()
	}

	// Killing the group closed every copy of the pipes but those of processes
	// that left it (setsid, daemons); do not wait for those beyond WaitDelay.
	t := time.NewTimer(h.e.waitDelay)
	select {
	case <-h.readersDone:
		t.Stop()
	case <-t.C:
		h.e.log.Warn("output of local process still open after it exited; closing it",
			"pid", h.pid, "wait_delay", h.e.waitDelay)
		now := time.Now()
		_ = h.stdout.SetReadDeadline(now)
		_ = h.stderr.SetReadDeadline(now)
		<-h.readersDone
	}

	h.result, h.err = exitResult(h.cmd.ProcessState, waitErr)
	if h.err != nil {
		h.err = fmt.Errorf("wait for local process %d: %w", h.pid, h.err)
	}
	out, size, exists, err := readOutputs(h.outputs)
	found = exists
	h.result.Outputs, h.result.OutputsSize = out, size
	if err != nil {
		h.result.OutputsError = err.Error()
	}
	h.e.log.Debug("local process ended", "pid", h.pid, "exit_code", h.result.ExitCode,
		"reason", h.result.Reason, "outputs_size", size)
}

// waitExit blocks until process pid has exited, without reaping it.
func waitExit(pid int) error {
	for {
		var info unix.Siginfo
		err := unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
		if !errors.Is(err, unix.EINTR) {
			return err
		}
	}
}

// exitResult describes how a reaped process ended.
func exitResult(ps *os.ProcessState, waitErr error) (executor.Result, error) {
	if ps == nil {
		if waitErr == nil {
			waitErr = errors.New("no exit status")
		}
		return executor.Result{ExitCode: -1, Reason: "exit status unknown"}, waitErr
	}
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return executor.Result{ExitCode: -1, Reason: fmt.Sprintf("killed by signal %d", int(ws.Signal()))}, nil
	}
	code := ps.ExitCode()
	if code == 0 {
		return executor.Result{}, nil
	}
	return executor.Result{ExitCode: code, Reason: fmt.Sprintf("exit %d", code)}, nil
}

// readOutputs reads up to executor.MaxOutputs+1 bytes of the outputs file and
// returns them with the file's full size, and whether there is a file at the
// path (of any kind) to remove. A missing or empty file is no outputs (nil, 0).
func readOutputs(path string) ([]byte, int64, bool, error) {
	// O_NONBLOCK: a task could make the file a FIFO, which would block open.
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, 0, false, nil
	}
	if err != nil {
		return nil, 0, true, fmt.Errorf("read outputs: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, 0, true, fmt.Errorf("read outputs: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, 0, true, fmt.Errorf("read outputs: $DRAY_OUTPUT (%s) is a %v, not a regular file", path, fi.Mode().Type())
	}
	if fi.Size() == 0 {
		return nil, 0, true, nil
	}
	b, err := io.ReadAll(io.LimitReader(f, executor.MaxOutputs+1))
	if err != nil {
		return nil, fi.Size(), true, fmt.Errorf("read outputs %s: %w", path, err)
	}
	return b, fi.Size(), true, nil
}

// read hands the lines of one of the process's streams to the sink until end
// of file (or until its read deadline is set), then closes f.
func (h *handle) read(f *os.File, stream string) {
	defer func() {
		if h.readers.Add(-1) == 0 {
			close(h.readersDone)
		}
	}()
	defer f.Close()
	r := bufio.NewReaderSize(f, 64<<10)
	var buf []byte
	for {
		frag, err := r.ReadSlice('\n')
		buf = append(buf, frag...)
		switch {
		case err == nil:
			h.emitLine(stream, trimEOL(buf))
			buf = buf[:0]
			if cap(buf) > 1<<20 {
				buf = nil // do not keep a long line's buffer for the attempt's lifetime
			}
		case errors.Is(err, bufio.ErrBufferFull):
			// Keep one byte over maxLine so a "\r" before the coming "\n" is
			// not split off into a line of its own.
			for len(buf) > maxLine+1 {
				h.emit(stream, buf[:maxLine])
				buf = append(buf[:0], buf[maxLine:]...)
			}
		default:
			if len(buf) > 0 {
				h.emitLine(stream, buf) // a last line without a line ending
			}
			if !errors.Is(err, io.EOF) && !errors.Is(err, os.ErrDeadlineExceeded) {
				h.e.log.Warn("read output of local process", "pid", h.pid, "stream", stream, "err", err)
			}
			return
		}
	}
}

// emitLine gives b to the sink in pieces of at most maxLine bytes.
func (h *handle) emitLine(stream string, b []byte) {
	for len(b) > maxLine {
		h.emit(stream, b[:maxLine])
		b = b[maxLine:]
	}
	h.emit(stream, b)
}

func (h *handle) emit(stream string, b []byte) {
	l := executor.Line{Time: time.Now(), Stream: stream, Text: string(b)}
	h.sinkMu.Lock()
	defer h.sinkMu.Unlock()
	h.sink.Line(l)
}

// trimEOL removes a trailing "\n" or "\r\n".
func trimEOL(b []byte) []byte {
	b = bytes.TrimSuffix(b, []byte("\n"))
	return bytes.TrimSuffix(b, []byte("\r"))
}
