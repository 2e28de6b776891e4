package spec

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
)

// Pos is a position in a project file. Line and Col start at 1; 0 means unknown.
type Pos struct {
	File string `json:"file"`
	Line int    `json:"line"`
	Col  int    `json:"col"`
}

func (p Pos) String() string {
	switch {
	case p.Line == 0:
		return p.File
	case p.Col == 0:
		return fmt.Sprintf("%s:%d", p.File, p.Line)
	}
	return fmt.Sprintf("%s:%d:%d", p.File, p.Line, p.Col)
}

// Error is one problem in a project file.
type Error struct {
	Pos
	Message string `json:"message"`
}

func (e *Error) Error() string { return e.Pos.String() + ": " + e.Message }

// ErrorList is every problem found in a project, sorted by file, line and column.
// Load returns it as its error when there is at least one.
type ErrorList []*Error

func (l ErrorList) Error() string {
	var b strings.Builder
	for i, e := range l {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(e.Error())
	}
	return b.String()
}

// Sort orders the list by file, line, column and message and drops exact repeats.
func (l ErrorList) Sort() ErrorList {
	slices.SortStableFunc(l, func(a, b *Error) int {
		return cmp.Or(
			cmp.Compare(a.File, b.File),
			cmp.Compare(a.Line, b.Line),
			cmp.Compare(a.Col, b.Col),
			cmp.Compare(a.Message, b.Message),
		)
	})
	return slices.CompactFunc(l, func(a, b *Error) bool { return *a == *b })
}

// In returns the errors that are in one of the files.
func (l ErrorList) In(files ...string) ErrorList {
	var out ErrorList
	for _, e := range l {
		if slices.Contains(files, e.File) {
			out = append(out, e)
		}
	}
	return out
}

// Err returns the list as an error, or nil when it is empty.
func (l ErrorList) Err() error {
	if len(l) == 0 {
		return nil
	}
	return l
}
