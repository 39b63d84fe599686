package domain

import (
	"encoding/json"
	"strings"
	"time"

	"github.com/profilestore/profilestore/eventstore"
)

// Stream categories. Stream names follow EventStoreDB's category-id
// convention so that $ce-profile and $ce-room projections work there.
const (
	ProfileCategory = "profile-"
	RoomCategory    = "room-"
)

// ProfileStream names the stream of a user's global profile.
func ProfileStream(u UserID) string { return ProfileCategory + string(u) }

// RoomStream names the stream of a room's membership and per-room profiles.
func RoomStream(r RoomID) string { return RoomCategory + string(r) }

// Event types: a public contract (docs/EVENTS.md). Payloads carry "v", the
// schema version; a payload change comes with an upcaster, never a rewrite.
const (
	TypeFieldSet          = "profile.field_set"
	TypeFieldDeleted      = "profile.field_deleted"
	TypeEntryHidden       = "profile.entry_hidden"
	TypeErased            = "profile.erased"
	TypeMemberJoined      = "room.member_joined"
	TypeMemberInvited     = "room.member_invited"
	TypeMemberLeft        = "room.member_left"
	TypeMemberProfileSet  = "room.member_profile_set"
	TypeMemberProfileGone = "room.member_profile_cleared"
	TypeHistoryVisibility = "room.history_visibility_set"
	TypePowerLevels       = "room.power_levels_set"
)

// EventTypes returns every event type above, the catalogue of the change
// feed's type filter.
func EventTypes() []string {
	return []string{TypeFieldSet, TypeFieldDeleted, TypeEntryHidden, TypeErased,
		TypeMemberJoined, TypeMemberInvited, TypeMemberLeft, TypeMemberProfileSet, TypeMemberProfileGone,
		TypeHistoryVisibility, TypePowerLevels}
}

// SchemaVersion is the payload version written today.
const SchemaVersion = 1

// Propagation says how a global displayname or avatar_url change reaches the
// rooms a user is in (MSC4466 propagate_to; MSC4069 propagate=false is None).
type Propagation string

const (
	// PropagateAll replaces the field in every room, clearing per-room overrides.
	PropagateAll Propagation = "all"
	// PropagateUnchanged replaces it in rooms without a per-room override.
	PropagateUnchanged Propagation = "unchanged"
	// PropagateNone leaves every room as it was.
	PropagateNone Propagation = "none"
)

// ParsePropagation reads a propagate_to value.
func ParsePropagation(s string) (Propagation, error) {
	switch p := Propagation(s); p {
	case PropagateAll, PropagateUnchanged, PropagateNone:
		return p, nil
	}
	return "", Errorf(ErrCodeInvalidParam, "propagate_to must be one of all, unchanged, none")
}

// Metadata travels with every event.
type Metadata struct {
	OccurredAt time.Time `json:"occurred_at"`
	// Actor is who caused the event: a user, an admin, an appservice's sender.
	Actor UserID `json:"actor,omitempty"`
	// Source is where it came from: "client", "admin", "appservice:<id>",
	// "mirror:<appservice id>", "import".
	Source string `json:"source,omitempty"`
	// IdempotencyKey, where one exists, also derives the event id.
	IdempotencyKey string `json:"idempotency_key,omitempty"`
	// Reason is why a moderator or admin acted (hiding an entry, erasing
	// a user), as they typed it. It is kept in plain text beside the event,
	// also after an erasure, so it must not repeat the user's values.
	Reason string `json:"reason,omitempty"`
	// OrderTS places an event written after the fact (a backfill from the
	// homeserver) in its room's history: the homeserver's timeline time in
	// milliseconds, non-decreasing along the room's timeline. Views order
	// history by it instead of by log position (docs/DECISIONS.md, "History
	// order"). Zero for events recorded as they happened.
	OrderTS int64 `json:"order_ts,omitempty"`
}

// Payloads as stored. Personal values are Sealed with the user's key.

type fieldSetPayload struct {
	V           int         `json:"v"`
	Key         string      `json:"key"`
	Value       Sealed      `json:"value"`
	PropagateTo Propagation `json:"propagate_to,omitempty"`
}

type fieldDeletedPayload struct {
	V           int         `json:"v"`
	Key         string      `json:"key"`
	PropagateTo Propagation `json:"propagate_to,omitempty"`
}

type entryHiddenPayload struct {
	V        int    `json:"v"`
	Position string `json:"position"`
}

type erasedPayload struct {
	V int `json:"v"`
}

type memberPayload struct {
	V           int    `json:"v"`
	UserID      UserID `json:"user_id"`
	DisplayName Sealed `json:"displayname,omitempty"`
	AvatarURL   Sealed `json:"avatar_url,omitempty"`
	// Membership is set on room.member_left: leave, kick or ban.
	Membership string `json:"membership,omitempty"`
	By         UserID `json:"by,omitempty"`
}

type memberProfilePayload struct {
	V      int    `json:"v"`
	UserID UserID `json:"user_id"`
	Field  string `json:"field"`
	Value  Sealed `json:"value,omitempty"`
}

type historyVisibilityPayload struct {
	V          int    `json:"v"`
	Visibility string `json:"history_visibility"`
}

type powerLevelsPayload struct {
	V            int            `json:"v"`
	Users        map[UserID]int `json:"users,omitempty"`
	UsersDefault int            `json:"users_default"`
	Kick         int            `json:"kick"`
}

// StreamOwner returns the user of a profile stream, or "".
func StreamOwner(stream string) UserID {
	if u, ok := strings.CutPrefix(stream, ProfileCategory); ok {
		return UserID(u)
	}
	return ""
}

// StreamRoom returns the room of a room stream, or "".
func StreamRoom(stream string) RoomID {
	if r, ok := strings.CutPrefix(stream, RoomCategory); ok {
		return RoomID(r)
	}
	return ""
}

func decodeMetadata(rec eventstore.RecordedEvent) Metadata {
	var m Metadata
	_ = json.Unmarshal(rec.Metadata, &m) // metadata is informative; a bad one reads as empty
	if m.OccurredAt.IsZero() {
		m.OccurredAt = rec.Recorded
	}
	return m
}
