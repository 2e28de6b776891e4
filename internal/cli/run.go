package cli

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"os/signal"
	"runtime/debug"
	"slices"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/dray-dev/dray/internal/agent"
	"github.com/dray-dev/dray/internal/control"
	"github.com/dray-dev/dray/internal/engine"
	"github.com/dray-dev/dray/internal/executor"
	"github.com/dray-dev/dray/internal/executor/docker"
	"github.com/dray-dev/dray/internal/executor/ecs"
	"github.com/dray-dev/dray/internal/executor/local"
	"github.com/dray-dev/dray/internal/secrets"
	"github.com/dray-dev/dray/internal/spec"
	"github.com/dray-dev/dray/internal/store"
	"github.com/spf13/cobra"
	"golang.org/x/term"
)

// driveOptions are the flags of commands that run a run here.
type driveOptions struct {
	json     bool
	capacity int
	// local runs every container task on the local Docker engine, whatever
	// its executor profile (dray run --local).
	local bool
}

func (o *driveOptions) flags(cmd *cobra.Command) {
	cmd.Flags().BoolVar(&o.json, "json", false, "print the run record as JSON on stdout (progress goes to stderr)")
	cmd.Flags().IntVar(&o.capacity, "capacity", 64, "how many attempts run here at once")
}

func (e *env) runCmd() *cobra.Command {
	var opts driveOptions
	var params []string
	cmd := &cobra.Command{
		Use:   "run PIPELINE [-p name=value]...",
		Short: "Run a pipeline once, here, with live progress; the exit code is the run's result",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return e.run(cmd.Context(), args[0], params, "", opts)
		},
	}
	cmd.Flags().StringArrayVarP(&params, "param", "p", nil, "a param value, name=value (repeat for more)")
	cmd.Flags().BoolVar(&opts.local, "local", false, "run every container task on the local Docker engine, whatever its executor profile (ecs, cloudrun, kubernetes), so a laptop run matches production")
	opts.flags(cmd)
	return cmd
}

// run runs a pipeline in this process (`dray run`, and `dray trigger`
// without a server); logicalDate is YYYY-MM-DD or empty for today.
func (e *env) run(ctx context.Context, name string, args []string, logicalDate string, opts driveOptions) error {
	proj, dir, err := e.loadProject()
	if err != nil {
		return err
	}
	plan, err := proj.Pipeline(name)
	if err != nil {
		return err
	}
	execs := e.executors(proj.Config)
	if opts.local {
		if err := localContainers(plan, execs); err != nil {
			return err
		}
	}
	if err := checkExecutors(plan, execs); err != nil {
		return err
	}
	params, err := spec.ParseArgs(plan.Params, args)
	if err != nil {
		return err
	}
	logical, err := logicalTime(plan, logicalDate)
	if err != nil {
		return err
	}
	st, err := e.openState(ctx, dir, proj.Config.Storage)
	if err != nil {
		return err
	}
	defer st.close()
	st.svc.AddPlan(plan)
	// End runs of dead dray processes first: they would hold slots.
	if err := st.svc.Sweep(ctx); err != nil {
		return stateError(err)
	}
	return e.drive(ctx, st, plan, proj.Config, execs, opts, func(ctx context.Context, driver string) (string, error) {
		r, err := st.svc.Trigger(ctx, plan, control.TriggerRequest{Params: params, Trigger: "manual", Driver: driver, LogicalTime: logical})
		if err != nil {
			return "", err
		}
		return r.ID, nil
	})
}

// executors are the executors this process can run attempts with: local
// processes, containers on the Docker engine of DOCKER_HOST (or the default
// socket; an engine that is down fails the attempts that need it, with the
// reason), and ECS tasks with the default AWS credential chain (missing
// credentials fail the attempts that need them). cfg, when not nil, names
// the ECS clusters to look for orphaned tasks in.
func (e *env) executors(cfg *spec.Config) map[string]executor.Executor {
	var clusters []ecs.Cluster
	if cfg != nil {
		for _, name := range cfg.ProfileNames() {
			p := cfg.Executors[name]
			if p.Type != spec.ExecECS {
				continue
			}
			for _, r := range p.Regions() {
				c := p.String("cluster")
				if rs, ok := p.Options["regions"].(map[string]map[string]any); ok {
					if rc, ok := rs[r]["cluster"].(string); ok {
						c = rc
					}
				}
				clusters = append(clusters, ecs.Cluster{Region: r, Cluster: c})
			}
		}
	}
	return map[string]executor.Executor{
		spec.ExecLocal:  local.New(local.Config{Logger: e.log}),
		spec.ExecDocker: docker.New(docker.Config{Logger: e.log}),
		spec.ExecECS:    ecs.New(ecs.Config{Logger: e.log, Clusters: clusters, RunTaskRate: e.ecsRunRate}),
	}
}

// pickExecutors keeps the executors of the types named in only (all when
// only is empty), and refuses a type this dray cannot run.
func (e *env) pickExecutors(execs map[string]executor.Executor, only []string) (map[string]executor.Executor, error) {
	if len(only) == 0 {
		return execs, nil
	}
	for _, typ := range only {
		if _, ok := execs[typ]; !ok {
			return nil, badInputf("--executors: this agent cannot run %q executors (it can run: %s)", typ, strings.Join(slices.Sorted(maps.Keys(execs)), ", "))
		}
	}
	for typ := range execs {
		if !slices.Contains(only, typ) {
			delete(execs, typ)
		}
	}
	return execs, nil
}

// localContainers makes the container executors of the cloud (ecs,
// cloudrun, kubernetes) run on the local Docker engine, for `dray run
// --local`. A task on one of them must name its image, since the image of a
// task definition or job is not known here.
func localContainers(plan *spec.Pipeline, execs map[string]executor.Executor) error {
	var bad []string
	for _, t := range plan.Tasks {
		switch t.Executor.Type {
		case spec.ExecECS, spec.ExecCloudRun, spec.ExecKubernetes:
			if !t.IsContainer() && t.Executor.String("image") == "" {
				bad = append(bad, fmt.Sprintf("  %s: %s:%d: executor %s: give the task an image to run it locally", t.Name, t.Pos.File, t.Pos.Line, t.Executor.Describe()))
			}
			execs[t.Executor.Type] = execs[spec.ExecDocker]
		}
	}
	if len(bad) > 0 {
		return badInputf("--local runs container tasks on the local Docker engine, and these have no image:\n%s", strings.Join(bad, "\n"))
	}
	return nil
}

// checkExecutors refuses a pipeline with tasks this process cannot run.
func checkExecutors(plan *spec.Pipeline, execs map[string]executor.Executor) error {
	var bad []string
	for _, t := range plan.Tasks {
		if _, ok := execs[t.Executor.Type]; !ok {
			bad = append(bad, fmt.Sprintf("  %s: %s:%d: executor %s", t.Name, t.Pos.File, t.Pos.Line, t.Executor.Describe()))
		}
	}
	if len(bad) == 0 {
		return nil
	}
	have := make([]string, 0, len(execs))
	for k := range execs {
		have = append(have, k)
	}
	sort.Strings(have)
	return badInputf("pipeline %s has tasks this dray cannot run here (it runs executors of type %s):\n%s",
		plan.Name, strings.Join(have, ", "), strings.Join(bad, "\n"))
}

func (e *env) retryCmd() *cobra.Command {
	var opts driveOptions
	var wait bool
	cmd := &cobra.Command{
		Use:   "retry RUN",
		Short: "Run a run's failed and unfinished tasks again, keeping what succeeded: here, or on the server (--server)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := e.remote(cmd)
			if err != nil {
				return err
			}
			if c != nil {
				return e.remoteError(c, e.retryRemote(cmd.Context(), c, args[0], wait, opts.json))
			}
			return e.retry(cmd.Context(), args[0], opts)
		},
	}
	opts.flags(cmd)
	cmd.Flags().BoolVar(&wait, "wait", false, "with a server: wait for the run to end; the exit code is its result (always so without a server)")
	return cmd
}

func (e *env) retry(ctx context.Context, prefix string, opts driveOptions) error {
	st, id, err := e.openRun(ctx, prefix)
	if err != nil {
		return err
	}
	defer st.close()
	if pid, alive := st.liveRunner(ctx, id); alive {
		return fmt.Errorf("run %s is running in another dray process (pid %d): wait for it, or `dray cancel %s`", id, pid, id)
	}
	r, err := st.svc.Run(ctx, id)
	if err != nil {
		return err
	}
	if r.State == engine.RunSucceeded {
		return badInputf("run %s succeeded: nothing to retry", id)
	}
	// Settle a dead `dray run` now (kill what it left, end the run as
	// interrupted), so the retry's progress starts from a clean state.
	if err := st.svc.Sweep(ctx); err != nil {
		return stateError(err)
	}
	execs := e.executors(e.projectConfig())
	return e.drive(ctx, st, nil, nil, execs, opts, func(ctx context.Context, driver string) (string, error) {
		return id, st.svc.Retry(ctx, id, driver)
	})
}

// reapLocal kills what is left of the local processes of attempts whose agent
// on this host is gone (their process groups, and anything that carries
// their DRAY_ATTEMPT_ID), before the attempts are marked lost.
func reapLocal(log *slog.Logger) func(ctx context.Context, ag *store.Agent, held []*engine.Attempt) {
	return func(ctx context.Context, ag *store.Agent, held []*engine.Attempt) {
		if ag.Host != control.Hostname() {
			return
		}
		loc := local.New(local.Config{Logger: log})
		for _, a := range held {
			if a.Work == nil || a.Work.ExecutorType != spec.ExecLocal {
				continue
			}
			if a.Handle != nil {
				if _, err := loc.Recover(ctx, &executor.Spec{AttemptID: a.ID}, a.Handle, nil); err != nil && !errors.Is(err, executor.ErrLost) {
					log.Warn("clean up a process of a dead run", "attempt", a.ID, "err", err)
				}
			}
			if n, err := local.Reap(a.RunID, a.ID); err != nil {
				log.Warn("clean up processes of a dead run", "attempt", a.ID, "err", err)
			} else if n > 0 {
				log.Info("killed processes a dead run left behind", "attempt", a.ID, "processes", n)
			}
		}
	}
}

// drive runs a run to its end in this process: an agent claims and runs its
// attempts, a ticker handles retry delays, progress is printed, and Ctrl-C
// cancels it (twice: forces). begin starts the run (trigger or retry) once
// events are being listened to.
func (e *env) drive(ctx context.Context, st *state, plan *spec.Pipeline, cfg *spec.Config,
	execs map[string]executor.Executor, opts driveOptions, begin func(ctx context.Context, driver string) (string, error)) error {
	out, outFile := e.stdout, e.stdout
	if opts.json {
		out, outFile = e.stderr, e.stderr
	}
	// Running tasks allocates little that lives long: collect garbage less
	// often (a fifth of the CPU it took at the default), within a soft cap.
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(400)
	}
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(192 << 20)
	}
	events, stopEvents := st.subscribeAll(ctx)
	defer stopEvents()
	info := control.AgentInfo{
		ID: fmt.Sprintf("local-%s-%d", control.Hostname(), os.Getpid()), Host: control.Hostname(), PID: os.Getpid(),
		Version: Version, Capacity: opts.capacity,
	}
	for typ := range execs {
		info.Executors = append(info.Executors, typ)
	}
	// Registered before the run exists, so a sweep never finds it without
	// its driver.
	if _, err := st.svc.Register(ctx, info); err != nil {
		return stateError(err)
	}
	runID, err := begin(ctx, info.ID)
	if err != nil {
		return stateError(err)
	}
	r, err := st.svc.Run(ctx, runID)
	if err != nil {
		return err
	}
	if plan == nil {
		if plan, err = st.plan(ctx, r); err != nil {
			return err
		}
	}
	if cfg == nil {
		cfg = plan.Config
	}
	if err := checkExecutors(plan, execs); err != nil {
		return err
	}
	resolver, err := secretResolver(cfg, st.dir)
	if err != nil {
		return err
	}
	tty := isTerminal(outFile)
	names := make([]string, len(plan.Tasks))
	for i, t := range plan.Tasks {
		names[i] = t.Name
	}
	// A person at a terminal sees every line at once; a pipe gets them in
	// writes every 50ms.
	buf := bufio.NewWriter(out)
	defer buf.Flush()
	flushEvery := time.NewTicker(50 * time.Millisecond)
	defer flushEvery.Stop()
	if tty {
		flushEvery.Stop()
	}
	var progOut io.Writer = buf
	if tty {
		progOut = out
	}
	prog := newProgress(progOut, tty, tty && e.getenv("NO_COLOR") == "", names)

	agentCtx, stopAgent := context.WithCancel(context.WithoutCancel(ctx))
	defer stopAgent()
	info.Labels, info.RunID, info.Executors = planLabels(plan), runID, nil
	ag := agent.New(agent.Config{
		Info: info, Control: st.svc, Executors: execs, Secrets: resolver, Dir: st.dir, Logger: e.log,
		Poll: time.Second,
	})
	agentDone := make(chan error, 1)
	go func() { agentDone <- ag.Run(agentCtx) }()
	tickDone := make(chan struct{})
	go func() {
		defer close(tickDone)
		st.ticker(agentCtx, e)
	}()

	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)
	canceled := 0
	poll := time.NewTicker(time.Second)
	defer poll.Stop()
	var final engine.RunState
	if r.State.Final() {
		final = r.State
	}
	if r.State == engine.RunQueued {
		fmt.Fprintf(out, "run %s queued: %s runs at most %d at once (max_active_runs); it starts when one ends\n", runID, plan.Name, plan.MaxActiveRuns)
	}
	for final == "" {
		select {
		case ev := <-events:
			if ev.RunID != runID {
				continue
			}
			prog.event(ev)
			if ev.Task == "" && engine.RunState(ev.State).Final() {
				// An event from before begin (a sweep that ended the run just
				// before a retry restarted it) is not the end: ask the store.
				if r, err := st.svc.Run(ctx, runID); err == nil && r.State.Final() {
					final = r.State
				}
			}
		case <-sigs:
			buf.Flush()
			canceled++
			force := canceled > 1
			if force {
				fmt.Fprintln(e.stderr, "dray: stopping every task")
			} else {
				fmt.Fprintln(e.stderr, "dray: canceling the run (Ctrl-C again to stop cleanup tasks too)")
			}
			if err := st.svc.Cancel(context.WithoutCancel(ctx), runID, force); err != nil && !errors.Is(err, engine.ErrRunEnded) {
				fmt.Fprintf(e.stderr, "dray: cancel: %v\n", err)
			}
		case <-flushEvery.C:
			buf.Flush()
		case <-poll.C:
			// Events cover every change made here; this catches one made
			// by another process (dray cancel).
			if r, err := st.svc.Run(ctx, runID); err == nil && r.State.Final() {
				final = r.State
			}
		case err := <-agentDone:
			buf.Flush()
			return stateError(fmt.Errorf("run %s stopped before it ended: %w", runID, err))
		}
	}
	stopAgent()
	if err := <-agentDone; err != nil {
		e.log.Warn("agent", "err", err)
	}
	<-tickDone
	// Flush events that came with the final one.
	for drained := false; !drained; {
		select {
		case ev := <-events:
			if ev.RunID == runID && ev.Task != "" {
				prog.event(ev)
			}
		default:
			drained = true
		}
	}
	sum, err := st.svc.Summary(context.WithoutCancel(ctx), runID)
	if err != nil {
		return err
	}
	prog.summary(sum)
	buf.Flush()
	if opts.json {
		rec, err := st.svc.Record(context.WithoutCancel(ctx), runID)
		if err != nil {
			return err
		}
		if err := writeJSON(e.stdout, rec); err != nil {
			return err
		}
	}
	switch final {
	case engine.RunSucceeded:
		return nil
	case engine.RunCanceled:
		return &exitError{code: ExitCanceled}
	}
	return &exitError{code: ExitFailed}
}

// planLabels are every label a task of the plan asks for, so the local agent
// takes all of them.
func planLabels(plan *spec.Pipeline) []string {
	var labels []string
	for _, t := range plan.Tasks {
		labels = append(labels, t.Labels...)
		labels = append(labels, t.Executor.Labels...)
	}
	slices.Sort(labels)
	return slices.Compact(labels)
}

// secretResolver builds the secret providers dray.yaml configures. The AWS
// providers load the default AWS configuration (environment, shared files,
// instance or task role) of the process that resolves secrets, the agent, at
// their first lookup.
func secretResolver(cfg *spec.Config, dir string) (*secrets.Resolver, error) {
	var providers []secrets.Provider
	for _, p := range cfg.Secrets {
		switch p.Type {
		case spec.SecretEnv:
			providers = append(providers, secrets.NewEnv(p.Prefix))
		case spec.SecretFile:
			path := p.Path
			if !strings.HasPrefix(path, "/") {
				path = dir + "/" + path
			}
			providers = append(providers, secrets.NewFile(path))
		case spec.SecretAWSSSM:
			providers = append(providers, secrets.NewSSMDefault(p.Region, secrets.AWSOptions{Prefix: p.Prefix}))
		case spec.SecretAWSSecretsManager:
			providers = append(providers, secrets.NewSecretsManagerDefault(p.Region, secrets.AWSOptions{Prefix: p.Prefix}))
		default:
			return nil, badInputf("dray.yaml: secret provider %q is not supported here", p.Type)
		}
	}
	return secrets.NewResolver(providers...), nil
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}

// subscribeAll listens to every event of the service until stop is called.
func (s *state) subscribeAll(ctx context.Context) (<-chan engine.Event, func()) {
	ctx, cancel := context.WithCancel(ctx)
	return s.svc.Subscribe(ctx, ""), cancel
}

// ticker does the service's time-driven work (retry delays, dead agents)
// until ctx ends, waking when the next retry is due.
func (s *state) ticker(ctx context.Context, e *env) {
	for ctx.Err() == nil {
		next, err := s.svc.Tick(ctx)
		if err != nil && ctx.Err() == nil {
			e.log.Warn("tick", "err", err)
		}
		wait := time.Second
		if !next.IsZero() {
			wait = min(wait, max(time.Until(next), time.Millisecond))
		}
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-s.svc.Timers():
		case <-ctx.Done():
		}
		t.Stop()
	}
}

// plan returns the pipeline a run started with.
func (s *state) plan(ctx context.Context, r *engine.Run) (*spec.Pipeline, error) {
	var plan *spec.Pipeline
	err := s.store.View(ctx, func(tx store.Tx) error {
		sources, err := tx.Spec(ctx, r.SpecHash)
		if err != nil {
			return err
		}
		plan, err = spec.LoadSnapshot(sources, r.Pipeline)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("pipeline of run %s: %w", r.ID, err)
	}
	s.svc.AddPlan(plan)
	return plan, nil
}

// liveRunner reports whether a live dray process drives the run, and its pid.
func (s *state) liveRunner(ctx context.Context, runID string) (int, bool) {
	r, err := s.svc.Run(ctx, runID)
	if err != nil || r.Driver == "" || r.State.Final() {
		return 0, false
	}
	return s.agentAlive(ctx, r.Driver)
}

// agentAlive reports whether an agent is alive: its process exists (on this
// host) or its heartbeat is fresh (elsewhere).
func (s *state) agentAlive(ctx context.Context, id string) (int, bool) {
	var a *store.Agent
	if err := s.store.View(ctx, func(tx store.Tx) error {
		var err error
		a, err = tx.Agent(ctx, id)
		return err
	}); err != nil {
		return 0, false
	}
	if a.State == control.AgentStopped {
		return a.PID, false
	}
	if a.Host == control.Hostname() {
		return a.PID, syscall.Kill(a.PID, 0) == nil
	}
	return a.PID, time.Since(a.HeartbeatAt) < 30*time.Second
}
