package projections_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/profilestore/profilestore/domain"
	"github.com/profilestore/profilestore/eventstore"
	"github.com/profilestore/profilestore/projections"
)

// nameEvents builds decoded events at increasing positions, as the runner
// hands them to views.
type nameEvents struct {
	pos uint64
	t0  time.Time
}

func (n *nameEvents) next(e domain.Event) *domain.Event {
	n.pos++
	e.Position = eventstore.Position{Commit: n.pos, Prepare: n.pos}
	e.Meta.OccurredAt = n.t0.Add(time.Duration(n.pos) * time.Hour)
	return &e
}

func (n *nameEvents) global(u domain.UserID, name string) *domain.Event {
	v, _ := json.Marshal(name)
	return n.next(domain.Event{Type: domain.TypeFieldSet, User: u, Key: domain.KeyDisplayName, Value: v})
}

func (n *nameEvents) join(r domain.RoomID, u domain.UserID, name string) *domain.Event {
	return n.next(domain.Event{Type: domain.TypeMemberJoined, Room: r, User: u, DisplayName: &name})
}

func (n *nameEvents) roomName(r domain.RoomID, u domain.UserID, name string) *domain.Event {
	v, _ := json.Marshal(name)
	return n.next(domain.Event{Type: domain.TypeMemberProfileSet, Room: r, User: u, Key: domain.KeyDisplayName, Value: v})
}

const (
	roomA = domain.RoomID("!a:example.com")
	roomB = domain.RoomID("!b:example.com")
	eve   = domain.UserID("@eve:evil.org")
	mod   = domain.UserID("@mod:example.com")
	dana  = domain.UserID("@dana:example.com")
)

func TestNamesSearchRanksExactFoldedLookalike(t *testing.T) {
	db := projections.OpenTestDB(t)
	v := projections.NewNameIndex(db)
	a := projections.NewDirect(t, db, v)
	ev := &nameEvents{t0: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	a.Apply(ev.global(mod, "Admin"))
	a.Apply(ev.join(roomA, mod, "Admin"))
	a.Apply(ev.roomName(roomB, eve, "\u0410dmin"))
	a.Apply(ev.global(dana, "ADMIN"))
	a.Apply(ev.global(dana, "Dana"))
	a.Apply(ev.global(eve, "Eve")) // not an admin look-alike
	a.Apply(ev.next(domain.Event{Type: domain.TypeFieldSet, User: eve, Key: "org.example.note", Value: json.RawMessage(`"Admin"`)}))

	got, more := v.Search("Admin", 10, nil)
	if more || len(got) != 3 {
		t.Fatalf("matches: %+v", got)
	}
	if got[0].User != mod || got[0].Match != projections.MatchExact || !got[0].Global || len(got[0].Rooms) != 1 || got[0].Rooms[0] != roomA {
		t.Errorf("first: %+v", got[0])
	}
	if got[0].FirstPosition.Commit != 1 || got[0].LastPosition.Commit != 2 {
		t.Errorf("first/last use: %+v", got[0])
	}
	if got[1].User != dana || got[1].Match != projections.MatchFolded {
		t.Errorf("second: %+v", got[1])
	}
	if got[2].User != eve || got[2].Match != projections.MatchLookalike || got[2].Global || got[2].Rooms[0] != roomB {
		t.Errorf("third: %+v", got[2])
	}
	if got, more := v.Search("admin", 1, nil); len(got) != 1 || !more {
		t.Errorf("limit 1: %d %v", len(got), more)
	}
	if got, _ := v.Search("   ", 10, nil); len(got) != 0 {
		t.Errorf("blank query matched %+v", got)
	}
	onlyGlobal := func(_ bool, room domain.RoomID) bool { return room == "" }
	if got, _ := v.Search("Admin", 10, onlyGlobal); len(got) != 2 {
		t.Errorf("visibility filter ignored: %+v", got)
	}
	if names := v.UserNames(dana, nil); len(names) != 2 || names[0].Name != "ADMIN" || names[1].Name != "Dana" {
		t.Errorf("dana's names: %+v", names)
	}
}

func TestNamesHiddenAndErased(t *testing.T) {
	db := projections.OpenTestDB(t)
	v := projections.NewNameIndex(db)
	a := projections.NewDirect(t, db, v)
	ev := &nameEvents{t0: time.Now()}
	old := ev.global(dana, "Deadname Marker")
	a.Apply(old)
	a.Apply(ev.global(dana, "Dana"))
	a.Apply(ev.next(domain.Event{Type: domain.TypeEntryHidden, User: dana, Hidden: old.Position}))
	if !v.IsHidden(dana, old.Position) {
		t.Fatal("entry not hidden")
	}
	notHidden := func(hidden bool, _ domain.RoomID) bool { return !hidden }
	if got, _ := v.Search("Deadname Marker", 10, notHidden); len(got) != 0 {
		t.Errorf("hidden name found by a reader who may not see it: %+v", got)
	}
	if got, _ := v.Search("Deadname Marker", 10, nil); len(got) != 1 || !got[0].Hidden {
		t.Errorf("admins see hidden names marked hidden: %+v", got)
	}

	a.Apply(ev.join(roomA, dana, "Dana in A"))
	a.Apply(ev.global(eve, "Dana"))
	a.Apply(ev.next(domain.Event{Type: domain.TypeErased, User: dana}))
	// After erasure, replayed events decode as erased and must not come back.
	a.Apply(ev.next(domain.Event{Type: domain.TypeFieldSet, User: dana, Key: domain.KeyDisplayName, Erased: true}))
	if got, _ := v.Search("Dana", 10, nil); len(got) != 1 || got[0].User != eve {
		t.Errorf("after erasure: %+v", got)
	}
	if len(v.UserNames(dana, nil)) != 0 || v.IsHidden(dana, old.Position) {
		t.Error("erased user still has names or hidden marks")
	}
	if err := db.Purge(); err != nil {
		t.Fatal(err)
	}
	for _, marker := range []string{"Deadname Marker", "Dana in A"} {
		if f := projections.FileHolding(t, db, marker); f != "" {
			t.Errorf("%s holds %q after erasure", f, marker)
		}
	}
	loaded := projections.NewNameIndex(db)
	if got, _ := loaded.Search("dana", 10, nil); len(got) != 1 || got[0].User != eve || got[0].Match != projections.MatchFolded {
		t.Errorf("after load: %+v", got)
	}
	// Writes after erasure are indexed again.
	a.Apply(ev.global(dana, "Dana Again"))
	if got, _ := v.Search("dana again", 10, nil); len(got) != 1 {
		t.Errorf("new name after erasure: %+v", got)
	}
}
