package expr

import (
	"reflect"
	"strings"
	"testing"
)

var taskScope = Scope{Roots: []string{RootParams, RootTasks, RootItem, RootRun, RootEnv, RootSecrets}}

func TestEval(t *testing.T) {
	vars := Vars{
		"params": map[string]any{"day": "2026-11-23", "limit": 10, "flag": true},
		"tasks": map[string]any{
			"competitions": map[string]any{"outputs": map[string]any{"ids": []any{"a", "b"}, "n": 2}, "status": "succeeded"},
			"score":        map[string]any{"outputs": []any{}, "status": "skipped"},
		},
		"item": map[string]any{"id": 7},
		"run":  map[string]any{"id": "r1"},
		"env":  map[string]any{},
	}
	secret := func(name string) (string, error) { return "<<" + name + ">>", nil }
	tests := []struct {
		src  string
		want any
	}{
		{"plain text", "plain text"},
		{"${{ params.limit }}", 10},
		{"n=${{ params.limit }}", "n=10"},
		{"${{ tasks.competitions.outputs.ids }}", []any{"a", "b"}},
		{"ids=${{ tasks.competitions.outputs.ids }}", `ids=["a","b"]`},
		{"${{ item }}", map[string]any{"id": 7}},
		{"x ${{ item }} y", `x {"id":7} y`},
		{"${{ len(tasks.score.outputs) > 0 }}", false},
		{"${{ params.limit / 4 }}", 2.5},
		{"${{ params.limit * 2 }}", 20},
		{"${{ {'a': {'b': 1}} }}", map[string]any{"a": map[string]any{"b": 1}}},
		{"${{ 'a}}b' }}", "a}}b"},
		{"$${{ literal }}", "${{ literal }}"},
		{"${{ secrets.db }}", "<<db>>"},
		{"pw=${{ secrets.db }}!", "pw=<<db>>!"},
		{"${{ 1..3 }}", []any{1, 2, 3}},
		{"${{ params.flag }}", true},
		{"${{ tasks.competitions.status }}", "succeeded"},
	}
	for _, tc := range tests {
		tmpl, errs := Parse(tc.src, taskScope)
		if errs != nil {
			t.Fatalf("Parse(%q): %v", tc.src, errs[0])
		}
		got, err := tmpl.Eval(vars, secret)
		if err != nil {
			t.Fatalf("Eval(%q): %v", tc.src, err)
		}
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("Eval(%q) = %#v, want %#v", tc.src, got, tc.want)
		}
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		src    string
		scope  Scope
		offset int
		msg    string
	}{
		{"${{ parms.day }}", taskScope, 4, "unknown name parms"},
		{"x ${{ params.day ", taskScope, 2, "unclosed ${{"},
		{"${{ }}", taskScope, 3, "empty expression"},
		{"${{ item.id }}", Scope{Roots: []string{RootParams}}, 4, "item is only available in a task with for_each"},
		{"${{ upper(secrets.db) }}", taskScope, 10, "secrets can only be used whole"},
		{"${{ tasks.a.output }}", taskScope, 12, `tasks.a has no field "output"`},
		{"${{ params.x + }}", taskScope, -1, "unexpected token"},
	}
	for _, tc := range tests {
		_, errs := Parse(tc.src, tc.scope)
		if len(errs) == 0 {
			t.Errorf("Parse(%q): no error, want %q", tc.src, tc.msg)
			continue
		}
		if !strings.Contains(errs[0].Message, tc.msg) {
			t.Errorf("Parse(%q) = %q, want it to contain %q", tc.src, errs[0].Message, tc.msg)
		}
		if tc.offset >= 0 && errs[0].Offset != tc.offset {
			t.Errorf("Parse(%q) offset = %d, want %d", tc.src, errs[0].Offset, tc.offset)
		}
	}
}

func TestRefs(t *testing.T) {
	tmpl, errs := Parse("${{ params.day }} ${{ tasks.a.outputs.x + tasks['b'].status }} ${{ secrets.pw }} ${{ item }}", taskScope)
	if errs != nil {
		t.Fatal(errs[0])
	}
	r := tmpl.Refs()
	if !reflect.DeepEqual(r.Params, []string{"day"}) || !reflect.DeepEqual(r.Secrets, []string{"pw"}) {
		t.Errorf("refs = %+v", r)
	}
	if !reflect.DeepEqual(r.Tasks, map[string][]string{"a": {"outputs"}, "b": {"status"}}) {
		t.Errorf("task refs = %v", r.Tasks)
	}
	if !r.Uses(RootItem) || r.Uses(RootEnv) {
		t.Errorf("roots = %v", r.Roots)
	}
}

func TestRenderNullIsError(t *testing.T) {
	tmpl, _ := Parse("x=${{ params.missing }}", taskScope)
	_, err := tmpl.Render(Vars{"params": map[string]any{}}, nil)
	if err == nil || !strings.Contains(err.Error(), "is null") {
		t.Fatalf("err = %v", err)
	}
	tmpl, _ = Parse("x=${{ params.missing ?? 'd' }}", taskScope)
	s, err := tmpl.Render(Vars{"params": map[string]any{}}, nil)
	if err != nil || s != "x=d" {
		t.Fatalf("got %q, %v", s, err)
	}
}
