package esdb_test

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/profilestore/profilestore/eventstore"
	"github.com/profilestore/profilestore/eventstore/esdb"
	"github.com/profilestore/profilestore/eventstore/esdb/esdbtest"
)

func events(n int) []eventstore.EventData {
	evs := make([]eventstore.EventData, n)
	for i := range evs {
		evs[i] = eventstore.EventData{ID: uuid.New(), Type: "profile.field_set", Data: []byte(fmt.Sprintf(`{"n":%d}`, i))}
	}
	return evs
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// appendRetrying appends until the server answers, retrying with the same
// event ids as the adapter says is safe after ErrUnavailable.
func appendRetrying(ctx context.Context, t *testing.T, s eventstore.Store, stream string, exp eventstore.ExpectedRevision, evs []eventstore.EventData) eventstore.AppendResult {
	t.Helper()
	for {
		res, err := s.Append(ctx, stream, exp, evs)
		if err == nil {
			return res
		}
		if !errors.Is(err, esdb.ErrUnavailable) {
			t.Fatalf("Append: %v", err)
		}
	}
}

func streamLen(ctx context.Context, t *testing.T, s eventstore.Store, stream string) int {
	t.Helper()
	evs, err := s.ReadStream(ctx, stream, 0, eventstore.Forwards, 1000)
	if err != nil {
		t.Fatalf("ReadStream: %v", err)
	}
	return len(evs)
}

func TestSubscriptionResumesAfterServerRestart(t *testing.T) {
	ctx := testContext(t)
	srv := esdbtest.Start(t)
	s := openStore(t, srv.URL(), esdb.Options{ResubscribeTimeout: 15 * time.Second})

	var want []eventstore.EventData
	for i := 0; i < 5; i++ {
		evs := events(1)
		if _, err := s.Append(ctx, "profile-a", eventstore.Any, evs); err != nil {
			t.Fatal(err)
		}
		want = append(want, evs...)
	}
	sub, err := s.Subscribe(ctx, eventstore.Start, eventstore.Filter{StreamPrefixes: []string{"profile-"}})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	next := func() eventstore.RecordedEvent {
		t.Helper()
		e, err := sub.Next(ctx)
		if err != nil {
			t.Fatalf("Next: %v", err)
		}
		return e
	}
	for i := 0; i < 5; i++ {
		if e := next(); e.ID != want[i].ID {
			t.Fatalf("event %d: got %s, want %s", i, e.ID, want[i].ID)
		}
	}

	srv.Stop()
	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	// Written while the subscription is reconnecting: it must catch up on
	// them after the last one it delivered, and then go live.
	for i := 0; i < 5; i++ {
		evs := events(1)
		appendRetrying(ctx, t, s, "profile-b", eventstore.Any, evs)
		want = append(want, evs...)
	}
	for i := 5; i < 10; i++ {
		if e := next(); e.ID != want[i].ID {
			t.Fatalf("after the restart, event %d: got %s (%s), want %s", i, e.ID, e.Stream, want[i].ID)
		}
	}
	live := events(1)
	appendRetrying(ctx, t, s, "profile-c", eventstore.Any, live)
	if e := next(); e.ID != live[0].ID {
		t.Fatalf("live event after the restart: got %s, want %s (a duplicate or a gap)", e.ID, live[0].ID)
	}
}

func TestSubscriptionFailsAfterResubscribeTimeout(t *testing.T) {
	ctx := testContext(t)
	srv := esdbtest.Start(t)
	s := openStore(t, srv.URL(), esdb.Options{ResubscribeTimeout: 300 * time.Millisecond})
	sub, err := s.Subscribe(ctx, eventstore.Start, eventstore.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	srv.Stop()
	if _, err := sub.Next(ctx); !errors.Is(err, esdb.ErrUnavailable) {
		t.Fatalf("Next with the server gone: %v, want ErrUnavailable", err)
	}
}

func TestAppendDuringOutageFailsClearly(t *testing.T) {
	ctx := testContext(t)
	srv := esdbtest.Start(t)
	s := openStore(t, srv.URL(), esdb.Options{})
	if _, err := s.Append(ctx, "profile-a", eventstore.NoStream, events(1)); err != nil {
		t.Fatal(err)
	}
	srv.Stop()

	// Twice: first on the connection that just broke, then through a fresh
	// discovery that finds no node.
	for i := 0; i < 2; i++ {
		start := time.Now()
		_, err := s.Append(ctx, "profile-a", eventstore.Exact(0), events(1))
		if !errors.Is(err, esdb.ErrUnavailable) {
			t.Fatalf("Append during the outage: %v, want ErrUnavailable", err)
		}
		// The adapter's read before the append may be what fails; either
		// way the error must say what became of the append.
		msg := err.Error()
		if errors.Is(err, eventstore.ErrWrongExpectedRevision) || !strings.Contains(msg, `append to "profile-a"`) ||
			!(strings.Contains(msg, "may or may not have been written") || strings.Contains(msg, "nothing written")) {
			t.Fatalf("Append during the outage: %q does not say what became of the append", err)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Fatalf("Append took %s to fail", d)
		}
	}
	if _, err := s.Head(ctx); !errors.Is(err, esdb.ErrUnavailable) {
		t.Fatalf("Head during the outage: %v, want ErrUnavailable", err)
	}

	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	res := appendRetrying(ctx, t, s, "profile-a", eventstore.Exact(0), events(1))
	if res.Revision != 1 {
		t.Fatalf("append after the outage landed at revision %d, want 1", res.Revision)
	}
}

func TestAppendWithLostAckWritesOnce(t *testing.T) {
	for _, tc := range []struct {
		name     string
		exp      eventstore.ExpectedRevision
		restart  bool // the server restarts between attempts, emptying its id cache
		existing int
	}{
		{"no stream", eventstore.NoStream, false, 0},
		{"exact", eventstore.Exact(1), false, 2},
		{"any", eventstore.Any, false, 2},
		{"any after a server restart", eventstore.Any, true, 2},
		{"exact after a server restart", eventstore.Exact(1), true, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testContext(t)
			srv := esdbtest.Start(t)
			s := openStore(t, srv.URL(), esdb.Options{})
			if tc.existing > 0 {
				if _, err := s.Append(ctx, "profile-a", eventstore.NoStream, events(tc.existing)); err != nil {
					t.Fatal(err)
				}
			}
			evs := events(2)
			srv.LoseNextAppendAck()
			_, err := s.Append(ctx, "profile-a", tc.exp, evs)
			if !errors.Is(err, esdb.ErrUnavailable) {
				t.Fatalf("Append with a lost reply: %v, want ErrUnavailable", err)
			}
			if tc.restart {
				if err := srv.Restart(); err != nil {
					t.Fatal(err)
				}
			}
			res := appendRetrying(ctx, t, s, "profile-a", tc.exp, evs)
			if n := streamLen(ctx, t, s, "profile-a"); n != tc.existing+2 {
				t.Fatalf("after the retry the stream has %d events, want %d", n, tc.existing+2)
			}
			last, err := s.ReadStream(ctx, "profile-a", math.MaxUint64, eventstore.Backwards, 1)
			if err != nil {
				t.Fatal(err)
			}
			if res.Revision != last[0].Revision || res.Position != last[0].Position || last[0].ID != evs[1].ID {
				t.Fatalf("retry returned %+v; the append's last event is %s at %d/%s", res, last[0].ID, last[0].Revision, last[0].Position)
			}
		})
	}
}

func TestWrongExpectedVersion(t *testing.T) {
	ctx := testContext(t)
	srv := esdbtest.Start(t)
	s := openStore(t, srv.URL(), esdb.Options{Namespace: "ns."})
	if _, err := s.Append(ctx, "profile-a", eventstore.NoStream, events(3)); err != nil {
		t.Fatal(err)
	}
	for _, exp := range []eventstore.ExpectedRevision{eventstore.NoStream, eventstore.Exact(0), eventstore.Exact(7)} {
		_, err := s.Append(ctx, "profile-a", exp, events(1))
		var we *eventstore.WrongExpectedRevisionError
		if !errors.As(err, &we) {
			t.Fatalf("expected %s: %v (%T), want *WrongExpectedRevisionError", exp, err, err)
		}
		if we.Stream != "profile-a" || we.Expected != exp || !we.ActualExists || we.Actual != 2 {
			t.Fatalf("expected %s: %+v", exp, we)
		}
	}
	_, err := s.Append(ctx, "profile-missing", eventstore.Exact(0), events(1))
	var we *eventstore.WrongExpectedRevisionError
	if !errors.As(err, &we) || we.ActualExists {
		t.Fatalf("exact on a missing stream: %v", err)
	}
	if n := streamLen(ctx, t, s, "profile-a"); n != 3 {
		t.Fatalf("stream has %d events after conflicts, want 3", n)
	}
}

func TestKeysHiddenFromTheLogAndKeptUntilScavenge(t *testing.T) {
	ctx := testContext(t)
	srv := esdbtest.Start(t)
	s := openStore(t, srv.URL(), esdb.Options{})
	k, err := esdb.OpenKeyring(ctx, srv.URL(), esdb.Options{Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer k.Close()
	sub, err := s.Subscribe(ctx, eventstore.Start, eventstore.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()

	key, err := k.Current(ctx, "@alice:example.org")
	if err != nil {
		t.Fatal(err)
	}
	marker := events(1)
	res, err := s.Append(ctx, "profile-@alice:example.org", eventstore.Any, marker)
	if err != nil {
		t.Fatal(err)
	}
	// The first event the unfiltered subscription shows is the profile
	// event, not the key written before it.
	if e, err := sub.Next(ctx); err != nil || e.ID != marker[0].ID {
		t.Fatalf("first subscribed event: %+v, %v; want the profile event", e, err)
	}
	all, err := s.ReadAll(ctx, eventstore.Start, 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 1 || all[0].ID != marker[0].ID {
		t.Fatalf("ReadAll shows %d events, want only the profile event", len(all))
	}
	if h, err := s.Head(ctx); err != nil || h != res.Position {
		t.Fatalf("Head = %s, %v; want %s", h, err, res.Position)
	}

	secret := []byte(base64.StdEncoding.EncodeToString(key.Secret[:]))
	if err := k.Destroy(ctx, "@alice:example.org"); err != nil {
		t.Fatal(err)
	}
	if _, err := k.Lookup(ctx, "@alice:example.org", key.Generation); !errors.Is(err, eventstore.ErrKeyDestroyed) {
		t.Fatalf("Lookup after Destroy: %v", err)
	}
	// Tombstoning hides the key; its bytes stay on disk until a scavenge.
	if !srv.LogContains(secret) {
		t.Fatalf("the key's bytes are gone before a scavenge: the test server no longer models EventStoreDB")
	}
	srv.Scavenge()
	if srv.LogContains(secret) {
		t.Fatalf("the key's bytes survive a scavenge")
	}
	if _, err := k.Lookup(ctx, "@alice:example.org", key.Generation); !errors.Is(err, eventstore.ErrKeyDestroyed) {
		t.Fatalf("Lookup after the scavenge: %v", err)
	}
	fresh, err := k.Current(ctx, "@alice:example.org")
	if err != nil || fresh.Generation <= key.Generation {
		t.Fatalf("Current after the scavenge: generation %d, %v", fresh.Generation, err)
	}
}

// BenchmarkAppend measures appends of one event, each writer to its own
// stream with an exact expected revision, against the IN-PROCESS TEST
// SERVER (esdbtest), not EventStoreDB: the figures show the adapter's and
// the client's overhead over gRPC on loopback, not what a cluster sustains.
// Take those on a real cluster (PROFILESTORE_ESDB_URL).
func BenchmarkAppend(b *testing.B) {
	for _, writers := range []int{1, 16, 64, 256} {
		b.Run(fmt.Sprintf("testserver/writers=%d", writers), func(b *testing.B) {
			srv := esdbtest.Start(b)
			s := openStore(b, srv.URL(), esdb.Options{})
			ctx := context.Background()
			var wg sync.WaitGroup
			errs := make(chan error, writers)
			per := (b.N + writers - 1) / writers
			b.ResetTimer()
			start := time.Now()
			for w := 0; w < writers; w++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					stream := fmt.Sprintf("profile-bench-%d", w)
					exp := eventstore.NoStream
					for i := 0; i < per; i++ {
						res, err := s.Append(ctx, stream, exp, events(1))
						if err != nil {
							errs <- err
							return
						}
						exp = eventstore.Exact(res.Revision)
					}
				}()
			}
			wg.Wait()
			b.ReportMetric(float64(per*writers)/time.Since(start).Seconds(), "appends/s")
			close(errs)
			for err := range errs {
				b.Fatal(err)
			}
		})
	}
}

// TestDiscoveryConnectionString connects the way a cluster connection string
// does: read gossip, pick the leader, connect to it.
func TestDiscoveryConnectionString(t *testing.T) {
	ctx := testContext(t)
	srv := esdbtest.Start(t)
	s := openStore(t, srv.ConnectionStringForDiscovery(), esdb.Options{})
	res, err := s.Append(ctx, "profile-a", eventstore.NoStream, events(1))
	if err != nil || res.Revision != 0 {
		t.Fatalf("Append through discovery: %+v, %v", res, err)
	}
}
