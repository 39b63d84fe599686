package appservice_test

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/profilestore/profilestore/domain"
)

// roomState folds the log's events of room into the room decisions see.
func (ms *mirrorService) roomState(room string) *domain.Room {
	ms.t.Helper()
	var r domain.Room
	for _, e := range ms.events() {
		if string(e.Room) == room {
			e := e
			r.Apply(&e)
		}
	}
	return &r
}

// describe names a room event as the table below does.
func describe(e domain.Event) string {
	switch e.Type {
	case domain.TypeMemberJoined:
		return "joined"
	case domain.TypeMemberInvited:
		return "invited by " + string(e.By)
	case domain.TypeMemberLeft:
		s := "left:" + e.Membership
		if e.By != "" {
			s += " by " + string(e.By)
		}
		return s
	case domain.TypeMemberProfileSet:
		return "override " + e.Key + "=" + string(e.Value)
	case domain.TypeMemberProfileGone:
		return "override " + e.Key + " cleared"
	}
	return e.Type
}

// TestMirrorMembershipTable sends, for every transition of Matrix's
// m.room.member table that a homeserver can send, the member event a
// homeserver sends, and checks what profilestore records and the member's
// state after it. Each row starts from a fresh store.
func TestMirrorMembershipTable(t *testing.T) {
	const bob, mod = "@bob:localhost", "@mod:localhost"
	type step struct{ sender, membership, name string }
	rows := []struct {
		name  string
		setup []step
		event step
		want  string // what is appended, "" for nothing
		state string
	}{
		{"invite/invite: no change", []step{{mod, "invite", "Bob"}}, step{mod, "invite", "Bob"}, "", "invite"},
		{"invite/join: joined", []step{{mod, "invite", "Bob"}}, step{bob, "join", "Bob"}, "joined", "join"},
		{"invite/leave by self: rejected", []step{{mod, "invite", "Bob"}}, step{bob, "leave", ""}, "left:leave", "leave"},
		{"invite/leave by other: revoked", []step{{mod, "invite", "Bob"}}, step{mod, "leave", ""}, "left:kick by " + mod, "leave"},
		{"invite/ban", []step{{mod, "invite", "Bob"}}, step{mod, "ban", ""}, "left:ban by " + mod, "ban"},
		{"invite/knock: re-knocking", []step{{mod, "invite", "Bob"}}, step{bob, "knock", "Bob"}, "left:leave", "leave"},
		{"join/join: per-room name", []step{{bob, "join", "Bob"}}, step{bob, "join", "Captain Bob"}, `override displayname="Captain Bob"`, "join"},
		{"join/join: same names", []step{{bob, "join", "Bob"}}, step{bob, "join", "Bob"}, "", "join"},
		{"join/leave by self: left", []step{{bob, "join", "Bob"}}, step{bob, "leave", ""}, "left:leave", "leave"},
		{"join/leave by other: kicked", []step{{bob, "join", "Bob"}}, step{mod, "leave", ""}, "left:kick by " + mod, "leave"},
		{"join/ban: kicked and banned", []step{{bob, "join", "Bob"}}, step{mod, "ban", ""}, "left:ban by " + mod, "ban"},
		{"leave/invite: invited", []step{{bob, "join", "Bob"}, {bob, "leave", ""}}, step{mod, "invite", "Bob"}, "invited by " + mod, "invite"},
		{"leave/join: joined", []step{{bob, "join", "Bob"}, {bob, "leave", ""}}, step{bob, "join", "Bob"}, "joined", "join"},
		{"leave/leave: no change", []step{{bob, "join", "Bob"}, {bob, "leave", ""}}, step{bob, "leave", ""}, "", "leave"},
		{"leave/ban: banned", []step{{bob, "join", "Bob"}, {bob, "leave", ""}}, step{mod, "ban", ""}, "left:ban by " + mod, "ban"},
		{"leave/knock: knocking", []step{{bob, "join", "Bob"}, {bob, "leave", ""}}, step{bob, "knock", "Bob"}, "", "leave"},
		{"never seen/ban", nil, step{mod, "ban", ""}, "left:ban by " + mod, "ban"},
		{"ban/leave by other: unbanned", []step{{mod, "ban", ""}}, step{mod, "leave", ""}, "left:leave by " + mod, "leave"},
		{"ban/ban: no change", []step{{mod, "ban", ""}}, step{mod, "ban", ""}, "", "ban"},
		{"knock/invite: knock accepted", []step{{bob, "knock", "Bob"}}, step{mod, "invite", "Bob"}, "invited by " + mod, "invite"},
		{"knock/leave by self: retracted", []step{{bob, "knock", "Bob"}}, step{bob, "leave", ""}, "", "leave"},
		{"knock/leave by other: denied", []step{{bob, "knock", "Bob"}}, step{mod, "leave", ""}, "", "leave"},
		{"knock/ban", []step{{bob, "knock", "Bob"}}, step{mod, "ban", ""}, "left:ban by " + mod, "ban"},
		// profilestore missed the unban (it was not registered yet): the
		// homeserver's join is followed, not refused as "banned".
		{"ban (out of date)/join: followed", []step{{mod, "ban", ""}}, step{bob, "join", "Bob"}, "joined", "join"},
	}
	for _, row := range rows {
		t.Run(row.name, func(t *testing.T) {
			ms := newMirrorService(t)
			ms.hs.set(bob, "displayname", "Bob")
			ts := int64(1)
			for i, s := range row.setup {
				ms.send(fmt.Sprint("setup", i), member(roomA, bob, s.sender, s.membership, s.name, ts))
				ts++
			}
			n := len(ms.events())
			ms.send("event", member(roomA, bob, row.event.sender, row.event.membership, row.event.name, ts))
			var got []string
			for _, e := range ms.events()[n:] {
				if e.Type != domain.TypeFieldSet {
					got = append(got, describe(e))
				}
			}
			if strings.Join(got, "; ") != row.want {
				t.Errorf("appended %q, want %q", got, row.want)
			}
			if st := ms.roomState(roomA).Membership(bob); st != row.state {
				t.Errorf("state %s, want %s", st, row.state)
			}
		})
	}
}

// TestMirrorUnbanThenRejoin is the Dendrite v0.15.2 report: ban, unban
// (leave by the moderator), rejoin. The rejoin must be recorded and the
// member shown again.
func TestMirrorUnbanThenRejoin(t *testing.T) {
	const bob, mod = "@bob:localhost", "@mod:localhost"
	ms := newMirrorService(t)
	ms.hs.set(bob, "displayname", "Bob")
	ms.send("1", member(roomA, bob, bob, "join", "Bob", 1))
	ms.send("2", member(roomA, bob, mod, "ban", "", 2))
	ms.send("3", member(roomA, bob, mod, "leave", "", 3))
	ms.send("4", member(roomA, bob, bob, "join", "Bob", 4))
	var got []string
	for _, e := range ms.events() {
		if e.Room == roomA {
			got = append(got, describe(e))
		}
	}
	want := "joined; left:ban by @mod:localhost; left:leave by @mod:localhost; joined"
	if strings.Join(got, "; ") != want {
		t.Fatalf("room events %q, want %q", got, want)
	}
	if st := ms.roomState(roomA).Membership(bob); st != "join" {
		t.Fatalf("bob is %s after the rejoin, want join", st)
	}
}

// synapseFixture is a Synapse-shaped session with unsigned.prev_content.
const synapseFixture = "testdata/synapse-shaped-transactions.json"

func loadSession(t *testing.T, path string) map[string]json.RawMessage {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Transactions []capturedTxn `json:"transactions"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	out := map[string]json.RawMessage{}
	for _, txn := range doc.Transactions {
		out[txn.TxnID] = txn.Body
	}
	return out
}

// TestSynapsePrevContent: with unsigned.prev_content the mirror knows which
// names an event changed, so a per-room avatar next to a per-room nickname
// is no rename even when the homeserver cannot be asked, and an event that
// changes no name asks the homeserver nothing.
func TestSynapsePrevContent(t *testing.T) {
	const alice, carol = "@alice:localhost", "@carol:localhost"
	txns := loadSession(t, synapseFixture)
	ms := newMirrorService(t)
	send := func(id string) {
		t.Helper()
		if status, code := ms.put(id, txns[id], ms.reg.HSToken); status != 200 {
			t.Fatalf("transaction %s: %d %s", id, status, code)
		}
	}
	ms.hs.set(alice, "displayname", "Alice")
	ms.hs.set(carol, "displayname", "Carol")
	send("11")
	send("12")
	displaynameSets := func() int {
		n := 0
		for _, e := range ofType(ms.events(), domain.TypeFieldSet) {
			if e.User == alice && e.Key == domain.KeyDisplayName {
				n++
			}
		}
		return n
	}
	if n := displaynameSets(); n != 1 {
		t.Fatalf("%d global displayname changes after the nickname, want 1 (the first join)", n)
	}

	// 13, with the homeserver down: without prev_content, "Captain Alice"
	// differing from the global "Alice" would be taken for a rename.
	ms.hs.mu.Lock()
	ms.hs.down = true
	ms.hs.mu.Unlock()
	ms.restart() // no cached answer from step 12
	send("13")
	if n := displaynameSets(); n != 1 {
		t.Fatalf("a per-room avatar next to a nickname became a global rename (%d displayname changes)", n)
	}
	if dn := string(ms.roomState(roomSynA).Members[alice].Overrides[domain.KeyDisplayName]); dn != `"Captain Alice"` {
		t.Fatalf("room nickname = %s, want it kept", dn)
	}

	// 14, a fresh process (no cached answers), homeserver up: the names
	// did not change, so nothing is asked and nothing appended.
	ms.hs.mu.Lock()
	ms.hs.down, ms.hs.calls = false, 0
	ms.hs.mu.Unlock()
	ms.hs.set(alice, "avatar_url", "mxc://localhost/room-a-avatar") // what step 13 recorded globally
	ms.restart()
	n := len(ms.events())
	send("14")
	ms.hs.mu.Lock()
	calls := ms.hs.calls
	ms.hs.mu.Unlock()
	if calls != 0 || len(ms.events()) != n {
		t.Fatalf("an event that changed no name asked the homeserver %d times and appended %d events", calls, len(ms.events())-n)
	}

	// 15: ban, unban, rejoin.
	send("15")
	var got []string
	for _, e := range ms.events() {
		if e.User == carol && e.Room == roomSynA {
			got = append(got, describe(e))
		}
	}
	want := "joined; left:ban by @mod:localhost; left:leave by @mod:localhost; joined"
	if strings.Join(got, "; ") != want {
		t.Fatalf("carol: %q, want %q", got, want)
	}
}

const roomSynA = "!kEPsFvDVWTdkXzZpAv:localhost"

// TestDendriteModerationReplay replays a real Dendrite v0.15.2 session with
// invites, kicks, bans, unbans, rejoins, nicknames, visibility and
// power-level changes, knocks, and a batch Dendrite held while profilestore
// was stopped (scripts/e2e-homeserver.sh), and checks every room's
// membership history against the homeserver's own events read by Matrix's
// m.room.member table, and the state each user ends in.
func TestDendriteModerationReplay(t *testing.T) {
	raw, err := os.ReadFile("testdata/dendrite-v0.15.2-moderation.json")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Transactions []capturedTxn `json:"transactions"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	nicknames := map[string]bool{"Captain Alice": true, "Bobby in R3": true, "Bobby again": true} // the session's per-room names
	ms := newMirrorService(t)
	type member struct {
		Type     string `json:"type"`
		RoomID   string `json:"room_id"`
		Sender   string `json:"sender"`
		StateKey string `json:"state_key"`
		Content  struct {
			Membership  string `json:"membership"`
			DisplayName string `json:"displayname"`
			AvatarURL   string `json:"avatar_url"`
		} `json:"content"`
	}
	// want: per room, "user kind" in the homeserver's order, by the table.
	want := map[string][]string{}
	state := map[[2]string]string{}
	for _, txn := range doc.Transactions {
		var body struct {
			Events []member `json:"events"`
		}
		if err := json.Unmarshal(txn.Body, &body); err != nil {
			t.Fatal(err)
		}
		for _, ev := range body.Events {
			if ev.Type != "m.room.member" {
				continue
			}
			if ev.Content.Membership == "join" && !nicknames[ev.Content.DisplayName] {
				ms.hs.set(ev.StateKey, "displayname", ev.Content.DisplayName)
				ms.hs.set(ev.StateKey, "avatar_url", ev.Content.AvatarURL)
			}
			k := [2]string{ev.RoomID, ev.StateKey}
			prev, m := state[k], ev.Content.Membership
			if prev == "" {
				prev = "leave"
			}
			kind := ""
			switch {
			case m == "knock" && prev == "invite":
				kind, m = "leave", "leave" // a knock ends an invite; knocks are not recorded
			case m == prev || m == "knock":
			case m == "leave" && prev == "ban":
				kind = "unban"
			case m == "leave" && ev.Sender != ev.StateKey:
				kind = "kick"
			default:
				kind = m
			}
			if m != "knock" {
				state[k] = m
			}
			if kind != "" {
				want[ev.RoomID] = append(want[ev.RoomID], ev.StateKey+" "+kind)
			}
		}
		if status, code := ms.put(txn.TxnID, txn.Body, ms.reg.HSToken); status != 200 {
			t.Fatalf("transaction %s: %d %s", txn.TxnID, status, code)
		}
	}
	if len(want) != 4 {
		t.Fatalf("the fixture has %d rooms with members, want 4", len(want))
	}
	got := map[string][]string{}
	rooms := map[string]*domain.Room{}
	for _, e := range ms.events() {
		if e.Room == "" {
			continue
		}
		r := rooms[string(e.Room)]
		if r == nil {
			r = &domain.Room{}
			rooms[string(e.Room)] = r
		}
		kind := ""
		switch e.Type {
		case domain.TypeMemberJoined:
			kind = "join"
		case domain.TypeMemberInvited:
			kind = "invite"
		case domain.TypeMemberLeft:
			kind = e.Membership
			if kind == "leave" && r.Membership(e.User) == "ban" {
				kind = "unban"
			}
		}
		e := e
		r.Apply(&e)
		if kind != "" {
			got[string(e.Room)] = append(got[string(e.Room)], string(e.User)+" "+kind)
		}
	}
	for room, w := range want {
		if strings.Join(got[room], "\n") != strings.Join(w, "\n") {
			t.Errorf("room %s: membership history\n%s\nwant (the homeserver's)\n%s", room, strings.Join(got[room], "\n"), strings.Join(w, "\n"))
		}
		for k, st := range state {
			if k[0] == room && rooms[room].Membership(domain.UserID(k[1])) != st {
				t.Errorf("room %s: %s is %s, the homeserver says %s", room, k[1], rooms[room].Membership(domain.UserID(k[1])), st)
			}
		}
	}
	n := 0
	for _, w := range want {
		n += len(w)
	}
	if n != 42 { // 3 in R1, 3 in R2, 33 in R3, 3 in the moderation room
		t.Fatalf("the fixture's rooms have %d membership changes, want 42", n)
	}
	// The whole session again after a restart: every transaction is known.
	head := ms.head()
	ms.restart()
	for _, txn := range doc.Transactions {
		if status, code := ms.put(txn.TxnID, txn.Body, ms.reg.HSToken); status != 200 {
			t.Fatalf("transaction %s again: %d %s", txn.TxnID, status, code)
		}
	}
	if ms.head() != head {
		t.Fatalf("replaying the session moved the log from %v to %v", head, ms.head())
	}
}
