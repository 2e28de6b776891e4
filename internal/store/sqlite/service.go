package sqlite

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/dray-dev/dray/internal/store"
)

// Users, tokens, sessions, audit entries, schedules and leases: the tables of
// dray as a service.

func (t *txn) PutUser(ctx context.Context, u *store.User) error {
	_, err := t.exec(ctx, `INSERT OR REPLACE INTO users (name, role, password_hash, created_at, updated_at)
		VALUES (?, ?, ?, ?, ?)`, u.Name, u.Role, u.PasswordHash, micros(u.CreatedAt), micros(u.UpdatedAt))
	if err != nil {
		return fmt.Errorf("put user %s: %w", u.Name, err)
	}
	return nil
}

const userColumns = `name, role, password_hash, created_at, updated_at`

func scanUser(sc scanner) (*store.User, error) {
	var u store.User
	var created, updated int64
	if err := sc.Scan(&u.Name, &u.Role, &u.PasswordHash, &created, &updated); err != nil {
		return nil, err
	}
	u.CreatedAt, u.UpdatedAt = fromMicros(created), fromMicros(updated)
	return &u, nil
}

func (t *txn) User(ctx context.Context, name string) (*store.User, error) {
	u, err := scanUser(t.queryRow(ctx, `SELECT `+userColumns+` FROM users WHERE name = ?`, name))
	if err != nil {
		return nil, notFound(err, "user "+name)
	}
	return u, nil
}

func (t *txn) Users(ctx context.Context) ([]*store.User, error) {
	return list(ctx, t, "list users", scanUser, `SELECT `+userColumns+` FROM users ORDER BY name`)
}

func (t *txn) DeleteUser(ctx context.Context, name string) error {
	res, err := t.exec(ctx, `DELETE FROM users WHERE name = ?`, name)
	if err != nil {
		return fmt.Errorf("delete user %s: %w", name, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("delete user %s: %w", name, store.ErrNotFound)
	}
	if _, err := t.exec(ctx, `DELETE FROM sessions WHERE user = ?`, name); err != nil {
		return fmt.Errorf("delete sessions of user %s: %w", name, err)
	}
	return nil
}

func (t *txn) PutToken(ctx context.Context, k *store.Token) error {
	_, err := t.exec(ctx, `INSERT OR REPLACE INTO tokens
		(id, name, role, hash, created_by, created_at, expires_at, last_used_at, revoked_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`, k.ID, k.Name, k.Role, k.Hash, k.CreatedBy,
		micros(k.CreatedAt), micros(k.ExpiresAt), micros(k.LastUsedAt), micros(k.RevokedAt))
	if err != nil {
		return fmt.Errorf("put token %s: %w", k.ID, err)
	}
	return nil
}

const tokenColumns = `id, name, role, hash, created_by, created_at, expires_at, last_used_at, revoked_at`

func scanToken(sc scanner) (*store.Token, error) {
	var k store.Token
	var created, expires, used, revoked int64
	if err := sc.Scan(&k.ID, &k.Name, &k.Role, &k.Hash, &k.CreatedBy, &created, &expires, &used, &revoked); err != nil {
		return nil, err
	}
	k.CreatedAt, k.ExpiresAt, k.LastUsedAt, k.RevokedAt = fromMicros(created), fromMicros(expires), fromMicros(used), fromMicros(revoked)
	return &k, nil
}

func (t *txn) Token(ctx context.Context, id string) (*store.Token, error) {
	k, err := scanToken(t.queryRow(ctx, `SELECT `+tokenColumns+` FROM tokens WHERE id = ?`, id))
	if err != nil {
		return nil, notFound(err, "token "+id)
	}
	return k, nil
}

func (t *txn) Tokens(ctx context.Context) ([]*store.Token, error) {
	return list(ctx, t, "list tokens", scanToken, `SELECT `+tokenColumns+` FROM tokens ORDER BY created_at, id`)
}

func (t *txn) PutSession(ctx context.Context, s *store.Session) error {
	_, err := t.exec(ctx, `INSERT OR REPLACE INTO sessions (id, user, csrf, created_at, expires_at)
		VALUES (?, ?, ?, ?, ?)`, s.ID, s.User, s.CSRF, micros(s.CreatedAt), micros(s.ExpiresAt))
	if err != nil {
		return fmt.Errorf("put session: %w", err)
	}
	return nil
}

func (t *txn) Session(ctx context.Context, id string) (*store.Session, error) {
	var s store.Session
	var created, expires int64
	err := t.queryRow(ctx, `SELECT id, user, csrf, created_at, expires_at FROM sessions WHERE id = ?`, id).
		Scan(&s.ID, &s.User, &s.CSRF, &created, &expires)
	if err != nil {
		return nil, notFound(err, "session")
	}
	s.CreatedAt, s.ExpiresAt = fromMicros(created), fromMicros(expires)
	return &s, nil
}

func (t *txn) DeleteSessions(ctx context.Context, id, user string, expired time.Time) (int, error) {
	var conds []string
	var args []any
	if id != "" {
		conds, args = append(conds, "id = ?"), append(args, id)
	}
	if user != "" {
		conds, args = append(conds, "user = ?"), append(args, user)
	}
	if !expired.IsZero() {
		conds, args = append(conds, "expires_at <= ?"), append(args, micros(expired))
	}
	if len(conds) == 0 {
		return 0, nil
	}
	res, err := t.exec(ctx, `DELETE FROM sessions WHERE `+strings.Join(conds, " OR "), args...)
	if err != nil {
		return 0, fmt.Errorf("delete sessions: %w", err)
	}
	n, _ := res.RowsAffected()
	return int(n), nil
}

func (t *txn) InsertAudit(ctx context.Context, e *store.AuditEntry) error {
	err := t.queryRow(ctx, `INSERT INTO audit (ts, actor, action, target, detail, address)
		VALUES (?, ?, ?, ?, ?, ?) RETURNING id`, micros(e.Time), e.Actor, e.Action, e.Target, e.Detail, e.Address).Scan(&e.ID)
	if err != nil {
		return fmt.Errorf("insert audit entry %s: %w", e.Action, err)
	}
	return nil
}

func (t *txn) Audit(ctx context.Context, f store.AuditFilter) ([]*store.AuditEntry, error) {
	q := `SELECT id, ts, actor, action, target, detail, address FROM audit WHERE 1=1`
	var args []any
	if f.Before > 0 {
		q, args = q+` AND id < ?`, append(args, f.Before)
	}
	if f.Actor != "" {
		q, args = q+` AND actor = ?`, append(args, f.Actor)
	}
	q += ` ORDER BY id DESC`
	if f.Limit > 0 {
		q, args = q+` LIMIT ?`, append(args, f.Limit)
	}
	return list(ctx, t, "list audit entries", func(sc scanner) (*store.AuditEntry, error) {
		var e store.AuditEntry
		var ts int64
		if err := sc.Scan(&e.ID, &ts, &e.Actor, &e.Action, &e.Target, &e.Detail, &e.Address); err != nil {
			return nil, err
		}
		e.Time = fromMicros(ts)
		return &e, nil
	}, q, args...)
}

func (t *txn) PutSchedule(ctx context.Context, s *store.Schedule) error {
	_, err := t.exec(ctx, `INSERT OR REPLACE INTO schedules (pipeline, paused, paused_set, cursor, updated_at)
		VALUES (?, ?, ?, ?, ?)`, s.Pipeline, boolInt(s.Paused), boolInt(s.PausedSet), micros(s.Cursor), micros(s.UpdatedAt))
	if err != nil {
		return fmt.Errorf("put schedule of %s: %w", s.Pipeline, err)
	}
	return nil
}

const scheduleColumns = `pipeline, paused, paused_set, cursor, updated_at`

func scanSchedule(sc scanner) (*store.Schedule, error) {
	var s store.Schedule
	var cursor, updated int64
	if err := sc.Scan(&s.Pipeline, &s.Paused, &s.PausedSet, &cursor, &updated); err != nil {
		return nil, err
	}
	s.Cursor, s.UpdatedAt = fromMicros(cursor), fromMicros(updated)
	return &s, nil
}

func (t *txn) Schedule(ctx context.Context, pipeline string) (*store.Schedule, error) {
	s, err := scanSchedule(t.queryRow(ctx, `SELECT `+scheduleColumns+` FROM schedules WHERE pipeline = ?`, pipeline))
	if err != nil {
		return nil, notFound(err, "schedule of "+pipeline)
	}
	return s, nil
}

func (t *txn) Schedules(ctx context.Context) ([]*store.Schedule, error) {
	return list(ctx, t, "list schedules", scanSchedule, `SELECT `+scheduleColumns+` FROM schedules ORDER BY pipeline`)
}

func (t *txn) MarkFired(ctx context.Context, pipeline string, at time.Time, runID string) (bool, error) {
	res, err := t.exec(ctx, `INSERT INTO fires (pipeline, at, run_id) VALUES (?, ?, ?) ON CONFLICT DO NOTHING`,
		pipeline, micros(at), runID)
	if err != nil {
		return false, fmt.Errorf("mark %s fired at %s: %w", pipeline, at.Format(time.RFC3339), err)
	}
	n, _ := res.RowsAffected()
	return n == 1, nil
}

func (t *txn) AcquireLease(ctx context.Context, name, holder string, now time.Time, ttl time.Duration) (store.Lease, bool, error) {
	_, err := t.exec(ctx, `INSERT INTO leases (name, holder, expires_at) VALUES (?, ?, ?)
		ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
		WHERE leases.holder = excluded.holder OR leases.expires_at <= ?`,
		name, holder, micros(now.Add(ttl)), micros(now))
	if err != nil {
		return store.Lease{}, false, fmt.Errorf("acquire lease %s: %w", name, err)
	}
	l := store.Lease{Name: name}
	var expires int64
	if err := t.queryRow(ctx, `SELECT holder, expires_at FROM leases WHERE name = ?`, name).Scan(&l.Holder, &expires); err != nil {
		return store.Lease{}, false, fmt.Errorf("read lease %s: %w", name, err)
	}
	l.ExpiresAt = fromMicros(expires)
	return l, l.Holder == holder, nil
}

func (t *txn) ReleaseLease(ctx context.Context, name, holder string) error {
	if _, err := t.exec(ctx, `DELETE FROM leases WHERE name = ? AND holder = ?`, name, holder); err != nil {
		return fmt.Errorf("release lease %s: %w", name, err)
	}
	return nil
}

// list runs a query and scans every row.
func list[T any](ctx context.Context, t *txn, op string, scan func(scanner) (T, error), q string, args ...any) ([]T, error) {
	rows, err := t.query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	defer rows.Close()
	var out []T
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", op, err)
		}
		out = append(out, v)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	return out, nil
}
