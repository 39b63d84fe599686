package projections

import (
	"bytes"
	"encoding/json"
	"errors"
	"sort"
	"time"

	"github.com/profilestore/profilestore/domain"
	"github.com/profilestore/profilestore/eventstore"
	"github.com/profilestore/profilestore/projections/viewstore"
)

// NameIndex is every display name ever used, normalised (domain.FoldName) and
// indexed by its TR39 skeleton (domain.NameSkeleton), with who used it, where
// (globally or in a room) and when. An erased user's names leave the view
// at once; a hidden entry stays (admins and moderators see it) but is marked
// so that readers without those rights never see it.
//
// In the view store: "nu" user, position -> a use; "ns" skeleton, user ->
// the user has uses of it (equal folds imply equal skeletons, so this one
// index finds exact, case-insensitive and look-alike matches alike); "nh"
// user, position -> hidden, including entries hidden before the view saw
// them.
type NameIndex struct {
	db           *DB
	count, added int64
	// hidden counts hide marks (committed and in the open transaction):
	// while there are none, recording a use needs no look-up.
	hidden, hiddenAdded int64
	dirty               bool
}

const (
	prefixNameUse    = "nu"
	prefixNameSkel   = "ns"
	prefixNameHidden = "nh"
)

var keyNamesCount = []byte("meta\x00names.count")

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

// NewNameIndex returns the view over db.
func NewNameIndex(db *DB) *NameIndex {
	v := &NameIndex{db: db}
	if raw, ok, err := db.store.Get(keyNamesCount); err == nil && ok {
		d := dec{b: raw}
		v.count = int64(d.uint())
		v.hidden = int64(d.uint())
	}
	return v
}

// Name identifies the view in logs and metrics.
func (v *NameIndex) Name() string { return "names" }

// Flush writes the count of uses, if the transaction changed it.
func (v *NameIndex) Flush(tx viewstore.Txn) error {
	if !v.dirty {
		return nil
	}
	v.dirty = false
	var w enc
	w.uint(uint64(max(v.count+v.added, 0)))
	w.uint(uint64(v.hidden + v.hiddenAdded))
	return tx.Set(keyNamesCount, w.b)
}

// Committed publishes the count of the committed transaction.
func (v *NameIndex) Committed() {
	v.count, v.added = v.count+v.added, 0
	v.hidden, v.hiddenAdded = v.hidden+v.hiddenAdded, 0
}

// Aborted drops the open transaction's count.
func (v *NameIndex) Aborted() { v.added, v.hiddenAdded, v.dirty = 0, 0, false }

func encodeUse(u NameUse) []byte {
	var w enc
	w.str(u.Name)
	w.str(string(u.Room))
	w.int(u.At.UnixNano())
	w.bool(u.Hidden)
	return w.b
}

func decodeUse(user domain.UserID, key, raw []byte) (NameUse, error) {
	d := dec{b: raw}
	u := NameUse{User: user, Name: d.str(), Room: domain.RoomID(d.str())}
	u.At = time.Unix(0, d.int()).UTC()
	u.Hidden = d.bool()
	u.Position = readPos(key[len(key)-16:])
	return u, d.err
}

// Apply records the display names an event carries, hides entries and
// forgets erased users.
func (v *NameIndex) Apply(tx viewstore.Txn, e *domain.Event) error {
	if e.User == "" {
		return nil
	}
	switch e.Type {
	case domain.TypeErased:
		return v.forget(tx, e.User)
	case domain.TypeEntryHidden:
		if err := tx.Set(posKey(e.Hidden, prefixNameHidden, string(e.User)), nil); err != nil {
			return err
		}
		v.hiddenAdded++
		v.dirty = true
		k := posKey(e.Hidden, prefixNameUse, string(e.User))
		raw, ok, err := tx.Get(k)
		if err != nil || !ok {
			return err
		}
		use, err := decodeUse(e.User, k, raw)
		if err != nil {
			return err
		}
		use.Hidden = true
		return tx.Set(k, encodeUse(use))
	}
	name, ok := displayNameOf(e)
	if !ok || e.Erased {
		return nil
	}
	use := NameUse{Name: name, User: e.User, Room: e.Room, Position: e.Position, At: e.Meta.OccurredAt}
	if v.hidden+v.hiddenAdded > 0 {
		// An entry can be hidden before this view records it (a replay).
		_, hidden, err := tx.Get(posKey(e.Position, prefixNameHidden, string(e.User)))
		if err != nil {
			return err
		}
		use.Hidden = hidden
	}
	if err := tx.Set(posKey(e.Position, prefixNameUse, string(e.User)), encodeUse(use)); err != nil {
		return err
	}
	if err := tx.Set(keyOf(prefixNameSkel, domain.NameSkeleton(name), string(e.User)), nil); err != nil {
		return err
	}
	v.added++
	v.dirty = true
	return nil
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

// forget drops every name of an erased user, and the hidden marks, which
// would only say that something once existed.
func (v *NameIndex) forget(tx viewstore.Txn, user domain.UserID) error {
	var keys [][]byte
	skels := map[string]bool{}
	lo := rangeOf(prefixNameUse, string(user))
	var derr error
	err := tx.Scan(lo, viewstore.PrefixEnd(lo), false, func(k, val []byte) bool {
		use, err := decodeUse(user, k, val)
		if err != nil {
			derr = err
			return false
		}
		keys = append(keys, bytes.Clone(k))
		skels[domain.NameSkeleton(use.Name)] = true
		return true
	})
	if err != nil || derr != nil {
		return errors.Join(err, derr)
	}
	hl := rangeOf(prefixNameHidden, string(user))
	if err := tx.Scan(hl, viewstore.PrefixEnd(hl), false, func(k, _ []byte) bool {
		keys = append(keys, bytes.Clone(k))
		return true
	}); err != nil {
		return err
	}
	for s := range skels {
		keys = append(keys, keyOf(prefixNameSkel, s, string(user)))
	}
	uses := 0
	for _, k := range keys {
		if bytes.HasPrefix(k, lo) {
			uses++
		}
		if err := tx.Delete(k); err != nil {
			return err
		}
	}
	v.added -= int64(uses)
	v.dirty = true
	return nil
}

// uses calls fn for each use of the user, in log order, until it returns false.
func (v *NameIndex) uses(r viewstore.Reader, user domain.UserID, fn func(NameUse) bool) error {
	lo := rangeOf(prefixNameUse, string(user))
	var derr error
	err := r.Scan(lo, viewstore.PrefixEnd(lo), false, func(k, val []byte) bool {
		use, err := decodeUse(user, k, val)
		if err != nil {
			derr = err
			return false
		}
		return fn(use)
	})
	return errors.Join(err, derr)
}

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
func (v *NameIndex) Search(q string, limit int, visible domain.NameFilter) ([]NameMatch, bool) {
	fold, skel := domain.FoldName(q), domain.NameSkeleton(q)
	if skel == "" {
		return nil, false
	}
	type key struct {
		user domain.UserID
		name string
	}
	found := make(map[key]*NameMatch)
	v.db.read(func(r viewstore.Reader) {
		lo := rangeOf(prefixNameSkel, skel)
		var users []domain.UserID
		_ = r.Scan(lo, viewstore.PrefixEnd(lo), false, func(k, _ []byte) bool {
			users = append(users, domain.UserID(k[len(lo):]))
			return true
		})
		for _, user := range users {
			_ = v.uses(r, user, func(use NameUse) bool {
				if visible != nil && !visible(use.Hidden, use.Room) {
					return true
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
					return true
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
				return true
			})
		}
	})
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
func (v *NameIndex) UserNames(u domain.UserID, visible domain.NameFilter) []NameUse {
	var out []NameUse
	v.db.read(func(r viewstore.Reader) {
		_ = v.uses(r, u, func(use NameUse) bool {
			if visible == nil || visible(use.Hidden, use.Room) {
				out = append(out, use)
			}
			return true
		})
	})
	return out
}

// IsHidden reports whether the user hid the entry at pos.
func (v *NameIndex) IsHidden(u domain.UserID, pos eventstore.Position) bool {
	hidden := false
	v.db.read(func(r viewstore.Reader) {
		_, hidden, _ = r.Get(posKey(pos, prefixNameHidden, string(u)))
	})
	return hidden
}

// Len returns how many name uses the view holds.
func (v *NameIndex) Len() int {
	v.db.mu.RLock()
	defer v.db.mu.RUnlock()
	return int(v.count)
}
