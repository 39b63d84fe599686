package domain_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/profilestore/profilestore/domain"
	"github.com/profilestore/profilestore/eventstore/integrity"
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
	putParallel(b, domain.NewProfileService(store, domain.NewSealer(keys), domain.DefaultPolicy), oneUser)
}

// putParallel runs durable display-name writes at 64 concurrent clients,
// each on its own user, or all on one.
func putParallel(b *testing.B, profiles *domain.ProfileService, oneUser bool) {
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

// BenchmarkSetFieldDurable64Sealing is BenchmarkSetFieldDurable64 with the
// seal writer off and on (a seal every 1000 events or 1 s): the cost of
// sealing beside the write path.
func BenchmarkSetFieldDurable64Sealing(b *testing.B) {
	for _, sealing := range []bool{false, true} {
		b.Run(fmt.Sprintf("sealing=%v", sealing), func(b *testing.B) {
			store, keys := openStore(b)
			if sealing {
				_, key, err := ed25519.GenerateKey(rand.Reader)
				if err != nil {
					b.Fatal(err)
				}
				ctx, cancel := context.WithCancel(context.Background())
				done := make(chan struct{})
				w := integrity.NewWriter(store, integrity.WriterOptions{Key: key, Interval: time.Second})
				go func() { defer close(done); _ = w.Run(ctx) }()
				defer func() { cancel(); <-done }()
			}
			putParallel(b, domain.NewProfileService(store, domain.NewSealer(keys), domain.DefaultPolicy), false)
		})
	}
}
