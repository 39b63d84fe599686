package projections

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/profilestore/profilestore/domain"
	"github.com/profilestore/profilestore/eventstore"
	"github.com/profilestore/profilestore/projections/viewstore"
)

// Viewer is who reads a room or user history; what they may read is
// domain.Reads' decision, from the facts the view gives it.
type Viewer = domain.Reader

// Member is one member of a room as the room shows them.
type Member struct {
	User domain.UserID
	// Membership is join or invite.
	Membership  string
	DisplayName *string
	AvatarURL   *string
}

// DisplayValues are a member's displayname and avatar_url in a history
// entry; nil is unset.
type DisplayValues struct {
	DisplayName *string `json:"displayname,omitempty"`
	AvatarURL   *string `json:"avatar_url,omitempty"`
}

// Cause says what made a history entry.
type Cause struct {
	// Type is the event type, e.g. profile.field_set or room.member_left.
	Type   string
	Actor  domain.UserID
	Source string
	// By is who kicked, banned or invited.
	By domain.UserID
	// PropagateTo is set on global changes.
	PropagateTo domain.Propagation
}

// HistoryEntry is one line of a room's or a user's history.
type HistoryEntry struct {
	Position eventstore.Position
	Time     time.Time
	// Room is the room the entry is about; "" for a global change in a user's history.
	Room domain.RoomID
	User domain.UserID
	Kind string
	// Field is displayname or avatar_url for renames and overrides, "" for
	// membership entries, whose Old and New carry both values.
	Field string
	Old   DisplayValues
	New   DisplayValues
	Cause Cause
	// Hidden is true when the entry was hidden (profile.entry_hidden); to
	// readers who may not see it, its values are then empty.
	Hidden bool
	// OldHidden is true when the old value was set by a hidden entry and is
	// left out for this reader.
	OldHidden bool
}

// HistoryQuery selects a page of history.
type HistoryQuery struct {
	Viewer Viewer
	// Backwards pages from newer to older entries (Matrix dir=b).
	Backwards bool
	// From is a token from an earlier page; "" starts at the newest entry
	// (backwards) or the oldest (forwards).
	From string
	// Limit is the most entries returned (1..1000; default 100).
	Limit int
	// User, if set, keeps only entries about that user.
	User domain.UserID
	// Kind, if set, keeps only entries of that kind (one of HistoryKinds).
	Kind string
}

// HistoryKinds returns the kinds of history entries, in the order a filter
// offers them (a copy: callers may not change the view's table).
func HistoryKinds() []string { return slices.Clone(kindNames[:]) }

// keeps reports whether the query's kind filter lets the change through.
func (q *HistoryQuery) keeps(c *change) bool {
	return q.Kind == "" || kindNames[c.kind] == q.Kind
}

// HistoryPage is one page of history.
type HistoryPage struct {
	Entries []HistoryEntry
	// Start is the token the page began at; End continues in the same
	// direction and is "" when there is nothing further.
	Start string
	End   string
}

// MaxHistoryLimit bounds a history page.
const MaxHistoryLimit = 1000

// scanFactor bounds the entries a page examines to skip ones the viewer may
// not see; a page may then hold fewer than Limit entries but has an End.
const scanFactor = 20

// boundary lies between entries: just before pos, or just after it when
// after is set. Tokens name boundaries, so they stay valid as history grows
// and a page read in either direction from a token is the same every time.
type boundary struct {
	pos   eventstore.Position
	after bool
}

func (b boundary) token() string {
	if b.after {
		return "a" + b.pos.String()
	}
	return "b" + b.pos.String()
}

func parseToken(s string) (boundary, error) {
	bad := domain.Errorf(domain.ErrCodeInvalidParam, "Invalid pagination token")
	if len(s) < 2 || (s[0] != 'a' && s[0] != 'b') {
		return boundary{}, bad
	}
	pos, err := eventstore.ParsePosition(s[1:])
	if err != nil {
		return boundary{}, bad
	}
	return boundary{pos: pos, after: s[0] == 'a'}, nil
}

// pageLimit is the query's limit, defaulted and capped.
func pageLimit(q HistoryQuery) int {
	limit := q.Limit
	if limit <= 0 {
		limit = 100
	}
	return min(limit, MaxHistoryLimit)
}

// newHistoryPage returns a page with room for a whole page of entries
// when it is likely to fill: growing 100 entries one by one copied them
// seven times, most of what a history read allocated. A filtered query
// (a user, a kind) often finds fewer and starts empty.
func newHistoryPage(q HistoryQuery) HistoryPage {
	if q.User != "" || q.Kind != "" {
		return HistoryPage{}
	}
	return HistoryPage{Entries: make([]HistoryEntry, 0, pageLimit(q))}
}

// startBoundary is where a query starts: its token, or the first (forwards)
// or newest (backwards) entry.
func startBoundary(q HistoryQuery, last eventstore.Position) (boundary, error) {
	if q.From == "" {
		b := boundary{pos: eventstore.Start, after: true}
		if q.Backwards {
			b.pos = last
		}
		return b, nil
	}
	return parseToken(q.From)
}

// paginate walks n position-ordered items from a boundary, offering each to
// take (which reports whether it kept it) until limit are kept or the scan
// cap is reached, and returns the page's start and end tokens.
func paginate(n int, posAt func(i int) eventstore.Position, q HistoryQuery, last eventstore.Position, take func(i int) bool) (string, string, error) {
	limit := pageLimit(q)
	b, err := startBoundary(q, last)
	if err != nil {
		return "", "", err
	}
	first := sort.Search(n, func(i int) bool {
		if b.after {
			return b.pos.Before(posAt(i))
		}
		return !posAt(i).Before(b.pos)
	})
	kept, scanned, cap := 0, 0, limit*scanFactor
	i, step := first, 1
	if q.Backwards {
		i, step = first-1, -1
	}
	lastScanned := -1
	for ; i >= 0 && i < n && kept < limit && scanned < cap; i += step {
		if take(i) {
			kept++
		}
		scanned++
		lastScanned = i
	}
	if lastScanned < 0 || i < 0 || i >= n {
		return b.token(), "", nil // nothing further in this direction
	}
	end := boundary{pos: posAt(lastScanned), after: !q.Backwards}
	return b.token(), end.token(), nil
}

// paginateRange is paginate over a position-ordered key range of the view
// store (keys are the range's prefix and a position).
func paginateRange(r viewstore.Reader, prefix []byte, q HistoryQuery, last eventstore.Position, take func(pos eventstore.Position, val []byte) bool) (string, string, error) {
	limit := pageLimit(q)
	b, err := startBoundary(q, last)
	if err != nil {
		return "", "", err
	}
	at := appendPos(bytes.Clone(prefix), b.pos)
	lo, hi := prefix, viewstore.PrefixEnd(prefix)
	switch {
	case !q.Backwards && b.after:
		lo = append(at, 0) // after pos
	case !q.Backwards:
		lo = at // from pos
	case b.after:
		hi = append(at, 0) // up to pos
	default:
		hi = at // before pos
	}
	kept, scanned, cap := 0, 0, limit*scanFactor
	var lastScanned eventstore.Position
	more := false
	err = r.Scan(lo, hi, q.Backwards, func(k, val []byte) bool {
		if kept >= limit || scanned >= cap {
			more = true
			return false
		}
		pos := readPos(k[len(k)-16:])
		if take(pos, val) {
			kept++
		}
		scanned++
		lastScanned = pos
		return true
	})
	if err != nil {
		return "", "", err
	}
	if !more {
		return b.token(), "", nil // nothing further in this direction
	}
	end := boundary{pos: lastScanned, after: !q.Backwards}
	return b.token(), end.token(), nil
}

// rangeFrom is the key range of a position-ordered range under prefix
// that a page starting at boundary b reads in its direction.
func rangeFrom(prefix []byte, b boundary, backwards bool) (lo, hi []byte) {
	at := appendPos(bytes.Clone(prefix), b.pos)
	lo, hi = prefix, viewstore.PrefixEnd(prefix)
	switch {
	case !backwards && b.after:
		lo = append(at, 0) // after pos
	case !backwards:
		lo = at // from pos
	case b.after:
		hi = append(at, 0) // up to pos
	default:
		hi = at // before pos
	}
	return lo, hi
}

// userEntry is one of a user's entries in a room's history, as stored.
type userEntry struct {
	ord eventstore.Position
	val []byte
}

// userEntries lists a user's entries in a room from boundary b in a
// direction, in order, reading at most max (0: no bound) keys of each
// source: the membership and per-room entries ("rb"), and the room's
// entries ("re") at the order keys of the user's propagated global changes
// ("rp"), which only some rooms have. When a source had more, the list
// stops where the examined part ends (next) and more is set.
func userEntries(r viewstore.Reader, room domain.RoomID, user domain.UserID, b boundary, backwards bool, max int) (out []userEntry, next eventstore.Position, more bool, err error) {
	type source struct {
		prefix []byte
		global bool
	}
	sources := []source{{prefix: rangeOf(prefixUserEntry, string(room), string(user))}}
	for f := range numFields {
		sources = append(sources, source{prefix: rangeOf(prefixUserProp, string(user), fieldPart(f)), global: true})
	}
	before := func(x, y eventstore.Position) bool { // x comes first in the direction read
		if backwards {
			return y.Before(x)
		}
		return x.Before(y)
	}
	for _, s := range sources {
		lo, hi := rangeFrom(s.prefix, b, backwards)
		n := 0
		var last eventstore.Position
		var ords []eventstore.Position
		err = r.Scan(lo, hi, backwards, func(k, val []byte) bool {
			if max > 0 && n == max {
				if !more || before(last, next) {
					next, more = last, true
				}
				return false
			}
			n++
			last = readPos(k[len(k)-16:])
			if s.global {
				ords = append(ords, last)
			} else {
				out = append(out, userEntry{last, bytes.Clone(val)})
			}
			return true
		})
		if err != nil {
			return nil, next, false, err
		}
		for _, ord := range ords {
			raw, ok, err := r.Get(posKey(ord, prefixEntry, string(room)))
			if err != nil {
				return nil, next, false, err
			}
			if ok {
				out = append(out, userEntry{ord, raw})
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return before(out[i].ord, out[j].ord) })
	if more {
		cut := sort.Search(len(out), func(i int) bool { return before(next, out[i].ord) })
		out = out[:cut]
	}
	return out, next, more, nil
}

// paginateUserEntries is paginateRange over a user's entries in a room.
func paginateUserEntries(r viewstore.Reader, room domain.RoomID, user domain.UserID, q HistoryQuery, take func(ord eventstore.Position, val []byte) bool) (string, string, error) {
	limit := pageLimit(q)
	b, err := startBoundary(q, orderNow)
	if err != nil {
		return "", "", err
	}
	entries, next, more, err := userEntries(r, room, user, b, q.Backwards, limit*scanFactor)
	if err != nil {
		return "", "", err
	}
	kept := 0
	for i, en := range entries {
		if kept == limit {
			more, next = true, entries[i-1].ord
			break
		}
		if take(en.ord, en.val) {
			kept++
		}
	}
	if !more {
		return b.token(), "", nil // nothing further in this direction
	}
	return b.token(), boundary{pos: next, after: !q.Backwards}.token(), nil
}

// roomsReader reads committed state through the caches; what it returns
// is shared and must not be changed.
type roomsReader struct {
	v *Rooms
	r viewstore.Reader
	// err is the first view store failure.
	err error
}

func (rr *roomsReader) fail(err error) {
	if rr.err == nil && err != nil {
		rr.err = err
	}
}

func (rr *roomsReader) get(key []byte) ([]byte, bool) {
	raw, ok, err := rr.r.Get(key)
	rr.fail(err)
	return raw, ok
}

// committed returns the committed object under k: the cache's, or the
// stored one decoded and cached; nil when the store has none. Readers
// share it: it must not be changed.
func committed[K comparable, V any](rr *roomsReader, cache *lru.Cache[K, *V], k K, key func() []byte,
	decode func([]byte, interface{ fail(error) }) *V) *V {
	if o, ok := cache.Get(k); ok {
		rr.v.stats.hit()
		return o
	}
	rr.v.stats.miss()
	raw, ok := rr.get(key())
	if !ok {
		return nil
	}
	o := decode(raw, rr)
	cache.Add(k, o)
	return o
}

func (rr *roomsReader) room(id domain.RoomID) *roomState {
	return committed(rr, rr.v.rooms, id, func() []byte { return keyOf(prefixRoom, string(id)) }, decodeRoomState)
}

func (rr *roomsReader) user(id domain.UserID) *userState {
	return committed(rr, rr.v.users, id, func() []byte { return keyOf(prefixUser, string(id)) }, decodeUserState)
}

// bulkUsers is the number of users not in the cache from which users
// reads them with one iterator rather than a Get each.
const bulkUsers = 64

// users returns the states of many users (ids ascending, as a room's
// member keys list them) when bulkUsers or more of them are not in the
// cache: those read with one iterator, and not added to the cache, which
// a listing of a big room would otherwise fill with users read once. With
// fewer, or a store that cannot, it returns nil and callers use user.
func (rr *roomsReader) users(ids []domain.UserID) map[domain.UserID]*userState {
	sg, ok := rr.r.(viewstore.SortedGetter)
	if !ok || len(ids) < bulkUsers {
		return nil
	}
	found := make(map[domain.UserID]*userState, len(ids))
	var keys [][]byte
	var missed []domain.UserID
	for _, id := range ids {
		if u, ok := rr.v.users.Peek(id); ok {
			found[id] = u
			continue
		}
		keys, missed = append(keys, keyOf(prefixUser, string(id))), append(missed, id)
	}
	if len(missed) < bulkUsers {
		return nil
	}
	rr.v.stats.hits.Add(uint64(len(ids) - len(missed)))
	rr.v.stats.misses.Add(uint64(len(missed)))
	rr.fail(sg.GetSorted(keys, func(i int, raw []byte) {
		found[missed[i]] = decodeUserState(raw, rr)
	}))
	for _, id := range missed {
		if _, ok := found[id]; !ok {
			found[id] = nil // no state: as user returns for a user never seen
		}
	}
	return found
}

func (rr *roomsReader) member(room domain.RoomID, user domain.UserID) *memberRec {
	return committed(rr, rr.v.members, memberKey{room, user}, func() []byte { return keyOf(prefixMember, string(room), string(user)) }, decodeMember)
}

// change returns a recorded change; every entry names one, so a missing
// one is a corrupt store.
func (rr *roomsReader) change(ci uint32) *change {
	c := committed(rr, rr.v.changes, ci, func() []byte { return changeKey(ci) }, decodeChange)
	if c == nil {
		rr.fail(errCorrupt)
		return &change{}
	}
	return c
}

func (rr *roomsReader) hidden(pos eventstore.Position) bool {
	if rr.v.hidden.Load() == 0 {
		return false
	}
	_, ok := rr.get(posKey(pos, prefixHidden))
	return ok
}

// read runs fn against committed state and returns the first view store
// failure as an internal error.
func (v *Rooms) read(fn func(rr *roomsReader) error) error {
	var err error
	v.db.read(func(r viewstore.Reader) {
		rr := &roomsReader{v: v, r: r}
		err = fn(rr)
		if err == nil && rr.err != nil {
			err = fmt.Errorf("%w: %v", errStorage, rr.err)
		}
	})
	return err
}

func visibilityAt(r *roomState, pos eventstore.Position) string {
	if i := lastLE(r.vis, visPos, pos); i >= 0 {
		return r.vis[i].vis
	}
	return domain.DefaultHistoryVisibility
}

// access gives the read policy the facts of the room and the viewer, and
// returns the room and what the viewer may read of it.
func (rr *roomsReader) access(room domain.RoomID, viewer Viewer) (*roomState, domain.RoomAccess, error) {
	r := rr.room(room)
	facts := domain.RoomFacts{Known: r != nil}
	if r != nil && !viewer.Admin {
		facts.ReaderModerates = r.pl.IsModerator(viewer.User)
		if !facts.ReaderModerates {
			p := rr.member(room, viewer.User).current()
			facts.ReaderJoined = p != nil && p.state == stJoin
		}
	}
	access, err := domain.Reads.Room(viewer, facts)
	return r, access, err
}

// visibleTo asks the read policy whether a member sees the room at pos:
// the room's history_visibility then, and the member's membership then.
func visibleTo(r *roomState, own *memberRec, pos eventstore.Position) bool {
	then := ""
	if p := own.stateAt(pos); p != nil {
		then = stateNames[p.state]
	}
	return domain.Reads.EntryVisible(visibilityAt(r, pos), then)
}

// Members returns the room's joined and invited members sorted by user id,
// as of position at (nil: now), and the position the answer is as of.
// Admins and moderators read any position; members joined now read the
// positions history_visibility lets them see. As of a position means at
// that point of the room's history order: with everything recorded up to
// it and every backfilled event the homeserver placed before it.
func (v *Rooms) Members(room domain.RoomID, at *eventstore.Position, viewer Viewer) ([]Member, eventstore.Position, error) {
	return v.membersAsOf(room, at, nil, viewer)
}

// MembersAtTime is Members as of a time: the homeserver's time for
// backfilled events, occurred_at for the others. The position returned is
// that of the last event recorded at or before t (PositionAt).
func (v *Rooms) MembersAtTime(room domain.RoomID, t time.Time, viewer Viewer) ([]Member, eventstore.Position, error) {
	return v.membersAsOf(room, nil, &t, viewer)
}

func (v *Rooms) membersAsOf(room domain.RoomID, at *eventstore.Position, atTime *time.Time, viewer Viewer) ([]Member, eventstore.Position, error) {
	var out []Member
	pos := eventstore.Start
	err := v.read(func(rr *roomsReader) error {
		r, access, err := rr.access(room, viewer)
		if err != nil {
			return err
		}
		pos = v.last
		ord := orderNow
		switch {
		case atTime != nil:
			pos, ord = positionAt(rr.r, *atTime), orderAtTime(*atTime)
		case at != nil && at.Before(v.last):
			pos = *at
			ord, err = v.orderAt(rr.r, pos)
			rr.fail(err)
		}
		if ord != orderNow && access != domain.ReadsAll && !visibleTo(r, rr.member(room, viewer.User), ord) {
			return domain.Errorf(domain.ErrCodeForbidden, "The room's history visibility hides this point in time from you")
		}
		lo := rangeOf(prefixMember, string(room))
		// The members joined or invited at ord, with their period there;
		// their users are read after the scan, several at once.
		var ids []domain.UserID
		var periods []*period
		rr.fail(rr.r.Scan(lo, viewstore.PrefixEnd(lo), false, func(k, val []byte) bool {
			id := domain.UserID(k[len(lo):])
			m, ok := v.members.Get(memberKey{room, id})
			if !ok {
				m = decodeMember(val, rr)
			}
			if p := m.stateAt(ord); p != nil && (p.state == stJoin || p.state == stInvite) {
				ids, periods = append(ids, id), append(periods, p)
			}
			return true
		}))
		many := rr.users(ids)
		for i, id := range ids {
			u, ok := many[id]
			if !ok {
				u = rr.user(id)
			}
			p := periods[i]
			past := userPast{r: rr.r, user: id, fail: rr.fail}
			dn, _ := u.value(p, fDisplayName, ord, past)
			av, _ := u.value(p, fAvatarURL, ord, past)
			out = append(out, Member{User: id, Membership: stateNames[p.state], DisplayName: dn, AvatarURL: av})
		}
		return nil
	})
	if err != nil {
		return nil, pos, err
	}
	if out == nil {
		out = []Member{}
	}
	return out, pos, nil
}

// entry renders a change; for a global change that reached room, roomOld
// is the room's value before it and roomOldRef the change that set it
// (both ignored for other changes).
func (rr *roomsReader) entry(c *change, room domain.RoomID, roomOldRef valueRef, roomOld *string, showHidden bool) HistoryEntry {
	e := HistoryEntry{Position: c.pos, Time: time.UnixMilli(c.ms).UTC(), Room: room, User: c.user, Kind: kindNames[c.kind],
		Cause: Cause{Type: c.typ, Actor: c.actor, Source: c.source, By: c.by, PropagateTo: c.prop}}
	// A value set by a hidden entry stays hidden where it shows up again as
	// the old value of a later entry (a rename away from a deadname).
	hiddenSource := func(ref valueRef) bool {
		return !showHidden && ref != 0 && rr.hidden(rr.change(uint32(ref&^refNames)-1).pos)
	}
	switch c.kind {
	case kJoin, kInvite:
		e.New = DisplayValues{c.names[fDisplayName], c.names[fAvatarURL]}
	case kLeave, kKick, kBan, kUnban:
		held := c.names
		for f := range numFields {
			if hiddenSource(c.namesRef[f]) {
				held[f], e.OldHidden = nil, true
			}
		}
		e.Old = DisplayValues{held[fDisplayName], held[fAvatarURL]}
	default:
		e.Field = fieldKeys[c.field]
		old, ref := c.old, c.oldRef
		if c.room == "" && room != "" {
			ref, old = roomOldRef, roomOld
		}
		if hiddenSource(ref) {
			old, e.OldHidden = nil, true
		}
		if c.field == fDisplayName {
			e.Old.DisplayName, e.New.DisplayName = old, c.new
		} else {
			e.Old.AvatarURL, e.New.AvatarURL = old, c.new
		}
	}
	if rr.hidden(c.pos) {
		e.Hidden = true
		if !showHidden {
			e.Old, e.New = DisplayValues{}, DisplayValues{}
		}
	}
	return e
}

// RoomHistory returns a page of the room's history in history order (the
// homeserver's, for backfilled events; see Rooms): joins,
// invites, leaves, kicks, bans, per-room changes and the global changes that
// changed what the room showed, each with old and new values.
func (v *Rooms) RoomHistory(room domain.RoomID, q HistoryQuery) (HistoryPage, error) {
	page := newHistoryPage(q)
	err := v.read(func(rr *roomsReader) error {
		r, access, err := rr.access(room, q.Viewer)
		if err != nil {
			return err
		}
		all := access == domain.ReadsAll
		var own *memberRec
		if !all {
			own = rr.member(room, q.Viewer.User)
		}
		take := func(ord eventstore.Position, val []byte) bool {
			re := decodeEntry(val, room, rr)
			c := re.ch
			if c == nil { // a user's room-scoped entries name their change
				c = rr.change(re.c)
			}
			if !q.keeps(c) || (!all && !domain.Reads.OwnEntry(q.Viewer, c.user) && !visibleTo(r, own, ord)) {
				return false
			}
			page.Entries = append(page.Entries, rr.entry(c, room, re.old, re.oldVal, all))
			return true
		}
		if q.User != "" {
			page.Start, page.End, err = paginateUserEntries(rr.r, room, q.User, q, take)
			return err
		}
		page.Start, page.End, err = paginateRange(rr.r, rangeOf(prefixEntry, string(room)), q, orderNow, take)
		return err
	})
	return page, err
}

// UserHistory returns a page of a user's history. The user and admins see
// every global and per-room change; a moderator sees the user's entries in
// the rooms they moderate (global changes as they reached those rooms);
// anyone else is refused.
func (v *Rooms) UserHistory(user domain.UserID, q HistoryQuery) (HistoryPage, error) {
	page := newHistoryPage(q)
	err := v.read(func(rr *roomsReader) error {
		var err error
		if domain.Reads.WholeUserHistory(q.Viewer, user) {
			page.Start, page.End, err = paginateRange(rr.r, rangeOf(prefixUserHist, string(user)), q, orderNow, func(_ eventstore.Position, val []byte) bool {
				c := rr.change(binary.BigEndian.Uint32(val))
				if !q.keeps(c) {
					return false
				}
				page.Entries = append(page.Entries, rr.entry(c, c.room, 0, nil, true))
				return true
			})
			return err
		}
		type ref struct {
			room domain.RoomID
			pos  eventstore.Position
			e    roomEntry
		}
		var refs []ref
		for _, roomID := range rr.rooms(prefixTouched, user) {
			if _, access, _ := rr.access(roomID, q.Viewer); access != domain.ReadsAll {
				continue
			}
			all, _, _, err := userEntries(rr.r, roomID, user, boundary{pos: eventstore.Start, after: true}, false, 0)
			rr.fail(err)
			for _, en := range all {
				refs = append(refs, ref{roomID, en.ord, decodeEntry(en.val, roomID, rr)})
			}
		}
		if len(refs) == 0 {
			return domain.Errorf(domain.ErrCodeForbidden, "You may not read this user's history")
		}
		sort.Slice(refs, func(i, j int) bool {
			if c := refs[i].pos.Compare(refs[j].pos); c != 0 {
				return c < 0
			}
			return strings.Compare(string(refs[i].room), string(refs[j].room)) < 0
		})
		// A global change that reached several moderated rooms is shown once.
		uniq := refs[:0]
		for i, r := range refs {
			if i == 0 || r.pos != uniq[len(uniq)-1].pos {
				uniq = append(uniq, r)
			}
		}
		posAt := func(i int) eventstore.Position { return uniq[i].pos }
		page.Start, page.End, err = paginate(len(uniq), posAt, q, orderNow, func(i int) bool {
			re := uniq[i].e
			c := re.ch
			if c == nil {
				c = rr.change(re.c)
			}
			if !q.keeps(c) {
				return false
			}
			page.Entries = append(page.Entries, rr.entry(c, uniq[i].room, re.old, re.oldVal, true))
			return true
		})
		return err
	})
	return page, err
}

// rooms lists the rooms of a user-and-room key range (touched, joined).
func (rr *roomsReader) rooms(prefix string, user domain.UserID) []domain.RoomID {
	var out []domain.RoomID
	lo := rangeOf(prefix, string(user))
	rr.fail(rr.r.Scan(lo, viewstore.PrefixEnd(lo), false, func(k, _ []byte) bool {
		out = append(out, domain.RoomID(k[len(lo):]))
		return true
	}))
	return out
}

// IsModerator reports whether user moderates the room now.
func (v *Rooms) IsModerator(room domain.RoomID, user domain.UserID) bool {
	mod := false
	_ = v.read(func(rr *roomsReader) error {
		r := rr.room(room)
		mod = r != nil && r.pl.IsModerator(user)
		return nil
	})
	return mod
}

// ModeratedRooms returns the rooms user moderates now (power level at least
// the room's kick level), sorted. It looks only at the rooms the user has
// history in (joined, invited or left), so it costs O(those rooms), not
// O(all rooms); someone named in a room's power levels who never was a
// member there is not found, which suits a console listing rooms to review.
func (v *Rooms) ModeratedRooms(user domain.UserID) []domain.RoomID {
	var out []domain.RoomID
	_ = v.read(func(rr *roomsReader) error {
		for _, roomID := range rr.rooms(prefixTouched, user) {
			if r := rr.room(roomID); r != nil && r.pl.IsModerator(user) {
				out = append(out, roomID)
			}
		}
		return nil
	})
	return out
}

// UserEntry reports whether pos is an entry of the user's own history (a
// global or per-room change or a membership event of theirs), and whether
// it is already hidden.
func (v *Rooms) UserEntry(user domain.UserID, pos eventstore.Position) (found, hidden bool) {
	_ = v.read(func(rr *roomsReader) error {
		ord, err := v.orderAt(rr.r, pos)
		if err != nil {
			return err
		}
		if _, ok := rr.get(posKey(ord, prefixUserHist, string(user))); ok {
			found, hidden = true, rr.hidden(pos)
		}
		return nil
	})
	return found, hidden
}
