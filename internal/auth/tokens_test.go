package auth

import (
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/dray-dev/dray/internal/store"
)

func TestTokenLifecycle(t *testing.T) {
	f := newFixture(t)
	secret, info := f.token("agent-eu-1", RoleAgent, 0)
	if !regexp.MustCompile(`^dray_[0-9a-f]{12}_[A-Za-z0-9_-]{43}$`).MatchString(secret) {
		t.Fatalf("token %q does not look like dray_<id>_<secret>", secret)
	}
	if !strings.HasPrefix(secret, "dray_"+info.ID+"_") || info.Name != "agent-eu-1" || info.Role != RoleAgent ||
		info.CreatedBy != "system:test" || !info.ExpiresAt.IsZero() {
		t.Fatalf("token info %+v for %s", info, secret)
	}

	p, err := f.svc.Authenticate(f.ctx, request(http.MethodPost, secret, "", ""))
	if err != nil {
		t.Fatal(err)
	}
	want := Principal{Name: "token:" + info.ID, Role: RoleAgent, Kind: KindToken, TokenID: info.ID, TokenName: "agent-eu-1", Addr: "198.51.100.7"}
	if *p != want {
		t.Errorf("principal = %+v, want %+v", *p, want)
	}
	wantErr(t, "agent reads runs", p.Require(RoleViewer), ErrForbidden)

	// The same id with another secret, a cut-off token, garbage.
	other := "dray_" + info.ID + "_" + strings.Repeat("A", 43)
	for _, bad := range []string{other, secret[:len(secret)-1], secret + "A", "dray_", "nonsense", strings.ToUpper(secret)} {
		_, err := f.svc.Authenticate(f.ctx, request(http.MethodGet, bad, "", ""))
		wantErr(t, "token "+bad, err, ErrUnauthenticated)
	}

	if err := f.svc.RevokeToken(f.ctx, &Principal{Name: "olga", Role: RoleOperator}, info.ID); err == nil {
		t.Fatal("an operator revoked a token")
	}
	if err := f.svc.RevokeToken(f.ctx, System("test"), info.ID); err != nil {
		t.Fatal(err)
	}
	_, err = f.svc.Authenticate(f.ctx, request(http.MethodGet, secret, "", ""))
	wantErr(t, "revoked token", err, ErrUnauthenticated)
	// Revoking again changes nothing; an unknown id is not found.
	wantErr(t, "revoke twice", f.svc.RevokeToken(f.ctx, System("test"), info.ID), nil)
	wantErr(t, "revoke unknown", f.svc.RevokeToken(f.ctx, System("test"), "000000000000"), store.ErrNotFound)

	toks, err := f.svc.Tokens(f.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(toks) != 1 || toks[0].ID != info.ID || toks[0].RevokedAt.IsZero() {
		t.Errorf("tokens = %+v, want the one token, revoked", toks)
	}
}

func TestTokenExpiry(t *testing.T) {
	f := newFixture(t)
	secret, info := f.token("ci", RoleOperator, time.Hour)
	if want := f.clock.now().Add(time.Hour); !info.ExpiresAt.Equal(want) {
		t.Fatalf("expires at %s, want %s", info.ExpiresAt, want)
	}
	f.clock.add(time.Hour - time.Second)
	if _, err := f.svc.AuthenticateToken(f.ctx, secret); err != nil {
		t.Fatalf("a second before expiry: %v", err)
	}
	f.clock.add(time.Second)
	_, err := f.svc.AuthenticateToken(f.ctx, secret)
	wantErr(t, "at expiry", err, ErrUnauthenticated)
}

func TestCreateTokenInput(t *testing.T) {
	f := newFixture(t)
	tests := []struct {
		name  string
		actor *Principal
		tok   string
		role  Role
		ttl   time.Duration
		err   error
	}{
		{"viewer may not", &Principal{Name: "v", Role: RoleViewer}, "x", RoleViewer, 0, ErrForbidden},
		{"agent may not", &Principal{Name: "token:x", Role: RoleAgent}, "x", RoleAgent, 0, ErrForbidden},
		{"nobody may not", nil, "x", RoleAgent, 0, ErrUnauthenticated},
		{"empty name", System("t"), " ", RoleAgent, 0, ErrInvalid},
		{"control character", System("t"), "a\x1bb", RoleAgent, 0, ErrInvalid},
		{"long name", System("t"), strings.Repeat("n", 65), RoleAgent, 0, ErrInvalid},
		{"unknown role", System("t"), "x", "root", 0, ErrInvalid},
		{"negative ttl", System("t"), "x", RoleAgent, -time.Hour, ErrInvalid},
		{"admin token by a token", &Principal{Name: "token:y", Role: RoleAdmin}, "x", RoleAdmin, 720 * time.Hour, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := f.svc.CreateToken(f.ctx, tt.actor, tt.tok, tt.role, tt.ttl)
			wantErr(t, "create token", err, tt.err)
		})
	}
}

func TestTokenLastUsedThrottled(t *testing.T) {
	f := newFixture(t)
	secret, info := f.token("busy-agent", RoleAgent, 0)
	lastUsed := func() time.Time {
		t.Helper()
		toks, err := f.svc.Tokens(f.ctx)
		if err != nil {
			t.Fatal(err)
		}
		return toks[0].LastUsedAt
	}
	if !lastUsed().IsZero() {
		t.Fatal("a new token has been used")
	}
	t0 := f.clock.now()
	steps := []struct {
		after time.Duration // since t0
		want  time.Duration // LastUsedAt - t0
	}{
		{0, 0},
		{10 * time.Second, 0},
		{59 * time.Second, 0},
		{60 * time.Second, 60 * time.Second},
		{61 * time.Second, 60 * time.Second},
		{119 * time.Second, 60 * time.Second},
		{5 * time.Minute, 5 * time.Minute},
	}
	for _, s := range steps {
		f.clock.set(t0.Add(s.after))
		if _, err := f.svc.AuthenticateToken(f.ctx, secret); err != nil {
			t.Fatal(err)
		}
		if got := lastUsed(); !got.Equal(t0.Add(s.want)) {
			t.Errorf("after a use at t0+%s: last used t0+%s, want t0+%s", s.after, got.Sub(t0), s.want)
		}
	}
	// A use does not undo a revocation made in between.
	if err := f.svc.RevokeToken(f.ctx, System("test"), info.ID); err != nil {
		t.Fatal(err)
	}
	f.svc.touchToken(f.ctx, info.ID, f.clock.now().Add(time.Hour))
	toks, _ := f.svc.Tokens(f.ctx)
	if toks[0].RevokedAt.IsZero() {
		t.Error("touching a revoked token un-revoked it")
	}
}
