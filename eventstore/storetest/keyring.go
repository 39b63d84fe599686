package storetest

import (
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/profilestore/profilestore/eventstore"
)

// KeyringHarness opens keyrings for the suite.
type KeyringHarness interface {
	// Open returns a new, empty keyring and arranges (t.Cleanup) for it to be
	// closed when the test ends.
	Open(t *testing.T) eventstore.Keyring
	// Reopen closes k and opens the same keyring again; the returned keyring
	// is closed when the test ends.
	Reopen(t *testing.T, k eventstore.Keyring) eventstore.Keyring
}

// RunKeyring runs every keyring subtest against keyrings opened by h.
func RunKeyring(t *testing.T, h KeyringHarness) {
	tests := []struct {
		name string
		fn   func(context.Context, *testing.T, KeyringHarness)
	}{
		{"CurrentCreatesOnce", testKeyCurrent},
		{"SurvivesReopen", testKeyReopen},
		{"Destroy", testKeyDestroy},
		{"DestroyIdempotent", testKeyDestroyIdempotent},
		{"SubjectsIndependent", testKeySubjects},
		{"ConcurrentCurrent", testKeyConcurrent},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), subtestTimeout)
			defer cancel()
			tc.fn(ctx, t, h)
		})
	}
}

func current(ctx context.Context, t testing.TB, k eventstore.Keyring, subject string) eventstore.DataKey {
	t.Helper()
	key, err := k.Current(ctx, subject)
	if err != nil {
		t.Fatalf("Current(%q): %v", subject, err)
	}
	return key
}

func wantKey(ctx context.Context, t testing.TB, k eventstore.Keyring, subject string, want eventstore.DataKey) {
	t.Helper()
	got, err := k.Lookup(ctx, subject, want.Generation)
	if err != nil || got != want {
		t.Fatalf("Lookup(%q, %d) = generation %d, %v; want the key", subject, want.Generation, got.Generation, err)
	}
}

func wantDestroyed(ctx context.Context, t testing.TB, k eventstore.Keyring, subject string, gen uint32) {
	t.Helper()
	if _, err := k.Lookup(ctx, subject, gen); !errors.Is(err, eventstore.ErrKeyDestroyed) {
		t.Fatalf("Lookup(%q, %d): %v, want ErrKeyDestroyed", subject, gen, err)
	}
}

func testKeyCurrent(ctx context.Context, t *testing.T, h KeyringHarness) {
	k := h.Open(t)
	subject := "@alice:" + token(t)
	wantDestroyed(ctx, t, k, subject, 0)
	wantDestroyed(ctx, t, k, subject, 1)
	key := current(ctx, t, k, subject)
	if key.Secret == ([eventstore.KeySize]byte{}) {
		t.Fatalf("Current returned an all-zero secret")
	}
	if again := current(ctx, t, k, subject); again != key {
		t.Fatalf("second Current returned another key (generation %d, was %d)", again.Generation, key.Generation)
	}
	wantKey(ctx, t, k, subject, key)
	wantDestroyed(ctx, t, k, subject, key.Generation+1)
}

func testKeyReopen(ctx context.Context, t *testing.T, h KeyringHarness) {
	k := h.Open(t)
	tok := token(t)
	a, b := "@a:"+tok, "@b:"+tok
	ka, kb := current(ctx, t, k, a), current(ctx, t, k, b)
	k = h.Reopen(t, k)
	if got := current(ctx, t, k, a); got != ka {
		t.Fatalf("after reopen Current returned another key")
	}
	wantKey(ctx, t, k, b, kb)
}

func testKeyDestroy(ctx context.Context, t *testing.T, h KeyringHarness) {
	k := h.Open(t)
	subject := "@carol:" + token(t)
	old := current(ctx, t, k, subject)
	if err := k.Destroy(ctx, subject); err != nil {
		t.Fatalf("Destroy: %v", err)
	}
	wantDestroyed(ctx, t, k, subject, old.Generation)
	fresh := current(ctx, t, k, subject)
	if fresh.Generation <= old.Generation || fresh.Secret == old.Secret {
		t.Fatalf("after Destroy Current gave generation %d (old %d), same secret %v", fresh.Generation, old.Generation, fresh.Secret == old.Secret)
	}
	wantKey(ctx, t, k, subject, fresh)
	wantDestroyed(ctx, t, k, subject, old.Generation)

	// Across a reopen: the destroyed key stays destroyed, generations go on.
	k = h.Reopen(t, k)
	wantDestroyed(ctx, t, k, subject, old.Generation)
	wantKey(ctx, t, k, subject, fresh)
	if err := k.Destroy(ctx, subject); err != nil {
		t.Fatalf("Destroy: %v", err)
	}
	k = h.Reopen(t, k)
	wantDestroyed(ctx, t, k, subject, fresh.Generation)
	third := current(ctx, t, k, subject)
	if third.Generation <= fresh.Generation {
		t.Fatalf("generation %d after destroying %d", third.Generation, fresh.Generation)
	}
}

func testKeyDestroyIdempotent(ctx context.Context, t *testing.T, h KeyringHarness) {
	k := h.Open(t)
	tok := token(t)
	if err := k.Destroy(ctx, "@never:"+tok); err != nil {
		t.Fatalf("Destroy of a subject without keys: %v", err)
	}
	subject := "@dave:" + tok
	key := current(ctx, t, k, subject)
	for i := 0; i < 2; i++ {
		if err := k.Destroy(ctx, subject); err != nil {
			t.Fatalf("Destroy #%d: %v", i+1, err)
		}
		wantDestroyed(ctx, t, k, subject, key.Generation)
	}
	if next := current(ctx, t, k, subject); next.Generation <= key.Generation {
		t.Fatalf("generation %d after destroying %d", next.Generation, key.Generation)
	}
}

func testKeySubjects(ctx context.Context, t *testing.T, h KeyringHarness) {
	k := h.Open(t)
	tok := token(t)
	a, b := "@erin:"+tok, "@frank:"+tok
	ka, kb := current(ctx, t, k, a), current(ctx, t, k, b)
	if ka.Secret == kb.Secret {
		t.Fatalf("two subjects share a secret")
	}
	if err := k.Destroy(ctx, a); err != nil {
		t.Fatalf("Destroy: %v", err)
	}
	wantDestroyed(ctx, t, k, a, ka.Generation)
	wantKey(ctx, t, k, b, kb)
	if got := current(ctx, t, k, b); got != kb {
		t.Fatalf("destroying one subject changed another's key")
	}
	// A subject's key is not found under another subject.
	if got, err := k.Lookup(ctx, a, kb.Generation); err == nil && got.Secret == kb.Secret {
		t.Fatalf("Lookup of one subject returned another's key")
	}
}

func testKeyConcurrent(ctx context.Context, t *testing.T, h KeyringHarness) {
	k := h.Open(t)
	tok := token(t)
	const n = 16
	subjects := []string{"@g:" + tok, "@h:" + tok, "@i:" + tok}
	keys := make([]eventstore.DataKey, n)
	errs := make([]error, n)
	parallel(n, func(i int) { keys[i], errs[i] = k.Current(ctx, subjects[i%len(subjects)]) })
	for i := range keys {
		if errs[i] != nil {
			t.Fatalf("Current: %v", errs[i])
		}
		if j := i % len(subjects); keys[i] != keys[j] {
			t.Fatalf("concurrent Current calls for %q returned different keys", subjects[j])
		}
	}
	// Concurrent Current and Lookup during a Destroy never see a destroyed
	// key as current afterwards.
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; i < 20; i++ {
			if _, err := k.Current(ctx, subjects[1]); err != nil {
				t.Errorf("Current: %v", err)
				return
			}
		}
	}()
	if err := k.Destroy(ctx, subjects[0]); err != nil {
		t.Fatalf("Destroy: %v", err)
	}
	wg.Wait()
	wantDestroyed(ctx, t, k, subjects[0], keys[0].Generation)
	if got := current(ctx, t, k, subjects[1]); got != keys[1] {
		t.Fatalf("key of another subject changed during Destroy")
	}
}
