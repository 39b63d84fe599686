// Package esdb is the EventStoreDB (KurrentDB) adapter of the store port,
// built on github.com/EventStore/EventStore-Client-Go/v4.
//
// Streams keep their names (profile-<user>, room-<room>), so EventStoreDB's
// $ce- category projections work on them. Positions are EventStoreDB's
// commit/prepare pairs. Expected revisions map to esdb.Any, esdb.NoStream
// and esdb.Revision.
//
// The global log of the port is $all without EventStoreDB's system events
// (streams or event types starting with "$") and without the keyring's
// streams (KeyStreamPrefix), so key material never reaches a change feed.
//
// Event-id deduplication. EventStoreDB recognises a repeated append by its
// event ids when the expected revision is behind the stream (it compares the
// events after that revision) and, best effort, with "any" (an in-memory
// cache of recent ids that a server restart empties). It writes a duplicate
// when the expected revision equals the stream's current one. The port asks
// for more: the same ids return the original result whatever the expected
// revision. The adapter closes the gap with one read of the stream's last
// DedupWindow events before an append with an exact or "any" expectation,
// and again after a wrong-expected-version reply: if the ids are found there
// in order, it returns the original result (the last one's revision and
// position) and writes nothing; if only the first is found, it reports a
// wrong expected revision, as EventStoreDB does for a partial match. An
// append retried after more than DedupWindow later events of the same stream
// is recognised only by EventStoreDB's own rules above.
//
// Connection loss. Appends that fail because the server is unreachable
// return an error matching ErrUnavailable: the outcome is unknown, and
// retrying with the same event ids is safe because of the deduplication
// above. Subscriptions resubscribe from the last delivered position, with no
// gap and no duplicate, for up to Options.ResubscribeTimeout.
//
// Positions on stream reads need EventStoreDB 22.6 or later (earlier servers
// only report positions on $all reads).
package esdb

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"strings"
	"sync"
	"time"

	"github.com/EventStore/EventStore-Client-Go/v4/esdb"
	"github.com/sirupsen/logrus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/profilestore/profilestore/eventstore"
)

// KeyStreamPrefix starts the names of the keyring's streams. It lies outside
// the profile- and room- categories, and the store hides these streams from
// ReadAll, Head and Subscribe.
const KeyStreamPrefix = "profilekey-"

// DedupWindow is how many of a stream's last events the adapter searches for
// the ids of an append (see the package documentation).
const DedupWindow = 64

// ErrUnavailable is matched by errors caused by an unreachable server or a
// lost connection. For an append the outcome is unknown.
var ErrUnavailable = errors.New("esdb: server unavailable")

// ErrStreamDeleted is matched by errors on a stream that was hard-deleted.
var ErrStreamDeleted = errors.New("esdb: stream deleted")

// Options configure a Store.
type Options struct {
	// Namespace, if set, is prepended to every stream name on the server and
	// hides all other streams. It lets the conformance suite run against a
	// shared server; it changes the $ce- category names, so production
	// deployments leave it empty.
	Namespace string
	// ResubscribeTimeout bounds how long a subscription keeps trying to
	// resubscribe after losing its connection before it fails with
	// ErrUnavailable. Zero means one minute.
	ResubscribeTimeout time.Duration
	// Logger receives the client library's messages at debug level and the
	// adapter's reconnections at info level. Nil means logrus's standard
	// logger.
	Logger logrus.FieldLogger
}

// Store is an eventstore.Store on EventStoreDB. It is safe for concurrent use.
type Store struct {
	conf               *esdb.Configuration
	ns                 string
	resubscribeTimeout time.Duration
	log                logrus.FieldLogger

	// life ends when the store is closed; subscriptions hang on it.
	life context.Context
	kill context.CancelFunc

	mu     sync.Mutex
	client *esdb.Client
	closed bool
}

var _ eventstore.Store = (*Store)(nil)

// Open connects to the EventStoreDB named by connectionString (the client's
// format, e.g. "esdb://localhost:2113?tls=false" or
// "esdb://node1:2113,node2:2113,node3:2113") and checks that it answers.
func Open(ctx context.Context, connectionString string, opts Options) (*Store, error) {
	conf, err := esdb.ParseConnectionString(connectionString)
	if err != nil {
		return nil, fmt.Errorf("esdb: connection string: %w", err)
	}
	log := opts.Logger
	if log == nil {
		log = logrus.StandardLogger()
	}
	log = log.WithField("component", "esdb")
	conf.Logger = clientLogger(log)
	client, err := esdb.NewClient(conf)
	if err != nil {
		return nil, fmt.Errorf("esdb: %w", err)
	}
	s := &Store{
		conf:               conf,
		ns:                 opts.Namespace,
		resubscribeTimeout: opts.ResubscribeTimeout,
		log:                log,
		client:             client,
	}
	if s.resubscribeTimeout <= 0 {
		s.resubscribeTimeout = time.Minute
	}
	s.life, s.kill = context.WithCancel(context.Background())
	// Fail at start-up rather than on the first request.
	if _, err := s.readAllRaw(ctx, esdb.End{}, esdb.Backwards, 1); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// Close closes the connection; operations in flight fail with
// eventstore.ErrClosed and subscriptions end with it.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	s.kill()
	return s.client.Close()
}

func (s *Store) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// current returns the client to use.
func (s *Store) current() (*esdb.Client, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, eventstore.ErrClosed
	}
	return s.client, nil
}

// renew replaces a client that gave up: after a failed discovery the v4
// client closes itself for good. The old client is not closed, because its
// error path may still send to the channel that Close would close.
func (s *Store) renew(old *esdb.Client) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.client != old {
		return
	}
	c, err := esdb.NewClient(s.conf)
	if err != nil {
		s.log.WithError(err).Warn("esdb: cannot recreate the client")
		return
	}
	s.client = c
	s.log.Info("esdb: connection lost, client recreated")
}

// call runs fn and returns when it does or when ctx ends. The client library
// blocks without regard to the context while it discovers a node, and its
// error path can block for good when a discovery fails concurrently.
func call[T any](ctx context.Context, fn func() (T, error)) (T, error) {
	type result struct {
		v   T
		err error
	}
	ch := make(chan result, 1)
	go func() {
		v, err := fn()
		ch <- result{v, err}
	}()
	select {
	case r := <-ch:
		return r.v, r.err
	case <-ctx.Done():
		var zero T
		return zero, ctx.Err()
	}
}

// translate maps a client error to the port's errors; op names the
// operation for the message.
func (s *Store) translate(ctx context.Context, c *esdb.Client, op string, err error) error {
	if err == nil {
		return nil
	}
	if s.isClosed() {
		return fmt.Errorf("esdb: %s: %w", op, eventstore.ErrClosed)
	}
	if ctx.Err() != nil {
		return fmt.Errorf("esdb: %s: %w", op, ctx.Err())
	}
	var e *esdb.Error
	if errors.As(err, &e) {
		switch e.Code() {
		case esdb.ErrorCodeConnectionClosed:
			s.renew(c)
			return fmt.Errorf("esdb: %s: %w (%v)", op, ErrUnavailable, err)
		case esdb.ErrorUnavailable, esdb.ErrorCodeNotLeader, esdb.ErrorCodeDeadlineExceeded:
			return fmt.Errorf("esdb: %s: %w (%v)", op, ErrUnavailable, err)
		case esdb.ErrorCodeStreamDeleted:
			return fmt.Errorf("esdb: %s: %w", op, ErrStreamDeleted)
		}
	}
	// Some paths of the client return gRPC errors unwrapped.
	switch status.Code(errors.Unwrap(err)) {
	case codes.Unavailable:
		return fmt.Errorf("esdb: %s: %w (%v)", op, ErrUnavailable, err)
	}
	if status.Code(err) == codes.Unavailable {
		return fmt.Errorf("esdb: %s: %w (%v)", op, ErrUnavailable, err)
	}
	return fmt.Errorf("esdb: %s: %w", op, err)
}

func isCode(err error, code esdb.ErrorCode) bool {
	var e *esdb.Error
	return errors.As(err, &e) && e.Code() == code
}

// Append implements eventstore.Store.
func (s *Store) Append(ctx context.Context, stream string, expected eventstore.ExpectedRevision, events []eventstore.EventData) (eventstore.AppendResult, error) {
	if err := validate(stream, events); err != nil {
		return eventstore.AppendResult{}, err
	}
	c, err := s.current()
	if err != nil {
		return eventstore.AppendResult{}, err
	}
	name := s.ns + stream
	if !expected.IsNoStream() {
		// EventStoreDB compares ids itself when the expectation is "no
		// stream"; otherwise a retry could land as a duplicate.
		res, found, err := s.findAppended(ctx, c, stream, expected, events, false)
		var wrong *eventstore.WrongExpectedRevisionError
		if err != nil && !errors.As(err, &wrong) {
			return res, fmt.Errorf("esdb: append to %q: nothing written: %w", stream, err)
		}
		if err != nil || found {
			return res, err
		}
	}
	data := make([]esdb.EventData, len(events))
	for i, e := range events {
		data[i] = esdb.EventData{EventID: e.ID, EventType: e.Type, ContentType: esdb.ContentTypeJson, Data: e.Data, Metadata: e.Metadata}
	}
	opts := esdb.AppendToStreamOptions{ExpectedRevision: toExpected(expected)}
	wr, err := call(ctx, func() (*esdb.WriteResult, error) { return c.AppendToStream(ctx, name, opts, data...) })
	if err != nil {
		if isCode(err, esdb.ErrorCodeWrongExpectedVersion) {
			res, _, err := s.findAppended(ctx, c, stream, expected, events, true)
			return res, err
		}
		err = s.translate(ctx, c, fmt.Sprintf("append to %q", stream), err)
		if errors.Is(err, ErrUnavailable) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
			err = fmt.Errorf("%w; the append may or may not have been written, retrying it with the same event ids is safe", err)
		}
		return eventstore.AppendResult{}, err
	}
	return eventstore.AppendResult{
		Revision: wr.NextExpectedVersion,
		Position: eventstore.Position{Commit: wr.CommitPosition, Prepare: wr.PreparePosition},
	}, nil
}

func validate(stream string, events []eventstore.EventData) error {
	if stream == "" {
		return fmt.Errorf("%w: empty stream name", eventstore.ErrInvalidAppend)
	}
	if len(events) == 0 {
		return fmt.Errorf("%w: no events", eventstore.ErrInvalidAppend)
	}
	for i, e := range events {
		if e.ID == [16]byte{} {
			return fmt.Errorf("%w: event %d has no id", eventstore.ErrInvalidAppend, i)
		}
		if e.Type == "" {
			return fmt.Errorf("%w: event %d has no type", eventstore.ErrInvalidAppend, i)
		}
	}
	return nil
}

func toExpected(e eventstore.ExpectedRevision) esdb.ExpectedRevision {
	if rev, ok := e.Revision(); ok {
		return esdb.Revision(rev)
	}
	if e.IsNoStream() {
		return esdb.NoStream{}
	}
	return esdb.Any{}
}

// findAppended looks for events' ids among the stream's last DedupWindow
// events. All of them in order: the original append's result, found. The
// first only: a wrong expected revision, as EventStoreDB reports a partial
// match. None: not found, or a wrong expected revision if the stream's state
// already contradicts expected; conflict makes that error whatever the
// state, for use after the server said the expectation failed.
func (s *Store) findAppended(ctx context.Context, c *esdb.Client, stream string, expected eventstore.ExpectedRevision, events []eventstore.EventData, conflict bool) (eventstore.AppendResult, bool, error) {
	window := uint64(max(DedupWindow, len(events)))
	tail, exists, err := s.readStreamRaw(ctx, c, s.ns+stream, esdb.End{}, esdb.Backwards, window)
	if err != nil {
		return eventstore.AppendResult{}, false, err
	}
	var last uint64
	if exists && len(tail) > 0 {
		last = tail[0].EventNumber
	}
	wrong := &eventstore.WrongExpectedRevisionError{Stream: stream, Expected: expected, Actual: last, ActualExists: exists}
	for i := len(tail) - 1; i >= 0; i-- {
		if tail[i].EventID != events[0].ID {
			continue
		}
		// tail is newest first: events[k] must be at tail[i-k].
		for k := 1; k < len(events); k++ {
			if i-k < 0 || tail[i-k].EventID != events[k].ID {
				return eventstore.AppendResult{}, false, wrong
			}
		}
		e := tail[i-len(events)+1]
		return eventstore.AppendResult{Revision: e.EventNumber, Position: position(e)}, true, nil
	}
	if conflict || !expected.Satisfied(last, exists) {
		return eventstore.AppendResult{}, false, wrong
	}
	return eventstore.AppendResult{}, false, nil
}

// ReadStream implements eventstore.Store.
func (s *Store) ReadStream(ctx context.Context, stream string, from uint64, dir eventstore.Direction, limit int) ([]eventstore.RecordedEvent, error) {
	c, err := s.current()
	if err != nil {
		return nil, err
	}
	if limit <= 0 {
		return nil, nil
	}
	// EventStoreDB revisions are signed 64-bit numbers.
	var pos esdb.StreamPosition = esdb.Revision(from)
	d := esdb.Forwards
	if dir == eventstore.Backwards {
		d = esdb.Backwards
		if from > math.MaxInt64 {
			pos = esdb.End{}
		}
	} else if from > math.MaxInt64 {
		return nil, nil
	}
	raw, _, err := s.readStreamRaw(ctx, c, s.ns+stream, pos, d, uint64(limit))
	if err != nil {
		return nil, err
	}
	out := make([]eventstore.RecordedEvent, 0, len(raw))
	for _, e := range raw {
		out = append(out, s.recorded(e))
	}
	return out, nil
}

// readStreamRaw reads a stream; found is false for a stream with no events.
func (s *Store) readStreamRaw(ctx context.Context, c *esdb.Client, name string, from esdb.StreamPosition, dir esdb.Direction, n uint64) ([]*esdb.RecordedEvent, bool, error) {
	evs, err := call(ctx, func() ([]*esdb.RecordedEvent, error) {
		rs, err := c.ReadStream(ctx, name, esdb.ReadStreamOptions{Direction: dir, From: from}, n)
		if err != nil {
			return nil, err
		}
		defer rs.Close()
		return drain(rs)
	})
	if isCode(err, esdb.ErrorCodeResourceNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, s.translate(ctx, c, fmt.Sprintf("read %q", strings.TrimPrefix(name, s.ns)), err)
	}
	return evs, true, nil
}

func drain(rs *esdb.ReadStream) ([]*esdb.RecordedEvent, error) {
	var out []*esdb.RecordedEvent
	for {
		ev, err := rs.Recv()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		if ev.Event != nil {
			out = append(out, ev.Event)
		}
	}
}

// readAllRaw reads up to n events of $all, system events included.
func (s *Store) readAllRaw(ctx context.Context, from esdb.AllPosition, dir esdb.Direction, n uint64) ([]*esdb.RecordedEvent, error) {
	c, err := s.current()
	if err != nil {
		return nil, err
	}
	evs, err := call(ctx, func() ([]*esdb.RecordedEvent, error) {
		rs, err := c.ReadAll(ctx, esdb.ReadAllOptions{Direction: dir, From: from}, n)
		if err != nil {
			return nil, err
		}
		defer rs.Close()
		return drain(rs)
	})
	if err != nil {
		return nil, s.translate(ctx, c, "read $all", err)
	}
	return evs, nil
}

// ReadAll implements eventstore.Store. EventStoreDB reads $all forwards from
// a position inclusively, so the event at after is skipped here.
func (s *Store) ReadAll(ctx context.Context, after eventstore.Position, limit int) ([]eventstore.RecordedEvent, error) {
	if _, err := s.current(); err != nil {
		return nil, err
	}
	if limit <= 0 || after.Commit > math.MaxInt64 {
		return nil, nil
	}
	var out []eventstore.RecordedEvent
	cursor := after
	for len(out) < limit {
		page := uint64(max(limit-len(out)+1, 32))
		var from esdb.AllPosition = esdb.Start{}
		if !cursor.IsStart() {
			from = esdb.Position{Commit: cursor.Commit, Prepare: cursor.Prepare}
		}
		raw, err := s.readAllRaw(ctx, from, esdb.Forwards, page)
		if err != nil {
			return nil, err
		}
		for _, e := range raw {
			p := position(e)
			if !cursor.Before(p) {
				continue
			}
			cursor = p
			if s.visible(e) {
				out = append(out, s.recorded(e))
				if len(out) == limit {
					break
				}
			}
		}
		if uint64(len(raw)) < page {
			break
		}
	}
	return out, nil
}

// Head implements eventstore.Store: the position of the last event the store
// shows, found by reading $all backwards past system events.
func (s *Store) Head(ctx context.Context) (eventstore.Position, error) {
	var from esdb.AllPosition = esdb.End{}
	const page = 256
	var cursor *eventstore.Position
	for {
		raw, err := s.readAllRaw(ctx, from, esdb.Backwards, page)
		if err != nil {
			return eventstore.Position{}, err
		}
		for _, e := range raw {
			p := position(e)
			if cursor != nil && !p.Before(*cursor) {
				continue
			}
			cursor = &p
			if s.visible(e) {
				return p, nil
			}
		}
		if len(raw) < page || cursor == nil {
			return eventstore.Start, nil
		}
		from = esdb.Position{Commit: cursor.Commit, Prepare: cursor.Prepare}
	}
}

func position(e *esdb.RecordedEvent) eventstore.Position {
	return eventstore.Position{Commit: e.Position.Commit, Prepare: e.Position.Prepare}
}

// visible reports whether the store shows an event of $all.
func (s *Store) visible(e *esdb.RecordedEvent) bool {
	name, ok := strings.CutPrefix(e.StreamID, s.ns)
	return ok && !strings.HasPrefix(name, "$") && !strings.HasPrefix(name, KeyStreamPrefix) &&
		!strings.HasPrefix(e.EventType, "$")
}

func (s *Store) recorded(e *esdb.RecordedEvent) eventstore.RecordedEvent {
	return eventstore.RecordedEvent{
		EventData: eventstore.EventData{ID: e.EventID, Type: e.EventType, Data: e.Data, Metadata: e.UserMetadata},
		Stream:    strings.TrimPrefix(e.StreamID, s.ns),
		Revision:  e.EventNumber,
		Position:  position(e),
		Recorded:  e.CreatedDate,
	}
}

// clientLogger routes the client library's messages to logrus at debug
// level: it reports every dropped subscription and discovery attempt as an
// error, and the adapter decides what matters.
func clientLogger(log logrus.FieldLogger) esdb.LoggingFunc {
	return func(level esdb.LogLevel, format string, args ...interface{}) {
		// Some call sites pass their arguments as one slice.
		if len(args) == 1 {
			if inner, ok := args[0].([]interface{}); ok {
				args = inner
			}
		}
		log.WithField("client_level", level).Debug(fmt.Sprintf(format, args...))
	}
}
