package secrets

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestEnvName(t *testing.T) {
	tests := []struct{ name, want string }{
		{"db_password", "DB_PASSWORD"},
		{"DB_PASSWORD", "DB_PASSWORD"},
		{"db-password.v2", "DB_PASSWORD_V2"},
		{"api key/1", "API_KEY_1"},
		{"mot-de-passé", "MOT_DE_PASS__"}, // é is two bytes
		{"x", "X"},
		{"", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := EnvName(tt.name); got != tt.want {
				t.Fatalf("EnvName(%q) = %q; want %q", tt.name, got, tt.want)
			}
		})
	}
}

func TestEnv(t *testing.T) {
	vars := map[string]string{
		"DRAY_SECRET_DB_PASSWORD": "hunter2",
		"DRAY_SECRET_EMPTY":       "",
		"OTHER_API_KEY":           "k",
	}
	tests := []struct {
		prefix, name string
		want         string
		wantFound    bool
		wantWhere    string
		wantErr      bool
	}{
		{EnvPrefix, "db_password", "hunter2", true, "env DRAY_SECRET_DB_PASSWORD", false},
		{EnvPrefix, "db-password", "hunter2", true, "env DRAY_SECRET_DB_PASSWORD", false},
		{EnvPrefix, "empty", "", true, "env DRAY_SECRET_EMPTY", false},
		{EnvPrefix, "missing", "", false, "env DRAY_SECRET_MISSING", false},
		{"OTHER_", "api_key", "k", true, "env OTHER_API_KEY", false},
		{EnvPrefix, "", "", false, "env DRAY_SECRET_", true},
	}
	for _, tt := range tests {
		t.Run(tt.prefix+tt.name, func(t *testing.T) {
			e := NewEnv(tt.prefix)
			e.LookupEnv = func(k string) (string, bool) { v, ok := vars[k]; return v, ok }
			v, found, err := e.Lookup(context.Background(), tt.name)
			if v != tt.want || found != tt.wantFound || (err != nil) != tt.wantErr {
				t.Fatalf("Lookup(%q) = %q, %v, %v; want %q, %v, error %v", tt.name, v, found, err, tt.want, tt.wantFound, tt.wantErr)
			}
			if w := e.Where(tt.name); w != tt.wantWhere {
				t.Fatalf("Where(%q) = %q; want %q", tt.name, w, tt.wantWhere)
			}
			if e.Name() != "env" {
				t.Fatalf("Name() = %q; want env", e.Name())
			}
		})
	}
}

// TestEnvDefaultLookup checks that NewEnv reads the process environment.
func TestEnvDefaultLookup(t *testing.T) {
	t.Setenv("DRAY_TEST_SECRET_TOKEN", "from-env")
	v, found, err := NewEnv("DRAY_TEST_SECRET_").Lookup(context.Background(), "token")
	if v != "from-env" || !found || err != nil {
		t.Fatalf("Lookup = %q, %v, %v; want from-env, true, nil", v, found, err)
	}
}

func TestFile(t *testing.T) {
	dir := t.TempDir()
	for name, content := range map[string]string{
		"db_password":  "hunter2\n",
		"crlf":         "value\r\n",
		"two_newlines": "value\n\n",
		"no_newline":   "value",
		"cr_only":      "value\r",
		"multi.line":   "line1\nline2\n",
		"empty":        "",
		"Key-1.txt":    "k\n",
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(filepath.Join(dir, "a_directory"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(filepath.Dir(dir), "outside"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		want      string
		wantFound bool
		wantErr   string
	}{
		{"db_password", "hunter2", true, ""},
		{"crlf", "value", true, ""},
		{"two_newlines", "value\n", true, ""},
		{"no_newline", "value", true, ""},
		{"cr_only", "value\r", true, ""},
		{"multi.line", "line1\nline2", true, ""},
		{"empty", "", true, ""},
		{"Key-1.txt", "k", true, ""},
		{"missing", "", false, ""},
		{"a_directory", "", false, "a_directory"},
		{"../outside", "", false, "may hold only"},
		{"..", "", false, "may hold only"},
		{"a..b", "", false, "may hold only"},
		{".", "", false, "may hold only"},
		{"sub/name", "", false, "may hold only"},
		{"/etc/passwd", "", false, "may hold only"},
		{`a\b`, "", false, "may hold only"},
		{"with space", "", false, "may hold only"},
		{"", "", false, "may hold only"},
		{"nul\x00", "", false, "may hold only"},
	}
	f := NewFile(dir)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, found, err := f.Lookup(context.Background(), tt.name)
			if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("Lookup(%q) error %v; want %q", tt.name, err, tt.wantErr)
			}
			if v != tt.want || found != tt.wantFound {
				t.Fatalf("Lookup(%q) = %q, %v; want %q, %v", tt.name, v, found, tt.want, tt.wantFound)
			}
		})
	}
	if got, want := f.Where("db_password"), "file "+filepath.Join(dir, "db_password"); got != want {
		t.Fatalf("Where = %q; want %q", got, want)
	}
	if f.Name() != "file" {
		t.Fatalf("Name() = %q; want file", f.Name())
	}
}

func TestProvidersHonourContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for _, p := range []Provider{NewEnv(EnvPrefix), NewFile(t.TempDir())} {
		t.Run(p.Name(), func(t *testing.T) {
			if _, _, err := p.Lookup(ctx, "x"); !errors.Is(err, context.Canceled) {
				t.Fatalf("Lookup with a canceled context: %v; want context.Canceled", err)
			}
		})
	}
}

// fakeProvider is a Provider over a map, which counts its lookups.
type fakeProvider struct {
	name    string
	values  map[string]string
	err     error
	lookups int
}

func (p *fakeProvider) Name() string             { return p.name }
func (p *fakeProvider) Where(name string) string { return p.name + " " + name }
func (p *fakeProvider) Lookup(_ context.Context, name string) (string, bool, error) {
	p.lookups++
	if p.err != nil {
		return "", false, p.err
	}
	v, ok := p.values[name]
	return v, ok, nil
}

func TestResolver(t *testing.T) {
	errBroken := errors.New("throttled")
	tests := []struct {
		name      string
		providers func() []Provider
		names     []string
		want      map[string]string
		wantErr   string
		wantIs    error
	}{
		{
			name: "first provider that has a name wins",
			providers: func() []Provider {
				return []Provider{
					&fakeProvider{name: "a", values: map[string]string{"x": "from a"}},
					&fakeProvider{name: "b", values: map[string]string{"x": "from b", "y": "from b"}},
				}
			},
			names: []string{"x", "y"},
			want:  map[string]string{"x": "from a", "y": "from b"},
		},
		{
			name: "empty value counts as found",
			providers: func() []Provider {
				return []Provider{
					&fakeProvider{name: "a", values: map[string]string{"x": ""}},
					&fakeProvider{name: "b", values: map[string]string{"x": "from b"}},
				}
			},
			names: []string{"x"},
			want:  map[string]string{"x": ""},
		},
		{
			name:      "no names",
			providers: func() []Provider { return nil },
			names:     nil,
			want:      map[string]string{},
		},
		{
			name: "missing secret names every place looked",
			providers: func() []Provider {
				return []Provider{newEnvFake(nil), NewFile(".dray/secrets")}
			},
			names:   []string{"db_password"},
			wantErr: "secret db_password not found (looked in env DRAY_SECRET_DB_PASSWORD, file .dray/secrets/db_password)",
		},
		{
			name: "every missing secret is reported",
			providers: func() []Provider {
				return []Provider{&fakeProvider{name: "a", values: map[string]string{"x": "1"}}}
			},
			names:   []string{"p", "x", "q"},
			wantErr: "secret p not found (looked in a p)\nsecret q not found (looked in a q)",
		},
		{
			name:      "no providers",
			providers: func() []Provider { return nil },
			names:     []string{"x"},
			wantErr:   "secret x not found (no secret providers are configured)",
		},
		{
			name: "a provider's error stops the resolution",
			providers: func() []Provider {
				return []Provider{
					&fakeProvider{name: "broken", err: errBroken},
					&fakeProvider{name: "b", values: map[string]string{"x": "from b"}},
				}
			},
			names:   []string{"x"},
			wantErr: "resolve secret x from broken x: throttled",
			wantIs:  errBroken,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := NewResolver(tt.providers()...).Resolve(context.Background(), tt.names)
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("Resolve error %q; want %q", err, tt.wantErr)
				}
				if got != nil {
					t.Fatalf("Resolve returned %v with an error; want nil", got)
				}
				if tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
					t.Fatalf("Resolve error %v does not wrap %v", err, tt.wantIs)
				}
				return
			}
			if err != nil {
				t.Fatalf("Resolve: %v", err)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("Resolve = %q; want %q", got, tt.want)
			}
			for k, v := range tt.want {
				if g, ok := got[k]; !ok || g != v {
					t.Fatalf("Resolve = %q; want %q", got, tt.want)
				}
			}
		})
	}
}

// newEnvFake is an Env provider with the usual prefix over vars.
func newEnvFake(vars map[string]string) *Env {
	e := NewEnv(EnvPrefix)
	e.LookupEnv = func(k string) (string, bool) { v, ok := vars[k]; return v, ok }
	return e
}

func TestResolverNotFoundError(t *testing.T) {
	_, err := NewResolver(newEnvFake(nil)).Resolve(context.Background(), []string{"a"})
	var nf *NotFoundError
	if !errors.As(err, &nf) || nf.Name != "a" || len(nf.Looked) != 1 || nf.Looked[0] != "env DRAY_SECRET_A" {
		t.Fatalf("Resolve error %#v; want a *NotFoundError for a, looked in env DRAY_SECRET_A", err)
	}
}

// TestResolverAsksOnce checks that a name given twice is looked up once and
// that providers after the one that has it are not asked.
func TestResolverAsksOnce(t *testing.T) {
	a := &fakeProvider{name: "a", values: map[string]string{"x": "1"}}
	b := &fakeProvider{name: "b", values: map[string]string{"x": "2"}}
	got, err := NewResolver(a, b).Resolve(context.Background(), []string{"x", "x"})
	if err != nil || got["x"] != "1" {
		t.Fatalf("Resolve = %v, %v; want x=1", got, err)
	}
	if a.lookups != 1 || b.lookups != 0 {
		t.Fatalf("lookups: a %d, b %d; want 1, 0", a.lookups, b.lookups)
	}
}
