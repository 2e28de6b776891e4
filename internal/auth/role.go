package auth

import (
	"fmt"
	"strings"
)

// Role is what a user or token may do.
//
// The roles viewer < operator < editor < admin form a chain: each allows
// everything the ones below it allow. Agent stands apart: it allows claiming
// and reporting work and nothing else, and no other role allows it, admin
// included, so agent routes take agent tokens only and an admin's credentials
// are never needed on (or leaked from) an agent's machine.
type Role string

// The roles.
const (
	// RoleViewer reads runs, logs, pipelines and schedules.
	RoleViewer Role = "viewer"
	// RoleOperator is a viewer that also triggers, cancels and retries runs
	// and pauses schedules.
	RoleOperator Role = "operator"
	// RoleEditor is an operator that also changes pipelines in development
	// mode.
	RoleEditor Role = "editor"
	// RoleAdmin may do everything but act as an agent: users, tokens, the
	// audit log, settings.
	RoleAdmin Role = "admin"
	// RoleAgent claims task attempts and reports on them, and nothing else.
	RoleAgent Role = "agent"
)

// Roles lists every role, the chain from least to most allowed, then agent.
func Roles() []Role {
	return []Role{RoleViewer, RoleOperator, RoleEditor, RoleAdmin, RoleAgent}
}

// rank orders the chain of roles; agent and unknown roles have none.
func (r Role) rank() int {
	switch r {
	case RoleViewer:
		return 1
	case RoleOperator:
		return 2
	case RoleEditor:
		return 3
	case RoleAdmin:
		return 4
	}
	return 0
}

// Valid reports whether r is one of Roles.
func (r Role) Valid() bool { return r == RoleAgent || r.rank() > 0 }

// Allows reports whether a holder of r may do what needs the role need.
// Agent allows only agent, and only agent allows agent; an unknown role
// allows nothing and is allowed by nothing.
func (r Role) Allows(need Role) bool {
	if r == RoleAgent || need == RoleAgent {
		return r == need
	}
	return r.rank() > 0 && need.rank() > 0 && r.rank() >= need.rank()
}

// String returns the role's name.
func (r Role) String() string { return string(r) }

// ParseRole returns the role named s (case-insensitive). An unknown name is
// an *InputError that lists the valid roles.
func ParseRole(s string) (Role, error) {
	r := Role(strings.ToLower(strings.TrimSpace(s)))
	if r.Valid() {
		return r, nil
	}
	names := make([]string, 0, len(Roles()))
	for _, v := range Roles() {
		names = append(names, string(v))
	}
	return "", &InputError{Field: "role", Message: fmt.Sprintf("unknown role %q: use one of %s", s, strings.Join(names, ", "))}
}
