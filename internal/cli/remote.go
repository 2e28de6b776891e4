package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/dray-dev/dray/internal/client"
	"github.com/dray-dev/dray/internal/control"
	"github.com/dray-dev/dray/internal/engine"
	"github.com/spf13/cobra"
)

// Commands that read and change runs (trigger, runs, runs show, logs,
// cancel, retry) talk to a dray server when --server or DRAY_SERVER names
// one, with the token in DRAY_TOKEN; otherwise they work on the project's
// local state in .dray/.

// remote returns a client of the server that --server (or, without the
// flag, DRAY_SERVER) names, or nil when none is named: the command then
// works on the local state. `--server ""` means the local state even when
// DRAY_SERVER is set.
func (e *env) remote(cmd *cobra.Command) (*client.Client, error) {
	url, from := e.server, "--server"
	if f := cmd.Flags().Lookup("server"); f == nil || !f.Changed {
		url, from = e.getenv("DRAY_SERVER"), "DRAY_SERVER"
	}
	if url == "" {
		return nil, nil
	}
	c, err := client.New(url, e.getenv("DRAY_TOKEN"), client.WithUserAgent("dray/"+Version))
	if err != nil {
		return nil, badInputf("%s: %v", from, err)
	}
	return c, nil
}

// remoteError explains an error of a call to the server in the user's
// terms, with its exit code: the server's own message for what it refused
// (400, 404, 409: bad input, exit 2), what to do about the token (401, 403:
// exit 1) and where the server was looked for (unreachable: exit 1).
func (e *env) remoteError(c *client.Client, err error) error {
	if err == nil {
		return nil
	}
	var ee *exitError
	var apiErr *client.Error
	var down *client.UnreachableError
	switch {
	case errors.As(err, &ee):
		return err
	case errors.As(err, &apiErr):
		msg := apiErr.Text()
		switch apiErr.Status {
		case http.StatusBadRequest, http.StatusNotFound, http.StatusConflict, http.StatusUnprocessableEntity:
			return &exitError{code: ExitBadInput, err: &remoteMessage{msg: msg, err: err}}
		case http.StatusUnauthorized:
			if e.getenv("DRAY_TOKEN") == "" {
				msg = fmt.Sprintf("the server at %s needs a token: set DRAY_TOKEN to one made with `dray token create` (%s)", c.URL(), msg)
			} else {
				msg = fmt.Sprintf("the server at %s refused the token in DRAY_TOKEN: %s (is it revoked, expired, or for another server? `dray token create` makes one)", c.URL(), msg)
			}
		case http.StatusForbidden:
			msg = fmt.Sprintf("the server at %s refused the token: %s", c.URL(), msg)
		case http.StatusTooManyRequests:
			msg = fmt.Sprintf("the server at %s is limiting requests: %s: try again later", c.URL(), msg)
		default:
			status := fmt.Sprintf("HTTP %d", apiErr.Status)
			if apiErr.Code != "" {
				status += " " + apiErr.Code
			}
			msg = fmt.Sprintf("the server at %s failed: %s (%s)", c.URL(), msg, status)
		}
		return &exitError{code: ExitFailed, err: &remoteMessage{msg: msg, err: err}}
	case errors.As(err, &down):
		return &exitError{code: ExitFailed, err: &remoteMessage{msg: down.Error(), err: err}}
	}
	return err
}

// remoteMessage is an error of the server told in the user's terms; it keeps
// the original error for errors.As.
type remoteMessage struct {
	msg string
	err error
}

func (m *remoteMessage) Error() string { return m.msg }
func (m *remoteMessage) Unwrap() error { return m.err }

// runResult is the exit of a command that waited for a run: nil when it
// succeeded, 130 when it was canceled, 1 otherwise.
func runResult(state string) error {
	switch engine.RunState(state) {
	case engine.RunSucceeded:
		return nil
	case engine.RunCanceled:
		return &exitError{code: ExitCanceled}
	}
	return &exitError{code: ExitFailed}
}

// waitRemote follows a server's run until it ends, printing its tasks' state
// changes to out as `dray run` does and a summary at the end, and returns
// the final record. head is printed first, once Ctrl-C is handled. The log
// stream tells it when something changed; it also reads the run every few
// seconds in case the stream broke. Ctrl-C stops waiting (exit 130) and
// leaves the run to the server.
func (e *env) waitRemote(ctx context.Context, c *client.Client, rec *control.RunRecord, out io.Writer, head string) (*control.RunRecord, error) {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)
	fmt.Fprintln(out, head)

	ctx, cancel := context.WithCancel(ctx)
	changed := make(chan struct{}, 1)
	streamDone := make(chan error, 1)
	go func() {
		streamDone <- c.FollowLogs(ctx, rec.ID, client.LogOptions{}, func(ev client.LogEvent) error {
			if ev.Kind == client.EventAttempt || ev.Kind == client.EventEnd {
				select {
				case changed <- struct{}{}:
				default:
				}
			}
			return nil
		})
	}()
	streaming := true
	defer func() {
		cancel()
		if streaming {
			<-streamDone
		}
	}()

	names := make([]string, len(rec.Tasks))
	for i, t := range rec.Tasks {
		names[i] = t.Name
	}
	tty := isTerminal(out)
	tr := &taskTracker{prog: newProgress(out, tty, tty && e.getenv("NO_COLOR") == "", names), seen: map[string]taskSeen{}}
	tr.update(rec)
	// Reading the run is coalesced: at most every 200ms after a change, and
	// every 2s without one.
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	dirty, last := false, time.Now()
	for !engine.RunState(rec.State).Final() {
		select {
		case <-sigs:
			fmt.Fprintf(e.stderr, "dray: stopped waiting; run %s goes on at the server (`dray cancel %s` stops it)\n", rec.ID, rec.ID)
			return nil, &exitError{code: ExitCanceled}
		case <-changed:
			dirty = true
			continue
		case err := <-streamDone:
			streaming = false
			streamDone = nil
			var apiErr *client.Error
			if errors.As(err, &apiErr) {
				return nil, err
			}
			if err != nil && ctx.Err() == nil {
				e.log.Debug("log stream of the run ended; reading the run instead", "run", rec.ID, "err", err)
			}
			dirty = true
		case <-tick.C:
			if !dirty && time.Since(last) < 2*time.Second {
				continue
			}
		}
		next, err := c.Run(ctx, rec.ID)
		if err != nil {
			return nil, err
		}
		rec, dirty, last = next, false, time.Now()
		tr.update(rec)
	}
	for i := range rec.Tasks {
		if t := &rec.Tasks[i]; t.Instances != nil {
			t.Items = len(t.Instances)
		}
	}
	tr.prog.summary(rec)
	return rec, nil
}

// taskTracker prints the changes between successive records of a run.
type taskTracker struct {
	prog *progress
	seen map[string]taskSeen
}

type taskSeen struct {
	state string
	done  int
}

func (tr *taskTracker) update(rec *control.RunRecord) {
	for _, t := range rec.Tasks {
		done := 0
		for _, in := range t.Instances {
			if engine.AttemptState(in.State).Final() {
				done++
			}
		}
		total := len(t.Instances)
		before, known := tr.seen[t.Name]
		tr.seen[t.Name] = taskSeen{state: t.State, done: done}
		switch {
		case !known && t.State == string(engine.TaskPending):
		case before.state != t.State:
			detail := t.Reason
			if total > 0 && (detail == "" || t.State == string(engine.TaskRunning)) {
				detail = fmt.Sprintf("%d/%d", done, total)
			}
			tr.prog.line(t.Name, t.State, detail)
		case total > 0 && done != before.done && t.State == string(engine.TaskRunning):
			tr.prog.line(t.Name, fmt.Sprintf("%d/%d", done, total), "")
		}
	}
}
