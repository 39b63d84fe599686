// Package projections turns the event log into the views profilestore
// serves. One runner subscribes to the log from its checkpoint and applies
// each event to every view in log order, so all views agree on one position;
// views keep their state in memory and are saved with that checkpoint in
// versioned snapshots.
package projections

import (
	"bufio"
	"context"
	"encoding/gob"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"time"

	"github.com/profilestore/profilestore/domain"
	"github.com/profilestore/profilestore/eventstore"
	"github.com/sirupsen/logrus"
)

// SnapshotVersion changes whenever any view's snapshot layout or fold
// changes; a snapshot of another version is ignored and the views rebuilt.
const SnapshotVersion = 4

// View is one projection.
type View interface {
	// Name identifies the view in snapshots and logs.
	Name() string
	// Apply folds one decoded event; it must not fail (a view skips what it
	// cannot use).
	Apply(e *domain.Event)
	Save(enc *gob.Encoder) error
	Load(dec *gob.Decoder) error
	Reset()
}

// Options configure a Runner.
type Options struct {
	Store  eventstore.Store
	Sealer *domain.Sealer
	Views  []View
	// Deferred views are applied after Views for each event, once the event
	// is acknowledged: a write waits for Views only (WaitForAcknowledged),
	// so work that grows with the user's rooms (history fan-out) does not
	// lengthen writes. Readers of deferred views call Settle.
	Deferred []View
	// SnapshotPath is the snapshot file; empty disables snapshots.
	SnapshotPath string
	// SnapshotEvery saves a snapshot after this many applied events (default 100,000).
	SnapshotEvery int
	// SnapshotInterval saves a snapshot at most this often when events were applied (default 1 min).
	SnapshotInterval time.Duration
	Logger           logrus.FieldLogger
	// OnApply, if set, is called after each applied event (metrics).
	OnApply func(e *domain.Event)
}

// Runner keeps the views up to date with the log.
type Runner struct {
	opts Options
	log  logrus.FieldLogger

	// applyMu serialises applying and saving.
	applyMu sync.Mutex

	mu         sync.Mutex
	checkpoint eventstore.Position
	advanced   chan struct{} // closed and replaced whenever checkpoint moves
	// acknowledged is the last event applied to Views (not yet Deferred).
	acknowledged eventstore.Position
	acked        chan struct{} // closed and replaced whenever acknowledged moves
	failed       error

	sinceSnapshot int
	lastSnapshot  time.Time
	catchingUp    bool // set while catchUp reads the log in batches

	cancel context.CancelFunc
	done   chan struct{}

	// While following the log live, deferred views run in their own
	// goroutine behind the primary ones: the primary stage hands each event
	// over on deferred and never waits for a deferred view's work.
	deferred     chan deferredItem
	deferredDone chan struct{}
	snapshots    chan chan error // snapshot requests served by the deferred stage
}

// deferredItem is an event the primary views have applied.
type deferredItem struct {
	pos     eventstore.Position
	e       domain.Event
	decoded bool
}

// NewRunner returns a runner; Start loads the snapshot and begins applying.
func NewRunner(opts Options) *Runner {
	if opts.SnapshotEvery <= 0 {
		opts.SnapshotEvery = 100_000
	}
	if opts.SnapshotInterval <= 0 {
		opts.SnapshotInterval = time.Minute
	}
	log := opts.Logger
	if log == nil {
		log = logrus.StandardLogger()
	}
	return &Runner{opts: opts, log: log, advanced: make(chan struct{}), acked: make(chan struct{}), lastSnapshot: time.Now()}
}

// Checkpoint returns the position of the last event applied to every view.
func (r *Runner) Checkpoint() eventstore.Position {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.checkpoint
}

// Start loads the snapshot (rebuilding from the log when there is no usable
// one), catches up to the log's current head, then follows the log live.
// progress, if set, is called while catching up with applied and total event
// counts (estimates with EventStoreDB positions).
func (r *Runner) Start(ctx context.Context, progress func(applied, total uint64)) error {
	if err := r.loadSnapshot(); errors.Is(err, os.ErrNotExist) {
		r.log.Info("projections: no snapshot yet; building the views from the log")
	} else if err != nil {
		r.log.WithError(err).Warn("projections: no usable snapshot; rebuilding from the log")
		for _, v := range r.allViews() {
			v.Reset()
		}
		r.setCheckpoint(eventstore.Start)
	}
	head, err := r.opts.Store.Head(ctx)
	if err != nil {
		return fmt.Errorf("projections: read head: %w", err)
	}
	if err := r.catchUp(ctx, head, progress); err != nil {
		return err
	}
	if r.opts.SnapshotPath != "" && r.sinceSnapshot >= r.opts.SnapshotEvery {
		// A long catch-up is not lost if the process stops soon after.
		if err := r.SaveSnapshot(); err != nil {
			r.log.WithError(err).Warn("projections: snapshot failed")
		}
	}
	subCtx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	r.done = make(chan struct{})
	if len(r.opts.Deferred) > 0 {
		r.deferred = make(chan deferredItem, 4096)
		r.deferredDone = make(chan struct{})
		r.snapshots = make(chan chan error)
		go r.runDeferred()
	}
	go r.follow(subCtx)
	return nil
}

// catchUp applies the log up to head with batched reads, the fast path of a rebuild.
func (r *Runner) catchUp(ctx context.Context, head eventstore.Position, progress func(applied, total uint64)) error {
	r.catchingUp = true
	defer func() { r.catchingUp = false }()
	start := r.Checkpoint()
	var applied uint64
	for r.Checkpoint().Before(head) {
		recs, err := r.opts.Store.ReadAll(ctx, r.Checkpoint(), 4096)
		if err != nil {
			return fmt.Errorf("projections: read log: %w", err)
		}
		if len(recs) == 0 {
			break
		}
		r.applyBatch(ctx, recs)
		applied += uint64(len(recs))
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
			if r.deferred == nil {
				r.applyBatch(ctx, []eventstore.RecordedEvent{rec})
			} else {
				r.applyLive(ctx, rec)
			}
		}
	}
}

func (r *Runner) acknowledgedPosition() eventstore.Position {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.acknowledged
}

// applyLive is the primary stage of the live pipeline: decode, apply the
// primary views, acknowledge, and hand the event to the deferred stage.
func (r *Runner) applyLive(ctx context.Context, rec eventstore.RecordedEvent) {
	r.applyMu.Lock()
	if !r.acknowledgedPosition().Before(rec.Position) {
		r.applyMu.Unlock()
		return // seen already (a resubscription overlaps)
	}
	item := deferredItem{pos: rec.Position}
	e, err := domain.Decode(ctx, r.opts.Sealer, rec)
	if err != nil {
		r.log.WithError(err).WithField("stream", rec.Stream).Warn("projections: skipping an event that cannot be decoded")
	} else {
		for _, v := range r.opts.Views {
			v.Apply(&e)
		}
		item.e, item.decoded = e, true
	}
	r.setAcknowledged(rec.Position)
	r.applyMu.Unlock()
	// Outside the lock: a snapshot pauses this stage by taking the lock and
	// drains what was handed over, which needs this send to go through.
	r.deferred <- item
}

// runDeferred is the deferred stage: it applies deferred views in log
// order, moves the checkpoint, and writes snapshots.
func (r *Runner) runDeferred() {
	defer close(r.deferredDone)
	for {
		select {
		case item, ok := <-r.deferred:
			if !ok {
				return
			}
			erased := r.applyDeferred(&item)
			pos := item.pos
			if r.opts.SnapshotPath != "" && (erased || r.snapshotDue()) {
				var err error
				if pos, err = r.pausedSnapshot(pos); err != nil {
					r.log.WithError(err).Warn("projections: snapshot failed")
				}
			}
			r.setCheckpoint(pos)
		case reply := <-r.snapshots:
			pos, err := r.pausedSnapshot(r.Checkpoint())
			r.setCheckpoint(pos)
			reply <- err
		}
	}
}

// applyDeferred applies one event to the deferred views; it reports an erasure.
func (r *Runner) applyDeferred(item *deferredItem) bool {
	r.sinceSnapshot++
	if !item.decoded {
		return false
	}
	for _, v := range r.opts.Deferred {
		v.Apply(&item.e)
	}
	if r.opts.OnApply != nil {
		r.opts.OnApply(&item.e)
	}
	if item.e.Type == domain.TypeErased {
		// Another instance may have destroyed the keys: drop the ciphers
		// this process still holds for them.
		r.opts.Sealer.Forget(item.e.User)
		return true
	}
	return false
}

func (r *Runner) snapshotDue() bool {
	if r.catchingUp {
		return false // one snapshot at the end of a rebuild, not one per 100,000 events
	}
	return r.sinceSnapshot >= r.opts.SnapshotEvery || time.Since(r.lastSnapshot) > r.opts.SnapshotInterval
}

// pausedSnapshot stops the primary stage, lets the deferred views catch up
// with it so every view stands at one position, saves them, and returns that
// position. It runs on the deferred stage's goroutine.
func (r *Runner) pausedSnapshot(pos eventstore.Position) (eventstore.Position, error) {
	r.applyMu.Lock()
	defer r.applyMu.Unlock()
	for pos.Before(r.acknowledgedPosition()) {
		item := <-r.deferred
		r.applyDeferred(&item)
		pos = item.pos
	}
	return pos, r.saveSnapshotLocked(pos)
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

func (r *Runner) applyBatch(ctx context.Context, recs []eventstore.RecordedEvent) {
	r.applyMu.Lock()
	decoded := r.decodeAll(ctx, recs, r.Checkpoint())
	// An erasure must not survive in a snapshot: the snapshot is rewritten
	// as soon as the views have dropped the user's values.
	erased := false
	for i := range recs {
		rec, d := &recs[i], &decoded[i]
		if !d.skip && d.err != nil {
			r.log.WithError(d.err).WithField("stream", rec.Stream).Warn("projections: skipping an event that cannot be decoded")
		}
		if d.skip || d.err != nil {
			r.sinceSnapshot++
			continue
		}
		for _, v := range r.opts.Views {
			v.Apply(&d.e)
		}
		r.setAcknowledged(rec.Position)
		item := deferredItem{pos: rec.Position, e: d.e, decoded: true}
		erased = r.applyDeferred(&item) || erased
	}
	last := recs[len(recs)-1].Position
	// The snapshot is written before the checkpoint moves, so whoever waits
	// for an erasure sees it only once no snapshot holds the erased values.
	if r.opts.SnapshotPath != "" && (erased || r.snapshotDue()) {
		if err := r.saveSnapshotLocked(last); err != nil {
			r.log.WithError(err).Warn("projections: snapshot failed")
		}
	}
	r.setCheckpoint(last)
	r.applyMu.Unlock()
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
			if !after.Before(recs[i].Position) {
				out[i].skip = true
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

// allViews returns Views then Deferred: the order of snapshots.
func (r *Runner) allViews() []View {
	return append(append([]View(nil), r.opts.Views...), r.opts.Deferred...)
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

// Healthy reports the last subscription failure, if the runner is failing.
func (r *Runner) Healthy() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.failed
}

// Close stops following the log and saves a final snapshot.
func (r *Runner) Close() error {
	if r.cancel != nil {
		r.cancel()
		<-r.done
		r.cancel = nil
		if r.deferred != nil {
			close(r.deferred) // the deferred stage applies what it was handed, then ends
			<-r.deferredDone
			r.deferred = nil
		}
	}
	return r.SaveSnapshot()
}

// SaveSnapshot writes the views and their checkpoint to the snapshot file
// atomically (temp file, fsync, rename, fsync of the directory).
func (r *Runner) SaveSnapshot() error {
	if r.opts.SnapshotPath == "" {
		return nil
	}
	if r.deferred != nil {
		reply := make(chan error, 1)
		select {
		case r.snapshots <- reply:
			return <-reply
		case <-r.deferredDone:
		}
	}
	r.applyMu.Lock()
	defer r.applyMu.Unlock()
	return r.saveSnapshotLocked(r.Checkpoint())
}

type snapshotHeader struct {
	Format     string   `json:"format"`
	Version    int      `json:"version"`
	Checkpoint string   `json:"checkpoint"`
	Views      []string `json:"views"`
}

const snapshotFormat = "profilestore-projections"

func (r *Runner) viewNames() []string {
	var names []string
	for _, v := range r.allViews() {
		names = append(names, v.Name())
	}
	return names
}

func (r *Runner) saveSnapshotLocked(checkpoint eventstore.Position) error {
	path := r.opts.SnapshotPath
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".snapshot-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // no-op after the rename
	w := bufio.NewWriterSize(tmp, 1<<20)
	hdr, _ := json.Marshal(snapshotHeader{Format: snapshotFormat, Version: SnapshotVersion, Checkpoint: checkpoint.String(), Views: r.viewNames()})
	w.Write(hdr)
	w.WriteByte('\n')
	enc := gob.NewEncoder(w)
	for _, v := range r.allViews() {
		if err := v.Save(enc); err != nil {
			tmp.Close()
			return fmt.Errorf("snapshot %s: %w", v.Name(), err)
		}
	}
	if err := w.Flush(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	if dir, err := os.Open(filepath.Dir(path)); err == nil {
		_ = dir.Sync()
		dir.Close()
	}
	r.sinceSnapshot = 0
	r.lastSnapshot = time.Now()
	return nil
}

// loadSnapshot restores the views; any error means "rebuild".
func (r *Runner) loadSnapshot() error {
	if r.opts.SnapshotPath == "" {
		return errors.New("snapshots disabled")
	}
	f, err := os.Open(r.opts.SnapshotPath)
	if err != nil {
		return err
	}
	defer f.Close()
	br := bufio.NewReaderSize(f, 1<<20)
	line, err := br.ReadBytes('\n')
	if err != nil {
		return fmt.Errorf("snapshot header: %w", err)
	}
	var hdr snapshotHeader
	if err := json.Unmarshal(line, &hdr); err != nil {
		return fmt.Errorf("snapshot header: %w", err)
	}
	if hdr.Format != snapshotFormat || hdr.Version != SnapshotVersion || fmt.Sprint(hdr.Views) != fmt.Sprint(r.viewNames()) {
		return fmt.Errorf("snapshot is version %d of %v; want version %d of %v", hdr.Version, hdr.Views, SnapshotVersion, r.viewNames())
	}
	cp, err := eventstore.ParsePosition(hdr.Checkpoint)
	if err != nil {
		return err
	}
	dec := gob.NewDecoder(br)
	for _, v := range r.allViews() {
		if err := v.Load(dec); err != nil {
			return fmt.Errorf("snapshot %s: %w", v.Name(), err)
		}
	}
	r.setCheckpoint(cp)
	r.log.WithField("checkpoint", cp.String()).Info("projections: loaded snapshot")
	return nil
}

// Rebuild drops the snapshot and every view's state and applies the whole
// log again, reporting progress; the runner must not be started.
func (r *Runner) Rebuild(ctx context.Context, progress func(applied, total uint64)) error {
	for _, v := range r.allViews() {
		v.Reset()
	}
	r.setCheckpoint(eventstore.Start)
	head, err := r.opts.Store.Head(ctx)
	if err != nil {
		return err
	}
	if err := r.catchUp(ctx, head, progress); err != nil {
		return err
	}
	return r.SaveSnapshot()
}
