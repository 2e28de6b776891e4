package cli

import (
	"errors"
	"fmt"
	"maps"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/dray-dev/dray/internal/agent"
	"github.com/dray-dev/dray/internal/api"
	"github.com/dray-dev/dray/internal/client"
	"github.com/dray-dev/dray/internal/control"
	"github.com/dray-dev/dray/internal/engine"
	"github.com/dray-dev/dray/internal/secrets"
	"github.com/dray-dev/dray/internal/spec"
	"github.com/dray-dev/dray/internal/store"
)

type agentOptions struct {
	name      string
	labels    []string
	executors []string
	capacity  int
	grace     time.Duration
	spoolDir  string
	poll      time.Duration
}

func (e *env) agentCmd() *cobra.Command {
	var o agentOptions
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Claim and run task attempts for a dray server (the hybrid model: run it next to your data and credentials)",
		Long: `Claim task attempts from the dray server at --server (or DRAY_SERVER) and run
them here, with this machine's executors and credentials. The token in
DRAY_TOKEN must have role agent (` + "`dray token create --name NAME --role agent`" + `): it can
claim and report work and nothing else. The server never needs this
machine's cloud keys.

An attempt goes to an agent that offers its executor and has every label it
asks for (its task's labels and its executor profile's). The agent's name is
its identity: an agent restarted with the same --name re-attaches to the
containers it started. On SIGTERM or Ctrl-C it stops claiming, lets running
attempts finish for --grace, and hands back the rest.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error { return e.runAgent(cmd, o) },
	}
	f := cmd.Flags()
	f.StringVar(&o.name, "name", "", "the agent's identity (default: this host's name)")
	f.StringSliceVar(&o.labels, "labels", nil, "labels this agent offers, such as gpu,eu (an attempt's labels must all be among them)")
	f.StringSliceVar(&o.executors, "executors", nil, "executor types to offer (default: every one this agent can run: local, docker, ecs)")
	f.IntVar(&o.capacity, "capacity", 4, "how many attempts to run at once")
	f.DurationVar(&o.grace, "grace", 30*time.Second, "on shutdown, how long running attempts may finish before they are stopped and handed back")
	f.StringVar(&o.spoolDir, "spool-dir", "", "where log lines wait on disk while the server cannot take them (default: the temporary directory)")
	f.DurationVar(&o.poll, "poll", 5*time.Second, "how long a claim or heartbeat waits at the server (a long poll)")
	f.Float64Var(&e.ecsRunRate, "ecs-run-rate", 20, "ECS RunTask calls a second per region, in bursts of as many (agents of one AWS account share AWS's limit: give each a part)")
	return cmd
}

func (e *env) runAgent(cmd *cobra.Command, o agentOptions) error {
	ctx := cmd.Context()
	e.log = e.serviceLogger()
	c, err := e.remote(cmd)
	if err != nil {
		return err
	}
	if c == nil {
		return badInputf("dray agent needs the server to work for: --server URL or DRAY_SERVER")
	}
	if e.getenv("DRAY_TOKEN") == "" {
		return badInputf("dray agent needs a token of role agent in DRAY_TOKEN (make one on the server with `dray token create --name NAME --role agent`)")
	}
	if o.capacity < 1 {
		return badInputf("--capacity %d: want 1 or more", o.capacity)
	}
	if o.poll < 100*time.Millisecond || o.poll > time.Minute {
		return badInputf("--poll %s: want 100ms to 1m", o.poll)
	}
	if e.ecsRunRate <= 0 || e.ecsRunRate > 1000 {
		return badInputf("--ecs-run-rate %g: want more than 0 and at most 1000 calls a second", e.ecsRunRate)
	}
	for _, l := range o.labels {
		if strings.TrimSpace(l) == "" || strings.ContainsAny(l, " \t,") {
			return badInputf("--labels: label %q: want a word without spaces or commas", l)
		}
	}
	execs, err := e.pickExecutors(e.executors(e.projectConfig()), o.executors)
	if err != nil {
		return err
	}
	name := o.name
	if name == "" {
		name = control.Hostname()
	}
	dir, err := filepath.Abs(e.dir)
	if err != nil {
		return err
	}
	resolver, err := e.agentSecrets(dir)
	if err != nil {
		return err
	}
	unlock, err := lockAgentName(name)
	if err != nil {
		return err
	}
	defer unlock()
	sigCtx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	ag := agent.New(agent.Config{
		Info:      control.AgentInfo{ID: name, Host: control.Hostname(), Labels: o.labels, Version: Version, Capacity: o.capacity},
		Control:   client.NewAgentControl(c, Version),
		Executors: execs, Secrets: resolver, Dir: dir, Logger: e.log,
		Poll: o.poll, DrainGrace: o.grace, SpoolDir: o.spoolDir,
		// A result waits for a server that is away for as long as the
		// agent lives: the server records the attempt lost after the
		// agent's lease and retries it, and ignores a late report.
		ReportTimeout: 24 * time.Hour,
	})
	e.log.Info("dray agent", "server", c.URL(), "name", name, "labels", o.labels, "executors", slices.Sorted(maps.Keys(execs)), "capacity", o.capacity)
	if err := ag.Run(sigCtx); err != nil {
		return e.remoteError(c, err)
	}
	e.log.Info("dray agent stopped")
	return nil
}

// agentSecrets resolves secrets on the agent: from the project's secret
// providers when --dir is a dray project, else from DRAY_SECRET_* variables.
func (e *env) agentSecrets(dir string) (*secrets.Resolver, error) {
	if _, err := os.Stat(filepath.Join(dir, spec.ConfigFile)); err != nil {
		return secrets.NewResolver(secrets.NewEnv(secrets.EnvPrefix)), nil
	}
	proj, err := spec.Load(os.DirFS(dir))
	if err != nil {
		return nil, err
	}
	var errs spec.ErrorList
	for _, pe := range proj.Errors {
		if pe.Pos.File == spec.ConfigFile {
			errs = append(errs, pe)
		}
	}
	if len(errs) > 0 {
		return nil, &exitError{code: ExitBadInput, err: errs}
	}
	return secretResolver(proj.Config, dir)
}

func (e *env) agentsCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "agents",
		Short: "List agents: labels, executors, running attempts, last heartbeat",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			agents, err := e.listAgents(cmd)
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(e.stdout, api.AgentList{Agents: agents})
			}
			tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "AGENT\tSTATE\tLABELS\tEXECUTORS\tRUNNING\tVERSION\tHEARTBEAT")
			for _, a := range agents {
				beat := "-"
				if a.HeartbeatAt != nil {
					beat = time.Since(*a.HeartbeatAt).Round(time.Second).String() + " ago"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d/%d\t%s\t%s\n", a.ID, a.State, orDash(strings.Join(a.Labels, ",")),
					orDash(strings.Join(a.Executors, ",")), a.Running, a.Capacity, orDash(a.Version), beat)
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the agents as JSON")
	for _, act := range []struct{ name, state, short string }{
		{"cordon", control.AgentCordoned, "Stop an agent claiming work (what it runs goes on)"},
		{"uncordon", control.AgentActive, "Let a cordoned or draining agent claim work again"},
		{"drain", control.AgentDraining, "Stop an agent claiming work; it finishes what it runs, then stops"},
	} {
		cmd.AddCommand(&cobra.Command{
			Use:   act.name + " AGENT",
			Short: act.short,
			Args:  wrapArgs(cobra.ExactArgs(1)),
			RunE: func(cmd *cobra.Command, args []string) error {
				return e.setAgentState(cmd, args[0], act.name, act.state)
			},
		})
	}
	return cmd
}

func (e *env) listAgents(cmd *cobra.Command) ([]api.Agent, error) {
	ctx := cmd.Context()
	c, err := e.remote(cmd)
	if err != nil {
		return nil, err
	}
	if c != nil {
		agents, err := c.Agents(ctx)
		return agents, e.remoteError(c, err)
	}
	st, err := e.openStateFor(ctx)
	if err != nil {
		return nil, err
	}
	defer st.close()
	var out []api.Agent
	err = st.store.View(ctx, func(tx store.Tx) error {
		agents, err := tx.Agents(ctx)
		if err != nil {
			return err
		}
		held, err := tx.Attempts(ctx, store.AttemptFilter{States: []engine.AttemptState{engine.AttemptClaimed, engine.AttemptRunning}})
		if err != nil {
			return err
		}
		for _, a := range agents {
			running := 0
			for _, h := range held {
				if h.Agent == a.ID {
					running++
				}
			}
			out = append(out, api.Agent{ID: a.ID, Host: a.Host, Labels: a.Labels, Executors: a.Executors, Version: a.Version,
				Capacity: a.Capacity, State: a.State, Running: running, StartedAt: &a.StartedAt, HeartbeatAt: &a.HeartbeatAt})
		}
		return nil
	})
	return out, stateError(err)
}

func (e *env) setAgentState(cmd *cobra.Command, id, action, state string) error {
	ctx := cmd.Context()
	c, err := e.remote(cmd)
	if err != nil {
		return err
	}
	if c != nil {
		if _, err := c.SetAgentState(ctx, id, action); err != nil {
			return e.remoteError(c, err)
		}
	} else {
		st, err := e.openStateFor(ctx)
		if err != nil {
			return err
		}
		defer st.close()
		if _, err := st.svc.SetAgentState(ctx, id, state); err != nil {
			if errors.Is(err, store.ErrNotFound) {
				return badInputf("no agent %q (see dray agents)", id)
			}
			return stateError(err)
		}
	}
	fmt.Fprintf(e.stdout, "agent %s: %s\n", id, state)
	return nil
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// lockAgentName makes sure one process on this host is the agent of a name:
// two would hold the same identity at the server and take each other's work
// for their own.
func lockAgentName(name string) (func(), error) {
	safe := strings.Map(func(r rune) rune {
		if r == '/' || r == os.PathSeparator || r == 0 {
			return '_'
		}
		return r
	}, name)
	path := filepath.Join(os.TempDir(), "dray-agent-"+safe+".lock")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock the agent name %s: %w", name, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		pid, _ := os.ReadFile(path)
		f.Close()
		return nil, badInputf("another dray agent named %s runs on this host (pid %s): give this one another --name", name, strings.TrimSpace(string(pid)))
	}
	f.Truncate(0)
	fmt.Fprintf(f, "%d\n", os.Getpid())
	return func() { f.Close() }, nil
}
