package domain

import (
	"context"
	"errors"
	"fmt"

	"github.com/profilestore/profilestore/eventstore"
)

// Eraser erases users: their data keys are destroyed, so every sealed copy
// of their names, avatars and field values (in the log, in EventStoreDB, in
// exports and backups) can no longer be read, and a profile.erased event
// records who erased them and when — never what.
type Eraser struct {
	store    eventstore.Store
	keys     eventstore.Keyring
	sealer   *Sealer
	profiles *ProfileService
}

// NewEraser returns an Eraser; profiles' aggregate lock serialises erasure
// with writes to the same user on this instance.
func NewEraser(store eventstore.Store, keys eventstore.Keyring, sealer *Sealer, profiles *ProfileService) *Eraser {
	return &Eraser{store: store, keys: keys, sealer: sealer, profiles: profiles}
}

// Erase destroys the user's keys and then records the erasure. The keys go
// first: if the process dies between the two steps the data is already
// unreadable and a retry only adds the record. Erasing an erased user
// destroys nothing new and appends nothing (idempotent).
func (e *Eraser) Erase(ctx context.Context, user UserID, meta Metadata) (WriteResult, error) {
	agg := e.profiles.aggregate(user)
	agg.mu.Lock()
	defer agg.mu.Unlock()
	if !agg.loaded {
		if err := e.profiles.catchUp(ctx, user, agg); err != nil {
			return WriteResult{}, err
		}
	}
	if err := e.keys.Destroy(ctx, string(user)); err != nil {
		return WriteResult{}, fmt.Errorf("destroy keys of %s: %w", user, err)
	}
	e.sealer.Forget(user)
	for attempt := 0; ; attempt++ {
		if agg.erased && len(agg.profile.Fields) == 0 {
			return WriteResult{Position: agg.position, Revision: agg.revision, Exists: agg.exists}, nil
		}
		ev := Event{Type: TypeErased, User: user, Meta: meta}
		if meta.IdempotencyKey != "" {
			ev.ID = EventID(meta.IdempotencyKey, 0)
		}
		data, err := Encode(ctx, e.sealer, &ev)
		if err != nil {
			return WriteResult{}, err
		}
		res, err := e.store.Append(ctx, ProfileStream(user), eventstore.ExpectRevision(agg.revision, agg.exists), []eventstore.EventData{data})
		if errors.Is(err, eventstore.ErrWrongExpectedRevision) && attempt < maxConflictRetries {
			if err := e.profiles.catchUp(ctx, user, agg); err != nil {
				return WriteResult{}, err
			}
			continue
		}
		if err != nil {
			return WriteResult{}, fmt.Errorf("record erasure of %s: %w", user, err)
		}
		agg.profile.Apply(&ev)
		agg.erased = true
		agg.revision, agg.exists, agg.position = res.Revision, true, res.Position
		return WriteResult{Changed: true, Position: res.Position, Revision: res.Revision, Exists: true}, nil
	}
}
