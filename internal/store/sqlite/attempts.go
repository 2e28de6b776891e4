package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/dray-dev/dray/internal/engine"
	"github.com/dray-dev/dray/internal/store"
)

const attemptColumns = `id, run_id, pipeline, task, idx, number, base, state, reason, work, pool, labels,
	executor, not_before, created_at, queued_at, claimed_at, started_at, ended_at, agent, handle,
	exit_code, outputs, warnings, cancel_requested`

// attemptArgs returns the column values of an attempt, without its id, and
// without work unless withWork.
func attemptArgs(a *engine.Attempt, withWork bool) ([]any, error) {
	var work []byte
	if withWork {
		var err error
		if work, err = json.Marshal(a.Work); err != nil {
			return nil, fmt.Errorf("encode work of attempt %d: %w", a.ID, err)
		}
	}
	labels, err := json.Marshal(orEmptySlice(a.Labels))
	if err != nil {
		return nil, err
	}
	warnings, err := json.Marshal(orEmptySlice(a.Warnings))
	if err != nil {
		return nil, err
	}
	var exit any
	if a.ExitCode != nil {
		exit = *a.ExitCode
	}
	args := []any{a.RunID, a.Pipeline, a.Task, a.Index, a.Number, a.Base, string(a.State), a.Reason,
		string(work), a.Pool, string(labels), a.Executor, micros(a.NotBefore), micros(a.CreatedAt),
		micros(a.QueuedAt), micros(a.ClaimedAt), micros(a.StartedAt), micros(a.EndedAt), a.Agent,
		a.Handle, exit, nullJSON(a.Outputs), string(warnings), boolInt(a.CancelRequested)}
	if !withWork {
		args = append(args[:8], args[9:]...)
	}
	return args, nil
}

func orEmptySlice[S ~[]E, E any](s S) S {
	if s == nil {
		return S{}
	}
	return s
}

func (t *txn) InsertAttempt(ctx context.Context, a *engine.Attempt) error {
	args, err := attemptArgs(a, true)
	if err != nil {
		return err
	}
	cols := strings.TrimPrefix(attemptColumns, "id, ")
	res, err := t.exec(ctx, `INSERT INTO attempts (`+cols+`) VALUES (`+placeholders(len(args))+`)`, args...)
	if err != nil {
		return fmt.Errorf("insert attempt of %s[%d] in run %s: %w", a.Task, a.Index, a.RunID, err)
	}
	a.ID, err = res.LastInsertId()
	return err
}

// updateAttempt sets every column but work, which never changes after an
// attempt is made (and is the largest to encode).
var updateAttempt = func() string {
	var set []string
	for _, c := range strings.Split(strings.TrimPrefix(attemptColumns, "id, "), ",") {
		if c = strings.TrimSpace(c); c != "work" {
			set = append(set, c+" = ?")
		}
	}
	return `UPDATE attempts SET ` + strings.Join(set, ", ") + ` WHERE id = ?`
}()

func (t *txn) UpdateAttempt(ctx context.Context, a *engine.Attempt) error {
	args, err := attemptArgs(a, false)
	if err != nil {
		return err
	}
	res, err := t.exec(ctx, updateAttempt, append(args, a.ID)...)
	if err != nil {
		return fmt.Errorf("update attempt %d: %w", a.ID, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("update attempt %d: %w", a.ID, store.ErrNotFound)
	}
	return nil
}

func scanAttempt(sc scanner) (*engine.Attempt, error) {
	var a engine.Attempt
	var state, work, labels, warnings string
	var notBefore, created, queued, claimed, started, ended int64
	var exit sql.NullInt64
	var outputs sql.NullString
	var cancel int
	err := sc.Scan(&a.ID, &a.RunID, &a.Pipeline, &a.Task, &a.Index, &a.Number, &a.Base, &state, &a.Reason,
		&work, &a.Pool, &labels, &a.Executor, &notBefore, &created, &queued, &claimed, &started, &ended,
		&a.Agent, &a.Handle, &exit, &outputs, &warnings, &cancel)
	if err != nil {
		return nil, err
	}
	a.State = engine.AttemptState(state)
	a.NotBefore, a.CreatedAt, a.QueuedAt = fromMicros(notBefore), fromMicros(created), fromMicros(queued)
	a.ClaimedAt, a.StartedAt, a.EndedAt = fromMicros(claimed), fromMicros(started), fromMicros(ended)
	if exit.Valid {
		code := int(exit.Int64)
		a.ExitCode = &code
	}
	a.Outputs = rawJSON(outputs)
	a.CancelRequested = cancel != 0
	if len(a.Handle) == 0 {
		a.Handle = nil
	}
	if err := json.Unmarshal([]byte(work), &a.Work); err != nil {
		return nil, fmt.Errorf("decode work of attempt %d: %w", a.ID, err)
	}
	if err := json.Unmarshal([]byte(labels), &a.Labels); err != nil {
		return nil, fmt.Errorf("decode labels of attempt %d: %w", a.ID, err)
	}
	if err := json.Unmarshal([]byte(warnings), &a.Warnings); err != nil {
		return nil, fmt.Errorf("decode warnings of attempt %d: %w", a.ID, err)
	}
	if len(a.Labels) == 0 {
		a.Labels = nil
	}
	if len(a.Warnings) == 0 {
		a.Warnings = nil
	}
	return &a, nil
}

func (t *txn) Attempt(ctx context.Context, id int64) (*engine.Attempt, error) {
	a, err := scanAttempt(t.queryRow(ctx, `SELECT `+attemptColumns+` FROM attempts WHERE id = ?`, id))
	if err != nil {
		return nil, notFound(err, fmt.Sprintf("attempt %d", id))
	}
	return a, nil
}

func (t *txn) queryAttempts(ctx context.Context, what, q string, args ...any) ([]*engine.Attempt, error) {
	rows, err := t.query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	defer rows.Close()
	var out []*engine.Attempt
	for rows.Next() {
		a, err := scanAttempt(rows)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
		out = append(out, a)
	}
	return out, rows.Err()
}

func (t *txn) Attempts(ctx context.Context, f store.AttemptFilter) ([]*engine.Attempt, error) {
	var where []string
	var args []any
	add := func(cond string, v any) {
		where = append(where, cond)
		args = append(args, v)
	}
	if f.RunID != "" {
		add("run_id = ?", f.RunID)
	}
	if f.Task != "" {
		add("task = ?", f.Task)
	}
	if f.HasIndex {
		add("idx = ?", f.Index)
	}
	if f.Agent != "" {
		add("agent = ?", f.Agent)
	}
	if len(f.States) > 0 {
		where = append(where, "state IN ("+placeholders(len(f.States))+")")
		for _, s := range f.States {
			args = append(args, string(s))
		}
	}
	q := `SELECT ` + attemptColumns + ` FROM attempts`
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	q += " ORDER BY id"
	if f.Limit > 0 {
		q += fmt.Sprintf(" LIMIT %d", f.Limit)
	}
	return t.queryAttempts(ctx, "list attempts", q, args...)
}

func (t *txn) CountAttempts(ctx context.Context, runID string) (map[string]int, error) {
	rows, err := t.query(ctx, `SELECT task, count(*) FROM attempts WHERE run_id = ? GROUP BY task`, runID)
	if err != nil {
		return nil, fmt.Errorf("count attempts of run %s: %w", runID, err)
	}
	defer rows.Close()
	out := map[string]int{}
	for rows.Next() {
		var task string
		var n int
		if err := rows.Scan(&task, &n); err != nil {
			return nil, err
		}
		out[task] = n
	}
	return out, rows.Err()
}

func (t *txn) InstanceOutputs(ctx context.Context, runID, task string, n int) ([]json.RawMessage, error) {
	out := make([]json.RawMessage, n)
	rows, err := t.query(ctx, `SELECT idx, outputs FROM attempts
		WHERE run_id = ? AND task = ? AND state = 'succeeded' ORDER BY idx, number`, runID, task)
	if err != nil {
		return nil, fmt.Errorf("read outputs of %s in run %s: %w", task, runID, err)
	}
	defer rows.Close()
	for rows.Next() {
		var idx int
		var outputs sql.NullString
		if err := rows.Scan(&idx, &outputs); err != nil {
			return nil, err
		}
		if idx >= 0 && idx < n {
			out[idx] = rawJSON(outputs)
		}
	}
	return out, rows.Err()
}

func (t *txn) RedoInstances(ctx context.Context, runID, task string, limit int) ([]engine.Instance, error) {
	rows, err := t.query(ctx, `SELECT a.idx, a.number FROM attempts a
		WHERE a.run_id = ?1 AND a.task = ?2 AND a.state IN ('failed', 'canceled', 'lost')
		AND a.number = (SELECT max(b.number) FROM attempts b WHERE b.run_id = ?1 AND b.task = ?2 AND b.idx = a.idx)
		ORDER BY a.idx LIMIT ?3`, runID, task, limit)
	if err != nil {
		return nil, fmt.Errorf("read instances of %s to retry in run %s: %w", task, runID, err)
	}
	defer rows.Close()
	var out []engine.Instance
	for rows.Next() {
		var in engine.Instance
		if err := rows.Scan(&in.Index, &in.LastNumber); err != nil {
			return nil, err
		}
		out = append(out, in)
	}
	return out, rows.Err()
}

func (t *txn) Claim(ctx context.Context, c store.Claim) ([]*engine.Attempt, error) {
	if c.Limit <= 0 {
		return nil, nil
	}
	labels, _ := json.Marshal(orEmptySlice(c.Labels))
	execs, _ := json.Marshal(orEmptySlice(c.Executors))
	claimed, err := t.queryAttempts(ctx, "claim attempts", `SELECT `+attemptColumns+` FROM attempts a
		WHERE a.state = 'queued'
		AND (?4 = '' OR a.run_id = ?4)
		AND a.executor IN (SELECT value FROM json_each(?1))
		AND NOT EXISTS (SELECT 1 FROM json_each(a.labels) l WHERE l.value NOT IN (SELECT value FROM json_each(?2)))
		ORDER BY a.id LIMIT ?3`, string(execs), string(labels), c.Limit, c.RunID)
	if err != nil {
		return nil, err
	}
	now := c.Now.UTC().Truncate(time.Microsecond)
	for _, a := range claimed {
		a.State, a.Agent, a.ClaimedAt = engine.AttemptClaimed, c.Agent, now
		if _, err := t.exec(ctx, `UPDATE attempts SET state = 'claimed', agent = ?, claimed_at = ? WHERE id = ?`,
			c.Agent, micros(now), a.ID); err != nil {
			return nil, fmt.Errorf("claim attempt %d: %w", a.ID, err)
		}
	}
	return claimed, nil
}

func (t *txn) Due(ctx context.Context, now time.Time, limit int) ([]*engine.Attempt, error) {
	return t.queryAttempts(ctx, "list due attempts", `SELECT `+attemptColumns+` FROM attempts
		WHERE state = 'pending' AND not_before <= ? ORDER BY id LIMIT ?`, micros(now), limit)
}

func (t *txn) NextDue(ctx context.Context) (time.Time, bool, error) {
	var v sql.NullInt64
	if err := t.queryRow(ctx, `SELECT min(not_before) FROM attempts WHERE state = 'pending'`).Scan(&v); err != nil {
		return time.Time{}, false, fmt.Errorf("read next due attempt: %w", err)
	}
	if !v.Valid {
		return time.Time{}, false, nil
	}
	return fromMicros(v.Int64), true, nil
}

func (t *txn) CountActive(ctx context.Context, pipeline, pool string) (int, error) {
	col, val := "pipeline", pipeline
	if pool != "" {
		col, val = "pool", pool
	}
	var n int
	err := t.queryRow(ctx, `SELECT count(*) FROM attempts WHERE `+col+` = ? AND state IN ('queued', 'claimed', 'running')`, val).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("count active attempts of %s %s: %w", col, val, err)
	}
	return n, nil
}
