package server_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/dray-dev/dray/internal/auth"
)

// stdout returns the texts of the stdout lines of one task's attempt number,
// checking that their seqs rise.
func stdout(t *testing.T, lines []logLineDoc, task string, attempt int) []string {
	t.Helper()
	var out []string
	var last int64
	for _, l := range lines {
		if l.Task != task || l.Attempt != attempt {
			continue
		}
		if l.Seq <= last {
			t.Errorf("task %s attempt %d: seq %d after %d", task, attempt, l.Seq, last)
		}
		last = l.Seq
		if l.Stream == "stdout" {
			out = append(out, l.Text)
		}
	}
	return out
}

// TestRunEndToEnd triggers a run with typed params and args, follows its log
// as Server-Sent Events to the end, and reads it back every way the API has.
func TestRunEndToEnd(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	operator, viewer := f.tokens[auth.RoleOperator], f.tokens[auth.RoleViewer]

	run := f.trigger(t, operator, map[string]any{
		"pipeline":     "hello",
		"params":       map[string]any{"count": 3, "loud": true},
		"args":         []string{"region=eu-west", "mode=slow"},
		"logical_date": "2026-03-01",
	})
	wantParams := map[string]any{"region": "eu-west", "count": 3.0, "loud": true, "mode": "slow", "day": "2026-03-01"}
	if !reflect.DeepEqual(run.Params, wantParams) {
		t.Errorf("params %v, want %v", run.Params, wantParams)
	}
	if run.Pipeline != "hello" || run.Trigger != "api" || run.LogicalDate != "2026-03-01" || len(run.Tasks) != 2 {
		t.Errorf("trigger answered %+v", run)
	}

	// Follow the log to the end.
	s := f.follow(t, "/api/v1/runs/"+run.ID+"/logs?follow=true", viewer)
	got := s.untilEnd()
	s.close()
	if got.end.ID != run.ID || got.end.State != "succeeded" || got.end.EndedAt == nil {
		t.Fatalf("end event: %+v", got.end)
	}
	wantGreet := []string{"hello eu-west count=3 loud=true mode=slow", "line 1", "line 2", "line 3", "day=2026-03-01"}
	if lines := stdout(t, got.lines, "greet", 1); !slices.Equal(lines, wantGreet) {
		t.Errorf("greet's stdout %q, want %q", lines, wantGreet)
	}
	if lines := stdout(t, got.lines, "shout", 1); !slices.Equal(lines, []string{"done shout"}) {
		t.Errorf("shout's stdout %q", lines)
	}
	stderr := false
	for _, l := range got.lines {
		stderr = stderr || (l.Task == "greet" && l.Stream == "stderr" && l.Text == "to stderr")
	}
	if !stderr {
		t.Errorf("no stderr line in %+v", got.lines)
	}
	// Tasks come in task order: every greet line before shout's.
	if i := slices.IndexFunc(got.lines, func(l logLineDoc) bool { return l.Task == "shout" }); i < 0 ||
		slices.ContainsFunc(got.lines[i:], func(l logLineDoc) bool { return l.Task == "greet" }) {
		t.Errorf("lines not in task order: %+v", got.lines)
	}
	final := map[string]string{}
	for _, a := range got.attempts {
		final[a.Task] = a.State
	}
	if final["greet"] != "succeeded" || final["shout"] != "succeeded" {
		t.Errorf("the last attempt events: %v", final)
	}

	// The run record is control.Service.Record's.
	r := f.get(t, "/api/v1/runs/"+run.ID, viewer)
	var fromAPI any
	wantJSON(t, r, http.StatusOK, &fromAPI)
	rec, err := f.svc.Record(f.ctx, run.ID)
	if err != nil {
		t.Fatal(err)
	}
	if want := jsonRoundTrip(t, rec); !reflect.DeepEqual(fromAPI, want) {
		t.Errorf("GET /api/v1/runs/%s:\n%s\nwant control's record:\n%v", run.ID, r.body, want)
	}
	var doc runDoc
	mustUnmarshal(t, r.body, &doc)
	if doc.State != "succeeded" || len(doc.Tasks) != 2 || doc.Tasks[0].Name != "greet" || doc.Tasks[0].Attempts != 1 || doc.Tasks[1].State != "succeeded" {
		t.Errorf("record %s", r.body)
	}

	// "last" and unique prefixes resolve; a prefix of two runs does not.
	for _, ref := range []string{"last", run.ID[:12], run.ID} {
		var d runDoc
		wantJSON(t, f.get(t, "/api/v1/runs/"+ref, viewer), http.StatusOK, &d)
		if d.ID != run.ID {
			t.Errorf("run %s is %s, want %s", ref, d.ID, run.ID)
		}
	}
	other := f.trigger(t, operator, map[string]any{"pipeline": "quick", "logical_time": "2026-03-05T23:30:00-02:00"})
	if other.LogicalDate != "2026-03-06" {
		t.Errorf("logical_time 2026-03-05T23:30:00-02:00 is logical date %s, want 2026-03-06 (UTC)", other.LogicalDate)
	}
	f.waitRun(t, other.ID, viewer)
	var d runDoc
	wantJSON(t, f.get(t, "/api/v1/runs/last", viewer), http.StatusOK, &d)
	if d.ID != other.ID {
		t.Errorf("last is %s, want the newer run %s", d.ID, other.ID)
	}
	common := 0
	for common < len(run.ID) && run.ID[common] == other.ID[common] {
		common++
	}
	wantError(t, f.get(t, "/api/v1/runs/"+run.ID[:common], viewer), http.StatusBadRequest, "bad_request")

	// Attempts, in task order.
	var atts struct {
		Attempts []attemptDoc `json:"attempts"`
	}
	wantJSON(t, f.get(t, "/api/v1/runs/"+run.ID+"/attempts", viewer), http.StatusOK, &atts)
	if len(atts.Attempts) != 2 {
		t.Fatalf("attempts: %+v", atts.Attempts)
	}
	for i, task := range []string{"greet", "shout"} {
		a := atts.Attempts[i]
		if a.Task != task || a.RunID != run.ID || a.Number != 1 || a.State != "succeeded" || a.ExitCode == nil || *a.ExitCode != 0 ||
			a.Executor != "local" || a.Agent != "server-test" || a.Labels == nil {
			t.Errorf("attempt %d: %+v", i, a)
		}
	}
	var one struct {
		Attempts []attemptDoc `json:"attempts"`
	}
	wantJSON(t, f.get(t, "/api/v1/runs/"+run.ID+"/attempts?task=shout", viewer), http.StatusOK, &one)
	if len(one.Attempts) != 1 || one.Attempts[0].Task != "shout" {
		t.Errorf("attempts of shout: %+v", one.Attempts)
	}

	// The log without follow has the lines the stream had, in the same order.
	var page struct {
		Lines []logLineDoc `json:"lines"`
	}
	wantJSON(t, f.get(t, "/api/v1/runs/"+run.ID+"/logs", viewer), http.StatusOK, &page)
	if !reflect.DeepEqual(page.Lines, got.lines) {
		t.Errorf("GET logs: %+v\nthe stream had: %+v", page.Lines, got.lines)
	}
	wantJSON(t, f.get(t, "/api/v1/runs/"+run.ID+"/logs?task=greet&attempt=1", viewer), http.StatusOK, &page)
	if lines := stdout(t, page.Lines, "greet", 1); !slices.Equal(lines, wantGreet) || len(page.Lines) != len(wantGreet)+1 {
		t.Errorf("greet's log: %+v", page.Lines)
	}
	wantJSON(t, f.get(t, "/api/v1/runs/"+run.ID+"/logs?task=greet&attempt=2", viewer), http.StatusOK, &page)
	if len(page.Lines) != 0 {
		t.Errorf("greet has no attempt 2, but the log has %+v", page.Lines)
	}
	// Following an ended run sends its log and ends at once; so does
	// Accept: text/event-stream.
	s = f.follow(t, "/api/v1/runs/"+run.ID+"/logs?task=shout", viewer)
	s.close()
	s = f.follow(t, "/api/v1/runs/"+run.ID+"/logs?follow=1&task=shout", viewer)
	if again := s.untilEnd(); len(again.lines) != 1 || again.lines[0].Text != "done shout" || again.end.State != "succeeded" {
		t.Errorf("following shout of an ended run: %+v", again)
	}

	// Attempt logs by range.
	greet := atts.Attempts[0]
	all := attemptLogs(t, f, greet.ID, "", viewer)
	if len(all.Lines) != len(wantGreet)+1 || all.Next != all.Lines[len(all.Lines)-1].Seq {
		t.Fatalf("attempt %d's log: %+v", greet.ID, all)
	}
	for i, l := range all.Lines {
		if l.Seq != int64(i+1) || l.AttemptID != greet.ID || l.Task != "greet" || l.Attempt != 1 {
			t.Errorf("line %d: %+v", i, l)
		}
	}
	mid := attemptLogs(t, f, greet.ID, "?after=2&limit=2", viewer)
	if len(mid.Lines) != 2 || mid.Lines[0].Seq != 3 || mid.Lines[1].Seq != 4 || mid.Next != 4 {
		t.Errorf("after=2&limit=2: %+v", mid)
	}
	if !reflect.DeepEqual(mid.Lines, all.Lines[2:4]) {
		t.Errorf("after=2&limit=2 has %+v, want %+v", mid.Lines, all.Lines[2:4])
	}
	rest := attemptLogs(t, f, greet.ID, fmt.Sprintf("?after=%d", mid.Next), viewer)
	if !reflect.DeepEqual(rest.Lines, all.Lines[4:]) {
		t.Errorf("after=%d has %+v", mid.Next, rest.Lines)
	}
	end := attemptLogs(t, f, greet.ID, fmt.Sprintf("?after=%d", all.Next), viewer)
	if len(end.Lines) != 0 || end.Next != all.Next {
		t.Errorf("after the last line: %+v", end)
	}

	// The trigger is audited with its actor.
	entries := findAudit(f.audit(t, ""), "run.trigger", run.ID)
	if len(entries) != 1 || entries[0].Actor != "token:"+f.tokenIDs[auth.RoleOperator] || entries[0].Detail["pipeline"] != "hello" || entries[0].Address == "" {
		t.Errorf("audit of the trigger: %+v", entries)
	}
}

type attemptLogPage struct {
	Lines []logLineDoc `json:"lines"`
	Next  int64        `json:"next"`
}

func attemptLogs(t *testing.T, f *fixture, id int64, query, token string) attemptLogPage {
	t.Helper()
	var p attemptLogPage
	wantJSON(t, f.get(t, fmt.Sprintf("/api/v1/attempts/%d/logs%s", id, query), token), http.StatusOK, &p)
	return p
}

// runList is a page of runs.
type runList struct {
	Runs       []runDoc `json:"runs"`
	NextCursor string   `json:"next_cursor"`
}

// listAll pages through GET /api/v1/runs with the query and returns the ids.
func listAll(t *testing.T, f *fixture, query string) []string {
	t.Helper()
	var ids []string
	cursor := ""
	for pages := 0; ; pages++ {
		if pages > 100 {
			t.Fatal("paging does not end")
		}
		path := "/api/v1/runs?" + query
		if cursor != "" {
			path += "&cursor=" + cursor
		}
		var page runList
		wantJSON(t, f.get(t, path, f.tokens[auth.RoleViewer]), http.StatusOK, &page)
		for _, r := range page.Runs {
			if r.Tasks != nil {
				t.Errorf("a list of runs has the tasks of %s", r.ID)
			}
			ids = append(ids, r.ID)
		}
		if page.NextCursor == "" {
			return ids
		}
		if len(page.Runs) == 0 || page.NextCursor != page.Runs[len(page.Runs)-1].ID {
			t.Fatalf("page %+v: next_cursor is not its last run", page)
		}
		cursor = page.NextCursor
	}
}

func TestListRuns(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	operator := f.tokens[auth.RoleOperator]
	var quick []string // newest first
	for range 5 {
		quick = slices.Insert(quick, 0, f.trigger(t, operator, map[string]any{"pipeline": "quick"}).ID)
	}
	flaky := f.trigger(t, operator, map[string]any{"pipeline": "flaky"}).ID
	for _, id := range append([]string{flaky}, quick...) {
		f.waitRun(t, id, operator)
	}
	everything := append([]string{flaky}, quick...)

	tests := []struct {
		query string
		want  []string
	}{
		{"limit=2", everything},
		{"limit=1", everything},
		{"limit=500", everything},
		{"", everything},
		{"pipeline=quick&limit=2", quick},
		{"pipeline=quick&limit=5", quick},
		{"pipeline=flaky", []string{flaky}},
		{"pipeline=nope", nil},
		{"state=failed", []string{flaky}},
		{"state=succeeded&limit=2", quick},
		{"state=failed,succeeded&limit=4", everything},
		{"state=failed&state=succeeded&limit=3", everything},
		{"state=running,queued", nil},
		{"pipeline=quick&state=failed", nil},
	}
	for _, tt := range tests {
		t.Run(tt.query, func(t *testing.T) {
			got := listAll(t, f, tt.query)
			if !slices.Equal(got, tt.want) {
				t.Errorf("runs %v, want %v (newest first, each once)", got, tt.want)
			}
		})
	}

	// A page starts after its cursor.
	var page runList
	wantJSON(t, f.get(t, "/api/v1/runs?limit=2&cursor="+quick[1], f.tokens[auth.RoleViewer]), http.StatusOK, &page)
	if len(page.Runs) != 2 || page.Runs[0].ID != quick[2] || page.Runs[1].ID != quick[3] || page.NextCursor != quick[3] {
		t.Errorf("page after %s: %+v", quick[1], page)
	}
	if r := page.Runs[0]; r.Pipeline != "quick" || r.State != "succeeded" || r.Trigger != "api" || r.CreatedAt == nil || r.EndedAt == nil {
		t.Errorf("listed run: %+v", r)
	}
}

// TestCancel cancels a running run and a queued one, and refuses to cancel
// or retry what cannot be.
func TestCancel(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	operator := f.tokens[auth.RoleOperator]
	first := f.trigger(t, operator, map[string]any{"pipeline": "sleepy"})
	// max_active_runs: 1 keeps the second queued.
	second := f.trigger(t, operator, map[string]any{"pipeline": "sleepy"})
	if second.State != "queued" {
		t.Fatalf("the second run of sleepy is %s, want queued", second.State)
	}
	// A queued run has nothing to retry.
	wantError(t, f.post(t, "/api/v1/runs/"+second.ID+"/retry", operator, nil), http.StatusConflict, "conflict")

	// Wait until the task runs: it has printed its first line.
	s := f.follow(t, "/api/v1/runs/"+first.ID+"/logs?follow=true", operator)
	for {
		ev, ok := s.next()
		if !ok {
			t.Fatal("the stream ended before the task printed")
		}
		if ev.name == "line" && strings.Contains(string(ev.data), `"text":"napping"`) {
			break
		}
		if ev.name == "end" {
			t.Fatalf("the run ended: %s", ev.data)
		}
	}
	// The agent shows the attempt it runs.
	var agents struct {
		Agents []struct {
			ID        string   `json:"id"`
			Executors []string `json:"executors"`
			Capacity  int      `json:"capacity"`
			State     string   `json:"state"`
			Running   int      `json:"running"`
		} `json:"agents"`
	}
	wantJSON(t, f.get(t, "/api/v1/agents", f.tokens[auth.RoleViewer]), http.StatusOK, &agents)
	if a := agents.Agents; len(a) != 1 || a[0].ID != "server-test" || a[0].State != "active" || a[0].Running != 1 ||
		a[0].Capacity != 8 || !slices.Equal(a[0].Executors, []string{"local"}) {
		t.Errorf("agents while nap runs: %+v", a)
	}

	var accepted runDoc
	wantJSON(t, f.post(t, "/api/v1/runs/"+first.ID+"/cancel", operator, nil), http.StatusAccepted, &accepted)
	if accepted.ID != first.ID {
		t.Errorf("cancel answered %+v", accepted)
	}
	got := s.untilEnd()
	s.close()
	if got.end.State != "canceled" || got.end.Tasks[0].State != "canceled" {
		t.Errorf("after cancel the run is %+v", got.end)
	}
	// Cancel ended the attempt, its process included.
	if a := got.attempts[len(got.attempts)-1]; a.State != "canceled" {
		t.Errorf("the nap attempt ended %s, want canceled", a.State)
	}

	// The second run started when the first ended; cancel it with force.
	wantJSON(t, f.post(t, "/api/v1/runs/"+second.ID+"/cancel", operator, map[string]bool{"force": true}), http.StatusAccepted, nil)
	if end := f.waitRun(t, second.ID, operator); end.State != "canceled" {
		t.Errorf("the second run ended %s, want canceled", end.State)
	}

	// An ended run cannot be canceled.
	wantError(t, f.post(t, "/api/v1/runs/"+first.ID+"/cancel", operator, nil), http.StatusConflict, "conflict")

	entries := f.audit(t, "&actor=token:"+f.tokenIDs[auth.RoleOperator])
	for _, id := range []string{first.ID, second.ID} {
		if n := len(findAudit(entries, "run.cancel", id)); n != 1 {
			t.Errorf("%d run.cancel entries for %s, want 1", n, id)
		}
	}
	if e := findAudit(entries, "run.cancel", second.ID); len(e) == 1 && e[0].Detail["force"] != true {
		t.Errorf("audit of the forced cancel: %+v", e[0])
	}
	for _, e := range entries {
		if e.Actor != "token:"+f.tokenIDs[auth.RoleOperator] {
			t.Errorf("the actor filter let %+v through", e)
		}
	}
}

func TestRetry(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	operator := f.tokens[auth.RoleOperator]
	run := f.trigger(t, operator, map[string]any{"pipeline": "flaky"})
	end := f.waitRun(t, run.ID, operator)
	if end.State != "failed" {
		t.Fatalf("flaky ended %s, want failed", end.State)
	}

	// Now the task finds its flag, and the retry succeeds.
	if err := os.WriteFile(filepath.Join(f.dir, "flag"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	var retried runDoc
	wantJSON(t, f.post(t, "/api/v1/runs/"+run.ID+"/retry", operator, nil), http.StatusAccepted, &retried)
	if retried.ID != run.ID || retried.State != "running" {
		t.Errorf("retry answered %+v", retried)
	}
	s := f.follow(t, "/api/v1/runs/"+run.ID+"/logs?follow=true", operator)
	got := s.untilEnd()
	s.close()
	if got.end.State != "succeeded" || got.end.Tasks[0].Attempts != 2 {
		t.Fatalf("after retry: %+v", got.end)
	}
	if lines := stdout(t, got.lines, "check", 1); !slices.Equal(lines, []string{"no flag"}) {
		t.Errorf("attempt 1 printed %q", lines)
	}
	if lines := stdout(t, got.lines, "check", 2); !slices.Equal(lines, []string{"flag found"}) {
		t.Errorf("attempt 2 printed %q", lines)
	}
	var atts struct {
		Attempts []attemptDoc `json:"attempts"`
	}
	wantJSON(t, f.get(t, "/api/v1/runs/"+run.ID+"/attempts", operator), http.StatusOK, &atts)
	if len(atts.Attempts) != 2 || atts.Attempts[0].State != "failed" || *atts.Attempts[0].ExitCode != 3 ||
		atts.Attempts[1].Number != 2 || atts.Attempts[1].State != "succeeded" {
		data, _ := json.Marshal(atts)
		t.Errorf("attempts after retry: %s", data)
	}
	var page struct {
		Lines []logLineDoc `json:"lines"`
	}
	wantJSON(t, f.get(t, "/api/v1/runs/"+run.ID+"/logs?attempt=2", operator), http.StatusOK, &page)
	if len(page.Lines) != 1 || page.Lines[0].Text != "flag found" {
		t.Errorf("attempt 2's log: %+v", page.Lines)
	}

	// A run that succeeded has nothing to retry.
	wantError(t, f.post(t, "/api/v1/runs/"+run.ID+"/retry", operator, nil), http.StatusConflict, "conflict")
	entries := findAudit(f.audit(t, ""), "run.retry", run.ID)
	if len(entries) != 1 || entries[0].Actor != "token:"+f.tokenIDs[auth.RoleOperator] {
		t.Errorf("audit of the retry: %+v", entries)
	}
}
