package domain

import (
	"context"
	"fmt"

	"github.com/profilestore/profilestore/eventstore"
)

// Eraser erases users: their data keys are destroyed, so every sealed copy
// of their names, avatars and field values (in the log, in EventStoreDB, in
// exports and backups) can no longer be read, and a profile.erased event
// records who erased them and when — never what.
type Eraser struct {
	keys     eventstore.Keyring
	sealer   *Sealer
	profiles *ProfileService
}

// NewEraser returns an Eraser; profiles' aggregate lock serialises erasure
// with writes to the same user on this instance.
func NewEraser(keys eventstore.Keyring, sealer *Sealer, profiles *ProfileService) *Eraser {
	return &Eraser{keys: keys, sealer: sealer, profiles: profiles}
}

// EraseProfile is the command to erase a user's profile data.
type EraseProfile struct {
	User  UserID
	Actor Actor
	Meta  Metadata
	// InRooms says the user has entries in rooms (the room view knows): a
	// member joined by an admin or mirrored from the homeserver may have
	// per-room names sealed with their key and no profile stream.
	InRooms bool
}

// Erase destroys the user's keys and then records the erasure. The keys go
// first: if the process dies between the two steps the data is already
// unreadable and a retry only adds the record. Erasing an erased user
// destroys nothing new and appends nothing (idempotent). Erasing a user
// nothing was ever stored about (no profile stream, not InRooms) appends
// nothing either: a mistyped id must not gain a stream.
func (e *Eraser) Erase(ctx context.Context, cmd EraseProfile) (WriteResult, error) {
	if err := e.profiles.policy.CheckErase(cmd.Actor, cmd.User); err != nil {
		return WriteResult{}, err
	}
	user, meta := cmd.User, cmd.Meta
	stream := ProfileStream(user)
	var res WriteResult
	err := e.profiles.streams.locked(ctx, stream, func(agg *aggregate[Profile]) error {
		if !agg.exists && !cmd.InRooms {
			res = agg.result(false)
			return nil
		}
		if err := e.keys.Destroy(ctx, string(user)); err != nil {
			return fmt.Errorf("destroy keys of %s: %w", user, err)
		}
		e.sealer.Forget(user)
		var err error
		res, err = e.profiles.streams.run(ctx, stream, meta.IdempotencyKey, agg, nil, func(p *Profile) ([]Event, error) {
			if agg.lastType == TypeErased && len(p.Fields) == 0 {
				return nil, nil // already erased, nothing written since
			}
			return []Event{{Type: TypeErased, User: user, Meta: meta}}, nil
		})
		return err
	})
	return res, err
}
