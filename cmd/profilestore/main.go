// Command profilestore runs the profile store and its tools: serve, token,
// rebuild, export, bench.
package main

import (
	"fmt"
	"os"

	"github.com/sirupsen/logrus"
	"github.com/spf13/cobra"
)

func main() {
	if err := rootCommand().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "profilestore:", err)
		os.Exit(1)
	}
}

// rootCommand builds the CLI; flags override the config file and environment.
func rootCommand() *cobra.Command {
	var configPath string
	var overrides Config
	root := &cobra.Command{
		Use:           "profilestore",
		Short:         "An event-sourced store for Matrix user profiles with per-room profile history",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().StringVarP(&configPath, "config", "c", "", "YAML configuration file (or PROFILESTORE_CONFIG)")
	root.PersistentFlags().StringVar(&overrides.DataDir, "data-dir", "", "data directory (default ./data, or PROFILESTORE_DATA_DIR)")
	root.PersistentFlags().StringVar(&overrides.Listen, "listen", "", "listen address (default 127.0.0.1:8008, or PROFILESTORE_LISTEN)")
	root.PersistentFlags().StringVar(&overrides.Store, "store", "", "event store: bolt or esdb (or PROFILESTORE_STORE)")
	root.PersistentFlags().StringVar(&overrides.ESDBURL, "esdb-url", "", "EventStoreDB connection string (or PROFILESTORE_ESDB_URL)")
	root.PersistentFlags().StringVar(&overrides.LogLevel, "log-level", "", "log level: debug, info, warn, error")

	load := func() (Config, *logrus.Logger, error) {
		cfg, err := loadConfig(configPath)
		if err != nil {
			return cfg, nil, err
		}
		for dst, src := range map[*string]string{&cfg.DataDir: overrides.DataDir, &cfg.Listen: overrides.Listen,
			&cfg.Store: overrides.Store, &cfg.ESDBURL: overrides.ESDBURL, &cfg.LogLevel: overrides.LogLevel} {
			if src != "" {
				*dst = src
			}
		}
		log := logrus.New()
		log.SetOutput(os.Stderr)
		if cfg.LogFormat == "json" {
			log.SetFormatter(&logrus.JSONFormatter{})
		}
		level, err := logrus.ParseLevel(cfg.LogLevel)
		if err != nil {
			return cfg, nil, fmt.Errorf("log level: %w", err)
		}
		log.SetLevel(level)
		return cfg, log, nil
	}
	root.AddCommand(serveCommand(load), tokenCommand(load), rebuildCommand(load), exportCommand(load), importCommand(load), benchCommand(load), appserviceCommand(load))
	return root
}

type loader func() (Config, *logrus.Logger, error)
