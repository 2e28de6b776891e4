package control

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/dray-dev/dray/internal/engine"
	"github.com/dray-dev/dray/internal/store"
)

// finishReq is one agent's report: an attempt's end (the default), or, when
// started is set, that it started.
type finishReq struct {
	info  AgentInfo
	id    int64
	res   engine.Result
	claim int

	started bool
	handle  []byte
	at      time.Time

	got  []*engine.Attempt
	err  error
	done chan struct{}
}

// apply records the report inside tx.
func (r *finishReq) apply(ctx context.Context, s *Service, tx store.Tx, out *changes) error {
	if r.started {
		return s.started(ctx, tx, r.info.ID, r.id, r.handle, r.at)
	}
	return s.finishOne(ctx, tx, r, out)
}

// maxBatch bounds how many reports one transaction writes.
const maxBatch = 64

// finisher writes agents' reports (results and starts) in batches: while one transaction commits, the
// reports that arrive wait, and the next transaction writes all of them. A
// batch in which one report fails is rolled back and written one report a
// transaction, so a bad report never fails the others.
type finisher struct {
	s  *Service
	mu sync.Mutex
	q  []*finishReq
	// busy is true while a goroutine drains the queue.
	busy bool
}

func (f *finisher) submit(ctx context.Context, r *finishReq) ([]*engine.Attempt, error) {
	r.done = make(chan struct{})
	f.mu.Lock()
	f.q = append(f.q, r)
	drain := !f.busy
	f.busy = true
	f.mu.Unlock()
	if drain {
		// The first reporter writes the batches until the queue is empty.
		f.drain(context.WithoutCancel(ctx))
	}
	select {
	case <-r.done:
		return r.got, r.err
	case <-ctx.Done():
		// The report may still be written; sending it again is harmless.
		return nil, ctx.Err()
	}
}

func (f *finisher) drain(ctx context.Context) {
	for {
		f.mu.Lock()
		n := min(len(f.q), maxBatch)
		batch := f.q[:n:n]
		f.q = f.q[n:]
		if n == 0 {
			f.busy = false
			f.mu.Unlock()
			return
		}
		f.mu.Unlock()
		f.write(ctx, batch)
	}
}

var errBatch = errors.New("a report of the batch failed")

func (f *finisher) write(ctx context.Context, batch []*finishReq) {
	defer func() {
		for _, r := range batch {
			close(r.done)
		}
	}()
	if len(batch) > 1 {
		var out changes
		err := f.s.store.Update(ctx, func(tx store.Tx) error {
			out = changes{}
			for _, r := range batch {
				r.got = nil
				if err := r.apply(ctx, f.s, tx, &out); err != nil {
					return errBatch
				}
			}
			return nil
		})
		if err == nil {
			f.done(batch, out)
			return
		}
	}
	for _, r := range batch {
		var out changes
		r.err = f.s.store.Update(ctx, func(tx store.Tx) error {
			out = changes{}
			r.got = nil
			return r.apply(ctx, f.s, tx, &out)
		})
		if r.err == nil {
			f.done([]*finishReq{r}, out)
		}
	}
}

// done acts on a committed batch.
func (f *finisher) done(batch []*finishReq, out changes) {
	claimed := 0
	for _, r := range batch {
		claimed += len(r.got)
	}
	if claimed >= out.queuedN {
		// The reporters took everything that became claimable.
		out.queued = false
	}
	f.s.after(out)
}
