package secrets

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	ssmtypes "github.com/aws/aws-sdk-go-v2/service/ssm/types"
	"github.com/aws/smithy-go/middleware"

	"github.com/dray-dev/dray/internal/mototest"
)

// The AWS providers are tested against moto_server with the real SDK
// clients: the fixtures are made with the SDK, and the providers read them
// back over HTTP. Each test function starts one moto and runs subtests,
// each with a provider of its own (and so a cache of its own).

func TestSSM(t *testing.T) {
	srv := mototest.Start(t)
	ctx := t.Context()
	admin := ssm.NewFromConfig(srv.Config(), func(o *ssm.Options) { o.BaseEndpoint = aws.String(srv.URL) })
	put := func(t *testing.T, name, value string, typ ssmtypes.ParameterType) {
		t.Helper()
		_, err := admin.PutParameter(ctx, &ssm.PutParameterInput{Name: aws.String(name), Value: aws.String(value), Type: typ, Overwrite: aws.Bool(true)})
		if err != nil {
			t.Fatalf("put parameter %s: %v", name, err)
		}
	}
	put(t, "/dray/test/db_password", "s3cr3t-secure", ssmtypes.ParameterTypeSecureString)
	put(t, "/dray/test/plain", "plain-value", ssmtypes.ParameterTypeString)
	put(t, "/dray/test/team/api_key", "nested-value", ssmtypes.ParameterTypeSecureString)
	put(t, "/dray/test/hosts", "a.example,b.example", ssmtypes.ParameterTypeStringList)
	put(t, "flat_name", "flat-value", ssmtypes.ParameterTypeString)

	t.Run("lookup", func(t *testing.T) {
		tests := []struct {
			prefix, name string
			want         string
			wantFound    bool
			wantWhere    string
		}{
			{"/dray/test/", "db_password", "s3cr3t-secure", true, "aws_ssm parameter /dray/test/db_password"},
			{"/dray/test/", "plain", "plain-value", true, "aws_ssm parameter /dray/test/plain"},
			{"/dray/test/", "team/api_key", "nested-value", true, "aws_ssm parameter /dray/test/team/api_key"},
			{"/dray/test/", "hosts", "a.example,b.example", true, "aws_ssm parameter /dray/test/hosts"},
			{"", "flat_name", "flat-value", true, "aws_ssm parameter flat_name"},
			{"", "/dray/test/plain", "plain-value", true, "aws_ssm parameter /dray/test/plain"},
			{"/dray/test/", "missing", "", false, "aws_ssm parameter /dray/test/missing"},
			{"/dray/other/", "plain", "", false, "aws_ssm parameter /dray/other/plain"},
		}
		for _, tt := range tests {
			t.Run(tt.prefix+tt.name, func(t *testing.T) {
				p := newTestSSM(srv, AWSOptions{Prefix: tt.prefix})
				v, found, err := p.Lookup(ctx, tt.name)
				if v != tt.want || found != tt.wantFound || err != nil {
					t.Fatalf("Lookup(%q) = %q, %v, %v; want %q, %v, nil", tt.name, v, found, err, tt.want, tt.wantFound)
				}
				if w := p.Where(tt.name); w != tt.wantWhere {
					t.Fatalf("Where(%q) = %q; want %q", tt.name, w, tt.wantWhere)
				}
				if p.Name() != "aws_ssm" {
					t.Fatalf("Name() = %q; want aws_ssm", p.Name())
				}
			})
		}
	})

	t.Run("a name SSM cannot hold is not found, without a call", func(t *testing.T) {
		cfg, calls := countedConfig(srv)
		p := NewSSM(cfg, AWSOptions{Prefix: "/dray/test/"})
		for _, name := range []string{"db_password#key", "with space", "é"} {
			lookupWant(t, p, name, "", false)
		}
		if n := calls.Load(); n != 0 {
			t.Fatalf("%d calls to AWS; want none", n)
		}
		// A version selector is part of a parameter's name.
		lookupWant(t, p, "plain:1", "plain-value", true)
	})

	t.Run("empty name", func(t *testing.T) {
		p := newTestSSM(srv, AWSOptions{Prefix: "/dray/test/"})
		if _, found, err := p.Lookup(ctx, ""); err == nil || found {
			t.Fatalf("Lookup(\"\") = %v, %v; want an error", found, err)
		}
	})

	t.Run("cache", func(t *testing.T) {
		put(t, "/dray/test/rotated", "value-one", ssmtypes.ParameterTypeSecureString)
		clock := newFakeClock()
		cfg, calls := countedConfig(srv)
		p := NewSSM(cfg, AWSOptions{Prefix: "/dray/test/", Now: clock.Now})
		lookupWant(t, p, "rotated", "value-one", true)
		put(t, "/dray/test/rotated", "value-two", ssmtypes.ParameterTypeSecureString)
		clock.Advance(DefaultAWSTTL - time.Second)
		lookupWant(t, p, "rotated", "value-one", true)
		if n := calls.Load(); n != 1 {
			t.Fatalf("%d calls to AWS for two lookups within the TTL; want 1", n)
		}
		clock.Advance(time.Second)
		lookupWant(t, p, "rotated", "value-two", true)
		if n := calls.Load(); n != 2 {
			t.Fatalf("%d calls to AWS after the TTL; want 2", n)
		}

		// A missing parameter is remembered as missing for the TTL too.
		lookupWant(t, p, "late", "", false)
		put(t, "/dray/test/late", "late-value", ssmtypes.ParameterTypeString)
		lookupWant(t, p, "late", "", false)
		clock.Advance(DefaultAWSTTL)
		lookupWant(t, p, "late", "late-value", true)
		if n := calls.Load(); n != 4 {
			t.Fatalf("%d calls to AWS; want 4", n)
		}
	})

	t.Run("no cache with a negative TTL", func(t *testing.T) {
		cfg, calls := countedConfig(srv)
		p := NewSSM(cfg, AWSOptions{Prefix: "/dray/test/", TTL: -1})
		lookupWant(t, p, "plain", "plain-value", true)
		lookupWant(t, p, "plain", "plain-value", true)
		if n := calls.Load(); n != 2 {
			t.Fatalf("%d calls to AWS with a negative TTL; want 2", n)
		}
	})

	t.Run("concurrent lookups share one call", func(t *testing.T) {
		cfg, calls := countedConfig(srv)
		gate := make(chan struct{})
		cfg.APIOptions = append(cfg.APIOptions, holdCalls(gate))
		p := NewSSM(cfg, AWSOptions{Prefix: "/dray/test/"})
		const n = 50
		var started, done sync.WaitGroup
		started.Add(n)
		errs := make(chan error, n)
		for range n {
			done.Go(func() {
				started.Done()
				v, found, err := p.Lookup(ctx, "db_password")
				if err == nil && (v != "s3cr3t-secure" || !found) {
					err = fmt.Errorf("got %q, %v", v, found)
				}
				errs <- err
			})
		}
		// The first call waits at the gate until every lookup has begun:
		// none of them can be served from the cache before it returns.
		started.Wait()
		close(gate)
		done.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatalf("Lookup: %v", err)
			}
		}
		if got := calls.Load(); got != 1 {
			t.Fatalf("%d calls to AWS for %d concurrent lookups of one name; want 1", got, n)
		}
	})

	t.Run("a canceled waiter does not fail the others", func(t *testing.T) {
		cfg, calls := countedConfig(srv)
		gate := make(chan struct{})
		cfg.APIOptions = append(cfg.APIOptions, holdCalls(gate))
		p := NewSSM(cfg, AWSOptions{Prefix: "/dray/test/"})
		leadCtx, cancelLead := context.WithCancel(ctx)
		leadErr := make(chan error, 1)
		go func() { _, _, err := p.Lookup(leadCtx, "plain"); leadErr <- err }()
		waitFor(t, func() bool { return calls.Load() == 1 })
		// The first lookup's call is at the gate; cancel it, then look up
		// the same name with a live context.
		cancelLead()
		if err := <-leadErr; !errors.Is(err, context.Canceled) {
			t.Fatalf("canceled Lookup: %v; want context.Canceled", err)
		}
		close(gate)
		lookupWant(t, p, "plain", "plain-value", true)
	})

	t.Run("canceled context", func(t *testing.T) {
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		if _, _, err := newTestSSM(srv, AWSOptions{}).Lookup(cctx, "x"); !errors.Is(err, context.Canceled) {
			t.Fatalf("Lookup with a canceled context: %v; want context.Canceled", err)
		}
	})

	t.Run("endpoint out of reach", func(t *testing.T) {
		cfg := srv.Config()
		cfg.RetryMaxAttempts = 1
		p := NewSSM(cfg, AWSOptions{Prefix: "/dray/test/"}, func(o *ssm.Options) { o.BaseEndpoint = aws.String(closedURL(t)) })
		v, found, err := p.Lookup(ctx, "db_password")
		if err == nil || found || v != "" {
			t.Fatalf("Lookup = %q, %v, %v; want an error", v, found, err)
		}
		for _, want := range []string{"get parameter /dray/test/db_password", "connection refused"} {
			if !strings.Contains(err.Error(), want) {
				t.Fatalf("error %q does not say %q", err, want)
			}
		}
		// An error is not kept: the next lookup asks again.
		if _, _, err2 := p.Lookup(ctx, "db_password"); err2 == nil {
			t.Fatal("second Lookup: no error; an error must not be cached as a value")
		}
	})

	t.Run("default configuration is loaded at the first lookup", func(t *testing.T) {
		// Built before the environment points at moto: it must not load
		// the configuration until it is used.
		p := NewSSMDefault("", AWSOptions{Prefix: "/dray/test/"})
		isolateAWSEnv(t)
		for _, kv := range srv.Env() {
			k, v, _ := strings.Cut(kv, "=")
			t.Setenv(k, v)
		}
		lookupWant(t, p, "db_password", "s3cr3t-secure", true)
		// A region from dray.yaml wins over AWS_REGION (moto serves any).
		lookupWant(t, NewSSMDefault("eu-west-3", AWSOptions{Prefix: "/dray/test/"}), "missing", "", false)
	})

	t.Run("no region", func(t *testing.T) {
		isolateAWSEnv(t)
		_, _, err := NewSSMDefault("", AWSOptions{}).Lookup(ctx, "db_password")
		if err == nil || !strings.Contains(err.Error(), "no AWS region") || !strings.Contains(err.Error(), "db_password") {
			t.Fatalf("Lookup without a region: %v; want an error that says there is no AWS region", err)
		}
	})
}

func TestSecretsManager(t *testing.T) {
	srv := mototest.Start(t)
	ctx := t.Context()
	admin := secretsmanager.NewFromConfig(srv.Config(), func(o *secretsmanager.Options) { o.BaseEndpoint = aws.String(srv.URL) })
	create := func(t *testing.T, in *secretsmanager.CreateSecretInput) {
		t.Helper()
		if _, err := admin.CreateSecret(ctx, in); err != nil {
			t.Fatalf("create secret %s: %v", *in.Name, err)
		}
	}
	update := func(t *testing.T, id, value string) {
		t.Helper()
		if _, err := admin.PutSecretValue(ctx, &secretsmanager.PutSecretValueInput{SecretId: aws.String(id), SecretString: aws.String(value)}); err != nil {
			t.Fatalf("put secret value %s: %v", id, err)
		}
	}
	const dbJSON = `{"password": "pw-from-json", "port": 5432, "ratio": -1.5e3, "ssl": true, "off": false,
		"quoted": "a \"b\" \\ \u00e9", "empty": "", "nothing": null, "nested": {"a": "inner-secret"}, "list": ["x-secret"]}`
	const notJSON = "not json: hunter2-plain"
	create(t, &secretsmanager.CreateSecretInput{Name: aws.String("dray/test/plain"), SecretString: aws.String("plain-secret-value")})
	create(t, &secretsmanager.CreateSecretInput{Name: aws.String("dray/test/db"), SecretString: aws.String(dbJSON)})
	create(t, &secretsmanager.CreateSecretInput{Name: aws.String("dray/test/notjson"), SecretString: aws.String(notJSON)})
	create(t, &secretsmanager.CreateSecretInput{Name: aws.String("dray/test/jsonlist"), SecretString: aws.String(`["list-secret"]`)})
	create(t, &secretsmanager.CreateSecretInput{Name: aws.String("dray/test/binary"), SecretBinary: []byte("binary-secret")})
	create(t, &secretsmanager.CreateSecretInput{Name: aws.String("dray/test/team/api"), SecretString: aws.String("nested-secret-value")})

	t.Run("lookup", func(t *testing.T) {
		tests := []struct {
			name      string
			want      string
			wantFound bool
		}{
			{"plain", "plain-secret-value", true},
			{"team/api", "nested-secret-value", true},
			{"db", dbJSON, true},
			{"db#password", "pw-from-json", true},
			{"db#port", "5432", true},
			{"db#ratio", "-1.5e3", true},
			{"db#ssl", "true", true},
			{"db#off", "false", true},
			{"db#quoted", `a "b" \ é`, true},
			{"db#empty", "", true},
			{"notjson", notJSON, true},
			{"missing", "", false},
			{"missing#key", "", false},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				p := newTestSecretsManager(srv, AWSOptions{Prefix: "dray/test/"})
				v, found, err := p.Lookup(ctx, tt.name)
				if v != tt.want || found != tt.wantFound || err != nil {
					t.Fatalf("Lookup(%q) = %q, %v, %v; want %q, %v, nil", tt.name, v, found, err, tt.want, tt.wantFound)
				}
			})
		}
	})

	t.Run("where", func(t *testing.T) {
		p := newTestSecretsManager(srv, AWSOptions{Prefix: "prod/"})
		if got, want := p.Where("db#password"), "aws_secretsmanager secret prod/db#password"; got != want {
			t.Fatalf("Where = %q; want %q", got, want)
		}
		if p.Name() != "aws_secretsmanager" {
			t.Fatalf("Name() = %q; want aws_secretsmanager", p.Name())
		}
	})

	t.Run("errors", func(t *testing.T) {
		tests := []struct {
			name    string
			wantErr []string
		}{
			{"db#user", []string{`secret dray/test/db has no key "user"`}},
			{"notjson#password", []string{`secret dray/test/notjson is not a JSON object, so it has no key "password"`}},
			{"jsonlist#0", []string{`secret dray/test/jsonlist is not a JSON object, so it has no key "0"`}},
			{"db#nothing", []string{`key "nothing" of secret dray/test/db is null; want a string, a number or a boolean`}},
			{"db#nested", []string{`key "nested" of secret dray/test/db is an object`}},
			{"db#list", []string{`key "list" of secret dray/test/db is a list`}},
			{"binary", []string{"secret dray/test/binary", "binary"}},
			{"binary#k", []string{"secret dray/test/binary", "binary"}},
			{"", []string{"want a name"}},
			{"#password", []string{"want a name"}},
			{"db#", []string{"want a name"}},
		}
		// Pieces of the secrets' values that an error must never show.
		values := []string{"pw-from-json", "5432", "inner-secret", "x-secret", "hunter2", "not json", "list-secret", "binary-secret"}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				v, found, err := newTestSecretsManager(srv, AWSOptions{Prefix: "dray/test/"}).Lookup(ctx, tt.name)
				if err == nil || found || v != "" {
					t.Fatalf("Lookup(%q) = %q, %v, %v; want an error", tt.name, v, found, err)
				}
				for _, want := range tt.wantErr {
					if !strings.Contains(err.Error(), want) {
						t.Fatalf("Lookup(%q) error %q does not say %q", tt.name, err, want)
					}
				}
				for _, secret := range values {
					if strings.Contains(err.Error(), secret) {
						t.Fatalf("Lookup(%q) error %q shows a secret's value %q", tt.name, err, secret)
					}
				}
			})
		}
	})

	t.Run("cache", func(t *testing.T) {
		create(t, &secretsmanager.CreateSecretInput{Name: aws.String("dray/test/rotated"), SecretString: aws.String(`{"user": "etl", "password": "first-pw"}`)})
		clock := newFakeClock()
		cfg, calls := countedConfig(srv)
		p := NewSecretsManager(cfg, AWSOptions{Prefix: "dray/test/", Now: clock.Now})
		lookupWant(t, p, "rotated#password", "first-pw", true)
		lookupWant(t, p, "rotated#user", "etl", true)
		update(t, "dray/test/rotated", `{"user": "etl", "password": "second-pw"}`)
		clock.Advance(DefaultAWSTTL / 2)
		lookupWant(t, p, "rotated#password", "first-pw", true)
		if n := calls.Load(); n != 1 {
			t.Fatalf("%d calls to AWS for three lookups of one secret within the TTL; want 1", n)
		}
		clock.Advance(DefaultAWSTTL / 2)
		lookupWant(t, p, "rotated#password", "second-pw", true)
		if n := calls.Load(); n != 2 {
			t.Fatalf("%d calls to AWS after the TTL; want 2", n)
		}
	})

	t.Run("custom TTL", func(t *testing.T) {
		create(t, &secretsmanager.CreateSecretInput{Name: aws.String("dray/test/short"), SecretString: aws.String("short-one")})
		clock := newFakeClock()
		p := newTestSecretsManager(srv, AWSOptions{Prefix: "dray/test/", TTL: 5 * time.Second, Now: clock.Now})
		lookupWant(t, p, "short", "short-one", true)
		update(t, "dray/test/short", "short-two")
		clock.Advance(4 * time.Second)
		lookupWant(t, p, "short", "short-one", true)
		clock.Advance(time.Second)
		lookupWant(t, p, "short", "short-two", true)
	})

	t.Run("endpoint out of reach", func(t *testing.T) {
		cfg := srv.Config()
		cfg.RetryMaxAttempts = 1
		p := NewSecretsManager(cfg, AWSOptions{Prefix: "dray/test/"}, func(o *secretsmanager.Options) { o.BaseEndpoint = aws.String(closedURL(t)) })
		_, found, err := p.Lookup(ctx, "db#password")
		if err == nil || found || !strings.Contains(err.Error(), "get secret dray/test/db") || !strings.Contains(err.Error(), "connection refused") {
			t.Fatalf("Lookup = %v, %v; want an error naming the secret and the refused connection", found, err)
		}
	})

	t.Run("default configuration", func(t *testing.T) {
		isolateAWSEnv(t)
		for _, kv := range srv.Env() {
			k, v, _ := strings.Cut(kv, "=")
			t.Setenv(k, v)
		}
		lookupWant(t, NewSecretsManagerDefault("", AWSOptions{Prefix: "dray/test/"}), "db#password", "pw-from-json", true)
	})
}

// TestAWSErrors checks the errors AWS answers with, from a server that
// speaks the AWS JSON protocol: they name the parameter or the secret and
// give AWS's code and message, and throttling is retried by the SDK first.
func TestAWSErrors(t *testing.T) {
	tests := []struct {
		name, code, message string
		wantCalls           int32
		wantErr             string
	}{
		{"access denied", "AccessDeniedException", "User: arn:aws:iam::123456789012:user/etl is not authorized to perform: ssm:GetParameter",
			1, "AccessDeniedException: User: arn:aws:iam::123456789012:user/etl is not authorized to perform: ssm:GetParameter"},
		{"wrong credentials", "UnrecognizedClientException", "The security token included in the request is invalid.",
			1, "UnrecognizedClientException: The security token included in the request is invalid."},
		{"throttled", "ThrottlingException", "Rate exceeded",
			3, "ThrottlingException: Rate exceeded (gave up after 3 attempts)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var calls atomic.Int32
			fake := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				calls.Add(1)
				w.Header().Set("Content-Type", "application/x-amz-json-1.1")
				w.WriteHeader(http.StatusBadRequest)
				_ = json.NewEncoder(w).Encode(map[string]string{"__type": tt.code, "message": tt.message})
			}))
			defer fake.Close()
			cfg := aws.Config{Region: "eu-west-1", Credentials: credentials.NewStaticCredentialsProvider("AKIDEXAMPLE", "wrong", "")}
			cfg.BaseEndpoint = aws.String(fake.URL)
			cfg.Retryer = func() aws.Retryer {
				return retry.NewStandard(func(o *retry.StandardOptions) {
					o.MaxAttempts = 3
					o.Backoff = retry.BackoffDelayerFunc(func(int, error) (time.Duration, error) { return 0, nil })
				})
			}
			for _, p := range []Provider{NewSSM(cfg, AWSOptions{Prefix: "/dray/prod/"}), NewSecretsManager(cfg, AWSOptions{Prefix: "prod/"})} {
				calls.Store(0)
				v, found, err := p.Lookup(t.Context(), "db_password")
				if err == nil || found || v != "" {
					t.Fatalf("%s: Lookup = %q, %v, %v; want an error", p.Name(), v, found, err)
				}
				what := map[string]string{"aws_ssm": "get parameter /dray/prod/db_password: ", "aws_secretsmanager": "get secret prod/db_password: "}[p.Name()]
				if got, want := err.Error(), what+tt.wantErr; got != want {
					t.Fatalf("%s: error\n%s\nwant\n%s", p.Name(), got, want)
				}
				if n := calls.Load(); n != tt.wantCalls {
					t.Fatalf("%s: %d calls; want %d", p.Name(), n, tt.wantCalls)
				}
			}
		})
	}
}

// TestCacheWaiterRetries checks that a lookup that joined another's call,
// which failed because that caller's context ended, calls again with its own
// context instead of failing too.
func TestCacheWaiterRetries(t *testing.T) {
	c := newCache(time.Minute, nil)
	waits := make(chan struct{}, 3)
	c.waiting = func() { waits <- struct{}{} }
	leadCtx, cancelLead := context.WithCancel(t.Context())
	leadDone := make(chan error, 1)
	go func() {
		_, err := c.get(leadCtx, "k", func(ctx context.Context) (cached, error) {
			<-ctx.Done()
			return cached{}, fmt.Errorf("call: %w", ctx.Err())
		})
		leadDone <- err
	}()
	<-waits // the leader's call is on, until its context ends
	var fetched atomic.Int32
	type result struct {
		v   cached
		err error
	}
	waiterDone := make(chan result, 1)
	go func() {
		v, err := c.get(t.Context(), "k", func(context.Context) (cached, error) {
			fetched.Add(1)
			return cached{value: "v", found: true}, nil
		})
		waiterDone <- result{v, err}
	}()
	<-waits // the waiter has joined the leader's call
	cancelLead()
	if err := <-leadDone; !errors.Is(err, context.Canceled) {
		t.Fatalf("leader: %v; want context.Canceled", err)
	}
	if r := <-waiterDone; r.err != nil || r.v.value != "v" || !r.v.found {
		t.Fatalf("waiter = %+v, %v; want v", r.v, r.err)
	}
	if n := fetched.Load(); n != 1 {
		t.Fatalf("waiter fetched %d times; want 1 (after the leader's call failed)", n)
	}
	if len(waits) != 1 {
		t.Fatalf("waiter waited %d more times; want 1 (its own call)", len(waits))
	}
}

func newTestSSM(srv *mototest.Server, o AWSOptions) *SSM {
	return NewSSM(srv.Config(), o, func(so *ssm.Options) { so.BaseEndpoint = aws.String(srv.URL) })
}

func newTestSecretsManager(srv *mototest.Server, o AWSOptions) *SecretsManager {
	return NewSecretsManager(srv.Config(), o, func(so *secretsmanager.Options) { so.BaseEndpoint = aws.String(srv.URL) })
}

func lookupWant(t *testing.T, p Provider, name, want string, wantFound bool) {
	t.Helper()
	v, found, err := p.Lookup(t.Context(), name)
	if v != want || found != wantFound || err != nil {
		t.Fatalf("Lookup(%q) = %q, %v, %v; want %q, %v, nil", name, v, found, err, want, wantFound)
	}
}

// countedConfig returns moto's configuration, with its URL as the base
// endpoint, and a count of the API calls made with it.
func countedConfig(srv *mototest.Server) (aws.Config, *atomic.Int32) {
	cfg := srv.Config()
	cfg.BaseEndpoint = aws.String(srv.URL)
	var n atomic.Int32
	cfg.APIOptions = append(cfg.APIOptions, func(st *middleware.Stack) error {
		return st.Initialize.Add(middleware.InitializeMiddlewareFunc("countCalls",
			func(ctx context.Context, in middleware.InitializeInput, next middleware.InitializeHandler) (middleware.InitializeOutput, middleware.Metadata, error) {
				n.Add(1)
				return next.HandleInitialize(ctx, in)
			}), middleware.Before)
	})
	return cfg, &n
}

// holdCalls makes every API call wait until gate is closed or its context
// ends.
func holdCalls(gate <-chan struct{}) func(*middleware.Stack) error {
	return func(st *middleware.Stack) error {
		return st.Initialize.Add(middleware.InitializeMiddlewareFunc("holdCalls",
			func(ctx context.Context, in middleware.InitializeInput, next middleware.InitializeHandler) (middleware.InitializeOutput, middleware.Metadata, error) {
				select {
				case <-gate:
				case <-ctx.Done():
					return middleware.InitializeOutput{}, middleware.Metadata{}, ctx.Err()
				}
				return next.HandleInitialize(ctx, in)
			}), middleware.After)
	}
}

// closedURL returns the URL of a loopback port that refuses connections.
func closedURL(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return "http://" + addr
}

// isolateAWSEnv clears the AWS settings of the test's environment, so that
// the SDK's default configuration sees only what the test sets.
func isolateAWSEnv(t *testing.T) {
	t.Helper()
	dir := t.TempDir()
	for _, k := range []string{"AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE", "AWS_ENDPOINT_URL",
		"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE",
		"AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI"} {
		t.Setenv(k, "")
	}
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(dir, "config"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(dir, "credentials"))
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
}

// waitFor waits until cond holds, for at most 10 seconds.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10s")
		}
		time.Sleep(time.Millisecond)
	}
}

type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}
