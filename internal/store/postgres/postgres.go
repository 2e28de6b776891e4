// Package postgres is dray's PostgreSQL state store, for a server with
// several replicas, a scheduler and agents on one database. It speaks to
// PostgreSQL through pgx and its connection pool; its schema is plain SQL in
// migrations/, applied by Open.
//
// Transactions. Code above the store was written against SQLite, where one
// writer runs at a time. Update gives the same guarantee on PostgreSQL: its
// transactions are SERIALIZABLE, and one that fails to serialize (SQLSTATE
// 40001, or a deadlock, 40P01) is rolled back and its fn run again. A retry
// first takes the write gate (a table lock) exclusively, before its snapshot,
// so it runs alone among writers and does not fail again: contention turns
// into a short queue rather than a storm of retries. fn must therefore be
// safe to run more than once, and must not act outside the transaction until
// Update returns. View is a REPEATABLE READ READ ONLY transaction.
//
// A schema other than public is chosen with search_path in the URL
// (postgres://u:p@host/db?search_path=dray); Open creates it when it is
// missing. Each schema is a separate dray installation, with its own
// notification channel.
//
// The store needs a connection of its own for the length of a transaction
// and one for each Listen: a pooler in front of PostgreSQL must work in
// session mode (PgBouncer's transaction mode cannot carry LISTEN).
package postgres

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"hash/fnv"
	"io/fs"
	"log/slog"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dray-dev/dray/internal/store"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Migrations returns the schema's migrations: files migrations/NNNN_name.sql,
// applied in name order, each once.
func Migrations() fs.FS { return migrations }

// Options tune a store; zero values are the defaults.
type Options struct {
	// MaxConns caps the connection pool (default: pool_max_conns in the URL,
	// else the greater of 4 and the number of CPUs). Listen uses connections
	// of its own, outside the pool.
	MaxConns int32
	// LockTimeout is how long a statement waits for a lock held by another
	// transaction before it fails with store.ErrLocked (default 10s; a
	// lock_timeout in the URL wins).
	LockTimeout time.Duration
	// Retries is how many times Update runs fn again after a serialization
	// failure or a deadlock (default 5).
	Retries int
	// Logger reports what the store recovers from by itself (a lost Listen
	// connection). Default: slog.Default().
	Logger *slog.Logger
}

// Store is a PostgreSQL store. Its methods are safe for concurrent use.
type Store struct {
	pool    *pgxpool.Pool
	cfg     *pgx.ConnConfig // for Listen's own connections
	schema  string
	channel string // the LISTEN/NOTIFY channel of the schema
	retries int
	retried atomic.Int64 // transactions run again
	log     *slog.Logger
	where   string // host/database, for error messages

	// pids are the backend process ids of the pool's connections: Listen
	// skips notifications they sent, because events of this store are
	// delivered in-process as their transactions commit.
	pids sync.Map // uint32 -> struct{}

	listenMu  sync.Mutex
	listeners map[*func(string)]struct{}
	// closed ends the Listen calls when the store closes.
	closed      context.Context
	closeListen context.CancelFunc
}

var _ store.Store = (*Store)(nil)

// Open connects to the database at url (a postgres:// URL or a key=value
// connection string), creates the schema its search_path names if missing,
// and applies the migrations the database lacks. Several processes may open
// the same database at once: migrations run one process at a time.
func Open(ctx context.Context, url string, opts Options) (*Store, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("open postgres: %w", err) // pgx redacts the password
	}
	where := cfg.ConnConfig.Host + "/" + cfg.ConnConfig.Database
	if opts.MaxConns > 0 {
		cfg.MaxConns = opts.MaxConns
	}
	if opts.Retries <= 0 {
		opts.Retries = 5
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if _, ok := cfg.ConnConfig.RuntimeParams["lock_timeout"]; !ok {
		if opts.LockTimeout <= 0 {
			opts.LockTimeout = 10 * time.Second
		}
		cfg.ConnConfig.RuntimeParams["lock_timeout"] = strconv.FormatInt(opts.LockTimeout.Milliseconds(), 10)
	}
	s := &Store{
		cfg:     cfg.ConnConfig.Copy(),
		retries: opts.Retries,
		log:     opts.Logger,
		where:   where,
	}
	s.closed, s.closeListen = context.WithCancel(context.Background())
	cfg.AfterConnect = func(_ context.Context, c *pgx.Conn) error {
		s.pids.Store(c.PgConn().PID(), struct{}{})
		return nil
	}
	cfg.BeforeClose = func(c *pgx.Conn) { s.pids.Delete(c.PgConn().PID()) }
	if s.pool, err = pgxpool.NewWithConfig(ctx, cfg); err != nil {
		s.closeListen()
		return nil, fmt.Errorf("open postgres %s: %w", where, err)
	}
	if err := s.migrate(ctx); err != nil {
		s.Close()
		return nil, err
	}
	s.channel = channel(s.schema)
	return s, nil
}

// Close ends the Listen calls and closes the pool's connections once the
// transactions in progress have ended.
func (s *Store) Close() error {
	s.closeListen()
	s.pool.Close()
	return nil
}

// Ping checks that the database answers.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.pool.Ping(ctx); err != nil {
		return s.wrap("ping", err)
	}
	return nil
}

// Retried returns how many times Update has run a transaction again after a
// serialization failure or a deadlock: a measure of write contention.
func (s *Store) Retried() int64 { return s.retried.Load() }

// Schema returns the schema the store keeps its tables in.
func (s *Store) Schema() string { return s.schema }

// ensureSchema returns the schema tables are created in: the first schema of
// the search path, which it creates when it does not exist.
func ensureSchema(ctx context.Context, conn *pgx.Conn) (string, error) {
	var current *string
	if err := conn.QueryRow(ctx, `SELECT current_schema()`).Scan(&current); err != nil {
		return "", fmt.Errorf("read the current schema: %w", err)
	}
	if current != nil {
		return *current, nil
	}
	// No schema of the search path exists: make the first one.
	var first string
	if err := conn.QueryRow(ctx, `SELECT trim(both '"' from trim(split_part(current_setting('search_path'), ',', 1)))`).Scan(&first); err != nil {
		return "", fmt.Errorf("read the search path: %w", err)
	}
	if first == "" || strings.HasPrefix(first, "$") {
		return "", errors.New("the search path names no schema to create the tables in: set search_path in the URL")
	}
	err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		// Processes starting at once would race to create it.
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, lockKey("schema", first)); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `CREATE SCHEMA IF NOT EXISTS `+pgx.Identifier{first}.Sanitize())
		return err
	})
	if err != nil {
		return "", fmt.Errorf("create schema %s: %w", first, err)
	}
	return first, nil
}

// lockKey is the advisory lock key for what in schema: a hash, as advisory
// locks are database-wide.
func lockKey(what, schema string) int64 {
	h := fnv.New64a()
	h.Write([]byte("dray\x00" + what + "\x00" + schema))
	return int64(h.Sum64())
}

// channel is the schema's notification channel: "dray" for public, else
// "dray:" and the schema, so that installations in other schemas of the
// database hear nothing of it.
func channel(schema string) string {
	if schema == "public" {
		return "dray"
	}
	c := "dray:" + schema
	if len(c) > 63 { // the longest identifier PostgreSQL keeps
		c = fmt.Sprintf("dray:%x", uint64(lockKey("channel", schema)))
	}
	return c
}

func (s *Store) migrate(ctx context.Context) error {
	files, err := fs.Glob(migrations, "migrations/*.sql")
	if err != nil {
		return err
	}
	sort.Strings(files)
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return s.wrap("migrate", err)
	}
	defer conn.Release()
	if s.schema, err = ensureSchema(ctx, conn.Conn()); err != nil {
		return s.wrap("open", err)
	}
	err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		// One process at a time: the others wait here, then find nothing to do.
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, lockKey("migrate", s.schema)); err != nil {
			return fmt.Errorf("lock for migrations: %w", err)
		}
		if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY KEY, applied_at bigint NOT NULL)`); err != nil {
			return err
		}
		var have int
		if err := tx.QueryRow(ctx, `SELECT COALESCE(max(version), 0) FROM schema_migrations`).Scan(&have); err != nil {
			return err
		}
		if have > len(files) {
			return fmt.Errorf("schema %s has version %d, newer than this dray knows (%d): upgrade dray", s.schema, have, len(files))
		}
		for i, f := range files[have:] {
			version := have + i + 1
			src, err := migrations.ReadFile(f)
			if err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, string(src)); err != nil {
				return fmt.Errorf("apply migration %s: %w", f, err)
			}
			if _, err := tx.Exec(ctx, `INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)`, version, time.Now().UnixMicro()); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return s.wrap("migrate schema "+s.schema, err)
	}
	return nil
}

// SQLSTATE codes the store acts on.
const (
	codeSerialization = "40001"
	codeDeadlock      = "40P01"
	codeLockTimeout   = "55P03"
	codeDiskFull      = "53100"
)

// retryable reports whether err is a failure that running the transaction
// again may not meet.
func retryable(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && (pe.Code == codeSerialization || pe.Code == codeDeadlock)
}

// wrap adds the operation and the database to an error of the database, and
// maps it (see mapErr).
func (s *Store) wrap(op string, err error) error {
	return s.mapErr(fmt.Errorf("%s %s: %w", op, s.where, err))
}

// mapErr maps PostgreSQL's errors, wherever they are in err's chain, to the
// store's: a full disk to store.ErrFull, a lock waited for too long to
// store.ErrLocked. Other errors pass unchanged.
func (s *Store) mapErr(err error) error {
	var pe *pgconn.PgError
	if !errors.As(err, &pe) {
		return err
	}
	switch pe.Code {
	case codeDiskFull:
		return fmt.Errorf("%w (%w)", err, store.ErrFull)
	case codeLockTimeout:
		return fmt.Errorf("%w: another transaction held a lock for longer than lock_timeout (%w)", err, store.ErrLocked)
	}
	return err
}
