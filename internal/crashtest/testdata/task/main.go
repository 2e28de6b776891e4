// Command task is every task of the crash test's pipeline (see package
// crashtest). It records its start in the ledger, sleeps a little, writes its
// outputs and records its end:
//
//	task LEDGER KIND [OUTPUTS-OF-FAN]
//
// KIND is prepare (outputs the items 1, 2, 3), fan (outputs its item) or sum
// (checks the outputs of fan). A ledger line is
//
//	start|end UNIXNANO GEN RUN TASK INDEX ATTEMPT-NUMBER ATTEMPT-ID
//
// where GEN is the generation of the server whose agent started the task
// (DRAY_CRASHTEST_GEN, inherited from it). It is built on its own, not as the
// test binary: a binary built with -race takes seconds to start on a busy
// machine.
package main

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"time"
)

// How long a task sleeps: sleepMin plus up to sleepJitter.
const (
	sleepMin    = 10 * time.Millisecond
	sleepJitter = 50 * time.Millisecond
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "task:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) < 2 {
		return fmt.Errorf("usage: task LEDGER KIND [OUTPUTS-OF-FAN]")
	}
	ledger, kind := args[0], args[1]
	if err := record(ledger, "start"); err != nil {
		return err
	}
	time.Sleep(sleepMin + rand.N(sleepJitter))
	var outputs any
	switch kind {
	case "prepare":
		outputs = map[string]any{"items": []int{1, 2, 3}}
	case "fan":
		outputs = map[string]any{"item": json.RawMessage(os.Getenv("DRAY_ITEM"))}
	case "sum":
		// The outputs of fan, read back after crashes, are whole and in
		// item order.
		if len(args) < 3 {
			return fmt.Errorf("sum: no outputs of fan")
		}
		var got []struct{ Item int }
		if err := json.Unmarshal([]byte(args[2]), &got); err != nil {
			return fmt.Errorf("sum: outputs of fan %s: %v", args[2], err)
		}
		if len(got) != 3 || got[0].Item != 1 || got[1].Item != 2 || got[2].Item != 3 {
			return fmt.Errorf("sum: outputs of fan are %s, want the items 1, 2, 3 in order", args[2])
		}
		outputs = map[string]any{"sum": 6}
	default:
		return fmt.Errorf("unknown kind %q", kind)
	}
	if outputs != nil {
		b, err := json.Marshal(outputs)
		if err != nil {
			return err
		}
		if err := os.WriteFile(os.Getenv("DRAY_OUTPUT"), b, 0o644); err != nil {
			return err
		}
	}
	fmt.Printf("%s done\n", kind)
	return record(ledger, "end")
}

// record appends one line to the ledger. One write of a short line to a file
// opened with O_APPEND is atomic: the lines of tasks running at once never
// mix. A SIGKILL can still cut a write short (Linux ends a write to a file on
// a fatal signal), so each record starts a line of its own: a torn record
// stays alone on its line.
func record(path, event string) error {
	index := os.Getenv("DRAY_INDEX")
	if index == "" {
		index = "0"
	}
	line := fmt.Sprintf("\n%s %d %s %s %s %s %s %s\n", event, time.Now().UnixNano(), os.Getenv("DRAY_CRASHTEST_GEN"),
		os.Getenv("DRAY_RUN_ID"), os.Getenv("DRAY_TASK"), index, os.Getenv("DRAY_ATTEMPT"), os.Getenv("DRAY_ATTEMPT_ID"))
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	_, err = f.Write([]byte(line))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
