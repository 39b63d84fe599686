package domain_test

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/profilestore/profilestore/domain"
	"github.com/profilestore/profilestore/eventstore"
)

// TestEraseUnderConcurrentWrites erases a user while writers keep changing
// the profile: every value written before the erasure in log order is
// unreadable afterwards, every value written after it reads normally.
func TestEraseUnderConcurrentWrites(t *testing.T) {
	store, keys := openStore(t)
	sealer := domain.NewSealer(keys)
	profiles := domain.NewProfileService(store, sealer, domain.DefaultPolicy)
	eraser := domain.NewEraser(keys, sealer, profiles)
	ctx := context.Background()
	const user = domain.UserID("@target:example.com")

	var wg sync.WaitGroup
	var written atomic.Int64
	stop := make(chan struct{})
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				v, _ := json.Marshal(fmt.Sprintf("writer %d value %d", w, i))
				if _, err := profiles.SetField(ctx, domain.SetField{User: user, Actor: domain.Actor{User: user}, Key: "displayname", Value: v, Meta: domain.Metadata{OccurredAt: time.Now()}}, nil); err != nil {
					t.Errorf("write: %v", err)
					return
				}
				written.Add(1)
			}
		}(w)
	}
	waitWrites := func(n int64) {
		for deadline := time.Now().Add(10 * time.Second); written.Load() < n && time.Now().Before(deadline); {
			runtime.Gosched()
		}
	}
	waitWrites(20)
	erasure, err := eraser.Erase(ctx, domain.EraseProfile{User: user, Actor: domain.Actor{User: "@admin:example.com", Admin: true}, Meta: domain.Metadata{Actor: "@admin:example.com", OccurredAt: time.Now()}})
	if err != nil {
		t.Fatal(err)
	}
	waitWrites(written.Load() + 20)
	close(stop)
	wg.Wait()

	recs, err := store.ReadStream(ctx, domain.ProfileStream(user), 0, eventstore.Forwards, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	var before, after, erasedEvents int
	for _, rec := range recs {
		e, err := domain.Decode(ctx, sealer, rec)
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case e.Type == domain.TypeErased:
			erasedEvents++
			if rec.Position != erasure.Position {
				t.Errorf("erasure recorded at %s, reported at %s", rec.Position, erasure.Position)
			}
			if e.By != "@admin:example.com" {
				t.Errorf("erasure audit names %q", e.By)
			}
		case rec.Position.Before(erasure.Position):
			before++
			if !e.Erased || e.Value != nil {
				t.Fatalf("a value written before the erasure is still readable: %s", e.Value)
			}
		default:
			after++
			if e.Erased || e.Value == nil {
				t.Fatalf("a value written after the erasure is unreadable")
			}
		}
	}
	if erasedEvents != 1 || before == 0 || after == 0 {
		t.Fatalf("erasures %d, writes before %d, after %d: the test did not race", erasedEvents, before, after)
	}
	// The service's own view agrees with the log.
	p, _, err := profiles.Profile(ctx, user)
	if err != nil || p.DisplayName() == "" {
		t.Errorf("profile after the race: %v %v", p.Fields, err)
	}
}
