package server_test

import (
	"encoding/json"
	"net/http"
	"os"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/dray-dev/dray/internal/auth"
	"github.com/dray-dev/dray/internal/server"
)

// openapiDoc is the part of the OpenAPI document the checks read.
type openapiDoc struct {
	Paths      map[string]map[string]openapiOp `yaml:"paths"`
	Components struct {
		Parameters map[string]openapiParam `yaml:"parameters"`
	} `yaml:"components"`
}

type openapiOp struct {
	OperationID string                    `yaml:"operationId"`
	Role        string                    `yaml:"x-dray-role"`
	Security    *[]map[string][]string    `yaml:"security"`
	Parameters  []openapiParam            `yaml:"parameters"`
	RequestBody map[string]any            `yaml:"requestBody"`
	Responses   map[string]map[string]any `yaml:"responses"`
}

type openapiParam struct {
	Ref    string         `yaml:"$ref"`
	Name   string         `yaml:"name"`
	In     string         `yaml:"in"`
	Schema map[string]any `yaml:"schema"`
}

func loadOpenAPI(t *testing.T) (openapiDoc, []byte) {
	t.Helper()
	data, err := os.ReadFile("openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var doc openapiDoc
	if err := yaml.Unmarshal(data, &doc); err != nil {
		t.Fatalf("openapi.yaml: %v", err)
	}
	return doc, data
}

// httpMethods are the keys of a path item that are operations.
var httpMethods = []string{"get", "put", "post", "delete", "options", "head", "patch", "trace"}

// unsafeMethod reports whether a method may change something (so a session
// needs its CSRF token for it).
func unsafeMethod(m string) bool {
	return !slices.Contains([]string{"GET", "HEAD", "OPTIONS", "TRACE"}, strings.ToUpper(m))
}

// knownRole reports whether a route role is one the server knows.
func knownRole(role string) bool {
	return role == "none" || role == "any" || auth.Role(role).Valid()
}

// TestOpenAPIMatchesRoutes keeps openapi.yaml and the route table in step:
// the same operations with the same roles, and the errors each can answer
// documented.
func TestOpenAPIMatchesRoutes(t *testing.T) {
	t.Parallel()
	doc, raw := loadOpenAPI(t)
	f := newFixture(t)
	routes := f.srv.Routes()
	if len(routes) == 0 {
		t.Fatal("no routes")
	}

	type key struct{ method, path string }
	registered := map[key]server.Route{}
	for _, r := range routes {
		k := key{strings.ToLower(r.Method), r.Path}
		if _, dup := registered[k]; dup {
			t.Errorf("route %s %s is registered twice", r.Method, r.Path)
		}
		registered[k] = r
		if !knownRole(r.Role) {
			t.Errorf("route %s %s has unknown role %q", r.Method, r.Path, r.Role)
		}
	}

	documented := map[key]openapiOp{}
	ids := map[string]bool{}
	for path, item := range doc.Paths {
		for method, op := range item {
			if !slices.Contains(httpMethods, method) {
				continue // parameters, summary, ...
			}
			documented[key{method, path}] = op
			if op.OperationID == "" || ids[op.OperationID] {
				t.Errorf("%s %s: operationId %q is empty or not unique", method, path, op.OperationID)
			}
			ids[op.OperationID] = true
		}
	}

	// Every route is documented with its role.
	for k, r := range registered {
		op, ok := documented[k]
		if !ok {
			t.Errorf("route %s %s (role %s) is not in openapi.yaml", r.Method, r.Path, r.Role)
			continue
		}
		if op.Role != r.Role {
			t.Errorf("%s %s: openapi.yaml says x-dray-role %q, the route has role %q", r.Method, r.Path, op.Role, r.Role)
		}
	}
	// Every operation is a route.
	for k, op := range documented {
		if _, ok := registered[k]; !ok {
			t.Errorf("openapi.yaml documents %s %s (%s), which is no route", strings.ToUpper(k.method), k.path, op.OperationID)
		}
	}

	pathParam := regexp.MustCompile(`\{([^}]+)\}`)
	for k, op := range documented {
		where := strings.ToUpper(k.method) + " " + k.path
		public := op.Role == "none"
		// Security: public operations say so; the others take the default.
		if public != (op.Security != nil && len(*op.Security) == 0) {
			t.Errorf("%s: x-dray-role %q but security %v: public operations (and only they) have security: []", where, op.Role, op.Security)
		}
		if !public && op.Responses["401"] == nil {
			t.Errorf("%s: needs credentials but does not document 401", where)
		}
		// 403 comes from a role that does not allow the operation, or from a
		// session's missing CSRF token on an unsafe method.
		canForbid := !public && (op.Role != "any" || unsafeMethod(k.method))
		if canForbid && op.Responses["403"] == nil {
			t.Errorf("%s: can answer 403 (role %s) but does not document it", where, op.Role)
		}
		// Bad bodies and bad integer or boolean query parameters are 400s.
		badInput := op.RequestBody != nil
		params := map[string]openapiParam{}
		for _, p := range op.Parameters {
			if p.Ref != "" {
				name := strings.TrimPrefix(p.Ref, "#/components/parameters/")
				cp, ok := doc.Components.Parameters[name]
				if !ok {
					t.Errorf("%s: parameter $ref %s is not in components", where, p.Ref)
					continue
				}
				p = cp
			}
			params[p.In+":"+p.Name] = p
			if typ, _ := p.Schema["type"].(string); p.In == "query" && (typ == "integer" || typ == "boolean") {
				badInput = true
			}
		}
		if badInput && op.Responses["400"] == nil {
			t.Errorf("%s: takes a body or typed query parameters but does not document 400", where)
		}
		// Every path parameter is described, and every described one is in the path.
		inPath := map[string]bool{}
		for _, m := range pathParam.FindAllStringSubmatch(k.path, -1) {
			inPath[m[1]] = true
			if _, ok := params["path:"+m[1]]; !ok {
				t.Errorf("%s: path parameter {%s} is not described", where, m[1])
			}
		}
		for name, p := range params {
			if p.In == "path" && !inPath[p.Name] {
				t.Errorf("%s: describes path parameter %s, which the path does not have", where, name)
			}
		}
		for code, resp := range op.Responses {
			if code[0] >= '4' {
				if ref, _ := resp["$ref"].(string); ref != "#/components/responses/Error" {
					t.Errorf("%s: response %s is not the Error response", where, code)
				}
			}
		}
	}

	// The document served equals openapi.yaml.
	var fromYAML any
	if err := yaml.Unmarshal(raw, &fromYAML); err != nil {
		t.Fatal(err)
	}
	want := jsonRoundTrip(t, fromYAML)
	served := f.get(t, "/api/v1/openapi.json", f.tokens[auth.RoleViewer])
	var got any
	wantJSON(t, served, http.StatusOK, &got)
	if !reflect.DeepEqual(got, want) {
		t.Error("GET /api/v1/openapi.json differs from openapi.yaml")
	}
	if m, _ := got.(map[string]any); m["openapi"] == nil || m["paths"] == nil {
		t.Errorf("the served document has no openapi or paths key")
	}
	fromFunc, err := server.OpenAPI()
	if err != nil {
		t.Fatal(err)
	}
	var gotFunc any
	mustUnmarshal(t, fromFunc, &gotFunc)
	if !reflect.DeepEqual(gotFunc, want) {
		t.Error("server.OpenAPI() differs from openapi.yaml")
	}
}

// jsonRoundTrip returns v as encoding/json decodes its JSON.
func jsonRoundTrip(t *testing.T, v any) any {
	t.Helper()
	data, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var out any
	mustUnmarshal(t, data, &out)
	return out
}

// sortedRoutes returns the routes in a stable order, for subtests.
func sortedRoutes(routes []server.Route) []server.Route {
	out := slices.Clone(routes)
	sort.Slice(out, func(i, j int) bool {
		if out[i].Path != out[j].Path {
			return out[i].Path < out[j].Path
		}
		return out[i].Method < out[j].Method
	})
	return out
}
