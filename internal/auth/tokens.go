package auth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode"

	"github.com/dray-dev/dray/internal/store"
)

// An API token is "dray_<id>_<secret>": id is 12 hex digits, public (shown in
// lists and the audit log as "token:<id>"), and secret is 32 random bytes in
// unpadded base64url. The store keeps the SHA-256 of the whole token.
const (
	tokenPrefix    = "dray_"
	tokenIDBytes   = 6
	tokenSecretLen = 32
	maxTokenName   = 64
)

// TokenInfo is a token as the API shows it: no secret, no hash.
type TokenInfo struct {
	ID         string    `json:"id"`
	Name       string    `json:"name"`
	Role       Role      `json:"role"`
	CreatedBy  string    `json:"created_by"`
	CreatedAt  time.Time `json:"created_at"`
	ExpiresAt  time.Time `json:"expires_at,omitzero"`
	LastUsedAt time.Time `json:"last_used_at,omitzero"`
	RevokedAt  time.Time `json:"revoked_at,omitzero"`
}

func tokenInfo(t *store.Token) TokenInfo {
	return TokenInfo{ID: t.ID, Name: t.Name, Role: Role(t.Role), CreatedBy: t.CreatedBy, CreatedAt: t.CreatedAt,
		ExpiresAt: t.ExpiresAt, LastUsedAt: t.LastUsedAt, RevokedAt: t.RevokedAt}
}

// hashToken is what the store keeps of a token (or a session cookie): the
// SHA-256 of the whole value, in hex.
func hashToken(tok string) string {
	sum := sha256.Sum256([]byte(tok))
	return hex.EncodeToString(sum[:])
}

// newToken returns a fresh token and its id.
func newToken() (tok, id string) {
	idb := make([]byte, tokenIDBytes)
	rand.Read(idb)
	secret := make([]byte, tokenSecretLen)
	rand.Read(secret)
	id = hex.EncodeToString(idb)
	return tokenPrefix + id + "_" + base64.RawURLEncoding.EncodeToString(secret), id
}

// parseToken returns the id of a token of the right shape.
func parseToken(tok string) (id string, ok bool) {
	rest, ok := strings.CutPrefix(tok, tokenPrefix)
	if !ok {
		return "", false
	}
	id, secret, ok := strings.Cut(rest, "_")
	if !ok || len(id) != 2*tokenIDBytes || base64.RawURLEncoding.DecodedLen(len(secret)) != tokenSecretLen {
		return "", false
	}
	if _, err := hex.DecodeString(id); err != nil || strings.ToLower(id) != id {
		return "", false
	}
	if _, err := base64.RawURLEncoding.Strict().DecodeString(secret); err != nil {
		return "", false
	}
	return id, true
}

func checkTokenName(name string) error {
	bad := func(msg string) error { return &InputError{Field: "name", Message: msg} }
	if strings.TrimSpace(name) == "" {
		return bad("token name is empty: name it for what uses it, such as agent-eu-1")
	}
	if len(name) > maxTokenName {
		return bad(fmt.Sprintf("token name is too long: %d bytes, at most %d", len(name), maxTokenName))
	}
	for _, c := range name {
		if !unicode.IsPrint(c) {
			return bad(fmt.Sprintf("token name %q has a character that is not printable", name))
		}
	}
	return nil
}

// CreateToken creates an API token with a role that expires after ttl (0:
// never); actor must be an admin. It returns the token, to be shown once:
// only its hash is stored.
func (s *Service) CreateToken(ctx context.Context, actor *Principal, name string, role Role, ttl time.Duration) (secret string, info TokenInfo, err error) {
	if err := actor.Require(RoleAdmin); err != nil {
		return "", TokenInfo{}, fmt.Errorf("create token %q: %w", name, err)
	}
	if err := checkTokenName(name); err != nil {
		return "", TokenInfo{}, fmt.Errorf("create token: %w", err)
	}
	if !role.Valid() {
		_, err := ParseRole(string(role))
		return "", TokenInfo{}, fmt.Errorf("create token %q: %w", name, err)
	}
	if ttl < 0 {
		return "", TokenInfo{}, fmt.Errorf("create token %q: %w", name,
			&InputError{Field: "expires", Message: fmt.Sprintf("expiry %s is negative: give a duration such as 720h, or 0 for never", ttl)})
	}
	now := s.now()
	t := &store.Token{Name: name, Role: string(role), CreatedBy: actor.Name, CreatedAt: now}
	if ttl > 0 {
		t.ExpiresAt = now.Add(ttl)
	}
	err = s.store.Update(ctx, func(tx store.Tx) error {
		// PutToken replaces: draw ids until one is free (a clash of 48
		// random bits is all but impossible, but must not overwrite a token).
		for range 8 {
			secret, t.ID = newToken()
			switch _, err := tx.Token(ctx, t.ID); {
			case errors.Is(err, store.ErrNotFound):
				t.Hash = hashToken(secret)
				if err := tx.PutToken(ctx, t); err != nil {
					return err
				}
				detail := map[string]any{"name": name, "role": role}
				if !t.ExpiresAt.IsZero() {
					detail["expires_at"] = t.ExpiresAt
				}
				return s.AuditTx(ctx, tx, actor.actor(), ActionTokenCreate, "token:"+t.ID, detail, actor.addr())
			case err != nil:
				return err
			}
		}
		return errors.New("no free token id")
	})
	if err != nil {
		return "", TokenInfo{}, fmt.Errorf("create token %q: %w", name, err)
	}
	s.log.Info("token created", "token", t.ID, "name", name, "role", role, "actor", actor.actor())
	return secret, tokenInfo(t), nil
}

// RevokeToken revokes a token by id; actor must be an admin. Revoking a
// revoked token does nothing. An unknown id is store.ErrNotFound.
func (s *Service) RevokeToken(ctx context.Context, actor *Principal, id string) error {
	if err := actor.Require(RoleAdmin); err != nil {
		return fmt.Errorf("revoke token %s: %w", id, err)
	}
	err := s.store.Update(ctx, func(tx store.Tx) error {
		t, err := tx.Token(ctx, id)
		if err != nil {
			return err
		}
		if !t.RevokedAt.IsZero() {
			return nil
		}
		t.RevokedAt = s.now()
		if err := tx.PutToken(ctx, t); err != nil {
			return err
		}
		return s.AuditTx(ctx, tx, actor.actor(), ActionTokenRevoke, "token:"+id, map[string]any{"name": t.Name}, actor.addr())
	})
	if err != nil {
		return fmt.Errorf("revoke token %s: %w", id, err)
	}
	s.log.Info("token revoked", "token", id, "actor", actor.actor())
	return nil
}

// Tokens lists every token, oldest first, revoked and expired ones included.
func (s *Service) Tokens(ctx context.Context) ([]TokenInfo, error) {
	var toks []*store.Token
	if err := s.store.View(ctx, func(tx store.Tx) error {
		var err error
		toks, err = tx.Tokens(ctx)
		return err
	}); err != nil {
		return nil, fmt.Errorf("list tokens: %w", err)
	}
	out := make([]TokenInfo, len(toks))
	for i, t := range toks {
		out[i] = tokenInfo(t)
	}
	return out, nil
}

// AuthenticateToken returns the principal of an API token, or an error that
// wraps ErrUnauthenticated when the token is malformed, unknown, expired or
// revoked.
func (s *Service) AuthenticateToken(ctx context.Context, tok string) (*Principal, error) {
	id, ok := parseToken(tok)
	if !ok {
		return nil, fmt.Errorf("token is malformed: %w", ErrUnauthenticated)
	}
	var t *store.Token
	err := s.store.View(ctx, func(tx store.Tx) error {
		var err error
		t, err = tx.Token(ctx, id)
		return err
	})
	switch {
	case errors.Is(err, store.ErrNotFound):
		return nil, fmt.Errorf("token %s is unknown: %w", id, ErrUnauthenticated)
	case err != nil:
		return nil, fmt.Errorf("read token %s: %w", id, err)
	}
	if subtle.ConstantTimeCompare([]byte(hashToken(tok)), []byte(t.Hash)) != 1 {
		return nil, fmt.Errorf("token %s: wrong secret: %w", id, ErrUnauthenticated)
	}
	now := s.now()
	if !t.RevokedAt.IsZero() {
		return nil, fmt.Errorf("token %s was revoked: %w", id, ErrUnauthenticated)
	}
	if !t.ExpiresAt.IsZero() && !now.Before(t.ExpiresAt) {
		return nil, fmt.Errorf("token %s expired at %s: %w", id, t.ExpiresAt.Format(time.RFC3339), ErrUnauthenticated)
	}
	role := Role(t.Role)
	if !role.Valid() {
		s.log.Error("token has an unknown role", "token", id, "role", t.Role)
		return nil, fmt.Errorf("token %s has unknown role %q: %w", id, t.Role, ErrUnauthenticated)
	}
	if now.Sub(t.LastUsedAt) >= s.cfg.TokenTouch {
		s.touchToken(ctx, id, now)
	}
	return &Principal{Name: "token:" + id, Role: role, Kind: KindToken, TokenID: id, TokenName: t.Name}, nil
}

// touchToken records that a token was used at now, unless a use within the
// last TokenTouch was recorded already. It reads the token again in the
// write transaction so as not to undo a revocation; a failure is logged and
// does not fail the request.
func (s *Service) touchToken(ctx context.Context, id string, now time.Time) {
	err := s.store.Update(ctx, func(tx store.Tx) error {
		t, err := tx.Token(ctx, id)
		if err != nil {
			return err
		}
		if !t.RevokedAt.IsZero() || now.Sub(t.LastUsedAt) < s.cfg.TokenTouch {
			return nil
		}
		t.LastUsedAt = now
		return tx.PutToken(ctx, t)
	})
	if err != nil {
		s.log.Warn("record token use", "token", id, "err", err)
	}
}
