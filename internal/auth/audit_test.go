package auth

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dray-dev/dray/internal/store"
)

func TestAuditOfChanges(t *testing.T) {
	f := newFixture(t)
	if _, err := f.svc.EnsureAdmin(f.ctx, "root", "root's password"); err != nil {
		t.Fatal(err)
	}
	root := f.login("root", "root's password").Principal
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	_, err := f.svc.CreateUser(f.ctx, root, "bob", RoleViewer, "bob's password")
	must(err)
	must(f.svc.SetRole(f.ctx, root, "bob", RoleOperator))
	must(f.svc.SetPassword(f.ctx, root, "bob", "bob's new password"))
	_, tok, err := f.svc.CreateToken(f.ctx, root, "agent-1", RoleAgent, 720*time.Hour)
	must(err)
	must(f.svc.RevokeToken(f.ctx, root, tok.ID))
	must(f.svc.DeleteUser(f.ctx, root, "bob"))
	must(f.svc.Logout(f.ctx, root))
	for range 5 {
		wantErr(t, "guess", f.loginFrom("root", "guess", "203.0.113.9"), ErrUnauthenticated)
	}
	// Refused changes leave no entry.
	viewer := &Principal{Name: "vera", Role: RoleViewer, Kind: KindUser}
	wantErr(t, "viewer creates", func() error {
		_, err := f.svc.CreateUser(f.ctx, viewer, "eve", RoleAdmin, "eve's password")
		return err
	}(), ErrForbidden)

	type row struct{ actor, action, target, addr string }
	want := []row{
		{"system:bootstrap", ActionUserCreate, "user:root", ""},
		{"root", ActionLogin, "user:root", "192.0.2.1"},
		{"root", ActionUserCreate, "user:bob", "192.0.2.1"},
		{"root", ActionUserRole, "user:bob", "192.0.2.1"},
		{"root", ActionUserPassword, "user:bob", "192.0.2.1"},
		{"root", ActionTokenCreate, "token:" + tok.ID, "192.0.2.1"},
		{"root", ActionTokenRevoke, "token:" + tok.ID, "192.0.2.1"},
		{"root", ActionUserDelete, "user:bob", "192.0.2.1"},
		{"root", ActionLogout, "user:root", "192.0.2.1"},
		{"anonymous", ActionLockout, "user:root", "203.0.113.9"},
	}
	entries := f.audit()
	if len(entries) != len(want) {
		for _, e := range entries {
			t.Logf("%+v", e)
		}
		t.Fatalf("%d audit entries, want %d", len(entries), len(want))
	}
	for i, e := range entries {
		if got := (row{e.Actor, e.Action, e.Target, e.Address}); got != want[i] {
			t.Errorf("entry %d = %+v, want %+v", i, got, want[i])
		}
		if !e.Time.Equal(f.clock.now()) {
			t.Errorf("entry %d at %s", i, e.Time)
		}
		if e.Detail != "" && !json.Valid([]byte(e.Detail)) {
			t.Errorf("entry %d detail %q is not JSON", i, e.Detail)
		}
	}
	var role map[string]string
	if err := json.Unmarshal([]byte(entries[3].Detail), &role); err != nil || role["from"] != "viewer" || role["to"] != "operator" {
		t.Errorf("role change detail %s", entries[3].Detail)
	}
}

func TestAuditAPI(t *testing.T) {
	f := newFixture(t)
	tests := []struct {
		name   string
		detail any
		want   string
		err    bool
	}{
		{"no detail", nil, "", false},
		{"map", map[string]any{"run": "r1", "pipeline": "leaderboard"}, `{"pipeline":"leaderboard","run":"r1"}`, false},
		{"struct", struct {
			Run string `json:"run"`
		}{"r2"}, `{"run":"r2"}`, false},
		{"nil map", map[string]any(nil), "", false},
		{"string", "r3", "", true},
		{"list", []string{"a"}, "", true},
		{"unencodable", map[string]any{"f": func() {}}, "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := f.svc.Audit(f.ctx, "alice", "run.trigger", "run:x", tt.detail, "192.0.2.1")
			if (err != nil) != tt.err {
				t.Fatalf("Audit = %v, want error %v", err, tt.err)
			}
			if err != nil {
				return
			}
			entries, _, err := f.svc.AuditLog(f.ctx, store.AuditFilter{Limit: 1})
			if err != nil {
				t.Fatal(err)
			}
			if entries[0].Detail != tt.want {
				t.Errorf("detail %q, want %q", entries[0].Detail, tt.want)
			}
		})
	}
	if err := f.svc.Audit(f.ctx, "alice", "", "x", nil, ""); err == nil {
		t.Error("an audit entry without an action was written")
	}

	// AuditTx commits and rolls back with its transaction.
	boom := errors.New("boom")
	err := f.store.Update(f.ctx, func(tx store.Tx) error {
		if err := f.svc.AuditTx(f.ctx, tx, "alice", "schedule.pause", "pipeline:p", nil, ""); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatal(err)
	}
	for _, e := range f.audit() {
		if e.Action == "schedule.pause" {
			t.Error("an audit entry of a rolled-back change was kept")
		}
	}
}

func TestAuditLogPages(t *testing.T) {
	f := newFixture(t)
	for i := range 7 {
		actor := "alice"
		if i%2 == 1 {
			actor = "bob"
		}
		if err := f.svc.Audit(f.ctx, actor, "run.trigger", "run:"+string(rune('a'+i)), nil, ""); err != nil {
			t.Fatal(err)
		}
	}
	var got []string
	var before int64
	for page := 0; ; page++ {
		entries, next, err := f.svc.AuditLog(f.ctx, store.AuditFilter{Limit: 3, Before: before})
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			got = append(got, strings.TrimPrefix(e.Target, "run:"))
		}
		if next == 0 {
			break
		}
		if page > 5 {
			t.Fatal("pages do not end")
		}
		before = next
	}
	if s := strings.Join(got, ""); s != "gfedcba" {
		t.Errorf("pages gave %s, want gfedcba", s)
	}
	entries, next, err := f.svc.AuditLog(f.ctx, store.AuditFilter{Actor: "bob"})
	if err != nil || len(entries) != 3 || next != 0 {
		t.Errorf("bob's entries: %d, next %d, %v", len(entries), next, err)
	}
	// Exactly a full page: no next page.
	_, next, err = f.svc.AuditLog(f.ctx, store.AuditFilter{Limit: 7})
	if err != nil || next != 0 {
		t.Errorf("a full last page has next %d, %v", next, err)
	}
}

// TestNoSecretsStored goes through every kind of secret and checks that
// neither the database files nor the logs hold one.
func TestNoSecretsStored(t *testing.T) {
	f := newFixture(t)
	const (
		adminPassword = "Adm1n-Passw0rd-Never-Stored"
		userPassword  = "Us3r-Passw0rd-Never-Stored"
		newPassword   = "N3w-Passw0rd-Never-Stored"
		wrongPassword = "Wr0ng-Passw0rd-Never-Stored"
		typedAsName   = "typed.password.1234"
	)
	if _, err := f.svc.EnsureAdmin(f.ctx, "root", adminPassword); err != nil {
		t.Fatal(err)
	}
	root := f.login("root", adminPassword)
	if _, err := f.svc.CreateUser(f.ctx, root.Principal, "bob", RoleOperator, userPassword); err != nil {
		t.Fatal(err)
	}
	bob := f.login("bob", userPassword)
	wantErr(t, "wrong", f.loginFrom("bob", wrongPassword, "192.0.2.8"), ErrUnauthenticated)
	// A password typed in the name field, five times: a lockout.
	for range 5 {
		wantErr(t, "password as name", f.loginFrom(typedAsName, "", "192.0.2.9"), ErrUnauthenticated)
	}
	p, err := f.svc.Authenticate(f.ctx, request(http.MethodGet, "", bob.Cookie, ""))
	if err != nil {
		t.Fatal(err)
	}
	if err := f.svc.ChangePassword(f.ctx, p, userPassword, newPassword); err != nil {
		t.Fatal(err)
	}
	secret, tok, err := f.svc.CreateToken(f.ctx, root.Principal, "agent", RoleAgent, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.svc.Authenticate(f.ctx, request(http.MethodPost, secret, "", "")); err != nil {
		t.Fatal(err)
	}
	tokenSecret := strings.TrimPrefix(secret, "dray_"+tok.ID+"_")
	secrets := map[string]string{
		"admin password": adminPassword, "user password": userPassword, "new password": newPassword,
		"wrong password": wrongPassword, "token": secret, "token secret": tokenSecret,
		"root's cookie": root.Cookie, "bob's cookie": bob.Cookie, "password typed as a name": typedAsName,
	}

	// Every byte the database wrote, in the main file and its journal.
	if err := f.store.Close(); err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob(filepath.Join(f.dir, "dray.db*"))
	if len(files) == 0 {
		t.Fatal("no database files")
	}
	var db []byte
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		db = append(db, b...)
	}
	// The stored hashes are there (the check can see what is stored).
	if !bytes.Contains(db, []byte("$argon2id$v=19$")) || !bytes.Contains(db, []byte(hashToken(secret))) {
		t.Fatal("the database holds no hashes: the scan sees nothing")
	}
	logs := f.logs.String()
	if !strings.Contains(logs, "login") || !strings.Contains(logs, "locked out") {
		t.Fatal("nothing was logged: the scan sees nothing")
	}
	for what, s := range secrets {
		if bytes.Contains(db, []byte(s)) {
			t.Errorf("the database holds the %s", what)
		}
		if strings.Contains(logs, s) {
			t.Errorf("the logs hold the %s", what)
		}
	}
}
