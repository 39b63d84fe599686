package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/profilestore/profilestore/domain"
	"github.com/profilestore/profilestore/eventstore"
	"github.com/profilestore/profilestore/eventstore/integrity"
	pshttp "github.com/profilestore/profilestore/http"
	"github.com/profilestore/profilestore/projections"
	"github.com/profilestore/profilestore/projections/viewstore"
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
	viewDB  *projections.DB
	// alerts raises and delivers moderation alerts; nil when off.
	alerts *alerting
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
	}, domain.CacheSize(cfg.CommandCache.Profiles))
	a.eraser = domain.NewEraser(a.keyring, a.sealer, a.profiles)
	a.rooms = domain.NewRoomService(a.store, a.sealer, a.profiles.Policy(), a.profiles, domain.CacheSize(cfg.CommandCache.Rooms))
	if err := a.openViews(viewsDir(cfg.DataDir)); err != nil {
		a.close()
		return nil, err
	}
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
	al, err := a.withAlerts(&cfg)
	if err != nil {
		return nil, err
	}
	a.alerts = al
	return pshttp.NewServer(cfg), nil
}

// viewsDir is where the views live: on the instance's own disk, also when
// the log is on EventStoreDB.
func viewsDir(dataDir string) string { return filepath.Join(dataDir, "views") }

// openViews opens the view store in dir and builds the views and their
// runner over it. The order of the views is the order they apply events in.
func (a *app) openViews(dir string) error {
	db, created, err := projections.OpenDB(dir, viewstore.PebbleOptions{CacheBytes: int64(a.cfg.Views.BlockCacheMB) << 20})
	if err != nil {
		return fmt.Errorf("open the view store: %w (is another profilestore using this data directory?)", err)
	}
	if created {
		// Views of a data directory from before views were kept on disk
		// were snapshots: derived data, replaced by the view store.
		old := filepath.Join(a.cfg.DataDir, "snapshots")
		if _, err := os.Stat(old); err == nil {
			a.log.WithField("path", old).Info("upgrading the data directory: the views are built from the log once, and the old snapshots removed")
			_ = os.RemoveAll(old)
		}
	}
	a.viewDB = db
	n := a.cfg.Views.CacheEntries
	a.views = projections.NewProfiles(db, n)
	a.names = projections.NewNameIndex(db)
	a.stats = projections.NewActivity(db)
	a.roomView = projections.NewRooms(db, n)
	a.runner = projections.NewRunner(projections.Options{
		Store:    a.store,
		Sealer:   a.sealer,
		DB:       db,
		Views:    []projections.View{a.views},
		Deferred: []projections.View{a.roomView, a.names, a.stats},
		Logger:   a.log,
	})
	return nil
}

// rebuildViews builds every view from the log into a fresh view store
// beside the current one and swaps it in; the old views serve until the
// swap. The runner must not be started.
func (a *app) rebuildViews(ctx context.Context, progress func(applied, total uint64)) error {
	cur := viewsDir(a.cfg.DataDir)
	fresh, old := cur+".rebuild", cur+".old"
	if err := os.RemoveAll(fresh); err != nil {
		return err
	}
	db, _, err := projections.OpenDB(fresh, viewstore.PebbleOptions{CacheBytes: int64(a.cfg.Views.BlockCacheMB) << 20})
	if err != nil {
		return err
	}
	n := a.cfg.Views.CacheEntries
	views := []projections.View{projections.NewProfiles(db, n)}
	deferred := []projections.View{projections.NewRooms(db, n), projections.NewNameIndex(db), projections.NewActivity(db)}
	runner := projections.NewRunner(projections.Options{Store: a.store, Sealer: a.sealer, DB: db, Views: views, Deferred: deferred, Logger: a.log})
	if err := runner.Rebuild(ctx, progress); err != nil {
		db.Close()
		os.RemoveAll(fresh)
		return err
	}
	if err := db.Close(); err != nil {
		return err
	}
	if err := a.viewDB.Close(); err != nil {
		return err
	}
	a.viewDB = nil
	if err := os.RemoveAll(old); err != nil {
		return err
	}
	if err := os.Rename(cur, old); err != nil && !os.IsNotExist(err) {
		return err
	}
	if err := os.Rename(fresh, cur); err != nil {
		return err
	}
	if err := syncDir(a.cfg.DataDir); err != nil {
		return err
	}
	if err := os.RemoveAll(old); err != nil {
		return err
	}
	return a.openViews(cur)
}

func (a *app) close() {
	if a.runner != nil {
		a.runner.Close()
	}
	if a.viewDB != nil {
		a.viewDB.Close()
	}
	if a.keyring != nil {
		a.keyring.Close()
	}
	if a.store != nil {
		a.store.Close()
	}
}
