package bolt

import (
	"errors"
	"io"

	bolt "go.etcd.io/bbolt"
)

// CopyTo writes a consistent copy of the whole log file to w, from one read
// transaction: appends go on while it runs (bbolt readers do not block the
// writer, except that the file cannot be grown and remapped while the copy
// holds the transaction, so a writer that needs a larger file waits for the
// copy to end). The copy is a valid store file.
func (s *Store) CopyTo(w io.Writer) (int64, error) {
	if err := s.checkOpen(); err != nil {
		return 0, err
	}
	var n int64
	err := s.db.View(func(tx *bolt.Tx) error {
		var err error
		n, err = tx.WriteTo(w)
		return err
	})
	return n, err
}

// CopyTo writes a consistent copy of the keyring file to w. A Destroy
// (which replaces the file) waits until the copy is done, so the copy holds
// the keys of a user erased meanwhile, as any backup taken before an erasure
// does. Copy the log first and the keyring second: every key a copied event
// was sealed with was stored before the event was appended, so it is in the
// later keyring copy unless it was erased in between.
func (k *Keyring) CopyTo(w io.Writer) (int64, error) {
	k.mu.RLock()
	defer k.mu.RUnlock()
	if k.db == nil {
		return 0, errors.New("bolt: keyring closed")
	}
	var n int64
	err := k.db.View(func(tx *bolt.Tx) error {
		var err error
		n, err = tx.WriteTo(w)
		return err
	})
	return n, err
}
