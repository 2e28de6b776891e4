package server_test

import (
	"bytes"
	"mime"
	"net/http"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/dray-dev/dray/internal/auth"
)

// metricValue returns the value of the sample of a family with these labels.
func metricValue(t *testing.T, fams map[string]*dto.MetricFamily, name string, labels map[string]string) (float64, bool) {
	t.Helper()
	fam, ok := fams[name]
	if !ok {
		return 0, false
	}
next:
	for _, m := range fam.GetMetric() {
		have := map[string]string{}
		for _, l := range m.GetLabel() {
			have[l.GetName()] = l.GetValue()
		}
		for k, v := range labels {
			if have[k] != v {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount()), true
		}
	}
	return 0, false
}

func TestMetrics(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	viewer := f.tokens[auth.RoleViewer]
	for range 3 {
		wantJSON(t, f.get(t, "/healthz", ""), http.StatusOK, nil)
	}
	wantJSON(t, f.get(t, "/readyz", ""), http.StatusOK, nil)
	wantError(t, f.get(t, "/api/v1/runs", ""), http.StatusUnauthorized, "unauthenticated")
	wantError(t, f.get(t, "/api/v1/runs/nope", viewer), http.StatusNotFound, "not_found")
	run := f.trigger(t, f.tokens[auth.RoleOperator], map[string]any{"pipeline": "quick"})
	f.waitRun(t, run.ID, viewer)

	// Metrics need a viewer at least.
	wantError(t, f.get(t, "/metrics", ""), http.StatusUnauthorized, "unauthenticated")
	wantError(t, f.get(t, "/metrics", f.tokens[auth.RoleAgent]), http.StatusForbidden, "forbidden")
	r := f.get(t, "/metrics", viewer)
	if r.status != http.StatusOK {
		t.Fatalf("metrics: %s", r)
	}
	if mt, _, _ := mime.ParseMediaType(r.header.Get("Content-Type")); mt != "text/plain" {
		t.Errorf("metrics Content-Type %q, want text/plain (the Prometheus text format)", r.header.Get("Content-Type"))
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(bytes.NewReader(r.body))
	if err != nil {
		t.Fatalf("the metrics are not in the Prometheus text format: %v\n%s", err, r.body)
	}
	if fam := fams["dray_http_requests_total"]; fam == nil || fam.GetType() != dto.MetricType_COUNTER {
		t.Fatalf("no counter dray_http_requests_total in\n%s", r.body)
	}
	tests := []struct {
		name   string
		labels map[string]string
		want   float64 // at least
	}{
		{"dray_http_requests_total", map[string]string{"route": "/healthz", "code": "200"}, 3},
		{"dray_http_requests_total", map[string]string{"route": "/readyz", "code": "200"}, 1},
		{"dray_http_requests_total", map[string]string{"route": "/api/v1/runs", "code": "401"}, 1},
		{"dray_http_requests_total", map[string]string{"route": "/api/v1/runs/{id}", "code": "404"}, 1},
		{"dray_http_requests_total", map[string]string{"route": "/api/v1/runs", "code": "201"}, 1},
		{"dray_http_requests_total", map[string]string{"route": "/api/v1/runs/{id}/logs", "code": "200"}, 1},
		{"dray_http_requests_total", map[string]string{"route": "/metrics", "code": "403"}, 1},
		{"dray_http_request_duration_seconds", map[string]string{"route": "/healthz"}, 3},
		{"dray_runs_triggered_total", map[string]string{"pipeline": "quick", "trigger": "api"}, 1},
		{"dray_ready", nil, 1},
		{"dray_pipelines", nil, 5},
		{"dray_project_errors", nil, 0},
		{"dray_agents", map[string]string{"state": "active"}, 1},
	}
	for _, tt := range tests {
		v, ok := metricValue(t, fams, tt.name, tt.labels)
		if !ok || v < tt.want {
			t.Errorf("%s%v = %v (found %v), want at least %v", tt.name, tt.labels, v, ok, tt.want)
		}
	}
	if _, ok := metricValue(t, fams, "dray_http_request_duration_seconds", map[string]string{"route": "/api/v1/runs/{id}/logs"}); ok {
		t.Error("the latency of log streams is measured")
	}
	if v, _ := metricValue(t, fams, "dray_pipelines", nil); v != 5 {
		t.Errorf("dray_pipelines = %v, want 5", v)
	}
}

// TestStoreDown closes the store under the server: /readyz says so, and the
// API answers JSON 5xx errors.
func TestStoreDown(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	viewer := f.tokens[auth.RoleViewer]
	var body map[string]string
	wantJSON(t, f.get(t, "/healthz", ""), http.StatusOK, &body)
	wantJSON(t, f.get(t, "/readyz", ""), http.StatusOK, &body)
	if body["status"] != "ready" {
		t.Errorf("readyz: %v", body)
	}
	login := f.login(t, adminUser, adminPassword)

	f.closeStore()
	wantError(t, f.get(t, "/readyz", ""), http.StatusServiceUnavailable, "not_ready")
	// The process is alive all the same.
	wantJSON(t, f.get(t, "/healthz", ""), http.StatusOK, nil)
	for _, rq := range []req{
		{method: "GET", path: "/api/v1/runs", token: viewer},
		{method: "GET", path: "/api/v1/pipelines", token: viewer},
		{method: "GET", path: "/metrics", token: viewer},
		{method: "GET", path: "/api/v1/auth/me", cookie: login.cookie},
		{method: "POST", path: "/api/v1/runs", token: f.tokens[auth.RoleOperator], body: map[string]any{"pipeline": "quick"}},
		{method: "POST", path: "/api/v1/auth/login", body: map[string]string{"username": adminUser, "password": adminPassword}},
	} {
		r := f.send(t, rq)
		if r.status < 500 {
			t.Errorf("%s %s with the store closed: %s", rq.method, rq.path, r)
			continue
		}
		errorBody(t, r)
	}
}
