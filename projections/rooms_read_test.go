package projections_test

import (
	"fmt"
	"maps"
	"reflect"
	"slices"
	"testing"

	"github.com/profilestore/profilestore/domain"
	"github.com/profilestore/profilestore/eventstore"
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

// A room's history filtered by a user finds the user's global changes that
// reached the room among many that did not (they reached rooms joined
// later), page by page in both directions, with pages that may come back
// short while the scan bound skips the others.
func TestRoomHistoryOfOneUserAmongManyGlobalChanges(t *testing.T) {
	f := newFeeder(t)
	u := domain.UserID("@u:x")
	f.join("!early:x", u, "start")
	var want []string
	want = append(want, "join")
	for i := range 30 {
		f.rename(u, fmt.Sprintf("early %d", i), domain.PropagateAll)
		want = append(want, fmt.Sprintf("global_rename early %d", i))
	}
	f.apply(domain.Event{Type: domain.TypeMemberLeft, Room: "!early:x", User: u, Membership: domain.MembershipLeave})
	want = append(want, "leave")
	f.join("!late:x", u, "later")
	for i := range 500 { // none of these reach !early:x
		f.rename(u, fmt.Sprintf("late %d", i), domain.PropagateAll)
	}
	f.join("!early:x", u, "back")
	want = append(want, "join")
	f.rename(u, "both", domain.PropagateAll)
	want = append(want, "global_rename both")

	admin := projections.Viewer{User: "@admin:x", Admin: true}
	for _, backwards := range []bool{false, true} {
		t.Run(fmt.Sprintf("backwards=%v", backwards), func(t *testing.T) {
			q := projections.HistoryQuery{Viewer: admin, User: u, Backwards: backwards, Limit: 2}
			var got []string
			for pages := 0; ; pages++ {
				if pages > 1000 {
					t.Fatal("paging does not end")
				}
				page, err := f.v.RoomHistory("!early:x", q)
				if err != nil {
					t.Fatal(err)
				}
				if len(page.Entries) > q.Limit {
					t.Fatalf("a page of %d entries for a limit of %d", len(page.Entries), q.Limit)
				}
				for _, e := range page.Entries {
					line := e.Kind
					if e.New.DisplayName != nil && e.Kind == projections.KindGlobalRename {
						line += " " + *e.New.DisplayName
					}
					got = append(got, line)
				}
				if page.End == "" {
					break
				}
				q.From = page.End
			}
			if backwards {
				slices.Reverse(got)
			}
			if !slices.Equal(got, want) {
				t.Fatalf("got %q\nwant %q", got, want)
			}
		})
	}
}

// TestMembersOfABigRoomReadTheirUsersTogether: a room whose members' users
// are mostly not in the cache reads their states with one iterator. It
// lists the same members with the same names as a view whose cache holds
// them all, now and as of a position before the renames: per-room names
// kept, global renames shown, members who left absent, users who never set
// a global name shown with the name they joined with.
func TestMembersOfABigRoomReadTheirUsersTogether(t *testing.T) {
	db := projections.OpenTestDB(t)
	warm := projections.NewRooms(db, 0)
	f := &feeder{v: warm, d: projections.NewDirect(t, db, warm)}
	const room = domain.RoomID("!big:x")
	const n = 200
	user := func(i int) domain.UserID { return domain.UserID(fmt.Sprintf("@m%03d:x", i)) }
	want := map[domain.UserID]string{}
	for i := range n {
		f.join(room, user(i), fmt.Sprintf("Start %d", i))
		want[user(i)] = fmt.Sprintf("Start %d", i)
	}
	for i := range 20 {
		nick := fmt.Sprintf("Nick %d", i)
		v := []byte(fmt.Sprintf("%q", nick))
		f.apply(domain.Event{Type: domain.TypeMemberProfileSet, Room: room, User: user(i), Key: domain.KeyDisplayName, Value: v})
		want[user(i)] = nick
	}
	before := eventstore.Position{Commit: f.pos, Prepare: f.pos}
	wantBefore := maps.Clone(want)
	for i := range 120 {
		f.rename(user(i), fmt.Sprintf("Global %d", i), domain.PropagateUnchanged)
		if i >= 20 {
			want[user(i)] = fmt.Sprintf("Global %d", i)
		}
	}
	for i := n - 30; i < n; i++ {
		f.apply(domain.Event{Type: domain.TypeMemberLeft, Room: room, User: user(i), Membership: domain.MembershipLeave})
		delete(want, user(i))
	}
	admin := projections.Viewer{Admin: true}
	names := func(t *testing.T, v *projections.Rooms, at *eventstore.Position) map[domain.UserID]string {
		t.Helper()
		ms, _, err := v.Members(room, at, admin)
		if err != nil {
			t.Fatal(err)
		}
		out := map[domain.UserID]string{}
		for _, m := range ms {
			if m.DisplayName == nil {
				t.Fatalf("%s has no display name", m.User)
			}
			out[m.User] = *m.DisplayName
		}
		return out
	}
	for _, c := range []struct {
		name  string
		cache int
	}{{"cold cache", 0}, {"cache of 8", 8}} {
		t.Run(c.name, func(t *testing.T) {
			cold := projections.NewRooms(db, c.cache)
			for _, at := range []struct {
				name string
				pos  *eventstore.Position
				want map[domain.UserID]string
			}{{"now", nil, want}, {"before the renames", &before, wantBefore}} {
				got := names(t, cold, at.pos)
				if !maps.Equal(got, at.want) {
					t.Errorf("%s: %d members listed, want %d", at.name, len(got), len(at.want))
					for u, w := range at.want {
						if got[u] != w {
							t.Errorf("%s: %s shows %q, want %q", at.name, u, got[u], w)
						}
					}
				}
				if warmNames := names(t, warm, at.pos); !maps.Equal(got, warmNames) {
					t.Errorf("%s: the cold view lists other names than the warm one", at.name)
				}
			}
		})
	}
}
