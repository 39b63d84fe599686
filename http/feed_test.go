package http_test

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/profilestore/profilestore/domain"
	"github.com/profilestore/profilestore/eventstore"
	pshttp "github.com/profilestore/profilestore/http"
)

const analyticsToken = "analytics-secret-token"

func withAnalytics(heartbeat time.Duration) serviceOption {
	sum := sha256.Sum256([]byte(analyticsToken))
	return func(c *pshttp.Config) {
		c.AnalyticsTokenHashes = []string{hex.EncodeToString(sum[:])}
		c.FeedHeartbeat = heartbeat
	}
}

// sseEvent is one message of a Server-Sent Events stream; a comment has
// Comment set.
type sseEvent struct {
	ID, Event, Comment string
	Data               map[string]any
}

// feed is an open change feed.
type feed struct {
	t      testing.TB
	cancel context.CancelFunc
	events chan sseEvent
}

func (ts *testService) openFeed(query, token string, headers ...string) (*feed, response) {
	ts.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", ts.URL+"/_profilestore/v1/events"+query, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		ts.t.Fatal(err)
	}
	if resp.StatusCode != 200 {
		defer cancel()
		defer resp.Body.Close()
		var buf strings.Builder
		bufio.NewReader(resp.Body).WriteTo(&buf)
		return nil, response{Status: resp.StatusCode, Header: resp.Header, Body: []byte(buf.String())}
	}
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		ts.t.Errorf("content type %q", ct)
	}
	f := &feed{t: ts.t, cancel: cancel, events: make(chan sseEvent, 1024)}
	go func() {
		defer resp.Body.Close()
		defer close(f.events)
		sc := bufio.NewScanner(resp.Body)
		var ev sseEvent
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "":
				if ev.ID != "" || ev.Comment != "" {
					f.events <- ev
				}
				ev = sseEvent{}
			case strings.HasPrefix(line, ":"):
				ev.Comment = strings.TrimSpace(line[1:])
			case strings.HasPrefix(line, "id: "):
				ev.ID = line[4:]
			case strings.HasPrefix(line, "event: "):
				ev.Event = line[7:]
			case strings.HasPrefix(line, "data: "):
				if err := json.Unmarshal([]byte(line[6:]), &ev.Data); err != nil {
					f.t.Errorf("data is not JSON: %q", line)
				}
			}
		}
	}()
	ts.t.Cleanup(cancel)
	return f, response{Status: 200}
}

// next returns the next event, skipping heartbeats.
func (f *feed) next() sseEvent {
	f.t.Helper()
	for {
		select {
		case ev, ok := <-f.events:
			if !ok {
				f.t.Fatal("feed ended")
			}
			if ev.Comment != "" {
				continue
			}
			return ev
		case <-time.After(5 * time.Second):
			f.t.Fatal("no event within 5 s")
		}
	}
}

// quiet asserts that no event (heartbeats aside) arrives for a moment.
func (f *feed) quiet() {
	f.t.Helper()
	deadline := time.After(150 * time.Millisecond)
	for {
		select {
		case ev, ok := <-f.events:
			if ok && ev.Comment == "" {
				f.t.Fatalf("unexpected event %+v", ev)
			}
		case <-deadline:
			return
		}
	}
}

func (ts *testService) setName(user domain.UserID, name string) string {
	ts.t.Helper()
	body, _ := json.Marshal(map[string]string{"displayname": name})
	r := ts.do("PUT", "/_matrix/client/v3/profile/"+string(user)+"/displayname", ts.tokens[user], body)
	if r.Status != 200 {
		ts.t.Fatalf("set name: %d %s", r.Status, r.Body)
	}
	return r.Header.Get("X-Profilestore-Position")
}

// appendEvent writes a domain event straight to the store (room events,
// hides) and waits for the views, as a service would.
func (ts *testService) appendEvent(e domain.Event) eventstore.Position {
	ts.t.Helper()
	ctx := context.Background()
	if e.Meta.OccurredAt.IsZero() {
		e.Meta.OccurredAt = time.Now().UTC()
	}
	data, err := domain.Encode(ctx, ts.sealer, &e)
	if err != nil {
		ts.t.Fatal(err)
	}
	res, err := ts.store.Append(ctx, e.Stream(), eventstore.Any, []eventstore.EventData{data})
	if err != nil {
		ts.t.Fatal(err)
	}
	if err := ts.runner.WaitFor(ctx, res.Position); err != nil {
		ts.t.Fatal(err)
	}
	return res.Position
}

func TestFeedAccessAndLimits(t *testing.T) {
	ts := newTestService(t, withAnalytics(time.Minute))
	for _, tc := range []struct {
		query, token string
		status       int
		errcode      string
	}{
		{"", "", 401, "M_MISSING_TOKEN"},
		{"", "wrong", 401, "M_UNKNOWN_TOKEN"},
		{"", ts.tokens[alice], 403, "M_FORBIDDEN"},
		{"?from=abc", analyticsToken, 400, "M_INVALID_PARAM"},
		{"?category=user", analyticsToken, 400, "M_INVALID_PARAM"},
		{"?category=" + strings.Repeat("room,", 205), analyticsToken, 400, "M_INVALID_PARAM"},
		{"?type=" + strings.Repeat("a,", 16) + "b", analyticsToken, 400, "M_INVALID_PARAM"},
		{"?type=profile.erased,", analyticsToken, 400, "M_INVALID_PARAM"},
		{"?type=bogus", analyticsToken, 400, "M_INVALID_PARAM"},
		{"?type=profile.field_set,profile.Field_set", analyticsToken, 400, "M_INVALID_PARAM"},
		{"?category=profile&type=room.member_joined", analyticsToken, 400, "M_INVALID_PARAM"},
		{"?category=room&type=profile.erased", analyticsToken, 400, "M_INVALID_PARAM"},
	} {
		_, r := ts.openFeed(tc.query, tc.token)
		if r.Status != tc.status || r.errcode(t) != tc.errcode {
			t.Errorf("%q with %q: %d %s", tc.query, tc.token, r.Status, r.Body)
		}
	}
	// At the limits: 16 types and 1024 bytes are fine.
	if _, r := ts.openFeed("?type="+strings.Repeat("profile.field_set,", 15)+"room.member_joined", analyticsToken); r.Status != 200 {
		t.Errorf("16 types: %d %s", r.Status, r.Body)
	}
	if _, r := ts.openFeed("?category=room&type=room.member_joined", analyticsToken); r.Status != 200 {
		t.Errorf("a type in its category: %d %s", r.Status, r.Body)
	}
	if _, r := ts.openFeed("?category="+strings.Repeat("room,", 203)+"room", ts.tokens[admin]); r.Status != 200 {
		t.Errorf("1019-byte category: %d %s", r.Status, r.Body)
	}
}

func TestFeedCatchUpLiveFilterAndHeartbeat(t *testing.T) {
	ts := newTestService(t, withAnalytics(50*time.Millisecond))
	ts.setName(alice, "Alice One")
	p2 := ts.setName(alice, "Alice Two")
	ts.appendEvent(domain.Event{Type: domain.TypeMemberJoined, Room: "!r:example.com", User: bob, DisplayName: ptr("Bob in R")})

	f, _ := ts.openFeed("", analyticsToken)
	ev := f.next()
	if ev.Event != "profile.field_set" || ev.Data["type"] != "profile.field_set" || ev.Data["stream"] != "profile-@alice:example.com" {
		t.Fatalf("first event: %+v", ev)
	}
	if data := ev.Data["data"].(map[string]any); data["value"] != "Alice One" || data["key"] != "displayname" || data["v"] != 1.0 {
		t.Errorf("opened payload: %+v", data)
	}
	if ev.ID != ev.Data["position"] {
		t.Errorf("id %q is not the position %v", ev.ID, ev.Data["position"])
	}
	if ev := f.next(); ev.ID != p2 {
		t.Errorf("second id %q, want %q", ev.ID, p2)
	}
	if ev := f.next(); ev.Event != "room.member_joined" || ev.Data["data"].(map[string]any)["displayname"] != "Bob in R" {
		t.Errorf("room event: %+v", ev)
	}
	// Live, then a heartbeat when idle.
	p4 := ts.setName(bob, "Bob")
	if ev := f.next(); ev.ID != p4 {
		t.Errorf("live event %q, want %q", ev.ID, p4)
	}
	select {
	case ev := <-f.events:
		if ev.Comment != "heartbeat" {
			t.Errorf("want a heartbeat, got %+v", ev)
		}
	case <-time.After(2 * time.Second):
		t.Error("no heartbeat")
	}

	// Filters: from a position, by category, by type.
	rooms, _ := ts.openFeed("?category=room", analyticsToken)
	if ev := rooms.next(); ev.Event != "room.member_joined" {
		t.Errorf("room filter: %+v", ev)
	}
	rooms.quiet()
	from, _ := ts.openFeed("?from="+p2+"&type=profile.field_set", ts.tokens[admin])
	if ev := from.next(); ev.ID != p4 {
		t.Errorf("from %s with type filter: %+v", p2, ev)
	}
}

func ptr(s string) *string { return &s }

func TestFeedHiddenAndErased(t *testing.T) {
	ts := newTestService(t, withAnalytics(time.Minute))
	old := ts.setName(alice, "Deadname Marker")
	ts.setName(alice, "Alice")
	oldPos, _ := eventstore.ParsePosition(old)
	ts.appendEvent(domain.Event{Type: domain.TypeEntryHidden, User: alice, Hidden: oldPos, Meta: domain.Metadata{Actor: alice}})

	f, _ := ts.openFeed("", analyticsToken)
	ev := f.next()
	if _, has := ev.Data["data"].(map[string]any)["value"]; ev.Data["hidden"] != true || has {
		t.Errorf("hidden entry for an analytics reader: %+v", ev)
	}
	a, _ := ts.openFeed("", ts.tokens[admin])
	if ev := a.next(); ev.Data["hidden"] != true || ev.Data["data"].(map[string]any)["value"] != "Deadname Marker" {
		t.Errorf("admins see hidden entries, marked: %+v", ev)
	}

	if r := ts.do("POST", "/_profilestore/v1/users/@alice:example.com/erase", ts.tokens[admin], `{}`); r.Status != 200 {
		t.Fatal(r.Status)
	}
	f, _ = ts.openFeed("", ts.tokens[admin])
	for i := 0; i < 4; i++ {
		ev := f.next()
		data := ev.Data["data"].(map[string]any)
		if _, has := data["value"]; has {
			t.Errorf("erased value in the feed: %+v", ev)
		}
		if ev.Event == "profile.field_set" && ev.Data["erased"] != true {
			t.Errorf("erased entry not flagged: %+v", ev)
		}
		if i == 3 && ev.Event != "profile.erased" {
			t.Errorf("last event %+v", ev)
		}
	}
}

// TestFeedResumesAcrossRestart reads part of the feed, restarts the server
// on the same data directory and resumes with Last-Event-ID: the events
// continue with no gap and no duplicate, then live.
func TestFeedResumesAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	ts := newTestServiceIn(t, dir, withAnalytics(time.Minute))
	var positions []string
	for i := 0; i < 5; i++ {
		positions = append(positions, ts.setName(alice, "Alice "+string(rune('A'+i))))
	}
	f, _ := ts.openFeed("", analyticsToken)
	var last string
	for i := 0; i < 3; i++ {
		last = f.next().ID
	}
	f.cancel()
	ts.Stop()

	ts2 := newTestServiceIn(t, dir, withAnalytics(time.Minute))
	f2, _ := ts2.openFeed("?from=1", analyticsToken, "Last-Event-ID", last) // the header wins over from
	got := []string{f2.next().ID, f2.next().ID}
	live := ts2.setName(alice, "Alice Live")
	got = append(got, f2.next().ID)
	want := []string{positions[3], positions[4], live}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("after restart got %v, want %v", got, want)
	}
	f2.quiet()
}
