package ecs

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ecs"
	ecstypes "github.com/aws/aws-sdk-go-v2/service/ecs/types"
)

// Describing tasks.
const (
	describeBatch = 100 // the most tasks DescribeTasks takes
	maxPollWait   = 30 * time.Second
	// missingPolls is how many polls in a row a task may be missing before
	// its handle gives up: ECS forgets stopped tasks after about an hour.
	missingPolls = 3
)

// poller describes the tasks of one cluster that handles follow, in batches,
// so that a hundred running attempts cost one call a period rather than a
// hundred. It runs while it has handles.
type poller struct {
	e   *Executor
	key Cluster
	cli *ecs.Client

	handles map[string]*handle // by task ARN; guarded by e.mu
}

// join adds h to the poller of its cluster, starting one if none runs.
func (e *Executor) join(cli *ecs.Client, h *handle) {
	key := Cluster{Region: h.st.Region, Cluster: h.st.Cluster}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.known[key] = true
	p := e.pollers[key]
	if p == nil {
		p = &poller{e: e, key: key, cli: cli, handles: map[string]*handle{}}
		e.pollers[key] = p
		e.wg.Add(1)
		go p.run()
	}
	p.handles[h.st.Task] = h
}

// leave removes h from its poller.
func (e *Executor) leave(h *handle) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if p := e.pollers[Cluster{Region: h.st.Region, Cluster: h.st.Cluster}]; p != nil {
		delete(p.handles, h.st.Task)
	}
}

func (p *poller) run() {
	defer p.e.wg.Done()
	log := p.e.log.With("region", p.key.Region, "cluster", p.key.Cluster)
	wait := p.e.poll
	// A new handle learns its task's state after one period: RunTask has
	// just answered it.
	t := time.NewTimer(wait)
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-p.e.ctx.Done():
			return
		}
		arns := p.arns()
		if arns == nil {
			return
		}
		if err := p.describe(p.e.ctx, arns); err != nil {
			// Throttling, outages and expired credentials must not fail a
			// task: back off and ask again. What is not throttling goes
			// into the tasks' logs too, so that a user sees why they wait.
			wait = min(wait*2, maxPollWait)
			log.Warn("describe ECS tasks; trying again", "err", err, "wait", wait)
			if !transient(err) {
				p.tell(fmt.Sprintf("cannot describe the ECS task (%v); trying again, less often each time, at least every %s", err, maxPollWait))
			}
		} else {
			wait = p.e.poll
			p.tell("")
		}
		t.Reset(wait)
	}
}

// arns returns the ARNs of the handles, or nil when there are none, in which
// case the poller is removed (under the same lock join takes, so that no
// handle joins a poller that is going).
func (p *poller) arns() []string {
	p.e.mu.Lock()
	defer p.e.mu.Unlock()
	if len(p.handles) == 0 {
		delete(p.e.pollers, p.key)
		return nil
	}
	arns := make([]string, 0, len(p.handles))
	for arn := range p.handles {
		arns = append(arns, arn)
	}
	return arns
}

// tell gives every handle the poller's trouble, "" once it is over.
func (p *poller) tell(trouble string) {
	p.e.mu.Lock()
	hs := slices.Collect(maps.Values(p.handles))
	p.e.mu.Unlock()
	for _, h := range hs {
		h.setTrouble(trouble)
	}
}

func (p *poller) handle(arn string) *handle {
	p.e.mu.Lock()
	defer p.e.mu.Unlock()
	return p.handles[arn]
}

// describe describes arns in batches and tells each handle what it learned.
func (p *poller) describe(ctx context.Context, arns []string) error {
	for len(arns) > 0 {
		batch := arns[:min(len(arns), describeBatch)]
		arns = arns[len(batch):]
		out, err := p.cli.DescribeTasks(ctx, &ecs.DescribeTasksInput{Cluster: aws.String(p.key.Cluster), Tasks: batch})
		if err != nil {
			return awsError("describe tasks", err)
		}
		for _, task := range out.Tasks {
			if h := p.handle(aws.ToString(task.TaskArn)); h != nil {
				h.observe(task)
			}
		}
		for _, f := range out.Failures {
			if h := p.handle(aws.ToString(f.Arn)); h != nil {
				h.missing(aws.ToString(f.Reason))
			}
		}
	}
	return nil
}

// isStopped reports whether a task has stopped for good.
func isStopped(t *ecstypes.Task) bool { return aws.ToString(t.LastStatus) == "STOPPED" }
