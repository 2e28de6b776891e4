package spec

import (
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/dray-dev/dray/internal/expr"
	yaml "go.yaml.in/yaml/v3"
)

// Param types.
const (
	TypeString  = "string"
	TypeInteger = "integer"
	TypeNumber  = "number"
	TypeBoolean = "boolean"
	TypeArray   = "array"
	TypeObject  = "object"
	TypeEnum    = "enum"
)

var paramTypes = []string{TypeString, TypeInteger, TypeNumber, TypeBoolean, TypeArray, TypeObject, TypeEnum}

// Param is a typed pipeline parameter or template input.
type Param struct {
	Name        string
	Pos         Pos
	Type        string
	Description string
	Values      []string // for enum
	Required    bool     // no default: the caller must give a value
	// Default is the default value: a literal (DefaultValue) or a template
	// evaluated when the run is created (over run).
	Default      *expr.Template
	DefaultValue any
	HasDefault   bool
}

// ParamError is a bad parameter value; it names the parameter and the type it wants.
type ParamError struct {
	Param   string
	Message string
}

func (e *ParamError) Error() string { return fmt.Sprintf("param %s: %s", e.Param, e.Message) }

func (d *decoder) params(n *yaml.Node, what string, defaultScope expr.Scope) []*Param {
	var out []*Param
	for _, f := range d.keyed(n, what) {
		name := f.key.Value
		root := expr.RootParams
		if what == "inputs" {
			root = expr.RootInputs
		}
		if !d.checkIdent(f.key, strings.TrimSuffix(what, "s"), name, root) {
			continue
		}
		if p := d.param(name, f, defaultScope); p != nil {
			out = append(out, p)
		}
	}
	return out
}

func (d *decoder) param(name string, f field, scope expr.Scope) *Param {
	p := &Param{Name: name, Pos: d.pos(f.key), Type: TypeString, Required: true}
	v := resolve(f.val)
	if v.Kind == yaml.ScalarNode && v.Tag != "!!null" {
		// Shorthand: `day: 2026-01-01` is a string param with that default, typed by
		// its YAML form (limit: 10 is an integer).
		p.Type = map[string]string{"!!int": TypeInteger, "!!float": TypeNumber, "!!bool": TypeBoolean}[v.Tag]
		if p.Type == "" {
			p.Type = TypeString
		}
		d.paramDefault(p, v, scope)
		return p
	}
	var defNode *yaml.Node
	d.fields(v, "param "+name, []string{"type", "default", "description", "values", "required"}, func(key string, f field) {
		switch key {
		case "type":
			if s, ok := d.str(f.val); ok {
				if !slices.Contains(paramTypes, s) {
					d.errorf(f.val, "unknown param type %q (types: %s)", s, strings.Join(paramTypes, ", "))
				} else {
					p.Type = s
				}
			}
		case "default":
			defNode = f.val
		case "description":
			p.Description, _ = d.str(f.val)
		case "values":
			p.Values, _ = d.stringList(f.val, "values")
		case "required":
			if b, ok := d.boolean(f.val); ok && !b && defNode == nil {
				p.Required = false
			}
		}
	})
	if p.Type == TypeEnum && len(p.Values) == 0 {
		d.errorf(f.key, "param %s is an enum: list its allowed values under `values`", name)
	}
	if p.Type != TypeEnum && p.Values != nil {
		d.errorf(f.key, "param %s: `values` is only for type enum", name)
	}
	if defNode != nil {
		d.paramDefault(p, resolve(defNode), scope)
	}
	return p
}

func (d *decoder) paramDefault(p *Param, v *yaml.Node, scope expr.Scope) {
	p.Required = false
	p.HasDefault = true
	if v.Kind == yaml.ScalarNode && v.Tag == "!!str" && strings.Contains(v.Value, "${{") {
		p.Default = d.template(v, scope)
		return
	}
	raw, ok := d.value(v)
	if !ok {
		return
	}
	val, err := p.Coerce(raw)
	if err != nil {
		d.errorf(v, "default of %s: %s", p.Name, err.(*ParamError).Message)
		return
	}
	p.DefaultValue = val
}

// Coerce checks a value against the param's type and converts it where the type
// allows (a whole float64 to an integer).
func (p *Param) Coerce(v any) (any, error) {
	bad := func() error {
		return &ParamError{Param: p.Name, Message: fmt.Sprintf("want %s, got %s", p.want(), expr.Describe(v))}
	}
	switch p.Type {
	case TypeString:
		if s, ok := v.(string); ok {
			return s, nil
		}
	case TypeInteger:
		switch x := v.(type) {
		case int:
			return x, nil
		case float64:
			if x == math.Trunc(x) && math.Abs(x) < 1<<53 {
				return int(x), nil
			}
		}
	case TypeNumber:
		switch x := v.(type) {
		case int, float64:
			return x, nil
		}
	case TypeBoolean:
		if b, ok := v.(bool); ok {
			return b, nil
		}
	case TypeArray:
		if a, ok := v.([]any); ok {
			return a, nil
		}
	case TypeObject:
		if m, ok := v.(map[string]any); ok {
			return m, nil
		}
	case TypeEnum:
		if s, ok := v.(string); ok && slices.Contains(p.Values, s) {
			return s, nil
		}
	}
	return nil, bad()
}

func (p *Param) want() string {
	switch p.Type {
	case TypeInteger:
		return "an integer"
	case TypeNumber:
		return "a number"
	case TypeBoolean:
		return "true or false"
	case TypeArray:
		return "a JSON array"
	case TypeObject:
		return "a JSON object"
	case TypeEnum:
		return "one of " + strings.Join(p.Values, ", ")
	}
	return "a string"
}

// Parse converts a command-line value (-p name=value) to the param's type:
// integers and numbers in decimal, booleans as true or false, arrays and
// objects as JSON, strings as they are.
func (p *Param) Parse(s string) (any, error) {
	bad := func() error {
		return &ParamError{Param: p.Name, Message: fmt.Sprintf("want %s, got %q", p.want(), s)}
	}
	switch p.Type {
	case TypeString:
		return s, nil
	case TypeEnum:
		if !slices.Contains(p.Values, s) {
			return nil, bad()
		}
		return s, nil
	case TypeInteger:
		i, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
		if err != nil {
			return nil, bad()
		}
		return int(i), nil
	case TypeNumber:
		f, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
		if err != nil || math.IsInf(f, 0) || math.IsNaN(f) {
			return nil, bad()
		}
		return expr.Normalize(f)
	case TypeBoolean:
		b, err := strconv.ParseBool(strings.TrimSpace(s))
		if err != nil {
			return nil, bad()
		}
		return b, nil
	}
	if !json.Valid([]byte(s)) {
		return nil, bad()
	}
	v, err := expr.Decode([]byte(s))
	if err != nil {
		return nil, bad()
	}
	return p.Coerce(v)
}

// ResolveParams checks the given values against params and fills defaults.
// given holds already-typed values (from JSON or Parse); defaults that are
// templates are evaluated over vars (which holds run). Unknown names and
// missing required params are errors.
func ResolveParams(params []*Param, given map[string]any, vars expr.Vars) (map[string]any, error) {
	out := make(map[string]any, len(params))
	known := make(map[string]*Param, len(params))
	for _, p := range params {
		known[p.Name] = p
	}
	names := make([]string, 0, len(given))
	for name := range given {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		p, ok := known[name]
		if !ok {
			return nil, &ParamError{Param: name, Message: "unknown param" + knownNames(params)}
		}
		v, err := p.Coerce(given[name])
		if err != nil {
			return nil, err
		}
		out[name] = v
	}
	for _, p := range params {
		if _, ok := out[p.Name]; ok {
			continue
		}
		switch {
		case p.Default != nil:
			v, err := p.Default.Eval(vars, nil)
			if err != nil {
				return nil, &ParamError{Param: p.Name, Message: "default: " + err.Error()}
			}
			if v, err = p.Coerce(v); err != nil {
				return nil, &ParamError{Param: p.Name, Message: "default: " + err.(*ParamError).Message}
			}
			out[p.Name] = v
		case p.HasDefault:
			out[p.Name] = cloneValue(p.DefaultValue)
		case p.Required:
			return nil, &ParamError{Param: p.Name, Message: fmt.Sprintf("required: give it with -p %s=VALUE (%s)", p.Name, p.want())}
		}
	}
	return out, nil
}

// ParseArgs converts name=value arguments into typed values for params.
func ParseArgs(params []*Param, args []string) (map[string]any, error) {
	out := map[string]any{}
	for _, a := range args {
		name, value, ok := strings.Cut(a, "=")
		if !ok || name == "" {
			return nil, &ParamError{Param: a, Message: "want name=value"}
		}
		var p *Param
		for _, x := range params {
			if x.Name == name {
				p = x
			}
		}
		if p == nil {
			return nil, &ParamError{Param: name, Message: "unknown param" + knownNames(params)}
		}
		v, err := p.Parse(value)
		if err != nil {
			return nil, err
		}
		out[name] = v
	}
	return out, nil
}

func knownNames(params []*Param) string {
	if len(params) == 0 {
		return " (this pipeline has no params)"
	}
	names := make([]string, len(params))
	for i, p := range params {
		names[i] = p.Name
	}
	return " (params: " + strings.Join(names, ", ") + ")"
}

func cloneValue(v any) any {
	switch x := v.(type) {
	case map[string]any:
		m := make(map[string]any, len(x))
		for k, e := range x {
			m[k] = cloneValue(e)
		}
		return m
	case []any:
		a := make([]any, len(x))
		for i, e := range x {
			a[i] = cloneValue(e)
		}
		return a
	}
	return v
}
