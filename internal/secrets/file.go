package secrets

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
)

// File is a Provider that reads each secret from a file of its own in a
// folder, as Docker and Kubernetes mount them (/run/secrets/db_password).
type File struct {
	dir string
}

// NewFile returns a Provider that reads secret name from the file dir/name.
func NewFile(dir string) *File { return &File{dir: dir} }

// Name returns "file".
func (f *File) Name() string { return "file" }

// Where returns "file " and the path of the file that holds name.
func (f *File) Where(name string) string { return "file " + filepath.Join(f.dir, name) }

// validFileName is what a secret's name may be to name a file.
var validFileName = regexp.MustCompile(`^[A-Za-z0-9_.-]+$`)

// Lookup reads the file that holds name, less one trailing "\n" or "\r\n"
// (editors add one). A missing file is not found, not an error. A name that
// could reach outside the folder (a path separator, "..", "." or any character
// outside [A-Za-z0-9_.-]) is an error, as is any other read error.
func (f *File) Lookup(ctx context.Context, name string) (string, bool, error) {
	if err := ctx.Err(); err != nil {
		return "", false, fmt.Errorf("look up secret %s in %s: %w", name, f.dir, err)
	}
	if !validFileName.MatchString(name) || strings.Contains(name, "..") || name == "." {
		return "", false, fmt.Errorf("look up secret %q in %s: a secret file name may hold only letters, digits, '_', '-' and '.', and not \"..\"", name, f.dir)
	}
	b, err := os.ReadFile(filepath.Join(f.dir, name))
	if errors.Is(err, fs.ErrNotExist) {
		return "", false, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("look up secret %s: %w", name, err)
	}
	s := string(b)
	if t, ok := strings.CutSuffix(s, "\r\n"); ok {
		s = t
	} else {
		s = strings.TrimSuffix(s, "\n")
	}
	return s, true, nil
}

var _ Provider = (*File)(nil)
