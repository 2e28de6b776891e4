package auth

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/dray-dev/dray/internal/store"
)

// UserInfo is a user as the API shows it: no password hash.
type UserInfo struct {
	Name      string    `json:"name"`
	Role      Role      `json:"role"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

func userInfo(u *store.User) UserInfo {
	return UserInfo{Name: u.Name, Role: Role(u.Role), CreatedAt: u.CreatedAt, UpdatedAt: u.UpdatedAt}
}

// checkUserRole refuses roles a person may not hold: agent is for tokens.
func checkUserRole(r Role) error {
	if !r.Valid() {
		_, err := ParseRole(string(r))
		return err
	}
	if r == RoleAgent {
		return &InputError{Field: "role", Message: "role agent is for API tokens, not users: use viewer, operator, editor or admin"}
	}
	return nil
}

// CreateUser creates a user; actor must be an admin. It fails with ErrExists
// when the name is taken.
func (s *Service) CreateUser(ctx context.Context, actor *Principal, name string, role Role, password string) (UserInfo, error) {
	if err := actor.Require(RoleAdmin); err != nil {
		return UserInfo{}, fmt.Errorf("create user %s: %w", name, err)
	}
	return s.createUser(ctx, actor, name, role, password, false)
}

// createUser creates a user; with onlyFirst, only when there is no user at
// all (it then returns ErrExists).
func (s *Service) createUser(ctx context.Context, actor *Principal, name string, role Role, password string, onlyFirst bool) (UserInfo, error) {
	for _, err := range []error{CheckUserName(name), checkUserRole(role), CheckPassword(password)} {
		if err != nil {
			return UserInfo{}, fmt.Errorf("create user %s: %w", name, err)
		}
	}
	if password == name {
		return UserInfo{}, fmt.Errorf("create user %s: %w", name, &InputError{Field: "password", Message: "password must not be the user name"})
	}
	// Hash before the transaction: it is slow and must not hold the write lock.
	hash, err := s.hash(ctx, password)
	if err != nil {
		return UserInfo{}, fmt.Errorf("create user %s: %w", name, err)
	}
	now := s.now()
	u := &store.User{Name: name, Role: string(role), PasswordHash: hash, CreatedAt: now, UpdatedAt: now}
	err = s.store.Update(ctx, func(tx store.Tx) error {
		if onlyFirst {
			users, err := tx.Users(ctx)
			if err != nil {
				return err
			}
			if len(users) > 0 {
				return ErrExists
			}
		}
		switch _, err := tx.User(ctx, name); {
		case err == nil:
			return fmt.Errorf("user %s: %w", name, ErrExists)
		case !errors.Is(err, store.ErrNotFound):
			return err
		}
		if err := tx.PutUser(ctx, u); err != nil {
			return err
		}
		return s.AuditTx(ctx, tx, actor.actor(), ActionUserCreate, "user:"+name, map[string]any{"role": role}, actor.addr())
	})
	if err != nil {
		return UserInfo{}, fmt.Errorf("create user %s: %w", name, err)
	}
	s.log.Info("user created", "user", name, "role", role, "actor", actor.actor())
	return userInfo(u), nil
}

// EnsureAdmin creates the admin name with password when the store has no
// user at all, as on a server's first start with DRAY_ADMIN_PASSWORD set. It
// does nothing, and returns false, when any user exists.
func (s *Service) EnsureAdmin(ctx context.Context, name, password string) (created bool, err error) {
	var n int
	if err := s.store.View(ctx, func(tx store.Tx) error {
		users, err := tx.Users(ctx)
		n = len(users)
		return err
	}); err != nil {
		return false, fmt.Errorf("ensure admin %s: %w", name, err)
	}
	if n > 0 {
		return false, nil
	}
	// Checked again in the write transaction: another process may have
	// created a user since.
	_, err = s.createUser(ctx, System("bootstrap"), name, RoleAdmin, password, true)
	switch {
	case errors.Is(err, ErrExists):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("ensure admin: %w", err)
	}
	return true, nil
}

// Users lists every user by name.
func (s *Service) Users(ctx context.Context) ([]UserInfo, error) {
	var users []*store.User
	if err := s.store.View(ctx, func(tx store.Tx) error {
		var err error
		users, err = tx.Users(ctx)
		return err
	}); err != nil {
		return nil, fmt.Errorf("list users: %w", err)
	}
	out := make([]UserInfo, len(users))
	for i, u := range users {
		out[i] = userInfo(u)
	}
	return out, nil
}

// User returns one user (store.ErrNotFound).
func (s *Service) User(ctx context.Context, name string) (UserInfo, error) {
	var u *store.User
	if err := s.store.View(ctx, func(tx store.Tx) error {
		var err error
		u, err = tx.User(ctx, name)
		return err
	}); err != nil {
		return UserInfo{}, fmt.Errorf("user %s: %w", name, err)
	}
	return userInfo(u), nil
}

// SetPassword sets a user's password; actor must be an admin. It ends every
// session of the user.
func (s *Service) SetPassword(ctx context.Context, actor *Principal, name, password string) error {
	if err := actor.Require(RoleAdmin); err != nil {
		return fmt.Errorf("set password of %s: %w", name, err)
	}
	if err := s.setPassword(ctx, actor, name, password, ""); err != nil {
		return fmt.Errorf("set password of %s: %w", name, err)
	}
	return nil
}

// ChangePassword changes the password of the user actor is logged in as,
// given the current one. It ends the user's other sessions and keeps
// actor's. A wrong current password fails with ErrForbidden and counts as a
// failed login (so it is rate limited: ErrRateLimited).
func (s *Service) ChangePassword(ctx context.Context, actor *Principal, current, password string) error {
	if actor == nil || actor.Kind != KindUser {
		return fmt.Errorf("change password: only a logged-in user can change their password: %w", ErrForbidden)
	}
	var u *store.User
	if err := s.store.View(ctx, func(tx store.Tx) error {
		var err error
		u, err = tx.User(ctx, actor.Name)
		return err
	}); err != nil {
		return fmt.Errorf("change password of %s: %w", actor.Name, err)
	}
	// Guesses at the current password count as failed logins, so a stolen
	// session cannot try passwords without limit.
	if err := s.limiter.begin(actor.Name, actor.Addr, s.now()); err != nil {
		return fmt.Errorf("change password of %s: %w", actor.Name, err)
	}
	ok, err := s.verify(ctx, current, u.PasswordHash)
	o := loginOK
	switch {
	case err != nil:
		o = loginError
	case !ok:
		o = loginFailed
	}
	lockouts := s.limiter.end(actor.Name, actor.Addr, o, s.now())
	if err != nil {
		return fmt.Errorf("change password of %s: %w", actor.Name, err)
	}
	if !ok {
		s.log.Info("change password: wrong current password", "user", actor.Name, "addr", actor.Addr)
		s.recordLockouts(ctx, lockouts, actor.Name, actor.Addr)
		return fmt.Errorf("change password of %s: the current password is wrong: %w", actor.Name, ErrForbidden)
	}
	if err := s.setPassword(ctx, actor, actor.Name, password, actor.session); err != nil {
		return fmt.Errorf("change password of %s: %w", actor.Name, err)
	}
	return nil
}

// setPassword writes a new password hash and ends the user's sessions but
// keep (a session id, or "").
func (s *Service) setPassword(ctx context.Context, actor *Principal, name, password, keep string) error {
	if err := CheckPassword(password); err != nil {
		return err
	}
	if password == name {
		return &InputError{Field: "password", Message: "password must not be the user name"}
	}
	hash, err := s.hash(ctx, password)
	if err != nil {
		return err
	}
	return s.store.Update(ctx, func(tx store.Tx) error {
		u, err := tx.User(ctx, name)
		if err != nil {
			return err
		}
		u.PasswordHash, u.UpdatedAt = hash, s.now()
		if err := tx.PutUser(ctx, u); err != nil {
			return err
		}
		if err := s.endSessions(ctx, tx, name, keep); err != nil {
			return err
		}
		return s.AuditTx(ctx, tx, actor.actor(), ActionUserPassword, "user:"+name, nil, actor.addr())
	})
}

// endSessions deletes the sessions of user but keep.
func (s *Service) endSessions(ctx context.Context, tx store.Tx, user, keep string) error {
	var kept *store.Session
	if keep != "" {
		sess, err := tx.Session(ctx, keep)
		switch {
		case err == nil:
			kept = sess
		case !errors.Is(err, store.ErrNotFound):
			return err
		}
	}
	if _, err := tx.DeleteSessions(ctx, "", user, time.Time{}); err != nil {
		return err
	}
	if kept != nil {
		return tx.PutSession(ctx, kept)
	}
	return nil
}

// SetRole changes a user's role; actor must be an admin. It fails with
// ErrLastAdmin when it would leave no admin. The new role applies to the
// user's next request.
func (s *Service) SetRole(ctx context.Context, actor *Principal, name string, role Role) error {
	if err := actor.Require(RoleAdmin); err != nil {
		return fmt.Errorf("set role of %s: %w", name, err)
	}
	if err := checkUserRole(role); err != nil {
		return fmt.Errorf("set role of %s: %w", name, err)
	}
	err := s.store.Update(ctx, func(tx store.Tx) error {
		u, err := tx.User(ctx, name)
		if err != nil {
			return err
		}
		old := Role(u.Role)
		if old == role {
			return nil
		}
		if old == RoleAdmin {
			if err := lastAdmin(ctx, tx, name); err != nil {
				return err
			}
		}
		u.Role, u.UpdatedAt = string(role), s.now()
		if err := tx.PutUser(ctx, u); err != nil {
			return err
		}
		return s.AuditTx(ctx, tx, actor.actor(), ActionUserRole, "user:"+name, map[string]any{"from": old, "to": role}, actor.addr())
	})
	if err != nil {
		return fmt.Errorf("set role of %s: %w", name, err)
	}
	return nil
}

// DeleteUser deletes a user and their sessions; actor must be an admin. It
// fails with ErrLastAdmin when it would leave no admin. Tokens the user
// created stay valid: revoke them with RevokeToken.
func (s *Service) DeleteUser(ctx context.Context, actor *Principal, name string) error {
	if err := actor.Require(RoleAdmin); err != nil {
		return fmt.Errorf("delete user %s: %w", name, err)
	}
	err := s.store.Update(ctx, func(tx store.Tx) error {
		u, err := tx.User(ctx, name)
		if err != nil {
			return err
		}
		if Role(u.Role) == RoleAdmin {
			if err := lastAdmin(ctx, tx, name); err != nil {
				return err
			}
		}
		if _, err := tx.DeleteSessions(ctx, "", name, time.Time{}); err != nil {
			return err
		}
		if err := tx.DeleteUser(ctx, name); err != nil {
			return err
		}
		return s.AuditTx(ctx, tx, actor.actor(), ActionUserDelete, "user:"+name, map[string]any{"role": u.Role}, actor.addr())
	})
	if err != nil {
		return fmt.Errorf("delete user %s: %w", name, err)
	}
	return nil
}

// lastAdmin returns ErrLastAdmin when name is the only admin.
func lastAdmin(ctx context.Context, tx store.Tx, name string) error {
	users, err := tx.Users(ctx)
	if err != nil {
		return err
	}
	for _, u := range users {
		if u.Name != name && Role(u.Role) == RoleAdmin {
			return nil
		}
	}
	return fmt.Errorf("%s is the only admin: make another user admin first: %w", name, ErrLastAdmin)
}
