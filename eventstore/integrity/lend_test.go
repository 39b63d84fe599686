package integrity_test

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"testing"

	"github.com/google/uuid"
	bbolt "go.etcd.io/bbolt"

	"github.com/profilestore/profilestore/eventstore"
	"github.com/profilestore/profilestore/eventstore/integrity"
)

// TestVerifyReleasesEveryPageItIsLent: a walk that ends early, because
// its context ends or a record does not decode, releases every page the
// store lent it before it returns.
func TestVerifyReleasesEveryPageItIsLent(t *testing.T) {
	l := openLog(t, t.TempDir(), newKey(t))
	ctx := context.Background()
	for i := 0; i < 10; i++ {
		evs := make([]eventstore.EventData, 500)
		for j := range evs {
			evs[j] = eventstore.EventData{ID: uuid.New(), Type: "profile.field_set", Data: []byte(fmt.Sprintf(`{"v":%d}`, j))}
		}
		if _, err := l.store.Append(ctx, fmt.Sprintf("profile-@u%d:example.com", i), eventstore.NoStream, evs); err != nil {
			t.Fatal(err)
		}
	}
	keys := []ed25519.PublicKey{l.key.Public().(ed25519.PublicKey)}

	lender := &countingLender{Store: l.store}
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	_, err := integrity.VerifyStore(cctx, lender, keys, 0, nil, func(done, total uint64) { cancel() })
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("verify cancelled after its first page: %v", err)
	}
	if lent, released := lender.lent.Load(), lender.released.Load(); lent < 2 || lent != released {
		t.Fatalf("cancelled: %d pages lent, %d released", lent, released)
	}

	l = l.tamper(t, func(t *testing.T, log *bbolt.Bucket, recs []record) {
		put(t, log, recs[3000].pos, []byte{9, 9, 9})
	})
	lender = &countingLender{Store: l.store}
	if _, err := integrity.VerifyStore(ctx, lender, keys, 0, nil, nil); err == nil {
		t.Fatal("a record that does not decode was verified")
	}
	if lent, released := lender.lent.Load(), lender.released.Load(); lent < 2 || lent != released {
		t.Fatalf("failed read: %d pages lent, %d released", lent, released)
	}
}
