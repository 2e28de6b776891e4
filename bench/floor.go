package main

import (
	"context"
	"fmt"
	"os/exec"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// cpuCost is CPU time per process started: in the process that starts it
// (Parent: fork, exec, wait) and in the started process itself (Child).
type cpuCost struct {
	Parent, Child time.Duration
}

func (c cpuCost) String() string {
	return fmt.Sprintf("%.2f ms in the parent + %.2f ms in sh", ms(c.Parent), ms(c.Child))
}

// cpuTimes returns this process's CPU time and that of its waited-for children.
func cpuTimes() (self, children time.Duration) {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		self = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	if syscall.Getrusage(syscall.RUSAGE_CHILDREN, &ru) == nil {
		children = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	return self, children
}

// measureCPU runs f and returns the CPU time it cost per unit of n.
func measureCPU(n int, f func() error) (cpuCost, error) {
	self0, child0 := cpuTimes()
	err := f()
	self1, child1 := cpuTimes()
	return cpuCost{Parent: (self1 - self0) / time.Duration(n), Child: (child1 - child0) / time.Duration(n)}, err
}

// spawn runs `sh -c true` once and waits for it.
func spawn(ctx context.Context) error {
	if err := exec.CommandContext(ctx, "sh", "-c", "true").Run(); err != nil {
		return fmt.Errorf("spawn sh -c true: %w", err)
	}
	return nil
}

// spawnSeq spawns n processes one after another and returns the mean time per spawn.
func spawnSeq(ctx context.Context, n int) (time.Duration, error) {
	start := time.Now()
	for range n {
		if err := spawn(ctx); err != nil {
			return 0, err
		}
	}
	return time.Since(start) / time.Duration(n), nil
}

// spawnPar spawns n processes from workers goroutines and returns spawns per second.
func spawnPar(ctx context.Context, n, workers int) (float64, error) {
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	start := time.Now()
	for range workers {
		wg.Go(func() {
			for next.Add(1) <= int64(n) {
				if err := spawn(ctx); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	wall := time.Since(start)
	close(errs)
	if err := <-errs; err != nil {
		return 0, err
	}
	return float64(n) / wall.Seconds(), nil
}
