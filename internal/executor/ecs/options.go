package ecs

import (
	"errors"
	"fmt"
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
}

// parseOptions decodes the options as the spec package and the agent pass
// them: strings, []string or []any of strings, bools, numbers as int or
// float64, durations as time.Duration or float64 nanoseconds.
func parseOptions(m map[string]any) (options, error) {
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
