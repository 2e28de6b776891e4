package spec

import (
	"errors"
	"io/fs"
	"path"
	"slices"
	"strings"

	"github.com/dray-dev/dray/internal/expr"
	yaml "go.yaml.in/yaml/v3"
)

// TaskTemplate is a reusable task in templates/*.yaml. A task uses it with
// `uses: templates/NAME.yaml` and passes its inputs with `with`.
type TaskTemplate struct {
	Path        string
	Description string
	Inputs      []*Param
	Body        Body
	settings    settings
	refs        expr.Refs // what the body refers to (inputs, item, …)
}

// Input returns the named input, or nil.
func (tt *TaskTemplate) Input(name string) *Param {
	for _, p := range tt.Inputs {
		if p.Name == name {
			return p
		}
	}
	return nil
}

// template loads a template file once per project load.
func (l *loader) template(p string, at Pos) *TaskTemplate {
	clean := path.Clean(strings.TrimPrefix(p, "./"))
	if tt, ok := l.templates[clean]; ok {
		return tt
	}
	if !fs.ValidPath(clean) || strings.HasPrefix(clean, "../") {
		l.errs.add(at, "uses %q: a template path is relative to the project folder, such as templates/publish.yaml", p)
		return nil
	}
	src, err := l.fsys.ReadFile(clean)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			l.errs.add(at, "uses %q: no such template file", p)
		} else {
			l.errs.add(at, "uses %q: %v", p, err)
		}
		l.templates[clean] = nil
		return nil
	}
	tt := l.decodeTemplate(clean, src)
	l.templates[clean] = tt
	return tt
}

func (l *loader) decodeTemplate(file string, src []byte) *TaskTemplate {
	d := newDecoder(file, src, l.errs)
	tt := &TaskTemplate{Path: file}
	root := d.parse(src)
	if root == nil {
		return tt
	}
	hasVersion, hasTask := false, false
	var version int
	d.fields(root, "template", []string{"version", "name", "description", "inputs", "task"}, func(key string, f field) {
		switch key {
		case "version":
			hasVersion = d.version(f.val, &version)
		case "name":
			d.str(f.val)
		case "description":
			tt.Description, _ = d.str(f.val)
		case "inputs":
			tt.Inputs = d.params(f.val, "inputs", scopeRunDefault)
		case "task":
			hasTask = true
			l.templateTask(d, tt, f.val)
		}
	})
	if resolve(root).Kind != yaml.MappingNode {
		return tt
	}
	if !hasVersion {
		d.errorAt(Pos{File: file, Line: 1, Col: 1}, "missing `version: 1` (the file format version)")
	}
	if !hasTask {
		d.errorAt(Pos{File: file, Line: 1, Col: 1}, "a template needs task: what it runs (run, or image and command)")
	}
	return tt
}

func (l *loader) templateTask(d *decoder, tt *TaskTemplate, n *yaml.Node) {
	var refs []posTemplate
	add := func(f field, t *expr.Template) *expr.Template {
		if t != nil {
			refs = append(refs, posTemplate{pos: d.pos(f.val), t: t, d: d, node: f.val})
			tt.refs.Merge(t.Refs())
		}
		return t
	}
	b := &tt.Body
	d.fields(n, "template task", slices.Concat(bodyKeys, settingKeys), func(key string, f field) {
		switch key {
		case "run":
			b.Run = add(f, d.template(f.val, scopeTemplItem))
		case "image":
			b.Image = add(f, d.template(f.val, scopeTemplItem))
		case "command":
			v := resolve(f.val)
			if v.Kind != yaml.SequenceNode {
				d.errorf(v, "command must be a list such as [python, main.py]")
				return
			}
			b.Command = []*expr.Template{}
			for _, a := range v.Content {
				b.Command = append(b.Command, add(field{val: a}, d.template(a, scopeTemplItem)))
			}
		case "env":
			b.Env = d.env(f.val, scopeTemplItem)
			for _, e := range b.Env {
				add(f, e.Value)
			}
		case "workdir":
			b.Workdir, _ = d.str(f.val)
		default:
			d.setting(&tt.settings, key, f)
		}
	})
	hasRun, hasImage, hasCommand := d.has(n, "run"), d.has(n, "image"), d.has(n, "command")
	switch {
	case hasRun && hasImage:
		d.errorf(n, "a template task is run or image (with command), not both")
	case !hasRun && !hasImage:
		d.errorf(n, "a template task needs run (a shell line) or image and command (a container)")
	case hasRun && hasCommand:
		d.errorf(n, "a template task with run cannot have command: command goes with image")
	}
	for _, r := range refs {
		for _, name := range r.t.Refs().Inputs {
			if tt.Input(name) == nil {
				d.errorAt(r.at("inputs."+name), "unknown input %q%s", name, paramList("inputs", tt.Inputs))
			}
		}
	}
}

// checkWith checks a task's with arguments against its template's inputs.
func (l *loader) checkWith(d *decoder, t *Task, at Pos) {
	tt := t.Uses.Template
	given := map[string]bool{}
	for _, a := range t.Uses.With {
		given[a.Name] = true
		in := tt.Input(a.Name)
		if in == nil {
			d.errorAt(orPos(a.keyPos, at), "task %s: template %s has no input %q%s", t.Name, tt.Path, a.Name, paramList("inputs", tt.Inputs))
			continue
		}
		if !a.Value.IsLiteral() {
			continue
		}
		var err error
		if a.kind == yaml.ScalarNode {
			_, err = in.Parse(a.Value.Source)
		} else if v, derr := expr.Decode([]byte(a.Value.Source)); derr == nil {
			// A YAML list or mapping: describe it as one, not as its JSON text.
			_, err = in.Coerce(v)
		}
		if err != nil {
			d.errorAt(orPos(a.valPos, at), "task %s: with %s: %s", t.Name, a.Name, err.(*ParamError).Message)
		}
	}
	for _, in := range tt.Inputs {
		if in.Required && !given[in.Name] {
			d.errorAt(at, "task %s: template %s needs input %s (%s): add it under with", t.Name, tt.Path, in.Name, in.want())
		}
	}
	if tt.refs.Uses(expr.RootItem) && !t.IsForEach() {
		d.errorAt(at, "task %s: template %s uses item, so the task needs for_each", t.Name, tt.Path)
	}
}

func paramList(what string, params []*Param) string {
	if len(params) == 0 {
		owner := "the pipeline"
		if what == "inputs" {
			owner = "the template"
		}
		return " (" + owner + " has no " + what + ")"
	}
	names := make([]string, len(params))
	for i, p := range params {
		names[i] = p.Name
	}
	return " (" + what + ": " + strings.Join(names, ", ") + ")"
}

func (l *ErrorList) add(at Pos, format string, args ...any) {
	d := decoder{file: at.File, errs: l}
	d.errorAt(at, format, args...)
}
