package main

import (
	"context"
	"path/filepath"

	"github.com/profilestore/profilestore/domain"
	"github.com/profilestore/profilestore/eventstore"
	"github.com/profilestore/profilestore/eventstore/integrity"
	pshttp "github.com/profilestore/profilestore/http"
	"github.com/profilestore/profilestore/projections"
	"github.com/sirupsen/logrus"
)

// app is profilestore wired together: store, keyring, domain, views.
type app struct {
	cfg      Config
	log      *logrus.Logger
	store    eventstore.Store
	keyring  eventstore.Keyring
	sealer   *domain.Sealer
	profiles *domain.ProfileService
	eraser   *domain.Eraser
	views    *projections.Profiles
	names    *projections.NameIndex
	stats    *projections.Activity
	rooms    *domain.RoomService
	roomView *projections.Rooms
	runner   *projections.Runner
	// checker is the online integrity check; seals is the seal writer,
	// nil without a signing key (see serve).
	checker *integrity.Checker
	seals   *integrity.Writer
}

// openApp opens the store and keyring and builds the domain and views; the
// runner is not started.
func openApp(ctx context.Context, cfg Config, log *logrus.Logger) (*app, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if err := makeDataDir(cfg.DataDir, func(m string) { log.Info(m) }); err != nil {
		return nil, err
	}
	a := &app{cfg: cfg, log: log}
	var err error
	switch cfg.Store {
	case "bolt":
		if a.store, a.keyring, err = openBolt(cfg.DataDir, log); err != nil {
			return nil, err
		}
	default:
		// openESDB says which of the two failed.
		if a.store, a.keyring, err = openESDB(ctx, cfg, log); err != nil {
			return nil, err
		}
	}
	a.sealer = domain.NewSealer(a.keyring)
	a.profiles = domain.NewProfileService(a.store, a.sealer, domain.WritePolicy{
		Limits: domain.Limits{
			MaxDisplayNameChars: cfg.Profile.MaxDisplayNameChars,
			MaxAvatarURLBytes:   cfg.Profile.MaxAvatarURLBytes,
		},
		Fields: cfg.Profile.Fields,
	})
	a.eraser = domain.NewEraser(a.keyring, a.sealer, a.profiles)
	a.rooms = domain.NewRoomService(a.store, a.sealer, a.profiles.Policy(), a.profiles)
	a.views = projections.NewProfiles()
	a.names = projections.NewNameIndex()
	a.stats = projections.NewActivity()
	a.roomView = projections.NewRooms()
	a.runner = projections.NewRunner(projections.Options{
		Store:        a.store,
		Sealer:       a.sealer,
		Views:        []projections.View{a.views},
		Deferred:     []projections.View{a.roomView, a.names, a.stats},
		SnapshotPath: filepath.Join(cfg.DataDir, "snapshots", "projections.snap"),
		Logger:       log,
	})
	keys, err := cfg.Integrity.trustedKeys(nil)
	if err != nil {
		a.close()
		return nil, err
	}
	a.checker = integrity.NewChecker(a.store, keys, log)
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
	cfg := pshttp.Config{
		Addr:                  a.cfg.Listen,
		Store:                 a.store,
		Profiles:              a.profiles,
		Eraser:                a.eraser,
		Runner:                a.runner,
		ProfileView:           a.views,
		Names:                 a.names,
		Stats:                 a.stats,
		Sealer:                a.sealer,
		AnalyticsTokenHashes:  a.cfg.Feed.AnalyticsTokenSHA256,
		FeedHeartbeat:         a.cfg.Feed.Heartbeat,
		RoomService:           a.rooms,
		RoomView:              a.roomView,
		Auth:                  auth,
		Logger:                a.log,
		DefaultPropagation:    a.cfg.Profile.DefaultPropagation,
		RequireAuthForProfile: a.cfg.Profile.RequireAuth,
		WriteRate:             a.cfg.RateLimit.WritesPerSecond,
		WriteBurst:            a.cfg.RateLimit.Burst,
		ApplyWait:             a.cfg.ApplyWait,
		Integrity:             a.checker,
	}
	if a.seals != nil {
		cfg.SealKey = a.seals.PublicKey()
	}
	if err := a.withAppservice(&cfg); err != nil {
		return nil, err
	}
	return pshttp.NewServer(cfg), nil
}

func (a *app) close() {
	if a.keyring != nil {
		a.keyring.Close()
	}
	if a.store != nil {
		a.store.Close()
	}
}
