package expr

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"strings"

	"github.com/expr-lang/expr/vm"
)

// Vars holds the values of the roots an expression evaluates over, keyed by root
// name. Values are JSON-shaped: map[string]any, []any, string, bool, int, float64, nil.
type Vars map[string]any

// SecretFunc returns what stands for the named secret in an evaluated template.
type SecretFunc func(name string) (string, error)

// Eval evaluates the template. A template that is exactly one expression returns
// the expression's value with its type; any other template returns a string.
func (t *Template) Eval(vars Vars, secret SecretFunc) (any, error) {
	if t.Single() {
		return t.evalPart(t.parts[0], vars, secret)
	}
	return t.Render(vars, secret)
}

// Render evaluates the template into a string: strings as they are, other values
// as JSON. An expression that yields null is an error, so a mistyped output key
// does not silently become an empty argument.
func (t *Template) Render(vars Vars, secret SecretFunc) (string, error) {
	var b strings.Builder
	for _, p := range t.parts {
		if p.prog == nil && p.secret == "" {
			b.WriteString(p.lit)
			continue
		}
		v, err := t.evalPart(p, vars, secret)
		if err != nil {
			return "", err
		}
		if v == nil {
			return "", fmt.Errorf("${{ %s }} is null (write ${{ %s ?? \"\" }} for an empty default)", p.src, p.src)
		}
		s, err := ToString(v)
		if err != nil {
			return "", fmt.Errorf("${{ %s }}: %w", p.src, err)
		}
		b.WriteString(s)
	}
	return b.String(), nil
}

func (t *Template) evalPart(p part, vars Vars, secret SecretFunc) (any, error) {
	if p.secret != "" {
		if secret == nil {
			return nil, fmt.Errorf("${{ secrets.%s }}: secrets are not available here", p.secret)
		}
		return secret(p.secret)
	}
	v, err := vm.Run(p.prog, map[string]any(vars))
	if err == nil {
		v, err = Normalize(v)
	}
	if err != nil {
		return nil, fmt.Errorf("${{ %s }}: %s", p.src, firstLine(err.Error()))
	}
	return v, nil
}

// EvalBool evaluates a condition (if, checks); the result must be a boolean.
func (t *Template) EvalBool(vars Vars) (bool, error) {
	v, err := t.Eval(vars, nil)
	if err != nil {
		return false, err
	}
	b, ok := v.(bool)
	if !ok {
		return false, fmt.Errorf("%s: want true or false, got %s", strings.TrimSpace(t.Source), Describe(v))
	}
	return b, nil
}

// ToString renders a value the way a template puts it into a longer string.
func ToString(v any) (string, error) {
	if s, ok := v.(string); ok {
		return s, nil
	}
	data, err := Marshal(v)
	if err != nil {
		return "", err
	}
	return string(data), nil
}

// Marshal encodes v as compact JSON without escaping <, > and &.
func Marshal(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, fmt.Errorf("encode value as JSON: %w", err)
	}
	return bytes.TrimRight(buf.Bytes(), "\n"), nil
}

// Decode parses JSON into expression values: objects, lists, strings, booleans,
// null, and numbers as int when they are whole and fit, float64 otherwise.
func Decode(data []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	if dec.More() {
		return nil, fmt.Errorf("unexpected data after the JSON value")
	}
	return numbers(v)
}

// numbers converts json.Number values in place: int when whole and in
// range, float64 otherwise; a number too large for a float64 is an error.
func numbers(v any) (any, error) {
	switch x := v.(type) {
	case json.Number:
		if i, err := x.Int64(); err == nil {
			return int(i), nil
		}
		f, err := x.Float64()
		if err != nil {
			return nil, fmt.Errorf("the number %s is out of range", string(x))
		}
		return f, nil
	case map[string]any:
		for k, e := range x {
			n, err := numbers(e)
			if err != nil {
				return nil, err
			}
			x[k] = n
		}
	case []any:
		for i, e := range x {
			n, err := numbers(e)
			if err != nil {
				return nil, err
			}
			x[i] = n
		}
	}
	return v, nil
}

// Normalize converts a value an expression returned (which may be []int, a struct
// or another Go type) into the JSON shape of Vars. It never modifies v: values
// that are already in shape are returned as they are, so shared (cached)
// values can be evaluated over concurrently.
func Normalize(v any) (any, error) {
	out, _, err := normalize(v)
	return out, err
}

// normalize returns the value in shape and whether it differs from v.
func normalize(v any) (any, bool, error) {
	switch x := v.(type) {
	case nil, string, bool, int:
		return v, false, nil
	case float64:
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return nil, false, fmt.Errorf("number %v cannot be represented in JSON", x)
		}
		if x == math.Trunc(x) && math.Abs(x) < 1<<53 {
			return int(x), true, nil
		}
		return x, false, nil
	case map[string]any:
		var out map[string]any
		for k, e := range x {
			n, changed, err := normalize(e)
			if err != nil {
				return nil, false, err
			}
			if changed && out == nil {
				out = make(map[string]any, len(x))
				for k2, e2 := range x {
					out[k2] = e2
				}
			}
			if out != nil {
				out[k] = n
			}
		}
		if out == nil {
			return x, false, nil
		}
		return out, true, nil
	case []any:
		var out []any
		for i, e := range x {
			n, changed, err := normalize(e)
			if err != nil {
				return nil, false, err
			}
			if changed && out == nil {
				out = make([]any, len(x))
				copy(out, x)
			}
			if out != nil {
				out[i] = n
			}
		}
		if out == nil {
			return x, false, nil
		}
		return out, true, nil
	}
	data, err := Marshal(v)
	if err != nil {
		return nil, false, err
	}
	out, err := Decode(data)
	return out, true, err
}

// Describe names a value's JSON type for error messages ("a string \"x\"").
func Describe(v any) string {
	switch x := v.(type) {
	case nil:
		return "null"
	case string:
		if len(x) > 40 {
			x = x[:40] + "…"
		}
		return fmt.Sprintf("the string %q", x)
	case bool:
		return fmt.Sprintf("the boolean %v", x)
	case int, float64:
		return fmt.Sprintf("the number %v", x)
	case []any:
		return fmt.Sprintf("a list of %d", len(x))
	case map[string]any:
		return "an object"
	}
	return fmt.Sprintf("%T", v)
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}
