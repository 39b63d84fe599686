package main

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/profilestore/profilestore/domain"
	"github.com/profilestore/profilestore/eventstore"
)

// BenchmarkCheckLogKeys measures the key check that rebuild runs before it
// rebuilds: one pass over a log of 10,000 users x 10 renames, per op.
// Compare with the rebuild figures of docs/PERFORMANCE.md.
func BenchmarkCheckLogKeys(b *testing.B) {
	const users, renames = 10_000, 10
	a := testApp(b, b.TempDir())
	defer a.close()
	ctx := context.Background()
	var wg sync.WaitGroup
	work := make(chan int)
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for u := range work {
				user := domain.UserID(fmt.Sprintf("@u%d:example.com", u))
				var batch []eventstore.EventData
				for r := range renames {
					v, _ := json.Marshal(fmt.Sprintf("User %d rename %d", u, r))
					e := domain.Event{Type: domain.TypeFieldSet, User: user, Key: "displayname", Value: v, Meta: domain.Metadata{OccurredAt: time.Now()}}
					d, err := domain.Encode(ctx, a.Sealer, &e)
					if err != nil {
						b.Error(err)
						return
					}
					batch = append(batch, d)
				}
				if _, err := a.Store.Append(ctx, domain.ProfileStream(user), eventstore.Any, batch); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	for u := range users {
		work <- u
	}
	close(work)
	wg.Wait()
	b.ResetTimer()
	for range b.N {
		bad, err := checkLogKeys(ctx, a.Store, a.Keyring, nil)
		if err != nil || bad.values != 0 {
			b.Fatalf("%v %v", bad, err)
		}
	}
	b.ReportMetric(float64(users*renames)*float64(b.N)/b.Elapsed().Seconds(), "events/s")
}
