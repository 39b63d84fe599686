// Package eventstore is the store port of profilestore: ordered streams of
// typed JSON events and one global log over all of them. It knows nothing of
// Matrix or profiles; the domain gives events their meaning.
//
// Every adapter (eventstore/bolt, eventstore/esdb) passes the conformance
// suite in eventstore/storetest unchanged.
package eventstore

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
)

// Position is a point in the global log. Positions of recorded events are
// unique and strictly increasing in commit order. The zero Position lies
// before every event.
//
// Commit and Prepare mirror EventStoreDB's pair; the embedded store uses the
// same sequence number for both.
type Position struct {
	Commit  uint64
	Prepare uint64
}

// Start is the position before the first event of the log.
var Start = Position{}

// Compare orders positions: -1 if p is before q, 0 if equal, +1 if after.
func (p Position) Compare(q Position) int {
	switch {
	case p.Commit < q.Commit:
		return -1
	case p.Commit > q.Commit:
		return 1
	case p.Prepare < q.Prepare:
		return -1
	case p.Prepare > q.Prepare:
		return 1
	}
	return 0
}

// Before reports whether p comes before q in the log.
func (p Position) Before(q Position) bool { return p.Compare(q) < 0 }

// IsStart reports whether p is the position before the first event.
func (p Position) IsStart() bool { return p == Start }

// String encodes the position as an opaque token that ParsePosition reads
// back. Tokens of equal length sort like positions; clients must not rely on it.
func (p Position) String() string {
	if p.Commit == p.Prepare {
		return strconv.FormatUint(p.Commit, 10)
	}
	return strconv.FormatUint(p.Commit, 10) + "." + strconv.FormatUint(p.Prepare, 10)
}

// ErrInvalidPosition is returned by ParsePosition for a malformed token.
var ErrInvalidPosition = errors.New("eventstore: invalid position token")

// ParsePosition reads a token written by Position.String.
func ParsePosition(s string) (Position, error) {
	if s == "" || len(s) > 41 {
		return Position{}, ErrInvalidPosition
	}
	c, pr, found := strings.Cut(s, ".")
	commit, err := strconv.ParseUint(c, 10, 64)
	if err != nil {
		return Position{}, ErrInvalidPosition
	}
	if !found {
		return Position{Commit: commit, Prepare: commit}, nil
	}
	prepare, err := strconv.ParseUint(pr, 10, 64)
	if err != nil {
		return Position{}, ErrInvalidPosition
	}
	return Position{Commit: commit, Prepare: prepare}, nil
}

// ExpectedRevision is the optimistic-concurrency condition of an append.
type ExpectedRevision struct {
	kind     expectKind
	revision uint64
}

type expectKind uint8

const (
	expectAny expectKind = iota
	expectNoStream
	expectExact
)

// Any appends whatever the stream's state.
var Any = ExpectedRevision{kind: expectAny}

// NoStream appends only if the stream has no events yet.
var NoStream = ExpectedRevision{kind: expectNoStream}

// Exact appends only if the stream's last event has the given revision.
func Exact(revision uint64) ExpectedRevision {
	return ExpectedRevision{kind: expectExact, revision: revision}
}

// ExpectRevision returns NoStream for a stream that does not exist
// (exists == false) and Exact(last) otherwise.
func ExpectRevision(last uint64, exists bool) ExpectedRevision {
	if !exists {
		return NoStream
	}
	return Exact(last)
}

// IsAny, IsNoStream and Revision let adapters translate the condition.
func (e ExpectedRevision) IsAny() bool      { return e.kind == expectAny }
func (e ExpectedRevision) IsNoStream() bool { return e.kind == expectNoStream }

// Revision returns the exact revision expected and whether one is.
func (e ExpectedRevision) Revision() (uint64, bool) { return e.revision, e.kind == expectExact }

// Satisfied reports whether a stream whose last revision is last (exists ==
// false for a stream with no events) meets the condition.
func (e ExpectedRevision) Satisfied(last uint64, exists bool) bool {
	switch e.kind {
	case expectNoStream:
		return !exists
	case expectExact:
		return exists && last == e.revision
	}
	return true
}

func (e ExpectedRevision) String() string {
	switch e.kind {
	case expectNoStream:
		return "no stream"
	case expectExact:
		return strconv.FormatUint(e.revision, 10)
	}
	return "any"
}

// ErrWrongExpectedRevision is matched (errors.Is) by every
// *WrongExpectedRevisionError.
var ErrWrongExpectedRevision = errors.New("eventstore: wrong expected revision")

// WrongExpectedRevisionError says an append's condition did not hold;
// nothing was written.
type WrongExpectedRevisionError struct {
	Stream   string
	Expected ExpectedRevision
	// Actual is the stream's last revision; ActualExists is false when the
	// stream has no events.
	Actual       uint64
	ActualExists bool
}

func (e *WrongExpectedRevisionError) Error() string {
	actual := "no stream"
	if e.ActualExists {
		actual = strconv.FormatUint(e.Actual, 10)
	}
	return fmt.Sprintf("eventstore: stream %q: expected revision %s, actual %s", e.Stream, e.Expected, actual)
}

// Is makes errors.Is(err, ErrWrongExpectedRevision) true.
func (e *WrongExpectedRevisionError) Is(target error) bool { return target == ErrWrongExpectedRevision }

// ErrClosed is returned by operations on a closed store or subscription.
var ErrClosed = errors.New("eventstore: closed")

// ErrInvalidAppend is returned (wrapped) for an append the store refuses
// whatever its state: no events, an empty stream name, a missing id or type.
var ErrInvalidAppend = errors.New("eventstore: invalid append")

// EventData is an event to append.
type EventData struct {
	// ID identifies the event; appending an id the stream already holds is a
	// no-op (see Store.Append). Derive it with uuid.NewSHA1 from an
	// idempotency key where one exists.
	ID uuid.UUID
	// Type is a lower-case dotted name, e.g. "profile.field_set".
	Type string
	// Data and Metadata are JSON documents.
	Data     []byte
	Metadata []byte
}

// RecordedEvent is an event as stored.
type RecordedEvent struct {
	EventData
	Stream string
	// Revision is the event's 0-based index within its stream.
	Revision uint64
	// Position is the event's place in the global log.
	Position Position
	// Recorded is when the store committed the event.
	Recorded time.Time
}

// AppendResult locates the last event of an append.
type AppendResult struct {
	// Revision is the stream revision of the last event appended.
	Revision uint64
	// Position is the global position of the last event appended.
	Position Position
}

// Direction chooses the order of a stream read.
type Direction uint8

const (
	Forwards Direction = iota
	Backwards
)

// Filter narrows a subscription to the streams whose names start with one of
// StreamPrefixes. An empty filter passes every event.
type Filter struct {
	StreamPrefixes []string
}

// Match reports whether the filter passes an event of the stream.
func (f Filter) Match(stream string) bool {
	if len(f.StreamPrefixes) == 0 {
		return true
	}
	for _, p := range f.StreamPrefixes {
		if strings.HasPrefix(stream, p) {
			return true
		}
	}
	return false
}

// Store is an event store.
type Store interface {
	// Append writes events to the end of stream, all or none, if expected
	// holds, and returns where the last one landed once the write is durable.
	// If every event's ID is already stored in the stream by one earlier
	// append, Append returns that append's result and writes nothing.
	Append(ctx context.Context, stream string, expected ExpectedRevision, events []EventData) (AppendResult, error)

	// ReadStream returns up to limit events of stream starting at revision
	// from (inclusive), in the given direction. Backwards from math.MaxUint64
	// starts at the last event. A stream with no events reads as empty.
	ReadStream(ctx context.Context, stream string, from uint64, dir Direction, limit int) ([]RecordedEvent, error)

	// ReadAll returns up to limit events of the global log strictly after the
	// position, in log order.
	ReadAll(ctx context.Context, after Position, limit int) ([]RecordedEvent, error)

	// Subscribe delivers every event strictly after the position that passes
	// the filter, in log order: first the stored ones, then live ones as they
	// commit, with no gap and no duplicate at the switch.
	Subscribe(ctx context.Context, after Position, filter Filter) (Subscription, error)

	// Head returns the position of the last event in the log (Start if empty).
	Head(ctx context.Context) (Position, error)

	// Close releases the store; pending operations fail with ErrClosed.
	Close() error
}

// Subscription is a stream of recorded events from Store.Subscribe.
type Subscription interface {
	// Next blocks until the next event, the context ends or the
	// subscription fails; after an error the subscription is finished.
	Next(ctx context.Context) (RecordedEvent, error)
	// Close ends the subscription; it is safe to call more than once.
	Close() error
}

// LogLender is a Store that lends pages of its log instead of copying
// them out: a reader of the whole log that is done with each page before
// it needs the next one many pages later (integrity.VerifyStore) reads a
// store that has it through it, and any other store through ReadAll.
type LogLender interface {
	// LendAll returns what ReadAll(ctx, after, limit) returns, from one
	// consistent snapshot, appended to into[:0]. The events' Data and
	// Metadata alias the store's memory: they are read-only, and valid
	// only until release is called, which the caller must do, and soon:
	// the store holds the snapshot until then, and may hold back a write
	// that grows its file. Their other fields are the caller's to keep.
	// release clears the page's events, and does nothing when called
	// again; into may be passed to LendAll again after it.
	LendAll(ctx context.Context, after Position, limit int, into []RecordedEvent) (page []RecordedEvent, release func(), err error)
}
