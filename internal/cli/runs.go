package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/dray-dev/dray/internal/client"
	"github.com/dray-dev/dray/internal/control"
	"github.com/dray-dev/dray/internal/engine"
	"github.com/dray-dev/dray/internal/store"
	"github.com/spf13/cobra"
)

// The commands that read and change recorded runs: `runs`, `runs show`,
// `cancel` (and `logs`, in logs.go). Each works on the local state, or on a
// server when --server or DRAY_SERVER names one; both print through the same
// functions, so the output is the same.

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
			if f.Limit < 0 {
				return badInputf("--limit %d: want 0 (all) or more", f.Limit)
			}
			c, err := e.remote(cmd)
			if err != nil {
				return err
			}
			if c != nil {
				return e.remoteError(c, e.listRunsRemote(cmd.Context(), c, f, asJSON))
			}
			return e.listRuns(cmd.Context(), f, asJSON)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the runs as a JSON list")
	cmd.Flags().StringVar(&f.Pipeline, "pipeline", "", "only runs of this pipeline")
	cmd.Flags().StringSliceVar(&states, "state", nil, "only runs in these states (queued, running, succeeded, failed, canceled)")
	cmd.Flags().IntVar(&f.Limit, "limit", 20, "how many runs (0: all)")
	show := &cobra.Command{
		Use:   "show RUN",
		Short: "Show a run: its tasks, states, attempts and outputs",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := e.remote(cmd)
			if err != nil {
				return err
			}
			if c != nil {
				rec, err := c.Run(cmd.Context(), args[0])
				if err != nil {
					return e.remoteError(c, err)
				}
				return e.printRecord(rec, asJSON)
			}
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
	note := func(r *control.RunRecord) string {
		if st.interrupted(ctx, r.ID) {
			return " (interrupted: `dray retry " + r.ID + "` finishes it)"
		}
		return ""
	}
	return e.printRuns(runs, asJSON, note, "no runs yet: `dray run PIPELINE` starts one")
}

// listRunsRemote lists a server's runs, a page after another until --limit
// (0: every run).
func (e *env) listRunsRemote(ctx context.Context, c *client.Client, f store.RunFilter, asJSON bool) error {
	const maxPage = 500 // the API's largest page
	rf := client.RunFilter{Pipeline: f.Pipeline}
	for _, s := range f.States {
		rf.States = append(rf.States, string(s))
	}
	var runs []*control.RunRecord
	for {
		rf.Limit = maxPage
		if f.Limit > 0 {
			rf.Limit = min(maxPage, f.Limit-len(runs))
		}
		page, err := c.Runs(ctx, rf)
		if err != nil {
			return err
		}
		runs = append(runs, page.Runs...)
		if page.NextCursor == "" || len(page.Runs) == 0 || (f.Limit > 0 && len(runs) >= f.Limit) {
			break
		}
		rf.Cursor = page.NextCursor
	}
	if f.Limit > 0 && len(runs) > f.Limit {
		runs = runs[:f.Limit]
	}
	return e.printRuns(runs, asJSON, nil, "no runs yet: `dray trigger PIPELINE` starts one")
}

// printRuns prints a list of runs: a table, with note's text after each
// state (when note is set), or a JSON list of records without their tasks.
func (e *env) printRuns(runs []*control.RunRecord, asJSON bool, note func(*control.RunRecord) string, empty string) error {
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
		fmt.Fprintln(e.stdout, empty)
		return nil
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "RUN\tPIPELINE\tSTATE\tTRIGGER\tSTARTED\tDURATION")
	for _, r := range runs {
		state := r.State
		if note != nil {
			state += note(r)
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
	return e.printRecord(rec, asJSON)
}

// printRecord prints a run record: as JSON, or as a header and a table of
// its tasks.
func (e *env) printRecord(rec *control.RunRecord, asJSON bool) error {
	if asJSON {
		return writeJSON(e.stdout, rec)
	}
	return printRunTable(e.stdout, rec)
}

func printRunTable(w io.Writer, rec *control.RunRecord) error {
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
		if t.Waiting != "" {
			fmt.Fprintf(tw, "  %s\n", t.Waiting)
		}
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

func (e *env) cancelCmd() *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:   "cancel RUN",
		Short: "Cancel a run: its tasks are stopped; tasks with trigger always still run unless --force",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			c, err := e.remote(cmd)
			if err != nil {
				return err
			}
			if c != nil {
				rec, err := c.Cancel(ctx, args[0], force)
				if err != nil {
					return e.remoteError(c, err)
				}
				fmt.Fprintf(e.stdout, "run %s: cancel requested\n", rec.ID)
				return nil
			}
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
