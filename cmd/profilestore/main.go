// Command profilestore runs the profile store and its tools: serve, token,
// rebuild, export, import, backup, bench.
package main

import (
	"errors"
	"fmt"
	"os"
	"runtime/debug"
	"strings"

	"github.com/profilestore/profilestore/domain"
	"github.com/sirupsen/logrus"
	"github.com/spf13/cobra"
)

// version is set at link time (-ldflags "-X main.version=v1.2.3"); without
// it the module version or VCS revision of the build is shown.
var version = ""

func buildVersion() string {
	if version != "" {
		return version
	}
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "(unknown)"
	}
	v := info.Main.Version
	for _, s := range info.Settings {
		if s.Key == "vcs.revision" && (v == "" || v == "(devel)") {
			v = "devel " + s.Value
		}
	}
	return v + " " + info.GoVersion
}

func main() {
	cmd, err := rootCommand().ExecuteC()
	if err != nil {
		fmt.Fprintln(os.Stderr, "profilestore:", humanError(err))
		var ue usageError
		if errors.As(err, &ue) || strings.HasPrefix(err.Error(), "unknown command") {
			fmt.Fprint(os.Stderr, "\n", cmd.UsageString())
		}
		os.Exit(1)
	}
}

// humanError is err's message without Matrix errcodes: "M_INVALID_PARAM:
// Invalid user id" is for API clients, an operator reads "Invalid user id".
func humanError(err error) string {
	msg := err.Error()
	var de *domain.Error
	if errors.As(err, &de) {
		msg = strings.Replace(msg, de.Error(), de.Message, 1)
	}
	return msg
}

// cliFlags are the configuration flags. Each command registers only those
// that apply to it, so that its help shows no flag it would ignore.
type cliFlags struct {
	configPath string
	overrides  Config
}

// add registers the named flags on cmd and returns cmd.
func (f *cliFlags) add(cmd *cobra.Command, names ...string) *cobra.Command {
	fs := cmd.Flags()
	for _, n := range names {
		switch n {
		case "data-dir":
			fs.StringVar(&f.overrides.DataDir, n, "", "data directory (default ./data, or PROFILESTORE_DATA_DIR)")
		case "listen":
			fs.StringVar(&f.overrides.Listen, n, "", "listen address (default "+defaultListen+", or PROFILESTORE_LISTEN)")
		case "store":
			fs.StringVar(&f.overrides.Store, n, "", "event store: bolt or esdb (or PROFILESTORE_STORE)")
		case "esdb-url":
			fs.StringVar(&f.overrides.ESDBURL, n, "", "EventStoreDB connection string (or PROFILESTORE_ESDB_URL)")
		case "command-cache-profiles":
			fs.IntVar(&f.overrides.CommandCache.Profiles, n, 0, fmt.Sprintf("users' states kept in memory for writes (default %d, or PROFILESTORE_COMMAND_CACHE_PROFILES)", domain.DefaultCachedProfiles))
		case "command-cache-rooms":
			fs.IntVar(&f.overrides.CommandCache.Rooms, n, 0, fmt.Sprintf("rooms' states kept in memory for writes (default %d, or PROFILESTORE_COMMAND_CACHE_ROOMS)", domain.DefaultCachedRooms))
		case "tokens-file":
			fs.StringVar(&f.overrides.Auth.TokensFile, n, "", "tokens file (default <data-dir>/tokens.yaml, or PROFILESTORE_TOKENS_FILE)")
		default:
			panic("unknown flag " + n)
		}
	}
	return cmd
}

// rootCommand builds the CLI; flags override the config file and environment.
func rootCommand() *cobra.Command {
	f := &cliFlags{}
	root := &cobra.Command{
		Use:           "profilestore",
		Short:         "An event-sourced store for Matrix user profiles with per-room profile history",
		Version:       buildVersion(),
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	root.PersistentFlags().StringVarP(&f.configPath, "config", "c", "", "YAML configuration file (or PROFILESTORE_CONFIG)")
	root.PersistentFlags().StringVar(&f.overrides.LogLevel, "log-level", "", "log level: debug, info, warn, error (or PROFILESTORE_LOG_LEVEL)")
	root.PersistentFlags().StringVar(&f.overrides.LogFormat, "log-format", "", "log format: text or json (or PROFILESTORE_LOG_FORMAT)")

	load := func() (Config, *logrus.Logger, error) {
		cfg, err := loadConfig(f.configPath)
		if err != nil {
			return cfg, nil, err
		}
		o := f.overrides
		for dst, src := range map[*string]string{&cfg.DataDir: o.DataDir, &cfg.Listen: o.Listen,
			&cfg.Store: o.Store, &cfg.ESDBURL: o.ESDBURL, &cfg.LogLevel: o.LogLevel, &cfg.LogFormat: o.LogFormat,
			&cfg.Auth.TokensFile: o.Auth.TokensFile} {
			if src != "" {
				*dst = src
			}
		}
		for dst, src := range map[*int]int{&cfg.CommandCache.Profiles: o.CommandCache.Profiles, &cfg.CommandCache.Rooms: o.CommandCache.Rooms} {
			if src != 0 {
				*dst = src
			}
		}
		log, err := newLogger(cfg)
		return cfg, log, err
	}
	store := []string{"data-dir", "store", "esdb-url"}
	root.AddCommand(
		f.add(serveCommand(load), append(store, "listen", "tokens-file", "command-cache-profiles", "command-cache-rooms")...),
		tokenCommand(load, f),
		f.add(rebuildCommand(load), store...),
		f.add(exportCommand(load), store...),
		f.add(importCommand(load), store...),
		f.add(backupCommand(load), "data-dir", "tokens-file"),
		f.add(benchCommand(load), "store", "esdb-url"),
		appserviceCommand(load, f),
		backfillCommand(load, f),
		integrityCommand(load, f),
		f.add(verifyCommand(load), store...),
		verifyProofCommand(),
	)
	// Every command that takes no positional argument says so.
	var noArgs func(*cobra.Command)
	noArgs = func(c *cobra.Command) {
		if c.Args == nil && c.HasParent() {
			if c.Runnable() {
				c.Args = cobra.NoArgs
			} else {
				c.Args, c.RunE = groupArgs, groupArgs
			}
		}
		if c.Args != nil {
			c.Args = asUsage(c.Args)
		}
		for _, sub := range c.Commands() {
			noArgs(sub)
		}
	}
	noArgs(root)
	return root
}

// groupArgs answers a command group (token, appservice) called without one
// of its sub-commands.
func groupArgs(cmd *cobra.Command, args []string) error {
	if len(args) == 0 {
		return usageError{fmt.Errorf("%s needs a sub-command", cmd.CommandPath())}
	}
	return usageError{fmt.Errorf("unknown command %q for %q", args[0], cmd.CommandPath())}
}

// asUsage marks argument errors as usage errors, in words: cobra's own say
// "accepts 1 arg(s), received 0".
func asUsage(check cobra.PositionalArgs) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		err := check(cmd, args)
		if err == nil {
			return nil
		}
		var ue usageError
		if errors.As(err, &ue) {
			return err
		}
		want := strings.TrimSpace(strings.TrimPrefix(cmd.Use, cmd.Name()))
		switch {
		case want == "" && len(args) > 0:
			err = fmt.Errorf("%s takes no arguments (got %q)", cmd.CommandPath(), strings.Join(args, " "))
		case len(args) == 0 && want != "":
			err = fmt.Errorf("%s needs %s", cmd.CommandPath(), want)
		case want != "":
			err = fmt.Errorf("%s takes %s, not %q", cmd.CommandPath(), want, strings.Join(args, " "))
		}
		return usageError{err}
	}
}

type loader func() (Config, *logrus.Logger, error)
