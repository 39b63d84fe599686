package bolt

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// A data directory's log and keyring are a pair: the log holds values sealed
// with the keyring's keys and nothing else can open them. Both files carry
// the same random identity in their meta bucket ("identity" -> 16 bytes),
// recorded the first time they are opened together, so that a missing,
// replaced or foreign keyring is refused before anything is served from it
// (a keyring created afresh would otherwise make every profile look erased,
// and its new keys would reuse the lost keys' generation numbers).
var keyIdentity = []byte("identity")

const identitySize = 16

var (
	// ErrKeyringMissing: the log has events or an identity and the keyring
	// has neither (keys.db was deleted, or replaced by a new one).
	ErrKeyringMissing = errors.New("bolt: the keyring of this log is missing")
	// ErrKeyringForeign: the keyring belongs to another log.
	ErrKeyringForeign = errors.New("bolt: the keyring belongs to another log")
)

func readIdentity(db *bolt.DB) ([]byte, error) {
	var id []byte
	err := db.View(func(tx *bolt.Tx) error {
		if meta := tx.Bucket(bucketMeta); meta != nil {
			id = bytes.Clone(meta.Get(keyIdentity))
		}
		return nil
	})
	return id, err
}

func writeIdentity(db *bolt.DB, id []byte) error {
	return db.Update(func(tx *bolt.Tx) error {
		meta, err := tx.CreateBucketIfNotExists(bucketMeta)
		if err != nil {
			return err
		}
		return meta.Put(keyIdentity, id)
	})
}

// Identity returns the identity the log shares with its keyring, nil before
// they were first bound.
func (s *Store) Identity() ([]byte, error) { return readIdentity(s.db) }

// Identity returns the identity the keyring shares with its log.
func (k *Keyring) Identity() ([]byte, error) {
	k.mu.RLock()
	defer k.mu.RUnlock()
	if k.db == nil {
		return nil, errors.New("bolt: keyring closed")
	}
	return readIdentity(k.db)
}

// empty reports whether the keyring has never held a key.
func (k *Keyring) empty() (bool, error) {
	k.mu.RLock()
	defer k.mu.RUnlock()
	empty := true
	err := k.db.View(func(tx *bolt.Tx) error {
		for _, name := range [][]byte{bucketKeys, bucketDestroyed} {
			if b := tx.Bucket(name); b != nil {
				if key, _ := b.Cursor().First(); key != nil {
					empty = false
				}
			}
		}
		return nil
	})
	return empty, err
}

// Bind checks that the keyring belongs to the log and records a shared
// identity in both on their first open together. It refuses, with
// ErrKeyringMissing or ErrKeyringForeign, a keyring that cannot have sealed
// the log's values:
//
//   - the log has an identity and the keyring another one;
//   - the log has an identity or events, and the keyring has no identity and
//     has never held a key (a new keys.db in place of the lost one).
//
// A log without events adopts the keyring's identity (a new data directory
// that import filled with the source's keys.db), and a log and keyring from
// before identities existed are bound as they are. The keyring is written
// first, so a crash in between leaves a state the next Bind completes.
func Bind(s *Store, k *Keyring) error {
	logID, err := s.Identity()
	if err != nil {
		return err
	}
	keyID, err := k.Identity()
	if err != nil {
		return err
	}
	head := s.head.Load()
	switch {
	case logID != nil && keyID != nil:
		if !bytes.Equal(logID, keyID) {
			return fmt.Errorf("%w: the log is %s, the keyring %s", ErrKeyringForeign, hex.EncodeToString(logID), hex.EncodeToString(keyID))
		}
		return nil
	case keyID != nil: // the log has none
		return writeIdentity(s.db, keyID)
	}
	empty, err := k.empty()
	if err != nil {
		return err
	}
	if empty && (logID != nil || head > 0) {
		if head == 0 {
			// Nothing was sealed yet: the new keyring loses nothing.
			return k.setIdentity(logID)
		}
		return fmt.Errorf("%w: the log holds %d events and the keyring no key", ErrKeyringMissing, head)
	}
	if logID != nil {
		// A keyring with keys but no identity beside a bound log: it is not
		// the one that was bound.
		return fmt.Errorf("%w: the log is %s, the keyring has no identity", ErrKeyringForeign, hex.EncodeToString(logID))
	}
	id := make([]byte, identitySize)
	if _, err := rand.Read(id); err != nil {
		return err
	}
	if err := k.setIdentity(id); err != nil {
		return err
	}
	return writeIdentity(s.db, id)
}

func (k *Keyring) setIdentity(id []byte) error {
	k.mu.RLock()
	defer k.mu.RUnlock()
	return writeIdentity(k.db, id)
}

// Destroyed returns the highest generation of the subject's keys that was
// destroyed (erased), 0 if none: a value sealed with a generation above it
// and no live key was sealed with a key this keyring never had.
func (k *Keyring) Destroyed(subject string) (uint32, error) {
	k.mu.RLock()
	defer k.mu.RUnlock()
	if k.db == nil {
		return 0, errors.New("bolt: keyring closed")
	}
	st, err := k.state(subject)
	return st.destroyed, err
}
