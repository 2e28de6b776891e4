package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"

	"github.com/dray-dev/dray/internal/auth"
	"github.com/dray-dev/dray/internal/control"
	"github.com/dray-dev/dray/internal/engine"
	"github.com/dray-dev/dray/internal/scheduler"
	"github.com/dray-dev/dray/internal/spec"
	"github.com/dray-dev/dray/internal/store"
)

// Error codes of the API's errors.
const (
	codeBadRequest      = "bad_request"
	codeBadParam        = "bad_param"
	codeUnauthenticated = "unauthenticated"
	codeForbidden       = "forbidden"
	codeNotFound        = "not_found"
	codeConflict        = "conflict"
	codeAgentStopped    = "agent_stopped" // the agent was declared gone: register again
	codeRateLimited     = "rate_limited"
	codeNotReady        = "not_ready"
	codeInternal        = "internal"
)

// apiError is an error with its HTTP status and code.
type apiError struct {
	status  int
	code    string
	message string
	param   string
}

func (e *apiError) Error() string { return e.message }

func errorf(status int, code, format string, args ...any) *apiError {
	return &apiError{status: status, code: code, message: fmt.Sprintf(format, args...)}
}

// errorBody is the one shape of every error the API returns.
type errorBody struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
		Param   string `json:"param,omitempty"`
	} `json:"error"`
}

// classify maps an error of the layers below to its status and code.
func classify(err error) *apiError {
	var ae *apiError
	var pe *spec.ParamError
	var ie *auth.InputError
	var npe *spec.NoPipelineError
	switch {
	case errors.As(err, &ae):
		return ae
	case errors.As(err, &pe):
		return &apiError{status: http.StatusBadRequest, code: codeBadParam, message: pe.Error(), param: pe.Param}
	case errors.As(err, &ie):
		return &apiError{status: http.StatusBadRequest, code: codeBadRequest, message: ie.Message, param: ie.Field}
	case errors.As(err, &npe):
		return &apiError{status: http.StatusNotFound, code: codeNotFound, message: npe.Error()}
	case errors.Is(err, auth.ErrUnauthenticated):
		return &apiError{status: http.StatusUnauthorized, code: codeUnauthenticated, message: err.Error()}
	case errors.Is(err, auth.ErrForbidden):
		return &apiError{status: http.StatusForbidden, code: codeForbidden, message: err.Error()}
	case errors.Is(err, auth.ErrRateLimited):
		return &apiError{status: http.StatusTooManyRequests, code: codeRateLimited, message: err.Error()}
	case errors.Is(err, auth.ErrExists), errors.Is(err, auth.ErrLastAdmin),
		errors.Is(err, engine.ErrRunEnded), errors.Is(err, engine.ErrNothingToRetry):
		return &apiError{status: http.StatusConflict, code: codeConflict, message: err.Error()}
	case errors.Is(err, store.ErrNotFound):
		return &apiError{status: http.StatusNotFound, code: codeNotFound, message: err.Error()}
	case errors.Is(err, store.ErrAmbiguous):
		return &apiError{status: http.StatusBadRequest, code: codeBadRequest, message: err.Error()}
	case errors.Is(err, scheduler.ErrNoSchedule), errors.Is(err, scheduler.ErrUnknownPipeline):
		return &apiError{status: http.StatusNotFound, code: codeNotFound, message: err.Error()}
	case errors.Is(err, control.ErrOtherToken):
		return &apiError{status: http.StatusForbidden, code: codeForbidden, message: err.Error()}
	case errors.Is(err, store.ErrConflict):
		return &apiError{status: http.StatusConflict, code: codeConflict, message: err.Error()}
	case errors.Is(err, control.ErrAgentStopped):
		return &apiError{status: http.StatusConflict, code: codeAgentStopped, message: err.Error()}
	case errors.Is(err, control.ErrFired):
		return &apiError{status: http.StatusConflict, code: codeConflict, message: err.Error()}
	case errors.Is(err, store.ErrLocked), errors.Is(err, store.ErrFull), errors.Is(err, context.DeadlineExceeded):
		return &apiError{status: http.StatusServiceUnavailable, code: codeNotReady, message: err.Error()}
	}
	return &apiError{status: http.StatusInternalServerError, code: codeInternal, message: err.Error()}
}

// writeError answers with the error's status and JSON body. Internal errors
// are logged.
func writeError(w http.ResponseWriter, r *http.Request, log *slog.Logger, err error) {
	ae := classify(err)
	if ae.status >= 500 {
		log.Error("request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	}
	var rl *auth.RateLimitError
	if errors.As(err, &rl) {
		w.Header().Set("Retry-After", strconv.Itoa(int(rl.RetryAfter.Seconds())+1))
	}
	var body errorBody
	body.Error.Code, body.Error.Message, body.Error.Param = ae.code, ae.message, ae.param
	writeJSON(w, ae.status, body)
}

// writeJSON answers with a JSON document.
func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	enc.Encode(v)
}
