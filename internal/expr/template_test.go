package expr

import (
	"errors"
	"math"
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

func TestParseErrorsMore(t *testing.T) {
	paramsOnly := Scope{Roots: []string{RootParams}}
	tests := []struct {
		src    string
		scope  Scope
		offset int
		msg    string
	}{
		// Offsets are bytes into the source, past multi-byte characters.
		{"${{ 'é' + parms }}", taskScope, 11, "unknown name parms"},
		{"é ${{ item }}", paramsOnly, 7, "item is only available in a task with for_each"},
		// A quote inside an expression hides the }} that would close it.
		{`${{ "}} " + params.x `, taskScope, 0, "unclosed ${{"},
		{"${{ secrets }}", taskScope, 4, "secrets can only be used whole"},
		{"${{ secrets?.db }}", taskScope, 4, "secrets can only be used whole"},
		{"x${{ secrets.db + 'a' }}", taskScope, 5, "secrets can only be used whole"},
		{"${{ secrets.db }}", paramsOnly, 4, "secrets are not available in this expression"},
		{"${{ tasks.a.outputz.x }}", taskScope, 12, `tasks.a has no field "outputz"`},
		{"${{ tasks.a }}", Scope{Roots: []string{RootParams}}, 4, "tasks are not available in this expression"},
		{"${{ inputs.x }}", taskScope, 4, "inputs are only available inside a template"},
		{"${{ outputs.x }}", taskScope, 4, "outputs are only available in checks"},
		{"${{ 1 % 0 }}", taskScope, -1, "integer divide by zero"},
		{"${{ params.day.( }}", taskScope, -1, ""},
		{"${{}}", taskScope, 3, "empty expression"},
		{"${{ \t\n }}", taskScope, 3, "empty expression"},
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
		for _, e := range errs {
			if e.Offset < 0 || e.Offset > len(tc.src) {
				t.Errorf("Parse(%q): offset %d is outside the source", tc.src, e.Offset)
			}
		}
	}
}

// TestParseEveryError checks that Parse reports an error for every bad
// expression of a template, each at its own offset.
func TestParseEveryError(t *testing.T) {
	src := "${{ item }} and ${{ parms.x }} and ${{ params.ok }} and ${{ 1 + }}"
	_, errs := Parse(src, Scope{Roots: []string{RootParams}})
	var got []int
	for _, e := range errs {
		got = append(got, e.Offset)
	}
	if want := []int{4, 20, 62}; !reflect.DeepEqual(got, want) {
		t.Errorf("offsets = %v, want %v (errors %v)", got, want, errs)
	}
}

func TestParseExpr(t *testing.T) {
	vars := Vars{"params": map[string]any{"limit": 10}}
	tests := []struct {
		src  string
		want any
	}{
		{"params.limit > 5", true},
		{"${{ params.limit > 5 }}", true},
		{"  ${{ params.limit > 50 }}\n", false},
		{"params.limit", 10},
		{"'${{' + 'x'", "${{x"},
	}
	for _, tc := range tests {
		tmpl, errs := ParseExpr(tc.src, taskScope)
		if errs != nil {
			t.Errorf("ParseExpr(%q): %v", tc.src, errs[0])
			continue
		}
		if !tmpl.Single() {
			t.Errorf("ParseExpr(%q) is not a single expression", tc.src)
		}
		got, err := tmpl.Eval(vars, nil)
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("ParseExpr(%q) = %#v, %v; want %#v", tc.src, got, err, tc.want)
		}
	}
}

func TestParseExprErrors(t *testing.T) {
	paramsOnly := Scope{Roots: []string{RootParams}}
	tests := []struct {
		src    string
		offset int
		msg    string
	}{
		{"item > 0", 0, "item is only available"},
		{"params.x > 0 && item", 16, "item is only available"},
		{"${{ item }}", 4, "item is only available"},
		// The offset is into the source as given, leading spaces included.
		{"  ${{ item }}", 6, "item is only available"},
		{"\n${{ params.x && item }}", 17, "item is only available"},
		{"", 0, "empty expression"},
		{"${{ params.a }} ${{ params.b }}", -1, ""},
	}
	for _, tc := range tests {
		_, errs := ParseExpr(tc.src, paramsOnly)
		if len(errs) == 0 {
			t.Errorf("ParseExpr(%q): no error", tc.src)
			continue
		}
		if !strings.Contains(errs[0].Message, tc.msg) {
			t.Errorf("ParseExpr(%q) = %q, want it to contain %q", tc.src, errs[0].Message, tc.msg)
		}
		if tc.offset >= 0 && errs[0].Offset != tc.offset {
			t.Errorf("ParseExpr(%q) offset = %d, want %d", tc.src, errs[0].Offset, tc.offset)
		}
	}
}

func TestLiteral(t *testing.T) {
	for _, s := range []string{"", "plain", "${{ not parsed }}", "$${{"} {
		tmpl := Literal(s)
		if !tmpl.IsLiteral() || tmpl.Single() || tmpl.Source != s {
			t.Errorf("Literal(%q): IsLiteral %v, Single %v, Source %q", s, tmpl.IsLiteral(), tmpl.Single(), tmpl.Source)
		}
		got, err := tmpl.Eval(nil, nil)
		if err != nil || got != s {
			t.Errorf("Literal(%q).Eval = %#v, %v", s, got, err)
		}
	}
	// A parsed template without expressions is literal too; with one it is not.
	if tmpl, _ := Parse("a $${{ b }}", taskScope); !tmpl.IsLiteral() {
		t.Error(`Parse("a $${{ b }}") is not literal`)
	}
	if tmpl, _ := Parse("a ${{ params.b }}", taskScope); tmpl.IsLiteral() || tmpl.Single() {
		t.Error(`Parse("a ${{ params.b }}"): literal or single`)
	}
	if tmpl, _ := Parse("${{ secrets.b }}", taskScope); tmpl.IsLiteral() || !tmpl.Single() {
		t.Error(`Parse("${{ secrets.b }}"): literal or not single`)
	}
}

func TestSecrets(t *testing.T) {
	tmpl, errs := Parse("pw=${{ secrets.db }} ${{ secrets['api-key'] }}", taskScope)
	if errs != nil {
		t.Fatal(errs[0])
	}
	if got := tmpl.Refs().Secrets; !reflect.DeepEqual(got, []string{"api-key", "db"}) {
		t.Errorf("secrets = %v", got)
	}
	if _, err := tmpl.Render(nil, nil); err == nil || !strings.Contains(err.Error(), "secrets are not available here") {
		t.Errorf("Render without a SecretFunc = %v", err)
	}
	failing := func(name string) (string, error) { return "", errors.New("no secret " + name) }
	if _, err := tmpl.Render(nil, failing); err == nil || !strings.Contains(err.Error(), "no secret db") {
		t.Errorf("Render with a failing SecretFunc = %v", err)
	}
	got, err := tmpl.Render(nil, func(name string) (string, error) { return "<" + name + ">", nil })
	if err != nil || got != "pw=<db> <api-key>" {
		t.Errorf("Render = %q, %v", got, err)
	}
}

func TestEvalBool(t *testing.T) {
	vars := Vars{"params": map[string]any{"limit": 10, "on": true}}
	tests := []struct {
		src     string
		want    bool
		wantErr string
	}{
		{"params.limit > 5", true, ""},
		{"params.on", true, ""},
		{"!params.on", false, ""},
		{"params.limit", false, "params.limit: want true or false, got the number 10"},
		{"params.missing", false, "params.missing: want true or false, got null"},
		{"'true'", false, `'true': want true or false, got the string "true"`},
	}
	for _, tc := range tests {
		tmpl, errs := ParseExpr(tc.src, taskScope)
		if errs != nil {
			t.Fatalf("ParseExpr(%q): %v", tc.src, errs[0])
		}
		got, err := tmpl.EvalBool(vars)
		if tc.wantErr != "" {
			if err == nil || err.Error() != tc.wantErr {
				t.Errorf("EvalBool(%q) = %v, %v; want error %q", tc.src, got, err, tc.wantErr)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("EvalBool(%q) = %v, %v; want %v", tc.src, got, err, tc.want)
		}
	}
}

func TestRender(t *testing.T) {
	vars := Vars{"params": map[string]any{
		"f": 2.5, "big": 1e21, "obj": map[string]any{"html": "<a&b>"}, "list": []any{1, "x", nil}, "b": false, "s": "é",
	}}
	tests := []struct{ src, want string }{
		{"${{ params.f }}", "2.5"},
		{"n=${{ params.f * 2 }}", "n=5"},
		{"${{ params.big }}", "1e+21"},
		{"${{ params.obj }}", `{"html":"<a&b>"}`},
		{"${{ params.list }}", `[1,"x",null]`},
		{"${{ params.b }}", "false"},
		{"${{ params.s }}${{ params.s }}", "éé"},
		{"${{ params.missing ?? '' }}", ""},
	}
	for _, tc := range tests {
		tmpl, errs := Parse(tc.src, taskScope)
		if errs != nil {
			t.Fatalf("Parse(%q): %v", tc.src, errs[0])
		}
		got, err := tmpl.Render(vars, nil)
		if err != nil || got != tc.want {
			t.Errorf("Render(%q) = %q, %v; want %q", tc.src, got, err, tc.want)
		}
	}
}

func TestEvalErrors(t *testing.T) {
	vars := Vars{"params": map[string]any{"a": nil, "n": 0}, "item": 1}
	tests := []struct{ src, msg string }{
		{"${{ params.a.b }}", "${{ params.a.b }}: cannot fetch b"},
		{"${{ item.x }}", "${{ item.x }}: cannot fetch x"},
		{"${{ 1..100000000 }}", "memory budget exceeded"},
		{"${{ 1 / params.n }}", "${{ 1 / params.n }}"},
		{"x=${{ params.a }}", "${{ params.a }} is null"},
	}
	for _, tc := range tests {
		tmpl, errs := Parse(tc.src, taskScope)
		if errs != nil {
			t.Fatalf("Parse(%q): %v", tc.src, errs[0])
		}
		got, err := tmpl.Eval(vars, nil)
		if err == nil || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("Eval(%q) = %#v, %v; want an error with %q", tc.src, got, err, tc.msg)
		}
	}
}

func TestDecode(t *testing.T) {
	tests := []struct {
		in      string
		want    any
		wantErr bool
	}{
		{`{"a": [1, 2.5, "x", true, null]}`, map[string]any{"a": []any{1, 2.5, "x", true, nil}}, false},
		{`9007199254740993`, 9007199254740993, false},
		{`99999999999999999999`, 1e20, false},
		{`2.0`, 2.0, false},
		{`1 2`, nil, true},
		{`{`, nil, true},
		{``, nil, true},
		// Not a number JSON can carry back: refuse it here rather than fail later.
		{`1e400`, nil, true},
		{`[-1e400]`, nil, true},
	}
	for _, tc := range tests {
		got, err := Decode([]byte(tc.in))
		if tc.wantErr {
			if err == nil {
				t.Errorf("Decode(%q) = %#v, want an error", tc.in, got)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("Decode(%q) = %#v, %v; want %#v", tc.in, got, err, tc.want)
		}
	}
}

func TestNormalize(t *testing.T) {
	type point struct {
		X int `json:"x"`
	}
	in := map[string]any{"whole": 2.0, "list": []any{1.0, 1.5}, "keep": "x"}
	tests := []struct {
		in      any
		want    any
		wantErr bool
	}{
		{nil, nil, false},
		{3.0, 3, false},
		{1.5, 1.5, false},
		{float64(1 << 53), float64(1 << 53), false},
		{[]int{1, 2}, []any{1, 2}, false},
		{map[string]int{"a": 1}, map[string]any{"a": 1}, false},
		{point{X: 4}, map[string]any{"x": 4}, false},
		{in, map[string]any{"whole": 2, "list": []any{1, 1.5}, "keep": "x"}, false},
		{math.NaN(), nil, true},
		{[]any{math.Inf(1)}, nil, true},
		{map[string]any{"a": math.Inf(-1)}, nil, true},
	}
	for _, tc := range tests {
		got, err := Normalize(tc.in)
		if tc.wantErr {
			if err == nil {
				t.Errorf("Normalize(%#v) = %#v, want an error", tc.in, got)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("Normalize(%#v) = %#v, %v; want %#v", tc.in, got, err, tc.want)
		}
	}
	// Normalize never changes its argument: cached values are shared.
	if in["whole"] != 2.0 || in["list"].([]any)[0] != 1.0 {
		t.Errorf("Normalize changed its argument: %v", in)
	}
}

func TestDescribe(t *testing.T) {
	tests := []struct {
		v    any
		want string
	}{
		{nil, "null"},
		{"x", `the string "x"`},
		{strings.Repeat("a", 50), `the string "` + strings.Repeat("a", 40) + `…"`},
		{true, "the boolean true"},
		{3, "the number 3"},
		{2.5, "the number 2.5"},
		{[]any{1, 2}, "a list of 2"},
		{map[string]any{}, "an object"},
	}
	for _, tc := range tests {
		if got := Describe(tc.v); got != tc.want {
			t.Errorf("Describe(%#v) = %q, want %q", tc.v, got, tc.want)
		}
	}
}
