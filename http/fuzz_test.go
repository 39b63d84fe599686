package http_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"

	pshttp "github.com/profilestore/profilestore/http"
)

// checkFuzzedWrite sends one write straight to the service's handler and
// holds it to the rules every write route keeps: the answer is 200 or a
// Matrix error (JSON with an errcode), never a 5xx, and a refused write
// never moves the log.
func checkFuzzedWrite(t *testing.T, ts *testService, method, target, token string, body []byte) {
	t.Helper()
	head := func() string { p, _ := ts.store.Head(context.Background()); return p.String() }
	before := head()
	req, err := http.NewRequest(method, "http://x"+target, bytes.NewReader(body))
	if err != nil {
		return // not a request a client could send
	}
	req.Header.Set("Authorization", "Bearer "+token)
	rec := httptest.NewRecorder()
	ts.server.Config.Handler.ServeHTTP(rec, req)
	if rec.Code >= 500 {
		t.Fatalf("%s %s %q: %d %s", method, target, body, rec.Code, rec.Body)
	}
	if rec.Code >= 300 && rec.Code < 400 {
		// The router redirects paths with empty or dot segments to their
		// clean form ("/members//profile/x"); nothing was written.
		if rec.Header().Get("Location") == "" || head() != before {
			t.Fatalf("redirect %d without a Location, or after a write", rec.Code)
		}
		return
	}
	var m map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &m); err != nil {
		t.Fatalf("answer is not JSON: %s", rec.Body)
	}
	if rec.Code != 200 {
		if code, _ := m["errcode"].(string); code == "" {
			t.Fatalf("error without errcode: %d %s", rec.Code, rec.Body)
		}
		if head() != before {
			t.Fatalf("a refused write (%d) moved the log", rec.Code)
		}
	}
}

// unlimitedWrites turns the write rate limit off: at fuzzing speed most
// inputs would otherwise only meet a 429.
func unlimitedWrites(c *pshttp.Config) { c.WriteRate = 0 }

// FuzzProfileWrite throws arbitrary bodies, keys and query strings at the
// profile write route.
func FuzzProfileWrite(f *testing.F) {
	seeds := []struct{ key, query, body string }{
		{"displayname", "", `{"displayname":"Alice"}`},
		{"displayname", "propagate_to=all", `{"displayname":""}`},
		{"org.example.x", "", `{"org.example.x":{"nested":[1,2,{"a":null}]}}`},
		{"org.example.x", "", `{"org.example.x":1e999}`},
		{"avatar_url", "propagate=false", `{"avatar_url":"mxc://a/b"}`},
		{"m.tz", "", `{"m.tz":"Europe/London"}`},
		{"Bad Key", "", `{}`},
		{"displayname", "propagate_to=%zz", `{"displayname":"\ud800"}`},
		{"displayname", "", "\xff\xfe"},
		{"displayname", "", `{"displayname":"a","displayname":"b"}`},
	}
	for _, s := range seeds {
		f.Add(s.key, s.query, []byte(s.body))
	}
	ts := newTestService(f, unlimitedWrites)
	token := ts.tokens[alice]
	f.Fuzz(func(t *testing.T, key, query string, body []byte) {
		checkFuzzedWrite(t, ts, "PUT", "/_matrix/client/v3/profile/@alice:example.com/"+url.PathEscape(key)+"?"+query, token, body)
	})
}

// The room write routes FuzzRoomWrite chooses from.
const (
	fuzzMembership = iota
	fuzzMemberProfile
	fuzzHistoryVisibility
	fuzzPowerLevels
	fuzzRoutes
)

// FuzzRoomWrite throws arbitrary bodies at the room write routes
// (membership, per-room profile, history_visibility, power_levels), with a
// fuzzed user id or field in the path, as the caller each route admits
// (an admin for room settings, the member for their per-room profile).
func FuzzRoomWrite(f *testing.F) {
	seeds := []struct {
		route     uint8
		user, arg string
		body      string
	}{
		{fuzzMembership, "@bob:example.com", "", `{"membership":"join","displayname":"Bob","avatar_url":"mxc://example.com/b"}`},
		{fuzzMembership, "@bob:example.com", "", `{"membership":"join","displayname":null,"avatar_url":"https://x"}`},
		{fuzzMembership, "@bob:example.com", "", `{"membership":"invite","displayname":7}`},
		{fuzzMembership, "@Bob Historical:example.com", "", `{"membership":"ban"}`},
		{fuzzMembership, "@bob:example.com", "", `{"membership":"shrug"}`},
		{fuzzMembership, "bob", "", `{"membership":"leave"}`},
		{fuzzMemberProfile, "@alice:example.com", "displayname", `{"displayname":"Captain"}`},
		{fuzzMemberProfile, "@alice:example.com", "avatar_url", `{"avatar_url":"not mxc"}`},
		{fuzzMemberProfile, "@alice:example.com", "m.tz", `{"m.tz":"UTC"}`},
		{fuzzMemberProfile, "@bob:example.com", "displayname", `{"displayname":"Not me"}`},
		{fuzzHistoryVisibility, "", "", `{"history_visibility":"joined"}`},
		{fuzzHistoryVisibility, "", "", `{"history_visibility":"bogus"}`},
		{fuzzHistoryVisibility, "", "", `{"history_visibility":["shared"]}`},
		{fuzzPowerLevels, "", "", `{"users":{"@mod:example.com":100},"users_default":0,"kick":50}`},
		{fuzzPowerLevels, "", "", `{"users":{"nobody":1e300},"kick":"50"}`},
		{fuzzPowerLevels, "", "", `{"users":{"@a:example.com":9007199254740993}}`},
		{fuzzPowerLevels, "", "", `[]`},
		{fuzzMembership, "@bob:example.com", "", "\x00"},
	}
	for _, s := range seeds {
		f.Add(s.route, s.user, s.arg, []byte(s.body))
	}
	ts := newTestService(f, unlimitedWrites)
	const room = "/_profilestore/v1/rooms/!fuzz:example.com"
	f.Fuzz(func(t *testing.T, route uint8, user, arg string, body []byte) {
		switch route % fuzzRoutes {
		case fuzzMembership:
			checkFuzzedWrite(t, ts, "PUT", room+"/members/"+url.PathEscape(user), ts.tokens[admin], body)
		case fuzzMemberProfile:
			// Alice writing her own per-room profile reaches the body
			// decoder; another user id in the path is refused first.
			checkFuzzedWrite(t, ts, "PUT", room+"/members/"+url.PathEscape(user)+"/profile/"+url.PathEscape(arg), ts.tokens[alice], body)
		case fuzzHistoryVisibility:
			checkFuzzedWrite(t, ts, "PUT", room+"/history_visibility", ts.tokens[admin], body)
		case fuzzPowerLevels:
			checkFuzzedWrite(t, ts, "PUT", room+"/power_levels", ts.tokens[admin], body)
		}
	})
}
