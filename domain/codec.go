package domain

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/profilestore/profilestore/eventstore"
)

// Event is a profile or room event in plain form: what decisions produce and
// what folds and projections consume. Fields not used by a type are zero.
type Event struct {
	Type     string
	Position eventstore.Position // set on recorded events
	Revision uint64              // set on recorded events
	Meta     Metadata
	ID       uuid.UUID

	User UserID // whose profile or membership it is about
	Room RoomID // room events

	// Key is the profile key (profile.*) or the field (room.member_profile_*).
	Key string
	// Value is the canonical JSON value set (profile.field_set,
	// room.member_profile_set); nil otherwise.
	Value       json.RawMessage
	PropagateTo Propagation

	// DisplayName and AvatarURL are the member's names at a membership event.
	DisplayName *string
	AvatarURL   *string
	Membership  string // room.member_left: leave, kick, ban
	By          UserID // who kicked, banned, invited or hid

	Visibility  string       // room.history_visibility_set
	PowerLevels *PowerLevels // room.power_levels_set

	// Hidden is the position of the entry hidden by profile.entry_hidden.
	Hidden eventstore.Position

	// Erased is true when the event's personal values can no longer be read
	// because the user's keys were destroyed; Value, DisplayName and
	// AvatarURL are then empty.
	Erased bool
}

// PowerLevels is the part of m.room.power_levels that decides who moderates.
type PowerLevels struct {
	Users        map[UserID]int `json:"users,omitempty"`
	UsersDefault int            `json:"users_default"`
	Kick         int            `json:"kick"`
}

// Level returns the power level of u.
func (p *PowerLevels) Level(u UserID) int {
	if p == nil {
		return 0
	}
	if l, ok := p.Users[u]; ok {
		return l
	}
	return p.UsersDefault
}

// IsModerator reports whether u may kick, which is what makes a moderator here.
func (p *PowerLevels) IsModerator(u UserID) bool {
	if p == nil {
		return false
	}
	return p.Level(u) >= p.Kick
}

// Stream returns the stream the event belongs to.
func (e *Event) Stream() string {
	if e.Room != "" {
		return RoomStream(e.Room)
	}
	return ProfileStream(e.User)
}

// Encode seals the event's personal values and serialises it for the store.
// A zero ID gets a random one.
func Encode(ctx context.Context, s *Sealer, e *Event) (eventstore.EventData, error) {
	// Metadata comes from outside (an appservice event's timestamp, an
	// import): a time JSON cannot hold is bad input, not a server fault.
	if y := e.Meta.OccurredAt.Year(); y < 0 || y > 9999 {
		return eventstore.EventData{}, Errorf(ErrCodeInvalidParam, "The event's time is outside years 0 to 9999")
	}
	var payload any
	switch e.Type {
	case TypeFieldSet:
		v, err := s.Seal(ctx, e.User, e.Value)
		if err != nil {
			return eventstore.EventData{}, err
		}
		payload = fieldSetPayload{V: SchemaVersion, Key: e.Key, Value: v, PropagateTo: e.PropagateTo}
	case TypeFieldDeleted:
		payload = fieldDeletedPayload{V: SchemaVersion, Key: e.Key, PropagateTo: e.PropagateTo}
	case TypeEntryHidden:
		payload = entryHiddenPayload{V: SchemaVersion, Position: e.Hidden.String()}
	case TypeErased:
		payload = erasedPayload{V: SchemaVersion}
	case TypeMemberJoined, TypeMemberInvited, TypeMemberLeft:
		p := memberPayload{V: SchemaVersion, UserID: e.User, Membership: e.Membership, By: e.By}
		var err error
		if p.DisplayName, err = sealString(ctx, s, e.User, e.DisplayName); err != nil {
			return eventstore.EventData{}, err
		}
		if p.AvatarURL, err = sealString(ctx, s, e.User, e.AvatarURL); err != nil {
			return eventstore.EventData{}, err
		}
		payload = p
	case TypeMemberProfileSet:
		v, err := s.Seal(ctx, e.User, e.Value)
		if err != nil {
			return eventstore.EventData{}, err
		}
		payload = memberProfilePayload{V: SchemaVersion, UserID: e.User, Field: e.Key, Value: v}
	case TypeMemberProfileGone:
		payload = memberProfilePayload{V: SchemaVersion, UserID: e.User, Field: e.Key}
	case TypeHistoryVisibility:
		payload = historyVisibilityPayload{V: SchemaVersion, Visibility: e.Visibility}
	case TypePowerLevels:
		pl := e.PowerLevels
		if pl == nil {
			pl = &PowerLevels{}
		}
		payload = powerLevelsPayload{V: SchemaVersion, Users: pl.Users, UsersDefault: pl.UsersDefault, Kick: pl.Kick}
	default:
		return eventstore.EventData{}, fmt.Errorf("encode: unknown event type %q", e.Type)
	}
	data, err := json.Marshal(payload)
	if err != nil {
		return eventstore.EventData{}, fmt.Errorf("encode %s: %w", e.Type, err)
	}
	meta, err := json.Marshal(e.Meta)
	if err != nil {
		return eventstore.EventData{}, fmt.Errorf("encode metadata: %w", err)
	}
	id := e.ID
	if id == uuid.Nil {
		id = uuid.New()
	}
	return eventstore.EventData{ID: id, Type: e.Type, Data: data, Metadata: meta}, nil
}

func sealString(ctx context.Context, s *Sealer, u UserID, v *string) (Sealed, error) {
	if v == nil {
		return "", nil
	}
	b, _ := json.Marshal(*v)
	return s.Seal(ctx, u, b)
}

// Decode reads a recorded event and opens its personal values. Values whose
// key was destroyed decode with Erased set, never as an error. Unknown event
// types and malformed payloads are errors the caller logs and skips.
func Decode(ctx context.Context, s *Sealer, rec eventstore.RecordedEvent) (Event, error) {
	e := Event{Type: rec.Type, Position: rec.Position, Revision: rec.Revision, Meta: decodeMetadata(rec), ID: rec.ID}
	if e.Meta.OccurredAt.IsZero() {
		e.Meta.OccurredAt = time.Now()
	}
	var err error
	switch rec.Type {
	case TypeFieldSet:
		var p fieldSetPayload
		if err = json.Unmarshal(rec.Data, &p); err != nil {
			break
		}
		e.User, e.Key, e.PropagateTo = StreamOwner(rec.Stream), p.Key, p.PropagateTo
		e.Value, err = open(ctx, s, e.User, p.Value, &e.Erased)
	case TypeFieldDeleted:
		var p fieldDeletedPayload
		err = json.Unmarshal(rec.Data, &p)
		e.User, e.Key, e.PropagateTo = StreamOwner(rec.Stream), p.Key, p.PropagateTo
	case TypeEntryHidden:
		var p entryHiddenPayload
		if err = json.Unmarshal(rec.Data, &p); err != nil {
			break
		}
		e.User = StreamOwner(rec.Stream)
		e.By = e.Meta.Actor
		e.Hidden, err = eventstore.ParsePosition(p.Position)
		if moved, ok := s.movedHide(rec.Stream, rec.Revision); ok {
			// An import put the entry elsewhere and kept this event's
			// bytes (its hash covers them): see moved.go.
			e.Hidden = moved
		}
	case TypeErased:
		var p erasedPayload
		err = json.Unmarshal(rec.Data, &p)
		e.User, e.By = StreamOwner(rec.Stream), e.Meta.Actor
	case TypeMemberJoined, TypeMemberInvited, TypeMemberLeft:
		var p memberPayload
		if err = json.Unmarshal(rec.Data, &p); err != nil {
			break
		}
		e.Room, e.User, e.Membership, e.By = StreamRoom(rec.Stream), p.UserID, p.Membership, p.By
		if e.DisplayName, err = openString(ctx, s, e.User, p.DisplayName, &e.Erased); err != nil {
			break
		}
		e.AvatarURL, err = openString(ctx, s, e.User, p.AvatarURL, &e.Erased)
	case TypeMemberProfileSet, TypeMemberProfileGone:
		var p memberProfilePayload
		if err = json.Unmarshal(rec.Data, &p); err != nil {
			break
		}
		e.Room, e.User, e.Key = StreamRoom(rec.Stream), p.UserID, p.Field
		if rec.Type == TypeMemberProfileSet {
			e.Value, err = open(ctx, s, e.User, p.Value, &e.Erased)
		}
	case TypeHistoryVisibility:
		var p historyVisibilityPayload
		err = json.Unmarshal(rec.Data, &p)
		e.Room, e.Visibility = StreamRoom(rec.Stream), p.Visibility
	case TypePowerLevels:
		var p powerLevelsPayload
		err = json.Unmarshal(rec.Data, &p)
		e.Room = StreamRoom(rec.Stream)
		e.PowerLevels = &PowerLevels{Users: p.Users, UsersDefault: p.UsersDefault, Kick: p.Kick}
	default:
		return e, fmt.Errorf("decode: unknown event type %q at %s", rec.Type, rec.Position)
	}
	if err != nil {
		return e, fmt.Errorf("decode %s at %s: %w", rec.Type, rec.Position, err)
	}
	return e, nil
}

func open(ctx context.Context, s *Sealer, u UserID, v Sealed, erased *bool) (json.RawMessage, error) {
	if v == "" {
		return nil, nil
	}
	plain, err := s.Open(ctx, u, v)
	if errors.Is(err, ErrErased) {
		*erased = true
		return nil, nil
	}
	return plain, err
}

func openString(ctx context.Context, s *Sealer, u UserID, v Sealed, erased *bool) (*string, error) {
	raw, err := open(ctx, s, u, v, erased)
	if err != nil || raw == nil {
		return nil, err
	}
	var str string
	if err := json.Unmarshal(raw, &str); err != nil {
		return nil, err
	}
	return &str, nil
}
