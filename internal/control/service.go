// Package control is dray's control plane service: it runs the engine against
// the store. Every call that changes a run reads the run's recorded state,
// asks the engine what to do and writes the engine's Step in the same
// transaction, so a run advances the moment a result is recorded. Agents
// claim, report and heartbeat through it (in process, or over HTTP through the
// server), and time-driven work (retry timers, dead agents, log sealing)
// happens in Tick.
package control

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/dray-dev/dray/internal/blob"
	"github.com/dray-dev/dray/internal/engine"
	"github.com/dray-dev/dray/internal/spec"
	"github.com/dray-dev/dray/internal/store"
)

// Config holds a Service's dependencies.
type Config struct {
	Store  store.Store
	Blob   *blob.Bucket // where closed log segments go
	Logger *slog.Logger
	// Now is the clock (default time.Now).
	Now func() time.Time
	// AgentLease is how long an agent may go without a heartbeat before its
	// attempts are lost (default 30s).
	AgentLease time.Duration
	// Host is this machine's name, to tell whether an agent's process is gone.
	Host string
	// OnAgentGone, when set, is called for an agent declared gone, with the
	// attempts it held, before they are marked lost: the place to kill what is
	// left of them on this host.
	OnAgentGone func(ctx context.Context, agent *store.Agent, held []*engine.Attempt)
}

// Service is the control plane over one store.
type Service struct {
	id  string // tells this Service's store events from others'
	cfg Config
	// started is when this Service began: an agent's silence is counted
	// from then at the earliest, so a control plane that was down itself
	// does not hold its own downtime against the agents.
	since time.Time
	store store.Store
	log   *slog.Logger

	plansMu sync.Mutex
	plans   map[string]*spec.Pipeline // by spec hash

	outputs *outputCache

	// queued is closed and replaced whenever attempts become claimable, to wake
	// long-polling claimers.
	queuedMu sync.Mutex
	queued   chan struct{}
	// cancels is the same for attempts asked to stop.
	cancels chan struct{}
	// timers gets a value when an attempt starts waiting for a time.
	timers chan struct{}

	subsMu sync.Mutex
	subs   map[*subscription]struct{}

	sealer   sealer
	finisher finisher

	// logged holds attempts that got log lines here and have not been
	// sealed: only they need sealing when they end (Tick's sweep finds the
	// others, such as those of an earlier process).
	loggedMu sync.Mutex
	logged   map[int64]bool
}

// New returns a Service.
func New(cfg Config) *Service {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.AgentLease == 0 {
		cfg.AgentLease = 30 * time.Second
	}
	s := &Service{
		id:      randomHex(8),
		cfg:     cfg,
		store:   cfg.Store,
		log:     cfg.Logger,
		plans:   map[string]*spec.Pipeline{},
		outputs: newOutputCache(256),
		queued:  make(chan struct{}),
		cancels: make(chan struct{}),
		timers:  make(chan struct{}, 1),
		subs:    map[*subscription]struct{}{},
		logged:  map[int64]bool{},
	}
	s.since = s.now()
	s.sealer.init(s)
	s.finisher.s = s
	return s
}

// Close waits for log sealing in progress.
func (s *Service) Close() { s.sealer.close() }

func (s *Service) now() time.Time { return s.cfg.Now().UTC().Truncate(time.Microsecond) }

// AddPlan makes a loaded pipeline known, so its runs need not rebuild it.
func (s *Service) AddPlan(p *spec.Pipeline) {
	s.plansMu.Lock()
	defer s.plansMu.Unlock()
	s.plans[p.Hash] = p
}

// plan returns the pipeline a run was started with, rebuilding it from the
// recorded sources when this process has not seen it.
func (s *Service) plan(ctx context.Context, tx store.Tx, r *engine.Run) (*spec.Pipeline, error) {
	s.plansMu.Lock()
	p, ok := s.plans[r.SpecHash]
	s.plansMu.Unlock()
	if ok {
		return p, nil
	}
	sources, err := tx.Spec(ctx, r.SpecHash)
	if err != nil {
		return nil, fmt.Errorf("read spec of run %s: %w", r.ID, err)
	}
	p, err = spec.LoadSnapshot(sources, r.Pipeline)
	if err != nil {
		return nil, fmt.Errorf("rebuild pipeline %s of run %s: %w", r.Pipeline, r.ID, err)
	}
	s.AddPlan(p)
	return p, nil
}

// wake wakes claimers (queued) or cancel watchers (cancels).
func (s *Service) wake(queued, cancels bool) {
	s.queuedMu.Lock()
	defer s.queuedMu.Unlock()
	if queued {
		close(s.queued)
		s.queued = make(chan struct{})
	}
	if cancels {
		close(s.cancels)
		s.cancels = make(chan struct{})
	}
}

// Timers gets a value when an attempt starts waiting for a retry delay, so a
// process that calls Tick at the next due time can look again.
func (s *Service) Timers() <-chan struct{} { return s.timers }

// signals returns the current wake-up channels.
func (s *Service) signals() (queued, cancels <-chan struct{}) {
	s.queuedMu.Lock()
	defer s.queuedMu.Unlock()
	return s.queued, s.cancels
}

// subscription receives events; its queue never blocks the service.
type subscription struct {
	run  string
	mu   sync.Mutex
	q    []engine.Event
	wake chan struct{}
}

// Subscribe returns a channel of the events of one run ("" for every run),
// and a function that ends the subscription. Events are delivered in order
// and never dropped; the channel is closed when ctx ends.
func (s *Service) Subscribe(ctx context.Context, runID string) <-chan engine.Event {
	sub := &subscription{run: runID, wake: make(chan struct{}, 1)}
	s.subsMu.Lock()
	s.subs[sub] = struct{}{}
	s.subsMu.Unlock()
	out := make(chan engine.Event)
	go func() {
		defer close(out)
		defer func() {
			s.subsMu.Lock()
			delete(s.subs, sub)
			s.subsMu.Unlock()
		}()
		for {
			sub.mu.Lock()
			q := sub.q
			sub.q = nil
			sub.mu.Unlock()
			for _, ev := range q {
				select {
				case out <- ev:
				case <-ctx.Done():
					return
				}
			}
			select {
			case <-sub.wake:
			case <-ctx.Done():
				return
			}
		}
	}()
	return out
}

func (s *Service) publish(events []engine.Event) {
	if len(events) == 0 {
		return
	}
	s.subsMu.Lock()
	defer s.subsMu.Unlock()
	for sub := range s.subs {
		sub.mu.Lock()
		for _, ev := range events {
			if sub.run == "" || sub.run == ev.RunID {
				sub.q = append(sub.q, ev)
			}
		}
		sub.mu.Unlock()
		select {
		case sub.wake <- struct{}{}:
		default:
		}
	}
}
