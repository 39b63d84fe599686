package eventstore

import (
	"context"
	"errors"
)

// KeySize is the length in bytes of a data key (AES-256).
const KeySize = 32

// ErrKeyDestroyed is returned by Keyring.Lookup for a key that was destroyed
// (or never existed): data sealed with it can no longer be read.
var ErrKeyDestroyed = errors.New("eventstore: data key destroyed")

// DataKey is one generation of a subject's data key.
type DataKey struct {
	Generation uint32
	Secret     [KeySize]byte
}

// Keyring keeps per-subject data keys for crypto-shredding: personal values
// are stored sealed with their subject's key, and destroying the keys makes
// every value sealed with them unreadable, although the log itself is never
// rewritten. A subject is an opaque string (profilestore uses Matrix user ids).
type Keyring interface {
	// Current returns the subject's live key, creating and durably storing a
	// new generation when the subject has none (never had one, or had its
	// keys destroyed).
	Current(ctx context.Context, subject string) (DataKey, error)

	// Lookup returns the key of the given generation, or ErrKeyDestroyed.
	Lookup(ctx context.Context, subject string, generation uint32) (DataKey, error)

	// Destroy removes every key the subject has. On return the keys are gone
	// from the keyring's storage, including free pages and old files, so no
	// copy remains readable on this machine. Destroying a subject with no keys
	// succeeds. Later generations never reuse a destroyed generation number.
	Destroy(ctx context.Context, subject string) error

	// Close releases the keyring.
	Close() error
}

// LiveKeyChecker is a Keyring that tells, in one read, which of many
// subjects have a live key of a generation: a page of history asks it for
// every user on the page. live[i] answers for subjects[i]; a generation
// that was destroyed or never existed is not live.
type LiveKeyChecker interface {
	LiveKeys(ctx context.Context, subjects []string, generation uint32) (live []bool, err error)
}
