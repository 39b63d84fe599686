package http_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/profilestore/profilestore/domain"
	"github.com/profilestore/profilestore/eventstore"
)

// recordAlert records an alert as the watcher would.
func (ts *testService) recordAlert(a domain.Alert) {
	ts.t.Helper()
	if a.At.IsZero() {
		a.At = time.Now().UTC()
	}
	data, err := domain.EncodeAlert(context.Background(), ts.sealer, a)
	if err != nil {
		ts.t.Fatal(err)
	}
	if _, err := ts.store.Append(context.Background(), domain.AlertStream, eventstore.Any, []eventstore.EventData{data}); err != nil {
		ts.t.Fatal(err)
	}
}

// recordSampleAlerts records a look-alike of bob (the room's moderator)
// in the room, a protected name in the other room and a global burst.
func (ts *testService) recordSampleAlerts() {
	ts.recordAlert(domain.Alert{Rule: domain.AlertLookalike, Room: room, User: mallory, Name: "B\u043eb", Trigger: eventstore.Position{Commit: 9, Prepare: 9},
		Others: []domain.NamedMember{{User: bob, DisplayName: "Bob", Moderator: true}}, Moderator: true})
	ts.recordAlert(domain.Alert{Rule: domain.AlertProtectedName, Room: other, User: dave, Name: "\u0410dmin", Protected: "Admin", Trigger: eventstore.Position{Commit: 10, Prepare: 10}})
	ts.recordAlert(domain.Alert{Rule: domain.AlertRenameBurst, User: carol, Name: "Carol 5", Renames: 5, Window: 10 * time.Minute, Trigger: eventstore.Position{Commit: 11, Prepare: 11}})
}

func TestConsoleAlerts(t *testing.T) {
	ts := newTestService(t)
	ts.moderatedRoom()
	ts.recordSampleAlerts()

	status, body, _ := ts.consoleGet("/console/alerts", ts.consoleCookieOf(admin))
	if status != http.StatusOK {
		t.Fatalf("admin: %d", status)
	}
	for _, want := range []string{"Possible impersonation of a moderator", "Protected name taken", "Rename burst", "5 renames within 10m0s",
		"U&#43;043E</code> CYRILLIC SMALL LETTER O, Cyrillic script", "U&#43;0410</code> CYRILLIC CAPITAL LETTER A, Cyrillic script",
		"confusable with the protected name “Admin”"} {
		if !strings.Contains(body, want) {
			t.Errorf("the admin's alerts lack %q", want)
		}
	}
	if i, j := strings.Index(body, "Rename burst"), strings.Index(body, "Possible impersonation"); i < 0 || j < 0 || i > j {
		t.Error("alerts are not newest first")
	}

	// A moderator sees the alerts of the rooms they moderate, no others.
	status, body, _ = ts.consoleGet("/console/alerts", ts.consoleCookieOf(bob))
	if status != http.StatusOK || !strings.Contains(body, "Possible impersonation") || strings.Contains(body, "Protected name") || strings.Contains(body, "Rename burst") {
		t.Errorf("the moderator's alerts: %d %s", status, body)
	}
	_, body, _ = ts.consoleGet("/console/alerts?room="+other, ts.consoleCookieOf(admin))
	if !strings.Contains(body, "Protected name taken") || strings.Contains(body, "Possible impersonation") {
		t.Errorf("one room's alerts: %s", body)
	}
	for _, q := range []string{"room=nope", "before=0", "before=x"} {
		if status, body, _ := ts.consoleGet("/console/alerts?"+q, ts.consoleCookieOf(admin)); status != http.StatusBadRequest || !strings.Contains(body, `role="alert"`) {
			t.Errorf("?%s: %d", q, status)
		}
	}
	// After an erasure the alert no longer shows the erased user's name.
	ts.ok("POST", "/_profilestore/v1/users/"+string(mallory)+"/erase", admin, map[string]any{})
	_, body, _ = ts.consoleGet("/console/alerts?room="+room, ts.consoleCookieOf(admin))
	if strings.Contains(body, "B\u043eb") || !strings.Contains(body, "a name in this alert was erased since") {
		t.Errorf("after erasing mallory: %s", body)
	}
}

// A page lists 50 alerts; "Older alerts" continues where it stopped.
func TestConsoleAlertsPages(t *testing.T) {
	ts := newTestService(t)
	for i := range 52 {
		ts.recordAlert(domain.Alert{Rule: domain.AlertRenameBurst, User: carol, Name: "Carol", Renames: 5, Window: time.Minute, Trigger: eventstore.Position{Commit: uint64(100 + i), Prepare: uint64(100 + i)}})
	}
	adm := ts.consoleCookieOf(admin)
	_, body, _ := ts.consoleGet("/console/alerts", adm)
	if n := strings.Count(body, "Rename burst"); n != 50 {
		t.Errorf("first page: %d alerts", n)
	}
	older := between(body, `<a href="`, `" rel="next">Older alerts`)
	if older == "" {
		t.Fatalf("no link to older alerts")
	}
	_, body, _ = ts.consoleGet(strings.ReplaceAll(older, "&amp;", "&"), adm)
	if n := strings.Count(body, "Rename burst"); n != 2 || !strings.Contains(body, "position 101,") || !strings.Contains(body, "position 100,") || strings.Contains(body, "Older alerts") {
		t.Errorf("second page: %d alerts: %s", n, body)
	}
}
