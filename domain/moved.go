package domain

import (
	"context"
	"encoding/json"
	"fmt"
	"math"

	"github.com/google/uuid"

	"github.com/profilestore/profilestore/eventstore"
	"github.com/profilestore/profilestore/eventstore/integrity"
)

// An import into a new store keeps every byte of every event, because the
// hash chains and seals cover them (docs/INTEGRITY.md). A
// profile.entry_hidden event names the hidden entry by its position in the
// log it was written to; when the new store's positions differ (EventStoreDB
// and the embedded store, or an export that leaves events out), the import
// records where each such entry is now in a log.hides_moved event instead of
// rewriting the hide. Every reader decodes hides through that record (the
// Sealer carries it), and the record is itself chained and sealed.
const (
	// MovedHidesStream holds the log.hides_moved events; "log-" streams
	// are chained and sealed and never read by the views.
	MovedHidesStream = "log-imports"
	TypeHidesMoved   = "log.hides_moved"
)

// movedHidesPerEvent bounds one log.hides_moved event (about 100 bytes an
// entry, far below the store's event size limit).
const movedHidesPerEvent = 10_000

// MovedHide says that the hide at Stream, Revision (in this store) hides the
// entry at Position (in this store). NoEntry: the entry is not in this store
// (an export that left it out), so the hide hides nothing here.
type MovedHide struct {
	Stream   string
	Revision uint64
	Position eventstore.Position
}

// NoEntry is the position of an entry that is not in the store.
var NoEntry = eventstore.Position{Commit: math.MaxUint64, Prepare: math.MaxUint64}

type movedHideJSON struct {
	Stream   string `json:"stream"`
	Revision uint64 `json:"revision"`
	Position string `json:"position"`
}

type hidesMovedPayload struct {
	V     int             `json:"v"`
	Hides []movedHideJSON `json:"hides"`
}

type movedKey struct {
	stream   string
	revision uint64
}

// ParseHidesMoved reads the payload of a log.hides_moved event.
func ParseHidesMoved(data []byte) ([]MovedHide, error) {
	var p hidesMovedPayload
	if err := json.Unmarshal(data, &p); err != nil {
		return nil, fmt.Errorf("%s: %w", TypeHidesMoved, err)
	}
	out := make([]MovedHide, len(p.Hides))
	for i, h := range p.Hides {
		pos, err := eventstore.ParsePosition(h.Position)
		if err != nil || h.Stream == "" {
			return nil, fmt.Errorf("%s: entry %d: stream %q, position %q", TypeHidesMoved, i, h.Stream, h.Position)
		}
		out[i] = MovedHide{Stream: h.Stream, Revision: h.Revision, Position: pos}
	}
	return out, nil
}

// AppendMovedHides appends moved as log.hides_moved events, chained to the
// stream's last event, in events of at most movedHidesPerEvent entries.
func AppendMovedHides(ctx context.Context, store eventstore.Store, moved []MovedHide) error {
	for len(moved) > 0 {
		n := min(len(moved), movedHidesPerEvent)
		p := hidesMovedPayload{V: SchemaVersion, Hides: make([]movedHideJSON, n)}
		for i, m := range moved[:n] {
			p.Hides[i] = movedHideJSON{Stream: m.Stream, Revision: m.Revision, Position: m.Position.String()}
		}
		data, err := json.Marshal(p)
		if err != nil {
			return err
		}
		last, err := store.ReadStream(ctx, MovedHidesStream, math.MaxUint64, eventstore.Backwards, 1)
		if err != nil {
			return err
		}
		expected, prev := eventstore.NoStream, integrity.Zero
		if len(last) == 1 {
			expected = eventstore.Exact(last[0].Revision)
			prev = integrity.HeadOf(&last[0], integrity.Zero)
		}
		events := []eventstore.EventData{{ID: uuid.New(), Type: TypeHidesMoved, Data: data, Metadata: []byte("{}")}}
		if _, err := chainEvents(MovedHidesStream, expected, prev, events); err != nil {
			return err
		}
		if _, err := store.Append(ctx, MovedHidesStream, expected, events); err != nil {
			return fmt.Errorf("append %s: %w", TypeHidesMoved, err)
		}
		moved = moved[n:]
	}
	return nil
}

// LoadMovedHides reads the store's log.hides_moved events (later ones win)
// into the Sealer, through which every reader decodes hides.
func LoadMovedHides(ctx context.Context, store eventstore.Store, s *Sealer) error {
	moved := make(map[movedKey]eventstore.Position)
	for from := uint64(0); ; {
		recs, err := store.ReadStream(ctx, MovedHidesStream, from, eventstore.Forwards, 64)
		if err != nil {
			return err
		}
		for _, rec := range recs {
			if rec.Type != TypeHidesMoved {
				continue
			}
			list, err := ParseHidesMoved(rec.Data)
			if err != nil {
				return fmt.Errorf("%s revision %d: %w", MovedHidesStream, rec.Revision, err)
			}
			for _, m := range list {
				moved[movedKey{m.Stream, m.Revision}] = m.Position
			}
		}
		if len(recs) < 64 {
			break
		}
		from = recs[len(recs)-1].Revision + 1
	}
	s.mu.Lock()
	s.moved = moved
	s.mu.Unlock()
	return nil
}

// movedHide returns where the entry the hide at stream, revision hides is
// now, if an import moved it.
func (s *Sealer) movedHide(stream string, revision uint64) (eventstore.Position, bool) {
	if s == nil {
		return eventstore.Position{}, false
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	p, ok := s.moved[movedKey{stream, revision}]
	return p, ok
}
