package spec

import (
	"bytes"
	"cmp"
	"slices"
	"testing"
	"testing/fstest"
)

// FuzzLoad loads a project made of a fixed dray.yaml and schema, the fuzzed
// pipeline and the fuzzed template. Load must not panic or fail on a readable
// folder; its errors must be sorted; and a pipeline that loads must load again
// from its Sources alone, to the same Hash.
func FuzzLoad(f *testing.F) {
	f.Add([]byte("version: 1\nname: p\ntasks:\n  - name: a\n    uses: templates/t.yaml\n    with: { n: 1 }\n"),
		[]byte("version: 1\ninputs:\n  n: { type: integer }\ntask:\n  run: echo ${{ inputs.n }}\n"))
	f.Fuzz(func(t *testing.T, pipeline, template []byte) {
		fsys := fstest.MapFS{
			ConfigFile:         {Data: []byte(testConfig)},
			"pipelines/p.yaml": {Data: pipeline},
			"templates/t.yaml": {Data: template},
			"schemas/s.json":   {Data: []byte(`{"type": "object", "properties": {"n": {"type": "integer"}}}`)},
		}
		proj, err := Load(fsys)
		if err != nil {
			t.Fatalf("Load: %v", err)
		}
		if !slices.IsSortedFunc(proj.Errors, func(a, b *Error) int {
			return cmp.Or(cmp.Compare(a.File, b.File), cmp.Compare(a.Line, b.Line), cmp.Compare(a.Col, b.Col), cmp.Compare(a.Message, b.Message))
		}) {
			t.Errorf("errors are not sorted:\n%s", proj.Errors)
		}
		for _, e := range proj.Errors {
			if e.Message == "" {
				t.Errorf("%s: empty message", e.Pos)
			}
			if data, ok := fsys[e.File]; ok && e.Line > lineCount(data.Data) {
				t.Errorf("%s: line %d is past the end of the file", e, e.Line)
			}
		}
		for _, p := range proj.Pipelines {
			if len(p.Order()) != len(p.Tasks) {
				t.Errorf("pipeline %s: order has %d tasks, want %d", p.Name, len(p.Order()), len(p.Tasks))
			}
			snap, err := LoadSnapshot(p.Sources, p.Name)
			if err != nil {
				t.Fatalf("pipeline %s loaded, but not from its sources: %v", p.Name, err)
			}
			if snap.Hash != p.Hash {
				t.Errorf("pipeline %s: snapshot hash %s, want %s", p.Name, snap.Hash, p.Hash)
			}
			if got, want := describePipeline(snap), describePipeline(p); got != want {
				t.Errorf("snapshot differs:\n%s\nwant:\n%s", got, want)
			}
		}
	})
}

// lineCount counts lines as YAML does: \r\n, \r and \n each end one.
func lineCount(data []byte) int {
	data = bytes.ReplaceAll(data, []byte("\r\n"), []byte("\n"))
	return bytes.Count(data, []byte("\n")) + bytes.Count(data, []byte("\r")) + 1
}
