package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/dray-dev/dray/internal/engine"
	"github.com/dray-dev/dray/internal/expr"
	"github.com/dray-dev/dray/internal/store"
)

func (t *txn) PutSpec(ctx context.Context, hash string, sources map[string][]byte) error {
	data, err := json.Marshal(sources)
	if err != nil {
		return fmt.Errorf("encode spec %s: %w", hash, err)
	}
	_, err = t.exec(ctx, `INSERT INTO specs (hash, sources) VALUES (?, ?) ON CONFLICT (hash) DO NOTHING`, hash, string(data))
	if err != nil {
		return fmt.Errorf("put spec %s: %w", hash, err)
	}
	return nil
}

func (t *txn) Spec(ctx context.Context, hash string) (map[string][]byte, error) {
	var data string
	if err := t.queryRow(ctx, `SELECT sources FROM specs WHERE hash = ?`, hash).Scan(&data); err != nil {
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

func runArgs(r *engine.Run) ([]any, error) {
	params, err := json.Marshal(orEmpty(r.Params))
	if err != nil {
		return nil, fmt.Errorf("encode params of run %s: %w", r.ID, err)
	}
	env, err := json.Marshal(orEmpty(r.Env))
	if err != nil {
		return nil, fmt.Errorf("encode env of run %s: %w", r.ID, err)
	}
	return []any{r.ID, r.Pipeline, r.SpecHash, string(r.State), r.Reason, string(params), string(env),
		r.Trigger, micros(r.LogicalTime), r.Salt, r.Driver, r.LogicalDate, boolInt(r.CancelRequested), r.Unfinished,
		micros(r.CreatedAt), micros(r.StartedAt), micros(r.EndedAt)}, nil
}

func orEmpty[M ~map[string]V, V any](m M) M {
	if m == nil {
		return M{}
	}
	return m
}

func (t *txn) InsertRun(ctx context.Context, r *engine.Run) error {
	args, err := runArgs(r)
	if err != nil {
		return err
	}
	_, err = t.exec(ctx, `INSERT INTO runs (`+runColumns+`) VALUES (`+placeholders(len(args))+`)`, args...)
	if err != nil {
		return fmt.Errorf("insert run %s: %w", r.ID, err)
	}
	return nil
}

func (t *txn) UpdateRun(ctx context.Context, r *engine.Run) error {
	env, err := json.Marshal(orEmpty(r.Env))
	if err != nil {
		return fmt.Errorf("encode env of run %s: %w", r.ID, err)
	}
	// What a run is for (pipeline, spec, params, trigger, logical time, salt,
	// creation) never changes after InsertRun: only its progress is written.
	res, err := t.exec(ctx, `UPDATE runs SET state=?2, reason=?3, env=?4, driver=?5, cancel_requested=?6,
		unfinished=?7, started_at=?8, ended_at=?9 WHERE id=?1`,
		r.ID, string(r.State), r.Reason, string(env), r.Driver, boolInt(r.CancelRequested),
		r.Unfinished, micros(r.StartedAt), micros(r.EndedAt))
	if err != nil {
		return fmt.Errorf("update run %s: %w", r.ID, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("update run %s: %w", r.ID, store.ErrNotFound)
	}
	return nil
}

type scanner interface{ Scan(dest ...any) error }

func scanRun(sc scanner) (*engine.Run, error) {
	var r engine.Run
	var state, params, env string
	var cancel int
	var logical, created, started, ended int64
	err := sc.Scan(&r.ID, &r.Pipeline, &r.SpecHash, &state, &r.Reason, &params, &env, &r.Trigger,
		&logical, &r.Salt, &r.Driver, &r.LogicalDate, &cancel, &r.Unfinished, &created, &started, &ended)
	if err != nil {
		return nil, err
	}
	r.State = engine.RunState(state)
	r.CancelRequested = cancel != 0
	r.LogicalTime, r.CreatedAt, r.StartedAt, r.EndedAt = fromMicros(logical), fromMicros(created), fromMicros(started), fromMicros(ended)
	if r.Params, err = decodeMap[any](params); err != nil {
		return nil, fmt.Errorf("decode params of run %s: %w", r.ID, err)
	}
	if r.Env, err = decodeMap[string](env); err != nil {
		return nil, fmt.Errorf("decode env of run %s: %w", r.ID, err)
	}
	if len(r.Env) == 0 {
		r.Env = nil
	}
	return &r, nil
}

// decodeMap decodes a JSON object. Values of a map[string]any keep the
// expression shape (numbers as int when whole).
func decodeMap[V any](data string) (map[string]V, error) {
	var m map[string]V
	if p, ok := any(&m).(*map[string]any); ok {
		v, err := expr.Decode([]byte(data))
		if err != nil {
			return nil, err
		}
		*p, _ = v.(map[string]any)
		return m, nil
	}
	err := json.Unmarshal([]byte(data), &m)
	return m, err
}

func (t *txn) Run(ctx context.Context, id string) (*engine.Run, error) {
	r, err := scanRun(t.queryRow(ctx, `SELECT `+runColumns+` FROM runs WHERE id = ?`, id))
	if err != nil {
		return nil, notFound(err, "run "+id)
	}
	return r, nil
}

func (t *txn) ResolveRunID(ctx context.Context, prefix string) (string, error) {
	if prefix == "" {
		return "", fmt.Errorf("run id: empty: %w", store.ErrNotFound)
	}
	rows, err := t.query(ctx, `SELECT id FROM runs WHERE id >= ? AND id < ? ORDER BY id LIMIT 2`, prefix, prefix+"\U0010FFFF")
	if err != nil {
		return "", fmt.Errorf("resolve run %s: %w", prefix, err)
	}
	defer rows.Close()
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return "", err
		}
		ids = append(ids, id)
	}
	if err := rows.Err(); err != nil {
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
	var where []string
	var args []any
	if f.Pipeline != "" {
		where = append(where, "pipeline = ?")
		args = append(args, f.Pipeline)
	}
	if len(f.States) > 0 {
		where = append(where, "state IN ("+placeholders(len(f.States))+")")
		for _, s := range f.States {
			args = append(args, string(s))
		}
	}
	if f.Driven {
		where = append(where, "driver <> ''")
	}
	order := "created_at DESC, id DESC"
	if f.Before != "" {
		cmp := "<"
		if f.Oldest {
			cmp = ">"
		}
		where = append(where, fmt.Sprintf("(created_at, id) %s (SELECT created_at, id FROM runs WHERE id = ?)", cmp))
		args = append(args, f.Before)
	}
	if f.Oldest {
		order = "created_at, id"
	}
	q := `SELECT ` + runColumns + ` FROM runs`
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	q += " ORDER BY " + order
	if f.Limit > 0 {
		q += fmt.Sprintf(" LIMIT %d", f.Limit)
	}
	rows, err := t.query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list runs: %w", err)
	}
	defer rows.Close()
	var out []*engine.Run
	for rows.Next() {
		r, err := scanRun(rows)
		if err != nil {
			return nil, fmt.Errorf("list runs: %w", err)
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

func (t *txn) CountRuns(ctx context.Context, pipeline string, state engine.RunState) (int, error) {
	var n int
	err := t.queryRow(ctx, `SELECT count(*) FROM runs WHERE pipeline = ? AND state = ?`, pipeline, string(state)).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("count runs of %s: %w", pipeline, err)
	}
	return n, nil
}

func placeholders(n int) string {
	return strings.TrimSuffix(strings.Repeat("?,", n), ",")
}

// nullJSON stores nil raw JSON as NULL.
func nullJSON(m json.RawMessage) any {
	if m == nil {
		return nil
	}
	return string(m)
}

func rawJSON(s sql.NullString) json.RawMessage {
	if !s.Valid {
		return nil
	}
	return json.RawMessage(s.String)
}
