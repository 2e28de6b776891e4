package server

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/dray-dev/dray/internal/auth"
)

// Special roles of a route besides auth's.
const (
	roleNone = "none" // no credentials needed
	roleAny  = "any"  // any authenticated caller
)

// handler serves a request for an authenticated caller (nil for roleNone)
// and returns an error to answer with.
type handler func(w http.ResponseWriter, r *http.Request, p *auth.Principal) error

type route struct {
	method, path, role string
	h                  handler
}

// maxBody bounds a request body; maxAgentBody an agent's report, which
// carries up to 1 MiB of outputs or a batch of log lines (512 KiB of text,
// which JSON may escape to six times its size).
const (
	maxBody      = 1 << 20
	maxAgentBody = 8 << 20
)

// handle registers a route. Every route authenticates and checks its role
// before its handler runs: deny by default.
func (s *Server) handle(method, path, role string, h handler) {
	rt := &route{method: method, path: path, role: role, h: h}
	s.routes = append(s.routes, rt)
	s.mux.HandleFunc(method+" "+path, func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		limit := int64(maxBody)
		if role == string(auth.RoleAgent) {
			limit = maxAgentBody
		}
		r.Body = http.MaxBytesReader(sw, r.Body, limit)
		err := s.serve(sw, r, rt)
		if err != nil {
			writeError(sw, r, s.log, err)
		}
		s.metrics.observe(rt.path, sw.code(), time.Since(start))
	})
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request, rt *route) error {
	if rt.role == roleNone {
		return rt.h(w, r, nil)
	}
	p, err := s.cfg.Auth.Authenticate(r.Context(), r)
	if err != nil {
		return err
	}
	if rt.role != roleAny {
		if err := p.Require(auth.Role(rt.role)); err != nil {
			return err
		}
	}
	return rt.h(w, r, p)
}

// statusWriter remembers the status written, for metrics. It passes Flush
// through for Server-Sent Events.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *statusWriter) code() int {
	if w.status == 0 {
		return http.StatusOK
	}
	return w.status
}

// decode reads a JSON request body into v: unknown fields, wrong types,
// trailing data and an empty body (unless optional) are 400s that say what
// is wrong.
func decode(r *http.Request, v any, optional bool) error {
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if errors.Is(err, io.EOF) {
		if optional {
			return nil
		}
		return errorf(http.StatusBadRequest, codeBadRequest, "the request needs a JSON body")
	}
	if err == nil && dec.More() {
		err = errors.New("more than one JSON value")
	}
	if err == nil {
		return nil
	}
	var te *json.UnmarshalTypeError
	var se *json.SyntaxError
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &te) && te.Field == "":
		return errorf(http.StatusBadRequest, codeBadRequest, "the request body: want %s, got a JSON %s", jsonType(te.Type.Kind().String()), te.Value)
	case errors.As(err, &te):
		ae := errorf(http.StatusBadRequest, codeBadRequest, "field %s: want %s, got a JSON %s", te.Field, jsonType(te.Type.Kind().String()), te.Value)
		ae.param = te.Field
		return ae
	case errors.As(err, &se):
		return errorf(http.StatusBadRequest, codeBadRequest, "malformed JSON at byte %d: %v", se.Offset, err)
	case errors.As(err, &mbe):
		return errorf(http.StatusRequestEntityTooLarge, codeBadRequest, "the request body is larger than %d bytes", mbe.Limit)
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		field := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
		ae := errorf(http.StatusBadRequest, codeBadRequest, "unknown field %q", field)
		ae.param = field
		return ae
	}
	return errorf(http.StatusBadRequest, codeBadRequest, "malformed JSON: %v", err)
}

func jsonType(kind string) string {
	switch kind {
	case "string":
		return "a string"
	case "bool":
		return "true or false"
	case "int", "int64", "int32", "uint", "float64":
		return "a number"
	case "map", "struct":
		return "an object"
	case "slice", "array":
		return "an array"
	}
	return kind
}

// queryInt reads an integer query parameter within [lo, hi] (def when absent).
func queryInt(r *http.Request, name string, def, lo, hi int) (int, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < lo || n > hi {
		ae := errorf(http.StatusBadRequest, codeBadRequest, "query parameter %s=%q: want a whole number from %d to %d", name, v, lo, hi)
		ae.param = name
		return 0, ae
	}
	return n, nil
}

// queryBool reads a boolean query parameter.
func queryBool(r *http.Request, name string) (bool, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return false, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		ae := errorf(http.StatusBadRequest, codeBadRequest, "query parameter %s=%q: want true or false", name, v)
		ae.param = name
		return false, ae
	}
	return b, nil
}

func notFoundf(format string, args ...any) error {
	return errorf(http.StatusNotFound, codeNotFound, format, args...)
}
