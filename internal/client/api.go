package client

import (
	"context"
	"github.com/dray-dev/dray/internal/api"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/dray-dev/dray/internal/control"
)

// Healthz reports whether the server process is alive.
func (c *Client) Healthz(ctx context.Context) (*api.Status, error) {
	return do[api.Status](ctx, c, request{method: http.MethodGet, path: "/healthz"})
}

// Readyz reports whether the server's store answers; an *Error with status
// 503 when it does not.
func (c *Client) Readyz(ctx context.Context) (*api.Status, error) {
	return do[api.Status](ctx, c, request{method: http.MethodGet, path: "/readyz"})
}

// api.Me returns who the client's token belongs to.
func (c *Client) Me(ctx context.Context) (*api.Me, error) {
	return do[api.Me](ctx, c, request{method: http.MethodGet, path: "/api/v1/auth/me"})
}

// Pipelines lists the project's pipelines and its validation errors.
func (c *Client) Pipelines(ctx context.Context) (*api.PipelineList, error) {
	return do[api.PipelineList](ctx, c, request{method: http.MethodGet, path: "/api/v1/pipelines"})
}

// api.Pipeline returns one pipeline.
func (c *Client) Pipeline(ctx context.Context, name string) (*api.Pipeline, error) {
	return do[api.Pipeline](ctx, c, request{method: http.MethodGet, path: "/api/v1/pipelines/" + seg(name)})
}

// Trigger starts a run and returns its record. Bad params are an *Error with
// code bad_param and the param in Param.
func (c *Client) Trigger(ctx context.Context, req api.TriggerRequest) (*control.RunRecord, error) {
	return do[control.RunRecord](ctx, c, request{method: http.MethodPost, path: "/api/v1/runs", body: req})
}

// Runs returns a page of runs, newest first, without their tasks.
func (c *Client) Runs(ctx context.Context, f RunFilter) (*api.RunList, error) {
	q := url.Values{}
	if f.Pipeline != "" {
		q.Set("pipeline", f.Pipeline)
	}
	if len(f.States) > 0 {
		q.Set("state", strings.Join(f.States, ","))
	}
	if f.Limit > 0 {
		q.Set("limit", strconv.Itoa(f.Limit))
	}
	if f.Cursor != "" {
		q.Set("cursor", f.Cursor)
	}
	return do[api.RunList](ctx, c, request{method: http.MethodGet, path: "/api/v1/runs", query: q})
}

// Run returns a run's record. id is a run id, a unique prefix of one, or
// "last"; the record has the full id.
func (c *Client) Run(ctx context.Context, id string) (*control.RunRecord, error) {
	return do[control.RunRecord](ctx, c, request{method: http.MethodGet, path: "/api/v1/runs/" + seg(id)})
}

// Cancel asks for a run to be canceled (force: tasks with trigger always
// too) and returns its record. A run that has ended is an *Error with status
// 409.
func (c *Client) Cancel(ctx context.Context, id string, force bool) (*control.RunRecord, error) {
	body := struct {
		Force bool `json:"force"`
	}{force}
	return do[control.RunRecord](ctx, c, request{method: http.MethodPost, path: "/api/v1/runs/" + seg(id) + "/cancel", body: body})
}

// Retry runs a run's failed and unfinished tasks again (the server's agents
// run them) and returns its record. A run that cannot be retried (it
// succeeded, or has not ended) is an *Error with status 409.
func (c *Client) Retry(ctx context.Context, id string) (*control.RunRecord, error) {
	return do[control.RunRecord](ctx, c, request{method: http.MethodPost, path: "/api/v1/runs/" + seg(id) + "/retry"})
}

// Attempts lists a run's attempts in order, of one task when task is set.
func (c *Client) Attempts(ctx context.Context, runID, task string) ([]api.Attempt, error) {
	q := url.Values{}
	if task != "" {
		q.Set("task", task)
	}
	var out struct {
		Attempts []api.Attempt `json:"attempts"`
	}
	err := c.call(ctx, request{method: http.MethodGet, path: "/api/v1/runs/" + seg(runID) + "/attempts", query: q}, &out)
	return out.Attempts, err
}

// RunLogs returns the log lines of a run so far (of one task, or one attempt
// number, as opts say), attempt by attempt in task order.
func (c *Client) RunLogs(ctx context.Context, runID string, opts LogOptions) (*api.LogPage, error) {
	return do[api.LogPage](ctx, c, request{method: http.MethodGet, path: "/api/v1/runs/" + seg(runID) + "/logs", query: opts.query()})
}

func (o LogOptions) query() url.Values {
	q := url.Values{}
	if o.Task != "" {
		q.Set("task", o.Task)
	}
	if o.Attempt > 0 {
		q.Set("attempt", strconv.Itoa(o.Attempt))
	}
	return q
}

// AttemptLogs returns up to limit lines of an attempt's log with seq > after
// (limit 0: the server's default, 1000). The next page starts after Next.
func (c *Client) AttemptLogs(ctx context.Context, attemptID, after int64, limit int) (*api.LogPage, error) {
	q := url.Values{}
	if after > 0 {
		q.Set("after", strconv.FormatInt(after, 10))
	}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	path := "/api/v1/attempts/" + strconv.FormatInt(attemptID, 10) + "/logs"
	return do[api.LogPage](ctx, c, request{method: http.MethodGet, path: path, query: q})
}

// Schedules lists every pipeline schedule with its next fire time.
func (c *Client) Schedules(ctx context.Context) ([]api.Schedule, error) {
	var out struct {
		Schedules []api.Schedule `json:"schedules"`
	}
	err := c.call(ctx, request{method: http.MethodGet, path: "/api/v1/schedules"}, &out)
	return out.Schedules, err
}

// Pause pauses a pipeline's schedule.
func (c *Client) Pause(ctx context.Context, pipeline string) (*api.Schedule, error) {
	return do[api.Schedule](ctx, c, request{method: http.MethodPost, path: "/api/v1/schedules/" + seg(pipeline) + "/pause"})
}

// Resume resumes a pipeline's schedule.
func (c *Client) Resume(ctx context.Context, pipeline string) (*api.Schedule, error) {
	return do[api.Schedule](ctx, c, request{method: http.MethodPost, path: "/api/v1/schedules/" + seg(pipeline) + "/resume"})
}

// api.Backfill creates a run for every fire time of a pipeline's schedule in
// [From, To].
func (c *Client) Backfill(ctx context.Context, req api.BackfillRequest) (*api.Backfill, error) {
	return do[api.Backfill](ctx, c, request{method: http.MethodPost, path: "/api/v1/backfills", body: req})
}

// Agents lists the agents with their labels and last heartbeat.
func (c *Client) Agents(ctx context.Context) ([]api.Agent, error) {
	var out struct {
		Agents []api.Agent `json:"agents"`
	}
	err := c.call(ctx, request{method: http.MethodGet, path: "/api/v1/agents"}, &out)
	return out.Agents, err
}

// Users lists the users (admin only).
func (c *Client) Users(ctx context.Context) ([]api.User, error) {
	var out struct {
		Users []api.User `json:"users"`
	}
	err := c.call(ctx, request{method: http.MethodGet, path: "/api/v1/users"}, &out)
	return out.Users, err
}

// CreateUser creates a user (admin only); a taken name is an *Error with
// status 409.
func (c *Client) CreateUser(ctx context.Context, req api.UserRequest) (*api.User, error) {
	return do[api.User](ctx, c, request{method: http.MethodPost, path: "/api/v1/users", body: req})
}

// DeleteUser deletes a user and ends their sessions (admin only).
func (c *Client) DeleteUser(ctx context.Context, name string) error {
	return c.call(ctx, request{method: http.MethodDelete, path: "/api/v1/users/" + seg(name)}, nil)
}

// Tokens lists the API tokens, never their secrets (admin only).
func (c *Client) Tokens(ctx context.Context) ([]api.Token, error) {
	var out struct {
		Tokens []api.Token `json:"tokens"`
	}
	err := c.call(ctx, request{method: http.MethodGet, path: "/api/v1/tokens"}, &out)
	return out.Tokens, err
}

// CreateToken creates an API token (admin only); its secret is in the answer
// only.
func (c *Client) CreateToken(ctx context.Context, req api.TokenRequest) (*api.NewToken, error) {
	return do[api.NewToken](ctx, c, request{method: http.MethodPost, path: "/api/v1/tokens", body: req})
}

// RevokeToken revokes a token (admin only).
func (c *Client) RevokeToken(ctx context.Context, id string) error {
	return c.call(ctx, request{method: http.MethodDelete, path: "/api/v1/tokens/" + seg(id)}, nil)
}

// Audit returns a page of the audit log, newest first (admin only).
func (c *Client) Audit(ctx context.Context, f AuditFilter) (*api.AuditList, error) {
	q := url.Values{}
	if f.Actor != "" {
		q.Set("actor", f.Actor)
	}
	if f.Limit > 0 {
		q.Set("limit", strconv.Itoa(f.Limit))
	}
	if f.Cursor != "" {
		q.Set("cursor", f.Cursor)
	}
	return do[api.AuditList](ctx, c, request{method: http.MethodGet, path: "/api/v1/audit", query: q})
}

// do makes a call and decodes its answer into a new T.
func do[T any](ctx context.Context, c *Client, r request) (*T, error) {
	var out T
	if err := c.call(ctx, r, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// SetAgentState cordons, uncordons or drains an agent (action is cordon,
// uncordon or drain).
func (c *Client) SetAgentState(ctx context.Context, id, action string) (*api.Agent, error) {
	var out api.Agent
	err := c.call(ctx, request{method: "POST", path: "/api/v1/agents/" + url.PathEscape(id) + "/" + action}, &out)
	return &out, err
}
