package server

import (
	"encoding/json"
	"net/http"
	"strconv"
	"time"

	"github.com/dray-dev/dray/internal/api"
	"github.com/dray-dev/dray/internal/auth"
	"github.com/dray-dev/dray/internal/control"
	"github.com/dray-dev/dray/internal/engine"
	"github.com/dray-dev/dray/internal/store"
)

func newMeDoc(p *auth.Principal) api.Me {
	return api.Me{Name: p.Name, Role: string(p.Role), Kind: string(p.Kind), CSRFToken: p.SessionCSRF}
}

func (s *Server) login(w http.ResponseWriter, r *http.Request, _ *auth.Principal) error {
	var req struct {
		Username string `json:"username"`
		Password string `json:"password"`
	}
	if err := decode(r, &req, false); err != nil {
		return err
	}
	if req.Username == "" || req.Password == "" {
		return &apiError{status: http.StatusBadRequest, code: codeBadRequest, param: "username", message: "username and password are required"}
	}
	res, err := s.cfg.Auth.Login(r.Context(), req.Username, req.Password, auth.ClientAddr(r))
	if err != nil {
		return err
	}
	http.SetCookie(w, auth.SessionCookie(res.Cookie, s.cfg.Secure, res.ExpiresAt))
	writeJSON(w, http.StatusOK, newMeDoc(res.Principal))
	return nil
}

func (s *Server) logout(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	if p.Kind != auth.KindUser {
		// The credentials are good: a 401 would tell the caller to get others.
		return errorf(http.StatusBadRequest, codeBadRequest, "logout ends a login session, and this request has none (it used an API token): to end a token, revoke it with DELETE /api/v1/tokens/{id}")
	}
	if err := s.cfg.Auth.Logout(r.Context(), p); err != nil {
		return err
	}
	http.SetCookie(w, auth.ClearSessionCookie(s.cfg.Secure))
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) me(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	writeJSON(w, http.StatusOK, newMeDoc(p))
	return nil
}

func (s *Server) listUsers(w http.ResponseWriter, r *http.Request, _ *auth.Principal) error {
	users, err := s.cfg.Auth.Users(r.Context())
	if err != nil {
		return err
	}
	if users == nil {
		users = []auth.UserInfo{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"users": users})
	return nil
}

func (s *Server) createUser(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	var req struct {
		Name     string `json:"name"`
		Role     string `json:"role"`
		Password string `json:"password"`
	}
	if err := decode(r, &req, false); err != nil {
		return err
	}
	role, err := auth.ParseRole(req.Role)
	if err != nil {
		return err
	}
	u, err := s.cfg.Auth.CreateUser(r.Context(), p, req.Name, role, req.Password)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, u)
	return nil
}

func (s *Server) deleteUser(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	if err := s.cfg.Auth.DeleteUser(r.Context(), p, r.PathValue("name")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) listTokens(w http.ResponseWriter, r *http.Request, _ *auth.Principal) error {
	toks, err := s.cfg.Auth.Tokens(r.Context())
	if err != nil {
		return err
	}
	if toks == nil {
		toks = []auth.TokenInfo{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"tokens": toks})
	return nil
}

func (s *Server) createToken(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	var req struct {
		Name      string `json:"name"`
		Role      string `json:"role"`
		ExpiresIn string `json:"expires_in"`
	}
	if err := decode(r, &req, false); err != nil {
		return err
	}
	role, err := auth.ParseRole(req.Role)
	if err != nil {
		return err
	}
	var ttl time.Duration
	if req.ExpiresIn != "" {
		if ttl, err = time.ParseDuration(req.ExpiresIn); err != nil || ttl <= 0 {
			return &apiError{status: http.StatusBadRequest, code: codeBadRequest, param: "expires_in", message: "expires_in " + quote(req.ExpiresIn) + ": want a positive duration such as 720h"}
		}
	}
	secret, info, err := s.cfg.Auth.CreateToken(r.Context(), p, req.Name, role, ttl)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, struct {
		auth.TokenInfo
		Token string `json:"token"`
	}{info, secret})
	return nil
}

func (s *Server) revokeToken(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	if err := s.cfg.Auth.RevokeToken(r.Context(), p, r.PathValue("id")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) listAudit(w http.ResponseWriter, r *http.Request, _ *auth.Principal) error {
	limit, err := queryInt(r, "limit", 100, 1, 500)
	if err != nil {
		return err
	}
	f := store.AuditFilter{Actor: r.URL.Query().Get("actor"), Limit: limit}
	if c := r.URL.Query().Get("cursor"); c != "" {
		if f.Before, err = strconv.ParseInt(c, 10, 64); err != nil || f.Before <= 0 {
			return &apiError{status: http.StatusBadRequest, code: codeBadRequest, param: "cursor", message: "cursor " + quote(c) + ": want the next_cursor of the previous page"}
		}
	}
	entries, next, err := s.cfg.Auth.AuditLog(r.Context(), f)
	if err != nil {
		return err
	}
	out := api.AuditList{Entries: make([]api.AuditEntry, len(entries))}
	for i, e := range entries {
		out.Entries[i] = api.AuditEntry{ID: e.ID, Time: e.Time, Actor: e.Actor, Action: e.Action, Target: e.Target, Address: e.Address}
		if e.Detail != "" {
			// Details are JSON objects (auth.Audit checks); one that is not
			// is left out rather than failing the list.
			if err := json.Unmarshal([]byte(e.Detail), &out.Entries[i].Detail); err != nil {
				s.log.Warn("audit entry detail", "id", e.ID, "err", err)
			}
		}
	}
	if next > 0 {
		out.NextCursor = strconv.FormatInt(next, 10)
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) listAgents(w http.ResponseWriter, r *http.Request, _ *auth.Principal) error {
	out := api.AgentList{Agents: []api.Agent{}}
	ctx := r.Context()
	var agents []*store.Agent
	var held []*engine.Attempt
	err := s.cfg.Store.View(ctx, func(tx store.Tx) error {
		var err error
		if agents, err = tx.Agents(ctx); err != nil {
			return err
		}
		held, err = tx.Attempts(ctx, store.AttemptFilter{States: []engine.AttemptState{engine.AttemptClaimed, engine.AttemptRunning}})
		return err
	})
	if err != nil {
		return err
	}
	running := map[string]int{}
	for _, h := range held {
		running[h.Agent]++
	}
	for _, a := range agents {
		out.Agents = append(out.Agents, agentDoc(a, running[a.ID]))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// agentDoc is an agent's document; running is how many attempts it holds.
func agentDoc(a *store.Agent, running int) api.Agent {
	if a.State == control.AgentStopped {
		running = 0
	}
	return api.Agent{
		ID: a.ID, Host: a.Host, Labels: orEmpty(a.Labels), Executors: orEmpty(a.Executors), Version: a.Version,
		Capacity: a.Capacity, State: a.State, Running: running, StartedAt: timePtr(a.StartedAt), HeartbeatAt: timePtr(a.HeartbeatAt),
	}
}
