package crashtest

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dray-dev/dray/internal/api"
	"github.com/dray-dev/dray/internal/client"
	"github.com/dray-dev/dray/internal/control"
	"github.com/dray-dev/dray/internal/engine"
	"github.com/dray-dev/dray/internal/store"
)

// maxErrors bounds how many findings of one kind a check reports.
const maxErrors = 10

// reporter reports findings by kind, up to maxErrors of each.
type reporter struct {
	t    *testing.T
	seen map[string]int
}

func (r *reporter) errorf(kind, format string, args ...any) {
	r.t.Helper()
	if r.seen == nil {
		r.seen = map[string]int{}
	}
	r.seen[kind]++
	switch n := r.seen[kind]; {
	case n <= maxErrors:
		r.t.Errorf(kind+": "+format, args...)
	case n == maxErrors+1:
		r.t.Errorf("%s: more of these follow, not shown", kind)
	}
}

// apiView is what the API shows of the runs: their records, and the state
// of every attempt by id.
type apiView struct {
	runs     map[string]*control.RunRecord
	attempts map[int64]api.Attempt
}

// checkAPI checks through the API that every acknowledged run exists and
// succeeded with every task, that each succeeded attempt's log has the line
// its task prints at the end, and that every server replica answers the same
// record of a run. It returns what the API shows. The other requests go to
// the replicas in turn.
func checkAPI(t *testing.T, ctx context.Context, c *cluster, acked map[int]string) *apiView {
	t.Helper()
	r := &reporter{t: t}
	replicas, err := c.replicaClients()
	if err != nil {
		t.Fatal(err)
	}
	turn := 0
	next := func() *client.Client {
		turn++
		return replicas[turn%len(replicas)]
	}
	runs := map[string]*control.RunRecord{}
	v := &apiView{runs: runs, attempts: map[int64]api.Attempt{}}
	for cursor := ""; ; {
		page, err := next().Runs(ctx, client.RunFilter{Limit: 500, Cursor: cursor})
		if err != nil {
			t.Fatalf("list runs: %v", err)
		}
		for _, run := range page.Runs {
			runs[run.ID] = run
		}
		if cursor = page.NextCursor; cursor == "" {
			break
		}
	}
	for n, id := range acked {
		if _, ok := runs[id]; !ok {
			r.errorf("acknowledged run lost", "run %s (n=%d) was acknowledged with 201 and is not listed", id, n)
		}
	}
	for id, run := range runs {
		atts, err := next().Attempts(ctx, id, "")
		if err != nil {
			t.Fatalf("list attempts of run %s: %v", id, err)
		}
		for _, a := range atts {
			v.attempts[a.ID] = a
		}
		var rec *control.RunRecord
		var first []byte
		for i, cl := range replicas {
			got, err := cl.Run(ctx, id)
			if err != nil {
				t.Fatalf("get run %s from server replica %d: %v", id, i, err)
			}
			b, err := json.Marshal(got)
			if err != nil {
				t.Fatal(err)
			}
			if i == 0 {
				rec, first = got, b
			} else if !bytes.Equal(b, first) {
				r.errorf("replicas disagree", "GET /api/v1/runs/%s: server replica 0 answers %s, replica %d %s", id, first, i, b)
			}
		}
		n, _ := run.Params["n"].(float64)
		if _, ok := acked[int(n)]; !ok {
			r.errorf("run of no trigger", "run %s has params %v, which the test never sent", id, run.Params)
		}
		if run.State != string(engine.RunSucceeded) {
			r.errorf("run not succeeded", "run %s (n=%v) is %s: %s", id, n, run.State, run.Reason)
			continue
		}
		got := map[string]string{}
		for _, task := range rec.Tasks {
			got[task.Name] = task.State
			if task.Name == "fan" {
				ok := len(task.Instances) == 3
				for _, in := range task.Instances {
					ok = ok && in.State == string(engine.AttemptSucceeded)
				}
				if !ok {
					r.errorf("run record", "run %s: fan has instances %+v, want 3 succeeded", id, task.Instances)
				}
			}
		}
		want := map[string]string{"prepare": "succeeded", "fan": "succeeded", "sum": "succeeded"}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			r.errorf("run record", "run %s succeeded with tasks %v, want %v", id, got, want)
		}
		// The agent ships every line of an attempt before it reports the
		// end: a success has its whole log.
		logs, err := next().RunLogs(ctx, id, client.LogOptions{})
		if err != nil {
			t.Fatalf("logs of run %s: %v", id, err)
		}
		done := map[int64]bool{}
		for _, l := range logs.Lines {
			if l.Text == l.Task+" done" {
				done[l.AttemptID] = true
			}
		}
		for _, a := range atts {
			if a.State == string(engine.AttemptSucceeded) && !done[a.ID] {
				r.errorf("log lines lost", "run %s: attempt %d (%s[%d] number %d) succeeded, and its log has no line %q; the run's log: %+v",
					id, a.ID, a.Task, a.Index, a.Number, a.Task+" done", logs.Lines)
			}
		}
	}
	return v
}

// history is what the store recorded.
type history struct {
	runs     []*engine.Run
	attempts map[string][]*engine.Attempt // by run
	tasks    map[string][]*engine.Task    // by run
	agents   []*store.Agent
}

func readHistory(ctx context.Context, st store.Store) (*history, error) {
	h := &history{attempts: map[string][]*engine.Attempt{}, tasks: map[string][]*engine.Task{}}
	err := st.View(ctx, func(tx store.Tx) error {
		var err error
		if h.runs, err = tx.Runs(ctx, store.RunFilter{}); err != nil {
			return err
		}
		for _, r := range h.runs {
			if h.attempts[r.ID], err = tx.Attempts(ctx, store.AttemptFilter{RunID: r.ID}); err != nil {
				return err
			}
			if h.tasks[r.ID], err = tx.Tasks(ctx, r.ID); err != nil {
				return err
			}
		}
		h.agents, err = tx.Agents(ctx)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("read the store: %w", err)
	}
	return h, nil
}

// counts are what checkHistory counted.
type counts struct {
	instances, attempts, agents int
	lost                        int
	lostUnstarted, lostMidTask  int
	lostEnded                   int // the task had ended: its success was not recorded
	maxNumber                   int
}

// checkHistory checks the attempts the store recorded against the ledger.
// deaths holds when each server (by generation) was reaped.
func checkHistory(t *testing.T, h *history, shown *apiView, ledger []entry, deaths map[int]time.Time) counts {
	t.Helper()
	r := &reporter{t: t}
	var n counts
	n.agents = len(h.agents)
	if len(h.runs) != len(shown.runs) {
		r.errorf("store and API disagree", "the store has %d runs, the API listed %d", len(h.runs), len(shown.runs))
	}

	byID := map[int64]*engine.Attempt{}
	byInstance := map[instance][]*engine.Attempt{}
	for _, run := range h.runs {
		if !run.State.Final() {
			r.errorf("run not ended", "run %s is %s", run.ID, run.State)
		}
		for _, a := range h.attempts[run.ID] {
			if got, ok := shown.attempts[a.ID]; !ok || got.State != string(a.State) || got.Number != a.Number || got.Task != a.Task || got.Index != a.Index {
				r.errorf("store and API disagree", "the store has attempt %d as %s[%d] %d %s, the API as %+v", a.ID, a.Task, a.Index, a.Number, a.State, got)
			}
			byID[a.ID] = a
			in := instance{a.RunID, a.Task, a.Index}
			byInstance[in] = append(byInstance[in], a)
			n.attempts++
			n.maxNumber = max(n.maxNumber, a.Number)
		}
	}
	if len(shown.attempts) != n.attempts {
		r.errorf("store and API disagree", "the store has %d attempts, the API listed %d", n.attempts, len(shown.attempts))
	}
	starts := map[int64][]entry{}
	ends := map[int64][]entry{}
	for _, e := range ledger {
		switch e.event {
		case "start":
			starts[e.attempt] = append(starts[e.attempt], e)
		case "end":
			ends[e.attempt] = append(ends[e.attempt], e)
		}
		a := byID[e.attempt]
		switch {
		case a == nil:
			r.errorf("ledger and store disagree", "the ledger has attempt %d, which the store does not: %s", e.attempt, e.line)
		case a.RunID != e.run || a.Task != e.task || a.Index != e.index || a.Number != e.number:
			r.errorf("ledger and store disagree", "the store has attempt %d as %d of %v, the ledger as: %s", a.ID, a.Number, instance{a.RunID, a.Task, a.Index}, e.line)
		}
		if died, ok := deaths[e.gen]; !ok {
			r.errorf("ledger", "a task of server generation %d, which the test never started: %s", e.gen, e.line)
		} else if e.at.After(died.Add(clockSlack)) {
			r.errorf("task outlived its server", "%s after server generation %d was reaped: %s", e.at.Sub(died), e.gen, e.line)
		}
	}
	for id, s := range starts {
		if len(s) > 1 {
			r.errorf("attempt ran twice", "attempt %d started %d times: %q", id, len(s), lines(s))
		}
	}

	perRun := map[string]int{}
	for in, as := range byInstance {
		perRun[in.run]++
		n.instances++
		slices.SortFunc(as, func(a, b *engine.Attempt) int { return cmp.Compare(a.Number, b.Number) })
		for i, a := range as {
			if a.Number != i+1 {
				r.errorf("attempt numbers", "%v has attempts numbered %v, want 1..%d", in, numbers(as), len(as))
				break
			}
		}
		last := as[len(as)-1]
		for _, a := range as {
			switch {
			case a == last && a.State != engine.AttemptSucceeded:
				r.errorf("instance did not succeed", "%v: its last attempt %d (#%d) is %s: %s", in, a.Number, a.ID, a.State, a.Reason)
			case a != last && a.State != engine.AttemptLost:
				r.errorf("attempt neither succeeded nor lost", "%v: attempt %d (#%d) is %s: %s; later attempts: %v", in, a.Number, a.ID, a.State, a.Reason, numbers(as))
			case a.State == engine.AttemptLost:
				n.lost++
				switch {
				case len(ends[a.ID]) > 0:
					n.lostEnded++
				case len(starts[a.ID]) > 0:
					n.lostMidTask++
				default:
					n.lostUnstarted++
				}
			case a.State == engine.AttemptSucceeded:
				if len(starts[a.ID]) == 0 || len(ends[a.ID]) == 0 {
					r.errorf("success that did not run", "%v: attempt %d (#%d) is recorded succeeded, but the ledger has %d starts and %d ends of it", in, a.Number, a.ID, len(starts[a.ID]), len(ends[a.ID]))
				}
			}
		}
		// Nothing ran after the success: no attempt numbered higher started.
		if last.State == engine.AttemptSucceeded {
			for _, e := range ledger {
				if e.event == "start" && e.run == in.run && e.task == in.task && e.index == in.index && e.number > last.Number {
					r.errorf("task ran again after it succeeded", "%v succeeded in attempt %d (#%d), then: %s", in, last.Number, last.ID, e.line)
				}
			}
		}
	}
	for _, run := range h.runs {
		if perRun[run.ID] != instancesPerRun && run.State == engine.RunSucceeded {
			r.errorf("run record", "run %s succeeded with %d task instances, want %d", run.ID, perRun[run.ID], instancesPerRun)
		}
	}
	return n
}

// minShare is the least share of the attempts that each server replica's
// agent runs when nothing is killed: the agents claim from one queue, and
// each is woken when another replica queues work.
const minShare = 0.1

// checkCalm checks a workload without kills: every trigger made one run,
// every task instance ran exactly once, and with more than one server replica
// the work was spread over them: each acknowledged triggers, each agent ran
// attempts, and each run was read back at once from a replica other than the
// one that acknowledged it.
func checkCalm(t *testing.T, c *cluster, h *history, n counts, acked int) {
	t.Helper()
	r := &reporter{t: t}
	servers := len(c.servers)
	if len(h.runs) != acked {
		r.errorf("no kills", "the store has %d runs for %d triggers", len(h.runs), acked)
	}
	if n.attempts != n.instances || n.lost != 0 {
		r.errorf("no kills", "%d attempts for %d task instances, %d lost: want one attempt each", n.attempts, n.instances, n.lost)
	}
	if len(h.agents) != servers {
		r.errorf("no kills", "%d agents registered, want one a server: %d", len(h.agents), servers)
	}
	ran := map[string]int{}
	for _, as := range h.attempts {
		for _, a := range as {
			ran[a.Agent]++
		}
	}
	for _, ag := range h.agents {
		if share := float64(ran[ag.ID]) / float64(max(n.attempts, 1)); share < minShare {
			r.errorf("work not spread", "agent %s ran %d of %d attempts (%.0f%%), want at least %.0f%% of them: %v",
				ag.ID, ran[ag.ID], n.attempts, 100*share, 100*minShare, ran)
		}
	}
	if servers < 2 {
		return
	}
	for i := range c.stats.acked {
		if got := c.stats.acked[i].Load(); float64(got) < minShare*float64(acked) {
			r.errorf("work not spread", "server replica %d acknowledged %d of %d triggers", i, got, acked)
		}
	}
	if got := c.stats.seenElsewhere.Load(); got != int64(acked) {
		r.errorf("work not spread", "%d of %d runs were read back from a replica other than the one that acknowledged them, want all", got, acked)
	}
}

func numbers(as []*engine.Attempt) []string {
	out := make([]string, len(as))
	for i, a := range as {
		out[i] = fmt.Sprintf("%d:%s", a.Number, a.State)
	}
	return out
}

func lines(es []entry) string {
	out := make([]string, len(es))
	for i, e := range es {
		out[i] = e.line
	}
	return strings.Join(out, " | ")
}

// diagnose logs what a run that did not end waits for: its attempts and the
// agents, read from the store while the processes still run.
func diagnose(t *testing.T, ctx context.Context, c *cluster, open func(context.Context) (store.Store, error)) {
	st, err := open(ctx)
	if err != nil {
		t.Logf("diagnose: open the store: %v", err)
		return
	}
	defer st.Close()
	h, err := readHistory(ctx, st)
	if err != nil {
		t.Logf("diagnose: %v", err)
		return
	}
	agentState := map[string]string{}
	for _, ag := range h.agents {
		agentState[ag.ID] = ag.State
	}
	shown := 0
	for _, run := range h.runs {
		if run.State.Final() || shown == 5 {
			continue
		}
		shown++
		var b strings.Builder
		fmt.Fprintf(&b, "run %s is %s (%s), created %s, started %s, %d tasks unfinished; tasks:", run.ID, run.State, run.Reason,
			run.CreatedAt.Format(time.RFC3339Nano), run.StartedAt.Format(time.RFC3339Nano), run.Unfinished)
		for _, task := range h.tasks[run.ID] {
			fmt.Fprintf(&b, "\n  %s %s (%s) attempts=%d next=%d active=%d succeeded=%d failed=%d", task.Name, task.State, task.Reason,
				task.Attempts, task.Next, task.Active, task.Succeeded, task.Failed)
		}
		fmt.Fprintf(&b, "\nattempts:")
		for _, a := range h.attempts[run.ID] {
			fmt.Fprintf(&b, "\n  #%d %s[%d] %d %s agent=%q (%s) not_before=%s reason=%q", a.ID, a.Task, a.Index, a.Number, a.State,
				a.Agent, agentState[a.Agent], a.NotBefore.Format(time.RFC3339Nano), a.Reason)
		}
		t.Log(b.String())
	}
	var b strings.Builder
	fmt.Fprintf(&b, "agents:")
	for _, ag := range h.agents {
		fmt.Fprintf(&b, "\n  %s pid %d %s heartbeat %s", ag.ID, ag.PID, ag.State, ag.HeartbeatAt.Format(time.RFC3339Nano))
	}
	t.Log(b.String())
	// What the processes do: SIGQUIT makes a Go program print every
	// goroutine's stack and exit.
	for _, p := range append(c.currentServers(), c.currentScheduler()) {
		p.killed.Store(true)
		_ = p.cmd.Process.Signal(syscall.SIGQUIT)
		select {
		case <-p.logDone:
		case <-time.After(10 * time.Second):
		}
		t.Logf("dray %s (generation %d), after SIGQUIT:\n%s", p.role, p.gen, tail(p.log, 600))
	}
}
