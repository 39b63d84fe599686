package integrity

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"sort"

	"github.com/google/uuid"

	"github.com/profilestore/profilestore/eventstore"
)

// ProofEvent is an event in a proof, with its data and metadata byte for
// byte as stored (base64 in JSON), because the hash covers those bytes.
type ProofEvent struct {
	Position string    `json:"position"`
	Stream   string    `json:"stream"`
	Revision uint64    `json:"revision"`
	ID       uuid.UUID `json:"event_id"`
	Type     string    `json:"type"`
	Data     []byte    `json:"data"`
	Metadata []byte    `json:"metadata"`
}

func proofEvent(rec *eventstore.RecordedEvent) ProofEvent {
	return ProofEvent{Position: rec.Position.String(), Stream: rec.Stream, Revision: rec.Revision, ID: rec.ID,
		Type: rec.Type, Data: rec.Data, Metadata: rec.Metadata}
}

func (e *ProofEvent) recorded() eventstore.RecordedEvent {
	return eventstore.RecordedEvent{EventData: eventstore.EventData{ID: e.ID, Type: e.Type, Data: e.Data, Metadata: e.Metadata},
		Stream: e.Stream, Revision: e.Revision}
}

// Proof ties one event to a signed seal: the event, the later events of
// its stream up to the stream's head in the seal's window, the head's
// Merkle audit path and the seal. VerifyProof checks it with only the
// seal's public key.
type Proof struct {
	Event ProofEvent `json:"event"`
	// Prev is the hash the event links to; only needed (and only used) for
	// an event written before chaining, whose metadata does not hold it.
	Prev  Hash         `json:"prev"`
	Chain []ProofEvent `json:"chain"`
	// LeafIndex and Path locate the stream's head in the seal's tree.
	LeafIndex uint64   `json:"leaf_index"`
	Path      [][]byte `json:"path"`
	Seal      Seal     `json:"seal"`
	// SealPosition is where the seal is in the log that produced the proof.
	SealPosition string `json:"seal_position"`
}

// ErrNotSealed is returned (wrapped) by Prove for an event that no seal
// covers yet.
var ErrNotSealed = errors.New("integrity: no seal covers the event yet")

// ErrNotChained is returned (wrapped) by Prove for an event outside the
// chained history (the appservice transaction ledger): no seal covers it.
var ErrNotChained = errors.New("integrity: the event is not part of the chained history")

// ErrNoEvent is returned (wrapped) by Prove when no event is at the position.
var ErrNoEvent = errors.New("integrity: no event at that position")

// justBefore is a position after every event before p and before p.
func justBefore(p eventstore.Position) eventstore.Position {
	switch {
	case p.Prepare > 0:
		return eventstore.Position{Commit: p.Commit, Prepare: p.Prepare - 1}
	case p.Commit > 0:
		return eventstore.Position{Commit: p.Commit - 1, Prepare: ^uint64(0)}
	}
	return eventstore.Start
}

// Prove builds the proof of the event at position p from the store.
func Prove(ctx context.Context, store eventstore.Store, p eventstore.Position) (Proof, error) {
	recs, err := store.ReadAll(ctx, justBefore(p), 1)
	if err != nil {
		return Proof{}, err
	}
	if len(recs) == 0 || recs[0].Position != p {
		return Proof{}, fmt.Errorf("%w %s", ErrNoEvent, p)
	}
	rec := recs[0]
	if !Covered(rec.Stream) {
		return Proof{}, fmt.Errorf("%w: stream %s", ErrNotChained, rec.Stream)
	}
	// The covering seal is the first whose last event is at or after p;
	// seals' windows move forwards, so search by halves over the seal stream.
	latest, latestRec, found, err := LatestSeal(ctx, store)
	if err != nil {
		return Proof{}, err
	}
	if !found {
		return Proof{}, ErrNotSealed
	}
	throughPos := func(rev uint64) (Seal, eventstore.Position, eventstore.RecordedEvent, error) {
		srec, err := readOne(ctx, store, SealStream, rev)
		if err != nil {
			return Seal{}, eventstore.Position{}, srec, err
		}
		s, err := ParseSeal(srec.Data)
		if err != nil {
			return s, eventstore.Position{}, srec, err
		}
		t, err := readOne(ctx, store, s.Through.Stream, s.Through.Revision)
		return s, t.Position, srec, err
	}
	if _, last, _, err := throughPos(latestRec.Revision); err != nil {
		return Proof{}, err
	} else if last.Before(p) {
		return Proof{}, fmt.Errorf("%w (the latest seal, %d, ends before %s)", ErrNotSealed, latest.Seq, p)
	}
	var searchErr error
	lo := uint64(sort.Search(int(latestRec.Revision), func(i int) bool {
		_, pos, _, err := throughPos(uint64(i))
		if err != nil {
			searchErr = err
			return true
		}
		return !pos.Before(p)
	}))
	if searchErr != nil {
		return Proof{}, searchErr
	}
	seal, end, sealRec, err := throughPos(lo)
	if err != nil {
		return Proof{}, err
	}
	start := eventstore.Start
	if lo > 0 {
		if _, start, _, err = throughPos(lo - 1); err != nil {
			return Proof{}, err
		}
	}
	// Read the window: every stream's head, and the event's stream from the
	// event on.
	heads := make(map[string]Head)
	var last map[string]Hash
	if lo == 0 {
		last = make(map[string]Hash) // the genesis window: virtual chains
	}
	pr := Proof{Event: proofEvent(&rec), Seal: seal, SealPosition: sealRec.Position.String()}
	after := start
	seen := false
	for after.Before(end) {
		batch, err := store.ReadAll(ctx, after, 4096)
		if err != nil {
			return Proof{}, err
		}
		if len(batch) == 0 {
			break
		}
		for i := range batch {
			r := &batch[i]
			if end.Before(r.Position) {
				after = end
				break
			}
			after = r.Position
			if !Covered(r.Stream) {
				continue
			}
			var prev Hash
			if last != nil {
				prev = last[r.Stream]
			}
			h := HeadOf(r, prev)
			if last != nil {
				last[r.Stream] = h
			}
			heads[r.Stream] = Head{Stream: r.Stream, Revision: r.Revision, Hash: h}
			switch {
			case r.Position == p:
				pr.Prev, seen = prev, true
			case seen && r.Stream == rec.Stream:
				pr.Chain = append(pr.Chain, proofEvent(r))
			}
		}
	}
	if !seen {
		return Proof{}, fmt.Errorf("integrity: the event at %s is not in seal %d's window", p, seal.Seq)
	}
	if lo > 0 {
		// Outside the genesis window every covered event holds its prev_hash.
		pr.Prev = Zero
	}
	list := make([]Head, 0, len(heads))
	for _, h := range heads {
		list = append(list, h)
	}
	SortHeads(list)
	tree, err := NewTree(list)
	if err != nil {
		return Proof{}, err
	}
	idx, _ := tree.Index(rec.Stream)
	if pr.Path, err = tree.InclusionPath(idx); err != nil {
		return Proof{}, err
	}
	pr.LeafIndex = idx
	return pr, nil
}

// VerifyProof checks a proof with the seal's public key (any of keys): the
// event hashes as stored, each later event links to the one before, the
// last one is the head in the seal's tree, and the seal is signed. It
// returns nil only if all of it holds.
func VerifyProof(pr *Proof, keys []ed25519.PublicKey) error {
	rec := pr.Event.recorded()
	h, link, err := Recompute(&rec, pr.Prev)
	if err != nil {
		return err
	}
	if link.Chained && h != link.Hash {
		return fmt.Errorf("integrity: the event's bytes hash to %s, its event_hash says %s", h, link.Hash)
	}
	rev := rec.Revision
	for i := range pr.Chain {
		e := pr.Chain[i].recorded()
		if e.Stream != rec.Stream || e.Revision != rev+1 {
			return fmt.Errorf("integrity: chain event %d is %s revision %d, not %s revision %d", i, e.Stream, e.Revision, rec.Stream, rev+1)
		}
		next, l, err := Recompute(&e, h)
		if err != nil {
			return err
		}
		if l.Chained && (l.Prev != h || next != l.Hash) {
			return fmt.Errorf("integrity: chain event at revision %d does not link to or hash as stored", e.Revision)
		}
		h, rev = next, e.Revision
	}
	if err := pr.Seal.VerifySignature(keys); err != nil {
		return err
	}
	return VerifyInclusion(Head{Stream: rec.Stream, Revision: rev, Hash: h}, pr.LeafIndex, pr.Seal.Streams, pr.Path, pr.Seal.Root)
}
