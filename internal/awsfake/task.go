package awsfake

import (
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Stop codes, as ECS reports them.
const (
	StopEssentialContainerExited = "EssentialContainerExited"
	StopUserInitiated            = "UserInitiated"
	StopTaskFailedToStart        = "TaskFailedToStart"
)

// Reasons the fake gives, in ECS's words.
const (
	ReasonEssentialExited = "Essential container in task exited"
	ReasonOOM             = "OutOfMemoryError: Container killed due to memory usage"
	ReasonUserStopped     = "Task stopped by user"
)

// maxRunCount is the most tasks one RunTask call starts, as on AWS.
const maxRunCount = 10

type containerOverride struct {
	Name              string     `json:"name"`
	Command           []string   `json:"command,omitempty"`
	Environment       []keyValue `json:"environment,omitempty"`
	Cpu               *int       `json:"cpu,omitempty"`
	Memory            *int       `json:"memory,omitempty"`
	MemoryReservation *int       `json:"memoryReservation,omitempty"`
}

type taskOverride struct {
	ContainerOverrides []containerOverride `json:"containerOverrides"`
	Cpu                string              `json:"cpu,omitempty"`
	Memory             string              `json:"memory,omitempty"`
	TaskRoleArn        string              `json:"taskRoleArn,omitempty"`
	ExecutionRoleArn   string              `json:"executionRoleArn,omitempty"`
}

// task is a task the fake ran. Its fields after the first group change
// under s.mu only.
type task struct {
	arn, id     string
	cluster     *cluster
	def         taskDefinition
	run         containerDefinition // the essential container, overrides applied
	memoryMiB   int                 // the container's memory limit; 0: none
	overrides   taskOverride
	tags        map[string]string
	cpu, memory string
	group       string
	startedBy   string
	launchType  string
	capacity    string
	stuck       bool // stays in PROVISIONING until stopped

	stop     chan struct{} // closed by requestStop
	stopOnce sync.Once

	lastStatus, desiredStatus    string
	stopCode, stoppedReason      string
	createdAt, startedAt         time.Time
	pullStartedAt, pullStoppedAt time.Time
	stoppingAt, stoppedAt        time.Time
	containers                   []*taskContainer
	version                      int64
}

type taskContainer struct {
	ContainerArn string `json:"containerArn"`
	TaskArn      string `json:"taskArn"`
	Name         string `json:"name"`
	Image        string `json:"image"`
	LastStatus   string `json:"lastStatus"`
	ExitCode     *int   `json:"exitCode,omitempty"`
	Reason       string `json:"reason,omitempty"`
	RuntimeID    string `json:"runtimeId,omitempty"`
	Cpu          string `json:"cpu,omitempty"`
	Memory       string `json:"memory,omitempty"`
}

// requestStop asks the task's goroutine to stop it; it is safe to call many times.
func (t *task) requestStop() { t.stopOnce.Do(func() { close(t.stop) }) }

// logTarget returns the CloudWatch Logs group and stream of the task's
// output; ok is false when its container does not log with awslogs.
func (t *task) logTarget() (group, stream string, ok bool) {
	lc := t.run.LogConfiguration
	if lc == nil || lc.LogDriver != "awslogs" || lc.Options["awslogs-group"] == "" {
		return "", "", false
	}
	stream = t.id
	if p := lc.Options["awslogs-stream-prefix"]; p != "" {
		stream = p + "/" + t.run.Name + "/" + t.id
	}
	return lc.Options["awslogs-group"], stream, true
}

type taskOut struct {
	TaskArn              string           `json:"taskArn"`
	ClusterArn           string           `json:"clusterArn"`
	TaskDefinitionArn    string           `json:"taskDefinitionArn"`
	LastStatus           string           `json:"lastStatus"`
	DesiredStatus        string           `json:"desiredStatus"`
	CreatedAt            *epoch           `json:"createdAt,omitempty"`
	PullStartedAt        *epoch           `json:"pullStartedAt,omitempty"`
	PullStoppedAt        *epoch           `json:"pullStoppedAt,omitempty"`
	StartedAt            *epoch           `json:"startedAt,omitempty"`
	StoppingAt           *epoch           `json:"stoppingAt,omitempty"`
	StoppedAt            *epoch           `json:"stoppedAt,omitempty"`
	ExecutionStoppedAt   *epoch           `json:"executionStoppedAt,omitempty"`
	StopCode             string           `json:"stopCode,omitempty"`
	StoppedReason        string           `json:"stoppedReason,omitempty"`
	Containers           []*taskContainer `json:"containers"`
	Overrides            taskOverride     `json:"overrides"`
	Tags                 []tag            `json:"tags,omitempty"`
	Cpu                  string           `json:"cpu,omitempty"`
	Memory               string           `json:"memory,omitempty"`
	Group                string           `json:"group,omitempty"`
	StartedBy            string           `json:"startedBy,omitempty"`
	LaunchType           string           `json:"launchType,omitempty"`
	CapacityProviderName string           `json:"capacityProviderName,omitempty"`
	AvailabilityZone     string           `json:"availabilityZone"`
	Version              int64            `json:"version"`
}

// taskOut returns the task as ECS describes it. Called with s.mu held.
func (s *Server) taskOut(t *task, withTags bool) taskOut {
	o := taskOut{
		TaskArn: t.arn, ClusterArn: t.cluster.Arn, TaskDefinitionArn: t.def.TaskDefinitionArn,
		LastStatus: t.lastStatus, DesiredStatus: t.desiredStatus,
		CreatedAt: epochOf(t.createdAt), PullStartedAt: epochOf(t.pullStartedAt), PullStoppedAt: epochOf(t.pullStoppedAt),
		StartedAt: epochOf(t.startedAt), StoppingAt: epochOf(t.stoppingAt), StoppedAt: epochOf(t.stoppedAt),
		StopCode: t.stopCode, StoppedReason: t.stoppedReason,
		Overrides: t.overrides, Cpu: t.cpu, Memory: t.memory, Group: t.group, StartedBy: t.startedBy,
		LaunchType: t.launchType, CapacityProviderName: t.capacity,
		AvailabilityZone: Region + "a", Version: t.version,
	}
	if !t.stoppedAt.IsZero() {
		o.ExecutionStoppedAt = o.StoppedAt
	}
	for _, c := range t.containers {
		c := *c // a copy: the task's goroutine changes the original
		o.Containers = append(o.Containers, &c)
	}
	if withTags {
		o.Tags = tagList(s.allTags(t.arn, t.tags))
	}
	return o
}

// update changes a task under s.mu and counts the change in its version.
func (s *Server) update(t *task, f func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f()
	t.version++
}

type runTaskInput struct {
	Cluster                  string `json:"cluster"`
	TaskDefinition           string `json:"taskDefinition"`
	Count                    int    `json:"count"`
	LaunchType               string `json:"launchType"`
	CapacityProviderStrategy []struct {
		CapacityProvider string `json:"capacityProvider"`
	} `json:"capacityProviderStrategy"`
	NetworkConfiguration *struct {
		AwsvpcConfiguration *struct {
			Subnets        []string `json:"subnets"`
			SecurityGroups []string `json:"securityGroups"`
			AssignPublicIp string   `json:"assignPublicIp"`
		} `json:"awsvpcConfiguration"`
	} `json:"networkConfiguration"`
	Overrides            taskOverride `json:"overrides"`
	Tags                 []tag        `json:"tags"`
	PropagateTags        string       `json:"propagateTags"`
	StartedBy            string       `json:"startedBy"`
	EnableECSManagedTags bool         `json:"enableECSManagedTags"`
	Group                string       `json:"group"`
	ClientToken          string       `json:"clientToken"`
}

func runTask(s *Server, in *runTaskInput) (any, *apiError) {
	if in.TaskDefinition == "" {
		return nil, clientErr("InvalidParameterException", "taskDefinition can not be blank.")
	}
	count := in.Count
	if count == 0 {
		count = 1
	}
	if count < 1 || count > maxRunCount {
		return nil, clientErr("InvalidParameterException", "count must be between 1 and %d.", maxRunCount)
	}
	if in.LaunchType != "" && len(in.CapacityProviderStrategy) > 0 {
		return nil, clientErr("InvalidParameterException", "Specifying both a launch type and capacity provider strategy is not supported. Remove one and try again.")
	}
	if !slices.Contains([]string{"", "EC2", "FARGATE", "EXTERNAL"}, in.LaunchType) {
		return nil, clientErr("InvalidParameterException", "launchType %q is not valid.", in.LaunchType)
	}
	if in.PropagateTags != "" && in.PropagateTags != "TASK_DEFINITION" && in.PropagateTags != "NONE" {
		return nil, clientErr("InvalidParameterException", "propagateTags %q is not valid.", in.PropagateTags)
	}
	if nc := in.NetworkConfiguration; nc != nil && nc.AwsvpcConfiguration != nil {
		if len(nc.AwsvpcConfiguration.Subnets) == 0 {
			return nil, clientErr("InvalidParameterException", "subnets can not be empty.")
		}
		for _, sn := range nc.AwsvpcConfiguration.Subnets {
			if len(s.subnets) > 0 && !slices.Contains(s.subnets, sn) {
				return nil, clientErr("InvalidParameterException", "Error retrieving subnet information for [%s]: The subnet ID '%s' does not exist (ECS Subnet Error)", sn, sn)
			}
		}
		if ip := nc.AwsvpcConfiguration.AssignPublicIp; ip != "" && ip != "ENABLED" && ip != "DISABLED" {
			return nil, clientErr("InvalidParameterException", "assignPublicIp %q is not valid.", ip)
		}
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	select {
	case <-s.closed: // Close waits for the tasks' goroutines; no new ones now
		return nil, &apiError{status: http.StatusInternalServerError, typ: "ServerException", msg: "the fake is closed"}
	default:
	}
	cl, aerr := s.cluster(in.Cluster)
	if aerr != nil {
		return nil, aerr
	}
	td, ok := s.taskDef(in.TaskDefinition)
	if !ok {
		return nil, clientErr("ClientException", "TaskDefinition not found.")
	}
	if td.def.Status != "ACTIVE" {
		return nil, clientErr("ClientException", "TaskDefinition is inactive")
	}
	if td.def.NetworkMode == "awsvpc" && (in.NetworkConfiguration == nil || in.NetworkConfiguration.AwsvpcConfiguration == nil) {
		return nil, clientErr("InvalidParameterException", "Network Configuration must be provided when networkMode 'awsvpc' is specified.")
	}
	if in.LaunchType == "FARGATE" && td.def.NetworkMode != "awsvpc" {
		return nil, clientErr("ClientException", "Fargate only supports network mode 'awsvpc'.")
	}
	for _, o := range in.Overrides.ContainerOverrides {
		if !slices.ContainsFunc(td.def.ContainerDefinitions, func(c containerDefinition) bool { return c.Name == o.Name }) {
			return nil, clientErr("InvalidParameterException", "Override for container named %s is not a container in the TaskDefinition.", o.Name)
		}
	}

	if f := &s.faults; f.RunTaskFailures != 0 {
		if f.RunTaskFailures > 0 {
			f.RunTaskFailures--
		}
		reason := f.RunTaskFailureReason
		if reason == "" {
			reason = "RESOURCE:MEMORY"
		}
		return map[string]any{"tasks": []any{}, "failures": []failure{{
			Arn: arnPrefix + "container-instance/" + cl.Name + "/" + randomHex(16), Reason: reason,
		}}}, nil
	}

	if len(in.ClientToken) > 64 {
		return nil, clientErr("InvalidParameterException", "clientToken must be at most 64 characters.")
	}
	if arns, ok := s.tokens[in.ClientToken]; ok && in.ClientToken != "" {
		// The same token again: the tasks of the first call, none new.
		tasks := make([]taskOut, 0, len(arns))
		for _, arn := range arns {
			tasks = append(tasks, s.taskOut(s.tasks[arn], true))
		}
		return map[string]any{"tasks": tasks, "failures": []failure{}}, nil
	}
	tasks := make([]taskOut, 0, count)
	for range count {
		t := s.newTask(cl, td, in)
		s.tasks[t.arn] = t
		s.order = append(s.order, t.arn)
		tasks = append(tasks, s.taskOut(t, true))
		if in.ClientToken != "" {
			s.tokens[in.ClientToken] = append(s.tokens[in.ClientToken], t.arn)
		}
		s.wg.Add(1)
		go s.runTask(t)
	}
	return map[string]any{"tasks": tasks, "failures": []failure{}}, nil
}

// newTask makes the record of a task RunTask starts. Called with s.mu held.
func (s *Server) newTask(cl *cluster, td *taskDef, in *runTaskInput) *task {
	id := randomHex(16)
	t := &task{
		arn: arnPrefix + "task/" + cl.Name + "/" + id, id: id, cluster: cl, def: td.def,
		overrides: in.Overrides, cpu: td.def.Cpu, memory: td.def.Memory,
		group: in.Group, startedBy: in.StartedBy, launchType: in.LaunchType,
		stop: make(chan struct{}), lastStatus: "PROVISIONING", desiredStatus: "RUNNING",
		createdAt: time.Now(), version: 1, tags: map[string]string{},
	}
	if t.overrides.ContainerOverrides == nil {
		t.overrides.ContainerOverrides = []containerOverride{}
	}
	if t.group == "" {
		t.group = "family:" + td.def.Family
	}
	if len(in.CapacityProviderStrategy) > 0 {
		t.capacity = in.CapacityProviderStrategy[0].CapacityProvider
	} else if t.launchType == "" {
		t.launchType = "EC2"
	}
	if in.Overrides.Cpu != "" {
		t.cpu = in.Overrides.Cpu
	}
	if in.Overrides.Memory != "" {
		t.memory = in.Overrides.Memory
	}
	if in.PropagateTags == "TASK_DEFINITION" {
		t.tags = s.allTags(td.def.TaskDefinitionArn, td.tags)
	}
	for k, v := range tagMap(in.Tags) {
		t.tags[k] = v
	}
	if in.EnableECSManagedTags {
		t.tags["aws:ecs:clusterName"] = cl.Name
	}

	// The first essential container is the one that runs; the others are
	// only described.
	essential := slices.IndexFunc(td.def.ContainerDefinitions, func(c containerDefinition) bool { return c.essential() })
	for i, c := range td.def.ContainerDefinitions {
		c = applyOverride(c, in.Overrides.ContainerOverrides)
		if i == essential {
			t.run = c
		}
		tc := &taskContainer{
			ContainerArn: arnPrefix + "container/" + cl.Name + "/" + id + "/" + randomHex(16),
			TaskArn:      t.arn, Name: c.Name, Image: c.Image, LastStatus: "PENDING", Cpu: strconv.Itoa(c.Cpu),
		}
		if c.Memory > 0 {
			tc.Memory = strconv.Itoa(c.Memory)
		}
		t.containers = append(t.containers, tc)
	}
	t.memoryMiB = t.run.Memory
	if t.memoryMiB == 0 {
		t.memoryMiB, _ = strconv.Atoi(t.memory)
	}

	f := s.faults
	t.stuck = f.ProvisioningStuck || slices.Contains(f.StuckTasks, td.def.Family) || slices.Contains(f.StuckTasks, t.run.Image)
	return t
}

// applyOverride returns c with its override from overrides applied.
func applyOverride(c containerDefinition, overrides []containerOverride) containerDefinition {
	c.Environment = slices.Clone(c.Environment)
	for _, o := range overrides {
		if o.Name != c.Name {
			continue
		}
		if o.Command != nil {
			c.Command = o.Command
		}
		for _, kv := range o.Environment {
			if i := slices.IndexFunc(c.Environment, func(e keyValue) bool { return e.Name == kv.Name }); i >= 0 {
				c.Environment[i] = kv
			} else {
				c.Environment = append(c.Environment, kv)
			}
		}
		if o.Cpu != nil {
			c.Cpu = *o.Cpu
		}
		if o.Memory != nil {
			c.Memory = *o.Memory
		}
		if o.MemoryReservation != nil {
			c.MemoryReservation = *o.MemoryReservation
		}
	}
	return c
}

type describeTasksInput struct {
	Cluster string   `json:"cluster"`
	Tasks   []string `json:"tasks"`
	Include []string `json:"include"`
}

func describeTasks(s *Server, in *describeTasksInput) (any, *apiError) {
	if len(in.Tasks) == 0 || len(in.Tasks) > 100 {
		return nil, clientErr("InvalidParameterException", "Tasks must contain between 1 and 100 elements.")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	cl, aerr := s.cluster(in.Cluster)
	if aerr != nil {
		return nil, aerr
	}
	withTags := slices.Contains(in.Include, "TAGS")
	tasks, failures := []taskOut{}, []failure{}
	for _, ref := range in.Tasks {
		if t := s.findTask(cl, ref); t != nil {
			tasks = append(tasks, s.taskOut(t, withTags))
		} else {
			failures = append(failures, failure{Arn: ref, Reason: "MISSING"})
		}
	}
	return map[string]any{"tasks": tasks, "failures": failures}, nil
}

// findTask finds a task of cl by ARN or ID. Called with s.mu held.
func (s *Server) findTask(cl *cluster, ref string) *task {
	if !strings.HasPrefix(ref, "arn:") {
		ref = arnPrefix + "task/" + cl.Name + "/" + ref
	}
	if t := s.tasks[ref]; t != nil && t.cluster == cl {
		return t
	}
	return nil
}

type stopTaskInput struct {
	Cluster string `json:"cluster"`
	Task    string `json:"task"`
	Reason  string `json:"reason"`
}

// stopTask marks the task to stop and tells its goroutine, which sends the
// container SIGTERM, then SIGKILL after a grace period.
func stopTask(s *Server, in *stopTaskInput) (any, *apiError) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cl, aerr := s.cluster(in.Cluster)
	if aerr != nil {
		return nil, aerr
	}
	t := s.findTask(cl, in.Task)
	if t == nil {
		return nil, clientErr("InvalidParameterException", "The referenced task was not found.")
	}
	if t.desiredStatus != "STOPPED" {
		t.desiredStatus = "STOPPED"
		t.stoppingAt = time.Now()
		t.stopCode = StopUserInitiated
		t.stoppedReason = in.Reason
		if t.stoppedReason == "" {
			t.stoppedReason = ReasonUserStopped
		}
		t.version++
		t.requestStop()
	}
	return map[string]any{"task": s.taskOut(t, false)}, nil
}

type listTasksInput struct {
	Cluster       string `json:"cluster"`
	StartedBy     string `json:"startedBy"`
	DesiredStatus string `json:"desiredStatus"`
	Family        string `json:"family"`
}

// listTasks returns every match at once (no paging), oldest first.
func listTasks(s *Server, in *listTasksInput) (any, *apiError) {
	desired := in.DesiredStatus
	if desired == "" {
		desired = "RUNNING"
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	cl, aerr := s.cluster(in.Cluster)
	if aerr != nil {
		return nil, aerr
	}
	arns := []string{}
	for _, arn := range s.order {
		t := s.tasks[arn]
		if t.cluster != cl || t.desiredStatus != desired ||
			(in.StartedBy != "" && t.startedBy != in.StartedBy) || (in.Family != "" && t.def.Family != in.Family) {
			continue
		}
		arns = append(arns, arn)
	}
	return map[string]any{"taskArns": arns}, nil
}

// stopped marks a task STOPPED with every container stopped. Called with
// s.mu held. A stop code set before (by StopTask) is kept.
func (t *task) stopped(code, reason string) {
	now := time.Now()
	t.lastStatus, t.desiredStatus = "STOPPED", "STOPPED"
	if t.stopCode == "" {
		t.stopCode, t.stoppedReason = code, reason
	}
	if t.stoppingAt.IsZero() {
		t.stoppingAt = now
	}
	t.stoppedAt = now
	for _, c := range t.containers {
		c.LastStatus = "STOPPED"
	}
}
