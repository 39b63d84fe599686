package projections

import (
	"encoding/json"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/profilestore/profilestore/domain"
	"github.com/profilestore/profilestore/eventstore"
)

var jsonUnmarshal = json.Unmarshal

// Viewer is who reads a room or user history.
type Viewer struct {
	User domain.UserID
	// Admin sees everything (server administrators).
	Admin bool
}

// Member is one member of a room as the room shows them.
type Member struct {
	User domain.UserID
	// Membership is join or invite.
	Membership  string
	DisplayName *string
	AvatarURL   *string
}

// Names are displayname and avatar_url values; nil is unset.
type Names struct {
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
	Old   Names
	New   Names
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

// paginate walks n position-ordered items from a boundary, offering each to
// take (which reports whether it kept it) until limit are kept or the scan
// cap is reached, and returns the page's start and end tokens.
func paginate(n int, posAt func(i int) eventstore.Position, q HistoryQuery, last eventstore.Position, take func(i int) bool) (string, string, error) {
	limit := q.Limit
	if limit <= 0 {
		limit = 100
	}
	limit = min(limit, MaxHistoryLimit)
	var b boundary
	if q.From == "" {
		b = boundary{pos: eventstore.Start, after: true}
		if q.Backwards {
			b.pos = last
		}
	} else {
		var err error
		if b, err = parseToken(q.From); err != nil {
			return "", "", err
		}
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

func (v *Rooms) visibilityAt(r *roomState, pos eventstore.Position) string {
	if i := lastLE(r.vis, visPos, pos); i >= 0 {
		return r.vis[i].vis
	}
	return domain.DefaultHistoryVisibility
}

// seesAll reports whether the viewer sees the whole room: server admins and
// the room's moderators (power level ≥ kick level now).
func seesAll(r *roomState, viewer Viewer) bool {
	return viewer.Admin || (r != nil && r.pl.IsModerator(viewer.User))
}

// access checks that the viewer may read the room at all: admins,
// moderators and members joined now. Unknown rooms read as forbidden to
// everyone but admins, so that room ids cannot be probed.
func (v *Rooms) access(room domain.RoomID, viewer Viewer) (*roomState, error) {
	r := v.rooms[room]
	if r == nil {
		if viewer.Admin {
			return nil, domain.Errorf(domain.ErrCodeNotFound, "Unknown room")
		}
		return nil, domain.Errorf(domain.ErrCodeForbidden, "You are not a member of this room")
	}
	if seesAll(r, viewer) {
		return r, nil
	}
	if p := r.members[viewer.User].current(); p == nil || p.state != stJoin {
		return nil, domain.Errorf(domain.ErrCodeForbidden, "You are not a member of this room")
	}
	return r, nil
}

// visibleTo applies history_visibility at the time of pos: shared and
// world_readable show everything to current members; invited and joined
// only what happened while the viewer was invited or joined (their own
// membership event counts with the state it set).
func (v *Rooms) visibleTo(r *roomState, viewer Viewer, pos eventstore.Position) bool {
	switch v.visibilityAt(r, pos) {
	case domain.VisibilityInvited:
		p := r.members[viewer.User].stateAt(pos)
		return p != nil && (p.state == stJoin || p.state == stInvite)
	case domain.VisibilityJoined:
		p := r.members[viewer.User].stateAt(pos)
		return p != nil && p.state == stJoin
	}
	return true
}

// Members returns the room's joined and invited members sorted by user id,
// as of position at (nil: now), and the position the answer is as of.
// Admins and moderators read any position; members joined now read the
// positions history_visibility lets them see.
func (v *Rooms) Members(room domain.RoomID, at *eventstore.Position, viewer Viewer) ([]Member, eventstore.Position, error) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	r, err := v.access(room, viewer)
	if err != nil {
		return nil, eventstore.Start, err
	}
	pos := v.last
	if at != nil && at.Before(v.last) {
		pos = *at
		if !seesAll(r, viewer) && !v.visibleTo(r, viewer, pos) {
			return nil, pos, domain.Errorf(domain.ErrCodeForbidden, "The room's history visibility hides this point in time from you")
		}
	}
	out := make([]Member, 0, len(r.members))
	for id, m := range r.members {
		p := m.stateAt(pos)
		if p == nil || (p.state != stJoin && p.state != stInvite) {
			continue
		}
		u := v.users[id]
		out = append(out, Member{User: id, Membership: stateNames[p.state],
			DisplayName: u.value(p, fDisplayName, pos), AvatarURL: u.value(p, fAvatarURL, pos)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].User < out[j].User })
	return out, pos, nil
}

// entry renders a change; roomOld is the room's value before a global
// change that reached room (ignored for other changes).
func (v *Rooms) entry(c *change, room domain.RoomID, roomOldRef valueRef, showHidden bool) HistoryEntry {
	e := HistoryEntry{Position: c.pos, Time: time.UnixMilli(c.ms).UTC(), Room: room, User: c.user, Kind: kindNames[c.kind],
		Cause: Cause{Type: c.typ, Actor: c.actor, Source: c.source, By: c.by, PropagateTo: c.prop}}
	// A value set by a hidden entry stays hidden where it shows up again as
	// the old value of a later entry (a rename away from a deadname).
	hiddenSource := func(ref valueRef) bool {
		return !showHidden && ref != 0 && v.hidden[v.changes[uint32(ref&^refNames)-1].pos]
	}
	switch c.kind {
	case kJoin, kInvite:
		e.New = Names{c.names[fDisplayName], c.names[fAvatarURL]}
	case kLeave, kKick, kBan, kUnban:
		held := c.names
		for f := range numFields {
			if hiddenSource(c.namesRef[f]) {
				held[f], e.OldHidden = nil, true
			}
		}
		e.Old = Names{held[fDisplayName], held[fAvatarURL]}
	default:
		e.Field = fieldKeys[c.field]
		old, ref := c.old, c.oldRef
		if c.room == "" && room != "" {
			ref = roomOldRef
			old = v.resolve(ref, int(c.field))
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
	if v.hidden[c.pos] {
		e.Hidden = true
		if !showHidden {
			e.Old, e.New = Names{}, Names{}
		}
	}
	return e
}

// RoomHistory returns a page of the room's history in log order: joins,
// invites, leaves, kicks, bans, per-room changes and the global changes that
// changed what the room showed, each with old and new values.
func (v *Rooms) RoomHistory(room domain.RoomID, q HistoryQuery) (HistoryPage, error) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	r, err := v.access(room, q.Viewer)
	if err != nil {
		return HistoryPage{}, err
	}
	all := seesAll(r, q.Viewer)
	var page HistoryPage
	n, at := len(r.entries), func(i int) int { return i }
	if q.User != "" {
		idx := r.byUser[q.User]
		n, at = len(idx), func(i int) int { return int(idx[i]) }
	}
	posAt := func(i int) eventstore.Position { return v.changes[r.entries[at(i)].c].pos }
	page.Start, page.End, err = paginate(n, posAt, q, v.last, func(i int) bool {
		re := r.entries[at(i)]
		c := v.changes[re.c]
		if !q.keeps(c) || (!all && !v.visibleTo(r, q.Viewer, c.pos)) {
			return false
		}
		page.Entries = append(page.Entries, v.entry(c, room, re.old, all))
		return true
	})
	return page, err
}

// UserHistory returns a page of a user's history. The user and admins see
// every global and per-room change; a moderator sees the user's entries in
// the rooms they moderate (global changes as they reached those rooms);
// anyone else is refused.
func (v *Rooms) UserHistory(user domain.UserID, q HistoryQuery) (HistoryPage, error) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	u := v.users[user]
	var page HistoryPage
	var err error
	if q.Viewer.Admin || q.Viewer.User == user {
		var hist []uint32
		if u != nil {
			hist = u.history
		}
		posAt := func(i int) eventstore.Position { return v.changes[hist[i]].pos }
		page.Start, page.End, err = paginate(len(hist), posAt, q, v.last, func(i int) bool {
			c := v.changes[hist[i]]
			if !q.keeps(c) {
				return false
			}
			page.Entries = append(page.Entries, v.entry(c, c.room, 0, true))
			return true
		})
		return page, err
	}
	type ref struct {
		room domain.RoomID
		e    roomEntry
	}
	var refs []ref
	if u != nil {
		for roomID := range u.touched {
			r := v.rooms[roomID]
			if !r.pl.IsModerator(q.Viewer.User) {
				continue
			}
			for _, i := range r.byUser[user] {
				refs = append(refs, ref{roomID, r.entries[i]})
			}
		}
	}
	if len(refs) == 0 {
		return HistoryPage{}, domain.Errorf(domain.ErrCodeForbidden, "You may not read this user's history")
	}
	sort.Slice(refs, func(i, j int) bool {
		if c := v.changes[refs[i].e.c].pos.Compare(v.changes[refs[j].e.c].pos); c != 0 {
			return c < 0
		}
		return strings.Compare(string(refs[i].room), string(refs[j].room)) < 0
	})
	// A global change that reached several moderated rooms is shown once.
	uniq := refs[:0]
	for i, r := range refs {
		if i == 0 || v.changes[r.e.c].pos != v.changes[uniq[len(uniq)-1].e.c].pos {
			uniq = append(uniq, r)
		}
	}
	posAt := func(i int) eventstore.Position { return v.changes[uniq[i].e.c].pos }
	page.Start, page.End, err = paginate(len(uniq), posAt, q, v.last, func(i int) bool {
		c := v.changes[uniq[i].e.c]
		if !q.keeps(c) {
			return false
		}
		page.Entries = append(page.Entries, v.entry(c, uniq[i].room, uniq[i].e.old, true))
		return true
	})
	return page, err
}

// IsModerator reports whether user moderates the room now.
func (v *Rooms) IsModerator(room domain.RoomID, user domain.UserID) bool {
	v.mu.RLock()
	defer v.mu.RUnlock()
	r := v.rooms[room]
	return r != nil && r.pl.IsModerator(user)
}

// ModeratedRooms returns the rooms user moderates now (power level at least
// the room's kick level), sorted. It looks only at the rooms the user has
// history in (joined, invited or left), so it costs O(those rooms), not
// O(all rooms); someone named in a room's power levels who never was a
// member there is not found, which suits a console listing rooms to review.
func (v *Rooms) ModeratedRooms(user domain.UserID) []domain.RoomID {
	v.mu.RLock()
	defer v.mu.RUnlock()
	u := v.users[user]
	if u == nil {
		return nil
	}
	var out []domain.RoomID
	for roomID := range u.touched {
		if v.rooms[roomID].pl.IsModerator(user) {
			out = append(out, roomID)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// Stats reports the view's size, for memory figures.
type Stats struct {
	Rooms, Users, Members, Entries, Changes int
}

// Stats counts what the view holds.
func (v *Rooms) Stats() Stats {
	v.mu.RLock()
	defer v.mu.RUnlock()
	s := Stats{Rooms: len(v.rooms), Users: len(v.users), Changes: len(v.changes)}
	for _, r := range v.rooms {
		s.Members += len(r.members)
		s.Entries += len(r.entries)
	}
	return s
}

// UserEntry reports whether pos is an entry of the user's own history (a
// global or per-room change or a membership event of theirs), and whether
// it is already hidden.
func (v *Rooms) UserEntry(user domain.UserID, pos eventstore.Position) (found, hidden bool) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	u := v.users[user]
	if u == nil {
		return false, false
	}
	i := sort.Search(len(u.history), func(i int) bool { return !v.changes[u.history[i]].pos.Before(pos) })
	if i == len(u.history) || v.changes[u.history[i]].pos != pos {
		return false, false
	}
	return true, v.hidden[pos]
}
