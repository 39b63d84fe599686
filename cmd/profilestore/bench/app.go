// Package bench is `profilestore bench`: fsync, store appends, HTTP writes
// and reads measured against a no-op handler, room renames, history pages,
// rebuild and restart, written as docs/PERFORMANCE.md's tables. It lives
// apart from the production command; the command supplies the wiring (Env)
// so the bench measures exactly what `serve` runs.
package bench

import (
	"context"

	"github.com/profilestore/profilestore/domain"
	"github.com/profilestore/profilestore/eventstore"
	pshttp "github.com/profilestore/profilestore/http"
	"github.com/profilestore/profilestore/projections"
	"github.com/sirupsen/logrus"
)

// App is profilestore as the production command wires it, opened on one of
// the bench's data directories.
type App struct {
	Store      eventstore.Store
	Sealer     *domain.Sealer
	Profiles   *domain.ProfileService
	Rooms      *domain.RoomService
	Runner     *projections.Runner
	Views      *projections.Profiles
	RoomViews  *projections.Rooms
	TokensFile string
	// Server builds the HTTP server on a loopback port with rate limits off
	// (the bench measures the service, not its limiter); not yet listening.
	Server func() (*pshttp.Server, error)
	// RebuildViews builds every view from the log into a fresh view store
	// and swaps it in, as `profilestore rebuild` does.
	RebuildViews func(ctx context.Context) error
	// Close closes the store and keyring (not the runner).
	Close func()
}

// Env is what the bench takes from the command's configuration.
type Env struct {
	Log *logrus.Logger
	// Store is "bolt" or "esdb" (then ESDBURL names the server).
	Store   string
	ESDBURL string
	// Open opens the app on dataDir with the given store kind.
	Open func(ctx context.Context, dataDir, store string) (*App, error)
}
