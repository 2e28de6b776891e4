package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// The remote commands against a real server are in testdata/script/remote.txtar;
// these cover what a real server does not easily show: paging and every
// kind of error answer.

// runCLI runs the command line with args and returns its exit code, stdout
// and stderr.
func runCLI(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := Main(context.Background(), args, strings.NewReader(""), &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

func TestRemoteRunsPages(t *testing.T) {
	t.Setenv("DRAY_TOKEN", "tok")
	// Five runs, served two a page whatever the limit asked.
	var asked []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/api/v1/runs" || r.Header.Get("Authorization") != "Bearer tok" {
			http.Error(w, "unexpected", http.StatusTeapot)
			return
		}
		asked = append(asked, r.URL.RawQuery)
		start := 0
		if c := r.URL.Query().Get("cursor"); c != "" {
			fmt.Sscanf(c, "r%d", &start)
			start++
		}
		var page struct {
			Runs       []map[string]any `json:"runs"`
			NextCursor string           `json:"next_cursor"`
		}
		for i := start; i < min(start+2, 5); i++ {
			page.Runs = append(page.Runs, map[string]any{"id": fmt.Sprintf("r%d", i), "pipeline": "p", "state": "succeeded", "trigger": "api", "params": map[string]any{}})
		}
		if start+2 < 5 {
			page.NextCursor = fmt.Sprintf("r%d", start+1)
		}
		json.NewEncoder(w).Encode(page)
	}))
	defer srv.Close()

	tests := []struct {
		limit string
		want  []string
		asked []string
	}{
		{"0", []string{"r0", "r1", "r2", "r3", "r4"}, []string{"limit=500", "cursor=r1&limit=500", "cursor=r3&limit=500"}},
		{"3", []string{"r0", "r1", "r2"}, []string{"limit=3", "cursor=r1&limit=1"}},
		{"2", []string{"r0", "r1"}, []string{"limit=2"}},
	}
	for _, tt := range tests {
		t.Run("limit "+tt.limit, func(t *testing.T) {
			asked = nil
			code, stdout, stderr := runCLI(t, "runs", "--server", srv.URL, "--json", "--limit", tt.limit, "--state", "succeeded")
			if code != 0 {
				t.Fatalf("exit %d: %s", code, stderr)
			}
			var runs []struct{ ID string }
			if err := json.Unmarshal([]byte(stdout), &runs); err != nil {
				t.Fatalf("stdout %q: %v", stdout, err)
			}
			var ids []string
			for _, r := range runs {
				ids = append(ids, r.ID)
			}
			if fmt.Sprint(ids) != fmt.Sprint(tt.want) {
				t.Errorf("runs %v, want %v", ids, tt.want)
			}
			for i := range asked {
				asked[i] = strings.Replace(asked[i], "&state=succeeded", "", 1)
			}
			if fmt.Sprint(asked) != fmt.Sprint(tt.asked) {
				t.Errorf("asked %q, want %q", asked, tt.asked)
			}
		})
	}
}

func TestRemoteErrors(t *testing.T) {
	tests := []struct {
		name   string
		token  string
		status int
		body   string
		code   int
		stderr string
	}{
		{"bad param", "tok", 400, `{"error":{"code":"bad_param","message":"want an integer, got \"x\"","param":"n"}}`,
			2, `dray: param n: want an integer, got "x"`},
		{"not found", "tok", 404, `{"error":{"code":"not_found","message":"no run \"zz\": not found"}}`,
			2, `dray: no run "zz": not found`},
		{"conflict", "tok", 409, `{"error":{"code":"conflict","message":"run has ended (failed)"}}`,
			2, `dray: run has ended (failed)`},
		{"no token", "", 401, `{"error":{"code":"unauthenticated","message":"no bearer token"}}`,
			1, "dray: the server at URL needs a token: set DRAY_TOKEN to one made with `dray token create` (no bearer token)"},
		{"bad token", "tok", 401, `{"error":{"code":"unauthenticated","message":"token revoked"}}`,
			1, "dray: the server at URL refused the token in DRAY_TOKEN: token revoked (is it revoked, expired, or for another server? `dray token create` makes one)"},
		{"forbidden", "tok", 403, `{"error":{"code":"forbidden","message":"role viewer may not trigger runs"}}`,
			1, "dray: the server at URL refused the token: role viewer may not trigger runs"},
		{"rate limited", "tok", 429, `{"error":{"code":"rate_limited","message":"too many requests"}}`,
			1, "dray: the server at URL is limiting requests: too many requests: try again later"},
		{"internal", "tok", 500, `{"error":{"code":"internal","message":"disk on fire"}}`,
			1, "dray: the server at URL failed: disk on fire (HTTP 500 internal)"},
		{"not the API", "tok", 502, `<html>bad gateway</html>`,
			1, "dray: the server at URL failed: <html>bad gateway</html> (HTTP 502)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("DRAY_TOKEN", tt.token)
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(tt.status)
				fmt.Fprint(w, tt.body)
			}))
			defer srv.Close()
			t.Setenv("DRAY_SERVER", srv.URL)
			for _, args := range [][]string{
				{"trigger", "p", "-p", "n=x"}, {"runs"}, {"runs", "show", "zz"}, {"logs", "zz"}, {"cancel", "zz"}, {"retry", "zz"},
			} {
				code, _, stderr := runCLI(t, args...)
				want := strings.ReplaceAll(tt.stderr, "URL", srv.URL) + "\n"
				if code != tt.code || stderr != want {
					t.Errorf("dray %s: exit %d, stderr %q; want exit %d, %q", strings.Join(args, " "), code, stderr, tt.code, want)
				}
			}
		})
	}
}
