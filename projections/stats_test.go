package projections_test

import (
	"testing"
	"time"

	"github.com/profilestore/profilestore/domain"
	"github.com/profilestore/profilestore/projections"
)

func TestStatsCountsRenamesPerDayUserAndRoom(t *testing.T) {
	db := projections.OpenTestDB(t)
	v := projections.NewActivity(db)
	a := projections.NewDirect(t, db, v)
	day1 := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	ev := &nameEvents{t0: day1} // one event per hour
	a.Apply(ev.join(roomA, dana, "Dana"))
	a.Apply(ev.join(roomB, dana, "Dana"))
	a.Apply(ev.join(roomA, eve, "Eve"))
	a.Apply(ev.roomName(roomB, dana, "Dana in B")) // a per-room rename: dana, room B
	a.Apply(ev.global(dana, "Dana 2"))             // unchanged: reaches A, not B (override)
	e := ev.global(eve, "Eve 2")
	e.PropagateTo = domain.PropagateNone // reaches no room
	a.Apply(e)
	e = ev.global(dana, "Dana 3")
	e.PropagateTo = domain.PropagateAll // reaches A and B, clears B's override
	a.Apply(e)
	a.Apply(ev.global(dana, "Dana 4")) // unchanged again: B has no override any more
	a.Apply(ev.next(domain.Event{Type: domain.TypeMemberLeft, Room: roomA, User: dana, Membership: "leave"}))
	a.Apply(ev.global(dana, "Dana 5")) // only B now
	ev.t0 = day1.AddDate(0, 0, 2)
	a.Apply(ev.global(eve, "Eve 3")) // two days later

	r := v.Report(day1, day1.AddDate(0, 0, 1), 10)
	if len(r.Days) != 2 || r.Days[0].RoomChanges != 5 || r.Days[0].ProfileChanges != 5 || r.Days[0].Renames != 6 || r.Days[1] != (projections.DayCount{Day: day1.AddDate(0, 0, 1)}) {
		t.Fatalf("days: %+v", r.Days)
	}
	wantUsers := []projections.UserCount{{User: dana, N: 5}, {User: eve, N: 1}}
	if len(r.TopUsers) != 2 || r.TopUsers[0] != wantUsers[0] || r.TopUsers[1] != wantUsers[1] {
		t.Errorf("users: %+v", r.TopUsers)
	}
	// B: per-room rename, Dana 3 (all), Dana 4, Dana 5 = 4; A: Dana 2, Dana 3, Dana 4 = 3.
	if len(r.TopRooms) != 2 || r.TopRooms[0] != (projections.RoomCount{Room: roomB, N: 4}) || r.TopRooms[1] != (projections.RoomCount{Room: roomA, N: 3}) {
		t.Errorf("rooms: %+v", r.TopRooms)
	}
	if r := v.Report(day1, day1.AddDate(0, 0, 5), 1); len(r.Days) != 6 || len(r.TopUsers) != 1 || r.TopUsers[0].N != 5 || r.Days[2].Renames != 1 {
		t.Errorf("top 1 over six days: %+v", r)
	}

	loaded := projections.NewActivity(db)
	projections.NewDirect(t, db, loaded).Apply(ev.global(dana, "Dana 6")) // membership is in the store: counts for B
	if r := loaded.Report(day1, day1.AddDate(0, 0, 5), 10); r.TopRooms[0] != (projections.RoomCount{Room: roomB, N: 5}) {
		t.Errorf("after load: %+v", r.TopRooms)
	}
}
