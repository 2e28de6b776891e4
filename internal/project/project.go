// Package project keeps the current version of a project folder for a
// long-running process: it loads the folder, notices when a file changes and
// loads it again. A pipeline whose files fail validation keeps its last good
// version (runs go on with it) while the errors are served, so a bad commit
// never takes a pipeline away.
package project

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/dray-dev/dray/internal/spec"
)

// Snapshot is one version of the project.
type Snapshot struct {
	// Pipelines are the pipelines in use, sorted by name: every pipeline that
	// loads now, and the last good version of each that does not.
	Pipelines []*spec.Pipeline
	// Broken names the pipelines whose files fail validation now (their last
	// good version, if any, is in Pipelines), with their files.
	Broken map[string]string
	// Errors are every problem the project's files have now.
	Errors spec.ErrorList
	// Config is the project's dray.yaml as last loaded without errors.
	Config   *spec.Config
	LoadedAt time.Time
}

// Pipeline returns the named pipeline in use, or nil.
func (s *Snapshot) Pipeline(name string) *spec.Pipeline {
	i := sort.Search(len(s.Pipelines), func(i int) bool { return s.Pipelines[i].Name >= name })
	if i < len(s.Pipelines) && s.Pipelines[i].Name == name {
		return s.Pipelines[i]
	}
	return nil
}

// Watcher holds the current Snapshot of a project folder.
type Watcher struct {
	dir string
	log *slog.Logger
	// OnChange, when set before Run, is called with each new snapshot.
	OnChange func(*Snapshot)

	mu     sync.Mutex
	cur    *Snapshot
	finger [32]byte
}

// Open loads the project in dir. A project with validation errors opens (its
// errors are in the snapshot); a folder that cannot be read does not.
func Open(ctx context.Context, dir string, log *slog.Logger) (*Watcher, error) {
	if log == nil {
		log = slog.Default()
	}
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		return nil, fmt.Errorf("open project %s: not a folder", dir)
	}
	w := &Watcher{dir: dir, log: log}
	if _, err := w.Reload(ctx); err != nil {
		return nil, err
	}
	return w, nil
}

// Dir returns the project folder.
func (w *Watcher) Dir() string { return w.dir }

// Current returns the snapshot in use.
func (w *Watcher) Current() *Snapshot {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.cur
}

// Pipelines returns the pipelines in use.
func (w *Watcher) Pipelines() []*spec.Pipeline { return w.Current().Pipelines }

// Reload loads the folder again if a file changed since the last load, and
// reports whether it did.
func (w *Watcher) Reload(ctx context.Context) (bool, error) {
	finger, err := fingerprint(w.dir)
	if err != nil {
		return false, err
	}
	w.mu.Lock()
	same := w.cur != nil && finger == w.finger
	w.mu.Unlock()
	if same {
		return false, nil
	}
	proj, err := spec.Load(os.DirFS(w.dir))
	if err != nil && proj == nil {
		return false, fmt.Errorf("load project %s: %w", w.dir, err)
	}
	w.mu.Lock()
	prev := w.cur
	next := &Snapshot{Broken: proj.Broken(), Errors: proj.Errors, Config: proj.Config, LoadedAt: time.Now().UTC()}
	next.Pipelines = append(next.Pipelines, proj.Pipelines...)
	if prev != nil {
		if len(proj.Errors.In(spec.ConfigFile)) > 0 {
			next.Config = prev.Config
		}
		for _, p := range prev.Pipelines {
			// A broken dray.yaml breaks every pipeline: all keep their
			// last version.
			if _, broken := next.Broken[p.Name]; broken {
				next.Pipelines = append(next.Pipelines, p)
			}
		}
	}
	sort.Slice(next.Pipelines, func(i, j int) bool { return next.Pipelines[i].Name < next.Pipelines[j].Name })
	next.Pipelines = dedupe(next.Pipelines)
	w.cur, w.finger = next, finger
	w.mu.Unlock()
	if prev != nil {
		w.log.Info("project reloaded", "dir", w.dir, "pipelines", len(next.Pipelines), "errors", len(next.Errors))
	}
	for _, e := range next.Errors {
		w.log.Warn("project error", "file", e.File, "line", e.Line, "col", e.Col, "err", e.Message)
	}
	return true, nil
}

func dedupe(ps []*spec.Pipeline) []*spec.Pipeline {
	out := ps[:0]
	for i, p := range ps {
		if i > 0 && ps[i-1].Name == p.Name {
			continue
		}
		out = append(out, p)
	}
	return out
}

// Run reloads the folder whenever a file changes, looking every interval,
// until ctx ends.
func (w *Watcher) Run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		changed, err := w.Reload(ctx)
		if err != nil {
			w.log.Warn("reload project", "dir", w.dir, "err", err)
			continue
		}
		if changed && w.OnChange != nil {
			w.OnChange(w.Current())
		}
	}
}

// specPaths are the files and folders a project's specs are loaded from;
// changes elsewhere (scripts, data that tasks write) need no reload.
var specPaths = []string{spec.ConfigFile, "pipelines", "templates", "schemas"}

// fingerprint hashes the names, sizes and times of the project's spec files
// (not their contents: cheap enough to run every second).
func fingerprint(dir string) ([32]byte, error) {
	h := sha256.New()
	var buf [16]byte
	for _, p := range specPaths {
		err := filepath.WalkDir(filepath.Join(dir, p), func(path string, d fs.DirEntry, err error) error {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			if err != nil {
				return err
			}
			if d.IsDir() {
				return nil
			}
			fi, err := d.Info()
			if err != nil {
				return err
			}
			h.Write([]byte(path))
			binary.LittleEndian.PutUint64(buf[:8], uint64(fi.Size()))
			binary.LittleEndian.PutUint64(buf[8:], uint64(fi.ModTime().UnixNano()))
			h.Write(buf[:])
			return nil
		})
		if err != nil {
			return [32]byte{}, fmt.Errorf("read project %s: %w", dir, err)
		}
	}
	var sum [32]byte
	copy(sum[:], h.Sum(nil))
	return sum, nil
}
