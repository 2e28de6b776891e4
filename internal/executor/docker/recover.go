package docker

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"

	"github.com/dray-dev/dray/internal/executor"
)

// Recover re-attaches to an attempt's container after an agent restart and
// returns a handle as Start does. The container is the one named by state,
// or, when state is empty (the agent died before saving it), the one whose
// labels name spec's attempt (LabelAttempt) and, when spec.Labels has them,
// its agent and run.
//
// The sink gets the container's whole log from its first line, whether it
// still runs or has exited: the lines an earlier handle gave are given again,
// so that none is lost (the agent numbers lines from 1 and the server drops
// those it has). Wait then returns the container's result as for a started
// one, and removes it.
//
// A container that is gone, or was created but never started, cannot be
// followed: Recover removes what is left and returns an error wrapping
// executor.ErrLost. An engine that cannot be reached is another error (the
// container may still be there).
func (e *Executor) Recover(ctx context.Context, spec *executor.Spec, state []byte, sink executor.LogSink) (executor.Handle, error) {
	if spec == nil {
		return nil, errors.New("recover container: no spec")
	}
	if sink == nil {
		sink = executor.LogFunc(func(executor.Line) {})
	}
	var st containerState
	if s := bytes.TrimSpace(state); len(s) > 0 && string(s) != "null" {
		if err := json.Unmarshal(s, &st); err != nil {
			return nil, fmt.Errorf("recover container: decode state %q: %v: %w", state, err, executor.ErrLost)
		}
	}
	host := st.Host
	if host == "" {
		opts, err := parseOptions(spec.Options)
		if err != nil {
			return nil, fmt.Errorf("recover container: %w", err)
		}
		host = opts.host
	}
	cli, err := e.client(host)
	if err != nil {
		return nil, fmt.Errorf("recover container: %w", err)
	}
	id := st.Container
	if id == "" {
		if id, err = e.findAttempt(ctx, cli, spec); err != nil {
			return nil, err
		}
	}

	ins, err := cli.ContainerInspect(ctx, id, client.ContainerInspectOptions{})
	if cerrdefs.IsNotFound(err) {
		return nil, fmt.Errorf("recover container %s: it is gone: %w", shortID(id), executor.ErrLost)
	}
	if err != nil {
		return nil, fmt.Errorf("recover container %s: %w", shortID(id), engineError(ctx, cli, err))
	}
	if ins.Container.State != nil {
		switch status := ins.Container.State.Status; status {
		case container.StateCreated, container.StateRemoving, container.StateDead:
			e.remove(cli, id)
			return nil, fmt.Errorf("recover container %s: it is %s, not running or exited: %w", shortID(id), status, executor.ErrLost)
		}
	}
	h := newHandle(e, cli, id, sink)
	go h.follow()
	e.log.Info("re-attached to container", "id", shortID(id), "run", spec.RunID, "task", spec.Task,
		"attempt", spec.Attempt, "attempt_id", spec.AttemptID)
	return h, nil
}

// findAttempt returns the id of spec's attempt's container, found by its
// labels. Should there be more than one (an agent that died during Start and
// started again), the newest is the attempt's and the others are removed.
func (e *Executor) findAttempt(ctx context.Context, cli *client.Client, spec *executor.Spec) (string, error) {
	f := make(client.Filters).
		Add("label", LabelManaged+"=true").
		Add("label", LabelAttempt+"="+strconv.FormatInt(spec.AttemptID, 10))
	for _, key := range []string{LabelAgent, "dray.run"} {
		if v := spec.Labels[key]; v != "" {
			f.Add("label", key+"="+v)
		}
	}
	list, err := cli.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: f})
	if err != nil {
		return "", fmt.Errorf("recover container of attempt %d: list containers: %w", spec.AttemptID, engineError(ctx, cli, err))
	}
	if len(list.Items) == 0 {
		return "", fmt.Errorf("recover container of attempt %d: no container has its labels: %w", spec.AttemptID, executor.ErrLost)
	}
	items := slices.SortedFunc(slices.Values(list.Items), func(a, b container.Summary) int { return int(b.Created - a.Created) })
	for _, c := range items[1:] {
		e.log.Warn("removing an older container of the same attempt", "id", shortID(c.ID), "attempt_id", spec.AttemptID)
		e.remove(cli, c.ID)
	}
	return items[0].ID, nil
}

// Orphans kills and removes the containers that agent agentID started
// (labels LabelManaged and LabelAgent), running or not, whose attempt keep
// does not keep. It returns their names. It looks at the default engine and
// at every engine this executor has used (Start or Recover), so an agent that
// restarted calls it after recovering its attempts.
func (e *Executor) Orphans(ctx context.Context, agentID string, keep func(attemptID int64) bool) ([]string, error) {
	if agentID == "" {
		return nil, errors.New("remove orphan containers: no agent id")
	}
	if _, err := e.client(""); err != nil {
		return nil, fmt.Errorf("remove orphan containers: %w", err)
	}
	e.mu.Lock()
	clients := make(map[string]*client.Client, len(e.clients))
	for _, cli := range e.clients {
		clients[cli.DaemonHost()] = cli // one engine may be asked for by two names
	}
	e.mu.Unlock()

	var removed []string
	var errs []error
	for _, host := range slices.Sorted(maps.Keys(clients)) {
		cli := clients[host]
		f := make(client.Filters).Add("label", LabelManaged+"=true", LabelAgent+"="+agentID)
		list, err := cli.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: f})
		if err != nil {
			errs = append(errs, fmt.Errorf("remove orphan containers: list containers: %w", engineError(ctx, cli, err)))
			continue
		}
		for _, c := range list.Items {
			if id, err := strconv.ParseInt(c.Labels[LabelAttempt], 10, 64); err == nil && keep(id) {
				continue
			}
			name := shortID(c.ID)
			if len(c.Names) > 0 {
				name = strings.TrimPrefix(c.Names[0], "/")
			}
			_, err := cli.ContainerRemove(ctx, c.ID, client.ContainerRemoveOptions{Force: true, RemoveVolumes: true})
			if err != nil && !cerrdefs.IsNotFound(err) {
				errs = append(errs, fmt.Errorf("remove orphan container %s: %w", name, err))
				continue
			}
			e.log.Info("removed orphan container", "container", name, "attempt_id", c.Labels[LabelAttempt], "agent", agentID)
			removed = append(removed, name)
		}
	}
	return removed, errors.Join(errs...)
}
