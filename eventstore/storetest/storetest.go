// Package storetest is the conformance suite every eventstore.Store and
// eventstore.Keyring passes unchanged.
//
// A store's own test calls Run with a Harness that opens fresh stores:
//
//	func TestConformance(t *testing.T) { storetest.Run(t, harness{}) }
//
// Every subtest opens its own store and names its streams with a random
// token, and reads of the global log only look at the events of those
// streams, so the suite also runs against a shared server whose log is not
// empty.
//
// Decisions the suite pins down where the port leaves room:
//
//   - Idempotency is checked before the expected revision: repeating an
//     append with exactly the same event IDs (same order) returns the original
//     AppendResult and writes nothing, whatever the stream's state now and
//     whatever the expected revision, also after a reopen.
//   - A partially overlapping append (some IDs stored, some new; the suite
//     uses a stored ID first, as EventStoreDB reports that case) fails with an
//     error matching eventstore.ErrWrongExpectedRevision and writes nothing,
//     as EventStoreDB does: the caller's retry loop then re-reads the stream.
//   - Next on a closed subscription, or on a subscription of a closed store,
//     fails with eventstore.ErrClosed; Next with an ended context fails with
//     that context's error.
//   - Nil and empty Metadata are the same.
//
// The suite never sleeps to synchronise; it bounds every subtest with a
// context deadline so that a broken store fails instead of hanging.
package storetest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/profilestore/profilestore/eventstore"
)

// Harness opens stores for the suite.
type Harness interface {
	// Open returns a new, empty store and arranges (t.Cleanup) for it to be
	// closed when the test ends.
	Open(t *testing.T) eventstore.Store
	// Reopen closes s and opens the same store again; the returned store is
	// closed when the test ends.
	Reopen(t *testing.T, s eventstore.Store) eventstore.Store
}

// subtestTimeout bounds each subtest so that a store that loses a wake-up
// fails the subtest rather than hanging the run.
const subtestTimeout = 15 * time.Second

// Run runs every store subtest against stores opened by h.
func Run(t *testing.T, h Harness) {
	tests := []struct {
		name string
		fn   func(context.Context, *testing.T, Harness)
	}{
		{"AppendReadRoundTrip", testRoundTrip},
		{"ExpectedRevision", testExpectedRevision},
		{"InvalidAppend", testInvalidAppend},
		{"ReadStream", testReadStream},
		{"ReadAll", testReadAll},
		{"Head", testHead},
		{"ConcurrentExpectedRevision", testConcurrentExpectedRevision},
		{"ConcurrentOptimisticRetry", testConcurrentOptimisticRetry},
		{"ConcurrentWritersGlobalOrder", testConcurrentGlobalOrder},
		{"SubscribeCatchUpAndLive", testSubscribeCatchUpAndLive},
		{"SubscribeAfterPosition", testSubscribeAfterPosition},
		{"SubscriptionEnds", testSubscriptionEnds},
		{"ClosedStore", testClosedStore},
		{"ReopenKeepsEverything", testReopen},
		{"IdempotentAppend", testIdempotent},
		{"PartialOverlap", testPartialOverlap},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), subtestTimeout)
			defer cancel()
			tc.fn(ctx, t, h)
		})
	}
}

// token returns a random name part so that subtests sharing a server do not
// see each other's streams.
func token(t testing.TB) string {
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b[:])
}

// newEvent returns an event whose data and metadata identify it.
func newEvent(typ string, n int) eventstore.EventData {
	id := uuid.New()
	return eventstore.EventData{
		ID:       id,
		Type:     typ,
		Data:     []byte(fmt.Sprintf(`{"n":%d,"id":%q}`, n, id)),
		Metadata: []byte(fmt.Sprintf(`{"source":"storetest","n":%d}`, n)),
	}
}

func newEvents(typ string, first, count int) []eventstore.EventData {
	evs := make([]eventstore.EventData, count)
	for i := range evs {
		evs[i] = newEvent(typ, first+i)
	}
	return evs
}

func mustAppend(ctx context.Context, t testing.TB, s eventstore.Store, stream string, exp eventstore.ExpectedRevision, evs []eventstore.EventData) eventstore.AppendResult {
	t.Helper()
	res, err := s.Append(ctx, stream, exp, evs)
	if err != nil {
		t.Fatalf("Append(%q, %s, %d events): %v", stream, exp, len(evs), err)
	}
	return res
}

func readStream(ctx context.Context, t testing.TB, s eventstore.Store, stream string, from uint64, dir eventstore.Direction, limit int) []eventstore.RecordedEvent {
	t.Helper()
	evs, err := s.ReadStream(ctx, stream, from, dir, limit)
	if err != nil {
		t.Fatalf("ReadStream(%q, %d, %d, %d): %v", stream, from, dir, limit, err)
	}
	return evs
}

// readAllMatching reads the whole log after the position in pages and keeps
// the events whose stream starts with prefix, checking on the way that
// positions strictly increase.
func readAllMatching(ctx context.Context, t testing.TB, s eventstore.Store, after eventstore.Position, prefix string) []eventstore.RecordedEvent {
	t.Helper()
	var out []eventstore.RecordedEvent
	pos := after
	for {
		page, err := s.ReadAll(ctx, pos, 97)
		if err != nil {
			t.Fatalf("ReadAll(%s): %v", pos, err)
		}
		if len(page) == 0 {
			return out
		}
		if len(page) > 97 {
			t.Fatalf("ReadAll(%s, 97) returned %d events", pos, len(page))
		}
		for _, e := range page {
			if !pos.Before(e.Position) {
				t.Fatalf("ReadAll: position %s does not follow %s", e.Position, pos)
			}
			pos = e.Position
			if strings.HasPrefix(e.Stream, prefix) {
				out = append(out, e)
			}
		}
	}
}

func sameBytes(a, b []byte) bool { return bytes.Equal(a, b) }

// checkEvent compares a recorded event with what was appended.
func checkEvent(t testing.TB, got eventstore.RecordedEvent, want eventstore.EventData, stream string, rev uint64) {
	t.Helper()
	if got.ID != want.ID || got.Type != want.Type || !sameBytes(got.Data, want.Data) || !sameBytes(got.Metadata, want.Metadata) {
		t.Fatalf("event %s@%d: got {%s %q %s %s}, want {%s %q %s %s}", stream, rev,
			got.ID, got.Type, got.Data, got.Metadata, want.ID, want.Type, want.Data, want.Metadata)
	}
	if got.Stream != stream || got.Revision != rev {
		t.Fatalf("event %s: got stream %q revision %d, want %q %d", got.ID, got.Stream, got.Revision, stream, rev)
	}
}

func sameRecorded(a, b eventstore.RecordedEvent) bool {
	return a.ID == b.ID && a.Type == b.Type && sameBytes(a.Data, b.Data) && sameBytes(a.Metadata, b.Metadata) &&
		a.Stream == b.Stream && a.Revision == b.Revision && a.Position == b.Position && a.Recorded.Equal(b.Recorded)
}

func testRoundTrip(ctx context.Context, t *testing.T, h Harness) {
	s := h.Open(t)
	stream := "profile-" + token(t)
	evs := newEvents("profile.field_set", 0, 3)
	evs[1].Metadata = nil // nil metadata reads back as empty
	before := time.Now()
	res := mustAppend(ctx, t, s, stream, eventstore.NoStream, evs)
	after := time.Now()
	if res.Revision != 2 {
		t.Fatalf("AppendResult.Revision = %d, want 2", res.Revision)
	}
	if res.Position.IsStart() {
		t.Fatalf("AppendResult.Position is Start")
	}

	got := readStream(ctx, t, s, stream, 0, eventstore.Forwards, 10)
	if len(got) != 3 {
		t.Fatalf("ReadStream: %d events, want 3", len(got))
	}
	for i, e := range got {
		checkEvent(t, e, evs[i], stream, uint64(i))
		// Stores keep their own clock resolution; a second either way allows
		// for it and for a server clock slightly off ours.
		if e.Recorded.Before(before.Add(-time.Second)) || e.Recorded.After(after.Add(time.Second)) {
			t.Fatalf("event %d Recorded = %s, want between %s and %s", i, e.Recorded, before, after)
		}
		if i > 0 && !got[i-1].Position.Before(e.Position) {
			t.Fatalf("positions not increasing within an append: %s then %s", got[i-1].Position, e.Position)
		}
	}
	if got[2].Position != res.Position {
		t.Fatalf("last event position %s, AppendResult.Position %s", got[2].Position, res.Position)
	}

	all := readAllMatching(ctx, t, s, eventstore.Start, stream)
	if len(all) != 3 {
		t.Fatalf("ReadAll: %d events of the stream, want 3", len(all))
	}
	for i := range all {
		if !sameRecorded(all[i], got[i]) {
			t.Fatalf("ReadAll event %d = %+v, ReadStream gave %+v", i, all[i], got[i])
		}
	}

	// A second append continues the stream and the log.
	more := newEvents("profile.field_deleted", 3, 1)
	res2 := mustAppend(ctx, t, s, stream, eventstore.Exact(2), more)
	if res2.Revision != 3 || !res.Position.Before(res2.Position) {
		t.Fatalf("second append = %+v after %+v", res2, res)
	}
	got = readStream(ctx, t, s, stream, 3, eventstore.Forwards, 10)
	if len(got) != 1 {
		t.Fatalf("ReadStream from 3: %d events, want 1", len(got))
	}
	checkEvent(t, got[0], more[0], stream, 3)
	if got[0].Position != res2.Position {
		t.Fatalf("position %s, AppendResult.Position %s", got[0].Position, res2.Position)
	}
}

// wantWrongRevision checks err is the typed conflict with the given actual state.
func wantWrongRevision(t testing.TB, err error, stream string, actual uint64, exists bool) {
	t.Helper()
	if !errors.Is(err, eventstore.ErrWrongExpectedRevision) {
		t.Fatalf("err = %v, want ErrWrongExpectedRevision", err)
	}
	var we *eventstore.WrongExpectedRevisionError
	if !errors.As(err, &we) {
		t.Fatalf("err = %v (%T), want *WrongExpectedRevisionError", err, err)
	}
	if we.Stream != stream || we.ActualExists != exists || (exists && we.Actual != actual) {
		t.Fatalf("WrongExpectedRevisionError = %+v, want stream %q actual %d exists %v", we, stream, actual, exists)
	}
}

// wantUnchanged checks that stream still ends at lastRev (exists false: is
// empty) and that the log gained no event since head.
func wantUnchanged(ctx context.Context, t testing.TB, s eventstore.Store, stream string, n int, head eventstore.Position) {
	t.Helper()
	evs := readStream(ctx, t, s, stream, 0, eventstore.Forwards, 1000)
	if len(evs) != n {
		t.Fatalf("stream %q has %d events, want %d", stream, len(evs), n)
	}
	h, err := s.Head(ctx)
	if err != nil {
		t.Fatalf("Head: %v", err)
	}
	if h != head {
		t.Fatalf("Head moved from %s to %s although nothing was to be written", head, h)
	}
}

func head(ctx context.Context, t testing.TB, s eventstore.Store) eventstore.Position {
	t.Helper()
	h, err := s.Head(ctx)
	if err != nil {
		t.Fatalf("Head: %v", err)
	}
	return h
}

func testExpectedRevision(ctx context.Context, t *testing.T, h Harness) {
	s := h.Open(t)
	tok := token(t)
	a, b := "room-a"+tok, "room-b"+tok

	// Exact on a missing stream fails and reports no stream.
	hd := head(ctx, t, s)
	_, err := s.Append(ctx, a, eventstore.Exact(0), newEvents("x.y", 0, 1))
	wantWrongRevision(t, err, a, 0, false)
	wantUnchanged(ctx, t, s, a, 0, hd)

	mustAppend(ctx, t, s, a, eventstore.NoStream, newEvents("x.y", 0, 2))
	mustAppend(ctx, t, s, b, eventstore.Any, newEvents("x.y", 0, 1))
	mustAppend(ctx, t, s, b, eventstore.Any, newEvents("x.y", 1, 1))
	hd = head(ctx, t, s)

	_, err = s.Append(ctx, a, eventstore.NoStream, newEvents("x.y", 2, 1))
	wantWrongRevision(t, err, a, 1, true)
	wantUnchanged(ctx, t, s, a, 2, hd)

	for _, wrong := range []uint64{0, 2, 100} {
		_, err = s.Append(ctx, a, eventstore.Exact(wrong), newEvents("x.y", 2, 2))
		wantWrongRevision(t, err, a, 1, true)
		wantUnchanged(ctx, t, s, a, 2, hd)
	}
	var we *eventstore.WrongExpectedRevisionError
	if errors.As(err, &we) {
		if r, ok := we.Expected.Revision(); !ok || r != 100 {
			t.Fatalf("WrongExpectedRevisionError.Expected = %s, want 100", we.Expected)
		}
	}

	res := mustAppend(ctx, t, s, a, eventstore.Exact(1), newEvents("x.y", 2, 1))
	if res.Revision != 2 {
		t.Fatalf("Exact(1) append landed at revision %d, want 2", res.Revision)
	}
	res = mustAppend(ctx, t, s, a, eventstore.ExpectRevision(2, true), newEvents("x.y", 3, 1))
	if res.Revision != 3 {
		t.Fatalf("append landed at revision %d, want 3", res.Revision)
	}
	res = mustAppend(ctx, t, s, b, eventstore.Any, newEvents("x.y", 2, 1))
	if res.Revision != 2 {
		t.Fatalf("Any append landed at revision %d, want 2", res.Revision)
	}
}

func testInvalidAppend(ctx context.Context, t *testing.T, h Harness) {
	s := h.Open(t)
	stream := "profile-" + token(t)
	mustAppend(ctx, t, s, stream, eventstore.Any, newEvents("x.y", 0, 1))
	hd := head(ctx, t, s)

	noID := newEvents("x.y", 1, 2)
	noID[1].ID = uuid.Nil
	noType := newEvents("x.y", 1, 2)
	noType[0].Type = ""
	cases := []struct {
		name   string
		stream string
		events []eventstore.EventData
	}{
		{"no events", stream, nil},
		{"empty events", stream, []eventstore.EventData{}},
		{"empty stream", "", newEvents("x.y", 1, 1)},
		{"nil id", stream, noID},
		{"empty type", stream, noType},
	}
	for _, c := range cases {
		for _, exp := range []eventstore.ExpectedRevision{eventstore.Any, eventstore.Exact(0)} {
			_, err := s.Append(ctx, c.stream, exp, c.events)
			if !errors.Is(err, eventstore.ErrInvalidAppend) {
				t.Fatalf("%s (expected %s): err = %v, want ErrInvalidAppend", c.name, exp, err)
			}
		}
	}
	wantUnchanged(ctx, t, s, stream, 1, hd)
}

func testReadStream(ctx context.Context, t *testing.T, h Harness) {
	s := h.Open(t)
	tok := token(t)
	stream, other := "profile-"+tok, "profile-"+tok+"x"
	evs := newEvents("x.y", 0, 10)
	// Interleave another stream so that revisions and positions differ.
	for i := 0; i < 10; i += 2 {
		mustAppend(ctx, t, s, stream, eventstore.Any, evs[i:i+2])
		mustAppend(ctx, t, s, other, eventstore.Any, newEvents("x.z", i, 1))
	}
	revs := func(got []eventstore.RecordedEvent) []uint64 {
		out := make([]uint64, len(got))
		for i, e := range got {
			checkEvent(t, e, evs[e.Revision], stream, e.Revision)
			out[i] = e.Revision
		}
		return out
	}
	cases := []struct {
		from  uint64
		dir   eventstore.Direction
		limit int
		want  []uint64
	}{
		{0, eventstore.Forwards, 3, []uint64{0, 1, 2}},
		{0, eventstore.Forwards, 100, []uint64{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}},
		{5, eventstore.Forwards, 100, []uint64{5, 6, 7, 8, 9}},
		{8, eventstore.Forwards, 1, []uint64{8}},
		{9, eventstore.Forwards, 5, []uint64{9}},
		{10, eventstore.Forwards, 5, nil},
		{math.MaxUint64, eventstore.Forwards, 5, nil},
		{math.MaxUint64, eventstore.Backwards, 3, []uint64{9, 8, 7}},
		{math.MaxUint64, eventstore.Backwards, 100, []uint64{9, 8, 7, 6, 5, 4, 3, 2, 1, 0}},
		{4, eventstore.Backwards, 100, []uint64{4, 3, 2, 1, 0}},
		{4, eventstore.Backwards, 2, []uint64{4, 3}},
		{0, eventstore.Backwards, 5, []uint64{0}},
		{100, eventstore.Backwards, 2, []uint64{9, 8}},
	}
	for _, c := range cases {
		got := revs(readStream(ctx, t, s, stream, c.from, c.dir, c.limit))
		if fmt.Sprint(got) != fmt.Sprint(c.want) && !(len(got) == 0 && len(c.want) == 0) {
			t.Fatalf("ReadStream(from %d, dir %d, limit %d) = revisions %v, want %v", c.from, c.dir, c.limit, got, c.want)
		}
	}
	// Positions along a stream increase with revisions.
	all := readStream(ctx, t, s, stream, 0, eventstore.Forwards, 100)
	for i := 1; i < len(all); i++ {
		if !all[i-1].Position.Before(all[i].Position) {
			t.Fatalf("positions of revisions %d and %d: %s, %s", i-1, i, all[i-1].Position, all[i].Position)
		}
	}
	for _, dir := range []eventstore.Direction{eventstore.Forwards, eventstore.Backwards} {
		got := readStream(ctx, t, s, "profile-missing"+tok, 0, dir, 10)
		if len(got) != 0 {
			t.Fatalf("missing stream read %d events", len(got))
		}
		got = readStream(ctx, t, s, "profile-"+tok[:6], math.MaxUint64, dir, 10)
		if len(got) != 0 {
			t.Fatalf("stream named by a prefix of another read %d events", len(got))
		}
	}
}

func testReadAll(ctx context.Context, t *testing.T, h Harness) {
	s := h.Open(t)
	tok := token(t)
	prefix := "room-" + tok
	start := head(ctx, t, s)
	type appended struct {
		stream string
		ev     eventstore.EventData
		rev    uint64
	}
	var want []appended
	revs := map[string]uint64{}
	var last eventstore.AppendResult
	for i := 0; i < 12; i++ {
		stream := fmt.Sprintf("%s-%d", prefix, i%3)
		evs := newEvents("x.y", i, 1+i%2)
		last = mustAppend(ctx, t, s, stream, eventstore.Any, evs)
		for _, e := range evs {
			want = append(want, appended{stream, e, revs[stream]})
			revs[stream]++
		}
	}
	all := readAllMatching(ctx, t, s, start, prefix)
	if len(all) != len(want) {
		t.Fatalf("ReadAll: %d events, want %d", len(all), len(want))
	}
	for i, e := range all {
		checkEvent(t, e, want[i].ev, want[i].stream, want[i].rev)
	}
	if all[len(all)-1].Position != last.Position {
		t.Fatalf("last position %s, last AppendResult %s", all[len(all)-1].Position, last.Position)
	}
	// After a mid-log position, with a limit.
	for _, k := range []int{0, 5, len(all) - 3} {
		page, err := s.ReadAll(ctx, all[k].Position, 2)
		if err != nil {
			t.Fatalf("ReadAll: %v", err)
		}
		if len(page) != 2 || !sameRecorded(page[0], all[k+1]) || !sameRecorded(page[1], all[k+2]) {
			t.Fatalf("ReadAll(after event %d, limit 2) = %d events, want events %d and %d", k, len(page), k+1, k+2)
		}
	}
	page, err := s.ReadAll(ctx, last.Position, 10)
	if err != nil || len(page) != 0 {
		t.Fatalf("ReadAll(after the last event) = %d events, %v; want none", len(page), err)
	}
	page, err = s.ReadAll(ctx, eventstore.Position{Commit: math.MaxUint64, Prepare: math.MaxUint64}, 10)
	if err != nil || len(page) != 0 {
		t.Fatalf("ReadAll(after the largest position) = %d events, %v; want none", len(page), err)
	}
}

func testHead(ctx context.Context, t *testing.T, h Harness) {
	s := h.Open(t)
	h0 := head(ctx, t, s)
	after, err := s.ReadAll(ctx, h0, 10)
	if err != nil {
		t.Fatalf("ReadAll: %v", err)
	}
	if len(after) != 0 {
		t.Fatalf("ReadAll after Head %s returned %d events", h0, len(after))
	}
	if !h0.IsStart() {
		// Only an empty log may report Start; a shared server may not be empty.
		if first, err := s.ReadAll(ctx, eventstore.Start, 1); err != nil || len(first) == 0 {
			t.Fatalf("Head = %s on an empty log (%v)", h0, err)
		}
	}
	stream := "profile-" + token(t)
	for i := 0; i < 3; i++ {
		res := mustAppend(ctx, t, s, stream, eventstore.Any, newEvents("x.y", i, 2))
		if got := head(ctx, t, s); got != res.Position {
			t.Fatalf("Head = %s after an append at %s", got, res.Position)
		}
	}
}

// start releases goroutines together so that they contend.
func parallel(n int, fn func(i int)) {
	var wg sync.WaitGroup
	gate := make(chan struct{})
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-gate
			fn(i)
		}()
	}
	close(gate)
	wg.Wait()
}

func testConcurrentExpectedRevision(ctx context.Context, t *testing.T, h Harness) {
	s := h.Open(t)
	stream := "profile-" + token(t)
	const writers, rounds = 8, 15
	var winners []eventstore.EventData
	for r := 0; r < rounds; r++ {
		exp := eventstore.ExpectRevision(uint64(r-1), r > 0)
		evs := make([]eventstore.EventData, writers)
		errs := make([]error, writers)
		results := make([]eventstore.AppendResult, writers)
		for i := range evs {
			evs[i] = newEvent("x.y", r*writers+i)
		}
		parallel(writers, func(i int) {
			results[i], errs[i] = s.Append(ctx, stream, exp, evs[i:i+1])
		})
		won := -1
		for i, err := range errs {
			if err == nil {
				if won >= 0 {
					t.Fatalf("round %d: writers %d and %d both appended with expected %s", r, won, i, exp)
				}
				won = i
				if results[i].Revision != uint64(r) {
					t.Fatalf("round %d: winner got revision %d", r, results[i].Revision)
				}
			}
		}
		if won < 0 {
			t.Fatalf("round %d: no writer won: %v", r, errs[0])
		}
		for i, err := range errs {
			if i != won {
				wantWrongRevision(t, err, stream, uint64(r), true)
			}
		}
		winners = append(winners, evs[won])
	}
	got := readStream(ctx, t, s, stream, 0, eventstore.Forwards, 1000)
	if len(got) != rounds {
		t.Fatalf("stream has %d events, want %d", len(got), rounds)
	}
	for i, e := range got {
		checkEvent(t, e, winners[i], stream, uint64(i))
	}
}

// testConcurrentOptimisticRetry runs the domain's loop: read the head, append
// with it, retry on conflict. Every event must land exactly once, no gaps.
func testConcurrentOptimisticRetry(ctx context.Context, t *testing.T, h Harness) {
	s := h.Open(t)
	stream := "profile-" + token(t)
	const writers, each = 6, 8
	errs := make([]error, writers)
	parallel(writers, func(w int) {
		for i := 0; i < each; i++ {
			ev := newEvent("x.y", w*each+i)
			for {
				last, err := s.ReadStream(ctx, stream, math.MaxUint64, eventstore.Backwards, 1)
				if err != nil {
					errs[w] = err
					return
				}
				exp := eventstore.NoStream
				if len(last) == 1 {
					exp = eventstore.Exact(last[0].Revision)
				}
				_, err = s.Append(ctx, stream, exp, []eventstore.EventData{ev})
				if err == nil {
					break
				}
				if !errors.Is(err, eventstore.ErrWrongExpectedRevision) {
					errs[w] = err
					return
				}
			}
		}
	})
	for _, err := range errs {
		if err != nil {
			t.Fatalf("writer: %v", err)
		}
	}
	got := readStream(ctx, t, s, stream, 0, eventstore.Forwards, 1000)
	if len(got) != writers*each {
		t.Fatalf("stream has %d events, want %d", len(got), writers*each)
	}
	seen := map[uuid.UUID]bool{}
	for i, e := range got {
		if e.Revision != uint64(i) || seen[e.ID] {
			t.Fatalf("event %d: revision %d, duplicate %v", i, e.Revision, seen[e.ID])
		}
		seen[e.ID] = true
	}
}

// written is what concurrent writers appended, for checking the log.
type written struct {
	mu      sync.Mutex
	events  map[uuid.UUID]writtenEvent
	results []eventstore.AppendResult
}

type writtenEvent struct {
	ev     eventstore.EventData
	stream string
	last   eventstore.Position // the AppendResult position of its append
	final  bool                // the last event of its append
}

func (w *written) add(stream string, evs []eventstore.EventData, res eventstore.AppendResult) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.events == nil {
		w.events = map[uuid.UUID]writtenEvent{}
	}
	for i, e := range evs {
		w.events[e.ID] = writtenEvent{ev: e, stream: stream, last: res.Position, final: i == len(evs)-1}
	}
	w.results = append(w.results, res)
}

// writeMany has writers goroutines each append rounds times (1 to 3 events)
// to their own stream and to a stream shared by all, under prefix; half the
// streams fall outside the "<prefix>-in" filter. progress, if not nil, is
// closed once a third of the writes are acknowledged.
func writeMany(ctx context.Context, t testing.TB, s eventstore.Store, prefix string, writers, rounds int, w *written, progress chan struct{}) {
	var once sync.Once
	var acked int
	var mu sync.Mutex
	errs := make([]error, writers)
	parallel(writers, func(g int) {
		var prev eventstore.Position
		for r := 0; r < rounds; r++ {
			stream := fmt.Sprintf("%s-in-%d", prefix, g)
			switch {
			case r%4 == 1:
				stream = fmt.Sprintf("%s-out-%d", prefix, g)
			case r%4 == 3:
				stream = prefix + "-in-shared"
			}
			evs := newEvents("x.y", g*1000+r, 1+(g+r)%3)
			res, err := s.Append(ctx, stream, eventstore.Any, evs)
			if err != nil {
				errs[g] = err
				return
			}
			w.add(stream, evs, res)
			// Commit order: an append acknowledged before the next one
			// starts lies before it in the log.
			if !prev.Before(res.Position) {
				errs[g] = fmt.Errorf("append acknowledged at %s after an earlier one at %s", res.Position, prev)
				return
			}
			prev = res.Position
			mu.Lock()
			acked++
			if progress != nil && acked >= writers*rounds/3 {
				once.Do(func() { close(progress) })
			}
			mu.Unlock()
		}
	})
	for _, err := range errs {
		if err != nil {
			t.Errorf("writer: %v", err)
		}
	}
}

// checkLog checks events (read from the log, in log order) against what was
// written: each exactly once, positions strictly increasing, each stream's
// revisions dense and in order, each append's last event at its result's
// position. keep selects which written events must appear.
func checkLog(t testing.TB, events []eventstore.RecordedEvent, w *written, keep func(stream string) bool) {
	t.Helper()
	want := 0
	for _, we := range w.events {
		if keep(we.stream) {
			want++
		}
	}
	if len(events) != want {
		t.Fatalf("%d events, want %d", len(events), want)
	}
	seen := map[uuid.UUID]bool{}
	next := map[string]uint64{}
	for i, e := range events {
		we, ok := w.events[e.ID]
		if !ok || !keep(we.stream) {
			t.Fatalf("event %d (%s in %q) was not written or should be filtered out", i, e.ID, e.Stream)
		}
		if seen[e.ID] {
			t.Fatalf("event %s appears twice", e.ID)
		}
		seen[e.ID] = true
		if i > 0 && !events[i-1].Position.Before(e.Position) {
			t.Fatalf("positions %s then %s", events[i-1].Position, e.Position)
		}
		if e.Stream != we.stream || e.Type != we.ev.Type || !sameBytes(e.Data, we.ev.Data) {
			t.Fatalf("event %s read as %q %q %s", e.ID, e.Stream, e.Type, e.Data)
		}
		if we.final && e.Position != we.last {
			t.Fatalf("last event of an append at %s, AppendResult says %s", e.Position, we.last)
		}
		if !we.final && !e.Position.Before(we.last) {
			t.Fatalf("event at %s after its append's last event %s", e.Position, we.last)
		}
		if e.Revision != next[e.Stream] {
			t.Fatalf("stream %q: revision %d where %d was next", e.Stream, e.Revision, next[e.Stream])
		}
		next[e.Stream]++
	}
}

func testConcurrentGlobalOrder(ctx context.Context, t *testing.T, h Harness) {
	s := h.Open(t)
	prefix := "profile-" + token(t)
	start := head(ctx, t, s)
	var w written
	writeMany(ctx, t, s, prefix, 16, 12, &w, nil)
	all := readAllMatching(ctx, t, s, start, prefix)
	checkLog(t, all, &w, func(string) bool { return true })
	// Commit order: an append acknowledged before another started has the
	// smaller position; acknowledged results are unique.
	pos := map[eventstore.Position]bool{}
	for _, r := range w.results {
		if pos[r.Position] {
			t.Fatalf("two appends acknowledged at %s", r.Position)
		}
		pos[r.Position] = true
	}
}

// collect reads n events from sub.
func collect(ctx context.Context, t testing.TB, sub eventstore.Subscription, n int) []eventstore.RecordedEvent {
	t.Helper()
	out := make([]eventstore.RecordedEvent, 0, n)
	for len(out) < n {
		e, err := sub.Next(ctx)
		if err != nil {
			t.Fatalf("Next after %d of %d events: %v", len(out), n, err)
		}
		out = append(out, e)
	}
	return out
}

func subscribe(ctx context.Context, t testing.TB, s eventstore.Store, after eventstore.Position, f eventstore.Filter) eventstore.Subscription {
	t.Helper()
	sub, err := s.Subscribe(ctx, after, f)
	if err != nil {
		t.Fatalf("Subscribe(%s, %v): %v", after, f, err)
	}
	t.Cleanup(func() { sub.Close() })
	return sub
}

func testSubscribeCatchUpAndLive(ctx context.Context, t *testing.T, h Harness) {
	s := h.Open(t)
	prefix := "profile-" + token(t)
	start := head(ctx, t, s)
	const writers, rounds = 12, 16
	var w written
	progress := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		writeMany(ctx, t, s, prefix, writers, rounds, &w, progress)
	}()

	// One subscriber joins while the writers run, so that it catches up on
	// what is stored and then goes live; another is filtered.
	select {
	case <-progress:
	case <-done:
	}
	in := func(stream string) bool { return strings.HasPrefix(stream, prefix+"-in") }
	all := subscribe(ctx, t, s, start, eventstore.Filter{})
	filtered := subscribe(ctx, t, s, start, eventstore.Filter{StreamPrefixes: []string{"nomatch-", prefix + "-in"}})
	<-done
	if t.Failed() {
		return
	}
	// Both must deliver exactly what was written (the unfiltered one may see
	// other streams on a shared server: keep ours).
	var nAll, nIn int
	for _, we := range w.events {
		nAll++
		if in(we.stream) {
			nIn++
		}
	}
	var gotAll []eventstore.RecordedEvent
	for len(gotAll) < nAll {
		e, err := all.Next(ctx)
		if err != nil {
			t.Fatalf("Next after %d of %d events: %v", len(gotAll), nAll, err)
		}
		if strings.HasPrefix(e.Stream, prefix) {
			gotAll = append(gotAll, e)
		}
	}
	checkLog(t, gotAll, &w, func(string) bool { return true })
	gotIn := collect(ctx, t, filtered, nIn)
	checkLog(t, gotIn, &w, in)

	// The subscription's order is the log's order.
	logged := readAllMatching(ctx, t, s, start, prefix)
	for i := range logged {
		if !sameRecorded(logged[i], gotAll[i]) {
			t.Fatalf("subscription event %d differs from ReadAll: %+v vs %+v", i, gotAll[i], logged[i])
		}
	}

	// Nothing more is pending, and a later append arrives live.
	late := newEvents("x.y", 0, 1)
	res := mustAppend(ctx, t, s, prefix+"-in-late", eventstore.Any, late)
	for _, sub := range []eventstore.Subscription{all, filtered} {
		for {
			e, err := sub.Next(ctx)
			if err != nil {
				t.Fatalf("Next for the late event: %v", err)
			}
			if !strings.HasPrefix(e.Stream, prefix) {
				continue
			}
			if e.ID != late[0].ID || e.Position != res.Position {
				t.Fatalf("after the writers, got %s at %s; want the late event at %s", e.ID, e.Position, res.Position)
			}
			break
		}
	}
}

func testSubscribeAfterPosition(ctx context.Context, t *testing.T, h Harness) {
	s := h.Open(t)
	stream := "profile-" + token(t)
	evs := newEvents("x.y", 0, 10)
	var results []eventstore.AppendResult
	for i := range evs {
		results = append(results, mustAppend(ctx, t, s, stream, eventstore.Any, evs[i:i+1]))
	}
	sub := subscribe(ctx, t, s, results[4].Position, eventstore.Filter{StreamPrefixes: []string{stream}})
	got := collect(ctx, t, sub, 5)
	for i, e := range got {
		checkEvent(t, e, evs[5+i], stream, uint64(5+i))
		if e.Position != results[5+i].Position {
			t.Fatalf("event %d at %s, appended at %s", 5+i, e.Position, results[5+i].Position)
		}
	}
	// Live after the catch-up: append from another goroutine while Next waits.
	more := newEvents("x.y", 10, 3)
	errc := make(chan error, 1)
	go func() {
		_, err := s.Append(ctx, stream, eventstore.Exact(9), more)
		errc <- err
	}()
	got = collect(ctx, t, sub, 3)
	if err := <-errc; err != nil {
		t.Fatalf("Append: %v", err)
	}
	for i, e := range got {
		checkEvent(t, e, more[i], stream, uint64(10+i))
	}
	// A subscription from the head sees only later events.
	hd := head(ctx, t, s)
	sub2 := subscribe(ctx, t, s, hd, eventstore.Filter{StreamPrefixes: []string{stream}})
	last := newEvents("x.y", 13, 1)
	mustAppend(ctx, t, s, stream, eventstore.Any, last)
	got = collect(ctx, t, sub2, 1)
	checkEvent(t, got[0], last[0], stream, 13)
}

func testSubscriptionEnds(ctx context.Context, t *testing.T, h Harness) {
	s := h.Open(t)
	stream := "profile-" + token(t)
	mustAppend(ctx, t, s, stream, eventstore.Any, newEvents("x.y", 0, 1))
	f := eventstore.Filter{StreamPrefixes: []string{stream}}

	// Close while Next waits.
	sub := subscribe(ctx, t, s, eventstore.Start, f)
	collect(ctx, t, sub, 1)
	errc := make(chan error, 1)
	go func() {
		_, err := sub.Next(ctx)
		errc <- err
	}()
	if err := sub.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := <-errc; !errors.Is(err, eventstore.ErrClosed) {
		t.Fatalf("Next during Close: %v, want ErrClosed", err)
	}
	if _, err := sub.Next(ctx); !errors.Is(err, eventstore.ErrClosed) {
		t.Fatalf("Next after Close: %v, want ErrClosed", err)
	}
	if err := sub.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}

	// Cancel the context of Next while it waits.
	sub = subscribe(ctx, t, s, eventstore.Start, f)
	collect(ctx, t, sub, 1)
	nctx, ncancel := context.WithCancel(ctx)
	go func() {
		_, err := sub.Next(nctx)
		errc <- err
	}()
	ncancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("Next with a cancelled context: %v, want context.Canceled", err)
	}
	// Cancel the context given to Subscribe.
	sctx, scancel := context.WithCancel(ctx)
	sub = subscribe(sctx, t, s, eventstore.Start, f)
	collect(ctx, t, sub, 1)
	go func() {
		_, err := sub.Next(ctx)
		errc <- err
	}()
	scancel()
	if err := <-errc; err == nil {
		t.Fatalf("Next returned an event after the subscription's context ended")
	} else if !errors.Is(err, context.Canceled) && !errors.Is(err, eventstore.ErrClosed) {
		t.Fatalf("Next after the subscription's context ended: %v, want context.Canceled or ErrClosed", err)
	}
}

func testClosedStore(ctx context.Context, t *testing.T, h Harness) {
	s := h.Open(t)
	stream := "profile-" + token(t)
	mustAppend(ctx, t, s, stream, eventstore.Any, newEvents("x.y", 0, 1))
	sub := subscribe(ctx, t, s, eventstore.Start, eventstore.Filter{StreamPrefixes: []string{stream}})
	collect(ctx, t, sub, 1)
	errc := make(chan error, 1)
	go func() {
		_, err := sub.Next(ctx)
		errc <- err
	}()
	s2 := h.Reopen(t, s) // closes s
	if err := <-errc; !errors.Is(err, eventstore.ErrClosed) {
		t.Fatalf("Next on a closed store: %v, want ErrClosed", err)
	}
	if _, err := s.Append(ctx, stream, eventstore.Any, newEvents("x.y", 1, 1)); !errors.Is(err, eventstore.ErrClosed) {
		t.Fatalf("Append on a closed store: %v, want ErrClosed", err)
	}
	if _, err := s.ReadStream(ctx, stream, 0, eventstore.Forwards, 10); !errors.Is(err, eventstore.ErrClosed) {
		t.Fatalf("ReadStream on a closed store: %v, want ErrClosed", err)
	}
	if _, err := s.ReadAll(ctx, eventstore.Start, 10); !errors.Is(err, eventstore.ErrClosed) {
		t.Fatalf("ReadAll on a closed store: %v, want ErrClosed", err)
	}
	if _, err := s.Subscribe(ctx, eventstore.Start, eventstore.Filter{}); !errors.Is(err, eventstore.ErrClosed) {
		t.Fatalf("Subscribe on a closed store: %v, want ErrClosed", err)
	}
	if got := readStream(ctx, t, s2, stream, 0, eventstore.Forwards, 10); len(got) != 1 {
		t.Fatalf("reopened store has %d events, want 1", len(got))
	}
}

func testReopen(ctx context.Context, t *testing.T, h Harness) {
	s := h.Open(t)
	prefix := "profile-" + token(t)
	start := head(ctx, t, s)
	var w written
	writeMany(ctx, t, s, prefix, 4, 6, &w, nil)
	dedupStream := prefix + "-in-dedup"
	dedup := newEvents("x.y", 0, 2)
	dres := mustAppend(ctx, t, s, dedupStream, eventstore.NoStream, dedup)
	w.add(dedupStream, dedup, dres)
	before := readAllMatching(ctx, t, s, start, prefix)
	hd := head(ctx, t, s)

	s = h.Reopen(t, s)
	if got := head(ctx, t, s); got != hd {
		t.Fatalf("Head after reopen = %s, want %s", got, hd)
	}
	after := readAllMatching(ctx, t, s, start, prefix)
	if len(after) != len(before) {
		t.Fatalf("after reopen %d events, before %d", len(after), len(before))
	}
	for i := range before {
		if !sameRecorded(before[i], after[i]) {
			t.Fatalf("event %d changed on reopen: %+v -> %+v", i, before[i], after[i])
		}
	}
	checkLog(t, after, &w, func(string) bool { return true })
	got := readStream(ctx, t, s, dedupStream, math.MaxUint64, eventstore.Backwards, 10)
	if len(got) != 2 || got[0].ID != dedup[1].ID {
		t.Fatalf("stream read backwards after reopen: %d events", len(got))
	}

	// Dedup survives, expected revisions continue, positions go on after
	// the old head.
	res, err := s.Append(ctx, dedupStream, eventstore.NoStream, dedup)
	if err != nil || res != dres {
		t.Fatalf("re-append after reopen = %+v, %v; want %+v", res, err, dres)
	}
	wantUnchanged(ctx, t, s, dedupStream, 2, hd)
	_, err = s.Append(ctx, dedupStream, eventstore.Exact(0), newEvents("x.y", 2, 1))
	wantWrongRevision(t, err, dedupStream, 1, true)
	res = mustAppend(ctx, t, s, dedupStream, eventstore.Exact(1), newEvents("x.y", 2, 1))
	if res.Revision != 2 || !hd.Before(res.Position) {
		t.Fatalf("append after reopen = %+v, old head %s", res, hd)
	}
}

func testIdempotent(ctx context.Context, t *testing.T, h Harness) {
	s := h.Open(t)
	tok := token(t)
	stream := "profile-" + tok
	first := newEvents("x.y", 0, 3)
	res := mustAppend(ctx, t, s, stream, eventstore.NoStream, first)
	hd := head(ctx, t, s)

	// The same ids again, with any expectation, even one that no longer
	// holds: the original result, nothing written.
	for _, exp := range []eventstore.ExpectedRevision{eventstore.NoStream, eventstore.Any, eventstore.Exact(2)} {
		again, err := s.Append(ctx, stream, exp, first)
		if err != nil || again != res {
			t.Fatalf("re-append (expected %s) = %+v, %v; want %+v", exp, again, err, res)
		}
		wantUnchanged(ctx, t, s, stream, 3, hd)
	}
	// The stream moves on; a retry of the first append still gets its result.
	res2 := mustAppend(ctx, t, s, stream, eventstore.Exact(2), newEvents("x.y", 3, 1))
	hd = head(ctx, t, s)
	again, err := s.Append(ctx, stream, eventstore.NoStream, first)
	if err != nil || again != res {
		t.Fatalf("retry after the stream moved on = %+v, %v; want %+v", again, err, res)
	}
	wantUnchanged(ctx, t, s, stream, 4, hd)
	_ = res2

	// The same id in another stream is another event.
	otherRes := mustAppend(ctx, t, s, "profile-other"+tok, eventstore.NoStream, first[:1])
	if otherRes.Revision != 0 || !hd.Before(otherRes.Position) {
		t.Fatalf("same id in another stream = %+v", otherRes)
	}

	// Concurrent retries of one append: all get the same result, one write.
	stream2 := "profile-conc" + tok
	evs := newEvents("x.y", 10, 2)
	results := make([]eventstore.AppendResult, 8)
	errs := make([]error, 8)
	parallel(8, func(i int) { results[i], errs[i] = s.Append(ctx, stream2, eventstore.Any, evs) })
	for i := range results {
		if errs[i] != nil || results[i] != results[0] {
			t.Fatalf("concurrent identical appends: %+v, %v vs %+v", results[i], errs[i], results[0])
		}
	}
	if got := readStream(ctx, t, s, stream2, 0, eventstore.Forwards, 100); len(got) != 2 {
		t.Fatalf("concurrent identical appends wrote %d events, want 2", len(got))
	}
}

func testPartialOverlap(ctx context.Context, t *testing.T, h Harness) {
	s := h.Open(t)
	stream := "profile-" + token(t)
	first := newEvents("x.y", 0, 2)
	mustAppend(ctx, t, s, stream, eventstore.Any, first)
	hd := head(ctx, t, s)
	overlap := []eventstore.EventData{first[1], newEvent("x.y", 2)}
	for _, exp := range []eventstore.ExpectedRevision{eventstore.Any, eventstore.Exact(1)} {
		_, err := s.Append(ctx, stream, exp, overlap)
		if !errors.Is(err, eventstore.ErrWrongExpectedRevision) {
			t.Fatalf("partially overlapping append (expected %s): %v, want ErrWrongExpectedRevision", exp, err)
		}
		wantUnchanged(ctx, t, s, stream, 2, hd)
	}
}
