package domain

import (
	"context"
	"fmt"

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
// append with the expected revision, retry on conflict. Concurrent commands
// on one user share an append. Loaded profiles are cached (a bounded LRU,
// CacheSize) and only the tail of a cached stream is read again.
type ProfileService struct {
	streams *streams[Profile, *Profile]
	limits  Limits
}

// NewProfileService returns a service writing to store; it caches
// DefaultCachedProfiles profiles unless CacheSize says otherwise.
func NewProfileService(store eventstore.Store, sealer *Sealer, limits Limits, opts ...ServiceOption) *ProfileService {
	o := applyOptions(DefaultCachedProfiles, opts)
	return &ProfileService{streams: newStreams[Profile](store, sealer, o.cacheSize), limits: limits}
}

// CacheStats describes the profile cache.
func (s *ProfileService) CacheStats() CacheStats { return s.streams.stats() }

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

// Profile returns a copy of the user's profile, reading what the stream
// gained since this service last looked.
func (s *ProfileService) Profile(ctx context.Context, user UserID) (Profile, WriteResult, error) {
	stream := ProfileStream(user)
	agg := s.streams.acquire(stream)
	defer s.streams.release(stream, agg)
	agg.mu.Lock()
	defer agg.mu.Unlock()
	if err := s.streams.catchUp(ctx, stream, agg); err != nil {
		return Profile{}, WriteResult{}, err
	}
	return agg.state.Clone(), agg.result(false), nil
}

func (s *ProfileService) run(ctx context.Context, user UserID, idemKey string, pre Precondition, decide func(*Profile) ([]Event, error)) (WriteResult, error) {
	stream := ProfileStream(user)
	var check func(*aggregate[Profile]) error
	if pre != nil {
		lookedOnce := false
		check = func(agg *aggregate[Profile]) error {
			if !pre.Satisfied(agg.revision, agg.exists) && !lookedOnce {
				// The cache may be behind another instance's writes: look once.
				lookedOnce = true
				if err := s.streams.catchUp(ctx, stream, agg); err != nil {
					return err
				}
			}
			if !pre.Satisfied(agg.revision, agg.exists) {
				return Errorf(ErrCodeConflict, "The profile has changed since the given ETag")
			}
			return nil
		}
	}
	return s.streams.submit(ctx, stream, &command[Profile]{idemKey: idemKey, check: check, decide: decide})
}
