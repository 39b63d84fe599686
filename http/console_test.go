package http_test

import (
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/profilestore/profilestore/domain"
)

// noRedirects lets tests see the console's redirects.
var noRedirects = &http.Client{Timeout: 10 * time.Second,
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

// consoleSignIn posts the sign-in form with token.
func (ts *testService) consoleSignIn(token string) *http.Response {
	ts.t.Helper()
	resp, err := noRedirects.PostForm(ts.URL+"/console/signin", url.Values{"token": {token}})
	if err != nil {
		ts.t.Fatal(err)
	}
	resp.Body.Close()
	return resp
}

// consoleCookieOf signs user in and returns the session cookie.
func (ts *testService) consoleCookieOf(user domain.UserID) *http.Cookie {
	ts.t.Helper()
	r := ts.consoleSignIn(ts.tokens[user])
	if r.StatusCode != http.StatusSeeOther || len(r.Cookies()) != 1 {
		ts.t.Fatalf("sign in as %s: %d", user, r.StatusCode)
	}
	return r.Cookies()[0]
}

// consoleGet reads a console page with the cookie (nil: signed out).
func (ts *testService) consoleGet(path string, cookie *http.Cookie) (int, string, http.Header) {
	ts.t.Helper()
	req, _ := http.NewRequest("GET", ts.URL+path, nil)
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

func TestConsoleSignInAndRefusal(t *testing.T) {
	ts := newTestService(t)
	if r := ts.consoleSignIn("wrong"); r.StatusCode != 401 || len(r.Cookies()) != 0 {
		t.Errorf("bad token: %d %v", r.StatusCode, r.Cookies())
	}
	if r := ts.consoleSignIn(strings.Repeat("x", 513)); r.StatusCode != 400 {
		t.Errorf("513-byte token: %d", r.StatusCode)
	}
	c := ts.consoleCookieOf(alice)
	if !c.HttpOnly || c.SameSite != http.SameSiteStrictMode || c.Path != "/console/" {
		t.Errorf("cookie flags: %+v", c)
	}
	if status, body, _ := ts.consoleGet("/console/", c); status != 403 || !strings.Contains(body, "for server admins and room moderators") {
		t.Errorf("a plain user: %d %s", status, body)
	}
	if status, body, _ := ts.consoleGet("/console/", nil); status != 401 || !strings.Contains(body, `<label for="token">`) {
		t.Errorf("signed out: %d", status)
	}
	adminCookie := ts.consoleCookieOf(admin)
	if status, body, _ := ts.consoleGet("/console/", adminCookie); status != 200 || !strings.Contains(body, "<svg") || strings.Contains(body, "<script") {
		t.Errorf("admin overview: %d", status)
	}
	if status, _, _ := ts.consoleGet("/console/names?q="+strings.Repeat("a", 257), adminCookie); status != 400 {
		t.Errorf("257-character query: %d", status)
	}
	if status, _, _ := ts.consoleGet("/console/users/not-a-user", adminCookie); status != 400 {
		t.Errorf("bad user id: %d", status)
	}
	if status, body, _ := ts.consoleGet("/console/assets/style.css", nil); status != 200 || !strings.Contains(body, "body") {
		t.Errorf("assets: %d", status)
	}
}

const (
	carol   = domain.UserID("@carol:example.com")
	mallory = domain.UserID("@mallory:example.com")
	dave    = domain.UserID("@dave:example.com")
	other   = "!other:example.com"
)

// moderatedRoom sets up the room bob moderates: alice (whose per-room
// name "Ally" she hid), carol, who was "Carol Old" and left, and mallory,
// whose "Bоb" (Cyrillic о) looks like bob's "Bob". In another room only
// the admin moderates, dave is "Dave". It returns a position at which
// carol was a member.
func (ts *testService) moderatedRoom() string {
	ts.t.Helper()
	ts.ok("PUT", v1+"/power_levels", admin, map[string]any{"users": map[string]int{string(bob): 100}, "kick": 50})
	member := func(room string, u domain.UserID, membership, name string) string {
		body := map[string]string{"membership": membership}
		if name != "" {
			body["displayname"] = name
		}
		return ts.ok("PUT", "/_profilestore/v1/rooms/"+room+"/members/"+string(u), admin, body).Header.Get("X-Profilestore-Position")
	}
	member(room, bob, "join", "Bob")
	member(room, alice, "join", "Alice")
	then := member(room, carol, "join", "Carol Old")
	member(room, carol, "leave", "")
	member(room, mallory, "join", "B\u043eb")
	nick := ts.ok("PUT", v1+"/members/"+string(alice)+"/profile/displayname", alice, map[string]string{"displayname": "Ally"}).Header.Get("X-Profilestore-Position")
	ts.ok("POST", "/_profilestore/v1/users/"+string(alice)+"/history/"+nick+"/hide", alice, map[string]any{})
	ts.ok("PUT", "/_profilestore/v1/rooms/"+other+"/power_levels", admin, map[string]any{"users": map[string]int{string(admin): 100}, "kick": 50})
	member(other, dave, "join", "Dave")
	member(other, bob, "join", "Bob")
	return then
}

// section returns the HTML of the page's section labelled by heading id.
func section(t *testing.T, body, id string) string {
	t.Helper()
	i := strings.Index(body, `<section aria-labelledby="`+id+`">`)
	if i < 0 {
		t.Fatalf("no section %q in %s", id, body)
	}
	j := strings.Index(body[i:], "</section>")
	return body[i : i+j]
}

func TestConsoleModeratorSeesTheRoomsTheyModerateOnly(t *testing.T) {
	ts := newTestService(t)
	then := ts.moderatedRoom()
	mod := ts.consoleCookieOf(bob)

	status, _, h := ts.consoleGet("/console/", mod)
	if status != http.StatusSeeOther || h.Get("Location") != "/console/rooms" {
		t.Errorf("a moderator's start page: %d → %q, want their rooms", status, h.Get("Location"))
	}
	status, body, _ := ts.consoleGet("/console/rooms", mod)
	if status != 200 || !strings.Contains(body, `href="/console/rooms/!room:example.com"`) || strings.Contains(body, other) {
		t.Errorf("rooms list: %d %s", status, body)
	}
	if strings.Contains(body, `href="/console/">Overview`) {
		t.Error("moderators are offered the server-wide overview, which the stats API refuses them")
	}

	status, body, _ = ts.consoleGet("/console/rooms/"+room, mod)
	if status != 200 {
		t.Fatalf("room page: %d %s", status, body)
	}
	members := section(t, body, "members")
	if !strings.Contains(members, "Members now") || !strings.Contains(members, "Ally") || strings.Contains(members, "Carol Old") {
		t.Errorf("members now: %s", members)
	}
	if alerts := section(t, body, "lookalikes"); !strings.Contains(alerts, "one of them a moderator") || !strings.Contains(alerts, "Confusable names") ||
		!strings.Contains(alerts, "<mark class=\"char\" title=\"U&#43;043E CYRILLIC SMALL LETTER O\">\u043e</mark>") || !strings.Contains(alerts, "U&#43;043E</code> CYRILLIC SMALL LETTER O, Cyrillic script") || !strings.Contains(alerts, string(mallory)) {
		t.Errorf("look-alikes: %s", alerts)
	}
	// A moderator sees the hidden per-room name, marked hidden.
	if hist := section(t, body, "history"); !strings.Contains(hist, `Alice → Ally <span class="tag tag-hidden">hidden</span>`) {
		t.Errorf("history: %s", hist)
	}

	// Not their room, not their users, not the server's stats.
	for _, path := range []string{"/console/rooms/" + other, "/console/users/" + string(dave)} {
		if status, body, _ := ts.consoleGet(path, mod); status != 403 || !strings.Contains(body, `role="alert"`) {
			t.Errorf("%s for a moderator of another room: %d %s", path, status, body)
		}
	}
	if _, body, _ := ts.consoleGet("/console/rooms/"+other, mod); !strings.Contains(body, "You do not moderate this room") {
		t.Errorf("refusal does not say why: %s", body)
	}
	// A user page of a member shows their names in the moderated room, and
	// no global one.
	status, body, _ = ts.consoleGet("/console/users/"+string(carol), mod)
	if status != 200 || !strings.Contains(body, "Carol Old") || !strings.Contains(body, "members at "+then) {
		t.Errorf("carol's page: %d %s", status, body)
	}

	// A plain member of the room gets a refusal page, everywhere.
	plain := ts.consoleCookieOf(alice)
	for _, path := range []string{"/console/", "/console/rooms", "/console/rooms/" + room, "/console/users/" + string(carol)} {
		if status, body, _ := ts.consoleGet(path, plain); status != 403 || !strings.Contains(body, "for server admins and room moderators") {
			t.Errorf("%s for a plain member: %d", path, status)
		}
	}
}

func TestConsoleRoomFormsWorkWithoutScript(t *testing.T) {
	ts := newTestService(t)
	then := ts.moderatedRoom()
	mod := ts.consoleCookieOf(bob)

	// Open a room by id: a GET form answered by a redirect.
	status, _, h := ts.consoleGet("/console/rooms?room="+url.QueryEscape(room), mod)
	if status != http.StatusSeeOther || h.Get("Location") != "/console/rooms/"+url.PathEscape(room) {
		t.Errorf("open by id: %d → %q", status, h.Get("Location"))
	}
	if status, _, _ := ts.consoleGet("/console/rooms?room=nope", mod); status != 400 {
		t.Errorf("open a malformed room id: %d", status)
	}

	// The moment by position: carol is there, with the name she had then.
	_, body, _ := ts.consoleGet("/console/rooms/"+room+"?at="+then, mod)
	if m := section(t, body, "members"); !strings.Contains(m, "Members as of position "+then) || !strings.Contains(m, "Carol Old") || strings.Contains(m, string(mallory)) {
		t.Errorf("members as of %s: %s", then, m)
	}
	if a := section(t, body, "lookalikes"); strings.Contains(a, string(mallory)) {
		t.Errorf("a look-alike before mallory joined: %s", a)
	}
	// The moment by date and time (the datetime-local field, UTC): now
	// plus a minute is the present, far past is before anyone joined.
	future := time.Now().UTC().Add(time.Minute).Format("2006-01-02T15:04")
	_, body, _ = ts.consoleGet("/console/rooms/"+room+"?at_time="+future, mod)
	if m := section(t, body, "members"); !strings.Contains(m, string(mallory)) || strings.Contains(m, "Carol Old") {
		t.Errorf("members as of %s: %s", future, m)
	}
	_, body, _ = ts.consoleGet("/console/rooms/"+room+"?at_time=2000-01-01T00:00:00", mod)
	if m := section(t, body, "members"); !strings.Contains(m, "Nobody was joined") {
		t.Errorf("members in 2000: %s", m)
	}
	for _, q := range []string{"at_time=yesterday", "at=1&at_time=2000-01-01T00:00", "kind=rename", "from=zzz"} {
		if status, body, _ := ts.consoleGet("/console/rooms/"+room+"?"+q, mod); status != 400 || !strings.Contains(body, `role="alert"`) {
			t.Errorf("?%s: %d", q, status)
		}
	}

	// History filters and paging with the view's tokens.
	_, body, _ = ts.consoleGet("/console/rooms/"+room+"?kind=join&user="+url.QueryEscape(string(carol)), mod)
	hist := section(t, body, "history")
	if strings.Count(hist, `<td data-label="What">joined</td>`) != 1 || strings.Contains(hist, `<td data-label="What">left</td>`) || !strings.Contains(hist, `<option value="join" selected>joined</option>`) {
		t.Errorf("carol's joins: %s", hist)
	}
	_, body, _ = ts.consoleGet("/console/rooms/"+room+"?limit=2", mod)
	older := between(section(t, body, "history"), `<a href="`, `" rel="next">Older entries`)
	if older == "" {
		t.Fatalf("no link to older entries: %s", body)
	}
	_, body, _ = ts.consoleGet(strings.ReplaceAll(older, "&amp;", "&"), mod)
	hist = section(t, body, "history")
	// The newest two (mallory's join, alice's nickname) were the first page.
	if !strings.Contains(hist, "was Carol Old") || strings.Contains(hist, "as B\u043eb") || !strings.Contains(hist, `rel="prev">Newer entries`) {
		t.Errorf("second page: %s", hist)
	}
}

// between returns the text of s between the last before before end, and end.
func between(s, before, end string) string {
	j := strings.Index(s, end)
	if j < 0 {
		return ""
	}
	i := strings.LastIndex(s[:j], before)
	if i < 0 {
		return ""
	}
	return s[i+len(before) : j]
}
