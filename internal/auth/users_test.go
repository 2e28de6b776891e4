package auth

import (
	"net/http"
	"strings"
	"testing"

	"github.com/dray-dev/dray/internal/store"
)

func TestEnsureAdmin(t *testing.T) {
	f := newFixture(t)
	_, err := f.svc.EnsureAdmin(f.ctx, "root", "short")
	wantErr(t, "short password", err, ErrInvalid)
	_, err = f.svc.EnsureAdmin(f.ctx, "Root", "long enough password")
	wantErr(t, "bad name", err, ErrInvalid)

	created, err := f.svc.EnsureAdmin(f.ctx, "root", "long enough password")
	if err != nil || !created {
		t.Fatalf("EnsureAdmin on an empty store = %v, %v; want created", created, err)
	}
	// Idempotent, and it never changes an existing admin's password.
	created, err = f.svc.EnsureAdmin(f.ctx, "root", "another password")
	if err != nil || created {
		t.Fatalf("EnsureAdmin again = %v, %v; want nothing done", created, err)
	}
	res := f.login("root", "long enough password")
	if res.Principal.Role != RoleAdmin {
		t.Errorf("role %s, want admin", res.Principal.Role)
	}
	wantErr(t, "changed password", f.loginFrom("root", "another password", "192.0.2.9"), ErrUnauthenticated)

	// Any user at all, admin or not, stops it.
	g := newFixture(t)
	g.user("vera", RoleViewer, "vera's password")
	created, err = g.svc.EnsureAdmin(g.ctx, "root", "long enough password")
	if err != nil || created {
		t.Fatalf("EnsureAdmin with a viewer = %v, %v; want nothing done", created, err)
	}
	if _, err := g.svc.User(g.ctx, "root"); err == nil {
		t.Error("EnsureAdmin created root next to another user")
	}
	entries := f.audit()
	if len(entries) == 0 || entries[0].Action != ActionUserCreate || entries[0].Actor != "system:bootstrap" || entries[0].Target != "user:root" {
		t.Errorf("first audit entry %+v, want user.create by system:bootstrap", entries[0])
	}
}

func TestCreateUserInput(t *testing.T) {
	f := newFixture(t)
	f.user("alice", RoleAdmin, "alice's password")
	admin := f.login("alice", "alice's password").Principal
	tests := []struct {
		name     string
		actor    *Principal
		user     string
		role     Role
		password string
		err      error
	}{
		{"ok", admin, "bob", RoleOperator, "bob's password", nil},
		{"taken", admin, "bob", RoleViewer, "bob's password", ErrExists},
		{"editor may not", &Principal{Name: "ed", Role: RoleEditor}, "carol", RoleViewer, "carol's password", ErrForbidden},
		{"agent token may not", &Principal{Name: "token:x", Role: RoleAgent}, "carol", RoleViewer, "carol's password", ErrForbidden},
		{"no actor", nil, "carol", RoleViewer, "carol's password", ErrUnauthenticated},
		{"agent role", admin, "carol", RoleAgent, "carol's password", ErrInvalid},
		{"unknown role", admin, "carol", "root", "carol's password", ErrInvalid},
		{"empty password", admin, "carol", RoleViewer, "", ErrInvalid},
		{"short password", admin, "carol", RoleViewer, "1234567", ErrInvalid},
		{"password is the name", admin, "carolcarol", RoleViewer, "carolcarol", ErrInvalid},
		{"bad name", admin, "Carol", RoleViewer, "carol's password", ErrInvalid},
		{"name with colon", admin, "token:x", RoleViewer, "carol's password", ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			info, err := f.svc.CreateUser(f.ctx, tt.actor, tt.user, tt.role, tt.password)
			wantErr(t, "create user", err, tt.err)
			if err == nil && (info.Name != tt.user || info.Role != tt.role || info.CreatedAt.IsZero()) {
				t.Errorf("created %+v", info)
			}
		})
	}
	users, err := f.svc.Users(f.ctx)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, u := range users {
		names = append(names, u.Name+":"+string(u.Role))
	}
	if got := strings.Join(names, " "); got != "alice:admin bob:operator" {
		t.Errorf("users = %s", got)
	}
}

func TestSetRole(t *testing.T) {
	f := newFixture(t)
	f.user("alice", RoleAdmin, "alice's password")
	f.user("bob", RoleViewer, "bob's password")
	sys := System("test")
	bob := f.login("bob", "bob's password")
	bobReq := func() *Principal {
		t.Helper()
		p, err := f.svc.Authenticate(f.ctx, request(http.MethodGet, "", bob.Cookie, ""))
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	// A role change applies to the next request of a live session.
	if err := f.svc.SetRole(f.ctx, sys, "bob", RoleEditor); err != nil {
		t.Fatal(err)
	}
	if r := bobReq().Role; r != RoleEditor {
		t.Errorf("bob's role after the change: %s", r)
	}
	wantErr(t, "non-admin", f.svc.SetRole(f.ctx, bobReq(), "bob", RoleAdmin), ErrForbidden)
	wantErr(t, "agent role", f.svc.SetRole(f.ctx, sys, "bob", RoleAgent), ErrInvalid)
	wantErr(t, "unknown user", f.svc.SetRole(f.ctx, sys, "nobody", RoleViewer), store.ErrNotFound)
	// The last admin stays.
	wantErr(t, "demote last admin", f.svc.SetRole(f.ctx, sys, "alice", RoleViewer), ErrLastAdmin)
	wantErr(t, "delete last admin", f.svc.DeleteUser(f.ctx, sys, "alice"), ErrLastAdmin)
	if err := f.svc.SetRole(f.ctx, sys, "bob", RoleAdmin); err != nil {
		t.Fatal(err)
	}
	if err := f.svc.SetRole(f.ctx, sys, "alice", RoleViewer); err != nil {
		t.Fatalf("demote one of two admins: %v", err)
	}
}

func TestDeleteUser(t *testing.T) {
	f := newFixture(t)
	f.user("alice", RoleAdmin, "alice's password")
	f.user("bob", RoleOperator, "bob's password")
	bob := f.login("bob", "bob's password")
	wantErr(t, "non-admin", f.svc.DeleteUser(f.ctx, bob.Principal, "alice"), ErrForbidden)
	if err := f.svc.DeleteUser(f.ctx, System("test"), "bob"); err != nil {
		t.Fatal(err)
	}
	_, err := f.svc.Authenticate(f.ctx, request(http.MethodGet, "", bob.Cookie, ""))
	wantErr(t, "deleted user's session", err, ErrUnauthenticated)
	wantErr(t, "deleted user's login", f.loginFrom("bob", "bob's password", "192.0.2.3"), ErrUnauthenticated)
	wantErr(t, "delete again", f.svc.DeleteUser(f.ctx, System("test"), "bob"), store.ErrNotFound)
	// The name is free again.
	f.user("bob", RoleViewer, "bob's new password")
}

func TestSetPassword(t *testing.T) {
	f := newFixture(t)
	f.user("alice", RoleAdmin, "alice's password")
	f.user("bob", RoleViewer, "bob's password")
	s1, s2 := f.login("bob", "bob's password"), f.login("bob", "bob's password")
	wantErr(t, "by bob", f.svc.SetPassword(f.ctx, s1.Principal, "bob", "bob's new password"), ErrForbidden)
	wantErr(t, "short", f.svc.SetPassword(f.ctx, System("t"), "bob", "short"), ErrInvalid)
	wantErr(t, "unknown", f.svc.SetPassword(f.ctx, System("t"), "nobody", "a fine password"), store.ErrNotFound)
	// An admin's reset ends every session.
	if err := f.svc.SetPassword(f.ctx, System("t"), "bob", "bob's reset password"); err != nil {
		t.Fatal(err)
	}
	for _, s := range []*LoginResult{s1, s2} {
		_, err := f.svc.Authenticate(f.ctx, request(http.MethodGet, "", s.Cookie, ""))
		wantErr(t, "session after reset", err, ErrUnauthenticated)
	}
	wantErr(t, "old password", f.loginFrom("bob", "bob's password", "192.0.2.4"), ErrUnauthenticated)

	// Bob changes his own: his session stays, the other ends.
	s3, s4 := f.login("bob", "bob's reset password"), f.login("bob", "bob's reset password")
	p3, err := f.svc.Authenticate(f.ctx, request(http.MethodGet, "", s3.Cookie, ""))
	if err != nil {
		t.Fatal(err)
	}
	wantErr(t, "wrong current", f.svc.ChangePassword(f.ctx, p3, "wrong", "bob's own password"), ErrForbidden)
	wantErr(t, "token changes", f.svc.ChangePassword(f.ctx, &Principal{Name: "token:x", Role: RoleAdmin, Kind: KindToken}, "x", "bob's own password"), ErrForbidden)
	wantErr(t, "too short", f.svc.ChangePassword(f.ctx, p3, "bob's reset password", "short"), ErrInvalid)
	if err := f.svc.ChangePassword(f.ctx, p3, "bob's reset password", "bob's own password"); err != nil {
		t.Fatal(err)
	}
	if _, err := f.svc.Authenticate(f.ctx, request(http.MethodGet, "", s3.Cookie, "")); err != nil {
		t.Errorf("the changing session ended: %v", err)
	}
	_, err = f.svc.Authenticate(f.ctx, request(http.MethodGet, "", s4.Cookie, ""))
	wantErr(t, "other session", err, ErrUnauthenticated)
	f.login("bob", "bob's own password")
}
