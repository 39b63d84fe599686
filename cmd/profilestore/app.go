package main

import (
	"context"

	psapp "github.com/profilestore/profilestore/app"
	"github.com/profilestore/profilestore/domain"
	"github.com/profilestore/profilestore/eventstore"
	"github.com/profilestore/profilestore/eventstore/integrity"
	pshttp "github.com/profilestore/profilestore/http"
	"github.com/profilestore/profilestore/projections/viewstore"
	"github.com/sirupsen/logrus"
)

// app is profilestore wired together (package app) with the command's
// configuration.
type app struct {
	*psapp.App
	cfg Config
	log *logrus.Logger
	// checker is the online integrity check; seals is the seal writer,
	// nil without a signing key (see serve).
	checker *integrity.Checker
	seals   *integrity.Writer
	// alerts raises and delivers moderation alerts; nil when off.
	alerts *alerting
	// backfill runs backfills on the running server; nil without the appservice.
	backfill *backfillService
}

// openApp opens the data directory's log and keyring and wires the app over
// them; the runner is not started.
func openApp(ctx context.Context, cfg Config, log *logrus.Logger) (*app, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if err := makeDataDir(cfg.DataDir, func(m string) { log.Info(m) }); err != nil {
		return nil, err
	}
	var store eventstore.Store
	var keyring eventstore.Keyring
	var err error
	switch cfg.Store {
	case "bolt":
		if store, keyring, err = openBolt(cfg.DataDir, log); err != nil {
			return nil, err
		}
	default:
		// openESDB says which of the two failed.
		if store, keyring, err = openESDB(ctx, cfg, log); err != nil {
			return nil, err
		}
	}
	policy := domain.WritePolicy{
		Limits: domain.Limits{
			MaxDisplayNameChars: cfg.Profile.MaxDisplayNameChars,
			MaxAvatarURLBytes:   cfg.Profile.MaxAvatarURLBytes,
		},
		Fields: cfg.Profile.Fields,
	}
	wired, err := psapp.New(store, keyring, psapp.Options{
		DataDir:          cfg.DataDir,
		Policy:           &policy,
		ViewCacheEntries: cfg.Views.CacheEntries,
		ViewStore:        viewstore.PebbleOptions{CacheBytes: int64(cfg.Views.BlockCacheMB) << 20},
		CachedProfiles:   cfg.CommandCache.Profiles,
		CachedRooms:      cfg.CommandCache.Rooms,
		Logger:           log,
	})
	if err != nil {
		keyring.Close()
		store.Close()
		return nil, err
	}
	a := &app{App: wired, cfg: cfg, log: log}
	// Hides that an import moved (domain/moved.go) are decoded through the
	// Sealer, so it must know them before anything reads the log.
	if err := domain.LoadMovedHides(ctx, a.Store, a.Sealer); err != nil {
		a.close()
		return nil, err
	}
	keys, err := cfg.Integrity.trustedKeys(nil)
	if err != nil {
		a.close()
		return nil, err
	}
	a.checker = integrity.NewChecker(a.Store, keys, log)
	if a.seals, err = a.sealWriter(); err != nil {
		a.close()
		return nil, err
	}
	return a, nil
}

// authenticator builds the configured client token check.
func (a *app) authenticator() (pshttp.Authenticator, error) {
	if a.cfg.Auth.Mode == "homeserver" {
		return pshttp.NewHomeserverAuth(a.cfg.Auth.HomeserverURL, nil, a.cfg.Auth.CacheTTL, a.cfg.Auth.NegativeTTL, a.cfg.Auth.Admins), nil
	}
	return pshttp.LoadTokenFile(a.cfg.Auth.TokensFile)
}

// server builds the HTTP server over the app.
func (a *app) server(auth pshttp.Authenticator) (*pshttp.Server, error) {
	cfg := a.ServerConfig()
	cfg.Addr = a.cfg.Listen
	cfg.AnalyticsTokenHashes = a.cfg.Feed.AnalyticsTokenSHA256
	cfg.FeedHeartbeat = a.cfg.Feed.Heartbeat
	cfg.Auth = auth
	cfg.Logger = a.log
	cfg.DefaultPropagation = a.cfg.Profile.DefaultPropagation
	cfg.RequireAuthForProfile = a.cfg.Profile.RequireAuth
	cfg.WriteRate = a.cfg.RateLimit.WritesPerSecond
	cfg.WriteBurst = a.cfg.RateLimit.Burst
	cfg.ApplyWait = a.cfg.ApplyWait
	cfg.Integrity = a.checker
	if a.seals != nil {
		cfg.SealKey = a.seals.PublicKey()
	}
	if err := a.withAppservice(&cfg); err != nil {
		return nil, err
	}
	if a.cfg.Appservice.Enabled {
		a.backfill = newBackfillService(a)
		cfg.Backfill = a.backfill
		cfg.Collectors = append(cfg.Collectors, a.backfill.metrics.Collectors()...)
	}
	al, err := a.withAlerts(&cfg)
	if err != nil {
		return nil, err
	}
	a.alerts = al
	return pshttp.NewServer(cfg), nil
}

func (a *app) close() {
	if a.backfill != nil {
		a.backfill.stop() // before the store closes under it
	}
	a.Close()
}
