package domain

import (
	"context"

	"github.com/profilestore/profilestore/eventstore"
)

// GlobalProfiles reads users' global profiles; *ProfileService is one.
type GlobalProfiles interface {
	Profile(ctx context.Context, user UserID) (Profile, WriteResult, error)
}

// RoomService runs room commands: check the actor against the write policy,
// load the room's stream, decide, append with the expected revision, retry
// on conflict. Concurrent commands on one room share an append. Loaded rooms
// are cached (a bounded LRU, CacheSize) and only the tail of a cached stream
// is read again.
type RoomService struct {
	policy   WritePolicy
	profiles GlobalProfiles
	streams  *streams[Room, *Room]
}

// NewRoomService returns a service writing to store; profiles supplies the
// names of members who join or are invited without names of their own. It
// caches DefaultCachedRooms rooms unless CacheSize says otherwise.
func NewRoomService(store eventstore.Store, sealer *Sealer, policy WritePolicy, profiles GlobalProfiles, opts ...ServiceOption) *RoomService {
	o := applyOptions(DefaultCachedRooms, opts)
	return &RoomService{policy: policy, profiles: profiles, streams: newStreams[Room](store, sealer, o.cacheSize)}
}

// CacheStats describes the room cache.
func (s *RoomService) CacheStats() CacheStats { return s.streams.stats() }

// ChangeMembership joins, invites, removes, bans or unbans a user. A join
// or invite without names takes the user's global displayname and
// avatar_url; a join of a member already joined compares its names with
// them.
func (s *RoomService) ChangeMembership(ctx context.Context, cmd ChangeMembership) (WriteResult, error) {
	if err := s.policy.CheckRoomWrite(cmd.Actor); err != nil {
		return WriteResult{}, err
	}
	if (cmd.Membership == MembershipJoin || cmd.Membership == MembershipInvite) && s.profiles != nil {
		p, _, err := s.profiles.Profile(ctx, cmd.User)
		if err != nil {
			return WriteResult{}, err
		}
		cmd.Global = p
	}
	return s.run(ctx, cmd.Room, cmd.Meta.IdempotencyKey, func(r *Room) ([]Event, error) {
		return DecideMembership(r, cmd, s.policy.Limits)
	})
}

// SetMemberProfile sets a per-room override.
func (s *RoomService) SetMemberProfile(ctx context.Context, cmd SetMemberProfile) (WriteResult, error) {
	var err error
	if cmd.ClearedAt, err = s.memberProfileWrite(ctx, cmd.Actor, cmd.User, cmd.Field); err != nil {
		return WriteResult{}, err
	}
	return s.run(ctx, cmd.Room, cmd.Meta.IdempotencyKey, func(r *Room) ([]Event, error) {
		return DecideSetMemberProfile(r, cmd, s.policy.Limits)
	})
}

// ClearMemberProfile removes a per-room override.
func (s *RoomService) ClearMemberProfile(ctx context.Context, cmd ClearMemberProfile) (WriteResult, error) {
	var err error
	if cmd.ClearedAt, err = s.memberProfileWrite(ctx, cmd.Actor, cmd.User, cmd.Field); err != nil {
		return WriteResult{}, err
	}
	return s.run(ctx, cmd.Room, cmd.Meta.IdempotencyKey, func(r *Room) ([]Event, error) {
		return DecideClearMemberProfile(r, cmd)
	})
}

// SetHistoryVisibility changes the room's history visibility.
func (s *RoomService) SetHistoryVisibility(ctx context.Context, cmd SetHistoryVisibility) (WriteResult, error) {
	if err := s.policy.CheckRoomWrite(cmd.Actor); err != nil {
		return WriteResult{}, err
	}
	return s.run(ctx, cmd.Room, cmd.Meta.IdempotencyKey, func(r *Room) ([]Event, error) {
		return DecideHistoryVisibility(r, cmd)
	})
}

// SetPowerLevels records who moderates the room.
func (s *RoomService) SetPowerLevels(ctx context.Context, cmd SetPowerLevels) (WriteResult, error) {
	if err := s.policy.CheckRoomWrite(cmd.Actor); err != nil {
		return WriteResult{}, err
	}
	return s.run(ctx, cmd.Room, cmd.Meta.IdempotencyKey, func(r *Room) ([]Event, error) {
		return DecidePowerLevels(r, cmd)
	})
}

// memberProfileWrite checks that actor may change user's per-room field and
// reads where the user's last propagate_to=all change of field landed, which
// the room stream alone cannot know.
func (s *RoomService) memberProfileWrite(ctx context.Context, actor Actor, user UserID, field string) (eventstore.Position, error) {
	if err := s.policy.CheckProfileWrite(actor, user, field); err != nil {
		return eventstore.Start, err
	}
	if s.profiles == nil {
		return eventstore.Start, nil
	}
	p, _, err := s.profiles.Profile(ctx, user)
	if err != nil {
		return eventstore.Start, err
	}
	return p.AllAt[field], nil
}

func (s *RoomService) run(ctx context.Context, room RoomID, idemKey string, decide func(*Room) ([]Event, error)) (WriteResult, error) {
	return s.streams.submit(ctx, RoomStream(room), &command[Room]{idemKey: idemKey, decide: decide})
}
