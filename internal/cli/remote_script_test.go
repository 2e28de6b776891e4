package cli

import (
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/rogpeppe/go-internal/testscript"
)

// Script commands for scripts that talk to a server started in the
// background.

// envfile NAME FILE sets the script's environment variable NAME to the first
// line of FILE (a server's address, a token just made), trimmed.
func cmdEnvFile(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 2 {
		ts.Fatalf("usage: envfile NAME FILE")
	}
	line, _, _ := strings.Cut(ts.ReadFile(args[1]), "\n")
	line = strings.TrimSpace(line)
	if line == "" {
		ts.Fatalf("envfile: %s is empty", args[1])
	}
	ts.Setenv(args[0], line)
}

// waitmatch FILE REGEXP [TIMEOUT] waits until the file (the output of a
// command in the background) matches the regular expression (default
// timeout 30s).
func cmdWaitMatch(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) < 2 {
		ts.Fatalf("usage: waitmatch file regexp [timeout]")
	}
	re, err := regexp.Compile(args[1])
	ts.Check(err)
	limit := 30 * time.Second
	if len(args) > 2 {
		limit, err = time.ParseDuration(args[2])
		ts.Check(err)
	}
	deadline := time.Now().Add(limit)
	for {
		data, _ := os.ReadFile(ts.MkAbs(args[0]))
		if re.Match(data) {
			return
		}
		if time.Now().After(deadline) {
			ts.Fatalf("waitmatch: %s did not match %q within %s; it holds:\n%s", args[0], args[1], limit, data)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// until TIMEOUT REGEXP prog args... runs the program again until its stdout
// matches, or fails after the timeout.
func cmdUntil(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) < 3 {
		ts.Fatalf("usage: until timeout regexp prog args...")
	}
	limit, err := time.ParseDuration(args[0])
	ts.Check(err)
	re, err := regexp.Compile(args[1])
	ts.Check(err)
	deadline := time.Now().Add(limit)
	for {
		err := ts.Exec(args[2], args[3:]...)
		out := ts.ReadFile("stdout")
		if err == nil && re.MatchString(out) {
			return
		}
		if time.Now().After(deadline) {
			ts.Fatalf("until: %s did not print a match of %q within %s (err %v); it printed:\n%s%s", strings.Join(args[2:], " "), args[1], limit, err, out, ts.ReadFile("stderr"))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// envsubst FILE... replaces $NAME in the files with the script's variable
// NAME, where it is set (other $ are the tasks' own).
func cmdEnvSubst(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) == 0 {
		ts.Fatalf("usage: envsubst file...")
	}
	name := regexp.MustCompile(`\$[A-Z_][A-Z0-9_]*`)
	for _, file := range args {
		data := name.ReplaceAllStringFunc(ts.ReadFile(file), func(v string) string {
			if val := ts.Getenv(v[1:]); val != "" {
				return val
			}
			return v
		})
		ts.Check(os.WriteFile(ts.MkAbs(file), []byte(data), 0o644))
	}
}
