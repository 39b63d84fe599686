package domain_test

import (
	"path/filepath"
	"testing"

	"github.com/profilestore/profilestore/eventstore/bolt"
)

// openStore opens a real bolt store and keyring in a temporary directory,
// closed when the test ends.
func openStore(t testing.TB) (*bolt.Store, *bolt.Keyring) {
	t.Helper()
	dir := t.TempDir()
	store, err := bolt.Open(filepath.Join(dir, "events.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	keys, err := bolt.OpenKeyring(filepath.Join(dir, "keys.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { keys.Close() })
	return store, keys
}
