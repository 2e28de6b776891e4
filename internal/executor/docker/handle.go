package docker

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/pkg/stdcopy"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"

	"github.com/dray-dev/dray/internal/executor"
)

// maxLine is the longest line handed to the sink in one piece; longer lines are
// split. It is above executor.MaxOutputs so that a `::dray-output::` marker of
// the maximum size arrives as one line (as with the local executor).
const maxLine = 2 << 20

// drainDelay is how long, after the container exited, the log stream may take
// to end. Past it, the log is read again from the engine's store instead.
const drainDelay = 10 * time.Second

// containerState is a handle's saved State.
type containerState struct {
	Container string `json:"container"`
	// Host is the engine's address as the client used it.
	Host string `json:"host,omitempty"`
}

// handle is a started container. It implements executor.Handle.
type handle struct {
	e     *Executor
	cli   *client.Client
	id    string
	state []byte

	// Used by the goroutine that follows the container only, so calls to
	// the sink are serialized.
	stdout, stderr *lineWriter

	exited chan struct{} // closed once the container is known to have stopped (or cannot be followed)

	done   chan struct{} // closed once result and err are final
	result executor.Result
	err    error
}

var _ executor.Handle = (*handle)(nil)

// newHandle returns a handle of container id; its caller starts h.follow.
func newHandle(e *Executor, cli *client.Client, id string, sink executor.LogSink) *handle {
	st, _ := json.Marshal(containerState{Container: id, Host: cli.DaemonHost()})
	return &handle{
		e:      e,
		cli:    cli,
		id:     id,
		state:  st,
		stdout: &lineWriter{stream: executor.Stdout, sink: sink},
		stderr: &lineWriter{stream: executor.Stderr, sink: sink},
		exited: make(chan struct{}),
		done:   make(chan struct{}),
	}
}

// State returns {"container", "host"} as JSON.
func (h *handle) State() []byte { return bytes.Clone(h.state) }

// Wait blocks until the container has stopped, its whole log has been given
// to the sink, its outputs file has been read and the container removed; or
// until ctx ends, which leaves the container running. It may be called many
// times and concurrently; each call returns the same result.
//
// The error is about following the container (the engine went away, the
// container vanished while it ran), not about the task: a failed task is a
// Result with a non-zero ExitCode.
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
		return executor.Result{ExitCode: -1}, fmt.Errorf("wait for container %s: %w", shortID(h.id), ctx.Err())
	}
}

// Stop sends SIGTERM to the container's init process, which passes it on to
// the task, and SIGKILL (which ends every process of the container) if the
// container still runs after grace. It returns once the container has
// stopped; Wait then returns once the log is read. If ctx ends first, Stop
// sends SIGKILL at once and returns ctx's error. Stop on a container that has
// already stopped does nothing and returns nil. It is safe to call
// concurrently with Wait and with itself.
func (h *handle) Stop(ctx context.Context, grace time.Duration) error {
	if err := h.kill(ctx, "TERM"); err != nil {
		return err
	}
	if grace > 0 {
		t := time.NewTimer(grace)
		defer t.Stop()
		select {
		case <-h.exited:
			return nil
		case <-t.C:
			h.e.log.Info("container did not stop within its grace period; killing it", "id", shortID(h.id), "grace", grace)
		case <-ctx.Done():
			kctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
			defer cancel()
			if err := h.kill(kctx, "KILL"); err != nil {
				h.e.log.Warn("kill container", "id", shortID(h.id), "err", err)
			}
			return fmt.Errorf("stop container %s: %w", shortID(h.id), ctx.Err())
		}
	}
	if err := h.kill(ctx, "KILL"); err != nil {
		return err
	}
	select {
	case <-h.exited:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("stop container %s: %w", shortID(h.id), ctx.Err())
	}
}

// kill sends signal to the container unless it has stopped. A container that
// is not running or is gone is not an error.
func (h *handle) kill(ctx context.Context, signal string) error {
	select {
	case <-h.exited:
		return nil
	default:
	}
	_, err := h.cli.ContainerKill(ctx, h.id, client.ContainerKillOptions{Signal: signal})
	if err == nil || cerrdefs.IsNotFound(err) || cerrdefs.IsConflict(err) {
		return nil
	}
	return fmt.Errorf("stop container %s: send SIG%s: %w", shortID(h.id), signal, engineError(ctx, h.cli, err))
}

// follow follows the container to its end: it gives its log to the sink,
// waits for it to stop, reads its exit and outputs, removes it and publishes
// the result. The log is read from the beginning, so that a recovered handle
// gives every line again.
func (h *handle) follow() {
	defer close(h.done)
	logCtx, cancelLogs := context.WithCancel(context.Background())
	defer cancelLogs()
	logsDone := make(chan error, 1)
	go func() { logsDone <- h.readLogs(logCtx, true) }()

	status, err := h.waitStopped()
	close(h.exited)
	if err != nil {
		cancelLogs()
		<-logsDone
		h.result = executor.Result{ExitCode: -1, Reason: "container lost"}
		h.err = fmt.Errorf("follow container %s: %w", shortID(h.id), err)
		return
	}

	// The log stream ends once the engine has written the container's last
	// line. Should it not, or should it break, stop following. Either way,
	// read the end of the log again from the engine's store: a stream that
	// follows may miss the last lines of a container that just stopped
	// (Docker 20.10 does), and the lines already given are skipped.
	t := time.NewTimer(drainDelay)
	select {
	case err := <-logsDone:
		t.Stop()
		if err != nil {
			h.e.log.Info("following container log broke; reading it again", "id", shortID(h.id), "err", err)
		}
	case <-t.C:
		h.e.log.Info("container log still open after the container stopped; reading it again",
			"id", shortID(h.id), "wait", drainDelay)
		cancelLogs()
		<-logsDone
	}
	ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
	defer cancel()
	if err := h.readLogs(ctx, false); err != nil {
		h.e.log.Warn("read container log; lines may be missing", "id", shortID(h.id), "err", err)
	}
	h.flushLines()

	h.result = h.exitResult(ctx, status)
	out, size, err := readOutputs(ctx, h.cli, h.id)
	h.result.Outputs, h.result.OutputsSize = out, size
	if err != nil {
		h.result.OutputsError = err.Error()
	}
	h.e.remove(h.cli, h.id)
	h.e.log.Debug("container ended", "id", shortID(h.id), "exit_code", h.result.ExitCode,
		"reason", h.result.Reason, "outputs_size", size)
}

// waitStopped blocks until the container is not running and returns the exit
// status the engine reports.
func (h *handle) waitStopped() (container.WaitResponse, error) {
	w := h.cli.ContainerWait(context.Background(), h.id, client.ContainerWaitOptions{Condition: container.WaitConditionNotRunning})
	select {
	case res := <-w.Result:
		return res, nil
	case err := <-w.Error:
		return container.WaitResponse{}, fmt.Errorf("wait for the container to stop: %w", engineError(context.Background(), h.cli, err))
	}
}

// exitResult describes how the stopped container ended, from its state, or
// from status when it cannot be inspected.
func (h *handle) exitResult(ctx context.Context, status container.WaitResponse) executor.Result {
	code, oom := int(status.StatusCode), false
	for try := 0; ; try++ {
		ins, err := h.cli.ContainerInspect(ctx, h.id, client.ContainerInspectOptions{})
		if err != nil {
			h.e.log.Warn("inspect stopped container; using the exit code it reported", "id", shortID(h.id), "err", err)
			break
		}
		if st := ins.Container.State; st != nil {
			code, oom = st.ExitCode, st.OOMKilled
		}
		// The engine learns of an OOM kill by an event of its own, which
		// may come after the exit: a SIGKILL under a memory limit is looked
		// at again for a moment.
		limited := ins.Container.HostConfig != nil && ins.Container.HostConfig.Memory > 0
		if oom || code != 137 || !limited || try == 10 || ctx.Err() != nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	switch {
	case code == 0:
		return executor.Result{}
	case oom:
		return executor.Result{ExitCode: code, Reason: fmt.Sprintf("exit %d: OOMKilled", code)}
	case (code == 126 || code == 127) && strings.HasPrefix(h.stderr.first, "[FATAL tini ("):
		// The init process could not run the command ("[FATAL tini (7)]
		// exec prog failed: No such file or directory").
		_, msg, _ := strings.Cut(h.stderr.first, "] ")
		return executor.Result{ExitCode: code, Reason: fmt.Sprintf("exit %d: %s", code, msg)}
	case status.Error != nil && status.Error.Message != "":
		return executor.Result{ExitCode: code, Reason: fmt.Sprintf("exit %d: %s", code, status.Error.Message)}
	default:
		return executor.Result{ExitCode: code, Reason: fmt.Sprintf("exit %d", code)}
	}
}

// readLogs reads the container's log, both streams with the engine's
// timestamps, and gives its lines to the sink. With follow it goes on until
// the container stops. Without, it reads what the engine has stored since
// the newest message an earlier read handled, and skips what that read gave.
func (h *handle) readLogs(ctx context.Context, follow bool) error {
	opts := client.ContainerLogsOptions{ShowStdout: true, ShowStderr: true, Timestamps: true, Follow: follow}
	if !follow {
		h.stdout.reread, h.stderr.reread = true, true
		if since := earliest(h.stdout.last, h.stderr.last); !since.IsZero() {
			opts.Since = since.Add(-time.Millisecond).UTC().Format(time.RFC3339Nano)
		}
	}
	h.stdout.seen, h.stderr.seen = 0, 0
	rc, err := h.cli.ContainerLogs(ctx, h.id, opts)
	if err != nil {
		return fmt.Errorf("read container log: %w", err)
	}
	defer rc.Close()
	if _, err := stdcopy.StdCopy(h.stdout, h.stderr, rc); err != nil {
		return fmt.Errorf("read container log: %w", err)
	}
	return nil
}

// earliest returns the earlier of two times, ignoring zero ones.
func earliest(a, b time.Time) time.Time {
	if a.IsZero() || (!b.IsZero() && b.Before(a)) {
		return b
	}
	return a
}

// flushLines gives the sink the last lines of the streams, which had no
// line ending.
func (h *handle) flushLines() {
	h.stdout.flush()
	h.stderr.flush()
}

// lineWriter turns the log messages of one stream into lines for the sink.
// stdcopy.StdCopy calls Write once a message of the log: the engine's
// timestamp, a space, and a line or part of one (the engine splits long
// lines). A line takes the time of its first part.
type lineWriter struct {
	stream string
	sink   executor.LogSink

	buf   []byte    // a line whose end has not come yet
	time  time.Time // of buf's first part
	first string    // the first line, up to 1 KiB
	lines int

	// The newest message handled is from last; atLast messages handled are
	// from that very time. On a read again (reread), messages older than
	// last, and the first atLast from that time (seen counts them), were
	// handled before.
	last   time.Time
	atLast int
	seen   int
	reread bool
}

// Write handles one log message.
func (w *lineWriter) Write(p []byte) (int, error) {
	t, text, ok := splitTimestamp(p)
	if ok && w.handledBefore(t) {
		return len(p), nil
	}
	for len(text) > 0 {
		if len(w.buf) == 0 {
			w.time = t
		}
		i := bytes.IndexByte(text, '\n')
		if i < 0 {
			w.buf = append(w.buf, text...)
			break
		}
		w.buf = append(w.buf, text[:i]...)
		w.emit(bytes.TrimSuffix(w.buf, []byte("\r")))
		w.buf = w.buf[:0]
		text = text[i+1:]
	}
	// Keep one byte over maxLine so a "\r" before the coming "\n" is not
	// split off into a line of its own.
	for len(w.buf) > maxLine+1 {
		w.emit(w.buf[:maxLine])
		w.buf = append(w.buf[:0], w.buf[maxLine:]...)
	}
	if cap(w.buf) > maxLine && len(w.buf) == 0 {
		w.buf = nil // do not keep a long line's buffer for the attempt's lifetime
	}
	return len(p), nil
}

// handledBefore reports whether the message from time t was handled by an
// earlier read, and otherwise counts it as handled now. The engine's log of a
// stream is in time order; the first read handles every message whatever its
// time (a clock may step back).
func (w *lineWriter) handledBefore(t time.Time) bool {
	switch {
	case t.After(w.last):
		w.last, w.atLast, w.seen = t, 1, 1
	case t.Equal(w.last):
		w.seen++
		if w.reread && w.seen <= w.atLast {
			return true
		}
		w.atLast++
	case w.reread:
		return true
	}
	return false
}

// flush gives the sink a last line without a line ending.
func (w *lineWriter) flush() {
	if len(w.buf) > 0 {
		w.emit(w.buf)
		w.buf = nil
	}
}

// emit gives the sink one line, in pieces of at most maxLine bytes.
func (w *lineWriter) emit(b []byte) {
	if w.lines++; w.lines == 1 {
		w.first = string(b[:min(len(b), 1024)])
	}
	for len(b) > maxLine {
		w.sink.Line(executor.Line{Time: w.time, Stream: w.stream, Text: string(b[:maxLine])})
		b = b[maxLine:]
	}
	w.sink.Line(executor.Line{Time: w.time, Stream: w.stream, Text: string(b)})
}

// splitTimestamp splits a log message into the engine's timestamp and the
// text after it. A message without one gets the current time (and ok false).
func splitTimestamp(p []byte) (t time.Time, text []byte, ok bool) {
	if i := bytes.IndexByte(p, ' '); i > 0 {
		if t, err := time.Parse(time.RFC3339Nano, string(p[:i])); err == nil {
			return t, p[i+1:], true
		}
	}
	return time.Now(), p, false
}

// readOutputs reads up to executor.MaxOutputs+1 bytes of the stopped
// container's outputs file and returns them with the file's full size. A
// missing or empty file is no outputs (nil, 0).
func readOutputs(ctx context.Context, cli *client.Client, id string) ([]byte, int64, error) {
	res, err := cli.CopyFromContainer(ctx, id, client.CopyFromContainerOptions{SourcePath: outputsFile})
	if cerrdefs.IsNotFound(err) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("read outputs: %w", err)
	}
	defer res.Content.Close()
	tr := tar.NewReader(res.Content)
	hdr, err := tr.Next()
	if err != nil {
		return nil, 0, fmt.Errorf("read outputs: %w", err)
	}
	if hdr.Typeflag != tar.TypeReg {
		return nil, 0, fmt.Errorf("read outputs: $DRAY_OUTPUT (%s) is a %s, not a regular file", outputsFile, fileKind(hdr.Typeflag))
	}
	if hdr.Size == 0 {
		return nil, 0, nil
	}
	b, err := io.ReadAll(io.LimitReader(tr, executor.MaxOutputs+1))
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, hdr.Size, fmt.Errorf("read outputs: %w", err)
	}
	return b, hdr.Size, nil
}

// fileKind names a tar entry's type for a message.
func fileKind(typ byte) string {
	switch typ {
	case tar.TypeDir:
		return "directory"
	case tar.TypeSymlink:
		return "symbolic link"
	case tar.TypeFifo:
		return "named pipe"
	case tar.TypeChar, tar.TypeBlock:
		return "device"
	default:
		return fmt.Sprintf("file of tar type %q", typ)
	}
}
