package control

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"

	"github.com/dray-dev/dray/internal/engine"
	"github.com/dray-dev/dray/internal/expr"
	"github.com/dray-dev/dray/internal/store"
)

// txData reads what the engine asks for from the transaction it decides in.
type txData struct {
	ctx   context.Context
	tx    store.Tx
	run   *engine.Run
	cache *outputCache
}

var _ engine.Data = (*txData)(nil)

func (d *txData) Task(name string) (*engine.Task, error) { return d.tx.Task(d.ctx, d.run.ID, name) }

func (d *txData) Tasks() ([]*engine.Task, error) { return d.tx.Tasks(d.ctx, d.run.ID) }

// Outputs decodes an ended task's outputs. Outputs of an ended task never
// change until the task is reset (which changes its Version), so they are cached.
func (d *txData) Outputs(t *engine.Task) (any, error) {
	key := outputKey{run: t.RunID, task: t.Name, version: t.Version}
	if v, ok := d.cache.get(key); ok {
		return v, nil
	}
	raw := t.Outputs
	if raw == nil {
		return nil, fmt.Errorf("task %s has no outputs", t.Name)
	}
	v, err := expr.Decode(raw)
	if err != nil {
		return nil, fmt.Errorf("decode outputs of %s: %w", t.Name, err)
	}
	d.cache.put(key, v)
	return v, nil
}

func (d *txData) Item(task string, index int) (json.RawMessage, error) {
	return d.tx.Item(d.ctx, d.run.ID, task, index)
}

func (d *txData) InstanceOutputs(task string, n int) ([]json.RawMessage, error) {
	return d.tx.InstanceOutputs(d.ctx, d.run.ID, task, n)
}

func (d *txData) ActiveAttempts() ([]*engine.Attempt, error) {
	return d.tx.Attempts(d.ctx, store.AttemptFilter{RunID: d.run.ID, States: activeStates})
}

func (d *txData) RedoInstances(task string, limit int) ([]engine.Instance, error) {
	return d.tx.RedoInstances(d.ctx, d.run.ID, task, limit)
}

// activeStates are the states of attempts that have not ended.
var activeStates = []engine.AttemptState{engine.AttemptPending, engine.AttemptQueued, engine.AttemptClaimed, engine.AttemptRunning}

type outputKey struct {
	run, task string
	version   int
}

// outputCache keeps decoded outputs of ended tasks, evicting the oldest entry
// past its size. Callers must not modify the values.
type outputCache struct {
	mu    sync.Mutex
	max   int
	order []outputKey
	m     map[outputKey]any
}

func newOutputCache(max int) *outputCache {
	return &outputCache{max: max, m: map[outputKey]any{}}
}

func (c *outputCache) get(k outputKey) (any, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	v, ok := c.m[k]
	return v, ok
}

func (c *outputCache) put(k outputKey, v any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.m[k]; ok {
		return
	}
	if len(c.order) >= c.max {
		delete(c.m, c.order[0])
		c.order = c.order[1:]
	}
	c.order = append(c.order, k)
	c.m[k] = v
}
