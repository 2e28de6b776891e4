package multihost

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/dray-dev/dray/internal/api"
	"github.com/dray-dev/dray/internal/dockertest"
)

// projectFiles is the server's project: the files by path. Docker tasks
// run the busybox image, which is never pulled (there is no registry).
func projectFiles(busybox string) map[string]string {
	// count prints "$DRAY_TASK 1" … "$DRAY_TASK 30", one line every 0.1s.
	const count = `
      i=1
      while [ $i -le 30 ]; do echo "$DRAY_TASK $i"; i=$((i + 1)); sleep 0.1; done`
	return map[string]string{
		"dray.yaml": `version: 1
project: multihost
executors:
  docker:
    type: docker
    pull: never
`,
		// on_gpu needs agent B's label, in_container its docker executor.
		"pipelines/routed.yaml": fmt.Sprintf(`version: 1
name: routed
tasks:
  - {name: anywhere, run: "echo anywhere"}
  - {name: on_gpu, labels: [gpu], run: "echo on gpu"}
  - name: in_container
    image: %s
    command: [echo, in a container]
`, busybox),
		"pipelines/tpu.yaml": `version: 1
name: tpu
tasks:
  - {name: needs_tpu, labels: [tpu], run: "echo never"}
`,
		// Either agent may run long. Its first attempt sleeps until the
		// agent running it is killed; the retry ends at once, so the test
		// does not wait for a second long sleep.
		"pipelines/long.yaml": `version: 1
name: long
tasks:
  - name: long
    labels: [eu]
    retries: 2
    retry_delay: 1s
    run: |
      echo "attempt $DRAY_ATTEMPT"
      if [ "$DRAY_ATTEMPT" = 1 ]; then sleep 120; fi
      echo done
`,
		// chatty runs on agent B (gpu) and prints 3000 lines over about 6s.
		"pipelines/chatty.yaml": `version: 1
name: chatty
tasks:
  - name: chatty
    labels: [gpu]
    run: |
      i=1
      while [ $i -le 3000 ]; do
        echo "line $i"
        if [ $((i % 50)) -eq 0 ]; then sleep 0.1; fi
        i=$((i + 1))
      done
`,
		// steady keeps both agents busy for a few seconds, in two steps.
		"pipelines/steady.yaml": `version: 1
name: steady
tasks:
  - name: a
    labels: [eu]
    run: |` + count + `
  - name: b
    labels: [gpu]
    run: |` + count + `
  - name: c
    needs: [a, b]
    run: |` + count + `
  - name: d
    needs: [a]
    run: |` + count + `
`,
		// boxed is a docker task (only agent B runs them) that prints 80
		// lines over about 8s.
		"pipelines/boxed.yaml": fmt.Sprintf(`version: 1
name: boxed
tasks:
  - name: boxed
    image: %s
    command:
      - sh
      - -c
      - |
        i=1
        while [ $i -le 80 ]; do echo "line $i"; i=$((i + 1)); sleep 0.1; done
`, busybox),
	}
}

// TestMultiHost runs a server and two agents as containers on a private
// network, as on three hosts, and checks routing and what happens when an
// agent is killed, cut off the network or restarted, and when the server
// restarts. The cases share one cluster (it takes a while to start); each
// leaves both agents active for the next.
func TestMultiHost(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a cluster of containers: not in -short mode")
	}
	dockertest.Require(t)
	c := startCluster(t)
	for _, tc := range []struct {
		name string
		test func(*testing.T, *cluster)
	}{
		{"routing", testRouting},
		{"kill-agent", testKillAgent},
		{"disconnect-agent", testDisconnectAgent},
		{"restart-server", testRestartServer},
		{"server-down-past-lease", testServerDownPastLease},
		{"restart-agent-reattach", testRestartAgent},
	} {
		if !t.Run(tc.name, func(t *testing.T) { tc.test(t, c) }) {
			// The cluster may be left in a state the next cases do not
			// expect (an agent down): their failures would say nothing.
			break
		}
	}
}

// testRouting: a task goes to an agent that has its labels and its
// executor; a task whose label no agent has waits, and says why.
func testRouting(t *testing.T, c *cluster) {
	run := c.trigger(t, "routed")
	if rec := c.waitRun(t, run, 60*time.Second); rec.State != "succeeded" {
		t.Fatalf("run routed: %s", describeRun(rec))
	}
	atts := c.attempts(t, run, "")
	want := map[string]string{"anywhere": "", "on_gpu": c.agentB, "in_container": c.agentB}
	for _, a := range atts {
		w, ok := want[a.Task]
		switch {
		case !ok || a.Number != 1:
			t.Errorf("unexpected attempt: %s", describeAttempts([]api.Attempt{a}))
		case w != "" && a.Agent != w:
			t.Errorf("task %s ran on %s, want %s (the only agent with its labels and executor)", a.Task, a.Agent, w)
		case a.Agent != c.agentA && a.Agent != c.agentB:
			t.Errorf("task %s ran on %q, not on one of the agents", a.Task, a.Agent)
		}
		delete(want, a.Task)
	}
	if len(want) > 0 {
		t.Errorf("tasks without an attempt: %v", want)
	}
	if lines := c.taskLog(t, run, "in_container"); len(lines) != 1 || lines[0].Text != "in a container" {
		t.Errorf("log of in_container: %v, want the one line the container printed", lines)
	}

	run = c.trigger(t, "tpu")
	waitFor(t, 30*time.Second, "task needs_tpu to say what it waits for", func() (bool, error) {
		rec, err := c.api.Run(t.Context(), run)
		if err != nil {
			return false, err
		}
		tr := rec.Tasks[0]
		if !strings.Contains(tr.Waiting, "labels tpu") || !strings.Contains(tr.Waiting, c.agentB+" lacks label tpu") {
			return false, fmt.Errorf("run: %s", describeRun(rec))
		}
		return true, nil
	})
	for _, a := range c.attempts(t, run, "needs_tpu") {
		if a.Agent != "" || a.State != "queued" {
			t.Errorf("needs_tpu was claimed: %s", describeAttempts([]api.Attempt{a}))
		}
	}
	if _, err := c.api.Cancel(t.Context(), run, false); err != nil {
		t.Fatalf("cancel run tpu: %v", err)
	}
	if rec := c.waitRun(t, run, 30*time.Second); rec.State != "canceled" {
		t.Errorf("run tpu after cancel: %s", describeRun(rec))
	}
}

// testKillAgent: `docker kill` of the agent that runs a task. Once the agent
// lease has passed, its attempt is lost and the other agent runs the retry.
func testKillAgent(t *testing.T, c *cluster) {
	run := c.trigger(t, "long")
	first := c.waitRunning(t, run, "long", 1)
	victim, other := first.Agent, c.agentA
	if victim == c.agentA {
		other = c.agentB
	}
	killed := time.Now()
	c.kill(t, victim)
	rec := c.waitRun(t, run, 90*time.Second)
	t.Logf("the run ended %s after the kill", time.Since(killed).Round(100*time.Millisecond))
	atts := c.attempts(t, run, "long")
	if rec.State != "succeeded" || len(atts) != 2 {
		t.Fatalf("run long: %s\nattempts:%s", describeRun(rec), describeAttempts(atts))
	}
	if a := atts[0]; a.State != "lost" || a.Agent != victim || !strings.Contains(a.Reason, victim) {
		t.Errorf("first attempt: %s; want lost on %s, for a reason that names it", describeAttempts(atts[:1]), victim)
	}
	if a := atts[1]; a.State != "succeeded" || a.Agent != other {
		t.Errorf("second attempt: %s; want succeeded on %s", describeAttempts(atts[1:]), other)
	}
	checkLines(t, "long", c.taskLog(t, run, "long")[1:], 2, []string{"attempt 2", "done"})

	// The killed agent comes back under its name for the next cases.
	back := time.Now()
	c.start(t, victim)
	c.waitAgents(t, back, victim)
}

// testDisconnectAgent: an agent cut off the network for longer than a log
// batch (200ms) and its poll (1s), but less than its lease, while its task
// prints steadily. Once it is back, the task has run once and its log holds
// every line once, in order.
func testDisconnectAgent(t *testing.T, c *cluster) {
	run := c.trigger(t, "chatty")
	att := c.waitRunning(t, run, "chatty", 1)
	c.disconnect(t, c.agentB)
	// The outage lasts 2s: a deliberate length of time, not a wait for
	// something to happen. Meanwhile no line reaches the server, or the
	// agent was not cut off (a batch on its way may still land at first).
	time.Sleep(500 * time.Millisecond)
	before := c.logged(t, att.ID)
	time.Sleep(1500 * time.Millisecond)
	during := c.logged(t, att.ID)
	c.connect(t, c.agentB)
	back := time.Now()
	if during != before {
		t.Errorf("the server got lines %d to %d while agent %s was cut off: was it?", before+1, during, c.agentB)
	}
	rec := c.waitRun(t, run, 90*time.Second)
	atts := c.attempts(t, run, "chatty")
	if rec.State != "succeeded" || len(atts) != 1 || atts[0].Agent != c.agentB {
		t.Fatalf("run chatty: %s\nattempts:%s\nwant one attempt, on %s", describeRun(rec), describeAttempts(atts), c.agentB)
	}
	if atts[0].Ended == nil || atts[0].Ended.Before(back) {
		t.Errorf("the task ended at %v, before the agent was back (%v): the outage did not hit it mid-task", atts[0].Ended, back)
	}
	checkLines(t, "chatty", c.taskLog(t, run, "chatty"), 1, numbered("line", 3000))
	c.waitAgents(t, time.Time{}, c.agentA, c.agentB)
}

// testRestartServer: `docker restart` of the server while both agents run
// tasks. The agents carry on; the run succeeds with every task run once and
// every log line kept.
func testRestartServer(t *testing.T, c *cluster) {
	run := c.trigger(t, "steady")
	c.waitRunning(t, run, "a", 1)
	c.waitRunning(t, run, "b", 1)
	restarted := time.Now()
	c.restart(t, c.server, 10)
	c.waitServer(t, c.adminToken) // its published port may have changed
	t.Logf("the server answered again %s after the restart began", time.Since(restarted).Round(100*time.Millisecond))
	steadyOnce(t, c, run)
}

// testServerDownPastLease: the server is killed and stays down for longer
// than the agents' lease while they run tasks. They keep running, keep their
// results and log lines, and hand them in when it is back; the server does
// not hold its own downtime against them, so nothing runs twice.
func testServerDownPastLease(t *testing.T, c *cluster) {
	run := c.trigger(t, "steady")
	c.waitRunning(t, run, "a", 1)
	c.waitRunning(t, run, "b", 1)
	c.kill(t, c.server)
	time.Sleep(lease + 3*time.Second)
	c.start(t, c.server)
	c.waitServer(t, c.adminToken)
	steadyOnce(t, c, run)
}

// steadyOnce checks that a run of steady succeeded with one attempt of each
// task and every line of each log, once, and waits for both agents.
func steadyOnce(t *testing.T, c *cluster, run string) {
	t.Helper()
	rec := c.waitRun(t, run, 90*time.Second)
	atts := c.attempts(t, run, "")
	if rec.State != "succeeded" {
		t.Fatalf("run steady: %s\nattempts:%s", describeRun(rec), describeAttempts(atts))
	}
	for _, task := range []string{"a", "b", "c", "d"} {
		n := 0
		for _, a := range atts {
			if a.Task == task {
				n++
			}
		}
		if n != 1 {
			t.Errorf("task %s has %d attempts, want 1 (nothing is lost or run twice):%s", task, n, describeAttempts(atts))
			continue
		}
		checkLines(t, task, c.taskLog(t, run, task), 1, numbered(task, 30))
	}
	c.waitAgents(t, time.Time{}, c.agentA, c.agentB)
}

// testRestartAgent: `docker restart` of agent B while it runs a docker task.
// The agent's new process has the same --name, so it gets the attempt back
// from the server and re-attaches to the task's container: the task runs
// once and its log holds every line once.
func testRestartAgent(t *testing.T, c *cluster) {
	run := c.trigger(t, "boxed")
	att := c.waitRunning(t, run, "boxed", 10)
	if att.Agent != c.agentB {
		t.Fatalf("boxed runs on %s, want %s", att.Agent, c.agentB)
	}
	restarted := time.Now()
	// No grace: SIGKILL at once, as a crash. With one, the agent would
	// spend it waiting for the task to end (its --grace), and there would
	// be nothing to re-attach to.
	c.restart(t, c.agentB, 0)
	rec := c.waitRun(t, run, 90*time.Second)
	atts := c.attempts(t, run, "boxed")
	if rec.State != "succeeded" || len(atts) != 1 || atts[0].Agent != c.agentB {
		t.Fatalf("run boxed: %s\nattempts:%s\nwant one attempt, on %s", describeRun(rec), describeAttempts(atts), c.agentB)
	}
	checkLines(t, "boxed", c.taskLog(t, run, "boxed"), 1, numbered("line", 80))
	log, err := c.containerLog(t.Context(), c.agentB, restarted)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(log, "re-attached to an attempt after a restart") {
		t.Errorf("agent %s did not say it re-attached to the task:\n%s", c.agentB, log)
	}
	c.waitAgents(t, restarted, c.agentB)
}
