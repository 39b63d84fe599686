package projections_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/profilestore/profilestore/domain"
	"github.com/profilestore/profilestore/eventstore"
	"github.com/profilestore/profilestore/eventstore/bolt"
	"github.com/profilestore/profilestore/projections"
	"github.com/profilestore/profilestore/projections/viewstore"
	"github.com/sirupsen/logrus"
)

type fixture struct {
	dir     string
	store   *bolt.Store
	keys    *bolt.Keyring
	sealer  *domain.Sealer
	service *domain.ProfileService
	db      *projections.DB
}

func openFixture(t *testing.T, dir string) *fixture {
	t.Helper()
	store, err := bolt.Open(filepath.Join(dir, "events.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	keys, err := bolt.OpenKeyring(filepath.Join(dir, "keys.db"))
	if err != nil {
		t.Fatal(err)
	}
	sealer := domain.NewSealer(keys)
	f := &fixture{dir: dir, store: store, keys: keys, sealer: sealer, service: domain.NewProfileService(store, sealer, domain.DefaultPolicy)}
	t.Cleanup(func() { keys.Close(); store.Close() })
	f.db = projections.OpenTestDBAt(t, filepath.Join(dir, "views"))
	return f
}

func (f *fixture) runner(t *testing.T, views *projections.Profiles) *projections.Runner {
	log := logrus.New()
	log.SetOutput(io.Discard)
	return projections.NewRunner(projections.Options{Store: f.store, Sealer: f.sealer, DB: f.db, Views: []projections.View{views}, Logger: log})
}

func (f *fixture) setName(t *testing.T, user domain.UserID, name string) domain.WriteResult {
	t.Helper()
	v, _ := json.Marshal(name)
	res, err := f.service.SetField(context.Background(), domain.SetField{User: user, Actor: domain.ServerActor, Key: "displayname", Value: v, Meta: domain.Metadata{OccurredAt: time.Now()}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func user(i int) domain.UserID { return domain.UserID(fmt.Sprintf("@u%d:example.com", i)) }

func TestRunnerAppliesLiveWritesAndWaits(t *testing.T) {
	f := openFixture(t, t.TempDir())
	views := projections.NewProfiles(f.db, 0)
	r := f.runner(t, views)
	ctx := context.Background()
	if err := r.Start(ctx, nil); err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for i := 0; i < 100; i++ {
		res := f.setName(t, user(i%7), fmt.Sprintf("name %d", i))
		wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		if err := r.WaitFor(wctx, res.Position); err != nil {
			t.Fatalf("write %d at %s not applied: %v", i, res.Position, err)
		}
		cancel()
		if got := views.Get(user(i % 7)).Profile.DisplayName(); got != fmt.Sprintf("name %d", i) {
			t.Fatalf("after WaitFor the view shows %q", got)
		}
	}
	// A position never written is not reached: WaitFor fails at its deadline.
	wctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if err := r.WaitFor(wctx, eventstore.Position{Commit: 1 << 40, Prepare: 1 << 40}); err == nil {
		t.Fatal("WaitFor returned for a position beyond the log")
	}
}

func TestRunnerRestartCatchesUpAndRebuild(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	f := openFixture(t, dir)
	views := projections.NewProfiles(f.db, 0)
	r := f.runner(t, views)
	if err := r.Start(ctx, nil); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 50; i++ {
		f.setName(t, user(i), "before snapshot")
	}
	last := f.setName(t, user(0), "zero")
	if err := r.WaitFor(ctx, last.Position); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if err := f.db.Close(); err != nil {
		t.Fatal(err)
	}
	// Written while no runner runs: the next start must catch up on it.
	after := f.setName(t, user(1), "after snapshot")

	f.db = projections.OpenTestDBAt(t, filepath.Join(dir, "views"))
	views2 := projections.NewProfiles(f.db, 0)
	r2 := f.runner(t, views2)
	var progressCalls int
	if err := r2.Start(ctx, func(applied, total uint64) { progressCalls++ }); err != nil {
		t.Fatal(err)
	}
	if r2.Checkpoint() != after.Position {
		t.Errorf("restart checkpoint %s, want %s", r2.Checkpoint(), after.Position)
	}
	if progressCalls != 1 {
		t.Errorf("catching up one event after the restart reported progress %d times, want 1 (the view store was not used?)", progressCalls)
	}
	if views2.Len() != 50 || views2.Get(user(0)).Profile.DisplayName() != "zero" || views2.Get(user(1)).Profile.DisplayName() != "after snapshot" {
		t.Fatalf("restored view: %d users, u0=%q u1=%q", views2.Len(), views2.Get(user(0)).Profile.DisplayName(), views2.Get(user(1)).Profile.DisplayName())
	}
	r2.Close()

	// A rebuild into a fresh view store gives the same views.
	f.db = projections.OpenTestDB(t)
	views3 := projections.NewProfiles(f.db, 0)
	r3 := f.runner(t, views3)
	if err := r3.Rebuild(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if views3.Len() != 50 || views3.Get(user(1)).Profile.DisplayName() != "after snapshot" || r3.Checkpoint() != after.Position {
		t.Fatalf("rebuild: %d users at %s", views3.Len(), r3.Checkpoint())
	}
	if err := r3.Rebuild(ctx, nil); err == nil {
		t.Error("a rebuild into a view store that holds views was accepted")
	}
	st := views3.Get(user(0))
	if !st.Exists || st.Revision != 1 {
		t.Errorf("revision of u0 = %d (exists %v), want 1", st.Revision, st.Exists)
	}
}

func TestProfilesSearch(t *testing.T) {
	f := openFixture(t, t.TempDir())
	views := projections.NewProfiles(f.db, 0)
	r := f.runner(t, views)
	ctx := context.Background()
	if err := r.Start(ctx, nil); err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	f.setName(t, "@zed:example.com", "Alice")
	f.setName(t, "@alice:example.com", "Someone")
	last := f.setName(t, "@bob:example.com", "Malice in Wonderland")
	r.WaitFor(ctx, last.Position)
	found, limited := views.Search("ALICE", 10)
	if limited || len(found) != 2 {
		t.Fatalf("found %v", found)
	}
	// exact name or id first; a word inside a word ("Malice") is not a
	// match: the directory matches words by prefix, as Synapse does.
	if found[0].UserID != "@alice:example.com" && found[0].UserID != "@zed:example.com" {
		t.Errorf("ranking: %v", found)
	}
	if found, _ := views.Search("wonder", 10); len(found) != 1 || found[0].UserID != "@bob:example.com" {
		t.Errorf("a later word's prefix: %v", found)
	}
	if found, _ := views.Search("in wonderland", 10); len(found) != 1 || found[0].UserID != "@bob:example.com" {
		t.Errorf("several words: %v", found)
	}
	if found, limited := views.Search("alice", 1); len(found) != 1 || !limited {
		t.Errorf("limit: %v %v", found, limited)
	}
}

// gateView is a deferred view whose Apply waits for the test to open a gate,
// to show what writers and readers wait for.
type gateView struct {
	gate    chan struct{}
	applied atomic.Int64
}

func (g *gateView) Name() string { return "gate" }
func (g *gateView) Apply(viewstore.Txn, *domain.Event) error {
	<-g.gate
	g.applied.Add(1)
	return nil
}
func (g *gateView) Flush(viewstore.Txn) error { return nil }
func (g *gateView) Committed()                {}
func (g *gateView) Aborted()                  {}

func TestDeferredViewsDoNotDelayAcknowledgement(t *testing.T) {
	f := openFixture(t, t.TempDir())
	views, gate := projections.NewProfiles(f.db, 0), &gateView{gate: make(chan struct{})}
	log := logrus.New()
	log.SetOutput(io.Discard)
	r := projections.NewRunner(projections.Options{Store: f.store, Sealer: f.sealer, DB: f.db, Views: []projections.View{views},
		Deferred: []projections.View{gate}, Logger: log})
	ctx := context.Background()
	if err := r.Start(ctx, nil); err != nil {
		t.Fatal(err)
	}
	defer func() { close(gate.gate); r.Close() }()
	res := f.setName(t, user(1), "Acked")
	wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := r.WaitForAcknowledged(wctx, res.Position); err != nil {
		t.Fatalf("acknowledgement waited for a deferred view: %v", err)
	}
	if views.Get(user(1)).Profile.DisplayName() != "Acked" {
		t.Fatal("acknowledged before the primary view applied the write")
	}
	short, cancel2 := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel2()
	if err := r.Settle(short); err == nil || gate.applied.Load() != 0 {
		t.Fatal("Settle returned while a deferred view had not applied an acknowledged write")
	}
	gate.gate <- struct{}{}
	if err := r.Settle(wctx); err != nil || gate.applied.Load() != 1 {
		t.Fatalf("Settle after the deferred view applied: %v (applied %d)", err, gate.applied.Load())
	}
}

func TestSortedDiff(t *testing.T) {
	for _, c := range []struct {
		a, b, onlyA, onlyB []string
	}{
		{nil, nil, nil, nil},
		{[]string{"a", "b"}, []string{"a", "b"}, nil, nil},
		{[]string{"a", "c"}, []string{"b", "c", "d"}, []string{"a"}, []string{"b", "d"}},
		{[]string{"x"}, nil, []string{"x"}, nil},
		{nil, []string{"y", "z"}, nil, []string{"y", "z"}},
	} {
		t.Run(fmt.Sprint(c.a, c.b), func(t *testing.T) {
			gotA, gotB := projections.SortedDiff(c.a, c.b)
			if fmt.Sprint(gotA) != fmt.Sprint(c.onlyA) || fmt.Sprint(gotB) != fmt.Sprint(c.onlyB) {
				t.Fatalf("sortedDiff(%v, %v) = %v, %v; want %v, %v", c.a, c.b, gotA, gotB, c.onlyA, c.onlyB)
			}
		})
	}
}
