package projections

import (
	"bytes"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"github.com/profilestore/profilestore/domain"
	"github.com/profilestore/profilestore/projections/viewstore"
)

// OpenTestDB opens a view store in a temporary directory, closed when the
// test ends.
func OpenTestDB(t testing.TB) *DB {
	t.Helper()
	return OpenTestDBAt(t, filepath.Join(t.TempDir(), "views"))
}

// OpenTestDBAt opens the view store in dir; the caller closes it.
func OpenTestDBAt(t testing.TB, dir string) *DB {
	t.Helper()
	db, _, err := OpenDB(dir, viewstore.PebbleOptions{CacheBytes: 8 << 20, MemTableBytes: 4 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// Direct applies events to views the way the runner does, one committed
// transaction per event.
type Direct struct {
	t     testing.TB
	r     *Runner
	views []View
}

// NewDirect returns an applier of events to views over db.
func NewDirect(t testing.TB, db *DB, views ...View) *Direct {
	return &Direct{t: t, r: NewRunner(Options{DB: db}), views: views}
}

// Apply applies one event to every view and commits it.
func (d *Direct) Apply(e *domain.Event) {
	d.t.Helper()
	if err := d.r.commit(d.views, []*domain.Event{e}, nil); err != nil {
		d.t.Fatal(err)
	}
}

// ApplyBatch applies events in one transaction.
func (d *Direct) ApplyBatch(events ...*domain.Event) {
	d.t.Helper()
	if err := d.r.commit(d.views, events, nil); err != nil {
		d.t.Fatal(err)
	}
}

// Purge runs the store's purge, as the runner does after an erasure.
func (d *DB) Purge() error { return d.store.Purge() }

// FileHolding returns a file of the view store that holds marker, or "".
func FileHolding(t testing.TB, d *DB, marker string) string {
	t.Helper()
	p, ok := d.store.(*viewstore.Pebble)
	if !ok {
		t.Fatal("not a pebble store")
	}
	if err := p.Sync(); err != nil {
		t.Fatal(err)
	}
	found := ""
	err := filepath.WalkDir(p.Dir(), func(path string, de fs.DirEntry, err error) error {
		if os.IsNotExist(err) {
			return nil
		}
		if err != nil || de.IsDir() {
			return err
		}
		data, err := os.ReadFile(path)
		if os.IsNotExist(err) {
			return nil
		}
		if err != nil {
			return err
		}
		if bytes.Contains(data, []byte(marker)) {
			found = path
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return found
}
