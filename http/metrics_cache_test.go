package http_test

import (
	"regexp"
	"strconv"
	"testing"

	"github.com/profilestore/profilestore/domain"
	pshttp "github.com/profilestore/profilestore/http"
)

// TestCommandCacheMetrics bounds the profile cache at one user: writing two
// users evicts one, and /metrics says so for both caches.
func TestCommandCacheMetrics(t *testing.T) {
	ts := newTestService(t, func(c *pshttp.Config) {
		c.Profiles = domain.NewProfileService(c.Store, c.Sealer, domain.DefaultPolicy, domain.CacheSize(1))
	})
	for _, u := range []domain.UserID{alice, bob} {
		if r := ts.do("PUT", "/_matrix/client/v3/profile/"+string(u)+"/displayname", ts.tokens[u], `{"displayname":"Cached"}`); r.Status != 200 {
			t.Fatalf("PUT %s: %d %s", u, r.Status, r.Body)
		}
	}
	body := string(ts.do("GET", "/metrics", "", nil).Body)
	value := func(metric, cache string) float64 {
		t.Helper()
		m := regexp.MustCompile(`(?m)^profilestore_command_cache_` + metric + `\{cache="` + cache + `"\} (\S+)$`).FindStringSubmatch(body)
		if m == nil {
			t.Fatalf("no %s for %s in /metrics", metric, cache)
		}
		v, err := strconv.ParseFloat(m[1], 64)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	if got := value("capacity", "profiles"); got != 1 {
		t.Errorf("profiles capacity %v, want 1", got)
	}
	if got := value("entries", "profiles"); got != 1 {
		t.Errorf("profiles entries %v, want 1", got)
	}
	if got := value("evictions_total", "profiles"); got < 1 {
		t.Errorf("profiles evictions %v, want at least 1", got)
	}
	if got := value("misses_total", "profiles"); got < 2 {
		t.Errorf("profiles misses %v, want at least 2", got)
	}
	value("hits_total", "profiles")
	if got := value("capacity", "rooms"); got != domain.DefaultCachedRooms {
		t.Errorf("rooms capacity %v, want %d", got, domain.DefaultCachedRooms)
	}
}
