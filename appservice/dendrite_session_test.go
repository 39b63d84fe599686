package appservice_test

import (
	"encoding/json"
	"os"
	"testing"

	"github.com/profilestore/profilestore/domain"
)

// sessionFixture holds every transaction a real Dendrite v0.15.2 sent during
// scripts/e2e-homeserver.sh (docs/APPSERVICE.md, "Run against Dendrite").
const sessionFixture = "testdata/dendrite-v0.15.2-session.json"

type capturedTxn struct {
	TxnID string          `json:"txn_id"`
	Body  json.RawMessage `json:"body"`
}

// TestDendriteSessionReplay replays a whole real session: room creation
// (Dendrite gives every createRoom event one origin_server_ts), joins, a
// global rename arriving as one transaction per room, a per-room nickname, a
// second rename that overwrites the nickname, an avatar and a leave. The
// fake homeserver answers the global profile as Dendrite did at that moment.
func TestDendriteSessionReplay(t *testing.T) {
	raw, err := os.ReadFile(sessionFixture)
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Transactions []capturedTxn `json:"transactions"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	if len(doc.Transactions) != 22 {
		t.Fatalf("fixture has %d transactions, want 22", len(doc.Transactions))
	}
	const (
		alice = "@alice:localhost"
		bob   = "@bob:localhost"
		nick  = "Captain Alice" // the only per-room name of the session
	)
	ms := newMirrorService(t)
	replay := func() {
		for _, txn := range doc.Transactions {
			var body struct {
				Events []struct {
					Type     string `json:"type"`
					StateKey string `json:"state_key"`
					Content  struct {
						DisplayName string `json:"displayname"`
						AvatarURL   string `json:"avatar_url"`
						Membership  string `json:"membership"`
					} `json:"content"`
				} `json:"events"`
			}
			if err := json.Unmarshal(txn.Body, &body); err != nil {
				t.Fatal(err)
			}
			// The homeserver's global profile when Dendrite sent the event.
			for _, ev := range body.Events {
				if ev.Type == "m.room.member" && ev.Content.Membership == "join" && ev.Content.DisplayName != nick {
					ms.hs.set(ev.StateKey, "displayname", ev.Content.DisplayName)
					ms.hs.set(ev.StateKey, "avatar_url", ev.Content.AvatarURL)
				}
			}
			if status, code := ms.put(txn.TxnID, txn.Body, ms.reg.HSToken); status != 200 {
				t.Fatalf("transaction %s: %d %s", txn.TxnID, status, code)
			}
		}
	}
	replay()

	es := ms.events()
	var names []string
	for _, e := range ofType(es, domain.TypeFieldSet) {
		if e.User == alice {
			names = append(names, e.Key+"="+string(e.Value))
		}
	}
	want := []string{`displayname="Alice"`, `displayname="Alice Renamed"`, `displayname="Alice Two"`, `avatar_url="mxc://localhost/alice-avatar"`}
	if len(names) != len(want) {
		t.Fatalf("alice's global changes = %v, want %v (each rename once)", names, want)
	}
	for i := range want {
		if names[i] != want[i] {
			t.Fatalf("alice's global changes = %v, want %v", names, want)
		}
	}
	count := func(typ string, user domain.UserID) int {
		n := 0
		for _, e := range ofType(es, typ) {
			if e.User == user {
				n++
			}
		}
		return n
	}
	checks := []struct {
		what      string
		got, want int
	}{
		{"bob's global changes", count(domain.TypeFieldSet, bob), 1},
		{"joins of alice", count(domain.TypeMemberJoined, alice), 2},
		{"joins of bob", count(domain.TypeMemberJoined, bob), 2},
		{"leaves of bob", count(domain.TypeMemberLeft, bob), 1},
		{"per-room names of alice", count(domain.TypeMemberProfileSet, alice), 1},
		{"cleared per-room names of alice", count(domain.TypeMemberProfileGone, alice), 1},
		// public_chat rooms say "shared", profilestore's default: nothing to record.
		{"history visibility settings", len(ofType(es, domain.TypeHistoryVisibility)), 0},
		{"power level settings", len(ofType(es, domain.TypePowerLevels)), 2},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s: %d, want %d", c.what, c.got, c.want)
		}
	}
	set := ofType(es, domain.TypeMemberProfileSet)
	if len(set) == 1 && string(set[0].Value) != `"`+nick+`"` {
		t.Errorf("per-room name = %s, want %q", set[0].Value, nick)
	}

	// The whole session again, after a restart: every transaction is known.
	head := ms.head()
	ms.restart()
	replay()
	if ms.head() != head {
		t.Fatalf("replaying the session moved the log from %v to %v", head, ms.head())
	}
}
