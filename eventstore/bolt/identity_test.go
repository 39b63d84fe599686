package bolt_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/uuid"

	"github.com/profilestore/profilestore/eventstore"
	"github.com/profilestore/profilestore/eventstore/bolt"
)

// pair opens dir's log and keyring.
func pair(t *testing.T, dir string) (*bolt.Store, *bolt.Keyring) {
	t.Helper()
	s, err := bolt.Open(filepath.Join(dir, "events.db"), bolt.Options{Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	k, err := bolt.OpenKeyring(filepath.Join(dir, "keys.db"))
	if err != nil {
		s.Close()
		t.Fatal(err)
	}
	return s, k
}

// populate appends one event and creates one key, as a first write does.
func populate(t *testing.T, s *bolt.Store, k *bolt.Keyring) {
	t.Helper()
	ctx := context.Background()
	if _, err := k.Current(ctx, "@alice:example.com"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Append(ctx, "profile-@alice:example.com", eventstore.Any,
		[]eventstore.EventData{{ID: uuid.New(), Type: "t", Data: []byte(`{}`)}}); err != nil {
		t.Fatal(err)
	}
}

func closePair(s *bolt.Store, k *bolt.Keyring) { k.Close(); s.Close() }

func TestBindRecordsOneIdentity(t *testing.T) {
	dir := t.TempDir()
	s, k := pair(t, dir)
	if err := bolt.Bind(s, k); err != nil {
		t.Fatal(err)
	}
	populate(t, s, k)
	closePair(s, k)
	s, k = pair(t, dir)
	defer closePair(s, k)
	if err := bolt.Bind(s, k); err != nil {
		t.Fatalf("second Bind: %v", err)
	}
	a, _ := s.Identity()
	b, _ := k.Identity()
	if len(a) != 16 || !bytes.Equal(a, b) {
		t.Errorf("identities %x and %x", a, b)
	}
}

// TestBindRefusesMissingKeyring: rm keys.db, then a new, empty keyring.
func TestBindRefusesMissingKeyring(t *testing.T) {
	for _, bound := range []bool{true, false} { // false: a log from before identities
		dir := t.TempDir()
		s, k := pair(t, dir)
		if bound {
			if err := bolt.Bind(s, k); err != nil {
				t.Fatal(err)
			}
		}
		populate(t, s, k)
		closePair(s, k)
		if err := os.Remove(filepath.Join(dir, "keys.db")); err != nil {
			t.Fatal(err)
		}
		s, k = pair(t, dir)
		if err := bolt.Bind(s, k); !errors.Is(err, bolt.ErrKeyringMissing) {
			t.Errorf("bound %v: Bind with a new keyring: %v, want ErrKeyringMissing", bound, err)
		}
		closePair(s, k)
	}
}

// TestBindRefusesForeignKeyring: another data directory's keys.db.
func TestBindRefusesForeignKeyring(t *testing.T) {
	dirs := []string{t.TempDir(), t.TempDir()}
	for _, dir := range dirs {
		s, k := pair(t, dir)
		if err := bolt.Bind(s, k); err != nil {
			t.Fatal(err)
		}
		populate(t, s, k)
		closePair(s, k)
	}
	data, err := os.ReadFile(filepath.Join(dirs[1], "keys.db"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dirs[0], "keys.db"), data, 0o600); err != nil {
		t.Fatal(err)
	}
	s, k := pair(t, dirs[0])
	defer closePair(s, k)
	if err := bolt.Bind(s, k); !errors.Is(err, bolt.ErrKeyringForeign) {
		t.Errorf("Bind with another directory's keyring: %v, want ErrKeyringForeign", err)
	}
}

// TestBindUpgradesAndAdopts: a pair from before identities is bound as it
// is, and an empty log adopts a copied keyring's identity (import --keyring).
func TestBindUpgradesAndAdopts(t *testing.T) {
	src := t.TempDir()
	s, k := pair(t, src)
	populate(t, s, k)
	if err := bolt.Bind(s, k); err != nil {
		t.Fatalf("upgrade: %v", err)
	}
	want, _ := k.Identity()
	closePair(s, k)
	dst := t.TempDir()
	data, _ := os.ReadFile(filepath.Join(src, "keys.db"))
	if err := os.WriteFile(filepath.Join(dst, "keys.db"), data, 0o600); err != nil {
		t.Fatal(err)
	}
	s, k = pair(t, dst)
	defer closePair(s, k)
	if err := bolt.Bind(s, k); err != nil {
		t.Fatalf("adopt: %v", err)
	}
	if got, _ := s.Identity(); !bytes.Equal(got, want) {
		t.Errorf("the empty log took %x, want the keyring's %x", got, want)
	}
}

func TestKeyringDestroyed(t *testing.T) {
	k, err := bolt.OpenKeyring(filepath.Join(t.TempDir(), "keys.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer k.Close()
	ctx := context.Background()
	if _, err := k.Current(ctx, "u"); err != nil {
		t.Fatal(err)
	}
	if g, err := k.Destroyed("u"); err != nil || g != 0 {
		t.Fatalf("before Destroy: %d %v", g, err)
	}
	if err := k.Destroy(ctx, "u"); err != nil {
		t.Fatal(err)
	}
	if g, err := k.Destroyed("u"); err != nil || g != 1 {
		t.Fatalf("after Destroy: %d %v, want 1", g, err)
	}
}

// TestCopyToIsAStore: the copies of a log and its keyring open as a bound
// pair with the same events.
func TestCopyToIsAStore(t *testing.T) {
	src := t.TempDir()
	s, k := pair(t, src)
	if err := bolt.Bind(s, k); err != nil {
		t.Fatal(err)
	}
	populate(t, s, k)
	dst := t.TempDir()
	for name, c := range map[string]interface {
		CopyTo(w io.Writer) (int64, error)
	}{"events.db": s, "keys.db": k} {
		f, err := os.Create(filepath.Join(dst, name))
		if err != nil {
			t.Fatal(err)
		}
		if n, err := c.CopyTo(f); err != nil || n == 0 {
			t.Fatalf("CopyTo %s: %d %v", name, n, err)
		}
		f.Close()
	}
	closePair(s, k)
	s, k = pair(t, dst)
	defer closePair(s, k)
	if err := bolt.Bind(s, k); err != nil {
		t.Fatalf("the copies are not a pair: %v", err)
	}
	if head, _ := s.Head(context.Background()); head.Commit != 1 {
		t.Errorf("copied head %v, want 1", head)
	}
	if _, err := k.Lookup(context.Background(), "@alice:example.com", 1); err != nil {
		t.Errorf("copied key: %v", err)
	}
}
