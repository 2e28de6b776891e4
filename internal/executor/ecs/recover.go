package ecs

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

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ecs"
	ecstypes "github.com/aws/aws-sdk-go-v2/service/ecs/types"

	"github.com/dray-dev/dray/internal/executor"
)

// Recover re-attaches to an attempt's task after an agent restart: the task
// named by state, or, when state is empty, the task started by dray whose
// dray-attempt tag is spec.AttemptID (in the region and cluster of spec's
// options). The sink gets the task's log from its first line (the agent drops
// the lines it has). A task ECS no longer knows is lost: the error wraps
// executor.ErrLost.
func (e *Executor) Recover(ctx context.Context, spec *executor.Spec, state []byte, sink executor.LogSink) (executor.Handle, error) {
	h, err := e.recover(ctx, spec, state, sink)
	if err != nil {
		return nil, fmt.Errorf("recover ECS task: %w", err)
	}
	return h, nil
}

func (e *Executor) recover(ctx context.Context, spec *executor.Spec, raw []byte, sink executor.LogSink) (*handle, error) {
	if spec == nil {
		return nil, errors.New("no spec")
	}
	if sink == nil {
		sink = executor.LogFunc(func(executor.Line) {})
	}
	opts, err := parseOptions(spec.Options, spec.Resources.Region)
	if err != nil {
		return nil, err
	}
	var st state
	if s := bytes.TrimSpace(raw); len(s) > 0 && string(s) != "null" {
		if err := json.Unmarshal(s, &st); err != nil {
			return nil, fmt.Errorf("decode state %q: %v: %w", raw, err, executor.ErrLost)
		}
	}
	if st.Task == "" {
		st = state{Cluster: opts.cluster, Region: opts.region}
	}
	cl, err := e.clientsOf(st.Region)
	if err != nil {
		return nil, err
	}
	var task *ecstypes.Task
	if st.Task == "" {
		task, err = findTask(ctx, cl.ecs, st.Cluster, spec.AttemptID)
	} else {
		task, err = describeTask(ctx, cl.ecs, st.Cluster, st.Task)
	}
	if err != nil {
		return nil, err
	}
	st.Task = aws.ToString(task.TaskArn)
	if st.LogGroup == "" || st.LogStream == "" || st.Container == "" {
		out, err := call(ctx, func(ctx context.Context) (*ecs.DescribeTaskDefinitionOutput, error) {
			return cl.ecs.DescribeTaskDefinition(ctx, &ecs.DescribeTaskDefinitionInput{TaskDefinition: task.TaskDefinitionArn})
		})
		if err != nil {
			return nil, awsError("describe task definition of task "+taskID(st.Task), err)
		}
		c, err := pickContainer(out.TaskDefinition, opts.container)
		if err != nil {
			return nil, fmt.Errorf("task definition %s: %w", aws.ToString(task.TaskDefinitionArn), err)
		}
		td, err := newTaskDef(out.TaskDefinition, c, opts)
		if err != nil {
			return nil, err
		}
		st.Container, st.LogGroup, st.LogStream = td.container, td.logGroup, td.logStream(taskID(st.Task))
	}
	e.log.Info("recovered ECS task", "task", st.Task, "status", aws.ToString(task.LastStatus), "attempt_id", spec.AttemptID)
	h := e.follow(cl, st, opts.startTimeout, sink)
	h.observe(*task) // a task stopped already ends at once
	return h, nil
}

// describeTask describes one task; a task ECS does not know is lost.
func describeTask(ctx context.Context, cli *ecs.Client, cluster, arn string) (*ecstypes.Task, error) {
	out, err := call(ctx, func(ctx context.Context) (*ecs.DescribeTasksOutput, error) {
		return cli.DescribeTasks(ctx, &ecs.DescribeTasksInput{
			Cluster: aws.String(cluster), Tasks: []string{arn}, Include: []ecstypes.TaskField{ecstypes.TaskFieldTags},
		})
	})
	if err != nil {
		return nil, awsError("describe task "+taskID(arn), err)
	}
	if len(out.Tasks) == 0 {
		reason := "MISSING"
		if len(out.Failures) > 0 {
			reason = aws.ToString(out.Failures[0].Reason)
		}
		return nil, fmt.Errorf("task %s: %s: %w", arn, reason, executor.ErrLost)
	}
	return &out.Tasks[0], nil
}

// findTask finds the task of an attempt by its tag, running or stopped.
func findTask(ctx context.Context, cli *ecs.Client, cluster string, attemptID int64) (*ecstypes.Task, error) {
	want := strconv.FormatInt(attemptID, 10)
	for _, status := range []ecstypes.DesiredStatus{ecstypes.DesiredStatusRunning, ecstypes.DesiredStatusStopped} {
		tasks, err := listTasks(ctx, cli, cluster, status)
		if err != nil {
			return nil, err
		}
		for _, t := range tasks {
			if tagsOf(t)[TagAttempt] == want {
				return &t, nil
			}
		}
	}
	return nil, fmt.Errorf("no task in cluster %s is tagged %s=%s: %w", cluster, TagAttempt, want, executor.ErrLost)
}

// listTasks returns the tasks dray started in cluster with the desired
// status, described with their tags.
func listTasks(ctx context.Context, cli *ecs.Client, cluster string, status ecstypes.DesiredStatus) ([]ecstypes.Task, error) {
	var arns []string
	p := ecs.NewListTasksPaginator(cli, &ecs.ListTasksInput{
		Cluster: aws.String(cluster), StartedBy: aws.String(StartedBy), DesiredStatus: status,
	})
	for p.HasMorePages() {
		out, err := call(ctx, func(ctx context.Context) (*ecs.ListTasksOutput, error) { return p.NextPage(ctx) })
		if err != nil {
			return nil, awsError("list tasks of cluster "+cluster, err)
		}
		arns = append(arns, out.TaskArns...)
	}
	var tasks []ecstypes.Task
	for chunk := range slices.Chunk(arns, describeBatch) {
		out, err := call(ctx, func(ctx context.Context) (*ecs.DescribeTasksOutput, error) {
			return cli.DescribeTasks(ctx, &ecs.DescribeTasksInput{
				Cluster: aws.String(cluster), Tasks: chunk, Include: []ecstypes.TaskField{ecstypes.TaskFieldTags},
			})
		})
		if err != nil {
			return nil, awsError("describe tasks of cluster "+cluster, err)
		}
		tasks = append(tasks, out.Tasks...)
	}
	return tasks, nil
}

func tagsOf(t ecstypes.Task) map[string]string {
	m := make(map[string]string, len(t.Tags))
	for _, tag := range t.Tags {
		m[aws.ToString(tag.Key)] = aws.ToString(tag.Value)
	}
	return m
}

// Orphans stops the running tasks that dray started for agent agentID
// (tag dray-agent) whose attempt (tag dray-attempt) keep does not keep, in
// every cluster of Config.Clusters and every cluster this executor has used.
// It returns their task ARNs.
func (e *Executor) Orphans(ctx context.Context, agentID string, keep func(attemptID int64) bool) ([]string, error) {
	if agentID == "" {
		return nil, errors.New("stop orphan ECS tasks: no agent id")
	}
	e.mu.Lock()
	clusters := slices.SortedFunc(maps.Keys(e.known), func(a, b Cluster) int {
		if a.Region != b.Region {
			return strings.Compare(a.Region, b.Region)
		}
		return strings.Compare(a.Cluster, b.Cluster)
	})
	e.mu.Unlock()

	var stopped []string
	var errs []error
	for _, c := range clusters {
		cl, err := e.clientsOf(c.Region)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		tasks, err := listTasks(ctx, cl.ecs, c.Cluster, ecstypes.DesiredStatusRunning)
		if err != nil {
			errs = append(errs, fmt.Errorf("stop orphan ECS tasks: %w", err))
			continue
		}
		for _, t := range tasks {
			tags := tagsOf(t)
			if tags[TagAgent] != tagText(agentID, 256) {
				continue
			}
			if id, err := strconv.ParseInt(tags[TagAttempt], 10, 64); err == nil && keep(id) {
				continue
			}
			arn := aws.ToString(t.TaskArn)
			_, err := call(ctx, func(ctx context.Context) (*ecs.StopTaskOutput, error) {
				return cl.ecs.StopTask(ctx, &ecs.StopTaskInput{
					Cluster: aws.String(c.Cluster), Task: aws.String(arn), Reason: aws.String("dray: orphaned, no attempt holds it"),
				})
			})
			if err != nil {
				errs = append(errs, awsError("stop orphan task "+arn, err))
				continue
			}
			e.log.Info("stopped orphan ECS task", "task", arn, "attempt_id", tags[TagAttempt], "agent", agentID)
			stopped = append(stopped, arn)
		}
	}
	return stopped, errors.Join(errs...)
}

// stopPredecessors stops the running tasks of earlier attempts of spec's
// task instance (tags dray-run, dray-task, dray-index), before a retry
// starts: an attempt found lost because its agent went silent may have left
// its task running, and the work must not run twice. A failure is logged;
// it does not stop the retry.
func (e *Executor) stopPredecessors(ctx context.Context, cl *regionClients, cluster string, spec *executor.Spec) {
	want := map[string]string{"dray-run": spec.Labels["dray.run"], "dray-task": spec.Labels["dray.task"], "dray-index": spec.Labels["dray.index"]}
	for k, v := range want {
		if v == "" {
			return // not an agent's attempt: nothing to match on
		}
		want[k] = tagText(v, 256)
	}
	tasks, err := listTasks(ctx, cl.ecs, cluster, ecstypes.DesiredStatusRunning)
	if err != nil {
		e.log.Warn("look for tasks of earlier attempts", "cluster", cluster, "err", err)
		return
	}
	self := strconv.FormatInt(spec.AttemptID, 10)
	for _, t := range tasks {
		tags := tagsOf(t)
		if tags[TagAttempt] == self || tags["dray-run"] != want["dray-run"] || tags["dray-task"] != want["dray-task"] || tags["dray-index"] != want["dray-index"] {
			continue
		}
		arn := aws.ToString(t.TaskArn)
		_, err := call(ctx, func(ctx context.Context) (*ecs.StopTaskOutput, error) {
			return cl.ecs.StopTask(ctx, &ecs.StopTaskInput{
				Cluster: aws.String(cluster), Task: aws.String(arn),
				Reason: aws.String(fmt.Sprintf("dray: attempt %d of the task replaces it", spec.Attempt)),
			})
		})
		if err != nil {
			e.log.Warn("stop the task of an earlier attempt", "task", arn, "err", awsError("stop task", err))
			continue
		}
		e.log.Info("stopped the task of an earlier attempt", "task", arn, "attempt_id", tags[TagAttempt], "new_attempt_id", spec.AttemptID)
	}
}
