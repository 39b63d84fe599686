package esdb

import (
	"testing"
	"time"

	"github.com/EventStore/EventStore-Client-Go/v4/esdb"
	"github.com/google/uuid"

	"github.com/profilestore/profilestore/eventstore"
)

// The test server gives events equal commit and prepare positions, as
// current servers do; events written in explicit transactions on a real
// server do not, and the pair must survive the mapping unswapped.
func TestRecordedKeepsCommitAndPreparePositions(t *testing.T) {
	s := &Store{ns: "ns."}
	e := &esdb.RecordedEvent{
		EventID: uuid.New(), EventType: "room.member_joined", StreamID: "ns.room-!r:x",
		EventNumber: 4, Position: esdb.Position{Commit: 900, Prepare: 700},
		CreatedDate: time.Unix(1700000000, 0).UTC(),
	}
	got := s.recorded(e)
	want := eventstore.Position{Commit: 900, Prepare: 700}
	if got.Position != want || got.Stream != "room-!r:x" || got.Revision != 4 {
		t.Fatalf("recorded = %+v, want position %s in room-!r:x at 4", got, want)
	}
	if got.Position.String() != "900.700" {
		t.Fatalf("token %q", got.Position.String())
	}
	for _, c := range []struct {
		stream, typ string
		visible     bool
	}{
		{"ns.room-!r:x", "room.member_joined", true},
		{"room-!r:x", "room.member_joined", false}, // another namespace
		{"ns.$settings", "$settings", false},
		{"ns.profile-@a:x", "$streamDeleted", false},
		{"ns." + KeyStreamPrefix + "@a:x/1", "profilekey.created", false},
	} {
		if v := s.visible(&esdb.RecordedEvent{StreamID: c.stream, EventType: c.typ}); v != c.visible {
			t.Errorf("visible(%q, %q) = %v", c.stream, c.typ, v)
		}
	}
}
