package auth

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
)

// CSRFHeader is the request header that carries a session's CSRF token.
const CSRFHeader = "X-CSRF-Token"

// Authenticate returns who makes r: the API token in "Authorization: Bearer
// <token>" when the header is present (a bad one fails; the cookie is then
// not tried), else the session cookie. A cookie-authenticated request with a
// method other than GET, HEAD, OPTIONS or TRACE must carry the session's CSRF
// token in the X-CSRF-Token header; a bearer token needs none, as browsers do
// not send it on their own.
//
// Errors wrap ErrUnauthenticated (no credentials, or bad, expired or revoked
// ones: 401) or ErrForbidden (a missing or wrong CSRF token: 403); others are
// the store's (500).
func (s *Service) Authenticate(ctx context.Context, r *http.Request) (*Principal, error) {
	var p *Principal
	var err error
	if h := r.Header.Get("Authorization"); h != "" {
		scheme, tok, _ := strings.Cut(h, " ")
		if !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(tok) == "" {
			return nil, fmt.Errorf("authorization header: want Bearer <token>: %w", ErrUnauthenticated)
		}
		if p, err = s.AuthenticateToken(ctx, strings.TrimSpace(tok)); err != nil {
			return nil, err
		}
	} else {
		c, cerr := r.Cookie(SessionCookieName)
		if errors.Is(cerr, http.ErrNoCookie) || c.Value == "" {
			return nil, fmt.Errorf("no session cookie or bearer token: log in or send Authorization: Bearer <token>: %w", ErrUnauthenticated)
		}
		if p, err = s.AuthenticateSession(ctx, c.Value); err != nil {
			return nil, err
		}
		if !safeMethod(r.Method) {
			got := r.Header.Get(CSRFHeader)
			if got == "" || subtle.ConstantTimeCompare([]byte(got), []byte(p.SessionCSRF)) != 1 {
				return nil, fmt.Errorf("%s %s: missing or wrong %s header: %w", r.Method, r.URL.Path, CSRFHeader, ErrForbidden)
			}
		}
	}
	p.Addr = ClientAddr(r)
	return p, nil
}

// safeMethod reports whether a method changes nothing, so needs no CSRF
// token.
func safeMethod(m string) bool {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		return true
	}
	return false
}

// ClientAddr returns the client's IP address from r.RemoteAddr, for the rate
// limit and the audit log. It ignores X-Forwarded-For and the like, which a
// client can forge; behind a trusted proxy, the server sets r.RemoteAddr from
// the proxy's header before it calls this.
func ClientAddr(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}
