package ecs

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"
)

// options are an ECS profile's options (spec.Options), decoded.
type options struct {
	region, cluster, taskDefinition, container string
	subnets, securityGroups                    []string
	assignPublicIP                             bool
	capacityProvider, launchType               string
	logGroup, logStreamPrefix                  string
	platformVersion                            string
	ephemeralStorage                           int
	tags                                       map[string]string
	taskRoleARN, executionRoleARN              string
	startTimeout                               time.Duration
	// allowSecretOverrides lets secrets go into RunTask's overrides, where
	// anyone who may describe the task reads them.
	allowSecretOverrides bool
}

// parseOptions decodes the options as the spec package and the agent pass
// them: strings, []string or []any of strings, bools, numbers as int or
// float64, durations as time.Duration or float64 nanoseconds. A region other
// than the profile's own takes its settings from the profile's regions.
func parseOptions(m map[string]any, region string) (options, error) {
	if region != "" && region != m["region"] {
		rs, err := regionSettings(m["regions"], region)
		if err != nil {
			return options{}, fmt.Errorf("ECS profile options: %w", err)
		}
		m = maps.Clone(m)
		maps.Copy(m, rs)
		m["region"] = region
	}
	o := options{cluster: "default", launchType: "FARGATE", startTimeout: defaultStartTimeout}
	var errs []error
	str := func(key string, dst *string) {
		switch v := m[key].(type) {
		case nil:
		case string:
			if v != "" {
				*dst = v
			}
		default:
			errs = append(errs, fmt.Errorf("option %s: want a string, not %T", key, v))
		}
	}
	strs := func(key string, dst *[]string) {
		switch v := m[key].(type) {
		case nil:
		case []string:
			*dst = v
		case []any:
			for _, x := range v {
				s, ok := x.(string)
				if !ok {
					errs = append(errs, fmt.Errorf("option %s: want strings, not %T", key, x))
					return
				}
				*dst = append(*dst, s)
			}
		case string:
			*dst = []string{v}
		default:
			errs = append(errs, fmt.Errorf("option %s: want a list of strings, not %T", key, v))
		}
	}
	str("region", &o.region)
	str("cluster", &o.cluster)
	str("task_definition", &o.taskDefinition)
	str("container", &o.container)
	strs("subnets", &o.subnets)
	strs("security_groups", &o.securityGroups)
	str("capacity_provider", &o.capacityProvider)
	str("launch_type", &o.launchType)
	str("log_group", &o.logGroup)
	str("log_stream_prefix", &o.logStreamPrefix)
	str("platform_version", &o.platformVersion)
	str("task_role_arn", &o.taskRoleARN)
	str("execution_role_arn", &o.executionRoleARN)
	switch v := m["assign_public_ip"].(type) {
	case nil:
	case bool:
		o.assignPublicIP = v
	default:
		errs = append(errs, fmt.Errorf("option assign_public_ip: want a bool, not %T", v))
	}
	switch v := m["allow_secret_overrides"].(type) {
	case nil:
	case bool:
		o.allowSecretOverrides = v
	default:
		errs = append(errs, fmt.Errorf("option allow_secret_overrides: want a bool, not %T", v))
	}
	switch v := m["ephemeral_storage"].(type) {
	case nil:
	case int:
		o.ephemeralStorage = v
	case int64:
		o.ephemeralStorage = int(v)
	case float64:
		o.ephemeralStorage = int(v)
	default:
		errs = append(errs, fmt.Errorf("option ephemeral_storage: want a number of GiB, not %T", v))
	}
	switch v := m["tags"].(type) {
	case nil:
	case map[string]string:
		o.tags = v
	case map[string]any:
		o.tags = map[string]string{}
		for k, x := range v {
			o.tags[k] = fmt.Sprint(x)
		}
	default:
		errs = append(errs, fmt.Errorf("option tags: want a map of strings, not %T", v))
	}
	switch v := m["start_timeout"].(type) {
	case nil:
	case time.Duration:
		o.startTimeout = v
	case float64:
		o.startTimeout = time.Duration(v)
	case int:
		o.startTimeout = time.Duration(v)
	case string:
		d, err := time.ParseDuration(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("option start_timeout: %w", err))
		}
		o.startTimeout = d
	default:
		errs = append(errs, fmt.Errorf("option start_timeout: want a duration, not %T", v))
	}
	if o.taskDefinition == "" {
		errs = append(errs, errors.New("option task_definition is required (a family, or family:revision)"))
	}
	if o.startTimeout <= 0 {
		o.startTimeout = defaultStartTimeout
	}
	if err := errors.Join(errs...); err != nil {
		return o, fmt.Errorf("ECS profile options: %w", err)
	}
	return o, nil
}

// regionSettings returns the profile's settings of region from its
// `regions` option: map[string]map[string]any as the spec package decodes
// it, or map[string]any of map[string]any after a trip through JSON.
func regionSettings(v any, region string) (map[string]any, error) {
	var names []string
	switch rs := v.(type) {
	case map[string]map[string]any:
		if s, ok := rs[region]; ok {
			return s, nil
		}
		names = slices.Sorted(maps.Keys(rs))
	case map[string]any:
		if s, ok := rs[region]; ok {
			m, ok := s.(map[string]any)
			if !ok {
				return nil, fmt.Errorf("option regions.%s: want a mapping, not %T", region, s)
			}
			return m, nil
		}
		names = slices.Sorted(maps.Keys(rs))
	case nil:
	default:
		return nil, fmt.Errorf("option regions: want a mapping of regions, not %T", v)
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("region %s is not the profile's region and the profile has no regions", region)
	}
	return nil, fmt.Errorf("region %s is not one of the profile's regions (%s)", region, strings.Join(names, ", "))
}
