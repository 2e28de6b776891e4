// Package sqlite is dray's embedded state store: one SQLite file in WAL mode,
// through the pure-Go modernc.org/sqlite driver. Writes go through one
// connection with BEGIN IMMEDIATE, reads through a small pool.
//
// Durability: by default (synchronous=NORMAL) a committed transaction has been
// written to the WAL before Update returns, so it survives any crash of the
// process (kill -9 included); an OS crash or power loss may lose the last
// transactions but never corrupts the database. Options.Sync = SyncFull syncs
// every commit to disk as well, at about a millisecond a commit.
package sqlite

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/dray-dev/dray/internal/store"
	sqlite "modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Options tune a store; zero values are the defaults.
type Options struct {
	// BusyTimeout is how long a write waits for another process's lock
	// (default 5s).
	BusyTimeout time.Duration
	// MaxPages caps the database's size in pages (4 KiB each); for tests of a
	// full disk. 0: no cap.
	MaxPages int
	// Sync is SyncNormal (the default) or SyncFull: see the package comment.
	Sync string
}

// Sync modes.
const (
	SyncNormal = "normal"
	SyncFull   = "full"
)

// Store is a SQLite store.
type Store struct {
	path   string
	w      *sql.DB // one writer connection
	r      *sql.DB // readers
	wStmts *stmtCache
	rStmts *stmtCache

	listenMu  sync.Mutex
	listeners map[*func(string)]struct{}
}

var _ store.Store = (*Store)(nil)

// Open opens (creating if needed) the database at path and applies its
// migrations.
func Open(ctx context.Context, path string, opts Options) (*Store, error) {
	if opts.BusyTimeout == 0 {
		opts.BusyTimeout = 5 * time.Second
	}
	switch opts.Sync {
	case "":
		opts.Sync = SyncNormal
	case SyncNormal, SyncFull:
	default:
		return nil, fmt.Errorf("open sqlite %s: sync mode %q: want %s or %s", path, opts.Sync, SyncNormal, SyncFull)
	}
	if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, fmt.Errorf("open sqlite %s: %w", path, err)
		}
	}
	pragmas := []string{
		"journal_mode(WAL)",
		"synchronous(" + strings.ToUpper(opts.Sync) + ")",
		"busy_timeout(" + strconv.FormatInt(opts.BusyTimeout.Milliseconds(), 10) + ")",
		"foreign_keys(ON)",
	}
	if opts.MaxPages > 0 {
		pragmas = append(pragmas, "max_page_count("+strconv.Itoa(opts.MaxPages)+")")
	}
	q := url.Values{}
	for _, p := range pragmas {
		q.Add("_pragma", p)
	}
	dsn := "file:" + path + "?" + q.Encode()
	w, err := sql.Open("sqlite", dsn+"&_txlock=immediate")
	if err != nil {
		return nil, fmt.Errorf("open sqlite %s: %w", path, err)
	}
	w.SetMaxOpenConns(1)
	w.SetConnMaxIdleTime(0)
	r, err := sql.Open("sqlite", dsn+"&_pragma=query_only(1)")
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("open sqlite %s: %w", path, err)
	}
	r.SetMaxOpenConns(4)
	s := &Store{path: path, w: w, r: r, wStmts: newStmtCache(w), rStmts: newStmtCache(r)}
	if err := s.migrate(ctx); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// Close closes the database.
func (s *Store) Close() error {
	return errors.Join(s.wStmts.close(), s.rStmts.close(), s.r.Close(), s.w.Close())
}

// Path returns the database file's path.
func (s *Store) Path() string { return s.path }

func (s *Store) migrate(ctx context.Context) error {
	files, err := fs.Glob(migrations, "migrations/*.sql")
	if err != nil {
		return err
	}
	sort.Strings(files)
	return s.Update(ctx, func(t store.Tx) error {
		tx := t.(*txn).tx
		if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)`); err != nil {
			return err
		}
		var have int
		if err := tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_migrations`).Scan(&have); err != nil {
			return err
		}
		if have > len(files) {
			return fmt.Errorf("database %s has schema version %d, newer than this dray knows (%d): upgrade dray", s.path, have, len(files))
		}
		for i, f := range files[have:] {
			version := have + i + 1
			src, err := migrations.ReadFile(f)
			if err != nil {
				return err
			}
			if _, err := tx.ExecContext(ctx, string(src)); err != nil {
				return fmt.Errorf("apply migration %s: %w", f, err)
			}
			if _, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)`, version, time.Now().UnixMicro()); err != nil {
				return err
			}
		}
		return nil
	})
}

// Update runs fn in a write transaction (BEGIN IMMEDIATE).
func (s *Store) Update(ctx context.Context, fn func(store.Tx) error) (err error) {
	defer s.wStmts.warm(ctx)
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return s.wrap("begin write", err)
	}
	defer func() {
		if p := recover(); p != nil {
			tx.Rollback()
			panic(p)
		}
	}()
	t := &txn{tx: tx, s: s, stmts: s.wStmts}
	if err := fn(t); err != nil {
		tx.Rollback()
		return s.mapErr(err)
	}
	if err := tx.Commit(); err != nil {
		return s.wrap("commit", err)
	}
	s.deliver(t.events)
	return nil
}

// View runs fn in a read transaction.
func (s *Store) View(ctx context.Context, fn func(store.Tx) error) (err error) {
	defer s.rStmts.warm(ctx)
	tx, err := s.r.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return s.wrap("begin read", err)
	}
	defer tx.Rollback()
	if err := fn(&txn{tx: tx, s: s, stmts: s.rStmts}); err != nil {
		return s.mapErr(err)
	}
	return nil
}

// wrap adds the operation and the database's path to an error of the
// database itself, mapping SQLite's busy and full errors to the store's.
func (s *Store) wrap(op string, err error) error {
	if mapped := s.mapErr(err); mapped != err {
		return mapped
	}
	return fmt.Errorf("%s %s: %w", op, s.path, err)
}

// mapErr maps SQLite's busy and full errors, wherever they are in err's chain,
// to store.ErrLocked and store.ErrFull; other errors pass unchanged.
func (s *Store) mapErr(err error) error {
	var se *sqlite.Error
	if !errors.As(err, &se) {
		return err
	}
	switch se.Code() & 0xff {
	case sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED:
		return fmt.Errorf("%s: another process kept it locked (%v): %w", s.path, err, store.ErrLocked)
	case sqlite3.SQLITE_FULL:
		return fmt.Errorf("%s: %v: %w", s.path, err, store.ErrFull)
	}
	return err
}

// txn implements store.Tx over a database/sql transaction.
type txn struct {
	tx     *sql.Tx
	s      *Store
	stmts  *stmtCache
	events []string // to deliver after commit
}

// exec, query and queryRow run a statement prepared once per connection, so
// SQLite does not parse the same SQL for every call. A statement not prepared
// yet runs as plain SQL and is prepared after the transaction (preparing on
// the database needs a connection, and the writer has only the one the
// transaction holds).
func (t *txn) exec(ctx context.Context, q string, args ...any) (sql.Result, error) {
	if st := t.stmts.get(q); st != nil {
		return t.tx.StmtContext(ctx, st).ExecContext(ctx, args...)
	}
	return t.tx.ExecContext(ctx, q, args...)
}

func (t *txn) query(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	if st := t.stmts.get(q); st != nil {
		return t.tx.StmtContext(ctx, st).QueryContext(ctx, args...)
	}
	return t.tx.QueryContext(ctx, q, args...)
}

func (t *txn) queryRow(ctx context.Context, q string, args ...any) *sql.Row {
	if st := t.stmts.get(q); st != nil {
		return t.tx.StmtContext(ctx, st).QueryRowContext(ctx, args...)
	}
	return t.tx.QueryRowContext(ctx, q, args...)
}

// stmtCache holds prepared statements of one database handle by their SQL.
type stmtCache struct {
	db      *sql.DB
	mu      sync.Mutex
	m       map[string]*sql.Stmt
	pending map[string]bool
}

// maxStmts bounds the cache: queries built from filters come in variants.
const maxStmts = 256

func newStmtCache(db *sql.DB) *stmtCache {
	return &stmtCache{db: db, m: map[string]*sql.Stmt{}, pending: map[string]bool{}}
}

// get returns the prepared statement of q, or nil (and remembers q to prepare).
func (c *stmtCache) get(q string) *sql.Stmt {
	c.mu.Lock()
	defer c.mu.Unlock()
	if st, ok := c.m[q]; ok {
		return st
	}
	if len(c.m)+len(c.pending) < maxStmts {
		c.pending[q] = true
	}
	return nil
}

// warm prepares the statements that were missing. It runs after a
// transaction, when a connection is free; a failure only means no cache.
func (c *stmtCache) warm(ctx context.Context) {
	c.mu.Lock()
	if len(c.pending) == 0 {
		c.mu.Unlock()
		return
	}
	var qs []string
	for q := range c.pending {
		qs = append(qs, q)
	}
	clear(c.pending)
	c.mu.Unlock()
	// Not under the lock: preparing waits for a connection, which a
	// transaction that wants the lock may hold.
	for _, q := range qs {
		st, err := c.db.PrepareContext(ctx, q)
		if err != nil {
			continue
		}
		c.mu.Lock()
		if _, dup := c.m[q]; dup || c.m == nil {
			st.Close()
		} else {
			c.m[q] = st
		}
		c.mu.Unlock()
	}
}

func (c *stmtCache) close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	var errs []error
	for _, st := range c.m {
		errs = append(errs, st.Close())
	}
	c.m = nil
	return errors.Join(errs...)
}

// micros converts a time to the stored form; the zero time is 0.
func micros(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMicro()
}

func fromMicros(v int64) time.Time {
	if v == 0 {
		return time.Time{}
	}
	return time.UnixMicro(v).UTC()
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

func notFound(err error, what string) error {
	if errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("%s: %w", what, store.ErrNotFound)
	}
	return fmt.Errorf("%s: %w", what, err)
}
