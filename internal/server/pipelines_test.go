package server_test

import (
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dray-dev/dray/internal/auth"
)

type scheduleDoc struct {
	Pipeline     string     `json:"pipeline"`
	Cron         string     `json:"cron"`
	Every        string     `json:"every"`
	Timezone     string     `json:"timezone"`
	Catchup      bool       `json:"catchup"`
	CatchupLimit int        `json:"catchup_limit"`
	Paused       bool       `json:"paused"`
	NextFire     *time.Time `json:"next_fire"`
	CheckedUntil *time.Time `json:"checked_until"`
}

type specErrorDoc struct {
	File    string `json:"file"`
	Line    int    `json:"line"`
	Col     int    `json:"col"`
	Message string `json:"message"`
}

type pipelineSummary struct {
	Name        string       `json:"name"`
	Description string       `json:"description"`
	File        string       `json:"file"`
	Tags        []string     `json:"tags"`
	Tasks       int          `json:"tasks"`
	Schedule    *scheduleDoc `json:"schedule"`
	Broken      bool         `json:"broken"`
}

type pipelineList struct {
	Pipelines []pipelineSummary `json:"pipelines"`
	Errors    []specErrorDoc    `json:"errors"`
	LoadedAt  time.Time         `json:"loaded_at"`
}

type pipelineDoc struct {
	Name        string   `json:"name"`
	Description string   `json:"description"`
	File        string   `json:"file"`
	Hash        string   `json:"hash"`
	Tags        []string `json:"tags"`
	Params      []struct {
		Name        string   `json:"name"`
		Type        string   `json:"type"`
		Required    bool     `json:"required"`
		Default     any      `json:"default"`
		Values      []string `json:"values"`
		Description string   `json:"description"`
	} `json:"params"`
	Schedule *scheduleDoc `json:"schedule"`
	Tasks    []struct {
		Name     string   `json:"name"`
		Needs    []string `json:"needs"`
		Kind     string   `json:"kind"`
		Executor string   `json:"executor"`
		ForEach  bool     `json:"for_each"`
		If       bool     `json:"if"`
		Trigger  string   `json:"trigger"`
	} `json:"tasks"`
	Errors []specErrorDoc `json:"errors"`
}

// nextNightly is the next fire of nightly after the scheduler's clock:
// 02:00 in Berlin (CET) on 2026-03-11.
var nextNightly = time.Date(2026, 3, 11, 1, 0, 0, 0, time.UTC)

func (f *fixture) pipelines(t *testing.T) pipelineList {
	t.Helper()
	var l pipelineList
	wantJSON(t, f.get(t, "/api/v1/pipelines", f.tokens[auth.RoleViewer]), http.StatusOK, &l)
	return l
}

func TestPipelines(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	l := f.pipelines(t)
	var names []string
	for _, p := range l.Pipelines {
		names = append(names, p.Name)
		if p.Broken {
			t.Errorf("pipeline %s is broken", p.Name)
		}
	}
	if want := []string{"flaky", "hello", "nightly", "quick", "sleepy"}; !slices.Equal(names, want) {
		t.Fatalf("pipelines %v, want %v", names, want)
	}
	if l.Errors == nil || len(l.Errors) != 0 || l.LoadedAt.IsZero() {
		t.Errorf("errors %v (want []), loaded_at %v", l.Errors, l.LoadedAt)
	}
	hello, nightly := l.Pipelines[1], l.Pipelines[2]
	if hello.Schedule != nil || hello.Tasks != 2 || hello.File != "pipelines/hello.yaml" ||
		!slices.Equal(hello.Tags, []string{"demo", "params"}) || hello.Description != "Say hello, with typed params." {
		t.Errorf("hello: %+v", hello)
	}
	s := nightly.Schedule
	if s == nil || s.CheckedUntil == nil || s.NextFire == nil {
		t.Fatalf("nightly's schedule %+v: want one with its next fire, checked by the scheduler", s)
	}
	if s.Pipeline != "nightly" || s.Cron != "0 2 * * *" || s.Every != "" || s.Timezone != "Europe/Berlin" || s.Catchup || s.Paused ||
		!s.NextFire.Equal(nextNightly) || !s.CheckedUntil.Equal(schedNow) {
		t.Errorf("nightly's schedule %+v: want cron 0 2 * * * in Europe/Berlin, next fire %v, checked until %v", s, nextNightly, schedNow)
	}

	// One pipeline, with its params, tasks and needs.
	var p pipelineDoc
	wantJSON(t, f.get(t, "/api/v1/pipelines/hello", f.tokens[auth.RoleViewer]), http.StatusOK, &p)
	if p.Name != "hello" || p.File != "pipelines/hello.yaml" || p.Hash == "" || p.Schedule != nil || len(p.Errors) != 0 {
		t.Errorf("hello: %+v", p)
	}
	type param struct {
		name, typ string
		required  bool
		def       any
		values    []string
	}
	var params []param
	for _, pa := range p.Params {
		params = append(params, param{pa.Name, pa.Type, pa.Required, pa.Default, pa.Values})
	}
	wantParams := []param{
		{"region", "string", true, nil, nil},
		{"count", "integer", false, 2.0, nil},
		{"loud", "boolean", false, false, nil},
		{"mode", "enum", false, "fast", []string{"fast", "slow"}},
		{"day", "string", false, "${{ run.logical_date }}", nil},
	}
	if !reflect.DeepEqual(params, wantParams) {
		t.Errorf("params %+v\nwant %+v", params, wantParams)
	}
	if p.Params[0].Description != "where to say it" {
		t.Errorf("region's description %q", p.Params[0].Description)
	}
	if len(p.Tasks) != 2 || p.Tasks[0].Name != "greet" || len(p.Tasks[0].Needs) != 0 || p.Tasks[0].Needs == nil ||
		p.Tasks[1].Name != "shout" || !slices.Equal(p.Tasks[1].Needs, []string{"greet"}) {
		t.Errorf("tasks %+v", p.Tasks)
	}
	for _, task := range p.Tasks {
		if task.Kind != "run" || task.Executor != "local" || task.ForEach || task.If {
			t.Errorf("task %+v", task)
		}
	}
	var n pipelineDoc
	wantJSON(t, f.get(t, "/api/v1/pipelines/nightly", f.tokens[auth.RoleViewer]), http.StatusOK, &n)
	if n.Schedule == nil || n.Schedule.Cron != "0 2 * * *" || n.Schedule.NextFire == nil || !n.Schedule.NextFire.Equal(nextNightly) {
		t.Errorf("nightly's schedule: %+v", n.Schedule)
	}
}

// brokenHello is pipelines/hello.yaml with a task that needs one that does
// not exist, on line 8, column 13.
const brokenHello = `version: 1
name: hello
params:
  region: { type: string }
tasks:
  - name: greet
    run: echo "broken ${{ params.region }}"
    needs: [nope]
`

func TestReload(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	operator := f.tokens[auth.RoleOperator]
	good, err := os.ReadFile(filepath.Join(f.dir, "pipelines/hello.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var before pipelineDoc
	wantJSON(t, f.get(t, "/api/v1/pipelines/hello", operator), http.StatusOK, &before)

	// A broken file keeps the last good version, and shows its errors.
	f.writeFile(t, "pipelines/hello.yaml", brokenHello)
	f.reload(t)
	l := f.pipelines(t)
	i := slices.IndexFunc(l.Pipelines, func(p pipelineSummary) bool { return p.Name == "hello" })
	if i < 0 || !l.Pipelines[i].Broken || l.Pipelines[i].Tasks != 2 {
		t.Fatalf("after breaking hello: %+v", l.Pipelines)
	}
	if len(l.Errors) == 0 {
		t.Fatal("no errors after breaking hello")
	}
	for _, e := range l.Errors {
		if e.File != "pipelines/hello.yaml" || e.Line <= 0 || e.Col <= 0 || e.Message == "" {
			t.Errorf("error %+v: want file:line:col and a message", e)
		}
	}
	if e := l.Errors[0]; e.Line != 8 || e.Col != 13 || !strings.Contains(e.Message, "nope") {
		t.Errorf("error %+v: want line 8, col 13, naming nope", e)
	}
	var broken pipelineDoc
	wantJSON(t, f.get(t, "/api/v1/pipelines/hello", operator), http.StatusOK, &broken)
	if broken.Hash != before.Hash || !reflect.DeepEqual(broken.Errors, l.Errors) {
		t.Errorf("GET hello while broken: hash %s (want the good %s), errors %+v", broken.Hash, before.Hash, broken.Errors)
	}
	var other pipelineDoc
	wantJSON(t, f.get(t, "/api/v1/pipelines/quick", operator), http.StatusOK, &other)
	if len(other.Errors) != 0 {
		t.Errorf("quick shows hello's errors: %+v", other.Errors)
	}
	// The last good version still runs.
	run := f.trigger(t, operator, map[string]any{"pipeline": "hello", "args": []string{"region=moon", "count=1"}})
	end := f.follow(t, "/api/v1/runs/"+run.ID+"/logs?follow=true&task=greet", operator).untilEnd()
	if lines := stdout(t, end.lines, "greet", 1); end.end.State != "succeeded" || len(lines) == 0 || lines[0] != "hello moon count=1 loud=false mode=fast" {
		t.Errorf("the last good hello ran: %+v", end)
	}

	// Fixed, the errors are gone.
	f.writeFile(t, "pipelines/hello.yaml", string(good))
	f.reload(t)
	l = f.pipelines(t)
	if len(l.Errors) != 0 {
		t.Errorf("errors after the fix: %+v", l.Errors)
	}
	for _, p := range l.Pipelines {
		if p.Broken {
			t.Errorf("%s is broken after the fix", p.Name)
		}
	}

	// A broken dray.yaml breaks every pipeline: each keeps its last good
	// version.
	f.writeFile(t, "dray.yaml", "version: 1\nproject: servertest\nexecutors: {fast: {type: nope}}\n")
	f.reload(t)
	l = f.pipelines(t)
	if len(l.Pipelines) != 5 || len(l.Errors) == 0 || l.Errors[0].File != "dray.yaml" || l.Errors[0].Line != 3 {
		t.Errorf("with a broken dray.yaml: %+v", l)
	}
	for _, p := range l.Pipelines {
		if !p.Broken {
			t.Errorf("%s is not broken with a broken dray.yaml", p.Name)
		}
	}
	wantJSON(t, f.get(t, "/api/v1/pipelines/quick", operator), http.StatusOK, &other)
	if len(other.Errors) == 0 || other.Errors[0].File != "dray.yaml" {
		t.Errorf("quick does not show dray.yaml's errors: %+v", other.Errors)
	}
	f.writeFile(t, "dray.yaml", "version: 1\nproject: servertest\n")
	f.reload(t)
	if l = f.pipelines(t); len(l.Errors) != 0 {
		t.Errorf("errors after fixing dray.yaml: %+v", l.Errors)
	}

	// A new file is a new pipeline.
	f.writeFile(t, "pipelines/extra.yaml", "version: 1\nname: extra\ntasks:\n  - name: one\n    run: echo extra\n  - name: two\n    needs: [one]\n    run: echo two\n")
	f.reload(t)
	var extra pipelineDoc
	wantJSON(t, f.get(t, "/api/v1/pipelines/extra", operator), http.StatusOK, &extra)
	if extra.File != "pipelines/extra.yaml" || len(extra.Tasks) != 2 {
		t.Errorf("extra: %+v", extra)
	}
	if names := len(f.pipelines(t).Pipelines); names != 6 {
		t.Errorf("%d pipelines after adding extra, want 6", names)
	}
	run = f.trigger(t, operator, map[string]any{"pipeline": "extra"})
	if end := f.waitRun(t, run.ID, operator); end.State != "succeeded" {
		t.Errorf("extra ended %s", end.State)
	}

	// A new file that is broken from the start is an error, and no pipeline.
	f.writeFile(t, "pipelines/bad.yaml", "version: 1\nname: bad\ntasks: [\n")
	f.reload(t)
	l = f.pipelines(t)
	if len(l.Errors) == 0 || l.Errors[0].File != "pipelines/bad.yaml" || l.Errors[0].Line <= 0 {
		t.Errorf("errors with a broken new file: %+v", l.Errors)
	}
	wantError(t, f.get(t, "/api/v1/pipelines/bad", operator), http.StatusNotFound, "not_found")
	wantError(t, f.post(t, "/api/v1/runs", operator, map[string]any{"pipeline": "bad"}), http.StatusNotFound, "not_found")
}

func (f *fixture) schedule(t *testing.T, name string) *scheduleDoc {
	t.Helper()
	var l struct {
		Schedules []*scheduleDoc `json:"schedules"`
	}
	wantJSON(t, f.get(t, "/api/v1/schedules", f.tokens[auth.RoleViewer]), http.StatusOK, &l)
	if len(l.Schedules) != 1 {
		t.Fatalf("schedules %+v: want nightly's alone", l.Schedules)
	}
	for _, s := range l.Schedules {
		if s.Pipeline == name {
			return s
		}
	}
	t.Fatalf("no schedule of %s", name)
	return nil
}

func TestSchedules(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	operator := f.tokens[auth.RoleOperator]
	s := f.schedule(t, "nightly")
	if s.Paused || s.Cron != "0 2 * * *" || s.Timezone != "Europe/Berlin" || s.NextFire == nil || !s.NextFire.Equal(nextNightly) {
		t.Fatalf("nightly: %+v", s)
	}

	var paused scheduleDoc
	wantJSON(t, f.post(t, "/api/v1/schedules/nightly/pause", operator, nil), http.StatusOK, &paused)
	if !paused.Paused || paused.NextFire != nil || paused.Pipeline != "nightly" {
		t.Errorf("pause answered %+v", paused)
	}
	if s := f.schedule(t, "nightly"); !s.Paused || s.NextFire != nil {
		t.Errorf("after pause: %+v", s)
	}
	var resumed scheduleDoc
	wantJSON(t, f.post(t, "/api/v1/schedules/nightly/resume", operator, nil), http.StatusOK, &resumed)
	if resumed.Paused || resumed.NextFire == nil || !resumed.NextFire.Equal(nextNightly) {
		t.Errorf("resume answered %+v", resumed)
	}
	if s := f.schedule(t, "nightly"); s.Paused {
		t.Errorf("after resume: %+v", s)
	}
	entries := f.audit(t, "")
	for _, action := range []string{"schedule.pause", "schedule.resume"} {
		e := findAudit(entries, action, "nightly")
		if len(e) != 1 || e[0].Actor != "token:"+f.tokenIDs[auth.RoleOperator] {
			t.Errorf("audit of %s: %+v", action, e)
		}
	}
	wantError(t, f.post(t, "/api/v1/schedules/nope/pause", operator, nil), http.StatusNotFound, "not_found")
	wantError(t, f.post(t, "/api/v1/schedules/nope/resume", operator, nil), http.StatusNotFound, "not_found")
	wantError(t, f.post(t, "/api/v1/schedules/nightly/pause", f.tokens[auth.RoleViewer], nil), http.StatusForbidden, "forbidden")
}

func TestBackfill(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	operator := f.tokens[auth.RoleOperator]
	type backfill struct {
		Runs    []runDoc    `json:"runs"`
		Skipped []time.Time `json:"skipped"`
	}
	body := map[string]string{"pipeline": "nightly", "from": "2026-03-01", "to": "2026-03-04"}
	var first backfill
	wantJSON(t, f.post(t, "/api/v1/backfills", operator, body), http.StatusCreated, &first)
	var dates []string
	for _, r := range first.Runs {
		dates = append(dates, r.LogicalDate)
		if r.Trigger != "backfill" || r.Pipeline != "nightly" || r.Params["day"] != r.LogicalDate {
			t.Errorf("backfill run %+v", r)
		}
	}
	// A date "to" takes the whole day: the 02:00 fire of 03-04 is in.
	if want := []string{"2026-03-01", "2026-03-02", "2026-03-03", "2026-03-04"}; !slices.Equal(dates, want) || len(first.Skipped) != 0 {
		t.Fatalf("backfill made runs for %v (want %v), skipped %v", dates, want, first.Skipped)
	}
	for _, r := range first.Runs {
		if end := f.waitRun(t, r.ID, operator); end.State != "succeeded" {
			t.Errorf("backfill run %s ended %s", r.ID, end.State)
		}
	}
	before := f.count(t)

	// Again: every fire time has its run already.
	var second backfill
	wantJSON(t, f.post(t, "/api/v1/backfills", operator, body), http.StatusCreated, &second)
	wantSkipped := []time.Time{
		time.Date(2026, 3, 1, 1, 0, 0, 0, time.UTC),
		time.Date(2026, 3, 2, 1, 0, 0, 0, time.UTC),
		time.Date(2026, 3, 3, 1, 0, 0, 0, time.UTC),
		time.Date(2026, 3, 4, 1, 0, 0, 0, time.UTC),
	}
	if len(second.Runs) != 0 || len(second.Skipped) != len(wantSkipped) {
		t.Fatalf("the second backfill: %+v", second)
	}
	for i, at := range second.Skipped {
		if !at.Equal(wantSkipped[i]) {
			t.Errorf("skipped %v, want %v", second.Skipped, wantSkipped)
		}
	}
	after := f.count(t)
	after.audit-- // the second backfill is audited
	if after != before {
		t.Errorf("the second backfill changed %+v to %+v", before, after)
	}
	entries := findAudit(f.audit(t, ""), "run.backfill", "nightly")
	if len(entries) != 2 || entries[0].Actor != "token:"+f.tokenIDs[auth.RoleOperator] {
		t.Errorf("audit of the backfills: %+v", entries)
	}
	ids, _ := entries[1].Detail["runs"].([]any)
	if len(ids) != 4 || ids[0] != first.Runs[0].ID {
		t.Errorf("the first backfill's audit entry lists runs %v", entries[1].Detail["runs"])
	}

	// A pipeline without a schedule cannot be backfilled.
	e := wantError(t, f.post(t, "/api/v1/backfills", operator, map[string]string{"pipeline": "hello", "from": "2026-03-01", "to": "2026-03-04"}),
		http.StatusBadRequest, "bad_request")
	if e.Param != "pipeline" {
		t.Errorf("param %q, want pipeline", e.Param)
	}
	// A viewer may not.
	wantError(t, f.post(t, "/api/v1/backfills", f.tokens[auth.RoleViewer], body), http.StatusForbidden, "forbidden")
}
