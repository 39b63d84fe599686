package domain_test

import (
	"testing"

	"github.com/profilestore/profilestore/domain"
	"github.com/profilestore/profilestore/eventstore/bolt"
)

// openStore opens a real bolt store and keyring in a temporary directory,
// closed when the test ends.
func openStore(t testing.TB) (*bolt.Store, *bolt.Keyring) {
	t.Helper()
	return domain.OpenTestStore(t)
}
