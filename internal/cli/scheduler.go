package cli

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"

	"github.com/dray-dev/dray/internal/project"
	"github.com/dray-dev/dray/internal/scheduler"
)

// openScheduler loads the project and opens its state with a scheduler.
func (e *env) openScheduler(ctx context.Context) (*state, *project.Watcher, *scheduler.Scheduler, error) {
	dir, err := e.projectDir()
	if err != nil {
		return nil, nil, nil, err
	}
	watcher, err := project.Open(ctx, dir, e.log)
	if err != nil {
		return nil, nil, nil, err
	}
	storage := ""
	if c := watcher.Current().Config; c != nil {
		storage = c.Storage
	}
	st, err := e.openState(ctx, dir, storage)
	if err != nil {
		return nil, nil, nil, err
	}
	sched := scheduler.New(scheduler.Config{Store: st.store, Control: st.svc, Pipelines: watcher.Pipelines, Logger: e.log})
	return st, watcher, sched, nil
}

func (e *env) schedulerCmd() *cobra.Command {
	var once bool
	var reload time.Duration
	cmd := &cobra.Command{
		Use:   "scheduler [--once]",
		Short: "Fire schedules, retry timers and sweeps of dead agents (one active; others stand by)",
		Long: `The scheduler owns time: it fires cron and interval schedules, queues
attempts whose retry delay has passed, and declares agents gone whose
heartbeats stopped. One scheduler is active at a time: it holds a lease in
the database, and a second one stands by and takes over when the lease
expires.

--once does one tick and exits: run it from an external cron (EventBridge,
Cloud Scheduler, a crontab) every minute and nothing idles. Ticks are
idempotent: a tick that runs twice, or two at once, fires each schedule once.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			e.log = e.serviceLogger()
			st, watcher, sched, err := e.openScheduler(ctx)
			if err != nil {
				return err
			}
			defer st.close()
			if once {
				next, err := sched.Tick(ctx)
				if err != nil {
					return stateError(err)
				}
				if !next.IsZero() {
					e.log.Info("tick done", "next", next.Local().Format(time.DateTime))
				}
				return nil
			}
			ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
			defer stop()
			g, gctx := errgroup.WithContext(ctx)
			g.Go(func() error { watcher.Run(gctx, reload); return nil })
			g.Go(func() error { return st.svc.Listen(gctx) })
			g.Go(func() error { return sched.Run(gctx) })
			e.log.Info("dray scheduler started", "dir", st.dir)
			if err := g.Wait(); err != nil && ctx.Err() == nil {
				return err
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&once, "once", false, "do one tick and exit")
	cmd.Flags().DurationVar(&reload, "reload", time.Second, "how often to look for changed project files")
	cmd.Flags().DurationVar(&e.agentLease, "agent-lease", 30*time.Second, "how long an agent may go without a heartbeat before its attempts are lost and retried elsewhere")
	e.dbFlag(cmd)
	cmd.Flags().StringVar(&e.storage, "storage", "", "blob storage for logs (default: dray.yaml's storage)")
	return cmd
}

func (e *env) backfillCmd() *cobra.Command {
	var from, to string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "backfill PIPELINE --from WHEN --to WHEN",
		Short: "Create a run for every fire time of a pipeline's schedule in [from, to]",
		Long: `Create a run (trigger "backfill") for every fire time of the pipeline's
schedule from --from to --to, both included. WHEN is an RFC 3339 time or a
date in the schedule's time zone: --from 2026-03-01 starts at its midnight,
--to 2026-03-07 takes the whole day. Fire times that
have a run already are skipped. The runs are queued for the server's agents
(max_active_runs applies).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			st, watcher, sched, err := e.openScheduler(ctx)
			if err != nil {
				return err
			}
			defer st.close()
			snap := watcher.Current()
			p := snap.Pipeline(args[0])
			if p == nil {
				if len(snap.Errors) > 0 {
					return snap.Errors
				}
				return badInputf("no pipeline %q", args[0])
			}
			if p.Schedule == nil {
				return badInputf("pipeline %s has no schedule to backfill", p.Name)
			}
			loc := p.Schedule.Location
			start, err := scheduler.ParseWhen(from, loc, false)
			if err != nil {
				return badInputf("--from %v", err)
			}
			end, err := scheduler.ParseWhen(to, loc, true)
			if err != nil {
				return badInputf("--to %v", err)
			}
			runs, skipped, err := sched.Backfill(ctx, p, start, end)
			if err != nil {
				return badInput(err)
			}
			if asJSON {
				ids := make([]string, len(runs))
				for i, r := range runs {
					ids[i] = r.ID
				}
				return writeJSON(e.stdout, map[string]any{"runs": ids, "skipped": skipped})
			}
			for _, r := range runs {
				fmt.Fprintf(e.stdout, "run %s for %s\n", r.ID, r.LogicalTime.In(loc).Format(time.RFC3339))
			}
			for _, t := range skipped {
				fmt.Fprintf(e.stdout, "skipped %s: it has a run already\n", t.In(loc).Format(time.RFC3339))
			}
			fmt.Fprintf(e.stdout, "%d runs created, %d skipped\n", len(runs), len(skipped))
			return nil
		},
	}
	cmd.Flags().StringVar(&from, "from", "", "the first time (date or RFC 3339)")
	cmd.Flags().StringVar(&to, "to", "", "the last time, included (date or RFC 3339)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.MarkFlagRequired("from")
	cmd.MarkFlagRequired("to")
	e.dbFlag(cmd)
	return cmd
}
