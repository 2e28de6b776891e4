// Package spec loads and checks a dray project: dray.yaml, pipelines/*.yaml and
// templates/*.yaml. Loading is strict and reports every problem of every file at
// once, each with file:line:col. A loaded Pipeline is resolved: its templates
// are expanded, its executor profiles looked up and its expressions compiled.
package spec

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"path"
	"slices"
	"sort"
	"strings"
	"testing/fstest"
)

// Project is a loaded project folder.
type Project struct {
	Config *Config
	// Pipelines are the pipelines that loaded without error, sorted by name.
	Pipelines []*Pipeline
	// Errors are every problem in the project, sorted.
	Errors ErrorList
	// broken maps the name of a pipeline that failed to load to its file.
	broken map[string]string
	deps   map[string][]string // pipeline name -> files it depends on
}

// fsReader reads project files, recording what it read.
type fsReader struct {
	fsys  fs.FS
	files map[string][]byte
}

func (r fsReader) ReadFile(name string) ([]byte, error) {
	if data, ok := r.files[name]; ok {
		return data, nil
	}
	data, err := fs.ReadFile(r.fsys, name)
	if err != nil {
		return nil, err
	}
	r.files[name] = data
	return data, nil
}

// Load reads the project in fsys. Problems in the files are in Project.Errors;
// the error is for a folder that cannot be read at all.
func Load(fsys fs.FS) (*Project, error) {
	l := newLoader(fsys)
	proj := &Project{broken: map[string]string{}, deps: map[string][]string{}}
	proj.Config = l.loadConfig()

	templates, err := globYAML(fsys, "templates")
	if err != nil {
		return nil, err
	}
	for _, f := range templates {
		l.template(f, Pos{File: f})
	}
	files, err := globYAML(fsys, "pipelines")
	if err != nil {
		return nil, err
	}
	byName := map[string]*Pipeline{}
	for _, f := range files {
		src, err := l.fsys.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", f, err)
		}
		p := l.pipeline(f, src)
		if p.Name == "" {
			p.Name = strings.TrimSuffix(strings.TrimSuffix(path.Base(f), ".yaml"), ".yml")
		}
		if prev, dup := byName[p.Name]; dup {
			l.errs.add(p.Pos, "pipeline name %q is also used by %s", p.Name, prev.File)
			continue
		}
		byName[p.Name] = p
		proj.deps[p.Name] = l.deps(p)
	}
	proj.Errors = l.errs.Sort()
	for name, p := range byName {
		if len(proj.Errors.In(proj.deps[name]...)) > 0 {
			proj.broken[name] = p.File
			continue
		}
		l.seal(p, proj.deps[name])
		p.sort()
		proj.Pipelines = append(proj.Pipelines, p)
	}
	sort.Slice(proj.Pipelines, func(i, j int) bool { return proj.Pipelines[i].Name < proj.Pipelines[j].Name })
	return proj, nil
}

func newLoader(fsys fs.FS) *loader {
	return &loader{
		fsys:      fsReader{fsys: fsys, files: map[string][]byte{}},
		errs:      &ErrorList{},
		templates: map[string]*TaskTemplate{},
		schemas:   map[string]*schemaFile{},
	}
}

func (l *loader) loadConfig() *Config {
	src, err := l.fsys.ReadFile(ConfigFile)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			l.errs.add(Pos{File: ConfigFile}, "no dray.yaml in this folder: is it a dray project? (`dray init` makes one; --dir picks another folder)")
		} else {
			l.errs.add(Pos{File: ConfigFile}, "%v", err)
		}
		l.config = DefaultConfig()
		return l.config
	}
	l.config = decodeConfig(ConfigFile, src, l.errs)
	return l.config
}

func globYAML(fsys fs.FS, dir string) ([]string, error) {
	var out []string
	for _, pattern := range []string{dir + "/*.yaml", dir + "/*.yml"} {
		m, err := fs.Glob(fsys, pattern)
		if err != nil {
			return nil, fmt.Errorf("list %s: %w", dir, err)
		}
		out = append(out, m...)
	}
	sort.Strings(out)
	return out, nil
}

// deps lists the files a pipeline was built from.
func (l *loader) deps(p *Pipeline) []string {
	files := []string{ConfigFile, p.File}
	for _, t := range p.Tasks {
		if t.Uses != nil {
			files = append(files, path.Clean(strings.TrimPrefix(t.Uses.Path, "./")))
		}
		for _, c := range t.Checks {
			if c.Schema != "" {
				files = append(files, path.Clean(strings.TrimPrefix(c.Schema, "./")))
			}
			if c.schema != nil {
				files = append(files, c.schema.files...)
			}
		}
	}
	slices.Sort(files)
	return slices.Compact(files)
}

// seal records a pipeline's sources and their hash.
func (l *loader) seal(p *Pipeline, deps []string) {
	p.Sources = map[string][]byte{}
	h := sha256.New()
	for _, f := range deps {
		data, ok := l.fsys.files[f]
		if !ok {
			continue
		}
		p.Sources[f] = data
		fmt.Fprintf(h, "%s\x00%d\x00", f, len(data))
		h.Write(data)
	}
	p.Hash = hex.EncodeToString(h.Sum(nil))[:32]
}

// Pipeline returns the named pipeline. For a pipeline that failed to load, the
// error is an ErrorList with its problems; for an unknown name, ErrNoPipeline.
func (p *Project) Pipeline(name string) (*Pipeline, error) {
	for _, x := range p.Pipelines {
		if x.Name == name {
			return x, nil
		}
	}
	if _, ok := p.broken[name]; ok {
		return nil, p.Errors.In(p.deps[name]...)
	}
	if cfg := p.Errors.In(ConfigFile); len(cfg) > 0 {
		return nil, cfg
	}
	names := make([]string, 0, len(p.Pipelines)+len(p.broken))
	for _, x := range p.Pipelines {
		names = append(names, x.Name)
	}
	for n := range p.broken {
		names = append(names, n)
	}
	sort.Strings(names)
	return nil, &NoPipelineError{Name: name, Known: names}
}

// Broken returns the pipelines that failed to load, by name, with their files.
func (p *Project) Broken() map[string]string { return maps.Clone(p.broken) }

// NoPipelineError is returned for a pipeline name that the project does not have.
type NoPipelineError struct {
	Name  string
	Known []string
}

func (e *NoPipelineError) Error() string {
	if len(e.Known) == 0 {
		return fmt.Sprintf("no pipeline %q: the project has no pipelines (add pipelines/%s.yaml)", e.Name, e.Name)
	}
	return fmt.Sprintf("no pipeline %q%s", e.Name, knownList("pipelines", e.Known))
}

// LoadSnapshot rebuilds a pipeline from the Sources it was loaded from.
func LoadSnapshot(sources map[string][]byte, name string) (*Pipeline, error) {
	fsys := fstest.MapFS{}
	for f, data := range sources {
		fsys[f] = &fstest.MapFile{Data: data}
	}
	proj, err := Load(fsys)
	if err != nil {
		return nil, err
	}
	return proj.Pipeline(name)
}
