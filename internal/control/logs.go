package control

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/dray-dev/dray/internal/engine"
	"github.com/dray-dev/dray/internal/store"
)

// A log segment in blob storage is JSON lines, one store.LogLine each.
type segmentLine struct {
	Seq    int64     `json:"seq"`
	Time   time.Time `json:"ts"`
	Stream string    `json:"stream"`
	Text   string    `json:"text"`
}

// segmentKey is where an attempt's log goes in blob storage.
func segmentKey(a *engine.Attempt) string {
	return fmt.Sprintf("logs/%s/%s/%d-%d-%d.jsonl", a.RunID, a.Task, a.Index, a.Number, a.ID)
}

// sealer moves the logs of ended attempts from the store to blob storage in
// the background. Until an attempt's log is sealed, it is read from the store.
type sealer struct {
	s    *Service
	mu   sync.Mutex
	ids  []int64
	wake chan struct{}
	done chan struct{}
	stop context.CancelFunc
}

func (z *sealer) init(s *Service) {
	z.s = s
	z.wake = make(chan struct{}, 1)
	z.done = make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	z.stop = cancel
	if s.cfg.Blob == nil {
		close(z.done)
		return
	}
	go z.loop(ctx)
}

func (z *sealer) add(id int64) {
	if z.s.cfg.Blob == nil {
		return
	}
	z.mu.Lock()
	z.ids = append(z.ids, id)
	z.mu.Unlock()
	select {
	case z.wake <- struct{}{}:
	default:
	}
}

// close seals what is queued and stops.
func (z *sealer) close() {
	z.stop()
	<-z.done
}

func (z *sealer) loop(ctx context.Context) {
	defer close(z.done)
	for {
		z.mu.Lock()
		ids := z.ids
		z.ids = nil
		z.mu.Unlock()
		for _, id := range ids {
			// Sealing must finish even while the service stops.
			if err := z.seal(context.WithoutCancel(ctx), id); err != nil {
				z.s.log.Warn("seal log: the lines stay in the store until the next try", "attempt", id, "err", err)
			}
		}
		select {
		case <-z.wake:
		case <-ctx.Done():
			z.mu.Lock()
			left := len(z.ids)
			z.mu.Unlock()
			if left == 0 {
				return
			}
		}
	}
}

// sweep seals the logs of every ended attempt still in the store.
func (z *sealer) sweep(ctx context.Context) error {
	if z.s.cfg.Blob == nil {
		return nil
	}
	for {
		var ids []int64
		if err := z.s.store.View(ctx, func(tx store.Tx) error {
			var err error
			ids, err = tx.Unsealed(ctx, 100)
			return err
		}); err != nil {
			return err
		}
		for _, id := range ids {
			if err := z.seal(ctx, id); err != nil {
				return err
			}
		}
		if len(ids) < 100 {
			return nil
		}
	}
}

// seal writes an ended attempt's lines to blob storage, then records the
// segment and deletes the lines in one transaction. If the write fails the
// lines stay in the store: nothing is lost.
func (z *sealer) seal(ctx context.Context, id int64) error {
	var a *engine.Attempt
	var buf bytes.Buffer
	var n int64
	err := z.s.store.View(ctx, func(tx store.Tx) error {
		var err error
		if a, err = tx.Attempt(ctx, id); err != nil {
			return err
		}
		if !a.State.Final() {
			return fmt.Errorf("attempt %d has not ended", id)
		}
		enc := json.NewEncoder(&buf)
		var after int64
		for {
			lines, err := tx.Logs(ctx, id, after, 5000)
			if err != nil {
				return err
			}
			for _, l := range lines {
				if err := enc.Encode(segmentLine{Seq: l.Seq, Time: l.Time, Stream: l.Stream, Text: l.Text}); err != nil {
					return err
				}
				after = l.Seq
				n++
			}
			if len(lines) < 5000 {
				return nil
			}
		}
	})
	if err != nil || n == 0 {
		return err
	}
	key := segmentKey(a)
	if err := z.s.cfg.Blob.WriteAll(ctx, key, buf.Bytes(), nil); err != nil {
		return fmt.Errorf("write %s: %w", key, err)
	}
	return z.s.store.Update(ctx, func(tx store.Tx) error {
		return tx.SealLogs(ctx, store.Segment{AttemptID: id, Key: key, Lines: n, Bytes: int64(buf.Len())})
	})
}

// Logs returns an attempt's log lines with Seq > after, from its sealed
// segment or from the store.
func (s *Service) Logs(ctx context.Context, attemptID int64, after int64, limit int) ([]store.LogLine, error) {
	var lines []store.LogLine
	var seg store.Segment
	sealed := false
	err := s.store.View(ctx, func(tx store.Tx) error {
		var err error
		lines, err = tx.Logs(ctx, attemptID, after, limit)
		if err != nil || len(lines) > 0 {
			return err
		}
		seg, err = tx.Segment(ctx, attemptID)
		if errors.Is(err, store.ErrNotFound) {
			return nil
		}
		sealed = err == nil
		return err
	})
	if err != nil || !sealed {
		return lines, err
	}
	if s.cfg.Blob == nil {
		return nil, fmt.Errorf("attempt %d's log is in blob storage (%s), which is not configured", attemptID, seg.Key)
	}
	data, err := s.cfg.Blob.ReadAll(ctx, seg.Key)
	if err != nil {
		return nil, fmt.Errorf("read log segment %s: %w", seg.Key, err)
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64*1024), 16<<20)
	for sc.Scan() {
		var l segmentLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			return nil, fmt.Errorf("read log segment %s: %w", seg.Key, err)
		}
		if l.Seq > after && (limit <= 0 || len(lines) < limit) {
			lines = append(lines, store.LogLine{Seq: l.Seq, Time: l.Time, Stream: l.Stream, Text: l.Text})
		}
	}
	return lines, sc.Err()
}
