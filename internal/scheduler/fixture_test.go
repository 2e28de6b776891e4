package scheduler

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/dray-dev/dray/internal/control"
	"github.com/dray-dev/dray/internal/engine"
	"github.com/dray-dev/dray/internal/spec"
	"github.com/dray-dev/dray/internal/store"
	"github.com/dray-dev/dray/internal/store/sqlite"
)

// clock is a settable time with timers that fire when it is moved past them,
// so Run can be driven without waiting.
type clock struct {
	mu      sync.Mutex
	t       time.Time
	timers  []*fakeTimer
	changed chan struct{} // closed and replaced when timers change
}

type fakeTimer struct {
	at time.Time
	ch chan time.Time
}

func newClock(t time.Time) *clock { return &clock{t: t, changed: make(chan struct{})} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// Set moves the clock to t, firing the timers due by then.
func (c *clock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
	kept := c.timers[:0]
	for _, tm := range c.timers {
		if tm.at.After(t) {
			kept = append(kept, tm)
			continue
		}
		tm.ch <- t
	}
	c.timers = kept
	c.signal()
}

// Advance moves the clock forward by d.
func (c *clock) Advance(d time.Duration) { c.Set(c.Now().Add(d)) }

func (c *clock) signal() {
	close(c.changed)
	c.changed = make(chan struct{})
}

// timer is Scheduler.timer on this clock.
func (c *clock) timer(d time.Duration) (<-chan time.Time, func() bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	tm := &fakeTimer{at: c.t.Add(d), ch: make(chan time.Time, 1)}
	if d <= 0 {
		tm.ch <- c.t
		return tm.ch, func() bool { return false }
	}
	c.timers = append(c.timers, tm)
	c.signal()
	return tm.ch, func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		i := slices.Index(c.timers, tm)
		if i < 0 {
			return false
		}
		c.timers = slices.Delete(c.timers, i, i+1)
		c.signal()
		return true
	}
}

// waitTimers waits until n timers are set: every Run loop of the test is
// idle, waiting for the clock.
func (c *clock) waitTimers(t *testing.T, n int) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		c.mu.Lock()
		got, changed := len(c.timers), c.changed
		c.mu.Unlock()
		if got == n {
			return
		}
		select {
		case <-changed:
		case <-deadline:
			t.Fatalf("waiting for %d timers: %d are set", n, got)
		}
	}
}

// logs records log lines for tests to look at.
type logs struct {
	mu    sync.Mutex
	lines []logLine
}

type logLine struct {
	level slog.Level
	msg   string
	attrs map[string]any
}

func (l *logs) handler() slog.Handler { return &logHandler{logs: l} }

// find returns the lines with the message.
func (l *logs) find(msg string) []logLine {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []logLine
	for _, x := range l.lines {
		if x.msg == msg {
			out = append(out, x)
		}
	}
	return out
}

// fired lists the logical times (UTC, 15:04) of the "schedule fired" lines.
func (l *logs) fired() []string {
	var out []string
	for _, x := range l.find("schedule fired") {
		out = append(out, x.attrs["logical_time"].(time.Time).UTC().Format("15:04"))
	}
	return out
}

type logHandler struct {
	logs  *logs
	attrs []slog.Attr
}

func (h *logHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h *logHandler) Handle(_ context.Context, r slog.Record) error {
	line := logLine{level: r.Level, msg: r.Message, attrs: map[string]any{}}
	for _, a := range h.attrs {
		line.attrs[a.Key] = a.Value.Any()
	}
	r.Attrs(func(a slog.Attr) bool {
		line.attrs[a.Key] = a.Value.Any()
		return true
	})
	h.logs.mu.Lock()
	h.logs.lines = append(h.logs.lines, line)
	h.logs.mu.Unlock()
	return nil
}

func (h *logHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &logHandler{logs: h.logs, attrs: append(slices.Clone(h.attrs), attrs...)}
}

func (h *logHandler) WithGroup(string) slog.Handler { return h }

// fixture is a scheduler on a real SQLite store, with a settable clock.
type fixture struct {
	t     *testing.T
	ctx   context.Context
	path  string
	store *sqlite.Store
	clock *clock

	mu    sync.Mutex
	pipes []*spec.Pipeline

	svc   *control.Service
	sched *Scheduler
	logs  *logs
}

func newFixture(t *testing.T, start time.Time, pipes ...*spec.Pipeline) *fixture {
	t.Helper()
	f := &fixture{t: t, ctx: context.Background(), path: filepath.Join(t.TempDir(), "dray.db"), clock: newClock(start), pipes: pipes}
	f.store = f.open()
	f.sched, f.svc, f.logs = f.scheduler(f.store, "main")
	return f
}

// open opens the fixture's database; a second handle is like a second process.
func (f *fixture) open() *sqlite.Store {
	f.t.Helper()
	st, err := sqlite.Open(f.ctx, f.path, sqlite.Options{})
	if err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() { st.Close() })
	return st
}

// scheduler builds a scheduler (with its own control service) on st.
func (f *fixture) scheduler(st store.Store, holder string) (*Scheduler, *control.Service, *logs) {
	svc := control.New(control.Config{Store: st, Now: f.clock.Now, Logger: slog.New(slog.DiscardHandler)})
	f.t.Cleanup(svc.Close)
	l := &logs{}
	s := New(Config{
		Store: st, Control: svc, Now: f.clock.Now, Logger: slog.New(l.handler()), Holder: holder,
		Pipelines: func() []*spec.Pipeline {
			f.mu.Lock()
			defer f.mu.Unlock()
			return slices.Clone(f.pipes)
		},
	})
	s.timer = f.clock.timer
	return s, svc, l
}

func (f *fixture) setPipelines(pipes ...*spec.Pipeline) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.pipes = pipes
}

// tick ticks at the clock's time and fails the test on an error.
func (f *fixture) tick() time.Time {
	f.t.Helper()
	next, err := f.sched.Tick(f.ctx)
	if err != nil {
		f.t.Fatalf("tick at %s: %v", f.clock.Now(), err)
	}
	return next
}

// runs returns a pipeline's runs by logical time.
func (f *fixture) runs(pipeline string) []*engine.Run {
	f.t.Helper()
	var runs []*engine.Run
	err := f.store.View(f.ctx, func(tx store.Tx) error {
		var err error
		runs, err = tx.Runs(f.ctx, store.RunFilter{Pipeline: pipeline})
		return err
	})
	if err != nil {
		f.t.Fatal(err)
	}
	slices.SortStableFunc(runs, func(a, b *engine.Run) int { return a.LogicalTime.Compare(b.LogicalTime) })
	return runs
}

// times formats the runs' logical times in loc, with their offsets.
func times(runs []*engine.Run, loc *time.Location) []string {
	out := []string{}
	for _, r := range runs {
		out = append(out, r.LogicalTime.In(loc).Format("2006-01-02 15:04 -07:00"))
	}
	return out
}

// row returns a pipeline's recorded schedule state, or nil.
func (f *fixture) row(pipeline string) *store.Schedule {
	f.t.Helper()
	rows, err := f.sched.rows(f.ctx)
	if err != nil {
		f.t.Fatal(err)
	}
	return rows[pipeline]
}

// load loads one pipeline from YAML.
func load(t *testing.T, name, src string) *spec.Pipeline {
	t.Helper()
	proj, err := spec.Load(fstest.MapFS{
		"dray.yaml":                   {Data: []byte("version: 1\n")},
		"pipelines/" + name + ".yaml": {Data: []byte(src)},
	})
	if err != nil {
		t.Fatal(err)
	}
	p, err := proj.Pipeline(name)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// scheduled loads a pipeline with one task and the schedule (a YAML flow
// mapping), plus extra top-level YAML.
func scheduled(t *testing.T, name, schedule string, extra ...string) *spec.Pipeline {
	t.Helper()
	return load(t, name, fmt.Sprintf("version: 1\nschedule: %s\n%stasks: [{name: a, run: 'true'}]\n", schedule, strings.Join(extra, "")))
}

func mustLocation(t *testing.T, name string) *time.Location {
	t.Helper()
	loc, err := time.LoadLocation(name)
	if err != nil {
		t.Fatal(err)
	}
	return loc
}
