package integrity

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/sirupsen/logrus"

	"github.com/profilestore/profilestore/eventstore"
)

// WriterOptions configure a seal Writer.
type WriterOptions struct {
	// Key signs the seals.
	Key ed25519.PrivateKey
	// Every seals after this many covered events (default 1000); Interval
	// after this long when anything changed (default 10 s), whichever first.
	Every    int
	Interval time.Duration
	Logger   logrus.FieldLogger
	// Now is the clock of sealed_at (default time.Now).
	Now func() time.Time
}

// Writer appends log.sealed events: it follows the log with a subscription,
// remembers the head of every covered stream changed since the last seal,
// and seals them on schedule. It is off the write path: appends never wait
// for it. Several writers on one log (instances on one EventStoreDB) are
// safe: a seal is appended with the seal stream's expected revision, and a
// writer that loses the race starts again after the winner's seal.
type Writer struct {
	store eventstore.Store
	opts  WriterOptions
	pub   ed25519.PublicKey

	mu     sync.Mutex
	latest *SealRef
}

// NewWriter returns a seal writer over the store.
func NewWriter(store eventstore.Store, opts WriterOptions) *Writer {
	if opts.Every <= 0 {
		opts.Every = 1000
	}
	if opts.Interval <= 0 {
		opts.Interval = 10 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = logrus.StandardLogger()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Writer{store: store, opts: opts, pub: opts.Key.Public().(ed25519.PublicKey)}
}

// PublicKey is the key that verifies this writer's seals.
func (w *Writer) PublicKey() ed25519.PublicKey { return w.pub }

// Latest returns the last seal this writer appended or found, nil if none.
func (w *Writer) Latest() *SealRef {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.latest
}

// window is the writer's state between two seals.
type window struct {
	seq      uint64 // of the next seal
	prevSeal Hash
	sealRev  eventstore.ExpectedRevision
	after    eventstore.Position // subscription start
	// heads of the covered streams changed in the window.
	heads   map[string]Head
	through Head
	changed int // covered events in the window, seals not counted
	// genesis: no seal yet, unchained events are hashed into virtual
	// chains, which needs every stream's last hash.
	genesis bool
	last    map[string]Hash
}

// Run seals until the context ends. Errors (a lost connection, a lost race
// with another writer) are logged and the writer starts again from the
// log's latest seal.
func (w *Writer) Run(ctx context.Context) error {
	for ctx.Err() == nil {
		err := w.runOnce(ctx)
		if ctx.Err() != nil {
			break
		}
		if errors.Is(err, eventstore.ErrWrongExpectedRevision) {
			w.opts.Logger.Info("integrity: another writer sealed first; continuing after its seal")
			continue
		}
		w.opts.Logger.WithError(err).Warn("integrity: seal writer failed; restarting")
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
	return ctx.Err()
}

// load reads the latest seal and returns the window that follows it.
func (w *Writer) load(ctx context.Context) (*window, error) {
	win := &window{seq: 1, sealRev: eventstore.NoStream, heads: make(map[string]Head)}
	seal, rec, found, err := LatestSeal(ctx, w.store)
	if err != nil {
		return nil, fmt.Errorf("integrity: read the latest seal: %w", err)
	}
	if !found {
		win.genesis, win.last = true, make(map[string]Hash)
		return win, nil
	}
	through, err := readOne(ctx, w.store, seal.Through.Stream, seal.Through.Revision)
	if err != nil {
		return nil, fmt.Errorf("integrity: seal %d's last event: %w", seal.Seq, err)
	}
	link, err := ReadLink(rec.Metadata)
	if err != nil || !link.Chained {
		return nil, fmt.Errorf("integrity: seal %d is not chained", seal.Seq)
	}
	win.seq, win.prevSeal, win.sealRev, win.after = seal.Seq+1, link.Hash, eventstore.Exact(rec.Revision), through.Position
	w.mu.Lock()
	w.latest = &SealRef{Seal: seal, Position: rec.Position.String(), EventHash: link.Hash}
	w.mu.Unlock()
	return win, nil
}

func (w *Writer) runOnce(ctx context.Context) error {
	win, err := w.load(ctx)
	if err != nil {
		return err
	}
	sub, err := w.store.Subscribe(ctx, win.after, eventstore.Filter{})
	if err != nil {
		return err
	}
	defer sub.Close()
	events := make(chan eventstore.RecordedEvent, 256)
	failed := make(chan error, 1)
	subCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		for {
			rec, err := sub.Next(subCtx)
			if err != nil {
				failed <- err
				return
			}
			select {
			case events <- rec:
			case <-subCtx.Done():
				failed <- subCtx.Err()
				return
			}
		}
	}()
	ticker := time.NewTicker(w.opts.Interval)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-failed:
			return err
		case rec := <-events:
			win.add(&rec)
			if win.changed >= w.opts.Every {
				if err := w.seal(ctx, win); err != nil {
					return err
				}
				ticker.Reset(w.opts.Interval)
			}
		case <-ticker.C:
			if win.changed > 0 {
				if err := w.seal(ctx, win); err != nil {
					return err
				}
			}
		}
	}
}

// add records a consumed event in the window.
func (win *window) add(rec *eventstore.RecordedEvent) {
	if !Covered(rec.Stream) {
		return
	}
	var h Hash
	if win.genesis {
		h = HeadOf(rec, win.last[rec.Stream])
		win.last[rec.Stream] = h
	} else {
		h = HeadOf(rec, Zero)
	}
	head := Head{Stream: rec.Stream, Revision: rec.Revision, Hash: h}
	win.heads[rec.Stream] = head
	win.through = head
	if rec.Stream != SealStream {
		win.changed++
	}
}

// seal appends the seal of the window and starts the next one.
func (w *Writer) seal(ctx context.Context, win *window) error {
	heads := make([]Head, 0, len(win.heads))
	for _, h := range win.heads {
		heads = append(heads, h)
	}
	SortHeads(heads)
	root, err := Root(heads)
	if err != nil {
		return err
	}
	s := Seal{V: 1, Seq: win.seq, PrevSeal: win.prevSeal, Root: root, Streams: uint64(len(heads)),
		Through: win.through, SealedAt: w.opts.Now().UTC()}
	s.Sign(w.opts.Key)
	data, err := json.Marshal(&s)
	if err != nil {
		return err
	}
	meta, _ := json.Marshal(map[string]any{"occurred_at": s.SealedAt, "actor": "profilestore", "source": "integrity"})
	events := []eventstore.EventData{{ID: uuid.New(), Type: SealType, Data: data, Metadata: meta}}
	first := uint64(0)
	if rev, ok := win.sealRev.Revision(); ok {
		first = rev + 1
	}
	head, err := Chain(SealStream, first, win.prevSeal, events)
	if err != nil {
		return err
	}
	res, err := w.store.Append(ctx, SealStream, win.sealRev, events)
	if err != nil {
		return fmt.Errorf("integrity: append seal %d: %w", s.Seq, err)
	}
	w.opts.Logger.WithFields(logrus.Fields{"seal": s.Seq, "streams": s.Streams, "position": res.Position.String()}).Debug("integrity: sealed")
	w.mu.Lock()
	w.latest = &SealRef{Seal: s, Position: res.Position.String(), EventHash: head}
	w.mu.Unlock()
	win.seq++
	win.prevSeal, win.sealRev = head, eventstore.Exact(res.Revision)
	win.heads = make(map[string]Head)
	win.changed = 0
	win.genesis, win.last = false, nil
	return nil
}

// SealNow seals everything up to the log's current head, if anything
// changed since the last seal, and returns the latest seal (nil if the log
// has nothing to seal). It is what `profilestore integrity seal` runs and
// what tests use instead of waiting for the schedule.
func (w *Writer) SealNow(ctx context.Context) (*SealRef, error) {
	win, err := w.load(ctx)
	if err != nil {
		return nil, err
	}
	after := win.after
	for {
		recs, err := w.store.ReadAll(ctx, after, 4096)
		if err != nil {
			return nil, err
		}
		if len(recs) == 0 {
			break
		}
		for i := range recs {
			win.add(&recs[i])
		}
		after = recs[len(recs)-1].Position
	}
	if win.changed > 0 {
		if err := w.seal(ctx, win); err != nil {
			return nil, err
		}
	}
	return w.Latest(), nil
}
