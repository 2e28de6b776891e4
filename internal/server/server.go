// Package server is dray's HTTP API: JSON under /api/v1, described by the
// OpenAPI document in openapi.yaml (served at /api/v1/openapi.json), with
// /healthz, /readyz and Prometheus /metrics. Handlers are thin: they
// authenticate the caller (package auth), check the route's role, decode the
// request and call the control plane, the scheduler or auth.
package server

import (
	"context"
	"log/slog"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/dray-dev/dray/internal/auth"
	"github.com/dray-dev/dray/internal/control"
	"github.com/dray-dev/dray/internal/project"
	"github.com/dray-dev/dray/internal/scheduler"
	"github.com/dray-dev/dray/internal/store"
)

// Config holds a Server's dependencies.
type Config struct {
	Store     store.Store
	Control   *control.Service
	Auth      *auth.Service
	Project   *project.Watcher
	Scheduler *scheduler.Scheduler
	Logger    *slog.Logger
	// Secure marks session cookies Secure (the server is behind TLS).
	Secure bool
	// Registry is where the server's metrics go (default: a new registry
	// with the Go and process collectors).
	Registry *prometheus.Registry
	// Version is dray's version, for /healthz.
	Version string
	// LogPoll is how often a followed log looks for new lines (default
	// 200ms).
	LogPoll time.Duration
}

// Server serves the API. It is an http.Handler.
type Server struct {
	cfg     Config
	log     *slog.Logger
	mux     *http.ServeMux
	routes  []*route
	metrics *metrics
	// stop ends when Stop is called: long polls answer at once.
	stop    context.Context
	stopped context.CancelFunc
}

// Stop makes waiting long polls (agents' claims and heartbeats) answer at
// once, so that a shutdown does not wait for them. Call it before
// http.Server.Shutdown.
func (s *Server) Stop() { s.stopped() }

// New returns a Server with every route registered.
func New(cfg Config) *Server {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.LogPoll <= 0 {
		cfg.LogPoll = 200 * time.Millisecond
	}
	s := &Server{cfg: cfg, log: cfg.Logger, mux: http.NewServeMux()}
	s.stop, s.stopped = context.WithCancel(context.Background())
	s.metrics = newMetrics(s, cfg.Registry)
	s.register()
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, r, s.log, errorf(http.StatusNotFound, codeNotFound, "no route %s %s: see /api/v1/openapi.json", r.Method, r.URL.Path))
	})
	return s
}

// ServeHTTP serves a request.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// Route is a registered route, for tests and the OpenAPI check.
type Route struct {
	Method string
	Path   string
	Role   string // an auth role, "any" (authenticated) or "none"
}

// Routes lists the registered routes.
func (s *Server) Routes() []Route {
	out := make([]Route, len(s.routes))
	for i, r := range s.routes {
		out[i] = Route{Method: r.method, Path: r.path, Role: r.role}
	}
	return out
}

// ready checks the store.
func (s *Server) ready(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	return s.cfg.Store.Ping(ctx)
}
