package spec

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"strings"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"golang.org/x/text/language"
	"golang.org/x/text/message"
)

// schemaFile is a compiled JSON Schema from the project.
type schemaFile struct {
	path   string
	schema *jsonschema.Schema
	files  []string // every file compiling it read: itself and what it $refs
}

const schemaScheme = "dray"

// schema compiles a schema file once per project load. $refs to other files
// resolve inside the project folder.
func (l *loader) schema(d *decoder, p string, at Pos) *schemaFile {
	clean := path.Clean(strings.TrimPrefix(p, "./"))
	if sf, ok := l.schemas[clean]; ok {
		return sf
	}
	l.schemas[clean] = nil
	if !fs.ValidPath(clean) {
		d.errorAt(at, "schema %q: a schema path is relative to the project folder, such as schemas/score.json", p)
		return nil
	}
	c := jsonschema.NewCompiler()
	loader := &projectLoader{fsys: l.fsys}
	c.UseLoader(jsonschema.SchemeURLLoader{schemaScheme: loader})
	sch, err := c.Compile(schemaScheme + ":///" + clean)
	if err != nil {
		d.errorAt(at, "schema %s: %s", p, schemaCompileMessage(clean, err))
		return nil
	}
	sf := &schemaFile{path: clean, schema: sch, files: loader.read}
	l.schemas[clean] = sf
	return sf
}

func schemaCompileMessage(file string, err error) string {
	var load *jsonschema.LoadURLError
	if errors.As(err, &load) {
		name := strings.TrimPrefix(load.URL, schemaScheme+":///")
		what := load.Err.Error()
		if errors.Is(load.Err, fs.ErrNotExist) {
			what = "no such file"
		}
		if name == file {
			return what
		}
		return fmt.Sprintf("cannot load %s, which it refers to: %s", name, what)
	}
	msg := err.Error()
	msg = strings.ReplaceAll(msg, schemaScheme+":///", "")
	return strings.ReplaceAll(msg, "\n", " ")
}

// projectLoader loads schema files from the project folder and records which.
type projectLoader struct {
	fsys fsReader
	read []string
}

func (p *projectLoader) Load(url string) (any, error) {
	name := strings.TrimPrefix(url, schemaScheme+":///")
	data, err := p.fsys.ReadFile(name)
	if err != nil {
		return nil, err
	}
	p.read = append(p.read, name)
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("invalid JSON: %w", err)
	}
	return doc, nil
}

var printer = message.NewPrinter(language.English)

// Validate checks outputs (JSON) against the check's schema. The error lists
// where and why the outputs do not match.
func (c *Check) ValidateSchema(outputs []byte) error {
	if c.schema == nil {
		return fmt.Errorf("schema %s was not loaded", c.Schema)
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(outputs))
	if err != nil {
		return fmt.Errorf("outputs are not JSON: %w", err)
	}
	err = c.schema.schema.Validate(doc)
	var ve *jsonschema.ValidationError
	if !errors.As(err, &ve) {
		return err
	}
	var leaves []string
	var walk func(e *jsonschema.ValidationError)
	walk = func(e *jsonschema.ValidationError) {
		if len(e.Causes) == 0 {
			loc := "/" + strings.Join(e.InstanceLocation, "/")
			leaves = append(leaves, fmt.Sprintf("at %s: %s", loc, e.ErrorKind.LocalizedString(printer)))
		}
		for _, cause := range e.Causes {
			walk(cause)
		}
	}
	walk(ve)
	if len(leaves) > 3 {
		leaves = append(leaves[:3], fmt.Sprintf("and %d more", len(leaves)-3))
	}
	return errors.New(strings.Join(leaves, "; "))
}
