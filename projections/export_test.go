package projections

import (
	"bytes"
	"fmt"
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

// Diff compares two view stores key by key and describes the first
// difference, or returns "".
func Diff(t testing.TB, a, b *DB) string {
	t.Helper()
	type kv struct{ k, v []byte }
	all := func(d *DB) []kv {
		var out []kv
		if err := d.store.Scan(nil, nil, false, func(k, v []byte) bool {
			out = append(out, kv{bytes.Clone(k), bytes.Clone(v)})
			return true
		}); err != nil {
			t.Fatal(err)
		}
		return out
	}
	x, y := all(a), all(b)
	for i := 0; i < len(x) || i < len(y); i++ {
		switch {
		case i >= len(x):
			return fmt.Sprintf("only the second has %q", y[i].k)
		case i >= len(y):
			return fmt.Sprintf("only the first has %q", x[i].k)
		case !bytes.Equal(x[i].k, y[i].k):
			return fmt.Sprintf("key %d: %q vs %q", i, x[i].k, y[i].k)
		case !bytes.Equal(x[i].v, y[i].v):
			return fmt.Sprintf("at %q: %x vs %x", x[i].k, x[i].v, y[i].v)
		}
	}
	return ""
}

// SortedDiff is sortedDiff, for its table test.
var SortedDiff = sortedDiff
