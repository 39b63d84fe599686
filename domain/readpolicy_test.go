package domain

import "testing"

func TestReadPolicyRoom(t *testing.T) {
	const u = UserID("@u:example.com")
	for _, c := range []struct {
		name    string
		reader  Reader
		facts   RoomFacts
		want    RoomAccess
		errcode string
	}{
		{"admin, unknown room", Reader{User: u, Admin: true}, RoomFacts{}, ReadsNothing, ErrCodeNotFound},
		{"admin", Reader{User: u, Admin: true}, RoomFacts{Known: true}, ReadsAll, ""},
		{"unknown room, not an admin", Reader{User: u}, RoomFacts{}, ReadsNothing, ErrCodeForbidden},
		{"moderator, not joined", Reader{User: u}, RoomFacts{Known: true, ReaderModerates: true}, ReadsAll, ""},
		{"joined member", Reader{User: u}, RoomFacts{Known: true, ReaderJoined: true}, ReadsAsMember, ""},
		{"stranger", Reader{User: u}, RoomFacts{Known: true}, ReadsNothing, ErrCodeForbidden},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := Reads.Room(c.reader, c.facts)
			if got != c.want || ErrorCode(err) != c.errcode || (c.errcode == "") != (err == nil) {
				t.Fatalf("Room = %v, %v; want %v, %q", got, err, c.want, c.errcode)
			}
		})
	}
}

func TestReadPolicyEntryVisible(t *testing.T) {
	for _, c := range []struct {
		visibility, then string
		want             bool
	}{
		{VisibilityShared, "", true},
		{VisibilityWorldReadable, MembershipLeave, true},
		{VisibilityInvited, MembershipInvite, true},
		{VisibilityInvited, MembershipJoin, true},
		{VisibilityInvited, MembershipLeave, false},
		{VisibilityInvited, "", false},
		{VisibilityJoined, MembershipJoin, true},
		{VisibilityJoined, MembershipInvite, false},
		{VisibilityJoined, "", false},
	} {
		t.Run(c.visibility+"/"+c.then, func(t *testing.T) {
			if got := Reads.EntryVisible(c.visibility, c.then); got != c.want {
				t.Fatalf("EntryVisible(%q, %q) = %v, want %v", c.visibility, c.then, got, c.want)
			}
		})
	}
}

func TestReadPolicyOwnEntry(t *testing.T) {
	if !Reads.OwnEntry(Reader{User: "@a:x"}, "@a:x") {
		t.Error("a member's own entry is not theirs")
	}
	if Reads.OwnEntry(Reader{User: "@a:x"}, "@b:x") || Reads.OwnEntry(Reader{}, "") {
		t.Error("someone else's entry (or an anonymous reader's) counts as own")
	}
}

func TestReadPolicyNames(t *testing.T) {
	const u, room, other = UserID("@mod:example.com"), RoomID("!mod:example.com"), RoomID("!other:example.com")
	moderates := func(r RoomID, who UserID) bool { return r == room && who == u }
	if Reads.Names(Reader{User: u, Admin: true}, moderates) != nil {
		t.Fatal("an admin's filter is not nil (everything)")
	}
	f := Reads.Names(Reader{User: u}, moderates)
	for _, c := range []struct {
		name   string
		hidden bool
		room   RoomID
		want   bool
	}{
		{"global", false, "", true},
		{"global, hidden", true, "", false},
		{"in a moderated room", false, room, true},
		{"hidden in a moderated room", true, room, false},
		{"in another room", false, other, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := f(c.hidden, c.room); got != c.want {
				t.Fatalf("filter(%v, %q) = %v, want %v", c.hidden, c.room, got, c.want)
			}
		})
	}
	if Reads.Names(Reader{User: u}, nil)(false, room) {
		t.Error("without rooms served, a per-room name is visible to a non-admin")
	}
}
