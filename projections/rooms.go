package projections

import (
	"sort"
	"sync"
	"time"

	"github.com/profilestore/profilestore/domain"
	"github.com/profilestore/profilestore/eventstore"
)

// Rooms is the per-room view: who is in each room with which displayname and
// avatar_url, now and as of any earlier position, the room's history of
// membership and name changes, and each user's history.
//
// A global change is one event in profile-U and is applied in O(1) to the
// state that room values are computed from; no per-room value is stored.
// A member's value in a room is computed on read from three facts (see
// value): the member's per-room override, the user's last propagated global
// change, and the value at join. Only the history entries fan out: a global
// change appends one 16-byte reference to the history of each room whose
// value it changed, which costs microseconds for ten thousand rooms.
type Rooms struct {
	mu    sync.RWMutex
	rooms map[domain.RoomID]*roomState
	users map[domain.UserID]*userState
	// changes holds every event the view recorded, once; histories refer to
	// it by index so a global change shared by many rooms is stored once.
	changes []*change
	// times maps timestamps to positions for as-of reads (see PositionAt).
	times []timeMark
	// hidden are positions hidden by profile.entry_hidden.
	hidden map[eventstore.Position]bool
	last   eventstore.Position
}

// field indexes the two values rooms show.
const (
	fDisplayName = iota
	fAvatarURL
	numFields
)

var fieldKeys = [numFields]string{domain.KeyDisplayName, domain.KeyAvatarURL}

func fieldIndex(key string) (int, bool) {
	switch key {
	case domain.KeyDisplayName:
		return fDisplayName, true
	case domain.KeyAvatarURL:
		return fAvatarURL, true
	}
	return 0, false
}

// Membership states of a period.
const (
	stLeave uint8 = iota
	stJoin
	stInvite
	stBan
)

var stateNames = [...]string{domain.MembershipLeave, domain.MembershipJoin, domain.MembershipInvite, domain.MembershipBan}

// propChange is a global change of one field that reached rooms
// (propagate_to all or unchanged).
type propChange struct {
	pos eventstore.Position
	val *string
	ci  uint32 // the change that made it
}

type userState struct {
	global [numFields]*string
	// globalRef is where global[f] came from (for hiding, see entry).
	globalRef [numFields]valueRef
	// prop are the propagated global changes per field, in log order.
	prop [numFields][]propChange
	// allAt are the positions of changes with propagate_to all, per field.
	allAt [numFields][]eventstore.Position
	// joined are the rooms the user is joined to now: the fan-out set.
	joined map[domain.RoomID]*memberRec
	// history indexes changes about the user (global and per-room).
	history []uint32
	// touched are the rooms the user has history in.
	touched map[domain.RoomID]struct{}
}

// memberRec is one user in one room: every membership period in order.
type memberRec struct {
	periods []period
	// room is the room this record belongs to, so a global change reaches
	// the room's state without a map lookup per room.
	room *roomState
}

// period starts at a membership event and lasts until the next.
type period struct {
	pos   eventstore.Position
	state uint8
	ci    uint32 // the membership change that began it
	// names are the values given at the join or invite.
	names [numFields]*string
	// ovr are the per-room overrides set and cleared (val nil) in the period.
	ovr [numFields][]propChange
}

type roomState struct {
	members map[domain.UserID]*memberRec
	entries []roomEntry
	// byUser indexes entries by user, for ?user= and user histories.
	byUser map[domain.UserID][]uint32
	vis    []visMark
	pl     *domain.PowerLevels
}

// roomEntry is one line of a room's history: a change and, for global
// changes (which are shared by rooms), where the value the room showed
// before came from. It holds no pointer, so the garbage collector never
// scans the millions of entries a busy server keeps.
type roomEntry struct {
	c   uint32
	old valueRef
}

// valueRef names a value by the change that set it: 0 is unset; otherwise
// the change index plus one, with refNames set when the value is one of the
// names given at a join or invite (change.names) rather than change.new.
type valueRef uint32

const refNames valueRef = 1 << 31

// source is value's counterpart that names where the value came from.
func (u *userState) source(p *period, f int, at eventstore.Position) valueRef {
	names := func() valueRef {
		if p.names[f] == nil {
			return 0
		}
		return valueRef(p.ci+1) | refNames
	}
	if p.state != stJoin {
		return names()
	}
	if i := lastLE(p.ovr[f], propPos, at); i >= 0 && p.ovr[f][i].val != nil {
		o := p.ovr[f][i]
		if a := lastLE(u.allAt[f], posPos, at); a < 0 || u.allAt[f][a].Before(o.pos) {
			return valueRef(o.ci + 1)
		}
	}
	if i := lastLE(u.prop[f], propPos, at); i >= 0 && p.pos.Before(u.prop[f][i].pos) {
		if u.prop[f][i].val == nil {
			return 0
		}
		return valueRef(u.prop[f][i].ci + 1)
	}
	return names()
}

// resolve returns the value a reference names (nil once erased).
func (v *Rooms) resolve(ref valueRef, f int) *string {
	if ref == 0 {
		return nil
	}
	c := v.changes[uint32(ref&^refNames)-1]
	if ref&refNames != 0 {
		return c.names[f]
	}
	return c.new
}

type visMark struct {
	pos eventstore.Position
	vis string
}

type timeMark struct {
	ms  int64
	pos eventstore.Position
}

// kind of a history entry.
type kind uint8

const (
	kJoin kind = iota
	kInvite
	kLeave
	kKick
	kBan
	kUnban
	kGlobalRename
	kGlobalAvatar
	kRoomRename
	kRoomAvatar
	kOverrideCleared
)

// History entry kinds, as the API shows them.
const (
	KindJoin            = "join"
	KindInvite          = "invite"
	KindLeave           = "leave"
	KindKick            = "kick"
	KindBan             = "ban"
	KindUnban           = "unban"
	KindGlobalRename    = "global_rename"
	KindGlobalAvatar    = "global_avatar"
	KindRoomRename      = "room_rename"
	KindRoomAvatar      = "room_avatar"
	KindOverrideCleared = "override_cleared"
)

var kindNames = [...]string{KindJoin, KindInvite, KindLeave, KindKick, KindBan, KindUnban,
	KindGlobalRename, KindGlobalAvatar, KindRoomRename, KindRoomAvatar, KindOverrideCleared}

// change is one recorded event as histories show it.
type change struct {
	pos   eventstore.Position
	ms    int64
	user  domain.UserID
	room  domain.RoomID // "" for a global change
	kind  kind
	field uint8
	prop  domain.Propagation
	// old and new are the field's values (global: the global values; per
	// room: the room's); names are a membership event's values (join and
	// invite: given; leave, kick, ban: held until then).
	old, new *string
	names    [numFields]*string
	// oldRef and namesRef name the changes old and names came from, so an
	// entry can tell when its old value was set by a hidden entry.
	oldRef   valueRef
	namesRef [numFields]valueRef
	typ      string
	actor    domain.UserID
	source   string
	by       domain.UserID
}

// NewRooms returns an empty view.
func NewRooms() *Rooms {
	v := &Rooms{}
	v.reset()
	return v
}

func (v *Rooms) reset() {
	v.rooms = make(map[domain.RoomID]*roomState)
	v.users = make(map[domain.UserID]*userState)
	v.changes = nil
	v.times = nil
	v.hidden = make(map[eventstore.Position]bool)
	v.last = eventstore.Start
}

// Name identifies the view in snapshots.
func (v *Rooms) Name() string { return "rooms" }

// Reset empties the view before a rebuild.
func (v *Rooms) Reset() {
	v.mu.Lock()
	v.reset()
	v.mu.Unlock()
}

func (v *Rooms) user(u domain.UserID) *userState {
	s := v.users[u]
	if s == nil {
		s = &userState{joined: make(map[domain.RoomID]*memberRec), touched: make(map[domain.RoomID]struct{})}
		v.users[u] = s
	}
	return s
}

func (v *Rooms) room(r domain.RoomID) *roomState {
	s := v.rooms[r]
	if s == nil {
		s = &roomState{members: make(map[domain.UserID]*memberRec), byUser: make(map[domain.UserID][]uint32)}
		v.rooms[r] = s
	}
	return s
}

// lastLE returns the index of the last element whose position is ≤ at, or -1.
func lastLE[T any](s []T, pos func(*T) eventstore.Position, at eventstore.Position) int {
	n := len(s)
	if n > 0 && !at.Before(pos(&s[n-1])) {
		return n - 1 // the common case: reading now
	}
	return sort.Search(n, func(i int) bool { return at.Before(pos(&s[i])) }) - 1
}

func propPos(c *propChange) eventstore.Position         { return c.pos }
func posPos(p *eventstore.Position) eventstore.Position { return *p }
func periodPos(p *period) eventstore.Position           { return p.pos }
func visPos(m *visMark) eventstore.Position             { return m.pos }

// value is what the member shows for field f at position at, in a period
// that began at or before it: the per-room override if one is set and no
// propagate_to=all change came after it; otherwise the value at join,
// replaced by the last later global change that propagated. O(1) when at is
// the present, O(log n) in the past.
func (u *userState) value(p *period, f int, at eventstore.Position) *string {
	if p.state != stJoin {
		return p.names[f] // invites show the names given; global changes reach joined rooms only
	}
	if i := lastLE(p.ovr[f], propPos, at); i >= 0 && p.ovr[f][i].val != nil {
		o := p.ovr[f][i]
		if a := lastLE(u.allAt[f], posPos, at); a < 0 || u.allAt[f][a].Before(o.pos) {
			return o.val
		}
	}
	if i := lastLE(u.prop[f], propPos, at); i >= 0 && p.pos.Before(u.prop[f][i].pos) {
		return u.prop[f][i].val
	}
	return p.names[f]
}

// hasOverride reports whether the member's current override of f is in force.
func (u *userState) hasOverride(p *period, f int) bool {
	ovr := p.ovr[f]
	if len(ovr) == 0 || ovr[len(ovr)-1].val == nil {
		return false
	}
	all := u.allAt[f]
	return len(all) == 0 || all[len(all)-1].Before(ovr[len(ovr)-1].pos)
}

func (m *memberRec) current() *period {
	if m == nil || len(m.periods) == 0 {
		return nil
	}
	return &m.periods[len(m.periods)-1]
}

// stateAt returns the member's period at a position, or nil before the first.
func (m *memberRec) stateAt(at eventstore.Position) *period {
	if m == nil {
		return nil
	}
	i := lastLE(m.periods, periodPos, at)
	if i < 0 {
		return nil
	}
	return &m.periods[i]
}

// nonEmpty treats "" as unset, as profiles do.
func nonEmpty(s *string) *string {
	if s == nil || *s == "" {
		return nil
	}
	return s
}

// stringValue reads a JSON string value; anything else reads as unset.
func stringValue(raw []byte) *string {
	if len(raw) < 2 || raw[0] != '"' {
		return nil
	}
	var s string
	if err := jsonUnmarshal(raw, &s); err != nil || s == "" {
		return nil
	}
	return &s
}

func sameValue(a, b *string) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}

// Apply folds one event into the view. It never fails: events it cannot
// use are skipped.
func (v *Rooms) Apply(e *domain.Event) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.last = e.Position
	v.markTime(e)
	switch e.Type {
	case domain.TypeFieldSet, domain.TypeFieldDeleted:
		if e.Room == "" && e.User != "" {
			v.applyGlobal(e)
		}
	case domain.TypeEntryHidden:
		v.hidden[e.Hidden] = true
	case domain.TypeErased:
		v.erase(e.User)
	case domain.TypeMemberJoined, domain.TypeMemberInvited, domain.TypeMemberLeft:
		if e.Room != "" && e.User != "" {
			v.applyMembership(e)
		}
	case domain.TypeMemberProfileSet, domain.TypeMemberProfileGone:
		if e.Room != "" && e.User != "" {
			v.applyOverride(e)
		}
	case domain.TypeHistoryVisibility:
		if e.Room != "" {
			r := v.room(e.Room)
			r.vis = append(r.vis, visMark{pos: e.Position, vis: e.Visibility})
		}
	case domain.TypePowerLevels:
		if e.Room != "" {
			v.room(e.Room).pl = e.PowerLevels
		}
	}
}

// erase drops every name of the user the view holds, so that none stays
// readable through any read after profile.erased; a rebuild then decodes
// them as erased anyway. It costs O(the user's history), not O(the log).
func (v *Rooms) erase(user domain.UserID) {
	u := v.users[user]
	if u == nil {
		return
	}
	u.global = [numFields]*string{}
	for f := range numFields {
		for i := range u.prop[f] {
			u.prop[f][i].val = nil
		}
	}
	for _, ci := range u.history {
		c := v.changes[ci]
		c.old, c.new, c.names = nil, nil, [numFields]*string{}
	}
	for roomID := range u.touched {
		r := v.rooms[roomID]
		for _, i := range r.byUser[user] {
			r.entries[i].old = 0
		}
		if m := r.members[user]; m != nil {
			for i := range m.periods {
				p := &m.periods[i]
				p.names = [numFields]*string{}
				for f := range numFields {
					for j := range p.ovr[f] {
						p.ovr[f][j].val = nil
					}
				}
			}
		}
	}
}

// markTime keeps the running maximum of occurred_at against positions, so a
// timestamp maps to the last position at or before it even if clocks of
// several writers disagree slightly.
func (v *Rooms) markTime(e *domain.Event) {
	ms := e.Meta.OccurredAt.UnixMilli()
	if n := len(v.times); n > 0 && ms <= v.times[n-1].ms {
		v.times[n-1].pos = e.Position
		return
	}
	v.times = append(v.times, timeMark{ms: ms, pos: e.Position})
}

func (v *Rooms) newChange(e *domain.Event, k kind) (*change, uint32) {
	c := &change{pos: e.Position, ms: e.Meta.OccurredAt.UnixMilli(), user: e.User, room: e.Room, kind: k,
		typ: e.Type, actor: e.Meta.Actor, source: e.Meta.Source, by: e.By, prop: e.PropagateTo}
	v.changes = append(v.changes, c)
	idx := uint32(len(v.changes) - 1)
	u := v.user(e.User)
	u.history = append(u.history, idx)
	return c, idx
}

func (v *Rooms) addEntry(room domain.RoomID, r *roomState, user domain.UserID, u *userState, ci uint32, old valueRef) {
	appendEntry(r, user, ci, old)
	u.touched[room] = struct{}{}
}

// appendEntry adds a line to a room's history; rooms a user is joined to
// are already in its touched set, so the global fan-out skips that write.
func appendEntry(r *roomState, user domain.UserID, ci uint32, old valueRef) {
	r.entries = append(r.entries, roomEntry{c: ci, old: old})
	r.byUser[user] = append(r.byUser[user], uint32(len(r.entries)-1))
}

func (v *Rooms) applyGlobal(e *domain.Event) {
	f, ok := fieldIndex(e.Key)
	if !ok {
		return // custom fields never appear in rooms
	}
	u := v.user(e.User)
	var val *string
	if e.Type == domain.TypeFieldSet && !e.Erased {
		val = stringValue(e.Value)
	}
	k := kGlobalRename
	if f == fAvatarURL {
		k = kGlobalAvatar
	}
	c, ci := v.newChange(e, k)
	c.field, c.old, c.new, c.oldRef = uint8(f), u.global[f], val, u.globalRef[f]
	u.global[f], u.globalRef[f] = val, 0
	if val != nil {
		u.globalRef[f] = valueRef(ci + 1)
	}
	prop := e.PropagateTo
	if prop == "" {
		prop = domain.PropagateUnchanged // events from before propagation was recorded
	}
	if prop == domain.PropagateNone {
		return
	}
	// Only the history fans out; the room values follow from u.prop below.
	for _, m := range u.joined {
		p := m.current()
		if prop == domain.PropagateUnchanged && u.hasOverride(p, f) {
			continue
		}
		if before := u.value(p, f, v.last); !sameValue(before, val) {
			appendEntry(m.room, e.User, ci, u.source(p, f, v.last))
		}
	}
	u.prop[f] = append(u.prop[f], propChange{pos: e.Position, val: val, ci: ci})
	if prop == domain.PropagateAll {
		u.allAt[f] = append(u.allAt[f], e.Position)
	}
}

func (v *Rooms) applyMembership(e *domain.Event) {
	r := v.room(e.Room)
	u := v.user(e.User)
	m := r.members[e.User]
	if m == nil {
		m = &memberRec{room: r}
		r.members[e.User] = m
	}
	cur := m.current()
	var k kind
	next := period{pos: e.Position}
	var names [numFields]*string
	var namesRef [numFields]valueRef
	switch e.Type {
	case domain.TypeMemberJoined:
		k, next.state = kJoin, stJoin
		next.names = [numFields]*string{nonEmpty(e.DisplayName), nonEmpty(e.AvatarURL)}
		names = next.names
	case domain.TypeMemberInvited:
		k, next.state = kInvite, stInvite
		next.names = [numFields]*string{nonEmpty(e.DisplayName), nonEmpty(e.AvatarURL)}
		names = next.names
	default:
		switch e.Membership {
		case domain.MembershipKick:
			k, next.state = kKick, stLeave
		case domain.MembershipBan:
			k, next.state = kBan, stBan
		default:
			k, next.state = kLeave, stLeave
			if cur != nil && cur.state == stBan {
				k = kUnban
			}
		}
		if cur != nil {
			for f := range numFields {
				names[f] = u.value(cur, f, v.last)
				namesRef[f] = u.source(cur, f, v.last)
			}
		}
	}
	c, ci := v.newChange(e, k)
	c.names, c.namesRef = names, namesRef
	next.ci = ci
	m.periods = append(m.periods, next)
	if next.state == stJoin {
		u.joined[e.Room] = m
	} else {
		delete(u.joined, e.Room)
	}
	v.addEntry(e.Room, r, e.User, u, ci, 0)
}

func (v *Rooms) applyOverride(e *domain.Event) {
	f, ok := fieldIndex(e.Key)
	if !ok {
		return
	}
	r := v.room(e.Room)
	u := v.user(e.User)
	m := r.members[e.User]
	p := (*period)(nil)
	if m != nil {
		p = m.current()
	}
	if p == nil || p.state != stJoin {
		return // overrides exist only while joined; the decision refuses others
	}
	var val *string
	k := kOverrideCleared
	if e.Type == domain.TypeMemberProfileSet {
		if e.Erased {
			return
		}
		if val = stringValue(e.Value); val == nil {
			return
		}
		k = kRoomRename
		if f == fAvatarURL {
			k = kRoomAvatar
		}
	}
	before, beforeRef := u.value(p, f, v.last), u.source(p, f, v.last)
	c, ci := v.newChange(e, k)
	p.ovr[f] = append(p.ovr[f], propChange{pos: e.Position, val: val, ci: ci})
	c.field, c.old, c.new, c.oldRef = uint8(f), before, u.value(p, f, v.last), beforeRef
	v.addEntry(e.Room, r, e.User, u, ci, 0)
}

// Position returns the position of the last event applied.
func (v *Rooms) Position() eventstore.Position {
	v.mu.RLock()
	defer v.mu.RUnlock()
	return v.last
}

// PositionAt returns the position of the last event that occurred at or
// before t (Start when none did), for as-of reads by timestamp.
func (v *Rooms) PositionAt(t time.Time) eventstore.Position {
	v.mu.RLock()
	defer v.mu.RUnlock()
	ms := t.UnixMilli()
	i := sort.Search(len(v.times), func(i int) bool { return v.times[i].ms > ms }) - 1
	if i < 0 {
		return eventstore.Start
	}
	return v.times[i].pos
}
