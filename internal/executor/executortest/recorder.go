package executortest

import (
	"context"
	"fmt"
	"slices"
	"sync"

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
