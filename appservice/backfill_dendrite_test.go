package appservice_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/profilestore/profilestore/appservice"
	"github.com/profilestore/profilestore/domain"
	"github.com/profilestore/profilestore/projections"
)

// dendriteFixture is what scripts/e2e-backfill.sh captured from Dendrite
// v0.15.2: each user's joined rooms, each room's timeline as the backfill's
// filter returns it (read as alice, joined everywhere from the start), and
// the room's member history by Matrix's m.room.member table.
type dendriteFixture struct {
	ServerName  string `json:"server_name"`
	JoinedRooms map[string]struct {
		JoinedRooms []string `json:"joined_rooms"`
	} `json:"joined_rooms"`
	Timelines map[string][]json.RawMessage `json:"timelines"`
	Expected  map[string][]string          `json:"expected"`
}

// TestBackfillReplaysDendrite replays a real Dendrite's answers, paged as
// Dendrite pages them (no page without from; t0_0 for the start; an empty
// end after the last event), into an empty store, and compares every
// room's history with the homeserver's timeline: the same memberships and
// name changes, in order, with the same old and new values.
func TestBackfillReplaysDendrite(t *testing.T) {
	raw, err := os.ReadFile("testdata/dendrite-v0.15.2-backfill.json")
	if err != nil {
		t.Fatal(err)
	}
	var fx dendriteFixture
	if err := json.Unmarshal(raw, &fx); err != nil {
		t.Fatal(err)
	}
	ms := newMirrorService(t)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+ms.reg.ASToken {
			matrixError(w, 401, "M_UNKNOWN_TOKEN", "Unknown token")
			return
		}
		user := r.URL.Query().Get("user_id")
		if r.URL.Path == "/_matrix/client/v3/joined_rooms" {
			j, ok := fx.JoinedRooms[user]
			if !ok {
				matrixError(w, 403, "M_FORBIDDEN", "no such user")
				return
			}
			_ = json.NewEncoder(w).Encode(map[string]any{"joined_rooms": j.JoinedRooms})
			return
		}
		room := strings.TrimSuffix(strings.TrimPrefix(r.URL.Path, "/_matrix/client/v3/rooms/"), "/messages")
		timeline, ok := fx.Timelines[room]
		if !ok || user != "@alice:localhost" {
			matrixError(w, 403, "M_FORBIDDEN", "not in the room")
			return
		}
		from := r.URL.Query().Get("from")
		if from == "" {
			matrixError(w, 400, "M_INVALID_PARAM", "Invalid from parameter: malformed sync token")
			return
		}
		i, _ := strconv.Atoi(strings.TrimPrefix(strings.TrimPrefix(from, "t0_0"), "i"))
		limit, _ := strconv.Atoi(r.URL.Query().Get("limit"))
		end := min(i+limit, len(timeline))
		next := "i" + strconv.Itoa(end)
		if i >= len(timeline) {
			next = ""
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"chunk": timeline[min(i, end):end], "start": from, "end": next})
	}))
	defer srv.Close()

	cp, err := appservice.OpenBackfillCheckpoint(filepath.Join(t.TempDir(), "backfill.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer cp.Close()
	b := appservice.NewBackfill(appservice.BackfillOptions{Registration: ms.reg, Profiles: ms.app.Profiles, Rooms: ms.app.Rooms, PageSize: 4,
		Source:     &appservice.ClientHistory{Client: appservice.NewHomeserverClient(srv.URL, ms.reg.ASToken, 0, nil), Users: []domain.UserID{"@alice:localhost", "@bob:localhost", "@carol:localhost"}},
		Checkpoint: cp, Logger: quietLogger()})
	rep, err := b.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if rep.Done != len(fx.Timelines) || len(rep.Unreadable)+len(rep.Incomplete)+len(rep.Users) != 0 {
		t.Fatalf("report: %+v", rep)
	}
	settleViews(t, ms)
	for room, want := range fx.Expected {
		t.Run(room, func(t *testing.T) {
			if got := membershipLines(t, ms.app.RoomView, domain.RoomID(room)); !reflect.DeepEqual(got, want) {
				t.Errorf("history:\n got %q\nwant %q", got, want)
			}
		})
	}
	// Each global rename is one change in the user's stream, however many
	// rooms showed it: alice's three names, bob's two, carol's and dave's one.
	counts := map[domain.UserID]int{}
	for _, e := range ms.events() {
		if e.Type == domain.TypeFieldSet && e.Key == domain.KeyDisplayName {
			counts[e.User]++
		}
	}
	if want := map[domain.UserID]int{"@alice:localhost": 3, "@bob:localhost": 2, "@carol:localhost": 1, "@dave:localhost": 1}; !reflect.DeepEqual(counts, want) {
		t.Errorf("global displayname changes per user = %v, want %v", counts, want)
	}
}

// membershipLines renders a room's history as scripts/e2e-backfill.sh
// compares it: user<TAB>kind<TAB>old->new, names for joins, invites and
// name changes (a global rename, a per-room one, an override cleared).
func membershipLines(t *testing.T, v *projections.Rooms, room domain.RoomID) []string {
	t.Helper()
	page, err := v.RoomHistory(room, projections.HistoryQuery{Viewer: projections.Viewer{Admin: true}, Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	s := func(p *string) string {
		if p == nil {
			return ""
		}
		return *p
	}
	var out []string
	for _, e := range page.Entries {
		if e.Field == domain.KeyAvatarURL {
			continue
		}
		var k string
		switch e.Kind {
		case projections.KindGlobalRename, projections.KindRoomRename, projections.KindOverrideCleared:
			k = fmt.Sprintf("name\t%s->%s", s(e.Old.DisplayName), s(e.New.DisplayName))
		case projections.KindJoin, projections.KindInvite:
			k = fmt.Sprintf("%s\t->%s", e.Kind, s(e.New.DisplayName))
		default:
			k = e.Kind + "\t"
		}
		out = append(out, string(e.User)+"\t"+k)
	}
	return out
}
