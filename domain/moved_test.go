package domain_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/profilestore/profilestore/domain"
	"github.com/profilestore/profilestore/eventstore"
	"github.com/profilestore/profilestore/eventstore/integrity"
)

// TestMovedHidesDecodeHidesWhereTheImportPutTheEntries: a hide decodes to
// the position its stored payload names until a log.hides_moved record
// names another; the record is split into events of at most 10,000
// entries, chained (it verifies), and a later record wins.
func TestMovedHidesDecodeHidesWhereTheImportPutTheEntries(t *testing.T) {
	ctx := context.Background()
	store, keys := openStore(t)
	sealer := domain.NewSealer(keys)
	user := domain.UserID("@bob:example.com")
	hide := domain.Event{Type: domain.TypeEntryHidden, User: user, Hidden: eventstore.Position{Commit: 1, Prepare: 1}}
	data, err := domain.Encode(ctx, sealer, &hide)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.Append(ctx, hide.Stream(), eventstore.NoStream, []eventstore.EventData{data}); err != nil {
		t.Fatal(err)
	}
	decoded := func() eventstore.Position {
		t.Helper()
		recs, err := store.ReadStream(ctx, hide.Stream(), 0, eventstore.Forwards, 1)
		if err != nil || len(recs) != 1 {
			t.Fatalf("read the hide: %v", err)
		}
		e, err := domain.Decode(ctx, sealer, recs[0])
		if err != nil {
			t.Fatal(err)
		}
		return e.Hidden
	}
	if got := decoded(); got.Commit != 1 {
		t.Fatalf("without a record the hide names %s, want 1", got)
	}

	// 10,001 entries: two events; the one for the hide is the last.
	moved := make([]domain.MovedHide, 10_001)
	for i := range moved[:10_000] {
		moved[i] = domain.MovedHide{Stream: fmt.Sprintf("profile-@u%d:example.com", i), Position: eventstore.Position{Commit: uint64(i + 2), Prepare: uint64(i + 2)}}
	}
	moved[10_000] = domain.MovedHide{Stream: hide.Stream(), Revision: 0, Position: eventstore.Position{Commit: 7, Prepare: 7}}
	if err := domain.AppendMovedHides(ctx, store, moved); err != nil {
		t.Fatal(err)
	}
	if recs, err := store.ReadStream(ctx, domain.MovedHidesStream, 0, eventstore.Forwards, 10); err != nil || len(recs) != 2 {
		t.Fatalf("%d log.hides_moved events (%v), want 2", len(recs), err)
	}
	if got := decoded(); got.Commit != 1 {
		t.Fatalf("before LoadMovedHides the hide names %s, want 1", got)
	}
	if err := domain.LoadMovedHides(ctx, store, sealer); err != nil {
		t.Fatal(err)
	}
	if got := decoded(); got.Commit != 7 {
		t.Fatalf("the hide names %s, want 7 (moved)", got)
	}
	recs, err := store.ReadStream(ctx, hide.Stream(), 0, eventstore.Forwards, 1)
	if err != nil {
		t.Fatal(err)
	}
	if opened, err := domain.OpenPayload(ctx, sealer, recs[0]); err != nil || string(opened.Data) != `{"position":"7","v":1}` {
		t.Fatalf("the feed's payload of the hide: %s %v", opened.Data, err)
	}
	if err := domain.AppendMovedHides(ctx, store, []domain.MovedHide{{Stream: hide.Stream(), Revision: 0, Position: domain.NoEntry}}); err != nil {
		t.Fatal(err)
	}
	if err := domain.LoadMovedHides(ctx, store, sealer); err != nil {
		t.Fatal(err)
	}
	if got := decoded(); got != domain.NoEntry {
		t.Fatalf("after a later record the hide names %s, want %s", got, domain.NoEntry)
	}
	r, err := integrity.VerifyStore(ctx, store, nil, 0, nil, nil)
	if err != nil || !r.OK() || r.Events != 4 {
		t.Fatalf("verify: %+v %v", r, err)
	}
}
