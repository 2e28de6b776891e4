package postgres

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/dray-dev/dray/internal/engine"
	"github.com/dray-dev/dray/internal/store"
)

const attemptColumns = `id, run_id, pipeline, task, idx, number, base, state, reason, work, pool, labels,
	executor, not_before, created_at, queued_at, claimed_at, started_at, ended_at, agent, handle,
	exit_code, outputs, warnings, cancel_requested`

// attemptArgs returns the column values of an attempt in attemptColumns'
// order, without its id, and without work unless withWork.
func attemptArgs(a *engine.Attempt, withWork bool) ([]any, error) {
	args := []any{a.RunID, a.Pipeline, a.Task, a.Index, a.Number, a.Base, string(a.State), clean(a.Reason)}
	if withWork {
		work, err := json.Marshal(a.Work)
		if err != nil {
			return nil, fmt.Errorf("encode work of attempt %d: %w", a.ID, err)
		}
		args = append(args, string(work))
	}
	var handle []byte
	if len(a.Handle) > 0 {
		handle = a.Handle
	}
	return append(args, a.Pool, orEmptySlice(a.Labels), a.Executor, micros(a.NotBefore), micros(a.CreatedAt),
		micros(a.QueuedAt), micros(a.ClaimedAt), micros(a.StartedAt), micros(a.EndedAt), a.Agent,
		handle, a.ExitCode, nullJSON(a.Outputs), cleanAll(a.Warnings), a.CancelRequested), nil
}

// placeholders returns "$from, ..., $to".
func placeholders(from, to int) string {
	var b strings.Builder
	for i := from; i <= to; i++ {
		if i > from {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "$%d", i)
	}
	return b.String()
}

var insertAttempt = func() string {
	cols := strings.TrimPrefix(attemptColumns, "id, ")
	n := len(strings.Split(cols, ","))
	return `INSERT INTO attempts (` + cols + `) VALUES (` + placeholders(1, n) + `) RETURNING id`
}()

func (t *txn) InsertAttempt(ctx context.Context, a *engine.Attempt) error {
	args, err := attemptArgs(a, true)
	if err != nil {
		return err
	}
	if err := t.queryRow(ctx, insertAttempt, args...).Scan(&a.ID); err != nil {
		return fmt.Errorf("insert attempt of %s[%d] in run %s: %w", a.Task, a.Index, a.RunID, err)
	}
	return nil
}

// updateAttempt sets every column but work, which never changes after an
// attempt is made (and is the largest to encode).
var updateAttempt = func() string {
	var set []string
	for _, c := range strings.Split(strings.TrimPrefix(attemptColumns, "id, "), ",") {
		if c = strings.TrimSpace(c); c != "work" {
			set = append(set, fmt.Sprintf("%s = $%d", c, len(set)+2))
		}
	}
	return `UPDATE attempts SET ` + strings.Join(set, ", ") + ` WHERE id = $1`
}()

func (t *txn) UpdateAttempt(ctx context.Context, a *engine.Attempt) error {
	args, err := attemptArgs(a, false)
	if err != nil {
		return err
	}
	tag, err := t.exec(ctx, updateAttempt, append([]any{a.ID}, args...)...)
	if err != nil {
		return fmt.Errorf("update attempt %d: %w", a.ID, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("update attempt %d: %w", a.ID, store.ErrNotFound)
	}
	return nil
}

func scanAttempt(sc scanner) (*engine.Attempt, error) {
	var a engine.Attempt
	var state, work string
	var notBefore, created, queued, claimed, started, ended int64
	var outputs *string
	err := sc.Scan(&a.ID, &a.RunID, &a.Pipeline, &a.Task, &a.Index, &a.Number, &a.Base, &state, &a.Reason,
		&work, &a.Pool, &a.Labels, &a.Executor, &notBefore, &created, &queued, &claimed, &started, &ended,
		&a.Agent, &a.Handle, &a.ExitCode, &outputs, &a.Warnings, &a.CancelRequested)
	if err != nil {
		return nil, err
	}
	a.State = engine.AttemptState(state)
	a.NotBefore, a.CreatedAt, a.QueuedAt = fromMicros(notBefore), fromMicros(created), fromMicros(queued)
	a.ClaimedAt, a.StartedAt, a.EndedAt = fromMicros(claimed), fromMicros(started), fromMicros(ended)
	a.Outputs = rawJSON(outputs)
	if len(a.Handle) == 0 {
		a.Handle = nil
	}
	if len(a.Labels) == 0 {
		a.Labels = nil
	}
	if len(a.Warnings) == 0 {
		a.Warnings = nil
	}
	if err := json.Unmarshal([]byte(work), &a.Work); err != nil {
		return nil, fmt.Errorf("decode work of attempt %d: %w", a.ID, err)
	}
	return &a, nil
}

func (t *txn) Attempt(ctx context.Context, id int64) (*engine.Attempt, error) {
	a, err := scanAttempt(t.queryRow(ctx, `SELECT `+attemptColumns+` FROM attempts WHERE id = $1`, id))
	if err != nil {
		return nil, notFound(err, fmt.Sprintf("attempt %d", id))
	}
	return a, nil
}

func (t *txn) Attempts(ctx context.Context, f store.AttemptFilter) ([]*engine.Attempt, error) {
	var w where
	if f.RunID != "" {
		w.add("run_id = $?", f.RunID)
	}
	if f.Task != "" {
		w.add("task = $?", f.Task)
	}
	if f.HasIndex {
		w.add("idx = $?", f.Index)
	}
	if f.Agent != "" {
		w.add("agent = $?", f.Agent)
	}
	if len(f.States) > 0 {
		states := make([]string, len(f.States))
		for i, s := range f.States {
			states[i] = string(s)
		}
		w.add("state = ANY($?)", states)
	}
	q := `SELECT ` + attemptColumns + ` FROM attempts` + w.sql() + ` ORDER BY id` + limit(f.Limit)
	return list(ctx, t, "list attempts", scanAttempt, q, w.args...)
}

func (t *txn) CountAttempts(ctx context.Context, runID string) (map[string]int, error) {
	rows, err := t.conn.Query(ctx, `SELECT task, count(*) FROM attempts WHERE run_id = $1 GROUP BY task`, runID)
	if err != nil {
		return nil, fmt.Errorf("count attempts of run %s: %w", runID, t.note(err))
	}
	defer rows.Close()
	out := map[string]int{}
	for rows.Next() {
		var task string
		var n int
		if err := rows.Scan(&task, &n); err != nil {
			return nil, fmt.Errorf("count attempts of run %s: %w", runID, err)
		}
		out[task] = n
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("count attempts of run %s: %w", runID, t.note(err))
	}
	return out, nil
}

func (t *txn) InstanceOutputs(ctx context.Context, runID, task string, n int) ([]json.RawMessage, error) {
	out := make([]json.RawMessage, n)
	type row struct {
		idx     int
		outputs json.RawMessage
	}
	rows, err := list(ctx, t, fmt.Sprintf("read outputs of %s in run %s", task, runID), func(sc scanner) (row, error) {
		var r row
		var outputs *string
		err := sc.Scan(&r.idx, &outputs)
		r.outputs = rawJSON(outputs)
		return r, err
	}, `SELECT idx, outputs FROM attempts WHERE run_id = $1 AND task = $2 AND state = 'succeeded'
		AND idx >= 0 AND idx < $3 ORDER BY idx, number`, runID, task, n)
	if err != nil {
		return nil, err
	}
	for _, r := range rows {
		out[r.idx] = r.outputs
	}
	return out, nil
}

func (t *txn) RedoInstances(ctx context.Context, runID, task string, limit int) ([]engine.Instance, error) {
	return list(ctx, t, fmt.Sprintf("read instances of %s to retry in run %s", task, runID), func(sc scanner) (engine.Instance, error) {
		var in engine.Instance
		err := sc.Scan(&in.Index, &in.LastNumber)
		return in, err
	}, `SELECT idx, number FROM (
			SELECT DISTINCT ON (idx) idx, number, state FROM attempts
			WHERE run_id = $1 AND task = $2 ORDER BY idx, number DESC
		) last
		WHERE state IN ('failed', 'canceled', 'lost') ORDER BY idx LIMIT $3`, runID, task, rowLimit(limit))
}

// Claim selects and claims in one statement. SKIP LOCKED passes over the
// attempts another transaction is claiming rather than waiting for it.
func (t *txn) Claim(ctx context.Context, c store.Claim) ([]*engine.Attempt, error) {
	if c.Limit <= 0 {
		return nil, nil
	}
	now := c.Now.UTC().Truncate(time.Microsecond)
	claimed, err := list(ctx, t, "claim attempts", scanAttempt, `WITH c AS (
			SELECT id FROM attempts
			WHERE state = 'queued' AND executor = ANY($1) AND labels <@ $2 AND ($3 = '' OR run_id = $3)
			ORDER BY id LIMIT $4
			FOR UPDATE SKIP LOCKED
		)
		UPDATE attempts a SET state = 'claimed', agent = $5, claimed_at = $6 FROM c WHERE a.id = c.id
		RETURNING `+prefixed("a.", attemptColumns),
		orEmptySlice(c.Executors), orEmptySlice(c.Labels), c.RunID, c.Limit, c.Agent, micros(now))
	if err != nil {
		return nil, err
	}
	slices.SortFunc(claimed, func(a, b *engine.Attempt) int { return cmp.Compare(a.ID, b.ID) })
	return claimed, nil
}

// prefixed qualifies each of a list of columns.
func prefixed(prefix, columns string) string {
	cols := strings.Split(columns, ",")
	for i, c := range cols {
		cols[i] = prefix + strings.TrimSpace(c)
	}
	return strings.Join(cols, ", ")
}

func (t *txn) Due(ctx context.Context, now time.Time, limit int) ([]*engine.Attempt, error) {
	return list(ctx, t, "list due attempts", scanAttempt, `SELECT `+attemptColumns+` FROM attempts
		WHERE state = 'pending' AND not_before <= $1 ORDER BY id LIMIT $2`, micros(now), rowLimit(limit))
}

func (t *txn) NextDue(ctx context.Context) (time.Time, bool, error) {
	var v *int64
	if err := t.queryRow(ctx, `SELECT min(not_before) FROM attempts WHERE state = 'pending'`).Scan(&v); err != nil {
		return time.Time{}, false, fmt.Errorf("read next due attempt: %w", err)
	}
	if v == nil {
		return time.Time{}, false, nil
	}
	return fromMicros(*v), true, nil
}

func (t *txn) CountActive(ctx context.Context, pipeline, pool string) (int, error) {
	col, val := "pipeline", pipeline
	if pool != "" {
		col, val = "pool", pool
	}
	var n int
	err := t.queryRow(ctx, `SELECT count(*) FROM attempts WHERE `+col+` = $1 AND state IN ('queued', 'claimed', 'running')`, val).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("count active attempts of %s %s: %w", col, val, err)
	}
	return n, nil
}
