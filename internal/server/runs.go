package server

import (
	"context"
	"github.com/dray-dev/dray/internal/api"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/dray-dev/dray/internal/auth"
	"github.com/dray-dev/dray/internal/control"
	"github.com/dray-dev/dray/internal/engine"
	"github.com/dray-dev/dray/internal/spec"
	"github.com/dray-dev/dray/internal/store"
)

type triggerRequest struct {
	Pipeline    string         `json:"pipeline"`
	Params      map[string]any `json:"params"`
	Args        []string       `json:"args"`
	LogicalTime string         `json:"logical_time"` // RFC 3339, parsed here to name the field when it is bad
	LogicalDate string         `json:"logical_date"`
}

func (s *Server) trigger(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	var req triggerRequest
	if err := decode(r, &req, false); err != nil {
		return err
	}
	if req.Pipeline == "" {
		return &apiError{status: http.StatusBadRequest, code: codeBadRequest, message: "pipeline is required", param: "pipeline"}
	}
	plan, err := s.pipeline(req.Pipeline)
	if err != nil {
		return err
	}
	params, err := spec.ParseArgs(plan.Params, req.Args)
	if err != nil {
		return err
	}
	for k, v := range req.Params {
		if _, dup := params[k]; dup {
			return &apiError{status: http.StatusBadRequest, code: codeBadParam, message: "param " + k + " is given in both params and args", param: k}
		}
		params[k] = v
	}
	tr := control.TriggerRequest{Params: params, Trigger: "api"}
	switch {
	case req.LogicalTime != "" && req.LogicalDate != "":
		return &apiError{status: http.StatusBadRequest, code: codeBadRequest, message: "give logical_time or logical_date, not both", param: "logical_date"}
	case req.LogicalTime != "":
		t, err := time.Parse(time.RFC3339, req.LogicalTime)
		if err != nil {
			return &apiError{status: http.StatusBadRequest, code: codeBadRequest, param: "logical_time",
				message: "logical_time " + quote(req.LogicalTime) + ": want an RFC 3339 time (2026-03-01T02:00:00Z)"}
		}
		tr.LogicalTime = t
	case req.LogicalDate != "":
		loc := time.UTC
		if plan.Schedule != nil && plan.Schedule.Location != nil {
			loc = plan.Schedule.Location
		}
		t, err := time.ParseInLocation("2006-01-02", req.LogicalDate, loc)
		if err != nil {
			return &apiError{status: http.StatusBadRequest, code: codeBadRequest, message: "logical_date " + req.LogicalDate + ": want YYYY-MM-DD", param: "logical_date"}
		}
		tr.LogicalTime = t
	}
	run, err := s.cfg.Control.Trigger(r.Context(), plan, tr)
	if err != nil {
		return err
	}
	s.metrics.triggered.WithLabelValues(plan.Name, tr.Trigger).Inc()
	s.audit(r, p, "run.trigger", run.ID, map[string]any{"pipeline": plan.Name, "params": run.Params})
	rec, err := s.cfg.Control.Record(r.Context(), run.ID)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, rec)
	return nil
}

// pipeline returns a pipeline in use, or a 404 that lists the known ones.
func (s *Server) pipeline(name string) (*spec.Pipeline, error) {
	snap := s.cfg.Project.Current()
	if p := snap.Pipeline(name); p != nil {
		return p, nil
	}
	known := make([]string, 0, len(snap.Pipelines))
	for _, p := range snap.Pipelines {
		known = append(known, p.Name)
	}
	return nil, &spec.NoPipelineError{Name: name, Known: known}
}

// audit records a change; a failure to record is logged, not returned: the
// change happened.
func (s *Server) audit(r *http.Request, p *auth.Principal, action, target string, detail any) {
	if err := s.cfg.Auth.Audit(r.Context(), p.Name, action, target, detail, p.Addr); err != nil {
		s.log.Error("write audit entry", "action", action, "target", target, "err", err)
	}
}

func (s *Server) listRuns(w http.ResponseWriter, r *http.Request, _ *auth.Principal) error {
	q := r.URL.Query()
	limit, err := queryInt(r, "limit", 50, 1, 500)
	if err != nil {
		return err
	}
	f := store.RunFilter{Pipeline: q.Get("pipeline"), Before: q.Get("cursor"), Limit: limit}
	for _, v := range q["state"] {
		for _, st := range strings.Split(v, ",") {
			switch rs := engine.RunState(strings.TrimSpace(st)); rs {
			case engine.RunQueued, engine.RunRunning, engine.RunSucceeded, engine.RunFailed, engine.RunCanceled:
				f.States = append(f.States, rs)
			default:
				return &apiError{status: http.StatusBadRequest, code: codeBadRequest, param: "state",
					message: "state " + st + ": want queued, running, succeeded, failed or canceled"}
			}
		}
	}
	if f.Before != "" {
		if err := s.cfg.Store.View(r.Context(), func(tx store.Tx) error { _, err := tx.Run(r.Context(), f.Before); return err }); err != nil {
			return &apiError{status: http.StatusBadRequest, code: codeBadRequest, param: "cursor", message: "cursor " + f.Before + ": no such run"}
		}
	}
	runs, err := s.cfg.Control.ListRuns(r.Context(), f)
	if err != nil {
		return err
	}
	out := api.RunList{Runs: runs}
	if out.Runs == nil {
		out.Runs = []*control.RunRecord{}
	}
	if len(runs) == limit {
		out.NextCursor = runs[len(runs)-1].ID
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// runID resolves the {id} of a route: a full id, a unique prefix or "last".
func (s *Server) runID(r *http.Request) (string, error) {
	return s.cfg.Control.ResolveRun(r.Context(), r.PathValue("id"))
}

func (s *Server) getRun(w http.ResponseWriter, r *http.Request, _ *auth.Principal) error {
	id, err := s.runID(r)
	if err != nil {
		return err
	}
	rec, err := s.cfg.Control.Record(r.Context(), id)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, rec)
	return nil
}

func (s *Server) cancel(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	var req struct {
		Force bool `json:"force"`
	}
	if err := decode(r, &req, true); err != nil {
		return err
	}
	id, err := s.runID(r)
	if err != nil {
		return err
	}
	if err := s.cfg.Control.Cancel(r.Context(), id, req.Force); err != nil {
		return err
	}
	s.audit(r, p, "run.cancel", id, map[string]any{"force": req.Force})
	return s.writeSummary(w, r, id, http.StatusAccepted)
}

func (s *Server) retry(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	id, err := s.runID(r)
	if err != nil {
		return err
	}
	if err := s.checkRetry(r, id); err != nil {
		return err
	}
	if err := s.cfg.Control.Retry(r.Context(), id, ""); err != nil {
		return err
	}
	s.audit(r, p, "run.retry", id, nil)
	return s.writeSummary(w, r, id, http.StatusAccepted)
}

// checkRetry refuses to retry a run that has not ended and has no failed
// task: control.Service.Retry does nothing for it (a queued run, a running
// one), and a 202 and an audit entry would claim it did.
func (s *Server) checkRetry(r *http.Request, id string) error {
	rec, err := s.cfg.Control.Summary(r.Context(), id)
	if err != nil {
		return err
	}
	if engine.RunState(rec.State).Final() {
		return nil // the engine decides
	}
	for _, t := range rec.Tasks {
		if st := engine.TaskState(t.State); st.Final() && st != engine.TaskSucceeded {
			return nil // a run whose process died: its failed tasks run again
		}
	}
	return errorf(http.StatusConflict, codeConflict, "run %s is %s and none of its tasks failed: there is nothing to retry", id, rec.State)
}

func (s *Server) writeSummary(w http.ResponseWriter, r *http.Request, id string, status int) error {
	rec, err := s.cfg.Control.Summary(r.Context(), id)
	if err != nil {
		return err
	}
	writeJSON(w, status, rec)
	return nil
}

func newAttemptDoc(a *engine.Attempt) api.Attempt {
	d := api.Attempt{
		ID: a.ID, RunID: a.RunID, Task: a.Task, Index: a.Index, Number: a.Number, State: string(a.State), Reason: a.Reason,
		Executor: a.Executor, Labels: a.Labels, Agent: a.Agent, ExitCode: a.ExitCode, Created: timePtr(a.CreatedAt),
		Queued: timePtr(a.QueuedAt), Claimed: timePtr(a.ClaimedAt), Started: timePtr(a.StartedAt), Ended: timePtr(a.EndedAt),
	}
	if d.Labels == nil {
		d.Labels = []string{}
	}
	if a.Work != nil && a.Work.Item != nil {
		d.Item = a.Work.Item
	}
	return d
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

// runAttempts returns a run's attempts (of one task, when task is set) in
// task order, then instance, then number. An unknown task is a 404.
func (s *Server) runAttempts(r *http.Request, id, task string) ([]*engine.Attempt, error) {
	order, err := s.taskOrder(r.Context(), id, task)
	if err != nil {
		return nil, err
	}
	return s.attemptsInOrder(r.Context(), id, task, order)
}

// taskOrder returns the position of each task of a run in its pipeline's
// order; a task that the run does not have is a 404.
func (s *Server) taskOrder(ctx context.Context, id, task string) (map[string]int, error) {
	rec, err := s.cfg.Control.Summary(ctx, id)
	if err != nil {
		return nil, err
	}
	order := make(map[string]int, len(rec.Tasks))
	for i, t := range rec.Tasks {
		order[t.Name] = i
	}
	if _, ok := order[task]; task != "" && !ok {
		return nil, notFoundf("run %s has no task %q", id, task)
	}
	return order, nil
}

// attemptsInOrder lists a run's attempts (of one task, when task is set)
// sorted by task order, then instance, then number.
func (s *Server) attemptsInOrder(ctx context.Context, id, task string, order map[string]int) ([]*engine.Attempt, error) {
	atts, err := s.cfg.Control.Attempts(ctx, id, task)
	if err != nil {
		return nil, err
	}
	sort.SliceStable(atts, func(i, j int) bool {
		a, b := atts[i], atts[j]
		if order[a.Task] != order[b.Task] {
			return order[a.Task] < order[b.Task]
		}
		if a.Index != b.Index {
			return a.Index < b.Index
		}
		return a.Number < b.Number
	})
	return atts, nil
}

func (s *Server) listAttempts(w http.ResponseWriter, r *http.Request, _ *auth.Principal) error {
	id, err := s.runID(r)
	if err != nil {
		return err
	}
	atts, err := s.runAttempts(r, id, r.URL.Query().Get("task"))
	if err != nil {
		return err
	}
	docs := make([]api.Attempt, len(atts))
	for i, a := range atts {
		docs[i] = newAttemptDoc(a)
	}
	writeJSON(w, http.StatusOK, api.AttemptList{Attempts: docs})
	return nil
}
