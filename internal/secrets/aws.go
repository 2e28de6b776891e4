package secrets

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	smtypes "github.com/aws/aws-sdk-go-v2/service/secretsmanager/types"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	ssmtypes "github.com/aws/aws-sdk-go-v2/service/ssm/types"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"
)

// DefaultAWSTTL is how long the AWS providers reuse what they read.
const DefaultAWSTTL = time.Minute

// AWSOptions configure an AWS provider.
type AWSOptions struct {
	// Prefix goes before a secret's name to make the parameter's or the
	// secret's name: with "/dray/prod/", db_password is
	// /dray/prod/db_password. Nothing is added between them.
	Prefix string
	// TTL is how long a value read, or a name found missing, is reused
	// before AWS is asked again: 0 means DefaultAWSTTL, a negative TTL
	// reuses nothing (concurrent lookups of one name still share a call).
	TTL time.Duration
	// Now is the cache's clock; nil means time.Now.
	Now func() time.Time
	// Logger gets a debug line for each call to AWS, with names, never
	// values; nil logs nothing.
	Logger *slog.Logger
}

func (o AWSOptions) cache() *cache {
	ttl := o.TTL
	if ttl == 0 {
		ttl = DefaultAWSTTL
	}
	return newCache(ttl, o.Now)
}

func (o AWSOptions) logger() *slog.Logger {
	if o.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return o.Logger
}

// SSM is a Provider that reads secrets from AWS Systems Manager Parameter
// Store. It is safe for concurrent use.
type SSM struct {
	prefix string
	client lazy[*ssm.Client]
	cache  *cache
	log    *slog.Logger
}

// NewSSM returns a Provider that reads secret name from the SSM parameter
// o.Prefix + name, with a client made from cfg and optFns.
func NewSSM(cfg aws.Config, o AWSOptions, optFns ...func(*ssm.Options)) *SSM {
	c := ssm.NewFromConfig(cfg, optFns...)
	return newSSM(o, func(context.Context) (*ssm.Client, error) { return c, nil })
}

// NewSSMDefault is NewSSM with the SDK's default configuration (the
// environment, the shared files, the instance's or task's role), loaded at
// the first Lookup: the process that looks secrets up holds the credentials,
// not the one that builds the provider. An empty region means the default
// configuration's region.
func NewSSMDefault(region string, o AWSOptions) *SSM {
	return newSSM(o, func(ctx context.Context) (*ssm.Client, error) {
		cfg, err := loadAWSConfig(ctx, region)
		if err != nil {
			return nil, err
		}
		return ssm.NewFromConfig(cfg), nil
	})
}

func newSSM(o AWSOptions, newClient func(context.Context) (*ssm.Client, error)) *SSM {
	return &SSM{prefix: o.Prefix, client: lazy[*ssm.Client]{newClient: newClient}, cache: o.cache(), log: o.logger()}
}

// Name returns "aws_ssm".
func (s *SSM) Name() string { return "aws_ssm" }

// Where returns "aws_ssm parameter " and the parameter that holds name.
func (s *SSM) Where(name string) string { return "aws_ssm parameter " + s.prefix + name }

// Lookup returns the value of the parameter that holds name, decrypted when
// it is a SecureString. A parameter that does not exist is not found, not an
// error; so is a name that no parameter can have (a character other than
// letters, digits and "_.-/:", such as the '#' of a Secrets Manager
// secret#key), without asking AWS. Any other failure (access denied,
// throttled after the SDK's retries, an endpoint out of reach) is an error
// that names the parameter. What it reads, found or not, is reused for the
// provider's TTL.
func (s *SSM) Lookup(ctx context.Context, name string) (string, bool, error) {
	if err := ctx.Err(); err != nil {
		return "", false, fmt.Errorf("look up secret %s in aws_ssm: %w", name, err)
	}
	if name == "" {
		return "", false, errors.New("look up secret in aws_ssm: empty name")
	}
	param := s.prefix + name
	if !ssmName.MatchString(param) {
		// SSM cannot have it, so another provider may: prod/db#password
		// is for Secrets Manager.
		return "", false, nil
	}
	v, err := s.cache.get(ctx, param, func(ctx context.Context) (cached, error) { return s.fetch(ctx, param) })
	if err != nil {
		return "", false, err
	}
	return v.value, v.found, nil
}

// ssmName is what a parameter name may hold, with a ":version" or ":label"
// selector, or as an ARN.
var ssmName = regexp.MustCompile(`^[A-Za-z0-9_.\-/:]+$`)

func (s *SSM) fetch(ctx context.Context, param string) (cached, error) {
	c, err := s.client.get(ctx)
	if err != nil {
		return cached{}, fmt.Errorf("get parameter %s: %w", param, err)
	}
	start := time.Now()
	out, err := c.GetParameter(ctx, &ssm.GetParameterInput{Name: aws.String(param), WithDecryption: aws.Bool(true)})
	var nf *ssmtypes.ParameterNotFound
	switch {
	case errors.As(err, &nf):
		s.log.Debug("secret parameter not found", "provider", s.Name(), "parameter", param, "took", time.Since(start))
		return cached{}, nil
	case err != nil:
		return cached{}, &awsError{op: "get parameter " + param, err: err}
	case out.Parameter == nil || out.Parameter.Value == nil:
		return cached{}, fmt.Errorf("get parameter %s: the answer holds no value", param)
	}
	s.log.Debug("secret parameter read", "provider", s.Name(), "parameter", param, "took", time.Since(start))
	return cached{value: *out.Parameter.Value, found: true}, nil
}

// SecretsManager is a Provider that reads secrets from AWS Secrets Manager.
// It is safe for concurrent use.
type SecretsManager struct {
	prefix string
	client lazy[*secretsmanager.Client]
	cache  *cache
	log    *slog.Logger
}

// NewSecretsManager returns a Provider that reads secret name from the
// Secrets Manager secret o.Prefix + name, with a client made from cfg and
// optFns. A name of the form "secret#key" reads one key of a secret that
// holds a JSON object.
func NewSecretsManager(cfg aws.Config, o AWSOptions, optFns ...func(*secretsmanager.Options)) *SecretsManager {
	c := secretsmanager.NewFromConfig(cfg, optFns...)
	return newSecretsManager(o, func(context.Context) (*secretsmanager.Client, error) { return c, nil })
}

// NewSecretsManagerDefault is NewSecretsManager with the SDK's default
// configuration, loaded at the first Lookup (see NewSSMDefault). An empty
// region means the default configuration's region.
func NewSecretsManagerDefault(region string, o AWSOptions) *SecretsManager {
	return newSecretsManager(o, func(ctx context.Context) (*secretsmanager.Client, error) {
		cfg, err := loadAWSConfig(ctx, region)
		if err != nil {
			return nil, err
		}
		return secretsmanager.NewFromConfig(cfg), nil
	})
}

func newSecretsManager(o AWSOptions, newClient func(context.Context) (*secretsmanager.Client, error)) *SecretsManager {
	return &SecretsManager{prefix: o.Prefix, client: lazy[*secretsmanager.Client]{newClient: newClient}, cache: o.cache(), log: o.logger()}
}

// Name returns "aws_secretsmanager".
func (s *SecretsManager) Name() string { return "aws_secretsmanager" }

// Where returns "aws_secretsmanager secret " and the secret (and key) that
// holds name.
func (s *SecretsManager) Where(name string) string {
	return "aws_secretsmanager secret " + s.prefix + name
}

// Lookup returns the SecretString of the secret that holds name. For a name
// "secret#key", the secret must hold a JSON object, and Lookup returns its
// member key: a string as it is, a number or a boolean as its JSON text. A
// secret that does not exist is not found, not an error; a secret that is not
// a JSON object, a key it does not have, or a key that holds null, an object
// or a list is an error that names the secret and the key but never shows
// the value. Other failures are errors as for SSM.Lookup. A secret read is
// reused for the provider's TTL, for all its keys.
func (s *SecretsManager) Lookup(ctx context.Context, name string) (string, bool, error) {
	if err := ctx.Err(); err != nil {
		return "", false, fmt.Errorf("look up secret %s in aws_secretsmanager: %w", name, err)
	}
	id, key, hasKey := strings.Cut(name, "#")
	if id == "" || hasKey && key == "" {
		return "", false, fmt.Errorf("look up secret %q in aws_secretsmanager: want a name, or name#key for a key of a JSON secret", name)
	}
	id = s.prefix + id
	v, err := s.cache.get(ctx, id, func(ctx context.Context) (cached, error) { return s.fetch(ctx, id) })
	if err != nil || !v.found {
		return "", false, err
	}
	if !hasKey {
		return v.value, true, nil
	}
	kv, err := jsonMember(id, v.value, key)
	if err != nil {
		return "", false, err
	}
	return kv, true, nil
}

func (s *SecretsManager) fetch(ctx context.Context, id string) (cached, error) {
	c, err := s.client.get(ctx)
	if err != nil {
		return cached{}, fmt.Errorf("get secret %s: %w", id, err)
	}
	start := time.Now()
	out, err := c.GetSecretValue(ctx, &secretsmanager.GetSecretValueInput{SecretId: aws.String(id)})
	var nf *smtypes.ResourceNotFoundException
	switch {
	case errors.As(err, &nf):
		s.log.Debug("secret not found", "provider", s.Name(), "secret", id, "took", time.Since(start))
		return cached{}, nil
	case err != nil:
		return cached{}, &awsError{op: "get secret " + id, err: err}
	case out.SecretString == nil:
		return cached{}, fmt.Errorf("get secret %s: it holds binary data (SecretBinary); dray reads only SecretString", id)
	}
	s.log.Debug("secret read", "provider", s.Name(), "secret", id, "took", time.Since(start))
	return cached{value: *out.SecretString, found: true}, nil
}

// jsonMember returns the member key of the JSON object secret, the value of
// the secret id. Its errors never quote secret: a JSON syntax error would
// show a piece of it.
func jsonMember(id, secret, key string) (string, error) {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal([]byte(secret), &obj); err != nil || obj == nil {
		return "", fmt.Errorf("secret %s is not a JSON object, so it has no key %q (a name secret#key reads a key of a JSON secret)", id, key)
	}
	raw, ok := obj[key]
	if !ok {
		return "", fmt.Errorf("secret %s has no key %q", id, key)
	}
	want := func(got string) error {
		return fmt.Errorf("key %q of secret %s is %s; want a string, a number or a boolean", key, id, got)
	}
	switch raw[0] {
	case '"':
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return "", want("not a valid JSON string")
		}
		return s, nil
	case 't', 'f', '-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9':
		return string(raw), nil
	case 'n':
		return "", want("null")
	case '[':
		return "", want("a list")
	default:
		return "", want("an object")
	}
}

// awsError is a failed AWS call: the operation, and the AWS error code and
// message when AWS answered ("get parameter /dray/db: AccessDeniedException:
// User … is not authorized …"), or why the request could not be sent.
type awsError struct {
	op  string
	err error
}

func (e *awsError) Error() string {
	var (
		api  smithy.APIError
		send *smithyhttp.RequestSendError
		msg  string
	)
	switch {
	case errors.As(e.err, &api):
		msg = api.ErrorCode() + ": " + api.ErrorMessage()
	case errors.Is(e.err, context.Canceled):
		msg = context.Canceled.Error()
	case errors.Is(e.err, context.DeadlineExceeded):
		msg = context.DeadlineExceeded.Error()
	case errors.As(e.err, &send) && send.Err != nil:
		msg = "could not reach AWS: " + send.Err.Error()
	default:
		return e.op + ": " + e.err.Error()
	}
	if ma := (*retry.MaxAttemptsError)(nil); errors.As(e.err, &ma) && ma.Attempt > 1 {
		msg += fmt.Sprintf(" (gave up after %d attempts)", ma.Attempt)
	}
	return e.op + ": " + msg
}

func (e *awsError) Unwrap() error { return e.err }

// loadAWSConfig loads the SDK's default configuration, in region unless it
// is empty.
func loadAWSConfig(ctx context.Context, region string) (aws.Config, error) {
	var opts []func(*config.LoadOptions) error
	if region != "" {
		opts = append(opts, config.WithRegion(region))
	}
	cfg, err := config.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return aws.Config{}, fmt.Errorf("load the AWS configuration: %w", err)
	}
	if cfg.Region == "" {
		return aws.Config{}, errors.New("no AWS region: set region on the secret provider in dray.yaml, or AWS_REGION where the agent runs")
	}
	return cfg, nil
}

// lazy makes a client at its first use. A failure is not kept: the next use
// tries again.
type lazy[T any] struct {
	newClient func(context.Context) (T, error)

	mu     sync.Mutex
	made   bool
	client T
}

func (l *lazy[T]) get(ctx context.Context) (T, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.made {
		c, err := l.newClient(ctx)
		if err != nil {
			return c, err
		}
		l.client, l.made = c, true
	}
	return l.client, nil
}

var (
	_ Provider = (*SSM)(nil)
	_ Provider = (*SecretsManager)(nil)
)
