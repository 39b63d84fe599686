package http_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"testing"
	"time"

	psapp "github.com/profilestore/profilestore/app"
	"github.com/profilestore/profilestore/domain"
	"github.com/profilestore/profilestore/eventstore"
	"github.com/profilestore/profilestore/eventstore/bolt"
	pshttp "github.com/profilestore/profilestore/http"
	"github.com/profilestore/profilestore/projections"
	"github.com/profilestore/profilestore/projections/viewstore"
	"github.com/sirupsen/logrus"
)

// testService is a real profilestore on a temporary bolt file behind a real
// loopback HTTP server.
type testService struct {
	t      testing.TB
	dir    string
	URL    string
	store  eventstore.Store
	views  *projections.Profiles
	names  *projections.NameIndex
	stats  *projections.Activity
	sealer *domain.Sealer
	runner *projections.Runner
	db     *projections.DB
	tokens map[domain.UserID]string // user -> access token
	server *httptest.Server
	stop   func()
	once   sync.Once
}

// Stop shuts the service down, as a restart would; it is safe to call twice.
func (ts *testService) Stop() { ts.once.Do(ts.stop) }

// serviceOption changes the server's configuration before it is built.
type serviceOption func(*pshttp.Config)

func newTestService(t testing.TB, opts ...serviceOption) *testService {
	t.Helper()
	return newTestServiceIn(t, t.TempDir(), opts...)
}

// newTestServiceIn serves the data directory dir (to test restarts).
func newTestServiceIn(t testing.TB, dir string, opts ...serviceOption) *testService {
	t.Helper()
	return newTestServiceWith(t, dir, domain.DefaultPolicy, opts...)
}

// newTestServiceWith serves dir under a write policy of the test's, wired
// as the command wires it (package app).
func newTestServiceWith(t testing.TB, dir string, policy domain.WritePolicy, opts ...serviceOption) *testService {
	t.Helper()
	store, err := bolt.Open(filepath.Join(dir, "events.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	keys, err := bolt.OpenKeyring(filepath.Join(dir, "keys.db"))
	if err != nil {
		t.Fatal(err)
	}
	log := logrus.New()
	log.SetOutput(io.Discard)
	a, err := psapp.New(store, keys, psapp.Options{DataDir: dir, Policy: &policy, Logger: log,
		ViewStore: viewstore.PebbleOptions{CacheBytes: 8 << 20, MemTableBytes: 4 << 20}})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Runner.Start(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	tokensPath := filepath.Join(dir, "tokens.yaml")
	ts := &testService{t: t, dir: dir, db: a.ViewStore(), store: store, views: a.ProfileView, names: a.Names, stats: a.Activity,
		sealer: a.Sealer, runner: a.Runner, tokens: map[domain.UserID]string{}}
	for _, u := range []struct {
		id    domain.UserID
		admin bool
	}{{"@alice:example.com", false}, {"@bob:example.com", false}, {"@admin:example.com", true}} {
		tok, err := pshttp.IssueToken(tokensPath, u.id, u.admin, "test")
		if err != nil {
			t.Fatal(err)
		}
		ts.tokens[u.id] = tok
	}
	auth, err := pshttp.LoadTokenFile(tokensPath)
	if err != nil {
		t.Fatal(err)
	}
	cfg := a.ServerConfig()
	cfg.Auth, cfg.Logger, cfg.WriteRate, cfg.WriteBurst = auth, log, 1000, 1000
	for _, o := range opts {
		o(&cfg)
	}
	srv := pshttp.NewServer(cfg)
	ts.server = httptest.NewServer(srv.Handler())
	ts.URL = ts.server.URL
	ts.stop = func() {
		srv.Close() // ends change feeds
		ts.server.Close()
		a.Close()
	}
	t.Cleanup(ts.Stop)
	return ts
}

// response is what a test reads back.
type response struct {
	Status int
	Header http.Header
	Body   []byte
}

func (r response) json(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.Body, &m); err != nil {
		t.Fatalf("body %q is not a JSON object: %v", r.Body, err)
	}
	return m
}

func (r response) errcode(t *testing.T) string {
	t.Helper()
	code, _ := r.json(t)["errcode"].(string)
	return code
}

// do sends a request; token "" sends no Authorization header.
func (ts *testService) do(method, path, token string, body any, headers ...string) response {
	ts.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = bytes.NewBufferString(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		raw, _ := json.Marshal(b)
		rd = bytes.NewReader(raw)
	}
	req, err := http.NewRequest(method, ts.URL+path, rd)
	if err != nil {
		ts.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Do(req)
	if err != nil {
		ts.t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return response{Status: resp.StatusCode, Header: resp.Header, Body: data}
}

// head returns the store's last position (to prove a refused write appended nothing).
func (ts *testService) head() eventstore.Position {
	ts.t.Helper()
	p, err := ts.store.Head(context.Background())
	if err != nil {
		ts.t.Fatal(err)
	}
	return p
}
