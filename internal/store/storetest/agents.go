package storetest

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/dray-dev/dray/internal/store"
)

func fullAgent(id string) *store.Agent {
	return &store.Agent{
		ID:          id,
		Host:        "worker-3.internal",
		PID:         4242,
		Labels:      []string{"gpu", "linux"},
		Executors:   []string{"local", "docker"},
		Version:     "v0.3.1",
		Capacity:    8,
		StartedAt:   t0,
		HeartbeatAt: t0.Add(15*time.Second + 1234*time.Nanosecond),
		State:       "active",
		Token:       "3f2a9c0d1e7b",
	}
}

// testAgentRoundTrip: "PutAgent inserts or replaces an agent." "Agent returns
// an agent by id (ErrNotFound)." Every field comes back; a replace writes
// every field.
func testAgentRoundTrip(t *testing.T, s store.Store) {
	a := fullAgent("agent-1")
	other := fullAgent("agent-2")
	update(t, s, func(ctx context.Context, tx store.Tx) error {
		if err := tx.PutAgent(ctx, deepCopy(a)); err != nil {
			return err
		}
		return tx.PutAgent(ctx, deepCopy(other))
	})
	got := get(t, s, func(ctx context.Context, tx store.Tx) (*store.Agent, error) { return tx.Agent(ctx, a.ID) })
	checkEqual(t, "agent", a, got)

	for _, r := range []*store.Agent{
		{ID: a.ID, Host: "worker-4", PID: 1, Labels: []string{"arm"}, Executors: []string{"ecs"}, Version: "v0.4.0", Capacity: 1, StartedAt: t0.Add(time.Hour), HeartbeatAt: t0.Add(2 * time.Hour), State: "draining"},
		{ID: a.ID, State: "stopped"},
	} {
		update(t, s, func(ctx context.Context, tx store.Tx) error { return tx.PutAgent(ctx, deepCopy(r)) })
		got := get(t, s, func(ctx context.Context, tx store.Tx) (*store.Agent, error) { return tx.Agent(ctx, a.ID) })
		checkEqual(t, "replaced agent", r, got)
	}
	got = get(t, s, func(ctx context.Context, tx store.Tx) (*store.Agent, error) { return tx.Agent(ctx, other.ID) })
	checkEqual(t, "agent not replaced", other, got)
}

// testAgents: "Agents lists every agent by id."
func testAgents(t *testing.T, s store.Store) {
	if got := get(t, s, func(ctx context.Context, tx store.Tx) ([]*store.Agent, error) { return tx.Agents(ctx) }); len(got) != 0 {
		t.Errorf("Agents on an empty store: got %d, want none", len(got))
	}
	written := map[string]*store.Agent{}
	ids := []string{"m-agent", "agent-10", "z", "agent-2", "a"}
	update(t, s, func(ctx context.Context, tx store.Tx) error {
		for _, id := range ids {
			written[id] = fullAgent(id)
			if err := tx.PutAgent(ctx, deepCopy(written[id])); err != nil {
				return err
			}
		}
		// A replace does not add an agent.
		written["z"] = fullAgent("z")
		written["z"].State = "cordoned"
		return tx.PutAgent(ctx, deepCopy(written["z"]))
	})
	got := get(t, s, func(ctx context.Context, tx store.Tx) ([]*store.Agent, error) { return tx.Agents(ctx) })
	var gotIDs []string
	for _, a := range got {
		gotIDs = append(gotIDs, a.ID)
	}
	want := slices.Sorted(slices.Values(ids))
	if !slices.Equal(gotIDs, want) {
		t.Fatalf("Agents: got %q, want %q", gotIDs, want)
	}
	for _, a := range got {
		checkEqual(t, "listed agent "+a.ID, written[a.ID], a)
	}
}
