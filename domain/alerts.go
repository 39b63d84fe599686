package domain

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"time"

	"github.com/profilestore/profilestore/eventstore"
)

// Alert rules: what makes profilestore tell moderators about a name.
const (
	// AlertLookalike: a member took a name confusable with another member's.
	AlertLookalike = "lookalike"
	// AlertRenameBurst: one user renamed N times within T.
	AlertRenameBurst = "rename_burst"
	// AlertProtectedName: a user took a name on a protected list.
	AlertProtectedName = "protected_name"
)

// AlertStream is the stream alerts are recorded in, in the order they were
// raised; it is also the outbox deliveries read (docs/ALERTS.md).
const AlertStream = "alert-server"

// TypeAlertRaised is the event type of a recorded alert.
const TypeAlertRaised = "alert.raised"

// LookalikeRule raises an alert when a member joins or renames to a name
// confusable with another member of the room.
type LookalikeRule struct {
	Enabled bool `yaml:"enabled" json:"enabled"`
	// ModeratorsOnly limits it to names confusable with a moderator's or
	// admin's (impersonation), the case that matters most.
	ModeratorsOnly bool `yaml:"moderators_only" json:"moderators_only"`
}

// RenameBurstRule raises an alert when one user renames Count times within
// Window (global and per-room display-name changes all count).
type RenameBurstRule struct {
	Enabled bool          `yaml:"enabled" json:"enabled"`
	Count   int           `yaml:"count" json:"count"`
	Window  time.Duration `yaml:"window" json:"window"`
}

// ProtectedName is a name nobody but its holders may take (compared by
// confusable skeleton, so "Аdmin" with a Cyrillic А is "Admin").
type ProtectedName struct {
	Name string `yaml:"name" json:"name"`
	// Holders may use it (the real admin, the support account).
	Holders []UserID `yaml:"holders" json:"holders,omitempty"`
}

// AlertRules are the rules in force in one room (or server-wide).
type AlertRules struct {
	Lookalike      LookalikeRule   `yaml:"lookalike"`
	RenameBurst    RenameBurstRule `yaml:"rename_burst"`
	ProtectedNames []ProtectedName `yaml:"protected_names"`
}

// RoomAlertRules change the server's rules for one room: a rule given here
// replaces the server's; protected names add to the server's list.
type RoomAlertRules struct {
	Lookalike *LookalikeRule `yaml:"lookalike"`
	// ProtectedNames are added to the server's protected names in this room.
	ProtectedNames []ProtectedName `yaml:"protected_names"`
}

// AlertConfig is the server's rules and the rooms' changes to them.
type AlertConfig struct {
	AlertRules `yaml:",inline"`
	Rooms      map[RoomID]RoomAlertRules `yaml:"rooms"`
}

// DefaultAlertRules are the rules when the configuration names none:
// look-alikes of anyone, five renames in ten minutes, no protected names.
var DefaultAlertRules = AlertRules{
	Lookalike:   LookalikeRule{Enabled: true},
	RenameBurst: RenameBurstRule{Enabled: true, Count: 5, Window: 10 * time.Minute},
}

// Validate says what to fix in a configuration that cannot work.
func (c AlertConfig) Validate() error {
	if b := c.RenameBurst; b.Enabled && (b.Count < 2 || b.Window <= 0) {
		return fmt.Errorf("alerts.rename_burst: count must be at least 2 and window positive (got %d in %s)", b.Count, b.Window)
	}
	for room, r := range c.Rooms {
		if _, err := ParseRoomID(string(room)); err != nil {
			return fmt.Errorf("alerts.rooms: %q is not a room id", room)
		}
		for _, p := range r.ProtectedNames {
			if NameSkeleton(p.Name) == "" {
				return fmt.Errorf("alerts.rooms[%s].protected_names: an empty name protects nothing", room)
			}
		}
	}
	for _, p := range c.ProtectedNames {
		if NameSkeleton(p.Name) == "" {
			return fmt.Errorf("alerts.protected_names: an empty name protects nothing")
		}
	}
	return nil
}

// For returns the rules in force in room ("" for server-wide events).
func (c AlertConfig) For(room RoomID) AlertRules {
	rules := c.AlertRules
	r, ok := c.Rooms[room]
	if room == "" || !ok {
		return rules
	}
	if r.Lookalike != nil {
		rules.Lookalike = *r.Lookalike
	}
	rules.ProtectedNames = append(slices.Clone(rules.ProtectedNames), r.ProtectedNames...)
	return rules
}

// NameTaken is a user taking a display name: globally (Room "") or in a
// room (a join or invite with a name, a per-room rename, a global rename
// that reached the room).
type NameTaken struct {
	User     UserID
	Room     RoomID
	Name     string
	Position eventstore.Position
	At       time.Time
}

// Alert is what a rule raised, with what triggered it.
type Alert struct {
	Rule string
	// Room is where the name was taken; "" for a global rename.
	Room RoomID
	User UserID
	// Name is the name taken ("" once the user's values are erased).
	Name string
	// Trigger is the position of the event that raised the alert.
	Trigger eventstore.Position
	At      time.Time
	// Others are the members whose names Name is confusable with
	// (lookalike), moderators first.
	Others []NamedMember
	// Moderator is set when one of Others moderates the room.
	Moderator bool
	// Protected is the protected name taken (protected_name).
	Protected string
	// Renames within Window (rename_burst).
	Renames int
	Window  time.Duration
}

// Key identifies an alert: one rule, one trigger, one room, one user. An
// alert is recorded once per key, however often its trigger is evaluated.
func (a Alert) Key() string {
	return "alert\x00" + a.Rule + "\x00" + string(a.Room) + "\x00" + string(a.User) + "\x00" + a.Trigger.String()
}

// Differences compares Name (A) with each of Others' names (B).
func (a Alert) Differences() []NameDifference {
	out := make([]NameDifference, len(a.Others))
	for i, o := range a.Others {
		out[i] = CompareNames(a.Name, o.DisplayName)
	}
	return out
}

// CheckLookalike is the look-alike rule: the alert when the name taken in
// a room is confusable with the names of other members there (members, as
// of the trigger, with moderator status), or nil.
func CheckLookalike(rule LookalikeRule, t NameTaken, members []NamedMember) *Alert {
	if !rule.Enabled || t.Room == "" {
		return nil
	}
	skel := NameSkeleton(t.Name)
	if skel == "" {
		return nil
	}
	a := &Alert{Rule: AlertLookalike, Room: t.Room, User: t.User, Name: t.Name, Trigger: t.Position, At: t.At}
	for _, m := range members {
		if m.User == t.User || NameSkeleton(m.DisplayName) != skel {
			continue
		}
		if rule.ModeratorsOnly && !m.Moderator {
			continue
		}
		a.Others = append(a.Others, m)
		a.Moderator = a.Moderator || m.Moderator
	}
	if len(a.Others) == 0 {
		return nil
	}
	sort.Slice(a.Others, func(i, j int) bool {
		if a.Others[i].Moderator != a.Others[j].Moderator {
			return a.Others[i].Moderator
		}
		return a.Others[i].User < a.Others[j].User
	})
	return a
}

// CheckProtectedName is the protected-names rule: the alert when the name
// taken is confusable with a protected name its user does not hold, or nil.
func CheckProtectedName(names []ProtectedName, t NameTaken) *Alert {
	skel := NameSkeleton(t.Name)
	if skel == "" {
		return nil
	}
	for _, p := range names {
		if NameSkeleton(p.Name) == skel && !slices.Contains(p.Holders, t.User) {
			return &Alert{Rule: AlertProtectedName, Room: t.Room, User: t.User, Name: t.Name, Trigger: t.Position, At: t.At, Protected: p.Name}
		}
	}
	return nil
}

// CheckRenameBurst is the burst rule: given the times of the user's
// renames up to and including this one (oldest first), the alert when
// this rename is the one that brings Count renames within Window, or nil.
// Later renames of the same burst raise nothing more, so a spree is one
// alert, not one per rename.
func CheckRenameBurst(rule RenameBurstRule, t NameTaken, renames []time.Time) *Alert {
	if !rule.Enabled || rule.Count < 2 || len(renames) < rule.Count {
		return nil
	}
	within := func(end int) int { // renames in the window ending at renames[end]
		n := 0
		for i := end; i >= 0 && renames[end].Sub(renames[i]) < rule.Window; i-- {
			n++
		}
		return n
	}
	last := len(renames) - 1
	if n := within(last); n < rule.Count || (last > 0 && within(last-1) >= rule.Count) {
		return nil
	}
	return &Alert{Rule: AlertRenameBurst, Room: t.Room, User: t.User, Name: t.Name, Trigger: t.Position, At: t.At,
		Renames: rule.Count, Window: rule.Window}
}

// alertPayload is an alert as stored. Names are sealed with their user's
// key, so erasing a user leaves no readable name in the alert log either.
type alertPayload struct {
	V         int             `json:"v"`
	Rule      string          `json:"rule"`
	Room      RoomID          `json:"room_id,omitempty"`
	User      UserID          `json:"user_id"`
	Name      Sealed          `json:"displayname,omitempty"`
	Trigger   string          `json:"trigger"`
	At        int64           `json:"at_ms"`
	Others    []alertOtherRef `json:"others,omitempty"`
	Moderator bool            `json:"moderator,omitempty"`
	Protected string          `json:"protected,omitempty"`
	Renames   int             `json:"renames,omitempty"`
	WindowMS  int64           `json:"window_ms,omitempty"`
}

type alertOtherRef struct {
	User      UserID `json:"user_id"`
	Name      Sealed `json:"displayname,omitempty"`
	Moderator bool   `json:"moderator,omitempty"`
}

// EncodeAlert seals an alert's names and serialises it; the event id
// derives from the alert's key, so recording it twice appends it once.
func EncodeAlert(ctx context.Context, s *Sealer, a Alert) (eventstore.EventData, error) {
	p := alertPayload{V: SchemaVersion, Rule: a.Rule, Room: a.Room, User: a.User, Trigger: a.Trigger.String(), At: a.At.UnixMilli(),
		Moderator: a.Moderator, Protected: a.Protected, Renames: a.Renames, WindowMS: a.Window.Milliseconds()}
	var err error
	if p.Name, err = sealString(ctx, s, a.User, &a.Name); err != nil {
		return eventstore.EventData{}, err
	}
	for _, o := range a.Others {
		ref := alertOtherRef{User: o.User, Moderator: o.Moderator}
		if ref.Name, err = sealString(ctx, s, o.User, &o.DisplayName); err != nil {
			return eventstore.EventData{}, err
		}
		p.Others = append(p.Others, ref)
	}
	data, err := json.Marshal(p)
	if err != nil {
		return eventstore.EventData{}, err
	}
	meta, _ := json.Marshal(Metadata{OccurredAt: a.At, Source: "alerts"})
	return eventstore.EventData{ID: EventID(a.Key(), 0), Type: TypeAlertRaised, Data: data, Metadata: meta}, nil
}

// DecodeAlert reads a recorded alert; a name whose key was destroyed reads
// as "" and erased is set.
func DecodeAlert(ctx context.Context, s *Sealer, rec eventstore.RecordedEvent) (a Alert, erased bool, err error) {
	if rec.Type != TypeAlertRaised {
		return Alert{}, false, fmt.Errorf("decode alert: event type %q", rec.Type)
	}
	var p alertPayload
	if err := json.Unmarshal(rec.Data, &p); err != nil {
		return Alert{}, false, fmt.Errorf("decode alert: %w", err)
	}
	trigger, err := eventstore.ParsePosition(p.Trigger)
	if err != nil {
		return Alert{}, false, fmt.Errorf("decode alert trigger: %w", err)
	}
	a = Alert{Rule: p.Rule, Room: p.Room, User: p.User, Trigger: trigger, At: time.UnixMilli(p.At).UTC(),
		Moderator: p.Moderator, Protected: p.Protected, Renames: p.Renames, Window: time.Duration(p.WindowMS) * time.Millisecond}
	openName := func(u UserID, v Sealed) (string, error) {
		if v == "" {
			return "", nil
		}
		raw, err := s.Open(ctx, u, v)
		if errors.Is(err, ErrErased) {
			erased = true
			return "", nil
		}
		if err != nil {
			return "", err
		}
		var name string
		err = json.Unmarshal(raw, &name)
		return name, err
	}
	if a.Name, err = openName(p.User, p.Name); err != nil {
		return Alert{}, false, err
	}
	for _, o := range p.Others {
		name, err := openName(o.User, o.Name)
		if err != nil {
			return Alert{}, false, err
		}
		a.Others = append(a.Others, NamedMember{User: o.User, DisplayName: name, Moderator: o.Moderator})
	}
	return a, erased, nil
}
