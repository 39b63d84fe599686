package bolt_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	bbolt "go.etcd.io/bbolt"

	"github.com/profilestore/profilestore/eventstore"
	"github.com/profilestore/profilestore/eventstore/bolt"
)

// lendLog writes events of several streams, with and without metadata,
// one and several to an append.
func lendLog(t *testing.T, s *bolt.Store, n int) {
	t.Helper()
	ctx := context.Background()
	for i := 0; i < n; {
		stream := fmt.Sprintf("profile-@u%d:example.org", i%7)
		evs := []eventstore.EventData{{ID: uuid.New(), Type: "profile.field_set", Data: []byte(fmt.Sprintf(`{"v":%d}`, i))}}
		if i%3 == 0 {
			evs[0].Metadata = []byte(fmt.Sprintf(`{"n":%d,"pad":%q}`, i, strings.Repeat("x", i%200)))
		}
		if i%5 == 0 {
			evs = append(evs, eventstore.EventData{ID: uuid.New(), Type: "profile.erased", Data: []byte(`{}`), Metadata: []byte(`{"m":1}`)})
		}
		if _, err := s.Append(ctx, stream, eventstore.Any, evs); err != nil {
			t.Fatal(err)
		}
		i += len(evs)
	}
}

// TestLendAllIsReadAll: a lent page holds what ReadAll returns for the
// same position and limit, field for field (Metadata nil where none was
// appended), in a slice passed back to LendAll after its release.
func TestLendAllIsReadAll(t *testing.T) {
	s := openStore(t, filepath.Join(t.TempDir(), "events.db"))
	lendLog(t, s, 300)
	ctx := context.Background()
	var into []eventstore.RecordedEvent
	for _, limit := range []int{1, 7, 100, 1000} {
		for _, after := range []eventstore.Position{eventstore.Start, {Commit: 1, Prepare: 1}, {Commit: 57, Prepare: 57}, {Commit: 58, Prepare: 3}, {Commit: 299, Prepare: 299}, {Commit: 400, Prepare: 400}} {
			want, err := s.ReadAll(ctx, after, limit)
			if err != nil {
				t.Fatal(err)
			}
			page, release, err := s.LendAll(ctx, after, limit, into)
			if err != nil {
				t.Fatal(err)
			}
			if len(page) != len(want) {
				t.Fatalf("after %v, limit %d: %d events lent, %d read", after, limit, len(page), len(want))
			}
			for i := range want {
				if !reflect.DeepEqual(page[i], want[i]) {
					t.Fatalf("after %v, limit %d, event %d: lent %+v, read %+v", after, limit, i, page[i], want[i])
				}
				// An append to a lent payload copies it: bbolt's map is
				// read-only.
				if cap(page[i].Data) != len(page[i].Data) || cap(page[i].Metadata) != len(page[i].Metadata) {
					t.Fatalf("event %d: payloads with room to append into the map", i)
				}
			}
			release()
			for i := range page {
				if !reflect.DeepEqual(page[i], eventstore.RecordedEvent{}) {
					t.Fatalf("event %d still set after release: %+v", i, page[i])
				}
			}
			into = page
		}
	}
}

// TestLentPageHoldsItsTransactionUntilReleased: every page holds a read
// transaction until its release, and only until then; a second release
// does nothing; an empty page, a failed read and a closed store hold
// none.
func TestLentPageHoldsItsTransactionUntilReleased(t *testing.T) {
	path := filepath.Join(t.TempDir(), "events.db")
	s := openStore(t, path)
	lendLog(t, s, 50)
	ctx := context.Background()
	p1, release1, err := s.LendAll(ctx, eventstore.Start, 20, nil)
	if err != nil || len(p1) != 20 {
		t.Fatal(len(p1), err)
	}
	_, release2, err := s.LendAll(ctx, p1[19].Position, 20, nil)
	if err != nil {
		t.Fatal(err)
	}
	if n := s.OpenReadTxs(); n != 2 {
		t.Fatalf("%d read transactions open with two pages lent", n)
	}
	release1()
	release1()
	if n := s.OpenReadTxs(); n != 1 {
		t.Fatalf("%d read transactions open with one page lent", n)
	}
	release2()
	if n := s.OpenReadTxs(); n != 0 {
		t.Fatalf("%d read transactions open after every release", n)
	}
	empty, release, err := s.LendAll(ctx, eventstore.Position{Commit: 1000, Prepare: 1000}, 20, nil)
	if err != nil || len(empty) != 0 || s.OpenReadTxs() != 0 {
		t.Fatalf("past the end: %d events, %v, %d read transactions open", len(empty), err, s.OpenReadTxs())
	}
	release()
	if _, _, err := s.LendAll(ctx, eventstore.Start, 0, nil); err != nil || s.OpenReadTxs() != 0 {
		t.Fatalf("limit 0: %v, %d read transactions open", err, s.OpenReadTxs())
	}

	// A record that does not decode fails the page and closes its
	// transaction.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	db, err := bbolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bbolt.Tx) error {
		return tx.Bucket([]byte("log")).Put([]byte{0, 0, 0, 0, 0, 0, 0, 30}, []byte{9, 9, 9})
	}); err != nil {
		t.Fatal(err)
	}
	db.Close()
	s = openStore(t, path)
	if page, _, err := s.LendAll(ctx, eventstore.Start, 100, nil); err == nil || len(page) != 0 {
		t.Fatalf("a corrupt record lent as %d events, %v", len(page), err)
	}
	if n := s.OpenReadTxs(); n != 0 {
		t.Fatalf("%d read transactions open after a failed page", n)
	}
	page, release, err := s.LendAll(ctx, eventstore.Start, 10, nil)
	if err != nil || len(page) != 10 {
		t.Fatal(len(page), err)
	}
	release()
	s.Close()
	if _, _, err := s.LendAll(ctx, eventstore.Start, 10, nil); !errors.Is(err, eventstore.ErrClosed) {
		t.Fatalf("lend from a closed store: %v", err)
	}
}

// TestCommitThatGrowsTheFileWaitsForLentPages: bbolt remaps a growing file
// only when no read transaction is open, so a commit that grows it waits
// while a page is lent, the page's bytes stay as they were, and the
// commit goes through once the page is released.
func TestCommitThatGrowsTheFileWaitsForLentPages(t *testing.T) {
	s := openStore(t, filepath.Join(t.TempDir(), "events.db"))
	lendLog(t, s, 20)
	ctx := context.Background()
	want, err := s.ReadAll(ctx, eventstore.Start, 20)
	if err != nil {
		t.Fatal(err)
	}
	page, release, err := s.LendAll(ctx, eventstore.Start, 20, nil)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		big := []byte(`"` + strings.Repeat("b", 8<<20) + `"`)
		_, err := s.Append(ctx, "big", eventstore.Any, []eventstore.EventData{{ID: uuid.New(), Type: "big", Data: big}})
		done <- err
	}()
	select {
	case err := <-done:
		t.Fatalf("a commit of 8 MiB went through while a page was lent (%v): the file did not grow, or its map moved under the page", err)
	case <-time.After(200 * time.Millisecond):
	}
	if !reflect.DeepEqual(page, want) {
		t.Fatal("the lent page changed while a commit waited")
	}
	release()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the commit still waits after the page was released")
	}
}
