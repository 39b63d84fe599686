package viewstore

import (
	"bytes"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Bolt is a Store on bbolt, a copy-on-write B+tree in one file. It is kept
// as the second engine the seam is measured against (see
// docs/DECISIONS.md); pebble is the one the service opens.
type Bolt struct {
	db *bolt.DB
}

var boltBucket = []byte("views")

// OpenBolt opens (creating if needed) a bbolt store at path. Commits are
// not fsynced (NoSync): the event log is the truth; Sync fsyncs.
func OpenBolt(path string) (*Bolt, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second, NoSync: true, NoFreelistSync: true})
	if err != nil {
		return nil, fmt.Errorf("open view store %s: %w", path, err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(boltBucket)
		return err
	}); err != nil {
		db.Close()
		return nil, err
	}
	return &Bolt{db: db}, nil
}

func (s *Bolt) Get(key []byte) (v []byte, ok bool, err error) {
	err = s.db.View(func(tx *bolt.Tx) error {
		if got := tx.Bucket(boltBucket).Get(key); got != nil {
			v, ok = bytes.Clone(got), true
		}
		return nil
	})
	return v, ok, err
}

func (s *Bolt) Scan(lower, upper []byte, reverse bool, fn func(k, v []byte) bool) error {
	return s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(boltBucket).Cursor()
		in := func(k []byte) bool {
			return k != nil && bytes.Compare(k, lower) >= 0 && (upper == nil || bytes.Compare(k, upper) < 0)
		}
		if !reverse {
			for k, v := c.Seek(lower); in(k); k, v = c.Next() {
				if !fn(k, v) {
					return nil
				}
			}
			return nil
		}
		var k, v []byte
		if upper == nil {
			k, v = c.Last()
		} else if k, v = c.Seek(upper); k == nil {
			k, v = c.Last()
		} else {
			k, v = c.Prev()
		}
		for ; in(k); k, v = c.Prev() {
			if !fn(k, v) {
				return nil
			}
		}
		return nil
	})
}

func (s *Bolt) Commit(b *Batch) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		bk := tx.Bucket(boltBucket)
		for _, o := range b.ops {
			var err error
			if o.del {
				err = bk.Delete(o.key)
			} else {
				err = bk.Put(o.key, o.value)
			}
			if err != nil {
				return err
			}
		}
		return nil
	})
}

// Purge is not offered by bbolt: freed pages keep old bytes until reused.
func (s *Bolt) Purge() error {
	return fmt.Errorf("viewstore: the bolt engine cannot purge overwritten values")
}

func (s *Bolt) Sync() error  { return s.db.Sync() }
func (s *Bolt) Close() error { return s.db.Close() }
