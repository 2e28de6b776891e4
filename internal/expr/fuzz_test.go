package expr

import (
	"strings"
	"testing"
)

// fuzzScope allows every root a task can use, so the fuzzer reaches the compiler.
var fuzzScope = Scope{Roots: []string{RootParams, RootTasks, RootItem, RootRun, RootEnv, RootSecrets}}

var fuzzVars = Vars{
	"params": map[string]any{"day": "2026-11-23", "limit": 10, "ratio": 0.5, "on": true, "list": []any{1, "a", nil}, "obj": map[string]any{"k": "v"}},
	"tasks": map[string]any{
		"a": map[string]any{"outputs": map[string]any{"ids": []any{"x", "y"}, "n": 2}, "status": "succeeded"},
		"b": map[string]any{"outputs": []any{}, "status": "skipped"},
	},
	"item": map[string]any{"id": 7, "name": "é"},
	"run":  map[string]any{"id": "r1", "logical_date": "2026-11-23", "trigger": "manual"},
	"env":  map[string]any{"HOME": "/root"},
}

func fuzzSecret(name string) (string, error) { return "<" + name + ">", nil }

// checkTemplate checks what holds for any template Parse accepts: evaluating it
// does not panic, and a value it yields is JSON-shaped.
func checkTemplate(t *testing.T, src string, tmpl *Template, vars Vars) {
	t.Helper()
	// ParseExpr may drop the space around an expression wrapped in ${{ }}.
	if strings.TrimSpace(tmpl.Source) != strings.TrimSpace(src) {
		t.Errorf("Source = %q, want %q", tmpl.Source, src)
	}
	v, err := tmpl.Eval(vars, fuzzSecret)
	if err != nil {
		return
	}
	if _, err := Marshal(v); err != nil {
		t.Errorf("Eval(%q) = %#v, which is not JSON: %v", src, v, err)
	}
	if n, err := Normalize(v); err != nil || !deepEqualJSON(n, v) {
		t.Errorf("Eval(%q) = %#v, not normalized (%#v, %v)", src, v, n, err)
	}
	if !tmpl.Single() {
		if _, ok := v.(string); !ok {
			t.Errorf("Eval(%q) of a template that is not one expression = %#v, want a string", src, v)
		}
	}
	tmpl.EvalBool(vars)
}

func deepEqualJSON(a, b any) bool {
	x, err1 := Marshal(a)
	y, err2 := Marshal(b)
	return err1 == nil && err2 == nil && string(x) == string(y)
}

// FuzzParse compiles any string with a fixed scope. Parse must not panic; its
// errors must point into the source; a template it returns must evaluate
// without panicking; and a string without ${{ is its own value.
func FuzzParse(f *testing.F) {
	f.Add("${{ params.day }}")
	f.Fuzz(func(t *testing.T, src string) {
		tmpl, errs := Parse(src, fuzzScope)
		if (tmpl == nil) == (len(errs) == 0) {
			t.Fatalf("Parse(%q) = %v, %v: want a template or errors", src, tmpl, errs)
		}
		for _, e := range errs {
			if e.Offset < 0 || e.Offset > len(src) || e.Message == "" {
				t.Errorf("Parse(%q): error %q at offset %d, outside the source", src, e.Message, e.Offset)
			}
		}
		if tmpl != nil {
			checkTemplate(t, src, tmpl, fuzzVars)
			if !strings.Contains(src, "${{") {
				if v, err := tmpl.Eval(fuzzVars, nil); err != nil || v != src || !tmpl.IsLiteral() {
					t.Errorf("Parse(%q) without an expression = %#v, %v", src, v, err)
				}
			}
		}
		if tmpl, errs := ParseExpr(src, fuzzScope); tmpl != nil {
			checkTemplate(t, src, tmpl, fuzzVars)
		} else {
			for _, e := range errs {
				if e.Offset < 0 || e.Offset > len(src) {
					t.Errorf("ParseExpr(%q): error %q at offset %d, outside the source", src, e.Message, e.Offset)
				}
			}
		}
	})
}

// FuzzEval evaluates a template over params and item given as JSON.
func FuzzEval(f *testing.F) {
	f.Add("${{ params.a + item }}", []byte(`{"a": 1}`), []byte(`2`))
	f.Fuzz(func(t *testing.T, src string, params, item []byte) {
		tmpl, errs := Parse(src, fuzzScope)
		if errs != nil {
			return
		}
		vars := Vars{"tasks": fuzzVars["tasks"], "run": fuzzVars["run"], "env": fuzzVars["env"]}
		if p, err := Decode(params); err == nil {
			vars["params"] = p
		}
		if it, err := Decode(item); err == nil {
			vars["item"] = it
		}
		checkTemplate(t, src, tmpl, vars)
	})
}
