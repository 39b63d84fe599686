package http_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/profilestore/profilestore/domain"
	pshttp "github.com/profilestore/profilestore/http"
)

const (
	alice = domain.UserID("@alice:example.com")
	bob   = domain.UserID("@bob:example.com")
	admin = domain.UserID("@admin:example.com")
)

func seedAlice(t *testing.T, ts *testService) {
	t.Helper()
	A := ts.tokens[alice]
	for _, kv := range [][2]string{
		{"displayname", `{"displayname":"Alice"}`},
		{"avatar_url", `{"avatar_url":"mxc://example.com/abc"}`},
		{"org.example.job_title", `{"org.example.job_title":"Eng"}`},
	} {
		if r := ts.do("PUT", "/_matrix/client/v3/profile/@alice:example.com/"+kv[0], A, kv[1]); r.Status != 200 {
			t.Fatalf("seed %s: %d %s", kv[0], r.Status, r.Body)
		}
	}
}

// TestMatrixProfileVectors runs the reference's test vectors
// (shared/reference/matrix-profile-spec.md, "Test vectors") one per row.
// Every row starts from its own service with Alice seeded, so any row runs
// alone with -run; a row that reads back a write names that write in given.
func TestMatrixProfileVectors(t *testing.T) {
	// Each row's service issues its own tokens: A stands for Alice's.
	const A = "<alice's token>"
	const p = "/_matrix/client/v3/profile/"
	key256 := "com." + strings.Repeat("a", 252)
	key255 := "com." + strings.Repeat("a", 251)
	cases := []struct {
		name, method, path, token, body string
		status                          int
		errcode                         string
		wantBody                        string       // exact JSON, when set
		appends                         bool         // whether the store may grow
		given                           []vectorStep // writes of Alice's made before the request
	}{
		{"1 full profile", "GET", p + "@alice:example.com", "", "", 200, "",
			`{"avatar_url":"mxc://example.com/abc","displayname":"Alice","org.example.job_title":"Eng"}`, false, nil},
		{"2 no such user", "GET", p + "@ghost:example.com", "", "", 404, "M_NOT_FOUND", "", false, nil},
		{"3 one field", "GET", p + "@alice:example.com/displayname", "", "", 200, "", `{"displayname":"Alice"}`, false, nil},
		{"4 unset field", "GET", p + "@alice:example.com/org.example.unset", "", "", 404, "M_NOT_FOUND", "", false, nil},
		{"5 set displayname", "PUT", p + "@alice:example.com/displayname", A, `{"displayname":"Alice W"}`, 200, "", `{}`, true, nil},
		{"6 empty body object", "PUT", p + "@alice:example.com/displayname", A, `{}`, 400, "M_MISSING_PARAM", "", false, nil},
		{"7 key differs from path", "PUT", p + "@alice:example.com/displayname", A, `{"avatar_url":"mxc://example.com/x"}`, 400, "M_MISSING_PARAM", "", false, nil},
		{"8 unparseable", "PUT", p + "@alice:example.com/displayname", A, `{"displayname":`, 400, "M_NOT_JSON", "", false, nil},
		{"9 not an object", "PUT", p + "@alice:example.com/displayname", A, `["Alice"]`, 400, "M_BAD_JSON", "", false, nil},
		{"10 256-byte key", "PUT", p + "@alice:example.com/" + key256, A, `{"` + key256 + `":1}`, 400, "M_KEY_TOO_LARGE", "", false, nil},
		{"10 255-byte key", "PUT", p + "@alice:example.com/" + key255, A, `{"` + key255 + `":1}`, 200, "", `{}`, true, nil},
		{"11 invalid key", "PUT", p + "@alice:example.com/JobTitle", A, `{"JobTitle":"x"}`, 400, "M_INVALID_PARAM", "", false, nil},
		{"12 profile too large", "PUT", p + "@alice:example.com/org.example.blob", A, `{"org.example.blob":"` + strings.Repeat("x", 65536) + `"}`, 400, "M_PROFILE_TOO_LARGE", "", false, nil},
		{"13 no token", "PUT", p + "@alice:example.com/displayname", "", `{"displayname":"X"}`, 401, "M_MISSING_TOKEN", "", false, nil},
		{"14 bogus token", "PUT", p + "@alice:example.com/displayname", "bogus", `{"displayname":"X"}`, 401, "M_UNKNOWN_TOKEN", "", false, nil},
		{"15 another user's profile", "PUT", p + "@bob:example.com/displayname", A, `{"displayname":"X"}`, 403, "M_FORBIDDEN", "", false, nil},
		{"16 null custom value is stored", "PUT", p + "@alice:example.com/org.example.x", A, `{"org.example.x":null}`, 200, "", `{}`, true, nil},
		{"16 null read back", "GET", p + "@alice:example.com/org.example.x", "", "", 200, "", `{"org.example.x":null}`, false,
			[]vectorStep{{"PUT", p + "@alice:example.com/org.example.x", `{"org.example.x":null}`}}},
		{"16 null displayname refused", "PUT", p + "@alice:example.com/displayname", A, `{"displayname":null}`, 400, "M_INVALID_PARAM", "", false, nil},
		{"17 delete existing", "DELETE", p + "@alice:example.com/org.example.job_title", A, "", 200, "", `{}`, true, nil},
		{"17 deleted reads 404", "GET", p + "@alice:example.com/org.example.job_title", "", "", 404, "M_NOT_FOUND", "", false,
			[]vectorStep{{"DELETE", p + "@alice:example.com/org.example.job_title", ""}}},
		{"18 delete never set", "DELETE", p + "@alice:example.com/org.example.never_set", A, "", 200, "", `{}`, false, nil},
		{"21 wrong method", "POST", p + "@alice:example.com/displayname", A, `{}`, 405, "M_UNRECOGNIZED", "", false, nil},
		{"21 unknown route", "GET", "/_matrix/client/v3/profilez", "", "", 404, "M_UNRECOGNIZED", "", false, nil},
		{"22 malformed user id", "GET", p + "alice", "", "", 400, "M_INVALID_PARAM", "", false, nil},
		{"22 malformed user id on PUT", "PUT", p + "alice/displayname", A, `{"displayname":"X"}`, 400, "M_INVALID_PARAM", "", false, nil},
		{"27 propagate=false", "PUT", p + "@alice:example.com/displayname?org.matrix.msc4069.propagate=false", A, `{"displayname":"X"}`, 200, "", `{}`, true, nil},
		{"27 propagate=maybe", "PUT", p + "@alice:example.com/displayname?propagate=maybe", A, `{"displayname":"Y"}`, 400, "M_INVALID_PARAM", "", false, nil},
		{"propagate_to invalid", "PUT", p + "@alice:example.com/displayname?propagate_to=some", A, `{"displayname":"Y"}`, 400, "M_INVALID_PARAM", "", false, nil},
		{"unstable propagate_to", "PUT", p + "@alice:example.com/displayname?computer.gingershaped.msc4466.propagate_to=all", A, `{"displayname":"Z"}`, 200, "", `{}`, true, nil},
		{"displayname too long", "PUT", p + "@alice:example.com/displayname", A, `{"displayname":"` + strings.Repeat("n", 257) + `"}`, 400, "M_TOO_LARGE", "", false, nil},
		{"avatar not mxc", "PUT", p + "@alice:example.com/avatar_url", A, `{"avatar_url":"https://x/y"}`, 400, "M_INVALID_PARAM", "", false, nil},
		{"encoded user id", "GET", p + "%40alice%3Aexample.com/displayname", "", "", 200, "", `{"displayname":"Alice"}`, false, nil},
		{"body over the cap", "PUT", p + "@alice:example.com/org.example.big", A, `{"org.example.big":"` + strings.Repeat("x", 300<<10) + `"}`, 413, "M_TOO_LARGE", "", false, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ts := newTestService(t)
			seedAlice(t, ts)
			for _, g := range c.given {
				if r := ts.do(g.method, g.path, ts.tokens[alice], bodyOrNil(g.body)); r.Status != 200 {
					t.Fatalf("given %s %s: %d %s", g.method, g.path, r.Status, r.Body)
				}
			}
			token := c.token
			if token == A {
				token = ts.tokens[alice]
			}
			before := ts.head()
			r := ts.do(c.method, c.path, token, bodyOrNil(c.body))
			if r.Status != c.status {
				t.Fatalf("status = %d, want %d; body %s", r.Status, c.status, r.Body)
			}
			if ct := r.Header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type = %q", ct)
			}
			if c.errcode != "" {
				if got := r.errcode(t); got != c.errcode {
					t.Errorf("errcode = %q, want %q (body %s)", got, c.errcode, r.Body)
				}
				if msg, _ := r.json(t)["error"].(string); msg == "" {
					t.Error("error text is empty")
				}
			}
			if c.wantBody != "" {
				assertJSONEqual(t, r.Body, c.wantBody)
			}
			if !c.appends && ts.head() != before {
				t.Errorf("a request that must not write moved the log from %s to %s", before, ts.head())
			}
		})
	}
}

// vectorStep is a request a vector row needs made first.
type vectorStep struct{ method, path, body string }

func bodyOrNil(s string) any {
	if s == "" {
		return nil
	}
	return s
}

func assertJSONEqual(t *testing.T, got []byte, want string) {
	t.Helper()
	var g, w any
	if err := json.Unmarshal(got, &g); err != nil {
		t.Fatalf("body %s: %v", got, err)
	}
	_ = json.Unmarshal([]byte(want), &w)
	gb, _ := json.Marshal(g)
	wb, _ := json.Marshal(w)
	if string(gb) != string(wb) {
		t.Errorf("body = %s, want %s", gb, wb)
	}
}

func TestProfileFieldsCapabilityDisabled(t *testing.T) {
	ts := newTestServiceWith(t, t.TempDir(), domain.WritePolicy{Limits: domain.DefaultLimits, Fields: domain.ProfileFields{Disabled: true}})
	A := ts.tokens[alice]
	r := ts.do("PUT", "/_matrix/client/v3/profile/@alice:example.com/displayname", A, `{"displayname":"X"}`)
	if r.Status != 403 || r.errcode(t) != "M_FORBIDDEN" {
		t.Fatalf("vector 19: %d %s", r.Status, r.Body)
	}
	caps := ts.do("GET", "/_matrix/client/v3/capabilities", A, nil).json(t)["capabilities"].(map[string]any)
	if caps["m.profile_fields"].(map[string]any)["enabled"] != false || caps["m.set_displayname"].(map[string]any)["enabled"] != false {
		t.Errorf("capabilities do not say writes are disabled: %v", caps)
	}
}

func TestRateLimit(t *testing.T) {
	ts := newTestService(t, func(c *pshttp.Config) { c.WriteRate, c.WriteBurst = 0.5, 3 })
	A := ts.tokens[alice]
	var limited response
	for i := 0; i < 10; i++ {
		r := ts.do("PUT", "/_matrix/client/v3/profile/@alice:example.com/org.example.n", A, map[string]int{"org.example.n": i})
		if r.Status == 429 {
			limited = r
			break
		}
		if r.Status != 200 {
			t.Fatalf("write %d: %d %s", i, r.Status, r.Body)
		}
		if i >= 3 {
			t.Fatalf("write %d was allowed past a burst of 3", i)
		}
	}
	if limited.Status != 429 || limited.errcode(t) != "M_LIMIT_EXCEEDED" || limited.Header.Get("Retry-After") == "" {
		t.Fatalf("vector 20: %d %v %s", limited.Status, limited.Header, limited.Body)
	}
	if ms, _ := limited.json(t)["retry_after_ms"].(float64); ms <= 0 {
		t.Errorf("retry_after_ms = %v", ms)
	}
	// Another user has their own bucket.
	if r := ts.do("PUT", "/_matrix/client/v3/profile/@bob:example.com/displayname", ts.tokens[bob], `{"displayname":"Bob"}`); r.Status != 200 {
		t.Errorf("bob was limited by alice's writes: %d", r.Status)
	}
}

func TestReadYourWritesAndETags(t *testing.T) {
	ts := newTestService(t)
	A := ts.tokens[alice]
	path := "/_matrix/client/v3/profile/@alice:example.com/displayname"
	for i := 0; i < 50; i++ {
		name := "Alice " + strings.Repeat("!", i)
		w := ts.do("PUT", path, A, map[string]string{"displayname": name})
		if w.Status != 200 || w.Header.Get("X-Profilestore-Position") == "" {
			t.Fatalf("write: %d %v", w.Status, w.Header)
		}
		r := ts.do("GET", path, "", nil)
		if got, _ := r.json(t)["displayname"].(string); got != strings.TrimSpace(name) {
			t.Fatalf("read after write %d: %q, want %q", i, got, name)
		}
		if r.Header.Get("ETag") != w.Header.Get("ETag") {
			t.Fatalf("ETag after write %s != read %s", w.Header.Get("ETag"), r.Header.Get("ETag"))
		}
	}
	tag := ts.do("GET", path, "", nil).Header.Get("ETag")
	if r := ts.do("PUT", path, A, `{"displayname":"First"}`, "If-Match", tag); r.Status != 200 {
		t.Fatalf("If-Match current: %d %s", r.Status, r.Body)
	}
	before := ts.head()
	r := ts.do("PUT", path, A, `{"displayname":"Second"}`, "If-Match", tag)
	if r.Status != http.StatusPreconditionFailed || r.errcode(t) == "" {
		t.Fatalf("If-Match stale: %d %s", r.Status, r.Body)
	}
	if ts.head() != before {
		t.Error("a failed precondition appended")
	}
	if r := ts.do("PUT", path, A, `{"displayname":"Second"}`, "If-Match", `"garbage"`); r.Status != http.StatusPreconditionFailed {
		t.Errorf("If-Match garbage: %d", r.Status)
	}
	// A write that changes nothing appends nothing.
	before = ts.head()
	if r := ts.do("PUT", path, A, `{"displayname":"First"}`); r.Status != 200 || ts.head() != before {
		t.Errorf("unchanged write: %d, head %s -> %s", r.Status, before, ts.head())
	}
	// Min-position on reads: a position far ahead fails clearly and quickly enough.
	if r := ts.do("GET", path, "", nil, "X-Profilestore-Min-Position", "notaposition"); r.Status != 400 || r.errcode(t) != "M_INVALID_PARAM" {
		t.Errorf("bad min position: %d %s", r.Status, r.Body)
	}
}

func TestIdempotencyKey(t *testing.T) {
	ts := newTestService(t)
	A := ts.tokens[alice]
	path := "/_matrix/client/v3/profile/@alice:example.com/org.example.counter"
	if r := ts.do("PUT", path, A, `{"org.example.counter":1}`, "Idempotency-Key", "k1"); r.Status != 200 {
		t.Fatal(r.Status)
	}
	head := ts.head()
	if r := ts.do("PUT", path, A, `{"org.example.counter":1}`, "Idempotency-Key", "k1"); r.Status != 200 || ts.head() != head {
		t.Fatalf("retried request appended: %d %s -> %s", r.Status, head, ts.head())
	}
}

func TestDirectorySearch(t *testing.T) {
	ts := newTestService(t)
	seedAlice(t, ts)
	if r := ts.do("PUT", "/_matrix/client/v3/profile/@bob:example.com/displayname", ts.tokens[bob], `{"displayname":"Bobby Alison"}`); r.Status != 200 {
		t.Fatal(r.Status)
	}
	A := ts.tokens[alice]
	r := ts.do("POST", "/_matrix/client/v3/user_directory/search", A, `{"search_term":"ALI","limit":10}`)
	if r.Status != 200 {
		t.Fatalf("%d %s", r.Status, r.Body)
	}
	assertJSONEqual(t, r.Body, `{"limited":false,"results":[
		{"user_id":"@alice:example.com","display_name":"Alice","avatar_url":"mxc://example.com/abc"},
		{"user_id":"@bob:example.com","display_name":"Bobby Alison"}]}`)
	r = ts.do("POST", "/_matrix/client/v3/user_directory/search", A, `{"search_term":"ali","limit":1}`)
	if m := r.json(t); m["limited"] != true || len(m["results"].([]any)) != 1 {
		t.Errorf("limit 1: %s", r.Body)
	}
	for body, code := range map[string]string{`{}`: "M_MISSING_PARAM", `{"search_term":5}`: "M_INVALID_PARAM", `nope`: "M_NOT_JSON", `{"search_term":"a","limit":"x"}`: "M_INVALID_PARAM"} {
		if r := ts.do("POST", "/_matrix/client/v3/user_directory/search", A, body); r.Status != 400 || r.errcode(t) != code {
			t.Errorf("body %s: %d %s, want %s", body, r.Status, r.Body, code)
		}
	}
	if r := ts.do("POST", "/_matrix/client/v3/user_directory/search", "", `{"search_term":"a"}`); r.Status != 401 {
		t.Errorf("anonymous search: %d", r.Status)
	}
}

func TestVersionsWhoamiCORSAndHealth(t *testing.T) {
	ts := newTestService(t)
	v := ts.do("GET", "/_matrix/client/versions", "", nil)
	versions := v.json(t)["versions"].([]any)
	if versions[len(versions)-1] != "v1.16" || v.Header.Get("Access-Control-Allow-Origin") != "*" {
		t.Errorf("versions: %s %v", v.Body, v.Header)
	}
	if r := ts.do("OPTIONS", "/_matrix/client/v3/profile/@alice:example.com/displayname", "", nil); r.Status != 200 || !strings.Contains(r.Header.Get("Access-Control-Allow-Methods"), "PUT") {
		t.Errorf("preflight: %d %v", r.Status, r.Header)
	}
	w := ts.do("GET", "/_matrix/client/v3/account/whoami", ts.tokens[bob], nil)
	if w.json(t)["user_id"] != string(bob) {
		t.Errorf("whoami: %s", w.Body)
	}
	if r := ts.do("GET", "/health", "", nil); r.Status != 200 {
		t.Errorf("health %d", r.Status)
	}
	if r := ts.do("GET", "/ready", "", nil); r.Status != 200 {
		t.Errorf("ready %d", r.Status)
	}
	m := ts.do("GET", "/metrics", "", nil)
	for _, name := range []string{"profilestore_http_requests_total", "profilestore_projection_lag", "profilestore_append_duration_seconds"} {
		if !strings.Contains(string(m.Body), name) {
			t.Errorf("metrics lack %s", name)
		}
	}
}

func TestAdminWritesAnyProfile(t *testing.T) {
	ts := newTestService(t)
	if r := ts.do("PUT", "/_matrix/client/v3/profile/@bob:example.com/displayname", ts.tokens[admin], `{"displayname":"Set by admin"}`); r.Status != 200 {
		t.Fatalf("%d %s", r.Status, r.Body)
	}
	if r := ts.do("GET", "/_matrix/client/v3/profile/@bob:example.com/displayname", "", nil); r.json(t)["displayname"] != "Set by admin" {
		t.Errorf("%s", r.Body)
	}
}
