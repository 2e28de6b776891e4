// Package expr compiles and evaluates the ${{ … }} expressions of dray's pipeline
// files.
//
// A Template is a string that may hold expressions. A string that is exactly one
// expression keeps the expression's type when evaluated (a list stays a list); an
// expression inside a longer string is rendered into it (strings as they are,
// numbers, booleans, lists and objects as JSON). `$${{` writes a literal `${{`.
//
// Expressions use the expr-lang language (https://expr-lang.org) over the roots a
// Scope allows: params, tasks, item, run, env, inputs, outputs and secrets.
// A secret may only be used whole, as ${{ secrets.NAME }}: the engine never sees
// its value; it renders a marker that the agent replaces just before the task starts.
package expr

import (
	"errors"
	"fmt"
	"strings"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/file"
	"github.com/expr-lang/expr/types"
	"github.com/expr-lang/expr/vm"
)

// Error is a compile error at a byte offset of the template's source.
type Error struct {
	Offset  int // byte offset into Template.Source
	Message string
}

func (e *Error) Error() string { return e.Message }

// Template is a compiled string that may hold ${{ }} expressions.
type Template struct {
	Source string
	parts  []part
	refs   Refs
}

type part struct {
	lit    string      // literal text, when prog is nil and secret is ""
	src    string      // the expression source, without ${{ }}
	prog   *vm.Program // compiled expression
	secret string      // name, when the part is exactly secrets.NAME
}

// Refs lists what a template's expressions refer to. Tasks maps a task name to the
// fields used ("outputs", "status"); Params, Inputs and Secrets list names.
type Refs struct {
	Params  []string
	Tasks   map[string][]string
	Inputs  []string
	Secrets []string
	Roots   []string // every root used (params, tasks, item, …)
}

// Uses reports whether the template refers to the root name (for example "item").
func (r Refs) Uses(root string) bool {
	for _, x := range r.Roots {
		if x == root {
			return true
		}
	}
	return false
}

// Scope says which roots an expression may use, and where it stands (for
// messages: "a check", "the pipeline env").
type Scope struct {
	Roots []string
	Where string
}

// Roots of the expression language.
const (
	RootParams  = "params"
	RootTasks   = "tasks"
	RootItem    = "item"
	RootRun     = "run"
	RootEnv     = "env"
	RootSecrets = "secrets"
	RootInputs  = "inputs"
	RootOutputs = "outputs"
)

func (s Scope) has(root string) bool {
	for _, r := range s.Roots {
		if r == root {
			return true
		}
	}
	return false
}

// Parse compiles s, which may hold any number of ${{ }} expressions. It returns
// every error found, each at its offset in s.
func Parse(s string, scope Scope) (*Template, []*Error) {
	t := &Template{Source: s}
	var errs []*Error
	var lit strings.Builder
	for i := 0; i < len(s); {
		if strings.HasPrefix(s[i:], "$${{") {
			lit.WriteString("${{")
			i += 4
			continue
		}
		if !strings.HasPrefix(s[i:], "${{") {
			lit.WriteByte(s[i])
			i++
			continue
		}
		end := closing(s, i+3)
		if end < 0 {
			errs = append(errs, &Error{Offset: i, Message: "unclosed ${{: add }} at the end of the expression"})
			break
		}
		if lit.Len() > 0 {
			t.parts = append(t.parts, part{lit: lit.String()})
			lit.Reset()
		}
		src := s[i+3 : end]
		p, perrs := compilePart(src, i+3, scope, &t.refs)
		errs = append(errs, perrs...)
		t.parts = append(t.parts, p)
		i = end + 2
	}
	if lit.Len() > 0 {
		t.parts = append(t.parts, part{lit: lit.String()})
	}
	if len(errs) > 0 {
		return nil, errs
	}
	t.refs.normalize()
	return t, nil
}

// ParseExpr compiles s as one bare expression; a string wrapped whole in ${{ }}
// is accepted too. It is for keys that always hold an expression (if, checks).
func ParseExpr(s string, scope Scope) (*Template, []*Error) {
	trimmed := strings.TrimSpace(s)
	if strings.HasPrefix(trimmed, "${{") && closing(trimmed, 3) == len(trimmed)-2 {
		t, errs := Parse(trimmed, scope)
		lead := len(s) - len(strings.TrimLeft(s, " \t\r\n"))
		for _, e := range errs {
			e.Offset += lead
		}
		return t, errs
	}
	t := &Template{Source: s}
	p, errs := compilePart(s, 0, scope, &t.refs)
	if len(errs) > 0 {
		return nil, errs
	}
	t.parts = []part{p}
	t.refs.normalize()
	return t, nil
}

// Literal returns a template that holds s verbatim, with no expression.
func Literal(s string) *Template {
	if s == "" {
		return &Template{}
	}
	return &Template{Source: s, parts: []part{{lit: s}}}
}

// closing returns the index of the "}}" that ends an expression starting at from,
// skipping string literals and nested braces, or -1.
func closing(s string, from int) int {
	depth := 0
	var quote byte
	for i := from; i < len(s); i++ {
		c := s[i]
		switch {
		case quote != 0:
			if c == '\\' && quote != '`' {
				i++
			} else if c == quote {
				quote = 0
			}
		case c == '"' || c == '\'' || c == '`':
			quote = c
		case c == '{':
			depth++
		case c == '}':
			if depth == 0 && i+1 < len(s) && s[i+1] == '}' {
				return i
			}
			if depth > 0 {
				depth--
			}
		}
	}
	return -1
}

func compilePart(src string, offset int, scope Scope, refs *Refs) (part, []*Error) {
	lead := len(src) - len(strings.TrimLeft(src, " \t\r\n"))
	body := strings.TrimSpace(src)
	if body == "" {
		return part{}, []*Error{{Offset: offset, Message: "empty expression"}}
	}
	var errs []*Error
	add := func(off int, format string, args ...any) {
		errs = append(errs, &Error{Offset: offset + lead + off, Message: fmt.Sprintf(format, args...)})
	}
	found, err := collect(body, scope, refs)
	if err != nil {
		add(err.Offset, "%s", err.Message)
		return part{}, errs
	}
	if found.secret != "" {
		return part{src: body, secret: found.secret}, nil
	}
	if found.secretMisuse >= 0 {
		add(found.secretMisuse, "secrets can only be used whole, as ${{ secrets.NAME }}: the agent puts the value in just before the task starts, so no expression can read it")
		return part{}, errs
	}
	env := types.Map{}
	for _, r := range scope.Roots {
		switch r {
		case RootSecrets:
		case RootItem, RootOutputs:
			env[r] = types.Any
		default:
			env[r] = types.TypeOf(map[string]any{})
		}
	}
	prog, cerr := expr.Compile(body, expr.Env(env))
	if cerr != nil {
		off, msg := locate(body, cerr)
		add(off, "%s", msg)
		return part{}, errs
	}
	return part{src: body, prog: prog}, nil
}

// locate turns an expr-lang error into a byte offset in src and a one-line message.
func locate(src string, err error) (int, string) {
	var fe *file.Error
	if errors.As(err, &fe) {
		return runeOffset(src, fe.From), fe.Message
	}
	msg := err.Error()
	if i := strings.IndexByte(msg, '\n'); i >= 0 {
		msg = msg[:i]
	}
	return 0, msg
}

// runeOffset converts a rune index of s into a byte offset.
func runeOffset(s string, runes int) int {
	n := 0
	for i := range s {
		if n == runes {
			return i
		}
		n++
	}
	return len(s)
}

// IsLiteral reports whether the template holds no expression.
func (t *Template) IsLiteral() bool {
	for _, p := range t.parts {
		if p.prog != nil || p.secret != "" {
			return false
		}
	}
	return true
}

// Refs returns what the template's expressions refer to.
func (t *Template) Refs() Refs { return t.refs }

// Single reports whether the template is exactly one expression, which keeps its
// type when evaluated.
func (t *Template) Single() bool {
	return len(t.parts) == 1 && (t.parts[0].prog != nil || t.parts[0].secret != "")
}

// String returns the template's source.
func (t *Template) String() string { return t.Source }
