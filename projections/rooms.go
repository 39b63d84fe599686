package projections

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"math"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/profilestore/profilestore/domain"
	"github.com/profilestore/profilestore/eventstore"
	"github.com/profilestore/profilestore/projections/viewstore"
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
// change appends one reference to the history of each room whose value it
// changed. Everything lives in the view store (key prefixes below), with
// bounded caches of decoded objects in front of it.
//
// History is ordered by an order key, not by log position, so that events
// backfilled from the homeserver after live ones read in the homeserver's
// order (docs/DECISIONS.md, "History order"). The key has the shape of a
// Position: Commit is a time in milliseconds, Prepare the event's log
// position (unique, so it breaks ties in log order). An event recorded as it
// happened takes the running maximum of occurred_at (the time mark), so such
// events keep their log order; a backfilled one takes its Meta.OrderTS.
// Every position a period, override, propagated change, visibility mark or
// history key holds is an order key; change.pos is the log position, which
// hiding and the API's entry positions use.
type Rooms struct {
	db *DB
	// Committed state, decoded, in bounded caches; the view store has it all.
	users   *lru.Cache[domain.UserID, *userState]
	rooms   *lru.Cache[domain.RoomID, *roomState]
	members *lru.Cache[memberKey, *memberRec]
	changes *lru.Cache[uint32, *change]
	stats   *CacheStats
	// last is the position of the last event applied; nChanges the
	// changes recorded; mark the newest time mark (see markTime).
	last     eventstore.Position
	nChanges uint32
	mark     timeMark
	// hidden counts the hidden marks: none (the usual case) spares every
	// history read a look-up per entry.
	hidden atomic.Uint64
	// tx is what the open transaction changed, not yet readable.
	tx roomsTxn
	// bulk is set while a rebuild fills a fresh store nothing reads:
	// committed objects are not kept in the caches (see setBulk).
	bulk bool
}

// roomsTxn holds the objects the open transaction changed, decoded, so
// that later events of the same transaction see them.
type roomsTxn struct {
	users    map[domain.UserID]*userState
	rooms    map[domain.RoomID]*roomState
	members  map[memberKey]*memberRec
	changes  map[uint32]*change
	last     eventstore.Position
	nChanges uint32
	mark     timeMark
	hidden   uint64
	open     bool
}

type memberKey struct {
	room domain.RoomID
	user domain.UserID
}

// Key prefixes of the rooms view.
const (
	prefixChange    = "c"  // change index -> change
	prefixUser      = "ru" // user -> userState
	prefixUserProp  = "rp" // user, field, position -> a propagated global change
	prefixUserAll   = "ra" // user, field, position: a change with propagate_to all
	prefixUserHist  = "uh" // user, position -> change index
	prefixTouched   = "ut" // user, room: the user has history in the room
	prefixJoined    = "uj" // user, room -> the current period of a user joined now (the fan-out set)
	prefixRoom      = "rs" // room -> roomState
	prefixMember    = "rm" // room, user -> memberRec
	prefixEntry     = "re" // room, position -> roomEntry
	prefixUserEntry = "rb" // room, user, position -> roomEntry of a membership or per-room change (a global change's are found from "rp")
	prefixTime      = "t"  // milliseconds -> position
	prefixTimePos   = "ot" // position -> milliseconds: the finished marks, looked up by position (the open one is Rooms.mark)
	prefixOrder     = "oe" // position -> order key of an event written after the fact (Meta.OrderTS)
	prefixHidden    = "hd" // position: the entry is hidden
)

var keyRoomsMeta = []byte("meta\x00rooms")

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
// (propagate_to all or unchanged), or a per-room override.
type propChange struct {
	pos eventstore.Position
	val *string
	ci  uint32 // the change that made it
}

// userState is what room values are computed from for one user, now: the
// last propagated global change and the last propagate_to=all change of
// each field. The earlier ones, for reads of the past, are key ranges
// ("rp", "ra"), as are the user's history, rooms touched and rooms joined,
// so the state stays small however often the user renames.
type userState struct {
	global [numFields]*string
	// globalRef is where global[f] came from (for hiding, see entry).
	globalRef [numFields]valueRef
	// lastProp is the last propagated global change per field (hasProp).
	lastProp [numFields]propChange
	hasProp  [numFields]bool
	// lastAll is the position of the last change with propagate_to all per
	// field (Start: none).
	lastAll [numFields]eventstore.Position
}

// pastChanges finds a user's propagated changes before the last one.
type pastChanges interface {
	// propLE is the last propagated change of f at or before at.
	propLE(f int, at eventstore.Position) (propChange, bool)
	// allLE is the last propagate_to=all change of f at or before at.
	allLE(f int, at eventstore.Position) (eventstore.Position, bool)
}

func (u *userState) propAt(f int, at eventstore.Position, past pastChanges) (propChange, bool) {
	if !u.hasProp[f] {
		return propChange{}, false
	}
	if !at.Before(u.lastProp[f].pos) {
		return u.lastProp[f], true
	}
	return past.propLE(f, at)
}

func (u *userState) allAt(f int, at eventstore.Position, past pastChanges) (eventstore.Position, bool) {
	if u.lastAll[f].IsStart() {
		return eventstore.Start, false
	}
	if !at.Before(u.lastAll[f]) {
		return u.lastAll[f], true
	}
	return past.allLE(f, at)
}

// userPast reads a user's past changes from the view store.
type userPast struct {
	r    viewstore.Reader
	user domain.UserID
	fail func(error)
}

func fieldPart(f int) string { return string(rune('0' + f)) }

func (p userPast) last(prefix string, f int, at eventstore.Position) (key, val []byte, ok bool) {
	lo := rangeOf(prefix, string(p.user), fieldPart(f))
	hi := append(posKey(at, prefix, string(p.user), fieldPart(f)), 0)
	p.fail(p.r.Scan(lo, hi, true, func(k, v []byte) bool {
		key, val, ok = bytes.Clone(k), bytes.Clone(v), true
		return false
	}))
	return key, val, ok
}

func (p userPast) propLE(f int, at eventstore.Position) (propChange, bool) {
	k, v, ok := p.last(prefixUserProp, f, at)
	if !ok {
		return propChange{}, false
	}
	d := dec{b: v}
	c := propChange{pos: readPos(k[len(k)-16:]), val: d.opt(), ci: uint32(d.uint())}
	p.fail(d.err)
	return c, true
}

func (p userPast) allLE(f int, at eventstore.Position) (eventstore.Position, bool) {
	k, _, ok := p.last(prefixUserAll, f, at)
	if !ok {
		return eventstore.Start, false
	}
	return readPos(k[len(k)-16:]), true
}

// memberRec is one user in one room: every membership period in order.
type memberRec struct {
	periods []period
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

// roomState is a room's visibility and power levels; members and history
// are key ranges.
type roomState struct {
	vis []visMark
	pl  *domain.PowerLevels
	// plOrd is the order key of the event pl came from.
	plOrd eventstore.Position
}

// roomEntry is one line of a room's history: a change and, for global
// changes (which are shared by rooms), where the value the room showed
// before came from.
//
// In the room's history ("re") the entry also carries the change itself
// and the room's old value, so that a page of history is one range scan
// and no point read per entry; the user's entries in a room ("rb") and
// the user's history ("uh") name the change only.
type roomEntry struct {
	c   uint32
	old valueRef
	// ch and oldVal are the inline copy (nil in "rb" entries): the change,
	// and the value the room showed before it.
	ch     *change
	oldVal *string
}

// valueRef names a value by the change that set it: 0 is unset; otherwise
// the change index plus one, with refNames set when the value is one of the
// names given at a join or invite (change.names) rather than change.new.
type valueRef uint32

const refNames valueRef = 1 << 31

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

// NewRooms returns the view over db, caching at most cacheEntries decoded
// objects of each kind (users, rooms, members, changes; DefaultCacheEntries
// when ≤ 0).
func NewRooms(db *DB, cacheEntries int) *Rooms {
	if cacheEntries <= 0 {
		cacheEntries = DefaultCacheEntries
	}
	v := &Rooms{db: db}
	v.users, _ = lru.New[domain.UserID, *userState](cacheEntries)
	v.rooms, _ = lru.New[domain.RoomID, *roomState](cacheEntries)
	v.members, _ = lru.New[memberKey, *memberRec](cacheEntries)
	v.changes, _ = lru.New[uint32, *change](cacheEntries)
	v.stats = newCacheStats("rooms", 4*cacheEntries, func() int {
		return v.users.Len() + v.rooms.Len() + v.members.Len() + v.changes.Len()
	})
	if raw, ok, err := db.store.Get(keyRoomsMeta); err == nil && ok {
		d := dec{b: raw}
		v.last, v.nChanges = d.pos(), uint32(d.uint())
		v.mark = timeMark{ms: d.int(), pos: d.pos()}
		v.hidden.Store(d.uint())
	}
	return v
}

// Name identifies the view in logs and metrics.
func (v *Rooms) Name() string { return "rooms" }

// Cache reports the view caches' size and hit rate.
func (v *Rooms) Cache() *CacheStats { return v.stats }

// begin readies the transaction state on the first event of a transaction.
func (v *Rooms) begin() {
	if v.tx.open {
		return
	}
	v.tx = roomsTxn{open: true, last: v.last, nChanges: v.nChanges, mark: v.mark, hidden: v.hidden.Load(),
		users: map[domain.UserID]*userState{}, rooms: map[domain.RoomID]*roomState{},
		members: map[memberKey]*memberRec{}, changes: map[uint32]*change{}}
}

// Committed publishes what the committed transaction changed.
func (v *Rooms) Committed() {
	if !v.tx.open {
		return
	}
	if !v.bulk { // a rebuild's store has no readers to keep objects for
		for k, o := range v.tx.users {
			v.users.Add(k, o)
		}
		for k, o := range v.tx.rooms {
			v.rooms.Add(k, o)
		}
		for k, o := range v.tx.members {
			v.members.Add(k, o)
		}
		for k, o := range v.tx.changes {
			v.changes.Add(k, o)
		}
	}
	v.last, v.nChanges, v.mark = v.tx.last, v.tx.nChanges, v.tx.mark
	v.hidden.Store(v.tx.hidden)
	v.tx = roomsTxn{}
}

// Aborted drops what the open transaction changed.
func (v *Rooms) Aborted() { v.tx = roomsTxn{} }

func (v *Rooms) setBulk(on bool) { v.bulk = on }

// lastLE returns the index of the last element whose position is ≤ at, or -1.
func lastLE[T any](s []T, pos func(*T) eventstore.Position, at eventstore.Position) int {
	n := len(s)
	if n > 0 && !at.Before(pos(&s[n-1])) {
		return n - 1 // the common case: reading now
	}
	return sort.Search(n, func(i int) bool { return at.Before(pos(&s[i])) }) - 1
}

func propPos(c *propChange) eventstore.Position { return c.pos }
func periodPos(p *period) eventstore.Position   { return p.pos }
func visPos(m *visMark) eventstore.Position     { return m.pos }

// value is what the member shows for field f at position at, in a period
// that began at or before it, and which change set it: the per-room
// override if one is set and no propagate_to=all change came after it;
// otherwise the value at join, replaced by the last later global change
// that propagated. O(1) when at is the present, O(log n) in the past.
func (u *userState) value(p *period, f int, at eventstore.Position, past pastChanges) (*string, valueRef) {
	names := func() (*string, valueRef) {
		if p.names[f] == nil {
			return nil, 0
		}
		return p.names[f], valueRef(p.ci+1) | refNames
	}
	if p.state != stJoin {
		return names() // invites show the names given; global changes reach joined rooms only
	}
	if u == nil {
		return names()
	}
	if i := lastLE(p.ovr[f], propPos, at); i >= 0 && p.ovr[f][i].val != nil {
		o := p.ovr[f][i]
		if a, ok := u.allAt(f, at, past); !ok || a.Before(o.pos) {
			return o.val, valueRef(o.ci + 1)
		}
	}
	if c, ok := u.propAt(f, at, past); ok && p.pos.Before(c.pos) {
		if c.val == nil {
			return nil, 0
		}
		return c.val, valueRef(c.ci + 1)
	}
	return names()
}

// hasOverride reports whether the member's current override of f is in force.
func (u *userState) hasOverride(p *period, f int) bool {
	ovr := p.ovr[f]
	if len(ovr) == 0 || ovr[len(ovr)-1].val == nil {
		return false
	}
	return u.lastAll[f].IsStart() || u.lastAll[f].Before(ovr[len(ovr)-1].pos)
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
	if err := json.Unmarshal(raw, &s); err != nil || s == "" {
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

// applier is one Apply call: the transaction, and the first storage error.
type applier struct {
	v   *Rooms
	tx  viewstore.Txn
	err error
	// ord is the order key of the event being applied.
	ord eventstore.Position
	// scratch holds a key and a value being written (the store copies them).
	scratch struct{ key, val []byte }
}

func (a *applier) fail(err error) {
	if a.err == nil && err != nil {
		a.err = err
	}
}

func (a *applier) set(key, value []byte) { a.fail(a.tx.Set(key, value)) }

// Apply folds one event into the view. Events it cannot use are skipped;
// an error is a view store failure.
func (v *Rooms) Apply(tx viewstore.Txn, e *domain.Event) error {
	v.begin()
	a := &applier{v: v, tx: tx}
	v.tx.last = e.Position
	a.markTime(e)
	a.ord = a.orderOf(e)
	switch e.Type {
	case domain.TypeFieldSet, domain.TypeFieldDeleted:
		if e.Room == "" && e.User != "" {
			a.applyGlobal(e)
		}
	case domain.TypeEntryHidden:
		a.set(posKey(e.Hidden, prefixHidden), nil)
		v.tx.hidden++ // an entry hidden twice counts twice: a count only needs to be 0 when none is
	case domain.TypeErased:
		a.erase(e.User)
	case domain.TypeMemberJoined, domain.TypeMemberInvited, domain.TypeMemberLeft:
		if e.Room != "" && e.User != "" {
			a.applyMembership(e)
		}
	case domain.TypeMemberProfileSet, domain.TypeMemberProfileGone:
		if e.Room != "" && e.User != "" {
			a.applyOverride(e)
		}
	case domain.TypeHistoryVisibility:
		if e.Room != "" {
			r := a.room(e.Room)
			r.vis = slices.Insert(r.vis, lastLE(r.vis, visPos, a.ord)+1, visMark{pos: a.ord, vis: e.Visibility})
			a.putRoom(e.Room, r)
		}
	case domain.TypePowerLevels:
		if e.Room != "" {
			r := a.room(e.Room)
			if !a.ord.Before(r.plOrd) { // a backfilled older one is history only
				r.pl, r.plOrd = e.PowerLevels, a.ord
			}
			a.putRoom(e.Room, r)
		}
	}
	return a.err
}

// Flush writes the view's position, change count and newest time mark.
func (v *Rooms) Flush(tx viewstore.Txn) error {
	if !v.tx.open {
		return nil
	}
	var w enc
	w.pos(v.tx.last)
	w.uint(uint64(v.tx.nChanges))
	w.int(v.tx.mark.ms)
	w.pos(v.tx.mark.pos)
	w.uint(v.tx.hidden)
	if err := tx.Set(keyRoomsMeta, w.b); err != nil {
		return err
	}
	var t enc
	t.pos(v.tx.mark.pos)
	return tx.Set(binary.BigEndian.AppendUint64(keyOf(prefixTime), uint64(v.tx.mark.ms)), t.b)
}

// The applier's loaders return objects it may change: the transaction's
// own, or a fresh copy of the committed one (readers share those), or a
// new one. put writes an object to the transaction.

// forChange returns the object under k for the transaction to change:
// its own, or a copy of the committed one (readers share that), or the
// stored one decoded; nil when the store has none.
func forChange[K comparable, V any](a *applier, pending map[K]*V, cache *lru.Cache[K, *V], k K, key func() []byte,
	encode func(*V) []byte, decode func([]byte, interface{ fail(error) }) *V) *V {
	if o := pending[k]; o != nil {
		return o
	}
	var o *V
	if c, ok := cache.Peek(k); ok {
		o = decode(encode(c), a)
	} else {
		raw, ok, err := a.tx.Get(key())
		a.fail(err)
		if !ok {
			return nil
		}
		o = decode(raw, a)
	}
	pending[k] = o
	return o
}

func (a *applier) user(id domain.UserID) *userState {
	u := forChange(a, a.v.tx.users, a.v.users, id, func() []byte { return keyOf(prefixUser, string(id)) }, encodeUserState, decodeUserState)
	if u == nil {
		u = &userState{}
		a.v.tx.users[id] = u
	}
	return u
}

func (a *applier) putUser(id domain.UserID, u *userState) {
	a.set(keyOf(prefixUser, string(id)), encodeUserState(u))
}

func (a *applier) room(id domain.RoomID) *roomState {
	r := forChange(a, a.v.tx.rooms, a.v.rooms, id, func() []byte { return keyOf(prefixRoom, string(id)) }, encodeRoomState, decodeRoomState)
	if r == nil {
		r = &roomState{}
		a.v.tx.rooms[id] = r
	}
	return r
}

func (a *applier) putRoom(id domain.RoomID, r *roomState) {
	a.set(keyOf(prefixRoom, string(id)), encodeRoomState(r))
}

// member returns the user's record in the room for a change, nil when
// there is none.
func (a *applier) member(room domain.RoomID, user domain.UserID) *memberRec {
	return forChange(a, a.v.tx.members, a.v.members, memberKey{room, user},
		func() []byte { return keyOf(prefixMember, string(room), string(user)) }, encodeMember, decodeMember)
}

// putMember writes the record, and the current period beside the user's
// joined rooms (or removes it there when the user is not joined), so that
// a global change fans out from one range scan.
func (a *applier) putMember(room domain.RoomID, user domain.UserID, m *memberRec) {
	a.v.tx.members[memberKey{room, user}] = m
	a.set(keyOf(prefixMember, string(room), string(user)), encodeMember(m))
	joined := keyOf(prefixJoined, string(user), string(room))
	if p := m.current(); p != nil && p.state == stJoin {
		a.set(joined, encodeMember(&memberRec{periods: []period{*p}}))
	} else {
		a.fail(a.tx.Delete(joined))
	}
}

// joinedPeriod is a room the user is joined to and the period there (a
// copy: the fan-out only reads it).
type joinedPeriod struct {
	room   domain.RoomID
	period period
}

// joined appends to out the rooms the user is joined to, with their
// current period. The rooms' ids share one string: a fan-out to thousands
// of rooms allocates it once, not once per room.
func (a *applier) joined(user domain.UserID, out []joinedPeriod) []joinedPeriod {
	first := len(out)
	var ids []byte
	var ends []int
	lo := rangeOf(prefixJoined, string(user))
	a.fail(a.tx.Scan(lo, viewstore.PrefixEnd(lo), false, func(k, v []byte) bool {
		room := k[len(lo):]
		if len(a.v.tx.members) > 0 {
			if m := a.v.tx.members[memberKey{domain.RoomID(room), user}]; m != nil {
				if p := m.current(); p != nil {
					out = append(out, joinedPeriod{period: *p})
					ids, ends = append(ids, room...), append(ends, len(ids)+len(room))
				}
				return true
			}
		}
		d := dec{b: v}
		if d.uint() == 1 { // the current period, alone
			out = append(out, joinedPeriod{period: decodePeriod(&d)})
			ids, ends = append(ids, room...), append(ends, len(ids)+len(room))
		}
		a.fail(d.err)
		return true
	}))
	all, start := string(ids), 0
	for i, end := range ends {
		out[first+i].room = domain.RoomID(all[start:end])
		start = end
	}
	return out
}

// joinedBufs recycles the fan-out's list of joined rooms between global
// changes (a user in 10,000 rooms lists about 1 MB of them); the pool lets
// the collector take them back when renames stop.
var joinedBufs = sync.Pool{New: func() any { return new([]joinedPeriod) }}

func (a *applier) change(ci uint32) *change {
	c := forChange(a, a.v.tx.changes, a.v.changes, ci, func() []byte { return changeKey(ci) }, encodeChange, decodeChange)
	if c == nil {
		c = &change{}
		a.v.tx.changes[ci] = c
	}
	return c
}

func (a *applier) putChange(ci uint32, c *change) {
	a.v.tx.changes[ci] = c
	a.set(changeKey(ci), encodeChange(c))
}

func changeKey(ci uint32) []byte {
	return binary.BigEndian.AppendUint32(keyOf(prefixChange), ci)
}

// erase drops every name of the user the view holds, so that none stays
// readable through any read after profile.erased (the runner then purges
// the store's files); a rebuild decodes them as erased anyway. It costs
// O(the user's history), not O(the log).
func (a *applier) erase(user domain.UserID) {
	u := a.user(user)
	u.global = [numFields]*string{}
	var propagated []eventstore.Position // where the user's global changes are in rooms' histories
	for f := range numFields {
		u.lastProp[f].val = nil
		lo := rangeOf(prefixUserProp, string(user), fieldPart(f))
		type kv struct{ k, v []byte }
		var props []kv
		a.fail(a.tx.Scan(lo, viewstore.PrefixEnd(lo), false, func(k, v []byte) bool {
			props = append(props, kv{bytes.Clone(k), bytes.Clone(v)})
			return true
		}))
		for _, p := range props {
			propagated = append(propagated, readPos(p.k[len(p.k)-16:]))
			d := dec{b: p.v}
			d.opt()
			ci := d.uint()
			var w enc
			w.opt(nil)
			w.uint(ci)
			a.set(p.k, w.b)
		}
	}
	a.putUser(user, u)
	hist := rangeOf(prefixUserHist, string(user))
	var cis []uint32
	a.fail(a.tx.Scan(hist, viewstore.PrefixEnd(hist), false, func(_, val []byte) bool {
		cis = append(cis, binary.BigEndian.Uint32(val))
		return true
	}))
	for _, ci := range cis {
		c := a.change(ci)
		c.old, c.new, c.names = nil, nil, [numFields]*string{}
		a.putChange(ci, c)
	}
	for _, room := range a.rangeRooms(prefixTouched, user) {
		lo := rangeOf(prefixUserEntry, string(room), string(user))
		type kv struct{ k, v []byte }
		var entries []kv
		a.fail(a.tx.Scan(lo, viewstore.PrefixEnd(lo), false, func(k, val []byte) bool {
			entries = append(entries, kv{append([]byte(nil), k...), append([]byte(nil), val...)})
			return true
		}))
		for _, en := range entries {
			re := decodeEntry(en.v, room, a)
			re.old = 0
			a.set(en.k, encodeEntry(re))
			// The room's copy: the change, erased above, and no old value.
			re.ch, re.oldVal = a.change(re.c), nil
			a.set(posKey(readPos(en.k[len(en.k)-16:]), prefixEntry, string(room)), encodeEntry(re))
		}
		for _, ord := range propagated {
			k := posKey(ord, prefixEntry, string(room))
			raw, ok, err := a.tx.Get(k)
			a.fail(err)
			if !ok {
				continue // the change did not reach this room
			}
			re := decodeEntry(raw, room, a)
			re.old, re.ch, re.oldVal = 0, a.change(re.c), nil
			a.set(k, encodeEntry(re))
		}
		if m := a.member(room, user); m != nil {
			for i := range m.periods {
				p := &m.periods[i]
				p.names = [numFields]*string{}
				for f := range numFields {
					for j := range p.ovr[f] {
						p.ovr[f][j].val = nil
					}
				}
			}
			a.putMember(room, user, m)
		}
	}
}

// past reads the user's earlier changes in the transaction.
func (a *applier) past(user domain.UserID) pastChanges {
	return userPast{r: a.tx, user: user, fail: a.fail}
}

// rangeRooms lists the rooms of a user-and-room key range (touched, joined).
func (a *applier) rangeRooms(prefix string, user domain.UserID) []domain.RoomID {
	var out []domain.RoomID
	lo := rangeOf(prefix, string(user))
	a.fail(a.tx.Scan(lo, viewstore.PrefixEnd(lo), false, func(k, _ []byte) bool {
		out = append(out, domain.RoomID(k[len(lo):]))
		return true
	}))
	return out
}

// markTime keeps the running maximum of occurred_at against positions, so a
// timestamp maps to the last position at or before it even if clocks of
// several writers disagree slightly.
func (a *applier) markTime(e *domain.Event) {
	// A backfilled event's place counts too, so that live events applied
	// after it always order after it.
	ms := max(e.Meta.OccurredAt.UnixMilli(), e.Meta.OrderTS)
	m := &a.v.tx.mark
	if !m.pos.IsStart() && ms > m.ms {
		// The mark moves on: the finished one is written (the newest at Flush).
		var w enc
		w.pos(m.pos)
		a.set(binary.BigEndian.AppendUint64(keyOf(prefixTime), uint64(m.ms)), w.b)
		a.set(posKey(m.pos, prefixTimePos), binary.BigEndian.AppendUint64(nil, uint64(m.ms)))
	}
	if m.pos.IsStart() || ms > m.ms {
		m.ms = ms
	}
	m.pos = e.Position
}

// orderNow lies after every order key: reads of the present use it.
var orderNow = eventstore.Position{Commit: math.MaxUint64, Prepare: math.MaxUint64}

// orderOf is the event's order key (see Rooms). A backfilled event's is
// also kept under its log position, for reads as of that position.
func (a *applier) orderOf(e *domain.Event) eventstore.Position {
	if e.Meta.OrderTS > 0 {
		o := eventstore.Position{Commit: uint64(e.Meta.OrderTS), Prepare: e.Position.Prepare}
		var w enc
		w.pos(o)
		a.set(posKey(e.Position, prefixOrder), w.b)
		return o
	}
	return eventstore.Position{Commit: uint64(max(a.v.tx.mark.ms, 0)), Prepare: e.Position.Prepare}
}

// justBefore is the order key just before o (o itself for the first).
func justBefore(o eventstore.Position) eventstore.Position {
	switch {
	case o.Prepare > 0:
		o.Prepare--
	case o.Commit > 0:
		o.Commit, o.Prepare = o.Commit-1, math.MaxUint64
	}
	return o
}

// orderAt is the order key that a read as of log position p uses: a
// backfilled event's own, otherwise the time mark at p and p itself, so
// that it takes in every event recorded up to p and every backfilled one
// the homeserver placed before it.
func (v *Rooms) orderAt(r viewstore.Reader, p eventstore.Position) (eventstore.Position, error) {
	raw, ok, err := r.Get(posKey(p, prefixOrder))
	if err != nil {
		return eventstore.Position{}, err
	}
	if ok {
		d := dec{b: raw}
		o := d.pos()
		return o, d.err
	}
	ms := v.mark.ms
	lo := rangeOf(prefixTimePos)
	err = r.Scan(posKey(p, prefixTimePos), viewstore.PrefixEnd(lo), false, func(_, val []byte) bool {
		if len(val) == 8 {
			ms = int64(binary.BigEndian.Uint64(val))
		}
		return false
	})
	return eventstore.Position{Commit: uint64(max(ms, 0)), Prepare: p.Prepare}, err
}

// orderAtTime is the order key of reads as of t: everything that happened
// at or before it, in the homeserver's time for backfilled events.
func orderAtTime(t time.Time) eventstore.Position {
	return eventstore.Position{Commit: uint64(max(t.UnixMilli(), 0)), Prepare: math.MaxUint64}
}

func (a *applier) newChange(e *domain.Event, k kind) (*change, uint32) {
	c := &change{pos: e.Position, ms: e.Meta.OccurredAt.UnixMilli(), user: e.User, room: e.Room, kind: k,
		typ: e.Type, actor: e.Meta.Actor, source: e.Meta.Source, by: e.By, prop: e.PropagateTo}
	ci := a.v.tx.nChanges
	a.v.tx.nChanges++
	a.v.tx.changes[ci] = c
	a.set(posKey(a.ord, prefixUserHist, string(e.User)), binary.BigEndian.AppendUint32(nil, ci))
	return c, ci
}

// addEntry adds a line to a room's history and marks the room touched.
// Only a membership entry marks the room touched: every other entry is of
// a member whose join or invite already did.
//
// inline is the change encoded (encodeInline), shared by the rooms a global
// change fans out to; oldVal is the room's value before the change.
func (a *applier) addEntry(room domain.RoomID, user domain.UserID, pos eventstore.Position, ci uint32, old valueRef, oldVal *string, inline []byte, membership, global bool) {
	// The store copies what it is given: one scratch buffer serves every
	// key and value of a fan-out to thousands of rooms.
	s := &a.scratch
	s.val = encodeEntryTo(s.val[:0], roomEntry{c: ci, old: old})
	ref := len(s.val)
	s.val = appendInline(s.val, oldVal, inline)
	s.key = appendPos(appendKey(s.key[:0], prefixEntry, string(room), ""), pos)
	a.set(s.key, s.val)
	if !global {
		// A global change's entry in a room is found from the user's
		// propagated changes ("rp") instead: one key per room, not two,
		// for a fan-out to thousands of rooms.
		s.key = appendPos(appendKey(s.key[:0], prefixUserEntry, string(room), string(user), ""), pos)
		a.set(s.key, s.val[:ref])
	}
	if membership {
		a.set(keyOf(prefixTouched, string(user), string(room)), nil)
	}
}

func (a *applier) applyGlobal(e *domain.Event) {
	f, ok := fieldIndex(e.Key)
	if !ok {
		return // custom fields never appear in rooms
	}
	u := a.user(e.User)
	var val *string
	if e.Type == domain.TypeFieldSet && !e.Erased {
		val = stringValue(e.Value)
	}
	k := kGlobalRename
	if f == fAvatarURL {
		k = kGlobalAvatar
	}
	c, ci := a.newChange(e, k)
	prop := e.PropagateTo
	if prop == "" {
		prop = domain.PropagateUnchanged // events from before propagation was recorded
	}
	// A backfilled change older than the user's last propagated one is
	// history only: the current values stay.
	newest := !u.hasProp[f] || !a.ord.Before(u.lastProp[f].pos)
	c.field, c.new = uint8(f), val
	if newest {
		c.old, c.oldRef = u.global[f], u.globalRef[f]
		u.global[f], u.globalRef[f] = val, 0
		if val != nil {
			u.globalRef[f] = valueRef(ci + 1)
		}
	} else if pc, ok := a.past(e.User).propLE(f, a.ord); ok {
		c.old = pc.val
		if pc.val != nil {
			c.oldRef = valueRef(pc.ci + 1)
		}
	}
	if prop != domain.PropagateNone {
		// Only the history fans out; the room values follow from the
		// propagated changes recorded below. A live change reaches the
		// rooms the user is joined to now; a backfilled one those the
		// user was joined to at its place in history.
		type reached struct {
			room   domain.RoomID
			before *string
			src    valueRef
		}
		var rooms []reached
		if e.Meta.OrderTS <= 0 {
			past := a.past(e.User)
			buf := joinedBufs.Get().(*[]joinedPeriod)
			joined := a.joined(e.User, (*buf)[:0])
			defer func() {
				clear(joined) // no names or rooms kept alive in the pool
				*buf = joined[:0]
				joinedBufs.Put(buf)
			}()
			rooms = make([]reached, 0, len(joined))
			for i := range joined {
				j := &joined[i]
				if prop == domain.PropagateUnchanged && u.hasOverride(&j.period, f) {
					continue
				}
				before, src := u.value(&j.period, f, orderNow, past)
				rooms = append(rooms, reached{j.room, before, src})
			}
		}
		if newest {
			u.lastProp[f], u.hasProp[f] = propChange{pos: a.ord, val: val, ci: ci}, true
		}
		var w enc
		w.opt(val)
		w.uint(uint64(ci))
		a.set(posKey(a.ord, prefixUserProp, string(e.User), fieldPart(f)), w.b)
		if prop == domain.PropagateAll {
			if newest || u.lastAll[f].Before(a.ord) {
				u.lastAll[f] = a.ord
			}
			a.set(posKey(a.ord, prefixUserAll, string(e.User), fieldPart(f)), nil)
		}
		if !newest {
			a.relinkNext(e.User, f, ci, val)
		}
		var inline []byte // the change as every room's entry carries it
		for _, r := range rooms {
			if sameValue(r.before, val) {
				continue
			}
			if inline == nil {
				inline = encodeInline(c)
			}
			a.addEntry(r.room, e.User, a.ord, ci, r.src, r.before, inline, false, true)
		}
		if e.Meta.OrderTS > 0 {
			// A backfilled change reaches the rooms the user was joined to
			// at its place, and changes the entries after it there.
			a.putChange(ci, c) // refanOut reads it
			for _, room := range a.rangeRooms(prefixTouched, e.User) {
				m := a.member(room, e.User)
				if i := lastLE(m.periods, periodPos, a.ord); i >= 0 && m.periods[i].state == stJoin {
					a.refanOut(room, e.User, u, &m.periods[i], justBefore(a.ord), periodEnd(m, i))
				}
			}
		}
	}
	a.putChange(ci, c)
	a.putUser(e.User, u)
}

func (a *applier) applyMembership(e *domain.Event) {
	u := a.user(e.User)
	m := a.member(e.Room, e.User)
	if m == nil {
		m = &memberRec{}
	}
	if _, ok := a.v.tx.rooms[e.Room]; !ok {
		a.putRoom(e.Room, a.room(e.Room)) // the room exists from its first member on
	}
	// The period before this event in history order: the last one for a
	// live event, possibly an earlier one for a backfilled event.
	i := lastLE(m.periods, periodPos, a.ord)
	var cur *period
	if i >= 0 {
		cur = &m.periods[i]
	}
	var k kind
	next := period{pos: a.ord}
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
				names[f], namesRef[f] = u.value(cur, f, a.ord, a.past(e.User))
			}
		}
	}
	c, ci := a.newChange(e, k)
	c.names, c.namesRef = names, namesRef
	next.ci = ci
	m.periods = slices.Insert(m.periods, i+1, next)
	if e.Meta.OrderTS > 0 {
		a.refanOut(e.Room, e.User, u, &m.periods[i+1], a.ord, periodEnd(m, i+1))
	}
	a.putMember(e.Room, e.User, m)
	a.putChange(ci, c)
	a.addEntry(e.Room, e.User, a.ord, ci, 0, nil, encodeInline(c), true, false)
}

// relinkNext makes change ci, just put into the user's past, the old global
// value of the next propagated change of f, which was recorded before it.
func (a *applier) relinkNext(user domain.UserID, f int, ci uint32, val *string) {
	lo := append(posKey(a.ord, prefixUserProp, string(user), fieldPart(f)), 0)
	hi := viewstore.PrefixEnd(rangeOf(prefixUserProp, string(user), fieldPart(f)))
	next, found := uint32(0), false
	a.fail(a.tx.Scan(lo, hi, false, func(_, v []byte) bool {
		d := dec{b: v}
		d.opt()
		next, found = uint32(d.uint()), true
		return false
	}))
	if !found {
		return
	}
	c := a.change(next)
	c.old, c.oldRef = val, 0
	if val != nil {
		c.oldRef = valueRef(ci + 1)
	}
	a.putChange(next, c)
}

// periodEnd is where the member's period at index i ends (orderNow for
// the current one).
func periodEnd(m *memberRec, i int) eventstore.Position {
	if i+1 < len(m.periods) {
		return m.periods[i+1].pos
	}
	return orderNow
}

// refanOut redoes the room's entries of the user's global changes after
// from and before end, inside period p, after a backfill put something
// into history there (a membership period, an override, a global change):
// the entries recorded before may belong to another period now, or name
// an old value that is no longer the one before them, and global changes
// may now change what the room showed where they did not. A live event
// needs none of this: nothing lies after it.
func (a *applier) refanOut(room domain.RoomID, user domain.UserID, u *userState, p *period, from, end eventstore.Position) {
	// The room's entries of global changes lie at the order keys of the
	// user's propagated changes ("rp").
	var stale []eventstore.Position
	for f := range numFields {
		lo := append(posKey(from, prefixUserProp, string(user), fieldPart(f)), 0)
		hi := posKey(end, prefixUserProp, string(user), fieldPart(f))
		a.fail(a.tx.Scan(lo, hi, false, func(k, _ []byte) bool {
			stale = append(stale, readPos(k[len(k)-16:]))
			return true
		}))
	}
	for _, ord := range stale {
		a.fail(a.tx.Delete(posKey(ord, prefixEntry, string(room))))
	}
	if p.state != stJoin {
		return
	}
	past := a.past(user)
	for f := range numFields {
		type prop struct {
			pos eventstore.Position
			ci  uint32
		}
		var props []prop
		plo := append(posKey(from, prefixUserProp, string(user), fieldPart(f)), 0)
		phi := posKey(end, prefixUserProp, string(user), fieldPart(f))
		a.fail(a.tx.Scan(plo, phi, false, func(k, val []byte) bool {
			d := dec{b: val}
			d.opt()
			props = append(props, prop{readPos(k[len(k)-16:]), uint32(d.uint())})
			return true
		}))
		for _, pc := range props {
			if !p.pos.Before(pc.pos) {
				continue // at the period's start the join's names hold
			}
			before, src := u.value(p, f, justBefore(pc.pos), past)
			if after, _ := u.value(p, f, pc.pos, past); !sameValue(before, after) {
				a.addEntry(room, user, pc.pos, pc.ci, src, before, encodeInline(a.change(pc.ci)), false, true)
			}
		}
	}
}

func (a *applier) applyOverride(e *domain.Event) {
	f, ok := fieldIndex(e.Key)
	if !ok {
		return
	}
	m := a.member(e.Room, e.User)
	p := m.stateAt(a.ord)
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
	u := a.user(e.User)
	before, beforeRef := u.value(p, f, a.ord, a.past(e.User))
	c, ci := a.newChange(e, k)
	p.ovr[f] = slices.Insert(p.ovr[f], lastLE(p.ovr[f], propPos, a.ord)+1, propChange{pos: a.ord, val: val, ci: ci})
	c.field, c.old, c.oldRef = uint8(f), before, beforeRef
	c.new, _ = u.value(p, f, a.ord, a.past(e.User))
	if e.Meta.OrderTS > 0 {
		a.refanOut(e.Room, e.User, u, p, a.ord, periodEnd(m, lastLE(m.periods, periodPos, a.ord)))
	}
	a.putMember(e.Room, e.User, m)
	a.putChange(ci, c)
	a.addEntry(e.Room, e.User, a.ord, ci, c.oldRef, c.old, encodeInline(c), false, false)
}

// Position returns the position of the last event applied.
func (v *Rooms) Position() eventstore.Position {
	v.db.mu.RLock()
	defer v.db.mu.RUnlock()
	return v.last
}

// PositionAt returns the position of the last event that occurred at or
// before t (Start when none did), for as-of reads by timestamp.
func (v *Rooms) PositionAt(t time.Time) eventstore.Position {
	pos := eventstore.Start
	v.db.read(func(r viewstore.Reader) { pos = positionAt(r, t) })
	return pos
}

func positionAt(r viewstore.Reader, t time.Time) eventstore.Position {
	pos := eventstore.Start
	ms := t.UnixMilli()
	if ms < 0 {
		return pos
	}
	lo := keyOf(prefixTime)
	hi := binary.BigEndian.AppendUint64(keyOf(prefixTime), uint64(ms)+1)
	_ = r.Scan(lo, hi, true, func(_, val []byte) bool {
		d := dec{b: val}
		pos = d.pos()
		return false
	})
	return pos
}

// Encodings of the rooms view's values.

func encProps(w *enc, ps []propChange) {
	w.uint(uint64(len(ps)))
	for _, p := range ps {
		w.pos(p.pos)
		w.opt(p.val)
		w.uint(uint64(p.ci))
	}
}

func decProps(d *dec) []propChange {
	n := d.uint()
	if n == 0 || d.err != nil {
		return nil
	}
	out := make([]propChange, 0, min(n, 1<<16))
	for ; n > 0 && d.err == nil; n-- {
		out = append(out, propChange{pos: d.pos(), val: d.opt(), ci: uint32(d.uint())})
	}
	return out
}

func encodeUserState(u *userState) []byte {
	var w enc
	for f := range numFields {
		w.opt(u.global[f])
		w.uint(uint64(u.globalRef[f]))
		w.bool(u.hasProp[f])
		w.pos(u.lastProp[f].pos)
		w.opt(u.lastProp[f].val)
		w.uint(uint64(u.lastProp[f].ci))
		w.pos(u.lastAll[f])
	}
	return w.b
}

// decodeUserState decodes a user; a corrupt value is reported to the
// applier or reader given (errs), which may be nil.
func decodeUserState(raw []byte, errs interface{ fail(error) }) *userState {
	d := dec{b: raw}
	u := &userState{}
	for f := range numFields {
		u.global[f] = d.opt()
		u.globalRef[f] = valueRef(d.uint())
		u.hasProp[f] = d.bool()
		u.lastProp[f] = propChange{pos: d.pos(), val: d.opt(), ci: uint32(d.uint())}
		u.lastAll[f] = d.pos()
	}
	if errs != nil {
		errs.fail(d.err)
	}
	return u
}

func encodeMember(m *memberRec) []byte {
	var w enc
	w.uint(uint64(len(m.periods)))
	for _, p := range m.periods {
		w.pos(p.pos)
		w.uint(uint64(p.state))
		w.uint(uint64(p.ci))
		for f := range numFields {
			w.opt(p.names[f])
			encProps(&w, p.ovr[f])
		}
	}
	return w.b
}

func decodeMember(raw []byte, errs interface{ fail(error) }) *memberRec {
	d := dec{b: raw}
	m := &memberRec{}
	for n := d.uint(); n > 0 && d.err == nil; n-- {
		m.periods = append(m.periods, decodePeriod(&d))
	}
	if errs != nil {
		errs.fail(d.err)
	}
	return m
}

func decodePeriod(d *dec) period {
	p := period{pos: d.pos(), state: uint8(d.uint()), ci: uint32(d.uint())}
	for f := range numFields {
		p.names[f] = d.opt()
		p.ovr[f] = decProps(d)
	}
	return p
}

func encodeRoomState(r *roomState) []byte {
	var w enc
	w.uint(uint64(len(r.vis)))
	for _, m := range r.vis {
		w.pos(m.pos)
		w.str(m.vis)
	}
	var pl []byte
	if r.pl != nil {
		pl, _ = json.Marshal(r.pl)
	}
	w.raw(pl)
	w.pos(r.plOrd)
	return w.b
}

func decodeRoomState(raw []byte, errs interface{ fail(error) }) *roomState {
	d := dec{b: raw}
	r := &roomState{}
	for n := d.uint(); n > 0 && d.err == nil; n-- {
		r.vis = append(r.vis, visMark{pos: d.pos(), vis: d.str()})
	}
	if pl := d.raw(); len(pl) > 0 && d.err == nil {
		r.pl = &domain.PowerLevels{}
		if err := json.Unmarshal(pl, r.pl); err != nil {
			d.err = errCorrupt
		}
	}
	r.plOrd = d.pos()
	if errs != nil {
		errs.fail(d.err)
	}
	return r
}

func encodeChange(c *change) []byte {
	var w enc
	w.pos(c.pos)
	w.int(c.ms)
	w.str(string(c.user))
	w.str(string(c.room))
	w.uint(uint64(c.kind))
	w.uint(uint64(c.field))
	w.str(string(c.prop))
	w.opt(c.old)
	w.opt(c.new)
	for f := range numFields {
		w.opt(c.names[f])
		w.uint(uint64(c.namesRef[f]))
	}
	w.uint(uint64(c.oldRef))
	w.str(c.typ)
	w.str(string(c.actor))
	w.str(c.source)
	w.str(string(c.by))
	return w.b
}

func decodeChange(raw []byte, errs interface{ fail(error) }) *change {
	d := dec{b: raw}
	c := &change{pos: d.pos(), ms: d.int(), user: domain.UserID(d.str()), room: domain.RoomID(d.str()),
		kind: kind(d.uint()), field: uint8(d.uint()), prop: domain.Propagation(d.str())}
	c.old, c.new = d.opt(), d.opt()
	for f := range numFields {
		c.names[f] = d.opt()
		c.namesRef[f] = valueRef(d.uint())
	}
	c.oldRef = valueRef(d.uint())
	c.typ, c.actor, c.source, c.by = d.str(), domain.UserID(d.str()), d.str(), domain.UserID(d.str())
	if int(c.kind) >= len(kindNames) || c.field >= numFields {
		d.err = errCorrupt
	}
	if errs != nil {
		errs.fail(d.err)
	}
	return c
}

func encodeEntry(e roomEntry) []byte {
	b := encodeEntryTo(nil, e)
	if e.ch != nil {
		return appendInline(b, e.oldVal, encodeInline(e.ch))
	}
	return b
}

// encodeEntryTo appends the entry's reference part (c, old) to b.
func encodeEntryTo(b []byte, e roomEntry) []byte {
	w := enc{b: b}
	w.uint(uint64(e.c))
	w.uint(uint64(e.old))
	return w.b
}

// appendInline appends a room history entry's copy of its change.
func appendInline(b []byte, oldVal *string, inline []byte) []byte {
	w := enc{b: b}
	w.opt(oldVal)
	w.b = append(w.b, inline...)
	return w.b
}

// Event types of changes, coded in the inline copy (0 is a type written
// out in full).
var inlineTypes = [...]string{"", domain.TypeFieldSet, domain.TypeFieldDeleted, domain.TypeMemberJoined,
	domain.TypeMemberInvited, domain.TypeMemberLeft, domain.TypeMemberProfileSet, domain.TypeMemberProfileGone}

// encodeInline writes a change as a room's history entry carries it, in
// as few bytes as a global change fanning out to thousands of rooms
// should cost: its old value and the reference to it are the entry's
// (oldVal, old), the actor is coded when it is the user, the type by
// number, and names only for membership.
func encodeInline(c *change) []byte {
	var w enc
	w.pos(c.pos)
	w.int(c.ms)
	w.str(string(c.user))
	w.bool(c.room != "")
	w.uint(uint64(c.kind))
	w.uint(uint64(c.field))
	w.str(string(c.prop))
	w.opt(c.new)
	switch c.kind {
	case kJoin, kInvite, kLeave, kKick, kBan, kUnban:
		for f := range numFields {
			w.opt(c.names[f])
			w.uint(uint64(c.namesRef[f]))
		}
	}
	t := 0
	for i, name := range inlineTypes {
		if i > 0 && name == c.typ {
			t = i
		}
	}
	w.uint(uint64(t))
	if t == 0 {
		w.str(c.typ)
	}
	if c.actor == c.user {
		w.bool(false)
	} else {
		w.bool(true)
		w.str(string(c.actor))
	}
	w.str(c.source)
	w.str(string(c.by))
	return w.b
}

// decodeInline reads what encodeInline wrote, for an entry of room.
func decodeInline(d *dec, room domain.RoomID, e roomEntry) *change {
	c := &change{pos: d.pos(), ms: d.int(), user: domain.UserID(d.str())}
	if d.bool() {
		c.room, c.old, c.oldRef = room, e.oldVal, e.old
	}
	c.kind, c.field, c.prop = kind(d.uint()), uint8(d.uint()), domain.Propagation(d.str())
	c.new = d.opt()
	switch c.kind {
	case kJoin, kInvite, kLeave, kKick, kBan, kUnban:
		for f := range numFields {
			c.names[f] = d.opt()
			c.namesRef[f] = valueRef(d.uint())
		}
	}
	if t := d.uint(); t == 0 {
		c.typ = d.str()
	} else if t < uint64(len(inlineTypes)) {
		c.typ = inlineTypes[t]
	} else {
		d.err = errCorrupt
	}
	c.actor = c.user
	if d.bool() {
		c.actor = domain.UserID(d.str())
	}
	c.source, c.by = d.str(), domain.UserID(d.str())
	if int(c.kind) >= len(kindNames) || c.field >= numFields {
		d.err = errCorrupt
	}
	return c
}

// decodeEntry decodes an entry of room, with its inline change when it
// has one.
func decodeEntry(raw []byte, room domain.RoomID, errs interface{ fail(error) }) roomEntry {
	d := dec{b: raw}
	e := roomEntry{c: uint32(d.uint()), old: valueRef(d.uint())}
	if d.err == nil && len(d.b) > 0 {
		e.oldVal = d.opt()
		e.ch = decodeInline(&d, room, e)
	}
	if errs != nil {
		errs.fail(d.err)
	}
	return e
}
