package dockertest

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/moby/moby/client"
)

func TestBusyboxImage(t *testing.T) {
	tag := BusyboxImage(t)
	if again := BusyboxImage(t); again != tag {
		t.Fatalf("second BusyboxImage = %q; first was %q", again, tag)
	}
	cli := Client(t)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	img, err := cli.ImageInspect(ctx, tag)
	if err != nil {
		t.Fatalf("inspect %s: %v", tag, err)
	}
	if img.Config == nil || img.Config.Labels["dray.test"] != "busybox" {
		t.Fatalf("image %s has config %+v; want label dray.test=busybox", tag, img.Config)
	}
}

func TestBuildImage(t *testing.T) {
	cli := Client(t)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	file := filepath.Join(t.TempDir(), "hello.txt")
	if err := os.WriteFile(file, []byte("hello\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tag := fmt.Sprintf("dray-test-build:%d", time.Now().UnixNano())
	t.Cleanup(func() {
		_, _ = cli.ImageRemove(context.Background(), tag, client.ImageRemoveOptions{Force: true, PruneChildren: true})
	})
	if err := BuildImage(ctx, cli, tag, "FROM scratch\nCOPY hello.txt /hello.txt\nLABEL dray.test=build\n", map[string]string{"hello.txt": file}); err != nil {
		t.Fatalf("BuildImage: %v", err)
	}
	img, err := cli.ImageInspect(ctx, tag)
	if err != nil {
		t.Fatalf("inspect %s: %v", tag, err)
	}
	if img.Config == nil || img.Config.Labels["dray.test"] != "build" {
		t.Fatalf("image %s has config %+v; want label dray.test=build", tag, img.Config)
	}

	// A failing build reports the builder's message.
	err = BuildImage(ctx, cli, tag+"-bad", "FROM scratch\nCOPY missing.txt /\n", nil)
	if err == nil {
		t.Fatal("BuildImage with a missing file succeeded; want an error")
	}
	t.Logf("failed build: %v", err)
}
