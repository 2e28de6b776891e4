package postgres

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/dray-dev/dray/internal/engine"
)

const taskColumns = `run_id, name, state, reason, outputs, items, next, active, succeeded, failed, redo,
	attempts, base, version, started_at, ended_at`

// PutTasks writes every task in one statement.
func (t *txn) PutTasks(ctx context.Context, tasks []*engine.Task) error {
	if len(tasks) == 0 {
		return nil
	}
	// One statement may not upsert a row twice: the last put of a key wins.
	last := make(map[[2]string]int, len(tasks))
	for i, k := range tasks {
		last[[2]string{k.RunID, k.Name}] = i
	}
	n := len(last)
	var (
		runs, names, states, reasons                                      = make([]string, 0, n), make([]string, 0, n), make([]string, 0, n), make([]string, 0, n)
		outputs                                                           = make([]*string, 0, n)
		items, next, active, succeeded, failed, redo, attempts, base, ver = make([]int32, 0, n), make([]int32, 0, n), make([]int32, 0, n), make([]int32, 0, n), make([]int32, 0, n), make([]int32, 0, n), make([]int32, 0, n), make([]int32, 0, n), make([]int32, 0, n)
		started, ended                                                    = make([]int64, 0, n), make([]int64, 0, n)
	)
	for i, k := range tasks {
		if last[[2]string{k.RunID, k.Name}] != i {
			continue
		}
		runs, names, states, reasons = append(runs, k.RunID), append(names, k.Name), append(states, string(k.State)), append(reasons, clean(k.Reason))
		var out *string
		if k.Outputs != nil {
			s := clean(string(k.Outputs))
			out = &s
		}
		outputs = append(outputs, out)
		items, next, active = append(items, int32(k.Items)), append(next, int32(k.Next)), append(active, int32(k.Active))
		succeeded, failed, redo = append(succeeded, int32(k.Succeeded)), append(failed, int32(k.Failed)), append(redo, int32(k.Redo))
		attempts, base, ver = append(attempts, int32(k.Attempts)), append(base, int32(k.Base)), append(ver, int32(k.Version))
		started, ended = append(started, micros(k.StartedAt)), append(ended, micros(k.EndedAt))
	}
	_, err := t.exec(ctx, `INSERT INTO tasks (`+taskColumns+`)
		SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::int[], $7::int[],
			$8::int[], $9::int[], $10::int[], $11::int[], $12::int[], $13::int[], $14::int[], $15::bigint[], $16::bigint[])
		ON CONFLICT (run_id, name) DO UPDATE SET state = excluded.state, reason = excluded.reason,
			outputs = excluded.outputs, items = excluded.items, next = excluded.next, active = excluded.active,
			succeeded = excluded.succeeded, failed = excluded.failed, redo = excluded.redo,
			attempts = excluded.attempts, base = excluded.base, version = excluded.version,
			started_at = excluded.started_at, ended_at = excluded.ended_at`,
		runs, names, states, reasons, outputs, items, next, active, succeeded, failed, redo, attempts, base, ver, started, ended)
	if err != nil {
		if len(tasks) == 1 {
			return fmt.Errorf("put task %s of run %s: %w", tasks[0].Name, tasks[0].RunID, err)
		}
		return fmt.Errorf("put %d tasks of run %s: %w", len(tasks), tasks[0].RunID, err)
	}
	return nil
}

func scanTask(sc scanner) (*engine.Task, error) {
	var k engine.Task
	var state string
	var outputs *string
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
	k, err := scanTask(t.queryRow(ctx, `SELECT `+taskColumns+` FROM tasks WHERE run_id = $1 AND name = $2`, runID, name))
	if err != nil {
		return nil, notFound(err, fmt.Sprintf("task %s of run %s", name, runID))
	}
	return k, nil
}

func (t *txn) Tasks(ctx context.Context, runID string) ([]*engine.Task, error) {
	return list(ctx, t, "list tasks of run "+runID, scanTask, `SELECT `+taskColumns+` FROM tasks WHERE run_id = $1`, runID)
}

// itemBatch bounds the items one statement inserts (a for_each may have
// 100,000).
const itemBatch = 10000

func (t *txn) InsertItems(ctx context.Context, runID, task string, values []json.RawMessage) error {
	for start := 0; start < len(values); start += itemBatch {
		end := min(start+itemBatch, len(values))
		idx := make([]int32, 0, end-start)
		vals := make([]string, 0, end-start)
		for i := start; i < end; i++ {
			idx = append(idx, int32(i))
			vals = append(vals, clean(string(values[i])))
		}
		_, err := t.exec(ctx, `INSERT INTO items (run_id, task, idx, value)
			SELECT $1, $2, i, v FROM unnest($3::int[], $4::text[]) AS u (i, v)`, runID, task, idx, vals)
		if err != nil {
			return fmt.Errorf("insert items of %s in run %s: %w", task, runID, err)
		}
	}
	return nil
}

func (t *txn) Item(ctx context.Context, runID, task string, index int) (json.RawMessage, error) {
	var v string
	err := t.queryRow(ctx, `SELECT value FROM items WHERE run_id = $1 AND task = $2 AND idx = $3`, runID, task, index).Scan(&v)
	if err != nil {
		return nil, notFound(err, fmt.Sprintf("item %d of %s in run %s", index, task, runID))
	}
	return json.RawMessage(v), nil
}
