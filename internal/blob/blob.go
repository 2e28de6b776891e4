// Package blob opens dray's blob storage (closed log segments, large outputs)
// from a URL through gocloud.dev/blob: file://DIR (relative to the project
// folder, or absolute), mem://, and in later versions s3:// and gs://.
package blob

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"gocloud.dev/blob"
	"gocloud.dev/blob/fileblob"
	"gocloud.dev/blob/memblob"
)

// Bucket is an open blob store.
type Bucket = blob.Bucket

// Open opens the storage at url. A file:// path that is not absolute is taken
// relative to base, and the folder is created.
func Open(ctx context.Context, url, base string) (*Bucket, error) {
	scheme, rest, ok := strings.Cut(url, "://")
	if !ok {
		return nil, fmt.Errorf("storage %q: want a URL such as file://.dray/storage", url)
	}
	switch scheme {
	case "file":
		dir := rest
		if !filepath.IsAbs(dir) {
			dir = filepath.Join(base, dir)
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, fmt.Errorf("storage %s: %w", url, err)
		}
		b, err := fileblob.OpenBucket(dir, &fileblob.Options{NoTempDir: true})
		if err != nil {
			return nil, fmt.Errorf("storage %s: %w", url, err)
		}
		return b, nil
	case "mem":
		return memblob.OpenBucket(nil), nil
	}
	return nil, fmt.Errorf("storage %s: scheme %s is not supported by this dray (file, mem)", url, scheme)
}
