package awsfake

import (
	"context"
	"errors"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/cloudwatchlogs"
	cwltypes "github.com/aws/aws-sdk-go-v2/service/cloudwatchlogs/types"
	"github.com/aws/aws-sdk-go-v2/service/ecs"
	ecstypes "github.com/aws/aws-sdk-go-v2/service/ecs/types"
	"github.com/aws/smithy-go"
	"github.com/moby/moby/client"

	"github.com/dray-dev/dray/internal/dockertest"
)

// env is a fake with real SDK clients pointed at it.
type env struct {
	fake  *Server
	ecs   *ecs.Client
	logs  *cloudwatchlogs.Client
	image string // the busybox test image
}

func newEnv(t *testing.T) *env {
	t.Helper()
	cli := dockertest.Client(t)
	image := dockertest.BusyboxImage(t)
	fake := New(Config{Docker: cli, Images: map[string]string{"busybox": image}})
	srv := httptest.NewServer(fake)
	t.Cleanup(func() {
		srv.Close()
		if err := fake.Close(); err != nil {
			t.Errorf("close fake: %v", err)
		}
	})
	cfg := aws.Config{
		Region:           Region,
		Credentials:      credentials.NewStaticCredentialsProvider("AKID", "SECRET", ""),
		RetryMaxAttempts: 1,
	}
	return &env{
		fake:  fake,
		ecs:   ecs.NewFromConfig(cfg, func(o *ecs.Options) { o.BaseEndpoint = aws.String(srv.URL) }),
		logs:  cloudwatchlogs.NewFromConfig(cfg, func(o *cloudwatchlogs.Options) { o.BaseEndpoint = aws.String(srv.URL) }),
		image: image,
	}
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(t.Context(), 45*time.Second)
	t.Cleanup(cancel)
	return c
}

// register registers a task definition of family running command in
// busybox, logging to group dray with prefix task.
func (e *env) register(t *testing.T, family string, memory int32, command ...string) string {
	t.Helper()
	def := ecstypes.ContainerDefinition{
		Name:      aws.String("main"),
		Image:     aws.String("busybox"),
		Command:   command,
		Essential: aws.Bool(true),
		Environment: []ecstypes.KeyValuePair{
			{Name: aws.String("GREETING"), Value: aws.String("hello")},
			{Name: aws.String("WHO"), Value: aws.String("world")},
		},
		LogConfiguration: &ecstypes.LogConfiguration{
			LogDriver: ecstypes.LogDriverAwslogs,
			Options:   map[string]string{"awslogs-group": "dray", "awslogs-stream-prefix": "task", "awslogs-region": Region},
		},
	}
	if memory > 0 {
		def.Memory = aws.Int32(memory)
	}
	out, err := e.ecs.RegisterTaskDefinition(ctx(t), &ecs.RegisterTaskDefinitionInput{
		Family:               aws.String(family),
		NetworkMode:          ecstypes.NetworkModeAwsvpc,
		ContainerDefinitions: []ecstypes.ContainerDefinition{def},
		Tags:                 []ecstypes.Tag{{Key: aws.String("team"), Value: aws.String("data")}},
	})
	if err != nil {
		t.Fatalf("register task definition: %v", err)
	}
	return aws.ToString(out.TaskDefinition.TaskDefinitionArn)
}

// run runs one task of taskDef and returns its ARN.
func (e *env) run(t *testing.T, taskDef string, overrides *ecstypes.TaskOverride) string {
	t.Helper()
	out, err := e.ecs.RunTask(ctx(t), &ecs.RunTaskInput{
		TaskDefinition:       aws.String(taskDef),
		LaunchType:           ecstypes.LaunchTypeFargate,
		NetworkConfiguration: netCfg,
		Overrides:            overrides,
		StartedBy:            aws.String("dray-test"),
		PropagateTags:        ecstypes.PropagateTagsTaskDefinition,
	})
	if err != nil {
		t.Fatalf("run task: %v", err)
	}
	if len(out.Tasks) != 1 || len(out.Failures) != 0 {
		t.Fatalf("run task: %d tasks, failures %+v; want 1 task", len(out.Tasks), out.Failures)
	}
	return aws.ToString(out.Tasks[0].TaskArn)
}

func (e *env) describe(t *testing.T, arn string) ecstypes.Task {
	t.Helper()
	out, err := e.ecs.DescribeTasks(ctx(t), &ecs.DescribeTasksInput{Tasks: []string{arn}, Include: []ecstypes.TaskField{ecstypes.TaskFieldTags}})
	if err != nil {
		t.Fatalf("describe task: %v", err)
	}
	if len(out.Tasks) != 1 {
		t.Fatalf("describe task: %d tasks, failures %+v", len(out.Tasks), out.Failures)
	}
	return out.Tasks[0]
}

// waitStatus polls the task until its lastStatus is status.
func (e *env) waitStatus(t *testing.T, arn, status string) ecstypes.Task {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		task := e.describe(t, arn)
		if aws.ToString(task.LastStatus) == status {
			return task
		}
		if time.Now().After(deadline) {
			t.Fatalf("task %s is %s after 30s; want %s", arn, aws.ToString(task.LastStatus), status)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// netCfg is the network configuration a task of an awsvpc task definition needs.
var netCfg = &ecstypes.NetworkConfiguration{AwsvpcConfiguration: &ecstypes.AwsVpcConfiguration{
	Subnets: []string{"subnet-1"}, SecurityGroups: []string{"sg-1"}, AssignPublicIp: ecstypes.AssignPublicIpDisabled,
}}

func taskID(arn string) string { return arn[strings.LastIndex(arn, "/")+1:] }

func (e *env) logLines(t *testing.T, arn string) []string {
	t.Helper()
	out, err := e.logs.GetLogEvents(ctx(t), &cloudwatchlogs.GetLogEventsInput{
		LogGroupName:  aws.String("dray"),
		LogStreamName: aws.String("task/main/" + taskID(arn)),
		StartFromHead: aws.Bool(true),
	})
	if err != nil {
		t.Fatalf("get log events: %v", err)
	}
	var lines []string
	for _, ev := range out.Events {
		lines = append(lines, aws.ToString(ev.Message))
	}
	return lines
}

func errorCode(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}

// containersOf lists the fake's containers on the engine.
func containersOf(t *testing.T, e *env) int {
	t.Helper()
	cli := e.fake.docker
	// Not ctx(t): this runs in a Cleanup, after the test's context ended.
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	list, err := cli.ContainerList(c, client.ContainerListOptions{
		All: true, Filters: make(client.Filters).Add("label", LabelServer+"="+e.fake.ID()),
	})
	if err != nil {
		t.Fatalf("list containers: %v", err)
	}
	return len(list.Items)
}

// TestTasks runs real containers, in parallel to keep the test short.
func TestTasks(t *testing.T) {
	e := newEnv(t)
	if _, err := e.ecs.DescribeClusters(ctx(t), &ecs.DescribeClustersInput{}); err != nil {
		t.Fatalf("describe clusters: %v", err)
	}

	t.Run("exit code and logs", func(t *testing.T) {
		t.Parallel()
		def := e.register(t, "exit3", 0, "sh", "-c", "x")
		arn := e.run(t, def, &ecstypes.TaskOverride{ContainerOverrides: []ecstypes.ContainerOverride{{
			Name:        aws.String("main"),
			Command:     []string{"sh", "-c", `echo one; echo "$GREETING $WHO"; echo oops >&2; echo three; exit 3`},
			Environment: []ecstypes.KeyValuePair{{Name: aws.String("WHO"), Value: aws.String("fake")}},
		}}})
		task := e.waitStatus(t, arn, "STOPPED")
		if task.StopCode != ecstypes.TaskStopCodeEssentialContainerExited || aws.ToString(task.StoppedReason) != ReasonEssentialExited {
			t.Errorf("stop code %q, reason %q; want %q, %q", task.StopCode, aws.ToString(task.StoppedReason),
				ecstypes.TaskStopCodeEssentialContainerExited, ReasonEssentialExited)
		}
		if c := task.Containers[0]; aws.ToInt32(c.ExitCode) != 3 || c.ExitCode == nil {
			t.Errorf("container exit code %v; want 3", c.ExitCode)
		}
		if task.StartedAt == nil || task.StoppedAt == nil || task.StoppedAt.Before(*task.StartedAt) || time.Since(*task.CreatedAt) > time.Minute {
			t.Errorf("times: created %v, started %v, stopped %v", task.CreatedAt, task.StartedAt, task.StoppedAt)
		}
		if len(task.Tags) != 1 || aws.ToString(task.Tags[0].Key) != "team" {
			t.Errorf("tags %+v; want the task definition's team tag", task.Tags)
		}
		// stdout and stderr share the stream; the engine reads them apart,
		// so only each one's own order is certain.
		var stdout []string
		stderr := false
		for _, l := range e.logLines(t, arn) {
			if l == "oops" {
				stderr = true
			} else {
				stdout = append(stdout, l)
			}
		}
		if got := strings.Join(stdout, "|"); got != "one|hello fake|three" || !stderr {
			t.Errorf("log lines: stdout %q, stderr line seen %v; want one|hello fake|three and oops", got, stderr)
		}
	})

	t.Run("stop task", func(t *testing.T) {
		t.Parallel()
		def := e.register(t, "sleeper", 0, "sh", "-c", "echo started; sleep 60")
		arn := e.run(t, def, nil)
		e.waitStatus(t, arn, "RUNNING")
		// The output reaches the log stream while the task runs.
		for deadline := time.Now().Add(20 * time.Second); !slices.Contains(e.logLines(t, arn), "started"); {
			if time.Now().After(deadline) {
				t.Fatalf("log of the running task: %q; want the line started", e.logLines(t, arn))
			}
			time.Sleep(50 * time.Millisecond)
		}
		list, err := e.ecs.ListTasks(ctx(t), &ecs.ListTasksInput{StartedBy: aws.String("dray-test"), Family: aws.String("sleeper")})
		if err != nil || !slices.Equal(list.TaskArns, []string{arn}) {
			t.Errorf("list tasks: %v, %v; want [%s]", list, err, arn)
		}
		out, err := e.ecs.StopTask(ctx(t), &ecs.StopTaskInput{Task: aws.String(arn), Reason: aws.String("cancelled by dray")})
		if err != nil {
			t.Fatalf("stop task: %v", err)
		}
		if aws.ToString(out.Task.DesiredStatus) != "STOPPED" {
			t.Errorf("desired status after StopTask %q; want STOPPED", aws.ToString(out.Task.DesiredStatus))
		}
		task := e.waitStatus(t, arn, "STOPPED")
		if task.StopCode != ecstypes.TaskStopCodeUserInitiated || aws.ToString(task.StoppedReason) != "cancelled by dray" {
			t.Errorf("stop code %q, reason %q; want UserInitiated, cancelled by dray", task.StopCode, aws.ToString(task.StoppedReason))
		}
		cli := dockertest.Client(t)
		_, err = cli.ContainerInspect(ctx(t), "awsfake-"+e.fake.ID()+"-"+taskID(arn), client.ContainerInspectOptions{})
		if err == nil {
			t.Errorf("the task's container is still there")
		}
	})

	t.Run("out of memory", func(t *testing.T) {
		t.Parallel()
		def := e.register(t, "oom", 8, "sh", "-c", "echo start; dd if=/dev/zero of=/dev/null bs=64M count=1")
		arn := e.run(t, def, nil)
		task := e.waitStatus(t, arn, "STOPPED")
		c := task.Containers[0]
		if aws.ToInt32(c.ExitCode) != 137 || aws.ToString(c.Reason) != ReasonOOM {
			t.Errorf("container exit code %v, reason %q; want 137, %q", c.ExitCode, aws.ToString(c.Reason), ReasonOOM)
		}
	})

	t.Run("missing image", func(t *testing.T) {
		t.Parallel()
		out, err := e.ecs.RegisterTaskDefinition(ctx(t), &ecs.RegisterTaskDefinitionInput{
			Family:      aws.String("nope"),
			NetworkMode: ecstypes.NetworkModeAwsvpc,
			ContainerDefinitions: []ecstypes.ContainerDefinition{{
				Name: aws.String("main"), Image: aws.String("dray-awsfake-no-such-image:1"),
			}},
		})
		if err != nil {
			t.Fatalf("register: %v", err)
		}
		arn := e.run(t, aws.ToString(out.TaskDefinition.TaskDefinitionArn), nil)
		task := e.waitStatus(t, arn, "STOPPED")
		if task.StopCode != ecstypes.TaskStopCodeTaskFailedToStart ||
			!strings.HasPrefix(aws.ToString(task.Containers[0].Reason), "CannotPullContainerError: ") {
			t.Errorf("stop code %q, container reason %q; want TaskFailedToStart, CannotPullContainerError",
				task.StopCode, aws.ToString(task.Containers[0].Reason))
		}
	})

	t.Run("stuck in provisioning", func(t *testing.T) {
		t.Parallel()
		def := e.register(t, "stuck", 0, "true")
		e.fake.mu.Lock() // SetFaults would race with the other subtests' faults
		e.fake.faults.StuckTasks = []string{"stuck"}
		e.fake.mu.Unlock()
		arn := e.run(t, def, nil)
		// A task run after it runs to its end; this one must not move.
		e.waitStatus(t, e.run(t, e.register(t, "not-stuck", 0, "true"), nil), "STOPPED")
		if got := aws.ToString(e.describe(t, arn).LastStatus); got != "PROVISIONING" {
			t.Fatalf("stuck task is %s; want PROVISIONING", got)
		}
		if _, err := e.ecs.StopTask(ctx(t), &ecs.StopTaskInput{Task: aws.String(arn)}); err != nil {
			t.Fatalf("stop task: %v", err)
		}
		task := e.waitStatus(t, arn, "STOPPED")
		if task.StopCode != ecstypes.TaskStopCodeUserInitiated {
			t.Errorf("stop code %q; want UserInitiated", task.StopCode)
		}
	})

	t.Cleanup(func() {
		if n := containersOf(t, e); n != 0 {
			t.Errorf("%d containers of the fake left after every task stopped", n)
		}
	})
}

func TestErrors(t *testing.T) {
	e := newEnv(t)
	def := e.register(t, "errs", 0, "true")

	_, err := e.ecs.RunTask(ctx(t), &ecs.RunTaskInput{Cluster: aws.String("nope"), TaskDefinition: aws.String(def), NetworkConfiguration: netCfg})
	if code := errorCode(err); code != "ClusterNotFoundException" {
		t.Errorf("RunTask in a missing cluster: error %v (code %q); want ClusterNotFoundException", err, code)
	}

	out, err := e.ecs.DescribeTasks(ctx(t), &ecs.DescribeTasksInput{Tasks: []string{"arn:aws:ecs:us-east-1:123456789012:task/default/0123"}})
	if err != nil || len(out.Failures) != 1 || aws.ToString(out.Failures[0].Reason) != "MISSING" {
		t.Errorf("DescribeTasks of an unknown task: %+v, %v; want one failure MISSING", out, err)
	}

	_, err = e.logs.GetLogEvents(ctx(t), &cloudwatchlogs.GetLogEventsInput{LogGroupName: aws.String("dray"), LogStreamName: aws.String("nope")})
	if code := errorCode(err); code != "ResourceNotFoundException" {
		t.Errorf("GetLogEvents of an unknown stream: error %v; want ResourceNotFoundException", err)
	}

	e.fake.SetFaults(Faults{RunTaskFailures: 1})
	ran, err := e.ecs.RunTask(ctx(t), &ecs.RunTaskInput{TaskDefinition: aws.String(def), NetworkConfiguration: netCfg})
	if err != nil || len(ran.Tasks) != 0 || len(ran.Failures) != 1 || aws.ToString(ran.Failures[0].Reason) != "RESOURCE:MEMORY" {
		t.Errorf("RunTask with a failure injected: %+v, %v; want no task and a RESOURCE:MEMORY failure", ran, err)
	}
	ran, err = e.ecs.RunTask(ctx(t), &ecs.RunTaskInput{TaskDefinition: aws.String(def), NetworkConfiguration: netCfg})
	if err != nil || len(ran.Tasks) != 1 {
		t.Errorf("RunTask after the injected failure: %+v, %v; want a task", ran, err)
	}

	e.fake.SetFaults(Faults{ThrottleRate: 1})
	_, err = e.ecs.DescribeTaskDefinition(ctx(t), &ecs.DescribeTaskDefinitionInput{TaskDefinition: aws.String("errs")})
	if code := errorCode(err); code != "ThrottlingException" {
		t.Errorf("call with throttling: error %v; want ThrottlingException", err)
	}
	e.fake.SetFaults(Faults{LogsUnavailable: true})
	_, err = e.logs.DescribeLogStreams(ctx(t), &cloudwatchlogs.DescribeLogStreamsInput{LogGroupName: aws.String("dray")})
	if code := errorCode(err); code != "ServiceUnavailableException" {
		t.Errorf("logs call while unavailable: error %v; want ServiceUnavailableException", err)
	}
	e.fake.SetFaults(Faults{})
	if n := e.fake.Calls("RunTask"); n != 3 {
		t.Errorf("Calls(RunTask) = %d; want 3", n)
	}
}

func TestTaskDefinitions(t *testing.T) {
	e := newEnv(t)
	first := e.register(t, "web", 0, "true")
	second := e.register(t, "web", 0, "false")
	if !strings.HasSuffix(first, ":task-definition/web:1") || !strings.HasSuffix(second, ":task-definition/web:2") {
		t.Fatalf("ARNs %s, %s; want revisions 1 and 2", first, second)
	}
	for ref, want := range map[string]int32{"web": 2, "web:1": 1, first: 1} {
		out, err := e.ecs.DescribeTaskDefinition(ctx(t), &ecs.DescribeTaskDefinitionInput{
			TaskDefinition: aws.String(ref), Include: []ecstypes.TaskDefinitionField{ecstypes.TaskDefinitionFieldTags},
		})
		if err != nil {
			t.Fatalf("describe %s: %v", ref, err)
		}
		if out.TaskDefinition.Revision != want || len(out.Tags) != 1 {
			t.Errorf("describe %s: revision %d, tags %+v; want revision %d and a tag", ref, out.TaskDefinition.Revision, out.Tags, want)
		}
	}
	if _, err := e.ecs.DeregisterTaskDefinition(ctx(t), &ecs.DeregisterTaskDefinitionInput{TaskDefinition: aws.String("web:2")}); err != nil {
		t.Fatalf("deregister: %v", err)
	}
	list, err := e.ecs.ListTaskDefinitions(ctx(t), &ecs.ListTaskDefinitionsInput{FamilyPrefix: aws.String("we")})
	if err != nil || len(list.TaskDefinitionArns) != 1 || list.TaskDefinitionArns[0] != first {
		t.Errorf("list: %v, %v; want only %s", list, err, first)
	}
}

func TestGetLogEventsTokens(t *testing.T) {
	e := newEnv(t)
	c := ctx(t)
	if _, err := e.logs.CreateLogGroup(c, &cloudwatchlogs.CreateLogGroupInput{LogGroupName: aws.String("g")}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.logs.CreateLogStream(c, &cloudwatchlogs.CreateLogStreamInput{LogGroupName: aws.String("g"), LogStreamName: aws.String("s")}); err != nil {
		t.Fatal(err)
	}
	put := func(msgs ...string) {
		var evs []cwltypes.InputLogEvent
		for _, m := range msgs {
			evs = append(evs, cwltypes.InputLogEvent{Timestamp: aws.Int64(time.Now().UnixMilli()), Message: aws.String(m)})
		}
		if _, err := e.logs.PutLogEvents(c, &cloudwatchlogs.PutLogEventsInput{LogGroupName: aws.String("g"), LogStreamName: aws.String("s"), LogEvents: evs}); err != nil {
			t.Fatal(err)
		}
	}
	get := func(token *string) ([]string, *string) {
		out, err := e.logs.GetLogEvents(c, &cloudwatchlogs.GetLogEventsInput{
			LogGroupName: aws.String("g"), LogStreamName: aws.String("s"), StartFromHead: aws.Bool(true), NextToken: token, Limit: aws.Int32(2),
		})
		if err != nil {
			t.Fatal(err)
		}
		var msgs []string
		for _, ev := range out.Events {
			msgs = append(msgs, aws.ToString(ev.Message))
		}
		return msgs, out.NextForwardToken
	}
	put("a", "b", "c")
	msgs, tok := get(nil)
	msgs2, tok2 := get(tok)
	msgs3, tok3 := get(tok2)
	if strings.Join(msgs, "")+"|"+strings.Join(msgs2, "") != "ab|c" || len(msgs3) != 0 || aws.ToString(tok3) != aws.ToString(tok2) {
		t.Fatalf("pages %q %q %q, tokens %s %s; want ab, c, nothing with the same token", msgs, msgs2, msgs3, aws.ToString(tok2), aws.ToString(tok3))
	}
	put("d")
	if msgs4, _ := get(tok3); strings.Join(msgs4, "") != "d" {
		t.Fatalf("after a new event: %q; want d", msgs4)
	}
}
