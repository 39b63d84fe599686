package main

import (
	"fmt"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/profilestore/profilestore/domain"
	pshttp "github.com/profilestore/profilestore/http"
	"github.com/spf13/cobra"
)

// tokenHashShown is how many hex digits of a token's hash token list shows.
const tokenHashShown = 12

func tokenCommand(load loader, f *cliFlags) *cobra.Command {
	cmd := &cobra.Command{Use: "token", Short: "Manage the access tokens of the tokens file (a running server sees changes within a second)"}
	var admin bool
	var comment, expires string
	issue := &cobra.Command{
		Use:   "issue @user:server",
		Short: "Create an access token for a user; it is printed once and only its hash is stored",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, _, err := load()
			if err != nil {
				return err
			}
			if err := cfg.validate(); err != nil {
				return err
			}
			user, err := domain.ParseHistoricalUserID(args[0])
			if err != nil {
				return usageError{fmt.Errorf("%q is not a Matrix user id (@name:server)", args[0])}
			}
			spec := pshttp.TokenSpec{User: user, Admin: admin, Comment: comment}
			if expires != "" {
				d, err := time.ParseDuration(expires)
				if err != nil || d <= 0 {
					return usageError{fmt.Errorf("--expires %q is not a positive duration (like 720h for 30 days, or 90m)", expires)}
				}
				spec.Expires = time.Now().Add(d)
			}
			say := func(m string) { fmt.Fprintln(cmd.ErrOrStderr(), m) }
			if err := makeDataDir(filepath.Dir(cfg.Auth.TokensFile), say); err != nil {
				return err
			}
			token, err := pshttp.IssueTokenFor(cfg.Auth.TokensFile, spec)
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), token)
			return nil
		},
	}
	issue.Flags().BoolVar(&admin, "admin", false, "grant admin rights (read and write every profile and room)")
	issue.Flags().StringVar(&comment, "comment", "", "a note stored beside the hash")
	issue.Flags().StringVar(&expires, "expires", "", "the token stops working after this long (e.g. 720h)")

	list := &cobra.Command{
		Use:   "list",
		Short: "List the tokens: user, admin, comment, creation and expiry, and the first digits of the hash (never the token)",
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := tokenConfig(load)
			if err != nil {
				return err
			}
			tokens, err := pshttp.ListTokens(cfg.Auth.TokensFile)
			if err != nil {
				return err
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "HASH\tUSER\tADMIN\tCREATED\tEXPIRES\tCOMMENT")
			now := time.Now()
			for _, t := range tokens {
				exp := "never"
				if !t.Expires.IsZero() {
					exp = t.Expires.Format(time.RFC3339)
					if !now.Before(t.Expires) {
						exp += " (expired)"
					}
				}
				created := "-"
				if !t.Created.IsZero() {
					created = t.Created.Format(time.RFC3339)
				}
				adm := "no"
				if t.Admin {
					adm = "yes"
				}
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", t.Hash[:tokenHashShown], t.User, adm, created, exp, t.Comment)
			}
			return w.Flush()
		},
	}

	var user string
	revoke := &cobra.Command{
		Use:   "revoke (TOKEN | HASH-PREFIX | --user @user:server)",
		Short: "Revoke a token (given itself, or the first digits of its hash from token list) or every token of a user",
		Args: func(cmd *cobra.Command, args []string) error {
			if (len(args) == 1) == (user != "") || len(args) > 1 {
				return fmt.Errorf("give one token or hash prefix, or --user")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := tokenConfig(load)
			if err != nil {
				return err
			}
			var m pshttp.TokenMatch
			switch {
			case user != "":
				u, err := domain.ParseHistoricalUserID(user)
				if err != nil {
					return usageError{fmt.Errorf("--user %q is not a Matrix user id (@name:server)", user)}
				}
				m.User = u
			case strings.HasPrefix(args[0], "ps_"):
				m.Token = args[0]
			default:
				m.HashPrefix = args[0]
			}
			revoked, err := pshttp.RevokeTokens(cfg.Auth.TokensFile, m)
			if err != nil {
				return err
			}
			for _, t := range revoked {
				fmt.Fprintf(cmd.OutOrStdout(), "revoked %s of %s\n", t.Hash[:tokenHashShown], t.User)
			}
			return nil
		},
	}
	revoke.Flags().StringVar(&user, "user", "", "revoke every token of this user")
	cmd.AddCommand(f.add(issue, "data-dir", "tokens-file"), f.add(list, "data-dir", "tokens-file"), f.add(revoke, "data-dir", "tokens-file"))
	return cmd
}

// tokenConfig loads the configuration for list and revoke, which need an
// existing tokens file's directory.
func tokenConfig(load loader) (Config, error) {
	cfg, _, err := load()
	if err != nil {
		return cfg, err
	}
	if err := cfg.validate(); err != nil {
		return cfg, err
	}
	return cfg, requireDataDir(filepath.Dir(cfg.Auth.TokensFile))
}
