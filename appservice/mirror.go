package appservice

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/profilestore/profilestore/domain"
	"github.com/sirupsen/logrus"
)

// Rooms is what mirror mode needs of the room side; *domain.RoomService is one.
type Rooms interface {
	ChangeMembership(ctx context.Context, cmd domain.ChangeMembership) (domain.WriteResult, error)
	SetMemberProfile(ctx context.Context, cmd domain.SetMemberProfile) (domain.WriteResult, error)
	ClearMemberProfile(ctx context.Context, cmd domain.ClearMemberProfile) (domain.WriteResult, error)
	SetHistoryVisibility(ctx context.Context, cmd domain.SetHistoryVisibility) (domain.WriteResult, error)
	SetPowerLevels(ctx context.Context, cmd domain.SetPowerLevels) (domain.WriteResult, error)
}

// MirrorOptions configure a Mirror.
type MirrorOptions struct {
	// Registration is profilestore's own; its users namespace says which
	// users are the homeserver's own (their global profiles are mirrored).
	Registration *Registration
	Profiles     *domain.ProfileService
	Rooms        Rooms
	// Homeserver answers "what is this user's global name now?"; nil means
	// events alone decide (see docs/APPSERVICE.md).
	Homeserver *HomeserverProfiles
	Logger     logrus.FieldLogger
}

// Mirror turns homeserver events into profilestore events. Every write
// carries an idempotency key derived from the Matrix event id and the step,
// so an event applied twice (a retried transaction, a restart between
// applying and recording) appends nothing the second time.
type Mirror struct {
	opts    MirrorOptions
	log     logrus.FieldLogger
	metrics *ingestMetrics
	source  string

	mu     sync.Mutex
	seen   map[string]struct{} // recent Matrix event ids
	seenQ  []string
	latest map[stateKey]int64 // newest origin_server_ts applied per state
}

type stateKey struct{ room, typ, key string }

// NewMirror returns a Mirror; an Ingester feeds it.
func NewMirror(opts MirrorOptions) *Mirror {
	if opts.Logger == nil {
		opts.Logger = logrus.StandardLogger()
	}
	return &Mirror{opts: opts, log: opts.Logger, metrics: newIngestMetrics(), source: "mirror:" + opts.Registration.ID,
		seen: map[string]struct{}{}, latest: map[stateKey]int64{}}
}

// clientEvent is an event in the client format homeservers send appservices.
type clientEvent struct {
	Type           string          `json:"type"`
	EventID        string          `json:"event_id"`
	RoomID         string          `json:"room_id"`
	Sender         string          `json:"sender"`
	StateKey       *string         `json:"state_key"`
	OriginServerTS int64           `json:"origin_server_ts"`
	Content        json.RawMessage `json:"content"`
	Unsigned       struct {
		// PrevContent is the state this event replaced (Synapse sends it;
		// Dendrite v0.15.2 does not).
		PrevContent json.RawMessage `json:"prev_content"`
	} `json:"unsigned"`
}

// errMalformed marks input the mirror skips (logged and counted), as
// opposed to store failures, which fail the transaction for a retry.
type errMalformed struct{ reason string }

func (e errMalformed) Error() string { return e.reason }

func malformed(format string, args ...any) error { return errMalformed{fmt.Sprintf(format, args...)} }

// Apply applies one raw event. It returns an error only when the store
// failed; input it cannot use is logged, counted and skipped.
func (m *Mirror) Apply(ctx context.Context, raw json.RawMessage) error {
	var ev clientEvent
	if err := json.Unmarshal(raw, &ev); err != nil || ev.Type == "" || ev.EventID == "" {
		m.count("unknown", "malformed")
		m.log.WithField("reason", "not an event").Warn("appservice: skipping a malformed event")
		return nil
	}
	// A remote server's clock, or a forged event, can put origin_server_ts
	// anywhere. Far ahead, it would make every later event of the same
	// state (a ban, say) look stale, and past year 9999 it cannot be stored:
	// such an event counts as happening when it arrived.
	if now := time.Now(); ev.OriginServerTS > now.Add(maxClockSkew).UnixMilli() {
		ev.OriginServerTS = now.UnixMilli()
	}
	typ := ev.Type
	switch typ {
	case "m.room.member", "m.room.history_visibility", "m.room.power_levels":
	default:
		m.count("other", "ignored")
		return nil
	}
	if ev.StateKey == nil {
		m.count(typ, "malformed")
		m.log.WithFields(logrus.Fields{"event_id": ev.EventID, "type": typ}).Warn("appservice: skipping a state event without state_key")
		return nil
	}
	if m.isSeen(ev.EventID) {
		m.count(typ, "duplicate")
		return nil
	}
	sk := stateKey{ev.RoomID, typ, *ev.StateKey}
	if m.isStale(sk, ev.OriginServerTS) {
		// A newer event of the same state was applied already: applying
		// this one would move the room back in time.
		m.count(typ, "stale")
		m.markSeen(ev.EventID)
		return nil
	}
	var err error
	var changed bool
	switch typ {
	case "m.room.member":
		changed, err = m.member(ctx, &ev)
	case "m.room.history_visibility":
		changed, err = m.historyVisibility(ctx, &ev)
	case "m.room.power_levels":
		changed, err = m.powerLevels(ctx, &ev)
	}
	if err != nil {
		if _, bad := err.(errMalformed); bad || domain.ErrorCode(err) != "" {
			m.count(typ, "malformed")
			m.log.WithFields(logrus.Fields{"event_id": ev.EventID, "type": typ, "room_id": ev.RoomID}).WithError(err).Warn("appservice: skipping an event it cannot apply")
			m.markSeen(ev.EventID)
			return nil
		}
		return fmt.Errorf("event %s: %w", ev.EventID, err)
	}
	m.markApplied(sk, ev.OriginServerTS, ev.EventID)
	if changed {
		m.count(typ, "applied")
	} else {
		m.count(typ, "unchanged")
	}
	return nil
}

func (m *Mirror) count(typ, result string) {
	if m.metrics != nil {
		m.metrics.events.WithLabelValues(typ, result).Inc()
	}
}

const seenCap = defaultSeenEventsCap

// maxClockSkew is how far ahead of profilestore's clock an event's
// origin_server_ts is believed.
const maxClockSkew = time.Hour

func (m *Mirror) isSeen(id string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	_, ok := m.seen[id]
	return ok
}

func (m *Mirror) markSeen(id string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.markSeenLocked(id)
}

func (m *Mirror) markSeenLocked(id string) {
	if _, ok := m.seen[id]; ok {
		return
	}
	m.seen[id] = struct{}{}
	m.seenQ = append(m.seenQ, id)
	if len(m.seenQ) > seenCap {
		delete(m.seen, m.seenQ[0])
		m.seenQ = m.seenQ[1:]
	}
}

func (m *Mirror) isStale(k stateKey, ts int64) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	last, ok := m.latest[k]
	return ok && ts < last
}

func (m *Mirror) markApplied(k stateKey, ts int64, id string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if ts > m.latest[k] {
		if len(m.latest) > seenCap {
			m.latest = map[stateKey]int64{}
		}
		m.latest[k] = ts
	}
	m.markSeenLocked(id)
}

// meta builds the metadata of a write caused by ev; step tells the writes
// of one event apart.
func (m *Mirror) meta(ev *clientEvent, step string) domain.Metadata {
	at := time.Now().UTC()
	if ev.OriginServerTS > 0 {
		at = time.UnixMilli(ev.OriginServerTS).UTC()
	}
	actor, _ := domain.ParseHistoricalUserID(ev.Sender)
	return domain.Metadata{OccurredAt: at, Actor: actor, Source: m.source,
		IdempotencyKey: "mx:" + m.opts.Registration.ID + ":" + ev.EventID + ":" + step}
}

// memberContent is the part of m.room.member content profilestore keeps.
type memberContent struct {
	Membership  string          `json:"membership"`
	DisplayName json.RawMessage `json:"displayname"`
	AvatarURL   json.RawMessage `json:"avatar_url"`
}

// optionalString reads a string field that may be absent or null ("").
func optionalString(raw json.RawMessage, name string) (string, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return "", nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", malformed("%s is not a string", name)
	}
	return strings.TrimSpace(s), nil
}

// member applies m.room.member. The mirror rule, for the homeserver's own
// users (docs/APPSERVICE.md):
//
//  1. For each of displayname and avatar_url the event carries a value V.
//     If V differs from the stored global value G, ask the homeserver for
//     its global value H (cached). H == V means the user changed the global
//     profile: record ONE global change (propagate unchanged), keyed by
//     this event's id. The same change arriving in the other N-1 rooms then
//     finds V == G and is recognised as its propagation: no global write.
//  2. Record the membership (join with the names it carries). A join of a
//     user already joined is a profile change inside the room: if V equals
//     the (new) global value the room shows the global one again (any
//     override there is cleared); otherwise V is that room's own value and
//     becomes a per-room override.
//
// Users of other servers have no global profile here: their names are
// recorded with their membership and, on later changes, as per-room values.
func (m *Mirror) member(ctx context.Context, ev *clientEvent) (bool, error) {
	room, err := domain.ParseRoomID(ev.RoomID)
	if err != nil {
		return false, err
	}
	user, err := domain.ParseHistoricalUserID(*ev.StateKey)
	if err != nil {
		return false, err
	}
	sender, err := domain.ParseHistoricalUserID(ev.Sender)
	if err != nil {
		return false, err
	}
	var c memberContent
	if err := json.Unmarshal(ev.Content, &c); err != nil {
		return false, malformed("content is not an m.room.member object")
	}
	dn, err := optionalString(c.DisplayName, "displayname")
	if err != nil {
		return false, err
	}
	av, err := optionalString(c.AvatarURL, "avatar_url")
	if err != nil {
		return false, err
	}
	if av != "" && domain.ValidateMXC(av) != nil {
		// A bad avatar must not cost the membership: keep the rest.
		m.log.WithField("event_id", ev.EventID).Warn("appservice: ignoring an avatar_url that is not an mxc:// URI")
		m.count("m.room.member", "malformed")
		av = ""
	}
	values := map[string]string{domain.KeyDisplayName: dn, domain.KeyAvatarURL: av}
	prev := readPrevMember(ev.Unsigned.PrevContent)
	local := m.opts.Registration.MatchesUser(user)
	changed := false

	// The homeserver already applied the change: profilestore records it
	// even where its own state says Matrix forbids it (that state is then
	// the one out of date), and interprets it by Matrix's m.room.member
	// table (a leave by someone else is a kick, or an unban of a banned
	// member; the room service tells them apart by the member's state).
	change := domain.ChangeMembership{Room: room, User: user, Actor: domain.ServerActor, Membership: c.Membership, FromHomeserver: true}
	switch c.Membership {
	case domain.MembershipJoin:
		if local {
			for _, f := range []string{domain.KeyDisplayName, domain.KeyAvatarURL} {
				if prev.unchanged(f, values[f]) {
					continue // not this event's change: nothing to ask the homeserver
				}
				ch, err := m.reconcileGlobal(ctx, ev, user, f, values[f])
				if err != nil {
					return false, err
				}
				changed = changed || ch
			}
		}
		// A join of a member already joined is a profile change inside the
		// room: the room service compares the names with the (new) global
		// ones, so a value equal to it shows the global one again (any
		// override is cleared) and another is the room's own value.
		change.DisplayName, change.AvatarURL = &dn, &av
	case domain.MembershipInvite:
		change.DisplayName, change.AvatarURL = &dn, &av
	case domain.MembershipLeave:
		if sender != user {
			change.Membership = domain.MembershipKick
		}
	case domain.MembershipBan, domain.MembershipKnock:
	default:
		return false, malformed("unknown membership %q", c.Membership)
	}
	change.Meta = m.meta(ev, change.Membership)
	res, err := m.opts.Rooms.ChangeMembership(ctx, change)
	return changed || res.Changed, err
}

// prevMember is what unsigned.prev_content says the member's state was
// before the event; the zero value means "not known".
type prevMember struct {
	known  bool
	joined bool
	values map[string]string
}

// readPrevMember reads unsigned.prev_content. Content it cannot read is
// "not known": the event is then handled as if the homeserver had sent none.
func readPrevMember(raw json.RawMessage) prevMember {
	if len(raw) == 0 || string(raw) == "null" {
		return prevMember{}
	}
	var c memberContent
	if json.Unmarshal(raw, &c) != nil {
		return prevMember{}
	}
	dn, err1 := optionalString(c.DisplayName, "displayname")
	av, err2 := optionalString(c.AvatarURL, "avatar_url")
	if err1 != nil || err2 != nil {
		return prevMember{}
	}
	return prevMember{known: true, joined: c.Membership == domain.MembershipJoin,
		values: map[string]string{domain.KeyDisplayName: dn, domain.KeyAvatarURL: av}}
}

// unchanged reports whether the homeserver says the member was joined with
// the same value of field before this event: a join that changed only
// something else (the avatar, the membership's reason) is no rename and no
// per-room name, whatever profilestore's stored global value says, so the
// homeserver's profile API need not be asked.
func (p prevMember) unchanged(field, value string) bool {
	return p.known && p.joined && p.values[field] == value
}

// reconcileGlobal records a global change of field when the homeserver
// confirms that value is the user's global value now.
func (m *Mirror) reconcileGlobal(ctx context.Context, ev *clientEvent, user domain.UserID, field, value string) (bool, error) {
	p, _, err := m.opts.Profiles.Profile(ctx, user)
	if err != nil {
		return false, err
	}
	stored := p.DisplayName()
	if field == domain.KeyAvatarURL {
		stored = p.AvatarURL()
	}
	if value == stored {
		return false, nil // the propagation of a change already recorded
	}
	// Without a homeserver answer, events alone decide: a value differing
	// from the stored one is taken as a global change, the common case
	// (renames are far more frequent than per-room names).
	confirmed := true
	if m.opts.Homeserver != nil {
		if h, ok := m.opts.Homeserver.Field(ctx, user, field, value); ok {
			confirmed = strings.TrimSpace(h) == value
		}
	}
	if !confirmed {
		return false, nil
	}
	meta := m.meta(ev, "global."+field)
	var res domain.WriteResult
	if value == "" {
		res, err = m.opts.Profiles.DeleteField(ctx, domain.DeleteField{User: user, Actor: domain.ServerActor, Key: field, PropagateTo: domain.PropagateUnchanged, Meta: meta}, nil)
	} else {
		v, _ := json.Marshal(value)
		res, err = m.opts.Profiles.SetField(ctx, domain.SetField{User: user, Actor: domain.ServerActor, Key: field, Value: v, PropagateTo: domain.PropagateUnchanged, Meta: meta}, nil)
	}
	return res.Changed, err
}

func (m *Mirror) historyVisibility(ctx context.Context, ev *clientEvent) (bool, error) {
	room, err := domain.ParseRoomID(ev.RoomID)
	if err != nil {
		return false, err
	}
	var c struct {
		HistoryVisibility string `json:"history_visibility"`
	}
	if err := json.Unmarshal(ev.Content, &c); err != nil {
		return false, malformed("content is not an m.room.history_visibility object")
	}
	res, err := m.opts.Rooms.SetHistoryVisibility(ctx, domain.SetHistoryVisibility{Room: room, Actor: domain.ServerActor, Visibility: c.HistoryVisibility, Meta: m.meta(ev, "history_visibility")})
	return res.Changed, err
}

// powerLevel reads a power level: an integer, or (in old room versions) a
// string holding one.
func powerLevel(raw json.RawMessage, def int) (int, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return def, nil
	}
	var n json.Number
	if err := json.Unmarshal(raw, &n); err != nil {
		var s string
		if json.Unmarshal(raw, &s) != nil {
			return 0, malformed("power level %s is not a number", raw)
		}
		n = json.Number(strings.TrimSpace(s))
	}
	v, err := strconv.ParseInt(n.String(), 10, 64)
	if err != nil || v > 1<<53-1 || v < -(1<<53-1) {
		return 0, malformed("power level %s is not an integer in range", raw)
	}
	return int(v), nil
}

func (m *Mirror) powerLevels(ctx context.Context, ev *clientEvent) (bool, error) {
	room, err := domain.ParseRoomID(ev.RoomID)
	if err != nil {
		return false, err
	}
	var c struct {
		Users        map[string]json.RawMessage `json:"users"`
		UsersDefault json.RawMessage            `json:"users_default"`
		Kick         json.RawMessage            `json:"kick"`
	}
	if err := json.Unmarshal(ev.Content, &c); err != nil {
		return false, malformed("content is not an m.room.power_levels object")
	}
	pl := domain.PowerLevels{Users: map[domain.UserID]int{}}
	// Defaults from the Matrix spec for keys a room leaves out.
	if pl.UsersDefault, err = powerLevel(c.UsersDefault, 0); err != nil {
		return false, err
	}
	if pl.Kick, err = powerLevel(c.Kick, 50); err != nil {
		return false, err
	}
	for u, raw := range c.Users {
		id, err := domain.ParseHistoricalUserID(u)
		if err != nil {
			return false, err
		}
		if pl.Users[id], err = powerLevel(raw, 0); err != nil {
			return false, err
		}
	}
	res, err := m.opts.Rooms.SetPowerLevels(ctx, domain.SetPowerLevels{Room: room, Actor: domain.ServerActor, PowerLevels: pl, Meta: m.meta(ev, "power_levels")})
	return res.Changed, err
}
