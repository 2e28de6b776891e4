package cli

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"

	"github.com/dray-dev/dray/internal/agent"
	"github.com/dray-dev/dray/internal/auth"
	"github.com/dray-dev/dray/internal/control"
	"github.com/dray-dev/dray/internal/server"
	"github.com/dray-dev/dray/internal/spec"
)

type serverOptions struct {
	executors   []string
	listen      string
	tlsCert     string
	tlsKey      string
	noScheduler bool
	noAgent     bool
	capacity    int
	labels      []string
	grace       time.Duration
	addrFile    string
	reload      time.Duration
}

func (e *env) serverCmd() *cobra.Command {
	var o serverOptions
	cmd := &cobra.Command{
		Use:   "server",
		Short: "Serve the HTTP API, and run the scheduler and an agent in this process unless told not to",
		Long: `Serve the HTTP API for the project in --dir. With no flags, state is kept in
SQLite under .dray/, logs in the project's storage, and the scheduler and an
agent with the local executor run in this process: one binary, nothing else
to install. On SIGTERM or Ctrl-C the server stops claiming work, lets running
tasks finish for --grace, and records the rest as lost so they run again.

There is no default account. Create the first admin on this host with
` + "`dray user create NAME --role admin`" + `, or set DRAY_ADMIN_PASSWORD (and
optionally DRAY_ADMIN_USER, default admin) on first start.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error { return e.serve(cmd.Context(), o) },
	}
	f := cmd.Flags()
	f.StringVar(&o.listen, "listen", "127.0.0.1:8080", "the address to serve on (host:port)")
	f.StringVar(&e.db, "db", "", "the state store: a SQLite file path or a postgres:// URL (default .dray/dray.db; env DRAY_DB)")
	f.StringVar(&e.storage, "storage", "", "blob storage for logs (default: dray.yaml's storage)")
	f.StringVar(&o.tlsCert, "tls-cert", "", "serve HTTPS with this certificate (PEM)")
	f.StringVar(&o.tlsKey, "tls-key", "", "the certificate's private key (PEM)")
	f.BoolVar(&o.noScheduler, "no-scheduler", false, "do not run the scheduler here (run `dray scheduler` elsewhere)")
	f.BoolVar(&o.noAgent, "no-agent", false, "do not run an agent here (run `dray agent` elsewhere)")
	f.IntVar(&o.capacity, "capacity", 16, "how many attempts the in-process agent runs at once")
	f.StringSliceVar(&o.labels, "labels", nil, "labels of the in-process agent")
	f.StringSliceVar(&o.executors, "executors", []string{spec.ExecLocal, spec.ExecDocker}, "the executors the in-process agent runs (local, docker, ecs): the control plane needs no cloud credentials unless ecs is here")
	f.DurationVar(&o.grace, "grace", 30*time.Second, "on shutdown, how long running tasks may finish before they are stopped and recorded lost")
	f.DurationVar(&o.reload, "reload", time.Second, "how often to look for changed project files")
	f.DurationVar(&e.agentLease, "agent-lease", 30*time.Second, "how long an agent may go without a heartbeat before its attempts are lost and retried elsewhere")
	f.StringVar(&o.addrFile, "addr-file", "", "write the server's URL to this file once it listens (for scripts)")
	return cmd
}

// serviceLogger logs what a long-running process does, at info level.
func (e *env) serviceLogger() *slog.Logger {
	level := slog.LevelInfo
	if e.verbose {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(e.stderr, &slog.HandlerOptions{Level: level}))
}

func (e *env) serve(ctx context.Context, o serverOptions) error {
	if (o.tlsCert == "") != (o.tlsKey == "") {
		return badInputf("--tls-cert and --tls-key go together")
	}
	e.log = e.serviceLogger()
	dir, err := e.projectDir()
	if err != nil {
		return err
	}
	if _, err := os.Stat(filepath.Join(dir, spec.ConfigFile)); err != nil {
		return badInputf("%s is not a dray project (it has no dray.yaml): use --dir, or `dray init` to make one", dir)
	}
	st, watcher, sched, err := e.openScheduler(ctx)
	if err != nil {
		return err
	}
	defer st.close()
	snap := watcher.Current()
	authSvc := auth.New(auth.Config{Store: st.store, Logger: e.log})
	if err := e.firstAdmin(ctx, authSvc); err != nil {
		return err
	}
	var tlsConfig *tls.Config
	if o.tlsCert != "" {
		cert, err := tls.LoadX509KeyPair(o.tlsCert, o.tlsKey)
		if err != nil {
			return badInputf("--tls-cert %s, --tls-key %s: %v", o.tlsCert, o.tlsKey, err)
		}
		tlsConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	api := server.New(server.Config{
		Store: st.store, Control: st.svc, Auth: authSvc, Project: watcher, Scheduler: sched, Logger: e.log,
		Secure: tlsConfig != nil, Version: Version,
	})
	ln, err := net.Listen("tcp", o.listen)
	if err != nil {
		return badInputf("--listen %s: %v", o.listen, err)
	}
	scheme := "http"
	if tlsConfig != nil {
		ln = tls.NewListener(ln, tlsConfig)
		scheme = "https"
	}
	url := scheme + "://" + ln.Addr().String()
	hs := &http.Server{Handler: api, ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(e.log.Handler(), slog.LevelWarn)}

	sigCtx, stopSignals := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stopSignals()
	// The workers (agent, scheduler, reloader, listener) stop on a signal;
	// the API stops after them, so remote callers see the drain through.
	workCtx, stopWork := context.WithCancel(sigCtx)
	defer stopWork()
	g, gctx := errgroup.WithContext(workCtx)
	g.Go(func() error { watcher.Run(gctx, o.reload); return nil })
	g.Go(func() error { return st.svc.Listen(gctx) })
	if !o.noScheduler {
		g.Go(func() error { return sched.Run(gctx) })
	}
	if !o.noAgent {
		resolver, err := secretResolver(snap.Config, dir)
		if err != nil {
			stopWork()
			g.Wait()
			return err
		}
		execs, err := e.pickExecutors(e.executors(snap.Config), o.executors)
		if err != nil {
			stopWork()
			g.Wait()
			return err
		}
		// agent.New lists the executors in the info (listing them here too
		// registered each twice).
		info := control.AgentInfo{
			ID:   fmt.Sprintf("server-%s-%d", control.Hostname(), os.Getpid()),
			Host: control.Hostname(), PID: os.Getpid(), Labels: o.labels, Version: Version, Capacity: o.capacity,
		}
		ag := agent.New(agent.Config{
			Info: info, Control: st.svc, Executors: execs, Secrets: resolver, Dir: dir, Logger: e.log,
			DrainGrace: o.grace,
		})
		g.Go(func() error { return ag.Run(gctx) })
	}
	httpErr := make(chan error, 1)
	go func() {
		err := hs.Serve(ln)
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		} else {
			err = fmt.Errorf("serve %s: %w", url, err)
			stopWork()
		}
		httpErr <- err
	}()
	if o.addrFile != "" {
		// Written whole or not at all: a script that sees the file may
		// read it at once.
		tmp := o.addrFile + ".tmp"
		if err := os.WriteFile(tmp, []byte(url+"\n"), 0o644); err != nil || os.Rename(tmp, o.addrFile) != nil {
			e.log.Error("write --addr-file", "path", o.addrFile, "err", err)
			stopWork()
		}
	}
	e.log.Info("dray server listening", "url", url, "dir", dir, "scheduler", !o.noScheduler, "agent", !o.noAgent)
	if users, err := authSvc.Users(ctx); err == nil && len(users) == 0 {
		e.log.Warn("no users yet: create the first admin on this host with `dray user create NAME --role admin`")
	}

	werr := g.Wait()
	api.Stop() // waiting agents' long polls answer now
	shut, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := hs.Shutdown(shut); err != nil {
		hs.Close() // followers of live logs do not end by themselves
	}
	herr := <-httpErr
	if err := errors.Join(werr, herr); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	e.log.Info("dray server stopped")
	return nil
}

// firstAdmin creates the first admin from DRAY_ADMIN_PASSWORD when the store
// has no users.
func (e *env) firstAdmin(ctx context.Context, a *auth.Service) error {
	pw := e.getenv("DRAY_ADMIN_PASSWORD")
	if pw == "" {
		return nil
	}
	name := e.getenv("DRAY_ADMIN_USER")
	if name == "" {
		name = "admin"
	}
	created, err := a.EnsureAdmin(ctx, strings.TrimSpace(name), pw)
	if err != nil {
		return badInputf("DRAY_ADMIN_PASSWORD: %v", err)
	}
	if created {
		e.log.Info("created the first admin from DRAY_ADMIN_PASSWORD", "user", name)
	}
	return nil
}
