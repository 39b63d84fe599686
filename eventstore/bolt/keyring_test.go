package bolt_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/profilestore/profilestore/eventstore"
	"github.com/profilestore/profilestore/eventstore/bolt"
	"github.com/profilestore/profilestore/eventstore/storetest"
)

type keyringHarness struct{}

func openKeyring(t testing.TB, path string) *bolt.Keyring {
	t.Helper()
	k, err := bolt.OpenKeyring(path)
	if err != nil {
		t.Fatalf("OpenKeyring: %v", err)
	}
	t.Cleanup(func() { k.Close() })
	return k
}

func (keyringHarness) Open(t *testing.T) eventstore.Keyring {
	return openKeyring(t, filepath.Join(t.TempDir(), "keys.db"))
}

func (keyringHarness) Reopen(t *testing.T, k eventstore.Keyring) eventstore.Keyring {
	bk := k.(*bolt.Keyring)
	if err := bk.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	return openKeyring(t, bk.Path())
}

func TestKeyringConformance(t *testing.T) { storetest.RunKeyring(t, keyringHarness{}) }

// scanDir fails if any file in dir contains secret.
func scanDir(t *testing.T, dir string, secret []byte, when string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(b, secret) {
			t.Fatalf("%s: %s still contains the destroyed secret", when, e.Name())
		}
	}
}

// TestKeyringDestroyLeavesNoCopy checks every byte of the directory: after
// Destroy (and after a reopen) the destroyed secret is nowhere, while the
// other subjects' keys are still there.
func TestKeyringDestroyLeavesNoCopy(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	path := filepath.Join(dir, "keys.db")
	k := openKeyring(t, path)
	var victim eventstore.DataKey
	var others []eventstore.DataKey
	// Enough subjects that the keys bucket spans several pages, and
	// rewrites so that bbolt has freed pages holding the victim's secret.
	for i := 0; i < 300; i++ {
		key, err := k.Current(ctx, subjectName(i))
		if err != nil {
			t.Fatal(err)
		}
		if i == 150 {
			victim = key
		} else {
			others = append(others, key)
		}
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(raw, victim.Secret[:]) {
		t.Fatalf("the secret is not in the file before Destroy: the scan below proves nothing")
	}
	if err := k.Destroy(ctx, subjectName(150)); err != nil {
		t.Fatal(err)
	}
	scanDir(t, dir, victim.Secret[:], "after Destroy")
	if bytes.Contains(mustRead(t, path), []byte(subjectName(150))) {
		t.Fatalf("the keyring file names the subject")
	}
	// More writes after the compaction must not resurrect it.
	if _, err := k.Current(ctx, "@after:example.org"); err != nil {
		t.Fatal(err)
	}
	if err := k.Close(); err != nil {
		t.Fatal(err)
	}
	k = openKeyring(t, path)
	scanDir(t, dir, victim.Secret[:], "after reopen")
	if _, err := k.Lookup(ctx, subjectName(150), victim.Generation); err != eventstore.ErrKeyDestroyed {
		t.Fatalf("Lookup after reopen: %v", err)
	}
	for i, want := range others {
		got, err := k.Lookup(ctx, subjectName(i+i/150), want.Generation)
		if err != nil || got != want {
			t.Fatalf("subject %d lost its key: %v", i, err)
		}
	}
}

func subjectName(i int) string { return fmt.Sprintf("@user%03d:example.org", i) }

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// LiveKeys answers as Lookup does, for many subjects at once: live keys of
// the generation asked, not destroyed ones, not other generations, not
// subjects never keyed, whether or not their state is cached.
func TestLiveKeys(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "keys.db")
	k := openKeyring(t, path)
	for _, s := range []string{"live", "cached", "erased", "rekeyed"} {
		if _, err := k.Current(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	for _, s := range []string{"erased", "rekeyed"} {
		if err := k.Destroy(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := k.Current(ctx, "rekeyed"); err != nil { // generation 2
		t.Fatal(err)
	}
	// A reopened keyring has nothing cached; one Lookup caches "cached".
	if err := k.Close(); err != nil {
		t.Fatal(err)
	}
	k = openKeyring(t, path)
	if _, err := k.Lookup(ctx, "cached", 1); err != nil {
		t.Fatal(err)
	}
	// Subjects never keyed: LiveKeys seeks each one's key, and most land
	// just before a stored key of some other subject, which must not count.
	subjects := []string{"live", "cached", "erased", "rekeyed"}
	for i := range 16 {
		subjects = append(subjects, fmt.Sprintf("never-%d", i))
	}
	for _, gen := range []uint32{1, 2} {
		live, err := k.LiveKeys(ctx, subjects, gen)
		if err != nil {
			t.Fatal(err)
		}
		if len(live) != len(subjects) {
			t.Fatalf("generation %d: %d answers for %d subjects", gen, len(live), len(subjects))
		}
		for i, s := range subjects {
			_, lerr := k.Lookup(ctx, s, gen)
			if want := lerr == nil; live[i] != want {
				t.Errorf("generation %d, %s: live %v, Lookup says %v", gen, s, live[i], lerr)
			}
		}
	}
	if live, _ := k.LiveKeys(ctx, subjects, 1); !live[0] || !live[1] || slices.Contains(live[2:], true) {
		t.Errorf("generation 1: %v, want only live and cached", live)
	}
	if err := k.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := k.LiveKeys(ctx, subjects, 1); err != eventstore.ErrClosed {
		t.Errorf("LiveKeys on a closed keyring: %v, want ErrClosed", err)
	}
}
