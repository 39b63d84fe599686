package domain

import (
	"context"
	"encoding/json"
	"slices"
)

// A backfill records history that happened before profilestore heard of it
// (docs/APPSERVICE.md, "Backfill"). Its events are not decided against the
// state now, as commands are: the homeserver already decided them, back
// then. They carry Meta.OrderTS, their place in history, and change current
// state only where nothing newer decided it (Room.Apply, Profile.Apply).

// PastRoomEvent is what one Matrix event of a room's past made, as a
// backfill read it.
type PastRoomEvent struct {
	// Events are room.member_joined, room.member_invited, room.member_left,
	// room.member_profile_set, room.member_profile_cleared,
	// room.history_visibility_set or room.power_levels_set with their
	// fields; Room and Meta are set from the command.
	Events []Event
	Room   RoomID
	Actor  Actor
	// Meta must carry OrderTS and an idempotency key (from the Matrix
	// event id, so that a second backfill appends nothing).
	Meta Metadata
}

// validate checks what a past event may hold, as the commands that make
// such events check it.
func (cmd *PastRoomEvent) validate(e Event, lim Limits) (Event, error) {
	e.Room, e.Meta = cmd.Room, cmd.Meta
	if cmd.Meta.OrderTS <= 0 || cmd.Meta.IdempotencyKey == "" {
		return e, Errorf(ErrCodeInvalidParam, "A backfilled event needs its place in history (order_ts) and an idempotency key")
	}
	var err error
	switch e.Type {
	case TypeMemberJoined, TypeMemberInvited:
		if e.DisplayName, err = memberValue(KeyDisplayName, e.DisplayName, lim); err != nil {
			return e, err
		}
		if e.AvatarURL, err = memberValue(KeyAvatarURL, e.AvatarURL, lim); err != nil {
			return e, err
		}
	case TypeMemberLeft:
		switch e.Membership {
		case MembershipLeave, MembershipKick, MembershipBan:
		default:
			return e, Errorf(ErrCodeInvalidParam, "membership must be leave, kick or ban")
		}
	case TypeMemberProfileSet:
		var s string
		if json.Unmarshal(e.Value, &s) != nil {
			return e, Errorf(ErrCodeInvalidParam, "A per-room value must be a string")
		}
		if s, err = validateRoomString(e.Key, s, lim); err != nil {
			return e, err
		}
		if s == "" {
			return e, Errorf(ErrCodeInvalidParam, "A per-room value may not be empty")
		}
		e.Value, _ = json.Marshal(s)
	case TypeMemberProfileGone:
	case TypeHistoryVisibility:
		if e.Visibility, err = ParseHistoryVisibility(e.Visibility); err != nil {
			return e, err
		}
	case TypePowerLevels:
		if e.PowerLevels == nil {
			return e, Errorf(ErrCodeInvalidParam, "Power levels are missing")
		}
		evs, err := DecidePowerLevels(&Room{}, SetPowerLevels{Room: cmd.Room, PowerLevels: *e.PowerLevels, Meta: cmd.Meta})
		if err != nil {
			return e, err
		}
		e = evs[0]
	default:
		return e, Errorf(ErrCodeInvalidParam, "%s is not a room event a backfill records", e.Type)
	}
	switch e.Type {
	case TypeMemberJoined, TypeMemberInvited, TypeMemberLeft, TypeMemberProfileSet, TypeMemberProfileGone:
		if _, err := ParseHistoricalUserID(string(e.User)); err != nil {
			return e, err
		}
		if e.Type == TypeMemberProfileSet || e.Type == TypeMemberProfileGone {
			if e.Key != KeyDisplayName && e.Key != KeyAvatarURL {
				return e, Errorf(ErrCodeInvalidParam, "A per-room value is a displayname or an avatar_url")
			}
		}
	}
	return e, nil
}

// RecordPast appends a backfilled room event, unless the room already has
// events recorded as they happened from its time on: those are mirror
// mode's, and it has this one or its successors (Changed is then false).
func (s *RoomService) RecordPast(ctx context.Context, cmd PastRoomEvent) (WriteResult, error) {
	if err := s.policy.CheckRoomWrite(cmd.Actor); err != nil {
		return WriteResult{}, err
	}
	if len(cmd.Events) == 0 {
		return WriteResult{}, Errorf(ErrCodeInvalidParam, "Nothing to record")
	}
	events := make([]Event, len(cmd.Events))
	for i, e := range cmd.Events {
		var err error
		if events[i], err = cmd.validate(e, s.policy.Limits); err != nil {
			return WriteResult{}, err
		}
	}
	return s.run(ctx, cmd.Room, cmd.Meta.IdempotencyKey, func(r *Room) ([]Event, error) {
		if r.LiveSince != 0 && cmd.Meta.OrderTS >= r.LiveSince {
			return nil, nil
		}
		return slices.Clone(events), nil
	})
}

// LiveSince returns the occurred_at (ms) of the room's first event recorded
// as it happened, 0 when there is none: where a backfill of it stops.
func (s *RoomService) LiveSince(ctx context.Context, room RoomID) (int64, error) {
	var since int64
	stream := RoomStream(room)
	err := s.streams.locked(ctx, stream, func(agg *aggregate[Room]) error {
		if err := s.streams.catchUp(ctx, stream, agg); err != nil {
			return err
		}
		since = agg.state.LiveSince
		return nil
	})
	return since, err
}

// PastField is a global change of displayname or avatar_url that a backfill
// read from the homeserver's member events; Value nil deletes the field.
type PastField struct {
	User  UserID
	Key   string
	Value *string
	Actor Actor
	// Meta must carry OrderTS and an idempotency key.
	Meta Metadata
}

// RecordPast appends a backfilled global change (propagate_to unchanged,
// as a homeserver propagates), unless the profile has changes recorded as
// they happened from its time on.
func (s *ProfileService) RecordPast(ctx context.Context, cmd PastField) (WriteResult, error) {
	if err := s.policy.CheckProfileWrite(cmd.Actor, cmd.User, cmd.Key); err != nil {
		return WriteResult{}, err
	}
	if cmd.Meta.OrderTS <= 0 || cmd.Meta.IdempotencyKey == "" {
		return WriteResult{}, Errorf(ErrCodeInvalidParam, "A backfilled change needs its place in history (order_ts) and an idempotency key")
	}
	if cmd.Key != KeyDisplayName && cmd.Key != KeyAvatarURL {
		return WriteResult{}, Errorf(ErrCodeInvalidParam, "A backfill records displayname and avatar_url only")
	}
	e := Event{Type: TypeFieldDeleted, User: cmd.User, Key: cmd.Key, PropagateTo: PropagateUnchanged, Meta: cmd.Meta}
	if cmd.Value != nil {
		v, err := validateRoomString(cmd.Key, *cmd.Value, s.policy.Limits)
		if err != nil {
			return WriteResult{}, err
		}
		if v != "" {
			e.Type, e.Value = TypeFieldSet, mustJSON(v)
		}
	}
	return s.run(ctx, cmd.User, cmd.Meta.IdempotencyKey, nil, func(p *Profile) ([]Event, error) {
		if p.LiveSince != 0 && e.Meta.OrderTS >= p.LiveSince {
			return nil, nil
		}
		return []Event{e}, nil
	})
}

func mustJSON(s string) json.RawMessage {
	b, _ := json.Marshal(s)
	return b
}
