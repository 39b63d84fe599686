package appservice_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/profilestore/profilestore/appservice"
	"github.com/profilestore/profilestore/domain"
	"github.com/profilestore/profilestore/eventstore"
	pshttp "github.com/profilestore/profilestore/http"
	"github.com/profilestore/profilestore/projections"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"
)

func quietLogger() *logrus.Logger {
	l := logrus.New()
	l.SetOutput(io.Discard)
	return l
}

// fakeAS is a real appservice on loopback that answers MSC4337 calls.
type fakeAS struct {
	*httptest.Server
	reg   *appservice.Registration
	calls atomic.Int64
	last  atomic.Value // *http.Request
}

// newFakeAS starts an appservice whose users namespace is regex; answer
// handles every authenticated profile call.
func newFakeAS(t *testing.T, id, regex string, unstable bool, answer http.HandlerFunc) *fakeAS {
	t.Helper()
	as := &fakeAS{}
	hsToken := "hs-" + id
	as.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		as.calls.Add(1)
		as.last.Store(r.Clone(context.Background()))
		if r.Header.Get("Authorization") != "Bearer "+hsToken {
			w.WriteHeader(http.StatusForbidden)
			_, _ = io.WriteString(w, `{"errcode":"M_FORBIDDEN"}`)
			return
		}
		prefix := "/_matrix/app/v1/profile/"
		if unstable {
			prefix = "/_matrix/app/uk.half-shot.msc4337/profile/"
		}
		if !strings.HasPrefix(r.URL.Path, prefix) {
			w.WriteHeader(http.StatusNotFound)
			_, _ = io.WriteString(w, `{"errcode":"M_UNRECOGNIZED"}`)
			return
		}
		answer(w, r)
	}))
	t.Cleanup(as.Close)
	doc := "id: " + id + "\nurl: " + as.URL + "\nas_token: as-" + id + "\nhs_token: " + hsToken +
		"\nsender_localpart: _" + id + "\nnamespaces:\n  users:\n    - regex: '" + regex + "'\n      exclusive: true\n"
	if unstable {
		doc += "msc4337_supports_profile_lookup: true\n"
	} else {
		doc += "supports_profile_lookup: true\n"
	}
	reg, err := appservice.ParseRegistration([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	as.reg = reg
	return as
}

func lastRequest(as *fakeAS) *http.Request {
	r, _ := as.last.Load().(*http.Request)
	return r
}

func jsonAnswer(body string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, body)
	}
}

func newSupplier(opts appservice.SupplierOptions, ases ...*fakeAS) *appservice.Supplier {
	for _, as := range ases {
		opts.Registrations = append(opts.Registrations, as.reg)
	}
	opts.Logger = quietLogger()
	return appservice.NewSupplier(opts)
}

func TestSupplementCooperativeFullAndKey(t *testing.T) {
	as := newFakeAS(t, "status", "@_bridge_.*", false, func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/org.example.status") {
			jsonAnswer(`{"org.example.status":"meeting"}`)(w, r)
			return
		}
		jsonAnswer(`{"displayname":"Bob (busy)","org.example.status":"meeting"}`)(w, r)
	})
	s := newSupplier(appservice.SupplierOptions{}, as)
	got := s.Supplement(context.Background(), "@_bridge_bob:example.org", "", "@alice:example.org")
	if string(got["displayname"]) != `"Bob (busy)"` || string(got["org.example.status"]) != `"meeting"` {
		t.Fatalf("full supplement = %v", got)
	}
	req := lastRequest(as)
	if req.URL.EscapedPath() != "/_matrix/app/v1/profile/@_bridge_bob:example.org" && req.URL.Path != "/_matrix/app/v1/profile/@_bridge_bob:example.org" {
		t.Fatalf("path = %q", req.URL.Path)
	}
	if req.URL.Query().Get("from_user_id") != "@alice:example.org" {
		t.Fatalf("from_user_id = %q", req.URL.Query().Get("from_user_id"))
	}

	got = s.Supplement(context.Background(), "@_bridge_bob:example.org", "org.example.status", "")
	if len(got) != 1 || string(got["org.example.status"]) != `"meeting"` {
		t.Fatalf("key supplement = %v", got)
	}
	if _, ok := lastRequest(as).URL.Query()["from_user_id"]; ok {
		t.Fatal("from_user_id sent for an unknown requester")
	}

	// Users outside the namespace are not asked at all.
	before := as.calls.Load()
	if got := s.Supplement(context.Background(), "@alice:example.org", "", ""); got != nil {
		t.Fatalf("supplement for a user outside every namespace = %v", got)
	}
	if as.calls.Load() != before {
		t.Fatal("an appservice was asked about a user outside its namespace")
	}
}

func TestSupplementUnstablePath(t *testing.T) {
	as := newFakeAS(t, "unstable", "@.*", true, jsonAnswer(`{"org.example.x":1}`))
	s := newSupplier(appservice.SupplierOptions{}, as)
	got := s.Supplement(context.Background(), "@bob:example.org", "", "")
	if string(got["org.example.x"]) != "1" {
		t.Fatalf("unstable supplement = %v", got)
	}
	if p := lastRequest(as).URL.Path; !strings.HasPrefix(p, "/_matrix/app/uk.half-shot.msc4337/profile/") {
		t.Fatalf("path = %q", p)
	}
}

func TestSupplementOverlappingNamespacesMergeInRegistrationOrder(t *testing.T) {
	first := newFakeAS(t, "first", "@.*", false, jsonAnswer(`{"displayname":"First","org.first.a":true}`))
	second := newFakeAS(t, "second", "@bob.*", false, jsonAnswer(`{"displayname":"Second","org.second.b":true}`))
	s := newSupplier(appservice.SupplierOptions{}, first, second)
	for i := 0; i < 5; i++ { // the order must not depend on which answers first
		got := s.Supplement(context.Background(), "@bob:example.org", "", "")
		if string(got["displayname"]) != `"Second"` || got["org.first.a"] == nil || got["org.second.b"] == nil {
			t.Fatalf("merged = %v", got)
		}
	}
	// Swapping the registrations swaps the winner.
	s = newSupplier(appservice.SupplierOptions{}, second, first)
	if got := s.Supplement(context.Background(), "@bob:example.org", "", ""); string(got["displayname"]) != `"First"` {
		t.Fatalf("merged (swapped) = %v", got)
	}
}

func TestSupplementSlowAppserviceMissesTheDeadline(t *testing.T) {
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	slow := newFakeAS(t, "slow", "@.*", false, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
		jsonAnswer(`{"displayname":"too late"}`)(w, r)
	})
	fast := newFakeAS(t, "fast", "@.*", false, jsonAnswer(`{"org.fast.x":true}`))
	s := newSupplier(appservice.SupplierOptions{Deadline: 100 * time.Millisecond}, slow, fast)
	start := time.Now()
	got := s.Supplement(context.Background(), "@bob:example.org", "", "")
	if d := time.Since(start); d > time.Second {
		t.Fatalf("a slow appservice held the read for %s", d)
	}
	if got["displayname"] != nil || got["org.fast.x"] == nil {
		t.Fatalf("merged = %v", got)
	}
}

func TestSupplementSlowBodyMissesTheDeadline(t *testing.T) {
	// Headers come at once, the body drips: the deadline covers the body too.
	as := newFakeAS(t, "drip", "@.*", false, func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusOK)
		_, _ = io.WriteString(w, `{"displayname":`)
		w.(http.Flusher).Flush()
		select {
		case <-time.After(2 * time.Second):
		case <-r.Context().Done():
		}
		_, _ = io.WriteString(w, `"x"}`)
	})
	s := newSupplier(appservice.SupplierOptions{Deadline: 100 * time.Millisecond}, as)
	start := time.Now()
	if got := s.Supplement(context.Background(), "@bob:example.org", "", ""); got != nil {
		t.Fatalf("merged = %v", got)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("a dripping body held the read for %s", d)
	}
}

func TestSupplementHostileAnswers(t *testing.T) {
	huge := `{"org.example.big":"` + strings.Repeat("a", 70<<10) + `"}`
	cases := []struct {
		name string
		h    http.HandlerFunc
		want map[string]string // key -> canonical JSON; nil: no contribution
	}{
		{"not found", func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusNotFound)
			_, _ = io.WriteString(w, `{"errcode":"M_NOT_FOUND"}`)
		}, nil},
		{"server error", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusInternalServerError) }, nil},
		{"huge body", jsonAnswer(huge), nil},
		{"invalid json", jsonAnswer(`{"displayname":"x"`), nil},
		{"array", jsonAnswer(`["displayname"]`), nil},
		{"null", jsonAnswer(`null`), nil},
		{"trailing garbage", jsonAnswer(`{"displayname":"x"} {}`), nil},
		{"wrong types", jsonAnswer(`{"displayname":42,"avatar_url":"https://evil.example/x.png","m.tz":{"a":1},"org.example.ok":[1,2]}`),
			map[string]string{"org.example.ok": "[1,2]"}},
		{"wrong keys", jsonAnswer(`{"Display Name":"x","":"y","org.example.ok":"fine","nonamespace":"z"}`),
			map[string]string{"org.example.ok": `"fine"`}},
		{"redirect", func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, "http://127.0.0.1:1/steal", http.StatusFound)
		}, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			as := newFakeAS(t, "hostile", "@.*", false, c.h)
			s := newSupplier(appservice.SupplierOptions{}, as)
			got := s.Supplement(context.Background(), "@bob:example.org", "", "")
			if len(got) != len(c.want) {
				t.Fatalf("got %v, want %v", got, c.want)
			}
			for k, v := range c.want {
				if string(got[k]) != v {
					t.Fatalf("%s = %s, want %s", k, got[k], v)
				}
			}
		})
	}
}

func TestSupplementSingleKeyIgnoresOtherKeys(t *testing.T) {
	as := newFakeAS(t, "chatty", "@.*", false, jsonAnswer(`{"displayname":"Sneaky","org.example.status":"here"}`))
	s := newSupplier(appservice.SupplierOptions{}, as)
	got := s.Supplement(context.Background(), "@bob:example.org", "org.example.status", "")
	if len(got) != 1 || string(got["org.example.status"]) != `"here"` {
		t.Fatalf("got %v", got)
	}
}

func TestSupplementResponseCapIsExact(t *testing.T) {
	const limit = 1024
	body := `{"org.example.pad":"` + strings.Repeat("a", limit-len(`{"org.example.pad":""}`)) + `"}`
	if len(body) != limit {
		t.Fatalf("test body is %d bytes", len(body))
	}
	exact := newFakeAS(t, "exact", "@.*", false, jsonAnswer(body))
	over := newFakeAS(t, "over", "@.*", false, jsonAnswer(body+" "))
	if got := newSupplier(appservice.SupplierOptions{MaxResponseBytes: limit}, exact).Supplement(context.Background(), "@bob:example.org", "", ""); got == nil {
		t.Fatal("an answer of exactly the limit was refused")
	}
	if got := newSupplier(appservice.SupplierOptions{MaxResponseBytes: limit}, over).Supplement(context.Background(), "@bob:example.org", "", ""); got != nil {
		t.Fatal("an answer one byte over the limit was taken")
	}
}

func TestSupplementCircuitBreaker(t *testing.T) {
	var failing atomic.Bool
	failing.Store(true)
	as := newFakeAS(t, "flaky", "@.*", false, func(w http.ResponseWriter, r *http.Request) {
		if failing.Load() {
			w.WriteHeader(http.StatusBadGateway)
			return
		}
		jsonAnswer(`{"org.example.up":true}`)(w, r)
	})
	s := newSupplier(appservice.SupplierOptions{FailureThreshold: 3, Cooldown: 200 * time.Millisecond}, as)
	reg := prometheus.NewRegistry()
	reg.MustRegister(s.Collectors()...)
	ctx := context.Background()
	for i := 0; i < 10; i++ {
		s.Supplement(ctx, "@bob:example.org", "", "")
	}
	if n := as.calls.Load(); n != 3 {
		t.Fatalf("the failing appservice was called %d times, want 3 before the circuit opened", n)
	}
	if v := gaugeValue(t, reg, "profilestore_msc4337_circuit_open", "flaky"); v != 1 {
		t.Fatalf("circuit_open = %v", v)
	}
	failing.Store(false)
	time.Sleep(250 * time.Millisecond)
	if got := s.Supplement(ctx, "@bob:example.org", "", ""); got == nil {
		t.Fatal("the probe after the cooldown did not go out")
	}
	if got := s.Supplement(ctx, "@bob:example.org", "", ""); got == nil {
		t.Fatal("the circuit did not close after a good probe")
	}
	if v := gaugeValue(t, reg, "profilestore_msc4337_circuit_open", "flaky"); v != 0 {
		t.Fatalf("circuit_open = %v after recovery", v)
	}
	if n := testutilCount(t, reg, "profilestore_msc4337_requests_total", "bad_status"); n != 3 {
		t.Fatalf("bad_status count = %v", n)
	}
}

func TestSupplementNotFoundDoesNotOpenTheCircuit(t *testing.T) {
	as := newFakeAS(t, "shy", "@.*", false, func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNotFound) })
	s := newSupplier(appservice.SupplierOptions{FailureThreshold: 2}, as)
	for i := 0; i < 5; i++ {
		s.Supplement(context.Background(), "@bob:example.org", "", "")
	}
	if n := as.calls.Load(); n != 5 {
		t.Fatalf("calls = %d: 404s opened the circuit", n)
	}
}

func TestSupplementSkipsRegistrationsWithoutTheFlagOrURL(t *testing.T) {
	as := newFakeAS(t, "plain", "@.*", false, jsonAnswer(`{"org.example.x":1}`))
	as.reg.SupportsProfileLookup = false
	s := newSupplier(appservice.SupplierOptions{}, as)
	if got := s.Supplement(context.Background(), "@bob:example.org", "", ""); got != nil || as.calls.Load() != 0 {
		t.Fatalf("an appservice without supports_profile_lookup was asked: %v", got)
	}
}

func gaugeValue(t *testing.T, reg *prometheus.Registry, name, as string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "appservice" && l.GetValue() == as {
					return m.GetGauge().GetValue()
				}
			}
		}
	}
	t.Fatalf("no %s for %s", name, as)
	return 0
}

func testutilCount(t *testing.T, reg *prometheus.Registry, name, outcome string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "outcome" && l.GetValue() == outcome {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// TestProfileReadsCarrySupplements drives the Matrix client API of a real
// profilestore HTTP server with a supplier of loopback appservices.
func TestProfileReadsCarrySupplements(t *testing.T) {
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	coop := newFakeAS(t, "coop", "@.*", false, func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/displayname") {
			jsonAnswer(`{"displayname":"Alice (away)"}`)(w, r)
			return
		}
		if strings.HasSuffix(r.URL.Path, "/avatar_url") {
			w.WriteHeader(http.StatusNotFound)
			return
		}
		jsonAnswer(`{"displayname":"Alice (away)","org.example.status":"away"}`)(w, r)
	})
	slow := newFakeAS(t, "slow", "@.*", false, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	sup := newSupplier(appservice.SupplierOptions{Deadline: 150 * time.Millisecond}, coop, slow)
	views := aliceView(t)
	srv := httptest.NewServer(pshttp.NewServer(pshttp.Config{ProfileView: views, Supplier: sup, Collectors: sup.Collectors(), Logger: quietLogger()}).Handler())
	t.Cleanup(srv.Close)

	get := func(path string) (int, map[string]any, http.Header) {
		t.Helper()
		start := time.Now()
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if d := time.Since(start); d > time.Second {
			t.Fatalf("GET %s took %s", path, d)
		}
		var body map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&body)
		return resp.StatusCode, body, resp.Header
	}
	status, body, hdr := get("/_matrix/client/v3/profile/@alice:example.org")
	if status != 200 || body["displayname"] != "Alice (away)" || body["avatar_url"] != "mxc://example.org/a" || body["org.example.status"] != "away" {
		t.Fatalf("full profile: %d %v", status, body)
	}
	if hdr.Get("Cache-Control") != "no-store" {
		t.Fatalf("Cache-Control = %q", hdr.Get("Cache-Control"))
	}
	if status, body, _ = get("/_matrix/client/v3/profile/@alice:example.org/displayname"); status != 200 || body["displayname"] != "Alice (away)" || len(body) != 1 {
		t.Fatalf("displayname: %d %v", status, body)
	}
	// The appservice has nothing for avatar_url: the stored value stands.
	if status, body, _ = get("/_matrix/client/v3/profile/@alice:example.org/avatar_url"); status != 200 || body["avatar_url"] != "mxc://example.org/a" {
		t.Fatalf("avatar_url: %d %v", status, body)
	}
	// A user with nothing stored still gets what an appservice supplies.
	if status, body, _ = get("/_matrix/client/v3/profile/@nobody:example.org"); status != 200 || body["org.example.status"] != "away" {
		t.Fatalf("supplied-only profile: %d %v", status, body)
	}
	// The stored profile is untouched by the supplements.
	if st := views.Get("@alice:example.org"); string(st.Profile.Fields["displayname"]) != `"Alice"` {
		t.Fatalf("stored displayname became %s", st.Profile.Fields["displayname"])
	}
	// Per-appservice metrics are served with the server's.
	resp, err := http.Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	m, _ := io.ReadAll(resp.Body)
	if !strings.Contains(string(m), `profilestore_msc4337_requests_total{appservice="slow",outcome="timeout"}`) {
		t.Fatalf("metrics lack the slow appservice's timeouts:\n%s", m)
	}
}

// TestProfilesQueryCarriesSupplements: POST /_profilestore/v1/profiles/query
// follows GET /profile's read rules, supplements included: laid over the
// stored keys, the single-key form asked for one key, users with nothing
// stored still supplied.
func TestProfilesQueryCarriesSupplements(t *testing.T) {
	coop := newFakeAS(t, "coop", "@.*", false, func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/avatar_url") {
			w.WriteHeader(http.StatusNotFound)
			return
		}
		jsonAnswer(`{"displayname":"Away","org.example.status":"away"}`)(w, r)
	})
	sup := newSupplier(appservice.SupplierOptions{Deadline: 500 * time.Millisecond}, coop)
	views := aliceView(t)
	srv := httptest.NewServer(pshttp.NewServer(pshttp.Config{ProfileView: views, Supplier: sup, Logger: quietLogger()}).Handler())
	t.Cleanup(srv.Close)

	query := func(body string) (map[string]map[string]any, http.Header) {
		t.Helper()
		resp, err := http.Post(srv.URL+"/_profilestore/v1/profiles/query", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out struct {
			Profiles map[string]map[string]any `json:"profiles"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != 200 {
			t.Fatalf("%d %v", resp.StatusCode, err)
		}
		return out.Profiles, resp.Header
	}
	got, hdr := query(`{"users":["@alice:example.org","@nobody:example.org"],"keys":["displayname","avatar_url","org.example.status"]}`)
	alice, nobody := got["@alice:example.org"], got["@nobody:example.org"]
	if alice["displayname"] != "Away" || alice["avatar_url"] != "mxc://example.org/a" || alice["org.example.status"] != "away" {
		t.Errorf("alice: %v", alice)
	}
	if nobody["org.example.status"] != "away" || nobody["avatar_url"] != nil {
		t.Errorf("a user with nothing stored: %v", nobody)
	}
	if hdr.Get("Cache-Control") != "no-store" {
		t.Errorf("Cache-Control = %q", hdr.Get("Cache-Control"))
	}
	// One key: the appservice is asked for that key, has nothing, and the
	// stored value stands; keys not chosen are left out.
	got, _ = query(`{"users":["@alice:example.org"],"keys":["avatar_url"]}`)
	if a := got["@alice:example.org"]; len(a) != 1 || a["avatar_url"] != "mxc://example.org/a" {
		t.Errorf("single key: %v", a)
	}
	if p := lastRequest(coop).URL.Path; !strings.HasSuffix(p, "/avatar_url") {
		t.Errorf("single-key query asked %s", p)
	}
}

// aliceView is a profiles view over a fresh view store holding Alice's
// display name and avatar, as the server's own fields beside supplements.
func aliceView(t *testing.T) *projections.Profiles {
	t.Helper()
	db := openViews(t, t.TempDir())
	t.Cleanup(func() { db.Close() })
	views := projections.NewProfiles(db, 0)
	if err := projections.ApplyEvents(db, []projections.View{views},
		&domain.Event{Type: domain.TypeFieldSet, User: "@alice:example.org", Key: "displayname", Value: json.RawMessage(`"Alice"`), Position: eventstore.Position{Commit: 1, Prepare: 1}},
		&domain.Event{Type: domain.TypeFieldSet, User: "@alice:example.org", Key: "avatar_url", Value: json.RawMessage(`"mxc://example.org/a"`), Position: eventstore.Position{Commit: 2, Prepare: 2}}); err != nil {
		t.Fatal(err)
	}
	return views
}
