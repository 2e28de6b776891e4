package spec

import (
	"fmt"
	"maps"
	"regexp"
	"slices"
	"sort"
	"strings"

	yaml "go.yaml.in/yaml/v3"
)

// ConfigFile is the project file's name.
const ConfigFile = "dray.yaml"

// Executor types.
const (
	ExecLocal      = "local"
	ExecDocker     = "docker"
	ExecECS        = "ecs"
	ExecCloudRun   = "cloudrun"
	ExecKubernetes = "kubernetes"
)

// optionKind says how a profile option is decoded.
type optionKind int

const (
	optString optionKind = iota
	optStrings
	optBool
	optInt
	optDuration
	optStringMap
	optRegions // region name → a few of the profile's own options
)

// profileOptions lists the options each executor type takes, besides type and labels.
var profileOptions = map[string]map[string]optionKind{
	ExecLocal: {"kill_grace": optDuration, "shell": optString},
	ExecDocker: {
		"image": optString, "pull": optString, "network": optString, "kill_grace": optDuration,
		"host": optString,
	},
	ExecECS: {
		"region": optString, "cluster": optString, "task_definition": optString, "container": optString,
		"subnets": optStrings, "security_groups": optStrings, "assign_public_ip": optBool,
		"capacity_provider": optString, "launch_type": optString, "log_group": optString,
		"log_stream_prefix": optString, "platform_version": optString, "ephemeral_storage": optInt,
		"tags": optStringMap, "task_role_arn": optString, "execution_role_arn": optString,
		"start_timeout": optDuration, "regions": optRegions, "allow_secret_overrides": optBool,
	},
	ExecCloudRun: {"project": optString, "region": optString, "job": optString, "service_account": optString},
	ExecKubernetes: {
		"namespace": optString, "context": optString, "kubeconfig": optString, "service_account": optString,
		"image": optString, "node_selector": optStringMap, "image_pull_policy": optString,
	},
}

var executorTypes = []string{ExecLocal, ExecDocker, ExecECS, ExecCloudRun, ExecKubernetes}

// Config is the project's dray.yaml.
type Config struct {
	Pos       Pos
	Version   int
	Project   string
	Storage   string
	Executors map[string]*Profile
	Pools     map[string]*Pool
	Secrets   []*SecretProvider
}

// Profile is a named executor profile: where and how a task runs.
type Profile struct {
	Name    string
	Pos     Pos
	Type    string
	Labels  []string
	Options map[string]any // decoded per profileOptions
}

// String returns an option as a string, or "".
func (p *Profile) String(key string) string {
	s, _ := p.Options[key].(string)
	return s
}

// Pool caps how many task attempts that name it run at once, across pipelines.
type Pool struct {
	Name        string
	Pos         Pos
	Slots       int
	Description string
}

// Secret provider types.
const (
	SecretEnv               = "env"
	SecretFile              = "file"
	SecretAWSSSM            = "aws_ssm"
	SecretAWSSecretsManager = "aws_secretsmanager"
)

// secretProviderTypes lists the secret provider types, for messages.
var secretProviderTypes = []string{SecretEnv, SecretFile, SecretAWSSSM, SecretAWSSecretsManager}

// secretProviderKeys lists the keys each secret provider type takes, besides type.
var secretProviderKeys = map[string][]string{
	SecretEnv:               {"prefix"},
	SecretFile:              {"path"},
	SecretAWSSSM:            {"prefix", "region"},
	SecretAWSSecretsManager: {"prefix", "region"},
}

// SecretProvider is where an agent looks up secrets, in order.
type SecretProvider struct {
	Pos  Pos
	Type string // env, file, aws_ssm or aws_secretsmanager
	// Prefix goes before a secret's name. env: the variable prefix (default
	// DRAY_SECRET_); aws_ssm: the parameter name prefix, such as
	// /dray/prod/; aws_secretsmanager: the secret name prefix (default none).
	Prefix string
	Path   string // file: a directory with one file a secret
	Region string // aws_ssm, aws_secretsmanager: the AWS region ("": the agent's default)
}

// DefaultConfig is the configuration of a project without dray.yaml settings.
func DefaultConfig() *Config {
	c := &Config{Version: 1, Executors: map[string]*Profile{}, Pools: map[string]*Pool{}}
	c.addDefaults()
	return c
}

func (c *Config) addDefaults() {
	for _, name := range []string{ExecLocal, ExecDocker} {
		if _, ok := c.Executors[name]; !ok {
			c.Executors[name] = &Profile{Name: name, Type: name, Options: map[string]any{}}
		}
	}
	if len(c.Secrets) == 0 {
		c.Secrets = []*SecretProvider{{Type: "env", Prefix: "DRAY_SECRET_"}}
	}
}

// ProfileNames returns the executor profiles' names, sorted.
func (c *Config) ProfileNames() []string {
	names := make([]string, 0, len(c.Executors))
	for n := range c.Executors {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

func decodeConfig(file string, src []byte, errs *ErrorList) *Config {
	d := newDecoder(file, src, errs)
	c := &Config{Executors: map[string]*Profile{}, Pools: map[string]*Pool{}}
	root := d.parse(src)
	if root == nil {
		c.addDefaults()
		return c
	}
	c.Pos = d.pos(root)
	hasVersion := false
	d.fields(root, ConfigFile, []string{"version", "project", "storage", "executors", "pools", "secrets"}, func(key string, f field) {
		switch key {
		case "version":
			hasVersion = d.version(f.val, &c.Version)
		case "project":
			c.Project, _ = d.str(f.val)
		case "storage":
			if s, ok := d.str(f.val); ok {
				c.Storage = s
				d.checkStorage(f.val, s)
			}
		case "executors":
			for _, e := range d.keyed(f.val, "executors") {
				if p := d.profile(e); p != nil {
					c.Executors[p.Name] = p
				}
			}
		case "pools":
			for _, e := range d.keyed(f.val, "pools") {
				if p := d.pool(e); p != nil {
					c.Pools[p.Name] = p
				}
			}
		case "secrets":
			c.Secrets = d.secretProviders(f.val)
		}
	})
	if !hasVersion && resolve(root).Kind == yaml.MappingNode {
		d.errorAt(Pos{File: file, Line: 1, Col: 1}, "missing `version: 1` (the file format version)")
	}
	c.addDefaults()
	return c
}

func (d *decoder) version(n *yaml.Node, into *int) bool {
	v, ok := d.integer(n, 0)
	if !ok {
		return true
	}
	if v != 1 {
		d.errorf(n, "unsupported version %d: this dray reads version 1", v)
	}
	*into = v
	return true
}

var storageSchemes = []string{"file", "s3", "gs", "azblob"}

func (d *decoder) checkStorage(n *yaml.Node, s string) {
	scheme, _, ok := strings.Cut(s, "://")
	if !ok || !slices.Contains(storageSchemes, scheme) {
		d.errorf(n, "storage must be a URL such as file://.dray/storage or s3://bucket/prefix (schemes: %s)", strings.Join(storageSchemes, ", "))
	}
}

func (d *decoder) profile(e field) *Profile {
	p := &Profile{Name: e.key.Value, Pos: d.pos(e.key), Options: map[string]any{}}
	v := resolve(e.val)
	if v.Kind != yaml.MappingNode {
		d.errorf(v, "executor %s must be a mapping with a type, not %s", p.Name, kindName(v))
		return nil
	}
	// The type decides which keys are allowed, so read it first.
	for _, f := range d.entries(v) {
		if f.key.Value == "type" {
			p.Type, _ = d.str(f.val)
			if p.Type != "" && !slices.Contains(executorTypes, p.Type) {
				d.errorf(f.val, "unknown executor type %q (types: %s)", p.Type, strings.Join(executorTypes, ", "))
				return nil
			}
		}
	}
	if p.Type == "" {
		if slices.Contains([]string{ExecLocal, ExecDocker}, p.Name) {
			p.Type = p.Name
		} else {
			d.errorf(e.key, "executor %s needs a type (%s)", p.Name, strings.Join(executorTypes, ", "))
			return nil
		}
	}
	opts := profileOptions[p.Type]
	known := []string{"type", "labels"}
	for k := range opts {
		known = append(known, k)
	}
	sort.Strings(known)
	d.fields(v, "executor "+p.Name+" (type "+p.Type+")", known, func(key string, f field) {
		switch key {
		case "type":
		case "labels":
			p.Labels, _ = d.stringList(f.val, "labels")
		default:
			if val, ok := d.option(f.val, opts[key]); ok {
				p.Options[key] = val
			}
		}
	})
	if p.Type == ExecDocker {
		if pull := p.String("pull"); pull != "" && !slices.Contains([]string{"never", "missing", "always"}, pull) {
			for _, f := range d.entries(v) {
				if f.key.Value == "pull" {
					d.errorf(f.val, "executor %s: pull must be never, missing or always, not %q", p.Name, pull)
				}
			}
		}
	}
	for _, req := range requiredOptions[p.Type] {
		if _, ok := p.Options[req]; !ok {
			d.errorf(e.key, "executor %s (type %s) needs %s", p.Name, p.Type, req)
		}
	}
	return p
}

var requiredOptions = map[string][]string{
	ExecECS:      {"cluster", "task_definition"},
	ExecCloudRun: {"project", "region", "job"},
}

func (d *decoder) option(n *yaml.Node, kind optionKind) (any, bool) {
	switch kind {
	case optStrings:
		return d.stringList(n, "this option")
	case optBool:
		return d.boolean(n)
	case optInt:
		return d.integer(n, 0)
	case optDuration:
		return d.duration(n)
	case optRegions:
		return d.regions(n)
	case optStringMap:
		m := map[string]string{}
		for _, f := range d.keyed(n, "this option") {
			if s, ok := d.str(f.val); ok {
				m[f.key.Value] = s
			}
		}
		return m, true
	}
	return d.str(n)
}

// regionOptions are the options a profile's `regions` may set per region.
var regionOptions = map[string]optionKind{
	"cluster": optString, "task_definition": optString, "subnets": optStrings, "security_groups": optStrings,
	"assign_public_ip": optBool, "capacity_provider": optString, "log_group": optString,
}

// regions decodes `regions: {eu-west-1: {cluster: …, subnets: […]}}`.
func (d *decoder) regions(n *yaml.Node) (map[string]map[string]any, bool) {
	known := slices.Sorted(maps.Keys(regionOptions))
	out := map[string]map[string]any{}
	for _, r := range d.keyed(n, "regions") {
		opts := map[string]any{}
		d.fields(r.val, "region "+r.key.Value, known, func(key string, f field) {
			if v, ok := d.option(f.val, regionOptions[key]); ok {
				opts[key] = v
			}
		})
		out[r.key.Value] = opts
	}
	return out, true
}

// Regions returns the regions a profile runs tasks in: its own region (""
// when it names none: the agent's default) and those of its `regions`.
func (p *Profile) Regions() []string {
	out := []string{p.String("region")}
	if m, ok := p.Options["regions"].(map[string]map[string]any); ok {
		for r := range m {
			if r != out[0] {
				out = append(out, r)
			}
		}
	}
	slices.Sort(out[1:])
	return out
}

func (d *decoder) pool(e field) *Pool {
	p := &Pool{Name: e.key.Value, Pos: d.pos(e.key)}
	hasSlots := false
	d.fields(e.val, "pool "+p.Name, []string{"slots", "description"}, func(key string, f field) {
		switch key {
		case "slots":
			p.Slots, _ = d.integer(f.val, 1)
			hasSlots = true
		case "description":
			p.Description, _ = d.str(f.val)
		}
	})
	if !hasSlots {
		d.errorf(e.key, "pool %s needs slots (how many task attempts may use it at once)", p.Name)
	}
	return p
}

func (d *decoder) secretProviders(n *yaml.Node) []*SecretProvider {
	var out []*SecretProvider
	d.fields(n, "secrets", []string{"providers"}, func(_ string, f field) {
		list := resolve(f.val)
		if list.Kind != yaml.SequenceNode {
			d.errorf(list, "providers must be a list, not %s", kindName(list))
			return
		}
		for _, item := range list.Content {
			sp := &SecretProvider{Pos: d.pos(item)}
			var keys []string // the keys given, besides type
			var regionNode *yaml.Node
			d.fields(item, "secret provider", []string{"type", "prefix", "path", "region"}, func(key string, f field) {
				if key != "type" {
					keys = append(keys, key)
				}
				switch key {
				case "type":
					sp.Type, _ = d.str(f.val)
				case "prefix":
					sp.Prefix, _ = d.str(f.val)
				case "path":
					sp.Path, _ = d.str(f.val)
				case "region":
					sp.Region, _ = d.str(f.val)
					regionNode = f.val
				}
			})
			allowed, known := secretProviderKeys[sp.Type]
			switch {
			case sp.Type == "":
				d.errorf(item, "secret provider needs a type (%s or %s)", strings.Join(secretProviderTypes[:len(secretProviderTypes)-1], ", "), secretProviderTypes[len(secretProviderTypes)-1])
			case !known:
				d.errorf(item, "unknown secret provider type %q (types: %s)", sp.Type, strings.Join(secretProviderTypes, ", "))
			default:
				for _, k := range keys {
					if !slices.Contains(allowed, k) {
						d.errorf(item, "secret provider %s takes %s, not %s", sp.Type, strings.Join(allowed, " and "), k)
					}
				}
			}
			switch sp.Type {
			case SecretEnv:
				if sp.Prefix == "" {
					sp.Prefix = "DRAY_SECRET_"
				}
			case SecretFile:
				if sp.Path == "" {
					d.errorf(item, "secret provider file needs path (a directory with one file a secret)")
				}
			case SecretAWSSSM, SecretAWSSecretsManager:
				if sp.Type == SecretAWSSSM && strings.Contains(sp.Prefix, "/") && !strings.HasPrefix(sp.Prefix, "/") {
					d.errorf(item, "secret provider aws_ssm: a prefix with / must start with / (a parameter in a hierarchy has a full name, such as /dray/prod/db_password), not %q", sp.Prefix)
				}
				if sp.Region != "" && !awsRegion.MatchString(sp.Region) {
					d.errorf(regionNode, "region must be an AWS region such as eu-west-1, not %q", sp.Region)
				}
			}
			out = append(out, sp)
		}
	})
	return out
}

// awsRegion is what an AWS region name looks like: us-east-1, us-gov-west-1.
var awsRegion = regexp.MustCompile(`^[a-z]+(-[a-z]+)+-[0-9]+$`)

// Describe names a profile for messages ("fargate (type ecs)").
func (p *Profile) Describe() string {
	if p.Name == p.Type {
		return p.Name
	}
	return fmt.Sprintf("%s (type %s)", p.Name, p.Type)
}
