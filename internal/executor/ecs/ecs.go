// Package ecs runs task attempts as Amazon ECS tasks.
//
// Each attempt is one task of the profile's task definition (option
// task_definition), run with RunTask and followed by polling: one goroutine
// per region and cluster describes every task this executor follows, up to
// 100 a call, every Config.Poll. The task's output is read from its
// CloudWatch Logs stream (the essential container's awslogs configuration, or
// the options log_group and log_stream_prefix) while it runs, and drained
// once it has stopped.
//
// CloudWatch Logs merges a container's stdout and stderr, so every line is
// given as stdout. ECS has no way to read a file back from a stopped task:
// $DRAY_OUTPUT is set (to /tmp/dray-output.json) so that tasks do not break,
// but only the `::dray-output::` marker lines of the log carry outputs on ECS.
//
// A task outlives the agent: Recover re-attaches to it by the task ARN of the
// handle's State, or by its dray-attempt tag; Orphans stops the tasks an agent
// started that no attempt holds any more.
package ecs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/cloudwatchlogs"
	"github.com/aws/aws-sdk-go-v2/service/ecs"
	ecstypes "github.com/aws/aws-sdk-go-v2/service/ecs/types"
	"github.com/aws/smithy-go"
	"golang.org/x/sync/singleflight"
	"golang.org/x/time/rate"

	"github.com/dray-dev/dray/internal/executor"
)

// Tags the executor puts on every task it runs, besides those of Spec.Labels
// (whose "dray." keys become "dray-" keys, so dray.agent is TagAgent).
const (
	TagManaged   = "dray-managed" // always "true"
	TagAttempt   = "dray-attempt" // Spec.AttemptID
	TagAgent     = "dray-agent"   // from Spec.Labels["dray.agent"]
	TagImageHash = "dray-image-hash"
)

// StartedBy is the startedBy of every task the executor runs.
const StartedBy = "dray"

// OutputPath is $DRAY_OUTPUT in a task. Nothing reads it back: on ECS only
// `::dray-output::` marker lines carry outputs.
const OutputPath = "/tmp/dray-output.json"

// Defaults.
const (
	defaultPoll         = 2 * time.Second
	defaultLogPoll      = time.Second
	defaultStartTimeout = 10 * time.Minute
	defaultLogDrain     = 2 * time.Minute
	defaultRunBackoff   = time.Second
	maxRunBackoff       = 30 * time.Second
	// defaultRunTaskRate is RunTask's sustained rate in a region (AWS
	// allows 20 a second with bursts of 100 per account and region).
	defaultRunTaskRate = 20
	// defaultLogReadRate is GetLogEvents calls a second per region, under
	// the 25 AWS allows an account.
	defaultLogReadRate = 20
	// maxLogWait is the longest wait between reads of a quiet task's log.
	maxLogWait = 10 * time.Second
	// runTaskTries is how often RunTask is tried while it answers failures
	// (no capacity, no memory): they are often gone a few seconds later.
	runTaskTries = 5
	// cleanupTimeout bounds the calls made once an attempt's own context is gone.
	cleanupTimeout = 30 * time.Second
)

// Config configures an Executor. The zero value is usable.
type Config struct {
	// Logger receives the executor's own diagnostics. Nil means slog.Default().
	Logger *slog.Logger
	// Clients returns the ECS and CloudWatch Logs clients of a region (empty:
	// the SDK's default region). It is called once per region. Nil means the
	// SDK's default configuration (environment, shared files, instance role)
	// with the adaptive retry mode.
	Clients func(region string) (*ecs.Client, *cloudwatchlogs.Client, error)
	// Poll is how often the tasks are described; zero means 2s.
	Poll time.Duration
	// LogPoll is how often a task's log stream is read; zero means 1s.
	LogPoll time.Duration
	// Clusters are clusters Orphans looks at besides those this executor has
	// used; the command passes those of the ECS profiles.
	Clusters []Cluster
	// RunTaskRate is how many RunTask calls a second the executor makes in
	// one region, in bursts of at most as many; zero means 20. Agents of one
	// account share AWS's limit: give each a part of it.
	RunTaskRate float64
	// LogReadRate is how many GetLogEvents calls a second the executor
	// makes in one region; zero means 20.
	LogReadRate float64
}

// Cluster names a cluster of a region.
type Cluster struct {
	Region  string
	Cluster string
}

// Executor runs attempts as ECS tasks. It implements executor.Executor and
// executor.Reconciler and is safe for concurrent use.
type Executor struct {
	log        *slog.Logger
	clientsFn  func(region string) (*ecs.Client, *cloudwatchlogs.Client, error)
	poll       time.Duration
	logPoll    time.Duration
	logDrain   time.Duration // how long a stopped task's log is retried
	runBackoff time.Duration // the first wait after a RunTask failure
	runRate    float64       // RunTask calls a second, per region
	logRate    float64       // GetLogEvents calls a second, per region

	ctx    context.Context // ends at Close; bounds pollers and handles
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu        sync.Mutex
	clients   map[string]*regionClients
	pollers   map[Cluster]*poller
	known     map[Cluster]bool          // clusters used, for Orphans
	revisions map[string]*revisionEntry // image revisions, by region, family and image
	defs      map[string]describedDef   // task definitions, by region and name
	defGroup  singleflight.Group        // one DescribeTaskDefinition a name at once
}

type regionClients struct {
	ecs  *ecs.Client
	logs *cloudwatchlogs.Client
	// poll is the pollers' own client: the SDK's adaptive retry mode slows a
	// client down after throttling, and a burst of RunTask calls being
	// throttled must not starve DescribeTasks.
	poll *ecs.Client
	runs *rate.Limiter // RunTask's token bucket in the region
	// GetLogEvents' token buckets in the region: hot for logs that grow or
	// were not read yet, cold for quiet ones, so that hundreds of quiet
	// tasks do not delay the lines of a chatty one.
	hotReads, coldReads *rate.Limiter
}

var (
	_ executor.Executor   = (*Executor)(nil)
	_ executor.Reconciler = (*Executor)(nil)
)

// New returns an Executor configured by cfg. It makes no AWS call.
func New(cfg Config) *Executor {
	ctx, cancel := context.WithCancel(context.Background())
	e := &Executor{
		log: cfg.Logger, clientsFn: cfg.Clients, poll: cfg.Poll, logPoll: cfg.LogPoll,
		logDrain: defaultLogDrain, runBackoff: defaultRunBackoff, runRate: cfg.RunTaskRate, logRate: cfg.LogReadRate,
		ctx: ctx, cancel: cancel,
		clients: map[string]*regionClients{}, pollers: map[Cluster]*poller{},
		known: map[Cluster]bool{}, revisions: map[string]*revisionEntry{}, defs: map[string]describedDef{},
	}
	if e.log == nil {
		e.log = slog.Default()
	}
	if e.clientsFn == nil {
		e.clientsFn = defaultClients
	}
	if e.poll <= 0 {
		e.poll = defaultPoll
	}
	if e.logPoll <= 0 {
		e.logPoll = defaultLogPoll
	}
	if e.runRate <= 0 {
		e.runRate = defaultRunTaskRate
	}
	if e.logRate <= 0 {
		e.logRate = defaultLogReadRate
	}
	for _, c := range cfg.Clusters {
		e.known[c] = true
	}
	return e
}

// Close stops following the tasks (they keep running on ECS; a new executor
// can Recover them) and waits for the executor's goroutines. Handles still
// waited for return an error.
func (e *Executor) Close() error {
	e.cancel()
	e.wg.Wait()
	return nil
}

func defaultClients(region string) (*ecs.Client, *cloudwatchlogs.Client, error) {
	opts := []func(*awsconfig.LoadOptions) error{awsconfig.WithRetryMode(aws.RetryModeAdaptive)}
	if region != "" {
		opts = append(opts, awsconfig.WithRegion(region))
	}
	cfg, err := awsconfig.LoadDefaultConfig(context.Background(), opts...)
	if err != nil {
		return nil, nil, fmt.Errorf("load AWS configuration: %w", err)
	}
	return ecs.NewFromConfig(cfg), cloudwatchlogs.NewFromConfig(cfg), nil
}

// clientsOf returns the clients of region, made on first use.
func (e *Executor) clientsOf(region string) (*regionClients, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if c, ok := e.clients[region]; ok {
		return c, nil
	}
	ec, lc, err := e.clientsFn(region)
	if err != nil {
		return nil, fmt.Errorf("AWS clients of region %q: %w", region, err)
	}
	pc, _, err := e.clientsFn(region)
	if err != nil {
		return nil, fmt.Errorf("AWS clients of region %q: %w", region, err)
	}
	hot := e.logRate * 3 / 4
	c := &regionClients{
		ecs: ec, logs: lc, poll: pc,
		runs:      rate.NewLimiter(rate.Limit(e.runRate), max(int(e.runRate), 1)),
		hotReads:  rate.NewLimiter(rate.Limit(hot), max(int(hot), 1)),
		coldReads: rate.NewLimiter(rate.Limit(e.logRate-hot), max(int(e.logRate-hot), 1)),
	}
	e.clients[region] = c
	return c, nil
}

// Start runs one task for spec and returns at once with its handle. See the
// package doc for what it runs; an error means no task runs.
func (e *Executor) Start(ctx context.Context, spec *executor.Spec, sink executor.LogSink) (executor.Handle, error) {
	h, err := e.start(ctx, spec, sink)
	if err != nil {
		return nil, fmt.Errorf("start ECS task: %w", err)
	}
	return h, nil
}

func (e *Executor) start(ctx context.Context, spec *executor.Spec, sink executor.LogSink) (*handle, error) {
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
	if len(spec.Secrets) > 0 && !opts.allowSecretOverrides {
		return nil, fmt.Errorf("the task puts secrets into %s, which would go into RunTask's overrides, where anyone allowed ecs:DescribeTasks reads them: "+
			"give them to the container through the task definition's secrets (valueFrom), or set allow_secret_overrides: true on the profile",
			strings.Join(spec.Secrets, ", "))
	}
	region := opts.region
	cl, err := e.clientsOf(region)
	if err != nil {
		return nil, err
	}
	if spec.Attempt > 1 {
		e.stopPredecessors(ctx, cl, opts.cluster, spec)
	}
	td, err := e.taskDefinition(ctx, cl.ecs, region, opts, spec.Image)
	if err != nil {
		return nil, err
	}
	in := runTaskInput(spec, opts, td)
	task, err := e.runTask(ctx, cl, in, spec.AttemptID)
	if err != nil {
		return nil, err
	}
	st := state{
		Task: aws.ToString(task.TaskArn), Cluster: opts.cluster, Region: region,
		Container: td.container, LogGroup: td.logGroup, LogStream: td.logStream(taskID(aws.ToString(task.TaskArn))),
	}
	e.log.Info("started ECS task", "task", st.Task, "task_definition", td.arn, "attempt_id", spec.AttemptID)
	return e.follow(cl, st, opts.startTimeout, sink), nil
}

// runTaskInput builds the RunTask request of spec.
func runTaskInput(spec *executor.Spec, opts options, td *taskDef) *ecs.RunTaskInput {
	env := maps.Clone(spec.Env)
	if env == nil {
		env = map[string]string{}
	}
	env["DRAY_OUTPUT"] = OutputPath
	co := ecstypes.ContainerOverride{Name: aws.String(td.container)}
	for _, k := range slices.Sorted(maps.Keys(env)) {
		co.Environment = append(co.Environment, ecstypes.KeyValuePair{Name: aws.String(k), Value: aws.String(env[k])})
	}
	switch {
	case spec.Run != "":
		co.Command = []string{"sh", "-c", spec.Run}
	case len(spec.Command) > 0:
		co.Command = spec.Command
	}
	ov := &ecstypes.TaskOverride{ContainerOverrides: []ecstypes.ContainerOverride{co}}
	if spec.Resources.MilliCPU > 0 {
		ov.Cpu = aws.String(strconv.FormatInt(spec.Resources.MilliCPU*1024/1000, 10))
	}
	if spec.Resources.MemoryBytes > 0 {
		ov.Memory = aws.String(strconv.FormatInt(max(spec.Resources.MemoryBytes>>20, 1), 10))
	}
	if opts.ephemeralStorage > 0 {
		ov.EphemeralStorage = &ecstypes.EphemeralStorage{SizeInGiB: int32(opts.ephemeralStorage)}
	}
	if opts.taskRoleARN != "" {
		ov.TaskRoleArn = aws.String(opts.taskRoleARN)
	}
	if opts.executionRoleARN != "" {
		ov.ExecutionRoleArn = aws.String(opts.executionRoleARN)
	}

	in := &ecs.RunTaskInput{
		Cluster:        aws.String(opts.cluster),
		TaskDefinition: aws.String(td.arn),
		Count:          aws.Int32(1),
		Overrides:      ov,
		Tags:           taskTags(spec, opts),
		PropagateTags:  ecstypes.PropagateTagsTaskDefinition,
		StartedBy:      aws.String(StartedBy),
	}
	if opts.capacityProvider != "" {
		in.CapacityProviderStrategy = []ecstypes.CapacityProviderStrategyItem{{CapacityProvider: aws.String(opts.capacityProvider), Weight: 1}}
	} else {
		in.LaunchType = ecstypes.LaunchType(opts.launchType)
	}
	if len(opts.subnets) > 0 || len(opts.securityGroups) > 0 {
		ip := ecstypes.AssignPublicIpDisabled
		if opts.assignPublicIP {
			ip = ecstypes.AssignPublicIpEnabled
		}
		in.NetworkConfiguration = &ecstypes.NetworkConfiguration{AwsvpcConfiguration: &ecstypes.AwsVpcConfiguration{
			Subnets: opts.subnets, SecurityGroups: opts.securityGroups, AssignPublicIp: ip,
		}}
	}
	if opts.platformVersion != "" {
		in.PlatformVersion = aws.String(opts.platformVersion)
	}
	return in
}

// taskTags returns the tags of an attempt's task: the Spec's labels, the
// profile's tags and the executor's own.
func taskTags(spec *executor.Spec, opts options) []ecstypes.Tag {
	m := map[string]string{}
	for k, v := range opts.tags {
		m[tagText(k, 128)] = tagText(v, 256)
	}
	for k, v := range spec.Labels {
		if rest, ok := strings.CutPrefix(k, "dray."); ok {
			k = "dray-" + rest
		}
		m[tagText(k, 128)] = tagText(v, 256)
	}
	m[TagManaged] = "true"
	m[TagAttempt] = strconv.FormatInt(spec.AttemptID, 10)
	tags := make([]ecstypes.Tag, 0, len(m))
	for _, k := range slices.Sorted(maps.Keys(m)) {
		if k == "" {
			continue
		}
		tags = append(tags, ecstypes.Tag{Key: aws.String(k), Value: aws.String(m[k])})
	}
	return tags
}

// tagText replaces what an ECS tag may not hold (it allows letters, digits,
// spaces and + - = . _ : / @) with _, and cuts it to n characters.
func tagText(s string, n int) string {
	var b strings.Builder
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', strings.ContainsRune(" +-=._:/@", r):
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
	}
	out := b.String()
	if len(out) > n {
		out = out[:n]
	}
	return out
}

// runTask starts the task, waiting for the region's RunTask token bucket
// first. It tries again, with back-off, while ECS answers failures (no
// capacity, no memory) up to runTaskTries times, and while RunTask is
// throttled or fails on its side for as long as ctx lasts: throttling
// delays an attempt, it never fails it. A ClientToken makes a call the SDK
// or this loop sends again start at most one task.
func (e *Executor) runTask(ctx context.Context, cl *regionClients, in *ecs.RunTaskInput, attempt int64) (ecstypes.Task, error) {
	nonce := strconv.FormatUint(rand.Uint64(), 36)
	failWait, errWait := e.runBackoff, e.runBackoff
	var reasons []string
	for round := 1; ; {
		if err := cl.runs.Wait(ctx); err != nil {
			return ecstypes.Task{}, fmt.Errorf("run task: waiting for the RunTask rate: %w", err)
		}
		in.ClientToken = aws.String(fmt.Sprintf("dray-%d-%s-%d", attempt, nonce, round))
		out, err := cl.ecs.RunTask(ctx, in)
		if err != nil {
			if !transient(err) || ctx.Err() != nil {
				return ecstypes.Task{}, awsError("run task", err)
			}
			e.log.Info("RunTask throttled or failed on the AWS side; trying again", "err", err, "wait", errWait)
			if err := sleep(ctx, errWait); err != nil {
				return ecstypes.Task{}, fmt.Errorf("run task: %v; gave up: %w", awsError("run task", err), err)
			}
			errWait = min(errWait*2, maxRunBackoff)
			continue
		}
		if len(out.Tasks) > 0 {
			return out.Tasks[0], nil
		}
		reasons = reasons[:0]
		for _, f := range out.Failures {
			r := aws.ToString(f.Reason)
			if d := aws.ToString(f.Detail); d != "" {
				r += " (" + d + ")"
			}
			reasons = append(reasons, r)
		}
		if len(reasons) == 0 {
			reasons = append(reasons, "no task and no failure in the answer")
		}
		if round >= runTaskTries {
			return ecstypes.Task{}, fmt.Errorf("run task: ECS could not place it after %d tries: %s", runTaskTries, strings.Join(reasons, ", "))
		}
		e.log.Info("RunTask answered failures; trying again", "reasons", reasons, "try", round, "wait", failWait)
		if err := sleep(ctx, failWait); err != nil {
			return ecstypes.Task{}, fmt.Errorf("run task: %s; gave up: %w", strings.Join(reasons, ", "), err)
		}
		failWait = min(failWait*2, maxRunBackoff)
		round++ // a new token: the last call surely started nothing
	}
}

// throttleBackoff is the first wait of call after AWS throttled it.
var throttleBackoff = 200 * time.Millisecond

// call calls f until it succeeds, fails for good, or ctx ends, waiting with
// back-off (up to 30s) while AWS throttles it or fails on its side, past
// the SDK's own retries: throttling slows the executor down, it does not
// fail attempts.
func call[T any](ctx context.Context, f func(context.Context) (T, error)) (T, error) {
	wait := throttleBackoff
	for {
		out, err := f(ctx)
		if err == nil || !transient(err) || ctx.Err() != nil {
			return out, err
		}
		if sleep(ctx, wait) != nil {
			return out, err
		}
		wait = min(wait*2, maxRunBackoff)
	}
}

// sleep waits for d or until ctx ends, and then returns its error.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// transient reports whether AWS answered that it is throttling or failed
// itself. An error without an answer (no credentials, the network after the
// SDK's own retries) is not: the attempt fails with it and dray's retries
// take over.
func transient(err error) bool {
	var ae smithy.APIError
	if !errors.As(err, &ae) {
		return false
	}
	switch ae.ErrorCode() {
	case "ThrottlingException", "Throttling", "RequestLimitExceeded", "TooManyRequestsException",
		"ServerException", "ServiceUnavailable", "ServiceUnavailableException", "InternalFailure":
		return true
	}
	return ae.ErrorFault() == smithy.FaultServer
}

// APIError is an error an AWS API answered, such as
// ClusterNotFoundException or AccessDeniedException.
type APIError struct {
	Op      string // what the executor did: "run task"
	Code    string // the AWS error code
	Message string
	Err     error // the SDK's error
}

func (e *APIError) Error() string { return e.Op + ": " + e.Code + ": " + e.Message }

// Unwrap returns the SDK's error.
func (e *APIError) Unwrap() error { return e.Err }

// awsError names the operation and, when AWS answered, its error code and
// message; the SDK's own message holds a request id and more noise.
func awsError(op string, err error) error {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return &APIError{Op: op, Code: ae.ErrorCode(), Message: ae.ErrorMessage(), Err: err}
	}
	return fmt.Errorf("%s: %w", op, err)
}

// errorCode returns the AWS error code in err, or "".
func errorCode(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}

// taskID returns the id at the end of a task ARN.
func taskID(arn string) string { return arn[strings.LastIndex(arn, "/")+1:] }
