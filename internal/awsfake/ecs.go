package awsfake

import (
	"maps"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

// ecsHandlers are the ECS actions the fake answers.
var ecsHandlers = map[string]handler{
	"CreateCluster":            route(createCluster),
	"DescribeClusters":         route(describeClusters),
	"RegisterTaskDefinition":   route(registerTaskDefinition),
	"DescribeTaskDefinition":   route(describeTaskDefinition),
	"ListTaskDefinitions":      route(listTaskDefinitions),
	"DeregisterTaskDefinition": route(deregisterTaskDefinition),
	"RunTask":                  route(runTask),
	"DescribeTasks":            route(describeTasks),
	"StopTask":                 route(stopTask),
	"ListTasks":                route(listTasks),
	"TagResource":              route(tagResource),
	"ListTagsForResource":      route(listTagsForResource),
}

const arnPrefix = "arn:aws:ecs:" + Region + ":" + Account + ":"

// tag is an ECS tag as the protocol sends it.
type tag struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

func tagMap(tags []tag) map[string]string {
	m := make(map[string]string, len(tags))
	for _, t := range tags {
		m[t.Key] = t.Value
	}
	return m
}

func tagList(m map[string]string) []tag {
	out := make([]tag, 0, len(m))
	for _, k := range slices.Sorted(maps.Keys(m)) {
		out = append(out, tag{Key: k, Value: m[k]})
	}
	return out
}

// failure is an entry of an ECS answer's failures.
type failure struct {
	Arn    string `json:"arn,omitempty"`
	Reason string `json:"reason"`
	Detail string `json:"detail,omitempty"`
}

// epoch is a time as AWS JSON sends it: seconds since 1970 as a number.
type epoch float64

func epochOf(t time.Time) *epoch {
	if t.IsZero() {
		return nil
	}
	e := epoch(float64(t.UnixMilli()) / 1000)
	return &e
}

func (e epoch) MarshalJSON() ([]byte, error) {
	return strconv.AppendFloat(nil, float64(e), 'f', 3, 64), nil
}

// --- clusters ---

type cluster struct {
	Name   string `json:"clusterName"`
	Arn    string `json:"clusterArn"`
	Status string `json:"status"`
}

func newCluster(name string) *cluster {
	return &cluster{Name: name, Arn: arnPrefix + "cluster/" + name, Status: "ACTIVE"}
}

// clusterName returns the name in a cluster name or ARN; empty is "default".
func clusterName(s string) string {
	if s == "" {
		return "default"
	}
	if i := strings.LastIndex(s, ":cluster/"); i >= 0 && strings.HasPrefix(s, "arn:") {
		return s[i+len(":cluster/"):]
	}
	return s
}

// cluster returns a cluster or a ClusterNotFoundException. Called with s.mu held.
func (s *Server) cluster(nameOrARN string) (*cluster, *apiError) {
	c := s.clusters[clusterName(nameOrARN)]
	if c == nil {
		return nil, clientErr("ClusterNotFoundException", "Cluster not found.")
	}
	return c, nil
}

type createClusterInput struct {
	ClusterName string `json:"clusterName"`
}

func createCluster(s *Server, in *createClusterInput) (any, *apiError) {
	name := clusterName(in.ClusterName)
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.clusters[name]
	if c == nil {
		c = newCluster(name)
		s.clusters[name] = c
	}
	return map[string]any{"cluster": c}, nil
}

type describeClustersInput struct {
	Clusters []string `json:"clusters"`
}

func describeClusters(s *Server, in *describeClustersInput) (any, *apiError) {
	names := in.Clusters
	if len(names) == 0 {
		names = []string{"default"}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	found, failures := []*cluster{}, []failure{}
	for _, n := range names {
		if c := s.clusters[clusterName(n)]; c != nil {
			found = append(found, c)
		} else {
			failures = append(failures, failure{Arn: arnPrefix + "cluster/" + clusterName(n), Reason: "MISSING"})
		}
	}
	return map[string]any{"clusters": found, "failures": failures}, nil
}

// --- task definitions ---

type keyValue struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

type logConfiguration struct {
	LogDriver string            `json:"logDriver"`
	Options   map[string]string `json:"options,omitempty"`
}

type containerDefinition struct {
	Name              string            `json:"name"`
	Image             string            `json:"image"`
	Command           []string          `json:"command,omitempty"`
	EntryPoint        []string          `json:"entryPoint,omitempty"`
	Environment       []keyValue        `json:"environment,omitempty"`
	Essential         *bool             `json:"essential,omitempty"`
	Cpu               int               `json:"cpu,omitempty"`
	Memory            int               `json:"memory,omitempty"`
	MemoryReservation int               `json:"memoryReservation,omitempty"`
	WorkingDirectory  string            `json:"workingDirectory,omitempty"`
	LogConfiguration  *logConfiguration `json:"logConfiguration,omitempty"`
}

func (c *containerDefinition) essential() bool { return c.Essential == nil || *c.Essential }

type taskDefinition struct {
	TaskDefinitionArn       string                `json:"taskDefinitionArn"`
	Family                  string                `json:"family"`
	Revision                int                   `json:"revision"`
	Status                  string                `json:"status"`
	ContainerDefinitions    []containerDefinition `json:"containerDefinitions"`
	Cpu                     string                `json:"cpu,omitempty"`
	Memory                  string                `json:"memory,omitempty"`
	NetworkMode             string                `json:"networkMode,omitempty"`
	RequiresCompatibilities []string              `json:"requiresCompatibilities,omitempty"`
	ExecutionRoleArn        string                `json:"executionRoleArn,omitempty"`
	TaskRoleArn             string                `json:"taskRoleArn,omitempty"`
	RegisteredAt            *epoch                `json:"registeredAt,omitempty"`
	DeregisteredAt          *epoch                `json:"deregisteredAt,omitempty"`
}

// taskDef is a registered revision with its tags.
type taskDef struct {
	def  taskDefinition
	tags map[string]string
}

// taskDef finds a task definition by family (its latest ACTIVE revision),
// family:revision or ARN. Called with s.mu held.
func (s *Server) taskDef(ref string) (*taskDef, bool) {
	if i := strings.Index(ref, ":task-definition/"); strings.HasPrefix(ref, "arn:") && i >= 0 {
		ref = ref[i+len(":task-definition/"):]
	}
	family, rev, hasRev := strings.Cut(ref, ":")
	revs := s.taskDefs[family]
	if hasRev {
		n, err := strconv.Atoi(rev)
		if err != nil || n < 1 || n > len(revs) {
			return nil, false
		}
		return revs[n-1], true
	}
	for i := len(revs) - 1; i >= 0; i-- {
		if revs[i].def.Status == "ACTIVE" {
			return revs[i], true
		}
	}
	return nil, false
}

type registerTaskDefinitionInput struct {
	taskDefinition
	Tags []tag `json:"tags"`
}

func registerTaskDefinition(s *Server, in *registerTaskDefinitionInput) (any, *apiError) {
	d := in.taskDefinition
	if d.Family == "" || strings.ContainsAny(d.Family, ":/ ") {
		return nil, clientErr("ClientException", "Family contains invalid characters or is empty.")
	}
	if len(d.ContainerDefinitions) == 0 {
		return nil, clientErr("ClientException", "Container list cannot be empty.")
	}
	essential := false
	for _, c := range d.ContainerDefinitions {
		if c.Name == "" || c.Image == "" {
			return nil, clientErr("ClientException", "Container.name and Container.image should not be null or empty.")
		}
		essential = essential || c.essential()
	}
	if !essential {
		return nil, clientErr("ClientException", "A task definition must have at least one essential container.")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	d.Revision = len(s.taskDefs[d.Family]) + 1
	d.TaskDefinitionArn = arnPrefix + "task-definition/" + d.Family + ":" + strconv.Itoa(d.Revision)
	d.Status = "ACTIVE"
	d.RegisteredAt = epochOf(time.Now())
	d.DeregisteredAt = nil
	td := &taskDef{def: d, tags: tagMap(in.Tags)}
	s.taskDefs[d.Family] = append(s.taskDefs[d.Family], td)
	return map[string]any{"taskDefinition": td.def, "tags": tagList(td.tags)}, nil
}

type describeTaskDefinitionInput struct {
	TaskDefinition string   `json:"taskDefinition"`
	Include        []string `json:"include"`
}

func describeTaskDefinition(s *Server, in *describeTaskDefinitionInput) (any, *apiError) {
	s.mu.Lock()
	defer s.mu.Unlock()
	td, ok := s.taskDef(in.TaskDefinition)
	if !ok {
		return nil, clientErr("ClientException", "Unable to describe task definition.")
	}
	out := map[string]any{"taskDefinition": td.def}
	if slices.Contains(in.Include, "TAGS") {
		out["tags"] = tagList(s.allTags(td.def.TaskDefinitionArn, td.tags))
	}
	return out, nil
}

type listTaskDefinitionsInput struct {
	FamilyPrefix string `json:"familyPrefix"`
	Status       string `json:"status"`
	Sort         string `json:"sort"`
}

// listTaskDefinitions returns every match at once (no paging).
func listTaskDefinitions(s *Server, in *listTaskDefinitionsInput) (any, *apiError) {
	status := in.Status
	if status == "" {
		status = "ACTIVE"
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	type rev struct {
		family string
		n      int
		arn    string
	}
	var revs []rev
	for family, defs := range s.taskDefs {
		if !strings.HasPrefix(family, in.FamilyPrefix) {
			continue
		}
		for _, td := range defs {
			if td.def.Status == status {
				revs = append(revs, rev{family, td.def.Revision, td.def.TaskDefinitionArn})
			}
		}
	}
	sort.Slice(revs, func(i, j int) bool {
		less := revs[i].family < revs[j].family || revs[i].family == revs[j].family && revs[i].n < revs[j].n
		if in.Sort == "DESC" {
			return !less
		}
		return less
	})
	arns := make([]string, 0, len(revs))
	for _, r := range revs {
		arns = append(arns, r.arn)
	}
	return map[string]any{"taskDefinitionArns": arns}, nil
}

type deregisterTaskDefinitionInput struct {
	TaskDefinition string `json:"taskDefinition"`
}

func deregisterTaskDefinition(s *Server, in *deregisterTaskDefinitionInput) (any, *apiError) {
	if !strings.Contains(in.TaskDefinition, ":") {
		return nil, clientErr("ClientException", "Revision is required.")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	td, ok := s.taskDef(in.TaskDefinition)
	if !ok {
		return nil, clientErr("ClientException", "The specified task definition does not exist.")
	}
	td.def.Status = "INACTIVE"
	td.def.DeregisteredAt = epochOf(time.Now())
	return map[string]any{"taskDefinition": td.def}, nil
}

// --- tags ---

// allTags returns a resource's own tags with those TagResource added.
// Called with s.mu held.
func (s *Server) allTags(arn string, own map[string]string) map[string]string {
	m := maps.Clone(own)
	if m == nil {
		m = map[string]string{}
	}
	maps.Copy(m, s.tags[arn])
	return m
}

type tagResourceInput struct {
	ResourceArn string `json:"resourceArn"`
	Tags        []tag  `json:"tags"`
}

func tagResource(s *Server, in *tagResourceInput) (any, *apiError) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.resourceExists(in.ResourceArn) {
		return nil, clientErr("InvalidParameterException", "The specified resource does not exist.")
	}
	if s.tags[in.ResourceArn] == nil {
		s.tags[in.ResourceArn] = map[string]string{}
	}
	maps.Copy(s.tags[in.ResourceArn], tagMap(in.Tags))
	return struct{}{}, nil
}

type listTagsForResourceInput struct {
	ResourceArn string `json:"resourceArn"`
}

func listTagsForResource(s *Server, in *listTagsForResourceInput) (any, *apiError) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.resourceExists(in.ResourceArn) {
		return nil, clientErr("InvalidParameterException", "The specified resource does not exist.")
	}
	var own map[string]string
	if t := s.tasks[in.ResourceArn]; t != nil {
		own = t.tags
	} else if td, ok := s.taskDef(in.ResourceArn); ok {
		own = td.tags
	}
	return map[string]any{"tags": tagList(s.allTags(in.ResourceArn, own))}, nil
}

// resourceExists reports whether arn names a task, task definition revision
// or cluster. Called with s.mu held.
func (s *Server) resourceExists(arn string) bool {
	if s.tasks[arn] != nil {
		return true
	}
	if strings.Contains(arn, ":task-definition/") {
		_, ok := s.taskDef(arn)
		return ok
	}
	for _, c := range s.clusters {
		if c.Arn == arn {
			return true
		}
	}
	return false
}
