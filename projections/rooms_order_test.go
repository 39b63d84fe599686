package projections_test

import (
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/profilestore/profilestore/domain"
	"github.com/profilestore/profilestore/eventstore"
	"github.com/profilestore/profilestore/projections"
)

// History order (docs/DECISIONS.md): events backfilled from the homeserver
// are written after live ones but read where the homeserver placed them.

// t0 is the homeserver's time of the first backfilled event; live events
// (mirror mode since install day) happen from t0+1000 s.
var t0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

func sec(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }

// record applies an event as mirror mode records it: as it happens.
func (f *feeder) record(at time.Time, e domain.Event) eventstore.Position {
	return f.at(at, 0, e)
}

// backfill applies an event as a backfill writes it: later in the log, with
// the homeserver's timeline time as its order.
func (f *feeder) backfill(at time.Time, e domain.Event) eventstore.Position {
	return f.at(at, at.UnixMilli(), e)
}

func (f *feeder) at(at time.Time, order int64, e domain.Event) eventstore.Position {
	f.pos++
	e.Position = eventstore.Position{Commit: f.pos, Prepare: f.pos}
	e.Meta.OccurredAt, e.Meta.OrderTS = at, order
	f.d.Apply(&e)
	return e.Position
}

func joined(room domain.RoomID, u domain.UserID, name string) domain.Event {
	return domain.Event{Type: domain.TypeMemberJoined, Room: room, User: u, DisplayName: &name}
}

func left(room domain.RoomID, u domain.UserID, membership string, by domain.UserID) domain.Event {
	return domain.Event{Type: domain.TypeMemberLeft, Room: room, User: u, Membership: membership, By: by}
}

func renamed(u domain.UserID, name string) domain.Event {
	v, _ := json.Marshal(name)
	return domain.Event{Type: domain.TypeFieldSet, User: u, Key: domain.KeyDisplayName, Value: v, PropagateTo: domain.PropagateUnchanged}
}

func roomNamed(room domain.RoomID, u domain.UserID, name string) domain.Event {
	v, _ := json.Marshal(name)
	return domain.Event{Type: domain.TypeMemberProfileSet, Room: room, User: u, Key: domain.KeyDisplayName, Value: v}
}

// line renders an entry as "user kind old->new".
func line(e projections.HistoryEntry) string {
	s := func(v *string) string {
		if v == nil {
			return ""
		}
		return *v
	}
	return fmt.Sprintf("%s %s %s->%s", strings.TrimSuffix(strings.TrimPrefix(string(e.User), "@"), ":x"), e.Kind,
		s(e.Old.DisplayName), s(e.New.DisplayName))
}

// allPages reads a whole history in pages of two, in one direction, and
// returns it oldest first.
func allPages(t *testing.T, read func(projections.HistoryQuery) (projections.HistoryPage, error), q projections.HistoryQuery) []string {
	t.Helper()
	q.Limit = 2
	var out []string
	for range 100 {
		page, err := read(q)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range page.Entries {
			out = append(out, line(e))
		}
		if page.End == "" {
			break
		}
		q.From = page.End
	}
	if q.Backwards {
		for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
			out[i], out[j] = out[j], out[i]
		}
	}
	return out
}

// memberNames renders a Members answer as "user=name"; call it as
// memberNames(t)(f.v.Members(...)).
func memberNames(t *testing.T) func([]projections.Member, eventstore.Position, error) []string {
	return func(ms []projections.Member, _ eventstore.Position, err error) []string {
		t.Helper()
		return renderMembers(t, ms, err)
	}
}

func renderMembers(t *testing.T, ms []projections.Member, err error) []string {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, m := range ms {
		name := ""
		if m.DisplayName != nil {
			name = *m.DisplayName
		}
		out = append(out, fmt.Sprintf("%s=%s", strings.TrimSuffix(strings.TrimPrefix(string(m.User), "@"), ":x"), name))
	}
	return out
}

func TestBackfillAfterMirrorReadsInTheHomeserversOrder(t *testing.T) {
	const room = domain.RoomID("!r:x")
	const alice, bob, carol = domain.UserID("@alice:x"), domain.UserID("@bob:x"), domain.UserID("@carol:x")
	f := newFeeder(t)
	// Mirror mode, from install day: alice (back in the room), bob, a rename.
	f.record(sec(1000), joined(room, alice, "Alice Now"))
	f.record(sec(1001), joined(room, bob, "Bob"))
	f.record(sec(1002), renamed(alice, "Alice Newer"))
	// Then the backfill, from the room's start.
	f.backfill(sec(100), domain.Event{Type: domain.TypeHistoryVisibility, Room: room, Visibility: "joined"})
	f.backfill(sec(101), joined(room, alice, "Alice"))
	f.backfill(sec(102), renamed(alice, "Alice Old"))
	f.backfill(sec(103), joined(room, carol, "Carol"))
	carolNamed := f.backfill(sec(104), roomNamed(room, carol, "Caz"))
	f.backfill(sec(105), left(room, carol, domain.MembershipKick, alice))
	f.backfill(sec(106), left(room, alice, domain.MembershipLeave, ""))

	want := []string{
		"alice join ->Alice",
		"alice global_rename Alice->Alice Old",
		"carol join ->Carol",
		"carol room_rename Carol->Caz",
		"carol kick Caz->",
		"alice leave Alice Old->",
		"alice join ->Alice Now",
		"bob join ->Bob",
		"alice global_rename Alice Now->Alice Newer",
	}
	admin := projections.HistoryQuery{Viewer: projections.Viewer{Admin: true}}
	read := func(q projections.HistoryQuery) (projections.HistoryPage, error) { return f.v.RoomHistory(room, q) }
	for _, backwards := range []bool{false, true} {
		q := admin
		q.Backwards = backwards
		if got := allPages(t, read, q); !reflect.DeepEqual(got, want) {
			t.Errorf("history (backwards %v, pages of 2):\n got %q\nwant %q", backwards, got, want)
		}
	}

	// As of a time inside the backfilled past, and as of the log position
	// of a backfilled event (what a history entry links to).
	then := []string{"alice=Alice Old", "carol=Caz"}
	if got := memberNames(t)(f.v.MembersAtTime(room, sec(104).Add(500*time.Millisecond), admin.Viewer)); !reflect.DeepEqual(got, then) {
		t.Errorf("members at t0+104.5s = %q, want %q", got, then)
	}
	if got := memberNames(t)(f.v.Members(room, &carolNamed, admin.Viewer)); !reflect.DeepEqual(got, then) {
		t.Errorf("members as of the backfilled room rename's position = %q, want %q", got, then)
	}
	if got := memberNames(t)(f.v.MembersAtTime(room, sec(50), admin.Viewer)); got != nil {
		t.Errorf("members before the room's first event = %q, want none", got)
	}
	now := []string{"alice=Alice Newer", "bob=Bob"}
	if got := memberNames(t)(f.v.Members(room, nil, admin.Viewer)); !reflect.DeepEqual(got, now) {
		t.Errorf("members now = %q, want %q (the backfill changes nothing current)", got, now)
	}

	// history_visibility "joined", set in the backfilled past: bob sees
	// from his join on, and no earlier point in time.
	asBob := projections.HistoryQuery{Viewer: projections.Viewer{User: bob}}
	if got, want := allPages(t, read, asBob), want[7:]; !reflect.DeepEqual(got, want) {
		t.Errorf("bob's history = %q, want %q", got, want)
	}
	_, _, err := f.v.MembersAtTime(room, sec(104), asBob.Viewer)
	if code := domain.ErrorCode(err); code != domain.ErrCodeForbidden {
		t.Errorf("bob reading members before his join: %v (code %q), want M_FORBIDDEN", err, code)
	}

	// alice's own history in the same order.
	userRead := func(q projections.HistoryQuery) (projections.HistoryPage, error) { return f.v.UserHistory(alice, q) }
	wantAlice := []string{"alice join ->Alice", "alice global_rename ->Alice Old", "alice leave Alice Old->", "alice join ->Alice Now", "alice global_rename Alice Old->Alice Newer"}
	if got := allPages(t, userRead, projections.HistoryQuery{Viewer: projections.Viewer{User: alice}}); !reflect.DeepEqual(got, wantAlice) {
		t.Errorf("alice's history:\n got %q\nwant %q", got, wantAlice)
	}
	if found, _ := f.v.UserEntry(carol, carolNamed); !found {
		t.Error("the backfilled room rename is not found as carol's entry by its position")
	}
}

func TestRoomCreatedDuringBackfillKeepsItsOwnHistory(t *testing.T) {
	const old, fresh = domain.RoomID("!old:x"), domain.RoomID("!fresh:x")
	const alice, bob = domain.UserID("@alice:x"), domain.UserID("@bob:x")
	f := newFeeder(t)
	f.record(sec(1000), joined(old, alice, "Alice Now"))
	f.backfill(sec(101), joined(old, alice, "Alice"))
	// While the backfill runs, a room is created and joined live...
	f.record(sec(1100), joined(fresh, alice, "Alice Now"))
	f.record(sec(1101), joined(fresh, bob, "Bob"))
	// ...and the backfill goes on with the old room's past.
	f.backfill(sec(102), renamed(alice, "Alice Old"))
	f.backfill(sec(103), joined(old, bob, "Bob Old"))
	f.backfill(sec(106), left(old, alice, domain.MembershipLeave, ""))
	// A live event after the backfill reaches both rooms as usual.
	f.record(sec(1200), renamed(bob, "Bob New"))

	admin := projections.HistoryQuery{Viewer: projections.Viewer{Admin: true}}
	for _, tc := range []struct {
		room    domain.RoomID
		history []string
		members []string
	}{
		{fresh, []string{"alice join ->Alice Now", "bob join ->Bob", "bob global_rename Bob->Bob New"}, []string{"alice=Alice Now", "bob=Bob New"}},
		{old, []string{"alice join ->Alice", "alice global_rename Alice->Alice Old", "bob join ->Bob Old", "alice leave Alice Old->", "alice join ->Alice Now", "bob global_rename Bob Old->Bob New"},
			[]string{"alice=Alice Now", "bob=Bob New"}},
	} {
		t.Run(string(tc.room), func(t *testing.T) {
			read := func(q projections.HistoryQuery) (projections.HistoryPage, error) { return f.v.RoomHistory(tc.room, q) }
			if got := allPages(t, read, admin); !reflect.DeepEqual(got, tc.history) {
				t.Errorf("history:\n got %q\nwant %q", got, tc.history)
			}
			if got := memberNames(t)(f.v.Members(tc.room, nil, admin.Viewer)); !reflect.DeepEqual(got, tc.members) {
				t.Errorf("members now = %q, want %q", got, tc.members)
			}
		})
	}
	// The fresh room did not exist in the backfilled past.
	if got := memberNames(t)(f.v.MembersAtTime(fresh, sec(104), admin.Viewer)); got != nil {
		t.Errorf("fresh room at t0+104s = %q, want no members", got)
	}
	if got, want := memberNames(t)(f.v.MembersAtTime(old, sec(104), admin.Viewer)), []string{"alice=Alice Old", "bob=Bob Old"}; !reflect.DeepEqual(got, want) {
		t.Errorf("old room at t0+104s = %q, want %q", got, want)
	}
}

// A backfilled join cuts short the period a global change was entered in:
// the entries move with the membership.
func TestBackfilledLeaveTakesBackEntriesOfTheCutPeriod(t *testing.T) {
	const a, b = domain.RoomID("!a:x"), domain.RoomID("!b:x")
	const alice = domain.UserID("@alice:x")
	f := newFeeder(t)
	// Room a's backfill first: alice there throughout, two renames.
	f.backfill(sec(100), joined(a, alice, "A0"))
	f.backfill(sec(110), renamed(alice, "A1"))
	f.backfill(sec(130), renamed(alice, "A3"))
	// Then room b's: she joined before the first rename, left between them.
	f.backfill(sec(105), joined(b, alice, "A0"))
	f.backfill(sec(120), left(b, alice, domain.MembershipLeave, ""))

	admin := projections.HistoryQuery{Viewer: projections.Viewer{Admin: true}}
	read := func(q projections.HistoryQuery) (projections.HistoryPage, error) { return f.v.RoomHistory(b, q) }
	want := []string{"alice join ->A0", "alice global_rename A0->A1", "alice leave A1->"}
	if got := allPages(t, read, admin); !reflect.DeepEqual(got, want) {
		t.Errorf("room b:\n got %q\nwant %q", got, want)
	}
	if got := memberNames(t)(f.v.Members(b, nil, admin.Viewer)); got != nil {
		t.Errorf("room b now = %q, want nobody", got)
	}
	if got, want := memberNames(t)(f.v.Members(a, nil, admin.Viewer)), []string{"alice=A3"}; !reflect.DeepEqual(got, want) {
		t.Errorf("room a now = %q, want %q", got, want)
	}
}
