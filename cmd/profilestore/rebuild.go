package main

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"
)

func rebuildCommand(load loader) *cobra.Command {
	return &cobra.Command{
		Use:   "rebuild",
		Short: "Rebuild every projection from the event log and write a fresh snapshot (stop the server first)",
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, log, err := load()
			if err != nil {
				return err
			}
			ctx := context.Background()
			a, err := openExisting(ctx, cfg, log)
			if err != nil {
				return err
			}
			defer a.close()
			start := time.Now()
			if err := a.runner.Rebuild(ctx, progressReporter("rebuilding projections")); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "rebuilt projections to position %s in %s (%d profiles)\n",
				a.runner.Checkpoint(), time.Since(start).Round(time.Millisecond), a.views.Len())
			return nil
		},
	}
}
