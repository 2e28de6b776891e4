package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/dray-dev/dray/internal/blob"
	"github.com/dray-dev/dray/internal/control"
	"github.com/dray-dev/dray/internal/spec"
	"github.com/dray-dev/dray/internal/store"
	"github.com/dray-dev/dray/internal/store/postgres"
	"github.com/dray-dev/dray/internal/store/sqlite"
)

// StateDir is where a project keeps its local state, under the project folder.
const StateDir = ".dray"

// DefaultStorage is the blob storage of a project that names none.
const DefaultStorage = "file://.dray/storage"

// projectDir returns the absolute project folder.
func (e *env) projectDir() (string, error) {
	dir, err := filepath.Abs(e.dir)
	if err != nil {
		return "", badInputf("--dir %s: %v", e.dir, err)
	}
	fi, err := os.Stat(dir)
	if err != nil || !fi.IsDir() {
		return "", badInputf("--dir %s: not a folder", e.dir)
	}
	return dir, nil
}

// loadProject loads the project folder.
func (e *env) loadProject() (*spec.Project, string, error) {
	dir, err := e.projectDir()
	if err != nil {
		return nil, "", err
	}
	proj, err := spec.Load(os.DirFS(dir))
	if err != nil {
		return nil, "", fmt.Errorf("load project %s: %w", dir, err)
	}
	return proj, dir, nil
}

// projectConfig returns the dray.yaml settings of --dir, or nil when there is
// no project there or it does not load (for what is only a help, such as the
// ECS clusters an agent looks for orphans in).
func (e *env) projectConfig() *spec.Config {
	dir, err := e.projectDir()
	if err != nil {
		return nil
	}
	if _, err := os.Stat(filepath.Join(dir, spec.ConfigFile)); err != nil {
		return nil
	}
	proj, err := spec.Load(os.DirFS(dir))
	if err != nil {
		return nil
	}
	return proj.Config
}

// state is a project's state: its store, blob storage and control service.
type state struct {
	dir    string
	store  store.Store
	bucket *blob.Bucket
	svc    *control.Service
}

// dbURL is the state store's URL: --db where a command has it, else DRAY_DB,
// else the project's .dray/dray.db.
func (e *env) dbURL() string {
	if e.db != "" {
		return e.db
	}
	return e.getenv("DRAY_DB")
}

// openStore opens the state store: PostgreSQL for a postgres:// URL, else the
// SQLite file at the path (sqlite:// prefix optional; default
// <dir>/.dray/dray.db).
func (e *env) openStore(ctx context.Context, dir string) (store.Store, error) {
	url := e.dbURL()
	if strings.HasPrefix(url, "postgres://") || strings.HasPrefix(url, "postgresql://") {
		st, err := postgres.Open(ctx, url, postgres.Options{Logger: e.log})
		if err != nil {
			return nil, stateError(err)
		}
		return st, nil
	}
	path := strings.TrimPrefix(url, "sqlite://")
	if path == "" {
		path = filepath.Join(dir, StateDir, "dray.db")
	}
	opts := sqlite.Options{}
	opts.Sync = e.getenv("DRAY_SQLITE_SYNC")
	if opts.Sync != "" && opts.Sync != sqlite.SyncNormal && opts.Sync != sqlite.SyncFull {
		return nil, badInputf("DRAY_SQLITE_SYNC=%s: want normal or full", opts.Sync)
	}
	if v := e.getenv("DRAY_SQLITE_BUSY_TIMEOUT"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			return nil, badInputf("DRAY_SQLITE_BUSY_TIMEOUT=%s: want a duration such as 5s", v)
		}
		opts.BusyTimeout = d
	}
	st, err := sqlite.Open(ctx, path, opts)
	if err != nil {
		return nil, stateError(err)
	}
	return st, nil
}

// openState opens the project's state (see openStore). storage is the
// project's storage URL (DefaultStorage when empty); --storage overrides it.
func (e *env) openState(ctx context.Context, dir, storage string) (*state, error) {
	if e.storage != "" {
		storage = e.storage
	}
	if storage == "" {
		storage = DefaultStorage
	}
	if scheme, _, _ := strings.Cut(storage, "://"); !slices.Contains(blob.Schemes, scheme) {
		return nil, badInputf("storage %s: this version of dray keeps logs in file:// or s3:// storage only", storage)
	}
	st, err := e.openStore(ctx, dir)
	if err != nil {
		return nil, err
	}
	bucket, err := blob.Open(ctx, storage, dir)
	if err != nil {
		st.Close()
		return nil, err
	}
	svc := control.New(control.Config{Store: st, Blob: bucket, Logger: e.log, Host: control.Hostname(), OnAgentGone: reapLocal(e.log),
		AgentLease: e.agentLease})
	return &state{dir: dir, store: st, bucket: bucket, svc: svc}, nil
}

// openStateFor opens the local state of the project in --dir, reading its
// storage setting from dray.yaml when it can.
func (e *env) openStateFor(ctx context.Context) (*state, error) {
	dir, err := e.projectDir()
	if err != nil {
		return nil, err
	}
	_, errCfg := os.Stat(filepath.Join(dir, spec.ConfigFile))
	_, errState := os.Stat(filepath.Join(dir, StateDir))
	if errCfg != nil && errState != nil && e.dbURL() == "" {
		return nil, badInputf("%s is not a dray project (it has no dray.yaml): use --dir, or `dray init` to make one", dir)
	}
	storage := ""
	if proj, err := spec.Load(os.DirFS(dir)); err == nil && proj.Config != nil {
		storage = proj.Config.Storage
	}
	return e.openState(ctx, dir, storage)
}

// openRun opens the local state and resolves a run id (or prefix, or
// "last"). The caller closes the state.
func (e *env) openRun(ctx context.Context, prefix string) (*state, string, error) {
	st, err := e.openStateFor(ctx)
	if err != nil {
		return nil, "", err
	}
	id, err := st.svc.ResolveRun(ctx, prefix)
	if err != nil {
		st.close()
		return nil, "", err
	}
	return st, id, nil
}

func (s *state) close() {
	s.svc.Close()
	s.bucket.Close()
	s.store.Close()
}

// stateError explains errors of the local state in the user's terms.
func stateError(err error) error {
	switch {
	case errors.Is(err, store.ErrLocked):
		return fmt.Errorf("%w\n(another dray process holds the database; wait for it, or set DRAY_SQLITE_BUSY_TIMEOUT to wait longer)", err)
	case errors.Is(err, store.ErrFull):
		return fmt.Errorf("%w\n(free some disk space: nothing recorded so far is lost, and `dray retry` can finish the run)", err)
	}
	return err
}
