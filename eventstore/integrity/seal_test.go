package integrity_test

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"
	bbolt "go.etcd.io/bbolt"

	"github.com/profilestore/profilestore/domain"
	"github.com/profilestore/profilestore/eventstore"
	"github.com/profilestore/profilestore/eventstore/integrity"
)

func TestErasureKeepsTheHistoryVerifiable(t *testing.T) {
	l := history(t)
	ctx := context.Background()
	if _, err := l.eraser.Erase(ctx, domain.EraseProfile{User: "@u1:example.com", Actor: domain.ServerActor,
		Meta: domain.Metadata{OccurredAt: time.Now(), Source: "admin"}}); err != nil {
		t.Fatal(err)
	}
	l.setName(t, "@u2:example.com", "after the erasure")
	l.seal(t)
	r := l.verify(t, nil)
	if !r.OK() || r.LastSeal == nil || r.LastSeal.Seq != 4 {
		t.Fatalf("after an erasure: %+v\n%s", r.LastSeal, breaks(r))
	}
}

// legacy appends events as the store held them before chaining: no chain
// members in their metadata.
func legacy(t *testing.T, l *testLog, user string, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		data, _ := json.Marshal(map[string]any{"v": 1, "key": "org.example.note", "value": fmt.Sprintf("s1.1.legacy%d", i)})
		meta, _ := json.Marshal(map[string]any{"occurred_at": time.Now(), "source": "client"})
		if _, err := l.store.Append(context.Background(), "profile-"+user, eventstore.Any,
			[]eventstore.EventData{{ID: uuid.New(), Type: "profile.field_set", Data: data, Metadata: meta}}); err != nil {
			t.Fatal(err)
		}
	}
}

// TestGenesisSealCoversEventsWrittenBeforeChaining: a log that starts with
// unchained events gets chained ones after them, the first seal covers
// both, and a changed byte in an old event breaks the genesis seal.
func TestGenesisSealCoversEventsWrittenBeforeChaining(t *testing.T) {
	l := openLog(t, t.TempDir(), newKey(t))
	legacy(t, l, "@old:example.com", 3)
	legacy(t, l, "@older:example.com", 2)
	l.setName(t, "@old:example.com", "chained after old events") // links to the virtual chain
	l.setName(t, "@new:example.com", "chained")
	genesis := l.seal(t)
	if genesis.Seq != 1 || genesis.PrevSeal != integrity.Zero {
		t.Fatalf("genesis seal: %+v", genesis.Seal)
	}
	l.setName(t, "@old:example.com", "later")
	l.seal(t)
	if r := l.verify(t, nil); !r.OK() {
		t.Fatalf("a log with events from before chaining:\n%s", breaks(r))
	}

	var firstChained, sealRec record
	l = l.tamper(t, func(t *testing.T, b *bbolt.Bucket, recs []record) {
		for _, r := range recs {
			switch {
			case r.stream == "profile-@old:example.com" && r.revision == 1, r.stream == "profile-@older:example.com":
				// A legacy event of a stream with chained events after
				// it, and one of a stream without.
				v := r.raw
				v[r.dataAt+r.dataLen-3] ^= 0x01
				put(t, b, r.pos, v)
			case r.stream == "profile-@old:example.com" && r.revision == 3:
				firstChained = r
			case r.typ == integrity.SealType && sealRec.typ == "":
				sealRec = r
			}
		}
	})
	// Legacy events carry no hash of their own: a change shows at the
	// first chained event of their stream, or, in a stream without one,
	// at the genesis seal that commits to the stream's virtual chain.
	expectBreaks(t, l.verify(t, nil), at(integrity.BrokenLink, firstChained), at(integrity.BadRoot, sealRec))
}

func TestUnchainedEventAfterGenesisIsReported(t *testing.T) {
	l := history(t)
	legacy(t, l, "@u1:example.com", 1)
	recs, err := l.store.ReadStream(context.Background(), "profile-@u1:example.com", ^uint64(0), eventstore.Backwards, 1)
	if err != nil {
		t.Fatal(err)
	}
	r := l.verify(t, nil)
	expectBreaks(t, r, integrity.Break{Kind: integrity.Unchained, Stream: recs[0].Stream, Revision: recs[0].Revision, Position: recs[0].Position.String()})
}

func TestDeletedSealIsReported(t *testing.T) {
	l := history(t)
	var next record
	l = l.tamper(t, func(t *testing.T, b *bbolt.Bucket, recs []record) {
		n := 0
		for _, r := range recs {
			if r.typ != integrity.SealType {
				continue
			}
			n++
			if n == 2 {
				if err := b.Delete(key(r.pos)); err != nil {
					t.Fatal(err)
				}
			}
			if n == 3 {
				next = r
			}
		}
	})
	r := l.verify(t, nil)
	expectBreaks(t, r, at(integrity.Missing, next))
	if r.LastSeal != nil && r.LastSeal.Seq != 1 {
		t.Fatalf("a seal after the gap counts as verified: %+v", r.LastSeal)
	}
}

func TestSinceStartsAtASeal(t *testing.T) {
	l := history(t)
	l.setName(t, "@u0:example.com", "after seal 3")
	keys := []ed25519.PublicKey{l.key.Public().(ed25519.PublicKey)}
	r, err := integrity.VerifyStore(context.Background(), l.store, keys, 2, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !r.OK() || r.LastSeal == nil || r.LastSeal.Seq != 3 || r.Unsealed != 1 {
		t.Fatalf("--since 2: last %+v, unsealed %d\n%s", r.LastSeal, r.Unsealed, breaks(r))
	}
	full := l.verify(t, nil)
	if r.Events >= full.Events {
		t.Fatalf("--since 2 read %d events, the whole log has %d", r.Events, full.Events)
	}
	if _, err := integrity.VerifyStore(context.Background(), l.store, keys, 9, nil, nil); err == nil {
		t.Fatal("--since a seal that does not exist was accepted")
	}
}

func TestWriterSealsOnScheduleAndAfterRestart(t *testing.T) {
	l := openLog(t, t.TempDir(), newKey(t))
	ctx, cancel := context.WithCancel(context.Background())
	w := integrity.NewWriter(l.store, integrity.WriterOptions{Key: l.key, Every: 4, Interval: time.Hour})
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	for i := 0; i < 9; i++ {
		l.setName(t, fmt.Sprintf("@w%d:example.com", i%3), fmt.Sprintf("name %d", i))
	}
	waitSeal(t, w, 2) // after 4 and 8 events
	cancel()
	<-done

	// A new writer (a restart) seals by time what the first left over.
	ctx, cancel = context.WithCancel(context.Background())
	defer cancel()
	w = integrity.NewWriter(l.store, integrity.WriterOptions{Key: l.key, Every: 1000, Interval: 20 * time.Millisecond})
	go func() { done <- w.Run(ctx) }()
	waitSeal(t, w, 3)
	r := l.verify(t, nil)
	if !r.OK() || r.LastSeal == nil || r.LastSeal.Seq != 3 || r.Unsealed != 0 {
		t.Fatalf("after a restart: last %+v, unsealed %d\n%s", r.LastSeal, r.Unsealed, breaks(r))
	}
	cancel()
	<-done
}

func waitSeal(t *testing.T, w *integrity.Writer, seq uint64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if s := w.Latest(); s != nil && s.Seq >= seq {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no seal %d after 10 s (latest %+v)", seq, w.Latest())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestProofsCheckOfflineWithThePublicKey(t *testing.T) {
	l := openLog(t, t.TempDir(), newKey(t))
	legacy(t, l, "@old:example.com", 2)
	var positions []eventstore.Position
	for w := 0; w < 3; w++ {
		for u := 0; u < 5; u++ {
			positions = append(positions, l.setName(t, fmt.Sprintf("@p%d:example.com", u), fmt.Sprintf("name %d %d", w, u)))
		}
		l.seal(t)
	}
	pub := []ed25519.PublicKey{l.key.Public().(ed25519.PublicKey)}
	ctx := context.Background()
	oldest := eventstore.Position{Commit: 1, Prepare: 1} // a legacy event, in the genesis window
	for _, p := range append([]eventstore.Position{oldest}, positions...) {
		pr, err := integrity.Prove(ctx, l.store, p)
		if err != nil {
			t.Fatalf("prove %s: %v", p, err)
		}
		// What a third party receives: JSON.
		b, _ := json.Marshal(pr)
		var got integrity.Proof
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatal(err)
		}
		if err := integrity.VerifyProof(&got, pub); err != nil {
			t.Fatalf("proof of %s: %v", p, err)
		}
		if got.Event.Position != p.String() {
			t.Fatalf("proof of %s is about %s", p, got.Event.Position)
		}
	}

	pr, err := integrity.Prove(ctx, l.store, positions[6])
	if err != nil {
		t.Fatal(err)
	}
	for name, spoil := range map[string]func(p *integrity.Proof){
		"a changed payload":     func(p *integrity.Proof) { p.Event.Data[len(p.Event.Data)-5] ^= 1 },
		"another event's place": func(p *integrity.Proof) { p.Event.Revision++ },
		"a changed root":        func(p *integrity.Proof) { p.Seal.Root[0] ^= 1 },
		"a changed path":        func(p *integrity.Proof) { p.Path[0][0] ^= 1 },
		"a later seal time":     func(p *integrity.Proof) { p.Seal.SealedAt = p.Seal.SealedAt.Add(time.Hour) },
		"re-signed by a forger": func(p *integrity.Proof) { p.Seal.Sign(newKey(t)) },
		"a wrong leaf index":    func(p *integrity.Proof) { p.LeafIndex = (p.LeafIndex + 1) % p.Seal.Streams },
		"the event's successor removed": func(p *integrity.Proof) {
			if len(p.Chain) == 0 {
				p.Event.Metadata[len(p.Event.Metadata)-3] ^= 1
				return
			}
			p.Chain = p.Chain[:len(p.Chain)-1]
		},
	} {
		t.Run(name, func(t *testing.T) {
			b, _ := json.Marshal(pr)
			var p integrity.Proof
			if err := json.Unmarshal(b, &p); err != nil {
				t.Fatal(err)
			}
			spoil(&p)
			if err := integrity.VerifyProof(&p, pub); err == nil {
				t.Fatal("a spoiled proof verified")
			}
		})
	}

	unsealed := l.setName(t, "@p0:example.com", "not sealed yet")
	if _, err := integrity.Prove(ctx, l.store, unsealed); !errors.Is(err, integrity.ErrNotSealed) {
		t.Fatalf("proof of an unsealed event: %v", err)
	}
	if _, err := integrity.Prove(ctx, l.store, eventstore.Position{Commit: 10_000, Prepare: 10_000}); !errors.Is(err, integrity.ErrNoEvent) {
		t.Fatalf("proof of no event: %v", err)
	}
}

// TestWitnessCopyExposesARewrittenSeal: a log rewritten and re-signed by
// whoever holds the key verifies on its own; the seal a witness copied
// earlier does not match it.
func TestWitnessCopyExposesARewrittenSeal(t *testing.T) {
	l := history(t)
	ctx := context.Background()
	kept, rec, err := integrity.FindSeal(ctx, l.store, 2)
	if err != nil {
		t.Fatal(err)
	}
	kept.Root[0] ^= 1 // the log's seal 2 is not what the witness saw
	r := l.verify(t, &kept)
	expectBreaks(t, r, integrity.Break{Kind: integrity.ForgedSeal, Stream: integrity.SealStream, Revision: rec.Revision, Position: rec.Position.String()})
}

// TestConcurrentWritesChainAndVerify: many clients on one user (the command
// side batches their events into shared appends and retries conflicts) and
// on their own users, with the seal writer running: every link holds.
func TestConcurrentWritesChainAndVerify(t *testing.T) {
	l := openLog(t, t.TempDir(), newKey(t))
	ctx, cancel := context.WithCancel(context.Background())
	w := integrity.NewWriter(l.store, integrity.WriterOptions{Key: l.key, Every: 25, Interval: time.Hour})
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	// A second service on the same store: its cached aggregates go stale,
	// so its appends meet wrong expected revisions and retry.
	other := domain.NewProfileService(l.store, domain.NewSealer(l.keys), domain.DefaultPolicy)
	errs := make(chan error, 32)
	for c := 0; c < 32; c++ {
		go func(c int) {
			svc := l.profiles
			if c%4 == 0 {
				svc = other
			}
			for i := 0; i < 10; i++ {
				user := domain.UserID("@busy:example.com")
				if c%2 == 1 {
					user = domain.UserID(fmt.Sprintf("@c%d:example.com", c))
				}
				v, _ := json.Marshal(fmt.Sprintf("client %d name %d", c, i))
				cmd := domain.SetField{User: user, Actor: domain.ServerActor, Key: "displayname", Value: v, Meta: domain.Metadata{OccurredAt: time.Now()}}
				_, err := svc.SetField(context.Background(), cmd, nil)
				// The services' own retries can run out in a contest this
				// one-sided; a client would try again, and so does this one.
				for try := 0; errors.Is(err, eventstore.ErrWrongExpectedRevision) && try < 100; try++ {
					_, err = svc.SetField(context.Background(), cmd, nil)
				}
				if err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}(c)
	}
	for c := 0; c < 32; c++ {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	waitSeal(t, w, 2)
	cancel()
	<-done
	l.seal(t)
	r := l.verify(t, nil)
	if !r.OK() || r.Events < 320 || r.Unsealed != 0 {
		t.Fatalf("after concurrent writes: %d events, %d unsealed\n%s", r.Events, r.Unsealed, breaks(r))
	}
}

func TestNoProofOutsideTheChainedHistory(t *testing.T) {
	l := history(t)
	res, err := l.store.Append(context.Background(), "astxn-bridge", eventstore.Any,
		[]eventstore.EventData{{ID: uuid.New(), Type: "appservice.transaction_done", Data: []byte(`{}`), Metadata: []byte(`{}`)}})
	if err != nil {
		t.Fatal(err)
	}
	l.seal(t)
	if _, err := integrity.Prove(context.Background(), l.store, res.Position); !errors.Is(err, integrity.ErrNotChained) {
		t.Fatalf("proof of a ledger event: %v", err)
	}
	if r := l.verify(t, nil); !r.OK() {
		t.Fatalf("a ledger event after the genesis seal is reported:\n%s", breaks(r))
	}
}
