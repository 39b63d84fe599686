// Package app is profilestore wired together over one data directory: the
// domain services under the write policy, the view store and the views the
// runner feeds, and the HTTP configuration that serves them. cmd/profilestore
// and every test that needs the whole service build it here, so the wiring
// exists once and cannot drift between two copies.
//
// Opening the event log and the keyring (the store's lock, the keyring's
// identity, the operator's messages, bolt or EventStoreDB) stays with the
// command; New takes them opened.
package app

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/profilestore/profilestore/domain"
	"github.com/profilestore/profilestore/eventstore"
	pshttp "github.com/profilestore/profilestore/http"
	"github.com/profilestore/profilestore/projections"
	"github.com/profilestore/profilestore/projections/viewstore"
	"github.com/sirupsen/logrus"
)

// Options are what the wiring needs beside the log and the keyring.
type Options struct {
	// DataDir holds the view store (ViewsDir), on the instance's own disk
	// also when the log is on EventStoreDB.
	DataDir string
	// Policy is the write policy; nil means domain.DefaultPolicy.
	Policy *domain.WritePolicy
	// CachedProfiles and CachedRooms bound the command side's aggregate
	// caches (0: the domain's defaults).
	CachedProfiles, CachedRooms int
	// ViewCacheEntries bounds the views' in-memory caches (0: their default).
	ViewCacheEntries int
	// ViewStore tunes the view store (block cache, memtables).
	ViewStore viewstore.PebbleOptions
	Logger    *logrus.Logger
}

// App is profilestore wired together. Its runner is built, not started.
type App struct {
	Store    eventstore.Store
	Keyring  eventstore.Keyring
	Sealer   *domain.Sealer
	Profiles *domain.ProfileService
	Eraser   *domain.Eraser
	Rooms    *domain.RoomService
	Views
	Runner *projections.Runner

	opts Options
	db   *projections.DB
}

// Views are the projections profilestore serves.
type Views struct {
	// ProfileView is the global profile view, the only one a write waits for.
	ProfileView *projections.Profiles
	// RoomView holds room members and the room and user histories.
	RoomView *projections.Rooms
	// Names is the index of every name used (search, look-alikes).
	Names *projections.NameIndex
	// Activity counts changes for the stats endpoint.
	Activity *projections.Activity
}

// ViewsDir is where the view store of a data directory lives.
func ViewsDir(dataDir string) string { return filepath.Join(dataDir, "views") }

// New wires the domain over store and keyring and opens the view store in
// the data directory. The App owns all three from then on (Close closes
// them); if New fails, store and keyring are the caller's to close.
func New(store eventstore.Store, keyring eventstore.Keyring, opts Options) (*App, error) {
	policy := domain.DefaultPolicy
	if opts.Policy != nil {
		policy = *opts.Policy
	}
	if opts.Logger == nil {
		opts.Logger = logrus.StandardLogger()
	}
	a := &App{Store: store, Keyring: keyring, Sealer: domain.NewSealer(keyring), opts: opts}
	a.Profiles = domain.NewProfileService(store, a.Sealer, policy, cacheSize(opts.CachedProfiles)...)
	a.Eraser = domain.NewEraser(keyring, a.Sealer, a.Profiles)
	a.Rooms = domain.NewRoomService(store, a.Sealer, policy, a.Profiles, cacheSize(opts.CachedRooms)...)
	if err := a.openViews(ViewsDir(opts.DataDir)); err != nil {
		return nil, err
	}
	return a, nil
}

// cacheSize is the service option of a configured cache size; none for 0.
func cacheSize(n int) []domain.ServiceOption {
	if n <= 0 {
		return nil
	}
	return []domain.ServiceOption{domain.CacheSize(n)}
}

// newViews builds the views over db and the runner that applies the log to
// them: the one place that says which views exist and in which order they
// apply each event.
func (a *App) newViews(db *projections.DB) (Views, *projections.Runner) {
	n := a.opts.ViewCacheEntries
	v := Views{
		ProfileView: projections.NewProfiles(db, n),
		RoomView:    projections.NewRooms(db, n),
		Names:       projections.NewNameIndex(db),
		Activity:    projections.NewActivity(db),
	}
	runner := projections.NewRunner(projections.Options{
		Store:    a.Store,
		Sealer:   a.Sealer,
		DB:       db,
		Views:    []projections.View{v.ProfileView},
		Deferred: []projections.View{v.RoomView, v.Names, v.Activity},
		Logger:   a.opts.Logger,
	})
	return v, runner
}

// openViews opens the view store in dir and builds the views over it.
func (a *App) openViews(dir string) error {
	// A rebuild that stopped between its two renames left the old views
	// beside the place of the current ones: put them back. One that
	// stopped before them left a partial store, which only takes space.
	if _, err := os.Stat(dir); os.IsNotExist(err) {
		if _, err := os.Stat(dir + ".old"); err == nil {
			a.opts.Logger.Warn("a rebuild was interrupted while swapping the view store in: the previous views are put back")
			if err := os.Rename(dir+".old", dir); err != nil {
				return fmt.Errorf("put back the views of an interrupted rebuild: %w", err)
			}
		}
	}
	if _, err := os.Stat(dir + ".rebuild"); err == nil {
		a.opts.Logger.Info("removing the view store of an interrupted rebuild")
		if err := os.RemoveAll(dir + ".rebuild"); err != nil {
			return err
		}
	}
	db, created, err := projections.OpenDB(dir, a.opts.ViewStore)
	if err != nil {
		return fmt.Errorf("open the view store: %w (is another profilestore using this data directory?)", err)
	}
	if created {
		// Views of a data directory from before views were kept on disk
		// were snapshots: derived data, replaced by the view store.
		old := filepath.Join(a.opts.DataDir, "snapshots")
		if _, err := os.Stat(old); err == nil {
			a.opts.Logger.WithField("path", old).Info("upgrading the data directory: the views are built from the log once, and the old snapshots removed")
			_ = os.RemoveAll(old)
		}
	}
	a.db = db
	a.Views, a.Runner = a.newViews(db)
	return nil
}

// RebuildCacheBytes is the least block cache a rebuild's fresh view store
// gets, whatever views.block_cache_mb says.
const RebuildCacheBytes = 512 << 20

// RebuildViews builds every view from the log into a fresh view store
// beside the current one and swaps it in; the old views serve until the
// swap. The runner must not be started.
func (a *App) RebuildViews(ctx context.Context, progress func(applied, total uint64)) error {
	cur := ViewsDir(a.opts.DataDir)
	fresh, old := cur+".rebuild", cur+".old"
	if err := os.RemoveAll(fresh); err != nil {
		return err
	}
	// A rebuild reads back much of what it has just written (a member's
	// record at each change, a user's state at each rename): a block cache
	// larger than serving needs keeps the tables' filter and index blocks
	// in memory while the tree grows, a third less CPU per event.
	o := a.opts.ViewStore
	o.CacheBytes = max(o.CacheBytes, RebuildCacheBytes)
	db, _, err := projections.OpenDB(fresh, o)
	if err != nil {
		return err
	}
	_, runner := a.newViews(db)
	if err := runner.Rebuild(ctx, progress); err != nil {
		db.Close()
		os.RemoveAll(fresh)
		return err
	}
	if err := db.Close(); err != nil {
		return err
	}
	if err := a.db.Close(); err != nil {
		return err
	}
	a.db = nil
	if err := os.RemoveAll(old); err != nil {
		return err
	}
	if err := os.Rename(cur, old); err != nil && !os.IsNotExist(err) {
		return err
	}
	if err := os.Rename(fresh, cur); err != nil {
		return err
	}
	if err := SyncDir(a.opts.DataDir); err != nil {
		return err
	}
	if err := os.RemoveAll(old); err != nil {
		return err
	}
	return a.openViews(cur)
}

// SyncDir makes renames and new files in dir durable (the directory's own
// fsync), and says if it cannot.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// ViewStore is the open view store (tests sync it to inspect its files).
func (a *App) ViewStore() *projections.DB { return a.db }

// ServerConfig is the HTTP configuration of the app's parts; the caller adds
// the transport's own (address, authentication, limits, appservice side).
func (a *App) ServerConfig() pshttp.Config {
	return pshttp.Config{
		Store:       a.Store,
		Profiles:    a.Profiles,
		Eraser:      a.Eraser,
		Runner:      a.Runner,
		ProfileView: a.ProfileView,
		Names:       a.Names,
		Stats:       a.Activity,
		Sealer:      a.Sealer,
		RoomService: a.Rooms,
		RoomView:    a.RoomView,
		Collectors:  pshttp.ViewMetrics(a.db, a.ProfileView.Cache(), a.RoomView.Cache()),
	}
}

// Close stops the runner and closes the view store, the keyring and the log.
func (a *App) Close() {
	if a.Runner != nil {
		a.Runner.Close()
	}
	if a.db != nil {
		a.db.Close()
	}
	if a.Keyring != nil {
		a.Keyring.Close()
	}
	if a.Store != nil {
		a.Store.Close()
	}
}
