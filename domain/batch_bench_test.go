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

// BenchmarkSetFieldDurable64OneUser is BenchmarkSetFieldDurable64 with all
// 64 clients writing one user: the commands queued on the user's stream
// share appends, so it should stay within a small factor of 64 users.
func BenchmarkSetFieldDurable64OneUser(b *testing.B) {
	store, keys := openStore(b)
	sealer := domain.NewSealer(keys)
	profiles := domain.NewProfileService(store, sealer, domain.DefaultPolicy)
	ctx := context.Background()
	const user = domain.UserID("@busy:example.com")
	var client atomic.Int64
	b.SetParallelism(max(1, 64/runtime.GOMAXPROCS(0)))
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		c := client.Add(1)
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
