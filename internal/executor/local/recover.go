package local

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/dray-dev/dray/internal/executor"
)

// Recover cannot re-attach to a local process: its output pipes died with the
// agent that started it. It kills what is left of the attempt and always
// returns an error that wraps executor.ErrLost.
//
// What is left is the process group named by state, if it is still the
// attempt's: its leader is alive with the start time recorded in state, or,
// the leader being gone, some process of the group started no earlier than
// it. A pid that was reused by an unrelated process is left alone. Recover
// also removes the attempt's temporary directory.
func (e *Executor) Recover(ctx context.Context, spec *executor.Spec, state []byte, sink executor.LogSink) (executor.Handle, error) {
	var st procState
	if err := json.Unmarshal(state, &st); err != nil {
		return nil, fmt.Errorf("recover local process: decode state %q: %v: %w", state, err, executor.ErrLost)
	}
	if st.PID <= 1 || st.PGID <= 1 {
		// kill(-1) or kill(0) would reach far more than the attempt.
		return nil, fmt.Errorf("recover local process: state has pid %d, pgid %d: %w", st.PID, st.PGID, executor.ErrLost)
	}
	if st.Outputs != "" && filepath.IsAbs(st.Outputs) && strings.HasPrefix(filepath.Base(filepath.Dir(st.Outputs)), "dray-outputs-") {
		if err := os.Remove(st.Outputs); err != nil && !errors.Is(err, fs.ErrNotExist) {
			e.log.Warn("remove outputs file of lost local process", "file", st.Outputs, "err", err)
		}
	}
	killed, err := killLeftovers(st)
	switch {
	case err != nil:
		e.log.Warn("kill what is left of lost local process", "pid", st.PID, "pgid", st.PGID, "err", err)
	case killed:
		e.log.Info("killed what was left of lost local process", "pid", st.PID, "pgid", st.PGID)
	}
	return nil, fmt.Errorf("local process %d: cannot re-attach after an agent restart: %w", st.PID, executor.ErrLost)
}

// killLeftovers sends SIGKILL to the process group of st if it is still the
// one the state was saved for, and reports whether it did.
func killLeftovers(st procState) (bool, error) {
	if st.StartTime == 0 {
		return false, errors.New("state has no start time; cannot tell the process from one that reused its pid")
	}
	leader, err := readStat(st.PGID)
	switch {
	case err == nil:
		if leader.startTime != st.StartTime {
			return false, nil // pid reused by another process
		}
	case errors.Is(err, fs.ErrNotExist):
		// The leader is gone (Pdeathsig killed it with the agent), but its
		// background children may live on in its group. While one lives, no
		// other process can get the group id, so a live member that started
		// no earlier than the leader is taken as ours. This is wrong only if
		// the pid wrapped around and the new group's leader exited too.
		found, err := groupAlive(st.PGID, st.StartTime)
		if err != nil || !found {
			return false, err
		}
	default:
		return false, err
	}
	if err := syscall.Kill(-st.PGID, syscall.SIGKILL); err != nil {
		if errors.Is(err, syscall.ESRCH) {
			return false, nil
		}
		return false, fmt.Errorf("kill process group %d: %w", st.PGID, err)
	}
	return true, nil
}

// groupAlive reports whether a live (not zombie) process is in group pgid and
// started no earlier than since.
func groupAlive(pgid int, since uint64) (bool, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return false, fmt.Errorf("list processes: %w", err)
	}
	for _, ent := range entries {
		pid, err := strconv.Atoi(ent.Name())
		if err != nil {
			continue
		}
		ps, err := readStat(pid)
		if err != nil {
			continue // exited meanwhile
		}
		if ps.pgrp == pgid && ps.state != 'Z' && ps.startTime >= since {
			return true, nil
		}
	}
	return false, nil
}

// procStat holds the fields of /proc/<pid>/stat that this package uses.
type procStat struct {
	state     byte   // field 3: R, S, D, Z, ...
	pgrp      int    // field 5
	startTime uint64 // field 22, in clock ticks after boot
}

// readStat reads /proc/<pid>/stat. A process that does not exist gives an
// error that wraps fs.ErrNotExist.
func readStat(pid int) (procStat, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return procStat{}, err
	}
	return parseStat(b)
}

// parseStat parses the content of /proc/<pid>/stat. The command name (field
// 2) is in parentheses and may hold spaces and parentheses itself, so fields
// are counted from the last ')'.
func parseStat(b []byte) (procStat, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return procStat{}, fmt.Errorf("parse /proc stat %q: no command name", b)
	}
	f := strings.Fields(string(b[i+1:])) // f[0] is field 3
	if len(f) < 20 || len(f[0]) != 1 {
		return procStat{}, fmt.Errorf("parse /proc stat %q: too few fields", b)
	}
	pgrp, err := strconv.Atoi(f[5-3])
	if err != nil {
		return procStat{}, fmt.Errorf("parse /proc stat pgrp: %w", err)
	}
	start, err := strconv.ParseUint(f[22-3], 10, 64)
	if err != nil {
		return procStat{}, fmt.Errorf("parse /proc stat starttime: %w", err)
	}
	return procStat{state: f[0][0], pgrp: pgrp, startTime: start}, nil
}
