package domain

import (
	"bytes"
	"encoding/json"
	"maps"
	"strings"
	"unicode/utf8"

	"github.com/profilestore/profilestore/eventstore"
)

// Membership values. Join, invite, leave and ban are states a member is in.
// Kick, unban and knock are only ever commands: a kick and an unban end in
// leave (room.member_left with membership kick, or leave after a ban), and
// profilestore records no knocks (a knocking user is not in the room).
const (
	MembershipJoin   = "join"
	MembershipInvite = "invite"
	MembershipLeave  = "leave"
	MembershipKick   = "kick"
	MembershipBan    = "ban"
	MembershipUnban  = "unban"
	MembershipKnock  = "knock"
)

// History visibility values of m.room.history_visibility.
const (
	VisibilityShared        = "shared"
	VisibilityInvited       = "invited"
	VisibilityJoined        = "joined"
	VisibilityWorldReadable = "world_readable"
)

// DefaultHistoryVisibility applies to rooms that never set one, as in Matrix.
const DefaultHistoryVisibility = VisibilityShared

// ParseHistoryVisibility validates a history_visibility value.
func ParseHistoryVisibility(s string) (string, error) {
	switch s {
	case VisibilityShared, VisibilityInvited, VisibilityJoined, VisibilityWorldReadable:
		return s, nil
	}
	return "", Errorf(ErrCodeInvalidParam, "history_visibility must be one of shared, invited, joined, world_readable")
}

// RoomMember is one user's state in a room.
type RoomMember struct {
	// Membership is join, invite, leave or ban.
	Membership string
	// Overrides are the member's per-room values (displayname, avatar_url),
	// canonical JSON strings. They belong to one membership: leaving drops them.
	Overrides map[string]json.RawMessage
	// OverrideAt is where each override was set: a later global change with
	// propagate_to all cleared it without the room stream knowing.
	OverrideAt map[string]eventstore.Position
	// PastOrder is the order_ts of the backfilled event the state came
	// from, or liveState once an event recorded as it happened decided it.
	PastOrder int64
}

// liveState marks state that an event recorded as it happened decided: a
// backfilled event, older by construction, is then history only.
const liveState int64 = -1

// supersedes reports whether an event may decide state last decided at
// order (liveState, 0 for never, or a backfilled event's order_ts), and
// returns the order the state then has. Live events always decide (they
// are decided on this state); a backfilled one only over older backfilled
// state (docs/DECISIONS.md, "History order and backfill").
func supersedes(e *Event, order int64) (int64, bool) {
	if e.Meta.OrderTS <= 0 {
		return liveState, true
	}
	if order == liveState || order > e.Meta.OrderTS {
		return order, false
	}
	return e.Meta.OrderTS, true
}

// override returns the member's override of field unless a global change
// with propagate_to all at clearedAt came after it.
func (m *RoomMember) override(field string, clearedAt eventstore.Position) (json.RawMessage, bool) {
	if m == nil {
		return nil, false
	}
	v, ok := m.Overrides[field]
	if !ok || m.OverrideAt[field].Before(clearedAt) {
		return nil, false
	}
	return v, true
}

// Room is the fold of a room-<roomId> stream: what decisions need to know.
// The zero Room is empty and usable.
type Room struct {
	Members map[UserID]*RoomMember
	// HistoryVisibility is "" until the room sets one (DefaultHistoryVisibility).
	HistoryVisibility string
	// PowerLevels is nil until the room sets them; nobody moderates until then.
	PowerLevels *PowerLevels
	// VisibilityOrder and PowerLevelsOrder are where those came from (see
	// RoomMember.PastOrder).
	VisibilityOrder, PowerLevelsOrder int64
	// LiveSince is the occurred_at (ms) of the room's first event recorded
	// as it happened, 0 if none: a backfill writes only what came before.
	LiveSince int64
}

// Membership returns u's membership: join, invite, ban, or leave (also for
// users the room never saw).
func (r *Room) Membership(u UserID) string {
	if m := r.Members[u]; m != nil {
		return m.Membership
	}
	return MembershipLeave
}

// Visibility returns the history visibility in force.
func (r *Room) Visibility() string {
	if r.HistoryVisibility == "" {
		return DefaultHistoryVisibility
	}
	return r.HistoryVisibility
}

// Apply folds one room event into the room.
func (r *Room) Apply(e *Event) {
	member := func() *RoomMember {
		if r.Members == nil {
			r.Members = make(map[UserID]*RoomMember)
		}
		m := r.Members[e.User]
		if m == nil {
			m = &RoomMember{Membership: MembershipLeave}
			r.Members[e.User] = m
		}
		return m
	}
	if e.Meta.OrderTS <= 0 && r.LiveSince == 0 {
		r.LiveSince = max(e.Meta.OccurredAt.UnixMilli(), 1)
	}
	switch e.Type {
	case TypeMemberJoined, TypeMemberInvited, TypeMemberLeft, TypeMemberProfileSet, TypeMemberProfileGone:
		m := member()
		order, ok := supersedes(e, m.PastOrder)
		if !ok {
			return // a backfilled event older than the member's state: history only
		}
		m.PastOrder = order
	case TypeHistoryVisibility:
		order, ok := supersedes(e, r.VisibilityOrder)
		if !ok {
			return
		}
		r.VisibilityOrder = order
	case TypePowerLevels:
		order, ok := supersedes(e, r.PowerLevelsOrder)
		if !ok {
			return
		}
		r.PowerLevelsOrder = order
	}
	switch e.Type {
	case TypeMemberJoined:
		m := member()
		if m.Membership != MembershipJoin {
			m.Overrides = nil
		}
		m.Membership = MembershipJoin
	case TypeMemberInvited:
		m := member()
		m.Membership, m.Overrides = MembershipInvite, nil
	case TypeMemberLeft:
		m := member()
		m.Membership, m.Overrides = MembershipLeave, nil
		if e.Membership == MembershipBan {
			m.Membership = MembershipBan
		}
	case TypeMemberProfileSet:
		m := member()
		if e.Erased {
			delete(m.Overrides, e.Key)
			return
		}
		if m.Overrides == nil {
			m.Overrides = make(map[string]json.RawMessage)
			m.OverrideAt = make(map[string]eventstore.Position)
		}
		m.Overrides[e.Key] = e.Value
		m.OverrideAt[e.Key] = e.Position
	case TypeMemberProfileGone:
		delete(member().Overrides, e.Key)
	case TypeHistoryVisibility:
		r.HistoryVisibility = e.Visibility
	case TypePowerLevels:
		r.PowerLevels = e.PowerLevels
	}
}

// settle gives the override e set the position the store gave it, where a
// batch folded it at a provisional one.
func (r *Room) settle(e *Event, provisional, actual eventstore.Position) {
	if m := r.Members[e.User]; m != nil && m.OverrideAt[e.Key] == provisional {
		m.OverrideAt[e.Key] = actual
	}
}

// ChangeMembership is the command to join, invite, leave, kick, ban, unban
// or knock a user.
type ChangeMembership struct {
	Room RoomID
	User UserID
	// Membership is join, invite, leave, kick, ban, unban or knock.
	Membership string
	// DisplayName and AvatarURL are the member's names at a join or invite;
	// nil means "the user's global profile" (Global) at a first join or an
	// invite, and "unchanged" at a join of a member already joined; a
	// pointer to "" means none.
	DisplayName *string
	AvatarURL   *string
	// Global is the user's global profile, which the service reads: the
	// names a join or invite takes by default, and what a join of a member
	// already joined compares its names with.
	Global Profile
	// FromHomeserver marks a change the homeserver already made (mirror
	// mode). It is recorded even where profilestore's state says Matrix
	// forbids it: the homeserver checked it, so profilestore's state is the
	// one out of date (events it never received), and following the
	// homeserver puts the room right again.
	FromHomeserver bool
	Actor          Actor
	Meta           Metadata
}

// DecideMembership returns the events of a membership change, following
// the transitions of Matrix's m.room.member table (docs/API.md has the
// whole table):
//
//   - join: a first join records the names at join; a join of a member
//     already joined is a change of their names in the room (a per-room
//     value, or back to the global one).
//   - leave: the member leaves (or rejects an invite); on a banned member,
//     set by someone else, it is an unban, as in Matrix.
//   - kick: someone else removes a joined or invited member. A kick does
//     not lift a ban: on a banned member it is refused (unban says what is
//     meant), except from the homeserver, where a leave by someone else on
//     a banned member is an unban.
//   - unban: a banned member's ban is lifted (they are then not in the room).
//   - knock: recorded as the end of an invite, if there was one; a knock
//     is not a membership profilestore keeps.
//
// None when the user is already in the requested state. Transitions Matrix
// never makes (a banned user joining, a joined user invited) are 403
// M_FORBIDDEN unless FromHomeserver.
func DecideMembership(r *Room, cmd ChangeMembership, lim Limits) ([]Event, error) {
	cur := r.Membership(cmd.User)
	strict := !cmd.FromHomeserver
	base := Event{Room: cmd.Room, User: cmd.User, Meta: cmd.Meta}
	byOther := cmd.Meta.Actor != cmd.User
	left := func(membership string) []Event {
		base.Type, base.Membership = TypeMemberLeft, membership
		if byOther {
			base.By = cmd.Meta.Actor
		}
		return []Event{base}
	}
	switch cmd.Membership {
	case MembershipJoin, MembershipInvite:
		if cur == MembershipJoin && cmd.Membership == MembershipJoin {
			return decideMemberNames(r, cmd, lim)
		}
		dn, av := cmd.DisplayName, cmd.AvatarURL
		if dn == nil {
			g := cmd.Global.DisplayName()
			dn = &g
		}
		if av == nil {
			g := cmd.Global.AvatarURL()
			av = &g
		}
		var err error
		if dn, err = memberValue(KeyDisplayName, dn, lim); err != nil {
			return nil, err
		}
		if av, err = memberValue(KeyAvatarURL, av, lim); err != nil {
			return nil, err
		}
		if cur == MembershipBan && strict {
			return nil, Errorf(ErrCodeForbidden, "%s is banned from this room: unban them first (membership unban)", cmd.User)
		}
		if cur == cmd.Membership {
			return nil, nil
		}
		if cmd.Membership == MembershipInvite && cur == MembershipJoin && strict {
			return nil, Errorf(ErrCodeForbidden, "%s is already in the room", cmd.User)
		}
		base.Type, base.DisplayName, base.AvatarURL = TypeMemberJoined, dn, av
		if cmd.Membership == MembershipInvite {
			base.Type, base.By = TypeMemberInvited, cmd.Meta.Actor
		}
		return []Event{base}, nil
	case MembershipLeave:
		switch {
		case cur == MembershipLeave:
			return nil, nil
		case cur == MembershipBan && !byOther && strict:
			return nil, Errorf(ErrCodeForbidden, "%s is banned: only someone else can unban them", cmd.User)
		}
		return left(MembershipLeave), nil
	case MembershipKick:
		switch cur {
		case MembershipJoin, MembershipInvite:
			return left(MembershipKick), nil
		case MembershipBan:
			if strict {
				return nil, Errorf(ErrCodeForbidden, "%s is banned: a kick does not lift a ban (use membership unban)", cmd.User)
			}
			return left(MembershipLeave), nil // the homeserver's leave by someone else: an unban
		}
		return nil, nil // kicking someone who is not there changes nothing
	case MembershipUnban:
		switch cur {
		case MembershipBan:
			return left(MembershipLeave), nil
		case MembershipLeave:
			return nil, nil
		}
		if strict {
			return nil, Errorf(ErrCodeForbidden, "%s is not banned from this room", cmd.User)
		}
		return nil, nil
	case MembershipBan:
		if cur == MembershipBan {
			return nil, nil
		}
		return left(MembershipBan), nil
	case MembershipKnock:
		switch cur {
		case MembershipLeave:
			return nil, nil
		case MembershipInvite:
			return left(MembershipLeave), nil // knocking replaces the invite
		}
		if strict {
			return nil, Errorf(ErrCodeForbidden, "%s cannot knock: they are %s", cmd.User, map[string]string{MembershipJoin: "already in the room", MembershipBan: "banned"}[cur])
		}
		return left(MembershipLeave), nil
	}
	return nil, Errorf(ErrCodeInvalidParam, "membership must be one of join, invite, leave, kick, ban, unban, knock")
}

// decideMemberNames returns the events of a join of a member already
// joined: the names it gives become the room's. A name equal to the user's
// global one (or none) clears the room's override, as the room then shows
// the global value; another is a per-room value. Names not given are left
// as they are.
func decideMemberNames(r *Room, cmd ChangeMembership, lim Limits) ([]Event, error) {
	var events []Event
	for _, f := range []struct {
		key    string
		value  *string
		global string
	}{{KeyDisplayName, cmd.DisplayName, cmd.Global.DisplayName()}, {KeyAvatarURL, cmd.AvatarURL, cmd.Global.AvatarURL()}} {
		if f.value == nil {
			continue
		}
		v, err := validateRoomString(f.key, *f.value, lim)
		if err != nil {
			return nil, err
		}
		var evs []Event
		if v == "" || v == f.global {
			evs, err = DecideClearMemberProfile(r, ClearMemberProfile{Room: cmd.Room, User: cmd.User, Field: f.key, ClearedAt: cmd.Global.AllAt[f.key], Actor: cmd.Actor, Meta: cmd.Meta})
		} else {
			evs, err = DecideSetMemberProfile(r, SetMemberProfile{Room: cmd.Room, User: cmd.User, Field: f.key, Value: v, ClearedAt: cmd.Global.AllAt[f.key], Actor: cmd.Actor, Meta: cmd.Meta}, lim)
		}
		if err != nil {
			return nil, err
		}
		events = append(events, evs...)
	}
	return events, nil
}

// memberValue validates a displayname or avatar_url given at a join or
// invite; "" and nil both mean none.
func memberValue(key string, v *string, lim Limits) (*string, error) {
	if v == nil {
		return nil, nil
	}
	s, err := validateRoomString(key, *v, lim)
	if err != nil || s == "" {
		return nil, err
	}
	return &s, nil
}

// validateRoomString applies the global profile's limits to a value shown in
// a room, so a room never holds a name the global profile would refuse.
func validateRoomString(key, s string, lim Limits) (string, error) {
	switch key {
	case KeyDisplayName:
		s = strings.TrimSpace(s)
		if n := utf8.RuneCountInString(s); lim.MaxDisplayNameChars > 0 && n > lim.MaxDisplayNameChars {
			return "", Errorf(ErrCodeTooLarge, "displayname is longer than %d characters", lim.MaxDisplayNameChars)
		}
		if strings.ContainsRune(s, 0) {
			return "", Errorf(ErrCodeInvalidParam, "displayname may not contain NUL")
		}
		if !utf8.ValidString(s) {
			return "", Errorf(ErrCodeInvalidParam, "displayname is not valid UTF-8")
		}
	case KeyAvatarURL:
		if s == "" {
			return "", nil
		}
		if lim.MaxAvatarURLBytes > 0 && len(s) > lim.MaxAvatarURLBytes {
			return "", Errorf(ErrCodeTooLarge, "avatar_url is longer than %d bytes", lim.MaxAvatarURLBytes)
		}
		if err := ValidateMXC(s); err != nil {
			return "", err
		}
	default:
		return "", Errorf(ErrCodeInvalidParam, "Only displayname and avatar_url can differ per room")
	}
	return s, nil
}

// SetMemberProfile is the command to set a per-room override of a user's
// displayname or avatar_url.
type SetMemberProfile struct {
	Room  RoomID
	User  UserID
	Field string
	Value string
	// ClearedAt is the position of the user's last global change of Field
	// with propagate_to all (Profile.AllAt): overrides older than it are gone.
	ClearedAt eventstore.Position
	Actor     Actor
	Meta      Metadata
}

// ClearMemberProfile is the command to remove a per-room override, so the
// room shows the user's propagated value again.
type ClearMemberProfile struct {
	Room  RoomID
	User  UserID
	Field string
	// ClearedAt is as in SetMemberProfile.
	ClearedAt eventstore.Position
	Actor     Actor
	Meta      Metadata
}

// DecideSetMemberProfile returns the events of a per-room override: none
// when the override already holds the value. Only joined members have
// per-room values; an empty value clears the override.
func DecideSetMemberProfile(r *Room, cmd SetMemberProfile, lim Limits) ([]Event, error) {
	s, err := validateRoomString(cmd.Field, cmd.Value, lim)
	if err != nil {
		return nil, err
	}
	if s == "" {
		return DecideClearMemberProfile(r, ClearMemberProfile{Room: cmd.Room, User: cmd.User, Field: cmd.Field, ClearedAt: cmd.ClearedAt, Actor: cmd.Actor, Meta: cmd.Meta})
	}
	if r.Membership(cmd.User) != MembershipJoin {
		return nil, Errorf(ErrCodeForbidden, "%s is not joined to this room", cmd.User)
	}
	value, _ := json.Marshal(s)
	if old, ok := r.Members[cmd.User].override(cmd.Field, cmd.ClearedAt); ok && bytes.Equal(old, value) {
		return nil, nil
	}
	return []Event{{Type: TypeMemberProfileSet, Room: cmd.Room, User: cmd.User, Key: cmd.Field, Value: value, Meta: cmd.Meta}}, nil
}

// DecideClearMemberProfile returns the events of clearing an override: none
// when there is none. Like setting one, it is refused to a user who is not
// joined (who has no per-room values to clear).
func DecideClearMemberProfile(r *Room, cmd ClearMemberProfile) ([]Event, error) {
	if cmd.Field != KeyDisplayName && cmd.Field != KeyAvatarURL {
		return nil, Errorf(ErrCodeInvalidParam, "Only displayname and avatar_url can differ per room")
	}
	if r.Membership(cmd.User) != MembershipJoin {
		return nil, Errorf(ErrCodeForbidden, "%s is not joined to this room", cmd.User)
	}
	if _, ok := r.Members[cmd.User].override(cmd.Field, cmd.ClearedAt); !ok {
		return nil, nil
	}
	return []Event{{Type: TypeMemberProfileGone, Room: cmd.Room, User: cmd.User, Key: cmd.Field, Meta: cmd.Meta}}, nil
}

// SetHistoryVisibility is the command to change a room's history visibility.
type SetHistoryVisibility struct {
	Room       RoomID
	Visibility string
	Actor      Actor
	Meta       Metadata
}

// DecideHistoryVisibility returns the events of a visibility change: none
// when it is already in force.
func DecideHistoryVisibility(r *Room, cmd SetHistoryVisibility) ([]Event, error) {
	v, err := ParseHistoryVisibility(cmd.Visibility)
	if err != nil {
		return nil, err
	}
	if v == r.Visibility() {
		return nil, nil
	}
	return []Event{{Type: TypeHistoryVisibility, Room: cmd.Room, Visibility: v, Meta: cmd.Meta}}, nil
}

// SetPowerLevels is the command to record who moderates a room.
type SetPowerLevels struct {
	Room        RoomID
	PowerLevels PowerLevels
	Actor       Actor
	Meta        Metadata
}

// maxPowerLevel bounds levels to Matrix's canonical-JSON integer range.
const maxPowerLevel = 1<<53 - 1

// maxPowerLevelUsers bounds the users map so one event stays small.
const maxPowerLevelUsers = 10_000

// DecidePowerLevels returns the events of a power-level change: none when
// the same levels are in force.
func DecidePowerLevels(r *Room, cmd SetPowerLevels) ([]Event, error) {
	pl := cmd.PowerLevels
	inRange := func(n int) bool { return n >= -maxPowerLevel && n <= maxPowerLevel }
	if !inRange(pl.Kick) || !inRange(pl.UsersDefault) {
		return nil, Errorf(ErrCodeInvalidParam, "Power levels must be integers within ±(2^53-1)")
	}
	if len(pl.Users) > maxPowerLevelUsers {
		return nil, Errorf(ErrCodeTooLarge, "Power levels name more than %d users", maxPowerLevelUsers)
	}
	users := make(map[UserID]int, len(pl.Users))
	for u, l := range pl.Users {
		if _, err := ParseHistoricalUserID(string(u)); err != nil {
			return nil, err
		}
		if !inRange(l) {
			return nil, Errorf(ErrCodeInvalidParam, "Power levels must be integers within ±(2^53-1)")
		}
		users[u] = l
	}
	pl.Users = users
	if cur := r.PowerLevels; cur != nil && cur.Kick == pl.Kick && cur.UsersDefault == pl.UsersDefault && maps.Equal(cur.Users, pl.Users) {
		return nil, nil
	}
	return []Event{{Type: TypePowerLevels, Room: cmd.Room, PowerLevels: &pl, Meta: cmd.Meta}}, nil
}
