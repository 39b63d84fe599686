package alerts_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/profilestore/profilestore/alerts"
	"github.com/profilestore/profilestore/domain"
	"github.com/profilestore/profilestore/eventstore"
	"github.com/profilestore/profilestore/eventstore/bolt"
	"github.com/profilestore/profilestore/projections"
	"github.com/profilestore/profilestore/projections/viewstore"
	"github.com/sirupsen/logrus"
)

const (
	room  = domain.RoomID("!room:example.com")
	mods  = domain.RoomID("!mods:example.com")
	alice = domain.UserID("@alice:example.com")
	eve   = domain.UserID("@eve:example.com")
	bot   = domain.UserID("@profilestore:example.com")
)

// homeserver is a loopback stand-in for the client-server API as the
// outbox uses it: PUT /rooms/{room}/send/m.room.message/{txnId} (deduped
// by transaction id, as homeservers do), POST /join/{room}. It refuses the
// first send (the bot is not in the room yet) and fails the next one with
// a 502, so the outbox must join and retry.
type homeserver struct {
	mu      sync.Mutex
	joined  bool
	fail    int // sends still to fail with 502
	down    bool
	sends   []recordedSend // every PUT, repeats included
	notices map[string]recordedSend
}

type recordedSend struct {
	Room, Txn, UserID, Auth string
	Body                    map[string]string
}

func (h *homeserver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.down {
		http.Error(w, "down", http.StatusBadGateway)
		return
	}
	path := r.URL.EscapedPath()
	switch {
	case r.Method == http.MethodPost && strings.HasPrefix(path, "/_matrix/client/v3/join/"):
		h.joined = true
		_, _ = io.WriteString(w, `{"room_id":"!mods:example.com"}`)
	case r.Method == http.MethodPut && strings.HasPrefix(path, "/_matrix/client/v3/rooms/"):
		parts := strings.Split(strings.TrimPrefix(path, "/_matrix/client/v3/rooms/"), "/")
		if len(parts) != 4 || parts[1] != "send" || parts[2] != "m.room.message" {
			http.NotFound(w, r)
			return
		}
		var s recordedSend
		s.Room, s.Txn, s.UserID, s.Auth = unescape(parts[0]), unescape(parts[3]), r.URL.Query().Get("user_id"), r.Header.Get("Authorization")
		_ = json.NewDecoder(r.Body).Decode(&s.Body)
		h.sends = append(h.sends, s)
		if !h.joined {
			w.WriteHeader(http.StatusForbidden)
			_, _ = io.WriteString(w, `{"errcode":"M_FORBIDDEN","error":"not in room"}`)
			return
		}
		if h.fail > 0 {
			h.fail--
			http.Error(w, "overloaded", http.StatusBadGateway)
			return
		}
		if h.notices == nil {
			h.notices = map[string]recordedSend{}
		}
		if _, ok := h.notices[s.Txn]; !ok {
			h.notices[s.Txn] = s
		}
		_, _ = io.WriteString(w, `{"event_id":"$`+s.Txn+`"}`)
	default:
		http.NotFound(w, r)
	}
}

func unescape(s string) string {
	out, _ := urlUnescape(s)
	return out
}

// webhook records signed deliveries, refusing those whose signature is wrong.
type webhook struct {
	mu         sync.Mutex
	secret     string
	deliveries map[string]alerts.Payload
	bad        int
}

func (h *webhook) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	ts := r.Header.Get("X-Profilestore-Timestamp")
	var n int64
	for _, c := range ts {
		n = n*10 + int64(c-'0')
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if r.Header.Get("X-Profilestore-Signature") != alerts.Signature(h.secret, n, body) {
		h.bad++
		http.Error(w, "bad signature", http.StatusUnauthorized)
		return
	}
	var p alerts.Payload
	if err := json.Unmarshal(body, &p); err != nil || p.ID != r.Header.Get("X-Profilestore-Alert-Id") {
		http.Error(w, "bad body", http.StatusBadRequest)
		return
	}
	if h.deliveries == nil {
		h.deliveries = map[string]alerts.Payload{}
	}
	h.deliveries[p.ID] = p
}

// service is the log, the views and the alerting of one process.
type service struct {
	t      *testing.T
	dir    string
	store  *bolt.Store
	keys   *bolt.Keyring
	sealer *domain.Sealer
	runner *projections.Runner
	views  *projections.DB
	rooms  *projections.Rooms
	cancel context.CancelFunc
	done   sync.WaitGroup
}

func open(t *testing.T, dir string) *service {
	t.Helper()
	store, err := bolt.Open(filepath.Join(dir, "events.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	keys, err := bolt.OpenKeyring(filepath.Join(dir, "keys.db"))
	if err != nil {
		t.Fatal(err)
	}
	log := logrus.New()
	log.SetOutput(io.Discard)
	views, _, err := projections.OpenDB(filepath.Join(dir, "views"), viewstore.PebbleOptions{CacheBytes: 8 << 20, MemTableBytes: 4 << 20})
	if err != nil {
		t.Fatal(err)
	}
	s := &service{t: t, dir: dir, store: store, keys: keys, views: views, sealer: domain.NewSealer(keys), rooms: projections.NewRooms(views, 0)}
	s.runner = projections.NewRunner(projections.Options{Store: store, Sealer: s.sealer, DB: views, Views: []projections.View{projections.NewProfiles(views, 0)},
		Deferred: []projections.View{s.rooms}, Logger: log})
	if err := s.runner.Start(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	return s
}

// startAlerting runs a watcher and an outbox delivering to the sinks.
func (s *service) startAlerting(cfg domain.AlertConfig, metrics *alerts.Metrics, sinks ...alerts.Sink) {
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	log := logrus.New()
	log.SetOutput(io.Discard)
	box := alerts.NewOutbox(alerts.OutboxOptions{Store: s.store, Sealer: s.sealer, Sinks: sinks, Checkpoint: filepath.Join(s.dir, "alerts-delivered.json"),
		MinBackoff: 5 * time.Millisecond, MaxBackoff: 20 * time.Millisecond, Poll: 10 * time.Millisecond, Metrics: metrics, Logger: log})
	w := alerts.NewWatcher(alerts.WatcherOptions{Store: s.store, Sealer: s.sealer, Rooms: s.rooms, Views: s.runner, Config: cfg,
		Checkpoint: filepath.Join(s.dir, "alerts-watched.json"), Raised: box.Wake, Metrics: metrics, Logger: log})
	s.done.Add(2)
	go func() {
		defer s.done.Done()
		if err := w.Run(ctx); err != nil {
			s.t.Errorf("watcher: %v", err)
		}
	}()
	go func() {
		defer s.done.Done()
		if err := box.Run(ctx); err != nil {
			s.t.Errorf("outbox: %v", err)
		}
	}()
}

// stop ends the process, as a restart would.
func (s *service) stop() {
	if s.cancel != nil {
		s.cancel()
		s.done.Wait()
	}
	s.runner.Close()
	s.views.Close()
	s.keys.Close()
	s.store.Close()
}

// write appends one event as the services would.
func (s *service) write(e domain.Event) eventstore.Position {
	s.t.Helper()
	ctx := context.Background()
	if e.Meta.OccurredAt.IsZero() {
		e.Meta.OccurredAt = time.Now().UTC()
	}
	data, err := domain.Encode(ctx, s.sealer, &e)
	if err != nil {
		s.t.Fatal(err)
	}
	res, err := s.store.Append(ctx, e.Stream(), eventstore.Any, []eventstore.EventData{data})
	if err != nil {
		s.t.Fatal(err)
	}
	return res.Position
}

func name(v string) *string { return &v }

func value(v string) json.RawMessage {
	raw, _ := json.Marshal(v)
	return raw
}

func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestAlertsReachTheModerationRoomAndWebhooksOnceAcrossARestart replays a
// session through the real log and views: a look-alike of a moderator
// joins, renames in a burst and takes a protected name. Each alert is
// recorded once and delivered once to a Matrix room (through a refusal, a
// join and a 502) and to a signed webhook; an alert raised while the
// process is down is delivered after the restart, and none twice.
func TestAlertsReachTheModerationRoomAndWebhooksOnceAcrossARestart(t *testing.T) {
	dir := t.TempDir()
	hs := &homeserver{fail: 1}
	hsSrv := httptest.NewServer(hs)
	defer hsSrv.Close()
	hook := &webhook{secret: "s3cret"}
	hookSrv := httptest.NewServer(hook)
	defer hookSrv.Close()
	cfg := domain.AlertConfig{AlertRules: domain.AlertRules{
		Lookalike:      domain.LookalikeRule{Enabled: true},
		RenameBurst:    domain.RenameBurstRule{Enabled: true, Count: 3, Window: time.Minute},
		ProtectedNames: []domain.ProtectedName{{Name: "Support", Holders: []domain.UserID{alice}}},
	}}
	notice := alerts.Notice{ConsoleURL: "https://profiles.example.com"}
	sinks := func() []alerts.Sink {
		return []alerts.Sink{
			&alerts.MatrixSink{HomeserverURL: hsSrv.URL, ASToken: "as-token", Bot: bot, Room: mods, Notice: notice},
			&alerts.WebhookSink{URL: hookSrv.URL + "/hook?token=x", Secret: hook.secret, Notice: notice},
		}
	}

	s := open(t, dir)
	first := s.write(domain.Event{Type: domain.TypePowerLevels, Room: room, PowerLevels: &domain.PowerLevels{Users: map[domain.UserID]int{alice: 100}, Kick: 50}})
	s.write(domain.Event{Type: domain.TypeMemberJoined, Room: room, User: alice, DisplayName: name("Alice")})
	metrics := alerts.NewMetrics()
	s.startAlerting(cfg, metrics, sinks()...)
	// Give the watcher its checkpoint at the head before the session starts.
	waitFor(t, "the watcher's checkpoint", func() bool { return fileExists(filepath.Join(dir, "alerts-watched.json")) })

	join := s.write(domain.Event{Type: domain.TypeMemberJoined, Room: room, User: eve, DisplayName: name("\u0410lice")})
	for _, n := range []string{"Eve", "Eve 2", "Eve 3"} {
		s.write(domain.Event{Type: domain.TypeFieldSet, User: eve, Key: domain.KeyDisplayName, Value: value(n), PropagateTo: domain.PropagateAll})
	}
	waitFor(t, "three notices", func() bool { hs.mu.Lock(); defer hs.mu.Unlock(); return len(hs.notices) == 2 })
	waitFor(t, "two webhook deliveries", func() bool { hook.mu.Lock(); defer hook.mu.Unlock(); return len(hook.deliveries) == 2 })

	hs.mu.Lock()
	var lookalike recordedSend
	for _, n := range hs.notices {
		if strings.Contains(n.Body["body"], "impersonation") {
			lookalike = n
		}
		if n.Room != string(mods) || n.UserID != string(bot) || n.Auth != "Bearer as-token" || n.Body["msgtype"] != "m.notice" || n.Body["format"] != "org.matrix.custom.html" {
			t.Errorf("notice sent as %+v", n)
		}
	}
	hs.mu.Unlock()
	for _, want := range []string{"Possible impersonation of a moderator in !room:example.com", "@eve:example.com took “\u0410lice”",
		"confusable to “Alice” (@alice:example.com, moderator)", "character 1 is “\u0410” U+0410 CYRILLIC CAPITAL LETTER A (Cyrillic)",
		"theirs has “A” U+0041 LATIN CAPITAL LETTER A (Latin) at 1", "https://profiles.example.com/console/rooms/%21room:example.com"} {
		if !strings.Contains(lookalike.Body["body"], want) {
			t.Errorf("the notice's body lacks %q:\n%s", want, lookalike.Body["body"])
		}
	}
	if f := lookalike.Body["formatted_body"]; !strings.Contains(f, "<b>Possible impersonation of a moderator</b>") || !strings.Contains(f, `<a href="https://profiles.example.com/console/rooms/%21room:example.com">`) {
		t.Errorf("formatted body: %s", f)
	}

	hook.mu.Lock()
	var burst, look alerts.Payload
	for _, p := range hook.deliveries {
		switch p.Rule {
		case domain.AlertRenameBurst:
			burst = p
		case domain.AlertLookalike:
			look = p
		}
	}
	hook.mu.Unlock()
	if look.Trigger != join.String() || look.UserID != eve || look.RoomID != room || len(look.Others) != 1 || look.Others[0].Relation != "confusable" ||
		look.Others[0].Differs[0].CodePoint != "U+0410" || look.Others[0].Theirs[0].Script != "Latin" || !look.Moderator {
		t.Errorf("look-alike payload %+v", look)
	}
	if burst.Renames != 3 || burst.WindowMS != 60000 || burst.DisplayName != "Eve 3" {
		t.Errorf("burst payload %+v", burst)
	}

	// Down: the homeserver fails, a protected name is taken; then the
	// process stops before anything could be delivered to Matrix.
	hs.mu.Lock()
	hs.down = true
	hs.mu.Unlock()
	last := s.write(domain.Event{Type: domain.TypeFieldSet, User: eve, Key: domain.KeyDisplayName, Value: value("Supp\u043ert"), PropagateTo: domain.PropagateAll})
	waitFor(t, "the webhook's third delivery", func() bool { hook.mu.Lock(); defer hook.mu.Unlock(); return len(hook.deliveries) == 3 })
	s.stop()

	// As if the process had died before its watcher saved its place: the
	// whole session is evaluated again after the restart.
	if err := os.WriteFile(filepath.Join(dir, "alerts-watched.json"), []byte(`{"position":"`+first.String()+`"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	hs.mu.Lock()
	hs.down = false
	sendsBefore := len(hs.sends)
	hs.mu.Unlock()
	s = open(t, dir)
	defer s.stop()
	s.startAlerting(cfg, alerts.NewMetrics(), sinks()...)
	waitFor(t, "the protected-name notice after the restart", func() bool { hs.mu.Lock(); defer hs.mu.Unlock(); return len(hs.notices) == 3 })
	waitFor(t, "the watcher to evaluate the session again", func() bool {
		raw, err := os.ReadFile(filepath.Join(dir, "alerts-watched.json"))
		return err == nil && strings.Contains(string(raw), `"`+last.String()+`"`)
	})
	time.Sleep(100 * time.Millisecond) // a repeat would show by now

	hs.mu.Lock()
	defer hs.mu.Unlock()
	for _, sent := range hs.sends[sendsBefore:] {
		if !strings.Contains(sent.Body["body"], "Protected name taken") {
			t.Errorf("after the restart the outbox sent again: %s", sent.Body["body"])
		}
	}
	hook.mu.Lock()
	defer hook.mu.Unlock()
	if len(hook.deliveries) != 3 || hook.bad != 0 {
		t.Errorf("webhook: %d deliveries, %d badly signed", len(hook.deliveries), hook.bad)
	}
	recs, err := s.store.ReadStream(context.Background(), domain.AlertStream, 0, eventstore.Forwards, 100)
	if err != nil || len(recs) != 3 {
		t.Errorf("recorded alerts: %d %v", len(recs), err)
	}
}

func urlUnescape(s string) (string, error) { return url.PathUnescape(s) }

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// A webhook's URL may carry a token in its query; a failed delivery's
// error, which is logged, does not show it.
func TestWebhookErrorsHideTheQuery(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	base := srv.URL
	srv.Close() // nobody answers
	sink := &alerts.WebhookSink{URL: base + "/hook?token=hunter2hunter2", Secret: "0123456789abcdef"}
	err := sink.Deliver(context.Background(), alerts.Recorded{ID: "x", Alert: domain.Alert{Rule: domain.AlertRenameBurst, User: eve}})
	if err == nil || strings.Contains(err.Error(), "hunter2") || !strings.Contains(err.Error(), "webhook:127.0.0.1") {
		t.Errorf("error %v", err)
	}
	if strings.Contains(sink.Name(), "hunter2") {
		t.Errorf("sink name %q", sink.Name())
	}
}

// A sink configured later gets the alerts recorded from then on, not the
// whole past; and those are kept for it across a restart.
func TestANewSinkStartsAtTheEndOfTheAlerts(t *testing.T) {
	dir := t.TempDir()
	hook := &webhook{secret: "0123456789abcdef"}
	hookSrv := httptest.NewServer(hook)
	defer hookSrv.Close()
	cfg := domain.AlertConfig{AlertRules: domain.AlertRules{ProtectedNames: []domain.ProtectedName{{Name: "Support"}}}}
	s := open(t, dir)
	s.startAlerting(cfg, nil) // recorded only: no sink yet
	waitFor(t, "the watcher's checkpoint", func() bool { return fileExists(filepath.Join(dir, "alerts-watched.json")) })
	s.write(domain.Event{Type: domain.TypeFieldSet, User: eve, Key: domain.KeyDisplayName, Value: value("Support"), PropagateTo: domain.PropagateAll})
	waitFor(t, "the first alert recorded", func() bool {
		recs, _ := s.store.ReadStream(context.Background(), domain.AlertStream, 0, eventstore.Forwards, 10)
		return len(recs) == 1
	})
	s.stop()

	s = open(t, dir)
	s.startAlerting(cfg, nil, &alerts.WebhookSink{URL: hookSrv.URL, Secret: hook.secret})
	waitFor(t, "the new sink's checkpoint", func() bool {
		raw, err := os.ReadFile(filepath.Join(dir, "alerts-delivered.json"))
		return err == nil && strings.Contains(string(raw), "webhook:")
	})
	s.stop() // before anything new: the place must survive the restart
	s = open(t, dir)
	defer s.stop()
	s.startAlerting(cfg, nil, &alerts.WebhookSink{URL: hookSrv.URL, Secret: hook.secret})
	s.write(domain.Event{Type: domain.TypeFieldSet, User: alice, Key: domain.KeyDisplayName, Value: value("SUPPORT"), PropagateTo: domain.PropagateAll})
	waitFor(t, "the second alert delivered", func() bool { hook.mu.Lock(); defer hook.mu.Unlock(); return len(hook.deliveries) == 1 })
	time.Sleep(50 * time.Millisecond)
	hook.mu.Lock()
	defer hook.mu.Unlock()
	for _, p := range hook.deliveries {
		if p.UserID != alice || len(hook.deliveries) != 1 {
			t.Errorf("the new sink got %+v", hook.deliveries)
		}
	}
}

// A damaged checkpoint stops the watcher or the outbox with a message that
// names the file and what to do, and nothing is overwritten.
func TestDamagedCheckpointsAreNamed(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	defer s.stop()
	watched, delivered := filepath.Join(dir, "alerts-watched.json"), filepath.Join(dir, "alerts-delivered.json")
	for _, p := range []string{watched, delivered} {
		if err := os.WriteFile(p, []byte("{oops"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	w := alerts.NewWatcher(alerts.WatcherOptions{Store: s.store, Sealer: s.sealer, Rooms: s.rooms, Views: s.runner, Checkpoint: watched})
	if err := w.Run(context.Background()); err == nil || !strings.Contains(err.Error(), watched) || !strings.Contains(err.Error(), "move it away to start again from the log's head") {
		t.Errorf("watcher: %v", err)
	}
	b := alerts.NewOutbox(alerts.OutboxOptions{Store: s.store, Sealer: s.sealer, Checkpoint: delivered})
	if err := b.Run(context.Background()); err == nil || !strings.Contains(err.Error(), delivered) || !strings.Contains(err.Error(), "remove it to deliver only the alerts recorded from then on") {
		t.Errorf("outbox: %v", err)
	}
	for _, p := range []string{watched, delivered} {
		if raw, _ := os.ReadFile(p); string(raw) != "{oops" {
			t.Errorf("%s was rewritten: %q", p, raw)
		}
	}
}
