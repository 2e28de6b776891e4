package auth

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/dray-dev/dray/internal/store"
)

// Audit actions this package writes. The server writes its own (run.trigger,
// run.cancel, run.retry, schedule.pause, ...) through Audit or AuditTx.
const (
	ActionUserCreate   = "user.create"
	ActionUserDelete   = "user.delete"
	ActionUserRole     = "user.role"
	ActionUserPassword = "user.password"
	ActionTokenCreate  = "token.create"
	ActionTokenRevoke  = "token.revoke"
	ActionLogin        = "auth.login"
	ActionLogout       = "auth.logout"
	ActionLockout      = "auth.lockout"
)

// Audit list sizes.
const (
	DefaultAuditLimit = 100
	MaxAuditLimit     = 1000
)

// Audit records that actor did action to target, from the client address
// addr, in a transaction of its own. detail, when not nil, must encode to a
// JSON object; it must never hold a secret.
func (s *Service) Audit(ctx context.Context, actor, action, target string, detail any, addr string) error {
	e, err := s.auditEntry(actor, action, target, detail, addr)
	if err != nil {
		return err
	}
	if err := s.store.Update(ctx, func(tx store.Tx) error { return tx.InsertAudit(ctx, e) }); err != nil {
		return fmt.Errorf("audit %s %s: %w", action, target, err)
	}
	return nil
}

// AuditTx is Audit within tx, so the record commits (or rolls back) with the
// change it records.
func (s *Service) AuditTx(ctx context.Context, tx store.Tx, actor, action, target string, detail any, addr string) error {
	e, err := s.auditEntry(actor, action, target, detail, addr)
	if err != nil {
		return err
	}
	if err := tx.InsertAudit(ctx, e); err != nil {
		return fmt.Errorf("audit %s %s: %w", action, target, err)
	}
	return nil
}

func (s *Service) auditEntry(actor, action, target string, detail any, addr string) (*store.AuditEntry, error) {
	if action == "" {
		return nil, errors.New("audit: action is empty")
	}
	e := &store.AuditEntry{Time: s.now(), Actor: actor, Action: action, Target: target, Address: addr}
	if detail != nil {
		b, err := json.Marshal(detail)
		if err != nil {
			return nil, fmt.Errorf("audit %s %s: encode detail: %w", action, target, err)
		}
		switch {
		case bytes.Equal(b, []byte("null")):
		case len(b) > 0 && b[0] == '{':
			e.Detail = string(b)
		default:
			return nil, fmt.Errorf("audit %s %s: detail %s is not a JSON object", action, target, b)
		}
	}
	return e, nil
}

// AuditLog lists audit entries newest first. f.Limit defaults to
// DefaultAuditLimit and is capped at MaxAuditLimit. next is the cursor for
// the following page (pass it as f.Before), or 0 after the last page.
func (s *Service) AuditLog(ctx context.Context, f store.AuditFilter) (entries []*store.AuditEntry, next int64, err error) {
	if f.Limit <= 0 {
		f.Limit = DefaultAuditLimit
	}
	f.Limit = min(f.Limit, MaxAuditLimit)
	limit := f.Limit
	f.Limit++ // one more, to tell whether there is a next page
	err = s.store.View(ctx, func(tx store.Tx) error {
		var err error
		entries, err = tx.Audit(ctx, f)
		return err
	})
	if err != nil {
		return nil, 0, fmt.Errorf("list audit log: %w", err)
	}
	if len(entries) > limit {
		entries = entries[:limit]
		next = entries[limit-1].ID
	}
	return entries, next, nil
}
