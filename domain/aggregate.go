package domain

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"sync/atomic"

	"github.com/profilestore/profilestore/eventstore"
	"github.com/profilestore/profilestore/eventstore/integrity"
)

// folder is the state of one stream that events fold into (Profile, Room).
type folder[S any] interface {
	*S
	Apply(e *Event)
	// settle replaces the provisional position a batch folded e with (see
	// provisional) by the position the store gave it.
	settle(e *Event, provisional, actual eventstore.Position)
}

// aggregate is one stream's state as a command service holds it: loaded on
// first use, folded forward, and guarded by its own lock so commands on one
// stream are decided one at a time on this instance.
type aggregate[S any] struct {
	// mu is held by the goroutine deciding and appending for the stream.
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

	// queue holds the commands waiting for mu; whoever takes mu decides
	// them all and appends their events together (see streams.submit).
	qmu   sync.Mutex
	queue []*command[S]

	// refs counts the callers using the aggregate (guarded by streams.mu):
	// an aggregate in use stays the stream's one aggregate even if the
	// cache evicts it meanwhile.
	refs int
}

func (a *aggregate[S]) result(changed bool) WriteResult {
	return WriteResult{Changed: changed, Position: a.position, Revision: a.revision, Exists: a.exists}
}

// reset forgets the state, so the next load reads the stream from the start.
func (a *aggregate[S]) reset() {
	var zero S
	a.state, a.loaded, a.revision, a.exists, a.position, a.lastType, a.head = zero, false, 0, false, eventstore.Start, "", integrity.Zero
}

// command is one caller's command waiting in an aggregate's queue.
type command[S any] struct {
	ctx     context.Context
	idemKey string
	// check, if set, runs before each decision (a precondition).
	check  func(*aggregate[S]) error
	decide func(*S) ([]Event, error)

	// Set by whoever decided it, under the aggregate's mu.
	done bool
	res  WriteResult
	err  error
}

// maxCommandBatch bounds the commands decided together into one append.
const maxCommandBatch = 256

// streams runs commands against cached aggregates: decide on the cached
// state, append with its revision as the expected revision, and on conflict
// read the stream's tail and decide again. The cache holds at most its
// configured number of aggregates and evicts the least recently used; a
// miss folds the stream from the store.
type streams[S any, P folder[S]] struct {
	store  eventstore.Store
	sealer *Sealer

	mu    sync.Mutex
	cache *aggregateCache[S]
	inUse map[string]*aggregate[S]
}

func newStreams[S any, P folder[S]](store eventstore.Store, sealer *Sealer, cacheSize int) *streams[S, P] {
	return &streams[S, P]{store: store, sealer: sealer, cache: newAggregateCache[S](cacheSize), inUse: make(map[string]*aggregate[S])}
}

// acquire returns the stream's aggregate, from the cache or new and
// unloaded; release it when done.
func (c *streams[S, P]) acquire(stream string) *aggregate[S] {
	c.mu.Lock()
	defer c.mu.Unlock()
	agg := c.inUse[stream]
	if agg == nil {
		agg = c.cache.peek(stream)
	}
	if agg == nil {
		c.cache.misses.Add(1)
		agg = &aggregate[S]{}
	} else {
		c.cache.hits.Add(1)
	}
	// (Re-)adding marks it recently used, and puts back one the cache
	// evicted while it was in use.
	c.cache.add(stream, agg)
	agg.refs++
	c.inUse[stream] = agg
	return agg
}

func (c *streams[S, P]) release(stream string, agg *aggregate[S]) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if agg.refs--; agg.refs == 0 {
		delete(c.inUse, stream)
	}
}

// stats reports the cache's figures.
func (c *streams[S, P]) stats() CacheStats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cache.stats()
}

// locked runs f with the stream's aggregate locked and loaded, outside any
// batch (reads, erasure).
func (c *streams[S, P]) locked(ctx context.Context, stream string, f func(agg *aggregate[S]) error) error {
	agg := c.acquire(stream)
	defer c.release(stream, agg)
	agg.mu.Lock()
	defer agg.mu.Unlock()
	if err := c.load(ctx, stream, agg); err != nil {
		return err
	}
	return f(agg)
}

// submit runs one command. Commands that arrive while another goroutine
// holds the stream's aggregate queue up; the next goroutine to take the lock
// decides every queued command one after another on the same state and
// appends their events together with one expected revision, so concurrent
// writers of one stream share an append (and its fsync) instead of waiting
// for one each. Each caller gets its own result.
func (c *streams[S, P]) submit(ctx context.Context, stream string, cmd *command[S]) (WriteResult, error) {
	cmd.ctx = ctx
	agg := c.acquire(stream)
	defer c.release(stream, agg)
	agg.qmu.Lock()
	agg.queue = append(agg.queue, cmd)
	agg.qmu.Unlock()

	agg.mu.Lock()
	defer agg.mu.Unlock()
	if cmd.done { // an earlier holder of the lock decided it
		return cmd.res, cmd.err
	}
	agg.qmu.Lock()
	n := min(len(agg.queue), maxCommandBatch)
	batch := append([]*command[S](nil), agg.queue[:n]...)
	// Commands past the cap stay queued; their callers wait for mu and
	// decide them next.
	agg.queue = append(agg.queue[:0:0], agg.queue[n:]...)
	agg.qmu.Unlock()
	c.runQueued(stream, agg, batch)
	return cmd.res, cmd.err
}

// runQueued decides and appends the queued commands in order. A run of
// commands without preconditions and with distinct idempotency keys shares
// one append; a command with a precondition runs alone (its condition is on
// the state the commands before it left), and so does the second of two
// commands with one idempotency key (the store deduplicates appends, not
// events within one append).
func (c *streams[S, P]) runQueued(stream string, agg *aggregate[S], batch []*command[S]) {
	for len(batch) > 0 {
		n := 1
		if batch[0].check == nil {
			keys := map[string]bool{batch[0].idemKey: true}
			for n < len(batch) && batch[n].check == nil && (batch[n].idemKey == "" || !keys[batch[n].idemKey]) {
				keys[batch[n].idemKey] = true
				n++
			}
		}
		group := batch[:n]
		batch = batch[n:]
		if n == 1 {
			c.runAlone(stream, agg, group[0])
			continue
		}
		c.runTogether(stream, agg, group)
	}
}

// runAlone runs one command with its own retries on conflict.
func (c *streams[S, P]) runAlone(stream string, agg *aggregate[S], cmd *command[S]) {
	defer func() { cmd.done = true }()
	if err := c.load(cmd.ctx, stream, agg); err != nil {
		cmd.err = err
		return
	}
	cmd.res, cmd.err = c.run(cmd.ctx, stream, cmd.idemKey, agg, cmd.check, cmd.decide)
}

// runTogether decides the commands one after another on the aggregate's
// state and appends all their events in one append. A decision that fails
// answers its own caller only. If the append fails for any reason (another
// writer moved the stream, an idempotent retry met events already stored,
// the store failed), the state is read again and each command runs alone, so
// every caller gets exactly the answer it would have got without batching.
func (c *streams[S, P]) runTogether(stream string, agg *aggregate[S], group []*command[S]) {
	live := group[:0:0]
	for _, cmd := range group {
		if err := cmd.ctx.Err(); err != nil {
			cmd.err, cmd.done = err, true
			continue
		}
		live = append(live, cmd)
	}
	if len(live) == 0 {
		return
	}
	ctx, stop := whileAnyWaits(live)
	defer stop()
	if err := c.load(ctx, stream, agg); err != nil {
		for _, cmd := range live {
			cmd.err, cmd.done = err, true
		}
		return
	}

	// Decide on the cached state, folding each command's events before the
	// next decision. Their positions are not known yet: they fold with
	// provisional ones, after every stored position (so per-room overrides
	// of this batch are newer than any global change a command knows of),
	// and settle once the append reports where they landed.
	baseRev, baseExists, basePos := agg.revision, agg.exists, agg.position
	type decided struct {
		cmd    *command[S]
		last   int // index in pending of its last event; -1: none, -2: its decision failed
		before int // index in pending of the last event before it; -1: none
	}
	var pending []Event
	var data []eventstore.EventData
	ds := make([]decided, 0, len(live))
	failed := false
	for _, cmd := range live {
		d := decided{cmd: cmd, last: -1, before: len(pending) - 1}
		events, err := cmd.decide(&agg.state)
		if err != nil {
			cmd.err, cmd.done, d.last = err, true, -2
			ds = append(ds, d)
			continue
		}
		for i := range events {
			if cmd.idemKey != "" {
				events[i].ID = EventID(cmd.idemKey, i)
			}
			ed, err := Encode(ctx, c.sealer, &events[i])
			if err != nil {
				failed = true
				break
			}
			data = append(data, ed)
			events[i].Position = provisional(len(pending))
			P(&agg.state).Apply(&events[i])
			pending = append(pending, events[i])
		}
		if failed {
			break
		}
		if len(events) > 0 {
			d.last = len(pending) - 1
		}
		ds = append(ds, d)
	}
	if !failed && len(pending) == 0 {
		for _, d := range ds {
			if d.last == -1 {
				d.cmd.res, d.cmd.done = agg.result(false), true
			}
		}
		return
	}
	var recs []eventstore.RecordedEvent
	var head integrity.Hash
	if !failed {
		var err error
		head, err = chainEvents(stream, eventstore.ExpectRevision(baseRev, baseExists), agg.head, data)
		failed = err != nil
	}
	if !failed {
		recs, failed = c.appendBatch(ctx, stream, baseRev, baseExists, data)
	}
	if failed {
		// The state holds events that may not be stored, and decisions
		// (failed ones too) were made on it: read the stream again and
		// decide each command on its own.
		agg.reset()
		for _, cmd := range live {
			cmd.done, cmd.res, cmd.err = false, WriteResult{}, nil
			c.runAlone(stream, agg, cmd)
		}
		return
	}
	for i := range pending {
		P(&agg.state).settle(&pending[i], provisional(i), recs[i].Position)
	}
	last := recs[len(recs)-1]
	agg.revision, agg.exists, agg.position, agg.lastType, agg.head = last.Revision, true, last.Position, pending[len(pending)-1].Type, head
	for _, d := range ds {
		switch {
		case d.last == -2:
			// answered with its decision's error
		case d.last >= 0:
			d.cmd.res = WriteResult{Changed: true, Position: recs[d.last].Position, Revision: recs[d.last].Revision, Exists: true}
		case d.before >= 0:
			d.cmd.res = WriteResult{Position: recs[d.before].Position, Revision: recs[d.before].Revision, Exists: true}
		default:
			d.cmd.res = WriteResult{Position: basePos, Revision: baseRev, Exists: baseExists}
		}
		d.cmd.done = true
	}
}

// appendBatch appends a batch's events with the expected revision the
// aggregate had before it and reads back where each landed (the append
// reports only the last). failed means nothing is known to be written by
// this append: the caller reads the stream again.
func (c *streams[S, P]) appendBatch(ctx context.Context, stream string, baseRev uint64, baseExists bool, data []eventstore.EventData) ([]eventstore.RecordedEvent, bool) {
	res, err := c.store.Append(ctx, stream, eventstore.ExpectRevision(baseRev, baseExists), data)
	if err != nil {
		return nil, true
	}
	first := uint64(0)
	if baseExists {
		first = baseRev + 1
	}
	if res.Revision != first+uint64(len(data))-1 {
		return nil, true // an idempotent re-append of an older batch
	}
	recs, err := c.store.ReadStream(ctx, stream, first, eventstore.Forwards, len(data))
	if err != nil || len(recs) != len(data) {
		return nil, true
	}
	for i := range recs {
		if recs[i].ID != data[i].ID || recs[i].Revision != first+uint64(i) {
			return nil, true
		}
	}
	return recs, false
}

// provisional is the position a batch's i-th event folds with until the
// append reports its own: after every position the store can hold, and
// unique within the batch so that settling replaces exactly its own.
func provisional(i int) eventstore.Position {
	return eventstore.Position{Commit: math.MaxUint64, Prepare: uint64(i)}
}

// whileAnyWaits returns a context for work done on behalf of all the
// commands: it ends when every command's context has ended (each caller's
// own cancellation answers only that caller, once its turn comes).
func whileAnyWaits[S any](cmds []*command[S]) (context.Context, func()) {
	if len(cmds) == 1 {
		return cmds[0].ctx, func() {}
	}
	ctx, cancel := context.WithCancel(context.WithoutCancel(cmds[0].ctx))
	var left atomic.Int64
	left.Store(int64(len(cmds)))
	stops := make([]func() bool, len(cmds))
	for i, cmd := range cmds {
		stops[i] = context.AfterFunc(cmd.ctx, func() {
			if left.Add(-1) == 0 {
				cancel()
			}
		})
	}
	return ctx, func() {
		for _, stop := range stops {
			stop()
		}
		cancel()
	}
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
