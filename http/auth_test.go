package http_test

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/profilestore/profilestore/domain"
	pshttp "github.com/profilestore/profilestore/http"
	"github.com/sirupsen/logrus"
)

// fakeHomeserver is a real HTTP server answering whoami like a homeserver.
func fakeHomeserver(t *testing.T, calls *atomic.Int64) *httptest.Server {
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		if r.URL.Path != "/_matrix/client/v3/account/whoami" {
			w.WriteHeader(404)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		switch r.Header.Get("Authorization") {
		case "Bearer good":
			w.Write([]byte(`{"user_id":"@carol:example.com","is_guest":false}`))
		case "Bearer boss":
			w.Write([]byte(`{"user_id":"@boss:example.com"}`))
		case "Bearer broken":
			w.WriteHeader(500)
		default:
			w.WriteHeader(401)
			w.Write([]byte(`{"errcode":"M_UNKNOWN_TOKEN","error":"Unknown token"}`))
		}
	}))
	t.Cleanup(hs.Close)
	return hs
}

func TestHomeserverAuth(t *testing.T) {
	var calls atomic.Int64
	hs := fakeHomeserver(t, &calls)
	auth := pshttp.NewHomeserverAuth(hs.URL, nil, time.Minute, time.Minute, []domain.UserID{"@boss:example.com"})
	ctx := context.Background()

	id, err := auth.Authenticate(ctx, "good")
	if err != nil || id.User != "@carol:example.com" || id.Admin {
		t.Fatalf("good token: %+v %v", id, err)
	}
	if _, err := auth.Authenticate(ctx, "good"); err != nil || calls.Load() != 1 {
		t.Errorf("positive answer not cached: %d calls", calls.Load())
	}
	if id, _ := auth.Authenticate(ctx, "boss"); !id.Admin {
		t.Error("configured admin not granted admin")
	}
	_, err = auth.Authenticate(ctx, "bad")
	if domain.ErrorCode(err) != domain.ErrCodeUnknownToken {
		t.Fatalf("bad token: %v", err)
	}
	n := calls.Load()
	_, _ = auth.Authenticate(ctx, "bad")
	if calls.Load() != n {
		t.Error("negative answer not cached")
	}
	if _, err := auth.Authenticate(ctx, "broken"); domain.ErrorCode(err) != domain.ErrCodeUnavailable {
		t.Errorf("homeserver 500: %v", err)
	}
	down := pshttp.NewHomeserverAuth("http://127.0.0.1:1", nil, time.Minute, time.Minute, nil)
	if _, err := down.Authenticate(ctx, "good"); domain.ErrorCode(err) != domain.ErrCodeUnavailable {
		t.Errorf("unreachable homeserver: %v", err)
	}
}

func TestHomeserverAuthOverHTTP(t *testing.T) {
	var calls atomic.Int64
	hs := fakeHomeserver(t, &calls)
	ts := newTestService(t, func(c *pshttp.Config) {
		c.Auth = pshttp.NewHomeserverAuth(hs.URL, nil, time.Minute, time.Second, nil)
	})
	if r := ts.do("PUT", "/_matrix/client/v3/profile/@carol:example.com/displayname", "good", `{"displayname":"Carol"}`); r.Status != 200 {
		t.Fatalf("%d %s", r.Status, r.Body)
	}
	if r := ts.do("PUT", "/_matrix/client/v3/profile/@carol:example.com/displayname", "nope", `{"displayname":"X"}`); r.Status != 401 || r.errcode(t) != "M_UNKNOWN_TOKEN" {
		t.Errorf("bad token: %d %s", r.Status, r.Body)
	}
	if r := ts.do("PUT", "/_matrix/client/v3/profile/@carol:example.com/displayname", "broken", `{"displayname":"X"}`); r.Status != 502 || r.errcode(t) == "M_UNKNOWN_TOKEN" {
		t.Errorf("homeserver failing must not look like a bad token: %d %s", r.Status, r.Body)
	}
}

func TestTokensNeverLogged(t *testing.T) {
	var logs bytes.Buffer
	log := logrus.New()
	log.SetOutput(&logs)
	log.SetLevel(logrus.DebugLevel)
	ts := newTestService(t, func(c *pshttp.Config) { c.Logger = log })
	A := ts.tokens[alice]
	ts.do("PUT", "/_matrix/client/v3/profile/@alice:example.com/displayname", A, `{"displayname":"Alice"}`)
	ts.do("PUT", "/_matrix/client/v3/profile/@alice:example.com/displayname", "wrong-secret-token", `{"displayname":"Alice"}`)
	ts.do("GET", "/_matrix/client/v3/profile/@alice:example.com?access_token=query-secret", "", nil)
	if logs.Len() == 0 {
		t.Fatal("no request logs at debug level")
	}
	for _, secret := range []string{A, "wrong-secret-token", "query-secret"} {
		if strings.Contains(logs.String(), secret) {
			t.Errorf("logs contain a token: %s", secret)
		}
	}
	if !strings.Contains(logs.String(), "request_id") {
		t.Error("request logs carry no request id")
	}
}

func TestTokenFileStoresOnlyHashes(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tokens.yaml")
	tok, err := pshttp.IssueToken(path, "@dave:example.com", false, "")
	if err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(path)
	if strings.Contains(string(data), tok) {
		t.Fatal("the tokens file holds the token itself")
	}
	tf, err := pshttp.LoadTokenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if id, err := tf.Authenticate(context.Background(), tok); err != nil || id.User != "@dave:example.com" {
		t.Fatalf("%+v %v", id, err)
	}
	if _, err := tf.Authenticate(context.Background(), tok+"x"); domain.ErrorCode(err) != domain.ErrCodeUnknownToken {
		t.Fatalf("altered token: %v", err)
	}
	os.WriteFile(path, []byte("tokens:\n  - user_id: '@x:y'\n    token_sha256: nothex\n"), 0o600)
	if _, err := pshttp.LoadTokenFile(path); err == nil {
		t.Error("a malformed tokens file loaded")
	}
}

func TestTokenIssuedWhileRunningWorks(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tokens.yaml")
	if _, err := pshttp.IssueToken(path, "@first:example.com", false, ""); err != nil {
		t.Fatal(err)
	}
	tf, err := pshttp.LoadTokenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(1100 * time.Millisecond) // the file's mtime and the reload throttle are both second-grained
	tok, err := pshttp.IssueToken(path, "@second:example.com", false, "")
	if err != nil {
		t.Fatal(err)
	}
	if id, err := tf.Authenticate(context.Background(), tok); err != nil || id.User != "@second:example.com" {
		t.Fatalf("a token issued after loading: %+v %v", id, err)
	}
}
