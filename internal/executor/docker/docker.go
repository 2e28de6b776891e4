// Package docker runs task attempts as containers on a Docker Engine.
//
// Each attempt is one container, created with labels that name it
// (dray.managed=true, dray.attempt, and the Spec's labels such as dray.agent),
// started with an init process as PID 1 so that signals reach the task, and
// followed through the engine's API: its log for output lines, its exit for the
// result. Nothing on the agent's file system is shared with the container (the
// agent may itself run in a container): the $DRAY_OUTPUT file is read back
// from the exited container, which is then removed.
//
// A container outlives the agent, so Recover re-attaches to it after an agent
// restart from the handle's State, or by its labels when no State was saved.
// Orphans removes containers an agent started that no attempt owns any more.
// The shape of the interface an agent can use for it:
//
//	type OrphanRemover interface {
//		Orphans(ctx context.Context, agentID string, keep func(attemptID int64) bool) (removed []string, err error)
//	}
package docker

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"

	"github.com/dray-dev/dray/internal/executor"
)

// Labels the executor puts on every container it creates, besides Spec.Labels.
const (
	LabelManaged = "dray.managed" // always "true"
	LabelAttempt = "dray.attempt" // Spec.AttemptID
	LabelAgent   = "dray.agent"   // from Spec.Labels: the agent that started it
)

// Where the $DRAY_OUTPUT file lives inside a container. The folder is copied
// into the container, empty and world-writable, before it starts.
const (
	outputsDir  = "/.dray"
	outputsFile = outputsDir + "/output.json"
)

// Pull policies (Spec.Options["pull"]).
const (
	PullNever   = "never"
	PullMissing = "missing" // the default
	PullAlways  = "always"
)

// cleanupTimeout bounds the engine calls made after an attempt's own context
// is gone: removing a container, reading its outputs.
const cleanupTimeout = 30 * time.Second

// Config configures an Executor. The zero value is usable.
type Config struct {
	// Host is the engine's address (unix:///var/run/docker.sock,
	// tcp://host:2376). Empty means DOCKER_HOST, or the default socket when
	// that is unset. The TLS settings and DOCKER_API_VERSION are read from the
	// environment too.
	Host string
	// Logger receives the executor's own diagnostics (not the task's output).
	// Nil means slog.Default().
	Logger *slog.Logger
}

// Executor runs attempts as Docker containers. It implements
// executor.Executor and is safe for concurrent use. Constructing one does not
// contact the engine: an engine that is down is reported by Start.
type Executor struct {
	host string
	log  *slog.Logger

	mu      sync.Mutex
	clients map[string]*client.Client // by the host asked for ("" is Config.Host)
}

var _ executor.Executor = (*Executor)(nil)

// New returns an Executor configured by cfg.
func New(cfg Config) *Executor {
	e := &Executor{host: cfg.Host, log: cfg.Logger, clients: map[string]*client.Client{}}
	if e.log == nil {
		e.log = slog.Default()
	}
	return e
}

// Close releases the connections to the engines. Handles still running keep
// working; Close is for when the executor is no longer used.
func (e *Executor) Close() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	for host, cli := range e.clients {
		_ = cli.Close()
		delete(e.clients, host)
	}
	return nil
}

// client returns the client of the engine at host (empty: Config.Host), made
// on first use. The API version is negotiated on the first request.
func (e *Executor) client(host string) (*client.Client, error) {
	if host == "" {
		host = e.host
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if cli, ok := e.clients[host]; ok {
		return cli, nil
	}
	opts := []client.Opt{client.FromEnv}
	if host != "" {
		opts = append(opts, client.WithHost(host))
	}
	cli, err := client.New(opts...)
	if err != nil {
		if host == "" {
			host = "DOCKER_HOST"
		}
		return nil, fmt.Errorf("docker engine at %s: %w", host, err)
	}
	e.clients[host] = cli
	return cli, nil
}

// Start creates a container for spec, starts it and returns at once.
//
// With spec.Run the container runs `sh -c <Run>` (as its entrypoint) in
// spec.Image or, without one, in the image of the profile option "image".
// Otherwise it runs spec.Image with spec.Command as its command (empty: the
// image's default). The option "pull" says when to pull the image: "never",
// "missing" (the default) or "always". The option "network" names a network
// the container joins; "host" names another engine than Config.Host.
//
// The container gets spec.Env, plus DRAY_OUTPUT naming a file in a folder of
// its own; spec.Workdir as its working directory (inside the container) when
// set; spec.Resources as CPU and memory limits (the memory limit includes
// swap, so there is none); spec.Labels and the executor's labels; a unique
// name dray-<attempt>-<random>.
//
// Output lines go to sink one call at a time; a nil sink discards them. ctx
// bounds Start only (pulling the image included): Stop ends an attempt. An
// error means no container is left running; it says what went wrong in the
// engine's words (an unreachable engine, an image not found, a command that
// cannot start).
func (e *Executor) Start(ctx context.Context, spec *executor.Spec, sink executor.LogSink) (executor.Handle, error) {
	h, err := e.start(ctx, spec, sink)
	var unreachable *unreachableError
	if errors.As(err, &unreachable) {
		return nil, unreachable // what a user needs to know, not which call found it out
	}
	return h, err
}

func (e *Executor) start(ctx context.Context, spec *executor.Spec, sink executor.LogSink) (executor.Handle, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("start container: %w", err)
	}
	if spec == nil {
		return nil, errors.New("start container: no spec")
	}
	if sink == nil {
		sink = executor.LogFunc(func(executor.Line) {})
	}
	opts, err := parseOptions(spec.Options)
	if err != nil {
		return nil, fmt.Errorf("start container: %w", err)
	}
	cfg, err := containerConfig(spec, opts)
	if err != nil {
		return nil, fmt.Errorf("start container: %w", err)
	}
	cli, err := e.client(opts.host)
	if err != nil {
		return nil, err
	}
	if err := e.ensureImage(ctx, cli, cfg.Image, opts.pull); err != nil {
		return nil, err
	}

	hostCfg := &container.HostConfig{
		Init:        new(true),
		NetworkMode: container.NetworkMode(opts.network),
	}
	if spec.Resources.MilliCPU > 0 {
		hostCfg.NanoCPUs = spec.Resources.MilliCPU * 1_000_000
	}
	if spec.Resources.MemoryBytes > 0 {
		hostCfg.Memory = spec.Resources.MemoryBytes
		hostCfg.MemorySwap = spec.Resources.MemoryBytes
	}
	name, err := containerName(spec.AttemptID)
	if err != nil {
		return nil, fmt.Errorf("start container: %w", err)
	}
	created, err := cli.ContainerCreate(ctx, client.ContainerCreateOptions{Config: cfg, HostConfig: hostCfg, Name: name})
	if err != nil {
		return nil, fmt.Errorf("create container for image %s: %w", cfg.Image, engineError(ctx, cli, err))
	}
	id := created.ID
	for _, w := range created.Warnings {
		e.log.Warn("docker engine warning on container create", "container", name, "warning", w)
	}
	if err := e.startContainer(ctx, cli, id); err != nil {
		e.remove(cli, id)
		return nil, err
	}
	h := newHandle(e, cli, id, sink)
	go h.follow()
	e.log.Debug("container started", "container", name, "id", shortID(id), "image", cfg.Image,
		"run", spec.RunID, "task", spec.Task, "attempt", spec.Attempt, "attempt_id", spec.AttemptID)
	return h, nil
}

// startContainer gives a created container its outputs folder and starts it.
func (e *Executor) startContainer(ctx context.Context, cli *client.Client, id string) error {
	dir, err := outputsDirTar()
	if err != nil {
		return fmt.Errorf("start container: %w", err)
	}
	if _, err := cli.CopyToContainer(ctx, id, client.CopyToContainerOptions{DestinationPath: "/", Content: dir}); err != nil {
		return fmt.Errorf("start container: make the outputs folder %s: %w", outputsDir, engineError(ctx, cli, err))
	}
	if _, err := cli.ContainerStart(ctx, id, client.ContainerStartOptions{}); err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("start container: %w", ctx.Err())
		}
		return fmt.Errorf("container cannot start: %w", engineError(ctx, cli, err))
	}
	return nil
}

// remove force-removes a container and its anonymous volumes, logging a
// failure; a container that is already gone is not one.
func (e *Executor) remove(cli *client.Client, id string) {
	ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
	defer cancel()
	_, err := cli.ContainerRemove(ctx, id, client.ContainerRemoveOptions{Force: true, RemoveVolumes: true})
	if err != nil && !cerrdefs.IsNotFound(err) {
		e.log.Warn("remove container", "id", shortID(id), "err", err)
	}
}

// options are the profile options the executor reads.
type options struct {
	image   string
	pull    string
	network string
	host    string
}

// parseOptions reads the options from a Spec's Options. Other options (such
// as kill_grace, which the agent reads) are ignored.
func parseOptions(m map[string]any) (options, error) {
	var o options
	for key, dst := range map[string]*string{"image": &o.image, "pull": &o.pull, "network": &o.network, "host": &o.host} {
		v, ok := m[key]
		if !ok || v == nil {
			continue
		}
		s, ok := v.(string)
		if !ok {
			return o, fmt.Errorf("option %s is %v (%T); want a string", key, v, v)
		}
		*dst = s
	}
	switch o.pull {
	case "":
		o.pull = PullMissing
	case PullNever, PullMissing, PullAlways:
	default:
		return o, fmt.Errorf("option pull is %q; want never, missing or always", o.pull)
	}
	return o, nil
}

// containerConfig returns the container's configuration for spec.
func containerConfig(spec *executor.Spec, opts options) (*container.Config, error) {
	cfg := &container.Config{
		Image:      spec.Image,
		WorkingDir: spec.Workdir,
		Labels:     labels(spec),
	}
	switch {
	case spec.Run != "":
		if cfg.Image == "" {
			cfg.Image = opts.image
		}
		if cfg.Image == "" {
			return nil, errors.New("task runs a shell line but has no image: set option image in the docker executor profile")
		}
		// The entrypoint, not the command: an image's entrypoint must not
		// get the shell line as its arguments.
		cfg.Entrypoint = []string{"sh", "-c"}
		cfg.Cmd = []string{spec.Run}
	case spec.Image != "":
		cfg.Cmd = spec.Command
	default:
		return nil, errors.New("task has neither run nor image")
	}
	env, err := environ(spec.Env)
	if err != nil {
		return nil, err
	}
	cfg.Env = env
	return cfg, nil
}

// labels returns the container's labels: spec.Labels and the executor's own.
func labels(spec *executor.Spec) map[string]string {
	l := maps.Clone(spec.Labels)
	if l == nil {
		l = map[string]string{}
	}
	l[LabelManaged] = "true"
	l[LabelAttempt] = strconv.FormatInt(spec.AttemptID, 10)
	return l
}

// environ returns the container's environment: env, then DRAY_OUTPUT (which
// wins, since Wait reads that file back), sorted by name.
func environ(env map[string]string) ([]string, error) {
	out := make([]string, 0, len(env)+1)
	for k, v := range env {
		if k == "" || strings.ContainsAny(k, "=\x00") {
			return nil, fmt.Errorf("env name %q is not valid", k)
		}
		if k != "DRAY_OUTPUT" {
			out = append(out, k+"="+v)
		}
	}
	out = append(out, "DRAY_OUTPUT="+outputsFile)
	sort.Strings(out)
	return out, nil
}

// containerName returns a name for an attempt's container that no other
// container has, even one of another dray installation on the same engine.
func containerName(attemptID int64) (string, error) {
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("make container name: %w", err)
	}
	return fmt.Sprintf("dray-%d-%s", attemptID, hex.EncodeToString(b)), nil
}

// outputsDirTar returns a tar stream of one empty, world-writable folder, so
// that the task can write its outputs file whatever user it runs as.
func outputsDirTar() (*bytes.Reader, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	err := tw.WriteHeader(&tar.Header{
		Name: strings.TrimPrefix(outputsDir, "/") + "/", Typeflag: tar.TypeDir, Mode: 0o1777, ModTime: time.Now(),
	})
	if err == nil {
		err = tw.Close()
	}
	if err != nil {
		return nil, fmt.Errorf("make outputs folder archive: %w", err)
	}
	return bytes.NewReader(buf.Bytes()), nil
}

// ensureImage makes sure the engine has image, pulling it as policy says.
func (e *Executor) ensureImage(ctx context.Context, cli *client.Client, image, policy string) error {
	if policy != PullAlways {
		_, err := cli.ImageInspect(ctx, image)
		if err == nil {
			return nil
		}
		if !cerrdefs.IsNotFound(err) {
			return fmt.Errorf("inspect image %s: %w", image, engineError(ctx, cli, err))
		}
		if policy == PullNever {
			return fmt.Errorf("image not found: %s (pull: never)", image)
		}
	}
	e.log.Info("pulling image", "image", image, "host", cli.DaemonHost())
	start := time.Now()
	resp, err := cli.ImagePull(ctx, image, client.ImagePullOptions{})
	if err == nil {
		err = resp.Wait(ctx)
	}
	if err != nil {
		if cerrdefs.IsNotFound(err) {
			return fmt.Errorf("image not found: %s: %w", image, err)
		}
		return fmt.Errorf("pull %s: %w", image, engineError(ctx, cli, err))
	}
	e.log.Info("pulled image", "image", image, "took", time.Since(start).Round(time.Millisecond))
	return nil
}

// unreachableError is an engine that could not be reached at all.
type unreachableError struct {
	host string
	err  error // why, such as a missing socket or a permission denied
}

func (e *unreachableError) Error() string {
	return fmt.Sprintf("docker engine unreachable at %s: %v", e.host, e.err)
}

func (e *unreachableError) Unwrap() error { return e.err }

// engineError returns an *unreachableError when err says that the engine
// could not be reached, so that the message says which engine and why (the
// client's own message drops the cause); otherwise err.
func engineError(ctx context.Context, cli *client.Client, err error) error {
	if !client.IsErrConnectionFailed(err) {
		return err
	}
	cause := err
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if conn, derr := cli.Dialer()(dctx); derr != nil {
		cause = derr
	} else {
		conn.Close()
	}
	return &unreachableError{host: cli.DaemonHost(), err: cause}
}

// shortID is a container id as the docker CLI shows it.
func shortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}
