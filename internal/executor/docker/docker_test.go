package docker

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"

	"github.com/dray-dev/dray/internal/dockertest"
	"github.com/dray-dev/dray/internal/executor"
	"github.com/dray-dev/dray/internal/executor/executortest"
)

const testTimeout = 30 * time.Second

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func newTestExecutor(t *testing.T, host string) *Executor {
	e := New(Config{Host: host, Logger: testLogger(t)})
	t.Cleanup(func() { e.Close() })
	return e
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

// testAgent returns an agent id of the test's own, so that its containers can
// be told from those of other tests (and removed at the end).
func testAgent(t *testing.T) string {
	agent := fmt.Sprintf("test-%x", rand.Uint64())
	t.Cleanup(func() {
		e := New(Config{Logger: testLogger(t)})
		defer e.Close()
		ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
		defer cancel()
		if removed, err := e.Orphans(ctx, agent, func(int64) bool { return false }); err != nil {
			t.Errorf("cleanup: remove containers of %s: %v", agent, err)
		} else if len(removed) > 0 {
			t.Logf("cleanup: removed containers %v", removed)
		}
	})
	return agent
}

// shellSpec returns a Spec that runs shell in the busybox image.
func shellSpec(t *testing.T, agent, shell string) *executor.Spec {
	id := rand.Int64N(1 << 40)
	return &executor.Spec{
		AttemptID: id,
		RunID:     "run-" + agent,
		Task:      t.Name(),
		Run:       shell,
		Options:   map[string]any{"image": dockertest.BusyboxImage(t), "pull": PullNever},
		Labels:    map[string]string{LabelAgent: agent, "dray.run": "run-" + agent, "dray.task": "test"},
	}
}

func TestConformance(t *testing.T) {
	dockertest.Require(t)
	dockertest.BusyboxImage(t) // build it before the parallel cases
	agent := testAgent(t)
	executortest.Run(t,
		func(t *testing.T) executor.Executor { return newTestExecutor(t, "") },
		executortest.Options{
			Spec:      func(t *testing.T, shell string) *executor.Spec { return shellSpec(t, agent, shell) },
			Leftovers: leftovers,
			Timeout:   testTimeout,
			// An engine starts a container in about a second on a small
			// machine, and the suite starts these one after another.
			Concurrent: 8,
		})
}

// leftovers reports h's container if it still exists. Killing a container
// kills every process in it, so the "child PID" lines need no check of their
// own.
func leftovers(ctx context.Context, t *testing.T, h executor.Handle, _ []string) ([]string, error) {
	id := containerID(t, h)
	ins, err := dockertest.Client(t).ContainerInspect(ctx, id, client.ContainerInspectOptions{})
	if cerrdefs.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return []string{fmt.Sprintf("container %s (%s)", shortID(id), ins.Container.State.Status)}, nil
}

// containerID returns the container id in h's State.
func containerID(t *testing.T, h executor.Handle) string {
	t.Helper()
	var st containerState
	if err := json.Unmarshal(h.State(), &st); err != nil || st.Container == "" {
		t.Fatalf("State() = %q (%v); want {\"container\": ID}", h.State(), err)
	}
	return st.Container
}

// start starts spec on e and makes sure it is stopped when the test ends.
func start(t *testing.T, e *Executor, spec *executor.Spec) (executor.Handle, *executortest.Recorder) {
	t.Helper()
	return executortest.Start(t, testCtx(t), e, spec, testTimeout)
}

func wait(t *testing.T, h executor.Handle, rec *executortest.Recorder) executor.Result {
	t.Helper()
	return executortest.Wait(t, testCtx(t), h, rec)
}

func waitFor(t *testing.T, rec *executortest.Recorder, text string) {
	t.Helper()
	if err := rec.WaitFor(testCtx(t), executor.Stdout, text); err != nil {
		t.Fatalf("%v (stdout %q, stderr %q)", err, rec.Texts(executor.Stdout), rec.Texts(executor.Stderr))
	}
}

func inspect(t *testing.T, id string) container.InspectResponse {
	t.Helper()
	ins, err := dockertest.Client(t).ContainerInspect(testCtx(t), id, client.ContainerInspectOptions{})
	if err != nil {
		t.Fatalf("inspect container %s: %v", shortID(id), err)
	}
	return ins.Container
}

// TestContainerConfig checks what the container is made with: resources,
// labels, name, init, environment and working directory.
func TestContainerConfig(t *testing.T) {
	t.Parallel()
	e := newTestExecutor(t, "")
	spec := shellSpec(t, testAgent(t), `pwd; echo "$DRAY_OUTPUT"; echo ready; sleep 60`)
	spec.Resources = executor.Resources{MilliCPU: 500, MemoryBytes: 64 << 20}
	spec.Workdir = "/tmp/work"
	h, rec := start(t, e, spec)
	waitFor(t, rec, "ready")

	c := inspect(t, containerID(t, h))
	hc := c.HostConfig
	if hc.NanoCPUs != 500_000_000 || hc.Memory != 64<<20 || hc.MemorySwap != 64<<20 {
		t.Errorf("NanoCPUs %d, Memory %d, MemorySwap %d; want 5e8, 64 MiB, 64 MiB", hc.NanoCPUs, hc.Memory, hc.MemorySwap)
	}
	if hc.Init == nil || !*hc.Init {
		t.Errorf("HostConfig.Init = %v; want true", hc.Init)
	}
	for k, want := range map[string]string{
		LabelManaged: "true", LabelAttempt: fmt.Sprint(spec.AttemptID),
		LabelAgent: spec.Labels[LabelAgent], "dray.run": spec.RunID, "dray.task": "test",
	} {
		if got := c.Config.Labels[k]; got != want {
			t.Errorf("label %s = %q; want %q", k, got, want)
		}
	}
	if prefix := fmt.Sprintf("/dray-%d-", spec.AttemptID); !strings.HasPrefix(c.Name, prefix) || len(c.Name) <= len(prefix) {
		t.Errorf("container name %q; want %s<random>", c.Name, prefix)
	}

	if err := h.Stop(testCtx(t), 0); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	wait(t, h, rec)
	if got, want := rec.Texts(executor.Stdout), []string{"/tmp/work", outputsFile, "ready"}; !slices.Equal(got, want) {
		t.Errorf("stdout %q; want %q", got, want)
	}
}

// TestUniqueNames checks that two containers of the same attempt do not
// clash (two installations of dray on one engine may number attempts alike).
func TestUniqueNames(t *testing.T) {
	t.Parallel()
	e := newTestExecutor(t, "")
	spec := shellSpec(t, testAgent(t), `true`)
	h1, rec1 := start(t, e, spec)
	h2, rec2 := start(t, e, spec)
	wait(t, h1, rec1)
	wait(t, h2, rec2)
}

func TestImageAndCommand(t *testing.T) {
	t.Parallel()
	e := newTestExecutor(t, "")
	spec := shellSpec(t, testAgent(t), "")
	spec.Image, spec.Run = dockertest.BusyboxImage(t), ""
	spec.Command = []string{"echo", "hello", "$HOME"}
	h, rec := start(t, e, spec)
	if res := wait(t, h, rec); res.ExitCode != 0 {
		t.Fatalf("result %+v; want success", res)
	}
	if got := rec.Texts(executor.Stdout); !slices.Equal(got, []string{"hello $HOME"}) {
		t.Fatalf("stdout %q; want [\"hello $HOME\"] (no shell)", got)
	}
}

// TestLongLines checks that lines the engine splits (past 16 KiB) arrive
// whole, and that a last line without a line ending arrives too.
func TestLongLines(t *testing.T) {
	t.Parallel()
	e := newTestExecutor(t, "")
	h, rec := start(t, e, shellSpec(t, testAgent(t), `head -c 100000 /dev/zero | tr '\0' a; echo; printf 'crlf\r\n'; printf last`))
	wait(t, h, rec)
	got := rec.Texts(executor.Stdout)
	want := []string{strings.Repeat("a", 100000), "crlf", "last"}
	if !slices.Equal(got, want) {
		t.Fatalf("stdout has %d lines of lengths %v (%q); want lengths 100000, 4, 4", len(got), lengths(got), got[1:])
	}
}

func TestOOMKilled(t *testing.T) {
	t.Parallel()
	e := newTestExecutor(t, "")
	spec := shellSpec(t, testAgent(t), `echo start; dd if=/dev/zero of=/dev/null bs=64M count=1`)
	spec.Resources.MemoryBytes = 8 << 20
	h, rec := start(t, e, spec)
	res := wait(t, h, rec)
	if res.ExitCode != 137 || res.Reason != "exit 137: OOMKilled" {
		t.Fatalf("result: exit code %d, reason %q; want 137, \"exit 137: OOMKilled\"", res.ExitCode, res.Reason)
	}
}

func TestOutputsNotARegularFile(t *testing.T) {
	t.Parallel()
	e := newTestExecutor(t, "")
	h, rec := start(t, e, shellSpec(t, testAgent(t), `mkdir "$DRAY_OUTPUT"`))
	res := wait(t, h, rec)
	if res.ExitCode != 0 || !strings.Contains(res.OutputsError, "is a directory, not a regular file") {
		t.Fatalf("result %+v; want success with OutputsError about a directory", res)
	}
}

func TestPullNever(t *testing.T) {
	t.Parallel()
	e := newTestExecutor(t, "")
	spec := shellSpec(t, testAgent(t), `true`)
	spec.Options["image"] = "dray-test-no-such-image:1"
	_, err := e.Start(testCtx(t), spec, nil)
	if want := "image not found: dray-test-no-such-image:1 (pull: never)"; err == nil || err.Error() != want {
		t.Fatalf("Start = %v; want %q", err, want)
	}
}

// TestPullFails pulls an image the engine cannot get (it has no registry to
// reach here, and the image does not exist anywhere): Start must fail with
// a message naming the image, within its context.
func TestPullFails(t *testing.T) {
	t.Parallel()
	e := newTestExecutor(t, "")
	for _, policy := range []string{PullMissing, PullAlways} {
		spec := shellSpec(t, testAgent(t), `true`)
		spec.Options["image"] = "dray-test-no-such-image:1"
		spec.Options["pull"] = policy
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
		began := time.Now()
		h, err := e.Start(ctx, spec, nil)
		cancel()
		if err == nil {
			h.Stop(testCtx(t), 0)
			t.Fatalf("pull %s: Start succeeded; want an error", policy)
		}
		if !strings.Contains(err.Error(), "dray-test-no-such-image:1") ||
			!(strings.HasPrefix(err.Error(), "image not found: ") || strings.HasPrefix(err.Error(), "pull ")) {
			t.Fatalf("pull %s: Start error %q; want one naming the image", policy, err)
		}
		t.Logf("pull %s: %v (after %v)", policy, err, time.Since(began).Round(time.Millisecond))
	}
}

func TestBadOptions(t *testing.T) {
	t.Parallel()
	e := newTestExecutor(t, "")
	for _, c := range []struct {
		opts map[string]any
		want string
	}{
		{map[string]any{"image": 7}, "option image is 7 (int); want a string"},
		{map[string]any{"image": "x", "pull": "sometimes"}, `option pull is "sometimes"; want never, missing or always`},
		{map[string]any{}, "has no image"},
	} {
		spec := shellSpec(t, "none", "true")
		spec.Options = c.opts
		if _, err := e.Start(testCtx(t), spec, nil); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Start with options %v = %v; want an error with %q", c.opts, err, c.want)
		}
	}
}

// TestCannotStart checks that a container the engine cannot create or start
// is an error of Start with the engine's message, and is removed.
func TestCannotStart(t *testing.T) {
	t.Parallel()
	cli := dockertest.Client(t)
	badUser := fmt.Sprintf("dray-test-bad-user:%x", rand.Uint64())
	t.Cleanup(func() {
		_, _ = cli.ImageRemove(context.Background(), badUser, client.ImageRemoveOptions{Force: true, PruneChildren: true})
	})
	err := dockertest.BuildImage(testCtx(t), cli, badUser, "FROM "+dockertest.BusyboxImage(t)+"\nUSER no-such-user\n", nil)
	if err != nil {
		t.Fatal(err)
	}

	e := newTestExecutor(t, "")
	agent := testAgent(t)
	workdirFile := shellSpec(t, agent, `true`)
	workdirFile.Workdir = "/bin/busybox" // a file
	noUser := shellSpec(t, agent, `true`)
	noUser.Options["image"] = badUser
	for _, c := range []struct {
		spec         *executor.Spec
		prefix, want string
	}{
		{workdirFile, "create container for image ", "not a directory"},
		{noUser, "container cannot start: ", "no-such-user"},
	} {
		_, err := e.Start(testCtx(t), c.spec, nil)
		if err == nil || !strings.HasPrefix(err.Error(), c.prefix) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Start = %v; want %q...%q", err, c.prefix, c.want)
		}
		t.Logf("Start: %v", err)
	}
	if n := countContainers(t, agent); n != 0 {
		t.Fatalf("%d containers left; want 0", n)
	}
}

// TestCommandNotFound checks the reason of a task whose program is not in
// the image: the init process cannot exec it.
func TestCommandNotFound(t *testing.T) {
	t.Parallel()
	e := newTestExecutor(t, "")
	spec := shellSpec(t, testAgent(t), "")
	spec.Image, spec.Run, spec.Command = dockertest.BusyboxImage(t), "", []string{"no-such-program", "x"}
	h, rec := start(t, e, spec)
	res := wait(t, h, rec)
	if res.ExitCode != 127 || !strings.Contains(res.Reason, "no-such-program") {
		t.Fatalf("result %+v (stderr %q); want exit 127 with a reason naming the program", res, rec.Texts(executor.Stderr))
	}
	t.Logf("reason: %s", res.Reason)
}

func TestEngineUnreachable(t *testing.T) {
	t.Parallel()
	e := newTestExecutor(t, "unix:///nonexistent.sock")
	began := time.Now()
	_, err := e.Start(testCtx(t), &executor.Spec{Run: "true", Options: map[string]any{"image": "busybox"}}, nil)
	if want := "docker engine unreachable at unix:///nonexistent.sock: "; err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Fatalf("Start = %v; want %q...", err, want)
	}
	if d := time.Since(began); d > 5*time.Second {
		t.Fatalf("Start took %v to fail; want it quick", d)
	}
	t.Logf("error: %v", err)

	// The profile's host option selects the engine too.
	e = newTestExecutor(t, "")
	_, err = e.Start(testCtx(t), &executor.Spec{Run: "true", Options: map[string]any{"image": "busybox", "host": "unix:///nonexistent2.sock"}}, nil)
	if want := "docker engine unreachable at unix:///nonexistent2.sock: "; err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Fatalf("Start with option host = %v; want %q...", err, want)
	}
}

func TestNetwork(t *testing.T) {
	t.Parallel()
	cli := dockertest.Client(t)
	name := fmt.Sprintf("dray-test-net-%x", rand.Uint64())
	if _, err := cli.NetworkCreate(testCtx(t), name, client.NetworkCreateOptions{}); err != nil {
		t.Fatalf("create network: %v", err)
	}
	t.Cleanup(func() {
		if _, err := cli.NetworkRemove(context.Background(), name, client.NetworkRemoveOptions{}); err != nil {
			t.Errorf("remove network %s: %v", name, err)
		}
	})
	e := newTestExecutor(t, "")
	spec := shellSpec(t, testAgent(t), `echo ready; sleep 60`)
	spec.Options["network"] = name
	h, rec := start(t, e, spec)
	waitFor(t, rec, "ready")
	c := inspect(t, containerID(t, h))
	if _, ok := c.NetworkSettings.Networks[name]; !ok {
		t.Errorf("container networks %v; want %s", c.NetworkSettings.Networks, name)
	}
	// The container must be gone before the network can be removed.
	if err := h.Stop(testCtx(t), 0); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	wait(t, h, rec)
}

func TestOrphans(t *testing.T) {
	t.Parallel()
	cli := dockertest.Client(t)
	image := dockertest.BusyboxImage(t)
	agent, other := testAgent(t), testAgent(t)
	create := func(agent string, attempt int) string {
		t.Helper()
		res, err := cli.ContainerCreate(testCtx(t), client.ContainerCreateOptions{
			Name: fmt.Sprintf("dray-%d-%x", attempt, rand.Uint32()),
			Config: &container.Config{Image: image, Cmd: []string{"sleep", "60"}, Labels: map[string]string{
				LabelManaged: "true", LabelAgent: agent, LabelAttempt: fmt.Sprint(attempt),
			}},
		})
		if err != nil {
			t.Fatalf("create container: %v", err)
		}
		return res.ID
	}
	gone1, kept, gone3, others := create(agent, 1), create(agent, 2), create(agent, 3), create(other, 1)
	if _, err := cli.ContainerStart(testCtx(t), gone1, client.ContainerStartOptions{}); err != nil {
		t.Fatalf("start container: %v", err)
	}

	e := newTestExecutor(t, "")
	removed, err := e.Orphans(testCtx(t), agent, func(id int64) bool { return id == 2 })
	if err != nil {
		t.Fatalf("Orphans: %v", err)
	}
	if len(removed) != 2 {
		t.Errorf("Orphans removed %v; want 2 containers", removed)
	}
	for _, c := range []struct {
		id   string
		want bool
	}{{gone1, false}, {kept, true}, {gone3, false}, {others, true}} {
		_, err := cli.ContainerInspect(testCtx(t), c.id, client.ContainerInspectOptions{})
		if exists := err == nil; exists != c.want {
			t.Errorf("container %s exists = %v (%v); want %v", shortID(c.id), exists, err, c.want)
		}
	}
}

// countContainers counts the containers of agent.
func countContainers(t *testing.T, agent string) int {
	t.Helper()
	list, err := dockertest.Client(t).ContainerList(testCtx(t), client.ContainerListOptions{
		All: true, Filters: make(client.Filters).Add("label", LabelAgent+"="+agent),
	})
	if err != nil {
		t.Fatalf("list containers: %v", err)
	}
	return len(list.Items)
}

// proxy forwards connections from a unix socket of its own to the engine,
// and can cut them all: to an executor that uses it, that is the engine going
// away (or the agent dying, for the containers it follows).
type proxy struct {
	path   string
	target func(ctx context.Context) (net.Conn, error)

	mu     sync.Mutex
	ln     net.Listener
	conns  map[net.Conn]bool
	closed bool // cut, and not listening again yet
	wg     sync.WaitGroup
}

func newProxy(t *testing.T) *proxy {
	cli := dockertest.Client(t)
	// Socket paths are short (108 bytes); t.TempDir may be too long.
	dir, err := os.MkdirTemp("", "dray-proxy-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	p := &proxy{path: filepath.Join(dir, "docker.sock"), target: cli.Dialer(), conns: map[net.Conn]bool{}}
	p.listen(t)
	t.Cleanup(p.cut)
	return p
}

// host is the proxy's address for Config.Host.
func (p *proxy) host() string { return "unix://" + p.path }

// listen (again) accepts connections at the proxy's path.
func (p *proxy) listen(t *testing.T) {
	os.Remove(p.path)
	ln, err := net.Listen("unix", p.path)
	if err != nil {
		t.Fatalf("proxy: %v", err)
	}
	p.mu.Lock()
	p.ln, p.closed = ln, false
	p.mu.Unlock()
	p.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.wg.Go(func() { p.forward(c) })
		}
	})
}

func (p *proxy) forward(c net.Conn) {
	up, err := p.target(context.Background())
	if err != nil {
		c.Close()
		return
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		c.Close()
		up.Close()
		return
	}
	p.conns[c], p.conns[up] = true, true
	p.mu.Unlock()
	done := make(chan struct{}, 2)
	go func() { io.Copy(up, c); done <- struct{}{} }()
	go func() { io.Copy(c, up); done <- struct{}{} }()
	<-done
	c.Close()
	up.Close()
	<-done
	p.mu.Lock()
	delete(p.conns, c)
	delete(p.conns, up)
	p.mu.Unlock()
}

// cut stops listening and closes every connection.
func (p *proxy) cut() {
	p.mu.Lock()
	p.closed = true
	if p.ln != nil {
		p.ln.Close()
	}
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

// putFile puts a file into a container, for a task that waits for it.
func putFile(t *testing.T, id, path string) {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&tar.Header{Name: filepath.Base(path), Mode: 0o644, Typeflag: tar.TypeReg}); err != nil {
		t.Fatal(err)
	}
	tw.Close()
	_, err := dockertest.Client(t).CopyToContainer(testCtx(t), id, client.CopyToContainerOptions{DestinationPath: filepath.Dir(path), Content: &buf})
	if err != nil {
		t.Fatalf("put %s into container: %v", path, err)
	}
}

func lengths(s []string) []int {
	var n []int
	for _, x := range s {
		n = append(n, len(x))
	}
	return n
}

// TestStopContextEndsDuringGrace checks that Stop kills at once when its
// context ends before the grace period does.
func TestStopContextEndsDuringGrace(t *testing.T) {
	t.Parallel()
	e := newTestExecutor(t, "")
	h, rec := start(t, e, shellSpec(t, testAgent(t), `trap '' TERM; echo ready; sleep 60`))
	waitFor(t, rec, "ready")
	ctx, cancel := context.WithTimeout(testCtx(t), 500*time.Millisecond)
	defer cancel()
	began := time.Now()
	if err := h.Stop(ctx, time.Minute); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Stop = %v; want an error wrapping context.DeadlineExceeded", err)
	}
	res := wait(t, h, rec)
	if res.ExitCode != 137 {
		t.Fatalf("result %+v; want exit 137 (killed)", res)
	}
	if d := time.Since(began); d > 15*time.Second {
		t.Fatalf("the task ended %v after Stop; want it killed when Stop's context ended", d)
	}
}

// TestOutputsAsAnotherUser checks that a task running as a user other than
// root can write its outputs.
func TestOutputsAsAnotherUser(t *testing.T) {
	t.Parallel()
	cli := dockertest.Client(t)
	image := fmt.Sprintf("dray-test-nobody:%x", rand.Uint64())
	t.Cleanup(func() {
		_, _ = cli.ImageRemove(context.Background(), image, client.ImageRemoveOptions{Force: true, PruneChildren: true})
	})
	if err := dockertest.BuildImage(testCtx(t), cli, image, "FROM "+dockertest.BusyboxImage(t)+"\nUSER 65534:65534\n", nil); err != nil {
		t.Fatal(err)
	}
	e := newTestExecutor(t, "")
	spec := shellSpec(t, testAgent(t), `id -u; printf '{"user": "nobody"}' > "$DRAY_OUTPUT"`)
	spec.Options["image"] = image
	h, rec := start(t, e, spec)
	res := wait(t, h, rec)
	if res.ExitCode != 0 || string(res.Outputs) != `{"user": "nobody"}` {
		t.Fatalf("result %+v (stdout %q, stderr %q); want success with outputs", res, rec.Texts(executor.Stdout), rec.Texts(executor.Stderr))
	}
	if got := rec.Texts(executor.Stdout); !slices.Equal(got, []string{"65534"}) {
		t.Fatalf("stdout %q; want [65534]", got)
	}
}
