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
		boltScan(tx, lower, upper, reverse, fn)
		return nil
	})
}

// GetSorted reads keys with one cursor in one read transaction.
func (s *Bolt) GetSorted(keys [][]byte, fn func(i int, value []byte)) error {
	return s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(boltBucket).Cursor()
		for i, k := range keys {
			if got, v := c.Seek(k); got != nil && bytes.Equal(got, k) {
				fn(i, v)
			}
		}
		return nil
	})
}

func boltScan(tx *bolt.Tx, lower, upper []byte, reverse bool, fn func(k, v []byte) bool) {
	c := tx.Bucket(boltBucket).Cursor()
	in := func(k []byte) bool {
		return k != nil && bytes.Compare(k, lower) >= 0 && (upper == nil || bytes.Compare(k, upper) < 0)
	}
	if !reverse {
		for k, v := c.Seek(lower); in(k); k, v = c.Next() {
			if !fn(k, v) {
				return
			}
		}
		return
	}
	var k, v []byte
	if upper == nil {
		k, v = c.Last()
	} else if sk, _ := c.Seek(upper); sk == nil {
		k, v = c.Last()
	} else {
		k, v = c.Prev()
	}
	for ; in(k); k, v = c.Prev() {
		if !fn(k, v) {
			return
		}
	}
}

// CommitAll commits one transaction; bbolt has one writer at a time, so
// it cannot hold several open.
func (s *Bolt) CommitAll(txns ...Txn) error {
	if len(txns) != 1 {
		return fmt.Errorf("viewstore: the bolt engine commits one transaction at a time")
	}
	return txns[0].Commit()
}

func (s *Bolt) Begin() (Txn, error) {
	tx, err := s.db.Begin(true)
	if err != nil {
		return nil, err
	}
	return &boltTxn{tx: tx}, nil
}

type boltTxn struct {
	tx *bolt.Tx
	n  int
}

func (t *boltTxn) Get(key []byte) ([]byte, bool, error) {
	if got := t.tx.Bucket(boltBucket).Get(key); got != nil {
		return bytes.Clone(got), true, nil
	}
	return nil, false, nil
}

func (t *boltTxn) Scan(lower, upper []byte, reverse bool, fn func(k, v []byte) bool) error {
	boltScan(t.tx, lower, upper, reverse, fn)
	return nil
}

func (t *boltTxn) Set(key, value []byte) error {
	t.n++
	// bbolt keeps the slices until the commit; the seam lets callers reuse them.
	return t.tx.Bucket(boltBucket).Put(bytes.Clone(key), bytes.Clone(value))
}

func (t *boltTxn) Delete(key []byte) error {
	t.n++
	return t.tx.Bucket(boltBucket).Delete(key)
}

func (t *boltTxn) Add(key, counter []byte) error {
	sum, err := SumCounters(t.tx.Bucket(boltBucket).Get(key), counter)
	if err != nil {
		return err
	}
	return t.Set(key, sum)
}

func (t *boltTxn) Len() int      { return t.n }
func (t *boltTxn) Commit() error { return t.tx.Commit() }
func (t *boltTxn) Discard()      { _ = t.tx.Rollback() }

// Purge is not offered by bbolt: freed pages keep old bytes until reused.
func (s *Bolt) Purge() error {
	return fmt.Errorf("viewstore: the bolt engine cannot purge overwritten values")
}

func (s *Bolt) Sync() error  { return s.db.Sync() }
func (s *Bolt) Close() error { return s.db.Close() }
