package sqlite

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"

	"github.com/dray-dev/dray/internal/engine"
)

const taskColumns = `run_id, name, state, reason, outputs, items, next, active, succeeded, failed, redo,
	attempts, base, version, started_at, ended_at`

func (t *txn) PutTasks(ctx context.Context, tasks []*engine.Task) error {
	for _, k := range tasks {
		_, err := t.exec(ctx, `INSERT OR REPLACE INTO tasks (`+taskColumns+`) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)`,
			k.RunID, k.Name, string(k.State), k.Reason, nullJSON(k.Outputs), k.Items, k.Next, k.Active,
			k.Succeeded, k.Failed, k.Redo, k.Attempts, k.Base, k.Version, micros(k.StartedAt), micros(k.EndedAt))
		if err != nil {
			return fmt.Errorf("put task %s of run %s: %w", k.Name, k.RunID, err)
		}
	}
	return nil
}

func scanTask(sc scanner) (*engine.Task, error) {
	var k engine.Task
	var state string
	var outputs sql.NullString
	var started, ended int64
	err := sc.Scan(&k.RunID, &k.Name, &state, &k.Reason, &outputs, &k.Items, &k.Next, &k.Active,
		&k.Succeeded, &k.Failed, &k.Redo, &k.Attempts, &k.Base, &k.Version, &started, &ended)
	if err != nil {
		return nil, err
	}
	k.State = engine.TaskState(state)
	k.Outputs = rawJSON(outputs)
	k.StartedAt, k.EndedAt = fromMicros(started), fromMicros(ended)
	return &k, nil
}

func (t *txn) Task(ctx context.Context, runID, name string) (*engine.Task, error) {
	k, err := scanTask(t.queryRow(ctx, `SELECT `+taskColumns+` FROM tasks WHERE run_id = ? AND name = ?`, runID, name))
	if err != nil {
		return nil, notFound(err, fmt.Sprintf("task %s of run %s", name, runID))
	}
	return k, nil
}

func (t *txn) Tasks(ctx context.Context, runID string) ([]*engine.Task, error) {
	rows, err := t.query(ctx, `SELECT `+taskColumns+` FROM tasks WHERE run_id = ?`, runID)
	if err != nil {
		return nil, fmt.Errorf("list tasks of run %s: %w", runID, err)
	}
	defer rows.Close()
	var out []*engine.Task
	for rows.Next() {
		k, err := scanTask(rows)
		if err != nil {
			return nil, fmt.Errorf("list tasks of run %s: %w", runID, err)
		}
		out = append(out, k)
	}
	return out, rows.Err()
}

func (t *txn) InsertItems(ctx context.Context, runID, task string, values []json.RawMessage) error {
	const batch = 200
	for start := 0; start < len(values); start += batch {
		end := min(start+batch, len(values))
		args := make([]any, 0, 4*(end-start))
		for i := start; i < end; i++ {
			args = append(args, runID, task, i, string(values[i]))
		}
		q := `INSERT INTO items (run_id, task, idx, value) VALUES ` + repeatTuple("(?,?,?,?)", end-start)
		if _, err := t.exec(ctx, q, args...); err != nil {
			return fmt.Errorf("insert items of %s in run %s: %w", task, runID, err)
		}
	}
	return nil
}

func repeatTuple(tuple string, n int) string {
	var b bytes.Buffer
	for i := 0; i < n; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(tuple)
	}
	return b.String()
}

func (t *txn) Item(ctx context.Context, runID, task string, index int) (json.RawMessage, error) {
	var v string
	err := t.queryRow(ctx, `SELECT value FROM items WHERE run_id = ? AND task = ? AND idx = ?`, runID, task, index).Scan(&v)
	if err != nil {
		return nil, notFound(err, fmt.Sprintf("item %d of %s in run %s", index, task, runID))
	}
	return json.RawMessage(v), nil
}
