// Package projections turns the event log into the views profilestore
// serves. One runner subscribes to the log from its checkpoint and applies
// each event to every view in log order. Views keep their state on disk, in
// a view store (see DB), and every applied batch is committed together with
// the checkpoint, so a restart opens the store and catches up from there.
package projections

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"github.com/profilestore/profilestore/domain"
	"github.com/profilestore/profilestore/eventstore"
	"github.com/profilestore/profilestore/projections/viewstore"
	"github.com/sirupsen/logrus"
)

// View is one projection over the view store.
type View interface {
	// Name identifies the view in logs and metrics.
	Name() string
	// Apply folds one decoded event into tx. Events a view cannot use are
	// skipped; an error is a view store failure.
	Apply(tx viewstore.Txn, e *domain.Event) error
	// Flush writes to tx what the view keeps aside while applying a
	// transaction's events (counters, its position), once per transaction.
	Flush(tx viewstore.Txn) error
	// Committed is called once the transaction Apply wrote to has
	// committed, with readers held off: the view publishes what it cached.
	Committed()
	// Aborted drops what Apply cached since the last commit.
	Aborted()
}

// bulkView is a view that can stop filling its caches while a rebuild
// writes a fresh store that nothing reads yet: every committed object is
// then a cache insertion (and an eviction) that no reader will use, and
// the view reads what it needs from the store instead.
type bulkView interface{ setBulk(on bool) }

// Options configure a Runner.
type Options struct {
	Store  eventstore.Store
	Sealer *domain.Sealer
	// DB is the view store every view keeps its state in.
	DB    *DB
	Views []View
	// Deferred views are applied after Views for each event, once the event
	// is acknowledged: a write waits for Views only (WaitForAcknowledged),
	// so work that grows with the user's rooms (history fan-out) does not
	// lengthen writes. Readers of deferred views call Settle.
	Deferred []View
	// BatchEvents bounds the events one transaction applies while catching
	// up (default 4096).
	BatchEvents int
	// SyncInterval is how often live applying makes the view store durable
	// (default 10 s): what a crash can lose, and a restart catch up on.
	SyncInterval time.Duration
	Logger       logrus.FieldLogger
	// OnApply, if set, is called after each applied event (metrics).
	OnApply func(e *domain.Event)
}

// Runner keeps the views up to date with the log. Views (the primary
// stage) commit each live event before it is acknowledged; their folds are
// idempotent by position, so they may run ahead of the checkpoint. The
// deferred stage commits its views together with the checkpoint.
type Runner struct {
	opts Options
	log  logrus.FieldLogger

	mu         sync.Mutex
	checkpoint eventstore.Position
	advanced   chan struct{} // closed and replaced whenever checkpoint moves
	// acknowledged is the last event applied to Views (not yet Deferred).
	acknowledged eventstore.Position
	acked        chan struct{} // closed and replaced whenever acknowledged moves
	failed       error

	cancel       context.CancelFunc
	done         chan struct{}
	deferred     chan deferredItem
	deferredDone chan struct{}
}

// deferredItem is an event the primary views have applied.
type deferredItem struct {
	pos     eventstore.Position
	e       domain.Event
	decoded bool
}

// NewRunner returns a runner; Start catches up and begins applying.
func NewRunner(opts Options) *Runner {
	if opts.BatchEvents <= 0 {
		opts.BatchEvents = 4096
	}
	if opts.SyncInterval <= 0 {
		opts.SyncInterval = 10 * time.Second
	}
	log := opts.Logger
	if log == nil {
		log = logrus.StandardLogger()
	}
	return &Runner{opts: opts, log: log, advanced: make(chan struct{}), acked: make(chan struct{})}
}

// Checkpoint returns the position of the last event applied to every view.
func (r *Runner) Checkpoint() eventstore.Position {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.checkpoint
}

// Start reads the checkpoint from the view store, catches up to the log's
// current head, then follows the log live. progress, if set, is called
// while catching up with applied and total event counts (estimates with
// EventStoreDB positions).
func (r *Runner) Start(ctx context.Context, progress func(applied, total uint64)) error {
	cp, err := r.opts.DB.Checkpoint()
	if err != nil {
		return fmt.Errorf("projections: read checkpoint: %w", err)
	}
	r.setCheckpoint(cp)
	if cp.IsStart() {
		r.log.Info("projections: building the views from the log")
	}
	head, err := r.opts.Store.Head(ctx)
	if err != nil {
		return fmt.Errorf("projections: read head: %w", err)
	}
	if err := r.catchUp(ctx, head, progress); err != nil {
		return err
	}
	subCtx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	r.done = make(chan struct{})
	r.deferred = make(chan deferredItem, 4096)
	r.deferredDone = make(chan struct{})
	go r.runDeferred()
	go r.follow(subCtx)
	return nil
}

// catchUp applies the log up to head with batched reads, one transaction
// per batch: the fast path of a rebuild and of a restart. Reading and
// decoding the next batch overlaps applying the current one.
func (r *Runner) catchUp(ctx context.Context, head eventstore.Position, progress func(applied, total uint64)) error {
	start := r.Checkpoint()
	type batch struct {
		recs    []eventstore.RecordedEvent
		decoded []decodedEvent
		err     error
	}
	batches := make(chan batch, 1)
	readCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		defer close(batches)
		for after := start; after.Before(head); {
			recs, err := r.opts.Store.ReadAll(readCtx, after, r.opts.BatchEvents)
			if err != nil || len(recs) == 0 {
				if err != nil {
					select {
					case batches <- batch{err: err}:
					case <-readCtx.Done():
					}
				}
				return
			}
			b := batch{recs: recs, decoded: r.decodeAll(readCtx, recs, after)}
			select {
			case batches <- b:
			case <-readCtx.Done():
				return
			}
			after = recs[len(recs)-1].Position
		}
	}()
	var applied uint64
	for b := range batches {
		if b.err != nil {
			return fmt.Errorf("projections: read log: %w", b.err)
		}
		if err := r.applyDecoded(b.recs, b.decoded); err != nil {
			return err
		}
		applied += uint64(len(b.recs))
		if progress != nil {
			progress(applied, head.Commit-start.Commit)
		}
	}
	return nil
}

func (r *Runner) follow(ctx context.Context) {
	defer close(r.done)
	for ctx.Err() == nil {
		sub, err := r.opts.Store.Subscribe(ctx, r.acknowledgedPosition(), eventstore.Filter{StreamPrefixes: []string{domain.ProfileCategory, domain.RoomCategory}})
		if err != nil {
			r.fail(err)
			if !sleepCtx(ctx, time.Second) {
				return
			}
			continue
		}
		for {
			rec, err := sub.Next(ctx)
			if err != nil {
				_ = sub.Close()
				if ctx.Err() == nil {
					r.log.WithError(err).Warn("projections: subscription ended; resubscribing")
					r.fail(err)
					sleepCtx(ctx, 100*time.Millisecond)
				}
				break
			}
			if err := r.applyLive(ctx, rec); err != nil {
				r.fail(err)
				r.log.WithError(err).Error("projections: the view store failed; the views stop here")
				_ = sub.Close()
				return
			}
		}
	}
}

func (r *Runner) acknowledgedPosition() eventstore.Position {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.acknowledged
}

// applyLive is the primary stage of the live pipeline: decode, apply and
// commit the primary views, acknowledge, and hand the event to the
// deferred stage.
func (r *Runner) applyLive(ctx context.Context, rec eventstore.RecordedEvent) error {
	if !r.acknowledgedPosition().Before(rec.Position) {
		return nil // seen already (a resubscription overlaps)
	}
	item := deferredItem{pos: rec.Position}
	e, err := domain.Decode(ctx, r.opts.Sealer, rec)
	if err != nil {
		r.log.WithError(err).WithField("stream", rec.Stream).Warn("projections: skipping an event that cannot be decoded")
	} else {
		if err := r.commit(r.opts.Views, []*domain.Event{&e}, nil); err != nil {
			return err
		}
		item.e, item.decoded = e, true
	}
	r.setAcknowledged(rec.Position)
	r.deferred <- item
	return nil
}

// parallelApplyMin is the number of events from which a transaction's
// views apply in parallel, each into a transaction of its own.
const parallelApplyMin = 256

// commit applies events to views and commits what they wrote in one atomic
// write, with the checkpoint when one is given; views publish under the
// readers' lock. Views own disjoint keys, so with many events each fills a
// transaction of its own on its own goroutine (a rebuild's fast path), and
// the transactions commit as one.
func (r *Runner) commit(views []View, events []*domain.Event, checkpoint *eventstore.Position) error {
	if len(views) == 0 && checkpoint == nil {
		return nil
	}
	store := r.opts.DB.store
	groups := [][]View{views}
	if c, ok := store.(interface{ ConcurrentTxns() bool }); ok && c.ConcurrentTxns() &&
		len(views) > 1 && len(events) >= parallelApplyMin && runtime.GOMAXPROCS(0) > 1 {
		groups = make([][]View, len(views))
		for i, v := range views {
			groups[i] = []View{v}
		}
	}
	txs := make([]viewstore.Txn, len(groups))
	errs := make([]error, len(groups))
	for i := range groups {
		tx, err := store.Begin()
		if err != nil {
			for _, t := range txs[:i] {
				t.Discard()
			}
			return fmt.Errorf("%w: %v", errStorage, err)
		}
		txs[i] = tx
	}
	fill := func(i int) {
		for _, e := range events {
			for _, v := range groups[i] {
				if err := v.Apply(txs[i], e); err != nil {
					errs[i] = fmt.Errorf("%s: %w", v.Name(), err)
					return
				}
			}
		}
		for _, v := range groups[i] {
			if err := v.Flush(txs[i]); err != nil {
				errs[i] = fmt.Errorf("%s: %w", v.Name(), err)
				return
			}
		}
	}
	if len(groups) == 1 {
		fill(0)
	} else {
		var wg sync.WaitGroup
		for i := range groups {
			wg.Add(1)
			go func() {
				defer wg.Done()
				fill(i)
			}()
		}
		wg.Wait()
	}
	err := errors.Join(errs...)
	if err == nil && checkpoint != nil {
		err = txs[len(txs)-1].Set(keyCheckpoint, []byte(checkpoint.String()))
	}
	abort := func(err error) error {
		for _, t := range txs {
			t.Discard()
		}
		for _, v := range views {
			v.Aborted()
		}
		return fmt.Errorf("%w: %v", errStorage, err)
	}
	if err != nil {
		return abort(err)
	}
	// Readers of the views in this transaction wait while it is published.
	db := r.opts.DB
	profiles, others := false, false
	for _, v := range views {
		_, p := v.(*Profiles)
		profiles, others = profiles || p, others || !p
	}
	if profiles {
		db.profilesMu.Lock()
		defer db.profilesMu.Unlock()
	}
	if others || len(views) == 0 {
		db.mu.Lock()
		defer db.mu.Unlock()
	}
	if len(txs) == 1 {
		err = txs[0].Commit()
	} else {
		err = store.CommitAll(txs...)
	}
	if err != nil {
		return abort(err)
	}
	for _, v := range views {
		v.Committed()
	}
	return nil
}

// ApplyEvents applies events to views over db in one transaction, outside
// any runner: for benchmarks and tools that build a view from events they
// make themselves. The views must not belong to a started runner.
func ApplyEvents(db *DB, views []View, events ...*domain.Event) error {
	r := &Runner{opts: Options{DB: db}}
	return r.commit(views, events, nil)
}

// runDeferred is the deferred stage: it applies deferred views in log
// order, in transactions of whatever has queued up, each committed with
// the checkpoint it reaches.
func (r *Runner) runDeferred() {
	defer close(r.deferredDone)
	var events []*domain.Event
	lastSync := time.Now()
	for {
		item, ok := <-r.deferred
		if !ok {
			return
		}
		events = events[:0]
		last := item.pos
		erased := r.take(&item, &events)
		// Whatever else has queued goes into the same transaction, up to
		// a bound; an erasure ends the transaction so it is purged at once.
	drain:
		for len(events) < r.opts.BatchEvents && !erased {
			select {
			case next, ok := <-r.deferred:
				if !ok {
					break drain
				}
				last = next.pos
				erased = r.take(&next, &events)
			default:
				break drain
			}
		}
		if err := r.finish(r.opts.Deferred, events, last, erased); err != nil {
			r.fail(err)
			r.log.WithError(err).Error("projections: the view store failed; the deferred views stop here")
			for range r.deferred {
			}
			return
		}
		if time.Since(lastSync) >= r.opts.SyncInterval {
			lastSync = time.Now()
			if err := r.opts.DB.store.Sync(); err != nil {
				r.log.WithError(err).Warn("projections: making the view store durable failed")
			}
		}
	}
}

// take queues a decoded item's event and reports whether it is an erasure.
func (r *Runner) take(item *deferredItem, events *[]*domain.Event) bool {
	if !item.decoded {
		return false
	}
	*events = append(*events, &item.e)
	return item.e.Type == domain.TypeErased
}

// finish commits the deferred views' transaction with its checkpoint. The
// one home of the erasure rule: after an erasure the store is purged before
// the checkpoint moves, so whoever waits for an erasure sees it done only
// once no file of the view store holds the erased values.
func (r *Runner) finish(views []View, events []*domain.Event, last eventstore.Position, erased bool) error {
	if err := r.commit(views, events, &last); err != nil {
		return err
	}
	for _, e := range events {
		if r.opts.OnApply != nil {
			r.opts.OnApply(e)
		}
		if e.Type == domain.TypeErased {
			// Another instance may have destroyed the keys: drop the
			// ciphers this process still holds for them.
			r.opts.Sealer.Forget(e.User)
		}
	}
	if erased {
		if err := r.opts.DB.store.Purge(); err != nil {
			return fmt.Errorf("%w: purge after erasure: %v", errStorage, err)
		}
	}
	r.setCheckpoint(last)
	return nil
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// applyDecoded applies a batch read while catching up to every view, in
// one transaction with its checkpoint.
func (r *Runner) applyDecoded(recs []eventstore.RecordedEvent, decoded []decodedEvent) error {
	events := make([]*domain.Event, 0, len(recs))
	erased := false
	for i := range recs {
		rec, d := &recs[i], &decoded[i]
		if !d.skip && d.err != nil {
			r.log.WithError(d.err).WithField("stream", rec.Stream).Warn("projections: skipping an event that cannot be decoded")
		}
		if d.skip || d.err != nil {
			continue
		}
		events = append(events, &d.e)
		erased = erased || d.e.Type == domain.TypeErased
	}
	all := append(append([]View(nil), r.opts.Views...), r.opts.Deferred...)
	return r.finish(all, events, recs[len(recs)-1].Position, erased)
}

// viewed reports whether the views read events of the stream: profiles and
// rooms, as the live subscription's filter says.
func viewed(stream string) bool {
	return strings.HasPrefix(stream, domain.ProfileCategory) || strings.HasPrefix(stream, domain.RoomCategory)
}

type decodedEvent struct {
	e    domain.Event
	err  error
	skip bool // at or before the checkpoint: applied already
}

// decodeAll decodes (and decrypts) a batch on every core: decoding is
// independent per event and the costliest step of a rebuild, while the
// views must then apply the events one by one, in order.
func (r *Runner) decodeAll(ctx context.Context, recs []eventstore.RecordedEvent, after eventstore.Position) []decodedEvent {
	out := make([]decodedEvent, len(recs))
	decode := func(lo, hi int) {
		for i := lo; i < hi; i++ {
			if !after.Before(recs[i].Position) || !viewed(recs[i].Stream) {
				out[i].skip = true // applied already, or of no view's concern (seals, ledgers)
				continue
			}
			out[i].e, out[i].err = domain.Decode(ctx, r.opts.Sealer, recs[i])
		}
	}
	workers := runtime.GOMAXPROCS(0)
	if len(recs) < 256 || workers < 2 {
		decode(0, len(recs))
		return out
	}
	var wg sync.WaitGroup
	chunk := (len(recs) + workers - 1) / workers
	for lo := 0; lo < len(recs); lo += chunk {
		wg.Add(1)
		go func(lo, hi int) {
			defer wg.Done()
			decode(lo, hi)
		}(lo, min(lo+chunk, len(recs)))
	}
	wg.Wait()
	return out
}

func (r *Runner) setAcknowledged(p eventstore.Position) {
	r.mu.Lock()
	if r.acknowledged.Before(p) {
		r.acknowledged = p
		close(r.acked)
		r.acked = make(chan struct{})
	}
	r.mu.Unlock()
}

func (r *Runner) setCheckpoint(p eventstore.Position) {
	r.mu.Lock()
	if r.acknowledged.Before(p) || p.IsStart() {
		r.acknowledged = p
		close(r.acked)
		r.acked = make(chan struct{})
	}
	if p.Compare(r.checkpoint) != 0 {
		r.checkpoint = p
		close(r.advanced)
		r.advanced = make(chan struct{})
	}
	r.failed = nil
	r.mu.Unlock()
}

func (r *Runner) fail(err error) {
	r.mu.Lock()
	r.failed = err
	r.mu.Unlock()
}

// ErrNotReached is returned by WaitFor when the views did not reach the
// position before the context ended.
var ErrNotReached = errors.New("projections: position not reached in time")

// WaitFor blocks until every view has applied the event at pos.
func (r *Runner) WaitFor(ctx context.Context, pos eventstore.Position) error {
	return r.wait(ctx, pos, false)
}

// WaitForAcknowledged blocks until Views (not Deferred) have applied the
// event at pos: what a write waits for before it answers.
func (r *Runner) WaitForAcknowledged(ctx context.Context, pos eventstore.Position) error {
	return r.wait(ctx, pos, true)
}

// Settle blocks until the deferred views have caught up with every event
// acknowledged so far, so a reader of them sees every write that has answered.
func (r *Runner) Settle(ctx context.Context) error {
	r.mu.Lock()
	pos := r.acknowledged
	r.mu.Unlock()
	return r.wait(ctx, pos, false)
}

func (r *Runner) wait(ctx context.Context, pos eventstore.Position, acknowledged bool) error {
	for {
		r.mu.Lock()
		reached, ch := !r.checkpoint.Before(pos), r.advanced
		if acknowledged {
			reached, ch = !r.acknowledged.Before(pos), r.acked
		}
		r.mu.Unlock()
		if reached {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ErrNotReached
		}
	}
}

// Healthy reports the last subscription or view store failure, if the
// runner is failing.
func (r *Runner) Healthy() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.failed
}

// Close stops following the log; the deferred stage commits what it was
// handed. The view store stays open (its owner closes it).
func (r *Runner) Close() error {
	if r.cancel != nil {
		r.cancel()
		<-r.done
		r.cancel = nil
		close(r.deferred)
		<-r.deferredDone
		r.deferred = nil
	}
	return nil
}

// Rebuild applies the whole log to views in an empty view store, reporting
// progress; the runner must not be started.
func (r *Runner) Rebuild(ctx context.Context, progress func(applied, total uint64)) error {
	cp, err := r.opts.DB.Checkpoint()
	if err != nil {
		return err
	}
	if !cp.IsStart() {
		return fmt.Errorf("projections: rebuild needs an empty view store (this one is at %s)", cp)
	}
	r.setCheckpoint(eventstore.Start)
	head, err := r.opts.Store.Head(ctx)
	if err != nil {
		return err
	}
	// A rebuild allocates at a high rate and keeps little: collecting
	// less often saves a tenth of its CPU for a heap that stays bounded
	// (the caches are).
	defer debug.SetGCPercent(debug.SetGCPercent(400))
	for _, v := range append(r.opts.Views, r.opts.Deferred...) {
		if b, ok := v.(bulkView); ok {
			b.setBulk(true)
			defer b.setBulk(false)
		}
	}
	return r.catchUp(ctx, head, progress)
}
