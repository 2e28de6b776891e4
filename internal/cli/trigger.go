package cli

import (
	"context"
	"fmt"
	"github.com/dray-dev/dray/internal/api"
	"time"

	"github.com/dray-dev/dray/internal/client"
	"github.com/dray-dev/dray/internal/spec"
	"github.com/spf13/cobra"
)

func (e *env) triggerCmd() *cobra.Command {
	var opts driveOptions
	var params []string
	var logicalDate string
	var wait bool
	cmd := &cobra.Command{
		Use:   "trigger PIPELINE [-p name=value]... [--logical-date YYYY-MM-DD] [--wait] [--json]",
		Short: "Start a run of a pipeline on a dray server; without a server, run it here as `dray run` does",
		Long: `Start a run of a pipeline on the dray server that --server or DRAY_SERVER
names (token in DRAY_TOKEN) and print its id; the server's agents run it.
--wait follows the run until it ends and exits with its result (0 succeeded,
1 failed, 130 canceled).

Without a server there is nothing else to run it: dray trigger then runs the
pipeline in this process exactly as ` + "`dray run`" + ` (the local form) does, with
or without --wait.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if logicalDate != "" {
				if _, err := time.Parse(time.DateOnly, logicalDate); err != nil {
					return badInputf("--logical-date %s: want YYYY-MM-DD", logicalDate)
				}
			}
			c, err := e.remote(cmd)
			if err != nil {
				return err
			}
			if c == nil {
				return e.run(cmd.Context(), args[0], params, logicalDate, opts)
			}
			return e.remoteError(c, e.triggerRemote(cmd.Context(), c, args[0], params, logicalDate, wait, opts.json))
		},
	}
	cmd.Flags().StringArrayVarP(&params, "param", "p", nil, "a param value, name=value (repeat for more)")
	cmd.Flags().StringVar(&logicalDate, "logical-date", "", "the day the run is for, YYYY-MM-DD in the schedule's time zone (default: today)")
	cmd.Flags().BoolVar(&wait, "wait", false, "wait for the run to end; the exit code is its result (always so without a server)")
	opts.flags(cmd)
	cmd.Flags().Lookup("capacity").Usage += " (without a server)"
	return cmd
}

// triggerRemote starts a run on a server. It prints the run's id, or its
// record with asJSON; with wait it follows the run to its end (progress on
// stdout, or stderr with asJSON) and returns its result.
func (e *env) triggerRemote(ctx context.Context, c *client.Client, pipeline string, args []string, logicalDate string, wait, asJSON bool) error {
	rec, err := c.Trigger(ctx, api.TriggerRequest{Pipeline: pipeline, Args: args, LogicalDate: logicalDate})
	if err != nil {
		return err
	}
	if !wait {
		if asJSON {
			return writeJSON(e.stdout, rec)
		}
		fmt.Fprintln(e.stdout, rec.ID)
		return nil
	}
	out := e.stdout
	if asJSON {
		out = e.stderr
	}
	final, err := e.waitRemote(ctx, c, rec, out, rec.ID)
	if err != nil {
		return err
	}
	if asJSON {
		if err := writeJSON(e.stdout, final); err != nil {
			return err
		}
	}
	return runResult(final.State)
}

// retryRemote asks a server to run a run's failed and unfinished tasks
// again; its agents run them. With wait it follows the run to its end.
func (e *env) retryRemote(ctx context.Context, c *client.Client, prefix string, wait, asJSON bool) error {
	rec, err := c.Retry(ctx, prefix)
	if err != nil {
		return err
	}
	out := e.stdout
	if asJSON {
		out = e.stderr
	}
	head := fmt.Sprintf("run %s retrying its failed tasks at %s", rec.ID, c.URL())
	if !wait {
		fmt.Fprintln(out, head)
		if asJSON {
			return writeJSON(e.stdout, rec)
		}
		return nil
	}
	final, err := e.waitRemote(ctx, c, rec, out, head)
	if err != nil {
		return err
	}
	if asJSON {
		if err := writeJSON(e.stdout, final); err != nil {
			return err
		}
	}
	return runResult(final.State)
}

// logicalTime is midnight of date (YYYY-MM-DD) in the time zone of the
// pipeline's schedule (UTC without one); zero for no date.
func logicalTime(plan *spec.Pipeline, date string) (time.Time, error) {
	if date == "" {
		return time.Time{}, nil
	}
	loc := time.UTC
	if plan.Schedule != nil && plan.Schedule.Location != nil {
		loc = plan.Schedule.Location
	}
	t, err := time.ParseInLocation(time.DateOnly, date, loc)
	if err != nil {
		return time.Time{}, badInputf("--logical-date %s: want YYYY-MM-DD", date)
	}
	return t, nil
}
