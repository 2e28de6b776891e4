package cli

import (
	"context"
	"fmt"
	"github.com/dray-dev/dray/internal/api"
	"io"
	"sort"
	"time"

	"github.com/dray-dev/dray/internal/client"
	"github.com/dray-dev/dray/internal/control"
	"github.com/dray-dev/dray/internal/engine"
	"github.com/spf13/cobra"
)

// logOptions are the flags of `dray logs`.
type logOptions struct {
	task       string
	number     int // only this attempt number
	timestamps bool
	follow     bool
}

// followPoll is how often `dray logs -f` looks for new lines in the local
// state (a server pushes them instead).
const followPoll = 200 * time.Millisecond

func (e *env) logsCmd() *cobra.Command {
	var o logOptions
	cmd := &cobra.Command{
		Use:   "logs RUN [TASK]",
		Short: "Print the logs of a run, or of one of its tasks; -f follows them until the run ends",
		Args:  cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 2 {
				o.task = args[1]
			}
			if o.number < 0 {
				return badInputf("--attempt %d: want 1 or more", o.number)
			}
			c, err := e.remote(cmd)
			if err != nil {
				return err
			}
			if c != nil {
				return e.remoteError(c, e.logsRemote(cmd.Context(), c, args[0], o))
			}
			return e.logs(cmd.Context(), args[0], o)
		},
	}
	cmd.Flags().IntVar(&o.number, "attempt", 0, "only this attempt number (default: every attempt)")
	cmd.Flags().BoolVarP(&o.timestamps, "timestamps", "t", false, "show each line's time")
	cmd.Flags().BoolVarP(&o.follow, "follow", "f", false, "print new lines as they come, until the run ends")
	return cmd
}

// logAttempt is an attempt as `dray logs` prints it, from the local state or
// a server.
type logAttempt struct {
	id      int64
	task    string
	index   int
	number  int
	forEach bool
	state   engine.AttemptState
	reason  string
}

// prefix is what the attempt's lines start with: task, [index] of a for_each
// instance, #number of a retry.
func (a *logAttempt) prefix() string {
	p := a.task
	if a.forEach {
		p = fmt.Sprintf("%s[%d]", a.task, a.index)
	}
	if a.number > 1 {
		p += fmt.Sprintf("#%d", a.number)
	}
	return p
}

// printLine prints one log line of an attempt.
func printLine(w io.Writer, prefix string, at time.Time, text string, timestamps bool) {
	stamp := ""
	if timestamps {
		stamp = at.Local().Format("15:04:05.000 ")
	}
	fmt.Fprintf(w, "%s%s | %s\n", stamp, prefix, text)
}

// printEnd prints how an attempt ended, when it did not succeed.
func (a *logAttempt) printEnd(w io.Writer) {
	if a.state.Final() && a.state != engine.AttemptSucceeded {
		fmt.Fprintf(w, "%s | -- attempt %d %s: %s\n", a.prefix(), a.number, a.state, a.reason)
	}
}

// logLine is a log line as printLogs reads it.
type logLine struct {
	seq  int64
	time time.Time
	text string
}

// logPage reads up to limit lines of an attempt with seq > after.
type logPage func(ctx context.Context, attemptID, after int64, limit int) ([]logLine, error)

// printLogs prints the lines of attempts, attempt by attempt in task order
// (then instance, then number), each ended by how it ended.
func (e *env) printLogs(ctx context.Context, rec *control.RunRecord, atts []logAttempt, o logOptions, page logPage) error {
	order := map[string]int{}
	for i, t := range rec.Tasks {
		order[t.Name] = i
	}
	forEach := forEachTasks(rec)
	sort.SliceStable(atts, func(i, j int) bool {
		a, b := atts[i], atts[j]
		if order[a.task] != order[b.task] {
			return order[a.task] < order[b.task]
		}
		if a.index != b.index {
			return a.index < b.index
		}
		return a.number < b.number
	})
	const limit = 5000
	for i := range atts {
		a := &atts[i]
		if o.number > 0 && a.number != o.number {
			continue
		}
		a.forEach = a.forEach || forEach[a.task]
		prefix := a.prefix()
		var after int64
		for {
			lines, err := page(ctx, a.id, after, limit)
			if err != nil {
				return err
			}
			for _, l := range lines {
				printLine(e.stdout, prefix, l.time, l.text, o.timestamps)
				after = l.seq
			}
			if len(lines) < limit {
				break
			}
		}
		a.printEnd(e.stdout)
	}
	return nil
}

// checkTask refuses a task the run does not have.
func checkTask(rec *control.RunRecord, task string) error {
	if task == "" {
		return nil
	}
	for _, t := range rec.Tasks {
		if t.Name == task {
			return nil
		}
	}
	return badInputf("run %s has no task %q", rec.ID, task)
}

// forEachTasks are the for_each tasks of a run (those with instances).
func forEachTasks(rec *control.RunRecord) map[string]bool {
	out := map[string]bool{}
	for _, t := range rec.Tasks {
		if t.Instances != nil {
			out[t.Name] = true
		}
	}
	return out
}

func (e *env) logs(ctx context.Context, prefix string, o logOptions) error {
	st, id, err := e.openRun(ctx, prefix)
	if err != nil {
		return err
	}
	defer st.close()
	rec, err := st.svc.Record(ctx, id)
	if err != nil {
		return err
	}
	if err := checkTask(rec, o.task); err != nil {
		return err
	}
	page := func(ctx context.Context, attemptID, after int64, limit int) ([]logLine, error) {
		lines, err := st.svc.Logs(ctx, attemptID, after, limit)
		if err != nil {
			return nil, err
		}
		out := make([]logLine, len(lines))
		for i, l := range lines {
			out[i] = logLine{seq: l.Seq, time: l.Time, text: l.Text}
		}
		return out, nil
	}
	if o.follow {
		return e.followLocal(ctx, st, rec, o, page)
	}
	atts, err := st.localAttempts(ctx, id, o.task)
	if err != nil {
		return err
	}
	return e.printLogs(ctx, rec, atts, o, page)
}

// localAttempts lists a run's attempts (of one task when task is set) from
// the local state, in the order they were created.
func (s *state) localAttempts(ctx context.Context, runID, task string) ([]logAttempt, error) {
	atts, err := s.svc.Attempts(ctx, runID, task)
	if err != nil {
		return nil, err
	}
	out := make([]logAttempt, len(atts))
	for i, a := range atts {
		out[i] = logAttempt{
			id: a.ID, task: a.Task, index: a.Index, number: a.Number, state: a.State, reason: a.Reason,
			forEach: a.Work != nil && a.Work.Item != nil,
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].id < out[j].id })
	return out, nil
}

// followLocal prints a run's log lines from the local state as they are
// recorded, looking every followPoll, until the run has ended and every line
// was printed. Lines come in the order they are found: attempts that run at
// the same time interleave.
func (e *env) followLocal(ctx context.Context, st *state, rec *control.RunRecord, o logOptions, page logPage) error {
	after := map[int64]int64{}
	ended := map[int64]bool{}
	forEach := forEachTasks(rec)
	for {
		// The run's state is read before the lines: when it had ended, the
		// lines read after it are the last ones.
		r, err := st.svc.Run(ctx, rec.ID)
		if err != nil {
			return err
		}
		atts, err := st.localAttempts(ctx, rec.ID, o.task)
		if err != nil {
			return err
		}
		for i := range atts {
			a := &atts[i]
			if (o.number > 0 && a.number != o.number) || ended[a.id] {
				continue
			}
			a.forEach = a.forEach || forEach[a.task]
			for {
				lines, err := page(ctx, a.id, after[a.id], 5000)
				if err != nil {
					return err
				}
				for _, l := range lines {
					printLine(e.stdout, a.prefix(), l.time, l.text, o.timestamps)
					after[a.id] = l.seq
				}
				if len(lines) < 5000 {
					break
				}
			}
			// An attempt's lines are recorded before its end.
			if a.state.Final() {
				ended[a.id] = true
				a.printEnd(e.stdout)
			}
		}
		if r.State.Final() {
			return nil
		}
		t := time.NewTimer(followPoll)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

func (e *env) logsRemote(ctx context.Context, c *client.Client, prefix string, o logOptions) error {
	rec, err := c.Run(ctx, prefix)
	if err != nil {
		return err
	}
	if err := checkTask(rec, o.task); err != nil {
		return err
	}
	forEach := forEachTasks(rec)
	if o.follow {
		return e.followRemote(ctx, c, rec, o, forEach)
	}
	list, err := c.Attempts(ctx, rec.ID, o.task)
	if err != nil {
		return err
	}
	atts := make([]logAttempt, len(list))
	for i, a := range list {
		atts[i] = remoteAttempt(&a, forEach)
	}
	page := func(ctx context.Context, attemptID, after int64, limit int) ([]logLine, error) {
		p, err := c.AttemptLogs(ctx, attemptID, after, limit)
		if err != nil {
			return nil, err
		}
		out := make([]logLine, len(p.Lines))
		for i, l := range p.Lines {
			out[i] = logLine{seq: l.Seq, time: l.Time, text: l.Text}
		}
		return out, nil
	}
	return e.printLogs(ctx, rec, atts, o, page)
}

func remoteAttempt(a *api.Attempt, forEach map[string]bool) logAttempt {
	return logAttempt{
		id: a.ID, task: a.Task, index: a.Index, number: a.Number, state: engine.AttemptState(a.State), reason: a.Reason,
		forEach: a.HasItem() || forEach[a.Task],
	}
}

// followRemote prints a run's log lines as the server streams them, and how
// each attempt that did not succeed ended, until the run has ended.
func (e *env) followRemote(ctx context.Context, c *client.Client, rec *control.RunRecord, o logOptions, forEach map[string]bool) error {
	ended := map[int64]bool{}
	// An attempt's end is printed after its last lines, which may come just
	// after the event that says it ended: when another event comes.
	var pending *logAttempt
	flush := func() {
		if pending != nil {
			pending.printEnd(e.stdout)
			pending = nil
		}
	}
	return c.FollowLogs(ctx, rec.ID, client.LogOptions{Task: o.task, Attempt: o.number}, func(ev client.LogEvent) error {
		switch ev.Kind {
		case client.EventLine:
			l := ev.Line
			if pending != nil && pending.id != l.AttemptID {
				flush()
			}
			a := logAttempt{task: l.Task, index: l.Index, number: l.Attempt, forEach: forEach[l.Task]}
			printLine(e.stdout, a.prefix(), l.Time, l.Text, o.timestamps)
		case client.EventAttempt:
			flush()
			a := remoteAttempt(ev.Attempt, forEach)
			if (o.number > 0 && a.number != o.number) || ended[a.id] || !a.state.Final() {
				return nil
			}
			ended[a.id] = true
			pending = &a
		case client.EventEnd:
			flush()
		}
		return nil
	})
}
