// Package bolt is profilestore's embedded event store: one bbolt file, one
// writer goroutine that commits queued appends together (group commit), and
// subscriptions woken after each commit. It also holds the Keyring, a small
// separate bbolt file of per-subject data keys.
//
// # File format (version 1)
//
// The store file holds five top-level buckets:
//
//	meta     "format" -> 8-byte big-endian format version (1)
//	log      8-byte big-endian position -> record
//	streams  uvarint(len(stream)) stream, 8-byte big-endian revision -> 8-byte big-endian position
//	heads    stream -> 8-byte big-endian last revision
//	ids      uvarint(len(stream)) stream, 16-byte event id -> 8-byte revision, 8-byte position
//
// Positions start at 1 and have no gaps; Commit and Prepare of a Position are
// both the position. A stream's revisions start at 0 and have no gaps. An ids
// entry holds the AppendResult of the append that wrote the id, so a repeated
// append answers with it.
//
// A log record is:
//
//	byte     version (1)
//	8 bytes  recorded time, Unix nanoseconds, big-endian
//	16 bytes event id
//	uvarint  stream revision
//	uvarint  length, then the stream name
//	uvarint  length, then the event type
//	uvarint  length, then Data (JSON)
//	uvarint  length, then Metadata (JSON; length 0 reads back as nil)
//
// bbolt commits a transaction with fsync (fdatasync on Linux) before the
// store acknowledges any append in it, so an acknowledged append survives a
// crash of the process or the machine.
package bolt

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/sirupsen/logrus"
	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/profilestore/profilestore/eventstore"
)

const formatVersion = 1

var (
	bucketMeta    = []byte("meta")
	bucketLog     = []byte("log")
	bucketStreams = []byte("streams")
	bucketHeads   = []byte("heads")
	bucketIDs     = []byte("ids")
	keyFormat     = []byte("format")
)

// maxBatch bounds the appends of one group commit so that one transaction
// stays a reasonable size under a flood of writers.
const maxBatch = 1024

// defaultLockTimeout is how long Open waits for another process to release
// the file before failing with ErrInUse. It is short: a file held by another
// process is almost always held by a running server, which will not let go
// soon, and an operator should be told at once.
const defaultLockTimeout = 200 * time.Millisecond

// ErrInUse is returned by Open and OpenKeyring when another process holds
// the file (bbolt takes an exclusive lock for as long as it is open).
var ErrInUse = errors.New("bolt: file is in use by another process")

// openDB opens a bbolt file, telling a lock held by another process apart.
func openDB(path string, timeout time.Duration, opts *bolt.Options) (*bolt.DB, error) {
	if timeout == 0 {
		timeout = defaultLockTimeout
	}
	o := bolt.Options{}
	if opts != nil {
		o = *opts
	}
	o.Timeout = timeout
	db, err := bolt.Open(path, 0o600, &o)
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, fmt.Errorf("%w: %s", ErrInUse, path)
	}
	var pe *fs.PathError
	if errors.As(err, &pe) && pe.Path == path {
		// "open events.db: permission denied" names the file already.
		return nil, errPathNamed{err}
	}
	return db, err
}

// errPathNamed marks an error that already names the file, so that callers
// do not name it a second time.
type errPathNamed struct{ error }

func (e errPathNamed) Unwrap() error { return e.error }

// withPath prefixes what failed, naming the file unless err does.
func withPath(what, path string, err error) error {
	if _, ok := err.(errPathNamed); ok {
		return fmt.Errorf("%s: %w", what, err)
	}
	return fmt.Errorf("%s %s: %w", what, path, err)
}

// Options tunes a Store; the zero value is ready to use.
type Options struct {
	// Logger receives open, close and commit failure messages; nil means
	// logrus's standard logger.
	Logger logrus.FieldLogger
	// LockTimeout bounds the wait for the file lock held by another
	// process before Open fails with ErrInUse; zero means 200 ms.
	LockTimeout time.Duration
}

// Store is an eventstore.Store in one bbolt file. It is safe for concurrent
// use; an append returns only once its commit is on disk.
type Store struct {
	db  *bolt.DB
	log logrus.FieldLogger

	queue      chan *appendRequest
	closing    chan struct{} // closed by Close: stop taking appends
	writerDone chan struct{} // closed when the writer goroutine has returned
	closeOnce  sync.Once
	closeErr   error
	closed     atomic.Bool

	head atomic.Uint64 // position of the last committed event

	notifyMu sync.Mutex
	notify   chan struct{} // closed and replaced after every commit that wrote
}

var _ eventstore.Store = (*Store)(nil)

// appendRequest is one queued Append; the writer sets result or err and
// closes done once the append's transaction is durable or refused.
type appendRequest struct {
	ctx      context.Context
	stream   string
	expected eventstore.ExpectedRevision
	events   []eventstore.EventData
	result   eventstore.AppendResult
	err      error
	done     chan struct{}
}

// Open opens or creates the store file at path and starts its writer.
func Open(path string, opts Options) (*Store, error) {
	logger := opts.Logger
	if logger == nil {
		logger = logrus.StandardLogger()
	}
	db, err := openDB(path, opts.LockTimeout, &bolt.Options{FreelistType: bolt.FreelistMapType})
	if errors.Is(err, ErrInUse) {
		return nil, err
	}
	if err != nil {
		return nil, withPath("bolt: open", path, err)
	}
	var head uint64
	err = db.Update(func(tx *bolt.Tx) error {
		if _, err := checkFormat(tx); err != nil {
			return err
		}
		for _, name := range [][]byte{bucketLog, bucketStreams, bucketHeads, bucketIDs} {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return err
			}
		}
		if k, _ := tx.Bucket(bucketLog).Cursor().Last(); k != nil {
			if head, err = decodeUint64(k); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("bolt: open %s: %w", path, err)
	}
	s := &Store{
		db:         db,
		log:        logger.WithField("store", path),
		queue:      make(chan *appendRequest, maxBatch),
		closing:    make(chan struct{}),
		writerDone: make(chan struct{}),
		notify:     make(chan struct{}),
	}
	s.head.Store(head)
	go s.write()
	s.log.WithField("head", head).Debug("event store opened")
	return s, nil
}

// Close stops the writer after its current commit, fails queued appends and
// open subscriptions with eventstore.ErrClosed, and closes the file. Calling
// it again returns the first call's result.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.closed.Store(true)
		close(s.closing)
		<-s.writerDone
		s.broadcast() // wake subscriptions so that they see the store closed
		if err := s.db.Close(); err != nil {
			s.closeErr = fmt.Errorf("bolt: close: %w", err)
		}
		s.log.Debug("event store closed")
	})
	return s.closeErr
}

// validate refuses what no store state could accept, before queueing, so
// that the group commit only meets conditions that depend on the state.
func validate(stream string, events []eventstore.EventData) error {
	switch {
	case len(events) == 0:
		return fmt.Errorf("%w: no events", eventstore.ErrInvalidAppend)
	case stream == "":
		return fmt.Errorf("%w: empty stream name", eventstore.ErrInvalidAppend)
	case len(stream) > maxStreamLen:
		return fmt.Errorf("%w: stream name of %d bytes, at most %d", eventstore.ErrInvalidAppend, len(stream), maxStreamLen)
	}
	var seen map[uuid.UUID]struct{} // most appends are one event: no map
	if len(events) > 1 {
		seen = make(map[uuid.UUID]struct{}, len(events))
	}
	for i, e := range events {
		switch {
		case e.ID == uuid.Nil:
			return fmt.Errorf("%w: event %d has no id", eventstore.ErrInvalidAppend, i)
		case e.Type == "":
			return fmt.Errorf("%w: event %d has no type", eventstore.ErrInvalidAppend, i)
		case len(e.Type) > maxTypeLen:
			return fmt.Errorf("%w: event %d: type of %d bytes, at most %d", eventstore.ErrInvalidAppend, i, len(e.Type), maxTypeLen)
		case len(e.Data)+len(e.Metadata) > maxEventSize:
			return fmt.Errorf("%w: event %d: %d bytes of data and metadata, at most %d", eventstore.ErrInvalidAppend, i, len(e.Data)+len(e.Metadata), maxEventSize)
		}
		// A repeated id would make the dedup index point at one of two
		// events; refuse it rather than guess.
		if _, dup := seen[e.ID]; dup {
			return fmt.Errorf("%w: event id %s appears twice", eventstore.ErrInvalidAppend, e.ID)
		}
		if seen != nil {
			seen[e.ID] = struct{}{}
		}
	}
	return nil
}

// Append queues the append for the writer and waits until it is durable or
// refused. A repeat of an earlier append (every id already stored in the
// stream by that one append) returns the earlier result and writes nothing; an
// append of which only some ids are stored fails with a
// *eventstore.WrongExpectedRevisionError. Dedup is checked before the expected
// revision, so a retry with its original expectation gets the original result.
//
// If ctx ends while the append is queued, Append returns ctx's error and the
// append may still commit; retrying it with the same event ids is safe.
func (s *Store) Append(ctx context.Context, stream string, expected eventstore.ExpectedRevision, events []eventstore.EventData) (eventstore.AppendResult, error) {
	if err := validate(stream, events); err != nil {
		return eventstore.AppendResult{}, err
	}
	if s.closed.Load() {
		return eventstore.AppendResult{}, eventstore.ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return eventstore.AppendResult{}, err
	}
	r := &appendRequest{ctx: ctx, stream: stream, expected: expected, events: events, done: make(chan struct{})}
	select {
	case s.queue <- r:
	case <-s.closing:
		return eventstore.AppendResult{}, eventstore.ErrClosed
	case <-ctx.Done():
		return eventstore.AppendResult{}, ctx.Err()
	}
	select {
	case <-r.done:
		return r.result, r.err
	case <-s.writerDone:
		// The writer closes done before it returns: a request it never
		// took is not done.
		select {
		case <-r.done:
			return r.result, r.err
		default:
			return eventstore.AppendResult{}, eventstore.ErrClosed
		}
	case <-ctx.Done():
		return eventstore.AppendResult{}, ctx.Err()
	}
}

// write is the single writer: it takes whatever is queued when the previous
// commit finishes and commits it in one transaction, without waiting for more.
func (s *Store) write() {
	defer close(s.writerDone)
	batch := make([]*appendRequest, 0, maxBatch)
	concurrent := false // the last commit had more than one append
	for {
		batch = batch[:0]
		select {
		case r := <-s.queue:
			batch = append(batch, r)
		case <-s.closing:
			s.failQueued()
			return
		}
		if concurrent {
			// Writers are arriving together: let those already running
			// queue before taking the batch. Fewer, larger commits; each
			// costs an fsync (about 200 µs of CPU on the machine of
			// docs/PERFORMANCE.md). A lone writer never waits.
			runtime.Gosched()
		}
	drain:
		for len(batch) < maxBatch {
			select {
			case r := <-s.queue:
				batch = append(batch, r)
			default:
				break drain
			}
		}
		s.commit(batch)
		concurrent = len(batch) > 1
		for _, r := range batch {
			close(r.done)
		}
		clear(batch) // let the requests' events be collected
	}
}

// failQueued fails every append still queued when the store closes.
func (s *Store) failQueued() {
	for {
		select {
		case r := <-s.queue:
			r.err = eventstore.ErrClosed
			close(r.done)
		default:
			return
		}
	}
}

// errApply marks a failure of one append inside the transaction (not a
// refused condition) so that commit can drop that append and retry the rest.
type errApply struct {
	index int
	err   error
}

func (e *errApply) Error() string { return e.err.Error() }

// commit writes the batch in one transaction, appends checked in order so
// that an earlier one counts for the expected revision of a later one.
func (s *Store) commit(batch []*appendRequest) {
	pending := make([]*appendRequest, 0, len(batch))
	for _, r := range batch {
		if err := r.ctx.Err(); err != nil {
			// Its caller has gone; not writing it keeps "returned an
			// error" and "written" apart where we can.
			r.err = err
			continue
		}
		pending = append(pending, r)
	}
	now := time.Now()
	for len(pending) > 0 {
		var last uint64
		var wrote bool
		err := s.db.Update(func(tx *bolt.Tx) error {
			w, err := newTxWriter(tx)
			if err != nil {
				return err
			}
			for i, r := range pending {
				res, refused, err := w.apply(r, now)
				if err != nil {
					return &errApply{index: i, err: err}
				}
				r.result, r.err = res, refused
			}
			last, wrote = w.next-1, w.next > w.first
			return nil
		})
		var ae *errApply
		switch {
		case err == nil:
			if wrote {
				s.head.Store(last)
				s.broadcast()
			}
			return
		case errors.As(err, &ae):
			// One append broke the transaction: fail it alone and commit
			// the others without it.
			r := pending[ae.index]
			r.err = fmt.Errorf("bolt: append to %q: %w", r.stream, ae.err)
			s.log.WithError(ae.err).WithField("stream", r.stream).Error("append failed inside a group commit")
			pending = append(pending[:ae.index:ae.index], pending[ae.index+1:]...)
			for _, p := range pending {
				p.result, p.err = eventstore.AppendResult{}, nil
			}
		default:
			s.log.WithError(err).WithField("appends", len(pending)).Error("group commit failed")
			if errors.Is(err, bolterrors.ErrDatabaseNotOpen) {
				err = eventstore.ErrClosed
			}
			for _, r := range pending {
				r.result, r.err = eventstore.AppendResult{}, fmt.Errorf("bolt: commit: %w", err)
			}
			return
		}
	}
}

// txWriter applies appends inside one write transaction.
type txWriter struct {
	log, streams, heads, ids *bolt.Bucket
	first, next              uint64 // first position of this transaction, next free one
}

func newTxWriter(tx *bolt.Tx) (*txWriter, error) {
	w := &txWriter{
		log:     tx.Bucket(bucketLog),
		streams: tx.Bucket(bucketStreams),
		heads:   tx.Bucket(bucketHeads),
		ids:     tx.Bucket(bucketIDs),
	}
	if w.log == nil || w.streams == nil || w.heads == nil || w.ids == nil {
		return nil, errors.New("bolt: missing bucket")
	}
	// The log is appended in key order: full pages instead of half-empty
	// ones after splits. So is each stream's range of the stream index,
	// but many streams share its pages: a page split near full keeps
	// most of a stream's older revisions in a page no later append
	// touches, and the page the next appends go to small. A denser
	// file, and less to read into memory and copy at every commit.
	w.log.FillPercent = 1.0
	w.streams.FillPercent = 0.9
	w.next = 1
	if k, _ := w.log.Cursor().Last(); k != nil {
		p, err := decodeUint64(k)
		if err != nil {
			return nil, err
		}
		w.next = p + 1
	}
	w.first = w.next
	return w, nil
}

// apply writes one append or refuses it. refused is the caller's error (a
// condition that did not hold); err breaks the transaction.
func (w *txWriter) apply(r *appendRequest, now time.Time) (res eventstore.AppendResult, refused, err error) {
	sk := streamKey(r.stream, 0)
	var last uint64
	hv := w.heads.Get([]byte(r.stream))
	exists := hv != nil
	if exists {
		if last, err = decodeUint64(hv); err != nil {
			return res, nil, err
		}
	}

	known := 0
	sameAppend := true
	var original eventstore.AppendResult
	for _, e := range r.events {
		v := w.ids.Get(idKey(sk, e.ID))
		if v == nil {
			continue
		}
		got, err := decodeResult(v)
		if err != nil {
			return res, nil, err
		}
		if known > 0 && got != original {
			sameAppend = false
		}
		original = got
		known++
	}
	conflict := &eventstore.WrongExpectedRevisionError{Stream: r.stream, Expected: r.expected, Actual: last, ActualExists: exists}
	switch {
	case known == len(r.events) && sameAppend:
		return original, nil, nil
	case known > 0:
		return res, conflict, nil
	case !r.expected.Satisfied(last, exists):
		return res, conflict, nil
	}

	rev := uint64(0)
	if exists {
		rev = last + 1
	}
	for _, e := range r.events {
		rec := eventstore.RecordedEvent{EventData: e, Stream: r.stream, Revision: rev, Recorded: now}
		pos := w.next
		if err := w.log.Put(positionKey(pos), encodeRecord(&rec)); err != nil {
			return res, nil, err
		}
		if err := w.streams.Put(revisionKey(sk, rev), positionKey(pos)); err != nil {
			return res, nil, err
		}
		res = eventstore.AppendResult{Revision: rev, Position: eventstore.Position{Commit: pos, Prepare: pos}}
		w.next++
		rev++
	}
	if err := w.heads.Put([]byte(r.stream), encodeUint64(res.Revision)); err != nil {
		return res, nil, err
	}
	v := encodeResult(res)
	for _, e := range r.events {
		if err := w.ids.Put(idKey(sk, e.ID), v); err != nil {
			return res, nil, err
		}
	}
	return res, nil, nil
}

// broadcast wakes every subscription waiting for a commit.
func (s *Store) broadcast() {
	s.notifyMu.Lock()
	close(s.notify)
	s.notify = make(chan struct{})
	s.notifyMu.Unlock()
}

// changed returns the channel closed by the next commit. Taken before a read,
// it cannot miss a commit the read did not see.
func (s *Store) changed() <-chan struct{} {
	s.notifyMu.Lock()
	defer s.notifyMu.Unlock()
	return s.notify
}

// view runs a read-only transaction, reporting a closed store as
// eventstore.ErrClosed.
func (s *Store) view(fn func(*bolt.Tx) error) error {
	if s.closed.Load() {
		return eventstore.ErrClosed
	}
	err := s.db.View(fn)
	if errors.Is(err, bolterrors.ErrDatabaseNotOpen) {
		return eventstore.ErrClosed
	}
	return err
}

// ReadStream returns up to limit events of the stream from revision from
// (inclusive) in the given direction; it reads one consistent snapshot.
func (s *Store) ReadStream(ctx context.Context, stream string, from uint64, dir eventstore.Direction, limit int) ([]eventstore.RecordedEvent, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if limit <= 0 || stream == "" || len(stream) > maxStreamLen {
		return nil, s.checkOpen()
	}
	var out []eventstore.RecordedEvent
	err := s.view(func(tx *bolt.Tx) error {
		hv := tx.Bucket(bucketHeads).Get([]byte(stream))
		if hv == nil {
			return nil
		}
		last, err := decodeUint64(hv)
		if err != nil {
			return err
		}
		if dir == eventstore.Backwards {
			from = min(from, last)
		} else if from > last {
			return nil
		}
		sk := streamKey(stream, 8)
		logb := tx.Bucket(bucketLog)
		c := tx.Bucket(bucketStreams).Cursor()
		k, v := c.Seek(revisionKey(sk, from))
		for ; k != nil && len(out) < limit; k, v = step(c, dir) {
			if len(k) != len(sk)+8 || !bytes.HasPrefix(k, sk) {
				break
			}
			pos, err := decodeUint64(v)
			if err != nil {
				return err
			}
			e, err := decodeRecord(pos, logb.Get(v))
			if err != nil {
				return err
			}
			out = append(out, e)
		}
		return nil
	})
	if err != nil {
		return nil, wrapRead("read stream "+stream, err)
	}
	return out, nil
}

func step(c *bolt.Cursor, dir eventstore.Direction) ([]byte, []byte) {
	if dir == eventstore.Backwards {
		return c.Prev()
	}
	return c.Next()
}

func (s *Store) checkOpen() error {
	if s.closed.Load() {
		return eventstore.ErrClosed
	}
	return nil
}

// wrapRead adds context to a read error but leaves ErrClosed matchable.
func wrapRead(what string, err error) error {
	return fmt.Errorf("bolt: %s: %w", what, err)
}

// firstAfter returns the first store position strictly after p, and false if
// there is none.
func firstAfter(p eventstore.Position) (uint64, bool) {
	// A foreign position {n, m} with m < n lies before the store's {n, n}.
	if p.Prepare < p.Commit {
		return p.Commit, true
	}
	if p.Commit == ^uint64(0) {
		return 0, false
	}
	return p.Commit + 1, true
}

// ReadAll returns up to limit events of the log strictly after the position,
// in log order, from one consistent snapshot.
func (s *Store) ReadAll(ctx context.Context, after eventstore.Position, limit int) ([]eventstore.RecordedEvent, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	from, ok := firstAfter(after)
	if !ok || limit <= 0 {
		return nil, s.checkOpen()
	}
	var out []eventstore.RecordedEvent
	err := s.view(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketLog).Cursor()
		for k, v := c.Seek(positionKey(from)); k != nil && len(out) < limit; k, v = c.Next() {
			pos, err := decodeUint64(k)
			if err != nil {
				return err
			}
			e, err := decodeRecord(pos, v)
			if err != nil {
				return err
			}
			out = append(out, e)
		}
		return nil
	})
	if err != nil {
		return nil, wrapRead("read all", err)
	}
	return out, nil
}

var _ eventstore.LogLender = (*Store)(nil)

// LendAll is ReadAll without copying the events' Data and Metadata out of
// bbolt's memory map: a page holds its read transaction until release (see
// eventstore.LogLender). bbolt remaps a growing file only once no read
// transaction is open, so a commit that grows the file waits for the
// pages lent before it.
func (s *Store) LendAll(ctx context.Context, after eventstore.Position, limit int, into []eventstore.RecordedEvent) ([]eventstore.RecordedEvent, func(), error) {
	page := into[:0]
	if err := ctx.Err(); err != nil {
		return page, noRelease, err
	}
	from, ok := firstAfter(after)
	if !ok || limit <= 0 {
		return page, noRelease, s.checkOpen()
	}
	if s.closed.Load() {
		return page, noRelease, eventstore.ErrClosed
	}
	tx, err := s.db.Begin(false)
	if err != nil {
		if errors.Is(err, bolterrors.ErrDatabaseNotOpen) {
			err = eventstore.ErrClosed
		}
		return page, noRelease, wrapRead("lend all", err)
	}
	// The log's few types, and a stream's consecutive events, share one
	// string.
	var types []string
	var stream string
	c := tx.Bucket(bucketLog).Cursor()
	// Each record's cache lines are read while the one before it is
	// decoded: the reads depend on nothing, so their misses overlap,
	// where decoding waits for each field's length before the next.
	var touched byte
	for k, v := c.Seek(positionKey(from)); k != nil && len(page) < limit; {
		var nk, nv []byte
		if len(page)+1 < limit {
			nk, nv = c.Next()
			for at := 0; at < len(nv); at += 64 {
				touched += nv[at]
			}
		}
		pos, err := decodeUint64(k)
		if err != nil {
			tx.Rollback()
			clear(page)
			return page[:0], noRelease, wrapRead("lend all", err)
		}
		e, st, typ, err := readRecord(pos, v)
		if err != nil {
			tx.Rollback()
			clear(page)
			return page[:0], noRelease, wrapRead("lend all", err)
		}
		if string(st) != stream {
			stream = string(st)
		}
		e.Stream, e.Type = stream, internType(&types, typ)
		page = append(page, e)
		k, v = nk, nv
	}
	lendTouched.Add(uint32(touched))
	if len(page) == 0 {
		tx.Rollback()
		return page, noRelease, nil
	}
	var released atomic.Bool
	return page, func() {
		if released.CompareAndSwap(false, true) {
			clear(page)
			tx.Rollback()
		}
	}, nil
}

func noRelease() {}

// lendTouched keeps LendAll's reads ahead from being optimised away.
var lendTouched atomic.Uint32

// internType returns typ as one of types, adding it while there are few.
func internType(types *[]string, typ []byte) string {
	for _, t := range *types {
		if t == string(typ) {
			return t
		}
	}
	t := string(typ)
	if len(*types) < 8 {
		*types = append(*types, t)
	}
	return t
}

// Head returns the position of the last durable event (Start if none).
func (s *Store) Head(ctx context.Context) (eventstore.Position, error) {
	if err := s.checkOpen(); err != nil {
		return eventstore.Start, err
	}
	h := s.head.Load()
	return eventstore.Position{Commit: h, Prepare: h}, nil
}

// Path returns the file the store was opened on.
func (s *Store) Path() string { return s.db.Path() }

// checkFormat creates the meta bucket of a new file and stamps its format
// version, or checks the version of an existing one; both the log and the
// keyring files carry it.
func checkFormat(tx *bolt.Tx) (*bolt.Bucket, error) {
	meta, err := tx.CreateBucketIfNotExists(bucketMeta)
	if err != nil {
		return nil, err
	}
	if v := meta.Get(keyFormat); v == nil {
		if err := meta.Put(keyFormat, encodeUint64(formatVersion)); err != nil {
			return nil, err
		}
	} else if n, err := decodeUint64(v); err != nil || n != formatVersion {
		return nil, fmt.Errorf("file format %x, this build reads %d", v, formatVersion)
	}
	return meta, nil
}
