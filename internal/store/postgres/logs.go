package postgres

import (
	"context"
	"fmt"

	"github.com/dray-dev/dray/internal/store"
)

// AppendLogs writes the lines in one statement.
func (t *txn) AppendLogs(ctx context.Context, attemptID int64, lines []store.LogLine) error {
	if len(lines) == 0 {
		return nil
	}
	seqs, ts := make([]int64, len(lines)), make([]int64, len(lines))
	streams, texts := make([]string, len(lines)), make([]string, len(lines))
	for i, l := range lines {
		seqs[i], ts[i], streams[i], texts[i] = l.Seq, micros(l.Time), clean(l.Stream), clean(l.Text)
	}
	// A Seq recorded already, or twice in the batch, keeps its first line.
	_, err := t.exec(ctx, `INSERT INTO log_lines (attempt_id, seq, ts, stream, text)
		SELECT $1, * FROM unnest($2::bigint[], $3::bigint[], $4::text[], $5::text[])
		ON CONFLICT (attempt_id, seq) DO NOTHING`, attemptID, seqs, ts, streams, texts)
	if err != nil {
		return fmt.Errorf("append logs of attempt %d: %w", attemptID, err)
	}
	return nil
}

func (t *txn) Logs(ctx context.Context, attemptID int64, after int64, limit int) ([]store.LogLine, error) {
	return list(ctx, t, fmt.Sprintf("read logs of attempt %d", attemptID), func(sc scanner) (store.LogLine, error) {
		var l store.LogLine
		var ts int64
		err := sc.Scan(&l.Seq, &ts, &l.Stream, &l.Text)
		l.Time = fromMicros(ts)
		return l, err
	}, `SELECT seq, ts, stream, text FROM log_lines WHERE attempt_id = $1 AND seq > $2 ORDER BY seq LIMIT $3`,
		attemptID, after, rowLimit(limit))
}

func (t *txn) SealLogs(ctx context.Context, seg store.Segment) error {
	_, err := t.exec(ctx, `WITH deleted AS (DELETE FROM log_lines WHERE attempt_id = $1)
		INSERT INTO log_segments (attempt_id, key, lines, bytes) VALUES ($1, $2, $3, $4)
		ON CONFLICT (attempt_id) DO UPDATE SET key = excluded.key, lines = excluded.lines, bytes = excluded.bytes`,
		seg.AttemptID, seg.Key, seg.Lines, seg.Bytes)
	if err != nil {
		return fmt.Errorf("seal logs of attempt %d: %w", seg.AttemptID, err)
	}
	return nil
}

func (t *txn) Segment(ctx context.Context, attemptID int64) (store.Segment, error) {
	seg := store.Segment{AttemptID: attemptID}
	err := t.queryRow(ctx, `SELECT key, lines, bytes FROM log_segments WHERE attempt_id = $1`, attemptID).
		Scan(&seg.Key, &seg.Lines, &seg.Bytes)
	if err != nil {
		return seg, notFound(err, fmt.Sprintf("log segment of attempt %d", attemptID))
	}
	return seg, nil
}

func (t *txn) Unsealed(ctx context.Context, limit int) ([]int64, error) {
	// From the live tail, which holds only unsealed lines, not from every
	// attempt in the history.
	return list(ctx, t, "list unsealed logs", scanInt64, `SELECT l.attempt_id
		FROM (SELECT DISTINCT attempt_id FROM log_lines) l JOIN attempts a ON a.id = l.attempt_id
		WHERE a.state IN ('succeeded', 'failed', 'canceled', 'lost')
		ORDER BY l.attempt_id LIMIT $1`, rowLimit(limit))
}

const agentColumns = `id, host, pid, labels, executors, version, capacity, started_at, heartbeat_at, state, token`

func (t *txn) PutAgent(ctx context.Context, a *store.Agent) error {
	_, err := t.exec(ctx, `INSERT INTO agents (`+agentColumns+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
		ON CONFLICT (id) DO UPDATE SET host = excluded.host, pid = excluded.pid, labels = excluded.labels,
			executors = excluded.executors, version = excluded.version, capacity = excluded.capacity,
			started_at = excluded.started_at, heartbeat_at = excluded.heartbeat_at, state = excluded.state,
			token = excluded.token`,
		a.ID, a.Host, a.PID, orEmptySlice(a.Labels), orEmptySlice(a.Executors), a.Version, a.Capacity,
		micros(a.StartedAt), micros(a.HeartbeatAt), a.State, a.Token)
	if err != nil {
		return fmt.Errorf("put agent %s: %w", a.ID, err)
	}
	return nil
}

func scanAgent(sc scanner) (*store.Agent, error) {
	var a store.Agent
	var started, beat int64
	if err := sc.Scan(&a.ID, &a.Host, &a.PID, &a.Labels, &a.Executors, &a.Version, &a.Capacity, &started, &beat, &a.State, &a.Token); err != nil {
		return nil, err
	}
	a.StartedAt, a.HeartbeatAt = fromMicros(started), fromMicros(beat)
	if len(a.Labels) == 0 {
		a.Labels = nil
	}
	if len(a.Executors) == 0 {
		a.Executors = nil
	}
	return &a, nil
}

func (t *txn) Agent(ctx context.Context, id string) (*store.Agent, error) {
	a, err := scanAgent(t.queryRow(ctx, `SELECT `+agentColumns+` FROM agents WHERE id = $1`, id))
	if err != nil {
		return nil, notFound(err, "agent "+id)
	}
	return a, nil
}

func (t *txn) Agents(ctx context.Context) ([]*store.Agent, error) {
	return list(ctx, t, "list agents", scanAgent, `SELECT `+agentColumns+` FROM agents ORDER BY id`)
}
