// Package secrets finds the values of the secrets a task refers to
// (`${{ secrets.db_password }}`) and masks those values in log lines.
//
// A Provider looks names up in one place (the environment, a folder of files,
// AWS SSM Parameter Store, AWS Secrets Manager); a Resolver asks its
// providers in order. A Masker hides resolved values in text.
package secrets

import (
	"context"
	"errors"
	"fmt"
	"strings"
)

// Provider looks secrets up in one place. Implementations are safe for
// concurrent use.
type Provider interface {
	// Name is the provider's kind, such as "env" or "file".
	Name() string
	// Lookup returns the value of the secret name. found is false, with a nil
	// error, when the provider has no such secret; an error means the provider
	// could not tell (an I/O error, a name it cannot hold).
	Lookup(ctx context.Context, name string) (value string, found bool, err error)
	// Where says where Lookup looks for name, for error messages: "env
	// DRAY_SECRET_DB_PASSWORD", "file /run/secrets/db_password".
	Where(name string) string
}

// NotFoundError is the error for secrets that no provider has.
type NotFoundError struct {
	Name   string
	Looked []string // each provider's Where(Name), in order
}

// Error says which secret is missing and where it was looked for:
// "secret db_password not found (looked in env DRAY_SECRET_DB_PASSWORD, file
// .dray/secrets/db_password)".
func (e *NotFoundError) Error() string {
	if len(e.Looked) == 0 {
		return fmt.Sprintf("secret %s not found (no secret providers are configured)", e.Name)
	}
	return fmt.Sprintf("secret %s not found (looked in %s)", e.Name, strings.Join(e.Looked, ", "))
}

// Resolver finds secrets in an ordered list of providers.
type Resolver struct {
	providers []Provider
}

// NewResolver returns a Resolver that asks providers in the order given.
func NewResolver(providers ...Provider) *Resolver {
	return &Resolver{providers: providers}
}

// Resolve returns the value of each of names. For each name, the first
// provider that has it wins. A name that no provider has is a *NotFoundError;
// Resolve reports every missing name (joined with errors.Join), so that a user
// can fix them all at once. A provider's error stops the resolution: a later
// provider is not asked, since its value might not be the one meant. On any
// error the map is nil.
func (r *Resolver) Resolve(ctx context.Context, names []string) (map[string]string, error) {
	values := make(map[string]string, len(names))
	var missing []error
	for _, name := range names {
		if _, done := values[name]; done {
			continue
		}
		v, err := r.lookup(ctx, name)
		var nf *NotFoundError
		switch {
		case errors.As(err, &nf):
			missing = append(missing, err)
		case err != nil:
			return nil, err
		default:
			values[name] = v
		}
	}
	if len(missing) > 0 {
		return nil, errors.Join(missing...)
	}
	return values, nil
}

func (r *Resolver) lookup(ctx context.Context, name string) (string, error) {
	looked := make([]string, 0, len(r.providers))
	for _, p := range r.providers {
		v, found, err := p.Lookup(ctx, name)
		if err != nil {
			return "", fmt.Errorf("resolve secret %s from %s: %w", name, p.Where(name), err)
		}
		if found {
			return v, nil
		}
		looked = append(looked, p.Where(name))
	}
	return "", &NotFoundError{Name: name, Looked: looked}
}
