package domain_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/profilestore/profilestore/domain"
	"github.com/profilestore/profilestore/eventstore"
)

// BenchmarkDecode is the cost of reading one stored event back (its JSON
// payload and metadata, its sealed values opened with the user's key, held
// in the sealer's cache) for the two kinds a homeserver's log is made of:
// a join with a sealed display name, and a global rename. A rebuild pays
// it once per event before any view does its part; docs/PERFORMANCE.md
// compares it with the raw scan rate.
func BenchmarkDecode(b *testing.B) {
	ctx := context.Background()
	_, keys := openStore(b)
	s := domain.NewSealer(keys)
	name := "Member 12345"
	value, _ := json.Marshal("Renamed 12345")
	user := domain.UserID("@user12345:bench.example")
	meta := domain.Metadata{OccurredAt: time.Unix(1_767_225_600, 0), Source: "bench"}
	for _, c := range []struct {
		name   string
		stream string
		event  domain.Event
	}{
		{"member_joined", domain.RoomStream("!pool123:bench.example"), domain.Event{Type: domain.TypeMemberJoined, Room: "!pool123:bench.example", User: user,
			Membership: domain.MembershipJoin, DisplayName: &name, Meta: meta}},
		{"field_set", domain.ProfileStream(user), domain.Event{Type: domain.TypeFieldSet, User: user, Key: domain.KeyDisplayName, Value: value,
			PropagateTo: domain.PropagateUnchanged, Meta: meta}},
	} {
		b.Run(c.name, func(b *testing.B) {
			data, err := domain.Encode(ctx, s, &c.event)
			if err != nil {
				b.Fatal(err)
			}
			rec := eventstore.RecordedEvent{EventData: data, Stream: c.stream, Position: eventstore.Position{Commit: 7, Prepare: 7}}
			got, err := domain.Decode(ctx, s, rec)
			if err != nil {
				b.Fatal(err)
			}
			if got.User != user || got.Type != c.event.Type || got.Erased {
				b.Fatalf("decoded %+v from %+v", got, c.event)
			}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := domain.Decode(ctx, s, rec); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
