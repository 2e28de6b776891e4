package server

import (
	"net/http"

	"github.com/dray-dev/dray/internal/auth"
	"github.com/dray-dev/dray/internal/control"
)

// register adds every route. The OpenAPI document lists the same routes with
// the same roles; TestOpenAPIMatchesRoutes keeps the two in step.
func (s *Server) register() {
	viewer, operator, admin := string(auth.RoleViewer), string(auth.RoleOperator), string(auth.RoleAdmin)
	agent := string(auth.RoleAgent)

	s.handle("GET", "/healthz", roleNone, s.healthz)
	s.handle("GET", "/readyz", roleNone, s.readyz)
	s.handle("GET", "/metrics", viewer, s.metricsHandler)
	s.handle("GET", "/api/v1/openapi.json", viewer, s.openapi)

	s.handle("POST", "/api/v1/auth/login", roleNone, s.login)
	s.handle("POST", "/api/v1/auth/logout", roleAny, s.logout)
	s.handle("GET", "/api/v1/auth/me", roleAny, s.me)

	s.handle("GET", "/api/v1/pipelines", viewer, s.listPipelines)
	s.handle("GET", "/api/v1/pipelines/{name}", viewer, s.getPipeline)

	s.handle("GET", "/api/v1/runs", viewer, s.listRuns)
	s.handle("POST", "/api/v1/runs", operator, s.trigger)
	s.handle("GET", "/api/v1/runs/{id}", viewer, s.getRun)
	s.handle("POST", "/api/v1/runs/{id}/cancel", operator, s.cancel)
	s.handle("POST", "/api/v1/runs/{id}/retry", operator, s.retry)
	s.handle("GET", "/api/v1/runs/{id}/attempts", viewer, s.listAttempts)
	s.handle("GET", "/api/v1/runs/{id}/logs", viewer, s.runLogs)
	s.handle("GET", "/api/v1/attempts/{id}/logs", viewer, s.attemptLogs)

	s.handle("GET", "/api/v1/schedules", viewer, s.listSchedules)
	s.handle("POST", "/api/v1/schedules/{name}/pause", operator, s.pauseSchedule)
	s.handle("POST", "/api/v1/schedules/{name}/resume", operator, s.resumeSchedule)
	s.handle("POST", "/api/v1/backfills", operator, s.backfill)

	s.handle("GET", "/api/v1/agents", viewer, s.listAgents)
	s.handle("POST", "/api/v1/agents/{id}/cordon", admin, s.setAgentState(control.AgentCordoned, "agent.cordon"))
	s.handle("POST", "/api/v1/agents/{id}/uncordon", admin, s.setAgentState(control.AgentActive, "agent.uncordon"))
	s.handle("POST", "/api/v1/agents/{id}/drain", admin, s.setAgentState(control.AgentDraining, "agent.drain"))

	// The agent protocol (role agent only).
	s.handle("POST", "/api/v1/agent/register", agent, s.agentRegister)
	s.handle("POST", "/api/v1/agent/claim", agent, s.agentClaim)
	s.handle("POST", "/api/v1/agent/heartbeat", agent, s.agentHeartbeat)
	s.handle("POST", "/api/v1/agent/deregister", agent, s.agentDeregister)
	s.handle("POST", "/api/v1/agent/attempts/{id}/started", agent, s.agentStarted)
	s.handle("POST", "/api/v1/agent/attempts/{id}/logs", agent, s.agentLogs)
	s.handle("POST", "/api/v1/agent/attempts/{id}/finish", agent, s.agentFinish)

	s.handle("GET", "/api/v1/users", admin, s.listUsers)
	s.handle("POST", "/api/v1/users", admin, s.createUser)
	s.handle("DELETE", "/api/v1/users/{name}", admin, s.deleteUser)
	s.handle("GET", "/api/v1/tokens", admin, s.listTokens)
	s.handle("POST", "/api/v1/tokens", admin, s.createToken)
	s.handle("DELETE", "/api/v1/tokens/{id}", admin, s.revokeToken)
	s.handle("GET", "/api/v1/audit", admin, s.listAudit)
}

func (s *Server) healthz(w http.ResponseWriter, r *http.Request, _ *auth.Principal) error {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok", "version": s.cfg.Version})
	return nil
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request, _ *auth.Principal) error {
	if err := s.ready(r.Context()); err != nil {
		s.metrics.ready.Set(0)
		return errorf(http.StatusServiceUnavailable, codeNotReady, "the store does not answer: %v", err)
	}
	s.metrics.ready.Set(1)
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
	return nil
}
