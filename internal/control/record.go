package control

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/dray-dev/dray/internal/engine"
	"github.com/dray-dev/dray/internal/store"
)

// RunRecord is a run as `--json` and the API show it (DESIGN.md, "Contracts
// that scripts rely on").
type RunRecord struct {
	ID          string         `json:"id"`
	Pipeline    string         `json:"pipeline"`
	State       string         `json:"state"`
	Reason      string         `json:"reason,omitempty"`
	Params      map[string]any `json:"params"`
	Trigger     string         `json:"trigger"`
	LogicalDate string         `json:"logical_date"`
	CreatedAt   *time.Time     `json:"created_at"`
	StartedAt   *time.Time     `json:"started_at"`
	EndedAt     *time.Time     `json:"ended_at"`
	// Tasks are left out of lists of runs.
	Tasks []TaskRecord `json:"tasks,omitempty"`
}

// TaskRecord is one task of a RunRecord. Outputs follow the output rules: an
// object for an ordinary task, a list in item order for a for_each task,
// null while the task has not ended. Instances is set for for_each tasks only.
type TaskRecord struct {
	Name     string          `json:"name"`
	State    string          `json:"state"`
	Reason   string          `json:"reason"`
	Attempts int             `json:"attempts"`
	Outputs  json.RawMessage `json:"outputs"`
	Warnings []string        `json:"warnings,omitempty"`
	// Waiting says why a queued attempt of the task is not claimed: which
	// labels or executor no live agent offers.
	Waiting   string           `json:"waiting,omitempty"`
	StartedAt *time.Time       `json:"started_at"`
	EndedAt   *time.Time       `json:"ended_at"`
	Instances []InstanceRecord `json:"instances,omitzero"`
	// Items is how many items a for_each task has (also in a Summary, which
	// leaves Instances out).
	Items int `json:"-"`
}

// InstanceRecord is one instance of a for_each task.
type InstanceRecord struct {
	Index    int             `json:"index"`
	Item     json.RawMessage `json:"item"`
	State    string          `json:"state"`
	Reason   string          `json:"reason,omitempty"`
	Attempts int             `json:"attempts"`
	Outputs  json.RawMessage `json:"outputs"`
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

// Record returns a run's record, its tasks in the pipeline's order.
func (s *Service) Record(ctx context.Context, runID string) (*RunRecord, error) {
	return s.readRecord(ctx, runID, true)
}

// Summary is Record without the instances of for_each tasks (only their
// count, in Items): light to read however many items a task has.
func (s *Service) Summary(ctx context.Context, runID string) (*RunRecord, error) {
	return s.readRecord(ctx, runID, false)
}

func (s *Service) readRecord(ctx context.Context, runID string, withInstances bool) (*RunRecord, error) {
	var rec *RunRecord
	err := s.store.View(ctx, func(tx store.Tx) error {
		var err error
		rec, err = s.record(ctx, tx, runID, withInstances)
		return err
	})
	return rec, err
}

func (s *Service) record(ctx context.Context, tx store.Tx, runID string, withInstances bool) (*RunRecord, error) {
	r, err := tx.Run(ctx, runID)
	if err != nil {
		return nil, err
	}
	plan, err := s.plan(ctx, tx, r)
	if err != nil {
		return nil, err
	}
	rec := runHeader(r)
	tasks, err := tx.Tasks(ctx, runID)
	if err != nil {
		return nil, err
	}
	rows := map[string]*engine.Task{}
	for _, t := range tasks {
		rows[t.Name] = t
	}
	byTask := map[string][]*engine.Attempt{}
	counts := map[string]int{}
	if withInstances {
		attempts, err := tx.Attempts(ctx, store.AttemptFilter{RunID: runID})
		if err != nil {
			return nil, err
		}
		for _, a := range attempts {
			byTask[a.Task] = append(byTask[a.Task], a)
		}
	} else if counts, err = tx.CountAttempts(ctx, runID); err != nil {
		return nil, err
	}
	now := s.now()
	var agents []*store.Agent // read when a queued attempt needs them
	for _, st := range plan.Tasks {
		t := rows[st.Name]
		tr := TaskRecord{Name: st.Name, State: string(engine.TaskPending)}
		if t != nil {
			tr.State, tr.Reason, tr.Outputs = string(t.State), t.Reason, t.Outputs
			tr.StartedAt, tr.EndedAt = timePtr(t.StartedAt), timePtr(t.EndedAt)
		}
		own := byTask[st.Name]
		tr.Attempts = len(own) + counts[st.Name]
		for _, a := range own {
			tr.Warnings = append(tr.Warnings, a.Warnings...)
			if a.State != engine.AttemptQueued || tr.Waiting != "" {
				continue
			}
			if agents == nil {
				if agents, err = tx.Agents(ctx); err != nil {
					return nil, err
				}
			}
			tr.Waiting = whyUnclaimed(a, agents, now, s.since, s.cfg.AgentLease)
		}
		if t != nil && t.Items > 0 {
			tr.Items = t.Items
		}
		if st.IsForEach() && withInstances {
			if tr.Instances, err = instances(ctx, tx, runID, st.Name, t, own, now); err != nil {
				return nil, err
			}
			if tr.Instances == nil {
				tr.Instances = []InstanceRecord{}
			}
		}
		rec.Tasks = append(rec.Tasks, tr)
	}
	return rec, nil
}

func runHeader(r *engine.Run) *RunRecord {
	params := r.Params
	if params == nil {
		params = map[string]any{}
	}
	return &RunRecord{
		ID: r.ID, Pipeline: r.Pipeline, State: string(r.State), Reason: r.Reason, Params: params,
		Trigger: r.Trigger, LogicalDate: engine.LogicalDate(r), CreatedAt: timePtr(r.CreatedAt),
		StartedAt: timePtr(r.StartedAt), EndedAt: timePtr(r.EndedAt),
	}
}

// instances lists a for_each task's instances in item order, each in the
// state of its latest attempt (retrying while that attempt waits out its delay).
func instances(ctx context.Context, tx store.Tx, runID, task string, t *engine.Task, attempts []*engine.Attempt, now time.Time) ([]InstanceRecord, error) {
	if t == nil || t.Items <= 0 {
		return nil, nil
	}
	out := make([]InstanceRecord, t.Items)
	for i := range out {
		item, err := tx.Item(ctx, runID, task, i)
		if err != nil {
			return nil, err
		}
		out[i] = InstanceRecord{Index: i, Item: item, State: string(engine.TaskPending)}
	}
	for _, a := range attempts {
		if a.Index < 0 || a.Index >= len(out) {
			continue
		}
		in := &out[a.Index]
		in.Attempts++
		in.State, in.Reason = string(a.State), a.Reason
		if a.State == engine.AttemptPending && a.Number > 1 && a.NotBefore.After(now) {
			in.State = string(engine.TaskRetrying)
		}
		if a.State == engine.AttemptSucceeded {
			in.Outputs = a.Outputs
		}
	}
	return out, nil
}

// ListRuns returns run records without their tasks, newest first.
func (s *Service) ListRuns(ctx context.Context, f store.RunFilter) ([]*RunRecord, error) {
	var out []*RunRecord
	err := s.store.View(ctx, func(tx store.Tx) error {
		runs, err := tx.Runs(ctx, f)
		if err != nil {
			return err
		}
		for _, r := range runs {
			out = append(out, runHeader(r))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list runs: %w", err)
	}
	return out, nil
}

// Attempts lists the attempts of a run, of one task when task is set.
func (s *Service) Attempts(ctx context.Context, runID, task string) ([]*engine.Attempt, error) {
	var out []*engine.Attempt
	err := s.store.View(ctx, func(tx store.Tx) error {
		var err error
		out, err = tx.Attempts(ctx, store.AttemptFilter{RunID: runID, Task: task})
		return err
	})
	return out, err
}

// Run returns one run.
func (s *Service) Run(ctx context.Context, runID string) (*engine.Run, error) {
	var r *engine.Run
	err := s.store.View(ctx, func(tx store.Tx) error {
		var err error
		r, err = tx.Run(ctx, runID)
		return err
	})
	return r, err
}

// whyUnclaimed says why no live agent can claim a queued attempt, or "" when
// one can (it may be busy). An attempt's labels must be a subset of an
// agent's, and the agent must offer the attempt's executor. An agent is live
// when it heartbeated within the lease (counted from since at the earliest:
// when the control plane started).
func whyUnclaimed(a *engine.Attempt, agents []*store.Agent, now, since time.Time, lease time.Duration) string {
	var live, idle []*store.Agent
	for _, ag := range agents {
		if ag.State == AgentStopped || now.Sub(lastSeen(ag, since)) > lease {
			continue
		}
		if ag.State == AgentActive {
			live = append(live, ag)
		} else {
			idle = append(idle, ag)
		}
	}
	fits := func(ag *store.Agent) (missing []string, hasExec bool) {
		for _, l := range a.Labels {
			if !slices.Contains(ag.Labels, l) {
				missing = append(missing, l)
			}
		}
		return missing, slices.Contains(ag.Executors, a.Executor)
	}
	for _, ag := range live {
		if missing, ok := fits(ag); ok && len(missing) == 0 {
			return ""
		}
	}
	var held []string
	for _, ag := range idle {
		if missing, ok := fits(ag); ok && len(missing) == 0 {
			held = append(held, ag.ID+" ("+ag.State+")")
		}
	}
	want := "executor " + a.Executor
	if len(a.Labels) > 0 {
		want += " with labels " + strings.Join(a.Labels, ", ")
	}
	if len(held) > 0 {
		return fmt.Sprintf("waiting for an agent: it needs %s, which only %s offer", want, strings.Join(held, ", "))
	}
	if len(live) == 0 {
		return fmt.Sprintf("waiting for an agent: it needs %s, and no agent is live (start one with `dray agent`)", want)
	}
	var offers []string
	for _, ag := range live {
		missing, hasExec := fits(ag)
		var lacks []string
		if !hasExec {
			lacks = append(lacks, "executor "+a.Executor)
		}
		if len(missing) > 0 {
			lacks = append(lacks, "label "+strings.Join(missing, ", "))
		}
		offers = append(offers, ag.ID+" lacks "+strings.Join(lacks, " and "))
		if len(offers) == 5 {
			offers = append(offers, fmt.Sprintf("%d more", len(live)-5))
			break
		}
	}
	return fmt.Sprintf("waiting for an agent: it needs %s, which no live agent offers (%s)", want, strings.Join(offers, "; "))
}

// lastSeen is when an agent was last heard of, counting no earlier than since.
func lastSeen(ag *store.Agent, since time.Time) time.Time {
	if ag.HeartbeatAt.Before(since) {
		return since
	}
	return ag.HeartbeatAt
}
