package auth

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/dray-dev/dray/internal/store"
)

// SessionCookieName is the name of the login session's cookie.
const SessionCookieName = "dray_session"

// randomValue returns 32 random bytes in unpadded base64url.
func randomValue() string {
	b := make([]byte, 32)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// LoginResult is a new login session.
type LoginResult struct {
	// Cookie is the session cookie's value, shown only here: the store keeps
	// its SHA-256. Set it with SessionCookie.
	Cookie    string
	ExpiresAt time.Time
	// Principal is the logged-in user, with the session's CSRF token.
	Principal *Principal
}

// Login checks a user's password and starts a session. addr is the client's
// address, for the rate limit and the audit log.
//
// A wrong password and an unknown user fail alike, with an error that wraps
// ErrUnauthenticated, after the same work. Too many failures for the user name
// or from the address fail with a *RateLimitError (ErrRateLimited), even when
// the password is right.
func (s *Service) Login(ctx context.Context, username, password, addr string) (*LoginResult, error) {
	name := strings.ToLower(username)
	key := name
	if CheckUserName(name) != nil {
		// Names no user can have share one counter, so the limiter does not
		// grow with whatever clients send.
		key = invalidName
	}
	if err := s.limiter.begin(key, addr, s.now()); err != nil {
		s.log.Info("login rate limited", "addr", addr)
		return nil, fmt.Errorf("login: %w", err)
	}
	res, known, failed, err := s.login(ctx, name, password, addr)
	// Settle the reservation whatever happened; only a wrong user name or
	// password counts as a failure (not a database error or a canceled
	// request).
	o := loginOK
	switch {
	case failed:
		o = loginFailed
	case err != nil:
		o = loginError
	}
	lockouts := s.limiter.end(key, addr, o, s.now())
	// A name that is no user's may be a password typed in the wrong field:
	// it goes to no log and no audit entry.
	shown := name
	if !known {
		shown = unknownUser
	}
	if failed {
		s.log.Info("login failed", "user", shown, "addr", addr)
		s.recordLockouts(ctx, lockouts, shown, addr)
		return nil, fmt.Errorf("login: wrong user name or password: %w", ErrUnauthenticated)
	}
	if err != nil {
		return nil, fmt.Errorf("login %s: %w", shown, err)
	}
	s.log.Info("login", "user", name, "addr", addr)
	return res, nil
}

// Stand-ins for a user name that is no user's.
const (
	invalidName = "(invalid)" // the limiter's key for names no user can have
	unknownUser = "(unknown)" // what logs and the audit log show
)

// login checks the password and creates the session. known reports that the
// user exists; failed, a wrong user name or password.
func (s *Service) login(ctx context.Context, name, password, addr string) (res *LoginResult, known, failed bool, err error) {
	var u *store.User
	if CheckUserName(name) == nil {
		err = s.store.View(ctx, func(tx store.Tx) error {
			var err error
			u, err = tx.User(ctx, name)
			return err
		})
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return nil, false, false, err
		}
	}
	known = u != nil
	hash := s.dummyHash()
	if known {
		hash = u.PasswordHash
	}
	ok, err := s.verify(ctx, password, hash)
	if err != nil {
		if ctx.Err() != nil {
			return nil, known, false, err
		}
		s.log.Error("stored password hash is unreadable", "user", name, "err", err)
		ok = false
	}
	if !ok || !known {
		return nil, known, true, nil
	}
	// Replace a hash made with other parameters, now the password is known.
	var rehash string
	if needsRehash(u.PasswordHash, s.cfg.Hash) {
		if rehash, err = s.hash(ctx, password); err != nil {
			return nil, known, false, err
		}
	}
	now := s.now()
	cookie := randomValue()
	sess := &store.Session{ID: hashToken(cookie), User: name, CSRF: randomValue(), CreatedAt: now, ExpiresAt: now.Add(s.cfg.SessionTTL)}
	var role Role
	err = s.store.Update(ctx, func(tx store.Tx) error {
		// The user may have been deleted, or changed, since the check.
		cur, err := tx.User(ctx, name)
		if err != nil {
			return err
		}
		if cur.PasswordHash != u.PasswordHash {
			return errors.New("the password changed during the login: try again")
		}
		if role = Role(cur.Role); !role.Valid() || role == RoleAgent {
			return fmt.Errorf("user has role %q, which users may not have", cur.Role)
		}
		if rehash != "" {
			cur.PasswordHash = rehash
			if err := tx.PutUser(ctx, cur); err != nil {
				return err
			}
		}
		if err := tx.PutSession(ctx, sess); err != nil {
			return err
		}
		return s.AuditTx(ctx, tx, name, ActionLogin, "user:"+name, nil, addr)
	})
	switch {
	case errors.Is(err, store.ErrNotFound):
		return nil, false, true, nil
	case err != nil:
		return nil, known, false, err
	}
	return &LoginResult{
		Cookie:    cookie,
		ExpiresAt: sess.ExpiresAt,
		Principal: &Principal{Name: name, Role: role, Kind: KindUser, SessionCSRF: sess.CSRF, Addr: addr, session: sess.ID},
	}, known, false, nil
}

// recordLockouts logs and audits the lockouts a failed login of user (or
// unknownUser) caused.
func (s *Service) recordLockouts(ctx context.Context, lockouts []lockout, user, addr string) {
	for _, l := range lockouts {
		target := "addr:" + l.key
		if l.user {
			target = "user:" + user
		}
		s.log.Warn("login locked out", "target", target, "failures", l.failures, "until", l.until, "addr", addr)
		detail := map[string]any{"failures": l.failures, "until": l.until}
		if err := s.Audit(ctx, "anonymous", ActionLockout, target, detail, addr); err != nil {
			s.log.Error("audit lockout", "target", target, "err", err)
		}
	}
}

// Logout ends p's login session. A principal that is not a session's fails
// with ErrUnauthenticated.
func (s *Service) Logout(ctx context.Context, p *Principal) error {
	if p == nil || p.Kind != KindUser || p.session == "" {
		return fmt.Errorf("logout: not a login session: %w", ErrUnauthenticated)
	}
	err := s.store.Update(ctx, func(tx store.Tx) error {
		n, err := tx.DeleteSessions(ctx, p.session, "", time.Time{})
		if err != nil || n == 0 {
			return err
		}
		return s.AuditTx(ctx, tx, p.Name, ActionLogout, "user:"+p.Name, nil, p.Addr)
	})
	if err != nil {
		return fmt.Errorf("logout %s: %w", p.Name, err)
	}
	return nil
}

// SweepSessions deletes the sessions that have expired and returns how many.
func (s *Service) SweepSessions(ctx context.Context) (int, error) {
	var n int
	err := s.store.Update(ctx, func(tx store.Tx) error {
		var err error
		n, err = tx.DeleteSessions(ctx, "", "", s.now())
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("sweep sessions: %w", err)
	}
	return n, nil
}

// AuthenticateSession returns the principal of a session cookie's value, or
// an error that wraps ErrUnauthenticated when there is no such session or it
// expired. It does not check CSRF; Authenticate does.
func (s *Service) AuthenticateSession(ctx context.Context, cookie string) (*Principal, error) {
	if cookie == "" {
		return nil, fmt.Errorf("no session: %w", ErrUnauthenticated)
	}
	id := hashToken(cookie)
	var sess *store.Session
	var u *store.User
	err := s.store.View(ctx, func(tx store.Tx) error {
		var err error
		if sess, err = tx.Session(ctx, id); err != nil {
			return err
		}
		u, err = tx.User(ctx, sess.User)
		return err
	})
	switch {
	case errors.Is(err, store.ErrNotFound):
		return nil, fmt.Errorf("session is unknown or ended: %w", ErrUnauthenticated)
	case err != nil:
		return nil, fmt.Errorf("read session: %w", err)
	}
	if !s.now().Before(sess.ExpiresAt) {
		return nil, fmt.Errorf("session of %s expired at %s: log in again: %w", sess.User, sess.ExpiresAt.Format(time.RFC3339), ErrUnauthenticated)
	}
	// The role is the user's now, not at login: a change applies at once.
	role := Role(u.Role)
	if !role.Valid() || role == RoleAgent {
		s.log.Error("user has a role users may not have", "user", u.Name, "role", u.Role)
		return nil, fmt.Errorf("user %s has role %q: %w", u.Name, u.Role, ErrUnauthenticated)
	}
	return &Principal{Name: u.Name, Role: role, Kind: KindUser, SessionCSRF: sess.CSRF, session: sess.ID}, nil
}

// SessionCookie returns the session cookie for a value from Login:
// HttpOnly, SameSite=Lax, Path=/, expiring with the session, and Secure when
// secure (serve over TLS). Lax rather than Strict lets a link to the UI from
// elsewhere open logged in; no GET changes anything, and unsafe methods need
// the CSRF token.
func SessionCookie(value string, secure bool, expires time.Time) *http.Cookie {
	return &http.Cookie{
		Name:     SessionCookieName,
		Value:    value,
		Path:     "/",
		Expires:  expires,
		HttpOnly: true,
		Secure:   secure,
		SameSite: http.SameSiteLaxMode,
	}
}

// ClearSessionCookie returns a cookie that makes the browser drop the
// session cookie, for logout.
func ClearSessionCookie(secure bool) *http.Cookie {
	c := SessionCookie("", secure, time.Unix(0, 0))
	c.MaxAge = -1
	return c
}
