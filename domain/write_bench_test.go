package domain_test

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/profilestore/profilestore/domain"
)

// BenchmarkSetFieldDurable64 is the command side of a durable PUT of a
// display name at 64 concurrent clients, each on its own user, on a real
// bolt file (group commit, fsync): encode, seal the value, chain, append.
// ns/op is the inverse of writes/s; docs/PERFORMANCE.md compares it with
// and without hash chaining.
func BenchmarkSetFieldDurable64(b *testing.B) { benchmarkSetField64(b, false) }

// BenchmarkSetFieldDurable64OneUser has the 64 clients write one user: the
// commands queued on the user's stream share appends, so it should stay
// within a small factor of 64 users.
func BenchmarkSetFieldDurable64OneUser(b *testing.B) { benchmarkSetField64(b, true) }

func benchmarkSetField64(b *testing.B, oneUser bool) {
	store, keys := openStore(b)
	sealer := domain.NewSealer(keys)
	profiles := domain.NewProfileService(store, sealer, domain.DefaultPolicy)
	ctx := context.Background()
	var client atomic.Int64
	b.SetParallelism(max(1, 64/runtime.GOMAXPROCS(0)))
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		c := client.Add(1)
		user := domain.UserID(fmt.Sprintf("@bench%d:example.com", c))
		if oneUser {
			user = "@busy:example.com"
		}
		for i := 0; pb.Next(); i++ {
			v, _ := json.Marshal(fmt.Sprintf("client %d name %d", c, i))
			if _, err := profiles.SetField(ctx, domain.SetField{User: user, Actor: domain.Actor{User: user}, Key: "displayname", Value: v,
				Meta: domain.Metadata{OccurredAt: time.Now(), Actor: user, Source: "client"}}, nil); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
