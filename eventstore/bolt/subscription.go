package bolt

import (
	"bytes"
	"context"
	"sync"

	bolt "go.etcd.io/bbolt"

	"github.com/profilestore/profilestore/eventstore"
)

// scanBatch is how many log records a subscription reads per read
// transaction: large enough to amortise the transaction, small enough not to
// hold one open (and delay a remap of the writer) for long.
const scanBatch = 512

// subscription reads the log in batches after its position and, once it has
// caught up, waits for the writer's broadcast. It never holds the writer up:
// each batch is a short read-only transaction.
type subscription struct {
	s        *Store
	ctx      context.Context
	prefixes [][]byte // the filter's stream prefixes; none passes every event
	next     uint64   // first position not yet scanned
	ended    bool     // no position is left after the start
	buf      []eventstore.RecordedEvent
	err      error

	closed    chan struct{}
	closeOnce sync.Once
}

// Subscribe delivers every event after the position that passes the filter,
// stored ones first, then live ones as they commit, with no gap or duplicate.
// The subscription ends when ctx ends, on Close, or when the store closes.
// Next must not be called from two goroutines at once.
func (s *Store) Subscribe(ctx context.Context, after eventstore.Position, filter eventstore.Filter) (eventstore.Subscription, error) {
	if err := s.checkOpen(); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	next, ok := firstAfter(after)
	sub := &subscription{s: s, ctx: ctx, next: next, ended: !ok, closed: make(chan struct{})}
	for _, p := range filter.StreamPrefixes {
		sub.prefixes = append(sub.prefixes, []byte(p))
	}
	return sub, nil
}

// match is eventstore.Filter.Match on the stored name, without converting
// every scanned name to a string.
func (sub *subscription) match(stream []byte) bool {
	if len(sub.prefixes) == 0 {
		return true
	}
	for _, p := range sub.prefixes {
		if bytes.HasPrefix(stream, p) {
			return true
		}
	}
	return false
}

// Next returns the next matching event, waiting for a commit if the
// subscription has caught up. After an error the subscription is finished.
func (sub *subscription) Next(ctx context.Context) (eventstore.RecordedEvent, error) {
	for {
		if sub.err != nil {
			return eventstore.RecordedEvent{}, sub.err
		}
		select {
		case <-sub.closed:
			sub.err = eventstore.ErrClosed
			continue
		default:
		}
		if sub.s.closed.Load() {
			sub.err = eventstore.ErrClosed
			continue
		}
		if err := sub.ctx.Err(); err != nil {
			sub.err = err
			continue
		}
		if err := ctx.Err(); err != nil {
			// The caller's own deadline does not finish the subscription.
			return eventstore.RecordedEvent{}, err
		}
		if len(sub.buf) > 0 {
			e := sub.buf[0]
			sub.buf[0] = eventstore.RecordedEvent{}
			sub.buf = sub.buf[1:]
			return e, nil
		}
		// Take the wake-up channel before reading: a commit the read misses
		// closes it.
		wake := sub.s.changed()
		if !sub.ended && sub.next <= sub.s.head.Load() {
			if err := sub.scan(); err != nil {
				sub.err = wrapRead("subscription", err)
			}
			continue
		}
		select {
		case <-wake:
		case <-sub.closed:
		case <-sub.s.closing:
		case <-sub.ctx.Done():
		case <-ctx.Done():
		}
	}
}

// scan reads up to scanBatch records from sub.next into the buffer, keeping
// those that pass the filter.
func (sub *subscription) scan() error {
	buf := sub.buf[:0]
	err := sub.s.view(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketLog).Cursor()
		n := 0
		for k, v := c.Seek(positionKey(sub.next)); k != nil && n < scanBatch; k, v = c.Next() {
			n++
			pos, err := decodeUint64(k)
			if err != nil {
				return err
			}
			stream, err := recordStream(v)
			if err != nil {
				return err
			}
			if sub.match(stream) {
				e, err := decodeRecord(pos, v)
				if err != nil {
					return err
				}
				buf = append(buf, e)
			}
			if pos == ^uint64(0) {
				sub.ended = true
				break
			}
			sub.next = pos + 1
		}
		return nil
	})
	sub.buf = buf
	return err
}

// Close ends the subscription; a Next waiting in another goroutine returns
// eventstore.ErrClosed. It is safe to call more than once.
func (sub *subscription) Close() error {
	sub.closeOnce.Do(func() { close(sub.closed) })
	return nil
}
