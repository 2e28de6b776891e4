package multihost

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/api/pkg/stdcopy"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/network"
	docker "github.com/moby/moby/client"

	"github.com/dray-dev/dray/internal/api"
	"github.com/dray-dev/dray/internal/client"
	"github.com/dray-dev/dray/internal/control"
	"github.com/dray-dev/dray/internal/dockertest"
)

// testLabel is on every container and network the test creates; its value
// is the cluster's id.
const testLabel = "dray.multihost"

// serverPort is where the server listens inside its container.
const serverPort = "8080/tcp"

// logsEnv, set to 1, makes the test log the containers' logs even when it
// passes.
const logsEnv = "DRAY_MULTIHOST_LOGS"

// lease is the server's --agent-lease: short, so that a dead agent's
// attempts are lost within seconds, yet longer than a restart of the server
// and the agents' poll (1s) together: a server restarted does not count the
// time it was down against the agents (see testRestartServer).
const lease = 8 * time.Second

// imageDockerfile is the image of the server and the agents: the static dray
// binary, and busybox so that local tasks have a shell. No registry is
// needed: it is FROM scratch.
const imageDockerfile = `FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
COPY dray /usr/local/bin/dray
WORKDIR /tmp
WORKDIR /project
ENV PATH=/usr/local/bin:/bin TMPDIR=/tmp
ENTRYPOINT ["/usr/local/bin/dray"]
`

// cluster is a dray server and two agents, each in a container on a
// network of their own.
type cluster struct {
	t       *testing.T // the test that made it, for its cleanup
	docker  *docker.Client
	id      string // dray-mh-<random>: the prefix of every name, and the value of testLabel
	image   string // dray and busybox
	busybox string // the image of docker tasks
	network string
	// Container names. An agent's is also its --name, so its identity
	// survives a restart of its container.
	server string
	agentA string // labels eu; the local executor only
	agentB string // labels eu, gpu; local and docker (it has the engine's socket)

	adminToken string
	agentToken string
	// api talks to the server at its published port, with the admin token.
	api *client.Client
}

// startCluster builds dray, starts the server and both agents, and waits
// until both agents are active. Everything is removed when the test ends.
func startCluster(t *testing.T) *cluster {
	t.Helper()
	c := &cluster{t: t, docker: dockertest.Client(t), busybox: dockertest.BusyboxImage(t)}
	c.id = "dray-mh-" + randomHex(t, 4)
	c.image = c.id + ":test"
	c.network = c.id
	c.server = c.id + "-server"
	c.agentA = c.id + "-a"
	c.agentB = c.id + "-b"
	// Cleanups run last first: the logs are read before the containers go.
	t.Cleanup(c.remove)
	t.Cleanup(func() {
		if t.Failed() || os.Getenv(logsEnv) == "1" {
			c.dumpLogs()
		}
	})

	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	bin := buildDray(t)
	files := map[string]string{"dray": bin, "busybox": dockertest.BusyboxPath}
	if err := dockertest.BuildImage(ctx, c.docker, c.image, imageDockerfile, files); err != nil {
		t.Fatal(err)
	}
	if _, err := c.docker.NetworkCreate(ctx, c.network, docker.NetworkCreateOptions{
		Driver: "bridge", Labels: map[string]string{testLabel: c.id},
	}); err != nil {
		t.Fatalf("create network %s: %v", c.network, err)
	}

	// The server's project and state (.dray/) live in its container, so a
	// restart of the container keeps them.
	port := network.MustParsePort(serverPort)
	err := c.create(ctx, c.server, &container.Config{
		Cmd:          []string{"server", "--listen", "0.0.0.0:8080", "--no-agent", "--agent-lease", lease.String()},
		Env:          []string{"DRAY_ADMIN_PASSWORD=" + randomHex(t, 12)},
		ExposedPorts: network.PortSet{port: {}},
	}, &container.HostConfig{PortBindings: network.PortMap{
		port: {{HostIP: netip.MustParseAddr("127.0.0.1")}}, // a free port, picked by the engine
	}})
	if err != nil {
		t.Fatal(err)
	}
	project, err := projectTar(c.busybox)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.docker.CopyToContainer(ctx, c.server, docker.CopyToContainerOptions{DestinationPath: "/project", Content: project}); err != nil {
		t.Fatalf("copy the project into %s: %v", c.server, err)
	}
	if _, err := c.docker.ContainerStart(ctx, c.server, docker.ContainerStartOptions{}); err != nil {
		t.Fatalf("start %s: %v", c.server, err)
	}
	// Tokens are made on the server's host, next to its store.
	c.waitServer(t, "")
	if c.adminToken, err = c.exec(ctx, c.server, "dray", "token", "create", "--name", "multihost-admin", "--role", "admin"); err != nil {
		t.Fatal(err)
	}
	if c.agentToken, err = c.exec(ctx, c.server, "dray", "token", "create", "--name", "multihost-agents", "--role", "agent"); err != nil {
		t.Fatal(err)
	}
	c.waitServer(t, c.adminToken)

	// Agents poll for 1s: a heartbeat a second, well within the short lease.
	env := []string{"DRAY_SERVER=http://" + c.server + ":8080", "DRAY_TOKEN=" + c.agentToken}
	if err := c.create(ctx, c.agentA, &container.Config{
		Cmd: []string{"agent", "--name", c.agentA, "--labels", "eu", "--capacity", "4", "--poll", "1s", "--executors", "local"},
		Env: env,
	}, &container.HostConfig{}); err != nil {
		t.Fatal(err)
	}
	sock, err := engineSocket(c.docker)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.create(ctx, c.agentB, &container.Config{
		Cmd: []string{"agent", "--name", c.agentB, "--labels", "eu,gpu", "--capacity", "4", "--poll", "1s"},
		Env: env,
	}, &container.HostConfig{Binds: []string{sock + ":/var/run/docker.sock"}}); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{c.agentA, c.agentB} {
		if _, err := c.docker.ContainerStart(ctx, name, docker.ContainerStartOptions{}); err != nil {
			t.Fatalf("start %s: %v", name, err)
		}
	}
	c.waitAgents(t, time.Time{}, c.agentA, c.agentB)
	return c
}

// buildDray builds dray as it ships: static, without -race.
func buildDray(t *testing.T) string {
	t.Helper()
	goCmd, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the test builds dray with the go command, which is not on PATH: %v", err)
	}
	bin := filepath.Join(t.TempDir(), "dray")
	cmd := exec.Command(goCmd, "build", "-o", bin, "github.com/dray-dev/dray/cmd/dray")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build dray: %v\n%s", err, out)
	}
	return bin
}

// engineSocket returns the path of the engine's socket on this machine, for
// agent B to reach the engine through.
func engineSocket(cli *docker.Client) (string, error) {
	host := cli.DaemonHost()
	path, ok := strings.CutPrefix(host, "unix://")
	if !ok {
		return "", fmt.Errorf("the engine is at %s: the test mounts the engine's socket into an agent, so it needs a local engine with a unix socket", host)
	}
	return path, nil
}

// create creates a container of the test image on the cluster's network.
func (c *cluster) create(ctx context.Context, name string, cfg *container.Config, hc *container.HostConfig) error {
	cfg.Image = c.image
	cfg.Labels = map[string]string{testLabel: c.id}
	hc.NetworkMode = container.NetworkMode(c.network)
	_, err := c.docker.ContainerCreate(ctx, docker.ContainerCreateOptions{Name: name, Config: cfg, HostConfig: hc})
	if err != nil {
		return fmt.Errorf("create container %s: %w", name, err)
	}
	return nil
}

// waitServer waits until the server answers at its published port (which
// may change when its container restarts) and points c.api at it, with
// token.
func (c *cluster) waitServer(t *testing.T, token string) {
	t.Helper()
	ctx := t.Context()
	waitFor(t, 60*time.Second, "the server to answer", func() (bool, error) {
		ins, err := c.docker.ContainerInspect(ctx, c.server, docker.ContainerInspectOptions{})
		if err != nil {
			return false, err
		}
		if st := ins.Container.State; st == nil || !st.Running {
			return false, fmt.Errorf("container %s is not running", c.server)
		}
		var bindings []network.PortBinding
		if ns := ins.Container.NetworkSettings; ns != nil {
			bindings = ns.Ports[network.MustParsePort(serverPort)]
		}
		if len(bindings) == 0 || bindings[0].HostPort == "" {
			return false, fmt.Errorf("container %s publishes no port for %s", c.server, serverPort)
		}
		api, err := client.New("http://127.0.0.1:"+bindings[0].HostPort, token, client.WithTimeout(10*time.Second))
		if err != nil {
			return false, err
		}
		if _, err := api.Readyz(ctx); err != nil {
			return false, err
		}
		c.api = api
		return true, nil
	})
}

// exec runs a command in a container and returns its standard output,
// trimmed.
func (c *cluster) exec(ctx context.Context, name string, cmd ...string) (string, error) {
	ex, err := c.docker.ExecCreate(ctx, name, docker.ExecCreateOptions{Cmd: cmd, AttachStdout: true, AttachStderr: true})
	if err != nil {
		return "", fmt.Errorf("exec %q in %s: %w", cmd, name, err)
	}
	att, err := c.docker.ExecAttach(ctx, ex.ID, docker.ExecAttachOptions{})
	if err != nil {
		return "", fmt.Errorf("exec %q in %s: %w", cmd, name, err)
	}
	defer att.Close()
	var stdout, stderr bytes.Buffer
	if _, err := stdcopy.StdCopy(&stdout, &stderr, att.Reader); err != nil {
		return "", fmt.Errorf("exec %q in %s: read its output: %w", cmd, name, err)
	}
	ins, err := c.docker.ExecInspect(ctx, ex.ID, docker.ExecInspectOptions{})
	if err != nil {
		return "", fmt.Errorf("exec %q in %s: %w", cmd, name, err)
	}
	if ins.ExitCode != 0 {
		return "", fmt.Errorf("exec %q in %s: exit %d: %s", cmd, name, ins.ExitCode, strings.TrimSpace(stderr.String()))
	}
	return strings.TrimSpace(stdout.String()), nil
}

// kill kills a container with SIGKILL, as `docker kill` does.
func (c *cluster) kill(t *testing.T, name string) {
	t.Helper()
	if _, err := c.docker.ContainerKill(t.Context(), name, docker.ContainerKillOptions{Signal: "KILL"}); err != nil {
		t.Fatalf("docker kill %s: %v", name, err)
	}
}

// start starts a stopped container, as `docker start` does.
func (c *cluster) start(t *testing.T, name string) {
	t.Helper()
	if _, err := c.docker.ContainerStart(t.Context(), name, docker.ContainerStartOptions{}); err != nil {
		t.Fatalf("docker start %s: %v", name, err)
	}
}

// restart restarts a container, as `docker restart -t grace` does: SIGTERM,
// SIGKILL after grace seconds, start.
func (c *cluster) restart(t *testing.T, name string, grace int) {
	t.Helper()
	if _, err := c.docker.ContainerRestart(t.Context(), name, docker.ContainerRestartOptions{Timeout: &grace}); err != nil {
		t.Fatalf("docker restart %s: %v", name, err)
	}
}

// disconnect takes a container off the cluster's network, as `docker
// network disconnect` does; connect puts it back.
func (c *cluster) disconnect(t *testing.T, name string) {
	t.Helper()
	if _, err := c.docker.NetworkDisconnect(t.Context(), c.network, docker.NetworkDisconnectOptions{Container: name}); err != nil {
		t.Fatalf("docker network disconnect %s %s: %v", c.network, name, err)
	}
}

func (c *cluster) connect(t *testing.T, name string) {
	t.Helper()
	if _, err := c.docker.NetworkConnect(t.Context(), c.network, docker.NetworkConnectOptions{Container: name}); err != nil {
		t.Fatalf("docker network connect %s %s: %v", c.network, name, err)
	}
}

// containerLog returns a container's log (both streams, with timestamps)
// since a time (zero: all of it), across its restarts.
func (c *cluster) containerLog(ctx context.Context, name string, since time.Time) (string, error) {
	opts := docker.ContainerLogsOptions{ShowStdout: true, ShowStderr: true, Timestamps: true}
	if !since.IsZero() {
		opts.Since = since.UTC().Format(time.RFC3339Nano)
	}
	rc, err := c.docker.ContainerLogs(ctx, name, opts)
	if err != nil {
		return "", fmt.Errorf("docker logs %s: %w", name, err)
	}
	defer rc.Close()
	var buf bytes.Buffer
	if _, err := stdcopy.StdCopy(&buf, &buf, rc); err != nil {
		return buf.String(), fmt.Errorf("docker logs %s: %w", name, err)
	}
	return buf.String(), nil
}

// dumpLogs puts the containers' logs into the test's log.
func (c *cluster) dumpLogs() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, name := range []string{c.server, c.agentA, c.agentB} {
		out, err := c.containerLog(ctx, name, time.Time{})
		if err != nil {
			c.t.Logf("%v", err)
		}
		c.t.Logf("docker logs %s:\n%s", name, out)
	}
}

// remove removes what the test created: the task containers its agents
// started, its containers, its network and its image.
func (c *cluster) remove() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for _, f := range []docker.Filters{
		make(docker.Filters).Add("label", "dray.agent="+c.agentA),
		make(docker.Filters).Add("label", "dray.agent="+c.agentB),
		make(docker.Filters).Add("label", testLabel+"="+c.id),
	} {
		list, err := c.docker.ContainerList(ctx, docker.ContainerListOptions{All: true, Filters: f})
		if err != nil {
			c.t.Logf("cleanup: list containers: %v", err)
			continue
		}
		for _, ct := range list.Items {
			if _, err := c.docker.ContainerRemove(ctx, ct.ID, docker.ContainerRemoveOptions{Force: true, RemoveVolumes: true}); err != nil {
				c.t.Logf("cleanup: remove container %v: %v", ct.Names, err)
			}
		}
	}
	if _, err := c.docker.NetworkRemove(ctx, c.network, docker.NetworkRemoveOptions{}); err != nil {
		c.t.Logf("cleanup: remove network %s: %v", c.network, err)
	}
	if _, err := c.docker.ImageRemove(ctx, c.image, docker.ImageRemoveOptions{Force: true, PruneChildren: true}); err != nil {
		c.t.Logf("cleanup: remove image %s: %v", c.image, err)
	}
}

// waitAgents waits until each named agent is active, has heartbeated in the
// last few seconds and, when since is not zero, registered after since.
func (c *cluster) waitAgents(t *testing.T, since time.Time, names ...string) {
	t.Helper()
	waitFor(t, 60*time.Second, "agents "+strings.Join(names, ", ")+" to be active", func() (bool, error) {
		agents, err := c.api.Agents(t.Context())
		if err != nil {
			return false, err
		}
		for _, name := range names {
			i := slices.IndexFunc(agents, func(a api.Agent) bool { return a.ID == name })
			if i < 0 {
				return false, fmt.Errorf("no agent %s", name)
			}
			a := agents[i]
			switch {
			case a.State != control.AgentActive:
				return false, fmt.Errorf("agent %s is %s", name, a.State)
			case a.HeartbeatAt == nil || time.Since(*a.HeartbeatAt) > 3*time.Second:
				return false, fmt.Errorf("agent %s has not heartbeated lately", name)
			case !since.IsZero() && (a.StartedAt == nil || a.StartedAt.Before(since)):
				return false, fmt.Errorf("agent %s has not registered again", name)
			}
		}
		return true, nil
	})
}

// trigger starts a run of a pipeline and returns its id.
func (c *cluster) trigger(t *testing.T, pipeline string) string {
	t.Helper()
	rec, err := c.api.Trigger(t.Context(), api.TriggerRequest{Pipeline: pipeline})
	if err != nil {
		t.Fatalf("trigger %s: %v", pipeline, err)
	}
	return rec.ID
}

// waitRun waits until a run has ended and returns its record. Calls that
// fail meanwhile (a server restarting) are tried again.
func (c *cluster) waitRun(t *testing.T, id string, timeout time.Duration) *control.RunRecord {
	t.Helper()
	var rec *control.RunRecord
	waitFor(t, timeout, "run "+id+" to end", func() (bool, error) {
		r, err := c.api.Run(t.Context(), id)
		if err != nil {
			return false, err
		}
		rec = r
		switch r.State {
		case "succeeded", "failed", "canceled":
			return true, nil
		}
		return false, fmt.Errorf("run is %s:\n%s", r.State, describeRun(r))
	})
	return rec
}

// attempts returns a run's attempts, of one task when task is set.
func (c *cluster) attempts(t *testing.T, run, task string) []api.Attempt {
	t.Helper()
	atts, err := c.api.Attempts(t.Context(), run, task)
	if err != nil {
		t.Fatalf("attempts of run %s: %v", run, err)
	}
	return atts
}

// waitRunning waits until a task has an attempt running and at least
// lines lines in its log, and returns that attempt.
func (c *cluster) waitRunning(t *testing.T, run, task string, lines int) api.Attempt {
	t.Helper()
	var got api.Attempt
	waitFor(t, 60*time.Second, fmt.Sprintf("task %s to run and log %d lines", task, lines), func() (bool, error) {
		atts, err := c.api.Attempts(t.Context(), run, task)
		if err != nil {
			return false, err
		}
		i := slices.IndexFunc(atts, func(a api.Attempt) bool { return a.State == "running" })
		if i < 0 {
			return false, fmt.Errorf("no attempt running: %s", describeAttempts(atts))
		}
		page, err := c.api.AttemptLogs(t.Context(), atts[i].ID, 0, lines)
		if err != nil {
			return false, err
		}
		if len(page.Lines) < lines {
			return false, fmt.Errorf("%d lines logged", len(page.Lines))
		}
		got = atts[i]
		return true, nil
	})
	return got
}

// logged returns how many lines of an attempt's log the server has.
func (c *cluster) logged(t *testing.T, attempt int64) int {
	t.Helper()
	page, err := c.api.AttemptLogs(t.Context(), attempt, 0, 10000)
	if err != nil {
		t.Fatalf("log of attempt %d: %v", attempt, err)
	}
	return len(page.Lines)
}

// taskLog returns every line of a task's log, attempt after attempt.
func (c *cluster) taskLog(t *testing.T, run, task string) []api.LogLine {
	t.Helper()
	page, err := c.api.RunLogs(t.Context(), run, client.LogOptions{Task: task})
	if err != nil {
		t.Fatalf("log of task %s of run %s: %v", task, run, err)
	}
	return page.Lines
}

// waitFor calls check every 200ms until it reports true, and fails t when
// that takes longer than timeout, with check's last error.
func waitFor(t *testing.T, timeout time.Duration, what string, check func() (bool, error)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, err := check()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("waited %s for %s: %v", timeout, what, err)
		}
		select {
		case <-time.After(200 * time.Millisecond):
		case <-t.Context().Done():
			t.Fatalf("waiting for %s: %v", what, t.Context().Err())
		}
	}
}

// describeRun says what each task of a run is doing, for failure messages.
func describeRun(r *control.RunRecord) string {
	var b strings.Builder
	fmt.Fprintf(&b, "run %s %s %s", r.ID, r.State, r.Reason)
	for _, tr := range r.Tasks {
		fmt.Fprintf(&b, "\n  %s: %s, %d attempts, reason %q", tr.Name, tr.State, tr.Attempts, tr.Reason)
		if tr.Waiting != "" {
			fmt.Fprintf(&b, ", %s", tr.Waiting)
		}
	}
	return b.String()
}

// describeAttempts lists attempts with their agents and reasons.
func describeAttempts(atts []api.Attempt) string {
	if len(atts) == 0 {
		return "no attempts"
	}
	var b strings.Builder
	for _, a := range atts {
		fmt.Fprintf(&b, "\n  %s #%d (id %d): %s on %q, reason %q", a.Task, a.Number, a.ID, a.State, a.Agent, a.Reason)
	}
	return b.String()
}

// checkLines checks that a task's log is exactly want: every line once, in
// order, all of attempt number attempt.
func checkLines(t *testing.T, task string, got []api.LogLine, attempt int, want []string) {
	t.Helper()
	texts := make([]string, len(got))
	for i, l := range got {
		texts[i] = l.Text
	}
	if i := slices.IndexFunc(got, func(l api.LogLine) bool { return l.Attempt != attempt }); i >= 0 {
		t.Errorf("log of %s: line %q is of attempt %d, want every line of attempt %d", task, got[i].Text, got[i].Attempt, attempt)
	}
	if slices.Equal(texts, want) {
		return
	}
	count := map[string]int{}
	for _, s := range texts {
		count[s]++
	}
	var missing, repeated []string
	for _, w := range want {
		switch {
		case count[w] == 0:
			missing = append(missing, w)
		case count[w] > 1:
			repeated = append(repeated, w)
		}
	}
	first := 0
	for first < min(len(texts), len(want)) && texts[first] == want[first] {
		first++
	}
	at := func(s []string, i int) string {
		if i < len(s) {
			return fmt.Sprintf("%q", s[i])
		}
		return "(end)"
	}
	t.Errorf("log of %s: %d lines, want %d; %d missing %s, %d repeated %s; first difference at line %d: %s, want %s",
		task, len(texts), len(want), len(missing), head(missing), len(repeated), head(repeated), first+1, at(texts, first), at(want, first))
}

// head shows the first few of a list.
func head(s []string) string {
	if len(s) > 5 {
		return fmt.Sprintf("%q…", s[:5])
	}
	return fmt.Sprintf("%q", s)
}

// numbered returns prefix 1 … prefix n.
func numbered(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s %d", prefix, i+1)
	}
	return out
}

func randomHex(t *testing.T, n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// projectTar returns the project (see projectFiles) as a tar archive to
// copy into the server's container.
func projectTar(busybox string) (*bytes.Buffer, error) {
	files := projectFiles(busybox)
	names := make([]string, 0, len(files))
	for name := range files {
		names = append(names, name)
	}
	sort.Strings(names)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&tar.Header{Name: "pipelines/", Mode: 0o755, Typeflag: tar.TypeDir}); err != nil {
		return nil, err
	}
	for _, name := range names {
		body := files[name]
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(body)), Typeflag: tar.TypeReg}); err != nil {
			return nil, err
		}
		if _, err := tw.Write([]byte(body)); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return &buf, nil
}
