package engine

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"
)

func succeedAll(a *Attempt) Result { return ok("") }

func TestChainPassesOutputs(t *testing.T) {
	w := newWorld(t, `
version: 1
params:
  day: { type: string, default: "${{ run.logical_date }}" }
tasks:
  - name: extract
    run: ./extract.sh "${{ params.day }}"
  - name: load
    needs: [extract]
    run: ./load.sh ${{ tasks.extract.outputs.path }} ${{ tasks.extract.outputs.rows * 2 }}
`, nil)
	w.drive(func(a *Attempt) Result {
		if a.Task == "extract" {
			if a.Work.Run != `./extract.sh "2026-11-23"` {
				t.Errorf("extract run = %q", a.Work.Run)
			}
			return ok(`{"path": "s3://b/x.csv", "rows": 21}`)
		}
		if a.Work.Run != "./load.sh s3://b/x.csv 42" {
			t.Errorf("load run = %q", a.Work.Run)
		}
		return ok(`{"loaded": true}`)
	})
	if w.run.State != RunSucceeded {
		t.Fatalf("run = %s\n%s", w.run.State, w.dump())
	}
	if got := string(w.task("load").Outputs); got != `{"loaded": true}` {
		t.Errorf("outputs = %s", got)
	}
}

func TestIfFalseSkipsAndDownstreamFollowsTrigger(t *testing.T) {
	w := newWorld(t, `
version: 1
params: { limit: 0 }
tasks:
  - name: a
    run: "true"
    if: ${{ params.limit > 0 }}
  - name: strict
    needs: [a]
    run: "true"
  - name: lenient
    needs: [a]
    trigger: none_failed
    run: "true"
`, nil)
	w.drive(succeedAll)
	want := map[string]TaskState{"a": TaskSkipped, "strict": TaskSkipped, "lenient": TaskSucceeded}
	for name, state := range want {
		if got := w.task(name).State; got != state {
			t.Errorf("%s = %s, want %s", name, got, state)
		}
	}
	if r := w.task("a").Reason; r != "if is false: ${{ params.limit > 0 }}" {
		t.Errorf("reason = %q", r)
	}
	if r := w.task("strict").Reason; !strings.HasPrefix(r, "upstream a was skipped") {
		t.Errorf("reason = %q", r)
	}
	if w.run.State != RunSucceeded {
		t.Errorf("run = %s", w.run.State)
	}
}

func TestTriggers(t *testing.T) {
	// ok succeeds, bad fails, skip is skipped; each downstream task lists two
	// of them in needs and has one trigger rule.
	type want struct {
		state  TaskState
		reason string
	}
	cases := []struct {
		trigger string
		needs   string
		want    want
	}{
		{"all_success", "ok, bad", want{TaskUpstreamFailed, "upstream bad failed"}},
		{"all_success", "ok, skip", want{TaskSkipped, "upstream skip was skipped"}},
		{"all_success", "ok, ok2", want{TaskSucceeded, ""}},
		{"all_done", "ok, bad", want{TaskSucceeded, ""}},
		{"always", "bad, skip", want{TaskSucceeded, ""}},
		{"any_failed", "ok, bad", want{TaskSucceeded, ""}},
		{"any_failed", "ok, skip", want{TaskSkipped, "trigger any_failed: no upstream task failed"}},
		{"all_failed", "bad, bad2", want{TaskSucceeded, ""}},
		{"all_failed", "ok, bad", want{TaskSkipped, "trigger all_failed: upstream ok did not fail"}},
		{"none_failed", "ok, skip", want{TaskSucceeded, ""}},
		{"none_failed", "ok, bad", want{TaskUpstreamFailed, "upstream bad failed"}},
		{"all_success", "bad, bad2", want{TaskUpstreamFailed, "upstream bad, bad2 failed"}},
	}
	var b strings.Builder
	b.WriteString(`version: 1
tasks:
  - {name: ok, run: "true"}
  - {name: ok2, run: "true"}
  - {name: bad, run: "false"}
  - {name: bad2, run: "false"}
  - {name: skip, run: "true", if: "false"}
`)
	for i, c := range cases {
		fmt.Fprintf(&b, "  - {name: t%d, run: \"true\", trigger: %s, needs: [%s]}\n", i, c.trigger, c.needs)
	}
	w := newWorld(t, b.String(), nil)
	w.drive(func(a *Attempt) Result {
		if strings.HasPrefix(a.Task, "bad") {
			return fail("exit 1")
		}
		return ok("")
	})
	for i, c := range cases {
		rt := w.task(fmt.Sprintf("t%d", i))
		if rt.State != c.want.state || !strings.HasPrefix(rt.Reason, c.want.reason) {
			t.Errorf("%s over [%s]: %s %q, want %s %q", c.trigger, c.needs, rt.State, rt.Reason, c.want.state, c.want.reason)
		}
	}
	if w.run.State != RunFailed || w.run.Reason != "2 tasks failed: bad, bad2" {
		t.Errorf("run = %s %q", w.run.State, w.run.Reason)
	}
}

func TestForEachOutputsInItemOrderWithMaxParallel(t *testing.T) {
	w := newWorld(t, `
version: 1
tasks:
  - name: list
    run: "true"
  - name: score
    needs: [list]
    for_each: ${{ tasks.list.outputs.ids }}
    max_parallel: 3
    run: ./score.sh ${{ item }}
  - name: total
    needs: [score]
    run: echo ${{ len(tasks.score.outputs) }} ${{ tasks.score.outputs[9].id }}
`, nil)
	// Finish instances out of order: the highest index first.
	var pending []*Attempt
	report := func() {
		for i := len(pending) - 1; i >= 0; i-- {
			a := pending[i]
			w.finish(a, ok(fmt.Sprintf(`{"id": %s}`, a.Work.Item)))
		}
		pending = nil
	}
	for step := 0; !w.run.State.Final() && step < 100; step++ {
		for _, a := range w.queued() {
			a.State = AttemptRunning
			switch a.Task {
			case "list":
				ids := make([]string, 10)
				for i := range ids {
					ids[i] = fmt.Sprint(i)
				}
				w.finish(a, ok(`{"ids": [`+strings.Join(ids, ",")+`]}`))
			case "score":
				pending = append(pending, a)
			default:
				if a.Work.Run != "echo 10 9" {
					t.Errorf("total run = %q", a.Work.Run)
				}
				w.finish(a, ok(""))
			}
		}
		if len(pending) > 3 {
			t.Fatalf("%d instances at once, max_parallel is 3", len(pending))
		}
		report()
	}
	want := `[{"id": 0},{"id": 1},{"id": 2},{"id": 3},{"id": 4},{"id": 5},{"id": 6},{"id": 7},{"id": 8},{"id": 9}]`
	if got := string(w.task("score").Outputs); got != want {
		t.Errorf("outputs = %s", got)
	}
	if w.run.State != RunSucceeded {
		t.Errorf("run = %s\n%s", w.run.State, w.dump())
	}
}

// Seed 003: an empty fan-out before a conditional crashed with a
// ZeroDivisionError. Here the fan-out is skipped with outputs [] and the
// downstream tasks see [] and run by their trigger.
func TestEmptyForEachBeforeConditional(t *testing.T) {
	w := newWorld(t, `
version: 1
tasks:
  - name: list
    run: "true"
  - name: score
    needs: [list]
    for_each: ${{ tasks.list.outputs.ids }}
    run: ./score.sh ${{ item }}
  - name: publish
    needs: [score]
    trigger: none_failed
    if: ${{ len(tasks.score.outputs) > 0 }}
    run: ./publish.sh
  - name: report
    needs: [score]
    trigger: none_failed
    run: echo ${{ len(tasks.score.outputs) }} ${{ tasks.score.outputs }} ${{ tasks.score.status }}
  - name: strict
    needs: [score]
    run: "true"
`, nil)
	w.drive(func(a *Attempt) Result {
		switch a.Task {
		case "list":
			return ok(`{"ids": []}`)
		case "report":
			if a.Work.Run != "echo 0 [] skipped" {
				t.Errorf("report run = %q", a.Work.Run)
			}
		}
		return ok("")
	})
	score := w.task("score")
	if score.State != TaskSkipped || string(score.Outputs) != "[]" || score.Reason != "for_each: no items" {
		t.Errorf("score = %s %q outputs %s", score.State, score.Reason, score.Outputs)
	}
	if n := len(w.attemptsOf("score")); n != 0 {
		t.Errorf("score has %d attempts, want none", n)
	}
	for name, want := range map[string]TaskState{"publish": TaskSkipped, "report": TaskSucceeded, "strict": TaskSkipped} {
		if got := w.task(name).State; got != want {
			t.Errorf("%s = %s, want %s", name, got, want)
		}
	}
	if w.run.State != RunSucceeded {
		t.Errorf("run = %s\n%s", w.run.State, w.dump())
	}
}

// Seed 003: outputs became wrapped in a list after an upgrade. A for_each
// task's outputs are always a list (one item: a list of one); an ordinary
// task's are its object, never wrapped.
func TestOutputsNeverRewrapped(t *testing.T) {
	w := newWorld(t, `
version: 1
tasks:
  - name: one
    for_each: [only]
    run: echo ${{ item }}
  - name: plain
    run: "true"
  - name: after
    needs: [one, plain]
    if: ${{ len(tasks.one.outputs) == 1 && tasks.one.outputs[0].n == 1 && tasks.plain.outputs.n == 2 }}
    run: echo ${{ tasks.one.outputs }} ${{ tasks.plain.outputs }}
`, nil)
	w.drive(func(a *Attempt) Result {
		switch a.Task {
		case "one":
			return ok(`{"n": 1}`)
		case "plain":
			return ok(`{"n": 2}`)
		}
		if a.Work.Run != `echo [{"n":1}] {"n":2}` {
			t.Errorf("after run = %q", a.Work.Run)
		}
		return ok("")
	})
	if got := string(w.task("one").Outputs); got != `[{"n": 1}]` {
		t.Errorf("one outputs = %s", got)
	}
	if got := string(w.task("plain").Outputs); got != `{"n": 2}` {
		t.Errorf("plain outputs = %s", got)
	}
	if w.task("after").State != TaskSucceeded {
		t.Errorf("after = %s %q", w.task("after").State, w.task("after").Reason)
	}
}

func TestConditionalAfterDynamicTask(t *testing.T) {
	for _, n := range []int{0, 1, 3} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			w := newWorld(t, `
version: 1
tasks:
  - name: list
    run: "true"
  - name: score
    needs: [list]
    for_each: ${{ tasks.list.outputs.ids }}
    run: ./score.sh ${{ item }}
  - name: average
    needs: [score]
    trigger: none_failed
    if: ${{ len(tasks.score.outputs) > 0 }}
    run: echo ${{ sum(map(tasks.score.outputs, .rows)) / len(tasks.score.outputs) }}
`, nil)
			ids := make([]string, n)
			for i := range ids {
				ids[i] = fmt.Sprint(i)
			}
			w.drive(func(a *Attempt) Result {
				switch a.Task {
				case "list":
					return ok(`{"ids": [` + strings.Join(ids, ",") + `]}`)
				case "score":
					return ok(`{"rows": 10}`)
				}
				if a.Work.Run != "echo 10" {
					t.Errorf("average run = %q", a.Work.Run)
				}
				return ok("")
			})
			want := TaskSucceeded
			if n == 0 {
				want = TaskSkipped
			}
			if got := w.task("average").State; got != want {
				t.Errorf("average = %s, want %s\n%s", got, want, w.dump())
			}
		})
	}
}

func TestRetriesWithBackoff(t *testing.T) {
	w := newWorld(t, `
version: 1
tasks:
  - name: flaky
    run: ./flaky.sh
    retries: 3
    retry_delay: 10s
  - name: doomed
    run: "false"
    retries: 1
    retry_delay: 1s
  - name: after
    needs: [doomed]
    run: "true"
`, nil)
	start := w.now
	sawRetrying := false
	w.drive(func(a *Attempt) Result {
		if a.Task == "doomed" || a.Number < 3 {
			return fail(fmt.Sprintf("exit %d", a.Number))
		}
		return ok("")
	})
	for _, ev := range w.events {
		if ev.Task == "flaky" && ev.State == string(TaskRetrying) {
			sawRetrying = true
		}
	}
	if !sawRetrying {
		t.Error("flaky never went through retrying")
	}
	att := w.attemptsOf("flaky")
	if len(att) != 3 || att[2].State != AttemptSucceeded {
		t.Fatalf("flaky attempts:\n%s", w.dump())
	}
	// Exponential: the second retry waits at least twice the base delay.
	gap1, gap2 := att[1].NotBefore.Sub(start), att[2].NotBefore.Sub(att[1].ClaimedAt)
	if gap1 < 10*time.Second || gap1 > 13*time.Second || gap2 < 20*time.Second || gap2 > 25*time.Second {
		t.Errorf("retry delays %s, %s; want ~10s then ~20s", gap1, gap2)
	}
	if d := w.task("doomed"); d.State != TaskFailed || d.Reason != "exit 2" || len(w.attemptsOf("doomed")) != 2 {
		t.Errorf("doomed = %s %q with %d attempts", d.State, d.Reason, len(w.attemptsOf("doomed")))
	}
	if a := w.task("after"); a.State != TaskUpstreamFailed || a.Reason != "upstream doomed failed" {
		t.Errorf("after = %s %q", a.State, a.Reason)
	}
	if w.run.State != RunFailed || w.run.Reason != "task doomed failed" {
		t.Errorf("run = %s %q", w.run.State, w.run.Reason)
	}
}

func TestBackoff(t *testing.T) {
	for n, want := range map[int]time.Duration{1: 10 * time.Second, 2: 20 * time.Second, 3: 40 * time.Second, 20: MaxRetryDelay} {
		got := Backoff(10*time.Second, n, "r", "t", 0)
		if got < want || got > want+want/4 {
			t.Errorf("Backoff(n=%d) = %s, want %s plus up to 25%%", n, got, want)
		}
		if again := Backoff(10*time.Second, n, "r", "t", 0); again != got {
			t.Errorf("Backoff is not stable: %s then %s", got, again)
		}
	}
	if Backoff(10*time.Second, 1, "r", "t", 0) == Backoff(10*time.Second, 1, "r", "t", 1) &&
		Backoff(10*time.Second, 1, "r", "t", 2) == Backoff(10*time.Second, 1, "r", "t", 3) {
		t.Error("no jitter across instances")
	}
}

func TestChecks(t *testing.T) {
	w := newWorld(t, `
version: 1
tasks:
  - name: a
    run: "true"
    retries: 1
    retry_delay: 1s
    checks:
      - schema: schemas/rows.json
      - expr: outputs.rows > 0
  - name: b
    run: "true"
    checks:
      - { expr: "outputs.rows > 100", severity: warn, name: plenty }
`, nil)
	w.drive(func(a *Attempt) Result {
		if a.Task == "a" && a.Number == 1 {
			return ok(`{"rows": "many"}`)
		}
		if a.Task == "a" {
			return ok(`{"rows": 0}`)
		}
		return ok(`{"rows": 5}`)
	})
	att := w.attemptsOf("a")
	if len(att) != 2 {
		t.Fatalf("a has %d attempts, want 2 (a failed check is retried)", len(att))
	}
	if !strings.Contains(att[0].Reason, "check schema schemas/rows.json: at /rows") {
		t.Errorf("attempt 1 reason = %q", att[0].Reason)
	}
	if att[1].Reason != "check outputs.rows > 0: is false" {
		t.Errorf("attempt 2 reason = %q", att[1].Reason)
	}
	b := w.attemptsOf("b")[0]
	if b.State != AttemptSucceeded || len(b.Warnings) != 1 || b.Warnings[0] != "check plenty: is false" {
		t.Errorf("b = %s warnings %q", b.State, b.Warnings)
	}
}

func TestTemplateWith(t *testing.T) {
	plan := load(t, map[string]string{
		"p.yaml": `
version: 1
params: { limit: 7 }
env: { REGION: eu }
tasks:
  - name: list
    run: "true"
  - name: publish
    needs: [list]
    for_each: ${{ tasks.list.outputs.ids }}
    uses: templates/publish.yaml
    with: { top: "${{ params.limit }}", label: "run-${{ run.id }}", pw: "${{ secrets.db_password }}" }
    env: { EXTRA: "${{ item }}" }
`,
		"templates/publish.yaml": `
version: 1
inputs:
  top: { type: integer }
  label: { type: string }
  pw: { type: string }
  dry: { type: boolean, default: false }
task:
  run: publish --top ${{ inputs.top * 2 }} --label ${{ inputs.label }} --item ${{ item }} --dry=${{ inputs.dry }}
  env: { PASSWORD: "${{ inputs.pw }}", REGION: "${{ env.REGION }}-1" }
  retries: 4
`,
	})
	w := &world{t: t, plan: plan, now: time.Now().UTC(), tasks: map[string]*Task{}, items: map[string][]json.RawMessage{},
		run: &Run{ID: "r9", Pipeline: "p", State: RunQueued, Params: map[string]any{"limit": 7}, Salt: "s", LogicalTime: time.Now()}}
	w.step(func(e *Engine) (*Step, error) { return e.Start() })
	w.drive(func(a *Attempt) Result {
		if a.Task == "list" {
			return ok(`{"ids": ["x"]}`)
		}
		marker := SecretMarker(a.Work.Nonce, "db_password")
		if want := `publish --top 14 --label run-r9 --item x --dry=false`; a.Work.Run != want {
			t.Errorf("run = %q, want %q", a.Work.Run, want)
		}
		want := map[string]string{"PASSWORD": marker, "REGION": "eu-1", "EXTRA": "x"}
		for k, v := range want {
			if a.Work.Env[k] != v {
				t.Errorf("env %s = %q, want %q", k, a.Work.Env[k], v)
			}
		}
		if len(a.Work.Secrets) != 1 || a.Work.Secrets[0] != "db_password" || len(a.Work.Nonce) < 16 {
			t.Errorf("secrets = %v nonce %q", a.Work.Secrets, a.Work.Nonce)
		}
		return ok("")
	})
	if w.run.State != RunSucceeded {
		t.Fatalf("run = %s\n%s", w.run.State, w.dump())
	}
	if plan.Task("publish").Retries != 4 {
		t.Errorf("retries from the template = %d", plan.Task("publish").Retries)
	}
}

func TestRenderErrorFailsTask(t *testing.T) {
	w := newWorld(t, `
version: 1
tasks:
  - name: a
    run: "true"
  - name: b
    needs: [a]
    run: echo ${{ tasks.a.outputs.missing }}
`, nil)
	w.drive(succeedAll)
	b := w.task("b")
	if b.State != TaskFailed || !strings.Contains(b.Reason, "${{ tasks.a.outputs.missing }} is null") {
		t.Errorf("b = %s %q", b.State, b.Reason)
	}
	if len(w.attemptsOf("b")) != 0 {
		t.Error("b should not have run")
	}
}

func TestForEachNotAList(t *testing.T) {
	w := newWorld(t, `
version: 1
tasks:
  - name: a
    run: "true"
  - name: b
    needs: [a]
    for_each: ${{ tasks.a.outputs.ids }}
    run: echo ${{ item }}
`, nil)
	w.drive(func(a *Attempt) Result { return ok(`{"ids": "1,2,3"}`) })
	if b := w.task("b"); b.State != TaskFailed || b.Reason != `for_each: want a list, got the string "1,2,3"` {
		t.Errorf("b = %s %q", b.State, b.Reason)
	}
}

// A for_each of 100,000 items creates its instances lazily: only max_parallel
// attempts exist at once, and finishing one creates one more.
func TestForEachIsLazy(t *testing.T) {
	w := newWorld(t, `
version: 1
tasks:
  - name: big
    for_each: ${{ 0..99999 }}
    max_parallel: 10
    run: echo ${{ item }}
`, nil)
	if n := len(w.attempts); n != 10 {
		t.Fatalf("%d attempts after start, want 10", n)
	}
	if n := len(w.items["big"]); n != 100_000 {
		t.Fatalf("%d items recorded", n)
	}
	q := w.queued()
	q[0].State = AttemptRunning
	w.finish(q[0], ok(""))
	if n := len(w.attempts); n != 11 {
		t.Errorf("%d attempts after one finished, want 11", n)
	}
	if last := w.attempts[10]; last.Index != 10 || last.Work.Run != "echo 10" {
		t.Errorf("next instance = %d %q", last.Index, last.Work.Run)
	}
}

func TestForEachOverLimit(t *testing.T) {
	w := newWorld(t, `
version: 1
tasks:
  - name: big
    for_each: ${{ 0..100000 }}
    run: echo ${{ item }}
`, nil)
	if b := w.task("big"); b.State != TaskFailed || b.Reason != "for_each: 100001 items, more than the limit of 100000" {
		t.Errorf("big = %s %q", b.State, b.Reason)
	}
}

// Finishing a task in a long chain reads only the rows it needs, not the whole run.
func TestFinishReadsFewRows(t *testing.T) {
	var b strings.Builder
	b.WriteString("version: 1\ntasks:\n  - {name: t0, run: \"true\"}\n")
	for i := 1; i < 200; i++ {
		fmt.Fprintf(&b, "  - {name: t%d, run: \"true\", needs: [t%d]}\n", i, i-1)
	}
	w := newWorld(t, b.String(), nil)
	w.reads = 0
	q := w.queued()
	q[0].State = AttemptRunning
	w.finish(q[0], ok(""))
	if w.reads > 3 {
		t.Errorf("finishing one task read %d task rows", w.reads)
	}
	w.drive(succeedAll)
	if w.run.State != RunSucceeded {
		t.Errorf("run = %s", w.run.State)
	}
}

// A lost attempt (its agent stopped) is retried even when the task has no
// retries left, up to MaxLostRetries attempts beyond them; a failure ends the
// task when the attempts so far, lost ones included, used up its retries.
func TestLostAttemptsAreRetriedBeyondRetries(t *testing.T) {
	w := newWorld(t, `
version: 1
tasks:
  - name: once
    run: "true"
  - name: unlucky
    run: "true"
  - name: flaky
    run: "false"
    retries: 1
`, nil)
	w.drive(func(a *Attempt) Result {
		switch {
		case a.Task == "once" && a.Number == 1:
			return Result{State: AttemptLost, Reason: "its agent stopped before it ended"}
		case a.Task == "unlucky":
			return Result{State: AttemptLost, Reason: "agent gone"}
		case a.Task == "flaky" && a.Number == 1:
			return Result{State: AttemptLost, Reason: "agent gone"}
		case a.Task == "flaky":
			return fail(fmt.Sprintf("exit %d", a.Number))
		}
		return ok("")
	})
	if o := w.task("once"); o.State != TaskSucceeded || len(w.attemptsOf("once")) != 2 {
		t.Errorf("once = %s with %d attempts, want succeeded after 2\n%s", o.State, len(w.attemptsOf("once")), w.dump())
	}
	if u := w.task("unlucky"); u.State != TaskFailed || len(w.attemptsOf("unlucky")) != 1+MaxLostRetries {
		t.Errorf("unlucky = %s with %d attempts, want failed after %d\n%s", u.State, len(w.attemptsOf("unlucky")), 1+MaxLostRetries, w.dump())
	}
	// Attempt 1 lost (the one retry), 2 failed: a failure ends it once the
	// attempts, lost ones included, used up its retries.
	if f := w.task("flaky"); f.State != TaskFailed || len(w.attemptsOf("flaky")) != 2 {
		t.Errorf("flaky = %s with %d attempts, want failed after 2\n%s", f.State, len(w.attemptsOf("flaky")), w.dump())
	}
}
