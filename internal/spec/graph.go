package spec

import (
	"slices"
	"strings"
)

// checkGraph checks needs: known names, no self-dependency, no cycles.
func (l *loader) checkGraph(d *decoder, p *Pipeline) {
	names := make([]string, 0, len(p.Tasks))
	for _, t := range p.Tasks {
		names = append(names, t.Name)
	}
	for _, t := range p.Tasks {
		seen := map[string]bool{}
		for i, n := range t.Needs {
			switch {
			case n == t.Name:
				d.errorAt(t.needPos(i), "task %s needs itself", t.Name)
			case p.index[n] == nil:
				d.errorAt(t.needPos(i), "task %s needs unknown task %q%s", t.Name, n, nearest(n, names))
			case seen[n]:
				d.errorAt(t.needPos(i), "task %s lists %s twice in needs", t.Name, n)
			}
			seen[n] = true
		}
	}
	for _, cycle := range cycles(p) {
		first := p.index[cycle[0]]
		d.errorAt(first.Pos, "cycle: %s", strings.Join(cycle, " -> "))
	}
}

// cycles returns each cycle of the needs graph once, as a path that starts and
// ends at the task that appears first in the file.
func cycles(p *Pipeline) [][]string {
	const (
		unvisited = iota
		active
		done
	)
	order := map[string]int{}
	for i, t := range p.Tasks {
		order[t.Name] = i
	}
	state := map[string]int{}
	var stack []string
	var found [][]string
	var visit func(name string)
	visit = func(name string) {
		state[name] = active
		stack = append(stack, name)
		for _, n := range p.index[name].Needs {
			if p.index[n] == nil || n == name {
				continue
			}
			switch state[n] {
			case unvisited:
				visit(n)
			case active:
				i := slices.Index(stack, n)
				cycle := slices.Clone(stack[i:])
				// Present it in the direction of the data: upstream first.
				slices.Reverse(cycle)
				found = append(found, rotate(cycle, order))
			}
		}
		stack = stack[:len(stack)-1]
		state[name] = done
	}
	for _, t := range p.Tasks {
		if state[t.Name] == unvisited {
			visit(t.Name)
		}
	}
	return found
}

// rotate starts the cycle at its earliest task and closes it.
func rotate(cycle []string, order map[string]int) []string {
	start := 0
	for i, n := range cycle {
		if order[n] < order[cycle[start]] {
			start = i
		}
	}
	out := append(slices.Clone(cycle[start:]), cycle[:start]...)
	return append(out, out[0])
}

// checkRefs checks what each task's expressions refer to: declared params, and
// tasks that exist and are upstream of it.
func (l *loader) checkRefs(d *decoder, p *Pipeline, raws []*rawTask) {
	names := make([]string, 0, len(raws))
	for _, rt := range raws {
		names = append(names, rt.task.Name)
	}
	for _, rt := range raws {
		t := rt.task
		for _, e := range rt.exprs {
			refs := e.t.Refs()
			t.Refs.Merge(refs)
			for _, name := range refs.Params {
				if !slices.ContainsFunc(p.Params, func(x *Param) bool { return x.Name == name }) {
					d.errorAt(e.at("params."+name), "unknown param %q%s", name, paramList("params", p.Params))
				}
			}
			for _, up := range sortedKeys(refs.Tasks) {
				switch {
				case up == t.Name:
					d.errorAt(e.at("tasks."+up), "task %s refers to its own tasks.%s: a task's outputs exist only after it ends", t.Name, up)
				case p.index[up] == nil:
					d.errorAt(e.at("tasks."+up), "unknown task %q in tasks.%s%s", up, up, nearest(up, names))
				case !p.Upstream(t.Name, up):
					d.errorAt(e.at("tasks."+up), "task %s refers to tasks.%s, which is not upstream of it: add %s to needs", t.Name, up, up)
				}
			}
		}
	}
}

func sortedKeys(m map[string][]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// nearest returns ` (did you mean "x"?)` for a close name, or "".
func nearest(s string, names []string) string {
	best, bestDist := "", max(1, len(s)/3)+1
	for _, n := range names {
		if dist := editDistance(s, n); dist < bestDist && dist < len(s) && n != s {
			best, bestDist = n, dist
		}
	}
	if best == "" {
		return ""
	}
	return ` (did you mean "` + best + `"?)`
}
