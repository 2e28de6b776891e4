package awsfake

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/pkg/stdcopy"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"
)

// Timeouts of the fake's engine calls.
const (
	callTimeout = 30 * time.Second
	// startTimeout bounds creating and starting a container, which a busy
	// engine makes slow.
	startTimeout = 2 * time.Minute
	// startSlots is how many tasks start their containers at once.
	startSlots = 4
	// stopGrace is how long a stopped task's container has between SIGTERM
	// and SIGKILL. ECS gives 30s by default; tests want it short.
	stopGrace = 2 * time.Second
	// drainDelay is how long the log stream may stay open after the
	// container exited before it is read again from the engine's store.
	drainDelay = 5 * time.Second
)

// runTask takes a task from PROVISIONING to STOPPED, running its essential
// container on the engine.
func (s *Server) runTask(t *task) {
	defer s.wg.Done()
	log := s.log.With("task", t.id, "family", t.def.Family)
	if t.stuck {
		<-t.stop
		s.update(t, func() { t.stopped(StopUserInitiated, ReasonUserStopped) })
		return
	}
	// Tasks wait in PROVISIONING for a start slot, as on Fargate, so that
	// hundreds of tasks do not swamp the engine with container starts.
	select {
	case s.startSlots <- struct{}{}:
	case <-t.stop:
		s.update(t, func() { t.stopped(StopUserInitiated, ReasonUserStopped) })
		return
	}
	released := false
	release := func() {
		if !released {
			released = true
			<-s.startSlots
		}
	}
	defer release()
	s.update(t, func() {
		t.lastStatus = "PENDING"
		t.pullStartedAt = time.Now()
	})
	image := t.run.Image
	if local, ok := s.images[image]; ok {
		image = local
	}
	if err := s.pull(image, t.run.Image); err != nil {
		log.Debug("task failed to start", "image", image, "err", err)
		s.update(t, func() {
			t.pullStoppedAt = time.Now()
			for _, c := range t.containers {
				c.Reason = err.Error()
			}
			t.stopped(StopTaskFailedToStart, err.Error())
		})
		return
	}
	s.update(t, func() { t.pullStoppedAt = time.Now() })
	select {
	case <-t.stop:
		s.update(t, func() { t.stopped(StopUserInitiated, ReasonUserStopped) })
		return
	default:
	}

	id, err := s.startContainer(t, image)
	if err != nil {
		log.Warn("task container did not start", "err", err)
		s.update(t, func() {
			for _, c := range t.containers {
				c.Reason = "CannotStartContainerError: " + err.Error()
			}
			t.stopped(StopTaskFailedToStart, "CannotStartContainerError: "+err.Error())
		})
		return
	}

	release()

	// The stream exists from the task's start, so that a follower can read
	// it as soon as the task runs.
	group, stream, logs := t.logTarget()
	if logs {
		s.mu.Lock()
		s.ensureStream(group, stream)
		s.mu.Unlock()
	}
	s.update(t, func() {
		t.lastStatus = "RUNNING"
		t.startedAt = time.Now()
		for _, c := range t.containers {
			c.LastStatus = "RUNNING"
			if c.Name == t.run.Name {
				c.RuntimeID = id
			}
		}
	})
	logsDone := make(chan struct{})
	if logs {
		go func() {
			defer close(logsDone)
			s.shipLogs(id, group, stream)
		}()
	} else {
		close(logsDone)
	}

	code, err := s.waitContainer(t, id)
	if err != nil {
		log.Warn("wait for task container", "err", err)
	}
	s.update(t, func() { t.lastStatus = "DEPROVISIONING" })
	<-logsDone

	oom := false
	if code == 137 && t.memoryMiB > 0 {
		select {
		case <-t.stop: // killed by StopTask, not by the memory limit
		default:
			oom = true
		}
	}
	if !oom {
		oom = s.oomKilled(id)
	}
	// Removed before the task shows STOPPED, so that a stopped task has no container left.
	s.removeContainer(id)
	s.update(t, func() {
		for _, c := range t.containers {
			if c.Name == t.run.Name {
				c.ExitCode = &code
				if oom {
					c.Reason = ReasonOOM
				}
			}
		}
		t.stopped(StopEssentialContainerExited, ReasonEssentialExited)
	})
	log.Debug("task stopped", "exit_code", code, "oom", oom)
}

// pull checks that the engine has image (the local tag of the ECS image
// name ecsImage); the fake never pulls. It returns the reason ECS gives when
// a pull fails.
func (s *Server) pull(image, ecsImage string) error {
	if slices.Contains(s.Faults().PullFails, ecsImage) {
		return fmt.Errorf("CannotPullContainerError: pull image manifest has been retried 5 time(s): failed to resolve ref %s: not found", ecsImage)
	}
	if s.docker == nil {
		return errors.New("CannotPullContainerError: the fake has no Docker engine (Config.Docker)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	if _, err := s.docker.ImageInspect(ctx, image); err != nil {
		if cerrdefs.IsNotFound(err) {
			return fmt.Errorf("CannotPullContainerError: pull image manifest has been retried 5 time(s): failed to resolve ref %s: not found", ecsImage)
		}
		return fmt.Errorf("CannotPullContainerError: inspect image %s: %v", image, err)
	}
	return nil
}

// startContainer creates and starts the task's essential container and
// returns its ID.
func (s *Server) startContainer(t *task, image string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	cfg := &container.Config{
		Image:      image,
		Cmd:        t.run.Command,
		Entrypoint: t.run.EntryPoint,
		WorkingDir: t.run.WorkingDirectory,
		Labels:     map[string]string{LabelServer: s.id, labelTask: t.id},
	}
	for _, kv := range t.run.Environment {
		cfg.Env = append(cfg.Env, kv.Name+"="+kv.Value)
	}
	// An init process as PID 1, so that SIGTERM from StopTask reaches the
	// command as it does on ECS.
	hostCfg := &container.HostConfig{Init: new(true)}
	if t.memoryMiB > 0 {
		hostCfg.Memory = int64(t.memoryMiB) << 20
		hostCfg.MemorySwap = hostCfg.Memory
	}
	created, err := s.docker.ContainerCreate(ctx, client.ContainerCreateOptions{
		Config: cfg, HostConfig: hostCfg, Name: "awsfake-" + s.id + "-" + t.id,
	})
	if err != nil {
		return "", fmt.Errorf("create container: %w", err)
	}
	if _, err := s.docker.ContainerStart(ctx, created.ID, client.ContainerStartOptions{}); err != nil {
		s.removeContainer(created.ID)
		return "", fmt.Errorf("start container: %w", err)
	}
	return created.ID, nil
}

// waitContainer waits for the container to exit, sending it SIGTERM and,
// after stopGrace, SIGKILL once the task is asked to stop. It returns the
// exit code.
func (s *Server) waitContainer(t *task, id string) (int, error) {
	w := s.docker.ContainerWait(context.Background(), id, client.ContainerWaitOptions{Condition: container.WaitConditionNotRunning})
	stop := t.stop
	var kill <-chan time.Time
	for {
		select {
		case res := <-w.Result:
			return int(res.StatusCode), nil
		case err := <-w.Error:
			return -1, fmt.Errorf("wait for container %s: %w", id, err)
		case <-stop:
			stop = nil
			s.signal(id, "TERM")
			kill = time.After(stopGrace)
		case <-kill:
			kill = nil
			s.signal(id, "KILL")
		}
	}
}

func (s *Server) signal(id, signal string) {
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	_, err := s.docker.ContainerKill(ctx, id, client.ContainerKillOptions{Signal: signal})
	if err != nil && !cerrdefs.IsNotFound(err) && !cerrdefs.IsConflict(err) {
		s.log.Warn("signal task container", "container", id, "signal", signal, "err", err)
	}
}

// oomKilled reports whether the engine says the container was OOM-killed.
func (s *Server) oomKilled(id string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	ins, err := s.docker.ContainerInspect(ctx, id, client.ContainerInspectOptions{})
	return err == nil && ins.Container.State != nil && ins.Container.State.OOMKilled
}

func (s *Server) removeContainer(id string) {
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	_, err := s.docker.ContainerRemove(ctx, id, client.ContainerRemoveOptions{Force: true, RemoveVolumes: true})
	if err != nil && !cerrdefs.IsNotFound(err) {
		s.log.Warn("remove task container", "container", id, "err", err)
	}
}

// removeContainers removes every container labelled with the Server's ID.
func (s *Server) removeContainers() error {
	if s.docker == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	list, err := s.docker.ContainerList(ctx, client.ContainerListOptions{
		All: true, Filters: make(client.Filters).Add("label", LabelServer+"="+s.id),
	})
	if err != nil {
		return fmt.Errorf("list the fake's containers: %w", err)
	}
	var errs []error
	for _, c := range list.Items {
		_, err := s.docker.ContainerRemove(ctx, c.ID, client.ContainerRemoveOptions{Force: true, RemoveVolumes: true})
		if err != nil && !cerrdefs.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("remove container %s: %w", c.ID, err))
		}
	}
	return errors.Join(errs...)
}

// shipLogs copies the container's stdout and stderr, line by line, to a log
// stream while it runs, and returns once the whole log is copied.
func (s *Server) shipLogs(id, group, stream string) {
	stdout := &logWriter{s: s, group: group, stream: stream}
	stderr := &logWriter{s: s, group: group, stream: stream}
	followed := make(chan error, 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { followed <- s.readLogs(ctx, id, true, stdout, stderr) }()
	// The followed stream ends once the container has stopped; but Docker
	// 20.10 may drop the last lines of a container that just stopped, so
	// the stored log is read again, skipping the messages already copied.
	var err error
	select {
	case err = <-followed:
	case <-s.exited(id):
		t := time.NewTimer(drainDelay)
		select {
		case err = <-followed:
		case <-t.C:
			cancel()
			err = <-followed
		}
		t.Stop()
	}
	if err != nil {
		s.log.Debug("following task log broke; reading it again", "container", id, "err", err)
	}
	stdout.skip, stdout.frames = stdout.frames, 0
	stderr.skip, stderr.frames = stderr.frames, 0
	if err := s.readLogs(context.Background(), id, false, stdout, stderr); err != nil {
		s.log.Warn("read task log; lines may be missing", "container", id, "err", err)
	}
	stdout.flush()
	stderr.flush()
}

// exited returns a channel closed once the container is not running.
func (s *Server) exited(id string) <-chan struct{} {
	ch := make(chan struct{})
	go func() {
		defer close(ch)
		w := s.docker.ContainerWait(context.Background(), id, client.ContainerWaitOptions{Condition: container.WaitConditionNotRunning})
		select {
		case <-w.Result:
		case <-w.Error:
		}
	}()
	return ch
}

func (s *Server) readLogs(ctx context.Context, id string, follow bool, stdout, stderr *logWriter) error {
	if !follow {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, callTimeout)
		defer cancel()
	}
	rc, err := s.docker.ContainerLogs(ctx, id, client.ContainerLogsOptions{
		ShowStdout: true, ShowStderr: true, Timestamps: true, Follow: follow,
	})
	if err != nil {
		return fmt.Errorf("read container log: %w", err)
	}
	defer rc.Close()
	if _, err := stdcopy.StdCopy(stdout, stderr, rc); err != nil {
		return fmt.Errorf("read container log: %w", err)
	}
	return nil
}

// logWriter turns one stream's log messages (stdcopy writes one per call:
// the engine's timestamp, a space, a line or a part of one) into log events.
type logWriter struct {
	s             *Server
	group, stream string
	buf           []byte    // a line whose end has not come yet
	time          time.Time // of buf's first part
	frames        int       // messages seen in this read
	skip          int       // messages to skip, copied by an earlier read
}

func (w *logWriter) Write(p []byte) (int, error) {
	w.frames++
	if w.frames <= w.skip {
		return len(p), nil
	}
	ts, text := time.Now(), p
	if i := bytes.IndexByte(p, ' '); i > 0 {
		if t, err := time.Parse(time.RFC3339Nano, string(p[:i])); err == nil {
			ts, text = t, p[i+1:]
		}
	}
	for len(text) > 0 {
		if len(w.buf) == 0 {
			w.time = ts
		}
		i := bytes.IndexByte(text, '\n')
		if i < 0 {
			w.buf = append(w.buf, text...)
			break
		}
		w.buf = append(w.buf, text[:i]...)
		w.s.appendLog(w.group, w.stream, w.time, string(w.buf))
		w.buf = w.buf[:0]
		text = text[i+1:]
	}
	return len(p), nil
}

// flush stores a last line that had no line ending.
func (w *logWriter) flush() {
	if len(w.buf) > 0 {
		w.s.appendLog(w.group, w.stream, w.time, string(w.buf))
		w.buf = nil
	}
}
