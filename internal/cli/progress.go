package cli

import (
	"fmt"
	"io"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/dray-dev/dray/internal/control"
	"github.com/dray-dev/dray/internal/engine"
)

// progress prints a run's events as lines: one per task state change, fan-out
// progress such as "score 37/120", and a summary at the end. On a terminal
// states are colored and fan-out progress is shown every second; elsewhere
// the lines are plain and fan-out progress comes every 10% or 10 seconds.
type progress struct {
	w     io.Writer
	tty   bool
	color bool
	width int // of the task column
	tasks map[string]*fanOut
	now   func() time.Time
}

type fanOut struct {
	done, total int
	printedAt   time.Time
	printedPct  int
}

func newProgress(w io.Writer, tty, color bool, taskNames []string) *progress {
	width := 4
	for _, n := range taskNames {
		width = max(width, len(n)+6)
	}
	return &progress{w: w, tty: tty, color: color, width: width, tasks: map[string]*fanOut{}, now: time.Now}
}

var stateColors = map[string]string{
	"succeeded": "32", "failed": "31", "upstream_failed": "31", "lost": "31",
	"skipped": "90", "canceled": "33", "retrying": "33", "running": "36",
}

func (p *progress) paint(state string) string {
	if c, ok := stateColors[state]; ok && p.color {
		return "\x1b[" + c + "m" + state + "\x1b[0m"
	}
	return state
}

func (p *progress) line(name, state, detail string) {
	stamp := p.now().Format("15:04:05")
	pad := strings.Repeat(" ", max(1, p.width-len(name)))
	text := fmt.Sprintf("%s  %s%s%s", stamp, name, pad, p.paint(state))
	if detail != "" {
		text += "  " + strings.Join(strings.Fields(strings.ReplaceAll(detail, "\n", "; ")), " ")
	}
	fmt.Fprintln(p.w, text)
}

func (p *progress) event(ev engine.Event) {
	switch {
	case ev.Task == "":
		p.runEvent(ev)
	case ev.Index < 0:
		p.taskEvent(ev)
	default:
		p.instanceEvent(ev)
	}
}

func (p *progress) runEvent(ev engine.Event) {
	switch engine.RunState(ev.State) {
	case engine.RunRunning:
		what := "started"
		if ev.Reason == "retry" {
			what = "retrying its failed tasks"
		}
		fmt.Fprintf(p.w, "run %s %s\n", ev.RunID, what)
	}
}

func (p *progress) taskEvent(ev engine.Event) {
	detail := ev.Reason
	if ev.Total > 0 {
		f := p.fan(ev.Task)
		f.total, f.done = ev.Total, ev.Done
		if engine.TaskState(ev.State) == engine.TaskRunning {
			detail = fmt.Sprintf("%d/%d", ev.Done, ev.Total)
			f.printedAt = p.now()
		} else if detail == "" {
			detail = fmt.Sprintf("%d/%d", ev.Done, ev.Total)
		}
	}
	p.line(ev.Task, ev.State, detail)
}

func (p *progress) fan(task string) *fanOut {
	f, ok := p.tasks[task]
	if !ok {
		f = &fanOut{}
		p.tasks[task] = f
	}
	return f
}

func (p *progress) instanceEvent(ev engine.Event) {
	name := fmt.Sprintf("%s[%d]", ev.Task, ev.Index)
	switch ev.State {
	case string(engine.AttemptSucceeded):
	case string(engine.TaskRetrying), string(engine.AttemptFailed), string(engine.AttemptLost):
		p.line(name, ev.State, ev.Reason)
	}
	if ev.State == string(engine.TaskRetrying) {
		return
	}
	f := p.fan(ev.Task)
	if ev.State == string(engine.AttemptSucceeded) || ev.State == string(engine.AttemptFailed) ||
		ev.State == string(engine.AttemptCanceled) || ev.State == string(engine.AttemptLost) {
		f.done++
	}
	if f.total == 0 || f.done >= f.total {
		return
	}
	now := p.now()
	pct := 100 * f.done / f.total
	due := now.Sub(f.printedAt) >= time.Second
	if !p.tty {
		due = now.Sub(f.printedAt) >= 10*time.Second || pct/10 > f.printedPct/10
	}
	if due {
		f.printedAt, f.printedPct = now, pct
		p.line(ev.Task, fmt.Sprintf("%d/%d", f.done, f.total), "")
	}
}

// summary prints a table of the run's tasks and how the run ended.
func (p *progress) summary(rec *control.RunRecord) {
	fmt.Fprintln(p.w)
	rows := [][]string{{"TASK", "STATE", "ATTEMPTS", "DURATION", "REASON"}}
	for _, t := range rec.Tasks {
		attempts := fmt.Sprint(t.Attempts)
		if t.Items > 0 {
			attempts += fmt.Sprintf(" (%d items)", t.Items)
		}
		rows = append(rows, []string{t.Name, t.State, attempts, duration(t.StartedAt, t.EndedAt), clipLine(t.Reason, 100)})
	}
	p.table(rows, 1)
	for _, t := range rec.Tasks {
		for _, w := range t.Warnings {
			fmt.Fprintf(p.w, "warning: %s: %s\n", t.Name, w)
		}
	}
	how := rec.State
	if rec.Reason != "" && rec.State != string(engine.RunCanceled) {
		how += ": " + rec.Reason
	}
	fmt.Fprintf(p.w, "\nrun %s %s in %s\n", rec.ID, p.paint(how), duration(rec.StartedAt, rec.EndedAt))
}

// table prints rows in aligned columns, coloring the cells of column state
// (but not the header) after padding, so escape codes do not skew the widths.
func (p *progress) table(rows [][]string, state int) {
	widths := make([]int, len(rows[0]))
	for _, r := range rows {
		for i, c := range r {
			widths[i] = max(widths[i], utf8.RuneCountInString(c))
		}
	}
	for n, r := range rows {
		var b strings.Builder
		for i, c := range r {
			if i == len(r)-1 {
				b.WriteString(c)
				break
			}
			pad := c + strings.Repeat(" ", widths[i]-utf8.RuneCountInString(c)+2)
			if i == state && n > 0 {
				pad = strings.Replace(pad, c, p.paint(c), 1)
			}
			b.WriteString(pad)
		}
		fmt.Fprintln(p.w, strings.TrimRight(b.String(), " "))
	}
}

func duration(start, end *time.Time) string {
	if start == nil {
		return "-"
	}
	stop := time.Now()
	if end != nil {
		stop = *end
	}
	d := stop.Sub(*start)
	switch {
	case d < time.Second:
		return fmt.Sprintf("%dms", d.Milliseconds())
	case d < time.Minute:
		return fmt.Sprintf("%.1fs", d.Seconds())
	}
	return d.Round(time.Second).String()
}

func clipLine(s string, n int) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i] + " …"
	}
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}
