package main

import (
	"context"
	"fmt"
	"os"
	"runtime/pprof"
	"time"

	"github.com/spf13/cobra"
)

func rebuildCommand(load loader) *cobra.Command {
	var allowUnreadable bool
	var cpuProfile string
	cmd := &cobra.Command{
		Use:   "rebuild",
		Short: "Rebuild every view from the event log into a fresh view store and swap it in (stop the server first)",
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, log, err := load()
			if err != nil {
				return err
			}
			ctx := context.Background()
			if err := requireStore(cfg); err != nil {
				return err
			}
			a, err := openExisting(ctx, cfg, log)
			if err != nil {
				return err
			}
			defer a.close()
			// A rebuild with a keyring that cannot open the log would
			// replace every view with erased profiles: check first.
			bad, err := checkLogKeys(ctx, a.Store, a.Keyring, progressReporter("checking that every sealed value has its key"))
			if err != nil {
				return err
			}
			if bad.values > 0 {
				if !allowUnreadable {
					return fmt.Errorf("rebuild: %s. Restore the keys.db backed up with this events.db; --allow-unreadable rebuilds anyway, showing these values as erased. Nothing was changed", bad)
				}
				fmt.Fprintf(cmd.ErrOrStderr(), "rebuilding with --allow-unreadable: %s\n", bad)
			}
			if cpuProfile != "" {
				f, err := os.Create(cpuProfile)
				if err != nil {
					return fmt.Errorf("rebuild: the CPU profile: %w", err)
				}
				defer f.Close()
				if err := pprof.StartCPUProfile(f); err != nil {
					return fmt.Errorf("rebuild: the CPU profile: %w", err)
				}
				defer pprof.StopCPUProfile()
			}
			start := time.Now()
			if err := a.RebuildViews(ctx, progressReporter("rebuilding the views")); err != nil {
				return err
			}
			took := time.Since(start)
			cp, err := a.ViewStore().Checkpoint()
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "rebuilt projections to position %s in %s (%d profiles)\n",
				cp, took.Round(time.Millisecond), a.ProfileView.Len())
			return nil
		},
	}
	cmd.Flags().BoolVar(&allowUnreadable, "allow-unreadable", false, "rebuild although sealed values cannot be opened (they read as erased)")
	cmd.Flags().StringVar(&cpuProfile, "cpuprofile", "", "write a CPU profile of the rebuild to this file (for `go tool pprof`)")
	return cmd
}
