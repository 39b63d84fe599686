package http_test

import (
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/profilestore/profilestore/domain"
	"github.com/profilestore/profilestore/eventstore"
)

func TestNamesSearch(t *testing.T) {
	ts := newTestService(t)
	ts.setName(admin, "Admin")
	ts.setName(bob, "\u0410dmin") // Cyrillic А: a look-alike
	dead := ts.setName(bob, "Bobby Deadname")
	ts.setName(bob, "Bob")
	deadPos, _ := eventstore.ParsePosition(dead)
	ts.appendEvent(domain.Event{Type: domain.TypeEntryHidden, User: bob, Hidden: deadPos})
	ts.appendEvent(domain.Event{Type: domain.TypeMemberJoined, Room: "!r:example.com", User: alice, DisplayName: ptr("ADMIN")})

	search := func(token, q string, extra ...string) response {
		return ts.do("GET", "/_profilestore/v1/names/search?q="+url.QueryEscape(q)+strings.Join(extra, ""), token, nil)
	}
	r := search(ts.tokens[admin], "Admin")
	results := r.json(t)["results"].([]any)
	if r.Status != 200 || len(results) != 3 {
		t.Fatalf("admin search: %d %s", r.Status, r.Body)
	}
	first, second, third := results[0].(map[string]any), results[1].(map[string]any), results[2].(map[string]any)
	if first["user_id"] != string(admin) || first["match"] != "exact" || first["global"] != true {
		t.Errorf("first: %v", first)
	}
	if second["user_id"] != string(alice) || second["match"] != "folded" || second["rooms"].([]any)[0] != "!r:example.com" {
		t.Errorf("second: %v", second)
	}
	if third["user_id"] != string(bob) || third["match"] != "lookalike" {
		t.Errorf("third: %v", third)
	}
	// A user sees global names only (no room shared), and no hidden ones.
	r = search(ts.tokens[alice], "admin")
	if got := r.json(t)["results"].([]any); len(got) != 2 {
		t.Errorf("alice's search: %s", r.Body)
	}
	if r := search(ts.tokens[alice], "bobby deadname"); len(r.json(t)["results"].([]any)) != 0 {
		t.Errorf("a hidden name was found: %s", r.Body)
	}
	if r := search(ts.tokens[admin], "bobby deadname"); !strings.Contains(string(r.Body), `"hidden":true`) {
		t.Errorf("admins see hidden names marked: %s", r.Body)
	}
	if r := search(ts.tokens[admin], "admin", "&limit=1"); len(r.json(t)["results"].([]any)) != 1 || r.json(t)["limited"] != true {
		t.Errorf("limit=1: %s", r.Body)
	}
	for _, tc := range []struct {
		token, q, extra string
		status          int
		errcode         string
	}{
		{"", "x", "", 401, "M_MISSING_TOKEN"},
		{ts.tokens[alice], "", "", 400, "M_MISSING_PARAM"},
		{ts.tokens[alice], strings.Repeat("é", 257), "", 400, "M_INVALID_PARAM"},
		{ts.tokens[alice], "\xff", "", 400, "M_INVALID_PARAM"},
		{ts.tokens[alice], "x", "&limit=0", 400, "M_INVALID_PARAM"},
		{ts.tokens[alice], "x", "&limit=101", 400, "M_INVALID_PARAM"},
		{ts.tokens[alice], "x", "&limit=ten", 400, "M_INVALID_PARAM"},
	} {
		r := search(tc.token, tc.q, tc.extra)
		if r.Status != tc.status || r.errcode(t) != tc.errcode {
			t.Errorf("q=%.20q%s: %d %s", tc.q, tc.extra, r.Status, r.Body)
		}
	}
	if r := search(ts.tokens[alice], strings.Repeat("é", 256), "&limit=100"); r.Status != 200 {
		t.Errorf("at the limits: %d %s", r.Status, r.Body)
	}

	// Erasure takes the names out of the index.
	ts.do("POST", "/_profilestore/v1/users/@bob:example.com/erase", ts.tokens[admin], `{}`)
	if r := search(ts.tokens[admin], "admin"); len(r.json(t)["results"].([]any)) != 2 || strings.Contains(string(r.Body), "@bob") {
		t.Errorf("after erasure: %s", r.Body)
	}
}

func TestStats(t *testing.T) {
	ts := newTestService(t, withAnalytics(time.Minute))
	ts.appendEvent(domain.Event{Type: domain.TypeMemberJoined, Room: "!r:example.com", User: alice, DisplayName: ptr("A")})
	ts.setName(alice, "Alice 1")
	ts.setName(alice, "Alice 2")
	ts.setName(bob, "Bob")
	today := time.Now().UTC().Format(time.DateOnly)
	r := ts.do("GET", "/_profilestore/v1/stats?from="+today+"&to="+today+"&top=1", analyticsToken, nil)
	if r.Status != 200 {
		t.Fatalf("stats: %d %s", r.Status, r.Body)
	}
	assertJSONEqual(t, r.Body, `{"from":"`+today+`","to":"`+today+`",
		"days":[{"day":"`+today+`","profile_changes":3,"room_changes":1,"renames":3}],
		"most_renamed_users":[{"user_id":"@alice:example.com","renames":2}],
		"rooms_with_most_renames":[{"room_id":"!r:example.com","renames":2}]}`)
	if r := ts.do("GET", "/_profilestore/v1/stats", ts.tokens[admin], nil); r.Status != 200 || len(r.json(t)["days"].([]any)) != 30 {
		t.Errorf("default window: %d %s", r.Status, r.Body)
	}
	for _, tc := range []struct {
		query, token string
		status       int
	}{
		{"", ts.tokens[alice], 403},
		{"", "", 401},
		{"?from=2026-13-01", analyticsToken, 400},
		{"?from=2026-01-02&to=2026-01-01", analyticsToken, 400},
		{"?from=2025-01-01&to=2026-01-02", analyticsToken, 400}, // 367 days
		{"?from=2025-01-01&to=2026-01-01", analyticsToken, 200}, // 366 days
		{"?top=101", analyticsToken, 400},
	} {
		if r := ts.do("GET", "/_profilestore/v1/stats"+tc.query, tc.token, nil); r.Status != tc.status {
			t.Errorf("%s: %d %s", tc.query, r.Status, r.Body)
		}
	}
}
