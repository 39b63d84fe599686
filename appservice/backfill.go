package appservice

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/profilestore/profilestore/domain"
	"github.com/sirupsen/logrus"
)

// BackfillRooms is what a backfill needs of the room side; *domain.RoomService is one.
type BackfillRooms interface {
	RecordPast(ctx context.Context, cmd domain.PastRoomEvent) (domain.WriteResult, error)
	LiveSince(ctx context.Context, room domain.RoomID) (int64, error)
}

// BackfillProfiles is what a backfill needs of the profile side; *domain.ProfileService is one.
type BackfillProfiles interface {
	RecordPast(ctx context.Context, cmd domain.PastField) (domain.WriteResult, error)
}

// BackfillOptions configure a Backfill.
type BackfillOptions struct {
	// Registration is profilestore's own: its id names the writes
	// (source backfill:<id>, idempotency keys as mirror mode's) and its
	// users namespace says whose names are global profiles.
	Registration *Registration
	Profiles     BackfillProfiles
	Rooms        BackfillRooms
	Source       HistorySource
	Checkpoint   *BackfillCheckpoint
	// PageSize is the events asked for per page (default 100, at most 1000).
	PageSize int
	// RenameWindow is how far apart the member events of one global rename
	// may lie in different rooms (default 30 minutes): homeservers write
	// them one room after another.
	RenameWindow time.Duration
	// Homeserver, if set, answers what a user's global profile is now: a
	// user's last in-room change that no other room shows (a user in one
	// room) is taken as global when the homeserver's profile has it now.
	Homeserver *HomeserverProfiles
	// Progress, if set, is told after every page.
	Progress func(BackfillProgress)
	Metrics  *BackfillMetrics
	Logger   logrus.FieldLogger
}

// BackfillProgress is where a running backfill is.
type BackfillProgress struct {
	// Phase is survey (reading rooms for name changes) or write.
	Phase string
	// Rooms is the number of rooms; Done those finished in this phase.
	Rooms, Done int
	Room        domain.RoomID
	// Events read and recorded in this phase so far.
	Events, Recorded int64
}

// BackfillReport is what a backfill did.
type BackfillReport struct {
	Source string `json:"source"`
	Rooms  int    `json:"rooms"`
	Done   int    `json:"done"`
	// Events read and changes recorded by this run's recording phase.
	Events   int64 `json:"events"`
	Recorded int64 `json:"recorded"`
	// Unreadable rooms, and rooms whose history is incomplete, with why.
	Unreadable []RoomProblem `json:"unreadable,omitempty"`
	Incomplete []RoomProblem `json:"incomplete,omitempty"`
	// Users whose rooms could not be listed.
	Users []UserProblem `json:"users,omitempty"`
}

// RoomProblem is a room a backfill could not read (whole or in part).
type RoomProblem struct {
	Room   domain.RoomID `json:"room_id"`
	Reason string        `json:"reason"`
}

// UserProblem is a user whose rooms a backfill could not list.
type UserProblem struct {
	User   domain.UserID `json:"user_id"`
	Reason string        `json:"reason"`
}

// Backfill imports a homeserver's past room history (docs/APPSERVICE.md,
// "Backfill"). It reads every room twice: a survey that notes where local
// users' names changed inside rooms, then the recording, which tells a
// global rename (the same change in several rooms, within RenameWindow)
// from a per-room name by the survey's notes, and records one global
// change plus the per-room differences, as mirror mode does live.
type Backfill struct {
	opts BackfillOptions
	log  logrus.FieldLogger
	// events and recorded count this run's recording phase.
	events, recorded int64
}

// NewBackfill returns a Backfill.
func NewBackfill(opts BackfillOptions) *Backfill {
	if opts.PageSize <= 0 {
		opts.PageSize = 100
	}
	opts.PageSize = min(opts.PageSize, 1000)
	if opts.RenameWindow <= 0 {
		opts.RenameWindow = 30 * time.Minute
	}
	if opts.Logger == nil {
		opts.Logger = logrus.StandardLogger()
	}
	return &Backfill{opts: opts, log: opts.Logger}
}

// Run lists the rooms, then surveys and records each one that is not done,
// resuming every room where the checkpoint says. Rooms it cannot read are
// reported, not fatal; a store failure or ctx ends the run (the checkpoint
// keeps its progress).
func (b *Backfill) Run(ctx context.Context) (BackfillReport, error) {
	cp := b.opts.Checkpoint
	b.opts.Metrics.running(true)
	defer b.opts.Metrics.running(false)
	err := b.opts.Source.Rooms(ctx, func(room domain.RoomID, reader domain.UserID) error {
		return cp.addRoom(room, reader)
	}, func(u domain.UserID, reason string) {
		if err := cp.noteUser(u, reason); err != nil {
			b.log.WithError(err).Warn("backfill: cannot note a user")
		}
		if reason != "" {
			b.log.WithFields(logrus.Fields{"user_id": u, "reason": reason}).Warn("backfill: cannot list a user's rooms")
		}
	})
	if err != nil {
		return BackfillReport{}, fmt.Errorf("listing rooms: %w", err)
	}
	for _, phase := range []string{PhaseSurvey, PhaseWrite} {
		if err := b.phase(ctx, phase); err != nil {
			r, _ := b.report()
			return r, err
		}
	}
	return b.report()
}

// phase runs every room that is in it.
func (b *Backfill) phase(ctx context.Context, phase string) error {
	cp := b.opts.Checkpoint
	total, done := 0, 0
	if err := cp.Rooms(func(_ domain.RoomID, p RoomProgress) error {
		total++
		if phaseRank(p.Phase) > phaseRank(phase) {
			done++
		}
		return nil
	}); err != nil {
		return err
	}
	b.opts.Metrics.phase(phase, total, done)
	var events, recorded int64
	return cp.Rooms(func(room domain.RoomID, p RoomProgress) error {
		if p.Phase != phase {
			return nil
		}
		if err := b.room(ctx, room, p, phase, func(n, r int64) {
			events, recorded = events+n, recorded+r
			b.progress(BackfillProgress{Phase: phase, Rooms: total, Done: done, Room: room, Events: events, Recorded: recorded})
		}); err != nil {
			return err
		}
		done++
		b.opts.Metrics.phase(phase, total, done)
		b.progress(BackfillProgress{Phase: phase, Rooms: total, Done: done, Room: room, Events: events, Recorded: recorded})
		return nil
	})
}

func phaseRank(p string) int {
	switch p {
	case PhaseSurvey:
		return 0
	case PhaseWrite:
		return 1
	}
	return 2
}

func (b *Backfill) progress(p BackfillProgress) {
	if b.opts.Progress != nil {
		b.opts.Progress(p)
	}
}

// room pages one room through a phase. A room the homeserver will not let
// it read is marked failed with the reason; other failures end the run.
func (b *Backfill) room(ctx context.Context, room domain.RoomID, p RoomProgress, phase string, tally func(events, recorded int64)) error {
	log := b.log.WithFields(logrus.Fields{"room_id": room, "phase": phase})
	cp := b.opts.Checkpoint
	for {
		events, next, err := b.opts.Source.Messages(ctx, room, p.Reader, p.From, b.opts.PageSize)
		var he *HomeserverError
		if errors.As(err, &he) || (err != nil && ctx.Err() == nil && !isStoreError(err)) {
			p.Phase, p.FailedIn, p.Reason = PhaseFailed, phase, readFailure(p.Reader, err)
			log.WithField("reason", p.Reason).Warn("backfill: cannot read a room")
			return cp.page(phase, room).commit(p)
		}
		if err != nil {
			return err
		}
		st := cp.page(phase, room)
		var horizon int64
		if phase == PhaseWrite {
			if horizon, err = b.opts.Rooms.LiveSince(ctx, room); err != nil {
				return err
			}
		}
		if p.From == "" && p.Events == 0 {
			switch {
			case len(events) == 0:
				p.Reason = fmt.Sprintf("no history is visible to %s", readerName(p.Reader))
			case events[0].Type != "m.room.create":
				p.Reason = fmt.Sprintf("history before %s is not visible to %s (history_visibility)", time.UnixMilli(events[0].OriginServerTS).UTC().Format(time.RFC3339), readerName(p.Reader))
			}
		}
		var read, recorded int64
		live := false
		for i := range events {
			ev := &events[i]
			order := max(ev.OriginServerTS, p.Order, 1)
			if now := time.Now(); order > now.Add(maxClockSkew).UnixMilli() {
				order = max(now.UnixMilli(), p.Order) // as mirror mode does with such a clock
			}
			if horizon != 0 && order >= horizon {
				live = true // mirror mode recorded the room from here on
				break
			}
			p.Order = order
			read++
			if ev.Type == "m.room.create" {
				p.Started = true
				continue
			}
			if phase == PhaseSurvey {
				b.survey(st, ev)
				continue
			}
			n, err := b.record(ctx, st, &p, room, ev, order)
			if err != nil {
				return err
			}
			recorded += n
		}
		p.Events, p.Recorded = p.Events+read, p.Recorded+recorded
		if phase == PhaseWrite {
			b.events, b.recorded = b.events+read, b.recorded+recorded
			b.opts.Metrics.events(read, recorded)
		}
		p.From = next
		last := next == "" || live
		if last {
			p.Live = live
			p.From, p.Events, p.Recorded = "", 0, 0
			if phase == PhaseSurvey {
				p.Phase, p.Order, p.Visibility = PhaseWrite, 0, ""
			} else {
				p.Phase = PhaseDone
			}
		}
		if err := st.commit(p); err != nil {
			return err
		}
		tally(read, recorded)
		if last {
			return cp.dropMembers(phase, room)
		}
	}
}

// isStoreError tells a failure of profilestore's own store (which ends
// the run) from one of reading the homeserver (which fails the room).
func isStoreError(err error) bool {
	var se storeError
	return errors.As(err, &se)
}

type storeError struct{ err error }

func (e storeError) Error() string { return e.err.Error() }
func (e storeError) Unwrap() error { return e.err }

func readerName(u domain.UserID) string {
	if u == "" {
		return "the admin API"
	}
	return string(u)
}

// readFailure says why a room could not be read, for the report.
func readFailure(reader domain.UserID, err error) string {
	var he *HomeserverError
	if errors.As(err, &he) {
		switch {
		case he.Status == 403:
			return fmt.Sprintf("%s may not read it: %v", readerName(reader), err)
		case he.Status == 404:
			return fmt.Sprintf("the homeserver does not know it: %v", err)
		}
	}
	return err.Error()
}

// survey notes a local user's in-room name changes.
func (b *Backfill) survey(st *pageState, ev *HistoryEvent) {
	if ev.Type != "m.room.member" || ev.StateKey == nil {
		return
	}
	user, err := domain.ParseHistoricalUserID(*ev.StateKey)
	if err != nil {
		return
	}
	c, dn, av, err := readMember(ev)
	if err != nil {
		return
	}
	m, err := st.member(user)
	if err != nil {
		return // read again in the recording phase; a note less here only makes a per-room name more likely
	}
	if c.Membership == domain.MembershipJoin && m.Membership == domain.MembershipJoin && b.opts.Registration.MatchesUser(user) {
		for f, v := range map[string]string{domain.KeyDisplayName: dn, domain.KeyAvatarURL: av} {
			if v != m.value(f) {
				st.addChange(user, f, v, ev.OriginServerTS, ev.EventID)
			}
		}
	}
	*m = pastMember{Membership: c.Membership}
	if c.Membership == domain.MembershipJoin || c.Membership == domain.MembershipInvite {
		m.DN, m.AV = dn, av
	}
}

// readMember reads m.room.member content as mirror mode does.
func readMember(ev *HistoryEvent) (memberContent, string, string, error) {
	var c memberContent
	if err := json.Unmarshal(ev.Content, &c); err != nil {
		return c, "", "", malformed("content is not an m.room.member object")
	}
	dn, err := optionalString(c.DisplayName, "displayname")
	if err != nil {
		return c, "", "", err
	}
	av, err := optionalString(c.AvatarURL, "avatar_url")
	if err != nil {
		return c, "", "", err
	}
	if av != "" && domain.ValidateMXC(av) != nil {
		av = "" // a bad avatar must not cost the membership
	}
	return c, dn, av, nil
}

// meta builds the metadata of a write caused by ev; step tells the writes
// of one event apart, and matches mirror mode's, so that an event both
// record is appended once.
func (b *Backfill) meta(ev *HistoryEvent, step string, order int64) domain.Metadata {
	at := time.UnixMilli(order).UTC()
	if ev.OriginServerTS > 0 && ev.OriginServerTS <= order {
		at = time.UnixMilli(ev.OriginServerTS).UTC()
	}
	actor, _ := domain.ParseHistoricalUserID(ev.Sender)
	return domain.Metadata{OccurredAt: at, Actor: actor, Source: "backfill:" + b.opts.Registration.ID,
		IdempotencyKey: "mx:" + b.opts.Registration.ID + ":" + ev.EventID + ":" + step, OrderTS: order}
}

// record writes what one event of the room's past made, and returns how
// many changes were appended. Input it cannot use is logged and skipped;
// an error is a store failure.
func (b *Backfill) record(ctx context.Context, st *pageState, p *RoomProgress, room domain.RoomID, ev *HistoryEvent, order int64) (int64, error) {
	log := b.log.WithFields(logrus.Fields{"event_id": ev.EventID, "room_id": room, "type": ev.Type})
	events, step, global, err := b.decide(ctx, st, p, ev, order)
	if err != nil {
		var bad errMalformed
		if errors.As(err, &bad) || domain.ErrorCode(err) != "" {
			log.WithError(err).Warn("backfill: skipping an event it cannot use")
			b.opts.Metrics.skipped()
			return 0, nil
		}
		return 0, err
	}
	n := global
	if len(events) > 0 {
		res, err := b.opts.Rooms.RecordPast(ctx, domain.PastRoomEvent{Room: room, Events: events, Actor: domain.ServerActor, Meta: b.meta(ev, step, order)})
		if domain.ErrorCode(err) != "" {
			log.WithError(err).Warn("backfill: skipping an event it cannot use")
			b.opts.Metrics.skipped()
			return n, nil
		}
		if err != nil {
			return n, err
		}
		if res.Changed {
			n++
		}
	}
	return n, nil
}

// decide turns one event into room events (and records the global changes
// it shows), following the member's state as the backfill has read it.
func (b *Backfill) decide(ctx context.Context, st *pageState, p *RoomProgress, ev *HistoryEvent, order int64) ([]domain.Event, string, int64, error) {
	if ev.StateKey == nil {
		return nil, "", 0, nil
	}
	switch ev.Type {
	case "m.room.history_visibility":
		var c struct {
			HistoryVisibility string `json:"history_visibility"`
		}
		if err := json.Unmarshal(ev.Content, &c); err != nil {
			return nil, "", 0, malformed("content is not an m.room.history_visibility object")
		}
		if c.HistoryVisibility == p.Visibility || (p.Visibility == "" && c.HistoryVisibility == domain.DefaultHistoryVisibility) {
			p.Visibility = c.HistoryVisibility
			return nil, "", 0, nil
		}
		if _, err := domain.ParseHistoryVisibility(c.HistoryVisibility); err != nil {
			return nil, "", 0, err
		}
		p.Visibility = c.HistoryVisibility
		return []domain.Event{{Type: domain.TypeHistoryVisibility, Visibility: c.HistoryVisibility}}, "history_visibility", 0, nil
	case "m.room.power_levels":
		pl, err := parsePowerLevels(ev.Content)
		if err != nil {
			return nil, "", 0, err
		}
		return []domain.Event{{Type: domain.TypePowerLevels, PowerLevels: &pl}}, "power_levels", 0, nil
	case "m.room.member":
	default:
		return nil, "", 0, nil
	}
	user, err := domain.ParseHistoricalUserID(*ev.StateKey)
	if err != nil {
		return nil, "", 0, err
	}
	sender, err := domain.ParseHistoricalUserID(ev.Sender)
	if err != nil {
		return nil, "", 0, err
	}
	c, dn, av, err := readMember(ev)
	if err != nil {
		return nil, "", 0, err
	}
	m, err := st.member(user)
	if err != nil {
		return nil, "", 0, storeError{err}
	}
	prev := *m
	values := map[string]string{domain.KeyDisplayName: dn, domain.KeyAvatarURL: av}
	local := b.opts.Registration.MatchesUser(user)
	var globals int64
	global := func(f, v string, at int64, eventID string) error {
		if eventID == "" {
			eventID = ev.EventID
		}
		meta := b.meta(&HistoryEvent{EventID: eventID, Sender: string(user), OriginServerTS: at}, "global."+f, max(at, 1))
		var val *string
		if v != "" {
			val = &v
		}
		res, err := b.opts.Profiles.RecordPast(ctx, domain.PastField{User: user, Key: f, Value: val, Actor: domain.ServerActor, Meta: meta})
		if err != nil {
			if domain.ErrorCode(err) != "" {
				return err
			}
			return storeError{err}
		}
		if res.Changed {
			globals++
		}
		st.addGlobal(user, f, v, at)
		return nil
	}
	w := b.opts.RenameWindow
	fields := []string{domain.KeyDisplayName, domain.KeyAvatarURL}
	switch c.Membership {
	case domain.MembershipJoin:
		if prev.Membership != domain.MembershipJoin {
			if local {
				for _, f := range fields {
					v := values[f]
					if v == "" {
						continue
					}
					near, before, known, err := st.globalNear(user, f, v, ev.OriginServerTS, w)
					if err != nil {
						return nil, "", 0, storeError{err}
					}
					if !near && (!known || before != v) {
						if err := global(f, v, ev.OriginServerTS, ""); err != nil {
							return nil, "", globals, err
						}
					}
				}
			}
			*m = pastMember{Membership: domain.MembershipJoin, DN: dn, AV: av}
			return []domain.Event{{Type: domain.TypeMemberJoined, User: user, DisplayName: &dn, AvatarURL: &av}}, domain.MembershipJoin, globals, nil
		}
		// A join of a member already joined: their names changed in the room.
		var out []domain.Event
		for _, f := range fields {
			v := values[f]
			if v == prev.value(f) {
				continue
			}
			isGlobal := false
			if local {
				near, before, known, err := st.globalNear(user, f, v, ev.OriginServerTS, w)
				if err != nil {
					return nil, "", 0, storeError{err}
				}
				isGlobal = near || (known && before == v)
				if !isGlobal {
					first, firstEvent, elsewhere, err := st.changeElsewhere(user, f, v, ev.OriginServerTS, w)
					if err != nil {
						return nil, "", 0, storeError{err}
					}
					if elsewhere {
						if err := global(f, v, first, firstEvent); err != nil {
							return nil, "", globals, err
						}
						isGlobal = true
					} else if b.opts.Homeserver != nil {
						// Seen in this room only: still a rename when it is
						// the user's last change and the homeserver's
						// profile says so now (a user in one room).
						last, ok, err := st.lastChange(user, f)
						if err != nil {
							return nil, "", 0, storeError{err}
						}
						if ok && ev.OriginServerTS >= last {
							if h, ok := b.opts.Homeserver.Field(ctx, user, f, v); ok && strings.TrimSpace(h) == v {
								if err := global(f, v, ev.OriginServerTS, ""); err != nil {
									return nil, "", globals, err
								}
								isGlobal = true
							}
						}
					}
				}
			}
			ovr := m.override(f)
			switch {
			case isGlobal || v == "":
				// The room shows the global value (again); "no name in this
				// room" cannot be kept apart from it (as in mirror mode).
				if *ovr {
					out = append(out, domain.Event{Type: domain.TypeMemberProfileGone, User: user, Key: f})
				}
				*ovr = false
			default:
				val, _ := json.Marshal(v)
				out = append(out, domain.Event{Type: domain.TypeMemberProfileSet, User: user, Key: f, Value: val})
				*ovr = true
			}
			if f == domain.KeyDisplayName {
				m.DN = v
			} else {
				m.AV = v
			}
		}
		return out, domain.MembershipJoin, globals, nil
	case domain.MembershipInvite:
		if prev.Membership == domain.MembershipInvite {
			return nil, "", 0, nil
		}
		*m = pastMember{Membership: domain.MembershipInvite, DN: dn, AV: av}
		return []domain.Event{{Type: domain.TypeMemberInvited, User: user, DisplayName: &dn, AvatarURL: &av, By: sender}}, domain.MembershipInvite, 0, nil
	case domain.MembershipLeave:
		*m = pastMember{Membership: domain.MembershipLeave}
		switch {
		case prev.Membership == domain.MembershipLeave:
			return nil, "", 0, nil
		case sender == user:
			return []domain.Event{{Type: domain.TypeMemberLeft, User: user, Membership: domain.MembershipLeave}}, domain.MembershipLeave, 0, nil
		case prev.Membership == domain.MembershipBan:
			// An unban (a leave set by someone else on a banned member);
			// mirror mode records it under the same step.
			return []domain.Event{{Type: domain.TypeMemberLeft, User: user, Membership: domain.MembershipLeave, By: sender}}, domain.MembershipKick, 0, nil
		default:
			return []domain.Event{{Type: domain.TypeMemberLeft, User: user, Membership: domain.MembershipKick, By: sender}}, domain.MembershipKick, 0, nil
		}
	case domain.MembershipBan:
		*m = pastMember{Membership: domain.MembershipBan}
		if prev.Membership == domain.MembershipBan {
			return nil, "", 0, nil
		}
		return []domain.Event{{Type: domain.TypeMemberLeft, User: user, Membership: domain.MembershipBan, By: sender}}, domain.MembershipBan, 0, nil
	case domain.MembershipKnock:
		return nil, "", 0, nil // a request to join changes no profile or membership here
	}
	return nil, "", 0, malformed("unknown membership %q", c.Membership)
}

// parsePowerLevels reads the part of m.room.power_levels content that
// decides who moderates (as mirror mode reads it).
func parsePowerLevels(content json.RawMessage) (domain.PowerLevels, error) {
	var c struct {
		Users        map[string]json.RawMessage `json:"users"`
		UsersDefault json.RawMessage            `json:"users_default"`
		Kick         json.RawMessage            `json:"kick"`
	}
	if err := json.Unmarshal(content, &c); err != nil {
		return domain.PowerLevels{}, malformed("content is not an m.room.power_levels object")
	}
	pl := domain.PowerLevels{Users: map[domain.UserID]int{}}
	var err error
	if pl.UsersDefault, err = powerLevel(c.UsersDefault, 0); err != nil {
		return pl, err
	}
	if pl.Kick, err = powerLevel(c.Kick, 50); err != nil {
		return pl, err
	}
	for u, raw := range c.Users {
		id, err := domain.ParseHistoricalUserID(u)
		if err != nil {
			return pl, err
		}
		if pl.Users[id], err = powerLevel(raw, 0); err != nil {
			return pl, err
		}
	}
	return pl, nil
}

// report reads the checkpoint into a report.
func (b *Backfill) report() (BackfillReport, error) {
	r := BackfillReport{Source: b.opts.Source.Name(), Events: b.events, Recorded: b.recorded}
	err := b.opts.Checkpoint.Rooms(func(room domain.RoomID, p RoomProgress) error {
		r.Rooms++
		switch p.Phase {
		case PhaseDone:
			r.Done++
		case PhaseFailed:
			r.Unreadable = append(r.Unreadable, RoomProblem{room, p.Reason})
			return nil
		}
		if p.Reason != "" {
			r.Incomplete = append(r.Incomplete, RoomProblem{room, p.Reason})
		}
		return nil
	})
	if err == nil {
		err = b.opts.Checkpoint.Users(func(u domain.UserID, reason string) {
			r.Users = append(r.Users, UserProblem{u, reason})
		})
	}
	b.opts.Metrics.report(r)
	return r, err
}

// String renders the report for the console.
func (r BackfillReport) String() string {
	var s strings.Builder
	fmt.Fprintf(&s, "backfill from the %s: %d of %d rooms done; %d events read, %d changes recorded\n", r.Source, r.Done, r.Rooms, r.Events, r.Recorded)
	for _, p := range r.Unreadable {
		fmt.Fprintf(&s, "  could not read %s: %s\n", p.Room, p.Reason)
	}
	for _, p := range r.Incomplete {
		fmt.Fprintf(&s, "  incomplete %s: %s\n", p.Room, p.Reason)
	}
	for _, u := range r.Users {
		fmt.Fprintf(&s, "  could not list the rooms of %s: %s\n", u.User, u.Reason)
	}
	return s.String()
}
