package http_test

import (
	"strings"
	"sync"
	"testing"

	"github.com/profilestore/profilestore/domain"
	pshttp "github.com/profilestore/profilestore/http"
)

// fakeBackfill records what the route asks of it.
type fakeBackfill struct {
	mu      sync.Mutex
	running bool
	users   [][]domain.UserID
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

func (f *fakeBackfill) Status() any {
	f.mu.Lock()
	defer f.mu.Unlock()
	return map[string]any{"running": f.running}
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
