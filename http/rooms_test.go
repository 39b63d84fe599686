package http_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/profilestore/profilestore/domain"
)

const (
	root = domain.UserID("@admin:example.com")
	room = "!room:example.com"
)

// newRoomsService is the test service; every test service has rooms.
func newRoomsService(t *testing.T) *testService { return newTestService(t) }

func (ts *testService) ok(method, path string, as domain.UserID, body any) response {
	ts.t.Helper()
	res := ts.do(method, path, ts.tokens[as], body)
	if res.Status != http.StatusOK {
		ts.t.Fatalf("%s %s as %s: %d %s", method, path, as, res.Status, res.Body)
	}
	return res
}

const v1 = "/_profilestore/v1/rooms/" + room

func TestRoomProfilesOverHTTP(t *testing.T) {
	ts := newRoomsService(t)
	ts.ok("PUT", "/_matrix/client/v3/profile/"+string(alice)+"/displayname", alice, map[string]string{"displayname": "Alice"})
	// Join without names: the global profile is used.
	ts.ok("PUT", v1+"/members/"+string(alice), root, map[string]string{"membership": "join"})
	ts.ok("PUT", v1+"/members/"+string(bob), root, map[string]any{"membership": "join", "displayname": "Bobby"})
	got := ts.ok("GET", "/_matrix/client/v3/rooms/"+room+"/joined_members", bob, nil).json(t)
	joined := got["joined"].(map[string]any)
	if joined[string(alice)].(map[string]any)["display_name"] != "Alice" || joined[string(bob)].(map[string]any)["display_name"] != "Bobby" {
		t.Fatalf("joined_members = %v", got)
	}
	// A per-room nickname survives a global change (default unchanged)...
	ts.ok("PUT", v1+"/members/"+string(alice)+"/profile/displayname", alice, map[string]string{"displayname": "Ally"})
	ts.ok("PUT", "/_matrix/client/v3/profile/"+string(alice)+"/displayname", alice, map[string]string{"displayname": "Alice B"})
	if dn := memberName(t, ts, bob, alice); dn != "Ally" {
		t.Fatalf("after an unchanged global rename the room shows %q, want the nickname", dn)
	}
	// ...but not propagate_to=all.
	ts.ok("PUT", "/_matrix/client/v3/profile/"+string(alice)+"/displayname?propagate_to=all", alice, map[string]string{"displayname": "Alice C"})
	if dn := memberName(t, ts, bob, alice); dn != "Alice C" {
		t.Fatalf("after propagate_to=all the room shows %q", dn)
	}
	// The history tells it in order, newest first, with stable paging.
	page := ts.ok("GET", v1+"/history?limit=2", bob, nil).json(t)
	chunk := page["chunk"].([]any)
	if len(chunk) != 2 || chunk[0].(map[string]any)["kind"] != "global_rename" || chunk[1].(map[string]any)["kind"] != "room_rename" || page["end"] == nil {
		t.Fatalf("history page = %v", page)
	}
	first := chunk[0].(map[string]any)
	if first["old"].(map[string]any)["displayname"] != "Ally" || first["new"].(map[string]any)["displayname"] != "Alice C" {
		t.Fatalf("entry = %v", first)
	}
	next := ts.ok("GET", v1+"/history?limit=10&from="+page["end"].(string), bob, nil).json(t)
	kinds := []string{}
	for _, e := range next["chunk"].([]any) {
		kinds = append(kinds, e.(map[string]any)["kind"].(string))
	}
	if strings.Join(kinds, ",") != "join,join" || next["end"] != nil {
		t.Fatalf("second page kinds = %v, end %v", kinds, next["end"])
	}
	// As of alice's join, before the nickname.
	asOf := ts.ok("GET", v1+"/members?at="+next["chunk"].([]any)[1].(map[string]any)["position"].(string), bob, nil).json(t)
	if ms := asOf["members"].([]any); len(ms) != 1 || ms[0].(map[string]any)["displayname"] != "Alice" {
		t.Fatalf("members as of alice's join = %v", asOf)
	}
	// User history is the user's own (and admins').
	if res := ts.do("GET", "/_profilestore/v1/users/"+string(alice)+"/history", ts.tokens[bob], nil); res.Status != 403 || res.errcode(t) != "M_FORBIDDEN" {
		t.Errorf("bob reading alice's history: %d %s", res.Status, res.Body)
	}
	if h := ts.ok("GET", "/_profilestore/v1/users/"+string(alice)+"/history", alice, nil).json(t); len(h["chunk"].([]any)) != 5 {
		t.Errorf("alice's history = %v, want 3 global changes, the join and the nickname", h)
	}
}

func memberName(t *testing.T, ts *testService, as, who domain.UserID) string {
	t.Helper()
	got := ts.ok("GET", v1+"/members", as, nil).json(t)
	for _, m := range got["members"].([]any) {
		m := m.(map[string]any)
		if m["user_id"] == string(who) {
			s, _ := m["displayname"].(string)
			return s
		}
	}
	t.Fatalf("%s is not a member: %v", who, got)
	return ""
}

func TestRoomRoutesRefuseBadInput(t *testing.T) {
	ts := newRoomsService(t)
	ts.ok("PUT", v1+"/members/"+string(alice), root, map[string]string{"membership": "join"})
	before := ts.head()
	cases := []struct {
		method, path string
		as           domain.UserID
		body         any
		status       int
		code         string
	}{
		{"GET", v1 + "/members", bob, nil, 403, "M_FORBIDDEN"},
		{"GET", v1 + "/history", bob, nil, 403, "M_FORBIDDEN"},
		{"GET", "/_matrix/client/v3/rooms/" + room + "/joined_members", bob, nil, 403, "M_FORBIDDEN"},
		{"GET", "/_profilestore/v1/rooms/!nope:example.com/members", root, nil, 404, "M_NOT_FOUND"},
		{"GET", "/_profilestore/v1/rooms/nope/members", root, nil, 400, "M_INVALID_PARAM"},
		{"GET", v1 + "/history?dir=x", alice, nil, 400, "M_INVALID_PARAM"},
		{"GET", v1 + "/history?limit=0", alice, nil, 400, "M_INVALID_PARAM"},
		{"GET", v1 + "/history?from=zzz", alice, nil, 400, "M_INVALID_PARAM"},
		{"GET", v1 + "/history?user=bob", alice, nil, 400, "M_INVALID_PARAM"},
		{"GET", v1 + "/members?at=x", alice, nil, 400, "M_INVALID_PARAM"},
		{"GET", v1 + "/members?at_ts=-1", alice, nil, 400, "M_INVALID_PARAM"},
		{"PUT", v1 + "/members/" + string(bob), alice, map[string]string{"membership": "join"}, 403, "M_FORBIDDEN"},
		{"PUT", v1 + "/members/" + string(bob), root, map[string]string{"membership": "part"}, 400, "M_INVALID_PARAM"},
		{"PUT", v1 + "/members/" + string(bob), root, map[string]string{}, 400, "M_MISSING_PARAM"},
		{"PUT", v1 + "/members/" + string(bob), root, "not json", 400, "M_NOT_JSON"},
		{"PUT", v1 + "/members/" + string(bob), root, map[string]any{"membership": "join", "avatar_url": 3}, 400, "M_INVALID_PARAM"},
		{"PUT", v1 + "/members/" + string(bob), root, strings.Repeat(" ", 300<<10) + "{}", 413, "M_TOO_LARGE"},
		{"PUT", v1 + "/members/" + string(bob) + "/profile/displayname", alice, map[string]string{"displayname": "x"}, 403, "M_FORBIDDEN"},
		{"PUT", v1 + "/members/" + string(bob) + "/profile/displayname", bob, map[string]string{"displayname": "x"}, 403, "M_FORBIDDEN"}, // not joined
		{"PUT", v1 + "/members/" + string(alice) + "/profile/m.tz", alice, map[string]string{"m.tz": "x"}, 400, "M_INVALID_PARAM"},
		{"PUT", v1 + "/members/" + string(alice) + "/profile/avatar_url", alice, map[string]string{"avatar_url": "http://x"}, 400, "M_INVALID_PARAM"},
		{"PUT", v1 + "/members/" + string(alice) + "/profile/displayname", alice, map[string]int{"displayname": 1}, 400, "M_INVALID_PARAM"},
		{"PUT", v1 + "/history_visibility", root, map[string]string{"history_visibility": "public"}, 400, "M_INVALID_PARAM"},
		{"PUT", v1 + "/history_visibility", alice, map[string]string{"history_visibility": "joined"}, 403, "M_FORBIDDEN"},
		{"PUT", v1 + "/power_levels", root, map[string]any{"kick": "high"}, 400, "M_INVALID_PARAM"},
		{"PUT", v1 + "/power_levels", root, map[string]any{"users": map[string]int{"bob": 100}}, 400, "M_INVALID_PARAM"},
		{"DELETE", v1 + "/history", alice, nil, 405, "M_UNRECOGNIZED"},
	}
	for _, c := range cases {
		res := ts.do(c.method, c.path, ts.tokens[c.as], c.body)
		if res.Status != c.status || res.errcode(t) != c.code {
			t.Errorf("%s %s as %s: %d %s; want %d %s", c.method, c.path, c.as, res.Status, res.Body, c.status, c.code)
		}
	}
	if ts.head() != before {
		t.Error("a refused request appended events")
	}
	// A write that changes nothing appends nothing.
	ts.ok("PUT", v1+"/members/"+string(alice), root, map[string]string{"membership": "join"})
	ts.ok("DELETE", v1+"/members/"+string(alice)+"/profile/displayname", alice, nil)
	if ts.head() != before {
		t.Error("a no-op write appended events")
	}
}

func TestRoomHistoryVisibilityOverHTTP(t *testing.T) {
	ts := newRoomsService(t)
	ts.ok("PUT", v1+"/history_visibility", root, map[string]string{"history_visibility": "joined"})
	ts.ok("PUT", v1+"/members/"+string(alice), root, map[string]any{"membership": "join", "displayname": "A"})
	ts.ok("PUT", v1+"/members/"+string(alice)+"/profile/displayname", alice, map[string]string{"displayname": "Old nick"})
	ts.ok("PUT", v1+"/members/"+string(bob), root, map[string]any{"membership": "join", "displayname": "B"})
	// Bob joined after alice's nickname: under "joined" he sees from his join on.
	h := ts.ok("GET", v1+"/history?dir=f", bob, nil).json(t)
	if c := h["chunk"].([]any); len(c) != 1 || c[0].(map[string]any)["user_id"] != string(bob) {
		t.Fatalf("bob sees %v; want only his own join", h)
	}
	// Made a moderator, he sees everything.
	ts.ok("PUT", v1+"/power_levels", root, map[string]any{"users": map[string]int{string(bob): 50}, "kick": 50})
	h = ts.ok("GET", v1+"/history?dir=f", bob, nil).json(t)
	if c := h["chunk"].([]any); len(c) != 3 {
		t.Fatalf("moderator bob sees %d entries, want 3", len(c))
	}
	// And reads alice's history, limited to his room.
	if u := ts.ok("GET", "/_profilestore/v1/users/"+string(alice)+"/history", bob, nil).json(t); len(u["chunk"].([]any)) != 2 {
		t.Fatalf("moderator reading alice's history: %v", u)
	}
}

func TestRoomHistoryKindFilter(t *testing.T) {
	ts := newTestService(t)
	ts.moderatedRoom()
	chunk := ts.ok("GET", v1+"/history?kind=leave", bob, nil).json(t)["chunk"].([]any)
	if len(chunk) != 1 || chunk[0].(map[string]any)["user_id"] != string(carol) {
		t.Errorf("leaves: %v", chunk)
	}
	if r := ts.do("GET", v1+"/history?kind=rename", ts.tokens[bob], nil); r.Status != 400 || r.errcode(t) != "M_INVALID_PARAM" {
		t.Errorf("unknown kind: %d %s", r.Status, r.Body)
	}
}

// TestHistoryTokensSurviveRestart pages a room's history, restarts the
// server on the same data directory (views reopened from the view store),
// and continues from the token: the same token gives the same page.
func TestHistoryTokensSurviveRestart(t *testing.T) {
	dir := t.TempDir()
	ts := newTestServiceIn(t, dir)
	ts.ok("PUT", v1+"/members/"+string(alice), admin, map[string]string{"membership": "join"})
	for i := range 6 {
		ts.setName(alice, fmt.Sprintf("Alice %d", i))
	}
	page := func(ts *testService, from string) map[string]any {
		q := "?dir=f&limit=3"
		if from != "" {
			q += "&from=" + from
		}
		return ts.ok("GET", v1+"/history"+q, admin, nil).json(t)
	}
	first := page(ts, "")
	token, _ := first["end"].(string)
	if token == "" {
		t.Fatalf("the first page has no end token: %v", first)
	}
	before := page(ts, token)
	ts.Stop()

	ts2 := newTestServiceIn(t, dir)
	after := page(ts2, token)
	if fmt.Sprint(after["chunk"]) != fmt.Sprint(before["chunk"]) || len(after["chunk"].([]any)) == 0 {
		t.Fatalf("the page after the token differs across the restart:\nbefore %v\nafter  %v", before["chunk"], after["chunk"])
	}
}
