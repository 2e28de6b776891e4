package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/dray-dev/dray/internal/dockertest"

	"github.com/rogpeppe/go-internal/testscript"
)

func TestMain(m *testing.M) {
	testscript.Main(m, map[string]func(){
		"dray": func() { os.Exit(Main(context.Background(), os.Args[1:], os.Stdin, os.Stdout, os.Stderr)) },
	})
}

// TestScripts runs the scripts in testdata/script against the real dray
// binary (the test binary, started as "dray").
func TestScripts(t *testing.T) {
	// Scripts run container tasks with a busybox image built here.
	dockertest.Require(t)
	busybox := dockertest.BusyboxImage(t)
	testscript.Run(t, testscript.Params{
		Dir: "testdata/script",
		Setup: func(env *testscript.Env) error {
			env.Setenv("NO_COLOR", "1")
			env.Setenv("BUSYBOX", busybox)
			return nil
		},
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			"exitcode":  cmdExitCode,
			"waitfile":  cmdWaitFile,
			"envfile":   cmdEnvFile,
			"waitmatch": cmdWaitMatch,
			"until":     cmdUntil,
			"envsubst":  cmdEnvSubst,
			"awsfake":   cmdAWSFake(busybox),
		},
	})
}

// exitcode N prog args... runs prog and checks that it exits with code N. Its
// stdout and stderr become the script's, for the stdout and stderr commands.
func cmdExitCode(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) < 2 {
		ts.Fatalf("usage: exitcode N program [args...]")
	}
	want, err := strconv.Atoi(args[0])
	if err != nil {
		ts.Fatalf("exitcode: %v", err)
	}
	path, err := exec.LookPath(args[1])
	if err != nil {
		// LookPath uses this process's PATH; the script's may differ.
		for _, dir := range filepath.SplitList(ts.Getenv("PATH")) {
			if p := filepath.Join(dir, args[1]); fileExists(p) {
				path, err = p, nil
				break
			}
		}
		if err != nil {
			ts.Fatalf("exitcode: %v", err)
		}
	}
	cmd := exec.Command(path, args[2:]...)
	cmd.Dir = ts.MkAbs(".")
	cmd.Env = envOf(ts)
	cmd.Stdout, cmd.Stderr = ts.Stdout(), ts.Stderr()
	err = cmd.Run()
	got := 0
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		got = ee.ExitCode()
	case err != nil:
		ts.Fatalf("exitcode: %v", err)
	}
	if got != want {
		ts.Fatalf("%s exited with %d, want %d", args[1], got, want)
	}
}

func fileExists(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && !fi.IsDir()
}

// envOf returns the script's environment for a command it starts.
func envOf(ts *testscript.TestScript) []string {
	var env []string
	for _, k := range []string{"PATH", "HOME", "TMPDIR", "WORK", "NO_COLOR", "DRAY_SECRET_PASSWORD", "DRAY_SQLITE_BUSY_TIMEOUT", "GOCOVERDIR", "DRAY_SERVER", "DRAY_TOKEN", "DOCKER_HOST",
		"AWS_ENDPOINT_URL", "AWS_REGION", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_EC2_METADATA_DISABLED"} {
		if v := ts.Getenv(k); v != "" {
			env = append(env, k+"="+v)
		}
	}
	return env
}

// waitfile PATH [TIMEOUT] waits until the file exists (default 30s).
func cmdWaitFile(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) < 1 {
		ts.Fatalf("usage: waitfile path [timeout]")
	}
	limit := 30 * time.Second
	if len(args) > 1 {
		d, err := time.ParseDuration(args[1])
		if err != nil {
			ts.Fatalf("waitfile: %v", err)
		}
		limit = d
	}
	deadline := time.Now().Add(limit)
	for !fileExists(ts.MkAbs(args[0])) {
		if time.Now().After(deadline) {
			ts.Fatalf("waitfile: %s did not appear within %s", args[0], limit)
		}
		time.Sleep(10 * time.Millisecond)
	}
	fmt.Fprintf(ts.Stdout(), "%s exists\n", args[0])
}
