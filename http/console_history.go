package http

import (
	"context"
	"net/url"
	"slices"

	"github.com/profilestore/profilestore/domain"
	"github.com/profilestore/profilestore/projections"
)

// historyFacts tells, per user of a page of history, since when the user's
// values are erased (so that readers can say "erased" where the view only
// holds nothing) and who hid which of their entries. It asks the profile
// service only for users whose first key is gone (erased at some time, or
// never keyed) or who have a hidden entry on the page: loading a profile
// can read its whole stream, and most users were never erased.
func (s *Server) historyFacts(ctx context.Context, entries []projections.HistoryEntry) (map[domain.UserID]domain.Profile, error) {
	// A page's users are at most its entries: sized for them, the maps
	// never grow.
	out := make(map[domain.UserID]domain.Profile, len(entries))
	if s.cfg.Profiles == nil {
		return out, nil
	}
	need := make(map[domain.UserID]bool, len(entries))
	for _, e := range entries {
		if e.Hidden {
			need[e.User] = true
		}
	}
	// Whose first key is gone, asked once for every other user of the page.
	ask := make([]domain.UserID, 0, len(entries))
	seen := make(map[domain.UserID]bool, len(entries))
	for _, e := range entries {
		if !seen[e.User] && !need[e.User] {
			seen[e.User] = true
			ask = append(ask, e.User)
		}
	}
	if s.cfg.Sealer == nil {
		for _, u := range ask {
			need[u] = true
		}
	} else if len(ask) > 0 {
		gone, err := s.cfg.Sealer.FirstKeysGone(ctx, ask)
		if err != nil {
			return nil, err
		}
		for i, u := range ask {
			need[u] = gone[i]
		}
	}
	for _, e := range entries {
		if _, done := out[e.User]; done {
			continue
		}
		if !need[e.User] {
			out[e.User] = domain.Profile{}
			continue
		}
		p, _, err := s.cfg.Profiles.Profile(ctx, e.User)
		if err != nil {
			return nil, err
		}
		// Only the erasure mark and the moderation record are needed; the
		// values stay with the service.
		out[e.User] = domain.Profile{ErasedAt: p.ErasedAt, Moderation: p.Moderation}
	}
	return out, nil
}

// erased reports whether the entry's values were erased after it was recorded.
func erased(e projections.HistoryEntry, profiles map[domain.UserID]domain.Profile) bool {
	return profiles[e.User].ErasedBefore(e.Position)
}

// consoleEntry is a history entry as the console's tables show it.
type consoleEntry struct {
	projections.HistoryEntry
	// What says what happened in words ("changed their name everywhere").
	What string
	// Change says what changed: "Alice → Bob", or "erased" / "hidden" when
	// the reader cannot see the values, which is never confused with
	// "none", an unset value.
	Change string
	// Erased marks an entry whose values were erased since.
	Erased bool
	// By is who made the change: the kicker, banner or inviter, else the
	// actor, else the user (a change of their own).
	By domain.UserID
	// MembersThen links to the entry's room as of just after it.
	MembersThen string
	// HideLink is the confirmation page that hides the entry, for readers
	// the write policy lets hide it.
	HideLink string
	// HiddenBy is who hid the entry, when and why.
	HiddenBy *domain.ModerationRecord
}

// consoleHistory is a page of history with links that page on with the
// view's stable tokens, keeping the other parameters.
type consoleHistory struct {
	Entries   []consoleEntry
	Backwards bool
	// ShowRoom is set for a user's history, which spans rooms.
	ShowRoom bool
	// Further continues in the page's direction; Back turns round at its start.
	Further, Back string
	// Actions is set when the reader may act on some entry (a column of links).
	Actions bool
}

func consoleHistoryOf(page projections.HistoryPage, q projections.HistoryQuery, path string, params url.Values, showRoom bool, profiles map[domain.UserID]domain.Profile) consoleHistory {
	h := consoleHistory{Backwards: q.Backwards, ShowRoom: showRoom}
	for _, e := range page.Entries {
		ce := consoleEntry{HistoryEntry: e, What: describeKind(e), Erased: erased(e, profiles), By: e.Cause.By}
		switch {
		case ce.Erased:
			ce.Change = "erased"
		case e.Hidden && e.Old == (projections.DisplayValues{}) && e.New == (projections.DisplayValues{}):
			ce.Change = "hidden"
		default:
			ce.Change = describeChange(e)
		}
		if ce.By == "" {
			ce.By = e.Cause.Actor
		}
		if ce.By == "" {
			ce.By = e.User
		}
		if e.Room != "" {
			ce.MembersThen = consoleURL(consoleRoomPath(e.Room), url.Values{"at": {e.Position.String()}})
		}
		h.Entries = append(h.Entries, ce)
	}
	link := func(dir, from string) string {
		p := url.Values{}
		for k, v := range params {
			p[k] = slices.Clone(v)
		}
		p.Set("dir", dir)
		p.Set("from", from)
		return consoleURL(path, p)
	}
	here, there := "f", "b"
	if q.Backwards {
		here, there = "b", "f"
	}
	if page.End != "" {
		h.Further = link(here, page.End)
	}
	if q.From != "" {
		h.Back = link(there, page.Start)
	}
	return h
}

// kindWords are the history kinds in words, for the filter's options.
var kindWords = map[string]string{
	projections.KindJoin:            "joined",
	projections.KindInvite:          "invited",
	projections.KindLeave:           "left",
	projections.KindKick:            "kicked",
	projections.KindBan:             "banned",
	projections.KindUnban:           "unbanned",
	projections.KindGlobalRename:    "changed their name (global)",
	projections.KindGlobalAvatar:    "changed their avatar (global)",
	projections.KindRoomRename:      "nickname in this room",
	projections.KindRoomAvatar:      "avatar in this room",
	projections.KindOverrideCleared: "dropped a room nickname or avatar",
}

// consoleKind is a history kind as the filter offers it.
type consoleKind struct{ Value, Words string }

func consoleKinds() []consoleKind {
	var out []consoleKind
	for _, k := range projections.HistoryKinds() {
		w := kindWords[k]
		if w == "" {
			w = k
		}
		out = append(out, consoleKind{k, w})
	}
	return out
}

// describeKind says what an entry records, in words a moderator reads
// without knowing the API's kinds.
func describeKind(e projections.HistoryEntry) string {
	avatar := e.Field == domain.KeyAvatarURL
	by := func(verb string) string {
		if e.Cause.By != "" && e.Cause.By != e.User {
			return verb + " by " + string(e.Cause.By)
		}
		return verb
	}
	switch e.Kind {
	case projections.KindJoin:
		return "joined"
	case projections.KindInvite:
		return by("was invited")
	case projections.KindLeave:
		return "left"
	case projections.KindKick:
		return by("was kicked")
	case projections.KindBan:
		return by("was banned")
	case projections.KindUnban:
		return by("was unbanned")
	case projections.KindGlobalRename, projections.KindGlobalAvatar:
		what := "name"
		if avatar {
			what = "avatar"
		}
		switch {
		case e.Room != "" || e.Cause.PropagateTo == domain.PropagateAll:
			// In a room's history a global change is listed because it reached the room.
			return "changed their " + what + " everywhere"
		case e.Cause.PropagateTo == domain.PropagateNone:
			return "changed their global " + what + " (rooms keep the old one)"
		default:
			return "changed their global " + what + " (rooms without their own follow)"
		}
	case projections.KindRoomRename:
		return "nickname in this room"
	case projections.KindRoomAvatar:
		return "avatar in this room"
	case projections.KindOverrideCleared:
		if avatar {
			return "dropped their avatar in this room"
		}
		return "dropped their nickname in this room"
	}
	return e.Kind
}

// describeChange puts an entry's values in words.
func describeChange(e projections.HistoryEntry) string {
	switch {
	case e.Field == domain.KeyDisplayName:
		return oldValue(e, e.Old.DisplayName) + " → " + orNone(e.New.DisplayName)
	case e.Field == domain.KeyAvatarURL:
		return oldValue(e, e.Old.AvatarURL) + " → " + orNone(e.New.AvatarURL)
	case e.Kind == projections.KindJoin || e.Kind == projections.KindInvite:
		return "as " + orNone(e.New.DisplayName)
	default:
		return "was " + oldValue(e, e.Old.DisplayName)
	}
}

// oldValue is an old value in words; one set by a hidden entry reads "hidden".
func oldValue(e projections.HistoryEntry, s *string) string {
	if s == nil && e.OldHidden {
		return "hidden"
	}
	return orNone(s)
}

func orNone(s *string) string {
	if s == nil || *s == "" {
		return "none"
	}
	return *s
}
