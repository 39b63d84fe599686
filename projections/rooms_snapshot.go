package projections

import (
	"encoding/gob"
	"errors"

	"github.com/profilestore/profilestore/domain"
	"github.com/profilestore/profilestore/eventstore"
)

// The snapshot replaces pointers by indexes: values into a table of
// distinct strings (so a name shared by many entries is written once and
// shared again after loading) and changes into the change list. Derived
// indexes (joined rooms, rooms touched, entries by user) are rebuilt on load.

type rsSnapshot struct {
	Strings []string // value i+1; 0 is unset
	Changes []rsChange
	Users   []rsUser
	Rooms   []rsRoom
	Times   []rsTime
	Hidden  []eventstore.Position
	Last    eventstore.Position
}

type rsChange struct {
	Pos                     eventstore.Position
	Ms                      int64
	User                    domain.UserID
	Room                    domain.RoomID
	Kind, Field             uint8
	Prop                    domain.Propagation
	Old, New, DN, AV        uint32
	Type, Actor, Source, By string
	OldRef                  uint32
	NamesRef                [numFields]uint32
}

type rsProp struct {
	Pos eventstore.Position
	Val uint32
	C   uint32
}

type rsUser struct {
	ID        domain.UserID
	Global    [numFields]uint32
	GlobalRef [numFields]uint32
	Prop      [numFields][]rsProp
	AllAt     [numFields][]eventstore.Position
	History   []uint32
}

type rsPeriod struct {
	Pos   eventstore.Position
	State uint8
	C     uint32
	Names [numFields]uint32
	Ovr   [numFields][]rsProp
}

type rsMember struct {
	User    domain.UserID
	Periods []rsPeriod
}

type rsEntry struct{ C, Old uint32 }

type rsVis struct {
	Pos eventstore.Position
	Vis string
}

type rsRoom struct {
	ID      domain.RoomID
	Members []rsMember
	Entries []rsEntry
	Vis     []rsVis
	PL      *domain.PowerLevels
}

type rsTime struct {
	Ms  int64
	Pos eventstore.Position
}

type stringTable struct {
	ids  map[*string]uint32
	strs []string
}

func (t *stringTable) ref(s *string) uint32 {
	if s == nil {
		return 0
	}
	if id, ok := t.ids[s]; ok {
		return id
	}
	t.strs = append(t.strs, *s)
	id := uint32(len(t.strs))
	t.ids[s] = id
	return id
}

func (t *stringTable) props(ps []propChange) []rsProp {
	out := make([]rsProp, len(ps))
	for i, p := range ps {
		out[i] = rsProp{Pos: p.pos, Val: t.ref(p.val), C: p.ci}
	}
	return out
}

// Save writes the view to a snapshot.
func (v *Rooms) Save(enc *gob.Encoder) error {
	v.mu.RLock()
	defer v.mu.RUnlock()
	t := &stringTable{ids: make(map[*string]uint32)}
	s := rsSnapshot{Last: v.last, Changes: make([]rsChange, len(v.changes))}
	for i, c := range v.changes {
		s.Changes[i] = rsChange{Pos: c.pos, Ms: c.ms, User: c.user, Room: c.room, Kind: uint8(c.kind), Field: c.field, Prop: c.prop,
			Old: t.ref(c.old), New: t.ref(c.new), DN: t.ref(c.names[fDisplayName]), AV: t.ref(c.names[fAvatarURL]),
			Type: c.typ, Actor: string(c.actor), Source: c.source, By: string(c.by),
			OldRef: uint32(c.oldRef), NamesRef: [numFields]uint32{uint32(c.namesRef[0]), uint32(c.namesRef[1])}}
	}
	for id, u := range v.users {
		ru := rsUser{ID: id, History: u.history}
		for f := range numFields {
			ru.Global[f] = t.ref(u.global[f])
			ru.GlobalRef[f] = uint32(u.globalRef[f])
			ru.Prop[f] = t.props(u.prop[f])
			ru.AllAt[f] = u.allAt[f]
		}
		s.Users = append(s.Users, ru)
	}
	for id, r := range v.rooms {
		rr := rsRoom{ID: id, PL: r.pl, Entries: make([]rsEntry, len(r.entries))}
		for i, e := range r.entries {
			rr.Entries[i] = rsEntry{C: e.c, Old: uint32(e.old)}
		}
		for _, m := range r.vis {
			rr.Vis = append(rr.Vis, rsVis{Pos: m.pos, Vis: m.vis})
		}
		for uid, m := range r.members {
			rm := rsMember{User: uid, Periods: make([]rsPeriod, len(m.periods))}
			for i, p := range m.periods {
				rp := rsPeriod{Pos: p.pos, State: p.state, C: p.ci}
				for f := range numFields {
					rp.Names[f] = t.ref(p.names[f])
					rp.Ovr[f] = t.props(p.ovr[f])
				}
				rm.Periods[i] = rp
			}
			rr.Members = append(rr.Members, rm)
		}
		s.Rooms = append(s.Rooms, rr)
	}
	for _, m := range v.times {
		s.Times = append(s.Times, rsTime{Ms: m.ms, Pos: m.pos})
	}
	for p := range v.hidden {
		s.Hidden = append(s.Hidden, p)
	}
	s.Strings = t.strs
	return enc.Encode(&s)
}

// Load replaces the view with a snapshot's contents.
func (v *Rooms) Load(dec *gob.Decoder) error {
	var s rsSnapshot
	if err := dec.Decode(&s); err != nil {
		return err
	}
	strs := make([]*string, len(s.Strings)+1)
	for i := range s.Strings {
		strs[i+1] = &s.Strings[i]
	}
	val := func(id uint32) *string {
		if int(id) >= len(strs) {
			return nil
		}
		return strs[id]
	}
	props := func(ps []rsProp) []propChange {
		if len(ps) == 0 {
			return nil
		}
		out := make([]propChange, len(ps))
		for i, p := range ps {
			out[i] = propChange{pos: p.Pos, val: val(p.Val), ci: p.C}
		}
		return out
	}
	n := &Rooms{}
	n.reset()
	n.last = s.Last
	n.changes = make([]*change, len(s.Changes))
	for i, c := range s.Changes {
		n.changes[i] = &change{pos: c.Pos, ms: c.Ms, user: c.User, room: c.Room, kind: kind(c.Kind), field: c.Field, prop: c.Prop,
			old: val(c.Old), new: val(c.New), names: [numFields]*string{val(c.DN), val(c.AV)},
			typ: c.Type, actor: domain.UserID(c.Actor), source: c.Source, by: domain.UserID(c.By),
			oldRef: valueRef(c.OldRef), namesRef: [numFields]valueRef{valueRef(c.NamesRef[0]), valueRef(c.NamesRef[1])}}
	}
	// Every reference must name a change of this snapshot.
	for _, c := range n.changes {
		for _, ref := range []valueRef{c.oldRef, c.namesRef[0], c.namesRef[1]} {
			if ref != 0 && int(ref&^refNames) > len(n.changes) {
				return errSnapshotCorrupt
			}
		}
	}
	for _, ru := range s.Users {
		u := n.user(ru.ID)
		u.history = ru.History
		for f := range numFields {
			u.global[f] = val(ru.Global[f])
			if u.globalRef[f] = valueRef(ru.GlobalRef[f]); int(u.globalRef[f]&^refNames) > len(n.changes) {
				return errSnapshotCorrupt
			}
			u.prop[f] = props(ru.Prop[f])
			u.allAt[f] = ru.AllAt[f]
		}
	}
	for _, rr := range s.Rooms {
		r := n.room(rr.ID)
		r.pl = rr.PL
		for _, m := range rr.Vis {
			r.vis = append(r.vis, visMark{pos: m.Pos, vis: m.Vis})
		}
		r.entries = make([]roomEntry, len(rr.Entries))
		for i, e := range rr.Entries {
			if int(e.C) >= len(n.changes) {
				return errSnapshotCorrupt
			}
			if ref := valueRef(e.Old); ref != 0 && int(ref&^refNames) > len(n.changes) {
				return errSnapshotCorrupt
			}
			r.entries[i] = roomEntry{c: e.C, old: valueRef(e.Old)}
			user := n.changes[e.C].user
			r.byUser[user] = append(r.byUser[user], uint32(i))
			n.user(user).touched[rr.ID] = struct{}{}
		}
		for _, rm := range rr.Members {
			m := &memberRec{periods: make([]period, len(rm.Periods)), room: r}
			for i, rp := range rm.Periods {
				p := period{pos: rp.Pos, state: rp.State, ci: rp.C}
				for f := range numFields {
					p.names[f] = val(rp.Names[f])
					p.ovr[f] = props(rp.Ovr[f])
				}
				m.periods[i] = p
			}
			r.members[rm.User] = m
			if p := m.current(); p != nil && p.state == stJoin {
				n.user(rm.User).joined[rr.ID] = m
			}
		}
	}
	for _, m := range s.Times {
		n.times = append(n.times, timeMark{ms: m.Ms, pos: m.Pos})
	}
	for _, p := range s.Hidden {
		n.hidden[p] = true
	}
	for _, u := range n.users {
		for _, ci := range u.history {
			if int(ci) >= len(n.changes) {
				return errSnapshotCorrupt
			}
		}
	}
	v.mu.Lock()
	v.rooms, v.users, v.changes, v.times, v.hidden, v.last = n.rooms, n.users, n.changes, n.times, n.hidden, n.last
	v.mu.Unlock()
	return nil
}

var errSnapshotCorrupt = errors.New("projections: rooms snapshot refers to a change it does not hold")
