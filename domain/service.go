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

// ProfileService runs profile commands: check the actor against the write
// policy, load the user's stream, decide, append with the expected revision,
// retry on conflict. Concurrent commands on one user share an append. Loaded
// profiles are cached (a bounded LRU, CacheSize) and only the tail of a
// cached stream is read again.
type ProfileService struct {
	streams *streams[Profile, *Profile]
	policy  WritePolicy
}

// NewProfileService returns a service writing to store under policy; it
// caches DefaultCachedProfiles profiles unless CacheSize says otherwise.
func NewProfileService(store eventstore.Store, sealer *Sealer, policy WritePolicy, opts ...ServiceOption) *ProfileService {
	o := applyOptions(DefaultCachedProfiles, opts)
	return &ProfileService{streams: newStreams[Profile](store, sealer, o.cacheSize), policy: policy}
}

// CacheStats describes the profile cache.
func (s *ProfileService) CacheStats() CacheStats { return s.streams.stats() }

// Policy returns the write policy in force.
func (s *ProfileService) Policy() WritePolicy { return s.policy }

// Precondition is an If-Match condition on the profile stream; nil means none.
type Precondition = *eventstore.ExpectedRevision

// SetField sets a key of a user's profile.
func (s *ProfileService) SetField(ctx context.Context, cmd SetField, pre Precondition) (WriteResult, error) {
	if err := s.policy.CheckProfileWrite(cmd.Actor, cmd.User, cmd.Key); err != nil {
		return WriteResult{}, err
	}
	return s.run(ctx, cmd.User, cmd.Meta.IdempotencyKey, pre, func(p *Profile) ([]Event, error) {
		return DecideSetField(p, cmd, s.policy.Limits)
	})
}

// DeleteField removes a key of a user's profile.
func (s *ProfileService) DeleteField(ctx context.Context, cmd DeleteField, pre Precondition) (WriteResult, error) {
	if err := s.policy.CheckProfileWrite(cmd.Actor, cmd.User, cmd.Key); err != nil {
		return WriteResult{}, err
	}
	return s.run(ctx, cmd.User, cmd.Meta.IdempotencyKey, pre, func(p *Profile) ([]Event, error) {
		return DecideDeleteField(p, cmd)
	})
}

// UserHistory knows the entries of users' histories, which span the
// user's profile stream and every room stream they were in; the history
// view (projections.Rooms) is one.
type UserHistory interface {
	UserEntry(user UserID, at eventstore.Position) (found, hidden bool)
}

// HideEntry hides an entry of the user's history found in history (nil: no
// history is kept). Hiding is idempotent: its event id derives from the
// user and the entry, and an entry already hidden appends nothing.
func (s *ProfileService) HideEntry(ctx context.Context, cmd HideEntry, history UserHistory) (WriteResult, error) {
	if err := s.policy.CheckHide(cmd.Actor, cmd.User); err != nil {
		return WriteResult{}, err
	}
	if history == nil {
		return WriteResult{}, Errorf(ErrCodeNotFound, "No history is kept here")
	}
	if found, _ := history.UserEntry(cmd.User, cmd.Entry); !found {
		return WriteResult{}, Errorf(ErrCodeNotFound, "No entry of %s's history is at %s", cmd.User, cmd.Entry)
	}
	cmd.Meta.IdempotencyKey = "hide:" + string(cmd.User) + ":" + cmd.Entry.String()
	return s.run(ctx, cmd.User, cmd.Meta.IdempotencyKey, nil, func(p *Profile) ([]Event, error) {
		return DecideHideEntry(p, cmd)
	})
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
