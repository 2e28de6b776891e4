package secrets

import (
	"context"
	"errors"
	"fmt"
	"os"
)

// EnvPrefix is the usual prefix of secrets in the agent's environment.
const EnvPrefix = "DRAY_SECRET_"

// Env is a Provider that reads secrets from environment variables.
type Env struct {
	prefix string
	// LookupEnv reads a variable; NewEnv sets it to os.LookupEnv. Tests may
	// replace it before the first Lookup.
	LookupEnv func(key string) (string, bool)
}

// NewEnv returns a Provider that finds secret name in the environment
// variable prefix + EnvName(name): with prefix EnvPrefix, db_password is
// DRAY_SECRET_DB_PASSWORD.
func NewEnv(prefix string) *Env {
	return &Env{prefix: prefix, LookupEnv: os.LookupEnv}
}

// Name returns "env".
func (e *Env) Name() string { return "env" }

// Where returns "env " and the variable that holds name.
func (e *Env) Where(name string) string { return "env " + e.prefix + EnvName(name) }

// Lookup returns the value of the variable that holds name. A variable that
// is set but empty is found, with an empty value.
func (e *Env) Lookup(ctx context.Context, name string) (string, bool, error) {
	if err := ctx.Err(); err != nil {
		return "", false, fmt.Errorf("look up secret %s in env: %w", name, err)
	}
	if name == "" {
		return "", false, errors.New("look up secret in env: empty name")
	}
	v, ok := e.LookupEnv(e.prefix + EnvName(name))
	return v, ok, nil
}

// EnvName turns a secret's name into the environment variable name part that
// holds it: upper case, with every byte that is not an ASCII letter or digit
// replaced by '_' ("db-password.v2" becomes "DB_PASSWORD_V2").
func EnvName(name string) string {
	b := []byte(name)
	for i, c := range b {
		switch {
		case 'a' <= c && c <= 'z':
			b[i] = c - 'a' + 'A'
		case 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		default:
			b[i] = '_'
		}
	}
	return string(b)
}

var _ Provider = (*Env)(nil)
