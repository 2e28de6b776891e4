package spec

import (
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	yaml "go.yaml.in/yaml/v3"
)

// Resources a task asks for. CPU is in cores ("0.5", "2", "500m"), Memory a
// quantity ("512Mi", "8Gi"), Region where the executor runs it.
type Resources struct {
	CPU         string
	Memory      string
	Region      string
	RegionPos   Pos // where Region was set
	MilliCPU    int64
	MemoryBytes int64
}

func (r *Resources) merge(o Resources) {
	if o.CPU != "" {
		r.CPU, r.MilliCPU = o.CPU, o.MilliCPU
	}
	if o.Memory != "" {
		r.Memory, r.MemoryBytes = o.Memory, o.MemoryBytes
	}
	if o.Region != "" {
		r.Region, r.RegionPos = o.Region, o.RegionPos
	}
}

// settings are the keys that defaults, templates and tasks share; a task's own
// win over its template's, which win over the pipeline's defaults.
type settings struct {
	executor    string
	executorPos Pos
	resources   Resources
	labels      []string
	retries     *int
	retryDelay  *time.Duration
	timeout     *time.Duration
	pool        string
	poolPos     Pos
	checks      []*Check
	maxParallel *int
}

var (
	defaultsKeys = []string{"executor", "resources", "labels", "retries", "retry_delay", "timeout", "pool", "max_parallel"}
	settingKeys  = []string{"executor", "resources", "labels", "retries", "retry_delay", "timeout", "pool", "checks"}
	bodyKeys     = []string{"run", "image", "command", "env", "workdir"}
	taskOwnKeys  = []string{"name", "description", "needs", "if", "trigger", "for_each", "max_parallel", "uses", "with"}
)

func (s *settings) over(base settings) settings {
	out := base
	if s.executor != "" {
		out.executor, out.executorPos = s.executor, s.executorPos
	}
	out.resources.merge(s.resources)
	if s.labels != nil {
		out.labels = s.labels
	}
	if s.retries != nil {
		out.retries = s.retries
	}
	if s.retryDelay != nil {
		out.retryDelay = s.retryDelay
	}
	if s.timeout != nil {
		out.timeout = s.timeout
	}
	if s.pool != "" {
		out.pool, out.poolPos = s.pool, s.poolPos
	}
	out.checks = append(slices.Clone(base.checks), s.checks...)
	if s.maxParallel != nil {
		out.maxParallel = s.maxParallel
	}
	return out
}

func (d *decoder) settings(n *yaml.Node, what string, keys []string) settings {
	var s settings
	d.fields(n, what, keys, func(key string, f field) { d.setting(&s, key, f) })
	return s
}

// setting decodes one settings key into s.
func (d *decoder) setting(s *settings, key string, f field) {
	switch key {
	case "executor":
		s.executor, _ = d.str(f.val)
		s.executorPos = d.pos(f.val)
	case "resources":
		s.resources = d.resources(f.val)
	case "labels":
		s.labels, _ = d.stringList(f.val, "labels")
	case "retries":
		if v, ok := d.integer(f.val, 0); ok {
			s.retries = &v
		}
	case "retry_delay":
		if v, ok := d.duration(f.val); ok {
			s.retryDelay = &v
		}
	case "timeout":
		if v, ok := d.duration(f.val); ok {
			s.timeout = &v
		}
	case "pool":
		s.pool, _ = d.str(f.val)
		s.poolPos = d.pos(f.val)
	case "checks":
		s.checks = d.checks(f.val)
	case "max_parallel":
		if v, ok := d.integer(f.val, 1); ok {
			s.maxParallel = &v
		}
	}
}

func (d *decoder) resources(n *yaml.Node) Resources {
	var r Resources
	d.fields(n, "resources", []string{"cpu", "memory", "region"}, func(key string, f field) {
		s, ok := d.str(f.val)
		if !ok {
			return
		}
		switch key {
		case "cpu":
			m, err := ParseCPU(s)
			if err != nil {
				d.errorf(f.val, "%v", err)
				return
			}
			r.CPU, r.MilliCPU = s, m
		case "memory":
			b, err := ParseMemory(s)
			if err != nil {
				d.errorf(f.val, "%v", err)
				return
			}
			r.Memory, r.MemoryBytes = s, b
		case "region":
			r.Region, r.RegionPos = s, d.pos(f.val)
		}
	})
	return r
}

// ParseCPU parses cores ("0.25", "2") or millicores ("500m") into millicores.
func ParseCPU(s string) (int64, error) {
	if m, ok := strings.CutSuffix(s, "m"); ok {
		v, err := strconv.ParseInt(m, 10, 64)
		if err == nil && v > 0 {
			return v, nil
		}
	} else if v, err := strconv.ParseFloat(s, 64); err == nil && v > 0 && v < 1e6 {
		if m := int64(v*1000 + 0.5); m > 0 {
			return m, nil
		}
		return 0, fmt.Errorf("cpu must be at least 0.001 (1m, one millicore); got %q", s)
	}
	return 0, fmt.Errorf("cpu must be a number of cores such as 0.5 or 2, or millicores such as 500m; got %q", s)
}

var memoryRE = regexp.MustCompile(`^([0-9]+(?:\.[0-9]+)?)(Ki|Mi|Gi|Ti|K|M|G|T|k)?$`)

// ParseMemory parses a memory quantity ("512Mi", "1Gi", "1G") into bytes.
func ParseMemory(s string) (int64, error) {
	m := memoryRE.FindStringSubmatch(s)
	if m != nil {
		v, _ := strconv.ParseFloat(m[1], 64)
		mult := map[string]float64{
			"": 1, "k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12,
			"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40,
		}[m[2]]
		if b := v * mult; b >= 1 && b < 1<<62 {
			return int64(b), nil
		}
	}
	return 0, fmt.Errorf("memory must be a quantity such as 512Mi, 1Gi or 2G; got %q", s)
}
