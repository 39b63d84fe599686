package esdb_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"io"
	"os"
	"sync"
	"testing"

	"github.com/sirupsen/logrus"

	"github.com/profilestore/profilestore/eventstore"
	"github.com/profilestore/profilestore/eventstore/esdb"
	"github.com/profilestore/profilestore/eventstore/esdb/esdbtest"
	"github.com/profilestore/profilestore/eventstore/storetest"
)

// realServerEnv names the environment variable with a connection string for
// a real EventStoreDB; the suites run against it too when it is set.
const realServerEnv = "PROFILESTORE_ESDB_URL"

func quietLogger() logrus.FieldLogger {
	l := logrus.New()
	l.SetOutput(io.Discard)
	return l
}

func openStore(t testing.TB, url string, opts esdb.Options) *esdb.Store {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = quietLogger()
	}
	s, err := esdb.Open(context.Background(), url, opts)
	if err != nil {
		t.Fatalf("Open(%s): %v", url, err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// harness opens stores on in-process servers (url == "": one new server per
// Open) or on a real server (each Open in a namespace of its own).
type harness struct {
	url string

	mu     sync.Mutex
	opened map[any]target
}

type target struct {
	url  string
	opts esdb.Options
}

func (h *harness) target(t *testing.T) target {
	if h.url == "" {
		return target{url: esdbtest.Start(t).URL(), opts: esdb.Options{Logger: quietLogger()}}
	}
	var b [4]byte
	_, _ = rand.Read(b[:])
	return target{url: h.url, opts: esdb.Options{Namespace: "t" + hex.EncodeToString(b[:]) + ".", Logger: quietLogger()}}
}

func (h *harness) remember(k any, tg target) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.opened == nil {
		h.opened = map[any]target{}
	}
	h.opened[k] = tg
}

func (h *harness) lookup(k any) target {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.opened[k]
}

func (h *harness) Open(t *testing.T) eventstore.Store {
	tg := h.target(t)
	s := openStore(t, tg.url, tg.opts)
	h.remember(s, tg)
	return s
}

func (h *harness) Reopen(t *testing.T, s eventstore.Store) eventstore.Store {
	tg := h.lookup(s)
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	s2 := openStore(t, tg.url, tg.opts)
	h.remember(s2, tg)
	return s2
}

type keyringHarness struct{ harness }

func (h *keyringHarness) Open(t *testing.T) eventstore.Keyring {
	tg := h.target(t)
	k, err := esdb.OpenKeyring(context.Background(), tg.url, tg.opts)
	if err != nil {
		t.Fatalf("OpenKeyring: %v", err)
	}
	t.Cleanup(func() { k.Close() })
	h.remember(k, tg)
	return k
}

func (h *keyringHarness) Reopen(t *testing.T, k eventstore.Keyring) eventstore.Keyring {
	tg := h.lookup(k)
	if err := k.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	k2, err := esdb.OpenKeyring(context.Background(), tg.url, tg.opts)
	if err != nil {
		t.Fatalf("OpenKeyring: %v", err)
	}
	t.Cleanup(func() { k2.Close() })
	h.remember(k2, tg)
	return k2
}

func TestConformance(t *testing.T) {
	storetest.Run(t, &harness{})
}

func TestKeyringConformance(t *testing.T) {
	storetest.RunKeyring(t, &keyringHarness{})
}

func realServer(t *testing.T) string {
	url := os.Getenv(realServerEnv)
	if url == "" {
		t.Skipf("%s is not set: the suite ran against the in-process test server only", realServerEnv)
	}
	return url
}

func TestConformanceRealServer(t *testing.T) {
	storetest.Run(t, &harness{url: realServer(t)})
}

func TestKeyringConformanceRealServer(t *testing.T) {
	storetest.RunKeyring(t, &keyringHarness{harness{url: realServer(t)}})
}

// TestConformanceSharedServer runs the suite as it runs against a real
// server: every store in a namespace of its own on one server whose log
// holds the other subtests' events.
func TestConformanceSharedServer(t *testing.T) {
	srv := esdbtest.Start(t)
	storetest.Run(t, &harness{url: srv.URL()})
	storetest.RunKeyring(t, &keyringHarness{harness{url: srv.URL()}})
}
