package spec

import (
	"fmt"
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/dray-dev/dray/internal/expr"
	yaml "go.yaml.in/yaml/v3"
)

// decoder turns YAML nodes into spec values strictly: every unknown key, wrong
// type and bad value becomes an Error at the node's position, and decoding goes
// on so that one pass reports every problem of a file.
type decoder struct {
	file  string
	lines []string // the file's lines, to place errors inside block scalars
	errs  *ErrorList
	key   string // the key being decoded, named in type errors
}

func newDecoder(file string, src []byte, errs *ErrorList) *decoder {
	return &decoder{file: file, lines: strings.Split(string(src), "\n"), errs: errs}
}

func (d *decoder) pos(n *yaml.Node) Pos {
	if n == nil {
		return Pos{File: d.file}
	}
	return Pos{File: d.file, Line: n.Line, Col: n.Column}
}

func (d *decoder) errorf(n *yaml.Node, format string, args ...any) {
	d.errorAt(d.pos(n), format, args...)
}

func (d *decoder) errorAt(p Pos, format string, args ...any) {
	*d.errs = append(*d.errs, &Error{Pos: p, Message: fmt.Sprintf(format, args...)})
}

// parse reads a whole file into its document's root node.
func (d *decoder) parse(src []byte) *yaml.Node {
	var doc yaml.Node
	if err := yaml.Unmarshal(src, &doc); err != nil {
		d.yamlError(err)
		return nil
	}
	if doc.Kind == 0 || len(doc.Content) == 0 {
		d.errorAt(Pos{File: d.file, Line: 1, Col: 1}, "the file is empty: it needs at least `version: 1`")
		return nil
	}
	return doc.Content[0]
}

var yamlLine = regexp.MustCompile(`^yaml: (?:line (\d+): )?(.*)$`)

func (d *decoder) yamlError(err error) {
	msg := err.Error()
	if te, ok := err.(*yaml.TypeError); ok && len(te.Errors) > 0 {
		msg = te.Errors[0]
	}
	// yaml.v3 gives a line only, and not always the right one: the column
	// is left out rather than made up.
	p := Pos{File: d.file, Line: 1}
	if m := yamlLine.FindStringSubmatch(msg); m != nil {
		if m[1] != "" {
			p.Line, _ = strconv.Atoi(m[1])
		}
		msg = m[2]
	}
	switch {
	case strings.HasPrefix(msg, "did not find expected ',' or") || strings.HasPrefix(msg, "did not find expected key") ||
		strings.HasPrefix(msg, "did not find expected '-' indicator") || strings.HasPrefix(msg, "did not find expected node content"):
		// Parser errors (not scanner errors) come with a 0-based line.
		p.Line = min(p.Line+1, max(len(d.lines), 1))
	case strings.Contains(msg, "tab character"):
		// The line given is where the token began; the tab is at or after it.
		for l := max(p.Line-1, 0); l < len(d.lines); l++ {
			if indent := d.lines[l][:len(d.lines[l])-len(strings.TrimLeft(d.lines[l], " \t"))]; strings.Contains(indent, "\t") {
				p.Line = l + 1
				break
			}
		}
	}
	d.errorAt(p, "invalid YAML: %s", msg)
}

func resolve(n *yaml.Node) *yaml.Node {
	for n != nil && n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	return n
}

func kindName(n *yaml.Node) string {
	n = resolve(n)
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		switch n.Tag {
		case "!!null":
			return "null"
		case "!!bool":
			return "a boolean"
		case "!!int", "!!float":
			return "a number"
		}
		return fmt.Sprintf("the string %q", clip(n.Value, 30))
	}
	return "nothing"
}

func clip(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

// field is one key of a mapping: its key node and value node.
type field struct {
	key, val *yaml.Node
}

// fields checks that n is a mapping of known keys, each at most once, and calls
// handle for every key in order. YAML merge keys (<<) are expanded; explicit
// keys win over merged ones.
func (d *decoder) fields(n *yaml.Node, what string, known []string, handle func(name string, f field)) bool {
	n = resolve(n)
	if n == nil || n.Kind != yaml.MappingNode {
		if n != nil {
			d.errorf(n, "%s must be a mapping, not %s", what, kindName(n))
		}
		return false
	}
	list := d.entries(n)
	seen := map[string]bool{}
	for _, f := range list {
		name := f.key.Value
		if seen[name] {
			d.errorf(f.key, "duplicate key %q in %s", name, what)
			continue
		}
		seen[name] = true
		if !slices.Contains(known, name) {
			d.errorf(f.key, "unknown key %q in %s%s", name, what, suggest(name, known))
			continue
		}
		outer := d.key
		d.key = name
		handle(name, f)
		d.key = outer
	}
	return true
}

// want prefixes a type error with the key being decoded ("retries: want …").
func (d *decoder) want(n *yaml.Node, format string, args ...any) {
	if d.key != "" {
		format = d.key + ": " + format
	}
	d.errorf(n, format, args...)
}

// entries returns a mapping's key/value pairs with merge keys expanded.
func (d *decoder) entries(n *yaml.Node) []field {
	return d.entriesIn(n, map[*yaml.Node]bool{n: true})
}

// entriesIn expands merges; active holds the mappings being expanded, so a
// merge of a mapping into itself is an error, not an endless loop.
func (d *decoder) entriesIn(n *yaml.Node, active map[*yaml.Node]bool) []field {
	var own, merged []field
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Tag == "!!merge" {
			sources := []*yaml.Node{v}
			if r := resolve(v); r.Kind == yaml.SequenceNode {
				sources = r.Content
			}
			for _, src := range sources {
				s := resolve(src)
				switch {
				case active[s]:
					d.errorf(src, "this merge (<<) brings in the mapping it is part of")
					continue
				case s.Kind != yaml.MappingNode:
					d.errorf(src, "a merge (<<) needs a mapping, not %s", kindName(s))
					continue
				}
				active[s] = true
				merged = append(merged, d.entriesIn(s, active)...)
				delete(active, s)
			}
			continue
		}
		if resolve(k).Kind != yaml.ScalarNode {
			d.errorf(k, "a key must be a plain string, not %s", kindName(k))
			continue
		}
		own = append(own, field{key: k, val: v})
	}
	ownKeys := map[string]bool{}
	for _, f := range own {
		ownKeys[f.key.Value] = true
	}
	out := own
	for _, f := range merged {
		if !ownKeys[f.key.Value] {
			out = append(out, f)
			ownKeys[f.key.Value] = true
		}
	}
	return out
}

// has reports whether a mapping has key, merges included.
func (d *decoder) has(n *yaml.Node, key string) bool {
	n = resolve(n)
	if n.Kind != yaml.MappingNode {
		return false
	}
	quiet := decoder{file: d.file, errs: &ErrorList{}}
	for _, f := range quiet.entries(n) {
		if f.key.Value == key {
			return true
		}
	}
	return false
}

// keyed returns a mapping's entries for maps whose keys are names (env, params,
// executors), reporting duplicates.
func (d *decoder) keyed(n *yaml.Node, what string) []field {
	n = resolve(n)
	if n.Kind != yaml.MappingNode {
		d.errorf(n, "%s must be a mapping, not %s", what, kindName(n))
		return nil
	}
	var out []field
	seen := map[string]bool{}
	for _, f := range d.entries(n) {
		if seen[f.key.Value] {
			d.errorf(f.key, "duplicate key %q in %s", f.key.Value, what)
			continue
		}
		seen[f.key.Value] = true
		out = append(out, f)
	}
	return out
}

func (d *decoder) scalar(n *yaml.Node, want string) (*yaml.Node, bool) {
	n = resolve(n)
	if n.Kind != yaml.ScalarNode || n.Tag == "!!null" {
		d.want(n, "want %s, got %s", want, kindName(n))
		return nil, false
	}
	return n, true
}

// str decodes a string. Numbers are accepted as their text (cpu: 2).
func (d *decoder) str(n *yaml.Node) (string, bool) {
	s, ok := d.scalar(n, "a string")
	if !ok {
		return "", false
	}
	if s.Tag == "!!bool" {
		d.want(n, "want a string, got %s (quote it: \"%s\")", kindName(s), s.Value)
		return "", false
	}
	return s.Value, true
}

func (d *decoder) integer(n *yaml.Node, min int) (int, bool) {
	s, ok := d.scalar(n, "a whole number")
	if !ok {
		return 0, false
	}
	var i int
	if s.Tag != "!!int" || s.Decode(&i) != nil {
		what := kindName(s)
		if s.Tag == "!!int" {
			what = "the out-of-range number " + s.Value
		}
		d.want(n, "want a whole number, got %s", what)
		return 0, false
	}
	if i < min {
		d.want(n, "want a whole number of at least %d, got %d", min, i)
		return 0, false
	}
	return i, true
}

func (d *decoder) boolean(n *yaml.Node) (bool, bool) {
	s, ok := d.scalar(n, "true or false")
	if !ok {
		return false, false
	}
	if s.Tag != "!!bool" {
		d.want(n, "want true or false, got %s", kindName(s))
		return false, false
	}
	b, _ := strconv.ParseBool(strings.ToLower(s.Value))
	return b, true
}

// duration decodes "90s", "15m", "1h30m" or "2d". A bare number is refused, since
// it is not clear whether it means seconds or minutes.
func (d *decoder) duration(n *yaml.Node) (time.Duration, bool) {
	s, ok := d.scalar(n, "a duration such as 30s, 15m or 2h")
	if !ok {
		return 0, false
	}
	v, err := ParseDuration(s.Value)
	if err != nil {
		d.want(n, "%v", err)
		return 0, false
	}
	return v, true
}

// ParseDuration parses Go durations plus a "d" suffix for days. It refuses
// negative values and bare numbers.
func ParseDuration(s string) (time.Duration, error) {
	if strings.HasPrefix(s, "-") {
		return 0, fmt.Errorf("a duration cannot be negative, got %q", s)
	}
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.ParseFloat(days, 64)
		if err == nil && n >= 0 && n < math.MaxInt64/float64(24*time.Hour) {
			return time.Duration(n * float64(24*time.Hour)), nil
		}
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("want a duration such as 30s, 15m or 2h, got %q", s)
	}
	if v < 0 {
		return 0, fmt.Errorf("a duration cannot be negative, got %q", s)
	}
	return v, nil
}

func (d *decoder) stringList(n *yaml.Node, what string) ([]string, bool) {
	n = resolve(n)
	if n.Kind != yaml.SequenceNode {
		d.errorf(n, "%s must be a list, not %s", what, kindName(n))
		return nil, false
	}
	out := make([]string, 0, len(n.Content))
	outer := d.key
	d.key = what
	defer func() { d.key = outer }()
	ok := true
	for _, e := range n.Content {
		s, good := d.str(e)
		ok = ok && good
		out = append(out, s)
	}
	return out, ok
}

// template compiles a string that may hold ${{ }} expressions; errors point at
// the expression inside the scalar.
func (d *decoder) template(n *yaml.Node, scope expr.Scope) *expr.Template {
	return d.compile(n, scope, expr.Parse)
}

// condition compiles a key that always holds an expression, bare or in ${{ }}.
func (d *decoder) condition(n *yaml.Node, scope expr.Scope) *expr.Template {
	return d.compile(n, scope, expr.ParseExpr)
}

func (d *decoder) compile(n *yaml.Node, scope expr.Scope, parse func(string, expr.Scope) (*expr.Template, []*expr.Error)) *expr.Template {
	s, ok := d.str(n)
	if !ok {
		return nil
	}
	t, errs := parse(s, scope)
	for _, e := range errs {
		d.errorAt(d.offsetPos(resolve(n), e.Offset), "%s", e.Message)
	}
	return t
}

// offsetPos finds the file position of a byte offset inside a scalar's value.
// It looks for the text at the offset in the file from the scalar on, so the
// position is right whatever the scalar's style (quotes and escapes, folded
// and indented blocks, a string spread over lines); columns count characters,
// as YAML does.
func (d *decoder) offsetPos(n *yaml.Node, off int) Pos {
	v := n.Value
	off = min(max(off, 0), len(v))
	needle := v[off:]
	if i := strings.IndexByte(needle, '\n'); i >= 0 {
		needle = needle[:i]
	}
	if len(needle) > 24 {
		needle = needle[:24]
		for !utf8.ValidString(needle) {
			needle = needle[:len(needle)-1]
		}
	}
	if strings.TrimSpace(needle) != "" {
		skip := strings.Count(v[:off], needle)
		for l := n.Line - 1; l >= 0 && l < len(d.lines); l++ {
			text, start := d.lines[l], 0
			if l == n.Line-1 {
				start = runeIndex(text, n.Column-1)
			}
			for {
				i := strings.Index(text[start:], needle)
				if i < 0 {
					break
				}
				if skip == 0 {
					return Pos{File: d.file, Line: l + 1, Col: utf8.RuneCountInString(text[:start+i]) + 1}
				}
				skip--
				start += i + len(needle)
			}
		}
	}
	return d.pos(n)
}

// runeIndex returns the byte index of the n-th character of s.
func runeIndex(s string, n int) int {
	for i := range s {
		if n == 0 {
			return i
		}
		n--
	}
	return len(s)
}

// suggest returns ` (did you mean "x"?)` for the known key nearest to s, or
// lists the known keys.
func suggest(s string, known []string) string {
	if n := nearest(s, known); n != "" {
		return n
	}
	return fmt.Sprintf(" (known keys: %s)", strings.Join(known, ", "))
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

var identRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// checkIdent reports a name that cannot be used in expressions as root.NAME.
func (d *decoder) checkIdent(n *yaml.Node, kind, name, root string) bool {
	if identRE.MatchString(name) {
		return true
	}
	d.errorf(n, "%s name %q: use letters, digits and _, starting with a letter (such as %s): names are used in expressions as %s.NAME", kind, name, identLike(name), root)
	return false
}

// identLike turns a name into one that expressions accept, for suggestions.
func identLike(name string) string {
	var b strings.Builder
	for _, r := range name {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r == '_', r >= '0' && r <= '9' && b.Len() > 0:
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
	}
	return b.String()
}
