package domain

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/profilestore/profilestore/eventstore"
)

// GlobalProfiles reads users' global profiles; *ProfileService is one.
type GlobalProfiles interface {
	Profile(ctx context.Context, user UserID) (Profile, WriteResult, error)
}

// RoomService runs room commands: load the room's stream, decide, append
// with the expected revision, retry on conflict. Loaded rooms are cached and
// only the tail of a stream is read again.
type RoomService struct {
	store    eventstore.Store
	sealer   *Sealer
	limits   Limits
	profiles GlobalProfiles

	mu    sync.Mutex
	rooms map[RoomID]*roomAggregate
}

type roomAggregate struct {
	mu       sync.Mutex
	loaded   bool
	room     Room
	revision uint64
	exists   bool
	position eventstore.Position
}

// NewRoomService returns a service writing to store; profiles supplies the
// names of members who join or are invited without names of their own.
func NewRoomService(store eventstore.Store, sealer *Sealer, limits Limits, profiles GlobalProfiles) *RoomService {
	return &RoomService{store: store, sealer: sealer, limits: limits, profiles: profiles, rooms: make(map[RoomID]*roomAggregate)}
}

// ChangeMembership joins, invites, removes or bans a user. A join or invite
// without names takes the user's global displayname and avatar_url.
func (s *RoomService) ChangeMembership(ctx context.Context, cmd ChangeMembership) (WriteResult, error) {
	if (cmd.Membership == MembershipJoin || cmd.Membership == MembershipInvite) && (cmd.DisplayName == nil || cmd.AvatarURL == nil) && s.profiles != nil {
		p, _, err := s.profiles.Profile(ctx, cmd.User)
		if err != nil {
			return WriteResult{}, err
		}
		if cmd.DisplayName == nil {
			dn := p.DisplayName()
			cmd.DisplayName = &dn
		}
		if cmd.AvatarURL == nil {
			av := p.AvatarURL()
			cmd.AvatarURL = &av
		}
	}
	return s.run(ctx, cmd.Room, cmd.Meta.IdempotencyKey, func(r *Room) ([]Event, error) {
		return DecideMembership(r, cmd, s.limits)
	})
}

// SetMemberProfile sets a per-room override.
func (s *RoomService) SetMemberProfile(ctx context.Context, cmd SetMemberProfile) (WriteResult, error) {
	var err error
	if cmd.ClearedAt, err = s.clearedAt(ctx, cmd.User, cmd.Field); err != nil {
		return WriteResult{}, err
	}
	return s.run(ctx, cmd.Room, cmd.Meta.IdempotencyKey, func(r *Room) ([]Event, error) {
		return DecideSetMemberProfile(r, cmd, s.limits)
	})
}

// ClearMemberProfile removes a per-room override.
func (s *RoomService) ClearMemberProfile(ctx context.Context, cmd ClearMemberProfile) (WriteResult, error) {
	var err error
	if cmd.ClearedAt, err = s.clearedAt(ctx, cmd.User, cmd.Field); err != nil {
		return WriteResult{}, err
	}
	return s.run(ctx, cmd.Room, cmd.Meta.IdempotencyKey, func(r *Room) ([]Event, error) {
		return DecideClearMemberProfile(r, cmd)
	})
}

// SetHistoryVisibility changes the room's history visibility.
func (s *RoomService) SetHistoryVisibility(ctx context.Context, cmd SetHistoryVisibility) (WriteResult, error) {
	return s.run(ctx, cmd.Room, cmd.Meta.IdempotencyKey, func(r *Room) ([]Event, error) {
		return DecideHistoryVisibility(r, cmd)
	})
}

// SetPowerLevels records who moderates the room.
func (s *RoomService) SetPowerLevels(ctx context.Context, cmd SetPowerLevels) (WriteResult, error) {
	return s.run(ctx, cmd.Room, cmd.Meta.IdempotencyKey, func(r *Room) ([]Event, error) {
		return DecidePowerLevels(r, cmd)
	})
}

// clearedAt reads where the user's last propagate_to=all change of field
// landed, which the room stream alone cannot know.
func (s *RoomService) clearedAt(ctx context.Context, user UserID, field string) (eventstore.Position, error) {
	if s.profiles == nil {
		return eventstore.Start, nil
	}
	p, _, err := s.profiles.Profile(ctx, user)
	if err != nil {
		return eventstore.Start, err
	}
	return p.AllAt[field], nil
}

func (s *RoomService) aggregate(room RoomID) *roomAggregate {
	s.mu.Lock()
	defer s.mu.Unlock()
	agg := s.rooms[room]
	if agg == nil {
		agg = &roomAggregate{}
		s.rooms[room] = agg
	}
	return agg
}

func (s *RoomService) run(ctx context.Context, room RoomID, idemKey string, decide func(*Room) ([]Event, error)) (WriteResult, error) {
	agg := s.aggregate(room)
	agg.mu.Lock()
	defer agg.mu.Unlock()
	// A cached aggregate is not re-read: if another writer moved the stream
	// on, the append's expected revision fails and the tail is read then.
	if !agg.loaded {
		if err := s.catchUp(ctx, room, agg); err != nil {
			return WriteResult{}, err
		}
	}
	for attempt := 0; ; attempt++ {
		events, err := decide(&agg.room)
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
		res, err := s.store.Append(ctx, RoomStream(room), eventstore.ExpectRevision(agg.revision, agg.exists), data)
		if errors.Is(err, eventstore.ErrWrongExpectedRevision) && attempt < maxConflictRetries {
			if err := s.catchUp(ctx, room, agg); err != nil {
				return WriteResult{}, err
			}
			continue
		}
		if err != nil {
			return WriteResult{}, fmt.Errorf("append to %s: %w", RoomStream(room), err)
		}
		want := uint64(len(events) - 1)
		if agg.exists {
			want = agg.revision + uint64(len(events))
		}
		if res.Revision != want {
			// An idempotent re-append answered with an older result.
			if err := s.catchUp(ctx, room, agg); err != nil {
				return WriteResult{}, err
			}
			return WriteResult{Position: res.Position, Revision: agg.revision, Exists: agg.exists}, nil
		}
		for i := range events {
			events[i].Position = res.Position // Room.OverrideAt needs it
			agg.room.Apply(&events[i])
		}
		agg.revision, agg.exists, agg.position = res.Revision, true, res.Position
		return WriteResult{Changed: true, Position: res.Position, Revision: res.Revision, Exists: true}, nil
	}
}

// catchUp reads the events of the room's stream the aggregate has not seen.
func (s *RoomService) catchUp(ctx context.Context, room RoomID, agg *roomAggregate) error {
	from := uint64(0)
	if agg.exists {
		from = agg.revision + 1
	}
	for {
		recs, err := s.store.ReadStream(ctx, RoomStream(room), from, eventstore.Forwards, 512)
		if err != nil {
			return fmt.Errorf("read %s: %w", RoomStream(room), err)
		}
		for _, rec := range recs {
			e, err := Decode(ctx, s.sealer, rec)
			if err != nil {
				return err
			}
			agg.room.Apply(&e)
			agg.revision, agg.exists, agg.position = rec.Revision, true, rec.Position
		}
		agg.loaded = true
		if len(recs) < 512 {
			return nil
		}
		from = agg.revision + 1
	}
}
