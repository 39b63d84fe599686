package domain

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/profilestore/profilestore/eventstore"
	"github.com/profilestore/profilestore/eventstore/bolt"
	"github.com/profilestore/profilestore/eventstore/integrity"
)

// gatedStore is a real store whose appends count per stream and can be held
// by a hook, so a test can line commands up behind one another.
type gatedStore struct {
	eventstore.Store
	mu      sync.Mutex
	appends map[string]int
	// before runs before the n-th (1-based) append to stream reaches the store.
	before func(stream string, n int)
}

func (g *gatedStore) Append(ctx context.Context, stream string, expected eventstore.ExpectedRevision, events []eventstore.EventData) (eventstore.AppendResult, error) {
	g.mu.Lock()
	if g.appends == nil {
		g.appends = map[string]int{}
	}
	g.appends[stream]++
	n, hook := g.appends[stream], g.before
	g.mu.Unlock()
	if hook != nil {
		hook(stream, n)
	}
	return g.Store.Append(ctx, stream, expected, events)
}

func (g *gatedStore) count(stream string) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.appends[stream]
}

// OpenTestStore opens a real bolt store and keyring in a temporary
// directory, closed when the test ends (the external tests use it too).
func OpenTestStore(t testing.TB) (*bolt.Store, *bolt.Keyring) {
	t.Helper()
	dir := t.TempDir()
	store, err := bolt.Open(filepath.Join(dir, "events.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	keys, err := bolt.OpenKeyring(filepath.Join(dir, "keys.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { keys.Close() })
	return store, keys
}

func openBolt(t *testing.T) (*bolt.Store, *Sealer) {
	t.Helper()
	store, keys := OpenTestStore(t)
	return store, NewSealer(keys)
}

// waitFor polls cond for up to ten seconds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// queued is how many commands wait in the queue of stream's aggregate.
func queued[S any, P folder[S]](c *streams[S, P], stream string) int {
	c.mu.Lock()
	agg := c.inUse[stream]
	c.mu.Unlock()
	if agg == nil {
		return 0
	}
	agg.qmu.Lock()
	defer agg.qmu.Unlock()
	return len(agg.queue)
}

func name(s string) json.RawMessage { v, _ := json.Marshal(s); return v }

type outcome struct {
	value string
	res   WriteResult
	err   error
}

// streamValues decodes the display names of the user's stream in order.
func streamValues(t *testing.T, store eventstore.Store, sealer *Sealer, stream string) ([]string, []eventstore.RecordedEvent) {
	t.Helper()
	recs, err := store.ReadStream(context.Background(), stream, 0, eventstore.Forwards, 10_000)
	if err != nil {
		t.Fatal(err)
	}
	var vals []string
	for _, rec := range recs {
		e, err := Decode(context.Background(), sealer, rec)
		if err != nil {
			t.Fatal(err)
		}
		var s string
		if err := json.Unmarshal(e.Value, &s); err != nil {
			t.Fatalf("event %d: %v", rec.Revision, err)
		}
		vals = append(vals, s)
	}
	return vals, recs
}

// checkOwnResults checks that each successful caller's result points at
// its own event, and that the stream holds each value exactly once.
func checkOwnResults(t *testing.T, store eventstore.Store, sealer *Sealer, stream string, outs []outcome, extra ...string) {
	t.Helper()
	vals, recs := streamValues(t, store, sealer, stream)
	want := map[string]int{}
	for _, v := range extra {
		want[v]++
	}
	for _, o := range outs {
		if o.err != nil {
			continue
		}
		want[o.value]++
		if !o.res.Changed || !o.res.Exists || o.res.Revision >= uint64(len(recs)) {
			t.Errorf("%q: result %+v, stream has %d events", o.value, o.res, len(recs))
			continue
		}
		if got := vals[o.res.Revision]; got != o.value {
			t.Errorf("%q: result names revision %d, which holds %q", o.value, o.res.Revision, got)
		}
		if got := recs[o.res.Revision].Position; got != o.res.Position {
			t.Errorf("%q: result position %v, its event is at %v", o.value, o.res.Position, got)
		}
	}
	got := map[string]int{}
	for _, v := range vals {
		got[v]++
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("stream holds %v, want each written value once: %v", got, want)
	}
}

// checkChains verifies every stream's hash chain: batched events link to
// one another like events appended one at a time.
func checkChains(t *testing.T, store eventstore.Store) {
	t.Helper()
	rep, err := integrity.VerifyStore(context.Background(), store, nil, 0, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK() || rep.Events == 0 {
		t.Errorf("chain verification: %d events, breaks %+v", rep.Events, rep.Breaks)
	}
}

// checkCacheMatchesLog compares the cached profile with one folded from the
// store by a fresh service (positions of batched events included).
func checkCacheMatchesLog(t *testing.T, store eventstore.Store, sealer *Sealer, svc *ProfileService, user UserID) {
	t.Helper()
	ctx := context.Background()
	cached, cres, err := svc.Profile(ctx, user)
	if err != nil {
		t.Fatal(err)
	}
	fresh, fres, err := NewProfileService(store, sealer, DefaultPolicy).Profile(ctx, user)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(cached, fresh) || cres != fres {
		t.Errorf("cached profile %+v %+v differs from the log's %+v %+v", cached, cres, fresh, fres)
	}
}

// TestConcurrentCommandsOnOneStreamShareAppend holds the first write to a
// user in the store while 63 more arrive, some of them invalid: the 63 are
// decided one after another and appended in one append, each caller gets its
// own revision and position or its own error, and the cached state equals
// the log's.
func TestConcurrentCommandsOnOneStreamShareAppend(t *testing.T) {
	base, sealer := openBolt(t)
	release := make(chan struct{})
	g := &gatedStore{Store: base, before: func(_ string, n int) {
		if n == 1 {
			<-release
		}
	}}
	svc := NewProfileService(g, sealer, DefaultPolicy)
	ctx := context.Background()
	const user = UserID("@busy:example.com")
	stream := ProfileStream(user)
	outs := make([]outcome, 64)
	var wg sync.WaitGroup
	write := func(i int) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			v := fmt.Sprintf("name %d", i)
			if i%8 == 5 {
				v = strings.Repeat("x", DefaultLimits.MaxDisplayNameChars+1) // refused by the decision
			}
			res, err := svc.SetField(ctx, SetField{Actor: ServerActor, User: user, Key: KeyDisplayName, Value: name(v), PropagateTo: PropagateAll, Meta: Metadata{OccurredAt: time.Now()}}, nil)
			outs[i] = outcome{value: v, res: res, err: err}
		}()
	}
	write(0)
	waitFor(t, "the first append", func() bool { return g.count(stream) == 1 })
	for i := 1; i < 64; i++ {
		write(i)
	}
	waitFor(t, "63 queued commands", func() bool { return queued(svc.streams, stream) == 63 })
	close(release)
	wg.Wait()

	if n := g.count(stream); n != 2 {
		t.Errorf("%d appends, want 2 (the first alone, then one for the 63 queued)", n)
	}
	refused := 0
	for i, o := range outs {
		if i%8 == 5 {
			refused++
			if ErrorCode(o.err) != ErrCodeTooLarge {
				t.Errorf("command %d: error %v, want %s", i, o.err, ErrCodeTooLarge)
			}
		} else if o.err != nil {
			t.Errorf("command %d: %v", i, o.err)
		}
	}
	if refused != 8 {
		t.Fatalf("%d refused commands, want 8", refused)
	}
	checkOwnResults(t, base, sealer, stream, outs)
	checkCacheMatchesLog(t, base, sealer, svc, user)
	checkChains(t, base)
}

// TestBatchConflictWithAnotherInstance lets another instance write the
// stream just before a batch's append: the batch's expected revision fails,
// and every command is decided again on the new state and written once.
func TestBatchConflictWithAnotherInstance(t *testing.T) {
	base, sealer := openBolt(t)
	other := NewProfileService(base, sealer, DefaultPolicy)
	ctx := context.Background()
	const user = UserID("@contended:example.com")
	stream := ProfileStream(user)
	release := make(chan struct{})
	g := &gatedStore{Store: base}
	g.before = func(_ string, n int) {
		switch n {
		case 1:
			<-release
		case 2: // the batch: another instance gets in first
			if _, err := other.SetField(ctx, SetField{Actor: ServerActor, User: user, Key: KeyDisplayName, Value: name("other instance"), Meta: Metadata{OccurredAt: time.Now()}}, nil); err != nil {
				t.Error(err)
			}
		}
	}
	svc := NewProfileService(g, sealer, DefaultPolicy)
	outs := make([]outcome, 11)
	var wg sync.WaitGroup
	write := func(i int) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			v := fmt.Sprintf("name %d", i)
			res, err := svc.SetField(ctx, SetField{Actor: ServerActor, User: user, Key: KeyDisplayName, Value: name(v), Meta: Metadata{OccurredAt: time.Now()}}, nil)
			outs[i] = outcome{value: v, res: res, err: err}
		}()
	}
	write(0)
	waitFor(t, "the first append", func() bool { return g.count(stream) == 1 })
	for i := 1; i < len(outs); i++ {
		write(i)
	}
	waitFor(t, "10 queued commands", func() bool { return queued(svc.streams, stream) == 10 })
	close(release)
	wg.Wait()
	for i, o := range outs {
		if o.err != nil {
			t.Errorf("command %d: %v", i, o.err)
		}
	}
	checkOwnResults(t, base, sealer, stream, outs, "other instance")
	checkCacheMatchesLog(t, base, sealer, svc, user)
	checkChains(t, base)
}

// TestBatchKeepsIdempotencyKeys queues, behind a held write, a retry of a
// request already written, a new write, and twice one request with the same
// key: nothing is written twice.
func TestBatchKeepsIdempotencyKeys(t *testing.T) {
	base, sealer := openBolt(t)
	ctx := context.Background()
	const user = UserID("@retried:example.com")
	stream := ProfileStream(user)
	release := make(chan struct{})
	g := &gatedStore{Store: base}
	svc := NewProfileService(g, sealer, DefaultPolicy)
	set := func(v, key string) (WriteResult, error) {
		return svc.SetField(ctx, SetField{Actor: ServerActor, User: user, Key: KeyDisplayName, Value: name(v), Meta: Metadata{OccurredAt: time.Now(), IdempotencyKey: key}}, nil)
	}
	if _, err := set("a", "key-a"); err != nil {
		t.Fatal(err)
	}
	g.mu.Lock()
	g.before = func(_ string, n int) {
		if n == 2 {
			<-release
		}
	}
	g.mu.Unlock()
	var wg sync.WaitGroup
	outs := make([]outcome, 5)
	queue := func(i int, v, key string) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := set(v, key)
			outs[i] = outcome{value: v, res: res, err: err}
		}()
	}
	queue(0, "b", "")
	waitFor(t, "the held append", func() bool { return g.count(stream) == 2 })
	for i, c := range []struct{ v, key string }{{"a", "key-a"}, {"c", ""}, {"d", "key-d"}, {"d", "key-d"}} {
		queue(i+1, c.v, c.key)
		waitFor(t, "the queued command", func() bool { return queued(svc.streams, stream) == i+1 })
	}
	close(release)
	wg.Wait()
	for i, o := range outs {
		if o.err != nil {
			t.Errorf("command %d: %v", i, o.err)
		}
	}
	vals, _ := streamValues(t, base, sealer, stream)
	if want := []string{"a", "b", "c", "d"}; !reflect.DeepEqual(vals, want) {
		t.Errorf("stream holds %q, want %q", vals, want)
	}
	if outs[3].res.Changed == outs[4].res.Changed {
		t.Errorf("both requests of key-d report changed=%v; exactly one wrote", outs[3].res.Changed)
	}
	checkCacheMatchesLog(t, base, sealer, svc, user)
}

// TestRoomBatchSettlesPositions batches joins and per-room overrides that
// depend on the joins before them: the decisions see the earlier commands'
// effects, and the cached room (override positions included) equals the log's.
func TestRoomBatchSettlesPositions(t *testing.T) {
	base, sealer := openBolt(t)
	ctx := context.Background()
	const room = RoomID("!busy:example.com")
	stream := RoomStream(room)
	release := make(chan struct{})
	g := &gatedStore{Store: base, before: func(s string, n int) {
		if s == stream && n == 1 {
			<-release
		}
	}}
	svc := NewRoomService(g, sealer, DefaultPolicy, nil)
	user := func(i int) UserID { return UserID(fmt.Sprintf("@m%d:example.com", i)) }
	var wg sync.WaitGroup
	errs := make([]error, 0, 16)
	var mu sync.Mutex
	run := func(want string, f func() (WriteResult, error)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := f()
			if ErrorCode(err) != want || (want == "" && err != nil) {
				mu.Lock()
				errs = append(errs, fmt.Errorf("want %q, got %v", want, err))
				mu.Unlock()
			}
		}()
	}
	join := func(i int) func() (WriteResult, error) {
		return func() (WriteResult, error) {
			empty := ""
			return svc.ChangeMembership(ctx, ChangeMembership{Actor: ServerActor, Room: room, User: user(i), Membership: MembershipJoin, DisplayName: &empty, AvatarURL: &empty, Meta: Metadata{OccurredAt: time.Now()}})
		}
	}
	nick := func(i int) func() (WriteResult, error) {
		return func() (WriteResult, error) {
			return svc.SetMemberProfile(ctx, SetMemberProfile{Actor: ServerActor, Room: room, User: user(i), Field: KeyDisplayName, Value: fmt.Sprintf("nick %d", i), Meta: Metadata{OccurredAt: time.Now()}})
		}
	}
	run("", join(0))
	waitFor(t, "the first append", func() bool { return g.count(stream) == 1 })
	steps := []struct {
		want string
		f    func() (WriteResult, error)
	}{
		{"", join(1)}, {"", nick(1)}, {"", nick(0)}, {"", join(2)}, {"", nick(2)},
		{ErrCodeForbidden, func() (WriteResult, error) { // user 3 never joined
			return svc.SetMemberProfile(ctx, SetMemberProfile{Actor: ServerActor, Room: room, User: user(3), Field: KeyDisplayName, Value: "x", Meta: Metadata{OccurredAt: time.Now()}})
		}},
		{"", nick(1)}, // the same nickname again: nothing to write
	}
	for i, s := range steps {
		run(s.want, s.f)
		waitFor(t, "the queued command", func() bool { return queued(svc.streams, stream) == i+1 })
	}
	close(release)
	wg.Wait()
	for _, err := range errs {
		t.Error(err)
	}
	if n := g.count(stream); n != 2 {
		t.Errorf("%d appends, want 2", n)
	}
	recs, err := base.ReadStream(ctx, stream, 0, eventstore.Forwards, 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 6 {
		t.Errorf("%d events, want 6 (3 joins, 3 nicknames)", len(recs))
	}
	var cached, fresh Room
	if err := svc.streams.locked(ctx, stream, func(agg *aggregate[Room]) error { cached = agg.state; return nil }); err != nil {
		t.Fatal(err)
	}
	if err := NewRoomService(base, sealer, DefaultPolicy, nil).streams.locked(ctx, stream, func(agg *aggregate[Room]) error { fresh = agg.state; return nil }); err != nil {
		t.Fatal(err)
	}
	checkChains(t, base)
	if !reflect.DeepEqual(cached, fresh) {
		t.Errorf("cached room differs from the log's:\n%+v\n%+v", cached.Members[user(1)], fresh.Members[user(1)])
	}
}

// TestAggregateCacheEvicts bounds the profile cache at two users: a third
// evicts the least recently used, whose next command folds it from the
// store again and still appends at the right revision.
func TestAggregateCacheEvicts(t *testing.T) {
	store, sealer := openBolt(t)
	svc := NewProfileService(store, sealer, DefaultPolicy, CacheSize(2))
	ctx := context.Background()
	user := func(i int) UserID { return UserID(fmt.Sprintf("@u%d:example.com", i)) }
	set := func(i int, v string) WriteResult {
		t.Helper()
		res, err := svc.SetField(ctx, SetField{Actor: ServerActor, User: user(i), Key: KeyDisplayName, Value: name(v), Meta: Metadata{OccurredAt: time.Now()}}, nil)
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	set(0, "a")
	set(1, "b")
	set(0, "a2") // user 0 is now the most recently used
	set(2, "c")  // evicts user 1
	if got, want := svc.CacheStats(), (CacheStats{Capacity: 2, Size: 2, Hits: 1, Misses: 3, Evictions: 1}); got != want {
		t.Fatalf("stats %+v, want %+v", got, want)
	}
	if res := set(1, "b2"); res.Revision != 1 || !res.Changed {
		t.Errorf("write after eviction: %+v, want revision 1", res)
	}
	if got, want := svc.CacheStats(), (CacheStats{Capacity: 2, Size: 2, Hits: 1, Misses: 4, Evictions: 2}); got != want {
		t.Errorf("stats %+v, want %+v", got, want)
	}
	stale := eventstore.Exact(0)
	if _, err := svc.SetField(ctx, SetField{Actor: ServerActor, User: user(1), Key: KeyDisplayName, Value: name("late"), Meta: Metadata{OccurredAt: time.Now()}}, &stale); ErrorCode(err) != ErrCodeConflict {
		t.Errorf("If-Match on a stale revision after eviction: %v, want %s", err, ErrCodeConflict)
	}
}

// TestEvictedAggregateInUseStaysOne evicts a user's aggregate while a write
// to it is in flight: a second write joins that aggregate instead of loading
// a second copy that would conflict with the first.
func TestEvictedAggregateInUseStaysOne(t *testing.T) {
	base, sealer := openBolt(t)
	ctx := context.Background()
	const a, b = UserID("@a:example.com"), UserID("@b:example.com")
	release := make(chan struct{})
	g := &gatedStore{Store: base, before: func(s string, n int) {
		if s == ProfileStream(a) && n == 1 {
			<-release
		}
	}}
	svc := NewProfileService(g, sealer, DefaultPolicy, CacheSize(1))
	set := func(u UserID, v string) (WriteResult, error) {
		return svc.SetField(ctx, SetField{Actor: ServerActor, User: u, Key: KeyDisplayName, Value: name(v), Meta: Metadata{OccurredAt: time.Now()}}, nil)
	}
	var wg sync.WaitGroup
	results := make([]WriteResult, 2)
	errs := make([]error, 2)
	wg.Add(1)
	go func() { defer wg.Done(); results[0], errs[0] = set(a, "first") }()
	waitFor(t, "a's first append", func() bool { return g.count(ProfileStream(a)) == 1 })
	if _, err := set(b, "evicts a"); err != nil {
		t.Fatal(err)
	}
	if ev := svc.CacheStats().Evictions; ev != 1 {
		t.Fatalf("%d evictions, want 1", ev)
	}
	wg.Add(1)
	go func() { defer wg.Done(); results[1], errs[1] = set(a, "second") }()
	waitFor(t, "the second write queued on a's aggregate", func() bool { return queued(svc.streams, ProfileStream(a)) == 1 })
	close(release)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
	}
	if n := g.count(ProfileStream(a)); n != 2 {
		t.Errorf("%d appends to a, want 2 (no conflict between two copies)", n)
	}
	if results[0].Revision != 0 || results[1].Revision != 1 {
		t.Errorf("revisions %d, %d; want 0, 1", results[0].Revision, results[1].Revision)
	}
}

// TestBatchCapAndCancelledCaller queues more commands than one batch takes
// behind a held write, one of them from a caller that gives up: the rest
// are appended in batches of at most maxCommandBatch, and the caller that
// gave up gets its context's error and writes nothing.
func TestBatchCapAndCancelledCaller(t *testing.T) {
	base, sealer := openBolt(t)
	release := make(chan struct{})
	g := &gatedStore{Store: base, before: func(_ string, n int) {
		if n == 1 {
			<-release
		}
	}}
	svc := NewProfileService(g, sealer, DefaultPolicy)
	const user = UserID("@crowded:example.com")
	stream := ProfileStream(user)
	const queuedCommands = maxCommandBatch + 44
	outs := make([]outcome, 1+queuedCommands)
	gaveUp, giveUp := context.WithCancel(context.Background())
	const quitter = 7
	var wg sync.WaitGroup
	write := func(i int) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx := context.Background()
			if i == quitter {
				ctx = gaveUp
			}
			v := fmt.Sprintf("name %d", i)
			res, err := svc.SetField(ctx, SetField{Actor: ServerActor, User: user, Key: KeyDisplayName, Value: name(v), Meta: Metadata{OccurredAt: time.Now()}}, nil)
			outs[i] = outcome{value: v, res: res, err: err}
		}()
	}
	write(0)
	waitFor(t, "the first append", func() bool { return g.count(stream) == 1 })
	for i := 1; i <= queuedCommands; i++ {
		write(i)
	}
	waitFor(t, "the queued commands", func() bool { return queued(svc.streams, stream) == queuedCommands })
	giveUp()
	close(release)
	wg.Wait()
	if n := g.count(stream); n != 3 {
		t.Errorf("%d appends, want 3: the first, a full batch of %d, the remaining 44", n, maxCommandBatch)
	}
	for i, o := range outs {
		switch {
		case i == quitter && !errors.Is(o.err, context.Canceled):
			t.Errorf("the caller that gave up got %v, want %v", o.err, context.Canceled)
		case i != quitter && o.err != nil:
			t.Errorf("command %d: %v", i, o.err)
		}
	}
	checkOwnResults(t, base, sealer, stream, outs)
	checkChains(t, base)
}
