// Package blob opens dray's blob storage, where the control plane writes the
// closed segments of task logs, from a URL through gocloud.dev/blob:
//
//   - file://DIR: a folder, relative to the project folder or absolute
//     (file:///var/lib/dray); created when missing.
//   - mem://: in memory, for tests.
//   - s3://BUCKET/PREFIX: an S3 bucket (or an S3-compatible store such as
//     MinIO), objects under PREFIX/ (optional). Credentials and region come
//     from the AWS SDK's default chain; query parameters region, endpoint,
//     use_path_style, profile, ssetype and kmskeyid adjust it (see OpenS3).
//     Open checks that the bucket can be listed, so a wrong bucket,
//     credentials or endpoint fail at start rather than at the first write.
//
// gs:// and azblob:// are not supported yet.
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

// Schemes are the URL schemes Open supports.
var Schemes = []string{"file", "mem", "s3"}

// Open opens the storage at url. A file:// path that is not absolute is taken
// relative to base, and the folder is created. An s3:// URL is opened as
// OpenS3 does.
func Open(ctx context.Context, url, base string) (*Bucket, error) {
	scheme, rest, ok := strings.Cut(url, "://")
	if !ok {
		return nil, fmt.Errorf("storage %q: want a URL such as file://.dray/storage or s3://bucket/prefix", url)
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
	case "s3":
		return OpenS3(ctx, url)
	}
	return nil, fmt.Errorf("storage %s: scheme %s is not supported by this dray (%s)", url, scheme, strings.Join(Schemes, ", "))
}
