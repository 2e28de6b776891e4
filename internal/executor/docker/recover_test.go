package docker

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"

	"github.com/dray-dev/dray/internal/dockertest"
	"github.com/dray-dev/dray/internal/executor"
	"github.com/dray-dev/dray/internal/executor/executortest"
)

// startLost starts spec through a proxy and cuts the proxy once the task has
// printed ready, as if the agent died: the container runs on, and the handle
// reports that it cannot follow it.
func startLost(t *testing.T, spec *executor.Spec) (*proxy, executor.Handle, *executortest.Recorder) {
	t.Helper()
	p := newProxy(t)
	rec := executortest.NewRecorder()
	h, err := newTestExecutor(t, p.host()).Start(testCtx(t), spec, rec)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	waitFor(t, rec, "ready")
	p.cut()
	if res, err := h.Wait(testCtx(t)); err == nil {
		t.Fatalf("Wait after the engine went away = %+v, nil; want an error", res)
	} else {
		t.Logf("Wait after the engine went away: %v", err)
	}
	return p, h, rec
}

func TestRecoverRunning(t *testing.T) {
	t.Parallel()
	spec := shellSpec(t, testAgent(t), `echo before; echo err >&2; echo ready; while [ ! -e /tmp/go ]; do sleep 0.1; done; echo after; printf '{"ok": true}' > "$DRAY_OUTPUT"; exit 4`)
	p, h1, _ := startLost(t, spec)
	id := containerID(t, h1)
	if c := inspect(t, id); !c.State.Running {
		t.Fatalf("container %s is %s; want it still running", shortID(id), c.State.Status)
	}

	p.listen(t) // the engine is back, at the address in the state
	rec := executortest.NewRecorder()
	h, err := newTestExecutor(t, "").Recover(testCtx(t), spec, h1.State(), rec)
	if err != nil {
		t.Fatalf("Recover: %v", err)
	}
	waitFor(t, rec, "ready")
	putFile(t, id, "/tmp/go")
	res := wait(t, h, rec)
	if res.ExitCode != 4 || res.Reason != "exit 4" || string(res.Outputs) != `{"ok": true}` {
		t.Fatalf("result %+v; want exit 4 with outputs", res)
	}
	if got, want := rec.Texts(executor.Stdout), []string{"before", "ready", "after"}; !slices.Equal(got, want) {
		t.Errorf("stdout %q; want %q (every line, from the first)", got, want)
	}
	if got, want := rec.Texts(executor.Stderr), []string{"err"}; !slices.Equal(got, want) {
		t.Errorf("stderr %q; want %q", got, want)
	}
	if left, err := leftovers(testCtx(t), t, h, nil); err != nil || len(left) > 0 {
		t.Errorf("after Wait: %v, %v; want the container removed", left, err)
	}
	if st := h.State(); !slices.Equal(st, h1.State()) {
		t.Errorf("recovered State %s; want %s", st, h1.State())
	}
}

// TestRecoverExitedByLabels recovers, without a saved state, an attempt
// whose container exited while no agent followed it.
func TestRecoverExitedByLabels(t *testing.T) {
	t.Parallel()
	spec := shellSpec(t, testAgent(t), `echo out1; echo err1 >&2; echo ready; while [ ! -e /tmp/go ]; do sleep 0.1; done; echo out2; printf last; exit 3`)
	_, h1, _ := startLost(t, spec)
	id := containerID(t, h1)
	putFile(t, id, "/tmp/go")
	cli := dockertest.Client(t)
	w := cli.ContainerWait(testCtx(t), id, client.ContainerWaitOptions{Condition: container.WaitConditionNotRunning})
	select {
	case <-w.Result:
	case err := <-w.Error:
		t.Fatalf("wait for the container: %v", err)
	}

	rec := executortest.NewRecorder()
	h, err := newTestExecutor(t, "").Recover(testCtx(t), spec, nil, rec)
	if err != nil {
		t.Fatalf("Recover: %v", err)
	}
	if got := containerID(t, h); got != id {
		t.Fatalf("Recover found container %s; want %s", shortID(got), shortID(id))
	}
	res := wait(t, h, rec)
	if res.ExitCode != 3 || res.Reason != "exit 3" {
		t.Fatalf("result %+v; want exit 3", res)
	}
	if got, want := rec.Texts(executor.Stdout), []string{"out1", "ready", "out2", "last"}; !slices.Equal(got, want) {
		t.Errorf("stdout %q; want %q", got, want)
	}
	if got, want := rec.Texts(executor.Stderr), []string{"err1"}; !slices.Equal(got, want) {
		t.Errorf("stderr %q; want %q", got, want)
	}
	if _, err := cli.ContainerInspect(testCtx(t), id, client.ContainerInspectOptions{}); !cerrdefs.IsNotFound(err) {
		t.Errorf("inspect after Wait: %v; want not found", err)
	}
}

func TestRecoverLost(t *testing.T) {
	t.Parallel()
	e := newTestExecutor(t, "")
	agent := testAgent(t)
	spec := shellSpec(t, agent, `true`)

	// A container that was created but never started.
	res, err := dockertest.Client(t).ContainerCreate(testCtx(t), client.ContainerCreateOptions{
		Name:   fmt.Sprintf("dray-%d-created", spec.AttemptID),
		Config: &container.Config{Image: dockertest.BusyboxImage(t), Cmd: []string{"true"}, Labels: labels(spec)},
	})
	if err != nil {
		t.Fatalf("create container: %v", err)
	}
	created := fmt.Sprintf(`{"container": %q}`, res.ID)

	for _, c := range []struct {
		name  string
		state string
		spec  *executor.Spec
	}{
		{"gone", `{"container": "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"}`, spec},
		{"no labels match", ``, shellSpec(t, agent, `true`)},
		{"bad state", `{"container": `, spec},
		{"never started", created, spec},
	} {
		h, err := e.Recover(testCtx(t), c.spec, []byte(c.state), nil)
		if !errors.Is(err, executor.ErrLost) {
			t.Errorf("%s: Recover = %v, %v; want an error wrapping ErrLost", c.name, h, err)
			continue
		}
		if !strings.HasPrefix(err.Error(), "recover container") {
			t.Errorf("%s: error %q; want it to name the operation", c.name, err)
		}
	}
	if n := countContainers(t, agent); n != 0 {
		t.Errorf("%d containers left; want the one never started removed", n)
	}
}
