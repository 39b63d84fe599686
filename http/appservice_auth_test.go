package http_test

import (
	"context"
	"encoding/json"
	"regexp"
	"testing"

	"github.com/profilestore/profilestore/domain"
	"github.com/profilestore/profilestore/eventstore"
	pshttp "github.com/profilestore/profilestore/http"
)

const (
	bridgeToken = "as_token_of_the_irc_bridge"
	otherToken  = "as_token_of_the_other_bridge"
)

// withAppservices puts two appservices in front of the tokens file: an IRC
// bridge owning @_irc_.* and a second bridge owning @_other_.*. Users in
// only a non-exclusive namespace are those Exclusive answers false for.
func withAppservices(t testing.TB) serviceOption {
	exclusive := func(pattern string) func(domain.UserID) bool {
		re := regexp.MustCompile(`^(?:` + pattern + `)`)
		return func(u domain.UserID) bool { return re.MatchString(string(u)) }
	}
	return func(cfg *pshttp.Config) {
		auth, err := pshttp.NewAppserviceAuth("example.com", []pshttp.AppserviceToken{
			{ID: "irc", Token: bridgeToken, Sender: "@_irc_bot:example.com", Exclusive: exclusive(`@_irc_.*`)},
			{ID: "other", Token: otherToken, Sender: "@_other_bot:example.com", Exclusive: exclusive(`@_other_.*`)},
		}, cfg.Auth)
		if err != nil {
			t.Fatal(err)
		}
		cfg.Auth = auth
	}
}

func TestAppserviceIdentityAssertion(t *testing.T) {
	ts := newTestService(t, withAppservices(t))
	const p = "/_matrix/client/v3/profile/"
	A := ts.tokens[alice]
	cases := []struct {
		name, method, path, token string
		status                    int
		errcode                   string
		// actor and source are what the appended event records.
		actor, source string
	}{
		{"ghost in exclusive namespace", "PUT", p + "@_irc_carol:example.com/displayname?user_id=@_irc_carol:example.com", bridgeToken,
			200, "", "@_irc_carol:example.com", "appservice:irc"},
		{"sender without user_id", "PUT", p + "@_irc_bot:example.com/displayname", bridgeToken,
			200, "", "@_irc_bot:example.com", "appservice:irc"},
		{"sender named explicitly", "PUT", p + "@_irc_bot:example.com/displayname?user_id=@_irc_bot:example.com", bridgeToken,
			200, "", "@_irc_bot:example.com", "appservice:irc"},
		{"sender may not write a ghost", "PUT", p + "@_irc_carol:example.com/displayname", bridgeToken,
			403, "M_FORBIDDEN", "", ""},
		{"asserted ghost may not write another ghost", "PUT", p + "@_irc_dave:example.com/displayname?user_id=@_irc_carol:example.com", bridgeToken,
			403, "M_FORBIDDEN", "", ""},
		{"outside every namespace", "PUT", p + "@alice:example.com/displayname?user_id=@alice:example.com", bridgeToken,
			403, "M_EXCLUSIVE", "", ""},
		{"another appservice's namespace", "PUT", p + "@_other_x:example.com/displayname?user_id=@_other_x:example.com", bridgeToken,
			403, "M_EXCLUSIVE", "", ""},
		{"namespace regex on another server", "PUT", p + "@_irc_carol:evil.example/displayname?user_id=@_irc_carol:evil.example", bridgeToken,
			403, "M_EXCLUSIVE", "", ""},
		{"non-exclusive namespace", "PUT", p + "@shared_x:example.com/displayname?user_id=@shared_x:example.com", bridgeToken,
			403, "M_EXCLUSIVE", "", ""},
		{"regex anchored at the start only", "PUT", p + "@x_irc_y:example.com/displayname?user_id=@x_irc_y:example.com", bridgeToken,
			403, "M_EXCLUSIVE", "", ""},
		{"empty user_id", "PUT", p + "@_irc_bot:example.com/displayname?user_id=", bridgeToken,
			400, "M_INVALID_PARAM", "", ""},
		{"malformed user_id", "PUT", p + "@_irc_bot:example.com/displayname?user_id=carol", bridgeToken,
			400, "M_INVALID_PARAM", "", ""},
		{"user_id twice", "PUT", p + "@_irc_carol:example.com/displayname?user_id=@_irc_carol:example.com&user_id=@alice:example.com", bridgeToken,
			400, "M_INVALID_PARAM", "", ""},
		{"unknown as_token", "PUT", p + "@_irc_carol:example.com/displayname?user_id=@_irc_carol:example.com", bridgeToken + "x",
			401, "M_UNKNOWN_TOKEN", "", ""},
		{"user may not assert another user", "PUT", p + "@bob:example.com/displayname?user_id=@bob:example.com", A,
			403, "M_FORBIDDEN", "", ""},
		{"user may not assert a ghost", "PUT", p + "@_irc_carol:example.com/displayname?user_id=@_irc_carol:example.com", A,
			403, "M_FORBIDDEN", "", ""},
		{"user_id is ignored for users", "PUT", p + "@alice:example.com/displayname?user_id=@bob:example.com", A,
			200, "", "@alice:example.com", "client"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := ts.head()
			r := ts.do(c.method, c.path, c.token, map[string]string{"displayname": c.name})
			if r.Status != c.status {
				t.Fatalf("status %d, want %d: %s", r.Status, c.status, r.Body)
			}
			if c.errcode != "" {
				if got := r.errcode(t); got != c.errcode {
					t.Fatalf("errcode %s, want %s", got, c.errcode)
				}
				if ts.head() != before {
					t.Fatal("a refused write moved the log")
				}
				return
			}
			actor, source := lastMetadata(t, ts, before)
			if actor != c.actor || source != c.source {
				t.Errorf("recorded actor %q source %q, want %q %q", actor, source, c.actor, c.source)
			}
		})
	}
}

// TestAppserviceWhoami shows who an as_token acts as, with and without
// user_id, since bridges call whoami to check their registration.
func TestAppserviceWhoami(t *testing.T) {
	ts := newTestService(t, withAppservices(t))
	for _, c := range []struct{ query, want string }{
		{"", "@_irc_bot:example.com"},
		{"?user_id=@_irc_carol:example.com", "@_irc_carol:example.com"},
	} {
		r := ts.do("GET", "/_matrix/client/v3/account/whoami"+c.query, bridgeToken, nil)
		if r.Status != 200 || r.json(t)["user_id"] != c.want {
			t.Errorf("whoami%s: %d %s, want %s", c.query, r.Status, r.Body, c.want)
		}
	}
	// The tokens file still answers for its users behind the appservices.
	if r := ts.do("GET", "/_matrix/client/v3/account/whoami", ts.tokens[bob], nil); r.json(t)["user_id"] != string(bob) {
		t.Errorf("whoami as bob: %s", r.Body)
	}
}

func TestNewAppserviceAuthRefuses(t *testing.T) {
	any := func(domain.UserID) bool { return true }
	for name, services := range map[string][]pshttp.AppserviceToken{
		"duplicate as_token": {{ID: "a", Token: "t", Sender: "@a:example.com", Exclusive: any}, {ID: "b", Token: "t", Sender: "@b:example.com", Exclusive: any}},
		"empty as_token":     {{ID: "a", Sender: "@a:example.com", Exclusive: any}},
		"foreign sender":     {{ID: "a", Token: "t", Sender: "@a:elsewhere.example", Exclusive: any}},
		"no namespaces":      {{ID: "a", Token: "t", Sender: "@a:example.com"}},
	} {
		if _, err := pshttp.NewAppserviceAuth("example.com", services, nil); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := pshttp.NewAppserviceAuth("not a server", nil, nil); err == nil {
		t.Error("bad server name accepted")
	}
}

// lastMetadata returns the actor and source of the last event after before.
func lastMetadata(t *testing.T, ts *testService, before eventstore.Position) (actor, source string) {
	t.Helper()
	events, err := ts.store.ReadAll(context.Background(), before, 100)
	if err != nil || len(events) == 0 {
		t.Fatalf("no event appended (%v)", err)
	}
	var m struct {
		Actor  string `json:"actor"`
		Source string `json:"source"`
	}
	if err := json.Unmarshal(events[len(events)-1].Metadata, &m); err != nil {
		t.Fatal(err)
	}
	return m.Actor, m.Source
}
