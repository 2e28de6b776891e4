package server

import (
	"context"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/dray-dev/dray/internal/auth"
	"github.com/dray-dev/dray/internal/engine"
	"github.com/dray-dev/dray/internal/store"
)

// metrics are the server's Prometheus metrics.
type metrics struct {
	reg       *prometheus.Registry
	handler   http.Handler
	requests  *prometheus.CounterVec
	latency   *prometheus.HistogramVec
	triggered *prometheus.CounterVec
	ready     prometheus.Gauge
}

func newMetrics(s *Server, reg *prometheus.Registry) *metrics {
	if reg == nil {
		reg = prometheus.NewRegistry()
		reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	m := &metrics{
		reg: reg,
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dray_http_requests_total", Help: "HTTP requests by route and status code.",
		}, []string{"route", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "dray_http_request_duration_seconds", Help: "HTTP request latency by route (streams excluded).",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}, []string{"route"}),
		triggered: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dray_runs_triggered_total", Help: "Runs triggered through the API, by pipeline and trigger.",
		}, []string{"pipeline", "trigger"}),
		ready: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "dray_ready", Help: "1 when the last readiness check found the store answering.",
		}),
	}
	reg.MustRegister(m.requests, m.latency, m.triggered, m.ready, &stateCollector{s: s})
	m.handler = promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
	return m
}

func (m *metrics) observe(route string, code int, d time.Duration) {
	m.requests.WithLabelValues(route, strconv.Itoa(code)).Inc()
	if route != "/api/v1/runs/{id}/logs" {
		m.latency.WithLabelValues(route).Observe(d.Seconds())
	}
}

func (s *Server) metricsHandler(w http.ResponseWriter, r *http.Request, _ *auth.Principal) error {
	s.metrics.handler.ServeHTTP(w, r)
	return nil
}

// stateCollector reads gauges from the store at scrape time.
type stateCollector struct{ s *Server }

var (
	descAgents        = prometheus.NewDesc("dray_agents", "Agents by state.", []string{"state"}, nil)
	descActiveRuns    = prometheus.NewDesc("dray_runs_active", "Runs queued or running, by state.", []string{"state"}, nil)
	descProjectErrors = prometheus.NewDesc("dray_project_errors", "Validation errors of the project folder as last loaded.", nil, nil)
	descPipelines     = prometheus.NewDesc("dray_pipelines", "Pipelines in use.", nil, nil)
)

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descAgents
	ch <- descActiveRuns
	ch <- descProjectErrors
	ch <- descPipelines
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	if snap := c.s.cfg.Project.Current(); snap != nil {
		ch <- prometheus.MustNewConstMetric(descProjectErrors, prometheus.GaugeValue, float64(len(snap.Errors)))
		ch <- prometheus.MustNewConstMetric(descPipelines, prometheus.GaugeValue, float64(len(snap.Pipelines)))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	err := c.s.cfg.Store.View(ctx, func(tx store.Tx) error {
		agents, err := tx.Agents(ctx)
		if err != nil {
			return err
		}
		byState := map[string]int{}
		for _, a := range agents {
			byState[a.State]++
		}
		for st, n := range byState {
			ch <- prometheus.MustNewConstMetric(descAgents, prometheus.GaugeValue, float64(n), st)
		}
		for _, st := range []engine.RunState{engine.RunQueued, engine.RunRunning} {
			runs, err := tx.Runs(ctx, store.RunFilter{States: []engine.RunState{st}, Limit: 10000})
			if err != nil {
				return err
			}
			ch <- prometheus.MustNewConstMetric(descActiveRuns, prometheus.GaugeValue, float64(len(runs)), string(st))
		}
		return nil
	})
	if err != nil {
		c.s.log.Warn("collect metrics", "err", err)
	}
}
