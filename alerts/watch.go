// Package alerts raises moderation alerts from the event log and delivers
// them: the rules are domain's (domain/alerts.go), the room facts come from
// the projections' read API, alerts are recorded once in the log's alert
// stream, and an outbox delivers that stream to a Matrix room (through the
// appservice's bot) and to signed webhooks (docs/ALERTS.md).
package alerts

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/profilestore/profilestore/domain"
	"github.com/profilestore/profilestore/eventstore"
	"github.com/profilestore/profilestore/projections"
	"github.com/sirupsen/logrus"
)

// Rooms is what the watcher reads of the room view (projections.Rooms).
type Rooms interface {
	Members(room domain.RoomID, at *eventstore.Position, viewer projections.Viewer) ([]projections.Member, eventstore.Position, error)
	IsModerator(room domain.RoomID, user domain.UserID) bool
	UserHistory(user domain.UserID, q projections.HistoryQuery) (projections.HistoryPage, error)
}

// Views lets the watcher wait until the views have applied an event
// (projections.Runner).
type Views interface {
	WaitFor(ctx context.Context, pos eventstore.Position) error
}

// WatcherOptions configure a Watcher.
type WatcherOptions struct {
	Store  eventstore.Store
	Sealer *domain.Sealer
	Rooms  Rooms
	Views  Views
	Config domain.AlertConfig
	// Checkpoint is the file that remembers the last event evaluated.
	Checkpoint string
	// Raised, if set, is told after each alert is recorded (the outbox
	// wakes up on it instead of waiting for its next poll).
	Raised  func()
	Metrics *Metrics
	Logger  logrus.FieldLogger
	// MaxRoomsPerRename bounds the rooms a global rename is checked in
	// (default 1000); the rest are logged as skipped.
	MaxRoomsPerRename int
}

// Watcher evaluates the alert rules on every event after its checkpoint
// and records the alerts raised in domain.AlertStream.
type Watcher struct {
	o WatcherOptions
}

// NewWatcher returns a watcher; Run starts it.
func NewWatcher(o WatcherOptions) *Watcher {
	if o.Logger == nil {
		o.Logger = logrus.StandardLogger()
	}
	if o.MaxRoomsPerRename <= 0 {
		o.MaxRoomsPerRename = 1000
	}
	return &Watcher{o: o}
}

// admin reads the views as a server admin: the rules see every member.
var admin = projections.Viewer{Admin: true}

// Run evaluates events until ctx ends. A watcher without a checkpoint
// starts at the log's head: alerts are about what happens from now on,
// not about the whole past.
func (w *Watcher) Run(ctx context.Context) error {
	cp, err := loadPosition(w.o.Checkpoint)
	if errors.Is(err, errNoCheckpoint) {
		if cp, err = w.o.Store.Head(ctx); err == nil {
			err = savePosition(w.o.Checkpoint, cp)
		}
	}
	if err != nil {
		return fmt.Errorf("alerts: watcher checkpoint: %w", err)
	}
	sub, err := w.o.Store.Subscribe(ctx, cp, eventstore.Filter{StreamPrefixes: []string{domain.ProfileCategory, domain.RoomCategory}})
	if err != nil {
		return err
	}
	defer sub.Close()
	saved := time.Now()
	for {
		rec, err := sub.Next(ctx)
		if err != nil {
			if ctx.Err() != nil {
				_ = savePosition(w.o.Checkpoint, cp)
				return nil
			}
			return err
		}
		raised, err := w.evaluate(ctx, rec)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			// The checkpoint stays before this event: it is evaluated again
			// after a restart, and alerts already recorded are not repeated.
			return fmt.Errorf("alerts: evaluate %s: %w", rec.Position, err)
		}
		cp = rec.Position
		if raised || time.Since(saved) > time.Second {
			if err := savePosition(w.o.Checkpoint, cp); err != nil {
				return err
			}
			saved = time.Now()
		}
	}
}

// evaluate runs the rules on one event and records what they raise.
func (w *Watcher) evaluate(ctx context.Context, rec eventstore.RecordedEvent) (bool, error) {
	e, err := domain.Decode(ctx, w.o.Sealer, rec)
	if err != nil {
		w.o.Logger.WithError(err).WithField("position", rec.Position.String()).Warn("alerts: skipping an event that cannot be decoded")
		return false, nil
	}
	taken, rename := nameTaken(&e)
	if taken == nil {
		return false, nil
	}
	// The rules read the room view as of this event.
	if err := w.o.Views.WaitFor(ctx, rec.Position); err != nil {
		return false, err
	}
	var found []domain.Alert
	add := func(a *domain.Alert) {
		if a != nil {
			found = append(found, *a)
		}
	}
	cfg := w.o.Config
	if taken.Room == "" {
		// A global rename: the server's protected names and the rename
		// burst once, the look-alike rule (and rooms' own protected names)
		// in every room where the new name now shows.
		add(domain.CheckProtectedName(cfg.ProtectedNames, *taken))
		rooms, err := w.roomsShowing(taken)
		if err != nil {
			return false, err
		}
		for _, room := range rooms {
			inRoom := *taken
			inRoom.Room = room
			if err := w.checkRoom(inRoom, cfg.Rooms[room].ProtectedNames, add); err != nil {
				return false, err
			}
		}
	} else if err := w.checkRoom(*taken, cfg.For(taken.Room).ProtectedNames, add); err != nil {
		return false, err
	}
	if rename && cfg.RenameBurst.Enabled {
		times, err := w.renameTimes(taken)
		if err != nil {
			return false, err
		}
		add(domain.CheckRenameBurst(cfg.RenameBurst, *taken, times))
	}
	for _, a := range found {
		data, err := domain.EncodeAlert(ctx, w.o.Sealer, a)
		if err != nil {
			return false, err
		}
		if _, err := w.o.Store.Append(ctx, domain.AlertStream, eventstore.Any, []eventstore.EventData{data}); err != nil {
			return false, err
		}
		w.o.Metrics.raised(a.Rule)
		w.o.Logger.WithFields(logrus.Fields{"rule": a.Rule, "room_id": a.Room, "user_id": a.User, "trigger": a.Trigger.String()}).Info("alert raised")
		if w.o.Raised != nil {
			w.o.Raised()
		}
	}
	return len(found) > 0, nil
}

// checkRoom runs the look-alike and protected-name rules for a name taken
// in a room against its members as of the trigger.
func (w *Watcher) checkRoom(t domain.NameTaken, protected []domain.ProtectedName, add func(*domain.Alert)) error {
	add(domain.CheckProtectedName(protected, t))
	rule := w.o.Config.For(t.Room).Lookalike
	if !rule.Enabled {
		return nil
	}
	members, _, err := w.o.Rooms.Members(t.Room, &t.Position, admin)
	if err != nil {
		if domain.ErrorCode(err) != "" {
			return nil // a room the view does not know (yet): nothing to compare with
		}
		return err
	}
	named := make([]domain.NamedMember, 0, len(members))
	for _, m := range members {
		if m.DisplayName != nil {
			named = append(named, domain.NamedMember{User: m.User, DisplayName: *m.DisplayName, Moderator: w.o.Rooms.IsModerator(t.Room, m.User)})
		}
	}
	add(domain.CheckLookalike(rule, t, named))
	return nil
}

// roomsShowing lists the rooms where the user's global rename shows: the
// rooms of their history where, as of the rename, they are a member under
// the new name (rooms with a nickname of their own keep it).
func (w *Watcher) roomsShowing(t *domain.NameTaken) ([]domain.RoomID, error) {
	seen := map[domain.RoomID]bool{}
	var rooms []domain.RoomID
	q := projections.HistoryQuery{Viewer: admin, Limit: projections.MaxHistoryLimit}
	for {
		page, err := w.o.Rooms.UserHistory(t.User, q)
		if err != nil {
			return nil, err
		}
		for _, e := range page.Entries {
			if e.Room != "" && !seen[e.Room] && !t.Position.Before(e.Position) {
				seen[e.Room] = true
				rooms = append(rooms, e.Room)
			}
		}
		if page.End == "" || len(page.Entries) == 0 {
			break
		}
		q.From = page.End
	}
	var out []domain.RoomID
	for _, room := range rooms {
		if len(out) == w.o.MaxRoomsPerRename {
			w.o.Logger.WithFields(logrus.Fields{"user_id": t.User, "rooms": len(rooms)}).Warn("alerts: a global rename reached more rooms than alerts.max_rooms_per_rename; the rest are not checked")
			break
		}
		members, _, err := w.o.Rooms.Members(room, &t.Position, admin)
		if err != nil {
			continue
		}
		for _, m := range members {
			if m.User == t.User && m.DisplayName != nil && *m.DisplayName == t.Name {
				out = append(out, room)
			}
		}
	}
	return out, nil
}

// renameTimes returns the times of the user's display-name changes up to
// and including the trigger, oldest first (at most the last 2N: enough to
// tell whether this rename starts a burst).
func (w *Watcher) renameTimes(t *domain.NameTaken) ([]time.Time, error) {
	n := 2 * w.o.Config.RenameBurst.Count
	page, err := w.o.Rooms.UserHistory(t.User, projections.HistoryQuery{Viewer: admin, Backwards: true, Limit: projections.MaxHistoryLimit})
	if err != nil {
		return nil, err
	}
	var times []time.Time
	for _, e := range page.Entries {
		if t.Position.Before(e.Position) || e.Field != domain.KeyDisplayName {
			continue
		}
		if e.Kind != projections.KindGlobalRename && e.Kind != projections.KindRoomRename {
			continue
		}
		times = append(times, e.Time)
		if len(times) == n {
			break
		}
	}
	for i, j := 0, len(times)-1; i < j; i, j = i+1, j-1 {
		times[i], times[j] = times[j], times[i]
	}
	return times, nil
}

// nameTaken reads the display name an event gives its user, if any, and
// whether it is a rename (joins take a name without renaming).
func nameTaken(e *domain.Event) (*domain.NameTaken, bool) {
	t := &domain.NameTaken{User: e.User, Room: e.Room, Position: e.Position, At: e.Meta.OccurredAt}
	switch e.Type {
	case domain.TypeFieldSet, domain.TypeMemberProfileSet:
		if e.Key != domain.KeyDisplayName || e.Erased {
			return nil, false
		}
		name, ok := stringValue(e.Value)
		if !ok {
			return nil, false
		}
		t.Name = name
		return t, true
	case domain.TypeMemberJoined, domain.TypeMemberInvited:
		if e.DisplayName == nil || *e.DisplayName == "" || e.Erased {
			return nil, false
		}
		t.Name = *e.DisplayName
		return t, false
	}
	return nil, false
}
