package http_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/profilestore/profilestore/domain"
	"github.com/profilestore/profilestore/eventstore"
	pshttp "github.com/profilestore/profilestore/http"
)

// TestVersionsAdvertiseExtendedProfiles: matrix-js-sdk before v39 enables
// extended profiles only when both MSC4133 flags are advertised.
func TestVersionsAdvertiseExtendedProfiles(t *testing.T) {
	ts := newTestService(t)
	features, _ := ts.do("GET", "/_matrix/client/versions", "", nil).json(t)["unstable_features"].(map[string]any)
	for _, flag := range []string{"uk.tcpip.msc4133", "uk.tcpip.msc4133.stable"} {
		if features[flag] != true {
			t.Errorf("unstable_features lacks %s: %v", flag, features)
		}
	}
}

// TestIdsInPathsMustBeUTF8: user and room ids (and every other path
// variable) with bytes that are not UTF-8 or with an encoded surrogate are
// 400 M_INVALID_PARAM on every route, and a refused write appends nothing.
func TestIdsInPathsMustBeUTF8(t *testing.T) {
	ts := newTestService(t)
	const room = "!r:example.com"
	if r := ts.do("PUT", "/_profilestore/v1/rooms/"+room+"/members/@admin:example.com", ts.tokens[admin], `{"membership":"join"}`); r.Status != 200 {
		t.Fatalf("setup: %d %s", r.Status, r.Body)
	}
	badUsers := []string{"@x%FF:example.com", "@x%ED%A0%80:example.com"}
	badRooms := []string{"!r%C3%28:example.com", "!r%ED%B0%80:example.com"}
	type req struct{ method, path, body string }
	var cases []req
	for _, u := range badUsers {
		cases = append(cases,
			req{"PUT", "/_matrix/client/v3/profile/" + u + "/displayname", `{"displayname":"X"}`},
			req{"DELETE", "/_matrix/client/v3/profile/" + u + "/displayname", ""},
			req{"GET", "/_matrix/client/v3/profile/" + u, ""},
			req{"GET", "/_matrix/client/v3/profile/" + u + "/displayname", ""},
			req{"POST", "/_profilestore/v1/users/" + u + "/erase", `{}`},
			req{"GET", "/_profilestore/v1/users/" + u + "/history", ""},
			req{"POST", "/_profilestore/v1/users/" + u + "/history/1/hide", `{}`},
			req{"PUT", "/_profilestore/v1/rooms/" + room + "/members/" + u, `{"membership":"join"}`},
			req{"PUT", "/_profilestore/v1/rooms/" + room + "/members/" + u + "/profile/displayname", `{"displayname":"X"}`},
		)
	}
	for _, rm := range badRooms {
		cases = append(cases,
			req{"PUT", "/_profilestore/v1/rooms/" + rm + "/members/@admin:example.com", `{"membership":"join"}`},
			req{"PUT", "/_profilestore/v1/rooms/" + rm + "/members/@admin:example.com/profile/displayname", `{"displayname":"X"}`},
			req{"PUT", "/_profilestore/v1/rooms/" + rm + "/history_visibility", `{"history_visibility":"joined"}`},
			req{"PUT", "/_profilestore/v1/rooms/" + rm + "/power_levels", `{}`},
			req{"GET", "/_profilestore/v1/rooms/" + rm + "/members", ""},
			req{"GET", "/_profilestore/v1/rooms/" + rm + "/history", ""},
			req{"GET", "/_profilestore/v1/rooms/" + rm + "/lookalikes", ""},
			req{"GET", "/_matrix/client/v3/rooms/" + rm + "/joined_members", ""},
		)
	}
	cases = append(cases, req{"PUT", "/_matrix/client/v3/profile/@admin:example.com/com.example%FF", `{"com.example\u00ff":"X"}`})
	for _, c := range cases {
		t.Run(c.method+" "+c.path, func(t *testing.T) {
			before := ts.head()
			var body any
			if c.body != "" {
				body = c.body
			}
			r := ts.do(c.method, c.path, ts.tokens[admin], body)
			if r.Status != 400 || r.errcode(t) != "M_INVALID_PARAM" {
				t.Errorf("%d %s, want 400 M_INVALID_PARAM", r.Status, r.Body)
			}
			if after := ts.head(); after != before {
				t.Errorf("the log moved from %s to %s", before, after)
			}
		})
	}
}

// TestMalformedQueryIsRefused: a query that does not parse, or is not
// UTF-8, is 400 M_INVALID_PARAM on every route instead of being dropped
// (propagate_to=%ZZ applied the default, at=%ZZ read "now", from=%ZZ the
// first page); a refused write appends nothing.
func TestMalformedQueryIsRefused(t *testing.T) {
	ts := newTestService(t)
	const room = "!r:example.com"
	if r := ts.do("PUT", "/_profilestore/v1/rooms/"+room+"/members/@alice:example.com", ts.tokens[admin], `{"membership":"join"}`); r.Status != 200 {
		t.Fatalf("setup: %d %s", r.Status, r.Body)
	}
	cases := []struct{ method, path, body string }{
		{"PUT", "/_matrix/client/v3/profile/@alice:example.com/displayname?propagate_to=%ZZ", `{"displayname":"New"}`},
		{"PUT", "/_matrix/client/v3/profile/@alice:example.com/displayname?propagate=true;x=1", `{"displayname":"New"}`},
		{"DELETE", "/_matrix/client/v3/profile/@alice:example.com/displayname?propagate_to=%Z", ""},
		{"PUT", "/_matrix/client/v3/profile/@alice:example.com/displayname?user_id=%ZZ", `{"displayname":"New"}`},
		{"PUT", "/_profilestore/v1/rooms/" + room + "/members/@alice:example.com/profile/displayname?x=%FF", `{"displayname":"New"}`},
		{"GET", "/_matrix/client/v3/profile/@alice:example.com?x=%FF", ""},
		{"GET", "/_profilestore/v1/rooms/" + room + "/members?at=%ZZ", ""},
		{"GET", "/_profilestore/v1/rooms/" + room + "/history?from=%ZZ", ""},
		{"GET", "/_profilestore/v1/users/@alice:example.com/history?kind=%ZZ", ""},
		{"GET", "/_profilestore/v1/names/search?q=%ZZ", ""},
		{"GET", "/_profilestore/v1/events?from=%ZZ", ""},
		{"GET", "/_profilestore/v1/stats?from=%ZZ", ""},
		{"POST", "/_matrix/client/v3/user_directory/search?%ZZ", `{"search_term":"a"}`},
	}
	for _, c := range cases {
		t.Run(c.method+" "+c.path, func(t *testing.T) {
			before := ts.head()
			var body any
			if c.body != "" {
				body = c.body
			}
			r := ts.do(c.method, c.path, ts.tokens[admin], body)
			if r.Status != 400 || r.errcode(t) != "M_INVALID_PARAM" {
				t.Errorf("%d %s, want 400 M_INVALID_PARAM", r.Status, r.Body)
			}
			if after := ts.head(); after != before {
				t.Errorf("the log moved from %s to %s", before, after)
			}
		})
	}
}

// TestMalformedPathIsAMatrixError: requests net/http cannot parse itself (a
// bad %-escape in the path, no Host header) get a Matrix JSON error from
// the real server, not Go's text/plain "400 Bad Request".
func TestMalformedPathIsAMatrixError(t *testing.T) {
	var cfg pshttp.Config
	newTestService(t, func(c *pshttp.Config) { cfg = *c })
	cfg.Addr = "127.0.0.1:0"
	srv := pshttp.NewServer(cfg)
	if err := srv.Open(); err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	cases := []struct {
		name, request string
		status        int
		errcode       string
	}{
		{"bad escape in the path", "GET /_profilestore/v1/rooms/%ZZ/members HTTP/1.1\r\nHost: x\r\n\r\n", 400, "M_INVALID_PARAM"},
		{"truncated escape in the path", "PUT /_matrix/client/v3/profile/@a:x/displayname% HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}", 400, "M_INVALID_PARAM"},
		{"no Host header", "GET /health HTTP/1.1\r\n\r\n", 400, "M_INVALID_PARAM"},
		{"headers over the limit", "GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("a", 1<<20+4096) + "\r\n\r\n", 431, "M_TOO_LARGE"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			conn, err := net.Dial("tcp", strings.TrimPrefix(srv.URL(), "http://"))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			if _, err := io.WriteString(conn, c.request); err != nil {
				t.Fatal(err)
			}
			resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			var e map[string]any
			if err := json.Unmarshal(body, &e); err != nil {
				t.Fatalf("%d %q is not JSON: %v", resp.StatusCode, body, err)
			}
			if resp.StatusCode != c.status || e["errcode"] != c.errcode || resp.Header.Get("Content-Type") != "application/json" {
				t.Errorf("%d %v %s, want %d %s", resp.StatusCode, resp.Header, body, c.status, c.errcode)
			}
		})
	}
	// A well-formed request on the same server is answered normally.
	resp, err := http.Get(srv.URL() + "/_matrix/client/versions")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("versions: %d", resp.StatusCode)
	}
}

// TestMemberProfileNullAndNotJoined: a per-room null is refused as on the
// global route, and clearing (DELETE or "") while not joined is 403 like
// setting; none of them appends anything.
func TestMemberProfileNullAndNotJoined(t *testing.T) {
	ts := newTestService(t)
	const base = "/_profilestore/v1/rooms/!r:example.com/members/"
	if r := ts.do("PUT", base+"@alice:example.com", ts.tokens[admin], `{"membership":"join"}`); r.Status != 200 {
		t.Fatalf("setup: %d %s", r.Status, r.Body)
	}
	if r := ts.do("PUT", base+"@alice:example.com/profile/displayname", ts.tokens[alice], `{"displayname":"Nick"}`); r.Status != 200 {
		t.Fatalf("setup: %d %s", r.Status, r.Body)
	}
	cases := []struct {
		name, method, path, body string
		status                   int
		errcode                  string
	}{
		{"null displayname", "PUT", base + "@alice:example.com/profile/displayname", `{"displayname":null}`, 400, "M_INVALID_PARAM"},
		{"null avatar_url", "PUT", base + "@alice:example.com/profile/avatar_url", `{"avatar_url":null}`, 400, "M_INVALID_PARAM"},
		{"DELETE while not joined", "DELETE", base + "@bob:example.com/profile/displayname", "", 403, "M_FORBIDDEN"},
		{"empty value while not joined", "PUT", base + "@bob:example.com/profile/displayname", `{"displayname":""}`, 403, "M_FORBIDDEN"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := ts.head()
			var body any
			if c.body != "" {
				body = c.body
			}
			tok := ts.tokens[alice]
			if strings.Contains(c.path, "@bob") {
				tok = ts.tokens[bob]
			}
			r := ts.do(c.method, c.path, tok, body)
			if r.Status != c.status || r.errcode(t) != c.errcode {
				t.Errorf("%d %s, want %d %s", r.Status, r.Body, c.status, c.errcode)
			}
			if after := ts.head(); after != before {
				t.Errorf("the log moved from %s to %s", before, after)
			}
		})
	}
	m := ts.do("GET", "/_profilestore/v1/rooms/!r:example.com/members", ts.tokens[admin], nil)
	if !strings.Contains(string(m.Body), `"displayname":"Nick"`) {
		t.Errorf("the override did not survive the refused null: %s", m.Body)
	}
}

// TestEraseOfANeverSeenUserAppendsNothing: erasing a user nothing was ever
// stored about answers like any erase and creates no stream; a user known
// only from a room is still erased.
func TestEraseOfANeverSeenUserAppendsNothing(t *testing.T) {
	ts := newTestService(t)
	before := ts.head()
	// Who may erase is checked first: the answer tells nobody else whether
	// the user was ever seen.
	if r := ts.do("POST", "/_profilestore/v1/users/@never:example.com/erase", ts.tokens[bob], `{}`); r.Status != 403 || r.errcode(t) != "M_FORBIDDEN" {
		t.Errorf("bob erasing another user: %d %s, want 403 M_FORBIDDEN", r.Status, r.Body)
	}
	r := ts.do("POST", "/_profilestore/v1/users/@never:example.com/erase", ts.tokens[admin], `{}`)
	if r.Status != 200 || r.json(t)["erased"] != true {
		t.Fatalf("erase: %d %s", r.Status, r.Body)
	}
	if after := ts.head(); after != before {
		t.Errorf("erasing a never-seen user moved the log from %s to %s", before, after)
	}
	recs, err := ts.store.ReadStream(context.Background(), domain.ProfileStream("@never:example.com"), 0, eventstore.Forwards, 10)
	if err != nil || len(recs) != 0 {
		t.Errorf("the never-seen user has a stream: %v %v", recs, err)
	}

	// Known only as a room member with a per-room name: erased for real.
	if r := ts.do("PUT", "/_profilestore/v1/rooms/!r:example.com/members/@roomonly:example.com", ts.tokens[admin], `{"membership":"join","displayname":"Only Here"}`); r.Status != 200 {
		t.Fatalf("join: %d %s", r.Status, r.Body)
	}
	before = ts.head()
	if r := ts.do("POST", "/_profilestore/v1/users/@roomonly:example.com/erase", ts.tokens[admin], `{}`); r.Status != 200 {
		t.Fatalf("erase: %d %s", r.Status, r.Body)
	}
	if after := ts.head(); after == before {
		t.Errorf("a user known from a room was not erased")
	}
	if m := ts.do("GET", "/_profilestore/v1/rooms/!r:example.com/members", ts.tokens[admin], nil); strings.Contains(string(m.Body), "Only Here") {
		t.Errorf("the erased per-room name is still shown: %s", m.Body)
	}
}

// TestDirectorySearchRefusesNullAndBadLimits: search_term null and a limit
// that is not a positive integer are 400 M_INVALID_PARAM; a large limit is
// capped.
func TestDirectorySearchRefusesNullAndBadLimits(t *testing.T) {
	ts := newTestService(t)
	for _, body := range []string{
		`{"search_term":null}`,
		`{"search_term":"a","limit":-1}`,
		`{"search_term":"a","limit":0}`,
		`{"search_term":"a","limit":null}`,
		`{"search_term":"a","limit":1.5}`,
		`{"search_term":"a","limit":"5"}`,
		`{"search_term":"` + strings.Repeat("é", 257) + `"}`,
	} {
		t.Run(body, func(t *testing.T) {
			r := ts.do("POST", "/_matrix/client/v3/user_directory/search", ts.tokens[alice], body)
			if r.Status != 400 || r.errcode(t) != "M_INVALID_PARAM" {
				t.Errorf("%d %s, want 400 M_INVALID_PARAM", r.Status, r.Body)
			}
		})
	}
	if r := ts.do("POST", "/_matrix/client/v3/user_directory/search", ts.tokens[alice], `{"search_term":"a","limit":1000}`); r.Status != 200 {
		t.Errorf("a large limit: %d %s", r.Status, r.Body)
	}
	if r := ts.do("POST", "/_matrix/client/v3/user_directory/search", ts.tokens[alice], `{"search_term":"`+strings.Repeat("é", 256)+`"}`); r.Status != 200 {
		t.Errorf("a 256-character term: %d %s", r.Status, r.Body)
	}
}

// TestRoomLookalikesAccessIsMembers holds what docs/SECURITY.md says of
// look-alikes: the same readers as /members (members joined now,
// moderators, admins), not moderators only.
func TestRoomLookalikesAccessIsMembers(t *testing.T) {
	ts := newTestService(t)
	ts.ok("PUT", v1+"/members/"+string(alice), admin, map[string]string{"membership": "join", "displayname": "Alice"})
	if r := ts.do("GET", v1+"/lookalikes", ts.tokens[alice], nil); r.Status != 200 {
		t.Errorf("a joined member: %d %s, want 200", r.Status, r.Body)
	}
	if r := ts.do("GET", v1+"/lookalikes", ts.tokens[bob], nil); r.Status != 403 || r.errcode(t) != "M_FORBIDDEN" {
		t.Errorf("a non-member: %d %s, want 403 M_FORBIDDEN", r.Status, r.Body)
	}
	ts.ok("PUT", v1+"/members/"+string(alice), admin, map[string]string{"membership": "leave"})
	if r := ts.do("GET", v1+"/lookalikes", ts.tokens[alice], nil); r.Status != 403 {
		t.Errorf("a member who left: %d %s, want 403", r.Status, r.Body)
	}
}

// TestBodiesAndHeadersAreNotSilentlyChanged: a body with bytes that are
// not UTF-8 or with a lone surrogate escape (which Go's decoder turns into
// U+FFFD), a parameter given twice, an over-long Idempotency-Key (which
// was dropped, so a retry wrote twice) and a null power level are refused,
// and nothing is appended.
func TestBodiesAndHeadersAreNotSilentlyChanged(t *testing.T) {
	ts := newTestService(t)
	const dn = "/_matrix/client/v3/profile/@alice:example.com/displayname"
	cases := []struct {
		name, method, path, body string
		headers                  []string
		status                   int
		errcode                  string
	}{
		{"body not UTF-8", "PUT", dn, "{\"displayname\":\"x\xff\"}", nil, 400, "M_NOT_JSON"},
		{"lone high surrogate", "PUT", dn, `{"displayname":"x\ud800"}`, nil, 400, "M_BAD_JSON"},
		{"lone low surrogate", "PUT", dn, `{"displayname":"\udc00x"}`, nil, 400, "M_BAD_JSON"},
		{"high surrogate then a non-surrogate escape", "PUT", dn, `{"displayname":"\ud800\u0041"}`, nil, 400, "M_BAD_JSON"},
		{"lone surrogate in a key", "PUT", "/_matrix/client/v3/profile/@alice:example.com/org.example.x", `{"org.example.x":{"\ud83d":1}}`, nil, 400, "M_BAD_JSON"},
		{"surrogate in the directory search", "POST", "/_matrix/client/v3/user_directory/search", `{"search_term":"\udfff"}`, nil, 400, "M_BAD_JSON"},
		{"a key twice", "PUT", dn, `{"displayname":"a","displayname":"b"}`, nil, 400, "M_BAD_JSON"},
		{"a key twice, nested", "PUT", "/_matrix/client/v3/profile/@alice:example.com/org.example.x", `{"org.example.x":[{"a":1,"b":{"c":1,"c":2}}]}`, nil, 400, "M_BAD_JSON"},
		{"a key twice, once escaped", "PUT", dn, `{"displayname":"a","display\u006eame":"b"}`, nil, 400, "M_BAD_JSON"},
		{"parameter twice", "PUT", dn + "?propagate_to=all&propagate_to=none", `{"displayname":"x"}`, nil, 400, "M_INVALID_PARAM"},
		{"Idempotency-Key over 255 bytes", "PUT", dn, `{"displayname":"x"}`, []string{"Idempotency-Key", strings.Repeat("k", 256)}, 400, "M_INVALID_PARAM"},
		{"null kick level", "PUT", v1 + "/power_levels", `{"kick":null}`, nil, 400, "M_INVALID_PARAM"},
		{"membership not a string", "PUT", v1 + "/members/" + string(bob), `{"membership":1}`, nil, 400, "M_INVALID_PARAM"},
		{"membership null", "PUT", v1 + "/members/" + string(bob), `{"membership":null}`, nil, 400, "M_INVALID_PARAM"},
		{"membership absent", "PUT", v1 + "/members/" + string(bob), `{}`, nil, 400, "M_MISSING_PARAM"},
		{"history_visibility not a string", "PUT", v1 + "/history_visibility", `{"history_visibility":["joined"]}`, nil, 400, "M_INVALID_PARAM"},
		{"history_visibility absent", "PUT", v1 + "/history_visibility", `{}`, nil, 400, "M_MISSING_PARAM"},
		{"null users", "PUT", v1 + "/power_levels", `{"users":null}`, nil, 400, "M_INVALID_PARAM"},
		{"null level of a user", "PUT", v1 + "/power_levels", `{"users":{"@alice:example.com":null}}`, nil, 400, "M_INVALID_PARAM"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := ts.head()
			r := ts.do(c.method, c.path, ts.tokens[admin], c.body, c.headers...)
			if r.Status != c.status || r.errcode(t) != c.errcode {
				t.Errorf("%d %s, want %d %s", r.Status, r.Body, c.status, c.errcode)
			}
			if after := ts.head(); after != before {
				t.Errorf("the log moved from %s to %s", before, after)
			}
		})
	}
	// What is valid still passes: a surrogate pair, escaped backslashes
	// before a u, U+FFFD written as itself, a key of 255 bytes.
	if r := ts.do("PUT", "/_matrix/client/v3/profile/@alice:example.com/org.example.x", ts.tokens[alice], `{"org.example.x":[{"a":{"a":1}},{"a":[{"a":2}]}],"a":3}`); r.Status != 200 {
		t.Errorf("the same key in different objects: %d %s", r.Status, r.Body)
	}
	for _, body := range []string{`{"displayname":"smile \ud83d\ude00"}`, `{"displayname":"a\\ud800"}`, `{"displayname":"\ufffd"}`} {
		if r := ts.do("PUT", dn, ts.tokens[alice], body); r.Status != 200 {
			t.Errorf("%s: %d %s", body, r.Status, r.Body)
		}
	}
	if r := ts.do("PUT", dn, ts.tokens[alice], `{"displayname":"ok"}`, "Idempotency-Key", strings.Repeat("k", 255)); r.Status != 200 {
		t.Errorf("a 255-byte Idempotency-Key: %d %s", r.Status, r.Body)
	}
	if r := ts.do("GET", dn, "", nil); r.json(t)["displayname"] != "ok" {
		t.Errorf("after the valid writes: %s", r.Body)
	}
}

// FuzzRawRequest sends arbitrary request lines (method, target) over TCP to
// the real server, as Alice: every answer is a success or a Matrix error
// (JSON with an errcode, never a 5xx), whatever net/http or the router
// makes of the line. The console (HTML) and /metrics (text) are left out.
func FuzzRawRequest(f *testing.F) {
	for _, s := range [][2]string{
		{"GET", "/_matrix/client/v3/profile/@alice:example.com"},
		{"GET", "/_profilestore/v1/rooms/%ZZ/members"},
		{"PUT", "/_matrix/client/v3/profile/@x%FF:example.com/displayname"},
		{"GET", "/_profilestore/v1/rooms/!r:example.com/history?from=%ZZ&dir=b;x"},
		{"POST", "/_profilestore/v1/profiles/query?users=1&users=2"},
		{"DELETE", "/_profilestore/v1/rooms/!r%C3%28:example.com/members/@alice:example.com/profile/displayname"},
		{"GET", "/_matrix/client/versions"},
		{"BREW", "/coffee"},
		{"GET", "*"},
		{"GET", "http://example.com/_matrix/client/versions"},
		{"GET", "/_profilestore/v1/events?type=bogus"},
	} {
		f.Add(s[0], s[1])
	}
	var cfg pshttp.Config
	ts := newTestService(f, func(c *pshttp.Config) { cfg = *c })
	cfg.Addr = "127.0.0.1:0"
	srv := pshttp.NewServer(cfg)
	if err := srv.Open(); err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { srv.Close() })
	addr := strings.TrimPrefix(srv.URL(), "http://")
	token := ts.tokens[alice]
	head := func() string { p, _ := ts.store.Head(context.Background()); return p.String() }
	f.Fuzz(func(t *testing.T, method, target string) {
		if strings.ContainsAny(method+target, " \r\n") || strings.HasPrefix(target, "/console") || strings.HasPrefix(target, "/metrics") {
			return // not one request line, or not a JSON route
		}
		before := head()
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
		fmt.Fprintf(conn, "%s %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}", method, target, token)
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatalf("%s %s: no HTTP answer: %v", method, target, err)
		}
		defer resp.Body.Close()
		if resp.Header.Get("Content-Type") == "text/event-stream" {
			return // a feed opened; it never ends on its own
		}
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode >= 500 {
			t.Fatalf("%s %s: %d %s", method, target, resp.StatusCode, body)
		}
		if resp.StatusCode >= 300 && resp.StatusCode < 400 {
			return // the router cleans paths with a redirect; nothing happened
		}
		if resp.StatusCode >= 400 {
			var e map[string]any
			if err := json.Unmarshal(body, &e); err != nil || e["errcode"] == nil || e["errcode"] == "" {
				t.Fatalf("%s %s: %d %q is not a Matrix error", method, target, resp.StatusCode, body)
			}
			if after := head(); after != before {
				t.Fatalf("%s %s: refused (%d) but the log moved", method, target, resp.StatusCode)
			}
		}
	})
}

// TestConsoleMalformedQueryIsAPage: the console refuses a malformed query
// too, as a page for the person reading it rather than a JSON error.
func TestConsoleMalformedQueryIsAPage(t *testing.T) {
	ts := newTestService(t)
	status, body, hdr := ts.consoleGet("/console/names?q=%ZZ", ts.consoleCookieOf(admin))
	if status != http.StatusBadRequest || !strings.HasPrefix(hdr.Get("Content-Type"), "text/html") || !strings.Contains(body, "The query string is malformed") {
		t.Errorf("%d %s %s", status, hdr.Get("Content-Type"), body)
	}
}
