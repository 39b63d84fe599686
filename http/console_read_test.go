package http_test

import (
	"net/http"
	"strings"
	"testing"
)

// An erased user's entries read "erased", distinct from "none" (never had
// a name) and from "hidden"; history rows are in words, "By" names the
// user for their own changes, and room ids are links.
func TestConsoleAndAPIMarkErasedEntries(t *testing.T) {
	ts := newTestService(t)
	ts.moderatedRoom()
	ts.ok("PUT", "/_matrix/client/v3/profile/"+string(alice)+"/displayname", alice, map[string]string{"displayname": "Alice Global"})
	ts.ok("POST", "/_profilestore/v1/users/"+string(alice)+"/erase", admin, map[string]any{})
	// A name set after the erasure is readable again, and not marked.
	ts.ok("PUT", "/_matrix/client/v3/profile/"+string(alice)+"/displayname", alice, map[string]string{"displayname": "Alice New"})

	chunk := ts.ok("GET", "/_profilestore/v1/users/"+string(alice)+"/history?dir=f", admin, nil).json(t)["chunk"].([]any)
	var erased, live int
	for _, raw := range chunk {
		e := raw.(map[string]any)
		if e["erased"] == true {
			erased++
			if len(e["old"].(map[string]any)) != 0 || len(e["new"].(map[string]any)) != 0 {
				t.Errorf("an erased entry keeps values: %v", e)
			}
		} else {
			live++
			if e["new"].(map[string]any)["displayname"] != "Alice New" {
				t.Errorf("the entry after the erasure: %v", e)
			}
		}
	}
	if erased < 2 || live != 1 {
		t.Errorf("erased %d, live %d entries in %v", erased, live, chunk)
	}

	status, body, _ := ts.consoleGet("/console/users/"+string(alice), ts.consoleCookieOf(admin))
	if status != http.StatusOK {
		t.Fatalf("user page: %d", status)
	}
	hist := section(t, body, "history")
	for _, want := range []string{
		`<span class="tag tag-erased">erased</span>`,
		`<td data-label="What">changed their global name (rooms without their own follow)</td>`,
		`<td data-label="What">joined</td>`,
		`<a href="/console/rooms/!room:example.com">!room:example.com</a>`,
		// Alice's own rename names her in "By".
		`<td data-label="By"><a href="/console/users/@alice:example.com">@alice:example.com</a></td>
<td data-label="Members then"></td>`,
		"none → Alice New",
	} {
		if !strings.Contains(hist, want) {
			t.Errorf("history lacks %q:\n%s", want, hist)
		}
	}
	if strings.Contains(hist, "none → none") || strings.Contains(hist, "<td>global_rename") {
		t.Errorf("history reads like the API's internals:\n%s", hist)
	}

	status, body, _ = ts.consoleGet("/console/rooms/"+room, ts.consoleCookieOf(bob))
	if status != http.StatusOK {
		t.Fatalf("room page: %d", status)
	}
	if hist := section(t, body, "history"); !strings.Contains(hist, `<td data-label="What">nickname in this room</td>`) || !strings.Contains(hist, `<td data-label="What">left</td>`) || !strings.Contains(hist, "was Carol Old") {
		t.Errorf("room history in words:\n%s", hist)
	}
}

func TestConsoleSignInAndErrorPagesNavigation(t *testing.T) {
	ts := newTestService(t)
	ts.moderatedRoom()
	status, body, _ := ts.consoleGet("/console/rooms", nil)
	if status != http.StatusUnauthorized || strings.Contains(body, `href="/console/rooms"`) || strings.Contains(body, `href="/console/names"`) {
		t.Errorf("the sign-in page offers pages that need sign-in: %d %s", status, body)
	}
	status, body, _ = ts.consoleGet("/console/rooms/"+other, ts.consoleCookieOf(bob))
	if status != http.StatusForbidden || !strings.Contains(body, `<nav aria-label="Console">`) || !strings.Contains(body, `Go back to <a href="/console/rooms">your rooms</a>`) {
		t.Errorf("an error page without navigation or a way back: %d %s", status, body)
	}
	// The moment's time field takes ISO 8601 in UTC, not a locale's picker.
	status, body, _ = ts.consoleGet("/console/rooms/"+room+"?at_time=2000-01-01T00:00:00Z", ts.consoleCookieOf(bob))
	if status != http.StatusOK || !strings.Contains(body, `id="at_time" name="at_time" type="text"`) || strings.Contains(body, "datetime-local") {
		t.Errorf("ISO time: %d", status)
	}
	if status, _, _ := ts.consoleGet("/console/rooms/"+room+"?at_time=2000-01-01", ts.consoleCookieOf(bob)); status != http.StatusOK {
		t.Errorf("a date alone: %d", status)
	}
}
