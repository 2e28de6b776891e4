package cli

import (
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"
)

// example is the project `dray init` writes. dot-gitignore becomes .gitignore
// (a file named .gitignore would be left out of the embedded tree).
//
//go:embed example
var example embed.FS

func (e *env) initCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "init [DIR]",
		Short: "Make a project with an example pipeline (in DIR, default the current folder)",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			dir := e.dir
			if len(args) == 1 {
				dir = args[0]
			}
			if err := writeExample(dir); err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "made a dray project in %s\n\n  cd %s\n  dray run leaderboard\n", dir, dir)
			return nil
		},
	}
}

// writeExample writes the example project into dir, which must not hold a
// dray.yaml already. It overwrites no file.
func writeExample(dir string) error {
	if _, err := os.Stat(filepath.Join(dir, "dray.yaml")); err == nil {
		return badInputf("%s already has a dray.yaml: init makes new projects only", dir)
	}
	// Look before writing anything, so init never leaves half a project.
	err := fs.WalkDir(example, "example", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		target := filepath.Join(dir, exampleName(path))
		if _, err := os.Lstat(target); err == nil {
			return badInputf("%s exists already: init overwrites nothing", target)
		}
		return nil
	})
	if err != nil {
		return err
	}
	err = fs.WalkDir(example, "example", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel := exampleName(path)
		if rel == "" {
			return os.MkdirAll(dir, 0o755)
		}
		target := filepath.Join(dir, rel)
		if d.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		data, err := example.ReadFile(path)
		if err != nil {
			return err
		}
		mode := os.FileMode(0o644)
		if strings.HasSuffix(rel, ".sh") {
			mode = 0o755
		}
		f, err := os.OpenFile(target, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
		if errors.Is(err, fs.ErrExist) {
			return badInputf("%s exists already: init overwrites nothing", target)
		}
		if err != nil {
			return err
		}
		if _, err := f.Write(data); err != nil {
			f.Close()
			return err
		}
		return f.Close()
	})
	if err != nil {
		return fmt.Errorf("init %s: %w", dir, err)
	}
	return nil
}

// exampleName is where an embedded example file goes in the new project.
func exampleName(path string) string {
	rel := strings.TrimPrefix(strings.TrimPrefix(path, "example"), "/")
	return strings.Replace(rel, "dot-gitignore", ".gitignore", 1)
}
