package blob_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/dray-dev/dray/internal/blob"
)

// TestOpenFileMem: file:// is a folder, relative to base or absolute, made
// when missing; mem:// is in memory.
func TestOpenFileMem(t *testing.T) {
	base := t.TempDir()
	abs := filepath.Join(t.TempDir(), "abs", "storage")
	for _, c := range []struct {
		url, dir string // dir: where the objects land, "" for none
	}{
		{"file://.dray/storage", filepath.Join(base, ".dray", "storage")},
		{"file://" + abs, abs},
		{"mem://", ""},
	} {
		t.Run(c.url, func(t *testing.T) {
			b, err := blob.Open(t.Context(), c.url, base)
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			defer b.Close()
			if err := b.WriteAll(t.Context(), "logs/r/t/0-1-1.jsonl", []byte("x\n"), nil); err != nil {
				t.Fatalf("write: %v", err)
			}
			if got, err := b.ReadAll(t.Context(), "logs/r/t/0-1-1.jsonl"); err != nil || string(got) != "x\n" {
				t.Fatalf("read: %q, %v", got, err)
			}
			if c.dir == "" {
				return
			}
			if got, err := os.ReadFile(filepath.Join(c.dir, "logs", "r", "t", "0-1-1.jsonl")); err != nil || string(got) != "x\n" {
				t.Errorf("file in %s: %q, %v", c.dir, got, err)
			}
		})
	}
}
