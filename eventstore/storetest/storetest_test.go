package storetest_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/profilestore/profilestore/eventstore"
	"github.com/profilestore/profilestore/eventstore/storetest"
)

// memLog is the state of an in-memory store, shared by its reopened handles.
type memLog struct {
	mu      sync.Mutex
	events  []eventstore.RecordedEvent
	streams map[string][]int
	ids     map[string]map[uuid.UUID]eventstore.AppendResult
	wake    chan struct{}
}

// memStore is the simplest store that meets the port; it checks that the
// suite itself is satisfiable without timing assumptions.
type memStore struct {
	log    *memLog
	closed chan struct{}
	once   sync.Once
}

func newMemStore(l *memLog) *memStore { return &memStore{log: l, closed: make(chan struct{})} }

func (s *memStore) isClosed() bool {
	select {
	case <-s.closed:
		return true
	default:
		return false
	}
}

func (s *memStore) Append(ctx context.Context, stream string, exp eventstore.ExpectedRevision, evs []eventstore.EventData) (eventstore.AppendResult, error) {
	if s.isClosed() {
		return eventstore.AppendResult{}, eventstore.ErrClosed
	}
	if stream == "" || len(evs) == 0 {
		return eventstore.AppendResult{}, eventstore.ErrInvalidAppend
	}
	for _, e := range evs {
		if e.ID == uuid.Nil || e.Type == "" {
			return eventstore.AppendResult{}, eventstore.ErrInvalidAppend
		}
	}
	l := s.log
	l.mu.Lock()
	defer l.mu.Unlock()
	known := 0
	var prev eventstore.AppendResult
	for _, e := range evs {
		if r, ok := l.ids[stream][e.ID]; ok && (known == 0 || r == prev) {
			known++
			prev = r
		}
	}
	revs := l.streams[stream]
	last, exists := uint64(len(revs))-1, len(revs) > 0
	switch {
	case known == len(evs):
		return prev, nil
	case known > 0:
		return eventstore.AppendResult{}, &eventstore.WrongExpectedRevisionError{Stream: stream, Expected: exp, Actual: last, ActualExists: exists}
	case !exp.Satisfied(last, exists):
		return eventstore.AppendResult{}, &eventstore.WrongExpectedRevisionError{Stream: stream, Expected: exp, Actual: last, ActualExists: exists}
	}
	if l.ids[stream] == nil {
		l.ids[stream] = map[uuid.UUID]eventstore.AppendResult{}
	}
	now := time.Now()
	var res eventstore.AppendResult
	for _, e := range evs {
		p := uint64(len(l.events) + 1)
		res = eventstore.AppendResult{Revision: uint64(len(l.streams[stream])), Position: eventstore.Position{Commit: p, Prepare: p}}
		l.streams[stream] = append(l.streams[stream], len(l.events))
		l.events = append(l.events, eventstore.RecordedEvent{EventData: e, Stream: stream, Revision: res.Revision, Position: res.Position, Recorded: now})
	}
	for _, e := range evs {
		l.ids[stream][e.ID] = res
	}
	close(l.wake)
	l.wake = make(chan struct{})
	return res, nil
}

func (s *memStore) ReadStream(ctx context.Context, stream string, from uint64, dir eventstore.Direction, limit int) ([]eventstore.RecordedEvent, error) {
	if s.isClosed() {
		return nil, eventstore.ErrClosed
	}
	s.log.mu.Lock()
	defer s.log.mu.Unlock()
	idx := s.log.streams[stream]
	var out []eventstore.RecordedEvent
	if dir == eventstore.Forwards {
		for r := from; r < uint64(len(idx)) && len(out) < limit; r++ {
			out = append(out, s.log.events[idx[r]])
		}
		return out, nil
	}
	if len(idx) == 0 {
		return nil, nil
	}
	r := min(from, uint64(len(idx)-1))
	for ; len(out) < limit; r-- {
		out = append(out, s.log.events[idx[r]])
		if r == 0 {
			break
		}
	}
	return out, nil
}

func (s *memStore) ReadAll(ctx context.Context, after eventstore.Position, limit int) ([]eventstore.RecordedEvent, error) {
	if s.isClosed() {
		return nil, eventstore.ErrClosed
	}
	s.log.mu.Lock()
	defer s.log.mu.Unlock()
	var out []eventstore.RecordedEvent
	for _, e := range s.log.events {
		if after.Before(e.Position) && len(out) < limit {
			out = append(out, e)
		}
	}
	return out, nil
}

func (s *memStore) Head(ctx context.Context) (eventstore.Position, error) {
	if s.isClosed() {
		return eventstore.Start, eventstore.ErrClosed
	}
	s.log.mu.Lock()
	defer s.log.mu.Unlock()
	if len(s.log.events) == 0 {
		return eventstore.Start, nil
	}
	return s.log.events[len(s.log.events)-1].Position, nil
}

func (s *memStore) Close() error {
	s.once.Do(func() { close(s.closed) })
	return nil
}

type memSub struct {
	s      *memStore
	ctx    context.Context
	filter eventstore.Filter
	pos    eventstore.Position
	closed chan struct{}
	once   sync.Once
}

func (s *memStore) Subscribe(ctx context.Context, after eventstore.Position, f eventstore.Filter) (eventstore.Subscription, error) {
	if s.isClosed() {
		return nil, eventstore.ErrClosed
	}
	return &memSub{s: s, ctx: ctx, filter: f, pos: after, closed: make(chan struct{})}, nil
}

func (m *memSub) Next(ctx context.Context) (eventstore.RecordedEvent, error) {
	for {
		select {
		case <-m.closed:
			return eventstore.RecordedEvent{}, eventstore.ErrClosed
		case <-m.s.closed:
			return eventstore.RecordedEvent{}, eventstore.ErrClosed
		default:
		}
		if err := ctx.Err(); err != nil {
			return eventstore.RecordedEvent{}, err
		}
		if err := m.ctx.Err(); err != nil {
			return eventstore.RecordedEvent{}, err
		}
		l := m.s.log
		l.mu.Lock()
		wake := l.wake
		for _, e := range l.events {
			if m.pos.Before(e.Position) {
				m.pos = e.Position
				if m.filter.Match(e.Stream) {
					l.mu.Unlock()
					return e, nil
				}
			}
		}
		l.mu.Unlock()
		select {
		case <-wake:
		case <-m.closed:
		case <-m.s.closed:
		case <-ctx.Done():
		case <-m.ctx.Done():
		}
	}
}

func (m *memSub) Close() error {
	m.once.Do(func() { close(m.closed) })
	return nil
}

type memHarness struct{}

func (memHarness) Open(t *testing.T) eventstore.Store {
	s := newMemStore(&memLog{streams: map[string][]int{}, ids: map[string]map[uuid.UUID]eventstore.AppendResult{}, wake: make(chan struct{})})
	t.Cleanup(func() { s.Close() })
	return s
}

func (memHarness) Reopen(t *testing.T, s eventstore.Store) eventstore.Store {
	s.Close()
	n := newMemStore(s.(*memStore).log)
	t.Cleanup(func() { n.Close() })
	return n
}

// TestSuiteOnMemoryStore checks that the suite passes a minimal correct store.
func TestSuiteOnMemoryStore(t *testing.T) { storetest.Run(t, memHarness{}) }

type memKeys struct {
	mu        sync.Mutex
	live      map[string]eventstore.DataKey
	destroyed map[string]uint32
}

type memKeyring struct{ k *memKeys }

func (r memKeyring) Current(ctx context.Context, subject string) (eventstore.DataKey, error) {
	r.k.mu.Lock()
	defer r.k.mu.Unlock()
	if k, ok := r.k.live[subject]; ok {
		return k, nil
	}
	k := eventstore.DataKey{Generation: r.k.destroyed[subject] + 1}
	if _, err := rand.Read(k.Secret[:]); err != nil {
		return eventstore.DataKey{}, fmt.Errorf("key: %w", err)
	}
	r.k.live[subject] = k
	return k, nil
}

func (r memKeyring) Lookup(ctx context.Context, subject string, gen uint32) (eventstore.DataKey, error) {
	r.k.mu.Lock()
	defer r.k.mu.Unlock()
	if k, ok := r.k.live[subject]; ok && k.Generation == gen {
		return k, nil
	}
	return eventstore.DataKey{}, eventstore.ErrKeyDestroyed
}

func (r memKeyring) Destroy(ctx context.Context, subject string) error {
	r.k.mu.Lock()
	defer r.k.mu.Unlock()
	if k, ok := r.k.live[subject]; ok {
		r.k.destroyed[subject] = k.Generation
		delete(r.k.live, subject)
	}
	return nil
}

func (r memKeyring) Close() error { return nil }

type memKeyHarness struct{}

func (memKeyHarness) Open(t *testing.T) eventstore.Keyring {
	return memKeyring{&memKeys{live: map[string]eventstore.DataKey{}, destroyed: map[string]uint32{}}}
}

func (memKeyHarness) Reopen(t *testing.T, k eventstore.Keyring) eventstore.Keyring { return k }

// TestKeyringSuiteOnMemoryKeyring checks that the keyring suite passes a
// minimal correct keyring.
func TestKeyringSuiteOnMemoryKeyring(t *testing.T) { storetest.RunKeyring(t, memKeyHarness{}) }
