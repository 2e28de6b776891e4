package cli

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/dray-dev/dray/internal/auth"
	"github.com/dray-dev/dray/internal/store"
)

// Administration on the server's host: these commands open the state store
// directly (--db, DRAY_DB, or the project's .dray/dray.db), so the first
// admin can be made before anyone can log in.

// dbFlag adds --db to a command.
func (e *env) dbFlag(cmd *cobra.Command) {
	cmd.Flags().StringVar(&e.db, "db", "", "the state store: a SQLite file path or a postgres:// URL (default .dray/dray.db; env DRAY_DB)")
}

// openAuth opens the state store and an auth service over it.
func (e *env) openAuth(ctx context.Context) (*auth.Service, func(), error) {
	dir, err := e.projectDir()
	if err != nil {
		return nil, nil, err
	}
	st, err := e.openStore(ctx, dir)
	if err != nil {
		return nil, nil, err
	}
	return auth.New(auth.Config{Store: st, Logger: e.log}), func() { st.Close() }, nil
}

// hostActor is who does what these commands do, in the audit log.
func hostActor() *auth.Principal {
	name := os.Getenv("USER")
	if name == "" {
		name = "cli"
	}
	return auth.System(name)
}

// authError makes auth's input errors bad input (exit 2).
func authError(err error) error {
	if errors.Is(err, auth.ErrInvalid) || errors.Is(err, auth.ErrExists) || errors.Is(err, auth.ErrLastAdmin) || errors.Is(err, store.ErrNotFound) {
		return badInput(err)
	}
	return err
}

func (e *env) userCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "user", Short: "Manage users (on the server's host)"}
	var role string
	create := &cobra.Command{
		Use:   "create NAME --role ROLE",
		Short: "Create a user; the password is read from a prompt, or from stdin when it is not a terminal",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			r, err := auth.ParseRole(role)
			if err != nil {
				return badInput(err)
			}
			pw, err := e.readPassword("Password for " + args[0] + ": ")
			if err != nil {
				return err
			}
			a, done, err := e.openAuth(cmd.Context())
			if err != nil {
				return err
			}
			defer done()
			u, err := a.CreateUser(cmd.Context(), hostActor(), args[0], r, pw)
			if err != nil {
				return authError(err)
			}
			fmt.Fprintf(e.stdout, "created user %s with role %s\n", u.Name, u.Role)
			return nil
		},
	}
	create.Flags().StringVar(&role, "role", "", "viewer, operator, editor or admin")
	create.MarkFlagRequired("role")
	list := &cobra.Command{
		Use:   "list",
		Short: "List users",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			a, done, err := e.openAuth(cmd.Context())
			if err != nil {
				return err
			}
			defer done()
			users, err := a.Users(cmd.Context())
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tROLE\tCREATED")
			for _, u := range users {
				fmt.Fprintf(tw, "%s\t%s\t%s\n", u.Name, u.Role, u.CreatedAt.Local().Format(time.DateTime))
			}
			return tw.Flush()
		},
	}
	del := &cobra.Command{
		Use:   "delete NAME",
		Short: "Delete a user and end their sessions",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			a, done, err := e.openAuth(cmd.Context())
			if err != nil {
				return err
			}
			defer done()
			if err := a.DeleteUser(cmd.Context(), hostActor(), args[0]); err != nil {
				return authError(err)
			}
			fmt.Fprintf(e.stdout, "deleted user %s\n", args[0])
			return nil
		},
	}
	passwd := &cobra.Command{
		Use:   "passwd NAME",
		Short: "Set a user's password (ends their sessions)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			pw, err := e.readPassword("New password for " + args[0] + ": ")
			if err != nil {
				return err
			}
			a, done, err := e.openAuth(cmd.Context())
			if err != nil {
				return err
			}
			defer done()
			if err := a.SetPassword(cmd.Context(), hostActor(), args[0], pw); err != nil {
				return authError(err)
			}
			fmt.Fprintf(e.stdout, "password of %s set\n", args[0])
			return nil
		},
	}
	for _, c := range []*cobra.Command{create, list, del, passwd} {
		e.dbFlag(c)
		c.Args = wrapArgs(c.Args)
		cmd.AddCommand(c)
	}
	return cmd
}

// readPassword reads a password: twice from a prompt on a terminal, else the
// first line of stdin.
func (e *env) readPassword(prompt string) (string, error) {
	if f, ok := e.stdin.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		fmt.Fprint(e.stderr, prompt)
		a, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(e.stderr)
		if err != nil {
			return "", fmt.Errorf("read password: %w", err)
		}
		fmt.Fprint(e.stderr, "Again: ")
		b, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(e.stderr)
		if err != nil {
			return "", fmt.Errorf("read password: %w", err)
		}
		if string(a) != string(b) {
			return "", badInputf("the passwords differ")
		}
		return string(a), nil
	}
	line, err := bufio.NewReader(e.stdin).ReadString('\n')
	if err != nil && line == "" {
		return "", badInputf("no password on stdin: pipe it in (echo \"$PASSWORD\" | dray user create ...) or run at a terminal")
	}
	return strings.TrimRight(line, "\r\n"), nil
}

func (e *env) tokenCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "token", Short: "Manage API tokens (on the server's host)"}
	var name, role string
	var expires time.Duration
	create := &cobra.Command{
		Use:   "create --name NAME --role ROLE [--expires 720h]",
		Short: "Create an API token and print it (once: only its hash is kept)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			r, err := auth.ParseRole(role)
			if err != nil {
				return badInput(err)
			}
			a, done, err := e.openAuth(cmd.Context())
			if err != nil {
				return err
			}
			defer done()
			secret, info, err := a.CreateToken(cmd.Context(), hostActor(), name, r, expires)
			if err != nil {
				return authError(err)
			}
			fmt.Fprintln(e.stdout, secret)
			until := "never expires"
			if !info.ExpiresAt.IsZero() {
				until = "expires " + info.ExpiresAt.Local().Format(time.DateTime)
			}
			fmt.Fprintf(e.stderr, "token %s (%s, role %s, %s): shown once, keep it safe\n", info.ID, info.Name, info.Role, until)
			return nil
		},
	}
	create.Flags().StringVar(&name, "name", "", "what the token is for (ci, agent-eu, ...)")
	create.Flags().StringVar(&role, "role", "", "viewer, operator, editor, admin or agent")
	create.Flags().DurationVar(&expires, "expires", 0, "how long the token is valid (default: until revoked)")
	create.MarkFlagRequired("name")
	create.MarkFlagRequired("role")
	list := &cobra.Command{
		Use:   "list",
		Short: "List tokens (never their secrets)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			a, done, err := e.openAuth(cmd.Context())
			if err != nil {
				return err
			}
			defer done()
			toks, err := a.Tokens(cmd.Context())
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tNAME\tROLE\tCREATED BY\tEXPIRES\tLAST USED\tREVOKED")
			for _, t := range toks {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", t.ID, t.Name, t.Role, t.CreatedBy, stamp(t.ExpiresAt), stamp(t.LastUsedAt), stamp(t.RevokedAt))
			}
			return tw.Flush()
		},
	}
	revoke := &cobra.Command{
		Use:   "revoke ID",
		Short: "Revoke a token",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			a, done, err := e.openAuth(cmd.Context())
			if err != nil {
				return err
			}
			defer done()
			if err := a.RevokeToken(cmd.Context(), hostActor(), args[0]); err != nil {
				return authError(err)
			}
			fmt.Fprintf(e.stdout, "revoked token %s\n", args[0])
			return nil
		},
	}
	for _, c := range []*cobra.Command{create, list, revoke} {
		e.dbFlag(c)
		c.Args = wrapArgs(c.Args)
		cmd.AddCommand(c)
	}
	return cmd
}

func stamp(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Local().Format(time.DateTime)
}

func (e *env) auditCmd() *cobra.Command {
	var limit int
	var actor string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "audit",
		Short: "Print the audit log, newest first (on the server's host)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			a, done, err := e.openAuth(cmd.Context())
			if err != nil {
				return err
			}
			defer done()
			entries, _, err := a.AuditLog(cmd.Context(), store.AuditFilter{Actor: actor, Limit: limit})
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(e.stdout, entries)
			}
			tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "TIME\tACTOR\tACTION\tTARGET\tADDRESS\tDETAIL")
			for _, x := range entries {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", x.Time.Local().Format(time.DateTime), x.Actor, x.Action, x.Target, x.Address, clipLine(x.Detail, 80))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().IntVar(&limit, "limit", 50, "how many entries")
	cmd.Flags().StringVar(&actor, "actor", "", "only this actor's entries")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	e.dbFlag(cmd)
	return cmd
}
