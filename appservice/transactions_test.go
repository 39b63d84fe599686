package appservice_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	psapp "github.com/profilestore/profilestore/app"
	"github.com/profilestore/profilestore/appservice"
	"github.com/profilestore/profilestore/domain"
	"github.com/profilestore/profilestore/eventstore"
	"github.com/profilestore/profilestore/eventstore/bolt"
	pshttp "github.com/profilestore/profilestore/http"
	"github.com/profilestore/profilestore/projections"
	"github.com/profilestore/profilestore/projections/viewstore"
)

// fixturePath is a copy of shared/reference/fixtures/dendrite-as-transaction.json:
// real Dendrite output, kept in the repository so a clean clone tests it.
const fixturePath = "testdata/dendrite-as-transaction.json"

// fakeHomeserver answers GET /_matrix/client/v3/profile/{userId} as the
// homeserver would, from a map the test changes.
type fakeHomeserver struct {
	*httptest.Server
	mu       sync.Mutex
	profiles map[string]map[string]string
	asToken  string
	calls    int
	down     bool
}

func newFakeHomeserver(t testing.TB, asToken string) *fakeHomeserver {
	hs := &fakeHomeserver{profiles: map[string]map[string]string{}, asToken: asToken}
	hs.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hs.mu.Lock()
		defer hs.mu.Unlock()
		hs.calls++
		if hs.down {
			w.WriteHeader(http.StatusBadGateway)
			return
		}
		if r.Header.Get("Authorization") != "Bearer "+hs.asToken {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		user := strings.TrimPrefix(r.URL.Path, "/_matrix/client/v3/profile/")
		p, ok := hs.profiles[user]
		if !ok {
			w.WriteHeader(http.StatusNotFound)
			_, _ = io.WriteString(w, `{"errcode":"M_NOT_FOUND"}`)
			return
		}
		_ = json.NewEncoder(w).Encode(p)
	}))
	t.Cleanup(hs.Close)
	return hs
}

func (hs *fakeHomeserver) set(user, field, value string) {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	if hs.profiles[user] == nil {
		hs.profiles[user] = map[string]string{}
	}
	hs.profiles[user][field] = value
}

// mirrorService is profilestore with its appservice side on a bolt file;
// restart() builds a fresh process state over the same files.
type mirrorService struct {
	t      testing.TB
	dir    string
	reg    *appservice.Registration
	hs     *fakeHomeserver
	store  *bolt.Store
	keys   *bolt.Keyring
	sealer *domain.Sealer
	server *httptest.Server
	ing    *appservice.Ingester
	app    *psapp.App
	// lookup and requireAuth configure the MSC4337 routes at the next start.
	lookup      *pshttp.ProfileLookup
	requireAuth bool
}

// openViews opens a view store in dir for a test server; the caller closes it.
func openViews(t testing.TB, dir string) *projections.DB {
	t.Helper()
	db, _, err := projections.OpenDB(filepath.Join(dir, "views"), viewstore.PebbleOptions{CacheBytes: 8 << 20, MemTableBytes: 4 << 20})
	if err != nil {
		t.Fatal(err)
	}
	return db
}

func newMirrorService(t testing.TB) *mirrorService {
	t.Helper()
	reg, err := appservice.NewRegistration("profilestore", "http://127.0.0.1:1", "_profilestore", "localhost")
	if err != nil {
		t.Fatal(err)
	}
	ms := &mirrorService{t: t, dir: t.TempDir(), reg: reg}
	ms.hs = newFakeHomeserver(t, reg.ASToken)
	ms.start()
	t.Cleanup(ms.stop)
	return ms
}

func (ms *mirrorService) start() {
	t := ms.t
	var err error
	if ms.store, err = bolt.Open(filepath.Join(ms.dir, "events.db"), bolt.Options{Logger: quietLogger()}); err != nil {
		t.Fatal(err)
	}
	if ms.keys, err = bolt.OpenKeyring(filepath.Join(ms.dir, "keys.db")); err != nil {
		t.Fatal(err)
	}
	// The whole service, wired as the command wires it, with its views
	// following the log.
	if ms.app, err = psapp.New(ms.store, ms.keys, psapp.Options{DataDir: ms.dir, Logger: quietLogger(),
		ViewStore: viewstore.PebbleOptions{CacheBytes: 8 << 20, MemTableBytes: 4 << 20}}); err != nil {
		t.Fatal(err)
	}
	if err := ms.app.Runner.Start(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	ms.sealer = ms.app.Sealer
	mirror := appservice.NewMirror(appservice.MirrorOptions{Registration: ms.reg, Profiles: ms.app.Profiles, Rooms: ms.app.Rooms,
		Homeserver: appservice.NewHomeserverProfiles(ms.hs.URL, ms.reg.ASToken, nil, time.Minute), Logger: quietLogger()})
	ms.ing = appservice.NewIngester(appservice.IngesterOptions{Registration: ms.reg, Store: ms.store, Mirror: mirror,
		MaxTransactionBytes: 1 << 20, Logger: quietLogger()})
	cfg := ms.app.ServerConfig()
	cfg.Appservice, cfg.Logger, cfg.Collectors = ms.ing, quietLogger(), append(cfg.Collectors, ms.ing.Collectors()...)
	cfg.ProfileLookup, cfg.RequireAuthForProfile = ms.lookup, ms.requireAuth
	ms.server = httptest.NewServer(pshttp.NewServer(cfg).Handler())
}

func (ms *mirrorService) stop() {
	if ms.server == nil {
		return
	}
	ms.server.Close()
	ms.app.Close()
	ms.server = nil
}

func (ms *mirrorService) restart() {
	ms.stop()
	ms.start()
}

func (ms *mirrorService) put(txnID string, body []byte, token string) (int, string) {
	ms.t.Helper()
	req, _ := http.NewRequest(http.MethodPut, ms.server.URL+"/_matrix/app/v1/transactions/"+txnID, bytes.NewReader(body))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		ms.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var e struct {
		ErrCode string `json:"errcode"`
	}
	_ = json.Unmarshal(b, &e)
	return resp.StatusCode, e.ErrCode
}

// send delivers a transaction and requires 200.
func (ms *mirrorService) send(txnID string, events ...string) {
	ms.t.Helper()
	body := []byte(`{"events":[` + strings.Join(events, ",") + `]}`)
	if status, code := ms.put(txnID, body, ms.reg.HSToken); status != 200 {
		ms.t.Fatalf("transaction %s: %d %s", txnID, status, code)
	}
}

func (ms *mirrorService) head() eventstore.Position {
	p, err := ms.store.Head(context.Background())
	if err != nil {
		ms.t.Fatal(err)
	}
	return p
}

// events returns the decoded profile and room events of the log.
func (ms *mirrorService) events() []domain.Event {
	ms.t.Helper()
	recs, err := ms.store.ReadAll(context.Background(), eventstore.Start, 10_000)
	if err != nil {
		ms.t.Fatal(err)
	}
	var out []domain.Event
	for _, r := range recs {
		if !strings.HasPrefix(r.Stream, domain.ProfileCategory) && !strings.HasPrefix(r.Stream, domain.RoomCategory) {
			continue
		}
		e, err := domain.Decode(context.Background(), ms.sealer, r)
		if err != nil {
			ms.t.Fatal(err)
		}
		out = append(out, e)
	}
	return out
}

func ofType(es []domain.Event, typ string) []domain.Event {
	var out []domain.Event
	for _, e := range es {
		if e.Type == typ {
			out = append(out, e)
		}
	}
	return out
}

var evSeq int

// member renders an m.room.member event in the client format.
func member(room, user, sender, membership, displayname string, ts int64) string {
	evSeq++
	content := map[string]any{"membership": membership}
	if displayname != "" {
		content["displayname"] = displayname
	}
	b, _ := json.Marshal(map[string]any{"type": "m.room.member", "event_id": fmt.Sprintf("$ev%d-%d", evSeq, time.Now().UnixNano()),
		"room_id": room, "sender": sender, "state_key": user, "origin_server_ts": ts, "content": content})
	return string(b)
}

const (
	roomA = "!ll5lDtVAKPY16HxQ:localhost"
	roomB = "!HiKgW9fUCAcXIt2E:localhost"
	alice = "@alice10:localhost"
)

// TestDendriteFixtureIsOneGlobalChange replays the two member events Dendrite
// sent after one display-name change: one global change, no overrides.
func TestDendriteFixtureIsOneGlobalChange(t *testing.T) {
	fixture, err := os.ReadFile(fixturePath)
	if err != nil {
		t.Fatal(err)
	}
	ms := newMirrorService(t)
	ms.hs.set(alice, "displayname", "Alice 10")
	ms.send("1", member(roomA, alice, alice, "join", "Alice 10", 1000), member(roomB, alice, alice, "join", "Alice 10", 1001))
	before := ms.events()
	if n := len(ofType(before, domain.TypeFieldSet)); n != 1 {
		t.Fatalf("joins seeded %d global changes, want 1", n)
	}
	if n := len(ofType(before, domain.TypeMemberJoined)); n != 2 {
		t.Fatalf("%d joins recorded, want 2", n)
	}

	ms.hs.set(alice, "displayname", "Alice 10-1795531656453983585")
	ms.send("1795531656455000000", string(fixtureEvents(t, fixture))[1:len(fixtureEvents(t, fixture))-1])
	after := ms.events()[len(before):]
	sets := ofType(after, domain.TypeFieldSet)
	if len(sets) != 1 || len(after) != 1 {
		t.Fatalf("the rename appended %d events (%d global sets), want exactly one global set", len(after), len(sets))
	}
	if string(sets[0].Value) != `"Alice 10-1795531656453983585"` || sets[0].PropagateTo != domain.PropagateUnchanged || sets[0].User != alice {
		t.Fatalf("global change = %+v", sets[0])
	}
	if sets[0].Meta.Source != "mirror:profilestore" || sets[0].Meta.Actor != alice {
		t.Fatalf("metadata = %+v", sets[0].Meta)
	}

	// Retried with the same txnId, also after a restart: 200, nothing appended.
	head := ms.head()
	ms.send("1795531656455000000", string(fixtureEvents(t, fixture))[1:len(fixtureEvents(t, fixture))-1])
	ms.restart()
	ms.send("1795531656455000000", string(fixtureEvents(t, fixture))[1:len(fixtureEvents(t, fixture))-1])
	if ms.head() != head {
		t.Fatal("a retried transaction appended events")
	}
	// The same events under another txnId (a homeserver that lost its
	// counter) append nothing either: event ids are deterministic.
	ms.restart()
	ms.send("other-txn", string(fixtureEvents(t, fixture))[1:len(fixtureEvents(t, fixture))-1])
	if ms.head().Commit != head.Commit+1 { // only the ledger entry of the new txnId
		t.Fatalf("re-sent events moved the log from %v to %v", head, ms.head())
	}
	if n := len(ms.events()); n != len(before)+1 {
		t.Fatalf("re-sent events appended profile or room events: %d", n-len(before)-1)
	}
}

func fixtureEvents(t *testing.T, fixture []byte) json.RawMessage {
	var doc struct {
		Events json.RawMessage `json:"events"`
	}
	if err := json.Unmarshal(fixture, &doc); err != nil {
		t.Fatal(err)
	}
	return doc.Events
}

func TestPerRoomNameBecomesAnOverride(t *testing.T) {
	ms := newMirrorService(t)
	ms.hs.set(alice, "displayname", "Alice")
	ms.send("1", member(roomA, alice, alice, "join", "Alice", 1), member(roomB, alice, alice, "join", "Alice", 2))
	n := len(ms.events())
	// /myroomnick in room A: the homeserver's global name is still Alice.
	ms.send("2", member(roomA, alice, alice, "join", "Captain", 3))
	got := ms.events()[n:]
	if len(got) != 1 || got[0].Type != domain.TypeMemberProfileSet || got[0].Room != roomA || string(got[0].Value) != `"Captain"` {
		t.Fatalf("room nick appended %+v", got)
	}
	// A global rename then reaches room A too (Synapse overwrites room
	// names): the override is cleared there, and only one global change.
	n = len(ms.events())
	ms.hs.set(alice, "displayname", "Alice W")
	ms.send("3", member(roomA, alice, alice, "join", "Alice W", 4), member(roomB, alice, alice, "join", "Alice W", 4))
	got = ms.events()[n:]
	if len(ofType(got, domain.TypeFieldSet)) != 1 || len(ofType(got, domain.TypeMemberProfileGone)) != 1 || len(got) != 2 {
		t.Fatalf("rename after a room nick appended %+v", got)
	}
}

func TestMembershipsVisibilityAndPowerLevels(t *testing.T) {
	ms := newMirrorService(t)
	bob := "@bob:localhost"
	mod := "@mod:localhost"
	remote := "@carol:remote.example"
	ms.send("1",
		member(roomA, alice, alice, "join", "Alice", 1),
		member(roomA, bob, alice, "invite", "Bob", 2),
		member(roomA, bob, bob, "join", "Bob", 3),
		member(roomA, remote, remote, "join", "Carol", 4),
		`{"type":"m.room.history_visibility","event_id":"$hv1","room_id":"`+roomA+`","sender":"@mod:localhost","state_key":"","origin_server_ts":5,"content":{"history_visibility":"joined"}}`,
		`{"type":"m.room.power_levels","event_id":"$pl1","room_id":"`+roomA+`","sender":"@mod:localhost","state_key":"","origin_server_ts":6,"content":{"users":{"@mod:localhost":100,"@alice10:localhost":"50"},"kick":50}}`,
		member(roomA, bob, mod, "leave", "", 7), // a kick
		member(roomA, remote, mod, "ban", "", 8),
		member(roomA, alice, alice, "leave", "", 9),
	)
	es := ms.events()
	var left []string
	for _, e := range ofType(es, domain.TypeMemberLeft) {
		left = append(left, string(e.User)+"="+e.Membership+" by "+string(e.By))
	}
	want := []string{"@bob:localhost=kick by @mod:localhost", "@carol:remote.example=ban by @mod:localhost", "@alice10:localhost=leave by "}
	if strings.Join(left, "; ") != strings.Join(want, "; ") {
		t.Fatalf("left = %q", left)
	}
	if inv := ofType(es, domain.TypeMemberInvited); len(inv) != 1 || inv[0].By != alice {
		t.Fatalf("invites = %+v", inv)
	}
	if hv := ofType(es, domain.TypeHistoryVisibility); len(hv) != 1 || hv[0].Visibility != "joined" {
		t.Fatalf("history visibility = %+v", hv)
	}
	pl := ofType(es, domain.TypePowerLevels)
	if len(pl) != 1 || pl[0].PowerLevels.Kick != 50 || pl[0].PowerLevels.Users["@mod:localhost"] != 100 || pl[0].PowerLevels.Users[alice] != 50 {
		t.Fatalf("power levels = %+v", pl)
	}
	// Users of other servers get no global profile.
	for _, e := range ofType(es, domain.TypeFieldSet) {
		if string(e.User) == remote {
			t.Fatal("a remote user's name became a global profile here")
		}
	}
}

func TestMalformedAndUnknownEventsNeverFailTheTransaction(t *testing.T) {
	ms := newMirrorService(t)
	ms.send("1",
		`"not an object"`,
		`{"type":"m.room.message","event_id":"$m","room_id":"`+roomA+`","sender":"`+alice+`","content":{"body":"hi"}}`,
		`{"type":"m.room.member","event_id":"$nostate","room_id":"`+roomA+`","sender":"`+alice+`","content":{"membership":"join"}}`,
		`{"type":"m.room.member","event_id":"$badroom","room_id":"nope","sender":"`+alice+`","state_key":"`+alice+`","content":{"membership":"join"}}`,
		`{"type":"m.room.member","event_id":"$baduser","room_id":"`+roomA+`","sender":"x","state_key":"x","content":{"membership":"join"}}`,
		`{"type":"m.room.member","event_id":"$badname","room_id":"`+roomA+`","sender":"`+alice+`","state_key":"`+alice+`","content":{"membership":"join","displayname":42}}`,
		`{"type":"m.room.member","event_id":"$badms","room_id":"`+roomA+`","sender":"`+alice+`","state_key":"`+alice+`","content":{"membership":"dance"}}`,
		`{"type":"m.room.member","event_id":"$arr","room_id":"`+roomA+`","sender":"`+alice+`","state_key":"`+alice+`","content":[]}`,
		`{"type":"m.room.history_visibility","event_id":"$hv","room_id":"`+roomA+`","sender":"`+alice+`","state_key":"","content":{"history_visibility":"sometimes"}}`,
		`{"type":"m.room.power_levels","event_id":"$pl","room_id":"`+roomA+`","sender":"`+alice+`","state_key":"","content":{"kick":"lots"}}`,
		member(roomA, alice, alice, "join", strings.Repeat("x", 300), 1), // over the display-name limit
		member(roomB, alice, alice, "join", "Fine", 2),
	)
	es := ms.events()
	if joins := ofType(es, domain.TypeMemberJoined); len(joins) != 1 || joins[0].Room != roomB {
		t.Fatalf("joins = %+v", joins)
	}
	// The counts are exported.
	resp, err := http.Get(ms.server.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	m, _ := io.ReadAll(resp.Body)
	if !strings.Contains(string(m), `profilestore_appservice_events_total{result="malformed",type="m.room.member"} 7`) {
		t.Fatalf("malformed member events not counted:\n%s", grepLines(string(m), "appservice_events"))
	}
	if !strings.Contains(string(m), `profilestore_appservice_events_total{result="ignored",type="other"} 1`) {
		t.Fatalf("unknown types not counted:\n%s", grepLines(string(m), "appservice_events"))
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func TestTwiceAndLateEvents(t *testing.T) {
	ms := newMirrorService(t)
	ms.hs.set(alice, "displayname", "Alice")
	join := member(roomA, alice, alice, "join", "Alice", 10)
	leave := member(roomA, alice, alice, "leave", "", 20)
	ms.send("1", join, join) // the same event twice in one transaction
	ms.send("2", join)       // and again in another
	if n := len(ofType(ms.events(), domain.TypeMemberJoined)); n != 1 {
		t.Fatalf("%d joins recorded", n)
	}
	ms.send("3", leave)
	// A join older than the leave arrives late: the room stays left.
	ms.send("4", member(roomA, alice, alice, "join", "Alice", 15))
	if n := len(ofType(ms.events(), domain.TypeMemberJoined)); n != 1 {
		t.Fatalf("a late join was applied over a newer leave")
	}
}

// TestFutureTimestamps: an event stamped past year 9999 (found by
// FuzzTransaction: it failed the whole transaction with 503, forever) or
// merely far ahead is applied as of its arrival, and does not make the next
// real event of the same state look stale.
func TestFutureTimestamps(t *testing.T) {
	ms := newMirrorService(t)
	const remote = "@eve:remote.example"
	now := time.Now().UnixMilli()
	for i, ts := range []int64{253402300800000, now + 365*24*3600*1000} {
		room := []string{roomA, roomB}[i]
		ms.send(fmt.Sprintf("join-%d", i), member(room, remote, remote, "join", "Eve", ts))
		// A moderator's kick, stamped honestly a moment later, must apply.
		ms.send(fmt.Sprintf("kick-%d", i), member(room, remote, "@mod:localhost", "leave", "", time.Now().UnixMilli()+1))
	}
	es := ms.events()
	joins, left := ofType(es, domain.TypeMemberJoined), ofType(es, domain.TypeMemberLeft)
	if len(joins) != 2 || len(left) != 2 {
		t.Fatalf("%d joins and %d leaves recorded, want 2 and 2", len(joins), len(left))
	}
	for _, j := range joins {
		if d := time.Since(j.Meta.OccurredAt); d < 0 || d > time.Minute {
			t.Errorf("join recorded at %v, not at its arrival", j.Meta.OccurredAt)
		}
	}
}

func TestHomeserverUnreachableFallsBackToEvents(t *testing.T) {
	ms := newMirrorService(t)
	ms.hs.mu.Lock()
	ms.hs.down = true
	ms.hs.mu.Unlock()
	ms.send("1", member(roomA, alice, alice, "join", "Alice", 1), member(roomB, alice, alice, "join", "Alice", 2))
	ms.send("2", member(roomA, alice, alice, "join", "Alice B", 3), member(roomB, alice, alice, "join", "Alice B", 3))
	sets := ofType(ms.events(), domain.TypeFieldSet)
	if len(sets) != 2 || string(sets[1].Value) != `"Alice B"` {
		t.Fatalf("global sets without the homeserver = %+v", sets)
	}
	if n := len(ofType(ms.events(), domain.TypeMemberProfileSet)); n != 0 {
		t.Fatalf("%d overrides", n)
	}
}

func TestAppserviceRoutesAuthAndErrors(t *testing.T) {
	ms := newMirrorService(t)
	body := []byte(`{"events":[]}`)
	if status, code := ms.put("1", body, ""); status != 401 || code != "M_MISSING_TOKEN" {
		t.Fatalf("no token: %d %s", status, code)
	}
	if status, code := ms.put("1", body, "wrong"); status != 403 || code != "M_FORBIDDEN" {
		t.Fatalf("wrong token: %d %s", status, code)
	}
	if status, code := ms.put("1", body, ms.reg.ASToken); status != 403 || code != "M_FORBIDDEN" {
		t.Fatalf("as_token instead of hs_token: %d %s", status, code)
	}
	head := ms.head()
	if status, code := ms.put("2", []byte(`{"events":`), ms.reg.HSToken); status != 400 || code != "M_BAD_JSON" {
		t.Fatalf("truncated body: %d %s", status, code)
	}
	if ms.head() != head {
		t.Fatal("a refused transaction moved the log")
	}
	// The body cap (1 MiB here): exactly the cap is accepted, one byte more is 413.
	pad := func(n int) []byte {
		b := []byte(`{"events":[],"pad":"`)
		b = append(b, bytes.Repeat([]byte("a"), n-len(b)-2)...)
		return append(b, '"', '}')
	}
	if status, code := ms.put("3", pad(1<<20), ms.reg.HSToken); status != 200 {
		t.Fatalf("a body of exactly the cap: %d %s", status, code)
	}
	if status, code := ms.put("4", pad(1<<20+1), ms.reg.HSToken); status != 413 || code != "M_TOO_LARGE" {
		t.Fatalf("a body over the cap: %d %s", status, code)
	}

	do := func(method, path, token string) (int, string) {
		req, _ := http.NewRequest(method, ms.server.URL+path, strings.NewReader(`{"transaction_id":"x"}`))
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var e struct {
			ErrCode string `json:"errcode"`
		}
		_ = json.NewDecoder(resp.Body).Decode(&e)
		return resp.StatusCode, e.ErrCode
	}
	cases := []struct {
		method, path, token string
		status              int
		code                string
	}{
		{"POST", "/_matrix/app/v1/ping", ms.reg.HSToken, 200, ""},
		{"POST", "/_matrix/app/v1/ping", "", 401, "M_MISSING_TOKEN"},
		{"GET", "/_matrix/app/v1/users/@alice:localhost", ms.reg.HSToken, 404, "M_NOT_FOUND"},
		{"GET", "/_matrix/app/v1/users/@alice:localhost", "bad", 403, "M_FORBIDDEN"},
		{"GET", "/_matrix/app/v1/rooms/%23room:localhost", ms.reg.HSToken, 404, "M_NOT_FOUND"},
		{"GET", "/_matrix/app/v1/thirdparty/protocol/irc", ms.reg.HSToken, 404, "M_UNRECOGNIZED"},
		{"GET", "/_matrix/app/v1/transactions/1", ms.reg.HSToken, 405, "M_UNRECOGNIZED"},
		{"PUT", "/_matrix/app/v1/transactions/5?access_token=" + ms.reg.HSToken, "", 200, ""},
		{"PUT", "/_matrix/app/v1/transactions/6?access_token=other", ms.reg.HSToken, 403, "M_FORBIDDEN"},
	}
	for _, c := range cases {
		if status, code := do(c.method, c.path, c.token); status != c.status || code != c.code {
			t.Errorf("%s %s: %d %s, want %d %s", c.method, c.path, status, code, c.status, c.code)
		}
	}
}
