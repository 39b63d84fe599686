package projections

import (
	"encoding/gob"
	"sort"
	"sync"
	"time"

	"github.com/profilestore/profilestore/domain"
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
type Activity struct {
	mu   sync.RWMutex
	days map[string]*dayStats
	// membership and overrides are the little of the room model the counts
	// need to attribute a propagated global rename to rooms.
	membership map[domain.UserID]map[domain.RoomID]bool // room -> has a per-room name
}

type dayStats struct {
	Profile, Room int
	UserRenames   map[domain.UserID]int
	RoomRenames   map[domain.RoomID]int
}

// NewActivity returns an empty view.
func NewActivity() *Activity {
	v := &Activity{}
	v.Reset()
	return v
}

// Name identifies the view in snapshots.
func (v *Activity) Name() string { return "stats" }

// Reset empties the view before a rebuild.
func (v *Activity) Reset() {
	v.mu.Lock()
	v.days = make(map[string]*dayStats)
	v.membership = make(map[domain.UserID]map[domain.RoomID]bool)
	v.mu.Unlock()
}

const dayLayout = "2006-01-02"

// Apply counts one event.
func (v *Activity) Apply(e *domain.Event) {
	v.mu.Lock()
	defer v.mu.Unlock()
	d := v.day(e.Meta.OccurredAt)
	if e.Room != "" {
		d.Room++
	} else {
		d.Profile++
	}
	switch e.Type {
	case domain.TypeMemberJoined, domain.TypeMemberInvited:
		if v.membership[e.User] == nil {
			v.membership[e.User] = make(map[domain.RoomID]bool)
		}
		if _, in := v.membership[e.User][e.Room]; !in {
			v.membership[e.User][e.Room] = false
		}
	case domain.TypeMemberLeft:
		delete(v.membership[e.User], e.Room)
	case domain.TypeMemberProfileSet, domain.TypeMemberProfileGone:
		if e.Key != domain.KeyDisplayName {
			return
		}
		if rooms := v.membership[e.User]; rooms != nil {
			if _, in := rooms[e.Room]; in {
				rooms[e.Room] = e.Type == domain.TypeMemberProfileSet
			}
		}
		d.UserRenames[e.User]++
		d.RoomRenames[e.Room]++
	case domain.TypeFieldSet, domain.TypeFieldDeleted:
		if e.Key != domain.KeyDisplayName {
			return
		}
		d.UserRenames[e.User]++
		for room, override := range v.membership[e.User] {
			switch e.PropagateTo {
			case domain.PropagateNone:
				continue
			case domain.PropagateAll:
				v.membership[e.User][room] = false
			default:
				if override {
					continue
				}
			}
			d.RoomRenames[room]++
		}
	}
}

func (v *Activity) day(t time.Time) *dayStats {
	k := t.UTC().Format(dayLayout)
	d := v.days[k]
	if d == nil {
		d = &dayStats{UserRenames: make(map[domain.UserID]int), RoomRenames: make(map[domain.RoomID]int)}
		v.days[k] = d
	}
	return d
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
	v.mu.RLock()
	for day := from; !day.After(to); day = day.AddDate(0, 0, 1) {
		dc := DayCount{Day: day}
		if d := v.days[day.Format(dayLayout)]; d != nil {
			dc.ProfileChanges, dc.RoomChanges = d.Profile, d.Room
			for u, n := range d.UserRenames {
				users[u] += n
				dc.Renames += n
			}
			for room, n := range d.RoomRenames {
				rooms[room] += n
			}
		}
		r.Days = append(r.Days, dc)
	}
	v.mu.RUnlock()
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

type activitySnapshot struct {
	Days       map[string]*dayStats
	Membership map[domain.UserID]map[domain.RoomID]bool
}

// Save writes the view to a snapshot.
func (v *Activity) Save(enc *gob.Encoder) error {
	v.mu.RLock()
	defer v.mu.RUnlock()
	return enc.Encode(activitySnapshot{Days: v.days, Membership: v.membership})
}

// Load replaces the view with a snapshot's contents.
func (v *Activity) Load(dec *gob.Decoder) error {
	var s activitySnapshot
	if err := dec.Decode(&s); err != nil {
		return err
	}
	v.Reset()
	v.mu.Lock()
	defer v.mu.Unlock()
	for k, d := range s.Days {
		if d.UserRenames == nil {
			d.UserRenames = make(map[domain.UserID]int)
		}
		if d.RoomRenames == nil {
			d.RoomRenames = make(map[domain.RoomID]int)
		}
		v.days[k] = d
	}
	for u, rooms := range s.Membership {
		if rooms == nil {
			rooms = make(map[domain.RoomID]bool)
		}
		v.membership[u] = rooms
	}
	return nil
}
