package auth

import (
	"errors"
	"strings"
	"testing"
)

func TestRoleAllows(t *testing.T) {
	// want[holder] lists the roles the holder allows; every other pair is
	// refused.
	want := map[Role][]Role{
		RoleViewer:   {RoleViewer},
		RoleOperator: {RoleViewer, RoleOperator},
		RoleEditor:   {RoleViewer, RoleOperator, RoleEditor},
		RoleAdmin:    {RoleViewer, RoleOperator, RoleEditor, RoleAdmin},
		RoleAgent:    {RoleAgent},
		"":           nil,
		"root":       nil,
	}
	needs := append(Roles(), "", "root")
	for holder, allowed := range want {
		for _, need := range needs {
			exp := false
			for _, a := range allowed {
				exp = exp || a == need
			}
			if got := holder.Allows(need); got != exp {
				t.Errorf("Role(%q).Allows(%q) = %v, want %v", holder, need, got, exp)
			}
		}
	}
}

func TestParseRole(t *testing.T) {
	tests := []struct {
		in   string
		want Role
		err  bool
	}{
		{"viewer", RoleViewer, false},
		{"operator", RoleOperator, false},
		{"editor", RoleEditor, false},
		{"admin", RoleAdmin, false},
		{"agent", RoleAgent, false},
		{" Admin ", RoleAdmin, false},
		{"", "", true},
		{"root", "", true},
		{"admins", "", true},
	}
	for _, tt := range tests {
		got, err := ParseRole(tt.in)
		if (err != nil) != tt.err || got != tt.want {
			t.Errorf("ParseRole(%q) = %q, %v; want %q, error %v", tt.in, got, err, tt.want, tt.err)
		}
		if err == nil {
			continue
		}
		if !errors.Is(err, ErrInvalid) {
			t.Errorf("ParseRole(%q): error %v is not ErrInvalid", tt.in, err)
		}
		for _, r := range Roles() {
			if !strings.Contains(err.Error(), string(r)) {
				t.Errorf("ParseRole(%q): error %q does not list %s", tt.in, err, r)
			}
		}
	}
}
