package executortest

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/dray-dev/dray/internal/executor"
)

// Recorder is an executor.LogSink that keeps every line it is given and lets a
// test wait for a line. It is safe for concurrent use.
type Recorder struct {
	mu      sync.Mutex
	lines   []executor.Line
	changed chan struct{} // closed and replaced when a line arrives
}

var _ executor.LogSink = (*Recorder)(nil)

// NewRecorder returns an empty Recorder.
func NewRecorder() *Recorder {
	return &Recorder{changed: make(chan struct{})}
}

// Line records l.
func (r *Recorder) Line(l executor.Line) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lines = append(r.lines, l)
	close(r.changed)
	r.changed = make(chan struct{})
}

// Lines returns a copy of every line recorded so far, in arrival order.
func (r *Recorder) Lines() []executor.Line {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.lines)
}

// Texts returns the text of every line recorded so far from stream, in
// arrival order.
func (r *Recorder) Texts(stream string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, l := range r.lines {
		if l.Stream == stream {
			out = append(out, l.Text)
		}
	}
	return out
}

// WaitFor blocks until a line of stream with exactly text has been recorded,
// or ctx ends.
func (r *Recorder) WaitFor(ctx context.Context, stream, text string) error {
	for {
		r.mu.Lock()
		found := slices.ContainsFunc(r.lines, func(l executor.Line) bool {
			return l.Stream == stream && l.Text == text
		})
		changed := r.changed
		r.mu.Unlock()
		if found {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return fmt.Errorf("wait for %s line %q (have %d lines): %w", stream, text, len(r.Lines()), ctx.Err())
		}
	}
}

// Start starts spec on e, with a new Recorder as its sink, and stops the
// attempt when the test ends (waiting up to cleanup for it).
func Start(t *testing.T, ctx context.Context, e executor.Executor, spec *executor.Spec, cleanup time.Duration) (executor.Handle, *Recorder) {
	t.Helper()
	rec := NewRecorder()
	h, err := e.Start(ctx, spec, rec)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), cleanup)
		defer cancel()
		_ = h.Stop(ctx, 0)
		_, _ = h.Wait(ctx)
	})
	return h, rec
}

// Wait waits for an attempt and fails the test if it cannot be followed,
// with the lines it gave.
func Wait(t *testing.T, ctx context.Context, h executor.Handle, rec *Recorder) executor.Result {
	t.Helper()
	res, err := h.Wait(ctx)
	if err != nil {
		t.Fatalf("Wait: %v (stdout %q, stderr %q)", err, rec.Texts(executor.Stdout), rec.Texts(executor.Stderr))
	}
	return res
}
