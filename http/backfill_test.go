package http_test

import (
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/profilestore/profilestore/domain"
	pshttp "github.com/profilestore/profilestore/http"
)

// fakeBackfill records what the route asks of it.
type fakeBackfill struct {
	mu      sync.Mutex
	running bool
	users   [][]domain.UserID
	status  *pshttp.BackfillStatus // what Status says, if set
}

func (f *fakeBackfill) Start(users []domain.UserID) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.running {
		return false, nil
	}
	f.running, f.users = true, append(f.users, users)
	return true, nil
}

func (f *fakeBackfill) Status() pshttp.BackfillStatus {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.status != nil {
		return *f.status
	}
	return pshttp.BackfillStatus{Running: f.running, Phase: "write", Rooms: 40, Done: 12, Events: 5120, Recorded: 311}
}

func TestBackfillRoute(t *testing.T) {
	fb := &fakeBackfill{}
	ts := newTestService(t, func(c *pshttp.Config) { c.Backfill = fb })
	admin, alice := ts.tokens["@admin:example.com"], ts.tokens["@alice:example.com"]
	for _, tc := range []struct {
		name, method, token string
		body                any
		status              int
		errcode             string
	}{
		{"no token", "POST", "", nil, 401, "M_MISSING_TOKEN"},
		{"not an admin", "POST", alice, nil, 403, "M_FORBIDDEN"},
		{"not an admin reading", "GET", alice, nil, 403, "M_FORBIDDEN"},
		{"not JSON", "POST", admin, "{", 400, "M_NOT_JSON"},
		{"users not a list", "POST", admin, `{"users":"@a:example.com"}`, 400, "M_BAD_JSON"},
		{"not a user id", "POST", admin, `{"users":["alice"]}`, 400, "M_INVALID_PARAM"},
		{"too large", "POST", admin, `{"users":["` + strings.Repeat("a", 2<<20) + `"]}`, 413, "M_TOO_LARGE"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := ts.do(tc.method, "/_profilestore/v1/backfill", tc.token, tc.body)
			if r.Status != tc.status || r.errcode(t) != tc.errcode {
				t.Errorf("%d %s, want %d %s", r.Status, r.Body, tc.status, tc.errcode)
			}
		})
	}
	if len(fb.users) != 0 {
		t.Fatalf("a refused request started a backfill: %v", fb.users)
	}
	r := ts.do("POST", "/_profilestore/v1/backfill", admin, `{"users":["@carol:example.com"]}`)
	if r.Status != 202 || r.json(t)["started"] != true {
		t.Fatalf("start: %d %s", r.Status, r.Body)
	}
	if len(fb.users) != 1 || len(fb.users[0]) != 1 || fb.users[0][0] != "@carol:example.com" {
		t.Errorf("started with users %v, want [@carol:example.com]", fb.users)
	}
	if r := ts.do("POST", "/_profilestore/v1/backfill", admin, nil); r.Status != 200 || r.json(t)["started"] != false {
		t.Errorf("start while running: %d %s, want 200 and started false", r.Status, r.Body)
	}
	if r := ts.do("GET", "/_profilestore/v1/backfill", admin, nil); r.Status != 200 || r.json(t)["running"] != true {
		t.Errorf("status: %d %s", r.Status, r.Body)
	}
}

func TestNoBackfillRouteWithoutTheAppservice(t *testing.T) {
	ts := newTestService(t)
	if r := ts.do("POST", "/_profilestore/v1/backfill", ts.tokens["@admin:example.com"], nil); r.Status != 404 {
		t.Errorf("POST /backfill without a backfill configured: %d %s, want 404", r.Status, r.Body)
	}
}

// TestConsoleShowsTheBackfill: the admins' overview has a line on the
// running or last backfill, none before the first.
func TestConsoleShowsTheBackfill(t *testing.T) {
	started, finished := time.Date(2026, 12, 1, 22, 0, 0, 0, time.UTC), time.Date(2026, 12, 1, 22, 5, 0, 0, time.UTC)
	for _, tc := range []struct {
		name   string
		status pshttp.BackfillStatus
		want   string
	}{
		{"never ran", pshttp.BackfillStatus{}, ""},
		{"running", pshttp.BackfillStatus{Running: true, Phase: "write", Rooms: 40, Done: 12, Events: 5120, Recorded: 311, Started: &started},
			"A backfill is running: recording rooms, 12 of 40 done; 5120 events read, 311 changes recorded."},
		{"stopped", pshttp.BackfillStatus{Started: &started, Finished: &finished, Error: "context canceled"},
			"The last backfill stopped before the end: context canceled. Starting it again resumes where it stopped."},
		{"finished", pshttp.BackfillStatus{Phase: "write", Rooms: 3, Done: 3, Started: &started, Finished: &finished, Unreadable: 1},
			"The last backfill finished at 2026-12-01 22:05 UTC: 3 of 3 rooms. 1 room(s) could not be read."},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := tc.status
			ts := newTestService(t, func(c *pshttp.Config) { c.Backfill = &fakeBackfill{status: &st} })
			status, body, _ := ts.consoleGet("/console/", ts.consoleCookieOf("@admin:example.com"))
			if status != 200 {
				t.Fatalf("overview: %d", status)
			}
			if shown := strings.Contains(body, "Backfill from the homeserver"); shown != (tc.want != "") {
				t.Errorf("backfill section shown: %v, want %v", shown, tc.want != "")
			}
			if tc.want != "" && !strings.Contains(body, tc.want) {
				t.Errorf("overview lacks %q", tc.want)
			}
		})
	}
}
