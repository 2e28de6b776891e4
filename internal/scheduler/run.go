package scheduler

import (
	"context"
	"fmt"
	"time"

	"github.com/dray-dev/dray/internal/store"
)

// Run is the scheduler's loop. It takes the lease LeaseName and, while it
// holds it, renews it and ticks every LeaseTTL/3, at every fire time and
// retry timer Tick reports, and when the control plane says an attempt
// started waiting for a retry (control.Service.Timers). While another
// scheduler holds the lease it stands by, trying to take it every LeaseTTL/3
// and when it expires. It returns nil when ctx ends, after releasing the lease
// if it holds it; a scheduler that stops without releasing (a crash) is
// replaced when its lease expires, at most LeaseTTL later.
//
// Pipelines reloaded, or timers set by other processes, are seen at the next
// tick: within LeaseTTL/3.
func (s *Scheduler) Run(ctx context.Context) error {
	renew := s.cfg.LeaseTTL / 3
	held := false
	defer func() {
		s.setActive(false)
		if held {
			s.release(ctx)
		}
	}()
	standingBy := "" // the holder we said we stand by for
	for ctx.Err() == nil {
		start := s.now()
		lease, ok, err := s.acquire(ctx, start)
		wait := renew
		switch {
		case err != nil:
			if ctx.Err() != nil {
				return nil
			}
			// Whether we hold it is unknown: tick only once we know.
			s.setActive(false)
			s.log.Warn("scheduler lease: cannot reach the store", "err", err)
		case !ok:
			if held || standingBy != lease.Holder {
				s.log.Info("scheduler standing by: another scheduler is active", "holder", lease.Holder, "expires", lease.ExpiresAt)
			}
			held, standingBy = false, lease.Holder
			s.setActive(false)
			if until := lease.ExpiresAt.Sub(start); until > 0 && until < wait {
				wait = until
			}
		default:
			if !held {
				s.log.Info("scheduler active", "holder", s.cfg.Holder, "lease_ttl", s.cfg.LeaseTTL)
			}
			held, standingBy = true, ""
			s.setActive(true)
			next, err := s.Tick(ctx)
			if err != nil && ctx.Err() == nil {
				s.log.Error("scheduler tick", "err", err)
			}
			now := s.now()
			wait = renew - now.Sub(start)
			if !next.IsZero() && next.Sub(now) < wait {
				wait = next.Sub(now)
			}
		}
		if wait <= 0 {
			continue
		}
		var timers <-chan struct{}
		if held {
			timers = s.cfg.Control.Timers()
		}
		fired, stop := s.timer(wait)
		select {
		case <-ctx.Done():
			stop()
		case <-fired:
		case <-timers:
			stop()
		}
	}
	return nil
}

// Active reports whether this scheduler's Run held the lease when it last
// took or renewed it.
func (s *Scheduler) Active() bool {
	s.activeMu.Lock()
	defer s.activeMu.Unlock()
	return s.active
}

func (s *Scheduler) setActive(v bool) {
	s.activeMu.Lock()
	s.active = v
	s.activeMu.Unlock()
}

// acquire takes or renews the lease.
func (s *Scheduler) acquire(ctx context.Context, now time.Time) (store.Lease, bool, error) {
	var lease store.Lease
	var ok bool
	err := s.cfg.Store.Update(ctx, func(tx store.Tx) error {
		var err error
		lease, ok, err = tx.AcquireLease(ctx, LeaseName, s.cfg.Holder, now, s.cfg.LeaseTTL)
		return err
	})
	if err != nil {
		return store.Lease{}, false, fmt.Errorf("take lease %s for %s: %w", LeaseName, s.cfg.Holder, err)
	}
	return lease, ok, nil
}

// release gives the lease up, so a stand-by takes over at once; ctx has ended
// by then, so it gets a few seconds of its own.
func (s *Scheduler) release(ctx context.Context) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	err := s.cfg.Store.Update(ctx, func(tx store.Tx) error {
		return tx.ReleaseLease(ctx, LeaseName, s.cfg.Holder)
	})
	if err != nil {
		s.log.Warn("release scheduler lease: it expires by itself", "holder", s.cfg.Holder, "err", err)
		return
	}
	s.log.Info("scheduler lease released", "holder", s.cfg.Holder)
}
