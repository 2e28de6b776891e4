package server

import (
	"errors"
	"github.com/dray-dev/dray/internal/api"
	"github.com/dray-dev/dray/internal/control"
	"net/http"
	"time"

	"github.com/dray-dev/dray/internal/auth"
	"github.com/dray-dev/dray/internal/scheduler"
	"github.com/dray-dev/dray/internal/spec"
)

func specErrors(list spec.ErrorList) []api.SpecError {
	out := make([]api.SpecError, len(list))
	for i, e := range list {
		out[i] = api.SpecError{File: e.File, Line: e.Line, Col: e.Col, Message: e.Message}
	}
	return out
}

// schedules returns the schedule of every scheduled pipeline, by name.
func (s *Server) schedules(r *http.Request) (map[string]*api.Schedule, error) {
	infos, err := s.cfg.Scheduler.Schedules(r.Context())
	if err != nil {
		return nil, err
	}
	out := make(map[string]*api.Schedule, len(infos))
	for _, in := range infos {
		out[in.Pipeline] = newScheduleDoc(in)
	}
	return out, nil
}

func newScheduleDoc(in scheduler.Info) *api.Schedule {
	d := &api.Schedule{
		Pipeline: in.Pipeline, Cron: in.Cron, Timezone: in.Timezone, Catchup: in.Catchup, CatchupLimit: in.CatchupLimit,
		Paused: in.Paused, NextFire: timePtr(in.Next), CheckedUntil: timePtr(in.Cursor),
	}
	if in.Every > 0 {
		d.Every = in.Every.String()
	}
	return d
}

func (s *Server) listPipelines(w http.ResponseWriter, r *http.Request, _ *auth.Principal) error {
	snap := s.cfg.Project.Current()
	scheds, err := s.schedules(r)
	if err != nil {
		return err
	}
	out := api.PipelineList{Pipelines: []api.PipelineSummary{}, Errors: specErrors(snap.Errors), LoadedAt: timePtr(snap.LoadedAt)}
	for _, p := range snap.Pipelines {
		_, broken := snap.Broken[p.Name]
		out.Pipelines = append(out.Pipelines, api.PipelineSummary{
			Name: p.Name, Description: p.Description, File: p.File, Tags: orEmpty(p.Tags), Tasks: len(p.Tasks),
			Schedule: scheds[p.Name], Broken: broken,
		})
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) getPipeline(w http.ResponseWriter, r *http.Request, _ *auth.Principal) error {
	p, err := s.pipeline(r.PathValue("name"))
	if err != nil {
		return err
	}
	snap := s.cfg.Project.Current()
	scheds, err := s.schedules(r)
	if err != nil {
		return err
	}
	files := []string{spec.ConfigFile, p.File}
	for f := range p.Sources {
		files = append(files, f)
	}
	out := api.Pipeline{
		Name: p.Name, Description: p.Description, File: p.File, Hash: p.Hash, Tags: orEmpty(p.Tags),
		MaxActiveRuns: p.MaxActiveRuns, Concurrency: p.Concurrency, Params: []api.Param{}, Schedule: scheds[p.Name],
		Tasks: []api.TaskSpec{}, Errors: specErrors(snap.Errors.In(files...)),
	}
	for _, pa := range p.Params {
		d := api.Param{Name: pa.Name, Type: pa.Type, Required: pa.Required, Values: pa.Values, Description: pa.Description}
		switch {
		case pa.Default != nil:
			d.Default = pa.Default.String()
		case pa.HasDefault:
			d.Default = pa.DefaultValue
		}
		out.Params = append(out.Params, d)
	}
	for _, t := range p.Order() {
		d := api.TaskSpec{Name: t.Name, Needs: orEmpty(t.Needs), Kind: "run", ForEach: t.IsForEach(), If: t.If != nil, Trigger: t.Trigger}
		switch {
		case t.Uses != nil:
			d.Kind = "uses"
		case t.IsContainer():
			d.Kind = "image"
		}
		if t.Executor != nil {
			d.Executor = t.Executor.Name
		}
		out.Tasks = append(out.Tasks, d)
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func orEmpty(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func (s *Server) listSchedules(w http.ResponseWriter, r *http.Request, _ *auth.Principal) error {
	infos, err := s.cfg.Scheduler.Schedules(r.Context())
	if err != nil {
		return err
	}
	out := api.ScheduleList{Schedules: []api.Schedule{}}
	for _, in := range infos {
		out.Schedules = append(out.Schedules, *newScheduleDoc(in))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) pauseSchedule(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	return s.setPaused(w, r, p, true)
}

func (s *Server) resumeSchedule(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	return s.setPaused(w, r, p, false)
}

func (s *Server) setPaused(w http.ResponseWriter, r *http.Request, p *auth.Principal, paused bool) error {
	name := r.PathValue("name")
	if _, err := s.pipeline(name); err != nil {
		return err
	}
	if err := s.cfg.Scheduler.SetPaused(r.Context(), name, paused); err != nil {
		return err
	}
	action := "schedule.resume"
	if paused {
		action = "schedule.pause"
	}
	s.audit(r, p, action, name, nil)
	scheds, err := s.schedules(r)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, scheds[name])
	return nil
}

func (s *Server) backfill(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	var req struct {
		Pipeline string `json:"pipeline"`
		From     string `json:"from"`
		To       string `json:"to"`
	}
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
	if plan.Schedule == nil {
		return &apiError{status: http.StatusBadRequest, code: codeBadRequest, param: "pipeline", message: "pipeline " + plan.Name + " has no schedule to backfill"}
	}
	from, err := parseWhen(req.From, "from", plan.Schedule.Location, false)
	if err != nil {
		return err
	}
	to, err := parseWhen(req.To, "to", plan.Schedule.Location, true)
	if err != nil {
		return err
	}
	created, skipped, err := s.cfg.Scheduler.Backfill(r.Context(), plan, from, to)
	if errors.Is(err, scheduler.ErrBadRange) {
		return &apiError{status: http.StatusBadRequest, code: codeBadRequest, param: "from", message: err.Error()}
	}
	ids := make([]string, len(created))
	for i, run := range created {
		ids[i] = run.ID
	}
	if err != nil {
		// The runs created before the error exist: audit them.
		if len(created) > 0 {
			s.audit(r, p, "run.backfill", plan.Name, map[string]any{"from": from, "to": to, "runs": ids, "error": err.Error()})
		}
		return err
	}
	s.audit(r, p, "run.backfill", plan.Name, map[string]any{"from": from, "to": to, "runs": ids})
	out := api.Backfill{Runs: []*control.RunRecord{}, Skipped: orEmptyTimes(skipped)}
	for _, id := range ids {
		rec, err := s.cfg.Control.Summary(r.Context(), id)
		if err != nil {
			return err
		}
		out.Runs = append(out.Runs, rec)
	}
	writeJSON(w, http.StatusCreated, out)
	return nil
}

func orEmptyTimes(t []time.Time) []time.Time {
	if t == nil {
		return []time.Time{}
	}
	return t
}

// parseWhen reads an end of the backfill range (see scheduler.ParseWhen).
func parseWhen(v, field string, loc *time.Location, end bool) (time.Time, error) {
	t, err := scheduler.ParseWhen(v, loc, end)
	if err != nil {
		return time.Time{}, &apiError{status: http.StatusBadRequest, code: codeBadRequest, param: field, message: field + " " + err.Error()}
	}
	return t, nil
}

func quote(s string) string { return `"` + s + `"` }
