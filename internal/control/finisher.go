package control

import (
	"context"
	"errors"
	"sync"

	"github.com/dray-dev/dray/internal/engine"
	"github.com/dray-dev/dray/internal/store"
)

// finishReq is one agent's report of an attempt's end.
type finishReq struct {
	info  AgentInfo
	id    int64
	res   engine.Result
	claim int

	got  []*engine.Attempt
	err  error
	done chan struct{}
}

// maxBatch bounds how many reports one transaction writes.
const maxBatch = 64

// finisher writes reports in batches: while one transaction commits, the
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
				if err := f.s.finishOne(ctx, tx, r, &out); err != nil {
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
			return f.s.finishOne(ctx, tx, r, &out)
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
