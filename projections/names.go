package projections

import (
	"encoding/gob"
	"encoding/json"
	"sort"
	"sync"
	"time"

	"github.com/profilestore/profilestore/domain"
	"github.com/profilestore/profilestore/eventstore"
)

// NameIndex is every display name ever used, normalised (domain.FoldName) and
// indexed by its TR39 skeleton (domain.NameSkeleton), with who used it, where
// (globally or in a room) and when. An erased user's names leave the view
// at once; a hidden entry stays (admins and moderators see it) but is marked
// so that readers without those rights never see it.
type NameIndex struct {
	mu    sync.RWMutex
	users map[domain.UserID]*userNames
	// bySkel maps a skeleton to the users with uses of it (and how many).
	// Equal folds imply equal skeletons, so this one index finds exact,
	// case-insensitive and look-alike matches alike.
	bySkel map[string]map[domain.UserID]int
}

type userNames struct {
	Uses []NameUse
	// Hidden holds the positions (tokens) of the user's hidden entries,
	// including ones hidden before the view saw them.
	Hidden map[string]bool
}

// NameUse is one moment a user took a display name.
type NameUse struct {
	Name string
	User domain.UserID
	// Room is where the name was used; "" for the global profile.
	Room     domain.RoomID
	Position eventstore.Position
	At       time.Time
	// Hidden is true when the entry was hidden (profile.entry_hidden).
	Hidden bool
}

// NewNameIndex returns an empty view.
func NewNameIndex() *NameIndex {
	v := &NameIndex{}
	v.Reset()
	return v
}

// Name identifies the view in snapshots.
func (v *NameIndex) Name() string { return "names" }

// Reset empties the view before a rebuild.
func (v *NameIndex) Reset() {
	v.mu.Lock()
	v.users = make(map[domain.UserID]*userNames)
	v.bySkel = make(map[string]map[domain.UserID]int)
	v.mu.Unlock()
}

// Apply records the display names an event carries, hides entries and
// forgets erased users.
func (v *NameIndex) Apply(e *domain.Event) {
	if e.User == "" {
		return
	}
	switch e.Type {
	case domain.TypeErased:
		v.mu.Lock()
		v.forgetLocked(e.User)
		v.mu.Unlock()
		return
	case domain.TypeEntryHidden:
		v.mu.Lock()
		u := v.userLocked(e.User)
		u.Hidden[e.Hidden.String()] = true
		for i := range u.Uses {
			if u.Uses[i].Position == e.Hidden {
				u.Uses[i].Hidden = true
			}
		}
		v.mu.Unlock()
		return
	}
	name, ok := displayNameOf(e)
	if !ok || e.Erased {
		return
	}
	use := NameUse{Name: name, User: e.User, Room: e.Room, Position: e.Position, At: e.Meta.OccurredAt}
	v.mu.Lock()
	u := v.userLocked(e.User)
	use.Hidden = u.Hidden[e.Position.String()]
	u.Uses = append(u.Uses, use)
	v.indexLocked(use, 1)
	v.mu.Unlock()
}

// displayNameOf returns the display name an event gives its user.
func displayNameOf(e *domain.Event) (string, bool) {
	switch e.Type {
	case domain.TypeFieldSet, domain.TypeMemberProfileSet:
		if e.Key != domain.KeyDisplayName {
			return "", false
		}
		var s string
		if json.Unmarshal(e.Value, &s) != nil || s == "" {
			return "", false
		}
		return s, true
	case domain.TypeMemberJoined, domain.TypeMemberInvited:
		if e.DisplayName == nil || *e.DisplayName == "" {
			return "", false
		}
		return *e.DisplayName, true
	}
	return "", false
}

func (v *NameIndex) userLocked(u domain.UserID) *userNames {
	n := v.users[u]
	if n == nil {
		n = &userNames{Hidden: make(map[string]bool)}
		v.users[u] = n
	}
	return n
}

func (v *NameIndex) indexLocked(use NameUse, delta int) {
	key := domain.NameSkeleton(use.Name)
	m := v.bySkel[key]
	if m == nil {
		m = make(map[domain.UserID]int)
		v.bySkel[key] = m
	}
	m[use.User] += delta
	if m[use.User] <= 0 {
		delete(m, use.User)
	}
	if len(m) == 0 {
		delete(v.bySkel, key)
	}
}

// forgetLocked drops every name of an erased user, and the hidden marks,
// which would only say that something once existed.
func (v *NameIndex) forgetLocked(u domain.UserID) {
	n := v.users[u]
	if n == nil {
		return
	}
	for _, use := range n.Uses {
		v.indexLocked(use, -1)
	}
	delete(v.users, u)
}

// NameVisibility decides which uses a reader may see; nil sees everything.
type NameVisibility func(use NameUse) bool

// MatchKind says how a name matched a search.
type MatchKind int

const (
	// MatchExact is the same string.
	MatchExact MatchKind = iota
	// MatchFolded is the same name ignoring case, width and spacing.
	MatchFolded
	// MatchLookalike is a confusable name (same TR39 skeleton).
	MatchLookalike
)

func (k MatchKind) String() string {
	switch k {
	case MatchExact:
		return "exact"
	case MatchFolded:
		return "folded"
	}
	return "lookalike"
}

// NameMatch is one name one user used, found by Search.
type NameMatch struct {
	Name  string
	User  domain.UserID
	Match MatchKind
	// Global is true when the user had the name as their global profile name.
	Global bool
	// Rooms where the user used the name (at a join or as a per-room name).
	Rooms       []domain.RoomID
	First, Last time.Time
	// FirstPosition and LastPosition locate the first and last use.
	FirstPosition, LastPosition eventstore.Position
	// Hidden is true when every use found is a hidden entry (only readers
	// allowed to see hidden entries get such matches).
	Hidden bool
}

// Search finds the names equal to or confusable with q that the reader may
// see: exact matches first, then case-insensitive, then look-alikes; within
// a kind, the most recently used first. It returns at most limit matches and
// whether more were found.
func (v *NameIndex) Search(q string, limit int, visible NameVisibility) ([]NameMatch, bool) {
	fold, skel := domain.FoldName(q), domain.NameSkeleton(q)
	if skel == "" {
		return nil, false
	}
	type key struct {
		user domain.UserID
		name string
	}
	found := make(map[key]*NameMatch)
	v.mu.RLock()
	for user := range v.bySkel[skel] {
		for _, use := range v.users[user].Uses {
			if visible != nil && !visible(use) {
				continue
			}
			var kind MatchKind
			switch {
			case use.Name == q:
				kind = MatchExact
			case domain.FoldName(use.Name) == fold:
				kind = MatchFolded
			case domain.NameSkeleton(use.Name) == skel:
				kind = MatchLookalike
			default:
				continue
			}
			k := key{user, use.Name}
			m := found[k]
			if m == nil {
				m = &NameMatch{Name: use.Name, User: user, Match: kind, First: use.At, FirstPosition: use.Position, Hidden: true}
				found[k] = m
			}
			m.Last, m.LastPosition = use.At, use.Position
			m.Hidden = m.Hidden && use.Hidden
			if use.Room == "" {
				m.Global = true
			} else if !containsRoom(m.Rooms, use.Room) {
				m.Rooms = append(m.Rooms, use.Room)
			}
		}
	}
	v.mu.RUnlock()
	out := make([]NameMatch, 0, len(found))
	for _, m := range found {
		out = append(out, *m)
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.Match != b.Match {
			return a.Match < b.Match
		}
		if c := a.LastPosition.Compare(b.LastPosition); c != 0 {
			return c > 0
		}
		return a.User < b.User
	})
	more := len(out) > limit
	if more {
		out = out[:limit]
	}
	return out, more
}

func containsRoom(rooms []domain.RoomID, r domain.RoomID) bool {
	for _, x := range rooms {
		if x == r {
			return true
		}
	}
	return false
}

// UserNames returns the names a user used, in log order, that the reader may see.
func (v *NameIndex) UserNames(u domain.UserID, visible NameVisibility) []NameUse {
	v.mu.RLock()
	defer v.mu.RUnlock()
	n := v.users[u]
	if n == nil {
		return nil
	}
	out := make([]NameUse, 0, len(n.Uses))
	for _, use := range n.Uses {
		if visible == nil || visible(use) {
			out = append(out, use)
		}
	}
	return out
}

// IsHidden reports whether the user hid the entry at pos.
func (v *NameIndex) IsHidden(u domain.UserID, pos eventstore.Position) bool {
	v.mu.RLock()
	defer v.mu.RUnlock()
	n := v.users[u]
	return n != nil && n.Hidden[pos.String()]
}

// Len returns how many name uses the view holds.
func (v *NameIndex) Len() int {
	v.mu.RLock()
	defer v.mu.RUnlock()
	total := 0
	for _, n := range v.users {
		total += len(n.Uses)
	}
	return total
}

type namesSnapshot struct {
	Users map[domain.UserID]*userNames
}

// Save writes the view to a snapshot; erased users are not in it.
func (v *NameIndex) Save(enc *gob.Encoder) error {
	v.mu.RLock()
	defer v.mu.RUnlock()
	return enc.Encode(namesSnapshot{Users: v.users})
}

// Load replaces the view with a snapshot's contents and rebuilds the indexes.
func (v *NameIndex) Load(dec *gob.Decoder) error {
	var s namesSnapshot
	if err := dec.Decode(&s); err != nil {
		return err
	}
	v.Reset()
	v.mu.Lock()
	defer v.mu.Unlock()
	for u, n := range s.Users {
		if n.Hidden == nil {
			n.Hidden = make(map[string]bool)
		}
		v.users[u] = n
		for _, use := range n.Uses {
			v.indexLocked(use, 1)
		}
	}
	return nil
}
