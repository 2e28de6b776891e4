package sqlite

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/dray-dev/dray/internal/store"
)

func (t *txn) AppendLogs(ctx context.Context, attemptID int64, lines []store.LogLine) error {
	const batch = 150
	for start := 0; start < len(lines); start += batch {
		end := min(start+batch, len(lines))
		args := make([]any, 0, 5*(end-start))
		for _, l := range lines[start:end] {
			args = append(args, attemptID, l.Seq, micros(l.Time), l.Stream, l.Text)
		}
		q := `INSERT INTO log_lines (attempt_id, seq, ts, stream, text) VALUES ` +
			repeatTuple("(?,?,?,?,?)", end-start) + ` ON CONFLICT (attempt_id, seq) DO NOTHING`
		if _, err := t.exec(ctx, q, args...); err != nil {
			return fmt.Errorf("append logs of attempt %d: %w", attemptID, err)
		}
	}
	return nil
}

func (t *txn) Logs(ctx context.Context, attemptID int64, after int64, limit int) ([]store.LogLine, error) {
	rows, err := t.query(ctx, `SELECT seq, ts, stream, text FROM log_lines
		WHERE attempt_id = ? AND seq > ? ORDER BY seq LIMIT ?`, attemptID, after, limit)
	if err != nil {
		return nil, fmt.Errorf("read logs of attempt %d: %w", attemptID, err)
	}
	defer rows.Close()
	var out []store.LogLine
	for rows.Next() {
		var l store.LogLine
		var ts int64
		if err := rows.Scan(&l.Seq, &ts, &l.Stream, &l.Text); err != nil {
			return nil, err
		}
		l.Time = fromMicros(ts)
		out = append(out, l)
	}
	return out, rows.Err()
}

func (t *txn) SealLogs(ctx context.Context, seg store.Segment) error {
	if _, err := t.exec(ctx, `INSERT OR REPLACE INTO log_segments (attempt_id, key, lines, bytes) VALUES (?, ?, ?, ?)`,
		seg.AttemptID, seg.Key, seg.Lines, seg.Bytes); err != nil {
		return fmt.Errorf("seal logs of attempt %d: %w", seg.AttemptID, err)
	}
	if _, err := t.exec(ctx, `DELETE FROM log_lines WHERE attempt_id = ?`, seg.AttemptID); err != nil {
		return fmt.Errorf("seal logs of attempt %d: %w", seg.AttemptID, err)
	}
	return nil
}

func (t *txn) Segment(ctx context.Context, attemptID int64) (store.Segment, error) {
	seg := store.Segment{AttemptID: attemptID}
	err := t.queryRow(ctx, `SELECT key, lines, bytes FROM log_segments WHERE attempt_id = ?`, attemptID).
		Scan(&seg.Key, &seg.Lines, &seg.Bytes)
	if err != nil {
		return seg, notFound(err, fmt.Sprintf("log segment of attempt %d", attemptID))
	}
	return seg, nil
}

func (t *txn) Unsealed(ctx context.Context, limit int) ([]int64, error) {
	// From the live tail, which holds only unsealed lines, not from every
	// attempt in the history.
	rows, err := t.query(ctx, `SELECT l.attempt_id FROM (SELECT DISTINCT attempt_id FROM log_lines) l
		JOIN attempts a ON a.id = l.attempt_id
		WHERE a.state IN ('succeeded', 'failed', 'canceled', 'lost')
		ORDER BY l.attempt_id LIMIT ?`, limit)
	if err != nil {
		return nil, fmt.Errorf("list unsealed logs: %w", err)
	}
	defer rows.Close()
	var out []int64
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		out = append(out, id)
	}
	return out, rows.Err()
}

func (t *txn) PutAgent(ctx context.Context, a *store.Agent) error {
	labels, _ := json.Marshal(orEmptySlice(a.Labels))
	execs, _ := json.Marshal(orEmptySlice(a.Executors))
	_, err := t.exec(ctx, `INSERT OR REPLACE INTO agents (`+agentColumns+`)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`, a.ID, a.Host, a.PID, string(labels), string(execs),
		a.Version, a.Capacity, micros(a.StartedAt), micros(a.HeartbeatAt), a.State, a.Token)
	if err != nil {
		return fmt.Errorf("put agent %s: %w", a.ID, err)
	}
	return nil
}

const agentColumns = `id, host, pid, labels, executors, version, capacity, started_at, heartbeat_at, state, token`

func scanAgent(sc scanner) (*store.Agent, error) {
	var a store.Agent
	var labels, execs string
	var started, beat int64
	if err := sc.Scan(&a.ID, &a.Host, &a.PID, &labels, &execs, &a.Version, &a.Capacity, &started, &beat, &a.State, &a.Token); err != nil {
		return nil, err
	}
	a.StartedAt, a.HeartbeatAt = fromMicros(started), fromMicros(beat)
	if err := json.Unmarshal([]byte(labels), &a.Labels); err != nil {
		return nil, err
	}
	if err := json.Unmarshal([]byte(execs), &a.Executors); err != nil {
		return nil, err
	}
	if len(a.Labels) == 0 {
		a.Labels = nil
	}
	if len(a.Executors) == 0 {
		a.Executors = nil
	}
	return &a, nil
}

func (t *txn) Agent(ctx context.Context, id string) (*store.Agent, error) {
	a, err := scanAgent(t.queryRow(ctx, `SELECT `+agentColumns+` FROM agents WHERE id = ?`, id))
	if err != nil {
		return nil, notFound(err, "agent "+id)
	}
	return a, nil
}

func (t *txn) Agents(ctx context.Context) ([]*store.Agent, error) {
	rows, err := t.query(ctx, `SELECT `+agentColumns+` FROM agents ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("list agents: %w", err)
	}
	defer rows.Close()
	var out []*store.Agent
	for rows.Next() {
		a, err := scanAgent(rows)
		if err != nil {
			return nil, fmt.Errorf("list agents: %w", err)
		}
		out = append(out, a)
	}
	return out, rows.Err()
}
