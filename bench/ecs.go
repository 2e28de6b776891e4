package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ecs"
	"github.com/moby/moby/client"

	"github.com/dray-dev/dray/internal/awsfake"
)

// The ECS benchmark (issue 7): many concurrent Fargate attempts through
// `dray server --no-agent` and one `dray agent --executors ecs` against the
// ECS and CloudWatch Logs fake (internal/awsfake, in this process; its tasks
// run as containers on the local Docker engine), with 30% of the ECS calls
// throttled.

// ecsRunTaskRate is the executor's RunTask rate per region (ecs.Config's
// default), which the measured rate is compared with.
const ecsRunTaskRate = 20

const ecsProject = `version: 1
project: bench
executors:
  fargate:
    type: ecs
    region: us-east-1
    cluster: bench
    task_definition: bench
    subnets: [subnet-1]
`

// ecsPipeline runs n tasks that sleep for sleep seconds, and probes that
// print a line a second for the log latency.
const ecsPipeline = `version: 1
name: fargate
defaults: { executor: fargate }
tasks:
  - name: work
    for_each: ${{ 0..%d }}
    max_parallel: %d
    run: 'sleep %d; echo done'
  - name: probe
    for_each: ${{ 0..2 }}
    run: 'i=1; while [ $i -le 10 ]; do echo "probe $i"; i=$((i+1)); sleep 1; done'
`

func (h *harness) ecsBench(ctx context.Context) *result {
	n, sleep := h.sz.ecsTasks, h.sz.ecsSleep
	measured := fmt.Sprintf("%s attempts of an ecs profile at once (a for_each, max_parallel %s, tasks `sleep %d`) and 3 log probes, through `dray server --no-agent` on SQLite and one `dray agent --executors ecs` (capacity %d), against the in-repo ECS + CloudWatch Logs fake whose tasks are containers on the local Docker engine, with 30%% of ECS calls answered ThrottlingException. RunTask calls/s (all calls, throttled ones too) next to the executor's 20/s; DescribeTasks calls/min next to running tasks / 100 per 2 s poll; the agent's CPU and peak RSS; log latency = when the harness first reads a probe line through the API − the line's time in the container's log",
		count(n), count(n), sleep, n+10)
	target := "all succeed; RunTask ≤ 20/s; log latency median < 2 s"
	image, err := busyboxImage(ctx, h.tmp)
	if err != nil {
		return &result{Measured: measured, Figure: "no Docker engine or no static busybox: " + firstLine(err.Error()), Target: target, Verdict: "SKIP"}
	}
	docker, err := client.New(client.FromEnv)
	if err != nil {
		return failed(measured, err)
	}
	defer docker.Close()
	fake := awsfake.New(awsfake.Config{Docker: docker, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Images: map[string]string{"busybox": image}})
	hs := httptest.NewServer(fake)
	defer func() {
		hs.Close()
		fake.Close()
	}()
	if err := ecsSetup(ctx, hs.URL); err != nil {
		return failed(measured, err)
	}

	s, err := h.startProject(ctx, "ecs", map[string]string{"dray.yaml": ecsProject, "pipelines/fargate.yaml": fmt.Sprintf(ecsPipeline, n-1, n, sleep)}, sqliteStore, false, 4, "--no-agent")
	if err != nil {
		return failed(measured, err)
	}
	defer s.close()
	env := []string{"AWS_ENDPOINT_URL=" + hs.URL, "AWS_REGION=" + awsfake.Region, "AWS_ACCESS_KEY_ID=AKID", "AWS_SECRET_ACCESS_KEY=SECRET", "AWS_EC2_METADATA_DISABLED=true"}
	agents, err := h.startAgentsOf(ctx, s, "aws", 1, n+10, "ecs", env)
	if err != nil {
		return failed(measured, err)
	}
	defer stopAgents(agents)
	agentPID := agents[0].cmd.Process.Pid
	fake.SetFaults(awsfake.Faults{ThrottleRate: 0.3})

	t0 := time.Now()
	run, err := s.api.trigger(ctx, "fargate")
	if err != nil {
		return failed(measured, err)
	}
	// Sample the fake's call counts and the agent while the run goes on,
	// and follow the probes' logs.
	type point struct {
		at              time.Duration
		runs, describes int
	}
	var (
		mu        sync.Mutex
		points    []point
		latencies []time.Duration
		peakRSS   int64
	)
	sctx, stopSampling := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		for {
			mu.Lock()
			points = append(points, point{time.Since(t0), fake.Calls("RunTask"), fake.Calls("DescribeTasks")})
			if ps, ok := sample(agentPID); ok {
				peakRSS = max(peakRSS, ps.HWM)
			}
			mu.Unlock()
			select {
			case <-sctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	go func() {
		defer wg.Done()
		lat := followProbes(sctx, s.api, run.ID)
		mu.Lock()
		latencies = lat
		mu.Unlock()
	}()
	startCPU, _ := sample(agentPID)
	rec, err := s.api.waitRun(ctx, run.ID, time.Second, 500*time.Millisecond, h.sz.runLimit(15*time.Minute))
	endCPU, _ := sample(agentPID)
	stopSampling()
	wg.Wait()
	if err != nil {
		// Say why: the distinct reasons of the failed attempts.
		if atts, aerr := s.api.attempts(ctx, run.ID); aerr == nil {
			reasons := map[string]int{}
			for _, a := range atts {
				if a.State == "failed" {
					reasons[a.Reason]++
				}
			}
			for r, k := range reasons {
				err = fmt.Errorf("%w; %d failed: %s", err, k, r)
			}
		}
		return failed(measured, err)
	}
	wall := time.Since(t0)
	atts, err := s.api.attempts(ctx, rec.ID)
	if err != nil {
		return failed(measured, err)
	}
	succeeded := 0
	for _, a := range atts {
		if a.State == "succeeded" {
			succeeded++
		}
	}

	// RunTask: the busiest second, and the mean from the first call to the
	// last.
	var peak float64
	first, last := -1, -1
	for i, p := range points {
		if first < 0 && p.runs > points[0].runs {
			first = i - 1
		}
		if i > 0 && p.runs > points[i-1].runs {
			last = i
		}
		for j := i; j < len(points); j++ {
			if d := points[j].at - p.at; d >= time.Second {
				peak = max(peak, float64(points[j].runs-p.runs)/d.Seconds())
				break
			}
		}
	}
	var meanRate float64
	runCalls := 0
	if first >= 0 && last > first {
		runCalls = points[last].runs - points[first].runs
		meanRate = float64(runCalls) / (points[last].at - points[first].at).Seconds()
	}
	// DescribeTasks per minute over the run, next to what one poll per 2 s
	// of every running task in batches of 100 costs.
	describes := points[len(points)-1].describes - points[0].describes
	perMin := float64(describes) / wall.Minutes()
	expected := float64((n+3+99)/100) * 30
	cpu := (endCPU.User + endCPU.Sys) - (startCPU.User + startCPU.Sys)

	slices.Sort(latencies)
	latMedian, latMax := time.Duration(-1), time.Duration(-1)
	if len(latencies) > 0 {
		latMedian, latMax = latencies[len(latencies)/2], latencies[len(latencies)-1]
	}
	ok := succeeded == n+3 && peak <= ecsRunTaskRate*1.5 && latMedian >= 0 && latMedian < 2*time.Second
	figure := fmt.Sprintf("%d of %d succeeded in %.0f s; RunTask %d calls, %.1f/s mean, %.1f/s in the busiest second; DescribeTasks %.0f/min (all tasks at once in batches of 100 every 2 s: %.0f/min, before throttling's retries); agent CPU %.1f s, peak RSS %s; log latency median %.2f s, max %.2f s (%d probe lines)",
		succeeded, n+3, wall.Seconds(), runCalls, meanRate, peak, perMin, expected, cpu.Seconds(), mb(peakRSS), latMedian.Seconds(), latMax.Seconds(), len(latencies))
	return &result{Measured: measured, Target: target, Verdict: verdict(ok), Figure: figure,
		Notes: []string{"the fake has no CloudWatch delivery delay: on AWS, add its own (seconds) to the log latency"}}
}

// ecsSetup makes the cluster and task definition the benchmark runs on.
func ecsSetup(ctx context.Context, url string) error {
	api := ecs.New(ecs.Options{Region: awsfake.Region, BaseEndpoint: aws.String(url), Credentials: credentials.NewStaticCredentialsProvider("AKID", "SECRET", "")})
	if _, err := api.CreateCluster(ctx, &ecs.CreateClusterInput{ClusterName: aws.String("bench")}); err != nil {
		return fmt.Errorf("create cluster: %w", err)
	}
	_, err := api.RegisterTaskDefinition(ctx, awsfake.FargateTaskDefinition("bench", "busybox", "bench"))
	if err != nil {
		return fmt.Errorf("register task definition: %w", err)
	}
	return nil
}

// followProbes reads the probe attempts' logs through the API every 100 ms
// until ctx ends, and returns for each probe line how long after its time
// it was first read.
func followProbes(ctx context.Context, api *apiClient, runID string) []time.Duration {
	after := map[int64]int64{} // by attempt: the last seq read
	var out []time.Duration
	for {
		select {
		case <-ctx.Done():
			return out
		case <-time.After(100 * time.Millisecond):
		}
		atts, err := api.attempts(ctx, runID)
		if err != nil {
			continue
		}
		for _, a := range atts {
			if a.Task != "probe" || a.StartedAt == nil {
				continue
			}
			var page struct {
				Lines []struct {
					Seq  int64     `json:"seq"`
					Time time.Time `json:"time"`
					Text string    `json:"text"`
				} `json:"lines"`
			}
			if err := api.do(ctx, http.MethodGet, fmt.Sprintf("/api/v1/attempts/%d/logs?after=%d&limit=1000", a.ID, after[a.ID]), nil, &page); err != nil {
				continue
			}
			now := time.Now()
			for _, l := range page.Lines {
				after[a.ID] = max(after[a.ID], l.Seq)
				if strings.HasPrefix(l.Text, "probe ") {
					out = append(out, now.Sub(l.Time))
				}
			}
		}
	}
}
