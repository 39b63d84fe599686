package projections

import (
	"bytes"
	"encoding/json"
	"maps"
	"slices"
	"sort"
	"strings"
	"unicode"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/profilestore/profilestore/domain"
	"github.com/profilestore/profilestore/eventstore"
	"github.com/profilestore/profilestore/projections/viewstore"
)

// Profiles is the global profile of every user, the fold of its
// profile-<user> stream, and the user directory over it. Profiles live in
// the view store under "p"; the directory's word index under "pd"; a
// bounded cache keeps the hot ones decoded.
type Profiles struct {
	db    *DB
	cache *lru.Cache[domain.UserID, *profileEntry]
	// pending are the entries the open transaction changed.
	pending map[domain.UserID]*profileEntry
	count   int64 // users with a profile stream, committed
	added   int64 // users added by the open transaction
	stats   *CacheStats
	// bulk is set while a rebuild fills a fresh store nothing reads: no
	// entry is kept in the cache.
	bulk bool
}

type profileEntry struct {
	Fields   map[string]json.RawMessage
	Revision uint64
	Position eventstore.Position
	// indexed are the directory words the committed entry is indexed under.
	indexed []string
	// liveSince and pastOrder are domain.Profile's: whether a backfilled
	// change may still set a key.
	liveSince int64
	pastOrder map[string]int64
}

const (
	prefixProfile   = "p"
	prefixDirectory = "pd"
)

var keyProfileCount = []byte("meta\x00profiles.count")

// DefaultCacheEntries is the size of each view cache unless configured:
// five caches of it hold about 90 MB when full (about 0.9 KB per decoded
// object). bench scale read as fast with 20,000 as with 100,000, whose
// caches cost up to 450 MB; the block cache keeps the encoded values.
const DefaultCacheEntries = 20_000

// NewProfiles returns the view over db, caching at most cacheEntries
// decoded profiles (DefaultCacheEntries when ≤ 0).
func NewProfiles(db *DB, cacheEntries int) *Profiles {
	if cacheEntries <= 0 {
		cacheEntries = DefaultCacheEntries
	}
	c, _ := lru.New[domain.UserID, *profileEntry](cacheEntries)
	v := &Profiles{db: db, cache: c, pending: map[domain.UserID]*profileEntry{}, stats: newCacheStats("profiles", cacheEntries, c.Len)}
	if raw, ok, err := db.store.Get(keyProfileCount); err == nil && ok {
		d := dec{b: raw}
		v.count = int64(d.uint())
	}
	return v
}

// Name identifies the view in logs and metrics.
func (v *Profiles) Name() string { return "profiles" }

// Cache reports the view cache's size and hit rate.
func (v *Profiles) Cache() *CacheStats { return v.stats }

// ProfileState is a user's profile as the view holds it.
type ProfileState struct {
	Profile domain.Profile
	// Revision of the profile stream's last applied event; Exists is false
	// when the user never had an event.
	Revision uint64
	Exists   bool
	Position eventstore.Position
}

func encodeProfile(e *profileEntry) []byte {
	var w enc
	w.uint(e.Revision)
	w.pos(e.Position)
	keys := slices.Sorted(maps.Keys(e.Fields))
	w.uint(uint64(len(keys)))
	for _, k := range keys {
		w.str(k)
		w.raw(e.Fields[k])
	}
	w.uint(uint64(len(e.indexed)))
	for _, t := range e.indexed {
		w.str(t)
	}
	w.int(e.liveSince)
	past := slices.Sorted(maps.Keys(e.pastOrder))
	w.uint(uint64(len(past)))
	for _, k := range past {
		w.str(k)
		w.int(e.pastOrder[k])
	}
	return w.b
}

func decodeProfile(b []byte) (*profileEntry, error) {
	d := dec{b: b}
	e := &profileEntry{Revision: d.uint(), Position: d.pos()}
	if n := d.uint(); n > 0 && d.err == nil {
		e.Fields = make(map[string]json.RawMessage, n)
		for range n {
			k := d.str()
			e.Fields[k] = d.raw()
		}
	}
	for n := d.uint(); n > 0 && d.err == nil; n-- {
		e.indexed = append(e.indexed, d.str())
	}
	e.liveSince = d.int()
	for n := d.uint(); n > 0 && d.err == nil; n-- {
		if e.pastOrder == nil {
			e.pastOrder = make(map[string]int64)
		}
		k := d.str()
		e.pastOrder[k] = d.int()
	}
	return e, d.err
}

// load reads a committed entry through the cache (nil when there is none).
func (v *Profiles) load(r viewstore.Reader, u domain.UserID) (*profileEntry, error) {
	if e, ok := v.cache.Get(u); ok {
		v.stats.hit()
		return e, nil
	}
	v.stats.miss()
	raw, ok, err := r.Get(keyOf(prefixProfile, string(u)))
	if err != nil || !ok {
		return nil, err
	}
	e, err := decodeProfile(raw)
	if err != nil {
		return nil, err
	}
	if !v.bulk {
		v.cache.Add(u, e)
	}
	return e, nil
}

func (v *Profiles) committed(u domain.UserID) *profileEntry {
	var e *profileEntry
	v.db.readProfiles(func(r viewstore.Reader) { e, _ = v.load(r, u) })
	return e
}

// Get returns a copy of the user's profile.
func (v *Profiles) Get(u domain.UserID) ProfileState {
	e := v.committed(u)
	if e == nil {
		return ProfileState{}
	}
	p := domain.Profile{Fields: make(map[string]json.RawMessage, len(e.Fields))}
	for k, val := range e.Fields {
		p.Fields[k] = val
	}
	return ProfileState{Profile: p, Revision: e.Revision, Exists: true, Position: e.Position}
}

// FieldState is one value of a user's profile as the view holds it.
type FieldState struct {
	// Value is the field's JSON value; Set is false when the profile has
	// no such field.
	Value json.RawMessage
	Set   bool
	// Revision of the profile stream's last applied event; Exists is false
	// when the user never had an event.
	Revision uint64
	Exists   bool
}

// Field returns one value of the user's profile, with the stream revision.
func (v *Profiles) Field(u domain.UserID, key string) FieldState {
	e := v.committed(u)
	if e == nil {
		return FieldState{}
	}
	value, ok := e.Fields[key]
	return FieldState{Value: value, Set: ok, Revision: e.Revision, Exists: true}
}

// Len returns how many users have a profile stream.
func (v *Profiles) Len() int {
	v.db.profilesMu.RLock()
	defer v.db.profilesMu.RUnlock()
	return int(v.count)
}

// Apply folds a profile event into the view. An event at or before the
// position the user's entry already has is skipped: the primary stage
// commits ahead of the checkpoint, so a restart may offer it again.
func (v *Profiles) Apply(tx viewstore.Txn, e *domain.Event) error {
	if e.Room != "" || e.User == "" || e.Type == "" {
		return nil
	}
	entry := v.pending[e.User]
	if entry == nil {
		old, err := v.load(tx, e.User)
		if err != nil {
			return err
		}
		if old != nil && !old.Position.Before(e.Position) {
			return nil
		}
		entry = &profileEntry{}
		if old != nil {
			entry.Fields = make(map[string]json.RawMessage, len(old.Fields))
			for k, val := range old.Fields {
				entry.Fields[k] = val
			}
			entry.indexed, entry.liveSince, entry.pastOrder = old.indexed, old.liveSince, maps.Clone(old.pastOrder)
		} else {
			v.added++
		}
		v.pending[e.User] = entry
	} else if !entry.Position.Before(e.Position) {
		return nil
	}
	p := domain.Profile{Fields: entry.Fields, LiveSince: entry.liveSince, PastOrder: entry.pastOrder}
	p.Apply(e)
	entry.Fields, entry.liveSince, entry.pastOrder = p.Fields, p.LiveSince, p.PastOrder
	entry.Revision, entry.Position = e.Revision, e.Position
	words := directoryWords(e.User, p.DisplayName(), len(p.Fields) > 0)
	if !slicesEqual(words, entry.indexed) {
		// Both lists are sorted: only the words that come or go are
		// written (the id's words never change).
		gone, come := sortedDiff(entry.indexed, words)
		for _, w := range gone {
			if err := tx.Delete(keyOf(prefixDirectory, w, string(e.User))); err != nil {
				return err
			}
		}
		for _, w := range come {
			if err := tx.Set(keyOf(prefixDirectory, w, string(e.User)), nil); err != nil {
				return err
			}
		}
		entry.indexed = words
	}
	return tx.Set(keyOf(prefixProfile, string(e.User)), encodeProfile(entry))
}

// Flush writes the count of users, if the transaction added some.
func (v *Profiles) Flush(tx viewstore.Txn) error {
	if v.added == 0 {
		return nil
	}
	var w enc
	w.uint(uint64(v.count + v.added))
	return tx.Set(keyProfileCount, w.b)
}

// Committed publishes the entries of the committed transaction.
func (v *Profiles) Committed() {
	if !v.bulk {
		for u, e := range v.pending {
			v.cache.Add(u, e)
		}
	}
	clear(v.pending)
	v.count += v.added
	v.added = 0
}

func (v *Profiles) setBulk(on bool) { v.bulk = on }

// Aborted drops the open transaction's entries.
func (v *Profiles) Aborted() {
	clear(v.pending)
	v.added = 0
}

// sortedDiff returns what of the sorted list a is not in the sorted list b,
// and what of b is not in a.
func sortedDiff(a, b []string) (onlyA, onlyB []string) {
	i, j := 0, 0
	for i < len(a) || j < len(b) {
		switch {
		case j == len(b) || (i < len(a) && a[i] < b[j]):
			onlyA = append(onlyA, a[i])
			i++
		case i == len(a) || b[j] < a[i]:
			onlyB = append(onlyB, b[j])
			j++
		default:
			i, j = i+1, j+1
		}
	}
	return onlyA, onlyB
}

func slicesEqual(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// directoryWords are the words a user is found by: the case-folded words
// of the display name and of the user id's localpart, and each of them
// whole. A user with no profile fields is not in the directory.
func directoryWords(u domain.UserID, displayName string, listed bool) []string {
	if !listed {
		return nil
	}
	name := strings.ToLower(displayName)
	local := strings.ToLower(strings.TrimPrefix(string(u), "@"))
	// Every rename computes this: collect, sort, drop repeats, with no map
	// and no intermediate word lists.
	out := make([]string, 0, 8)
	add := func(w string) {
		if w != "" {
			out = append(out, w)
		}
	}
	add(name)
	add(local)
	eachWord(name, add)
	eachWord(local, add)
	sort.Strings(out)
	return slices.Compact(out)
}

// splitWords returns the words of s: its runs of letters and digits.
func splitWords(s string) []string {
	var out []string
	eachWord(s, func(w string) { out = append(out, w) })
	return out
}

// eachWord calls fn with each run of letters and digits of s, in order.
func eachWord(s string, fn func(string)) {
	start := -1
	for i, r := range s {
		if unicode.IsLetter(r) || unicode.IsDigit(r) {
			if start < 0 {
				start = i
			}
			continue
		}
		if start >= 0 {
			fn(s[start:i])
			start = -1
		}
	}
	if start >= 0 {
		fn(s[start:])
	}
}

// DirectoryResult is one user found by Search.
type DirectoryResult struct {
	UserID      domain.UserID
	DisplayName string
	AvatarURL   string
}

// maxDirectoryCandidates bounds the users one search examines.
const maxDirectoryCandidates = 2000

// Search finds users whose display name or user id has a word starting
// with one of the term's words and contains the whole term, case-
// insensitively, best matches first (exact, then prefix, then substring;
// ties by user id). It reads the word index, never every user. It returns
// at most limit results and whether more matched.
func (v *Profiles) Search(term string, limit int) ([]DirectoryResult, bool) {
	term = strings.ToLower(strings.TrimSpace(term))
	words := splitWords(term)
	if term == "" {
		return nil, false
	}
	// The word with the fewest users is the one to read candidates from:
	// "Scale user 12345" reads the users of "12345", not of "scale".
	probe := term
	if len(words) > 0 {
		// Longer words first (they tend to be rarer); each count stops as
		// soon as it passes the fewest found so far.
		byLength := slices.Clone(words)
		sort.SliceStable(byLength, func(i, j int) bool { return len(byLength[i]) > len(byLength[j]) })
		best := maxDirectoryCandidates + 1
		v.db.readProfiles(func(r viewstore.Reader) {
			for i, w := range byLength {
				lo := keyOf(prefixDirectory, w)
				n := 0
				_ = r.Scan(lo, viewstore.PrefixEnd(lo), false, func(_, _ []byte) bool {
					n++
					return n < best
				})
				if i == 0 || n < best {
					best, probe = n, w
				}
			}
		})
	}
	type hit struct {
		rank int
		id   domain.UserID
		e    *profileEntry
	}
	var hits []hit
	truncated := false
	v.db.readProfiles(func(r viewstore.Reader) {
		lo := keyOf(prefixDirectory, probe)
		seen := map[domain.UserID]bool{}
		var ids []domain.UserID
		_ = r.Scan(lo, viewstore.PrefixEnd(lo), false, func(k, _ []byte) bool {
			i := bytes.LastIndexByte(k, 0)
			id := domain.UserID(k[i+1:])
			if !seen[id] {
				seen[id] = true
				ids = append(ids, id)
			}
			if len(ids) >= maxDirectoryCandidates {
				truncated = true
				return false
			}
			return true
		})
		for _, id := range ids {
			e, err := v.load(r, id)
			if err != nil || e == nil || len(e.Fields) == 0 {
				continue
			}
			p := domain.Profile{Fields: e.Fields}
			name := strings.ToLower(p.DisplayName())
			lid := strings.ToLower(string(id))
			rank := -1
			switch {
			case name == term || lid == term || lid[1:] == term:
				rank = 0
			case strings.HasPrefix(name, term) || strings.HasPrefix(lid[1:], term):
				rank = 1
			case strings.Contains(name, term) || strings.Contains(lid, term):
				rank = 2
			}
			if rank >= 0 {
				hits = append(hits, hit{rank, id, e})
			}
		}
	})
	sort.Slice(hits, func(i, j int) bool {
		if hits[i].rank != hits[j].rank {
			return hits[i].rank < hits[j].rank
		}
		return hits[i].id < hits[j].id
	})
	limited := len(hits) > limit || truncated
	if len(hits) > limit {
		hits = hits[:limit]
	}
	out := make([]DirectoryResult, len(hits))
	for i, h := range hits {
		p := domain.Profile{Fields: h.e.Fields}
		out[i] = DirectoryResult{UserID: h.id, DisplayName: p.DisplayName(), AvatarURL: p.AvatarURL()}
	}
	return out, limited
}

// UsersAfter returns up to limit users with a profile, in id order, after
// the given one ("" for the first): a backfill lists the rooms of the
// users profilestore knows.
func (v *Profiles) UsersAfter(after domain.UserID, limit int) ([]domain.UserID, error) {
	var out []domain.UserID
	var err error
	lo := rangeOf(prefixProfile)
	from := lo
	if after != "" {
		from = append(keyOf(prefixProfile, string(after)), 0)
	}
	v.db.read(func(r viewstore.Reader) {
		err = r.Scan(from, viewstore.PrefixEnd(lo), false, func(k, _ []byte) bool {
			out = append(out, domain.UserID(k[len(lo):]))
			return len(out) < limit
		})
	})
	return out, err
}
