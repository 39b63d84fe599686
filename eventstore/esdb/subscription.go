package esdb

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/EventStore/EventStore-Client-Go/v4/esdb"

	"github.com/profilestore/profilestore/eventstore"
)

// Subscribe implements eventstore.Store with a catch-up subscription to $all
// whose stream-prefix filter runs on the server. An empty filter becomes
// EventStoreDB's "exclude system events" filter. After a lost connection the
// subscription resubscribes strictly after the last event it received, so
// nothing is skipped or delivered twice.
func (s *Store) Subscribe(ctx context.Context, after eventstore.Position, filter eventstore.Filter) (eventstore.Subscription, error) {
	if _, err := s.current(); err != nil {
		return nil, err
	}
	// The subscription lives until Close, the caller's ctx or the store ends.
	life, cancel := context.WithCancel(ctx)
	stopWithStore := context.AfterFunc(s.life, cancel)
	sub := &subscription{
		store:    s,
		filter:   filter,
		last:     after,
		life:     life,
		cancel:   cancel,
		events:   make(chan eventstore.RecordedEvent, 256),
		finished: make(chan struct{}),
	}
	first, err := s.subscribeRaw(life, after, filter)
	if err != nil {
		stopWithStore()
		cancel()
		return nil, err
	}
	go func() {
		defer stopWithStore()
		sub.run(first)
	}()
	return sub, nil
}

// serverFilter is the server-side part of the filter; visible and Match
// finish the job on this side.
func (s *Store) serverFilter(f eventstore.Filter) *esdb.SubscriptionFilter {
	if len(f.StreamPrefixes) == 0 {
		if s.ns != "" {
			return &esdb.SubscriptionFilter{Type: esdb.StreamFilterType, Prefixes: []string{s.ns}}
		}
		return esdb.ExcludeSystemEventsFilter()
	}
	prefixes := make([]string, len(f.StreamPrefixes))
	for i, p := range f.StreamPrefixes {
		prefixes[i] = s.ns + p
	}
	return &esdb.SubscriptionFilter{Type: esdb.StreamFilterType, Prefixes: prefixes}
}

func (s *Store) subscribeRaw(ctx context.Context, after eventstore.Position, f eventstore.Filter) (*esdb.Subscription, error) {
	c, err := s.current()
	if err != nil {
		return nil, err
	}
	opts := esdb.SubscribeToAllOptions{From: esdb.Start{}, Filter: s.serverFilter(f)}
	if !after.IsStart() {
		opts.From = esdb.Position{Commit: after.Commit, Prepare: after.Prepare}
	}
	sub, err := call(ctx, func() (*esdb.Subscription, error) { return c.SubscribeToAll(ctx, opts) })
	if err != nil {
		return nil, s.translate(ctx, c, "subscribe to $all", err)
	}
	return sub, nil
}

// subscription pumps events from EventStoreDB subscriptions, one after the
// other across reconnections, into a channel that Next reads.
type subscription struct {
	store  *Store
	filter eventstore.Filter
	// last is the position of the last event received from the server;
	// only run touches it.
	last   eventstore.Position
	life   context.Context
	cancel context.CancelFunc

	events   chan eventstore.RecordedEvent
	finished chan struct{} // closed when run returns; err says why
	err      error
	closed   atomic.Bool
	once     sync.Once
}

func (sub *subscription) run(cur *esdb.Subscription) {
	defer close(sub.finished)
	for {
		dropped := sub.pump(cur)
		cur.Close()
		if sub.life.Err() != nil {
			sub.err = sub.endError()
			return
		}
		sub.store.log.WithError(dropped).WithField("after", sub.last.String()).Info("esdb: subscription dropped, resubscribing")
		next, err := sub.resubscribe()
		if err != nil {
			sub.err = err
			return
		}
		cur = next
	}
}

// endError says why the subscription's life ended.
func (sub *subscription) endError() error {
	if sub.closed.Load() || sub.store.isClosed() {
		return eventstore.ErrClosed
	}
	return context.Cause(sub.life)
}

// pump delivers events from cur until it drops, and returns why.
func (sub *subscription) pump(cur *esdb.Subscription) error {
	// Recv does not watch a context; closing cur ends it.
	stop := context.AfterFunc(sub.life, func() { cur.Close() })
	defer stop()
	for {
		ev := cur.Recv()
		switch {
		case ev.SubscriptionDropped != nil:
			return ev.SubscriptionDropped.Error
		case ev.EventAppeared == nil || ev.EventAppeared.Event == nil:
			continue // checkpoints and caught-up markers
		}
		e := ev.EventAppeared.Event
		p := position(e)
		if !sub.last.Before(p) {
			continue // already delivered before a reconnection
		}
		sub.last = p
		if !sub.store.visible(e) {
			continue
		}
		rec := sub.store.recorded(e)
		if !sub.filter.Match(rec.Stream) {
			continue
		}
		select {
		case sub.events <- rec:
		case <-sub.life.Done():
			return sub.life.Err()
		}
	}
}

// resubscribe tries, with growing pauses, to subscribe again after the last
// received event, until the store's ResubscribeTimeout runs out.
func (sub *subscription) resubscribe() (*esdb.Subscription, error) {
	deadline := time.Now().Add(sub.store.resubscribeTimeout)
	pause := 10 * time.Millisecond
	for {
		next, err := sub.store.subscribeRaw(sub.life, sub.last, sub.filter)
		if err == nil {
			sub.store.log.WithField("after", sub.last.String()).Info("esdb: subscription resumed")
			return next, nil
		}
		if sub.life.Err() != nil {
			return nil, sub.endError()
		}
		if !errors.Is(err, ErrUnavailable) || time.Now().After(deadline) {
			return nil, fmt.Errorf("esdb: subscription after %s: %w", sub.last, err)
		}
		t := time.NewTimer(pause)
		select {
		case <-t.C:
		case <-sub.life.Done():
			t.Stop()
			return nil, sub.endError()
		}
		pause = min(2*pause, 500*time.Millisecond)
	}
}

// Next implements eventstore.Subscription.
func (sub *subscription) Next(ctx context.Context) (eventstore.RecordedEvent, error) {
	if err := ctx.Err(); err != nil {
		return eventstore.RecordedEvent{}, err
	}
	if sub.closed.Load() || sub.store.isClosed() {
		return eventstore.RecordedEvent{}, eventstore.ErrClosed
	}
	select {
	case e := <-sub.events:
		return e, nil
	case <-sub.finished:
		// Events queued before the end are still delivered.
		select {
		case e := <-sub.events:
			if sub.err == nil || !errors.Is(sub.err, eventstore.ErrClosed) {
				return e, nil
			}
		default:
		}
		return eventstore.RecordedEvent{}, sub.err
	case <-ctx.Done():
		return eventstore.RecordedEvent{}, ctx.Err()
	}
}

// Close implements eventstore.Subscription.
func (sub *subscription) Close() error {
	sub.once.Do(func() {
		sub.closed.Store(true)
		sub.cancel()
	})
	return nil
}
