// Package viewstore is the storage seam of the projections: an ordered
// key-value store the views keep their state in. The views see only Store
// and Batch, so the engine (pebble by default, bbolt for comparison) can
// change without touching a view rule.
//
// The store is not the source of truth: the log is. A store may lose its
// most recent batches in a crash as long as it keeps a prefix of them, each
// whole; the checkpoint a batch carries then says where to catch up from.
package viewstore

import (
	"bytes"
	"errors"
)

// Reader reads the store's state.
type Reader interface {
	// Get returns a copy of the value at key; ok is false when there is none.
	Get(key []byte) (value []byte, ok bool, err error)
	// Scan calls fn for each key in [lower, upper) in key order (descending
	// when reverse), until fn returns false. upper nil means no bound. The
	// slices passed to fn are valid only during the call.
	Scan(lower, upper []byte, reverse bool, fn func(key, value []byte) bool) error
}

// SortedGetter is a Reader that also reads many keys with one iterator:
// cheaper than a Get each when they are many and near one another, as the
// users of a big room's members are in the users' key range.
type SortedGetter interface {
	// GetSorted calls fn with the index and the value of each of keys that
	// has one, in the keys' order, which should be ascending (any order
	// is correct; ascending is what makes it cheap). The value is valid
	// only during the call.
	GetSorted(keys [][]byte, fn func(i int, value []byte)) error
}

// Txn is a set of writes that reads its own writes and commits atomically.
// Readers of the Store see none of it until Commit. A Txn is used by one
// goroutine at a time.
type Txn interface {
	Reader
	// Set, Delete and Add copy their arguments: callers may reuse them.
	Set(key, value []byte) error
	Delete(key []byte) error
	// Add adds a counter value (see Counter) to the one at key, without
	// reading it: reads see the sum.
	Add(key, counter []byte) error
	// Len is the number of writes so far.
	Len() int
	// Commit applies every write atomically: after a crash either all of
	// them or none are visible, and transactions become durable in commit
	// order (a crash keeps a prefix of them).
	Commit() error
	// Discard drops the writes; it is a no-op after Commit.
	Discard()
}

// Store is an ordered key-value store of view state.
type Store interface {
	// Reader reads committed state.
	Reader
	// Begin opens a write transaction.
	Begin() (Txn, error)
	// CommitAll commits several transactions' writes atomically, as one,
	// in order (later writes to a key win). Transactions that write
	// disjoint keys can be filled in parallel and committed together.
	CommitAll(txns ...Txn) error
	// Purge makes sure no value that was overwritten or deleted before the
	// call remains anywhere in the store's files (erasure).
	Purge() error
	// Sync makes every committed transaction durable.
	Sync() error
	// Close syncs and releases the store.
	Close() error
}

// ErrClosed is returned by a store used after Close.
var ErrClosed = errors.New("viewstore: closed")

// PrefixEnd returns the smallest key greater than every key with prefix p,
// the upper bound of a prefix scan (nil when there is none).
func PrefixEnd(p []byte) []byte {
	end := bytes.Clone(p)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] < 0xff {
			end[i]++
			return end[:i+1]
		}
	}
	return nil
}
