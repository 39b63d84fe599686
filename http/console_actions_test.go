package http_test

import (
	"context"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
)

// consolePost posts a console form with the session cookie and extra headers.
func (ts *testService) consolePost(path string, cookie *http.Cookie, form url.Values, headers ...string) (int, string, http.Header) {
	ts.t.Helper()
	req, _ := http.NewRequest("POST", ts.URL+path, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	if cookie != nil {
		req.AddCookie(cookie)
	}
	resp, err := noRedirects.Do(req)
	if err != nil {
		ts.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), resp.Header
}

var csrfField = regexp.MustCompile(`name="csrf" value="([0-9a-f]+)"`)

func csrfOf(t *testing.T, body string) string {
	t.Helper()
	m := csrfField.FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("no form token in %s", body)
	}
	return m[1]
}

func TestConsoleHideAnEntry(t *testing.T) {
	ts := newTestService(t)
	ts.moderatedRoom()
	nick := ts.ok("PUT", v1+"/members/"+string(alice)+"/profile/displayname", alice, map[string]string{"displayname": "Old Name"}).Header.Get("X-Profilestore-Position")
	adm := ts.consoleCookieOf(admin)
	hidePath := "/console/users/" + string(alice) + "/history/" + nick + "/hide"

	// The room page offers the admin a Hide link on the entry.
	_, body, _ := ts.consoleGet("/console/rooms/"+room, adm)
	if !strings.Contains(section(t, body, "history"), `<a href="`+hidePath+`">Hide…</a>`) {
		t.Fatalf("no Hide link for the admin:\n%s", section(t, body, "history"))
	}
	status, body, _ := ts.consoleGet(hidePath, adm)
	if status != http.StatusOK || !strings.Contains(body, "Old Name") || !strings.Contains(body, `<textarea id="reason" name="reason"`) {
		t.Fatalf("confirmation page: %d %s", status, body)
	}
	token := csrfOf(t, body)

	before := ts.head()
	for _, tc := range []struct {
		name    string
		form    url.Values
		headers []string
		status  int
	}{
		{"no form token", url.Values{"reason": {"deadname"}}, nil, http.StatusForbidden},
		{"another session's token", url.Values{"reason": {"deadname"}, "csrf": {strings.Repeat("0", 64)}}, nil, http.StatusForbidden},
		{"from another site", url.Values{"reason": {"deadname"}, "csrf": {token}}, []string{"Origin", "https://evil.example"}, http.StatusForbidden},
		{"cross-site fetch", url.Values{"reason": {"deadname"}, "csrf": {token}}, []string{"Sec-Fetch-Site", "cross-site"}, http.StatusForbidden},
		{"no reason", url.Values{"reason": {"  "}, "csrf": {token}}, nil, http.StatusBadRequest},
		{"reason too long", url.Values{"reason": {strings.Repeat("x", 501)}, "csrf": {token}}, nil, http.StatusBadRequest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if status, body, _ := ts.consolePost(hidePath, adm, tc.form, tc.headers...); status != tc.status || !strings.Contains(body, `role="alert"`) {
				t.Errorf("%d, want %d: %s", status, tc.status, body)
			}
			if ts.head() != before {
				t.Error("a refused form wrote to the log")
			}
		})
	}

	status, _, h := ts.consolePost(hidePath, adm, url.Values{"reason": {"old name the user asked to hide"}, "csrf": {token}},
		"Origin", ts.URL, "Sec-Fetch-Site", "same-origin")
	if status != http.StatusSeeOther || !strings.HasPrefix(h.Get("Location"), "/console/users/"+string(alice)+"?done=hidden") {
		t.Fatalf("hide: %d %q", status, h.Get("Location"))
	}
	_, body, _ = ts.consoleGet(h.Get("Location"), adm)
	if !strings.Contains(body, `role="status">The entry at position `+nick+` is hidden.`) {
		t.Errorf("no confirmation: %s", body)
	}
	if acts := section(t, body, "actions"); !strings.Contains(acts, "@admin:example.com</a> hid the entry at position "+nick+", because “old name the user asked to hide”") {
		t.Errorf("actions: %s", acts)
	}
	if hist := section(t, body, "history"); !strings.Contains(hist, `hidden by <a href="/console/users/@admin:example.com">@admin:example.com</a>`) ||
		!strings.Contains(hist, "“old name the user asked to hide”") {
		t.Errorf("history: %s", hist)
	}
	// The API agrees, and the members of the room no longer see the name.
	for _, raw := range ts.ok("GET", v1+"/history", alice, nil).json(t)["chunk"].([]any) {
		if e := raw.(map[string]any); e["position"] == nick && e["hidden"] != true {
			t.Errorf("API: %v", e)
		}
	}
	// Posting again changes nothing.
	head := ts.head()
	if status, _, _ := ts.consolePost(hidePath, adm, url.Values{"reason": {"again"}, "csrf": {token}}); status != http.StatusSeeOther || ts.head() != head {
		t.Errorf("hiding twice: %d, log moved %v", status, ts.head() != head)
	}
}

func TestConsoleActionsOnlyForThoseTheAPIAllows(t *testing.T) {
	ts := newTestService(t)
	ts.moderatedRoom()
	nick := ts.ok("PUT", v1+"/members/"+string(alice)+"/profile/displayname", alice, map[string]string{"displayname": "Old Name"}).Header.Get("X-Profilestore-Position")
	mod := ts.consoleCookieOf(bob)
	_, body, _ := ts.consoleGet("/console/rooms/"+room, mod)
	if hist := section(t, body, "history"); strings.Contains(hist, "/users/"+string(alice)+"/history/") {
		t.Errorf("a moderator is offered to hide another user's entry, which the API refuses:\n%s", hist)
	}
	_, body, _ = ts.consoleGet("/console/users/"+string(alice), mod)
	if strings.Contains(body, "/erase") {
		t.Error("a moderator is offered to erase a user")
	}
	token := csrfOf(t, body)
	for _, path := range []string{"/console/users/" + string(alice) + "/history/" + nick + "/hide", "/console/users/" + string(alice) + "/erase"} {
		if status, _, _ := ts.consoleGet(path, mod); status != http.StatusForbidden {
			t.Errorf("GET %s as a moderator: %d", path, status)
		}
		head := ts.head()
		if status, _, _ := ts.consolePost(path, mod, url.Values{"reason": {"x"}, "confirm": {string(alice)}, "csrf": {token}}); status != http.StatusForbidden || ts.head() != head {
			t.Errorf("POST %s as a moderator: %d", path, status)
		}
	}
	// Another site cannot sign the browser in (to an account of its choosing).
	if status, _, h := ts.consolePost("/console/signin", nil, url.Values{"token": {ts.tokens[alice]}}, "Origin", "https://evil.example"); status != http.StatusForbidden || h.Get("Set-Cookie") != "" {
		t.Errorf("cross-site sign-in: %d %v", status, h)
	}
	if status, _, h := ts.consolePost("/console/signin", nil, url.Values{"token": {ts.tokens[alice]}}, "Sec-Fetch-Site", "cross-site"); status != http.StatusForbidden || h.Get("Set-Cookie") != "" {
		t.Errorf("cross-site sign-in (fetch metadata): %d %v", status, h)
	}
	// Signing out is a form too.
	if status, _, _ := ts.consolePost("/console/signout", mod, url.Values{}); status != http.StatusForbidden {
		t.Errorf("sign-out without the form token: %d", status)
	}
	if status, _, h := ts.consolePost("/console/signout", mod, url.Values{"csrf": {token}}); status != http.StatusSeeOther || !strings.Contains(h.Get("Set-Cookie"), "Max-Age=0") {
		t.Errorf("sign-out: %d %v", status, h)
	}
}

func TestConsoleEraseAUser(t *testing.T) {
	ts := newTestService(t)
	ts.moderatedRoom()
	adm := ts.consoleCookieOf(admin)
	path := "/console/users/" + string(carol) + "/erase"
	_, body, _ := ts.consoleGet("/console/users/"+string(carol), adm)
	if !strings.Contains(body, `href="`+path+`">Erase this user…`) {
		t.Fatalf("no erase link for the admin: %s", body)
	}
	status, body, _ := ts.consoleGet(path, adm)
	if status != http.StatusOK || !strings.Contains(body, "cannot be undone") {
		t.Fatalf("confirmation page: %d", status)
	}
	token := csrfOf(t, body)
	head := ts.head()
	if status, body, _ := ts.consolePost(path, adm, url.Values{"reason": {"left the community, asked to be forgotten"}, "confirm": {"@someone:example.com"}, "csrf": {token}}); status != http.StatusBadRequest ||
		!strings.Contains(body, "type the user id @carol:example.com exactly; nothing was erased") || ts.head() != head {
		t.Errorf("wrong confirmation: %d %s", status, body)
	}
	status, _, h := ts.consolePost(path, adm, url.Values{"reason": {"left the community, asked to be forgotten"}, "confirm": {string(carol)}, "csrf": {token}})
	if status != http.StatusSeeOther || h.Get("Location") != "/console/users/"+string(carol)+"?done=erased" {
		t.Fatalf("erase: %d %q", status, h.Get("Location"))
	}
	_, body, _ = ts.consoleGet(h.Get("Location"), adm)
	if hist := section(t, body, "history"); strings.Contains(hist, "Carol Old") || !strings.Contains(hist, "tag-erased") {
		t.Errorf("history after the erasure: %s", hist)
	}
	if acts := section(t, body, "actions"); !strings.Contains(acts, "erased the user&#39;s profile data, because “left the community, asked to be forgotten”") || !strings.Contains(acts, "via console") {
		t.Errorf("actions: %s", acts)
	}
	recs, err := ts.store.ReadAll(context.Background(), head, 10)
	if err != nil || len(recs) != 1 || recs[0].Type != "profile.erased" || !strings.Contains(string(recs[0].Metadata), `"reason":"left the community, asked to be forgotten"`) {
		t.Errorf("recorded: %v %v", recs, err)
	}
}

// A moderator (power level at the room's kick level, not an admin of the
// room) who is a member opens the room from the console.
func TestConsoleModeratorMemberOpensTheRoom(t *testing.T) {
	ts := newTestService(t)
	ts.ok("PUT", v1+"/power_levels", admin, map[string]any{"users": map[string]int{string(admin): 100, string(bob): 50}})
	ts.ok("PUT", v1+"/members/"+string(bob), admin, map[string]string{"membership": "join", "displayname": "Bob"})
	mod := ts.consoleCookieOf(bob)
	if status, body, _ := ts.consoleGet("/console/rooms", mod); status != http.StatusOK || !strings.Contains(body, `href="/console/rooms/!room:example.com"`) {
		t.Errorf("rooms list: %d %s", status, body)
	}
	if status, _, _ := ts.consoleGet("/console/rooms/"+room, mod); status != http.StatusOK {
		t.Errorf("room page: %d", status)
	}
	if status, _, _ := ts.consoleGet("/console/rooms?room="+url.QueryEscape(room), mod); status != http.StatusSeeOther {
		t.Errorf("open by id: %d", status)
	}
}

// The API's hide and erase take an optional reason, recorded as the
// console's forms record theirs.
func TestAPIReasonsForHideAndErase(t *testing.T) {
	ts := newTestService(t)
	ts.moderatedRoom()
	nick := ts.ok("PUT", v1+"/members/"+string(alice)+"/profile/displayname", alice, map[string]string{"displayname": "Old Name"}).Header.Get("X-Profilestore-Position")
	hide := "/_profilestore/v1/users/" + string(alice) + "/history/" + nick + "/hide"
	head := ts.head()
	for _, tc := range []struct {
		name, body, errcode string
	}{
		{"not JSON", "reason", "M_NOT_JSON"},
		{"not an object", `["x"]`, "M_BAD_JSON"},
		{"not a string", `{"reason":5}`, "M_BAD_JSON"},
		{"too long", `{"reason":"` + strings.Repeat("é", 501) + `"}`, "M_INVALID_PARAM"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if r := ts.do("POST", hide, ts.tokens[alice], tc.body); r.Status != http.StatusBadRequest || r.errcode(t) != tc.errcode {
				t.Errorf("%d %s", r.Status, r.Body)
			}
			if ts.head() != head {
				t.Error("a refused hide wrote to the log")
			}
		})
	}
	if r := ts.do("POST", hide, ts.tokens[alice], `{"reason":"my old name"}`); r.Status != http.StatusOK {
		t.Fatalf("hide with a reason: %d %s", r.Status, r.Body)
	}
	if r := ts.do("POST", "/_profilestore/v1/users/"+string(carol)+"/erase", ts.tokens[admin], `{"reason":"asked to leave"}`); r.Status != http.StatusOK {
		t.Fatalf("erase with a reason: %d %s", r.Status, r.Body)
	}
	adm := ts.consoleCookieOf(admin)
	if _, body, _ := ts.consoleGet("/console/users/"+string(alice), adm); !strings.Contains(section(t, body, "actions"), "because “my old name” (position") {
		t.Errorf("alice's actions: %s", section(t, body, "actions"))
	}
	if _, body, _ := ts.consoleGet("/console/users/"+string(carol), adm); !strings.Contains(section(t, body, "actions"), "because “asked to leave”") {
		t.Errorf("carol's actions: %s", section(t, body, "actions"))
	}
}
