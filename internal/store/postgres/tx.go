package postgres

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/dray-dev/dray/internal/store"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Update runs fn in a SERIALIZABLE transaction and commits when fn returns
// nil; it rolls back when fn returns an error or panics. When the
// transaction fails to serialize with others (or deadlocks), it runs fn again,
// up to Options.Retries times, alone among writers (see the package comment);
// if every try fails, the error is store.ErrConflict. Events of Tx.Notify are
// delivered to this store's listeners once the commit succeeded, and to other
// processes' by PostgreSQL.
func (s *Store) Update(ctx context.Context, fn func(store.Tx) error) error {
	for try := 0; ; try++ {
		err := s.update(ctx, fn, try > 0)
		var again *retryError
		if !errors.As(err, &again) {
			return err
		}
		if try >= s.retries {
			return fmt.Errorf("update %s: gave up after %d tries: %w (%w)", s.where, try+1, again.err, store.ErrConflict)
		}
		s.retried.Add(1)
		s.log.Debug("postgres store: a transaction failed to serialize; running it again alone", "try", try+1, "err", again.err)
		// The retry queues for the exclusive gate anyway; a little jitter
		// keeps the retries of one burst from arriving in lockstep.
		wait := time.NewTimer(rand.N(time.Millisecond << min(try, 4)))
		select {
		case <-wait.C:
		case <-ctx.Done():
			wait.Stop()
			return fmt.Errorf("update %s: %w (retrying after: %w)", s.where, ctx.Err(), again.err)
		}
	}
}

// retryError says that a transaction failed to serialize and may be run
// again.
type retryError struct{ err error }

func (e *retryError) Error() string { return "retry: " + e.err.Error() }

// Begin statements of Update: the gate's lock comes before the first query,
// which takes the transaction's snapshot, so that an exclusive retry sees
// every transaction that ran before it.
const (
	beginShared    = `BEGIN ISOLATION LEVEL SERIALIZABLE; LOCK TABLE write_gate IN ROW SHARE MODE`
	beginExclusive = `BEGIN ISOLATION LEVEL SERIALIZABLE; LOCK TABLE write_gate IN EXCLUSIVE MODE`
)

// update runs fn in one transaction; it returns a *retryError when running
// it again may succeed.
func (s *Store) update(ctx context.Context, fn func(store.Tx) error, exclusive bool) error {
	pc, err := s.pool.Acquire(ctx)
	if err != nil {
		return s.wrap("begin update", err)
	}
	// Release destroys a connection left in a transaction or broken.
	defer pc.Release()
	conn := pc.Conn()
	begin := beginShared
	if exclusive {
		begin = beginExclusive
	}
	if _, err := conn.Exec(ctx, begin); err != nil {
		rollback(ctx, conn)
		if retryable(err) {
			return &retryError{err}
		}
		return s.wrap("begin update", err)
	}
	t := &txn{s: s, conn: conn, write: true}
	defer func() {
		if p := recover(); p != nil {
			rollback(ctx, conn)
			panic(p)
		}
	}()
	if err := fn(t); err != nil {
		rollback(ctx, conn)
		if retryable(err) || retryable(t.dbErr) {
			return &retryError{firstOf(t.dbErr, err)}
		}
		return s.mapErr(t.explain(err))
	}
	if err := t.commit(ctx); err != nil {
		rollback(ctx, conn)
		if retryable(err) {
			return &retryError{err}
		}
		return s.wrap("commit", err)
	}
	s.deliver(t.events)
	return nil
}

// View runs fn in a REPEATABLE READ READ ONLY transaction: one snapshot, and
// writes fail.
func (s *Store) View(ctx context.Context, fn func(store.Tx) error) error {
	pc, err := s.pool.Acquire(ctx)
	if err != nil {
		return s.wrap("begin view", err)
	}
	defer pc.Release()
	conn := pc.Conn()
	if _, err := conn.Exec(ctx, `BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY`); err != nil {
		rollback(ctx, conn)
		return s.wrap("begin view", err)
	}
	defer rollback(ctx, conn)
	t := &txn{s: s, conn: conn}
	if err := fn(t); err != nil {
		return s.mapErr(t.explain(err))
	}
	return nil
}

// rollback ends the connection's transaction, if it has one. A connection it
// cannot roll back stays in its transaction, and pgxpool destroys it on
// Release.
func rollback(ctx context.Context, conn *pgx.Conn) {
	if conn.PgConn().TxStatus() == 'I' || conn.IsClosed() {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	conn.Exec(ctx, `ROLLBACK`)
}

// txn implements store.Tx on a connection in a transaction.
type txn struct {
	s      *Store
	conn   *pgx.Conn
	write  bool     // in Update: Run locks the run
	events []string // to notify at commit
	// dbErr is the first error of the database in the transaction. After it
	// PostgreSQL refuses every statement but ROLLBACK, and it says why.
	dbErr error
}

// commit notifies the transaction's events and commits, in one round trip.
func (t *txn) commit(ctx context.Context) error {
	q := "COMMIT"
	if len(t.events) > 0 {
		if t.conn.PgConn().ParameterStatus("standard_conforming_strings") == "on" {
			q = t.notifySQL() + "; COMMIT"
		} else if _, err := t.exec(ctx, `SELECT pg_notify($1, e) FROM unnest($2::text[]) e`, t.s.channel, t.events); err != nil {
			return fmt.Errorf("notify %q: %w", t.events, err)
		}
	}
	res, err := t.conn.PgConn().Exec(ctx, q).ReadAll()
	if err != nil {
		return err
	}
	if tag := res[len(res)-1].CommandTag; tag.String() != "COMMIT" {
		// COMMIT of a transaction in which a statement failed rolls back.
		return fmt.Errorf("the transaction was rolled back: a statement in it failed: %w", firstOf(t.dbErr, errors.New(tag.String())))
	}
	return nil
}

// notifySQL is a statement that notifies the transaction's events, with the
// events as literals (standard_conforming_strings is on: only ' needs
// doubling).
func (t *txn) notifySQL() string {
	var b strings.Builder
	b.WriteString("SELECT ")
	for i, e := range t.events {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "pg_notify(%s, %s)", quote(t.s.channel), quote(e))
	}
	return b.String()
}

func quote(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// explain adds the transaction's first failure to an error that only says a
// later statement was refused because of it.
func (t *txn) explain(err error) error {
	var pe *pgconn.PgError
	if t.dbErr != nil && errors.As(err, &pe) && pe.Code == "25P02" && !errors.Is(err, t.dbErr) {
		return fmt.Errorf("%w (the transaction had failed before: %w)", err, t.dbErr)
	}
	return err
}

func firstOf(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// note records the transaction's first database error and returns err.
func (t *txn) note(err error) error {
	if err != nil && t.dbErr == nil && !errors.Is(err, pgx.ErrNoRows) {
		t.dbErr = err
	}
	return err
}

func (t *txn) exec(ctx context.Context, q string, args ...any) (pgconn.CommandTag, error) {
	tag, err := t.conn.Exec(ctx, q, args...)
	return tag, t.note(err)
}

func (t *txn) queryRow(ctx context.Context, q string, args ...any) scanner {
	return row{t.conn.QueryRow(ctx, q, args...), t}
}

type scanner interface{ Scan(dest ...any) error }

type row struct {
	r pgx.Row
	t *txn
}

func (r row) Scan(dest ...any) error { return r.t.note(r.r.Scan(dest...)) }

// list runs a query and scans every row with scan.
func list[T any](ctx context.Context, t *txn, op string, scan func(scanner) (T, error), q string, args ...any) ([]T, error) {
	rows, err := t.conn.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, t.note(err))
	}
	defer rows.Close()
	var out []T
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", op, t.note(err))
		}
		out = append(out, v)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", op, t.note(err))
	}
	return out, nil
}
