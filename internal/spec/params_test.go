package spec

import (
	"errors"
	"reflect"
	"testing"

	"github.com/dray-dev/dray/internal/expr"
)

// loadParams loads a pipeline with the given params block and returns its params.
func loadParams(t *testing.T, params string) []*Param {
	t.Helper()
	proj := mustLoad(t, mapFS(map[string]string{
		"pipelines/p.yaml": "version: 1\nparams:\n" + params + "tasks:\n  - name: a\n    run: echo\n",
	}))
	if len(proj.Errors) > 0 {
		t.Fatalf("errors:\n%s", proj.Errors)
	}
	return mustPipeline(t, proj, "p").Params
}

const everyType = `  s: { type: string }
  i: { type: integer }
  n: { type: number }
  b: { type: boolean }
  arr: { type: array }
  obj: { type: object }
  e: { type: enum, values: [x, y] }
`

func TestParseArgs(t *testing.T) {
	params := loadParams(t, everyType)
	tests := []struct {
		args    []string
		want    map[string]any
		wantErr string
	}{
		{args: nil, want: map[string]any{}},
		{args: []string{"s=hello world"}, want: map[string]any{"s": "hello world"}},
		{args: []string{"s="}, want: map[string]any{"s": ""}},
		{args: []string{"s=a=b"}, want: map[string]any{"s": "a=b"}},
		{args: []string{"s=42"}, want: map[string]any{"s": "42"}},
		{args: []string{"s=a", "s=b"}, want: map[string]any{"s": "b"}},
		{args: []string{"i=42"}, want: map[string]any{"i": 42}},
		{args: []string{"i= -7 "}, want: map[string]any{"i": -7}},
		{args: []string{"i=4.5"}, wantErr: `param i: want an integer, got "4.5"`},
		{args: []string{"i=ten"}, wantErr: `param i: want an integer, got "ten"`},
		{args: []string{"i="}, wantErr: `param i: want an integer, got ""`},
		{args: []string{"i=9223372036854775808"}, wantErr: `param i: want an integer, got "9223372036854775808"`},
		{args: []string{"n=2.5"}, want: map[string]any{"n": 2.5}},
		{args: []string{"n=3"}, want: map[string]any{"n": 3}},
		{args: []string{"n=1e3"}, want: map[string]any{"n": 1000}},
		{args: []string{"n=abc"}, wantErr: `param n: want a number, got "abc"`},
		{args: []string{"n=NaN"}, wantErr: `param n: want a number, got "NaN"`},
		{args: []string{"n=Inf"}, wantErr: `param n: want a number, got "Inf"`},
		{args: []string{"n=1e999"}, wantErr: `param n: want a number, got "1e999"`},
		{args: []string{"b=true"}, want: map[string]any{"b": true}},
		{args: []string{"b=false"}, want: map[string]any{"b": false}},
		{args: []string{"b=yes"}, wantErr: `param b: want true or false, got "yes"`},
		{args: []string{`arr=[1, "a", {"k": 2.5}]`}, want: map[string]any{"arr": []any{1, "a", map[string]any{"k": 2.5}}}},
		{args: []string{"arr=[]"}, want: map[string]any{"arr": []any{}}},
		{args: []string{"arr={}"}, wantErr: `param arr: want a JSON array, got an object`},
		{args: []string{"arr=a,b"}, wantErr: `param arr: want a JSON array, got "a,b"`},
		{args: []string{"arr=[1] [2]"}, wantErr: `param arr: want a JSON array, got "[1] [2]"`},
		{args: []string{`obj={"a": [1, 2]}`}, want: map[string]any{"obj": map[string]any{"a": []any{1, 2}}}},
		{args: []string{"obj=[1]"}, wantErr: `param obj: want a JSON object, got a list of 1`},
		{args: []string{"obj=null"}, wantErr: `param obj: want a JSON object, got null`},
		{args: []string{"e=x"}, want: map[string]any{"e": "x"}},
		{args: []string{"e=z"}, wantErr: `param e: want one of x, y, got "z"`},
		{args: []string{"e=X"}, wantErr: `param e: want one of x, y, got "X"`},
		{args: []string{"zzz=1"}, wantErr: `param zzz: unknown param (params: s, i, n, b, arr, obj, e)`},
		{args: []string{"novalue"}, wantErr: `param novalue: want name=value`},
		{args: []string{"=v"}, wantErr: `param =v: want name=value`},
		{args: []string{"s=ok", "i=x"}, wantErr: `param i: want an integer, got "x"`},
	}
	for _, tc := range tests {
		got, err := ParseArgs(params, tc.args)
		if tc.wantErr != "" {
			var pe *ParamError
			if err == nil || err.Error() != tc.wantErr || !errors.As(err, &pe) {
				t.Errorf("ParseArgs(%q) = %v, %v; want the ParamError %q", tc.args, got, err, tc.wantErr)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("ParseArgs(%q) = %#v, %v; want %#v", tc.args, got, err, tc.want)
		}
	}
}

func TestParseArgsNoParams(t *testing.T) {
	_, err := ParseArgs(nil, []string{"day=1"})
	if err == nil || err.Error() != "param day: unknown param (this pipeline has no params)" {
		t.Errorf("err = %v", err)
	}
}

func TestResolveParams(t *testing.T) {
	params := loadParams(t, `  day: { type: string, default: "${{ run.logical_date }}" }
  limit: 10
  ratio: 0.5
  dry: false
  label: nightly
  tags: { type: array, default: [a, b] }
  opts: { type: object, default: { k: v } }
  mode: { type: enum, values: [fast, slow], default: fast }
  need: { type: integer }
  opt: { type: string, required: false }
`)
	vars := expr.Vars{"run": map[string]any{"logical_date": "2026-11-23", "id": "r1"}}
	defaults := map[string]any{
		"day": "2026-11-23", "limit": 10, "ratio": 0.5, "dry": false, "label": "nightly",
		"tags": []any{"a", "b"}, "opts": map[string]any{"k": "v"}, "mode": "fast",
	}
	with := func(kv ...any) map[string]any {
		m := map[string]any{}
		for k, v := range defaults {
			m[k] = v
		}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i].(string)] = kv[i+1]
		}
		return m
	}
	tests := []struct {
		name    string
		given   map[string]any
		want    map[string]any
		wantErr string
	}{
		{"defaults", map[string]any{"need": 1}, with("need", 1), ""},
		{"given wins over an expression default", map[string]any{"need": 1, "day": "2026-01-01"}, with("need", 1, "day", "2026-01-01"), ""},
		{"given wins over a literal default", map[string]any{"need": 1, "limit": 3, "tags": []any{}}, with("need", 1, "limit", 3, "tags", []any{}), ""},
		{"optional given", map[string]any{"need": 1, "opt": "x"}, with("need", 1, "opt", "x"), ""},
		{"whole float is an integer", map[string]any{"need": 2.0}, with("need", 2), ""},
		{"integer is a number", map[string]any{"need": 1, "ratio": 2}, with("need", 1, "ratio", 2), ""},
		{"missing required", map[string]any{}, nil, "param need: required: give it with -p need=VALUE (an integer)"},
		{"string for integer", map[string]any{"need": "1"}, nil, `param need: want an integer, got the string "1"`},
		{"fraction for integer", map[string]any{"need": 2.5}, nil, "param need: want an integer, got the number 2.5"},
		{"null for integer", map[string]any{"need": nil}, nil, "param need: want an integer, got null"},
		{"bad enum", map[string]any{"need": 1, "mode": "medium"}, nil, `param mode: want one of fast, slow, got the string "medium"`},
		{"string for array", map[string]any{"need": 1, "tags": "a"}, nil, `param tags: want a JSON array, got the string "a"`},
		{"string for boolean", map[string]any{"need": 1, "dry": "false"}, nil, `param dry: want true or false, got the string "false"`},
		{"unknown", map[string]any{"need": 1, "nope": 1}, nil, "param nope: unknown param (params: day, limit, ratio, dry, label, tags, opts, mode, need, opt)"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ResolveParams(params, tc.given, vars)
			if tc.wantErr != "" {
				var pe *ParamError
				if err == nil || err.Error() != tc.wantErr || !errors.As(err, &pe) {
					t.Errorf("ResolveParams(%v) = %v, %v; want the ParamError %q", tc.given, got, err, tc.wantErr)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(got, tc.want) {
				t.Errorf("ResolveParams(%v) = %#v, %v\nwant %#v", tc.given, got, err, tc.want)
			}
		})
	}

	t.Run("defaults are copies", func(t *testing.T) {
		got, err := ResolveParams(params, map[string]any{"need": 1}, vars)
		if err != nil {
			t.Fatal(err)
		}
		got["tags"].([]any)[0] = "changed"
		got["opts"].(map[string]any)["k"] = "changed"
		again, err := ResolveParams(params, map[string]any{"need": 1}, vars)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(again["tags"], []any{"a", "b"}) || !reflect.DeepEqual(again["opts"], map[string]any{"k": "v"}) {
			t.Errorf("a caller's change reached the defaults: %v", again)
		}
	})

	t.Run("parsed args", func(t *testing.T) {
		given, err := ParseArgs(params, []string{"need=5", `tags=["q"]`, "dry=true", "ratio=1.25"})
		if err != nil {
			t.Fatal(err)
		}
		got, err := ResolveParams(params, given, vars)
		if want := with("need", 5, "tags", []any{"q"}, "dry", true, "ratio", 1.25); err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("got %v, %v; want %v", got, err, want)
		}
	})
}

// TestResolveParamsExpressionDefault checks defaults that are expressions over
// run: they are evaluated at resolve time and typed like any value.
func TestResolveParamsExpressionDefault(t *testing.T) {
	vars := expr.Vars{"run": map[string]any{"id": "r1", "logical_date": "2026-11-23", "n": 4}}
	tests := []struct {
		param   string
		want    any
		wantErr string
	}{
		{`{ type: string, default: "day-${{ run.logical_date }}" }`, "day-2026-11-23", ""},
		{`{ type: integer, default: "${{ run.n * 2 }}" }`, 8, ""},
		{`{ type: number, default: "${{ run.n / 8 }}" }`, 0.5, ""},
		{`{ type: boolean, default: "${{ run.n > 3 }}" }`, true, ""},
		{`{ type: array, default: "${{ [run.id] }}" }`, []any{"r1"}, ""},
		{`{ type: integer, default: "${{ run.id }}" }`, nil, `param x: default: want an integer, got the string "r1"`},
		{`{ type: enum, values: [a], default: "${{ run.id }}" }`, nil, `param x: default: want one of a, got the string "r1"`},
	}
	for _, tc := range tests {
		params := loadParams(t, "  x: "+tc.param+"\n")
		got, err := ResolveParams(params, nil, vars)
		if tc.wantErr != "" {
			if err == nil || err.Error() != tc.wantErr {
				t.Errorf("%s: got %v, %v; want error %q", tc.param, got, err, tc.wantErr)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got["x"], tc.want) {
			t.Errorf("%s: got %#v, %v; want %#v", tc.param, got["x"], err, tc.want)
		}
	}
}
