package ecs

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/cloudwatchlogs"
	"github.com/aws/aws-sdk-go-v2/service/ecs"
	ecstypes "github.com/aws/aws-sdk-go-v2/service/ecs/types"

	"golang.org/x/time/rate"

	"github.com/dray-dev/dray/internal/executor"
)

// Stop reasons the executor gives StopTask.
const (
	reasonStopped = "dray: stopped"
)

// state is a handle's State: what Recover needs to follow the task again.
type state struct {
	Task      string `json:"task"`
	Cluster   string `json:"cluster"`
	Region    string `json:"region"`
	Container string `json:"container,omitempty"`
	LogGroup  string `json:"log_group,omitempty"`
	LogStream string `json:"log_stream,omitempty"`
}

// handle follows one ECS task. Its goroutine (run) reads the log and turns
// what the poller learns into the result; it alone calls the sink.
type handle struct {
	e            *Executor
	ecs          *ecs.Client
	st           state
	stateJSON    []byte
	startTimeout time.Duration
	log          *slog.Logger
	logs         *logFollower

	changed chan struct{} // a token: the poller saw something new
	stopped chan struct{} // closed once the task is STOPPED (or cannot be followed)
	done    chan struct{} // closed once res and err are final and the log is drained
	res     executor.Result
	err     error

	mu      sync.Mutex
	task    *ecstypes.Task // as last described
	misses  int            // polls in a row that did not find the task
	missWhy string         // the reason of the last miss
	trouble string         // why the task cannot be described now, or ""
}

// follow returns a handle of the task in st, following it from now on.
func (e *Executor) follow(cl *regionClients, st state, startTimeout time.Duration, sink executor.LogSink) *handle {
	b, _ := json.Marshal(st) // strings only: cannot fail
	h := &handle{
		e: e, ecs: cl.ecs, st: st, stateJSON: b, startTimeout: startTimeout,
		log:     e.log.With("task", st.Task),
		changed: make(chan struct{}, 1), stopped: make(chan struct{}), done: make(chan struct{}),
	}
	h.logs = &logFollower{cli: cl.logs, hot: cl.hotReads, cold: cl.coldReads, hotNext: true, group: st.LogGroup, stream: st.LogStream, sink: sink}
	e.join(cl.poll, h)
	e.wg.Add(1)
	go h.run()
	return h
}

// State returns {"task", "cluster", "region", ...} as JSON.
func (h *handle) State() []byte { return append([]byte(nil), h.stateJSON...) }

// Wait waits until the task has stopped and its log is drained.
func (h *handle) Wait(ctx context.Context) (executor.Result, error) {
	select {
	case <-h.done:
		return h.res, h.err
	case <-ctx.Done():
		return executor.Result{}, fmt.Errorf("wait for ECS task %s: %w", taskID(h.st.Task), ctx.Err())
	}
}

// Stop asks ECS to stop the task (StopTask: SIGTERM, then SIGKILL after the
// container's stopTimeout, which the task definition sets; grace cannot
// change it) and waits until the task has stopped or ctx ends. Stop on a
// stopped task does nothing.
func (h *handle) Stop(ctx context.Context, grace time.Duration) error {
	select {
	case <-h.stopped:
		return nil
	default:
	}
	if err := h.stopTask(ctx, reasonStopped); err != nil {
		return err
	}
	select {
	case <-h.stopped:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("stop ECS task %s: %w", taskID(h.st.Task), ctx.Err())
	}
}

func (h *handle) stopTask(ctx context.Context, reason string) error {
	_, err := call(ctx, func(ctx context.Context) (*ecs.StopTaskOutput, error) {
		return h.ecs.StopTask(ctx, &ecs.StopTaskInput{
			Cluster: aws.String(h.st.Cluster), Task: aws.String(h.st.Task), Reason: aws.String(reason),
		})
	})
	if err != nil {
		return awsError("stop task "+taskID(h.st.Task), err)
	}
	return nil
}

// observe records what the poller learned of the task.
func (h *handle) observe(t ecstypes.Task) {
	h.mu.Lock()
	h.task, h.misses = &t, 0
	h.mu.Unlock()
	h.notify()
}

// missing records that the poller did not find the task.
func (h *handle) missing(reason string) {
	h.mu.Lock()
	h.misses++
	h.missWhy = reason
	h.mu.Unlock()
	h.notify()
}

// setTrouble records why the poller cannot describe the task ("" once it
// can again); run writes a new trouble into the task's log.
func (h *handle) setTrouble(msg string) {
	h.mu.Lock()
	changed := h.trouble != msg
	h.trouble = msg
	h.mu.Unlock()
	if changed {
		h.notify()
	}
}

func (h *handle) notify() {
	select {
	case h.changed <- struct{}{}:
	default:
	}
}

func (h *handle) snapshot() (*ecstypes.Task, int, string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.task, h.misses, h.missWhy
}

// run follows the task until it has stopped and its log is drained.
func (h *handle) run() {
	defer h.e.wg.Done()
	defer close(h.done)
	var stopOnce sync.Once
	closeStopped := func() { stopOnce.Do(func() { close(h.stopped) }) }
	defer closeStopped()
	defer h.e.leave(h)

	ctx := h.e.ctx
	// The log is read every logPoll while it grows, less often (up to
	// maxLogWait) while it does not: a region's reads share a token bucket
	// (CloudWatch Logs allows an account 25 GetLogEvents a second), which
	// quiet tasks should not use up.
	logWait := h.e.logPoll
	logTick := time.NewTimer(logWait)
	defer logTick.Stop()
	startTimer := time.NewTimer(h.startTimeout)
	defer startTimer.Stop()
	told := "" // the trouble last written into the log
	for {
		select {
		case <-ctx.Done():
			h.err = fmt.Errorf("follow ECS task %s: the executor was closed: %w", taskID(h.st.Task), executor.ErrLost)
			return
		case <-logTick.C:
			switch grew, read := h.readLogs(ctx); {
			case grew:
				logWait = h.e.logPoll
			case read:
				logWait = min(logWait*2, maxLogWait)
			}
			logTick.Reset(logWait)
		case <-startTimer.C:
			task, _, _ := h.snapshot()
			if task != nil && !notStarted(task) {
				continue
			}
			// The poller's view may be old (DescribeTasks failing): ask
			// ECS now, and stop the task only if it has really not started.
			sctx, cancel := context.WithTimeout(ctx, cleanupTimeout)
			fresh, err := describeTask(sctx, h.ecs, h.st.Cluster, h.st.Task)
			switch {
			case err != nil:
				h.log.Warn("describe ECS task at its start timeout; asking again later", "err", err)
				startTimer.Reset(maxPollWait)
			case notStarted(fresh):
				reason := "dray: did not start within " + formatDuration(h.startTimeout)
				h.log.Info("ECS task did not start in time; stopping it", "start_timeout", h.startTimeout)
				if err := h.stopTask(sctx, reason); err != nil {
					h.log.Warn("stop ECS task that did not start", "err", err)
				}
			}
			cancel()
		case <-h.changed:
			task, misses, why := h.snapshot()
			h.mu.Lock()
			trouble := h.trouble
			h.mu.Unlock()
			if trouble != "" && trouble != told {
				h.logs.sink.Line(executor.Line{Time: time.Now(), Stream: executor.Stderr, Text: "dray: " + trouble})
			}
			told = trouble
			if misses >= missingPolls {
				h.err = fmt.Errorf("ECS task %s: %s: %w", taskID(h.st.Task), why, executor.ErrLost)
				return
			}
			if task == nil || !isStopped(task) {
				continue
			}
			h.e.leave(h)
			closeStopped()
			h.drainLogs(ctx)
			h.res = result(task, h.st.Container)
			h.log.Debug("ECS task stopped", "exit_code", h.res.ExitCode, "reason", h.res.Reason)
			return
		}
	}
}

// notStarted reports whether a task is still on its way to RUNNING.
func notStarted(t *ecstypes.Task) bool {
	switch aws.ToString(t.LastStatus) {
	case "", "PROVISIONING", "PENDING", "ACTIVATING":
		return true
	}
	return false
}

// readLogs reads what is new in the log. CloudWatch Logs being unreachable
// must not fail the task: the next tick tries again.
// It reports whether the log grew, and whether it was read at all (the
// region's token bucket had a token).
func (h *handle) readLogs(ctx context.Context) (grew, read bool) {
	if task, _, _ := h.snapshot(); task == nil || notStarted(task) {
		return false, false // nothing logs before the task runs
	}
	reads := h.logs.cold
	if h.logs.hotNext {
		reads = h.logs.hot
	}
	if !reads.Allow() {
		return false, false
	}
	grew, err := h.logs.read(ctx)
	if err != nil && !isNotFound(err) {
		h.log.Debug("read task log; trying again", "err", err)
	}
	// A log that grew is read from the hot bucket next; one that did not,
	// from the cold one (a stream not there yet counts as not grown).
	h.logs.hotNext = grew
	return grew, true
}

// drainLogs reads the log of a stopped task until it stops growing (its
// forward token stays the same twice), trying again while CloudWatch Logs
// cannot be reached, for e.logDrain at most.
func (h *handle) drainLogs(ctx context.Context) {
	deadline := time.Now().Add(h.e.logDrain)
	same := 0
	var lastErr error
	for {
		if err := h.logs.hot.Wait(ctx); err != nil {
			return
		}
		changed, err := h.logs.read(ctx)
		switch {
		case err != nil && !isNotFound(err):
			lastErr = err
			same = 0
		case changed:
			lastErr = nil
			same = 0
		default:
			// A missing stream after the stop means the task logged nothing
			// (it did not start): as good as an unchanged token.
			lastErr = nil
			same++
		}
		if same >= 2 {
			return
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			msg := fmt.Sprintf("dray: gave up reading the task's log from CloudWatch Logs (%s, stream %s) after %s; lines may be missing", h.st.LogGroup, h.st.LogStream, h.e.logDrain)
			if lastErr != nil {
				msg += ": " + lastErr.Error()
			}
			h.log.Warn("gave up draining the task log", "group", h.st.LogGroup, "stream", h.st.LogStream, "err", lastErr)
			h.logs.sink.Line(executor.Line{Time: time.Now(), Stream: executor.Stderr, Text: msg})
			return
		}
		t := time.NewTimer(h.e.logPoll)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
		}
	}
}

// result turns a stopped task into a Result.
func result(t *ecstypes.Task, container string) executor.Result {
	var c *ecstypes.Container
	for i := range t.Containers {
		if aws.ToString(t.Containers[i].Name) == container {
			c = &t.Containers[i]
		}
	}
	code := -1
	creason := ""
	if c != nil {
		if c.ExitCode != nil {
			code = int(*c.ExitCode)
		}
		creason = aws.ToString(c.Reason)
	}
	stopReason := aws.ToString(t.StoppedReason)
	exit := func() executor.Result {
		if code == 0 {
			return executor.Result{}
		}
		r := "exit " + strconv.Itoa(code)
		if creason != "" {
			r += ": " + creason
		}
		return executor.Result{ExitCode: code, Reason: r}
	}
	switch t.StopCode {
	case ecstypes.TaskStopCodeEssentialContainerExited:
		if code == -1 {
			return executor.Result{ExitCode: -1, Reason: join(string(t.StopCode), creason, stopReason)}
		}
		return exit()
	case ecstypes.TaskStopCodeUserInitiated:
		// A task that caught SIGTERM and exited in its own way (not 143 from
		// SIGTERM, not 137 from SIGKILL) ends with its own code, as it would
		// elsewhere.
		if code >= 0 && code != 137 && code != 143 {
			return exit()
		}
		return executor.Result{ExitCode: code, Reason: join(string(t.StopCode), stopReason)}
	default:
		if code == 0 && t.StopCode == "" {
			return executor.Result{}
		}
		return executor.Result{ExitCode: code, Reason: join(string(t.StopCode), stopReason)}
	}
}

// join joins the non-empty parts with ": ".
func join(parts ...string) string {
	var out []string
	for _, p := range parts {
		if p != "" {
			out = append(out, p)
		}
	}
	if len(out) == 0 {
		return "stopped"
	}
	return strings.Join(out, ": ")
}

// formatDuration prints 10m rather than 10m0s.
func formatDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// logFollower reads a CloudWatch Logs stream forward, from its head.
type logFollower struct {
	cli           *cloudwatchlogs.Client
	hot, cold     *rate.Limiter // the region's GetLogEvents token buckets
	hotNext       bool          // read next from hot: the last read grew, or none yet
	group, stream string
	sink          executor.LogSink
	token         *string // the next forward token; nil before the first read
}

// read gives the sink the events that are new and reports whether the
// forward token moved.
func (f *logFollower) read(ctx context.Context) (changed bool, err error) {
	for {
		out, err := f.cli.GetLogEvents(ctx, &cloudwatchlogs.GetLogEventsInput{
			LogGroupName: aws.String(f.group), LogStreamName: aws.String(f.stream),
			StartFromHead: aws.Bool(true), NextToken: f.token,
		})
		if err != nil {
			return changed, awsError("get log events of "+f.group+" "+f.stream, err)
		}
		for _, ev := range out.Events {
			text := strings.TrimRight(aws.ToString(ev.Message), "\r\n")
			f.sink.Line(executor.Line{Time: time.UnixMilli(aws.ToInt64(ev.Timestamp)), Stream: executor.Stdout, Text: text})
		}
		next := out.NextForwardToken
		if next == nil || f.token != nil && *next == *f.token {
			return changed, nil
		}
		f.token = next
		changed = true
		if len(out.Events) == 0 {
			return changed, nil
		}
	}
}

func isNotFound(err error) bool { return errorCode(err) == "ResourceNotFoundException" }
