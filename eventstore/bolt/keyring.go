package bolt

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/profilestore/profilestore/eventstore"
)

// The keyring file holds three buckets:
//
//	meta       "format" -> 8-byte big-endian version (1);
//	           "compact" -> present while a Destroy has not finished compacting
//	keys       SHA-256(subject) -> 4-byte big-endian generation, 32-byte secret
//	destroyed  SHA-256(subject) -> 4-byte big-endian highest destroyed generation
//
// Subjects are stored hashed so that the file names no user. A subject has at
// most one live key: a new generation is only made after a Destroy.
var (
	bucketKeys      = []byte("keys")
	bucketDestroyed = []byte("destroyed")
	keyCompact      = []byte("compact")
)

// maxCachedSubjects bounds the keyring's memory; past it the cache starts over.
const maxCachedSubjects = 1 << 16

// keyBatchDelay is how long bbolt's Batch waits for more first-time key
// creations to share one fsync; short, since each waiter is a user request.
const keyBatchDelay = 2 * time.Millisecond

// Keyring is an eventstore.Keyring in its own small bbolt file. Keys are
// cached in memory; creating a key is durable before Current returns, and
// Destroy rewrites the file so that no page of it keeps the destroyed secret.
type Keyring struct {
	path string

	// mu is held shared by Current and Lookup and exclusively by Destroy and
	// Close, which replace or close db.
	mu sync.RWMutex
	db *bolt.DB

	cacheMu sync.Mutex
	cache   map[string]keyState
}

var _ eventstore.Keyring = (*Keyring)(nil)

// keyState is what the keyring knows of one subject.
type keyState struct {
	live      bool
	key       eventstore.DataKey
	destroyed uint32 // highest destroyed generation, 0 if none
}

// OpenKeyring opens or creates the keyring file at path, finishing the
// compaction of a Destroy that a crash interrupted.
func OpenKeyring(path string) (*Keyring, error) {
	k := &Keyring{path: path, cache: map[string]keyState{}}
	// A leftover of a compaction interrupted before its rename.
	if err := os.Remove(k.compactPath()); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("bolt: keyring %s: %w", path, err)
	}
	db, err := openKeyDB(path)
	if err != nil {
		return nil, err
	}
	k.db = db
	var pending bool
	err = db.Update(func(tx *bolt.Tx) error {
		meta, err := checkFormat(tx)
		if err != nil {
			return err
		}
		pending = meta.Get(keyCompact) != nil
		for _, name := range [][]byte{bucketKeys, bucketDestroyed} {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return err
			}
		}
		return nil
	})
	if err == nil && pending {
		err = k.compact()
	}
	if err != nil {
		if k.db != nil {
			k.db.Close()
		}
		return nil, fmt.Errorf("bolt: keyring %s: %w", path, err)
	}
	return k, nil
}

func openKeyDB(path string) (*bolt.DB, error) {
	db, err := openDB(path, 0, nil)
	if errors.Is(err, ErrInUse) {
		return nil, err
	}
	if err != nil {
		return nil, withPath("bolt: keyring", path, err)
	}
	db.MaxBatchDelay = keyBatchDelay
	return db, nil
}

func (k *Keyring) compactPath() string { return k.path + ".compact" }

// subjectKey is the stored name of a subject.
func subjectKey(subject string) []byte {
	h := sha256.Sum256([]byte(subject))
	return h[:]
}

func encodeKey(key eventstore.DataKey) []byte {
	b := make([]byte, 4+eventstore.KeySize)
	binary.BigEndian.PutUint32(b, key.Generation)
	copy(b[4:], key.Secret[:])
	return b
}

func decodeKey(b []byte) (eventstore.DataKey, error) {
	var key eventstore.DataKey
	if len(b) != 4+eventstore.KeySize {
		return key, fmt.Errorf("%w: key entry of %d bytes", errCorruptRecord, len(b))
	}
	key.Generation = binary.BigEndian.Uint32(b)
	copy(key.Secret[:], b[4:])
	return key, nil
}

func decodeGeneration(b []byte) (uint32, error) {
	if b == nil {
		return 0, nil
	}
	if len(b) != 4 {
		return 0, fmt.Errorf("%w: generation of %d bytes", errCorruptRecord, len(b))
	}
	return binary.BigEndian.Uint32(b), nil
}

// readState reads a subject's state inside a transaction.
func readState(tx *bolt.Tx, sk []byte) (keyState, error) {
	var st keyState
	var err error
	if st.destroyed, err = decodeGeneration(tx.Bucket(bucketDestroyed).Get(sk)); err != nil {
		return st, err
	}
	if v := tx.Bucket(bucketKeys).Get(sk); v != nil {
		if st.key, err = decodeKey(v); err != nil {
			return st, err
		}
		st.live = true
	}
	return st, nil
}

func (k *Keyring) cached(subject string) (keyState, bool) {
	k.cacheMu.Lock()
	defer k.cacheMu.Unlock()
	st, ok := k.cache[subject]
	return st, ok
}

func (k *Keyring) remember(subject string, st keyState) {
	k.cacheMu.Lock()
	defer k.cacheMu.Unlock()
	if len(k.cache) >= maxCachedSubjects {
		clear(k.cache)
	}
	k.cache[subject] = st
}

// state returns a subject's state from the cache or, once, from the file.
// The caller holds k.mu.
func (k *Keyring) state(subject string) (keyState, error) {
	if st, ok := k.cached(subject); ok {
		return st, nil
	}
	var st keyState
	err := k.db.View(func(tx *bolt.Tx) error {
		var err error
		st, err = readState(tx, subjectKey(subject))
		return err
	})
	if err != nil {
		return st, fmt.Errorf("bolt: keyring: read %q: %w", subject, err)
	}
	k.remember(subject, st)
	return st, nil
}

// Current returns the subject's live key, first creating and durably storing
// a new generation, higher than any destroyed one, if the subject has none.
// Concurrent calls for one subject return the same key.
func (k *Keyring) Current(ctx context.Context, subject string) (eventstore.DataKey, error) {
	if err := ctx.Err(); err != nil {
		return eventstore.DataKey{}, err
	}
	k.mu.RLock()
	defer k.mu.RUnlock()
	if k.db == nil {
		return eventstore.DataKey{}, eventstore.ErrClosed
	}
	if st, err := k.state(subject); err != nil || st.live {
		return st.key, err
	}
	var secret [eventstore.KeySize]byte
	if _, err := io.ReadFull(rand.Reader, secret[:]); err != nil {
		return eventstore.DataKey{}, fmt.Errorf("bolt: keyring: new key: %w", err)
	}
	sk := subjectKey(subject)
	var st keyState
	// Batch groups the first keys of concurrent callers into one fsync. It
	// may run the function again alone, so the function first takes a key
	// an earlier call (or run) stored.
	err := k.db.Batch(func(tx *bolt.Tx) error {
		var err error
		if st, err = readState(tx, sk); err != nil || st.live {
			return err
		}
		if st.destroyed == ^uint32(0) {
			return errors.New("generations exhausted")
		}
		st.key = eventstore.DataKey{Generation: st.destroyed + 1, Secret: secret}
		st.live = true
		return tx.Bucket(bucketKeys).Put(sk, encodeKey(st.key))
	})
	if err != nil {
		return eventstore.DataKey{}, fmt.Errorf("bolt: keyring: create key for %q: %w", subject, err)
	}
	k.remember(subject, st)
	return st.key, nil
}

// Lookup returns the subject's key of the given generation, or
// eventstore.ErrKeyDestroyed if it was destroyed or never existed.
func (k *Keyring) Lookup(ctx context.Context, subject string, generation uint32) (eventstore.DataKey, error) {
	if err := ctx.Err(); err != nil {
		return eventstore.DataKey{}, err
	}
	k.mu.RLock()
	defer k.mu.RUnlock()
	if k.db == nil {
		return eventstore.DataKey{}, eventstore.ErrClosed
	}
	st, err := k.state(subject)
	if err != nil {
		return eventstore.DataKey{}, err
	}
	if !st.live || st.key.Generation != generation {
		return eventstore.DataKey{}, eventstore.ErrKeyDestroyed
	}
	return st.key, nil
}

// LiveKeys reports which subjects have a live key of the generation, in
// one read transaction: the cached states answer first, the rest are read
// from the keys bucket in the order of their keys (neighbours share the
// tree's pages). It leaves the cache as it is: a page of history asks for
// users at random, whose states would only push others out.
func (k *Keyring) LiveKeys(ctx context.Context, subjects []string, generation uint32) ([]bool, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	k.mu.RLock()
	defer k.mu.RUnlock()
	if k.db == nil {
		return nil, eventstore.ErrClosed
	}
	live := make([]bool, len(subjects))
	type miss struct {
		i  int
		sk []byte
	}
	var misses []miss
	for i, subject := range subjects {
		if st, ok := k.cached(subject); ok {
			live[i] = st.live && st.key.Generation == generation
			continue
		}
		misses = append(misses, miss{i, subjectKey(subject)})
	}
	if len(misses) == 0 {
		return live, nil
	}
	slices.SortFunc(misses, func(a, b miss) int { return bytes.Compare(a.sk, b.sk) })
	err := k.db.View(func(tx *bolt.Tx) error {
		// One cursor for the sorted subjects (Bucket.Get would make one
		// per subject).
		c := tx.Bucket(bucketKeys).Cursor()
		for _, m := range misses {
			sk, v := c.Seek(m.sk)
			if v == nil || !bytes.Equal(sk, m.sk) {
				continue
			}
			key, err := decodeKey(v)
			if err != nil {
				return fmt.Errorf("%q: %w", subjects[m.i], err)
			}
			live[m.i] = key.Generation == generation
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("bolt: keyring: read: %w", err)
	}
	return live, nil
}

// Destroy deletes the subject's key, records its generation as destroyed so
// that it is never reused, and rewrites the file without free pages, so that
// on return no part of the keyring file holds the secret. The old file's
// blocks are overwritten with zeros as well, which helps on file systems that
// write in place; copy-on-write file systems and SSD wear levelling may still
// keep old blocks, which no file here can reach.
func (k *Keyring) Destroy(ctx context.Context, subject string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.db == nil {
		return eventstore.ErrClosed
	}
	sk := subjectKey(subject)
	var st keyState
	var compact bool
	err := k.db.Update(func(tx *bolt.Tx) error {
		var err error
		if st, err = readState(tx, sk); err != nil {
			return err
		}
		meta := tx.Bucket(bucketMeta)
		// An earlier Destroy that failed to compact is finished here.
		compact = meta.Get(keyCompact) != nil
		if !st.live {
			return nil
		}
		compact = true
		st.destroyed = max(st.destroyed, st.key.Generation)
		st.live, st.key = false, eventstore.DataKey{}
		if err := tx.Bucket(bucketDestroyed).Put(sk, binary.BigEndian.AppendUint32(nil, st.destroyed)); err != nil {
			return err
		}
		if err := tx.Bucket(bucketKeys).Delete(sk); err != nil {
			return err
		}
		// Recorded in the same transaction so that a crash before the
		// compaction finishes is repaired by the next open.
		return meta.Put(keyCompact, []byte{1})
	})
	if err != nil {
		return fmt.Errorf("bolt: keyring: destroy %q: %w", subject, err)
	}
	k.remember(subject, st)
	if !compact {
		return nil
	}
	if err := k.compact(); err != nil {
		return fmt.Errorf("bolt: keyring: destroy %q: %w", subject, err)
	}
	return nil
}

// compact copies the live data to a fresh file, replaces the keyring file
// with it and zeroes the old file's blocks. The caller holds k.mu exclusively
// (or owns k alone); on return k.db is open again, or nil after a failure.
func (k *Keyring) compact() (err error) {
	defer func() {
		// A failure after the old file was closed leaves the keyring usable
		// on whichever file is in place; the pending mark makes the next
		// Destroy or open compact again.
		if k.db == nil {
			if db, rerr := openKeyDB(k.path); rerr == nil {
				k.db = db
			}
		}
	}()
	tmp := k.compactPath()
	if err := os.Remove(tmp); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	dst, err := openDB(tmp, 0, nil)
	if err != nil {
		return fmt.Errorf("compact: %w", err)
	}
	err = bolt.Compact(dst, k.db, 0)
	if err == nil {
		err = dst.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketMeta).Delete(keyCompact) })
	}
	if cerr := dst.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("compact: %w", err)
	}
	// Keep the old inode open to zero it after the rename.
	old, err := os.OpenFile(k.path, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("compact: %w", err)
	}
	defer old.Close()
	if err := k.db.Close(); err != nil {
		return fmt.Errorf("compact: close: %w", err)
	}
	k.db = nil
	if err := os.Rename(tmp, k.path); err != nil {
		return fmt.Errorf("compact: %w", err)
	}
	if err := syncDir(filepath.Dir(k.path)); err != nil {
		return fmt.Errorf("compact: %w", err)
	}
	if err := zero(old); err != nil {
		return fmt.Errorf("compact: zero the old file: %w", err)
	}
	if k.db, err = openKeyDB(k.path); err != nil {
		return fmt.Errorf("compact: reopen: %w", err)
	}
	return nil
}

// zero overwrites a file with zeros and syncs it.
func zero(f *os.File) error {
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	buf := make([]byte, 64<<10)
	for off := int64(0); off < fi.Size(); off += int64(len(buf)) {
		n := min(int64(len(buf)), fi.Size()-off)
		if _, err := f.WriteAt(buf[:n], off); err != nil {
			return err
		}
	}
	return f.Sync()
}

// syncDir makes a rename in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}

// Close closes the keyring file; later calls fail with eventstore.ErrClosed.
// Calling it again returns nil.
func (k *Keyring) Close() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.db == nil {
		return nil
	}
	err := k.db.Close()
	k.db = nil
	if err != nil {
		return fmt.Errorf("bolt: keyring: close: %w", err)
	}
	return nil
}

// Path returns the keyring's file.
func (k *Keyring) Path() string { return k.path }
