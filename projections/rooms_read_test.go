package projections_test

import (
	"reflect"
	"testing"

	"github.com/profilestore/profilestore/domain"
	"github.com/profilestore/profilestore/projections"
)

func (f *feeder) powerLevels(room domain.RoomID, users map[domain.UserID]int) {
	f.apply(domain.Event{Type: domain.TypePowerLevels, Room: room, PowerLevels: &domain.PowerLevels{Users: users, Kick: 50}})
}

func TestModeratedRoomsAreTheRoomsWhereTheUserMayKickNow(t *testing.T) {
	f := newFeeder(t)
	const mod = domain.UserID("@mod:x")
	for _, r := range []domain.RoomID{"!b:x", "!a:x", "!plain:x", "!demoted:x"} {
		f.join(r, mod, "Mod")
	}
	f.powerLevels("!a:x", map[domain.UserID]int{mod: 50})
	f.powerLevels("!b:x", map[domain.UserID]int{mod: 100})
	f.powerLevels("!plain:x", map[domain.UserID]int{mod: 49})
	f.powerLevels("!demoted:x", map[domain.UserID]int{mod: 100})
	f.powerLevels("!demoted:x", map[domain.UserID]int{mod: 0})
	// Left, but still holding the power level: still moderates (as the
	// room view's access rule has it).
	f.join("!left:x", mod, "Mod")
	f.powerLevels("!left:x", map[domain.UserID]int{mod: 50})
	f.apply(domain.Event{Type: domain.TypeMemberLeft, Room: "!left:x", User: mod, Membership: domain.MembershipLeave})

	got := f.v.ModeratedRooms(mod)
	want := []domain.RoomID{"!a:x", "!b:x", "!left:x"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("ModeratedRooms = %v, want %v", got, want)
	}
	if got := f.v.ModeratedRooms("@stranger:x"); len(got) != 0 {
		t.Errorf("a user in no room moderates %v", got)
	}
}

func TestRoomHistoryKindFilterPagesThroughMatchesOnly(t *testing.T) {
	f := newFeeder(t)
	for _, u := range []domain.UserID{"@a:x", "@b:x", "@c:x"} {
		f.join("!r:x", u, string(u))
		f.rename(u, "renamed "+string(u), domain.PropagateUnchanged)
	}
	q := projections.HistoryQuery{Viewer: projections.Viewer{Admin: true}, Kind: projections.KindGlobalRename, Limit: 2}
	page, err := f.v.RoomHistory("!r:x", q)
	if err != nil {
		t.Fatal(err)
	}
	q.From = page.End
	rest, err := f.v.RoomHistory("!r:x", q)
	if err != nil {
		t.Fatal(err)
	}
	var users []domain.UserID
	for _, e := range append(page.Entries, rest.Entries...) {
		if e.Kind != projections.KindGlobalRename {
			t.Errorf("kind filter let through a %s", e.Kind)
		}
		users = append(users, e.User)
	}
	if want := []domain.UserID{"@a:x", "@b:x", "@c:x"}; !reflect.DeepEqual(users, want) || rest.End != "" {
		t.Errorf("renames over two pages: %v (end %q), want %v", users, rest.End, want)
	}
}
