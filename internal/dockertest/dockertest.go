// Package dockertest helps tests that need a real Docker Engine: it checks
// that one is reachable and builds small test images on it locally, without
// a registry and without the docker CLI.
//
// Tests that need the engine call Require (or Client) first. When no engine
// is reachable the test fails, so that a missing engine is never mistaken for
// a pass; set DRAY_SKIP_DOCKER=1 to skip those tests instead.
package dockertest

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/jsonstream"
	"github.com/moby/moby/client"
)

// SkipEnv is the environment variable that, set to 1, makes Require skip a
// test when the engine is unreachable rather than fail it.
const SkipEnv = "DRAY_SKIP_DOCKER"

// BusyboxPath is the static busybox that BusyboxImage puts into its image.
const BusyboxPath = "/bin/busybox"

// pingTimeout bounds the reachability check.
const pingTimeout = 10 * time.Second

// Require fails t unless a Docker Engine is reachable (from DOCKER_HOST or
// the default socket). With DRAY_SKIP_DOCKER=1 it skips t instead.
func Require(t testing.TB) {
	t.Helper()
	cli, err := client.New(client.FromEnv)
	if err == nil {
		defer cli.Close()
		ctx, cancel := context.WithTimeout(context.Background(), pingTimeout)
		defer cancel()
		_, err = cli.Ping(ctx, client.PingOptions{NegotiateAPIVersion: true})
	}
	if err == nil {
		return
	}
	if os.Getenv(SkipEnv) == "1" {
		t.Skipf("docker engine unreachable (%v); skipped because %s=1", err, SkipEnv)
	}
	t.Fatalf("docker engine unreachable: %v (start Docker or set DOCKER_HOST; set %s=1 to skip tests that need it)", err, SkipEnv)
}

// Client calls Require and returns a client of the engine, closed when the
// test ends.
func Client(t testing.TB) *client.Client {
	t.Helper()
	Require(t)
	cli, err := client.New(client.FromEnv)
	if err != nil {
		t.Fatalf("docker client: %v", err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// busyboxDockerfile makes an image with nothing but a static busybox and its
// applets as symlinks in /bin, and a /tmp anyone may write to.
const busyboxDockerfile = `FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "sh", "-c", "/bin/busybox --install -s /bin && /bin/busybox mkdir -m 1777 /tmp"]
ENV PATH=/bin
LABEL dray.test=busybox
`

var busybox struct {
	once sync.Once
	tag  string
	err  error
}

// BusyboxImage returns the tag of an image FROM scratch with the static
// busybox at BusyboxPath installed in /bin (sh, echo, sleep, head, ...) and a
// /tmp. It is built once per test binary, under a tag named for the content
// (dray-test-busybox:<sha>), so that test binaries running in parallel and
// later runs reuse it; it is left in the engine as a cache.
func BusyboxImage(t testing.TB) string {
	t.Helper()
	cli := Client(t)
	busybox.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		busybox.tag, busybox.err = buildBusybox(ctx, cli)
	})
	if busybox.err != nil {
		t.Fatalf("build busybox test image: %v", busybox.err)
	}
	return busybox.tag
}

func buildBusybox(ctx context.Context, cli *client.Client) (string, error) {
	if err := requireStatic(BusyboxPath); err != nil {
		return "", err
	}
	b, err := os.ReadFile(BusyboxPath)
	if err != nil {
		return "", fmt.Errorf("read busybox: %w", err)
	}
	sum := sha256.New()
	sum.Write(b)
	sum.Write([]byte(busyboxDockerfile))
	tag := "dray-test-busybox:" + hex.EncodeToString(sum.Sum(nil))[:16]
	if _, err := cli.ImageInspect(ctx, tag); err == nil {
		return tag, nil
	} else if !cerrdefs.IsNotFound(err) {
		return "", fmt.Errorf("inspect image %s: %w", tag, err)
	}
	if err := BuildImage(ctx, cli, tag, busyboxDockerfile, map[string]string{"busybox": BusyboxPath}); err != nil {
		return "", err
	}
	return tag, nil
}

// requireStatic fails unless path is a statically linked executable, which
// is what an image FROM scratch can run.
func requireStatic(path string) error {
	f, err := elf.Open(path)
	if err != nil {
		return fmt.Errorf("busybox for the test image: %w (install busybox-static)", err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return fmt.Errorf("busybox for the test image: %s is dynamically linked; install busybox-static", path)
		}
	}
	return nil
}

// BuildImage builds an image tagged tag from dockerfile with the engine's
// classic builder. files are put into the build context: the key is the name
// in the context (what COPY names), the value the path of a file on this
// machine (its permission bits are kept). Intermediate containers are removed.
func BuildImage(ctx context.Context, cli *client.Client, tag, dockerfile string, files map[string]string) error {
	buildCtx, err := contextTar(dockerfile, files)
	if err != nil {
		return fmt.Errorf("build image %s: %w", tag, err)
	}
	res, err := cli.ImageBuild(ctx, buildCtx, client.ImageBuildOptions{
		Tags:        []string{tag},
		Dockerfile:  "Dockerfile",
		Remove:      true,
		ForceRemove: true,
	})
	if err != nil {
		return fmt.Errorf("build image %s: %w", tag, err)
	}
	defer res.Body.Close()
	var out strings.Builder
	dec := json.NewDecoder(res.Body)
	for {
		var m jsonstream.Message
		if err := dec.Decode(&m); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return fmt.Errorf("build image %s: read build output: %w", tag, err)
		}
		if m.Error != nil {
			return fmt.Errorf("build image %s: %s (build output: %s)", tag, m.Error.Message, out.String())
		}
		out.WriteString(m.Stream)
	}
	if _, err := cli.ImageInspect(ctx, tag); err != nil {
		return fmt.Errorf("build image %s: no image after the build: %w (build output: %s)", tag, err, out.String())
	}
	return nil
}

// contextTar returns a build context holding the Dockerfile and files.
func contextTar(dockerfile string, files map[string]string) (io.Reader, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	add := func(name string, mode int64, b []byte) error {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: mode, Size: int64(len(b)), Typeflag: tar.TypeReg}); err != nil {
			return err
		}
		_, err := tw.Write(b)
		return err
	}
	if err := add("Dockerfile", 0o644, []byte(dockerfile)); err != nil {
		return nil, err
	}
	names := make([]string, 0, len(files))
	for name := range files {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		path := files[name]
		fi, err := os.Stat(path)
		if err != nil {
			return nil, err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, err
		}
		if err := add(name, int64(fi.Mode().Perm()), b); err != nil {
			return nil, fmt.Errorf("add %s to the build context: %w", path, err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return &buf, nil
}
