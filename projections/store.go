package projections

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"sync"

	"github.com/profilestore/profilestore/eventstore"
	"github.com/profilestore/profilestore/projections/viewstore"
)

// FormatVersion changes whenever a view's keys, encodings or fold change;
// a view store of another version is set aside and the views rebuilt from
// the log.
const FormatVersion = 8

// Key prefixes of the view store. Each view owns its prefixes; the byte
// after a prefix is 0 so that no prefix is a prefix of another's keys.
var (
	keyFormat     = []byte("meta\x00format")
	keyCheckpoint = []byte("meta\x00checkpoint")
)

// DB is the view store the views share: an ordered key-value store with the
// checkpoint of the last applied event, and the lock that keeps readers
// from seeing a transaction half published (its writes committed, a view's
// caches not yet updated).
type DB struct {
	store viewstore.Store
	// mu is the deferred views' lock; profilesMu the profile view's, so
	// that the acknowledging stage never waits for a deferred commit.
	mu, profilesMu sync.RWMutex
}

// OpenDB opens the view store in dir (pebble), creating it if needed. A
// store written by another FormatVersion is removed first: views are
// derived data, rebuilt from the log.
func OpenDB(dir string, o viewstore.PebbleOptions) (*DB, bool, error) {
	s, err := viewstore.OpenPebble(dir, o)
	if err != nil {
		return nil, false, err
	}
	v, ok, err := s.Get(keyFormat)
	if err != nil {
		s.Close()
		return nil, false, err
	}
	if ok && string(v) == fmt.Sprint(FormatVersion) {
		return &DB{store: s}, false, nil
	}
	empty := true
	if err := s.Scan(nil, nil, false, func(k, v []byte) bool { empty = false; return false }); err != nil {
		s.Close()
		return nil, false, err
	}
	if !empty {
		// Written by another version: start over.
		s.Close()
		if err := os.RemoveAll(dir); err != nil {
			return nil, false, fmt.Errorf("remove view store of another version: %w", err)
		}
		if s, err = viewstore.OpenPebble(dir, o); err != nil {
			return nil, false, err
		}
	}
	db := &DB{store: s}
	tx, err := s.Begin()
	if err != nil {
		s.Close()
		return nil, false, err
	}
	if err := tx.Set(keyFormat, fmt.Append(nil, FormatVersion)); err != nil {
		tx.Discard()
		s.Close()
		return nil, false, err
	}
	if err := tx.Commit(); err != nil {
		s.Close()
		return nil, false, err
	}
	return db, true, nil
}

// NewDB wraps a store (tests use both engines).
func NewDB(s viewstore.Store) *DB { return &DB{store: s} }

// Close makes every committed transaction durable and closes the store.
func (d *DB) Close() error {
	d.profilesMu.Lock()
	defer d.profilesMu.Unlock()
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.store.Close()
}

// Sync makes every committed transaction durable (flushes the engine's
// memory tables to its files).
func (d *DB) Sync() error { return d.store.Sync() }

// DiskBytes is the size of the view store's files (0 when the engine
// cannot tell).
func (d *DB) DiskBytes() uint64 {
	if s, ok := d.store.(interface{ DiskBytes() uint64 }); ok {
		return s.DiskBytes()
	}
	return 0
}

// EngineStats is the view store engine's memory (false when the engine
// does not report it).
func (d *DB) EngineStats() (viewstore.EngineStats, bool) {
	if s, ok := d.store.(interface{ EngineStats() viewstore.EngineStats }); ok {
		return s.EngineStats(), true
	}
	return viewstore.EngineStats{}, false
}

// Checkpoint returns the position of the last event every view applied.
func (d *DB) Checkpoint() (eventstore.Position, error) {
	v, ok, err := d.store.Get(keyCheckpoint)
	if err != nil || !ok {
		return eventstore.Start, err
	}
	return eventstore.ParsePosition(string(v))
}

// read runs fn with the deferred views' commits held off, so fn sees one
// committed state of them.
func (d *DB) read(fn func(r viewstore.Reader)) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	fn(d.store)
}

// readProfiles is read for the profile view.
func (d *DB) readProfiles(fn func(r viewstore.Reader)) {
	d.profilesMu.RLock()
	defer d.profilesMu.RUnlock()
	fn(d.store)
}

// errStorage wraps view store failures: the views cannot go on.
var errStorage = errors.New("projections: view store failure")

// keyOf builds a key: prefix, then parts separated by 0 bytes (user and
// room ids never contain a 0 byte).
func keyOf(prefix string, parts ...string) []byte {
	n := len(prefix)
	for _, p := range parts {
		n += len(p) + 1
	}
	k := make([]byte, 0, n+16)
	k = append(k, prefix...)
	for _, p := range parts {
		k = append(k, 0)
		k = append(k, p...)
	}
	return k
}

// appendKey appends keyOf(prefix, parts...) to k.
func appendKey(k []byte, prefix string, parts ...string) []byte {
	k = append(k, prefix...)
	for _, p := range parts {
		k = append(k, 0)
		k = append(k, p...)
	}
	return k
}

// rangeOf is the prefix of the keys under parts: keyOf and a 0 byte, so
// that one id's range never takes in a longer id's.
func rangeOf(prefix string, parts ...string) []byte {
	return append(keyOf(prefix, parts...), 0)
}

// posKey is a key of a position-ordered range (see rangeOf).
func posKey(pos eventstore.Position, prefix string, parts ...string) []byte {
	return appendPos(rangeOf(prefix, parts...), pos)
}

// appendPos appends a position so that keys sort in log order.
func appendPos(k []byte, p eventstore.Position) []byte {
	k = binary.BigEndian.AppendUint64(k, p.Commit)
	return binary.BigEndian.AppendUint64(k, p.Prepare)
}

func readPos(b []byte) eventstore.Position {
	return eventstore.Position{Commit: binary.BigEndian.Uint64(b), Prepare: binary.BigEndian.Uint64(b[8:])}
}
