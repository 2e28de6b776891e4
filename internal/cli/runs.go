package cli

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/dray-dev/dray/internal/control"
	"github.com/dray-dev/dray/internal/engine"
	"github.com/dray-dev/dray/internal/store"
	"github.com/spf13/cobra"
)

func (e *env) runsCmd() *cobra.Command {
	var asJSON bool
	var f store.RunFilter
	var states []string
	cmd := &cobra.Command{
		Use:   "runs",
		Short: "List runs, newest first",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			for _, s := range states {
				switch st := engine.RunState(s); st {
				case engine.RunQueued, engine.RunRunning, engine.RunSucceeded, engine.RunFailed, engine.RunCanceled:
					f.States = append(f.States, st)
				default:
					return badInputf("--state %s: want queued, running, succeeded, failed or canceled", s)
				}
			}
			return e.listRuns(cmd.Context(), f, asJSON)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the runs as a JSON list")
	cmd.Flags().StringVar(&f.Pipeline, "pipeline", "", "only runs of this pipeline")
	cmd.Flags().StringSliceVar(&states, "state", nil, "only runs in these states (queued, running, succeeded, failed, canceled)")
	cmd.Flags().IntVar(&f.Limit, "limit", 20, "how many runs")
	show := &cobra.Command{
		Use:   "show RUN",
		Short: "Show a run: its tasks, states, attempts and outputs",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return e.showRun(cmd.Context(), args[0], asJSON)
		},
	}
	show.Flags().BoolVar(&asJSON, "json", false, "print the run record as JSON")
	cmd.AddCommand(show)
	return cmd
}

func (e *env) listRuns(ctx context.Context, f store.RunFilter, asJSON bool) error {
	st, err := e.openStateFor(ctx)
	if err != nil {
		return err
	}
	defer st.close()
	runs, err := st.svc.ListRuns(ctx, f)
	if err != nil {
		return stateError(err)
	}
	if asJSON {
		if runs == nil {
			runs = []*control.RunRecord{}
		}
		for _, r := range runs {
			r.Tasks = nil
		}
		return writeJSON(e.stdout, runs)
	}
	if len(runs) == 0 {
		fmt.Fprintln(e.stdout, "no runs yet: `dray run PIPELINE` starts one")
		return nil
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "RUN\tPIPELINE\tSTATE\tTRIGGER\tSTARTED\tDURATION")
	for _, r := range runs {
		state := r.State
		if st.interrupted(ctx, r.ID) {
			state += " (interrupted: `dray retry " + r.ID + "` finishes it)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", r.ID, r.Pipeline, state, r.Trigger, when(r.StartedAt), duration(r.StartedAt, r.EndedAt))
	}
	return tw.Flush()
}

// interrupted reports whether a run is unfinished but the process that drove
// it is gone (a killed `dray run`).
func (s *state) interrupted(ctx context.Context, runID string) bool {
	r, err := s.svc.Run(ctx, runID)
	if err != nil || r.Driver == "" || r.State.Final() {
		return false
	}
	_, alive := s.agentAlive(ctx, r.Driver)
	return !alive
}

func when(t *time.Time) string {
	if t == nil {
		return "-"
	}
	local := t.Local()
	if time.Since(local) < 20*time.Hour {
		return local.Format("15:04:05")
	}
	return local.Format("2006-01-02 15:04")
}

func (e *env) showRun(ctx context.Context, prefix string, asJSON bool) error {
	st, id, err := e.openRun(ctx, prefix)
	if err != nil {
		return err
	}
	defer st.close()
	rec, err := st.svc.Record(ctx, id)
	if err != nil {
		return err
	}
	if asJSON {
		return writeJSON(e.stdout, rec)
	}
	w := e.stdout
	head := fmt.Sprintf("run %s  %s  %s", rec.ID, rec.Pipeline, rec.State)
	if rec.Reason != "" {
		head += ": " + rec.Reason
	}
	fmt.Fprintln(w, head)
	if len(rec.Params) > 0 {
		keys := make([]string, 0, len(rec.Params))
		for k := range rec.Params {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		parts := make([]string, len(keys))
		for i, k := range keys {
			parts[i] = fmt.Sprintf("%s=%v", k, rec.Params[k])
		}
		fmt.Fprintf(w, "params: %s\n", strings.Join(parts, " "))
	}
	fmt.Fprintf(w, "trigger %s, logical date %s, started %s, took %s\n\n", rec.Trigger, rec.LogicalDate, when(rec.StartedAt), duration(rec.StartedAt, rec.EndedAt))
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TASK\tSTATE\tATTEMPTS\tDURATION\tREASON / OUTPUTS")
	for _, t := range rec.Tasks {
		detail := t.Reason
		if detail == "" && len(t.Outputs) > 0 && string(t.Outputs) != "{}" && string(t.Outputs) != "null" {
			detail = clipLine(string(t.Outputs), 80)
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\n", t.Name, t.State, t.Attempts, duration(t.StartedAt, t.EndedAt), clipLine(detail, 100))
		shown := 0
		for _, in := range t.Instances {
			if in.State == string(engine.AttemptSucceeded) || in.State == string(engine.TaskPending) {
				continue
			}
			if shown == 10 {
				fmt.Fprintf(tw, "  …\t\t\t\t(more in --json)\n")
				break
			}
			fmt.Fprintf(tw, "  [%d] %s\t%s\t%d\t\t%s\n", in.Index, clipLine(string(in.Item), 30), in.State, in.Attempts, clipLine(in.Reason, 90))
			shown++
		}
	}
	return tw.Flush()
}

func (e *env) logsCmd() *cobra.Command {
	var attempt int
	var timestamps bool
	cmd := &cobra.Command{
		Use:   "logs RUN [TASK]",
		Short: "Print the logs of a run, or of one of its tasks",
		Args:  cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			task := ""
			if len(args) == 2 {
				task = args[1]
			}
			return e.logs(cmd.Context(), args[0], task, attempt, timestamps)
		},
	}
	cmd.Flags().IntVar(&attempt, "attempt", 0, "only this attempt number (default: every attempt)")
	cmd.Flags().BoolVarP(&timestamps, "timestamps", "t", false, "show each line's time")
	return cmd
}

func (e *env) logs(ctx context.Context, prefix, task string, number int, timestamps bool) error {
	st, id, err := e.openRun(ctx, prefix)
	if err != nil {
		return err
	}
	defer st.close()
	rec, err := st.svc.Record(ctx, id)
	if err != nil {
		return err
	}
	order := map[string]int{}
	for i, t := range rec.Tasks {
		order[t.Name] = i
	}
	if _, ok := order[task]; task != "" && !ok {
		return badInputf("run %s has no task %q", id, task)
	}
	atts, err := st.svc.Attempts(ctx, id, task)
	if err != nil {
		return err
	}
	sort.SliceStable(atts, func(i, j int) bool {
		a, b := atts[i], atts[j]
		if order[a.Task] != order[b.Task] {
			return order[a.Task] < order[b.Task]
		}
		if a.Index != b.Index {
			return a.Index < b.Index
		}
		return a.Number < b.Number
	})
	for _, a := range atts {
		if number > 0 && a.Number != number {
			continue
		}
		prefix := a.Task
		if a.Work != nil && a.Work.Item != nil {
			prefix = fmt.Sprintf("%s[%d]", a.Task, a.Index)
		}
		if a.Number > 1 {
			prefix += fmt.Sprintf("#%d", a.Number)
		}
		var after int64
		for {
			lines, err := st.svc.Logs(ctx, a.ID, after, 5000)
			if err != nil {
				return err
			}
			for _, l := range lines {
				stamp := ""
				if timestamps {
					stamp = l.Time.Local().Format("15:04:05.000 ")
				}
				fmt.Fprintf(e.stdout, "%s%s | %s\n", stamp, prefix, l.Text)
				after = l.Seq
			}
			if len(lines) < 5000 {
				break
			}
		}
		if a.State.Final() && a.State != engine.AttemptSucceeded {
			fmt.Fprintf(e.stdout, "%s | -- attempt %d %s: %s\n", prefix, a.Number, a.State, a.Reason)
		}
	}
	return nil
}

func (e *env) cancelCmd() *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:   "cancel RUN",
		Short: "Cancel a run: its tasks are stopped; tasks with trigger always still run unless --force",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			st, id, err := e.openRun(ctx, args[0])
			if err != nil {
				return err
			}
			defer st.close()
			// An interrupted run ends when its dead process is noticed.
			if st.interrupted(ctx, id) {
				if err := st.svc.Sweep(ctx); err != nil {
					return stateError(err)
				}
				fmt.Fprintf(e.stdout, "run %s was interrupted (its dray process is gone): it is stopped now, and `dray retry %s` would finish it\n", id, id)
				return nil
			}
			if err := st.svc.Cancel(ctx, id, force); err != nil {
				if errors.Is(err, engine.ErrRunEnded) {
					return badInputf("%v", err)
				}
				return err
			}
			fmt.Fprintf(e.stdout, "run %s: cancel requested\n", id)
			return nil
		},
	}
	cmd.Flags().BoolVar(&force, "force", false, "stop tasks with trigger always (cleanup tasks) too")
	return cmd
}
