package domain

import (
	"bytes"
	"encoding/json"
	"maps"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/profilestore/profilestore/eventstore"
)

// MaxProfileBytes bounds the canonical JSON of a whole profile (spec: 64 KiB).
const MaxProfileBytes = 65536

// Limits are the per-field limits of profile writes.
type Limits struct {
	// MaxDisplayNameChars bounds a display name in characters (default 256).
	MaxDisplayNameChars int
	// MaxAvatarURLBytes bounds an avatar URL in bytes (default 1000).
	MaxAvatarURLBytes int
}

// DefaultLimits are Synapse's per-field limits.
var DefaultLimits = Limits{MaxDisplayNameChars: 256, MaxAvatarURLBytes: 1000}

// Profile is a user's global profile: key → canonical JSON value.
// The zero Profile is empty and usable.
type Profile struct {
	Fields map[string]json.RawMessage
	// AllAt is, per displayname / avatar_url, the position of the last change
	// with propagate_to all: it cleared every per-room override older than it.
	AllAt map[string]eventstore.Position
	// Hidden holds the positions of the history entries the user's stream
	// hid (profile.entry_hidden).
	Hidden map[eventstore.Position]bool
	// ErasedAt is the position of the user's last profile.erased (Start if
	// never erased): every value recorded before it is unreadable, which
	// readers show as "erased" rather than as an unset value.
	ErasedAt eventstore.Position
	// Moderation lists the hides and erasures of the user's stream, oldest
	// first: who acted, when and why (the console's record of actions).
	Moderation []ModerationRecord
	// LiveSince is the occurred_at (ms) of the stream's first field change
	// recorded as it happened, 0 if none. From then on the profile is what
	// live changes made it, and backfilled changes (older by construction)
	// are history only; before, the newest backfilled change of a key wins
	// (PastOrder). See docs/DECISIONS.md, "History order and backfill".
	LiveSince int64
	// PastOrder is the order_ts of the backfilled change each key's value
	// came from, while LiveSince is 0.
	PastOrder map[string]int64
}

// ModerationRecord is one hide or erasure as the profile's stream holds it.
type ModerationRecord struct {
	// Type is profile.entry_hidden or profile.erased.
	Type string
	// Position is where the action was recorded; Entry the entry hidden.
	Position, Entry eventstore.Position
	At              time.Time
	Actor           UserID
	Source          string
	Reason          string
}

// ErasedBefore reports whether a value recorded at pos was erased since.
func (p Profile) ErasedBefore(pos eventstore.Position) bool {
	return !p.ErasedAt.IsStart() && pos.Before(p.ErasedAt)
}

// Get returns the value of key and whether it is set.
func (p Profile) Get(key string) (json.RawMessage, bool) {
	v, ok := p.Fields[key]
	return v, ok
}

// DisplayName returns the display name, or "" when unset or not a string.
func (p Profile) DisplayName() string { return p.stringField(KeyDisplayName) }

// AvatarURL returns the avatar URL, or "" when unset or not a string.
func (p Profile) AvatarURL() string { return p.stringField(KeyAvatarURL) }

func (p Profile) stringField(key string) string {
	var s string
	if v, ok := p.Fields[key]; ok {
		_ = json.Unmarshal(v, &s)
	}
	return s
}

// Apply folds one profile event into the profile.
func (p *Profile) Apply(e *Event) {
	if e.Type == TypeFieldSet || e.Type == TypeFieldDeleted {
		if e.Meta.OrderTS > 0 {
			if p.LiveSince != 0 || p.PastOrder[e.Key] > e.Meta.OrderTS {
				return // history only: the rooms view shows it where it belongs
			}
			if p.PastOrder == nil {
				p.PastOrder = make(map[string]int64)
			}
			p.PastOrder[e.Key] = e.Meta.OrderTS
		} else if p.LiveSince == 0 {
			p.LiveSince, p.PastOrder = max(e.Meta.OccurredAt.UnixMilli(), 1), nil
		}
	}
	if (e.Type == TypeFieldSet || e.Type == TypeFieldDeleted) && e.PropagateTo == PropagateAll {
		if p.AllAt == nil {
			p.AllAt = make(map[string]eventstore.Position)
		}
		p.AllAt[e.Key] = e.Position
	}
	switch e.Type {
	case TypeFieldSet:
		if e.Erased {
			delete(p.Fields, e.Key)
			return
		}
		if p.Fields == nil {
			p.Fields = make(map[string]json.RawMessage)
		}
		p.Fields[e.Key] = e.Value
	case TypeFieldDeleted:
		delete(p.Fields, e.Key)
	case TypeErased:
		p.Fields = nil
		p.ErasedAt = e.Position
		p.Moderation = append(p.Moderation, ModerationRecord{Type: e.Type, Position: e.Position, At: e.Meta.OccurredAt, Actor: e.Meta.Actor, Source: e.Meta.Source, Reason: e.Meta.Reason})
	case TypeEntryHidden:
		if p.Hidden == nil {
			p.Hidden = make(map[eventstore.Position]bool)
		}
		p.Hidden[e.Hidden] = true
		p.Moderation = append(p.Moderation, ModerationRecord{Type: e.Type, Position: e.Position, Entry: e.Hidden, At: e.Meta.OccurredAt, Actor: e.Meta.Actor, Source: e.Meta.Source, Reason: e.Meta.Reason})
	}
}

// settle gives the change of a field e made the position the store gave
// it, where a batch folded it at a provisional one.
func (p *Profile) settle(e *Event, provisional, actual eventstore.Position) {
	if p.AllAt[e.Key] == provisional {
		p.AllAt[e.Key] = actual
	}
	if p.ErasedAt == provisional && e.Type == TypeErased {
		p.ErasedAt = actual
	}
	for i := range p.Moderation {
		if p.Moderation[i].Position == provisional && p.Moderation[i].Type == e.Type {
			p.Moderation[i].Position = actual
		}
	}
}

// Clone returns a copy that shares no map with p (values are immutable).
func (p Profile) Clone() Profile {
	c := Profile{Fields: make(map[string]json.RawMessage, len(p.Fields)), ErasedAt: p.ErasedAt, LiveSince: p.LiveSince, PastOrder: maps.Clone(p.PastOrder)}
	for k, v := range p.Fields {
		c.Fields[k] = v
	}
	if p.AllAt != nil {
		c.AllAt = make(map[string]eventstore.Position, len(p.AllAt))
		for k, v := range p.AllAt {
			c.AllAt[k] = v
		}
	}
	c.Moderation = slices.Clone(p.Moderation)
	if p.Hidden != nil {
		c.Hidden = make(map[eventstore.Position]bool, len(p.Hidden))
		for k, v := range p.Hidden {
			c.Hidden[k] = v
		}
	}
	return c
}

// CanonicalSize returns the length of the profile's canonical JSON.
func (p Profile) CanonicalSize() int {
	n := 2 // {}
	i := 0
	for k, v := range p.Fields {
		if i > 0 {
			n++ // ,
		}
		kb, _ := json.Marshal(k)
		n += len(kb) + 1 + len(v)
		i++
	}
	return n
}

// CanonicalJSON re-encodes a JSON value as Matrix canonical JSON: object keys
// sorted, no insignificant white space, numbers as written, no HTML escaping.
// It fails on anything that is not exactly one JSON value.
func CanonicalJSON(raw []byte) (json.RawMessage, error) {
	if s, ok := plainJSONString(raw); ok {
		// Most values are strings (names, mxc URIs) that are canonical
		// already: the general path would decode and re-encode them to the
		// same bytes.
		return s, nil
	}
	return canonicalJSON(raw)
}

// canonicalJSON is CanonicalJSON's general path: decode, then encode.
func canonicalJSON(raw []byte) (json.RawMessage, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	if len(bytes.TrimSpace(raw[dec.InputOffset():])) != 0 {
		return nil, &json.SyntaxError{Offset: dec.InputOffset()}
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimRight(buf.Bytes(), "\n"), nil
}

// plainJSONString returns raw without surrounding white space when it is a
// JSON string that canonical encoding leaves as it is: valid UTF-8, no
// escape, no control character, and neither U+2028 nor U+2029 (which
// encoding/json always escapes).
func plainJSONString(raw []byte) ([]byte, bool) {
	s := bytes.Trim(raw, " \t\r\n") // JSON's white space, no other
	if len(s) < 2 || s[0] != '"' || s[len(s)-1] != '"' {
		return nil, false
	}
	body := s[1 : len(s)-1]
	for i := 0; i < len(body); i++ {
		switch c := body[i]; {
		case c < 0x20 || c == '"' || c == '\\':
			return nil, false
		case c == 0xE2 && i+2 < len(body) && body[i+1] == 0x80 && (body[i+2] == 0xA8 || body[i+2] == 0xA9):
			return nil, false
		}
	}
	if !utf8.Valid(body) {
		return nil, false
	}
	return s, true
}

// SetField is the command to set one key of a user's global profile.
type SetField struct {
	User UserID
	Key  string
	// Value is the canonical JSON value (see CanonicalJSON).
	Value       json.RawMessage
	PropagateTo Propagation
	Actor       Actor
	Meta        Metadata
}

// DeleteField is the command to remove one key of a user's global profile.
type DeleteField struct {
	User        UserID
	Key         string
	PropagateTo Propagation
	Actor       Actor
	Meta        Metadata
}

// HideEntry is the command to hide an entry of a user's history (a
// deadname, say) from everyone but admins and the rooms' moderators.
type HideEntry struct {
	User UserID
	// Entry is the position of the entry in the user's history.
	Entry eventstore.Position
	Actor Actor
	Meta  Metadata
}

// DecideSetField validates a set against the profile and the limits and
// returns the events it causes: none when the value is already set.
// An empty displayname or avatar_url means "unset", as Matrix servers treat it.
func DecideSetField(p *Profile, cmd SetField, lim Limits) ([]Event, error) {
	if err := ValidateKeyName(cmd.Key); err != nil {
		return nil, err
	}
	value := cmd.Value
	switch cmd.Key {
	case KeyDisplayName, KeyAvatarURL, KeyTimeZone:
		var s string
		if err := json.Unmarshal(value, &s); err != nil || bytes.Equal(value, []byte("null")) {
			return nil, Errorf(ErrCodeInvalidParam, "%s must be a string", cmd.Key)
		}
		if cmd.Key == KeyDisplayName {
			s = strings.TrimSpace(s)
			if n := utf8.RuneCountInString(s); lim.MaxDisplayNameChars > 0 && n > lim.MaxDisplayNameChars {
				return nil, Errorf(ErrCodeTooLarge, "displayname is longer than %d characters", lim.MaxDisplayNameChars)
			}
			if strings.ContainsRune(s, 0) {
				return nil, Errorf(ErrCodeInvalidParam, "displayname may not contain NUL")
			}
		}
		if cmd.Key == KeyAvatarURL && s != "" {
			if lim.MaxAvatarURLBytes > 0 && len(s) > lim.MaxAvatarURLBytes {
				return nil, Errorf(ErrCodeTooLarge, "avatar_url is longer than %d bytes", lim.MaxAvatarURLBytes)
			}
			if err := ValidateMXC(s); err != nil {
				return nil, err
			}
		}
		if s == "" && cmd.Key != KeyTimeZone {
			return DecideDeleteField(p, DeleteField{User: cmd.User, Key: cmd.Key, PropagateTo: cmd.PropagateTo, Actor: cmd.Actor, Meta: cmd.Meta})
		}
		value, _ = json.Marshal(s)
	}
	if old, ok := p.Fields[cmd.Key]; ok && bytes.Equal(old, value) {
		return nil, nil
	}
	next := Profile{Fields: make(map[string]json.RawMessage, len(p.Fields)+1)}
	for k, v := range p.Fields {
		next.Fields[k] = v
	}
	next.Fields[cmd.Key] = value
	if next.CanonicalSize() > MaxProfileBytes {
		return nil, Errorf(ErrCodeProfileTooLarge, "The profile would be larger than %d bytes of canonical JSON", MaxProfileBytes)
	}
	return []Event{{
		Type: TypeFieldSet, User: cmd.User, Key: cmd.Key, Value: value,
		PropagateTo: propagationFor(cmd.Key, cmd.PropagateTo), Meta: cmd.Meta,
	}}, nil
}

// DecideDeleteField returns the events of a delete: none when the key is
// not set (DELETE is idempotent).
func DecideDeleteField(p *Profile, cmd DeleteField) ([]Event, error) {
	if err := ValidateKeyName(cmd.Key); err != nil {
		return nil, err
	}
	if _, ok := p.Fields[cmd.Key]; !ok {
		return nil, nil
	}
	return []Event{{
		Type: TypeFieldDeleted, User: cmd.User, Key: cmd.Key,
		PropagateTo: propagationFor(cmd.Key, cmd.PropagateTo), Meta: cmd.Meta,
	}}, nil
}

// DecideHideEntry returns the event that hides an entry: none when the
// user's stream already hid it. That the entry exists is the caller's to
// know (the history is a view of many streams).
func DecideHideEntry(p *Profile, cmd HideEntry) ([]Event, error) {
	if p.Hidden[cmd.Entry] {
		return nil, nil
	}
	return []Event{{Type: TypeEntryHidden, User: cmd.User, Hidden: cmd.Entry, Meta: cmd.Meta}}, nil
}

// propagationFor records a propagation only for the fields rooms show.
func propagationFor(key string, p Propagation) Propagation {
	if key != KeyDisplayName && key != KeyAvatarURL {
		return ""
	}
	if p == "" {
		return PropagateUnchanged
	}
	return p
}
