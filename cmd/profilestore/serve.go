package main

import (
	"fmt"
	neturl "net/url"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/profilestore/profilestore/eventstore/bolt"
	"github.com/schollz/progressbar/v3"
	"github.com/sirupsen/logrus"
	"github.com/spf13/cobra"
	"golang.org/x/term"
)

func serveCommand(load loader) *cobra.Command {
	return &cobra.Command{
		Use:   "serve",
		Short: "Run the HTTP service (embedded store in ./data on " + defaultListen + " by default)",
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, log, err := load()
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			a, err := openApp(ctx, cfg, log)
			if err != nil {
				return err
			}
			defer a.close()
			if store, ok := a.Store.(*bolt.Store); ok {
				// Without the socket the service still runs; only backup
				// and export must then wait for it to stop.
				if ctl, err := startControl(a, store, a.Keyring.(*bolt.Keyring)); err != nil {
					log.WithError(err).Warn("backup and export are unavailable while this server runs")
				} else {
					defer ctl.Close()
				}
			}
			if err := a.Runner.Start(ctx, progressReporter("catching up projections")); err != nil {
				return err
			}
			auth, err := a.authenticator()
			if err != nil {
				a.Runner.Close()
				return err
			}
			srv, err := a.server(auth)
			if err != nil {
				a.Runner.Close()
				return err
			}
			if err := srv.Open(); err != nil {
				a.Runner.Close()
				return err
			}
			// Check the history once in the background, so that the
			// console can say how far it is verified (if configured: its
			// memory grows with the number of streams).
			if cfg.Integrity.CheckAtStart {
				a.checker.Start(ctx)
			}
			if a.seals != nil {
				go a.seals.Run(ctx)
			} else {
				log.Warn("no integrity.signing_key: events are hash-chained but not sealed (create a key with `profilestore integrity keygen`)")
			}
			a.alerts.start(ctx, a)
			a.logStartup(srv.URL())
			<-ctx.Done()
			log.Info("shutting down")
			srv.Close()
			a.alerts.wait()
			return a.Runner.Close()
		},
	}
}

// progressReporter draws a progress bar on a terminal and does nothing
// otherwise (logs stay clean under systemd or in containers).
func progressReporter(what string) func(applied, total uint64) {
	if !term.IsTerminal(int(os.Stderr.Fd())) {
		return nil
	}
	var bar *progressbar.ProgressBar
	return func(applied, total uint64) {
		if bar == nil {
			bar = progressbar.NewOptions64(int64(total), progressbar.OptionSetDescription(what),
				progressbar.OptionSetWriter(os.Stderr), progressbar.OptionShowCount(), progressbar.OptionThrottle(100e6),
				progressbar.OptionOnCompletion(func() { fmt.Fprintln(os.Stderr) }))
		}
		_ = bar.Set64(int64(min(applied, total)))
	}
}

// logStartup logs the configuration the app runs with (validated, its
// defaults filled in) through the app's logger.
func (a *app) logStartup(url string) { logStartup(a.log, a.cfg, url) }

// logStartup says what the operator needs to check at a glance: where the
// service and its console are, which store it writes to, how it checks
// tokens and whether it mirrors a homeserver.
func logStartup(log *logrus.Logger, cfg Config, url string) {
	store := "bolt " + filepath.Join(cfg.DataDir, "events.db")
	if cfg.Store == "esdb" {
		store = "esdb " + redactURL(cfg.ESDBURL)
	}
	auth := "tokens file " + cfg.Auth.TokensFile
	if cfg.Auth.Mode == "homeserver" {
		auth = "homeserver " + cfg.Auth.HomeserverURL
	}
	as := "off"
	if cfg.Appservice.Enabled {
		hs := cfg.Appservice.HomeserverURL
		if hs == "" {
			hs = cfg.Auth.HomeserverURL
		}
		if hs == "" {
			hs = "(no homeserver_url: profile look-ups off)"
		}
		as = "on, homeserver " + hs
	}
	log.WithFields(logrus.Fields{"url": url, "console": url + "/console/", "data_dir": cfg.DataDir, "store": store,
		"auth": auth, "appservice": as}).Info("profilestore is serving")
	if cfg.Auth.Mode == "tokens" {
		log.Infof("issue an access token with: profilestore token issue --data-dir %s @you:your.server", cfg.DataDir)
	}
}

// redactURL drops the password of a connection string before it is logged.
func redactURL(s string) string {
	u, err := neturl.Parse(s)
	if err != nil {
		return "(unparsable URL)"
	}
	return u.Redacted()
}
