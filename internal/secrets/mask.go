package secrets

import (
	"cmp"
	"slices"
	"strings"
)

// MinMaskLen is the shortest value a Masker masks. Shorter values would turn
// common words and numbers all over the logs into "***".
const MinMaskLen = 3

// Mask is what a Masker puts in place of a secret.
const Mask = "***"

// Masker hides secret values in text. It is safe for concurrent use; a nil
// *Masker masks nothing.
type Masker struct {
	values []string // longest first
}

// NewMasker returns a Masker for values. A value shorter than MinMaskLen bytes,
// or only white space, is not masked. A value of several lines is masked
// whole and also line by line (each line of at least MinMaskLen bytes that is
// not only white space, without its "\r"), since logs are split into lines.
func NewMasker(values ...string) *Masker {
	seen := map[string]bool{}
	m := &Masker{}
	add := func(v string) {
		if len(v) < MinMaskLen || strings.TrimSpace(v) == "" || seen[v] {
			return
		}
		seen[v] = true
		m.values = append(m.values, v)
	}
	for _, v := range values {
		add(v)
		if strings.ContainsAny(v, "\r\n") {
			for line := range strings.Lines(v) {
				line = strings.TrimRight(line, "\r\n")
				add(line)
			}
		}
	}
	slices.SortFunc(m.values, func(a, b string) int {
		return cmp.Or(cmp.Compare(len(b), len(a)), strings.Compare(a, b))
	})
	return m
}

// Mask returns s with every occurrence of every value replaced by Mask.
// Occurrences that overlap or touch, or that lie inside a longer value, are
// masked together as one "***", so a secret that contains another is masked
// whole and no part of either shows. When nothing matches, s is returned as is, without
// allocating.
func (m *Masker) Mask(s string) string {
	if m == nil || len(s) < MinMaskLen {
		return s
	}
	// The common case: no secret in the line. Find the first match only.
	first := -1
	for i, v := range m.values {
		if strings.Contains(s, v) {
			first = i
			break
		}
	}
	if first < 0 {
		return s
	}

	// Mark every byte that is part of an occurrence of a value. Values before
	// first are not in s.
	covered := make([]bool, len(s))
	for _, v := range m.values[first:] {
		marked := 0 // covered[:marked] is done for v
		for off := 0; ; {
			i := strings.Index(s[off:], v)
			if i < 0 {
				break
			}
			start, end := off+i, off+i+len(v)
			for j := max(start, marked); j < end; j++ {
				covered[j] = true
			}
			marked = end
			off = start + 1 // occurrences may overlap
		}
	}
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); {
		if !covered[i] {
			j := i
			for j < len(s) && !covered[j] {
				j++
			}
			b.WriteString(s[i:j])
			i = j
			continue
		}
		for i < len(s) && covered[i] {
			i++
		}
		b.WriteString(Mask)
	}
	return b.String()
}
