package projections

import (
	"sort"
	"time"

	"github.com/profilestore/profilestore/domain"
	"github.com/profilestore/profilestore/projections/viewstore"
)

// Activity counts changes per day (UTC, by occurred_at) for the stats endpoint
// and the console's activity chart: events by category, and display-name
// changes ("renames") by user and by room. It holds counts and identifiers,
// never names.
//
// A rename counts for the user on every global or per-room display-name set
// or clear, and for a room on every per-room rename there and every global
// rename that reached it: propagate_to all reaches every room the user is
// in, unchanged the ones without a per-room name, none no room.
//
// In the view store: "ad" day -> profile and room event counts; "au" day,
// user and "ar" day, room -> renames; "am" user, room -> whether the user
// has a per-room name there (the little of the room model the counts need
// to attribute a propagated global rename to rooms).
type Activity struct {
	db *DB
	// counts are the increments of the open transaction, by key: written
	// once per transaction (Flush), not once per event.
	counts map[string][]uint64
}

const (
	prefixActDay    = "ad"
	prefixActUser   = "au"
	prefixActRoom   = "ar"
	prefixActMember = "am"
)

// NewActivity returns the view over db.
func NewActivity(db *DB) *Activity { return &Activity{db: db, counts: map[string][]uint64{}} }

// Name identifies the view in logs and metrics.
func (v *Activity) Name() string { return "activity" }

// Flush adds the transaction's increments to the stored counters, without
// reading them.
func (v *Activity) Flush(tx viewstore.Txn) error {
	for k, deltas := range v.counts {
		if err := tx.Add([]byte(k), viewstore.Counter(deltas...)); err != nil {
			return err
		}
	}
	clear(v.counts)
	return nil
}

// Committed has nothing to publish: the view caches nothing.
func (v *Activity) Committed() {}

// Aborted drops the transaction's increments.
func (v *Activity) Aborted() { clear(v.counts) }

const dayLayout = "2006-01-02"

// add adds deltas to the counters at key (one or two varints), at Flush.
func (v *Activity) add(key []byte, deltas ...uint64) {
	c := v.counts[string(key)]
	if c == nil {
		c = make([]uint64, len(deltas))
		v.counts[string(key)] = c
	}
	for i, d := range deltas {
		c[i] += d
	}
}

func readCounts(raw []byte, n int) []int {
	d := dec{b: raw}
	out := make([]int, n)
	for i := range out {
		if len(d.b) > 0 {
			out[i] = int(d.uint())
		}
	}
	return out
}

// Apply counts one event.
func (v *Activity) Apply(tx viewstore.Txn, e *domain.Event) error {
	day := e.Meta.OccurredAt.UTC().Format(dayLayout)
	if e.Room != "" {
		v.add(keyOf(prefixActDay, day), 0, 1)
	} else {
		v.add(keyOf(prefixActDay, day), 1, 0)
	}
	member := func(room domain.RoomID) []byte { return keyOf(prefixActMember, string(e.User), string(room)) }
	switch e.Type {
	case domain.TypeMemberJoined, domain.TypeMemberInvited:
		// A new membership period starts without a per-room name, as in the
		// rooms view; no read is needed.
		return tx.Set(member(e.Room), []byte{0})
	case domain.TypeMemberLeft:
		return tx.Delete(member(e.Room))
	case domain.TypeMemberProfileSet, domain.TypeMemberProfileGone:
		if e.Key != domain.KeyDisplayName {
			return nil
		}
		if _, in, err := tx.Get(member(e.Room)); err != nil {
			return err
		} else if in {
			override := byte(0)
			if e.Type == domain.TypeMemberProfileSet {
				override = 1
			}
			if err := tx.Set(member(e.Room), []byte{override}); err != nil {
				return err
			}
		}
		v.add(keyOf(prefixActUser, day, string(e.User)), 1)
		v.add(keyOf(prefixActRoom, day, string(e.Room)), 1)
		return nil
	case domain.TypeFieldSet, domain.TypeFieldDeleted:
		if e.Key != domain.KeyDisplayName {
			return nil
		}
		v.add(keyOf(prefixActUser, day, string(e.User)), 1)
		if e.PropagateTo == domain.PropagateNone {
			return nil
		}
		type membership struct {
			room     domain.RoomID
			override bool
		}
		var rooms []membership
		lo := rangeOf(prefixActMember, string(e.User))
		if err := tx.Scan(lo, viewstore.PrefixEnd(lo), false, func(k, val []byte) bool {
			rooms = append(rooms, membership{domain.RoomID(k[len(lo):]), len(val) == 1 && val[0] == 1})
			return true
		}); err != nil {
			return err
		}
		for _, m := range rooms {
			if e.PropagateTo == domain.PropagateAll {
				if m.override {
					if err := tx.Set(member(m.room), []byte{0}); err != nil {
						return err
					}
				}
			} else if m.override {
				continue
			}
			v.add(keyOf(prefixActRoom, day, string(m.room)), 1)
		}
	}
	return nil
}

// DayCount is one day of activity.
type DayCount struct {
	Day            time.Time // midnight UTC
	ProfileChanges int
	RoomChanges    int
	Renames        int
}

// UserCount is a user and how often they were renamed.
type UserCount struct {
	User domain.UserID
	N    int
}

// RoomCount is a room and how many renames it saw.
type RoomCount struct {
	Room domain.RoomID
	N    int
}

// ActivityReport is the activity of a window of days.
type ActivityReport struct {
	// Days has one entry per day of the window, zeros included, oldest first.
	Days     []DayCount
	TopUsers []UserCount
	TopRooms []RoomCount
}

// Report sums the days from from to to (inclusive, UTC dates) and returns
// the top most-renamed users and rooms (ties by id).
func (v *Activity) Report(from, to time.Time, top int) ActivityReport {
	from = truncateDay(from)
	to = truncateDay(to)
	var r ActivityReport
	users := make(map[domain.UserID]int)
	rooms := make(map[domain.RoomID]int)
	v.db.read(func(rd viewstore.Reader) {
		for day := from; !day.After(to); day = day.AddDate(0, 0, 1) {
			dc := DayCount{Day: day}
			k := day.Format(dayLayout)
			if raw, ok, err := rd.Get(keyOf(prefixActDay, k)); err == nil && ok {
				c := readCounts(raw, 2)
				dc.ProfileChanges, dc.RoomChanges = c[0], c[1]
			}
			lo := rangeOf(prefixActUser, k)
			_ = rd.Scan(lo, viewstore.PrefixEnd(lo), false, func(key, val []byte) bool {
				n := readCounts(val, 1)[0]
				users[domain.UserID(key[len(lo):])] += n
				dc.Renames += n
				return true
			})
			lo = rangeOf(prefixActRoom, k)
			_ = rd.Scan(lo, viewstore.PrefixEnd(lo), false, func(key, val []byte) bool {
				rooms[domain.RoomID(key[len(lo):])] += readCounts(val, 1)[0]
				return true
			})
			r.Days = append(r.Days, dc)
		}
	})
	for u, n := range users {
		r.TopUsers = append(r.TopUsers, UserCount{u, n})
	}
	sort.Slice(r.TopUsers, func(i, j int) bool {
		a, b := r.TopUsers[i], r.TopUsers[j]
		return a.N > b.N || a.N == b.N && a.User < b.User
	})
	for room, n := range rooms {
		r.TopRooms = append(r.TopRooms, RoomCount{room, n})
	}
	sort.Slice(r.TopRooms, func(i, j int) bool {
		a, b := r.TopRooms[i], r.TopRooms[j]
		return a.N > b.N || a.N == b.N && a.Room < b.Room
	})
	r.TopUsers = r.TopUsers[:min(top, len(r.TopUsers))]
	r.TopRooms = r.TopRooms[:min(top, len(r.TopRooms))]
	return r
}

func truncateDay(t time.Time) time.Time {
	y, m, d := t.UTC().Date()
	return time.Date(y, m, d, 0, 0, 0, 0, time.UTC)
}
