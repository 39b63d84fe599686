package domain

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/profilestore/profilestore/eventstore"
	"github.com/profilestore/profilestore/eventstore/integrity"
)

// folder is the state of one stream that events fold into (Profile, Room).
type folder[S any] interface {
	*S
	Apply(e *Event)
}

// aggregate is one stream's state as a command service caches it: loaded
// on first use, folded forward, and guarded by its own lock so commands on
// one stream run one at a time on this instance.
type aggregate[S any] struct {
	mu       sync.Mutex
	loaded   bool
	state    S
	revision uint64
	exists   bool
	position eventstore.Position
	// lastType is the type of the last event folded.
	lastType string
	// head is the chain hash of the stream's last event (integrity.Zero
	// for no stream): what the next append links to.
	head integrity.Hash
}

func (a *aggregate[S]) result(changed bool) WriteResult {
	return WriteResult{Changed: changed, Position: a.position, Revision: a.revision, Exists: a.exists}
}

// streams runs commands against cached aggregates: decide on the cached
// state, append with its revision as the expected revision, and on conflict
// read the stream's tail and decide again.
type streams[S any, P folder[S]] struct {
	store  eventstore.Store
	sealer *Sealer

	mu   sync.Mutex
	byID map[string]*aggregate[S]
}

func newStreams[S any, P folder[S]](store eventstore.Store, sealer *Sealer) *streams[S, P] {
	return &streams[S, P]{store: store, sealer: sealer, byID: make(map[string]*aggregate[S])}
}

// get returns the aggregate of a stream, creating an empty, unloaded one.
func (c *streams[S, P]) get(stream string) *aggregate[S] {
	c.mu.Lock()
	defer c.mu.Unlock()
	agg := c.byID[stream]
	if agg == nil {
		agg = &aggregate[S]{}
		c.byID[stream] = agg
	}
	return agg
}

// load folds the stream into a locked aggregate the first time it is used.
// A cached aggregate is not re-read: if another writer moved the stream on,
// the next append's expected revision fails and the tail is read then.
func (c *streams[S, P]) load(ctx context.Context, stream string, agg *aggregate[S]) error {
	if agg.loaded {
		return nil
	}
	return c.catchUp(ctx, stream, agg)
}

// catchUp folds the events of the stream the aggregate has not seen.
func (c *streams[S, P]) catchUp(ctx context.Context, stream string, agg *aggregate[S]) error {
	const page = 512
	for {
		from := uint64(0)
		if agg.exists {
			from = agg.revision + 1
		}
		recs, err := c.store.ReadStream(ctx, stream, from, eventstore.Forwards, page)
		if err != nil {
			return fmt.Errorf("read %s: %w", stream, err)
		}
		for _, rec := range recs {
			e, err := Decode(ctx, c.sealer, rec)
			if err != nil {
				return err
			}
			P(&agg.state).Apply(&e)
			agg.lastType = e.Type
			agg.head = integrity.HeadOf(&rec, agg.head)
			agg.revision, agg.exists, agg.position = rec.Revision, true, rec.Position
		}
		agg.loaded = true
		if len(recs) < page {
			return nil
		}
	}
}

// run decides and appends on a locked, loaded aggregate. check, if set, runs
// before each decision (preconditions); a decision of no events appends
// nothing. Events get ids derived from idemKey when there is one.
func (c *streams[S, P]) run(ctx context.Context, stream, idemKey string, agg *aggregate[S], check func(*aggregate[S]) error, decide func(*S) ([]Event, error)) (WriteResult, error) {
	for attempt := 0; ; attempt++ {
		if check != nil {
			if err := check(agg); err != nil {
				return WriteResult{}, err
			}
		}
		events, err := decide(&agg.state)
		if err != nil {
			return WriteResult{}, err
		}
		if len(events) == 0 {
			return agg.result(false), nil
		}
		data := make([]eventstore.EventData, len(events))
		for i := range events {
			if idemKey != "" {
				events[i].ID = EventID(idemKey, i)
			}
			if data[i], err = Encode(ctx, c.sealer, &events[i]); err != nil {
				return WriteResult{}, err
			}
		}
		expected := eventstore.ExpectRevision(agg.revision, agg.exists)
		head, err := chainEvents(stream, expected, agg.head, data)
		if err != nil {
			return WriteResult{}, err
		}
		res, err := c.store.Append(ctx, stream, expected, data)
		if errors.Is(err, eventstore.ErrWrongExpectedRevision) && attempt < maxConflictRetries {
			if err := c.catchUp(ctx, stream, agg); err != nil {
				return WriteResult{}, err
			}
			continue
		}
		if err != nil {
			return WriteResult{}, fmt.Errorf("append to %s: %w", stream, err)
		}
		want := uint64(len(events) - 1)
		if agg.exists {
			want = agg.revision + uint64(len(events))
		}
		if res.Revision != want {
			// An idempotent re-append answered with an older result: the
			// stream moved on since; read it instead of guessing.
			if err := c.catchUp(ctx, stream, agg); err != nil {
				return WriteResult{}, err
			}
			return WriteResult{Position: res.Position, Revision: agg.revision, Exists: agg.exists}, nil
		}
		for i := range events {
			// Folds may remember where an event landed (Profile.AllAt,
			// Room.OverrideAt); the append reports only its last position,
			// and no other stream's event lies between its events.
			events[i].Position = res.Position
			P(&agg.state).Apply(&events[i])
			agg.lastType = events[i].Type
		}
		agg.revision, agg.exists, agg.position, agg.head = res.Revision, true, res.Position, head
		return agg.result(true), nil
	}
}
