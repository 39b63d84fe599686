package main

import (
	"fmt"
	"path/filepath"

	"github.com/profilestore/profilestore/domain"
	pshttp "github.com/profilestore/profilestore/http"
	"github.com/spf13/cobra"
)

func tokenCommand(load loader, f *cliFlags) *cobra.Command {
	cmd := &cobra.Command{Use: "token", Short: "Manage access tokens of the tokens file"}
	var admin bool
	var comment string
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
				return err
			}
			say := func(m string) { fmt.Fprintln(cmd.ErrOrStderr(), m) }
			if err := makeDataDir(filepath.Dir(cfg.Auth.TokensFile), say); err != nil {
				return err
			}
			token, err := pshttp.IssueToken(cfg.Auth.TokensFile, user, admin, comment)
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), token)
			return nil
		},
	}
	issue.Flags().BoolVar(&admin, "admin", false, "grant admin rights (read and write every profile and room)")
	issue.Flags().StringVar(&comment, "comment", "", "a note stored beside the hash")
	cmd.AddCommand(f.add(issue, "data-dir", "tokens-file"))
	return cmd
}
