package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/dray-dev/dray/internal/engine"
	"github.com/dray-dev/dray/internal/expr"
	"github.com/dray-dev/dray/internal/store"
	"github.com/jackc/pgx/v5"
)

func (t *txn) PutSpec(ctx context.Context, hash string, sources map[string][]byte) error {
	data, err := json.Marshal(sources)
	if err != nil {
		return fmt.Errorf("encode spec %s: %w", hash, err)
	}
	if _, err := t.exec(ctx, `INSERT INTO specs (hash, sources) VALUES ($1, $2) ON CONFLICT (hash) DO NOTHING`, hash, string(data)); err != nil {
		return fmt.Errorf("put spec %s: %w", hash, err)
	}
	return nil
}

func (t *txn) Spec(ctx context.Context, hash string) (map[string][]byte, error) {
	var data string
	if err := t.queryRow(ctx, `SELECT sources FROM specs WHERE hash = $1`, hash).Scan(&data); err != nil {
		return nil, notFound(err, "spec "+hash)
	}
	var sources map[string][]byte
	if err := json.Unmarshal([]byte(data), &sources); err != nil {
		return nil, fmt.Errorf("decode spec %s: %w", hash, err)
	}
	return sources, nil
}

const runColumns = `id, pipeline, spec_hash, state, reason, params, env, trigger, logical_time, salt,
	driver, logical_date, cancel_requested, unfinished, created_at, started_at, ended_at`

func (t *txn) InsertRun(ctx context.Context, r *engine.Run) error {
	params, err := json.Marshal(orEmpty(r.Params))
	if err != nil {
		return fmt.Errorf("encode params of run %s: %w", r.ID, err)
	}
	env, err := json.Marshal(orEmpty(r.Env))
	if err != nil {
		return fmt.Errorf("encode env of run %s: %w", r.ID, err)
	}
	// ON CONFLICT DO NOTHING: a taken id fails this call only, and the
	// transaction goes on, as it does on SQLite.
	tag, err := t.exec(ctx, `INSERT INTO runs (`+runColumns+`)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)
		ON CONFLICT (id) DO NOTHING`,
		r.ID, r.Pipeline, r.SpecHash, string(r.State), clean(r.Reason), string(params), string(env),
		r.Trigger, micros(r.LogicalTime), r.Salt, r.Driver, r.LogicalDate, r.CancelRequested, r.Unfinished,
		micros(r.CreatedAt), micros(r.StartedAt), micros(r.EndedAt))
	if err != nil {
		return fmt.Errorf("insert run %s: %w", r.ID, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("insert run %s: a run with this id exists: %w", r.ID, store.ErrConflict)
	}
	return nil
}

func (t *txn) UpdateRun(ctx context.Context, r *engine.Run) error {
	env, err := json.Marshal(orEmpty(r.Env))
	if err != nil {
		return fmt.Errorf("encode env of run %s: %w", r.ID, err)
	}
	// What a run is for never changes after InsertRun: only its progress is
	// written.
	tag, err := t.exec(ctx, `UPDATE runs SET state = $2, reason = $3, env = $4, driver = $5,
		cancel_requested = $6, unfinished = $7, started_at = $8, ended_at = $9 WHERE id = $1`,
		r.ID, string(r.State), clean(r.Reason), string(env), r.Driver, r.CancelRequested,
		r.Unfinished, micros(r.StartedAt), micros(r.EndedAt))
	if err != nil {
		return fmt.Errorf("update run %s: %w", r.ID, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("update run %s: %w", r.ID, store.ErrNotFound)
	}
	return nil
}

func scanRun(sc scanner) (*engine.Run, error) {
	var r engine.Run
	var state, params, env string
	var logical, created, started, ended int64
	err := sc.Scan(&r.ID, &r.Pipeline, &r.SpecHash, &state, &r.Reason, &params, &env, &r.Trigger,
		&logical, &r.Salt, &r.Driver, &r.LogicalDate, &r.CancelRequested, &r.Unfinished, &created, &started, &ended)
	if err != nil {
		return nil, err
	}
	r.State = engine.RunState(state)
	r.LogicalTime, r.CreatedAt, r.StartedAt, r.EndedAt = fromMicros(logical), fromMicros(created), fromMicros(started), fromMicros(ended)
	// Params keep the expression shape: a whole number comes back an int.
	v, err := expr.Decode([]byte(params))
	if err != nil {
		return nil, fmt.Errorf("decode params of run %s: %w", r.ID, err)
	}
	r.Params, _ = v.(map[string]any)
	if err := json.Unmarshal([]byte(env), &r.Env); err != nil {
		return nil, fmt.Errorf("decode env of run %s: %w", r.ID, err)
	}
	if len(r.Env) == 0 {
		r.Env = nil
	}
	return &r, nil
}

// Run returns a run; in Update it locks the run's row until the transaction
// ends (SELECT ... FOR UPDATE), which serializes the Updates of one run.
func (t *txn) Run(ctx context.Context, id string) (*engine.Run, error) {
	q := `SELECT ` + runColumns + ` FROM runs WHERE id = $1`
	if t.write {
		q += ` FOR UPDATE`
	}
	r, err := scanRun(t.queryRow(ctx, q, id))
	if err != nil {
		return nil, notFound(err, "run "+id)
	}
	return r, nil
}

func (t *txn) ResolveRunID(ctx context.Context, prefix string) (string, error) {
	if prefix == "" {
		return "", fmt.Errorf("run id: empty: %w", store.ErrNotFound)
	}
	// A range over the "C" collation's byte order: the prefix is literal, and
	// the primary key's index answers.
	ids, err := list(ctx, t, "resolve run "+prefix, scanString,
		`SELECT id FROM runs WHERE id >= $1 AND id < $2 ORDER BY id LIMIT 2`, prefix, prefix+"\U0010FFFF")
	if err != nil {
		return "", err
	}
	switch {
	case len(ids) == 0:
		return "", fmt.Errorf("run %s: %w", prefix, store.ErrNotFound)
	case ids[0] == prefix:
		return prefix, nil
	case len(ids) > 1:
		return "", fmt.Errorf("run %s: %w", prefix, store.ErrAmbiguous)
	}
	return ids[0], nil
}

func (t *txn) Runs(ctx context.Context, f store.RunFilter) ([]*engine.Run, error) {
	var w where
	if f.Pipeline != "" {
		w.add("pipeline = $?", f.Pipeline)
	}
	if len(f.States) > 0 {
		states := make([]string, len(f.States))
		for i, s := range f.States {
			states[i] = string(s)
		}
		w.add("state = ANY($?)", states)
	}
	if f.Driven {
		w.add("driver <> ''")
	}
	order := "created_at DESC, id DESC"
	if f.Before != "" {
		cmp := "<"
		if f.Oldest {
			cmp = ">"
		}
		w.add("(created_at, id) "+cmp+" (SELECT created_at, id FROM runs WHERE id = $?)", f.Before)
	}
	if f.Oldest {
		order = "created_at, id"
	}
	q := `SELECT ` + runColumns + ` FROM runs` + w.sql() + ` ORDER BY ` + order + limit(f.Limit)
	return list(ctx, t, "list runs", scanRun, q, w.args...)
}

func (t *txn) CountRuns(ctx context.Context, pipeline string, state engine.RunState) (int, error) {
	var n int
	err := t.queryRow(ctx, `SELECT count(*) FROM runs WHERE pipeline = $1 AND state = $2`, pipeline, string(state)).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("count runs of %s: %w", pipeline, err)
	}
	return n, nil
}

// where builds a WHERE clause; "$?" in a condition stands for its argument.
type where struct {
	conds []string
	args  []any
}

func (w *where) add(cond string, args ...any) {
	for _, a := range args {
		w.args = append(w.args, a)
		cond = strings.Replace(cond, "$?", "$"+strconv.Itoa(len(w.args)), 1)
	}
	w.conds = append(w.conds, cond)
}

func (w *where) sql() string {
	if len(w.conds) == 0 {
		return ""
	}
	return " WHERE " + strings.Join(w.conds, " AND ")
}

// limit is a LIMIT clause for a filter's Limit: none for 0 or less.
func limit(n int) string {
	if n <= 0 {
		return ""
	}
	return " LIMIT " + strconv.Itoa(n)
}

// rowLimit is the argument of a LIMIT $n for a method's limit: a negative
// limit means none, as in SQLite (NULL is none to PostgreSQL).
func rowLimit(n int) any {
	if n < 0 {
		return nil
	}
	return n
}

func scanString(sc scanner) (string, error) {
	var s string
	err := sc.Scan(&s)
	return s, err
}

func scanInt64(sc scanner) (int64, error) {
	var v int64
	err := sc.Scan(&v)
	return v, err
}

func orEmpty[M ~map[string]V, V any](m M) M {
	if m == nil {
		return M{}
	}
	return m
}

func orEmptySlice[S ~[]E, E any](s S) S {
	if s == nil {
		return S{}
	}
	return s
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

// clean makes free text storable: PostgreSQL's text holds neither NUL nor
// invalid UTF-8 (which a task's log or error may carry), where SQLite's holds
// any bytes. Each bad byte becomes U+FFFD.
func clean(s string) string {
	if utf8.ValidString(s) && strings.IndexByte(s, 0) < 0 {
		return s
	}
	return strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", "\uFFFD")
}

func cleanAll(ss []string) []string {
	out := orEmptySlice(ss)
	copied := false
	for i, s := range ss {
		if c := clean(s); c != s {
			if !copied {
				out, copied = slices.Clone(ss), true
			}
			out[i] = c
		}
	}
	return out
}

// rawJSON returns stored JSON, nil for NULL.
func rawJSON(s *string) json.RawMessage {
	if s == nil {
		return nil
	}
	return json.RawMessage(*s)
}

// nullJSON stores nil raw JSON as NULL.
func nullJSON(m json.RawMessage) any {
	if m == nil {
		return nil
	}
	return clean(string(m))
}

func notFound(err error, what string) error {
	if errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("%s: %w", what, store.ErrNotFound)
	}
	return fmt.Errorf("%s: %w", what, err)
}
