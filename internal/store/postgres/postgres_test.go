package postgres_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dray-dev/dray/internal/engine"
	"github.com/dray-dev/dray/internal/store"
	"github.com/dray-dev/dray/internal/store/postgres"
	"github.com/dray-dev/dray/internal/store/postgres/pgtest"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// testLogger logs to the test's log.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, nil))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

// connect opens a connection of the test's own to the schema of url.
func connect(t *testing.T, url string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func mustUpdate(t *testing.T, s store.Store, fn func(ctx context.Context, tx store.Tx) error) {
	t.Helper()
	ctx := t.Context()
	if err := s.Update(ctx, func(tx store.Tx) error { return fn(ctx, tx) }); err != nil {
		t.Fatalf("Update: %v", err)
	}
}

// Update transactions are serializable, as SQLite's one writer is: a limit
// checked by reading and then enforced by writing holds however many
// transactions race for the last slot (a write skew under READ COMMITTED).
func TestUpdateSerializable(t *testing.T) {
	s := pgtest.Open(t)
	const workers, tries, slots = 8, 5, 3
	var wg sync.WaitGroup
	start := make(chan struct{})
	for w := range workers {
		wg.Go(func() {
			<-start
			for i := range tries {
				err := s.Update(t.Context(), func(tx store.Tx) error {
					n, err := tx.CountActive(t.Context(), "", "warehouse")
					if err != nil || n >= slots {
						return err
					}
					return tx.InsertAttempt(t.Context(), &engine.Attempt{
						RunID: fmt.Sprintf("run-%d-%d", w, i), Pipeline: "p", Task: "t", Number: 1,
						State: engine.AttemptQueued, Pool: "warehouse", Executor: "local",
					})
				})
				if err != nil {
					t.Errorf("Update: %v", err)
				}
			}
		})
	}
	close(start)
	wg.Wait()
	var n int
	if err := s.View(t.Context(), func(tx store.Tx) error {
		var err error
		n, err = tx.CountActive(t.Context(), "", "warehouse")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if n != slots {
		t.Errorf("%d attempts active in a pool of %d slots", n, slots)
	}
}

// A transaction that keeps failing to serialize is run again Options.Retries
// times, then fails with store.ErrConflict.
func TestUpdateRetries(t *testing.T) {
	s := pgtest.OpenOptions(t, postgres.Options{Retries: 2})
	calls := 0
	err := s.Update(t.Context(), func(tx store.Tx) error {
		calls++
		return fmt.Errorf("read: %w", &pgconn.PgError{Code: "40001", Message: "could not serialize access"})
	})
	if !errors.Is(err, store.ErrConflict) {
		t.Errorf("Update: got %v, want store.ErrConflict", err)
	}
	if calls != 3 {
		t.Errorf("fn ran %d times, want 3 (the first and 2 retries)", calls)
	}

	// A deadlock is retried too, and the retry commits.
	calls = 0
	mustUpdate(t, s, func(ctx context.Context, tx store.Tx) error {
		calls++
		if calls == 1 {
			return &pgconn.PgError{Code: "40P01", Message: "deadlock detected"}
		}
		return tx.PutAgent(ctx, &store.Agent{ID: "agent-1", State: "active"})
	})
	if calls != 2 {
		t.Errorf("fn ran %d times after a deadlock, want 2", calls)
	}
}

// A statement that fails aborts a PostgreSQL transaction: if fn goes on and
// returns nil all the same, Update fails and commits nothing.
func TestUpdateSwallowedError(t *testing.T) {
	s := pgtest.Open(t)
	item := []json.RawMessage{json.RawMessage(`1`)}
	mustUpdate(t, s, func(ctx context.Context, tx store.Tx) error { return tx.InsertItems(ctx, "run-1", "fan", item) })
	err := s.Update(t.Context(), func(tx store.Tx) error {
		if err := tx.InsertItems(t.Context(), "run-1", "fan", item); err == nil {
			t.Error("InsertItems of a recorded index succeeded")
		}
		tx.PutAgent(t.Context(), &store.Agent{ID: "agent-1", State: "active"})
		return nil
	})
	if err == nil || !strings.Contains(err.Error(), "duplicate key") {
		t.Errorf("Update after a failed statement: got %v, want an error that names the statement's", err)
	}
	err = s.View(t.Context(), func(tx store.Tx) error {
		_, err := tx.Agent(t.Context(), "agent-1")
		return err
	})
	if !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Agent written after the failed statement: got %v, want store.ErrNotFound", err)
	}

	// A run id that is taken fails InsertRun only, as on SQLite: the
	// transaction goes on.
	mustUpdate(t, s, func(ctx context.Context, tx store.Tx) error {
		return tx.InsertRun(ctx, &engine.Run{ID: "run-1", State: engine.RunQueued})
	})
	mustUpdate(t, s, func(ctx context.Context, tx store.Tx) error {
		if err := tx.InsertRun(ctx, &engine.Run{ID: "run-1", State: engine.RunQueued}); !errors.Is(err, store.ErrConflict) {
			t.Errorf("InsertRun of a taken id: got %v, want store.ErrConflict", err)
		}
		return tx.PutAgent(ctx, &store.Agent{ID: "agent-2", State: "active"})
	})
}

// A lock held for longer than Options.LockTimeout fails the Update with
// store.ErrLocked.
func TestLockTimeout(t *testing.T) {
	url := pgtest.EmptyURL(t)
	s, err := postgres.Open(t.Context(), url, postgres.Options{LockTimeout: 100 * time.Millisecond, MaxConns: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	mustUpdate(t, s, func(ctx context.Context, tx store.Tx) error {
		return tx.InsertRun(ctx, &engine.Run{ID: "run-1", State: engine.RunRunning})
	})
	conn := connect(t, url)
	tx, err := conn.Begin(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(context.Background())
	if _, err := tx.Exec(t.Context(), `SELECT 1 FROM runs WHERE id = 'run-1' FOR UPDATE`); err != nil {
		t.Fatal(err)
	}
	err = s.Update(t.Context(), func(tx store.Tx) error {
		_, err := tx.Run(t.Context(), "run-1")
		return err
	})
	if !errors.Is(err, store.ErrLocked) {
		t.Errorf("Update of a locked run: got %v, want store.ErrLocked", err)
	}
}

// A full disk (SQLSTATE 53100) is store.ErrFull.
func TestDiskFull(t *testing.T) {
	url := pgtest.URL(t)
	s, err := postgres.Open(t.Context(), url, postgres.Options{MaxConns: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	// PostgreSQL's error as it reports a full disk, without filling one.
	if _, err := connect(t, url).Exec(t.Context(), `
		CREATE FUNCTION disk_full() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			RAISE EXCEPTION 'could not extend file: No space left on device' USING ERRCODE = 'disk_full';
		END $$;
		CREATE TRIGGER disk_full BEFORE INSERT ON agents FOR EACH ROW EXECUTE FUNCTION disk_full()`); err != nil {
		t.Fatal(err)
	}
	err = s.Update(t.Context(), func(tx store.Tx) error {
		return tx.PutAgent(t.Context(), &store.Agent{ID: "agent-1", State: "active"})
	})
	if !errors.Is(err, store.ErrFull) {
		t.Errorf("Update on a full disk: got %v, want store.ErrFull", err)
	}
}

// Text PostgreSQL cannot hold (NUL, invalid UTF-8), which a task may print,
// is stored with U+FFFD in place of each bad byte rather than failing the
// Update.
func TestBadText(t *testing.T) {
	s := pgtest.Open(t)
	line := store.LogLine{Seq: 1, Stream: "stdout", Text: "a\x00b\xffc ✓"}
	mustUpdate(t, s, func(ctx context.Context, tx store.Tx) error {
		return tx.AppendLogs(ctx, 1, []store.LogLine{line})
	})
	var got []store.LogLine
	if err := s.View(t.Context(), func(tx store.Tx) error {
		var err error
		got, err = tx.Logs(t.Context(), 1, 0, 10)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Text != "a\uFFFDb\uFFFDc ✓" {
		t.Errorf("Logs: got %+v, want one line %q", got, "a\uFFFDb\uFFFDc ✓")
	}
}

// Processes that start at once on a new schema create it and migrate it
// once; a schema migrated by a newer dray is refused.
func TestOpenConcurrent(t *testing.T) {
	base := pgtest.BaseURL(t)
	var b [6]byte
	rand.Read(b[:])
	schema := "dray_open_test_" + hex.EncodeToString(b[:]) // not pgtest's prefix: its sweeps would drop it
	url := pgtest.WithSchema(t, base, schema)
	admin := connect(t, base)
	t.Cleanup(func() {
		admin.Exec(context.Background(), `DROP SCHEMA IF EXISTS `+pgx.Identifier{schema}.Sanitize()+` CASCADE`)
	})
	const n = 4
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			s, err := postgres.Open(t.Context(), url, postgres.Options{MaxConns: 1})
			if err != nil {
				t.Errorf("Open: %v", err)
				return
			}
			defer s.Close()
			if got := s.Schema(); got != schema {
				t.Errorf("Schema() = %q, want %q", got, schema)
			}
			if err := s.Ping(t.Context()); err != nil {
				t.Errorf("Ping: %v", err)
			}
		})
	}
	wg.Wait()
	var versions int
	if err := admin.QueryRow(t.Context(), `SELECT count(*) FROM `+pgx.Identifier{schema, "schema_migrations"}.Sanitize()).Scan(&versions); err != nil {
		t.Fatal(err)
	}
	migs, err := fs.Glob(postgres.Migrations(), "migrations/*.sql")
	if err != nil || len(migs) == 0 {
		t.Fatalf("migrations: %v %v", migs, err)
	}
	if versions != len(migs) {
		t.Errorf("schema_migrations holds %d versions, want %d (each migration once)", versions, len(migs))
	}

	if _, err := admin.Exec(t.Context(), `INSERT INTO `+pgx.Identifier{schema, "schema_migrations"}.Sanitize()+` VALUES (99, 0)`); err != nil {
		t.Fatal(err)
	}
	if s, err := postgres.Open(t.Context(), url, postgres.Options{MaxConns: 1}); err == nil || !strings.Contains(err.Error(), "upgrade dray") {
		t.Errorf("Open of a schema at version 99: got %v, want an error that says to upgrade", err)
		if err == nil {
			s.Close()
		}
	}
}
