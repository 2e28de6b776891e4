package agent

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/dray-dev/dray/internal/executor"
	"github.com/dray-dev/dray/internal/secrets"
	"github.com/dray-dev/dray/internal/store"
)

// flakyLogs is a control plane that refuses log batches while down.
type flakyLogs struct {
	Control
	mu    sync.Mutex
	down  bool
	lines []store.LogLine
	fails int
}

type unreachable struct{}

func (unreachable) Error() string   { return "connection refused" }
func (unreachable) Transient() bool { return true }

func (f *flakyLogs) AgentLogs(_ context.Context, _ string, _ int64, lines []store.LogLine) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down {
		f.fails++
		return unreachable{}
	}
	f.lines = append(f.lines, lines...)
	return nil
}

// While the control plane is away, lines past the memory limit wait in a
// spool file, and every line is shipped once, in order, when it is back.
func TestShipperSpoolsToDisk(t *testing.T) {
	ctl := &flakyLogs{down: true}
	dir := t.TempDir()
	s := newShipper(context.Background(), ctl, "a1", 7, secrets.NewMasker("hunter2"), slog.Default(), dir)
	total := memLines + 15_000
	for i := 1; i <= total; i++ {
		s.Line(executor.Line{Time: time.Now(), Stream: executor.Stdout, Text: fmt.Sprintf("line %d hunter2", i)})
	}
	files, _ := os.ReadDir(dir)
	if len(files) != 1 {
		t.Fatalf("spool files: %v, want one", files)
	}
	ctl.mu.Lock()
	ctl.down = false
	ctl.mu.Unlock()
	s.close()
	if ctl.fails == 0 {
		t.Error("the control plane was never tried while down")
	}
	if len(ctl.lines) != total {
		t.Fatalf("%d lines shipped, want %d", len(ctl.lines), total)
	}
	for i, l := range ctl.lines {
		if l.Seq != int64(i+1) || l.Text != fmt.Sprintf("line %d ***", i+1) {
			t.Fatalf("line %d: seq %d %q", i+1, l.Seq, l.Text)
		}
	}
	if files, _ := os.ReadDir(dir); len(files) != 0 {
		t.Errorf("spool files left: %v", files)
	}
}

// A line longer than maxLineBytes is shipped in pieces, and no batch is
// over batchBytes (the server's request limit is 1 MiB).
func TestShipperCutsLongLines(t *testing.T) {
	ctl := &flakyLogs{}
	s := newShipper(context.Background(), ctl, "a1", 7, secrets.NewMasker(), slog.Default(), t.TempDir())
	long := make([]byte, 3*maxLineBytes+5)
	for i := range long {
		long[i] = 'x'
	}
	for range 20 {
		s.Line(executor.Line{Time: time.Now(), Stream: executor.Stdout, Text: string(long)})
	}
	s.close()
	if len(ctl.lines) != 80 {
		t.Fatalf("%d pieces, want 80", len(ctl.lines))
	}
	if n := len(ctl.lines[3].Text); n != 5 {
		t.Errorf("the last piece has %d bytes, want 5", n)
	}
}
