package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// buildDray builds ./cmd/dray of the module at root into dir and returns the
// binary's path. With rev set it builds that git revision instead of the
// working tree, from a copy made with git archive.
func buildDray(ctx context.Context, root, rev, dir string) (string, error) {
	bin := filepath.Join(dir, "dray")
	src := root
	if rev != "" {
		src = filepath.Join(dir, "src")
		if err := os.MkdirAll(src, 0o755); err != nil {
			return "", err
		}
		archive := exec.CommandContext(ctx, "git", "archive", "--format=tar", rev)
		archive.Dir = root
		untar := exec.CommandContext(ctx, "tar", "-x", "-C", src)
		pipe, err := archive.StdoutPipe()
		if err != nil {
			return "", err
		}
		untar.Stdin = pipe
		var errOut bytes.Buffer
		archive.Stderr, untar.Stderr = &errOut, &errOut
		if err := untar.Start(); err != nil {
			return "", fmt.Errorf("extract %s: %w", rev, err)
		}
		if err := archive.Run(); err != nil {
			untar.Wait()
			return "", fmt.Errorf("git archive %s: %w\n%s", rev, err, errOut.String())
		}
		if err := untar.Wait(); err != nil {
			return "", fmt.Errorf("extract %s: %w\n%s", rev, err, errOut.String())
		}
	}
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/dray")
	cmd.Dir = src
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build dray: %w\n%s", err, out)
	}
	return bin, nil
}

// drayRun is what one finished dray process did.
type drayRun struct {
	Wall     time.Duration
	MaxRSS   int64 // bytes, from wait4's rusage
	TimedOut bool
	// HWMAtStop is VmHWM just before the harness stopped a timed-out run:
	// its peak while running, before canceling the rest changed it.
	HWMAtStop int64
	// Last is the last sample of /proc/PID/stat and status, taken every 50 ms.
	Last       procSample
	MaxThreads int
	// HWMRose is when VmHWM last rose: when the peak RSS was reached.
	HWMRose time.Duration
	// Lines are stdout lines with when the harness read them (since start),
	// and the VmRSS of dray at that moment (0 if unknown).
	Lines []line
}

type line struct {
	At   time.Duration
	RSS  int64
	Text string
}

// parseProgress reads a progress line such as "11:13:30  fan      running  300/1000".
func parseProgress(text, task string) (done, total int, ok bool) {
	f := strings.Fields(text)
	if len(f) < 3 || f[1] != task {
		return 0, 0, false
	}
	d, t, found := strings.Cut(f[len(f)-1], "/")
	if !found {
		return 0, 0, false
	}
	done, err1 := strconv.Atoi(d)
	total, err2 := strconv.Atoi(t)
	return done, total, err1 == nil && err2 == nil
}

// errTimedOut marks a dray run stopped by the harness's time limit.
var errTimedOut = errors.New("timed out")

// runDray runs bin with args in the project folder dir and waits for it. A
// run that exits non-zero is an error. After limit the run is interrupted
// (SIGINT, again after 5s, SIGKILL after 10s) and the result, with TimedOut
// set, is returned along with errTimedOut.
func runDray(ctx context.Context, bin, dir string, limit time.Duration, args ...string) (*drayRun, error) {
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	// No terminal: progress comes as plain lines.
	cmd.Env = append(os.Environ(), "NO_COLOR=1", "TERM=dumb")
	stderr := &tailBuffer{max: 16 << 10}
	cmd.Stderr = stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", strings.Join(args, " "), err)
	}
	pid := cmd.Process.Pid

	res := &drayRun{}
	var mu sync.Mutex
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 16<<20)
		for sc.Scan() {
			l := line{At: time.Since(start), RSS: vmRSS(pid), Text: sc.Text()}
			mu.Lock()
			res.Lines = append(res.Lines, l)
			mu.Unlock()
		}
		io.Copy(io.Discard, stdout)
	}()

	// Sample the process while it runs, and stop it at the time limit or
	// when the harness is interrupted.
	stopped := make(chan struct{})
	defer close(stopped)
	go func() {
		t := time.NewTimer(limit)
		defer t.Stop()
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
	wait:
		for {
			select {
			case <-stopped:
				return
			case <-tick.C:
				if s, ok := sample(pid); ok {
					mu.Lock()
					res.MaxThreads = max(res.MaxThreads, s.Threads)
					if s.HWM > res.Last.HWM {
						res.HWMRose = time.Since(start)
					}
					res.Last = s
					mu.Unlock()
				}
			case <-t.C:
				s, _ := sample(pid)
				mu.Lock()
				res.TimedOut, res.HWMAtStop = true, s.HWM
				mu.Unlock()
				break wait
			case <-ctx.Done():
				break wait
			}
		}
		for _, step := range []struct {
			sig  syscall.Signal
			wait time.Duration
		}{{syscall.SIGINT, 5 * time.Second}, {syscall.SIGINT, 5 * time.Second}, {syscall.SIGKILL, 0}} {
			cmd.Process.Signal(step.sig)
			select {
			case <-stopped:
				return
			case <-time.After(step.wait):
			}
		}
	}()

	<-readDone
	waitErr := cmd.Wait()
	res.Wall = time.Since(start)
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		res.MaxRSS = ru.Maxrss * 1024 // KiB on Linux
	}
	mu.Lock()
	timedOut := res.TimedOut
	mu.Unlock()
	switch {
	case timedOut:
		return res, fmt.Errorf("dray %s: %w after %s", strings.Join(args, " "), errTimedOut, limit)
	case ctx.Err() != nil:
		return res, ctx.Err()
	case waitErr != nil:
		return res, fmt.Errorf("dray %s in %s: %w\nstdout (end):\n%s\nstderr:\n%s",
			strings.Join(args, " "), dir, waitErr, tail(res.Lines, 10), lastBytes(stderr.String(), 4000))
	}
	return res, nil
}

// procSample is what /proc says about a process at one moment.
type procSample struct {
	RSS, HWM         int64         // bytes: VmRSS, VmHWM
	User, Sys        time.Duration // the process's own CPU time
	ChildUser        time.Duration // CPU time of its waited-for children (the tasks)
	ChildSys         time.Duration
	Threads          int
	VolCtx, InvolCtx int64 // context switches of the main thread group
}

// sample reads /proc/PID/stat and /proc/PID/status.
func sample(pid int) (procSample, bool) {
	var s procSample
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return s, false
	}
	// Fields after the command, which is in parentheses and may hold spaces.
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return s, false
	}
	f := strings.Fields(string(stat[i+1:]))
	if len(f) < 18 {
		return s, false
	}
	// f[0] is field 3 (state): utime is field 14, stime 15, cutime 16, cstime 17, threads 20.
	tick := func(k int) time.Duration {
		n, _ := strconv.ParseInt(f[k-3], 10, 64)
		return time.Duration(n) * time.Second / clockTicks
	}
	s.User, s.Sys, s.ChildUser, s.ChildSys = tick(14), tick(15), tick(16), tick(17)
	s.Threads, _ = strconv.Atoi(f[20-3])
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return s, false
	}
	for _, l := range strings.Split(string(status), "\n") {
		key, val, ok := strings.Cut(l, ":")
		if !ok {
			continue
		}
		n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(val), " kB"), 10, 64)
		switch key {
		case "VmRSS":
			s.RSS = n * 1024
		case "VmHWM":
			s.HWM = n * 1024
		}
	}
	return s, true
}

// clockTicks is USER_HZ, the unit of CPU times in /proc/PID/stat: 100 on
// every Linux architecture Go supports.
const clockTicks = 100

// vmRSS returns the resident set size of process pid in bytes, or 0.
func vmRSS(pid int) int64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb * 1024
		}
	}
	return 0
}

func tail(lines []line, n int) string {
	var b strings.Builder
	for _, l := range lines[max(0, len(lines)-n):] {
		b.WriteString(l.Text)
		b.WriteByte('\n')
	}
	return b.String()
}

func lastBytes(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

// tailBuffer keeps the last max bytes written to it (at most twice that).
type tailBuffer struct {
	mu  sync.Mutex
	max int
	buf []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if len(t.buf) > 2*t.max {
		t.buf = append(t.buf[:0], t.buf[len(t.buf)-t.max:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf)
}
