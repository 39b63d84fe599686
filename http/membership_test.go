package http_test

import (
	"strings"
	"testing"

	"github.com/profilestore/profilestore/domain"
)

// memberState returns bob's membership in the room as the members view
// shows it to an admin ("" when not listed), and his name there.
func memberState(t *testing.T, ts *testService, who domain.UserID) (string, string) {
	t.Helper()
	got := ts.ok("GET", v1+"/members", root, nil).json(t)
	for _, m := range got["members"].([]any) {
		m := m.(map[string]any)
		if m["user_id"] == string(who) {
			dn, _ := m["displayname"].(string)
			return m["membership"].(string), dn
		}
	}
	return "", ""
}

// lastKind is the kind of the room history's newest entry.
func lastKind(t *testing.T, ts *testService) string {
	t.Helper()
	chunk := ts.ok("GET", v1+"/history?limit=1", root, nil).json(t)["chunk"].([]any)
	if len(chunk) == 0 {
		return ""
	}
	return chunk[0].(map[string]any)["kind"].(string)
}

// TestAdminMembershipTable runs every transition of Matrix's m.room.member
// table through PUT /_profilestore/v1/rooms/{roomId}/members/{userId}, one
// fresh service per row. The admin is "someone else"; a leave recorded by
// an admin is the user's leave (or, on a banned user, an unban).
func TestAdminMembershipTable(t *testing.T) {
	rows := []struct {
		name   string
		setup  []string
		body   map[string]any
		status int
		code   string
		state  string // in the members view; "" when not listed (also banned users)
		kind   string // the newest history entry
	}{
		{"invite/invite", []string{"invite"}, map[string]any{"membership": "invite"}, 200, "", "invite", "invite"},
		{"invite/join", []string{"invite"}, map[string]any{"membership": "join"}, 200, "", "join", "join"},
		{"invite/leave: rejected", []string{"invite"}, map[string]any{"membership": "leave"}, 200, "", "", "leave"},
		{"invite/kick: revoked", []string{"invite"}, map[string]any{"membership": "kick"}, 200, "", "", "kick"},
		{"invite/ban", []string{"invite"}, map[string]any{"membership": "ban"}, 200, "", "", "ban"},
		{"invite/knock: re-knocking", []string{"invite"}, map[string]any{"membership": "knock"}, 200, "", "", "leave"},
		{"invite/unban: not banned", []string{"invite"}, map[string]any{"membership": "unban"}, 403, "M_FORBIDDEN", "invite", "invite"},
		{"join/invite", []string{"join"}, map[string]any{"membership": "invite"}, 403, "M_FORBIDDEN", "join", "join"},
		{"join/join with a new name", []string{"join"}, map[string]any{"membership": "join", "displayname": "Captain Bob"}, 200, "", "join", "room_rename"},
		{"join/leave", []string{"join"}, map[string]any{"membership": "leave"}, 200, "", "", "leave"},
		{"join/kick", []string{"join"}, map[string]any{"membership": "kick"}, 200, "", "", "kick"},
		{"join/ban: kicked and banned", []string{"join"}, map[string]any{"membership": "ban"}, 200, "", "", "ban"},
		{"join/knock", []string{"join"}, map[string]any{"membership": "knock"}, 403, "M_FORBIDDEN", "join", "join"},
		{"leave/invite", []string{"join", "leave"}, map[string]any{"membership": "invite"}, 200, "", "invite", "invite"},
		{"leave/join", []string{"join", "leave"}, map[string]any{"membership": "join"}, 200, "", "join", "join"},
		{"leave/leave", []string{"join", "leave"}, map[string]any{"membership": "leave"}, 200, "", "", "leave"},
		{"leave/kick", []string{"join", "leave"}, map[string]any{"membership": "kick"}, 200, "", "", "leave"},
		{"leave/ban", []string{"join", "leave"}, map[string]any{"membership": "ban"}, 200, "", "", "ban"},
		{"leave/knock", []string{"join", "leave"}, map[string]any{"membership": "knock"}, 200, "", "", "leave"},
		{"ban/invite", []string{"ban"}, map[string]any{"membership": "invite"}, 403, "M_FORBIDDEN", "", "ban"},
		{"ban/join", []string{"ban"}, map[string]any{"membership": "join"}, 403, "M_FORBIDDEN", "", "ban"},
		{"ban/leave: unbanned", []string{"ban"}, map[string]any{"membership": "leave"}, 200, "", "", "unban"},
		{"ban/unban", []string{"ban"}, map[string]any{"membership": "unban"}, 200, "", "", "unban"},
		{"ban/kick: refused, the ban stays", []string{"ban"}, map[string]any{"membership": "kick"}, 403, "M_FORBIDDEN", "", "ban"},
		{"ban/ban", []string{"ban"}, map[string]any{"membership": "ban"}, 200, "", "", "ban"},
		{"ban/knock", []string{"ban"}, map[string]any{"membership": "knock"}, 403, "M_FORBIDDEN", "", "ban"},
	}
	for _, row := range rows {
		t.Run(row.name, func(t *testing.T) {
			ts := newRoomsService(t)
			ts.ok("PUT", v1+"/members/"+string(alice), root, map[string]string{"membership": "join"})
			for _, m := range row.setup {
				ts.ok("PUT", v1+"/members/"+string(bob), root, map[string]any{"membership": m, "displayname": "Bob"})
			}
			before := ts.head()
			res := ts.do("PUT", v1+"/members/"+string(bob), ts.tokens[root], row.body)
			if res.Status != row.status || (row.code != "" && res.errcode(t) != row.code) {
				t.Fatalf("%d %s, want %d %s", res.Status, res.Body, row.status, row.code)
			}
			if row.status != 200 && ts.head() != before {
				t.Error("a refused change appended events")
			}
			if st, _ := memberState(t, ts, bob); st != row.state {
				t.Errorf("members view: %q, want %q", st, row.state)
			}
			if k := lastKind(t, ts); k != row.kind {
				t.Errorf("newest history entry %q, want %q", k, row.kind)
			}
			// A ban in force refuses a join; without one the join works.
			join := ts.do("PUT", v1+"/members/"+string(bob), ts.tokens[root], map[string]any{"membership": "join"})
			if banned := row.kind == "ban"; (join.Status == 403) != banned {
				t.Errorf("a join after it: %d %s (banned: %v)", join.Status, join.Body, banned)
			}
		})
	}
}

// TestAdminJoinOfJoinedMemberRenamesInRoom: a join of a member already
// joined with a new displayname or avatar_url changes the room's name;
// the global one clears it; no names changes nothing.
func TestAdminJoinOfJoinedMemberRenamesInRoom(t *testing.T) {
	ts := newRoomsService(t)
	ts.ok("PUT", "/_matrix/client/v3/profile/"+string(bob)+"/displayname", bob, map[string]string{"displayname": "Bob"})
	ts.ok("PUT", v1+"/members/"+string(bob), root, map[string]string{"membership": "join"})
	ts.ok("PUT", v1+"/members/"+string(bob), root, map[string]any{"membership": "join", "displayname": "Captain Bob", "avatar_url": "mxc://example.com/cap"})
	if _, dn := memberState(t, ts, bob); dn != "Captain Bob" {
		t.Fatalf("room name after a join with a new name: %q", dn)
	}
	head := ts.head()
	ts.ok("PUT", v1+"/members/"+string(bob), root, map[string]string{"membership": "join"})
	if ts.head() != head {
		t.Error("a join without names of a joined member appended events")
	}
	ts.ok("PUT", v1+"/members/"+string(bob), root, map[string]any{"membership": "join", "displayname": "Bob"})
	if _, dn := memberState(t, ts, bob); dn != "Bob" {
		t.Fatalf("room name after a join with the global name: %q", dn)
	}
	var kinds []string
	for _, e := range ts.ok("GET", v1+"/history?dir=f", root, nil).json(t)["chunk"].([]any) {
		kinds = append(kinds, e.(map[string]any)["kind"].(string))
	}
	if !strings.HasSuffix(strings.Join(kinds, ","), "join,room_rename,room_avatar,override_cleared") {
		t.Errorf("history kinds %v", kinds)
	}
	res := ts.do("PUT", v1+"/members/"+string(bob), ts.tokens[root], map[string]any{"membership": "join", "avatar_url": "https://x/y"})
	if res.Status != 400 || res.errcode(t) != "M_INVALID_PARAM" {
		t.Errorf("join of a joined member with a bad avatar: %d %s", res.Status, res.Body)
	}
}

// TestOwnMembershipEntriesAreVisible: with history_visibility joined, a
// member sees their own kick and the invite that brought them back (as
// homeservers show a user their own membership events); alice, who joined
// later, sees neither.
func TestOwnMembershipEntriesAreVisible(t *testing.T) {
	ts := newRoomsService(t)
	ts.ok("PUT", v1+"/history_visibility", root, map[string]string{"history_visibility": "joined"})
	for _, m := range []string{"join", "kick", "invite", "join"} {
		ts.ok("PUT", v1+"/members/"+string(bob), root, map[string]string{"membership": m})
	}
	ts.ok("PUT", v1+"/members/"+string(alice), root, map[string]string{"membership": "join"})
	kinds := func(as domain.UserID) string {
		var out []string
		for _, e := range ts.ok("GET", v1+"/history?dir=f&user="+string(bob), as, nil).json(t)["chunk"].([]any) {
			out = append(out, e.(map[string]any)["kind"].(string))
		}
		return strings.Join(out, ",")
	}
	if got := kinds(bob); got != "join,kick,invite,join" {
		t.Errorf("bob sees his own entries %q, want join,kick,invite,join", got)
	}
	if got := kinds(alice); got != "" {
		t.Errorf("alice, who joined later, sees bob's entries %q, want none", got)
	}
}
