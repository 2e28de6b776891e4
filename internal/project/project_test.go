package project

import (
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const config = "version: 1\nproject: t\n"

var quiet = slog.New(slog.DiscardHandler)

func write(t *testing.T, dir, name, body string) {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	// Make every write visible to the fingerprint even within one clock tick.
	later := time.Now().Add(time.Duration(len(body)) * time.Millisecond)
	os.Chtimes(path, later, later)
}

func pipeline(name, run string) string {
	return "version: 1\nname: " + name + "\ntasks:\n  - name: a\n    run: " + run + "\n"
}

func TestReload(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "dray.yaml", config)
	write(t, dir, "pipelines/a.yaml", pipeline("a", "echo one"))
	w, err := Open(t.Context(), dir, quiet)
	if err != nil {
		t.Fatal(err)
	}
	first := w.Current()
	if len(first.Pipelines) != 1 || first.Pipeline("a") == nil || len(first.Errors) != 0 {
		t.Fatalf("first load: %d pipelines, errors %v", len(first.Pipelines), first.Errors)
	}

	// Nothing changed: no reload, same snapshot.
	if changed, err := w.Reload(t.Context()); err != nil || changed {
		t.Fatalf("reload with no change: changed=%v err=%v", changed, err)
	}
	// Files outside the spec folders (scripts, data a task writes) change nothing.
	write(t, dir, "data/out.csv", "x,y\n")
	write(t, dir, "scripts/run.sh", "echo\n")
	if changed, _ := w.Reload(t.Context()); changed {
		t.Error("a data file reloaded the project")
	}

	// A new pipeline appears.
	write(t, dir, "pipelines/b.yaml", pipeline("b", "echo b"))
	if changed, err := w.Reload(t.Context()); err != nil || !changed {
		t.Fatalf("reload after a new file: changed=%v err=%v", changed, err)
	}
	if w.Current().Pipeline("b") == nil {
		t.Fatal("pipeline b not loaded")
	}

	// A broken file keeps the last good version, and its errors are served.
	good := w.Current().Pipeline("a")
	write(t, dir, "pipelines/a.yaml", "version: 1\nname: a\ntasks:\n  - name: a\n    runn: oops\n")
	w.Reload(t.Context())
	snap := w.Current()
	if snap.Pipeline("a") != good {
		t.Error("broken pipeline a lost its last good version")
	}
	if _, broken := snap.Broken["a"]; !broken || len(snap.Errors) == 0 || !strings.Contains(snap.Errors.Error(), "pipelines/a.yaml:5") {
		t.Errorf("broken=%v errors=%v", snap.Broken, snap.Errors)
	}
	if snap.Pipeline("b") == nil {
		t.Error("pipeline b went away with a's error")
	}

	// A broken dray.yaml keeps every pipeline.
	write(t, dir, "dray.yaml", "version: 1\nprojekt: t\n")
	w.Reload(t.Context())
	if snap := w.Current(); snap.Pipeline("a") != good || snap.Pipeline("b") == nil || snap.Config == nil {
		t.Errorf("broken dray.yaml: a=%v b=%v config=%v", snap.Pipeline("a") != nil, snap.Pipeline("b") != nil, snap.Config != nil)
	}

	// Fixed: the new version is in use and the errors are gone.
	write(t, dir, "dray.yaml", config+"# fixed\n")
	write(t, dir, "pipelines/a.yaml", pipeline("a", "echo two"))
	w.Reload(t.Context())
	snap = w.Current()
	if len(snap.Errors) != 0 || len(snap.Broken) != 0 || snap.Pipeline("a") == good || snap.Pipeline("a") == nil {
		t.Errorf("after the fix: errors %v broken %v", snap.Errors, snap.Broken)
	}

	// A removed pipeline goes away.
	os.Remove(filepath.Join(dir, "pipelines/b.yaml"))
	w.Reload(t.Context())
	if w.Current().Pipeline("b") != nil {
		t.Error("removed pipeline b is still in use")
	}
}

func TestRunNotifiesChanges(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "dray.yaml", config)
	w, err := Open(t.Context(), dir, quiet)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan *Snapshot, 1)
	w.OnChange = func(s *Snapshot) { got <- s }
	go w.Run(t.Context(), 10*time.Millisecond)
	write(t, dir, "pipelines/a.yaml", pipeline("a", "echo ok"))
	select {
	case s := <-got:
		if s.Pipeline("a") == nil {
			t.Error("the new snapshot has no pipeline a")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no change noticed in 10s")
	}
}

func TestOpenUnreadable(t *testing.T) {
	if _, err := Open(t.Context(), filepath.Join(t.TempDir(), "nope"), quiet); err == nil {
		t.Fatal("opened a folder that does not exist")
	}
}
