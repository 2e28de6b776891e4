package spec

import (
	"math"
	"strconv"
	"strings"

	yaml "go.yaml.in/yaml/v3"
)

// value converts a YAML node into the JSON shape expressions use: objects,
// lists, strings, booleans, null, int and float64. Scalars keep the text they
// were written with where YAML would change it (an unquoted date stays the
// string 2026-01-31). It reports NaN and infinities, and merge or alias
// cycles, as errors at the node and returns ok false.
func (d *decoder) value(n *yaml.Node) (any, bool) {
	return d.valueIn(n, map[*yaml.Node]bool{})
}

func (d *decoder) valueIn(n *yaml.Node, active map[*yaml.Node]bool) (any, bool) {
	if n.Kind == yaml.AliasNode {
		if active[n.Alias] {
			d.errorf(n, "*%s refers to the value it is part of", n.Value)
			return nil, false
		}
		return d.valueIn(n.Alias, active)
	}
	switch n.Kind {
	case yaml.ScalarNode:
		return d.scalarValue(n)
	case yaml.SequenceNode:
		active[n] = true
		defer delete(active, n)
		out := make([]any, 0, len(n.Content))
		ok := true
		for _, e := range n.Content {
			v, good := d.valueIn(e, active)
			ok = ok && good
			out = append(out, v)
		}
		return out, ok
	case yaml.MappingNode:
		active[n] = true
		defer delete(active, n)
		out := map[string]any{}
		ok := true
		for _, f := range d.entriesIn(n, active) {
			v, good := d.valueIn(f.val, active)
			ok = ok && good
			out[f.key.Value] = v
		}
		return out, ok
	case yaml.DocumentNode:
		if len(n.Content) > 0 {
			return d.valueIn(n.Content[0], active)
		}
	}
	return nil, true
}

func (d *decoder) scalarValue(n *yaml.Node) (any, bool) {
	switch n.ShortTag() {
	case "!!null":
		return nil, true
	case "!!bool":
		b, err := strconv.ParseBool(strings.ToLower(n.Value))
		if err != nil {
			// YAML 1.1 forms such as "yes" are strings in YAML 1.2.
			return n.Value, true
		}
		return b, true
	case "!!int":
		var i int64
		if err := n.Decode(&i); err == nil {
			return int(i), true
		}
		d.errorf(n, "the number %s is out of range", n.Value)
		return nil, false
	case "!!float":
		var f float64
		if err := n.Decode(&f); err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
			d.errorf(n, "the number %s cannot be represented in JSON", n.Value)
			return nil, false
		}
		if f == math.Trunc(f) && math.Abs(f) < 1<<53 {
			return int(f), true
		}
		return f, true
	}
	// !!str, !!timestamp, !!binary and custom tags: the text as written.
	return n.Value, true
}
