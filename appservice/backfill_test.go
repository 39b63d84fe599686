package appservice_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/profilestore/profilestore/appservice"
	"github.com/profilestore/profilestore/domain"
	"github.com/profilestore/profilestore/eventstore"
	"github.com/profilestore/profilestore/projections"
)

// historyServer answers the client-server API calls a backfill makes, in
// the shapes Dendrite v0.15.2 answers them (GET /joined_rooms; GET
// /rooms/{roomId}/messages with dir=f, a filter, from and limit: no page
// without from, which Dendrite refuses, t0_0 for the start, an end token on
// every page and an empty last page with an empty one), as the appservice
// with user_id=.
type historyServer struct {
	*httptest.Server
	t       *testing.T
	asToken string

	mu        sync.Mutex
	timelines map[string][]map[string]any // room -> events, oldest first
	joined    map[string][]string         // user -> rooms
	readers   map[string]string           // room -> the user allowed to read it
	// limited answers the first n /messages calls with 429.
	limited  int
	messages int
	// onMessages runs before each /messages answer (outside the lock).
	onMessages func(n int)
}

func newHistoryServer(t *testing.T, asToken string) *historyServer {
	hs := &historyServer{t: t, asToken: asToken, timelines: map[string][]map[string]any{}, joined: map[string][]string{}, readers: map[string]string{}}
	hs.Server = httptest.NewServer(http.HandlerFunc(hs.serve))
	t.Cleanup(hs.Close)
	return hs
}

func matrixError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"errcode": code, "error": msg})
}

func (hs *historyServer) serve(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Authorization") != "Bearer "+hs.asToken {
		matrixError(w, 401, "M_UNKNOWN_TOKEN", "Unknown token")
		return
	}
	user := r.URL.Query().Get("user_id")
	switch {
	case r.URL.Path == "/_matrix/client/v3/joined_rooms":
		hs.mu.Lock()
		rooms, ok := hs.joined[user]
		hs.mu.Unlock()
		if !ok {
			matrixError(w, 403, "M_EXCLUSIVE", "Application service cannot masquerade as this user")
			return
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"joined_rooms": rooms})
	case strings.HasPrefix(r.URL.Path, "/_matrix/client/v3/rooms/") && strings.HasSuffix(r.URL.Path, "/messages"):
		room := strings.TrimSuffix(strings.TrimPrefix(r.URL.Path, "/_matrix/client/v3/rooms/"), "/messages")
		hs.mu.Lock()
		hs.messages++
		n := hs.messages
		limited := hs.limited > 0
		if limited {
			hs.limited--
		}
		hook := hs.onMessages
		hs.mu.Unlock()
		if limited {
			w.WriteHeader(http.StatusTooManyRequests)
			_, _ = w.Write([]byte(`{"errcode":"M_LIMIT_EXCEEDED","error":"Too Many Requests","retry_after_ms":20}`))
			return
		}
		if hook != nil {
			hook(n)
		}
		hs.messagesPage(w, r, room, user)
	default:
		matrixError(w, 404, "M_UNRECOGNIZED", "Unrecognized request")
	}
}

func (hs *historyServer) messagesPage(w http.ResponseWriter, r *http.Request, room, user string) {
	q := r.URL.Query()
	hs.mu.Lock()
	defer hs.mu.Unlock()
	if hs.readers[room] != user {
		matrixError(w, 403, "M_FORBIDDEN", fmt.Sprintf("User %s is not in room %s", user, room))
		return
	}
	if q.Get("dir") != "f" {
		matrixError(w, 400, "M_MISSING_PARAM", "Bad or missing dir query parameter (should be either 'b' or 'f')")
		return
	}
	var filter struct {
		Types []string `json:"types"`
	}
	if err := json.Unmarshal([]byte(q.Get("filter")), &filter); err != nil || len(filter.Types) == 0 {
		hs.t.Errorf("a /messages call without a types filter: %q", q.Get("filter"))
	}
	limit, _ := strconv.Atoi(q.Get("limit"))
	from := 0
	switch f := q.Get("from"); f {
	case "":
		// Dendrite v0.15.2: its token for the start prints as "".
		matrixError(w, 400, "M_INVALID_PARAM", "Invalid from parameter: malformed sync token")
		return
	case "t0_0": // the topology token before the first event
	default:
		from, _ = strconv.Atoi(strings.TrimPrefix(f, "t"))
	}
	var chunk []map[string]any
	i := from
	for ; i < len(hs.timelines[room]) && len(chunk) < limit; i++ {
		ev := hs.timelines[room][i]
		for _, t := range filter.Types {
			if ev["type"] == t {
				chunk = append(chunk, ev)
				break
			}
		}
	}
	end := "t" + strconv.Itoa(i)
	if len(chunk) == 0 {
		end = "" // Dendrite's zero topology token after the last event
	}
	_ = json.NewEncoder(w).Encode(map[string]any{"chunk": chunk, "start": "t" + strconv.Itoa(from), "end": end})
}

// timeline builds a room's history.
type timeline struct {
	room string
	n    int
	evs  []map[string]any
}

func (tl *timeline) add(typ, sender string, stateKey *string, ts time.Time, content map[string]any) map[string]any {
	tl.n++
	ev := map[string]any{"type": typ, "event_id": fmt.Sprintf("$%s-%d", strings.Trim(tl.room, "!:"), tl.n), "room_id": tl.room,
		"sender": sender, "origin_server_ts": ts.UnixMilli(), "content": content}
	if stateKey != nil {
		ev["state_key"] = *stateKey
	}
	tl.evs = append(tl.evs, ev)
	return ev
}

func (tl *timeline) member(sender, user, membership, name string, ts time.Time) map[string]any {
	c := map[string]any{"membership": membership}
	if name != "" {
		c["displayname"] = name
	}
	return tl.add("m.room.member", sender, &user, ts, c)
}

func (tl *timeline) state(typ, sender string, ts time.Time, content map[string]any) {
	empty := ""
	tl.add(typ, sender, &empty, ts, content)
}

func raw(ev map[string]any) string {
	b, _ := json.Marshal(ev)
	return string(b)
}

const (
	bfAlice = "@alice:localhost"
	bfBob   = "@bob:localhost"
	bfRemo  = "@remo:elsewhere.example"
	bfSolo  = "@solo:localhost"
)

// historyLines renders a room's history (as an admin) as "user kind old->new".
func historyLines(t *testing.T, v *projections.Rooms, room domain.RoomID) []string {
	t.Helper()
	var out []string
	q := projections.HistoryQuery{Viewer: projections.Viewer{Admin: true}, Limit: 1000}
	page, err := v.RoomHistory(room, q)
	if err != nil {
		t.Fatal(err)
	}
	s := func(p *string) string {
		if p == nil {
			return ""
		}
		return *p
	}
	for _, e := range page.Entries {
		name := strings.SplitN(strings.TrimPrefix(string(e.User), "@"), ":", 2)[0]
		out = append(out, fmt.Sprintf("%s %s %s->%s", name, e.Kind, s(e.Old.DisplayName), s(e.New.DisplayName)))
	}
	return out
}

// memberLines renders a Members answer; call as memberLines(t)(v.Members(...)).
func memberLines(t *testing.T) func([]projections.Member, eventstore.Position, error) []string {
	return func(ms []projections.Member, _ eventstore.Position, err error) []string {
		t.Helper()
		return renderMemberLines(t, ms, err)
	}
}

func renderMemberLines(t *testing.T, ms []projections.Member, err error) []string {
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
		out = append(out, string(m.User)+"="+name)
	}
	return out
}

// settleViews waits until the views have applied every profile and room
// event (they follow those streams, not the transaction ledger).
func settleViews(t *testing.T, ms *mirrorService) {
	t.Helper()
	var last eventstore.Position
	for _, e := range ms.events() {
		last = e.Position
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := ms.app.Runner.WaitFor(ctx, last); err != nil {
		t.Fatal(err)
	}
}

func TestBackfillThroughTheClientAPIAfterMirrorMode(t *testing.T) {
	ms := newMirrorService(t)
	ctx := context.Background()
	hist := newHistoryServer(t, ms.reg.ASToken)
	past := time.Now().Add(-100 * 24 * time.Hour).Truncate(time.Second)
	at := func(s int) time.Time { return past.Add(time.Duration(s) * time.Second) }
	install := time.Now().Add(-time.Hour).Truncate(time.Millisecond)

	r1 := &timeline{room: "!r1:localhost"}
	r1.state("m.room.create", bfAlice, at(0), map[string]any{"creator": bfAlice})
	r1.member(bfAlice, bfAlice, "join", "Alice", at(1))
	r1.state("m.room.power_levels", bfAlice, at(2), map[string]any{"users": map[string]any{bfAlice: 100}, "kick": 50})
	r1.state("m.room.history_visibility", bfAlice, at(3), map[string]any{"history_visibility": "shared"})
	r1.member(bfBob, bfBob, "join", "Bob", at(4))
	r1.add("m.room.message", bfBob, nil, at(5), map[string]any{"msgtype": "m.text", "body": "hi"})
	r1.member(bfAlice, bfAlice, "join", "Alice Two", at(10)) // a global rename: also in !r2 two seconds later
	r1.member(bfAlice, bfAlice, "join", "Captain", at(20))   // a per-room name: in !r1 only
	r1.member(bfRemo, bfRemo, "join", "Remo", at(30))
	r1.member(bfRemo, bfRemo, "join", "Remo Two", at(31))
	r1.member(bfAlice, bfBob, "leave", "", at(40)) // a kick
	r1.member(bfBob, bfBob, "join", "Bob", at(41))
	r1.member(bfAlice, bfBob, "ban", "", at(50))
	r1.member(bfAlice, bfBob, "leave", "", at(51)) // an unban
	r1.state("m.room.history_visibility", bfAlice, at(60), map[string]any{"history_visibility": "joined"})
	liveR1 := r1.member(bfAlice, bfAlice, "join", "Alice Three", install) // mirror mode's first event here

	r2 := &timeline{room: "!r2:localhost"}
	r2.state("m.room.create", bfAlice, at(0), map[string]any{"creator": bfAlice})
	r2.member(bfAlice, bfAlice, "join", "Alice", at(1))
	r2.member(bfSolo, bfSolo, "join", "Solo", at(5))
	r2.member(bfAlice, bfAlice, "join", "Alice Two", at(12))
	r2.member(bfSolo, bfSolo, "join", "Solo Two", at(15)) // a rename of a user in this room only
	liveR2 := r2.member(bfAlice, bfAlice, "join", "Alice Three", install.Add(time.Second))

	// A room whose history before alice's join is hidden from her.
	r5 := &timeline{room: "!r5:localhost"}
	r5.member(bfBob, bfAlice, "invite", "Alice", at(100))
	r5.member(bfAlice, bfAlice, "join", "Alice", at(101))

	// Created while profilestore already ran: mirror mode has all of it.
	r4 := &timeline{room: "!r4:localhost"}
	created := time.Now().Add(-time.Minute).Truncate(time.Millisecond)
	r4.state("m.room.create", bfAlice, created, map[string]any{"creator": bfAlice})
	liveR4 := r4.member(bfAlice, bfAlice, "join", "Alice Three", created)

	for _, tl := range []*timeline{r1, r2, r4, r5} {
		hist.timelines[tl.room] = tl.evs
		hist.readers[tl.room] = bfAlice
	}
	hist.joined[bfAlice] = []string{"!r1:localhost", "!r2:localhost", "!r3:localhost", "!r4:localhost", "!r5:localhost"}
	hist.readers["!r3:localhost"] = bfBob // alice may not read it
	hist.limited = 1

	// Mirror mode, from install day.
	ms.hs.set(bfAlice, domain.KeyDisplayName, "Alice Three")
	ms.hs.set(bfSolo, domain.KeyDisplayName, "Solo Two")
	ms.send("live1", raw(liveR1))
	ms.send("live2", raw(liveR2))
	ms.send("live3", raw(liveR4))
	settle := func() { t.Helper(); settleViews(t, ms) }
	settle()
	view := ms.app.RoomView
	liveHistory := map[string][]string{}
	for _, room := range []string{"!r1:localhost", "!r2:localhost", "!r4:localhost"} {
		liveHistory[room] = historyLines(t, view, domain.RoomID(room))
	}

	cpPath := filepath.Join(t.TempDir(), "backfill.db")
	waited := 0
	run := func(ctx context.Context, path string) (appservice.BackfillReport, error) {
		t.Helper()
		cp, err := appservice.OpenBackfillCheckpoint(path)
		if err != nil {
			t.Fatal(err)
		}
		defer cp.Close()
		client := appservice.NewHomeserverClient(hist.URL, ms.reg.ASToken, 0, nil)
		client.OnRateLimited = func(d time.Duration) {
			if d != 20*time.Millisecond {
				t.Errorf("a 429 with retry_after_ms 20 waited %v", d)
			}
			waited++
		}
		b := appservice.NewBackfill(appservice.BackfillOptions{Registration: ms.reg, Profiles: ms.app.Profiles, Rooms: ms.app.Rooms,
			Source: &appservice.ClientHistory{Client: client, Users: []domain.UserID{bfAlice, "@ghost:localhost"}}, Checkpoint: cp, PageSize: 3, Logger: quietLogger(),
			Homeserver: appservice.NewHomeserverProfiles(ms.hs.URL, ms.reg.ASToken, nil, time.Minute)})
		return b.Run(ctx)
	}

	// The first run is interrupted after a few pages...
	stop, cancel := context.WithCancel(ctx)
	hist.onMessages = func(n int) {
		if n == 6 {
			cancel()
		}
	}
	if _, err := run(stop, cpPath); err == nil {
		t.Fatal("the interrupted run reported no error")
	}
	hist.onMessages = nil
	// ...and the second resumes from the checkpoint.
	rep, err := run(ctx, cpPath)
	if err != nil {
		t.Fatal(err)
	}
	settle()
	if waited != 1 {
		t.Errorf("waited out %d 429s, want the one", waited)
	}

	want := []string{
		"alice join ->Alice",
		"bob join ->Bob",
		"alice global_rename Alice->Alice Two",
		"alice room_rename Alice Two->Captain",
		"remo join ->Remo",
		"remo room_rename Remo->Remo Two",
		"bob kick Bob->",
		"bob join ->Bob",
		"bob ban Bob->",
		"bob unban ->",
	}
	if got := historyLines(t, view, "!r1:localhost"); !reflect.DeepEqual(got, append(want, liveHistory["!r1:localhost"]...)) {
		t.Errorf("!r1 history:\n got %q\nwant %q then the live %q", got, want, liveHistory["!r1:localhost"])
	}
	// In !r2 alice was joined, without a per-room name, when she renamed
	// to Alice Three on install day: mirror mode recorded that rename once
	// (and, not knowing she was in the room, her event there as a join);
	// the backfill shows that the rename reached the room.
	// solo, in this room only, renamed: the homeserver's profile has the
	// new name now, so it is a global change, not a per-room one.
	want2 := []string{"alice join ->Alice", "solo join ->Solo", "alice global_rename Alice->Alice Two", "solo global_rename Solo->Solo Two", "alice global_rename Alice Two->Alice Three"}
	if got := historyLines(t, view, "!r2:localhost"); !reflect.DeepEqual(got, append(want2, liveHistory["!r2:localhost"]...)) {
		t.Errorf("!r2 history:\n got %q\nwant %q then the live %q", got, want2, liveHistory["!r2:localhost"])
	}
	if got := historyLines(t, view, "!r4:localhost"); !reflect.DeepEqual(got, liveHistory["!r4:localhost"]) {
		t.Errorf("!r4 (created after install) history = %q, want only the live %q", got, liveHistory["!r4:localhost"])
	}
	// Then as of a moment in the past, and now.
	if got, want := memberLines(t)(view.MembersAtTime("!r1:localhost", at(25), projections.Viewer{Admin: true})), []string{bfAlice + "=Captain", bfBob + "=Bob"}; !reflect.DeepEqual(got, want) {
		t.Errorf("!r1 at +25 s = %q, want %q", got, want)
	}
	if got, want := memberLines(t)(view.Members("!r1:localhost", nil, projections.Viewer{Admin: true})), []string{bfAlice + "=Alice Three", bfRemo + "=Remo Two"}; !reflect.DeepEqual(got, want) {
		t.Errorf("!r1 now = %q, want %q", got, want)
	}
	if p, _, err := ms.app.Profiles.Profile(ctx, bfAlice); err != nil || p.DisplayName() != "Alice Three" {
		t.Errorf("alice's profile after the backfill = %q, %v; want the live Alice Three", p.DisplayName(), err)
	}
	// One global change per rename, however many rooms showed it.
	var globals []string
	for _, e := range ms.events() {
		if e.Type == domain.TypeFieldSet && e.User == bfAlice && strings.HasPrefix(e.Meta.Source, "backfill:") {
			var v string
			_ = json.Unmarshal(e.Value, &v)
			globals = append(globals, v)
		}
	}
	if want := []string{"Alice", "Alice Two"}; !reflect.DeepEqual(globals, want) {
		t.Errorf("alice's backfilled global changes = %q, want %q", globals, want)
	}

	// The report: the room alice may not read, the one she reads in part,
	// and the user whose rooms cannot be listed.
	if rep.Rooms != 5 || rep.Done != 4 {
		t.Errorf("report: %d of %d rooms done, want 4 of 5", rep.Done, rep.Rooms)
	}
	if len(rep.Unreadable) != 1 || rep.Unreadable[0].Room != "!r3:localhost" || !strings.Contains(rep.Unreadable[0].Reason, "may not read it") {
		t.Errorf("unreadable = %+v, want !r3 (M_FORBIDDEN)", rep.Unreadable)
	}
	if len(rep.Incomplete) != 1 || rep.Incomplete[0].Room != "!r5:localhost" || !strings.Contains(rep.Incomplete[0].Reason, "not visible") {
		t.Errorf("incomplete = %+v, want !r5", rep.Incomplete)
	}
	if len(rep.Users) != 1 || rep.Users[0].User != "@ghost:localhost" {
		t.Errorf("users = %+v, want @ghost", rep.Users)
	}

	// Again, on the same checkpoint and on a new one: nothing is appended.
	head := ms.head()
	for _, path := range []string{cpPath, filepath.Join(t.TempDir(), "again.db")} {
		if _, err := run(ctx, path); err != nil {
			t.Fatal(err)
		}
		if h := ms.head(); h != head {
			t.Errorf("a second backfill (checkpoint %s) appended: head %v -> %v", filepath.Base(path), head, h)
		}
	}
}
