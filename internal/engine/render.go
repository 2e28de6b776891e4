package engine

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"slices"

	"github.com/dray-dev/dray/internal/expr"
	"github.com/dray-dev/dray/internal/spec"
)

// LogicalDate returns the date a run is for (YYYY-MM-DD): its LogicalDate, or
// the UTC date of its logical time.
func LogicalDate(r *Run) string {
	if r.LogicalDate != "" {
		return r.LogicalDate
	}
	return r.LogicalTime.UTC().Format("2006-01-02")
}

// RunVars are the values of the `run` root of expressions.
func RunVars(r *Run) map[string]any {
	return map[string]any{
		"id":           r.ID,
		"pipeline":     r.Pipeline,
		"logical_date": LogicalDate(r),
		"logical_time": r.LogicalTime.UTC().Format("2006-01-02T15:04:05Z07:00"),
		"trigger":      r.Trigger,
	}
}

// vars returns the variables every expression of the run sees: params, run, env.
func (e *Engine) vars() expr.Vars {
	r := e.v.Run
	env := make(map[string]any, len(r.Env))
	for k, v := range r.Env {
		env[k] = v
	}
	params := r.Params
	if params == nil {
		params = map[string]any{}
	}
	return expr.Vars{expr.RootParams: params, expr.RootRun: RunVars(r), expr.RootEnv: env}
}

// taskVars adds what a task's expressions refer to: the outputs and status of
// its upstream tasks, and its item.
func (e *Engine) taskVars(t *spec.Task, item json.RawMessage) (expr.Vars, error) {
	vars := e.vars()
	tasks := map[string]any{}
	for name := range t.Refs.Tasks {
		up, err := e.task(name)
		if err != nil {
			return nil, err
		}
		outputs, err := e.outputs(up)
		if err != nil {
			return nil, fmt.Errorf("read outputs of %s: %w", name, err)
		}
		tasks[name] = map[string]any{"outputs": outputs, "status": string(up.State)}
	}
	vars[expr.RootTasks] = tasks
	if item != nil {
		v, err := expr.Decode(item)
		if err != nil {
			return nil, fmt.Errorf("decode item: %w", err)
		}
		vars[expr.RootItem] = v
	}
	return vars, nil
}

// outputs returns a task's decoded outputs: the ones of this step if it ended in
// it, else the recorded ones.
func (e *Engine) outputs(t *Task) (any, error) {
	if e.changed[t.Name] && t.Outputs != nil {
		return expr.Decode(t.Outputs)
	}
	return e.v.Data.Outputs(t)
}

// render evaluates what one instance of a task runs.
func (e *Engine) render(t *spec.Task, index int, item json.RawMessage, number int) (*Work, error) {
	r := e.v.Run
	vars, err := e.taskVars(t, item)
	if err != nil {
		return nil, err
	}
	params, err := expr.Marshal(vars[expr.RootParams])
	if err != nil {
		return nil, err
	}
	w := &Work{
		Profile:      t.Executor.Name,
		ExecutorType: t.Executor.Type,
		Options:      t.Executor.Options,
		Timeout:      t.Timeout,
		Item:         item,
		Params:       params,
		Workdir:      t.Body.Workdir,
		Resources: Resources{
			CPU: t.Resources.CPU, Memory: t.Resources.Memory, Region: t.Resources.Region,
			MilliCPU: t.Resources.MilliCPU, MemoryBytes: t.Resources.MemoryBytes,
		},
		Nonce: nonce(r, t.Name, index, number),
	}
	secret := func(name string) (string, error) {
		if !slices.Contains(w.Secrets, name) {
			w.Secrets = append(w.Secrets, name)
		}
		return SecretMarker(w.Nonce, name), nil
	}
	bodyVars := vars
	if t.Uses != nil {
		if bodyVars, err = e.templateVars(t, vars, secret); err != nil {
			return nil, err
		}
	}
	b := t.Body
	if b.Run != nil {
		if w.Run, err = b.Run.Render(bodyVars, secret); err != nil {
			return nil, fmt.Errorf("run: %v", err)
		}
	}
	if b.Image != nil {
		if w.Image, err = b.Image.Render(bodyVars, secret); err != nil {
			return nil, fmt.Errorf("image: %v", err)
		}
	}
	for i, c := range b.Command {
		s, err := c.Render(bodyVars, secret)
		if err != nil {
			return nil, fmt.Errorf("command[%d]: %v", i, err)
		}
		w.Command = append(w.Command, s)
	}
	w.Env = maps.Clone(r.Env)
	if w.Env == nil {
		w.Env = map[string]string{}
	}
	if t.Uses != nil {
		if err := renderEnv(w.Env, b.Env, bodyVars, secret); err != nil {
			return nil, err
		}
	}
	if err := renderEnv(w.Env, t.Env, vars, secret); err != nil {
		return nil, err
	}
	slices.Sort(w.Secrets)
	return w, nil
}

func renderEnv(into map[string]string, env []spec.EnvVar, vars expr.Vars, secret expr.SecretFunc) error {
	for _, ev := range env {
		s, err := ev.Value.Render(vars, secret)
		if err != nil {
			return fmt.Errorf("env %s: %v", ev.Name, err)
		}
		into[ev.Name] = s
	}
	return nil
}

// templateVars evaluates a template use's with arguments into the template's
// inputs, and returns the variables its body sees: inputs, item, run and env.
func (e *Engine) templateVars(t *spec.Task, vars expr.Vars, secret expr.SecretFunc) (expr.Vars, error) {
	tt := t.Uses.Template
	given := map[string]any{}
	for _, a := range t.Uses.With {
		in := tt.Input(a.Name)
		v, err := a.Value.Eval(vars, secret)
		if err != nil {
			return nil, fmt.Errorf("with %s: %v", a.Name, err)
		}
		if s, ok := v.(string); ok && (a.Value.IsLiteral() || !a.Value.Single()) && in.Type != spec.TypeString {
			// A literal or a longer string: parse it by the input's type.
			if v, err = in.Parse(s); err != nil {
				return nil, fmt.Errorf("with %s: %v", a.Name, err)
			}
		}
		given[a.Name] = v
	}
	inputs, err := spec.ResolveParams(tt.Inputs, given, expr.Vars{expr.RootRun: vars[expr.RootRun]})
	if err != nil {
		return nil, fmt.Errorf("template %s: %v", tt.Path, err)
	}
	out := expr.Vars{expr.RootInputs: inputs, expr.RootRun: vars[expr.RootRun], expr.RootEnv: vars[expr.RootEnv]}
	if item, ok := vars[expr.RootItem]; ok {
		out[expr.RootItem] = item
	}
	return out, nil
}

// nonce derives the secret-marker nonce of one attempt from the run's salt.
func nonce(r *Run, task string, index, number int) string {
	m := hmac.New(sha256.New, []byte(r.Salt))
	fmt.Fprintf(m, "%s\x00%s\x00%d\x00%d", r.ID, task, index, number)
	return hex.EncodeToString(m.Sum(nil))[:24]
}
