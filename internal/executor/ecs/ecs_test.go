package ecs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/cloudwatchlogs"
	"github.com/aws/aws-sdk-go-v2/service/ecs"
	ecstypes "github.com/aws/aws-sdk-go-v2/service/ecs/types"

	"github.com/dray-dev/dray/internal/awsfake"
	"github.com/dray-dev/dray/internal/dockertest"
	"github.com/dray-dev/dray/internal/executor"
	"github.com/dray-dev/dray/internal/executor/executortest"
)

const testTimeout = 30 * time.Second

// otherImage is an ECS image name the fake maps to the busybox test image,
// for the image override.
const otherImage = "example.com/tools/busybox:1"

// env is a fake ECS with real SDK clients pointed at it.
type env struct {
	fake    *awsfake.Server
	url     string
	ecs     *ecs.Client
	family  string // a task definition of busybox, container main, logging to group dray
	agent   string
	clients func(region string) (*ecs.Client, *cloudwatchlogs.Client, error)
}

func newEnv(t *testing.T, configure ...func(*awsfake.Config)) *env {
	t.Helper()
	cli := dockertest.Client(t)
	image := dockertest.BusyboxImage(t)
	cfg := awsfake.Config{Docker: cli, Logger: testLogger(t), Images: map[string]string{"busybox": image, otherImage: image}}
	for _, f := range configure {
		f(&cfg)
	}
	fake := awsfake.New(cfg)
	srv := httptest.NewServer(fake)
	t.Cleanup(func() {
		srv.Close()
		if err := fake.Close(); err != nil {
			t.Errorf("close fake: %v", err)
		}
	})
	e := &env{fake: fake, url: srv.URL, agent: fmt.Sprintf("test-%x", rand.Uint64())}
	e.clients = func(region string) (*ecs.Client, *cloudwatchlogs.Client, error) {
		cfg := aws.Config{
			Region:      awsfake.Region,
			Credentials: credentials.NewStaticCredentialsProvider("AKID", "SECRET", ""),
			// Many tries, short waits and no retry quota: the throttling
			// test answers 30% of the calls with an error.
			Retryer: func() aws.Retryer {
				return retry.NewStandard(func(o *retry.StandardOptions) {
					o.MaxAttempts = 10
					o.MaxBackoff = 100 * time.Millisecond
					o.RateLimiter = ratelimit.None
				})
			},
		}
		return ecs.NewFromConfig(cfg, func(o *ecs.Options) { o.BaseEndpoint = aws.String(srv.URL) }),
			cloudwatchlogs.NewFromConfig(cfg, func(o *cloudwatchlogs.Options) { o.BaseEndpoint = aws.String(srv.URL) }),
			nil
	}
	e.ecs, _, _ = e.clients("")
	e.family = e.register(t, "dray-test", "busybox")
	return e
}

// testLogger logs at Info: the fake's Debug lines (every call that failed,
// such as reads of a log stream not made yet) would bury a failure.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo}))
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

// register registers a task definition family running image in container
// main, logging to group dray with prefix task, and returns the family.
func (e *env) register(t *testing.T, family, image string) string {
	t.Helper()
	_, err := e.ecs.RegisterTaskDefinition(testCtx(t), &ecs.RegisterTaskDefinitionInput{
		Family:      aws.String(family),
		NetworkMode: ecstypes.NetworkModeAwsvpc,
		ContainerDefinitions: []ecstypes.ContainerDefinition{{
			Name: aws.String("main"), Image: aws.String(image), Essential: aws.Bool(true),
			LogConfiguration: &ecstypes.LogConfiguration{
				LogDriver: ecstypes.LogDriverAwslogs,
				Options:   map[string]string{"awslogs-group": "dray", "awslogs-stream-prefix": "task", "awslogs-region": awsfake.Region},
			},
		}},
		Tags: []ecstypes.Tag{{Key: aws.String("team"), Value: aws.String("data")}},
	})
	if err != nil {
		t.Fatalf("register task definition: %v", err)
	}
	return family
}

// newExec returns an executor of the fake with short periods.
func (e *env) newExec(t *testing.T) *Executor {
	x := New(Config{Logger: testLogger(t), Clients: e.clients, Poll: 200 * time.Millisecond, LogPoll: 200 * time.Millisecond})
	x.runBackoff = 50 * time.Millisecond
	x.logDrain = 20 * time.Second
	t.Cleanup(func() { x.Close() })
	return x
}

// spec returns a Spec that runs shell in the family's task definition.
func (e *env) spec(shell string) *executor.Spec {
	return &executor.Spec{
		AttemptID: rand.Int64N(1 << 40),
		Run:       shell,
		Options: map[string]any{
			"task_definition": e.family, "subnets": []any{"subnet-1"}, "security_groups": []string{"sg-1"},
		},
		Labels: map[string]string{"dray.agent": e.agent, "dray.run": "run 1"},
	}
}

func (e *env) describe(t *testing.T, arn string) ecstypes.Task {
	t.Helper()
	out, err := e.ecs.DescribeTasks(testCtx(t), &ecs.DescribeTasksInput{Tasks: []string{arn}, Include: []ecstypes.TaskField{ecstypes.TaskFieldTags}})
	if err != nil || len(out.Tasks) != 1 {
		t.Fatalf("describe task %s: %v (failures %+v)", arn, err, out)
	}
	return out.Tasks[0]
}

func taskOf(t *testing.T, h executor.Handle) string {
	t.Helper()
	var st state
	if err := json.Unmarshal(h.State(), &st); err != nil || st.Task == "" {
		t.Fatalf("State() = %s (%v); want a task ARN", h.State(), err)
	}
	return st.Task
}

func start(t *testing.T, x *Executor, spec *executor.Spec) (executor.Handle, *executortest.Recorder) {
	t.Helper()
	return executortest.Start(t, testCtx(t), x, spec, testTimeout)
}

func wait(t *testing.T, h executor.Handle, rec *executortest.Recorder) executor.Result {
	t.Helper()
	return executortest.Wait(t, testCtx(t), h, rec)
}

func TestConformance(t *testing.T) {
	e := newEnv(t)
	executortest.Run(t,
		func(t *testing.T) executor.Executor { return e.newExec(t) },
		executortest.Options{
			Spec: func(t *testing.T, shell string) *executor.Spec {
				return e.spec(shell)
			},
			// CloudWatch Logs keeps one stream, and $DRAY_OUTPUT cannot be
			// read back from a stopped task (outputs come from marker lines).
			MergedStreams: true,
			NoOutputsFile: true,
			Leftovers: func(ctx context.Context, t *testing.T, h executor.Handle, _ []string) ([]string, error) {
				task := e.describe(t, taskOf(t, h))
				if s := aws.ToString(task.LastStatus); s != "STOPPED" {
					return []string{"task " + taskID(aws.ToString(task.TaskArn)) + " " + s}, nil
				}
				return nil, nil
			},
			Timeout:    testTimeout,
			Concurrent: 4,
		})
}

func TestResults(t *testing.T) {
	e := newEnv(t)
	for _, c := range []struct {
		name, shell string
		memory      int64
		image       string // an image the fake fails to pull
		wantCode    int
		wantReason  string
		wantLines   []string
	}{
		{name: "marker outputs", shell: `echo hi; echo '::dray-output::{"rows": 3}'`, wantLines: []string{"hi", `::dray-output::{"rows": 3}`}},
		{name: "exit code", shell: `echo bye; exit 3`, wantCode: 3, wantReason: "exit 3", wantLines: []string{"bye"}},
		{name: "oom", shell: `echo start; dd if=/dev/zero of=/dev/null bs=64M count=1`, memory: 8 << 20, wantCode: 137,
			wantReason: "exit 137: " + awsfake.ReasonOOM, wantLines: []string{"start"}},
		{name: "pull fails", shell: `true`, image: "example.com/missing:1", wantCode: -1,
			wantReason: "TaskFailedToStart: CannotPullContainerError: "},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			x := e.newExec(t)
			spec := e.spec(c.shell)
			spec.Resources.MemoryBytes = c.memory
			if c.image != "" {
				e.fake.SetFaults(awsfake.Faults{PullFails: []string{c.image}})
				spec.Image = c.image
			}
			h, rec := start(t, x, spec)
			res := wait(t, h, rec)
			if res.ExitCode != c.wantCode || !strings.HasPrefix(res.Reason, c.wantReason) || (c.wantReason == "") != (res.Reason == "") {
				t.Fatalf("result %+v; want code %d, reason %q", res, c.wantCode, c.wantReason)
			}
			if got := rec.Texts(executor.Stdout); !slices.Equal(got, c.wantLines) {
				t.Fatalf("lines %q; want %q", got, c.wantLines)
			}
			if res.Outputs != nil {
				t.Fatalf("outputs %q; want none (the agent reads marker lines)", res.Outputs)
			}
		})
	}
}

func TestRunTaskInput(t *testing.T) {
	spec := &executor.Spec{
		AttemptID: 42, Run: "echo hi", Env: map[string]string{"B": "2", "A": "1"},
		Resources: executor.Resources{MilliCPU: 500, MemoryBytes: 1 << 30},
		Labels:    map[string]string{"dray.agent": "a1", "dray.task": "load (eu)"},
	}
	opts, err := parseOptions(map[string]any{
		"task_definition": "etl", "capacity_provider": "spot", "subnets": []any{"s"}, "assign_public_ip": true,
		"tags": map[string]any{"team": "data"},
	}, "")
	if err != nil {
		t.Fatal(err)
	}
	in := runTaskInput(spec, opts, &taskDef{arn: "etl:3", container: "main"})
	co := in.Overrides.ContainerOverrides[0]
	var env []string
	for _, kv := range co.Environment {
		env = append(env, aws.ToString(kv.Name)+"="+aws.ToString(kv.Value))
	}
	tags := map[string]string{}
	for _, tg := range in.Tags {
		tags[aws.ToString(tg.Key)] = aws.ToString(tg.Value)
	}
	switch {
	case !slices.Equal(co.Command, []string{"sh", "-c", "echo hi"}):
		t.Errorf("command %q", co.Command)
	case !slices.Equal(env, []string{"A=1", "B=2", "DRAY_OUTPUT=" + OutputPath}):
		t.Errorf("env %q", env)
	case aws.ToString(in.Overrides.Cpu) != "512" || aws.ToString(in.Overrides.Memory) != "1024":
		t.Errorf("cpu %q memory %q; want 512, 1024", aws.ToString(in.Overrides.Cpu), aws.ToString(in.Overrides.Memory))
	case in.LaunchType != "" || aws.ToString(in.CapacityProviderStrategy[0].CapacityProvider) != "spot":
		t.Errorf("launch type %q, strategy %+v", in.LaunchType, in.CapacityProviderStrategy)
	case in.NetworkConfiguration.AwsvpcConfiguration.AssignPublicIp != ecstypes.AssignPublicIpEnabled:
		t.Errorf("assign public ip %q", in.NetworkConfiguration.AwsvpcConfiguration.AssignPublicIp)
	case tags["dray-agent"] != "a1" || tags["dray-task"] != "load _eu_" || tags[TagAttempt] != "42" || tags["team"] != "data":
		t.Errorf("tags %v", tags)
	}
}

func TestThrottling(t *testing.T) {
	e := newEnv(t)
	x := e.newExec(t)
	e.fake.SetFaults(awsfake.Faults{ThrottleRate: 0.3})
	h, rec := start(t, x, e.spec(`echo one; sleep 1; echo two`))
	res := wait(t, h, rec)
	if res.ExitCode != 0 || res.Reason != "" || !slices.Equal(rec.Texts(executor.Stdout), []string{"one", "two"}) {
		t.Fatalf("result %+v, lines %q; want success with one, two", res, rec.Texts(executor.Stdout))
	}
}

func TestRunTaskFailures(t *testing.T) {
	e := newEnv(t)
	t.Run("retried", func(t *testing.T) {
		x := e.newExec(t)
		e.fake.SetFaults(awsfake.Faults{RunTaskFailures: 2})
		calls := e.fake.Calls("RunTask")
		h, rec := start(t, x, e.spec(`echo ok`))
		if res := wait(t, h, rec); res.Reason != "" {
			t.Fatalf("result %+v; want success", res)
		}
		if n := e.fake.Calls("RunTask") - calls; n != 3 {
			t.Fatalf("RunTask called %d times; want 3", n)
		}
	})
	t.Run("persistent", func(t *testing.T) {
		x := e.newExec(t)
		e.fake.SetFaults(awsfake.Faults{RunTaskFailures: -1})
		defer e.fake.SetFaults(awsfake.Faults{})
		_, err := x.Start(testCtx(t), e.spec(`echo ok`), nil)
		if err == nil || !strings.Contains(err.Error(), "RESOURCE:MEMORY") {
			t.Fatalf("Start: %v; want an error naming RESOURCE:MEMORY", err)
		}
	})
}

func TestStartTimeout(t *testing.T) {
	e := newEnv(t)
	e.register(t, "stuck", "busybox")
	e.fake.SetFaults(awsfake.Faults{StuckTasks: []string{"stuck"}})
	x := e.newExec(t)
	spec := e.spec(`echo never`)
	spec.Options["task_definition"] = "stuck"
	spec.Options["start_timeout"] = float64(time.Second)
	h, rec := start(t, x, spec)
	res := wait(t, h, rec)
	const want = "UserInitiated: dray: did not start within 1s"
	if res.ExitCode != -1 || res.Reason != want {
		t.Fatalf("result %+v; want -1, %q", res, want)
	}
	if task := e.describe(t, taskOf(t, h)); aws.ToString(task.LastStatus) != "STOPPED" {
		t.Fatalf("task is %s; want STOPPED", aws.ToString(task.LastStatus))
	}
}

func TestStop(t *testing.T) {
	e := newEnv(t)
	x := e.newExec(t)
	h, rec := start(t, x, e.spec(`echo ready; sleep 60`))
	if err := rec.WaitFor(testCtx(t), executor.Stdout, "ready"); err != nil {
		t.Fatal(err)
	}
	if err := h.Stop(testCtx(t), time.Second); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	res := wait(t, h, rec)
	if res.Reason != "UserInitiated: "+reasonStopped || res.ExitCode == 0 {
		t.Fatalf("result %+v; want UserInitiated: %s", res, reasonStopped)
	}
}

func TestImageRevision(t *testing.T) {
	e := newEnv(t)
	before := revisions(t, e)
	var defs []string
	for range 2 {
		x := e.newExec(t) // a new executor: the second finds the revision by its tag
		spec := e.spec(`echo hi`)
		spec.Image = otherImage
		h, rec := start(t, x, spec)
		if res := wait(t, h, rec); res.Reason != "" {
			t.Fatalf("result %+v; want success", res)
		}
		defs = append(defs, aws.ToString(e.describe(t, taskOf(t, h)).TaskDefinitionArn))
	}
	after := revisions(t, e)
	if len(after) != len(before)+1 || defs[0] != defs[1] || defs[0] != after[len(after)-1] {
		t.Fatalf("revisions %q then %q, tasks ran %q; want one new revision both ran", before, after, defs)
	}
	out, err := e.ecs.DescribeTaskDefinition(testCtx(t), &ecs.DescribeTaskDefinitionInput{TaskDefinition: aws.String(defs[0])})
	if err != nil || aws.ToString(out.TaskDefinition.ContainerDefinitions[0].Image) != otherImage {
		t.Fatalf("revision %s: %v, %+v; want image %s", defs[0], err, out, otherImage)
	}

	// A new revision of the family gets a copy of its own for the image.
	e.register(t, e.family, "busybox")
	spec := e.spec(`echo hi`)
	spec.Image = otherImage
	h, rec := start(t, e.newExec(t), spec)
	if res := wait(t, h, rec); res.Reason != "" {
		t.Fatalf("result %+v; want success", res)
	}
	if def := aws.ToString(e.describe(t, taskOf(t, h)).TaskDefinitionArn); def == defs[0] || len(revisions(t, e)) != len(after)+2 {
		t.Fatalf("after a new base revision the task ran %s (revisions %q); want a new copy of the new revision", def, revisions(t, e))
	}
}

func revisions(t *testing.T, e *env) []string {
	out, err := e.ecs.ListTaskDefinitions(testCtx(t), &ecs.ListTaskDefinitionsInput{FamilyPrefix: aws.String(e.family)})
	if err != nil {
		t.Fatal(err)
	}
	return out.TaskDefinitionArns
}

func TestRecover(t *testing.T) {
	e := newEnv(t)
	for _, byState := range []bool{true, false} {
		t.Run(fmt.Sprint("by state ", byState), func(t *testing.T) {
			t.Parallel()
			x := e.newExec(t)
			spec := e.spec(`echo one; sleep 2; echo two`)
			h, rec := start(t, x, spec)
			if err := rec.WaitFor(testCtx(t), executor.Stdout, "one"); err != nil {
				t.Fatal(err)
			}
			x.Close() // the agent restarts
			var st []byte
			if byState {
				st = h.State()
			}
			rec2 := executortest.NewRecorder()
			h2, err := e.newExec(t).Recover(testCtx(t), spec, st, rec2)
			if err != nil {
				t.Fatalf("Recover: %v", err)
			}
			res := wait(t, h2, rec2)
			if res.Reason != "" || !slices.Equal(rec2.Texts(executor.Stdout), []string{"one", "two"}) {
				t.Fatalf("result %+v, lines %q; want success with one, two", res, rec2.Texts(executor.Stdout))
			}
		})
	}
	t.Run("lost", func(t *testing.T) {
		t.Parallel()
		_, err := e.newExec(t).Recover(testCtx(t), e.spec("true"), nil, nil)
		if !errors.Is(err, executor.ErrLost) {
			t.Fatalf("Recover of an attempt with no task: %v; want ErrLost", err)
		}
	})
}

func TestOrphans(t *testing.T) {
	e := newEnv(t)
	x := e.newExec(t)
	keep, drop := e.spec(`sleep 60`), e.spec(`sleep 60`)
	hk, _ := start(t, x, keep)
	hd, _ := start(t, x, drop)
	stopped, err := x.Orphans(testCtx(t), e.agent, func(id int64) bool { return id == keep.AttemptID })
	if err != nil || !slices.Equal(stopped, []string{taskOf(t, hd)}) {
		t.Fatalf("Orphans = %q, %v; want %s", stopped, err, taskOf(t, hd))
	}
	if res := wait(t, hd, executortest.NewRecorder()); res.Reason == "" {
		t.Fatalf("orphan result %+v; want stopped", res)
	}
	if s := aws.ToString(e.describe(t, taskOf(t, hk)).DesiredStatus); s != "RUNNING" {
		t.Fatalf("kept task is %s; want RUNNING", s)
	}
}

func TestMissingCluster(t *testing.T) {
	e := newEnv(t)
	spec := e.spec("true")
	spec.Options["cluster"] = "nope"
	_, err := e.newExec(t).Start(testCtx(t), spec, nil)
	var ae *APIError
	if !errors.As(err, &ae) || ae.Code != "ClusterNotFoundException" || !strings.Contains(err.Error(), "Cluster not found") {
		t.Fatalf("Start in a missing cluster: %v; want ClusterNotFoundException: Cluster not found", err)
	}
}

func TestLogsUnavailable(t *testing.T) {
	e := newEnv(t)
	x := e.newExec(t)
	e.fake.SetFaults(awsfake.Faults{LogsUnavailable: true})
	h, rec := start(t, x, e.spec(`echo a; echo b; exit 4`))
	// Logs come back only once ECS shows the task stopped.
	ctx := testCtx(t)
	for aws.ToString(e.describe(t, taskOf(t, h)).LastStatus) != "STOPPED" {
		select {
		case <-ctx.Done():
			t.Fatal("task did not stop")
		case <-time.After(100 * time.Millisecond):
		}
	}
	e.fake.SetFaults(awsfake.Faults{})
	res := wait(t, h, rec)
	if res.Reason != "exit 4" || !slices.Equal(rec.Texts(executor.Stdout), []string{"a", "b"}) {
		t.Fatalf("result %+v, lines %q; want exit 4 with a, b", res, rec.Texts(executor.Stdout))
	}
}

// TestThrottledRunTask: RunTask throttled past the SDK's own retries delays
// the attempt; it does not fail it.
func TestThrottledRunTask(t *testing.T) {
	e := newEnv(t)
	x := e.newExec(t)
	e.fake.SetFaults(awsfake.Faults{ThrottleRate: 1})
	time.AfterFunc(2*time.Second, func() { e.fake.SetFaults(awsfake.Faults{}) })
	calls := func() int { return e.fake.Calls("DescribeTaskDefinition") + e.fake.Calls("RunTask") }
	before := calls()
	h, rec := start(t, x, e.spec(`echo through`))
	if res := wait(t, h, rec); res.Reason != "" || !slices.Equal(rec.Texts(executor.Stdout), []string{"through"}) {
		t.Fatalf("result %+v, lines %q; want success", res, rec.Texts(executor.Stdout))
	}
	// The SDK tries 10 times a call; more calls mean the executor went on.
	if n := calls() - before; n <= 11 {
		t.Fatalf("DescribeTaskDefinition and RunTask called %d times; want more than the SDK's 10 tries and one more", n)
	}
}

// TestLostRunTaskAnswer: a RunTask whose answer is lost is sent again with
// the same clientToken and starts one task, not two.
func TestLostRunTaskAnswer(t *testing.T) {
	e := newEnv(t)
	family := e.register(t, "lost-answer", "busybox")
	x := e.newExec(t)
	e.fake.SetFaults(awsfake.Faults{LostRunTaskAnswers: 1})
	spec := e.spec(`echo once`)
	spec.Options["task_definition"] = family
	h, rec := start(t, x, spec)
	if res := wait(t, h, rec); res.Reason != "" {
		t.Fatalf("result %+v; want success", res)
	}
	out, err := e.ecs.ListTasks(testCtx(t), &ecs.ListTasksInput{Family: aws.String(family), DesiredStatus: ecstypes.DesiredStatusStopped})
	if err != nil || len(out.TaskArns) != 1 {
		t.Fatalf("tasks of %s: %v, %v; want one", family, out.TaskArns, err)
	}
}

// TestRunTaskRate: the token bucket spaces RunTask calls at the configured
// rate after the first burst.
func TestRunTaskRate(t *testing.T) {
	e := newEnv(t)
	x := New(Config{Logger: testLogger(t), Clients: e.clients, Poll: 200 * time.Millisecond, LogPoll: 200 * time.Millisecond, RunTaskRate: 2})
	t.Cleanup(func() { x.Close() })
	begin := time.Now()
	for range 5 {
		start(t, x, e.spec(`true`))
	}
	// A burst of 2, then one call every 500ms: at least 1.5s for 5.
	if d := time.Since(begin); d < 1400*time.Millisecond {
		t.Fatalf("5 starts at 2 a second took %v; want at least 1.5s", d)
	}
}

func TestRegions(t *testing.T) {
	e := newEnv(t)
	if _, err := e.ecs.CreateCluster(testCtx(t), &ecs.CreateClusterInput{ClusterName: aws.String("data-eu")}); err != nil {
		t.Fatal(err)
	}
	x := e.newExec(t)
	withRegions := func(region string) *executor.Spec {
		spec := e.spec(`echo in eu`)
		spec.Options["region"] = awsfake.Region
		spec.Options["regions"] = map[string]any{"eu-west-1": map[string]any{"cluster": "data-eu", "subnets": []any{"subnet-eu"}}}
		spec.Resources.Region = region
		return spec
	}
	t.Run("a region of the profile", func(t *testing.T) {
		h, rec := start(t, x, withRegions("eu-west-1"))
		if res := wait(t, h, rec); res.Reason != "" {
			t.Fatalf("result %+v; want success", res)
		}
		var st state
		if err := json.Unmarshal(h.State(), &st); err != nil || st.Cluster != "data-eu" || st.Region != "eu-west-1" {
			t.Fatalf("state %s (%v); want cluster data-eu in eu-west-1", h.State(), err)
		}
		out, err := e.ecs.DescribeTasks(testCtx(t), &ecs.DescribeTasksInput{Cluster: aws.String("data-eu"), Tasks: []string{st.Task}})
		if err != nil || len(out.Tasks) != 1 {
			t.Fatalf("describe the task in data-eu: %v, %+v", err, out)
		}
	})
	t.Run("a region the profile lacks", func(t *testing.T) {
		_, err := x.Start(testCtx(t), withRegions("ap-south-1"), nil)
		if err == nil || !strings.Contains(err.Error(), "region ap-south-1 is not one of the profile's regions (eu-west-1)") {
			t.Fatalf("Start: %v; want an error naming the region and the profile's regions", err)
		}
	})
}

func TestSecretsInOverrides(t *testing.T) {
	e := newEnv(t)
	x := e.newExec(t)
	spec := e.spec(`echo "$TOKEN" | wc -c`)
	spec.Env = map[string]string{"TOKEN": "s3cr3t"}
	spec.Secrets = []string{"TOKEN"}
	calls := e.fake.Calls("RunTask")
	_, err := x.Start(testCtx(t), spec, nil)
	if err == nil || !strings.Contains(err.Error(), "puts secrets into TOKEN") || !strings.Contains(err.Error(), "allow_secret_overrides") {
		t.Fatalf("Start: %v; want a refusal naming TOKEN and allow_secret_overrides", err)
	}
	if n := e.fake.Calls("RunTask") - calls; n != 0 {
		t.Fatalf("RunTask called %d times; want none", n)
	}
	spec.Options["allow_secret_overrides"] = true
	h, rec := start(t, x, spec)
	if res := wait(t, h, rec); res.Reason != "" || !slices.Equal(rec.Texts(executor.Stdout), []string{"7"}) {
		t.Fatalf("result %+v, lines %q; want success printing 7", res, rec.Texts(executor.Stdout))
	}
}

func TestWrongCredentials(t *testing.T) {
	e := newEnv(t, func(c *awsfake.Config) { c.AccessKeys = []string{"AKID"} })
	wrong := func(region string) (*ecs.Client, *cloudwatchlogs.Client, error) {
		cfg := aws.Config{Region: awsfake.Region, Credentials: credentials.NewStaticCredentialsProvider("AKIAWRONG", "SECRET", "")}
		return ecs.NewFromConfig(cfg, func(o *ecs.Options) { o.BaseEndpoint = aws.String(e.url) }),
			cloudwatchlogs.NewFromConfig(cfg, func(o *cloudwatchlogs.Options) { o.BaseEndpoint = aws.String(e.url) }), nil
	}
	x := New(Config{Logger: testLogger(t), Clients: wrong})
	t.Cleanup(func() { x.Close() })
	_, err := x.Start(testCtx(t), e.spec("true"), nil)
	var ae *APIError
	if !errors.As(err, &ae) || ae.Code != "UnrecognizedClientException" || !strings.Contains(err.Error(), "security token included in the request is invalid") {
		t.Fatalf("Start with wrong credentials: %v; want UnrecognizedClientException", err)
	}
}

// TestExpiredTokenMidRun: credentials that expire while a task runs delay
// what the executor learns (and say so in the log); once they are renewed
// the task ends as it did, with every line.
func TestExpiredTokenMidRun(t *testing.T) {
	e := newEnv(t)
	x := e.newExec(t)
	h, rec := start(t, x, e.spec(`echo before; sleep 2; echo after`))
	if err := rec.WaitFor(testCtx(t), executor.Stdout, "before"); err != nil {
		t.Fatal(err)
	}
	e.fake.SetFaults(awsfake.Faults{ExpiredToken: true})
	if err := rec.WaitFor(testCtx(t), executor.Stderr, "dray: cannot describe the ECS task (describe tasks: ExpiredTokenException: The security token included in the request is expired); trying again, less often each time, at least every 30s"); err != nil {
		t.Fatalf("%v; stderr %q", err, rec.Texts(executor.Stderr))
	}
	time.Sleep(3 * time.Second) // the task ends meanwhile
	e.fake.SetFaults(awsfake.Faults{})
	res := wait(t, h, rec)
	if res.Reason != "" || !slices.Equal(rec.Texts(executor.Stdout), []string{"before", "after"}) {
		t.Fatalf("result %+v, lines %q; want success with before, after", res, rec.Texts(executor.Stdout))
	}
}

func TestSubnetOfAnotherRegion(t *testing.T) {
	e := newEnv(t, func(c *awsfake.Config) { c.Subnets = []string{"subnet-1"} })
	spec := e.spec("true")
	spec.Options["subnets"] = []any{"subnet-eu"}
	_, err := e.newExec(t).Start(testCtx(t), spec, nil)
	var ae *APIError
	if !errors.As(err, &ae) || ae.Code != "InvalidParameterException" || !strings.Contains(err.Error(), "The subnet ID 'subnet-eu' does not exist") {
		t.Fatalf("Start with a subnet the region lacks: %v; want InvalidParameterException naming it", err)
	}
}

// TestRetryStopsPredecessor: a retry stops the task an earlier attempt of
// the same task instance left running (its agent was found lost).
func TestRetryStopsPredecessor(t *testing.T) {
	e := newEnv(t)
	x := e.newExec(t)
	first := e.spec(`echo first; sleep 60`)
	first.Attempt = 1
	first.Labels["dray.task"], first.Labels["dray.index"] = "load", "2"
	h1, rec1 := start(t, x, first)
	if err := rec1.WaitFor(testCtx(t), executor.Stdout, "first"); err != nil {
		t.Fatal(err)
	}
	sibling := e.spec(`sleep 60`) // another instance of the task: left alone
	sibling.Labels["dray.task"], sibling.Labels["dray.index"] = "load", "3"
	hs, _ := start(t, x, sibling)

	retry := e.spec(`echo retry`)
	retry.Attempt = 2
	retry.Labels["dray.task"], retry.Labels["dray.index"] = "load", "2"
	h2, rec2 := start(t, x, retry)
	if res := wait(t, h2, rec2); res.Reason != "" {
		t.Fatalf("retry result %+v; want success", res)
	}
	res := wait(t, h1, rec1)
	if !strings.Contains(res.Reason, "dray: attempt 2 of the task replaces it") {
		t.Fatalf("first attempt's result %+v; want it stopped by the retry", res)
	}
	if s := aws.ToString(e.describe(t, taskOf(t, hs)).DesiredStatus); s != "RUNNING" {
		t.Fatalf("the sibling instance is %s; want RUNNING", s)
	}
}
