// Package cli is dray's command line: it parses flags, builds the parts
// (project, store, control service, agent) and prints what they return.
// Exit codes: 0 success; 1 the run or the command's work failed; 2 bad input;
// 130 canceled.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime/pprof"
	"strings"
	"time"

	"github.com/dray-dev/dray/internal/spec"
	"github.com/dray-dev/dray/internal/store"
	"github.com/spf13/cobra"
)

// Exit codes.
const (
	ExitOK       = 0
	ExitFailed   = 1
	ExitBadInput = 2
	ExitCanceled = 130
)

// Version is dray's version, set at build time with -ldflags.
var Version = "dev"

// exitError carries an exit code; its message (if any) is printed on stderr.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string {
	if e.err == nil {
		return ""
	}
	return e.err.Error()
}

func (e *exitError) Unwrap() error { return e.err }

// badInput marks an error as the user's input being wrong (exit 2).
func badInput(err error) error { return &exitError{code: ExitBadInput, err: err} }

func badInputf(format string, args ...any) error { return badInput(fmt.Errorf(format, args...)) }

// exitCode returns the code an error ends the program with.
func exitCode(err error) int {
	var ee *exitError
	var list spec.ErrorList
	var perr *spec.ParamError
	var nop *spec.NoPipelineError
	switch {
	case err == nil:
		return ExitOK
	case errors.As(err, &ee):
		return ee.code
	case errors.As(err, &list), errors.As(err, &perr), errors.As(err, &nop),
		errors.Is(err, store.ErrNotFound), errors.Is(err, store.ErrAmbiguous):
		return ExitBadInput
	}
	return ExitFailed
}

// env is what commands read and write besides their flags.
type env struct {
	// ecsRunRate is the ECS executor's RunTask calls a second per region
	// (`dray agent --ecs-run-rate`); zero means its default.
	ecsRunRate float64
	// agentLease is how long an agent may be silent before its attempts are
	// lost (dray server and dray scheduler --agent-lease; 0: the default).
	agentLease     time.Duration
	stdin          io.Reader
	stdout, stderr io.Writer
	getenv         func(string) string
	log            *slog.Logger
	dir            string
	verbose        bool
	// db and storage are the --db and --storage flags of the commands that
	// have them.
	db, storage string
	server      string // --server: the dray server to talk to (see remote.go)
}

// Main runs the dray command line and returns the exit code.
func Main(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	e := &env{stdin: stdin, stdout: stdout, stderr: stderr, getenv: os.Getenv}
	if path := os.Getenv("DRAY_CPUPROFILE"); path != "" {
		if f, err := os.Create(path); err == nil {
			if pprof.StartCPUProfile(f) == nil {
				defer pprof.StopCPUProfile()
			}
		}
	}
	root := e.root()
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.ExecuteContext(ctx)
	// cobra has no typed error for an unknown command: it is bad input.
	if err != nil && strings.HasPrefix(err.Error(), "unknown command") {
		err = badInput(err)
	}
	code := exitCode(err)
	if err != nil && err.Error() != "" {
		msg := err.Error()
		if !strings.HasSuffix(msg, "\n") {
			msg += "\n"
		}
		if _, isList := errors.AsType[spec.ErrorList](err); !isList {
			msg = "dray: " + msg
		}
		fmt.Fprint(stderr, msg)
	}
	return code
}

func (e *env) root() *cobra.Command {
	root := &cobra.Command{
		Use:           "dray",
		Short:         "dray runs data pipelines of containers and shell tasks, on a laptop or in production",
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       Version,
		PersistentPreRunE: func(cmd *cobra.Command, args []string) error {
			level := slog.LevelWarn
			if e.verbose {
				level = slog.LevelDebug
			}
			e.log = slog.New(slog.NewTextHandler(e.stderr, &slog.HandlerOptions{Level: level}))
			return nil
		},
	}
	root.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error { return badInput(err) })
	root.PersistentFlags().StringVar(&e.dir, "dir", ".", "the project folder")
	root.PersistentFlags().BoolVarP(&e.verbose, "verbose", "v", false, "log what dray does (debug logs on stderr)")
	root.PersistentFlags().StringVar(&e.server, "server", "", "the dray server to talk to, such as http://127.0.0.1:8080 (default $DRAY_SERVER; none: the local .dray/ state)")
	root.AddCommand(e.initCmd(), e.validateCmd(), e.runCmd(), e.triggerCmd(), e.runsCmd(), e.logsCmd(), e.retryCmd(), e.cancelCmd(),
		e.serverCmd(), e.agentCmd(), e.agentsCmd(), e.schedulerCmd(), e.backfillCmd(), e.userCmd(), e.tokenCmd(), e.auditCmd())
	for _, c := range root.Commands() {
		c.Args = wrapArgs(c.Args)
	}
	return root
}

// wrapArgs makes argument count errors bad input (exit 2).
func wrapArgs(check cobra.PositionalArgs) cobra.PositionalArgs {
	if check == nil {
		return nil
	}
	return func(cmd *cobra.Command, args []string) error {
		if err := check(cmd, args); err != nil {
			return badInput(fmt.Errorf("%s: %w (see dray %s --help)", cmd.Name(), err, cmd.Name()))
		}
		return nil
	}
}
