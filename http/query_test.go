package http_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	pshttp "github.com/profilestore/profilestore/http"
)

func TestProfilesQueryChosenKeys(t *testing.T) {
	ts := newTestService(t)
	for _, w := range []struct{ user, key, body string }{
		{"@alice:example.com", "displayname", `{"displayname":"Alice"}`},
		{"@alice:example.com", "avatar_url", `{"avatar_url":"mxc://example.com/a"}`},
		{"@alice:example.com", "m.tz", `{"m.tz":"Europe/Paris"}`},
		{"@bob:example.com", "displayname", `{"displayname":"Bob"}`},
	} {
		if r := ts.do("PUT", "/_matrix/client/v3/profile/"+w.user+"/"+w.key, ts.tokens[admin], w.body); r.Status != 200 {
			t.Fatalf("setup: %d %s", r.Status, r.Body)
		}
	}
	query := func(t *testing.T, body string) map[string]map[string]any {
		t.Helper()
		r := ts.do("POST", "/_profilestore/v1/profiles/query", "", body)
		if r.Status != 200 {
			t.Fatalf("%d %s", r.Status, r.Body)
		}
		var out struct {
			Profiles map[string]map[string]any `json:"profiles"`
		}
		if err := json.Unmarshal(r.Body, &out); err != nil {
			t.Fatal(err)
		}
		return out.Profiles
	}
	got := query(t, `{"users":["@alice:example.com","@bob:example.com","@nobody:example.com"],"keys":["displayname","avatar_url"]}`)
	want := map[string]map[string]any{
		"@alice:example.com":  {"displayname": "Alice", "avatar_url": "mxc://example.com/a"},
		"@bob:example.com":    {"displayname": "Bob"},
		"@nobody:example.com": {},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("chosen keys: got %v, want %v", got, want)
	}
	// Without keys: every key.
	if got := query(t, `{"users":["@alice:example.com"]}`); len(got["@alice:example.com"]) != 3 || got["@alice:example.com"]["m.tz"] != "Europe/Paris" {
		t.Errorf("every key: %v", got)
	}
}

// TestProfilesQueryLimits: the bounds and the shape of the body, each a
// clear Matrix error.
func TestProfilesQueryLimits(t *testing.T) {
	ts := newTestService(t)
	users := func(n int) string {
		ids := make([]string, n)
		for i := range ids {
			ids[i] = fmt.Sprintf(`"@u%d:example.com"`, i)
		}
		return "[" + strings.Join(ids, ",") + "]"
	}
	keys := func(n int) string {
		ks := make([]string, n)
		for i := range ks {
			ks[i] = fmt.Sprintf(`"org.example.k%d"`, i)
		}
		return "[" + strings.Join(ks, ",") + "]"
	}
	for _, c := range []struct {
		name, body string
		status     int
		errcode    string
	}{
		{"100 users", `{"users":` + users(100) + `}`, 200, ""},
		{"101 users", `{"users":` + users(101) + `}`, 400, "M_TOO_LARGE"},
		{"64 keys", `{"users":["@a:x"],"keys":` + keys(64) + `}`, 200, ""},
		{"65 keys", `{"users":["@a:x"],"keys":` + keys(65) + `}`, 400, "M_TOO_LARGE"},
		{"no users", `{"keys":["displayname"]}`, 400, "M_MISSING_PARAM"},
		{"users null", `{"users":null}`, 400, "M_INVALID_PARAM"},
		{"users empty", `{"users":[]}`, 400, "M_INVALID_PARAM"},
		{"users not strings", `{"users":[1]}`, 400, "M_INVALID_PARAM"},
		{"a bad user id", `{"users":["alice"]}`, 400, "M_INVALID_PARAM"},
		{"keys null", `{"users":["@a:x"],"keys":null}`, 400, "M_INVALID_PARAM"},
		{"keys empty", `{"users":["@a:x"],"keys":[]}`, 400, "M_INVALID_PARAM"},
		{"a bad key", `{"users":["@a:x"],"keys":["Bad Key"]}`, 400, "M_INVALID_PARAM"},
		{"not an object", `["@a:x"]`, 400, "M_BAD_JSON"},
		{"not JSON", `{"users":`, 400, "M_NOT_JSON"},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := ts.do("POST", "/_profilestore/v1/profiles/query", "", c.body)
			if r.Status != c.status || (c.errcode != "" && r.errcode(t) != c.errcode) {
				t.Errorf("%d %.300s, want %d %s", r.Status, r.Body, c.status, c.errcode)
			}
		})
	}
	if r := ts.do("GET", "/_profilestore/v1/profiles/query", "", nil); r.Status != 405 {
		t.Errorf("GET: %d, want 405", r.Status)
	}
}

// TestProfilesQueryRequireAuth: with profile.require_auth the query needs
// a valid token, as GET /profile does.
func TestProfilesQueryRequireAuth(t *testing.T) {
	ts := newTestService(t, func(c *pshttp.Config) { c.RequireAuthForProfile = true })
	body := `{"users":["@alice:example.com"]}`
	if r := ts.do("POST", "/_profilestore/v1/profiles/query", "", body); r.Status != 401 || r.errcode(t) != "M_MISSING_TOKEN" {
		t.Errorf("no token: %d %s", r.Status, r.Body)
	}
	if r := ts.do("POST", "/_profilestore/v1/profiles/query", "wrong", body); r.Status != 401 || r.errcode(t) != "M_UNKNOWN_TOKEN" {
		t.Errorf("bad token: %d %s", r.Status, r.Body)
	}
	if r := ts.do("POST", "/_profilestore/v1/profiles/query", ts.tokens[bob], body); r.Status != 200 {
		t.Errorf("with a token: %d %s", r.Status, r.Body)
	}
}

// BenchmarkProfilesQuery measures one profiles/query of 100 users (a page
// of a member list) with two keys, over loopback against a real store.
func BenchmarkProfilesQuery(b *testing.B) {
	ts := newTestService(b)
	ids := make([]string, maxQueryUsersForBench)
	for i := range ids {
		ids[i] = fmt.Sprintf("@u%d:example.com", i)
		body := fmt.Sprintf(`{"displayname":"User %d"}`, i)
		if r := ts.do("PUT", "/_matrix/client/v3/profile/"+ids[i]+"/displayname", ts.tokens[admin], body); r.Status != 200 {
			b.Fatalf("setup: %d %s", r.Status, r.Body)
		}
	}
	raw, _ := json.Marshal(map[string]any{"users": ids, "keys": []string{"displayname", "avatar_url"}})
	for b.Loop() {
		if r := ts.do("POST", "/_profilestore/v1/profiles/query", "", raw); r.Status != 200 {
			b.Fatalf("%d %s", r.Status, r.Body)
		}
	}
}

// maxQueryUsersForBench is the route's bound (http/query.go).
const maxQueryUsersForBench = 100
