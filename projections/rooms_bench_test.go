package projections_test

import (
	"encoding/json"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/profilestore/profilestore/domain"
	"github.com/profilestore/profilestore/eventstore"
	"github.com/profilestore/profilestore/projections"
)

// feeder hands events to a view with increasing positions.
type feeder struct {
	v   *projections.Rooms
	d   *projections.Direct
	pos uint64
}

// newFeeder returns a feeder of a rooms view over a fresh view store.
func newFeeder(t testing.TB) *feeder {
	db := projections.OpenTestDB(t)
	v := projections.NewRooms(db, 0)
	return &feeder{v: v, d: projections.NewDirect(t, db, v)}
}

func (f *feeder) apply(e domain.Event) {
	f.pos++
	e.Position = eventstore.Position{Commit: f.pos, Prepare: f.pos}
	e.Meta.OccurredAt = time.Unix(1_700_000_000, 0).Add(time.Duration(f.pos) * time.Millisecond)
	f.d.Apply(&e)
}

func (f *feeder) join(room domain.RoomID, u domain.UserID, name string) {
	f.apply(domain.Event{Type: domain.TypeMemberJoined, Room: room, User: u, DisplayName: &name})
}

func (f *feeder) rename(u domain.UserID, name string, prop domain.Propagation) {
	v, _ := json.Marshal(name)
	f.apply(domain.Event{Type: domain.TypeFieldSet, User: u, Key: domain.KeyDisplayName, Value: v, PropagateTo: prop})
}

func heapBytes() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// BenchmarkGlobalRename applies one global display-name change of a user
// joined to 1 or 10,000 rooms. When Apply returns, every room's view shows
// the new name (room values are derived, not stored), so ns/op is also the
// time until all rooms show it.
func BenchmarkGlobalRename(b *testing.B) {
	for _, rooms := range []int{1, 10_000} {
		for _, prop := range []domain.Propagation{domain.PropagateUnchanged, domain.PropagateNone} {
			b.Run(fmt.Sprintf("rooms=%d/propagate_to=%s", rooms, prop), func(b *testing.B) {
				f := newFeeder(b)
				u := domain.UserID("@busy:example.com")
				for i := range rooms {
					f.join(domain.RoomID(fmt.Sprintf("!r%d:example.com", i)), u, "start")
				}
				b.ReportAllocs()
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					f.rename(u, fmt.Sprintf("name %d", i), prop)
				}
				b.StopTimer()
				last := domain.RoomID(fmt.Sprintf("!r%d:example.com", rooms-1))
				ms, _, err := f.v.Members(last, nil, projections.Viewer{Admin: true})
				if err != nil || len(ms) != 1 {
					b.Fatal(err)
				}
				if want := fmt.Sprintf("name %d", b.N-1); prop != domain.PropagateNone && *ms[0].DisplayName != want {
					b.Fatalf("room shows %q, want %q", *ms[0].DisplayName, want)
				}
			})
		}
	}
}

// bigRoom is a room of 100,000 members and 1,000,000 history entries:
// 100,000 joins, then 900,000 renames spread over the members (a third
// per-room nicknames, two thirds global renames that reach the room).
func bigRoom(b *testing.B) (*projections.Rooms, domain.RoomID, uint64, uint64) {
	const members, entries = 100_000, 1_000_000
	f := newFeeder(b)
	room := domain.RoomID("!big:example.com")
	users := make([]domain.UserID, members)
	before := heapBytes()
	for i := range users {
		users[i] = domain.UserID(fmt.Sprintf("@u%d:example.com", i))
		f.join(room, users[i], fmt.Sprintf("user %d", i))
	}
	afterMembers := heapBytes()
	for i := members; i < entries; i++ {
		u := users[i%members]
		name := fmt.Sprintf("n%d", i)
		if i%3 == 0 {
			v, _ := json.Marshal(name)
			f.apply(domain.Event{Type: domain.TypeMemberProfileSet, Room: room, User: u, Key: domain.KeyDisplayName, Value: v})
		} else {
			f.rename(u, name, domain.PropagateAll)
		}
	}
	afterEntries := heapBytes()
	if page, err := f.v.RoomHistory(room, projections.HistoryQuery{Viewer: projections.Viewer{Admin: true}, Backwards: true, Limit: 1}); err != nil || len(page.Entries) != 1 || page.Entries[0].Position.Commit != f.pos {
		b.Fatalf("the room's newest entry is not the last event (%v)", err)
	}
	perMember := (afterMembers - before) / members
	perEntry := (afterEntries - afterMembers) / (entries - members)
	return f.v, room, perMember, perEntry
}

// BenchmarkRoomHistoryFirstPage reads the newest 100 entries of the big room
// as a member under shared visibility (each entry checked) and as an admin.
func BenchmarkRoomHistoryFirstPage(b *testing.B) {
	v, room, perMember, perEntry := bigRoom(b)
	for _, c := range []struct {
		name   string
		viewer projections.Viewer
		user   domain.UserID
	}{
		{"member", projections.Viewer{User: "@u5:example.com"}, ""},
		{"admin", projections.Viewer{Admin: true}, ""},
		{"member/user_filter", projections.Viewer{User: "@u5:example.com"}, "@u7:example.com"},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportMetric(float64(perMember), "B/member")
			b.ReportMetric(float64(perEntry), "B/entry")
			for i := 0; i < b.N; i++ {
				page, err := v.RoomHistory(room, projections.HistoryQuery{Viewer: c.viewer, Backwards: true, Limit: 100, User: c.user})
				if err != nil || len(page.Entries) == 0 {
					b.Fatal(err, len(page.Entries))
				}
			}
		})
	}
	b.Run("members_now", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			if ms, _, err := v.Members(room, nil, projections.Viewer{Admin: true}); err != nil || len(ms) != 100_000 {
				b.Fatal(err)
			}
		}
	})
}
