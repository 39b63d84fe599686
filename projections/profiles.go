package projections

import (
	"encoding/gob"
	"encoding/json"
	"sort"
	"strings"
	"sync"

	"github.com/profilestore/profilestore/domain"
	"github.com/profilestore/profilestore/eventstore"
)

// Profiles is the global profile of every user, the fold of its
// profile-<user> stream, and the user directory over it.
type Profiles struct {
	mu    sync.RWMutex
	users map[domain.UserID]*profileEntry
}

type profileEntry struct {
	Fields   map[string]json.RawMessage
	Revision uint64
	Position eventstore.Position
	// lowerName is the case-folded display name the directory matches on.
	lowerName string
}

// NewProfiles returns an empty view.
func NewProfiles() *Profiles {
	return &Profiles{users: make(map[domain.UserID]*profileEntry)}
}

// Name identifies the view in snapshots.
func (v *Profiles) Name() string { return "profiles" }

// ProfileState is a user's profile as the view holds it.
type ProfileState struct {
	Profile domain.Profile
	// Revision of the profile stream's last applied event; Exists is false
	// when the user never had an event.
	Revision uint64
	Exists   bool
	Position eventstore.Position
}

// Get returns a copy of the user's profile.
func (v *Profiles) Get(u domain.UserID) ProfileState {
	v.mu.RLock()
	defer v.mu.RUnlock()
	e := v.users[u]
	if e == nil {
		return ProfileState{}
	}
	p := domain.Profile{Fields: make(map[string]json.RawMessage, len(e.Fields))}
	for k, val := range e.Fields {
		p.Fields[k] = val
	}
	return ProfileState{Profile: p, Revision: e.Revision, Exists: true, Position: e.Position}
}

// Field returns one value of the user's profile, with the stream revision.
func (v *Profiles) Field(u domain.UserID, key string) (value json.RawMessage, ok bool, revision uint64, exists bool) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	e := v.users[u]
	if e == nil {
		return nil, false, 0, false
	}
	value, ok = e.Fields[key]
	return value, ok, e.Revision, true
}

// Len returns how many users have a profile stream.
func (v *Profiles) Len() int {
	v.mu.RLock()
	defer v.mu.RUnlock()
	return len(v.users)
}

// Apply folds a profile event into the view.
func (v *Profiles) Apply(e *domain.Event) {
	if e.Room != "" || e.User == "" {
		return
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	entry := v.users[e.User]
	if entry == nil {
		entry = &profileEntry{}
		v.users[e.User] = entry
	}
	p := domain.Profile{Fields: entry.Fields}
	p.Apply(e)
	entry.Fields = p.Fields
	entry.Revision, entry.Position = e.Revision, e.Position
	entry.lowerName = strings.ToLower(p.DisplayName())
}

// DirectoryResult is one user found by Search.
type DirectoryResult struct {
	UserID      domain.UserID
	DisplayName string
	AvatarURL   string
}

// Search finds users whose id or display name contains term, case-insensitively,
// best matches first (exact, then prefix, then substring; ties by user id).
// It returns at most limit results and whether more matched.
func (v *Profiles) Search(term string, limit int) ([]DirectoryResult, bool) {
	term = strings.ToLower(strings.TrimSpace(term))
	type hit struct {
		rank int
		id   domain.UserID
	}
	var hits []hit
	v.mu.RLock()
	for id, e := range v.users {
		if len(e.Fields) == 0 {
			continue
		}
		lid := strings.ToLower(string(id))
		rank := -1
		switch {
		case e.lowerName == term || lid == term || lid[1:] == term:
			rank = 0
		case strings.HasPrefix(e.lowerName, term) || strings.HasPrefix(lid[1:], term):
			rank = 1
		case strings.Contains(e.lowerName, term) || strings.Contains(lid, term):
			rank = 2
		}
		if rank >= 0 {
			hits = append(hits, hit{rank, id})
		}
	}
	sort.Slice(hits, func(i, j int) bool {
		if hits[i].rank != hits[j].rank {
			return hits[i].rank < hits[j].rank
		}
		return hits[i].id < hits[j].id
	})
	limited := len(hits) > limit
	if limited {
		hits = hits[:limit]
	}
	out := make([]DirectoryResult, len(hits))
	for i, h := range hits {
		p := domain.Profile{Fields: v.users[h.id].Fields}
		out[i] = DirectoryResult{UserID: h.id, DisplayName: p.DisplayName(), AvatarURL: p.AvatarURL()}
	}
	v.mu.RUnlock()
	return out, limited
}

type profilesSnapshot struct {
	Users map[domain.UserID]*profileEntry
}

// Save writes the view to a snapshot.
func (v *Profiles) Save(enc *gob.Encoder) error {
	v.mu.RLock()
	defer v.mu.RUnlock()
	return enc.Encode(profilesSnapshot{Users: v.users})
}

// Load replaces the view with a snapshot's contents.
func (v *Profiles) Load(dec *gob.Decoder) error {
	var s profilesSnapshot
	if err := dec.Decode(&s); err != nil {
		return err
	}
	if s.Users == nil {
		s.Users = make(map[domain.UserID]*profileEntry)
	}
	for _, e := range s.Users {
		p := domain.Profile{Fields: e.Fields}
		e.lowerName = strings.ToLower(p.DisplayName())
	}
	v.mu.Lock()
	v.users = s.Users
	v.mu.Unlock()
	return nil
}

// Reset empties the view before a rebuild.
func (v *Profiles) Reset() {
	v.mu.Lock()
	v.users = make(map[domain.UserID]*profileEntry)
	v.mu.Unlock()
}
