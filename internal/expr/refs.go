package expr

import (
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/parser"
)

var allRoots = []string{RootParams, RootTasks, RootItem, RootRun, RootEnv, RootSecrets, RootInputs, RootOutputs}

// rootHelp says where a root may be used, for roots that only some places have.
var rootHelp = map[string]string{
	RootItem:    "item is only available in a task with for_each",
	RootInputs:  "inputs are only available inside a template",
	RootOutputs: "outputs are only available in checks",
}

// help says why root cannot be used in the scope, and what can.
func (s Scope) help(root string) string {
	if msg, ok := rootHelp[root]; ok {
		return msg
	}
	where := s.Where
	if where == "" {
		where = "this expression"
	}
	if root == RootParams && s.has(RootInputs) {
		return "params are not available in a template: pass the value in as an input (with: {NAME: ${{ params.NAME }}} in the task that uses it)"
	}
	verb := "are"
	if root == RootRun || root == RootEnv {
		verb = "is"
	}
	return fmt.Sprintf("%s %s not available in %s (it can use %s)", root, verb, where, s.Describe())
}

// TaskFields are the fields of tasks.NAME.
var TaskFields = []string{"outputs", "status"}

type collected struct {
	secret       string // the name, when the whole expression is secrets.NAME
	secretMisuse int    // offset of a use of secrets other than the whole expression, or -1
}

// collect walks the expression's syntax tree, records what it refers to in refs,
// and reports the first use of a root that is out of scope.
func collect(body string, scope Scope, refs *Refs) (collected, *Error) {
	out := collected{secretMisuse: -1}
	tree, err := parser.Parse(body)
	if err != nil {
		off, msg := locate(body, err)
		return out, &Error{Offset: off, Message: msg}
	}
	if name, ok := secretName(tree.Node); ok && scope.has(RootSecrets) {
		out.secret = name
		refs.Secrets = append(refs.Secrets, name)
		refs.Roots = append(refs.Roots, RootSecrets)
		return out, nil
	}
	w := &walker{body: body, scope: scope, refs: refs, out: &out}
	ast.Walk(&tree.Node, w)
	return out, w.err
}

type walker struct {
	body  string
	scope Scope
	refs  *Refs
	out   *collected
	err   *Error
}

func (w *walker) fail(n ast.Node, format string, args ...any) {
	if w.err == nil {
		w.err = &Error{Offset: runeOffset(w.body, n.Location().From), Message: fmt.Sprintf(format, args...)}
	}
}

func (w *walker) Visit(node *ast.Node) {
	switch n := (*node).(type) {
	case *ast.IdentifierNode:
		if !isRoot(n.Value) {
			return
		}
		if !w.scope.has(n.Value) {
			w.fail(n, "%s", w.scope.help(n.Value))
			return
		}
		w.refs.Roots = append(w.refs.Roots, n.Value)
		if n.Value == RootSecrets && w.out.secretMisuse < 0 {
			w.out.secretMisuse = runeOffset(w.body, n.Location().From)
		}
	case *ast.MemberNode:
		w.member(n)
	}
}

// member records root.NAME references. The walker visits children first, so the
// identifier itself has been checked already.
func (w *walker) member(n *ast.MemberNode) {
	root, ok := n.Node.(*ast.IdentifierNode)
	if !ok {
		if inner, ok := n.Node.(*ast.MemberNode); ok {
			if id, ok := inner.Node.(*ast.IdentifierNode); ok && id.Value == RootTasks {
				task, _ := property(inner)
				if field, ok := property(n); ok && task != "" && !contains(TaskFields, field) {
					w.fail(n.Property, "tasks.%s has no field %q: use tasks.%s.outputs or tasks.%s.status", task, field, task, task)
				} else if ok && task != "" {
					w.refs.addTaskField(task, field)
				}
			}
		}
		return
	}
	name, ok := property(n)
	if !ok {
		return
	}
	switch root.Value {
	case RootParams:
		w.refs.Params = append(w.refs.Params, name)
	case RootInputs:
		w.refs.Inputs = append(w.refs.Inputs, name)
	case RootTasks:
		w.refs.addTaskField(name, "")
	}
}

func (r *Refs) addTaskField(task, field string) {
	if r.Tasks == nil {
		r.Tasks = map[string][]string{}
	}
	fields := r.Tasks[task]
	if field != "" && !contains(fields, field) {
		fields = append(fields, field)
	}
	r.Tasks[task] = fields
}

// property returns the constant property name of a member access (a.b or a["b"]).
func property(n *ast.MemberNode) (string, bool) {
	s, ok := n.Property.(*ast.StringNode)
	if !ok {
		return "", false
	}
	return s.Value, true
}

func secretName(n ast.Node) (string, bool) {
	m, ok := n.(*ast.MemberNode)
	if !ok || m.Optional {
		return "", false
	}
	id, ok := m.Node.(*ast.IdentifierNode)
	if !ok || id.Value != RootSecrets {
		return "", false
	}
	return property(m)
}

func isRoot(name string) bool { return contains(allRoots, name) }

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func (r *Refs) normalize() {
	r.Params = uniq(r.Params)
	r.Inputs = uniq(r.Inputs)
	r.Secrets = uniq(r.Secrets)
	r.Roots = uniq(r.Roots)
}

func uniq(s []string) []string {
	if len(s) == 0 {
		return nil
	}
	sort.Strings(s)
	out := s[:1]
	for _, x := range s[1:] {
		if x != out[len(out)-1] {
			out = append(out, x)
		}
	}
	return out
}

// Merge adds other's references to r.
func (r *Refs) Merge(other Refs) {
	r.Params = append(r.Params, other.Params...)
	r.Inputs = append(r.Inputs, other.Inputs...)
	r.Secrets = append(r.Secrets, other.Secrets...)
	r.Roots = append(r.Roots, other.Roots...)
	for task, fields := range other.Tasks {
		r.addTaskField(task, "")
		for _, f := range fields {
			r.addTaskField(task, f)
		}
	}
	r.normalize()
}

// Describe renders a scope's roots for messages ("params, tasks and run").
func (s Scope) Describe() string {
	roots := slices.DeleteFunc(slices.Clone(s.Roots), func(r string) bool { return r == RootSecrets })
	if len(roots) < 2 {
		return strings.Join(roots, "")
	}
	return strings.Join(roots[:len(roots)-1], ", ") + " and " + roots[len(roots)-1]
}
