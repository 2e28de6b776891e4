package spec

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/dray-dev/dray/internal/expr"
	yaml "go.yaml.in/yaml/v3"
)

// Trigger rules: when a task runs, given how its upstream tasks ended.
const (
	TriggerAllSuccess = "all_success"
	TriggerAllDone    = "all_done"
	TriggerAnyFailed  = "any_failed"
	TriggerAllFailed  = "all_failed"
	TriggerNoneFailed = "none_failed"
	TriggerAlways     = "always"
)

var triggers = []string{TriggerAllSuccess, TriggerAllDone, TriggerAnyFailed, TriggerAllFailed, TriggerNoneFailed, TriggerAlways}

// Limits and defaults of task keys.
const (
	MaxForEachItems    = 100_000
	DefaultMaxParallel = 32
	DefaultRetryDelay  = 10 * time.Second
)

// Task is one resolved task of a pipeline.
type Task struct {
	Name        string
	Pos         Pos
	Description string
	Needs       []string
	Trigger     string
	If          *expr.Template // nil: always
	// ForEach is the fan-out expression; ForEachList a literal list instead.
	ForEach     *expr.Template
	ForEachList []any
	MaxParallel int

	// Body is what runs. For a task that uses a template, Body is the
	// template's body (evaluated over inputs) and Uses holds the arguments.
	Body Body
	Uses *Use
	// Env is the task's own env, evaluated over the pipeline's roots; it
	// overrides the pipeline env and, for a template, the template's env.
	Env []EnvVar

	Executor   *Profile
	Resources  Resources
	Labels     []string
	Retries    int
	RetryDelay time.Duration
	Timeout    time.Duration // 0: none
	Pool       string
	Checks     []*Check

	// Refs is everything the task's pipeline-scope expressions refer to.
	Refs expr.Refs

	needsPos []Pos // where each of Needs is written
}

// needPos returns where the i-th need is written, or the task's position.
func (t *Task) needPos(i int) Pos {
	if i < len(t.needsPos) {
		return t.needsPos[i]
	}
	return t.Pos
}

// IsForEach reports whether the task fans out.
func (t *Task) IsForEach() bool { return t.ForEach != nil || t.ForEachList != nil }

// IsContainer reports whether the task runs an image.
func (t *Task) IsContainer() bool { return t.Body.Image != nil }

// Body is what a task runs: a shell line, or an image and its command.
type Body struct {
	Run     *expr.Template
	Image   *expr.Template
	Command []*expr.Template
	Env     []EnvVar
	Workdir string
}

// Use is a task's use of a template.
type Use struct {
	Path     string
	Template *TaskTemplate
	With     []Arg
}

// Arg is one `with` argument of a template use.
type Arg struct {
	Name  string
	Value *expr.Template

	keyPos, valPos Pos
	kind           yaml.Kind // of the YAML value, to describe a literal
}

// Check validates an attempt's outputs: against a JSON Schema file, or with an
// expression over outputs. A failed check fails the attempt unless Warn.
type Check struct {
	Pos    Pos
	Name   string
	Schema string // path in the project
	Expr   *expr.Template
	Warn   bool
	schema *schemaFile
}

// Describe names the check for reasons and logs.
func (c *Check) Describe() string {
	switch {
	case c.Name != "":
		return c.Name
	case c.Schema != "":
		return "schema " + c.Schema
	}
	return strings.TrimSpace(c.Expr.Source)
}

func (d *decoder) checks(n *yaml.Node) []*Check {
	n = resolve(n)
	if n.Kind != yaml.SequenceNode {
		d.errorf(n, "checks must be a list, not %s", kindName(n))
		return nil
	}
	var out []*Check
	for _, item := range n.Content {
		c := &Check{Pos: d.pos(item)}
		d.fields(item, "check", []string{"name", "schema", "expr", "severity"}, func(key string, f field) {
			switch key {
			case "name":
				c.Name, _ = d.str(f.val)
			case "schema":
				c.Schema, _ = d.str(f.val)
				c.Pos = d.pos(f.val)
			case "expr":
				c.Expr = d.condition(f.val, scopeCheck)
			case "severity":
				if s, ok := d.str(f.val); ok {
					switch s {
					case "error":
					case "warn":
						c.Warn = true
					default:
						d.errorf(f.val, "severity must be error or warn, not %q", s)
					}
				}
			}
		})
		if (c.Schema == "") == (c.Expr == nil) && resolve(item).Kind == yaml.MappingNode {
			if c.Schema == "" && !d.has(item, "expr") {
				d.errorf(item, "a check needs schema (a JSON Schema file) or expr (a condition over outputs)")
			} else if c.Schema != "" {
				d.errorf(item, "a check takes schema or expr, not both")
			}
		}
		out = append(out, c)
	}
	return out
}

var (
	nameRE    = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]*$`)
	envNameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
)

// rawTask is a task as decoded, before templates, defaults and the graph are resolved.
type rawTask struct {
	task           *Task
	node           *yaml.Node
	own            settings
	usesPos        Pos
	maxParallelPos Pos
	// exprs are the task's pipeline-scope templates with their positions, for
	// checking what they refer to once every task is known.
	exprs []posTemplate
}

type posTemplate struct {
	pos  Pos
	t    *expr.Template
	what string
	d    *decoder
	node *yaml.Node
}

// at returns the position of the first use of ref (such as "params.day") in
// the template's source, or the template's own position.
func (p posTemplate) at(ref string) Pos {
	if p.node == nil {
		return p.pos
	}
	src := resolve(p.node).Value
	if i := strings.Index(src, ref); i >= 0 {
		return p.d.offsetPos(resolve(p.node), i)
	}
	return p.pos
}

func (l *loader) tasks(d *decoder, n *yaml.Node, p *Pipeline, defaults settings) []*Task {
	n = resolve(n)
	if n.Kind != yaml.SequenceNode {
		d.errorf(n, "tasks must be a list, not %s", kindName(n))
		return nil
	}
	if len(n.Content) == 0 {
		d.errorf(n, "a pipeline needs at least one task")
	}
	p.index = map[string]*Task{}
	var raws []*rawTask
	for _, item := range n.Content {
		rt := l.task(d, item)
		if rt == nil {
			continue
		}
		name := rt.task.Name
		if prev, dup := p.index[name]; dup {
			d.errorf(item, "duplicate task name %q (first at line %d)", name, prev.Pos.Line)
			continue
		}
		p.index[name] = rt.task
		raws = append(raws, rt)
	}
	out := make([]*Task, 0, len(raws))
	for _, rt := range raws {
		l.resolveTask(d, p, rt, defaults)
		out = append(out, rt.task)
	}
	l.checkRefs(d, p, raws)
	return out
}

func (l *loader) task(d *decoder, n *yaml.Node) *rawTask {
	n = resolve(n)
	if n.Kind != yaml.MappingNode {
		d.errorf(n, "a task must be a mapping, not %s", kindName(n))
		return nil
	}
	t := &Task{Pos: d.pos(n), Trigger: TriggerAllSuccess}
	rt := &rawTask{task: t, node: n}
	// The name and whether the task fans out decide the scope of its
	// expressions, so read them first.
	forEach := false
	for _, f := range d.entries(n) {
		switch f.key.Value {
		case "name":
			if s, ok := d.str(f.val); ok && d.checkIdent(f.val, "task", s, "tasks") {
				t.Name = s
				t.Pos = d.pos(f.val)
			}
		case "for_each":
			forEach = true
		}
	}
	if t.Name == "" {
		if !d.has(n, "name") {
			d.errorf(n, "a task needs a name")
		}
		return nil
	}
	scope, condScope := scopeTask, scopeTaskCond
	if forEach {
		scope = scopeTaskItem
	}
	add := func(f field, tmpl *expr.Template, what string) *expr.Template {
		if tmpl != nil {
			rt.exprs = append(rt.exprs, posTemplate{pos: d.pos(f.val), t: tmpl, what: what, d: d, node: f.val})
		}
		return tmpl
	}
	known := slices.Concat(taskOwnKeys, bodyKeys, settingKeys)
	var withNode *yaml.Node
	d.fields(n, "task "+t.Name, known, func(key string, f field) {
		switch key {
		case "name":
		case "description":
			t.Description, _ = d.str(f.val)
		case "needs":
			t.Needs, _ = d.stringList(f.val, "needs")
			if v := resolve(f.val); v.Kind == yaml.SequenceNode {
				for _, e := range v.Content {
					t.needsPos = append(t.needsPos, d.pos(e))
				}
			}
		case "if":
			t.If = add(f, d.condition(f.val, condScope), "if")
		case "trigger":
			if s, ok := d.str(f.val); ok {
				if !slices.Contains(triggers, s) {
					d.errorf(f.val, "unknown trigger %q (triggers: %s)", s, strings.Join(triggers, ", "))
				} else {
					t.Trigger = s
				}
			}
		case "for_each":
			v := resolve(f.val)
			if v.Kind == yaml.SequenceNode {
				list, _ := d.value(v)
				t.ForEachList, _ = list.([]any)
				if t.ForEachList == nil {
					t.ForEachList = []any{}
				}
				if len(t.ForEachList) > MaxForEachItems {
					d.errorf(v, "for_each has %d items, more than the limit of %d", len(t.ForEachList), MaxForEachItems)
				}
			} else if tmpl := d.template(f.val, condScope); tmpl != nil {
				if !tmpl.Single() {
					d.errorf(f.val, "for_each takes a list, or one ${{ }} expression that gives a list")
				}
				t.ForEach = add(f, tmpl, "for_each")
			}
		case "max_parallel":
			if v, ok := d.integer(f.val, 1); ok {
				rt.own.maxParallel = &v
			}
			rt.maxParallelPos = d.pos(f.key)
		case "uses":
			if s, ok := d.str(f.val); ok {
				t.Uses = &Use{Path: s}
				rt.usesPos = d.pos(f.val)
			}
		case "with":
			withNode = f.val
		case "run":
			t.Body.Run = add(f, d.template(f.val, scope), "run")
		case "image":
			t.Body.Image = add(f, d.template(f.val, scope), "image")
		case "command":
			v := resolve(f.val)
			if v.Kind != yaml.SequenceNode {
				d.errorf(v, "command must be a list such as [python, main.py] (for a shell line, use run instead of image and command)")
				return
			}
			t.Body.Command = []*expr.Template{}
			for _, a := range v.Content {
				t.Body.Command = append(t.Body.Command, add(field{val: a}, d.template(a, scope), "command"))
			}
		case "env":
			t.Env = d.env(f.val, scope)
			for _, e := range t.Env {
				rt.exprs = append(rt.exprs, posTemplate{pos: d.pos(f.val), t: e.Value, what: "env " + e.Name, d: d, node: envValue(f.val, e.Name)})
			}
		case "workdir":
			t.Body.Workdir, _ = d.str(f.val)
		default:
			d.setting(&rt.own, key, f)
		}
	})
	if withNode != nil {
		if t.Uses == nil {
			d.errorf(withNode, "with is only for a task that uses a template")
		} else {
			for _, f := range d.keyed(withNode, "with") {
				if tmpl := d.argument(f.val, scope); tmpl != nil {
					t.Uses.With = append(t.Uses.With, Arg{Name: f.key.Value, Value: tmpl, keyPos: d.pos(f.key), valPos: d.pos(f.val), kind: resolve(f.val).Kind})
					rt.exprs = append(rt.exprs, posTemplate{pos: d.pos(f.val), t: tmpl, what: "with " + f.key.Value, d: d, node: f.val})
				}
			}
		}
	}
	if rt.own.maxParallel != nil && !forEach {
		d.errorAt(rt.maxParallelPos, "task %s: max_parallel is only for a task with for_each", t.Name)
	}
	l.checkKind(d, rt)
	return rt
}

// checkKind checks that a task is exactly one of run, image (+ command) or uses.
func (l *loader) checkKind(d *decoder, rt *rawTask) {
	t := rt.task
	var kinds []string
	for _, k := range []string{"run", "image", "uses"} {
		if d.has(rt.node, k) {
			kinds = append(kinds, k)
		}
	}
	hasCommand := d.has(rt.node, "command")
	switch {
	case len(kinds) == 0 && hasCommand:
		d.errorf(rt.node, "task %s has a command but no image: add image, or use run for a shell line", t.Name)
	case len(kinds) == 0:
		d.errorf(rt.node, "task %s needs one of run (a shell line), image and command (a container) or uses (a template)", t.Name)
	case len(kinds) > 1:
		d.errorf(rt.node, "task %s has %s: a task is one of run, image (with command) or uses", t.Name, strings.Join(kinds, " and "))
	case t.Uses != nil && hasCommand:
		d.errorf(rt.node, "task %s uses a template, so it cannot have command (the template says what runs)", t.Name)
	case t.Uses != nil && t.Body.Workdir != "":
		d.errorf(rt.node, "task %s uses a template, so it cannot have workdir (the template says what runs)", t.Name)
	case kinds[0] == "run" && hasCommand:
		d.errorf(rt.node, "task %s has run and command: command goes with image; run is a whole shell line", t.Name)
	}
}

// resolveTask expands the task's template, merges settings and looks up its
// executor and pool.
func (l *loader) resolveTask(d *decoder, p *Pipeline, rt *rawTask, defaults settings) {
	t := rt.task
	s := defaults
	if t.Uses != nil {
		tt := l.template(t.Uses.Path, rt.usesPos)
		t.Uses.Template = tt
		if tt != nil {
			t.Body = tt.Body
			s = tt.settings.over(s)
			l.checkWith(d, t, rt.usesPos)
		}
	}
	s = rt.own.over(s)
	t.Labels = s.labels
	t.Resources = s.resources
	t.Pool = s.pool
	t.Checks = s.checks
	t.Retries = deref(s.retries, 0)
	t.RetryDelay = deref(s.retryDelay, DefaultRetryDelay)
	t.Timeout = deref(s.timeout, 0)
	t.MaxParallel = deref(s.maxParallel, DefaultMaxParallel)

	for _, c := range t.Checks {
		if c.Schema != "" && c.schema == nil {
			c.schema = l.schema(d, c.Schema, c.Pos)
		}
		if c.Expr != nil && c.Expr.Refs().Uses(expr.RootItem) && !t.IsForEach() {
			d.errorAt(c.Pos, "task %s: check %s uses item, so the task needs for_each", t.Name, c.Describe())
		}
	}
	if t.Pool != "" {
		if _, ok := p.Config.Pools[t.Pool]; !ok {
			d.errorAt(s.poolPos, "task %s uses unknown pool %q%s", t.Name, t.Pool, knownList("pools", keys(p.Config.Pools)))
		}
	}
	name := s.executor
	pos := s.executorPos
	if name == "" {
		name = ExecLocal
		if t.IsContainer() {
			name = ExecDocker
		}
	}
	prof, ok := p.Config.Executors[name]
	if !ok {
		hint := nearest(name, p.Config.ProfileNames())
		if hint == "" {
			hint = knownList("executors", p.Config.ProfileNames())
		}
		d.errorAt(pos, "task %s uses unknown executor %q%s", t.Name, name, hint)
		return
	}
	t.Executor = prof
	if r := t.Resources.Region; r != "" && (prof.Type == ExecECS || prof.Type == ExecCloudRun) && !slices.Contains(prof.Regions(), r) {
		d.errorAt(orPos(t.Resources.RegionPos, t.Pos), "task %s: region %s is not one of executor %s's regions (%s): add it under executors.%s.regions in dray.yaml",
			t.Name, r, prof.Name, strings.Join(slices.DeleteFunc(prof.Regions(), func(s string) bool { return s == "" }), ", "), prof.Name)
	}
	if t.Body.Workdir != "" && prof.Type == ExecECS {
		d.errorAt(orPos(pos, t.Pos), "task %s sets workdir, which executor %s cannot honour: ECS cannot override a container's working directory; set workingDirectory in the task definition, or cd in the command", t.Name, prof.Describe())
	}
	if t.IsContainer() && prof.Type == ExecLocal {
		d.errorAt(orPos(pos, t.Pos), "task %s has an image, but executor %s runs local processes: set executor to docker or another container executor", t.Name, prof.Describe())
	}
	if !t.IsContainer() && t.Body.Run != nil && prof.Type == ExecDocker && prof.String("image") == "" {
		d.errorAt(orPos(pos, t.Pos), "task %s runs a shell line on executor %s, which has no image to run it in: add image to that profile in dray.yaml, or make the task image and command", t.Name, prof.Describe())
	}
}

func orPos(p, fallback Pos) Pos {
	if p.Line == 0 {
		return fallback
	}
	return p
}

func deref[T any](p *T, def T) T {
	if p == nil {
		return def
	}
	return *p
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func knownList(what string, names []string) string {
	if len(names) == 0 {
		return fmt.Sprintf(" (no %s are defined in dray.yaml)", what)
	}
	return fmt.Sprintf(" (%s: %s)", what, strings.Join(names, ", "))
}

// argument compiles a `with` value. A string may hold expressions; any other
// YAML value (a number, boolean, list or mapping) is taken as its JSON text and
// parsed by the input's type when the task is queued.
func (d *decoder) argument(n *yaml.Node, scope expr.Scope) *expr.Template {
	v := resolve(n)
	if v.Kind == yaml.ScalarNode && v.Tag == "!!str" {
		return d.template(v, scope)
	}
	if v.Kind == yaml.ScalarNode && v.Tag != "!!null" {
		return expr.Literal(v.Value)
	}
	raw, ok := d.value(v)
	if !ok {
		return nil
	}
	if raw == nil {
		d.want(n, "want a value, got null")
		return nil
	}
	data, err := expr.Marshal(raw)
	if err != nil {
		d.errorf(n, "%v", err)
		return nil
	}
	return expr.Literal(string(data))
}

// envValue returns the value node of one env entry, for error positions.
func envValue(n *yaml.Node, name string) *yaml.Node {
	n = resolve(n)
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == name {
			return n.Content[i+1]
		}
	}
	return nil
}
