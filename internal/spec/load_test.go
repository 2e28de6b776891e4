package spec

import (
	"cmp"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"testing/fstest"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/dray-dev/dray/internal/expr"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

// TestLoadGolden loads every project under testdata/projects and compares
// Project.Errors, as ErrorList.Error prints them, with the project's
// errors.golden. A case named ok_* must load without errors; every other case
// must have at least one, so that -update cannot bless a loader that stopped
// finding them.
func TestLoadGolden(t *testing.T) {
	dirs, err := filepath.Glob(filepath.Join("testdata", "projects", "*"))
	if err != nil {
		t.Fatal(err)
	}
	if len(dirs) == 0 {
		t.Fatal("no projects under testdata/projects")
	}
	for _, dir := range dirs {
		name := filepath.Base(dir)
		t.Run(name, func(t *testing.T) {
			fsys := os.DirFS(dir)
			proj, err := Load(fsys)
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			got := ""
			if len(proj.Errors) > 0 {
				got = proj.Errors.Error() + "\n"
			}
			golden := filepath.Join(dir, "errors.golden")
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test ./internal/spec -run TestLoadGolden -update)", err)
			}
			if got != string(want) {
				wantLines := strings.Split(strings.TrimSuffix(string(want), "\n"), "\n")
				var unexpected ErrorList
				for _, e := range proj.Errors {
					if !slices.Contains(wantLines, e.Error()) {
						unexpected = append(unexpected, e)
					}
				}
				t.Errorf("errors differ from %s (- want, + got):\n%s\nunexpected errors in context:\n%s(once the output is checked by hand, -update rewrites the golden file)",
					golden, lineDiff(string(want), got), annotate(fsys, unexpected))
			}
			if ok := strings.HasPrefix(name, "ok_"); ok != (len(proj.Errors) == 0) {
				t.Errorf("case %s: %d errors; a case named ok_* must have none and any other case some", name, len(proj.Errors))
			}
			checkErrorList(t, fsys, proj.Errors)
		})
	}
}

// checkErrorList checks what must hold for every error list: sorted, no exact
// repeats, one line a message, and every position inside its file, on a
// character that is not a space.
func checkErrorList(t *testing.T, fsys fs.FS, errs ErrorList) {
	t.Helper()
	if !slices.IsSortedFunc(errs, func(a, b *Error) int {
		return cmp.Or(cmp.Compare(a.File, b.File), cmp.Compare(a.Line, b.Line), cmp.Compare(a.Col, b.Col), cmp.Compare(a.Message, b.Message))
	}) {
		t.Errorf("errors are not sorted:\n%s", errs)
	}
	for i, e := range errs {
		if i > 0 && *errs[i-1] == *e {
			t.Errorf("error reported twice: %s", e)
		}
		if e.Message == "" || strings.Contains(e.Message, "\n") {
			t.Errorf("message is empty or has more than one line: %q", e.Error())
		}
		src, err := fs.ReadFile(fsys, e.File)
		if err != nil {
			if e.Line != 0 {
				t.Errorf("%s: points into a file that cannot be read: %v", e, err)
			}
			continue
		}
		lines := strings.Split(string(src), "\n")
		if e.Line < 1 || e.Line > len(lines) {
			t.Errorf("%s: line %d is outside the file (%d lines)", e, e.Line, len(lines))
			continue
		}
		line := lines[e.Line-1]
		n := utf8.RuneCountInString(line)
		if e.Col == 0 && strings.Contains(e.Message, "invalid YAML") {
			continue // yaml.v3 gives no column for a syntax error
		}
		if e.Col < 1 || e.Col > n+1 {
			t.Errorf("%s: column %d is outside line %d (%d characters: %q)", e, e.Col, e.Line, n, line)
			continue
		}
		if e.Col <= n {
			if r := []rune(line)[e.Col-1]; unicode.IsSpace(r) {
				t.Errorf("%s: points at white space: %q", e, line)
			}
		}
	}
}

// annotate prints each error under the source line it points at, with a caret
// at its column (counted in characters, as YAML counts them).
func annotate(fsys fs.FS, errs ErrorList) string {
	var b strings.Builder
	for _, e := range errs {
		fmt.Fprintf(&b, "%s\n", e)
		src, err := fs.ReadFile(fsys, e.File)
		if err != nil || e.Line < 1 {
			continue
		}
		lines := strings.Split(string(src), "\n")
		if e.Line > len(lines) {
			continue
		}
		line := strings.ReplaceAll(lines[e.Line-1], "\t", "→")
		fmt.Fprintf(&b, "    | %s\n", line)
		if e.Col > 0 {
			fmt.Fprintf(&b, "    | %s^\n", strings.Repeat(" ", e.Col-1))
		}
	}
	return b.String()
}

// lineDiff lists the lines only in want (-) and only in got (+).
func lineDiff(want, got string) string {
	w := strings.Split(strings.TrimSuffix(want, "\n"), "\n")
	g := strings.Split(strings.TrimSuffix(got, "\n"), "\n")
	var b strings.Builder
	for _, l := range w {
		if l != "" && !slices.Contains(g, l) {
			fmt.Fprintf(&b, "- %s\n", l)
		}
	}
	for _, l := range g {
		if l != "" && !slices.Contains(w, l) {
			fmt.Fprintf(&b, "+ %s\n", l)
		}
	}
	if b.Len() == 0 {
		return "(the same lines in another order)\n"
	}
	return b.String()
}

// errorFiles returns the files an error list points into.
func errorFiles(errs ErrorList) []string {
	var files []string
	for _, e := range errs {
		if !slices.Contains(files, e.File) {
			files = append(files, e.File)
		}
	}
	slices.Sort(files)
	return files
}

func asErrorList(t *testing.T, err error) ErrorList {
	t.Helper()
	var list ErrorList
	if !errors.As(err, &list) {
		t.Fatalf("error %v (%T) is not an ErrorList", err, err)
	}
	return list
}

const testConfig = "version: 1\nproject: test\nexecutors:\n  fargate: { type: ecs, cluster: data, task_definition: etl }\npools:\n  db: { slots: 2 }\n"

// mapFS builds a project from file contents; dray.yaml is testConfig unless given.
func mapFS(files map[string]string) fstest.MapFS {
	fsys := fstest.MapFS{ConfigFile: {Data: []byte(testConfig)}}
	for name, src := range files {
		if src == "" {
			delete(fsys, name)
			continue
		}
		fsys[name] = &fstest.MapFile{Data: []byte(src)}
	}
	return fsys
}

func mustLoad(t *testing.T, fsys fs.FS) *Project {
	t.Helper()
	proj, err := Load(fsys)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	return proj
}

func mustPipeline(t *testing.T, proj *Project, name string) *Pipeline {
	t.Helper()
	p, err := proj.Pipeline(name)
	if err != nil {
		t.Fatalf("Pipeline(%q): %v", name, err)
	}
	return p
}

func names(tasks []*Task) []string {
	out := make([]string, len(tasks))
	for i, t := range tasks {
		out[i] = t.Name
	}
	return out
}

// TestLoadExample checks that DESIGN.md's example project loads as the design
// describes it: defaults, template settings and task settings in that order,
// profiles looked up, expressions compiled, schema checks ready.
func TestLoadExample(t *testing.T) {
	proj := mustLoad(t, os.DirFS("testdata/projects/ok_example"))
	if len(proj.Errors) > 0 {
		t.Fatalf("errors:\n%s", proj.Errors)
	}
	cfg := proj.Config
	if got := cfg.ProfileNames(); !slices.Equal(got, []string{"cloudrun", "docker", "fargate", "k8s", "local"}) {
		t.Errorf("profiles = %v", got)
	}
	fargate := cfg.Executors["fargate"]
	if fargate.Type != ExecECS || fargate.String("task_definition") != "etl" || fargate.Options["assign_public_ip"] != false ||
		!slices.Equal(fargate.Options["subnets"].([]string), []string{"subnet-0abc"}) {
		t.Errorf("fargate = %+v", fargate)
	}
	if cfg.Executors["k8s"].Type != ExecKubernetes || cfg.Executors["cloudrun"].String("job") != "etl" {
		t.Errorf("k8s = %+v, cloudrun = %+v", cfg.Executors["k8s"], cfg.Executors["cloudrun"])
	}
	if cfg.Storage != "file://.dray/storage" || cfg.Project != "games" {
		t.Errorf("config = %+v", cfg)
	}

	if len(proj.Pipelines) != 1 {
		t.Fatalf("pipelines = %d, want 1", len(proj.Pipelines))
	}
	p := mustPipeline(t, proj, "leaderboard")
	if got := names(p.Tasks); !slices.Equal(got, []string{"extract", "competitions", "score", "publish"}) {
		t.Errorf("tasks = %v", got)
	}
	if got := names(p.Order()); !slices.Equal(got, []string{"extract", "competitions", "score", "publish"}) {
		t.Errorf("order = %v", got)
	}
	if !p.Upstream("publish", "extract") || p.Upstream("extract", "publish") || !slices.Equal(p.Downstream("score"), []string{"publish"}) {
		t.Errorf("graph: Upstream(publish, extract) = %v, Upstream(extract, publish) = %v, Downstream(score) = %v",
			p.Upstream("publish", "extract"), p.Upstream("extract", "publish"), p.Downstream("score"))
	}

	s := p.Schedule
	if s == nil || s.Timezone != "Europe/Berlin" || s.Catchup {
		t.Fatalf("schedule = %+v", s)
	}
	// 02:00 in Berlin is 01:00 UTC in winter.
	if got, want := s.Next(time.Date(2026, 1, 10, 12, 0, 0, 0, time.UTC)), time.Date(2026, 1, 11, 1, 0, 0, 0, time.UTC); !got.Equal(want) {
		t.Errorf("Next = %v, want %v", got, want)
	}

	got, err := ResolveParams(p.Params, nil, expr.Vars{"run": map[string]any{"logical_date": "2026-11-23"}})
	if err != nil {
		t.Fatal(err)
	}
	if want := map[string]any{"day": "2026-11-23", "limit": 10}; !reflect.DeepEqual(got, want) {
		t.Errorf("params = %v, want %v", got, want)
	}

	extract := p.Task("extract")
	if extract.Executor.Name != ExecLocal || extract.Retries != 2 || extract.RetryDelay != 10*time.Second || extract.Timeout != 15*time.Minute {
		t.Errorf("extract: executor %s, retries %d, retry_delay %v, timeout %v", extract.Executor.Name, extract.Retries, extract.RetryDelay, extract.Timeout)
	}
	if !slices.Equal(extract.Refs.Params, []string{"day"}) {
		t.Errorf("extract refs = %+v", extract.Refs)
	}
	line, err := extract.Body.Run.Render(expr.Vars{"params": map[string]any{"day": "2026-11-23"}}, nil)
	if err != nil || line != `./scripts/extract.sh "2026-11-23"` {
		t.Errorf("extract run = %q, %v", line, err)
	}

	comp := p.Task("competitions")
	if !comp.IsContainer() || comp.Executor.Name != "fargate" || comp.Resources.MilliCPU != 500 || comp.Resources.MemoryBytes != 1<<30 {
		t.Errorf("competitions = executor %s, resources %+v", comp.Executor.Name, comp.Resources)
	}

	score := p.Task("score")
	if !score.IsForEach() || score.ForEach == nil || !score.ForEach.Single() || score.MaxParallel != 8 {
		t.Errorf("score: for_each %v, max_parallel %d", score.ForEach, score.MaxParallel)
	}
	items, err := score.ForEach.Eval(expr.Vars{"tasks": map[string]any{"competitions": map[string]any{"outputs": map[string]any{"ids": []any{"a", "b"}}}}}, nil)
	if err != nil || !reflect.DeepEqual(items, []any{"a", "b"}) {
		t.Errorf("score for_each = %v, %v", items, err)
	}
	if want := (Resources{CPU: "2", Memory: "8Gi", Region: "eu-west-1", RegionPos: score.Resources.RegionPos, MilliCPU: 2000, MemoryBytes: 8 << 30}); score.Resources != want || want.RegionPos.Line == 0 {
		t.Errorf("score resources = %+v, want %+v", score.Resources, want)
	}
	if len(score.Checks) != 2 {
		t.Fatalf("score checks = %d, want 2", len(score.Checks))
	}
	schema, cond := score.Checks[0], score.Checks[1]
	if err := schema.ValidateSchema([]byte(`{"rows": 3}`)); err != nil {
		t.Errorf("schema check of good outputs: %v", err)
	}
	if err := schema.ValidateSchema([]byte(`{"rows": -1}`)); err == nil || !strings.Contains(err.Error(), "/rows") {
		t.Errorf("schema check of rows -1 = %v, want an error at /rows", err)
	}
	if ok, err := cond.Expr.EvalBool(expr.Vars{"outputs": map[string]any{"rows": 0}}); err != nil || ok {
		t.Errorf("check %s over rows 0 = %v, %v; want false", cond.Describe(), ok, err)
	}

	pub := p.Task("publish")
	if pub.Uses == nil || pub.Uses.Template == nil || pub.Uses.Template.Path != "templates/publish.yaml" || pub.Body.Run == nil {
		t.Fatalf("publish uses = %+v", pub.Uses)
	}
	// The template's retries (1) win over the pipeline's defaults (2).
	if pub.Retries != 1 || pub.Timeout != 15*time.Minute || pub.Executor.Name != ExecLocal {
		t.Errorf("publish: retries %d, timeout %v, executor %s", pub.Retries, pub.Timeout, pub.Executor.Name)
	}
	if ok, err := pub.If.EvalBool(expr.Vars{"params": map[string]any{"limit": 0}}); err != nil || ok {
		t.Errorf("publish if with limit 0 = %v, %v", ok, err)
	}
	if len(pub.Uses.With) != 1 || pub.Uses.With[0].Name != "top" || pub.Uses.With[0].Value.Source != "${{ params.limit }}" {
		t.Errorf("publish with = %+v", pub.Uses.With)
	}

	if got := slices.Sorted(maps.Keys(p.Sources)); !slices.Equal(got, []string{"dray.yaml", "pipelines/leaderboard.yaml", "schemas/score.json", "templates/publish.yaml"}) {
		t.Errorf("sources = %v", got)
	}
	if len(p.Hash) != 32 {
		t.Errorf("hash = %q", p.Hash)
	}
}

// TestBrokenPipelineIsolated checks that one pipeline's errors (and its
// template's) neither stop another pipeline from loading nor show up in its
// errors.
func TestBrokenPipelineIsolated(t *testing.T) {
	proj := mustLoad(t, mapFS(map[string]string{
		"pipelines/good.yaml":   "version: 1\ntasks:\n  - name: a\n    uses: templates/ok.yaml\n",
		"pipelines/bad.yaml":    "version: 1\ntasks:\n  - name: a\n    run: echo ${{ params.x }}\n  - name: b\n    uses: templates/broken.yaml\n",
		"pipelines/worse.yaml":  "version: 1\nname: worse\ncolour: red\ntasks: []\n",
		"templates/ok.yaml":     "version: 1\ntask:\n  run: echo ok\n",
		"templates/broken.yaml": "version: 1\ntask:\n  run: echo ${{ inputs.nope }}\n",
		"templates/unused.yaml": "version: 1\nfoo: 1\n",
	}))
	var loaded []string
	for _, p := range proj.Pipelines {
		loaded = append(loaded, p.Name)
	}
	if !slices.Equal(loaded, []string{"good"}) {
		t.Fatalf("loaded pipelines = %v, want [good]; errors:\n%s", loaded, proj.Errors)
	}
	if want := []string{"pipelines/bad.yaml", "pipelines/worse.yaml", "templates/broken.yaml", "templates/unused.yaml"}; !slices.Equal(errorFiles(proj.Errors), want) {
		t.Errorf("Project.Errors are in %v, want %v:\n%s", errorFiles(proj.Errors), want, proj.Errors)
	}
	mustPipeline(t, proj, "good")

	_, err := proj.Pipeline("bad")
	bad := asErrorList(t, err)
	if want := []string{"pipelines/bad.yaml", "templates/broken.yaml"}; !slices.Equal(errorFiles(bad), want) {
		t.Errorf("Pipeline(bad) errors are in %v, want %v:\n%s", errorFiles(bad), want, bad)
	}
	if len(bad) != 2 {
		t.Errorf("Pipeline(bad) = %d errors, want 2:\n%s", len(bad), bad)
	}
	_, err = proj.Pipeline("worse")
	if worse := asErrorList(t, err); !slices.Equal(errorFiles(worse), []string{"pipelines/worse.yaml"}) {
		t.Errorf("Pipeline(worse) errors:\n%s", worse)
	}

	_, err = proj.Pipeline("nope")
	var np *NoPipelineError
	if !errors.As(err, &np) || !slices.Equal(np.Known, []string{"bad", "good", "worse"}) {
		t.Errorf("Pipeline(nope) = %v, want a NoPipelineError that knows bad, good, worse", err)
	}
}

// TestBrokenConfig checks that an error in dray.yaml is an error of every
// pipeline, since every pipeline is built on it.
func TestBrokenConfig(t *testing.T) {
	proj := mustLoad(t, mapFS(map[string]string{
		ConfigFile:         "version: 1\nexecutors:\n  x: { type: nope }\n",
		"pipelines/a.yaml": "version: 1\ntasks:\n  - name: a\n    run: echo\n",
	}))
	if len(proj.Pipelines) != 0 {
		t.Errorf("%d pipelines loaded, want none", len(proj.Pipelines))
	}
	_, err := proj.Pipeline("a")
	if list := asErrorList(t, err); !slices.Equal(errorFiles(list), []string{ConfigFile}) {
		t.Errorf("Pipeline(a) = %v, want the dray.yaml error", list)
	}
	// A name that is no pipeline at all also reports the broken dray.yaml.
	_, err = proj.Pipeline("b")
	if list := asErrorList(t, err); len(list) != 1 {
		t.Errorf("Pipeline(b) = %v, want the dray.yaml error", list)
	}
}

// describePipeline renders what a loaded pipeline is made of, to compare two loads.
func describePipeline(p *Pipeline) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s %s params:", p.Name, p.File, p.Hash)
	for _, x := range p.Params {
		fmt.Fprintf(&b, " %s/%s/%v/%v", x.Name, x.Type, x.DefaultValue, x.Default)
	}
	for _, t := range p.Order() {
		fmt.Fprintf(&b, "\ntask %s needs %v trigger %s executor %s retries %d delay %v timeout %v pool %q labels %v resources %+v max_parallel %d",
			t.Name, t.Needs, t.Trigger, t.Executor.Name, t.Retries, t.RetryDelay, t.Timeout, t.Pool, t.Labels, t.Resources, t.MaxParallel)
		fmt.Fprintf(&b, " if %v for_each %v/%v run %v image %v command %v uses %v checks %d refs %+v",
			t.If, t.ForEach, t.ForEachList, t.Body.Run, t.Body.Image, t.Body.Command, t.Uses != nil, len(t.Checks), t.Refs)
	}
	return b.String()
}

func TestLoadSnapshot(t *testing.T) {
	proj := mustLoad(t, os.DirFS("testdata/projects/ok_example"))
	p := mustPipeline(t, proj, "leaderboard")
	snap, err := LoadSnapshot(p.Sources, p.Name)
	if err != nil {
		t.Fatalf("LoadSnapshot: %v", err)
	}
	if snap.Hash != p.Hash {
		t.Errorf("snapshot hash %s, want %s", snap.Hash, p.Hash)
	}
	if !reflect.DeepEqual(snap.Sources, p.Sources) {
		t.Errorf("snapshot sources = %v, want %v", slices.Sorted(maps.Keys(snap.Sources)), slices.Sorted(maps.Keys(p.Sources)))
	}
	if got, want := describePipeline(snap), describePipeline(p); got != want {
		t.Errorf("snapshot differs:\n%s\nwant:\n%s", got, want)
	}
	// A snapshot of a name it does not hold is an error, not a panic.
	if _, err := LoadSnapshot(p.Sources, "other"); err == nil {
		t.Error("LoadSnapshot of an unknown name: no error")
	}
}

// TestHashChanges checks that a pipeline's Hash changes with every file it is
// built from, and only with those.
func TestHashChanges(t *testing.T) {
	base := map[string]string{
		"pipelines/a.yaml":   "version: 1\ntasks:\n  - name: a\n    uses: templates/t.yaml\n    checks: [{schema: schemas/s.json}]\n",
		"pipelines/b.yaml":   "version: 1\ntasks:\n  - name: b\n    run: echo b\n",
		"templates/t.yaml":   "version: 1\ntask:\n  run: echo t\n",
		"templates/u.yaml":   "version: 1\ntask:\n  run: echo u\n",
		"schemas/s.json":     `{"type": "object"}`,
		"schemas/other.json": `{"type": "array"}`,
		"scripts/run.sh":     "echo\n",
	}
	hash := func(t *testing.T, change map[string]string) string {
		files := maps.Clone(base)
		maps.Copy(files, change)
		proj := mustLoad(t, mapFS(files))
		return mustPipeline(t, proj, "a").Hash
	}
	h0 := hash(t, nil)
	tests := []struct {
		file, src string
		changes   bool
	}{
		{"templates/t.yaml", "version: 1\ntask:\n  run: echo T\n", true},
		{"pipelines/a.yaml", "version: 1\ntasks:\n  - name: a\n    uses: templates/t.yaml\n    checks: [{schema: schemas/s.json}]\n    retries: 1\n", true},
		{"schemas/s.json", `{"type": "object", "required": ["n"]}`, true},
		{ConfigFile, testConfig + "storage: file://x\n", true},
		{"templates/u.yaml", "version: 1\ntask:\n  run: echo U\n", false},
		{"pipelines/b.yaml", "version: 1\ntasks:\n  - name: b\n    run: echo B\n", false},
		{"schemas/other.json", `{"type": "string"}`, false},
		{"scripts/run.sh", "echo changed\n", false},
	}
	for _, tc := range tests {
		t.Run(tc.file, func(t *testing.T) {
			h := hash(t, map[string]string{tc.file: tc.src})
			if (h != h0) != tc.changes {
				t.Errorf("hash after changing %s: %s, before %s; want changed = %v", tc.file, h, h0, tc.changes)
			}
		})
	}
}

// TestAnchorsAndMergeKeys checks that YAML anchors, aliases and merge keys
// work in a pipeline, and that explicit keys win over merged ones.
func TestAnchorsAndMergeKeys(t *testing.T) {
	src := `version: 1
name: anchors
defaults: &defaults { retries: 3, timeout: 5m }
tasks:
  - &base
    name: a
    image: alpine
    command: [echo, a]
    executor: docker
    resources: &res { cpu: "1", memory: 1Gi }
    env: &env { A: "1" }
  - <<: *base
    name: b
    image: alpine
    needs: [a]
    command: [echo, b]
  - name: c
    needs: &up [a, b]
    run: echo c
    resources: *res
    env: { <<: *env, B: "2" }
  - <<: [{ retries: 7, run: echo x }, *defaults]
    run: echo d
    name: d
    needs: *up
    retry_delay: 1m
`
	proj := mustLoad(t, mapFS(map[string]string{"pipelines/anchors.yaml": src}))
	if len(proj.Errors) > 0 {
		t.Fatalf("errors:\n%s\nin context:\n%s", proj.Errors, annotate(mapFS(map[string]string{"pipelines/anchors.yaml": src}), proj.Errors))
	}
	p := mustPipeline(t, proj, "anchors")
	b := p.Task("b")
	if b.Body.Image == nil || b.Body.Image.Source != "alpine" || len(b.Body.Command) != 2 || b.Body.Command[1].Source != "b" ||
		!slices.Equal(b.Needs, []string{"a"}) || b.Executor.Name != ExecDocker || b.Resources.MilliCPU != 1000 {
		t.Errorf("b = image %v command %v needs %v executor %s resources %+v", b.Body.Image, b.Body.Command, b.Needs, b.Executor.Name, b.Resources)
	}
	if len(b.Env) != 1 || b.Env[0].Name != "A" {
		t.Errorf("b env = %+v", b.Env)
	}
	c := p.Task("c")
	if c.Resources.MemoryBytes != 1<<30 || len(c.Env) != 2 || c.Env[0].Name != "A" || c.Env[1].Name != "B" {
		t.Errorf("c = resources %+v env %+v", c.Resources, c.Env)
	}
	d := p.Task("d")
	if !slices.Equal(d.Needs, []string{"a", "b"}) || d.Retries != 7 || d.Timeout != 5*time.Minute || d.RetryDelay != time.Minute || d.Body.Run == nil {
		t.Errorf("d = needs %v retries %d timeout %v retry_delay %v", d.Needs, d.Retries, d.Timeout, d.RetryDelay)
	}
	if a := p.Task("a"); a.Retries != 3 || a.Timeout != 5*time.Minute {
		t.Errorf("a = retries %d timeout %v, want the defaults 3 and 5m", a.Retries, a.Timeout)
	}
}

// TestMergeKeyBody checks that what a task runs may come from a merge key,
// like any other key.
func TestMergeKeyBody(t *testing.T) {
	tests := []struct {
		name, tasks string
	}{
		{"run", "  - &a { name: a, run: echo a }\n  - { <<: *a, name: b }\n"},
		{"image and command", "  - &a { name: a, image: alpine, command: [echo], executor: docker }\n  - { <<: *a, name: b }\n"},
		{"command", "  - &a { name: a, image: alpine, command: [echo], executor: docker }\n  - { <<: *a, name: b, command: [echo, b] }\n"},
		{"uses", "  - &a { name: a, uses: templates/t.yaml }\n  - { <<: *a, name: b }\n"},
		{"name", "  - { <<: { name: a }, run: echo a }\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fsys := mapFS(map[string]string{
				"pipelines/p.yaml": "version: 1\ntasks:\n" + tc.tasks,
				"templates/t.yaml": "version: 1\ntask:\n  run: echo t\n",
			})
			proj := mustLoad(t, fsys)
			if len(proj.Errors) > 0 {
				t.Fatalf("errors:\n%s", annotate(fsys, proj.Errors))
			}
			p := mustPipeline(t, proj, "p")
			last := p.Tasks[len(p.Tasks)-1]
			if last.Body.Run == nil && last.Body.Image == nil {
				t.Errorf("task %s runs nothing", last.Name)
			}
		})
	}
}

// TestNonJSONNumbers checks that values JSON cannot carry (YAML's .nan and
// .inf) are load errors where they are written, not failures when a run
// records its params or items.
func TestNonJSONNumbers(t *testing.T) {
	src := `version: 1
params:
  f: .nan
  g: { type: number, default: -.inf }
schedule: { cron: "0 2 * * *", params: { g: .inf } }
tasks:
  - name: a
    run: echo ${{ item }}
    for_each: [1, .nan]
`
	fsys := mapFS(map[string]string{"pipelines/p.yaml": src})
	proj := mustLoad(t, fsys)
	for _, line := range []int{3, 4, 5, 9} {
		if !slices.ContainsFunc(proj.Errors, func(e *Error) bool { return e.File == "pipelines/p.yaml" && e.Line == line }) {
			t.Errorf("no error on line %d: %q", line, strings.Split(src, "\n")[line-1])
		}
	}
	if t.Failed() {
		t.Logf("errors:\n%s", annotate(fsys, proj.Errors))
	}
}

// TestScheduleParams checks that a schedule's params are checked against the
// pipeline's params when the file loads, not when the schedule first fires.
func TestScheduleParams(t *testing.T) {
	src := `version: 1
params:
  limit: { type: integer, default: 10 }
  day: { type: string }
schedule:
  cron: "0 2 * * *"
  params: { limit: ten, nope: 1 }
tasks:
  - name: a
    run: echo ${{ params.limit }} ${{ params.day }}
`
	fsys := mapFS(map[string]string{"pipelines/p.yaml": src})
	proj := mustLoad(t, fsys)
	for _, want := range []string{"limit", "nope", "day"} {
		if !slices.ContainsFunc(proj.Errors, func(e *Error) bool { return e.Line == 7 && strings.Contains(e.Message, want) }) {
			t.Errorf("no error about %s on line 7", want)
		}
	}
	if t.Failed() {
		t.Logf("errors:\n%s", annotate(fsys, proj.Errors))
	}

	// Given right, they load and resolve.
	proj = mustLoad(t, mapFS(map[string]string{"pipelines/p.yaml": strings.Replace(src, "{ limit: ten, nope: 1 }", "{ limit: 3, day: x }", 1)}))
	p := mustPipeline(t, proj, "p")
	got, err := ResolveParams(p.Params, p.Schedule.Params, nil)
	if want := map[string]any{"limit": 3, "day": "x"}; err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("schedule params resolve to %v, %v; want %v", got, err, want)
	}
}

// TestSchemaRefs checks that a schema's $ref to another project file works,
// and that the file it refers to is one of the pipeline's sources: a snapshot
// rebuilds from it and the hash changes with it.
func TestSchemaRefs(t *testing.T) {
	files := map[string]string{
		"pipelines/p.yaml":   "version: 1\ntasks:\n  - name: a\n    run: echo\n    checks: [{schema: schemas/out.json}]\n",
		"schemas/out.json":   `{"type": "object", "properties": {"n": {"$ref": "defs.json#/$defs/count"}}}`,
		"schemas/defs.json":  `{"$defs": {"count": {"type": "integer", "minimum": 0}}}`,
		"schemas/other.json": `{}`,
	}
	proj := mustLoad(t, mapFS(files))
	p := mustPipeline(t, proj, "p")
	check := p.Task("a").Checks[0]
	if err := check.ValidateSchema([]byte(`{"n": -1}`)); err == nil {
		t.Error("the $ref'd schema did not apply: n = -1 passed")
	}
	if _, ok := p.Sources["schemas/defs.json"]; !ok {
		t.Errorf("sources %v lack schemas/defs.json", slices.Sorted(maps.Keys(p.Sources)))
	}
	snap, err := LoadSnapshot(p.Sources, "p")
	if err != nil {
		t.Fatalf("LoadSnapshot: %v", err)
	}
	if err := snap.Task("a").Checks[0].ValidateSchema([]byte(`{"n": -1}`)); err == nil {
		t.Error("snapshot: the $ref'd schema did not apply")
	}
	files["schemas/defs.json"] = `{"$defs": {"count": {"type": "integer"}}}`
	if h := mustPipeline(t, mustLoad(t, mapFS(files)), "p").Hash; h == p.Hash {
		t.Error("hash did not change with the $ref'd schema")
	}
}
