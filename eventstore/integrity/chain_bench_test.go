package integrity_test

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/profilestore/profilestore/eventstore"
	"github.com/profilestore/profilestore/eventstore/integrity"
)

// BenchmarkChain is the hot-path cost of chaining one typical event.
func BenchmarkChain(b *testing.B) {
	data := []byte(`{"v":1,"key":"displayname","value":"s1.1.qYc8hJ2lM3kN4oP5qR6sT7uV8wX9yZ0aB1cD2eF3gH4iJ5kL6mN7oP8","propagate_to":"unchanged"}`)
	meta := []byte(`{"occurred_at":"2026-11-25T12:00:00Z","actor":"@alice:example.com","source":"client"}`)
	id := uuid.New()
	var prev integrity.Hash
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		evs := []eventstore.EventData{{ID: id, Type: "profile.field_set", Data: data, Metadata: meta}}
		var err error
		if prev, err = integrity.Chain("profile-@alice:example.com", uint64(i), prev, evs); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkVerifyVsScan writes a chained, sealed log of 50,000 events to a
// real bolt file and reports verify's rate against a raw scan of the same
// log (issue 11: verify at ≥ 50% of the raw scan rate): 10 events in each of
// 5,000 streams, and one in each of 50,000 (a seal over 50,000 heads).
func BenchmarkVerifyVsScan(b *testing.B) {
	for _, shape := range []struct{ streams, perStream int }{{5000, 10}, {50000, 1}} {
		b.Run(fmt.Sprintf("%dx%d", shape.streams, shape.perStream), func(b *testing.B) {
			benchmarkVerifyVsScan(b, shape.streams, shape.perStream)
		})
	}
}

func benchmarkVerifyVsScan(b *testing.B, streams, perStream int) {
	l := openLog(b, b.TempDir(), newKey(b))
	ctx := context.Background()
	heads := make([]integrity.Hash, streams)
	meta := []byte(`{"occurred_at":"2026-11-25T12:00:00Z","actor":"@alice:example.com","source":"client"}`)
	// Revision r of every stream, then r+1: 64 writers at a time, so that
	// the store's group commit writes the log in seconds, not a minute of
	// one fsync per event.
	for r := 0; r < perStream; r++ {
		next := make(chan int)
		errs := make(chan error, 64)
		var wg sync.WaitGroup
		for range 64 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for s := range next {
					data := []byte(fmt.Sprintf(`{"v":1,"key":"displayname","value":"s1.1.qYc8hJ2lM3kN4oP5qR6sT7uV8wX9yZ0aB1cD2eF3gH4iJ5kL6mN7oP8%d","propagate_to":"unchanged"}`, r))
					evs := []eventstore.EventData{{ID: uuid.New(), Type: "profile.field_set", Data: data, Metadata: meta}}
					stream := fmt.Sprintf("profile-@s%d:example.com", s)
					var err error
					if heads[s], err = integrity.Chain(stream, uint64(r), heads[s], evs); err == nil {
						_, err = l.store.Append(ctx, stream, eventstore.Any, evs)
					}
					if err != nil {
						select {
						case errs <- err:
						default:
						}
					}
				}
			}()
		}
		for s := 0; s < streams; s++ {
			next <- s
		}
		close(next)
		wg.Wait()
		close(errs)
		if err := <-errs; err != nil {
			b.Fatal(err)
		}
	}
	if _, err := integrity.NewWriter(l.store, integrity.WriterOptions{Key: l.key}).SealNow(ctx); err != nil {
		b.Fatal(err)
	}
	keys := []ed25519.PublicKey{l.key.Public().(ed25519.PublicKey)}
	var scanTime, verifyTime time.Duration
	var events uint64
	for b.Loop() {
		t0 := time.Now()
		n := 0
		for after := eventstore.Start; ; {
			recs, err := l.store.ReadAll(ctx, after, 4096)
			if err != nil {
				b.Fatal(err)
			}
			if len(recs) == 0 {
				break
			}
			n += len(recs)
			after = recs[len(recs)-1].Position
		}
		scanTime += time.Since(t0)
		t0 = time.Now()
		r, err := integrity.VerifyStore(ctx, l.store, keys, 0, nil, nil)
		if err != nil || !r.OK() || r.Events != uint64(n) {
			b.Fatalf("verify: %v, %d breaks, %d events of %d", err, len(r.Breaks), r.Events, n)
		}
		verifyTime += time.Since(t0)
		events += r.Events
	}
	b.ReportMetric(float64(events)/scanTime.Seconds(), "scan-events/s")
	b.ReportMetric(float64(events)/verifyTime.Seconds(), "verify-events/s")
	b.ReportMetric(100*scanTime.Seconds()/verifyTime.Seconds(), "verify/scan-%")
}
