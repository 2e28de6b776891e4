package ecs

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ecs"
	ecstypes "github.com/aws/aws-sdk-go-v2/service/ecs/types"
)

// maxRevisionsSearched bounds how many ACTIVE revisions of a family are
// described when looking for one registered for an image.
const maxRevisionsSearched = 50

// taskDef is the task definition revision a task runs, with what the
// executor needs of it.
type taskDef struct {
	arn       string
	container string // the container the attempt's command runs in
	logGroup  string
	logPrefix string // "" when the stream is the bare task id
}

// logStream returns the CloudWatch Logs stream of a task of the definition.
func (d *taskDef) logStream(taskID string) string {
	if d.logPrefix == "" {
		return taskID
	}
	return d.logPrefix + "/" + d.container + "/" + taskID
}

// revisionEntry is a revision registered for one image; its mutex makes
// concurrent starts with the same image register it once.
type revisionEntry struct {
	mu  sync.Mutex
	arn string
}

// defCacheTTL is how long a described task definition is used again: a
// fan-out of 500 attempts describes it once, and a new revision is seen
// within this time.
const defCacheTTL = 30 * time.Second

type describedDef struct {
	out *ecs.DescribeTaskDefinitionOutput
	at  time.Time
}

// baseDefinition describes the profile's task definition (for a family,
// its newest ACTIVE revision not registered by dray for an image), from a
// cache of defCacheTTL; concurrent misses make one call.
func (e *Executor) baseDefinition(ctx context.Context, cli *ecs.Client, region, name string) (*ecs.DescribeTaskDefinitionOutput, error) {
	key := region + "|" + name
	e.mu.Lock()
	d, ok := e.defs[key]
	e.mu.Unlock()
	if ok && time.Since(d.at) < defCacheTTL {
		return d.out, nil
	}
	v, err, _ := e.defGroup.Do(key, func() (any, error) {
		out, err := call(ctx, func(ctx context.Context) (*ecs.DescribeTaskDefinitionOutput, error) {
			return cli.DescribeTaskDefinition(ctx, &ecs.DescribeTaskDefinitionInput{
				TaskDefinition: aws.String(name),
				Include:        []ecstypes.TaskDefinitionField{ecstypes.TaskDefinitionFieldTags},
			})
		})
		if err != nil {
			return nil, awsError("describe task definition "+name, err)
		}
		if hasTag(out.Tags, TagImageHash) && !strings.Contains(name, ":") {
			// The family's latest revision is one registered for another
			// attempt's image; the profile means the newest of its own.
			if out, err = baseRevision(ctx, cli, name); err != nil {
				return nil, err
			}
		}
		e.mu.Lock()
		e.defs[key] = describedDef{out: out, at: time.Now()}
		e.mu.Unlock()
		return out, nil
	})
	if err != nil {
		return nil, err
	}
	return v.(*ecs.DescribeTaskDefinitionOutput), nil
}

// taskDefinition resolves the profile's task definition and, when image is
// set and is not the container's image, the revision that runs image.
func (e *Executor) taskDefinition(ctx context.Context, cli *ecs.Client, region string, opts options, image string) (*taskDef, error) {
	base, err := e.baseDefinition(ctx, cli, region, opts.taskDefinition)
	if err != nil {
		return nil, err
	}
	def, tags := base.TaskDefinition, base.Tags
	c, err := pickContainer(def, opts.container)
	if err != nil {
		return nil, fmt.Errorf("task definition %s: %w", opts.taskDefinition, err)
	}
	td, err := newTaskDef(def, c, opts)
	if err != nil {
		return nil, fmt.Errorf("task definition %s: %w", opts.taskDefinition, err)
	}
	if image == "" || image == aws.ToString(c.Image) {
		return td, nil
	}
	td.arn, err = e.imageRevision(ctx, cli, region, def, tags, td.container, image)
	if err != nil {
		return nil, err
	}
	return td, nil
}

func newTaskDef(def *ecstypes.TaskDefinition, c *ecstypes.ContainerDefinition, opts options) (*taskDef, error) {
	td := &taskDef{arn: aws.ToString(def.TaskDefinitionArn), container: aws.ToString(c.Name), logGroup: opts.logGroup, logPrefix: opts.logStreamPrefix}
	if lc := c.LogConfiguration; lc != nil && lc.LogDriver == ecstypes.LogDriverAwslogs {
		if td.logGroup == "" {
			td.logGroup = lc.Options["awslogs-group"]
		}
		if td.logPrefix == "" {
			td.logPrefix = lc.Options["awslogs-stream-prefix"]
		}
	}
	if td.logGroup == "" {
		return nil, fmt.Errorf("container %s logs nowhere dray can read: give it the awslogs log driver, or set the profile's log_group", td.container)
	}
	return td, nil
}

// pickContainer returns the container named name, or the first essential one.
func pickContainer(def *ecstypes.TaskDefinition, name string) (*ecstypes.ContainerDefinition, error) {
	for i := range def.ContainerDefinitions {
		c := &def.ContainerDefinitions[i]
		if name != "" && aws.ToString(c.Name) == name || name == "" && (c.Essential == nil || *c.Essential) {
			return c, nil
		}
	}
	if name != "" {
		return nil, fmt.Errorf("no container named %q", name)
	}
	return nil, fmt.Errorf("no essential container")
}

// imageHash names, in a tag, the copy of base (a revision's ARN) whose
// container runs image: the first 16 hex digits of a SHA-256 of the three.
// A new revision of the family gets copies of its own.
func imageHash(base, container, image string) string {
	sum := sha256.Sum256([]byte(base + "\x00" + container + "\x00" + image))
	return hex.EncodeToString(sum[:])[:16]
}

// imageRevision returns a revision of def's family that is def with its
// container running image: one found in memory, one registered earlier
// (tagged TagImageHash), or a new one, registered once per revision,
// container and image.
func (e *Executor) imageRevision(ctx context.Context, cli *ecs.Client, region string, def *ecstypes.TaskDefinition, tags []ecstypes.Tag, container, image string) (string, error) {
	family, base := aws.ToString(def.Family), aws.ToString(def.TaskDefinitionArn)
	key := region + "\x00" + base + "\x00" + container + "\x00" + image
	e.mu.Lock()
	entry := e.revisions[key]
	if entry == nil {
		entry = &revisionEntry{}
		e.revisions[key] = entry
	}
	e.mu.Unlock()
	entry.mu.Lock()
	defer entry.mu.Unlock()
	if entry.arn != "" {
		return entry.arn, nil
	}

	hash := imageHash(base, container, image)
	arn, err := findRevision(ctx, cli, family, hash)
	if err != nil {
		return "", err
	}
	if arn == "" {
		arn, err = registerRevision(ctx, cli, def, tags, container, image, hash)
		if err != nil {
			return "", err
		}
		e.log.Info("registered task definition revision for an image", "task_definition", arn, "image", image)
	}
	entry.arn = arn
	return arn, nil
}

// hasTag reports whether tags hold key.
func hasTag(tags []ecstypes.Tag, key string) bool {
	for _, t := range tags {
		if aws.ToString(t.Key) == key {
			return true
		}
	}
	return false
}

// familyRevisions returns the ARNs of family's ACTIVE revisions, newest
// first, at most maxRevisionsSearched.
func familyRevisions(ctx context.Context, cli *ecs.Client, family string) ([]string, error) {
	var arns []string
	p := ecs.NewListTaskDefinitionsPaginator(cli, &ecs.ListTaskDefinitionsInput{
		FamilyPrefix: aws.String(family), Status: ecstypes.TaskDefinitionStatusActive, Sort: ecstypes.SortOrderDesc,
	})
	for p.HasMorePages() && len(arns) < maxRevisionsSearched {
		out, err := call(ctx, func(ctx context.Context) (*ecs.ListTaskDefinitionsOutput, error) { return p.NextPage(ctx) })
		if err != nil {
			return nil, awsError("list task definitions of "+family, err)
		}
		for _, arn := range out.TaskDefinitionArns {
			// The prefix matches other families too (etl, etl-big).
			if strings.HasSuffix(arn[:strings.LastIndex(arn, ":")], "/"+family) {
				arns = append(arns, arn)
			}
		}
	}
	return arns[:min(len(arns), maxRevisionsSearched)], nil
}

// baseRevision returns the newest ACTIVE revision of family that was not
// registered by the executor for an image.
func baseRevision(ctx context.Context, cli *ecs.Client, family string) (*ecs.DescribeTaskDefinitionOutput, error) {
	arns, err := familyRevisions(ctx, cli, family)
	if err != nil {
		return nil, err
	}
	for _, arn := range arns {
		out, err := call(ctx, func(ctx context.Context) (*ecs.DescribeTaskDefinitionOutput, error) {
			return cli.DescribeTaskDefinition(ctx, &ecs.DescribeTaskDefinitionInput{
				TaskDefinition: aws.String(arn), Include: []ecstypes.TaskDefinitionField{ecstypes.TaskDefinitionFieldTags},
			})
		})
		if err != nil {
			return nil, awsError("describe task definition "+arn, err)
		}
		if !hasTag(out.Tags, TagImageHash) {
			return out, nil
		}
	}
	return nil, fmt.Errorf("task definition family %s has no ACTIVE revision of its own, only revisions dray registered for images (tag %s)", family, TagImageHash)
}

// findRevision returns the newest ACTIVE revision of family tagged with hash,
// or "".
func findRevision(ctx context.Context, cli *ecs.Client, family, hash string) (string, error) {
	arns, err := familyRevisions(ctx, cli, family)
	if err != nil {
		return "", err
	}
	for _, arn := range arns {
		out, err := call(ctx, func(ctx context.Context) (*ecs.DescribeTaskDefinitionOutput, error) {
			return cli.DescribeTaskDefinition(ctx, &ecs.DescribeTaskDefinitionInput{
				TaskDefinition: aws.String(arn), Include: []ecstypes.TaskDefinitionField{ecstypes.TaskDefinitionFieldTags},
			})
		})
		if err != nil {
			return "", awsError("describe task definition "+arn, err)
		}
		for _, t := range out.Tags {
			if aws.ToString(t.Key) == TagImageHash && aws.ToString(t.Value) == hash {
				return arn, nil
			}
		}
	}
	return "", nil
}

// registerRevision registers a copy of def whose container runs image.
func registerRevision(ctx context.Context, cli *ecs.Client, def *ecstypes.TaskDefinition, tags []ecstypes.Tag, container, image, hash string) (string, error) {
	containers := make([]ecstypes.ContainerDefinition, len(def.ContainerDefinitions))
	copy(containers, def.ContainerDefinitions)
	for i := range containers {
		if aws.ToString(containers[i].Name) == container {
			containers[i].Image = aws.String(image)
		}
	}
	var newTags []ecstypes.Tag
	for _, t := range tags {
		if k := aws.ToString(t.Key); k != TagImageHash && !strings.HasPrefix(k, "aws:") {
			newTags = append(newTags, t)
		}
	}
	newTags = append(newTags, ecstypes.Tag{Key: aws.String(TagImageHash), Value: aws.String(hash)})
	in := &ecs.RegisterTaskDefinitionInput{
		Family:                  def.Family,
		ContainerDefinitions:    containers,
		Cpu:                     def.Cpu,
		Memory:                  def.Memory,
		NetworkMode:             def.NetworkMode,
		RequiresCompatibilities: def.RequiresCompatibilities,
		ExecutionRoleArn:        def.ExecutionRoleArn,
		TaskRoleArn:             def.TaskRoleArn,
		Volumes:                 def.Volumes,
		PlacementConstraints:    def.PlacementConstraints,
		EphemeralStorage:        def.EphemeralStorage,
		PidMode:                 def.PidMode,
		IpcMode:                 def.IpcMode,
		ProxyConfiguration:      def.ProxyConfiguration,
		RuntimePlatform:         def.RuntimePlatform,
		InferenceAccelerators:   def.InferenceAccelerators,
		Tags:                    newTags,
	}
	out, err := call(ctx, func(ctx context.Context) (*ecs.RegisterTaskDefinitionOutput, error) {
		return cli.RegisterTaskDefinition(ctx, in)
	})
	if err != nil {
		return "", awsError("register task definition "+aws.ToString(def.Family)+" for image "+image, err)
	}
	return aws.ToString(out.TaskDefinition.TaskDefinitionArn), nil
}
