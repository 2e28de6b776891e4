package spec

import (
	"slices"
	"strings"
	"time"

	"github.com/dray-dev/dray/internal/expr"
	"github.com/robfig/cron/v3"
	yaml "go.yaml.in/yaml/v3"
)

// Pipeline is one pipelines/*.yaml file, loaded, checked and resolved: its
// templates expanded into its tasks and its executor profiles looked up.
type Pipeline struct {
	Name          string
	File          string
	Pos           Pos
	Description   string
	Tags          []string
	Schedule      *Schedule
	Params        []*Param
	Env           []EnvVar // pipeline env, evaluated once a run (over params and run)
	MaxActiveRuns int      // 0: no limit
	Concurrency   int      // task attempts of this pipeline running at once; 0: no limit
	Tasks         []*Task  // in file order
	Config        *Config

	// Sources holds every file the pipeline was built from (dray.yaml, the
	// pipeline, its templates and schemas), so a run can rebuild the exact spec it
	// started with; Hash identifies them.
	Sources map[string][]byte
	Hash    string

	index map[string]*Task
	// order is the tasks in topological order (file order among equals); pos
	// a task's place in it; down its direct downstream tasks.
	order []*Task
	pos   map[string]int
	down  map[string][]string
}

// Order returns the tasks in topological order: every task after its upstream
// tasks, and otherwise in file order.
func (p *Pipeline) Order() []*Task { return p.order }

// Position returns a task's index in Order.
func (p *Pipeline) Position(name string) int { return p.pos[name] }

// Downstream returns the tasks that need the named task directly.
func (p *Pipeline) Downstream(name string) []string { return p.down[name] }

// sort computes the topological order of a pipeline whose graph is valid.
func (p *Pipeline) sort() {
	p.down = map[string][]string{}
	indeg := map[string]int{}
	for _, t := range p.Tasks {
		indeg[t.Name] = len(t.Needs)
		for _, n := range t.Needs {
			p.down[n] = append(p.down[n], t.Name)
		}
	}
	p.order = make([]*Task, 0, len(p.Tasks))
	p.pos = make(map[string]int, len(p.Tasks))
	done := map[string]bool{}
	for len(p.order) < len(p.Tasks) {
		progressed := false
		for _, t := range p.Tasks {
			if done[t.Name] || indeg[t.Name] > 0 {
				continue
			}
			done[t.Name] = true
			progressed = true
			p.pos[t.Name] = len(p.order)
			p.order = append(p.order, t)
			for _, d := range p.down[t.Name] {
				indeg[d]--
			}
		}
		if !progressed {
			panic("spec: sort called on a pipeline with a cycle")
		}
	}
}

// Task returns the named task, or nil.
func (p *Pipeline) Task(name string) *Task { return p.index[name] }

// Upstream reports whether up is a direct or indirect upstream of task.
func (p *Pipeline) Upstream(task, up string) bool {
	seen := map[string]bool{}
	var walk func(string) bool
	walk = func(n string) bool {
		t := p.index[n]
		if t == nil || seen[n] {
			return false
		}
		seen[n] = true
		for _, x := range t.Needs {
			if x == up || walk(x) {
				return true
			}
		}
		return false
	}
	return walk(task)
}

// Schedule is when a pipeline runs by itself.
type Schedule struct {
	Pos      Pos
	Cron     string
	Every    time.Duration
	Timezone string
	Location *time.Location
	Catchup  bool
	// CatchupLimit is how many missed fire times run when Catchup is set
	// (default DefaultCatchupLimit, at most MaxCatchupLimit).
	CatchupLimit int
	Paused       bool
	Params       map[string]any
	// cron holds the expression's fields, matched against local wall-clock
	// times written as UTC times (see Next); nil for every.
	cron *cron.SpecSchedule
	// fixedHour: the hour field names hours (it is not * or */n), so a local
	// time fires once a day even across DST changes (see Next).
	fixedHour  bool
	paramsNode *yaml.Node
}

// Catch-up limits of a schedule.
const (
	DefaultCatchupLimit = 10
	MaxCatchupLimit     = 1000
)

// Next returns the first fire time after t, in the schedule's time zone, or
// the zero time when there is none within five years.
//
// An every schedule fires at the multiples of its interval counted from the
// Unix epoch (1970-01-01 00:00 UTC), whatever the time zone: every 15m fires
// at :00, :15, :30 and :45 UTC, every 6h at 00:00, 06:00, 12:00 and 18:00 UTC.
//
// A cron expression is matched against the local wall-clock time of the time
// zone. Around daylight saving time changes:
//   - a local time that does not exist (the clock jumps from 02:00 to 03:00)
//     fires once, at the first instant after the jump, when the hour field
//     names hours ("30 2 * * *" fires at 03:00 that day); with * or */n in
//     the hour field it does not fire (the hours that exist fire as usual);
//   - a local time that occurs twice (the clock goes back from 03:00 to
//     02:00) fires once, at its first occurrence, when the hour field names
//     hours; with * or */n in the hour field it fires at both, so an hourly
//     schedule fires at every real hour.
func (s *Schedule) Next(t time.Time) time.Time {
	loc := s.Location
	if loc == nil {
		loc = time.UTC
	}
	var next time.Time
	switch {
	case s.Every > 0:
		next = nextEvery(t, s.Every)
	case s.cron != nil:
		next = s.nextCron(t, loc)
	}
	if next.IsZero() {
		return next
	}
	return next.In(loc)
}

// nextEvery returns the first multiple of d since the Unix epoch after t
// (for t within the 292 years around 1970 that a Duration spans).
func nextEvery(t time.Time, d time.Duration) time.Time {
	epoch := time.Unix(0, 0).UTC()
	since := t.Sub(epoch) // saturates far from 1970
	k := since / d
	if since%d < 0 {
		k-- // floor for times before 1970
	}
	return epoch.Add((k + 1) * d)
}

// nextCron finds the wall-clock times that match the expression (the cron
// library works on them as UTC times, where no clock jumps) and maps each to
// the instants at which loc shows it, returning the earliest instant after
// t. Because a clock that goes back shows a wall time again later, the
// search starts a little before t's wall time and goes on until no later wall
// time can map before the best instant found.
func (s *Schedule) nextCron(t time.Time, loc *time.Location) time.Time {
	segs := zoneSegments(loc, t)
	minOff := segs[0].off
	for _, sg := range segs {
		minOff = min(minOff, sg.off)
	}
	// A wall time w maps to an instant w-off after t only if w > t+off.
	x := t.UTC().Add(time.Duration(minOff) * time.Second)
	var best time.Time
	for {
		w := s.cron.Next(x)
		if w.IsZero() {
			return best
		}
		segs := zoneSegments(loc, w)
		maxOff := segs[0].off
		for _, sg := range segs {
			maxOff = max(maxOff, sg.off)
		}
		if !best.IsZero() && w.Add(-time.Duration(maxOff)*time.Second).After(best) {
			return best
		}
		for _, i := range s.instants(w, segs) {
			if i.After(t) && (best.IsZero() || i.Before(best)) {
				best = i
			}
		}
		if len(segs) == 1 && !best.IsZero() {
			// No clock change within hours of w: later wall times are later.
			return best
		}
		x = w
	}
}

// zoneSegment is a stretch of time with one UTC offset (in seconds); a zero
// start or end is unbounded.
type zoneSegment struct {
	start, end time.Time
	off        int
}

// zoneSegments returns loc's zones in effect from 16 hours before to 16 hours
// after the instant at, oldest first: every offset a wall time near at can be
// shown with.
func zoneSegments(loc *time.Location, at time.Time) []zoneSegment {
	const reach = 16 * time.Hour
	to := at.Add(reach)
	var out []zoneSegment
	for t := at.Add(-reach); ; {
		lt := t.In(loc)
		_, off := lt.Zone()
		start, end := lt.ZoneBounds()
		out = append(out, zoneSegment{start: start, end: end, off: off})
		if end.IsZero() || !end.Before(to) || !end.After(t) {
			return out
		}
		t = end
	}
}

// instants returns the instants, in order, at which the wall time w (written
// as a UTC time) fires, given the zones around it.
func (s *Schedule) instants(w time.Time, segs []zoneSegment) []time.Time {
	var out []time.Time
	for _, sg := range segs {
		i := w.Add(-time.Duration(sg.off) * time.Second)
		if (sg.start.IsZero() || !i.Before(sg.start)) && (sg.end.IsZero() || i.Before(sg.end)) {
			out = append(out, i)
		}
	}
	switch {
	case len(out) > 0 && s.fixedHour:
		return out[:1] // the first occurrence of a repeated time
	case len(out) > 0 || !s.fixedHour:
		return out
	}
	// w is in a gap: the clock jumped over it at the start of a segment.
	for k := 1; k < len(segs); k++ {
		start := segs[k].start
		before := start.Add(time.Duration(segs[k-1].off) * time.Second) // the wall time the jump leaves
		after := start.Add(time.Duration(segs[k].off) * time.Second)    // and the one it lands on
		if !w.Before(before) && w.Before(after) {
			return []time.Time{start}
		}
	}
	return nil
}

// EnvVar is one environment variable whose value may hold expressions.
type EnvVar struct {
	Name  string
	Value *expr.Template
}

// Scopes of the expression roots, by where an expression stands.
var (
	scopeRunDefault  = expr.Scope{Roots: []string{expr.RootRun}, Where: "a param default"}
	scopePipelineEnv = expr.Scope{Roots: []string{expr.RootParams, expr.RootRun}, Where: "the pipeline env"}
	scopeTask        = expr.Scope{Roots: []string{expr.RootParams, expr.RootTasks, expr.RootRun, expr.RootEnv, expr.RootSecrets}, Where: "a task"}
	scopeTaskItem    = expr.Scope{Roots: append(slices.Clone(scopeTask.Roots), expr.RootItem), Where: "a task"}
	scopeTaskCond    = expr.Scope{Roots: []string{expr.RootParams, expr.RootTasks, expr.RootRun, expr.RootEnv}, Where: "if and for_each"}
	scopeTemplate    = expr.Scope{Roots: []string{expr.RootInputs, expr.RootRun, expr.RootEnv, expr.RootSecrets}, Where: "a template"}
	scopeTemplItem   = expr.Scope{Roots: append(slices.Clone(scopeTemplate.Roots), expr.RootItem), Where: "a template"}
	scopeCheck       = expr.Scope{Roots: []string{expr.RootOutputs, expr.RootItem, expr.RootRun}, Where: "a check"}
)

var pipelineKeys = []string{
	"version", "name", "description", "tags", "schedule", "params", "env", "defaults",
	"max_active_runs", "concurrency", "tasks",
}

// loader holds what loading one project shares across its files.
type loader struct {
	fsys      fsReader
	config    *Config
	errs      *ErrorList
	templates map[string]*TaskTemplate // by path; nil entry: failed to load
	schemas   map[string]*schemaFile
}

func (l *loader) pipeline(file string, src []byte) *Pipeline {
	d := newDecoder(file, src, l.errs)
	p := &Pipeline{File: file, Config: l.config, Pos: Pos{File: file, Line: 1, Col: 1}}
	root := d.parse(src)
	if root == nil {
		return p
	}
	var defaults settings
	var tasksNode *yaml.Node
	hasVersion := false
	var version int
	d.fields(root, "pipeline", pipelineKeys, func(key string, f field) {
		switch key {
		case "version":
			hasVersion = d.version(f.val, &version)
		case "name":
			if s, ok := d.str(f.val); ok {
				if !nameRE.MatchString(s) {
					d.errorf(f.val, "pipeline name %q: use letters, digits, -, _ and .", s)
				}
				p.Name = s
				p.Pos = d.pos(f.val)
			}
		case "description":
			p.Description, _ = d.str(f.val)
		case "tags":
			p.Tags, _ = d.stringList(f.val, "tags")
		case "schedule":
			p.Schedule = d.schedule(f.val)
		case "params":
			p.Params = d.params(f.val, "params", scopeRunDefault)
		case "env":
			p.Env = d.env(f.val, scopePipelineEnv)
		case "defaults":
			defaults = d.settings(f.val, "defaults", defaultsKeys)
		case "max_active_runs":
			p.MaxActiveRuns, _ = d.integer(f.val, 1)
		case "concurrency":
			p.Concurrency, _ = d.integer(f.val, 1)
		case "tasks":
			tasksNode = f.val
		}
	})
	if resolve(root).Kind != yaml.MappingNode {
		return p
	}
	if !hasVersion {
		d.errorAt(Pos{File: file, Line: 1, Col: 1}, "missing `version: 1` (the file format version)")
	}
	if tasksNode == nil {
		d.errorAt(Pos{File: file, Line: 1, Col: 1}, "a pipeline needs tasks")
		return p
	}
	d.checkScheduleParams(p)
	p.Tasks = l.tasks(d, tasksNode, p, defaults)
	l.checkGraph(d, p)
	return p
}

func (d *decoder) env(n *yaml.Node, scope expr.Scope) []EnvVar {
	var out []EnvVar
	for _, f := range d.keyed(n, "env") {
		if !envNameRE.MatchString(f.key.Value) {
			d.errorf(f.key, "environment variable name %q: use letters, digits and _", f.key.Value)
			continue
		}
		if t := d.template(f.val, scope); t != nil {
			out = append(out, EnvVar{Name: f.key.Value, Value: t})
		}
	}
	slices.SortFunc(out, func(a, b EnvVar) int {
		if a.Name < b.Name {
			return -1
		}
		if a.Name > b.Name {
			return 1
		}
		return 0
	})
	return out
}

func (d *decoder) schedule(n *yaml.Node) *Schedule {
	s := &Schedule{Pos: d.pos(n), Timezone: "UTC", Location: time.UTC, CatchupLimit: DefaultCatchupLimit}
	var cronNode *yaml.Node
	var paramsNode *yaml.Node
	d.fields(n, "schedule", []string{"cron", "every", "timezone", "catchup", "catchup_limit", "paused", "params"}, func(key string, f field) {
		switch key {
		case "cron":
			s.Cron, _ = d.str(f.val)
			cronNode = f.val
		case "every":
			s.Every, _ = d.duration(f.val)
			if s.Every > 0 && s.Every < time.Minute {
				d.errorf(f.val, "every must be at least 1m")
			}
		case "timezone":
			if tz, ok := d.str(f.val); ok {
				loc, err := time.LoadLocation(tz)
				if err != nil {
					d.errorf(f.val, "unknown time zone %q (use an IANA name such as Europe/Berlin or UTC)", tz)
				} else {
					s.Timezone, s.Location = tz, loc
				}
			}
		case "catchup":
			s.Catchup, _ = d.boolean(f.val)
		case "catchup_limit":
			if limit, ok := d.integer(f.val, 1); ok && limit > MaxCatchupLimit {
				d.errorf(f.val, "catchup_limit: at most %d (backfill runs more)", MaxCatchupLimit)
			} else if ok {
				s.CatchupLimit = limit
			}
		case "paused":
			s.Paused, _ = d.boolean(f.val)
		case "params":
			paramsNode = f.val
		}
	})
	if paramsNode != nil {
		raw, ok := d.value(paramsNode)
		if m, isMap := raw.(map[string]any); ok && isMap {
			s.Params = m
			s.paramsNode = paramsNode
		} else if ok {
			d.errorf(paramsNode, "schedule params must be a mapping of param names to values")
		}
	}
	if s.Cron != "" {
		d.cron(cronNode, s)
	}
	switch {
	case s.Cron != "" && s.Every > 0:
		d.errorf(n, "a schedule takes cron or every, not both")
	case s.Cron == "" && s.Every == 0:
		d.errorf(n, "a schedule needs cron (such as \"0 2 * * *\") or every (such as 15m)")
	}
	return s
}

// cron parses a schedule's cron expression.
func (d *decoder) cron(n *yaml.Node, s *Schedule) {
	text := strings.TrimSpace(s.Cron)
	switch {
	case strings.HasPrefix(text, "TZ=") || strings.HasPrefix(text, "CRON_TZ="):
		d.errorf(n, "bad cron expression %q: give the time zone as timezone: under schedule, not in the expression", s.Cron)
		return
	case strings.HasPrefix(text, "@every"):
		d.errorf(n, "bad cron expression %q: use every: under schedule (such as every: 15m) instead of @every", s.Cron)
		return
	}
	c, err := cron.ParseStandard(text)
	if err != nil {
		hint := ""
		if !strings.HasPrefix(text, "@") && len(strings.Fields(text)) != 5 {
			hint = " (want 5 fields: minute hour day-of-month month day-of-week, or @hourly, @daily, …)"
		}
		d.errorf(n, "bad cron expression %q: %v%s", s.Cron, err, hint)
		return
	}
	fields, ok := c.(*cron.SpecSchedule)
	if !ok {
		d.errorf(n, "bad cron expression %q: want 5 fields: minute hour day-of-month month day-of-week, or @hourly, @daily, …", s.Cron)
		return
	}
	wall := *fields
	wall.Location = time.UTC // wall-clock times, written as UTC times: see Schedule.Next
	s.cron = &wall
	if f := strings.Fields(text); len(f) == 5 {
		s.fixedHour = !strings.HasPrefix(f[1], "*") && !strings.HasPrefix(f[1], "?")
	} else {
		s.fixedHour = text != "@hourly"
	}
}

// checkScheduleParams checks a schedule's params against the pipeline's, so a
// mistake shows at load time, not when the schedule first fires.
func (d *decoder) checkScheduleParams(p *Pipeline) {
	s := p.Schedule
	if s == nil || s.paramsNode == nil && s.Params == nil {
		for _, prm := range p.Params {
			if s != nil && prm.Required {
				d.errorAt(s.Pos, "the schedule must give param %s (it has no default): add it under schedule.params", prm.Name)
			}
		}
		return
	}
	for _, f := range d.keyed(s.paramsNode, "schedule params") {
		name := f.key.Value
		var prm *Param
		for _, x := range p.Params {
			if x.Name == name {
				prm = x
			}
		}
		if prm == nil {
			d.errorf(f.key, "schedule params: unknown param %q%s", name, paramList("params", p.Params))
			continue
		}
		if _, err := prm.Coerce(s.Params[name]); err != nil {
			d.errorf(f.val, "schedule params: %v", err)
		}
	}
	for _, prm := range p.Params {
		if _, given := s.Params[prm.Name]; prm.Required && !given {
			d.errorf(s.paramsNode, "the schedule must give param %s (it has no default)", prm.Name)
		}
	}
}
