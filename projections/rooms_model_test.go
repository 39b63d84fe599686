package projections_test

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/profilestore/profilestore/domain"
	"github.com/profilestore/profilestore/eventstore"
	"github.com/profilestore/profilestore/projections"
)

// The reference model is the homeserver's fan-out written as plainly as
// possible: every room keeps every member's value, and a global change
// walks every room the user is joined to and rewrites it there.

type modelMember struct {
	state string
	// base is the value at join, rewritten by every propagated global change;
	// ovr is the per-room override (nil: none). The room shows ovr, else base.
	base [2]*string
	ovr  [2]*string
}

func (m *modelMember) show(f int) *string {
	if m.ovr[f] != nil {
		return m.ovr[f]
	}
	return m.base[f]
}

type modelEntry struct {
	projections.HistoryEntry
	vis    string
	states map[domain.UserID]string // everyone's membership after the entry
}

type modelRoom struct {
	members map[domain.UserID]*modelMember
	vis     string
	pl      *domain.PowerLevels
	hist    []modelEntry
	// snaps are the room's members after each event, for as-of answers.
	snaps []modelSnap
}

type modelSnap struct {
	pos     eventstore.Position
	members []projections.Member
}

type model struct {
	global map[domain.UserID]*[2]*string
	rooms  map[domain.RoomID]*modelRoom
	users  map[domain.UserID][]projections.HistoryEntry
}

var fieldOf = map[string]int{domain.KeyDisplayName: 0, domain.KeyAvatarURL: 1}

func names(m *modelMember) projections.DisplayValues {
	return projections.DisplayValues{DisplayName: m.show(0), AvatarURL: m.show(1)}
}

func fieldNames(f int, v *string) projections.DisplayValues {
	if f == 0 {
		return projections.DisplayValues{DisplayName: v}
	}
	return projections.DisplayValues{AvatarURL: v}
}

func str(raw json.RawMessage) *string {
	var s string
	if json.Unmarshal(raw, &s) != nil || s == "" {
		return nil
	}
	return &s
}

func nz(s *string) *string {
	if s == nil || *s == "" {
		return nil
	}
	return s
}

func (m *model) room(id domain.RoomID) *modelRoom {
	r := m.rooms[id]
	if r == nil {
		r = &modelRoom{members: map[domain.UserID]*modelMember{}, vis: domain.VisibilityShared}
		m.rooms[id] = r
	}
	return r
}

func base(e *domain.Event, kind string) projections.HistoryEntry {
	return projections.HistoryEntry{Position: e.Position, Time: e.Meta.OccurredAt.UTC(), Room: e.Room, User: e.User, Kind: kind,
		Cause: projections.Cause{Type: e.Type, Actor: e.Meta.Actor, Source: e.Meta.Source, By: e.By, PropagateTo: e.PropagateTo}}
}

func (m *model) addRoomEntry(id domain.RoomID, h projections.HistoryEntry) {
	r := m.room(id)
	states := map[domain.UserID]string{}
	for u, mm := range r.members {
		states[u] = mm.state
	}
	r.hist = append(r.hist, modelEntry{HistoryEntry: h, vis: r.vis, states: states})
}

func (m *model) apply(e *domain.Event) {
	switch e.Type {
	case domain.TypeFieldSet, domain.TypeFieldDeleted:
		f, ok := fieldOf[e.Key]
		if !ok {
			return
		}
		g := m.global[e.User]
		if g == nil {
			g = &[2]*string{}
			m.global[e.User] = g
		}
		var val *string
		if e.Type == domain.TypeFieldSet {
			val = str(e.Value)
		}
		kind := projections.KindGlobalRename
		if f == 1 {
			kind = projections.KindGlobalAvatar
		}
		h := base(e, kind)
		h.Field, h.Old, h.New = e.Key, fieldNames(f, g[f]), fieldNames(f, val)
		m.users[e.User] = append(m.users[e.User], h)
		g[f] = val
		if e.PropagateTo == domain.PropagateNone {
			break
		}
		ids := make([]domain.RoomID, 0, len(m.rooms))
		for id := range m.rooms {
			ids = append(ids, id)
		}
		sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
		for _, id := range ids {
			mm := m.rooms[id].members[e.User]
			if mm == nil || mm.state != domain.MembershipJoin {
				continue
			}
			before := mm.show(f)
			mm.base[f] = val
			if e.PropagateTo == domain.PropagateAll {
				mm.ovr[f] = nil
			}
			after := mm.show(f)
			if !reflect.DeepEqual(before, after) {
				rh := h
				rh.Room, rh.Old = id, fieldNames(f, before)
				m.addRoomEntry(id, rh)
			}
		}
	case domain.TypeMemberJoined, domain.TypeMemberInvited, domain.TypeMemberLeft:
		r := m.room(e.Room)
		mm := r.members[e.User]
		if mm == nil {
			mm = &modelMember{state: domain.MembershipLeave}
			r.members[e.User] = mm
		}
		var h projections.HistoryEntry
		switch e.Type {
		case domain.TypeMemberJoined, domain.TypeMemberInvited:
			state := domain.MembershipJoin
			if e.Type == domain.TypeMemberInvited {
				state = domain.MembershipInvite
			}
			*mm = modelMember{state: state, base: [2]*string{nz(e.DisplayName), nz(e.AvatarURL)}}
			h = base(e, state)
			h.New = names(mm)
		default:
			kind := e.Membership
			if kind == domain.MembershipLeave && mm.state == domain.MembershipBan {
				kind = projections.KindUnban
			}
			h = base(e, kind)
			h.Old = names(mm)
			state := domain.MembershipLeave
			if e.Membership == domain.MembershipBan {
				state = domain.MembershipBan
			}
			*mm = modelMember{state: state}
		}
		m.users[e.User] = append(m.users[e.User], h)
		m.addRoomEntry(e.Room, h)
	case domain.TypeMemberProfileSet, domain.TypeMemberProfileGone:
		f := fieldOf[e.Key]
		mm := m.room(e.Room).members[e.User]
		before := mm.show(f)
		kind := projections.KindOverrideCleared
		mm.ovr[f] = nil
		if e.Type == domain.TypeMemberProfileSet {
			mm.ovr[f] = str(e.Value)
			kind = projections.KindRoomRename
			if f == 1 {
				kind = projections.KindRoomAvatar
			}
		}
		h := base(e, kind)
		h.Field, h.Old, h.New = e.Key, fieldNames(f, before), fieldNames(f, mm.show(f))
		m.users[e.User] = append(m.users[e.User], h)
		m.addRoomEntry(e.Room, h)
	case domain.TypeHistoryVisibility:
		m.room(e.Room).vis = e.Visibility
	case domain.TypePowerLevels:
		m.room(e.Room).pl = e.PowerLevels
	}
	// Every room's members after every event: the as-of answers.
	for _, r := range m.rooms {
		r.snaps = append(r.snaps, modelSnap{pos: e.Position, members: r.current()})
	}
}

func (r *modelRoom) current() []projections.Member {
	out := []projections.Member{}
	for u, mm := range r.members {
		if mm.state == domain.MembershipJoin || mm.state == domain.MembershipInvite {
			out = append(out, projections.Member{User: u, Membership: mm.state, DisplayName: mm.show(0), AvatarURL: mm.show(1)})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].User < out[j].User })
	return out
}

// visible is the DESIGN visibility rule applied to the model's history.
func (r *modelRoom) visible(viewer projections.Viewer) ([]projections.HistoryEntry, bool) {
	all := viewer.Admin || r.pl.IsModerator(viewer.User)
	if mm := r.members[viewer.User]; !all && (mm == nil || mm.state != domain.MembershipJoin) {
		return nil, false
	}
	out := []projections.HistoryEntry{}
	for _, e := range r.hist {
		ok := all
		switch {
		case all:
		case e.User == viewer.User: // a member's own entries (docs/DECISIONS.md)
			ok = true
		case e.vis == domain.VisibilityInvited:
			ok = e.states[viewer.User] == domain.MembershipJoin || e.states[viewer.User] == domain.MembershipInvite
		case e.vis == domain.VisibilityJoined:
			ok = e.states[viewer.User] == domain.MembershipJoin
		default:
			ok = true
		}
		if ok {
			out = append(out, e.HistoryEntry)
		}
	}
	return out, true
}

// world drives random commands through the real decisions and folds.
type world struct {
	t      *testing.T
	rng    *rand.Rand
	view   *projections.Rooms
	db     *projections.DB
	apply  *projections.Direct
	model  *model
	rooms  map[domain.RoomID]*domain.Room
	profs  map[domain.UserID]*domain.Profile
	pos    uint64
	t0     time.Time
	users  []domain.UserID
	roomID []domain.RoomID
}

var namePool = []string{"Alice", "Bob", "Admin", "alice", "Carol", ""}
var avatarPool = []string{"mxc://x/a", "mxc://x/b", ""}

func (w *world) pick(pool []string) string { return pool[w.rng.IntN(len(pool))] }

func (w *world) emit(evs []domain.Event, err error) {
	if err != nil && domain.ErrorCode(err) == "" {
		w.t.Fatalf("internal error from a decision: %v", err)
	}
	for i := range evs {
		w.pos++
		e := &evs[i]
		e.Position = eventstore.Position{Commit: w.pos, Prepare: w.pos}
		e.Meta.OccurredAt = w.t0.Add(time.Duration(w.pos) * time.Second)
		if e.Room != "" {
			w.rooms[e.Room].Apply(e)
		} else {
			w.prof(e.User).Apply(e)
		}
		w.apply.Apply(e)
		w.model.apply(e)
	}
}

func (w *world) prof(u domain.UserID) *domain.Profile {
	p := w.profs[u]
	if p == nil {
		p = &domain.Profile{}
		w.profs[u] = p
	}
	return p
}

func (w *world) step() {
	u := w.users[w.rng.IntN(len(w.users))]
	rid := w.roomID[w.rng.IntN(len(w.roomID))]
	room := w.rooms[rid]
	meta := domain.Metadata{Actor: u, Source: "client"}
	field := domain.KeyDisplayName
	pool := namePool
	if w.rng.IntN(3) == 0 {
		field, pool = domain.KeyAvatarURL, avatarPool
	}
	switch op := w.rng.IntN(100); {
	case op < 30:
		// Global change under a random propagation.
		props := []domain.Propagation{domain.PropagateAll, domain.PropagateUnchanged, domain.PropagateNone}
		val, _ := json.Marshal(w.pick(pool))
		w.emit(domain.DecideSetField(w.prof(u), domain.SetField{User: u, Key: field, Value: val, PropagateTo: props[w.rng.IntN(3)], Meta: meta}, domain.DefaultLimits))
	case op < 52:
		ms := []string{domain.MembershipJoin, domain.MembershipJoin, domain.MembershipInvite, domain.MembershipLeave, domain.MembershipKick, domain.MembershipBan}
		cmd := domain.ChangeMembership{Room: rid, User: u, Membership: ms[w.rng.IntN(len(ms))], Meta: domain.Metadata{Actor: w.users[0], Source: "admin"}}
		// The service's default: the global profile when no names are given.
		p := w.prof(u)
		dn, av := p.DisplayName(), p.AvatarURL()
		cmd.DisplayName, cmd.AvatarURL, cmd.Global = &dn, &av, *p
		if w.rng.IntN(3) == 0 {
			n := w.pick(namePool)
			cmd.DisplayName = &n
		}
		w.emit(domain.DecideMembership(room, cmd, domain.DefaultLimits))
	case op < 72:
		w.emit(domain.DecideSetMemberProfile(room, domain.SetMemberProfile{Room: rid, User: u, Field: field, Value: w.pick(pool),
			ClearedAt: w.prof(u).AllAt[field], Meta: meta}, domain.DefaultLimits))
	case op < 80:
		w.emit(domain.DecideClearMemberProfile(room, domain.ClearMemberProfile{Room: rid, User: u, Field: field, ClearedAt: w.prof(u).AllAt[field], Meta: meta}))
	case op < 90:
		vis := []string{domain.VisibilityShared, domain.VisibilityInvited, domain.VisibilityJoined, domain.VisibilityWorldReadable}
		w.emit(domain.DecideHistoryVisibility(room, domain.SetHistoryVisibility{Room: rid, Visibility: vis[w.rng.IntN(4)], Meta: meta}))
	default:
		pl := domain.PowerLevels{Kick: 50, Users: map[domain.UserID]int{}}
		for _, x := range w.users {
			if w.rng.IntN(4) == 0 {
				pl.Users[x] = 50
			}
		}
		w.emit(domain.DecidePowerLevels(room, domain.SetPowerLevels{Room: rid, PowerLevels: pl, Meta: meta}))
	}
}

// readAll pages through a room's history with random page sizes, in one
// direction, and returns the entries in log order.
func (w *world) readAll(view *projections.Rooms, rid domain.RoomID, q projections.HistoryQuery) ([]projections.HistoryEntry, error) {
	var out []projections.HistoryEntry
	for pages := 0; ; pages++ {
		q.Limit = 1 + w.rng.IntN(7)
		page, err := view.RoomHistory(rid, q)
		if err != nil {
			return nil, err
		}
		out = append(out, page.Entries...)
		if page.End == "" {
			break
		}
		if pages > 10000 {
			w.t.Fatal("paging does not end")
		}
		q.From = page.End
	}
	if q.Backwards {
		for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
			out[i], out[j] = out[j], out[i]
		}
	}
	if out == nil {
		out = []projections.HistoryEntry{}
	}
	return out, nil
}

func (w *world) check(view *projections.Rooms, step int) {
	t := w.t
	admin := projections.Viewer{User: "@root:x", Admin: true}
	for _, rid := range w.roomID {
		mr := w.model.room(rid)
		got, _, err := view.Members(rid, nil, admin)
		if err != nil && domain.ErrorCode(err) != domain.ErrCodeNotFound {
			t.Fatalf("step %d: members of %s: %v", step, rid, err)
		}
		if want := mr.current(); err == nil && !reflect.DeepEqual(nilToEmpty(got), want) {
			t.Fatalf("step %d: members of %s:\n got %s\nwant %s", step, rid, dump(got), dump(want))
		}
	}
	// One random room, viewer and direction: the whole visible history.
	rid := w.roomID[w.rng.IntN(len(w.roomID))]
	mr := w.model.room(rid)
	viewer := projections.Viewer{User: w.users[w.rng.IntN(len(w.users))]}
	q := projections.HistoryQuery{Viewer: viewer, Backwards: w.rng.IntN(2) == 0}
	if w.rng.IntN(3) == 0 {
		q.User = w.users[w.rng.IntN(len(w.users))]
	}
	want, ok := mr.visible(viewer)
	got, err := w.readAll(view, rid, q)
	if !ok {
		if domain.ErrorCode(err) != domain.ErrCodeForbidden {
			t.Fatalf("step %d: %s read %s's history: err %v, want M_FORBIDDEN", step, viewer.User, rid, err)
		}
	} else {
		if err != nil {
			t.Fatalf("step %d: %s read %s's history: %v", step, viewer.User, rid, err)
		}
		if q.User != "" {
			kept := []projections.HistoryEntry{}
			for _, e := range want {
				if e.User == q.User {
					kept = append(kept, e)
				}
			}
			want = kept
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("step %d: history of %s for %s (backwards %v, user %q):\n got %s\nwant %s", step, rid, viewer.User, q.Backwards, q.User, dump(got), dump(want))
		}
	}
	// Members as of a random earlier position.
	if len(mr.snaps) > 0 {
		s := mr.snaps[w.rng.IntN(len(mr.snaps))]
		at := s.pos
		got, _, err := view.Members(rid, &at, admin)
		if domain.ErrorCode(err) == domain.ErrCodeNotFound && len(s.members) == 0 {
			err, got = nil, []projections.Member{} // the view knows rooms from their first event on
		}
		if err != nil {
			t.Fatalf("step %d: members of %s at %s: %v", step, rid, at, err)
		}
		if !reflect.DeepEqual(nilToEmpty(got), s.members) {
			t.Fatalf("step %d: members of %s at %s:\n got %s\nwant %s", step, rid, at, dump(got), dump(s.members))
		}
	}
	// A random user's own history.
	u := w.users[w.rng.IntN(len(w.users))]
	page, err := view.UserHistory(u, projections.HistoryQuery{Viewer: projections.Viewer{User: u}, Backwards: true, Limit: projections.MaxHistoryLimit})
	if err != nil {
		t.Fatalf("step %d: user history: %v", step, err)
	}
	wantU := w.model.users[u]
	if len(wantU) > projections.MaxHistoryLimit {
		wantU = wantU[len(wantU)-projections.MaxHistoryLimit:]
	}
	gotU := page.Entries
	for i, j := 0, len(gotU)-1; i < j; i, j = i+1, j-1 {
		gotU[i], gotU[j] = gotU[j], gotU[i]
	}
	if len(gotU) != len(wantU) || (len(gotU) > 0 && !reflect.DeepEqual(gotU, wantU)) {
		t.Fatalf("step %d: history of %s:\n got %s\nwant %s", step, u, dump(gotU), dump(wantU))
	}
}

func nilToEmpty(m []projections.Member) []projections.Member {
	if m == nil {
		return []projections.Member{}
	}
	return m
}

func dump(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func TestRoomsAgainstFanOutModel(t *testing.T) {
	for seed := uint64(1); seed <= 4; seed++ {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			w := &world{t: t, rng: rand.New(rand.NewPCG(seed, 42)), db: projections.OpenTestDB(t),
				model: &model{global: map[domain.UserID]*[2]*string{}, rooms: map[domain.RoomID]*modelRoom{}, users: map[domain.UserID][]projections.HistoryEntry{}},
				rooms: map[domain.RoomID]*domain.Room{}, profs: map[domain.UserID]*domain.Profile{},
				t0: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
			w.view = projections.NewRooms(w.db, 0)
			w.apply = projections.NewDirect(t, w.db, w.view)
			for i := range 5 {
				w.users = append(w.users, domain.UserID(fmt.Sprintf("@u%d:x", i)))
			}
			for i := range 3 {
				id := domain.RoomID(fmt.Sprintf("!r%d:x", i))
				w.roomID = append(w.roomID, id)
				w.rooms[id] = &domain.Room{}
			}
			const steps = 1500
			for i := range steps {
				w.step()
				w.check(w.view, i)
			}
			// A view opened anew over the store (a restart: no cache)
			// gives the same answers.
			loaded := projections.NewRooms(w.db, 0)
			for i := range 50 {
				w.check(loaded, steps+i)
			}
			// And keeps applying like the original.
			w.view = loaded
			w.apply = projections.NewDirect(t, w.db, loaded)
			for i := range 300 {
				w.step()
				w.check(loaded, steps+50+i)
			}
			if h, err := loaded.RoomHistory(w.roomID[0], projections.HistoryQuery{Viewer: projections.Viewer{Admin: true}}); err != nil || len(h.Entries) == 0 {
				t.Fatalf("the run recorded no history (%v)", err)
			}
		})
	}
}

func TestRoomsEraseLeavesNoNames(t *testing.T) {
	f := newFeeder(t)
	u := domain.UserID("@gone:x")
	f.rename(u, "Secret Name", domain.PropagateUnchanged)
	f.join("!r:x", u, "Secret Name")
	f.join("!r:x", "@other:x", "Other")
	v, _ := json.Marshal("Secret Nick")
	f.apply(domain.Event{Type: domain.TypeMemberProfileSet, Room: "!r:x", User: u, Key: domain.KeyDisplayName, Value: v})
	f.rename(u, "Secret Two", domain.PropagateAll)
	f.apply(domain.Event{Type: domain.TypeErased, User: u})
	admin := projections.Viewer{Admin: true}
	ms, _, _ := f.v.Members("!r:x", nil, admin)
	hist, _ := f.v.RoomHistory("!r:x", projections.HistoryQuery{Viewer: admin, Limit: 100})
	uh, _ := f.v.UserHistory(u, projections.HistoryQuery{Viewer: admin, Limit: 100})
	at := eventstore.Position{Commit: 3, Prepare: 3}
	old, _, _ := f.v.Members("!r:x", &at, admin)
	if s := dump([]any{ms, hist, uh, old}); strings.Contains(s, "Secret") {
		t.Fatalf("an erased name is still readable: %s", s)
	}
	if len(hist.Entries) != 4 || len(ms) != 2 {
		t.Fatalf("erasure removed entries or members instead of their values: %d entries, %d members", len(hist.Entries), len(ms))
	}
}
