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

// Store is an ordered key-value store of view state.
type Store interface {
	// Get returns a copy of the value at key; ok is false when there is none.
	Get(key []byte) (value []byte, ok bool, err error)
	// Scan calls fn for each key in [lower, upper) in key order (descending
	// when reverse), until fn returns false. upper nil means no bound. The
	// slices passed to fn are valid only during the call.
	Scan(lower, upper []byte, reverse bool, fn func(key, value []byte) bool) error
	// Commit applies a batch atomically: after a crash either all of it or
	// none of it is visible, and batches become durable in commit order.
	Commit(b *Batch) error
	// Purge makes sure no value that was overwritten or deleted before the
	// call remains anywhere in the store's files (erasure).
	Purge() error
	// Sync makes every committed batch durable.
	Sync() error
	// Close syncs and releases the store.
	Close() error
}

// Batch is a set of writes committed together.
type Batch struct {
	ops  []op
	size int
}

type op struct {
	key, value []byte
	del        bool
}

// Set writes value at key; both are copied.
func (b *Batch) Set(key, value []byte) {
	b.ops = append(b.ops, op{key: bytes.Clone(key), value: bytes.Clone(value)})
	b.size += len(key) + len(value)
}

// Delete removes key.
func (b *Batch) Delete(key []byte) {
	b.ops = append(b.ops, op{key: bytes.Clone(key), del: true})
	b.size += len(key)
}

// Len returns the number of writes in the batch.
func (b *Batch) Len() int { return len(b.ops) }

// Size returns the bytes of keys and values in the batch.
func (b *Batch) Size() int { return b.size }

// Reset empties the batch for reuse.
func (b *Batch) Reset() { b.ops, b.size = b.ops[:0], 0 }

// Each calls fn for each write in order; del marks a deletion.
func (b *Batch) Each(fn func(key, value []byte, del bool) error) error {
	for _, o := range b.ops {
		if err := fn(o.key, o.value, o.del); err != nil {
			return err
		}
	}
	return nil
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
