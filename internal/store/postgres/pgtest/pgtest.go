// Package pgtest gives tests a PostgreSQL store of their own: a schema of
// the database named by DRAY_TEST_POSTGRES that no other test uses while it
// runs.
//
// Start the database and set the variable with:
//
//	export DRAY_TEST_POSTGRES=$(scripts/postgres)
//
// Without it, tests that need PostgreSQL skip, unless DRAY_REQUIRE_POSTGRES=1
// (as in CI), which makes them fail instead.
//
// Two kinds of schema:
//
//   - URL makes a new, empty schema and drops it when the test ends. Use it
//     for a test that migrates the schema itself or changes its structure
//     (adds a trigger, drops a table).
//   - EmptyURL and Open hand out a migrated schema with every table emptied,
//     reused from test to test (and from one run to the next), because
//     creating and migrating a schema costs PostgreSQL half a second and
//     emptying one a few milliseconds. A test on such a schema must change
//     only its rows.
//
// A schema in use is marked by an advisory lock that the test process holds
// on a connection of its own, so test processes that run at once never share
// one, and the schemas of a process that died are reused or dropped.
package pgtest

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash/fnv"
	"io/fs"
	"net/url"
	"os"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dray-dev/dray/internal/store/postgres"
	"github.com/jackc/pgx/v5"
)

// Environment variables the package reads.
const (
	// EnvURL names the database tests use, as a postgres:// URL.
	EnvURL = "DRAY_TEST_POSTGRES"
	// EnvRequire, set to 1, makes a test fail rather than skip when EnvURL
	// is not set.
	EnvRequire = "DRAY_REQUIRE_POSTGRES"
)

// prefix starts the name of every schema the package makes.
const prefix = "dray_test_"

// BaseURL returns the URL in DRAY_TEST_POSTGRES. When it is not set the test
// is skipped, or fails if DRAY_REQUIRE_POSTGRES=1.
func BaseURL(t testing.TB) string {
	t.Helper()
	u := os.Getenv(EnvURL)
	if u != "" {
		return u
	}
	const how = "start PostgreSQL and set it with: export " + EnvURL + "=$(scripts/postgres)"
	if os.Getenv(EnvRequire) == "1" {
		t.Fatalf("%s is not set and %s=1: %s", EnvURL, EnvRequire, how)
	}
	t.Skipf("%s is not set: %s", EnvURL, how)
	return ""
}

// URL creates a new, empty schema for the test and returns the URL that
// selects it (search_path). The schema is dropped, with everything in it,
// when the test ends: close what uses it in a cleanup registered after URL
// (cleanups run last first).
func URL(t testing.TB) string {
	t.Helper()
	base := BaseURL(t)
	var b [8]byte
	rand.Read(b[:])
	schema := prefix + "tmp_" + hex.EncodeToString(b[:])
	p := pool(t, base)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.lock(t, schema)
	p.exec(t, `CREATE SCHEMA `+schema)
	t.Cleanup(func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		p.exec(t, `DROP SCHEMA IF EXISTS `+schema+` CASCADE`)
		p.unlock(t, schema)
	})
	return WithSchema(t, base, schema)
}

// EmptyURL returns the URL of a migrated schema whose tables are empty, the
// test's own until it ends (see the package comment). The test may change
// rows only.
func EmptyURL(t testing.TB) string {
	t.Helper()
	base := BaseURL(t)
	p := pool(t, base)
	schema := p.take(t)
	t.Cleanup(func() { p.give(schema) })
	return WithSchema(t, base, schema)
}

// Open opens a store on an empty schema of the test's own (see EmptyURL) and
// closes it when the test ends.
func Open(t testing.TB) *postgres.Store {
	t.Helper()
	return OpenOptions(t, postgres.Options{})
}

// OpenOptions is Open with options. A zero MaxConns is 4, so that parallel
// tests stay under the server's connection limit.
func OpenOptions(t testing.TB, opts postgres.Options) *postgres.Store {
	t.Helper()
	u := EmptyURL(t)
	if opts.MaxConns == 0 {
		opts.MaxConns = 4
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := postgres.Open(ctx, u, opts)
	if err != nil {
		t.Fatalf("open postgres store: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// WithSchema returns the connection URL raw with its search_path set to
// schema.
func WithSchema(t testing.TB, raw, schema string) string {
	t.Helper()
	if !strings.Contains(raw, "://") {
		// A key=value connection string.
		return raw + " search_path=" + schema
	}
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatalf("%s: %v", EnvURL, err)
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String()
}

// schemaPool is the test process's schemas. It is package state because the
// tests of one binary share it: that is its point.
type schemaPool struct {
	mu     sync.Mutex
	base   string
	holder *pgx.Conn       // holds an advisory lock on each schema in use
	reuse  string          // prefix of reusable schemas of the current migrations
	owned  map[string]bool // schemas the holder locks, in use or free
	free   []string        // reusable schemas this process holds, between tests
}

var (
	poolMu sync.Mutex
	pools  = map[string]*schemaPool{}
)

// pool returns the process's schema pool on the database at base.
func pool(t testing.TB, base string) *schemaPool {
	t.Helper()
	poolMu.Lock()
	defer poolMu.Unlock()
	p := pools[base]
	if p == nil {
		p = &schemaPool{base: base, reuse: prefix + migrationsHash(t) + "_"}
		pools[base] = p
	}
	return p
}

// migrationsHash identifies the migrations: a schema migrated by other ones
// (an older checkout, an edited file) is not reused.
func migrationsHash(t testing.TB) string {
	t.Helper()
	files, err := fs.Glob(postgres.Migrations(), "migrations/*.sql")
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(files)
	h := sha256.New()
	for _, f := range files {
		data, err := fs.ReadFile(postgres.Migrations(), f)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(h, "%s %d\n", f, len(data))
		h.Write(data)
	}
	return hex.EncodeToString(h.Sum(nil))[:8]
}

// connect makes sure the holder connection is up; p.mu is held. A new holder
// holds no locks: the schemas held by the one before are no longer this
// process's. It drops the schemas that no live process uses and that are not
// reusable (left by a test process that died, or of other migrations).
func (p *schemaPool) connect(t testing.TB) {
	t.Helper()
	if p.holder != nil && !p.holder.IsClosed() && p.holder.Ping(context.Background()) == nil {
		return
	}
	// A new holder holds no locks: forget what the old one held.
	p.owned, p.free = map[string]bool{}, nil
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, p.base)
	if err != nil {
		t.Fatalf("connect to %s: %v (is PostgreSQL running? scripts/postgres starts it)", EnvURL, err)
	}
	p.holder = conn
	for _, s := range p.schemas(t) {
		if !strings.HasPrefix(s, p.reuse) && !p.owned[s] && p.tryLock(t, s) {
			p.exec(t, `DROP SCHEMA IF EXISTS `+s+` CASCADE`)
			p.unlock(t, s)
		}
	}
}

// schemas lists the package's schemas in the database.
func (p *schemaPool) schemas(t testing.TB) []string {
	t.Helper()
	rows, err := p.holder.Query(context.Background(), `SELECT nspname FROM pg_namespace WHERE starts_with(nspname, $1) ORDER BY nspname`, prefix)
	if err != nil {
		t.Fatalf("list test schemas: %v", err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatalf("list test schemas: %v", err)
	}
	return names
}

// take returns a reusable schema, emptied, and holds it.
func (p *schemaPool) take(t testing.TB) string {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	p.connect(t)
	var schema string
	if n := len(p.free); n > 0 {
		schema, p.free = p.free[n-1], p.free[:n-1]
	} else {
		for _, s := range p.schemas(t) {
			if strings.HasPrefix(s, p.reuse) && !p.owned[s] && p.tryLock(t, s) {
				schema = s
				break
			}
		}
	}
	if schema == "" {
		var b [6]byte
		rand.Read(b[:])
		schema = p.reuse + hex.EncodeToString(b[:])
		p.lock(t, schema)
		// postgres.Open migrates it.
		p.exec(t, `CREATE SCHEMA `+schema)
		return schema
	}
	// Empty every table but the migrations' record, in one round trip.
	p.exec(t, fmt.Sprintf(`DO $$
		DECLARE r record;
		BEGIN
			FOR r IN SELECT tablename FROM pg_tables WHERE schemaname = '%s' AND tablename <> 'schema_migrations' LOOP
				EXECUTE format('DELETE FROM %%I.%%I', '%s', r.tablename);
			END LOOP;
		END $$`, schema, schema))
	return schema
}

// give puts a schema back for the next test.
func (p *schemaPool) give(schema string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.owned[schema] {
		p.free = append(p.free, schema)
	}
}

func key(schema string) int64 {
	h := fnv.New64a()
	h.Write([]byte("dray-pgtest\x00" + schema))
	return int64(h.Sum64())
}

// tryLock takes a schema's lock, unless another process holds it. (A
// session may take its own advisory lock again: callers skip owned schemas.)
func (p *schemaPool) tryLock(t testing.TB, schema string) bool {
	t.Helper()
	var ok bool
	if err := p.holder.QueryRow(context.Background(), `SELECT pg_try_advisory_lock($1)`, key(schema)).Scan(&ok); err != nil {
		t.Fatalf("lock schema %s: %v", schema, err)
	}
	if ok {
		p.owned[schema] = true
	}
	return ok
}

func (p *schemaPool) lock(t testing.TB, schema string) {
	t.Helper()
	p.connect(t)
	if !p.tryLock(t, schema) {
		t.Fatalf("schema %s is in use", schema)
	}
}

func (p *schemaPool) unlock(t testing.TB, schema string) {
	t.Helper()
	delete(p.owned, schema)
	p.holder.Exec(context.Background(), `SELECT pg_advisory_unlock($1)`, key(schema))
}

// exec runs SQL on the holder connection.
func (p *schemaPool) exec(t testing.TB, sql string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := p.holder.Exec(ctx, sql); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}
