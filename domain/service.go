package domain

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/google/uuid"
	"github.com/profilestore/profilestore/eventstore"
)

// maxConflictRetries bounds how often a command is re-decided after another
// writer appended to the same stream first.
const maxConflictRetries = 8

// idempotencyNamespace derives event ids from idempotency keys (UUIDv5), so a
// retried request produces the same ids and the store appends nothing twice.
var idempotencyNamespace = uuid.MustParse("0d7f6a52-6a8e-4e0f-9a3c-5b0f3b8e1c11")

// EventID returns the deterministic event id for the n-th event caused by a
// request with the given idempotency key.
func EventID(idempotencyKey string, n int) uuid.UUID {
	return uuid.NewSHA1(idempotencyNamespace, fmt.Appendf(nil, "%s\x00%d", idempotencyKey, n))
}

// WriteResult tells what a command did.
type WriteResult struct {
	// Changed is false when the command changed nothing and appended nothing.
	Changed bool
	// Position is the global position of the stream's last event after the
	// command (its own last event when Changed): wait for it to read your write.
	Position eventstore.Position
	// Revision and Exists describe the stream after the command (the ETag).
	Revision uint64
	Exists   bool
}

// ProfileService runs profile commands: load the user's stream, decide,
// append with the expected revision, retry on conflict. Loaded profiles are
// cached and only the tail of a stream is read again.
type ProfileService struct {
	store  eventstore.Store
	sealer *Sealer
	limits Limits

	mu         sync.Mutex
	aggregates map[UserID]*profileAggregate
}

type profileAggregate struct {
	mu       sync.Mutex
	loaded   bool
	profile  Profile
	revision uint64
	exists   bool
	position eventstore.Position
	// erased is true while the last event of the stream is profile.erased.
	erased bool
}

// NewProfileService returns a service writing to store.
func NewProfileService(store eventstore.Store, sealer *Sealer, limits Limits) *ProfileService {
	return &ProfileService{store: store, sealer: sealer, limits: limits, aggregates: make(map[UserID]*profileAggregate)}
}

// Limits returns the per-field limits in force.
func (s *ProfileService) Limits() Limits { return s.limits }

// Precondition is an If-Match condition on the profile stream; nil means none.
type Precondition = *eventstore.ExpectedRevision

// SetField sets a key of a user's profile.
func (s *ProfileService) SetField(ctx context.Context, cmd SetField, pre Precondition) (WriteResult, error) {
	return s.run(ctx, cmd.User, cmd.Meta.IdempotencyKey, pre, func(p *Profile) ([]Event, error) {
		return DecideSetField(p, cmd, s.limits)
	})
}

// DeleteField removes a key of a user's profile.
func (s *ProfileService) DeleteField(ctx context.Context, cmd DeleteField, pre Precondition) (WriteResult, error) {
	return s.run(ctx, cmd.User, cmd.Meta.IdempotencyKey, pre, func(p *Profile) ([]Event, error) {
		return DecideDeleteField(p, cmd)
	})
}

// Append runs a decision of the caller's against the user's current profile.
func (s *ProfileService) Append(ctx context.Context, user UserID, idempotencyKey string, decide func(*Profile) ([]Event, error)) (WriteResult, error) {
	return s.run(ctx, user, idempotencyKey, nil, decide)
}

// Profile returns a copy of the user's profile as this service last saw it.
func (s *ProfileService) Profile(ctx context.Context, user UserID) (Profile, WriteResult, error) {
	agg := s.aggregate(user)
	agg.mu.Lock()
	defer agg.mu.Unlock()
	if err := s.catchUp(ctx, user, agg); err != nil {
		return Profile{}, WriteResult{}, err
	}
	return agg.profile.Clone(), WriteResult{Position: agg.position, Revision: agg.revision, Exists: agg.exists}, nil
}

// Forget drops the cached profile of user (after an erasure).
func (s *ProfileService) Forget(user UserID) {
	s.mu.Lock()
	delete(s.aggregates, user)
	s.mu.Unlock()
}

func (s *ProfileService) aggregate(user UserID) *profileAggregate {
	s.mu.Lock()
	defer s.mu.Unlock()
	agg := s.aggregates[user]
	if agg == nil {
		agg = &profileAggregate{}
		s.aggregates[user] = agg
	}
	return agg
}

func (s *ProfileService) run(ctx context.Context, user UserID, idemKey string, pre Precondition, decide func(*Profile) ([]Event, error)) (WriteResult, error) {
	agg := s.aggregate(user)
	agg.mu.Lock()
	defer agg.mu.Unlock()
	// A cached aggregate is not re-read: if another writer moved the stream
	// on, the append's expected revision fails and the tail is read then.
	if !agg.loaded {
		if err := s.catchUp(ctx, user, agg); err != nil {
			return WriteResult{}, err
		}
	}
	for attempt := 0; ; attempt++ {
		if pre != nil && !pre.Satisfied(agg.revision, agg.exists) && attempt == 0 {
			// The cache may be behind another instance's writes: look once.
			if err := s.catchUp(ctx, user, agg); err != nil {
				return WriteResult{}, err
			}
		}
		if pre != nil && !pre.Satisfied(agg.revision, agg.exists) {
			return WriteResult{}, Errorf(ErrCodeConflict, "The profile has changed since the given ETag")
		}
		events, err := decide(&agg.profile)
		if err != nil {
			return WriteResult{}, err
		}
		if len(events) == 0 {
			return WriteResult{Position: agg.position, Revision: agg.revision, Exists: agg.exists}, nil
		}
		data := make([]eventstore.EventData, len(events))
		for i := range events {
			if idemKey != "" {
				events[i].ID = EventID(idemKey, i)
			}
			if data[i], err = Encode(ctx, s.sealer, &events[i]); err != nil {
				return WriteResult{}, err
			}
		}
		res, err := s.store.Append(ctx, ProfileStream(user), eventstore.ExpectRevision(agg.revision, agg.exists), data)
		if errors.Is(err, eventstore.ErrWrongExpectedRevision) && attempt < maxConflictRetries {
			if err := s.catchUp(ctx, user, agg); err != nil {
				return WriteResult{}, err
			}
			continue
		}
		if err != nil {
			return WriteResult{}, fmt.Errorf("append to %s: %w", ProfileStream(user), err)
		}
		want := uint64(len(events) - 1)
		if agg.exists {
			want = agg.revision + uint64(len(events))
		}
		if res.Revision != want {
			// An idempotent re-append answered with an older result: the
			// stream moved on since; read it instead of guessing.
			if err := s.catchUp(ctx, user, agg); err != nil {
				return WriteResult{}, err
			}
			return WriteResult{Changed: false, Position: res.Position, Revision: agg.revision, Exists: agg.exists}, nil
		}
		for i := range events {
			// Folds may remember where an event landed (Profile.AllAt); the
			// append reports only its last position, which no other stream's
			// event lies between.
			events[i].Position = res.Position
			agg.profile.Apply(&events[i])
		}
		agg.erased = false
		agg.revision, agg.exists, agg.position = res.Revision, true, res.Position
		return WriteResult{Changed: true, Position: res.Position, Revision: res.Revision, Exists: true}, nil
	}
}

// catchUp reads the events of the user's stream the aggregate has not seen.
func (s *ProfileService) catchUp(ctx context.Context, user UserID, agg *profileAggregate) error {
	from := uint64(0)
	if agg.exists {
		from = agg.revision + 1
	}
	for {
		recs, err := s.store.ReadStream(ctx, ProfileStream(user), from, eventstore.Forwards, 512)
		if err != nil {
			return fmt.Errorf("read %s: %w", ProfileStream(user), err)
		}
		for _, rec := range recs {
			e, err := Decode(ctx, s.sealer, rec)
			if err != nil {
				return err
			}
			agg.profile.Apply(&e)
			agg.erased = e.Type == TypeErased
			agg.revision, agg.exists, agg.position = rec.Revision, true, rec.Position
		}
		agg.loaded = true
		if len(recs) < 512 {
			return nil
		}
		from = agg.revision + 1
	}
}
