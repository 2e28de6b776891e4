package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/dray-dev/dray/internal/store"
)

// Users, tokens, sessions, audit entries, schedules and leases: the tables of
// dray as a service.

const userColumns = `name, role, password_hash, created_at, updated_at`

func (t *txn) PutUser(ctx context.Context, u *store.User) error {
	_, err := t.exec(ctx, `INSERT INTO users (`+userColumns+`) VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (name) DO UPDATE SET role = excluded.role, password_hash = excluded.password_hash,
			created_at = excluded.created_at, updated_at = excluded.updated_at`,
		u.Name, u.Role, u.PasswordHash, micros(u.CreatedAt), micros(u.UpdatedAt))
	if err != nil {
		return fmt.Errorf("put user %s: %w", u.Name, err)
	}
	return nil
}

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
	u, err := scanUser(t.queryRow(ctx, `SELECT `+userColumns+` FROM users WHERE name = $1`, name))
	if err != nil {
		return nil, notFound(err, "user "+name)
	}
	return u, nil
}

func (t *txn) Users(ctx context.Context) ([]*store.User, error) {
	return list(ctx, t, "list users", scanUser, `SELECT `+userColumns+` FROM users ORDER BY name`)
}

// DeleteUser deletes the user and, if there was one, their sessions, in one
// statement.
func (t *txn) DeleteUser(ctx context.Context, name string) error {
	var n int
	err := t.queryRow(ctx, `WITH u AS (DELETE FROM users WHERE name = $1 RETURNING name),
			s AS (DELETE FROM sessions WHERE username = $1 AND EXISTS (SELECT 1 FROM u))
		SELECT count(*) FROM u`, name).Scan(&n)
	if err != nil {
		return fmt.Errorf("delete user %s: %w", name, err)
	}
	if n == 0 {
		return fmt.Errorf("delete user %s: %w", name, store.ErrNotFound)
	}
	return nil
}

const tokenColumns = `id, name, role, hash, created_by, created_at, expires_at, last_used_at, revoked_at`

func (t *txn) PutToken(ctx context.Context, k *store.Token) error {
	_, err := t.exec(ctx, `INSERT INTO tokens (`+tokenColumns+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
		ON CONFLICT (id) DO UPDATE SET name = excluded.name, role = excluded.role, hash = excluded.hash,
			created_by = excluded.created_by, created_at = excluded.created_at, expires_at = excluded.expires_at,
			last_used_at = excluded.last_used_at, revoked_at = excluded.revoked_at`,
		k.ID, k.Name, k.Role, k.Hash, k.CreatedBy,
		micros(k.CreatedAt), micros(k.ExpiresAt), micros(k.LastUsedAt), micros(k.RevokedAt))
	if err != nil {
		return fmt.Errorf("put token %s: %w", k.ID, err)
	}
	return nil
}

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
	k, err := scanToken(t.queryRow(ctx, `SELECT `+tokenColumns+` FROM tokens WHERE id = $1`, id))
	if err != nil {
		return nil, notFound(err, "token "+id)
	}
	return k, nil
}

func (t *txn) Tokens(ctx context.Context) ([]*store.Token, error) {
	return list(ctx, t, "list tokens", scanToken, `SELECT `+tokenColumns+` FROM tokens ORDER BY created_at, id`)
}

func (t *txn) PutSession(ctx context.Context, s *store.Session) error {
	_, err := t.exec(ctx, `INSERT INTO sessions (id, username, csrf, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (id) DO UPDATE SET username = excluded.username, csrf = excluded.csrf,
			created_at = excluded.created_at, expires_at = excluded.expires_at`,
		s.ID, s.User, s.CSRF, micros(s.CreatedAt), micros(s.ExpiresAt))
	if err != nil {
		return fmt.Errorf("put session: %w", err)
	}
	return nil
}

func (t *txn) Session(ctx context.Context, id string) (*store.Session, error) {
	var s store.Session
	var created, expires int64
	err := t.queryRow(ctx, `SELECT id, username, csrf, created_at, expires_at FROM sessions WHERE id = $1`, id).
		Scan(&s.ID, &s.User, &s.CSRF, &created, &expires)
	if err != nil {
		// Not the id: it is the hash of a cookie's value.
		return nil, notFound(err, "session")
	}
	s.CreatedAt, s.ExpiresAt = fromMicros(created), fromMicros(expires)
	return &s, nil
}

func (t *txn) DeleteSessions(ctx context.Context, id, user string, expired time.Time) (int, error) {
	// The conditions are alternatives: a session matching any goes.
	var w where
	if id != "" {
		w.add("id = $?", id)
	}
	if user != "" {
		w.add("username = $?", user)
	}
	if !expired.IsZero() {
		w.add("expires_at <= $?", micros(expired))
	}
	if len(w.conds) == 0 {
		return 0, nil
	}
	q := `DELETE FROM sessions WHERE (` + w.conds[0] + `)`
	for _, c := range w.conds[1:] {
		q += ` OR (` + c + `)`
	}
	tag, err := t.exec(ctx, q, w.args...)
	if err != nil {
		return 0, fmt.Errorf("delete sessions: %w", err)
	}
	return int(tag.RowsAffected()), nil
}

func (t *txn) InsertAudit(ctx context.Context, e *store.AuditEntry) error {
	err := t.queryRow(ctx, `INSERT INTO audit (ts, actor, action, target, detail, address)
		VALUES ($1, $2, $3, $4, $5, $6) RETURNING id`,
		micros(e.Time), e.Actor, e.Action, clean(e.Target), clean(e.Detail), e.Address).Scan(&e.ID)
	if err != nil {
		return fmt.Errorf("insert audit entry %s: %w", e.Action, err)
	}
	return nil
}

func (t *txn) Audit(ctx context.Context, f store.AuditFilter) ([]*store.AuditEntry, error) {
	var w where
	if f.Before > 0 {
		w.add("id < $?", f.Before)
	}
	if f.Actor != "" {
		w.add("actor = $?", f.Actor)
	}
	q := `SELECT id, ts, actor, action, target, detail, address FROM audit` + w.sql() + ` ORDER BY id DESC` + limit(f.Limit)
	return list(ctx, t, "list audit entries", func(sc scanner) (*store.AuditEntry, error) {
		var e store.AuditEntry
		var ts int64
		if err := sc.Scan(&e.ID, &ts, &e.Actor, &e.Action, &e.Target, &e.Detail, &e.Address); err != nil {
			return nil, err
		}
		e.Time = fromMicros(ts)
		return &e, nil
	}, q, w.args...)
}

const scheduleColumns = `pipeline, paused, paused_set, cursor, updated_at`

func (t *txn) PutSchedule(ctx context.Context, s *store.Schedule) error {
	_, err := t.exec(ctx, `INSERT INTO schedules (`+scheduleColumns+`) VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (pipeline) DO UPDATE SET paused = excluded.paused, paused_set = excluded.paused_set,
			cursor = excluded.cursor, updated_at = excluded.updated_at`,
		s.Pipeline, s.Paused, s.PausedSet, micros(s.Cursor), micros(s.UpdatedAt))
	if err != nil {
		return fmt.Errorf("put schedule of %s: %w", s.Pipeline, err)
	}
	return nil
}

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
	s, err := scanSchedule(t.queryRow(ctx, `SELECT `+scheduleColumns+` FROM schedules WHERE pipeline = $1`, pipeline))
	if err != nil {
		return nil, notFound(err, "schedule of "+pipeline)
	}
	return s, nil
}

func (t *txn) Schedules(ctx context.Context) ([]*store.Schedule, error) {
	return list(ctx, t, "list schedules", scanSchedule, `SELECT `+scheduleColumns+` FROM schedules ORDER BY pipeline`)
}

// MarkFired inserts the fire unless it is recorded. Schedulers marking the
// same fire at once conflict, and Update runs the loser again, which then
// finds the fire recorded.
func (t *txn) MarkFired(ctx context.Context, pipeline string, at time.Time, runID string) (bool, error) {
	tag, err := t.exec(ctx, `INSERT INTO fires (pipeline, at, run_id) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING`,
		pipeline, micros(at), runID)
	if err != nil {
		return false, fmt.Errorf("mark %s fired at %s: %w", pipeline, at.Format(time.RFC3339), err)
	}
	return tag.RowsAffected() == 1, nil
}

// AcquireLease takes or renews the lease and reads it back in one statement:
// the upsert's row when it wrote one, else the row as it stands.
func (t *txn) AcquireLease(ctx context.Context, name, holder string, now time.Time, ttl time.Duration) (store.Lease, bool, error) {
	l := store.Lease{Name: name}
	var expires int64
	err := t.queryRow(ctx, `WITH up AS (
			INSERT INTO leases (name, holder, expires_at) VALUES ($1, $2, $3)
			ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
			WHERE leases.holder = excluded.holder OR leases.expires_at <= $4
			RETURNING holder, expires_at
		)
		SELECT holder, expires_at FROM up
		UNION ALL
		SELECT holder, expires_at FROM leases WHERE name = $1 AND NOT EXISTS (SELECT 1 FROM up)`,
		name, holder, micros(now.Add(ttl)), micros(now)).Scan(&l.Holder, &expires)
	if err != nil {
		return store.Lease{}, false, fmt.Errorf("acquire lease %s: %w", name, err)
	}
	l.ExpiresAt = fromMicros(expires)
	return l, l.Holder == holder, nil
}

func (t *txn) ReleaseLease(ctx context.Context, name, holder string) error {
	if _, err := t.exec(ctx, `DELETE FROM leases WHERE name = $1 AND holder = $2`, name, holder); err != nil {
		return fmt.Errorf("release lease %s: %w", name, err)
	}
	return nil
}
