package control

import (
	"context"
	"strings"

	"github.com/dray-dev/dray/internal/store"
)

// Events the control plane publishes through the store, so that claimers and
// cancel watchers of other processes on the same database (server replicas, a
// separate scheduler) wake at once. An event carries the id of the Service
// that sent it, which ignores its own: it wakes its waiters itself, after the
// commit, knowing more (a reporter that took the work it queued wakes nobody).
const (
	eventQueued = "queued"
	eventCancel = "cancel"
)

func (s *Service) notify(ctx context.Context, tx store.Tx, event string) error {
	return tx.Notify(ctx, event+":"+s.id)
}

// Listen wakes this Service's claimers and cancel watchers when another
// process queues work or asks for a cancel. It returns when ctx ends.
func (s *Service) Listen(ctx context.Context) error {
	return s.store.Listen(ctx, func(ev string) {
		name, from, _ := strings.Cut(ev, ":")
		if from == s.id {
			return
		}
		switch name {
		case eventQueued:
			s.wake(true, false)
		case eventCancel:
			s.wake(false, true)
		default: // a store that cannot tell what changed
			s.wake(true, true)
		}
	})
}
