package http

import (
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/profilestore/profilestore/domain"
	"github.com/profilestore/profilestore/eventstore"
	"github.com/profilestore/profilestore/projections"
)

// consoleRoomRoutes adds the room pages; like the room API they exist only
// when the server has a room view.
func (s *Server) consoleRoomRoutes() {
	if s.cfg.RoomView == nil {
		return
	}
	s.router.HandleFunc("/console/rooms", s.consoleAuthed(s.handleConsoleRooms)).Methods(http.MethodGet)
	s.router.HandleFunc("/console/rooms/{roomId}", s.consoleAuthed(s.handleConsoleRoom)).Methods(http.MethodGet)
}

// moderatedRooms lists the rooms the user moderates now; none without a room view.
func (s *Server) moderatedRooms(user domain.UserID) []domain.RoomID {
	if s.cfg.RoomView == nil {
		return nil
	}
	return s.cfg.RoomView.ModeratedRooms(user)
}

func consoleRoomPath(room domain.RoomID) string {
	return "/console/rooms/" + url.PathEscape(string(room))
}

// consoleURL is path with the non-empty values of q.
func consoleURL(path string, q url.Values) string {
	clean := url.Values{}
	for k, vs := range q {
		if len(vs) > 0 && vs[0] != "" {
			clean.Set(k, vs[0])
		}
	}
	if len(clean) == 0 {
		return path
	}
	return path + "?" + clean.Encode()
}

// handleConsoleRooms lists the rooms the reader moderates and opens a room
// by id (the form posts ?room= here, so it works without script).
func (s *Server) handleConsoleRooms(w http.ResponseWriter, r *http.Request, id Identity) {
	if raw := r.URL.Query().Get("room"); raw != "" {
		room, err := domain.ParseRoomID(raw)
		if err != nil {
			s.renderError(w, r, id, err)
			return
		}
		http.Redirect(w, r, consoleRoomPath(room), http.StatusSeeOther)
		return
	}
	s.render(w, r, http.StatusOK, "rooms", s.page(id, "Rooms"), map[string]any{"Rooms": s.moderatedRooms(id.User)})
}

// consoleMoment reads the moment the room page shows members as of: the
// API's ?at= (position) or ?at_ts= (ms), or the form's ?at_time= (a
// datetime-local value, read as UTC). nil is now.
func (s *Server) consoleMoment(r *http.Request) (moment, error) {
	raw := r.URL.Query().Get("at_time")
	if raw == "" {
		return s.asOf(r)
	}
	if r.URL.Query().Get("at") != "" || r.URL.Query().Get("at_ts") != "" {
		return moment{}, domain.Errorf(domain.ErrCodeInvalidParam, "Choose a position or a date and time, not both")
	}
	raw = strings.TrimSuffix(strings.TrimSpace(raw), "Z")
	for _, layout := range []string{"2006-01-02T15:04:05", "2006-01-02T15:04", "2006-01-02 15:04:05", "2006-01-02 15:04", "2006-01-02"} {
		if t, err := time.ParseInLocation(layout, raw, time.UTC); err == nil {
			return moment{time: &t}, nil
		}
	}
	return moment{}, domain.Errorf(domain.ErrCodeInvalidParam, "The date and time must be ISO 8601 in UTC, like 2026-01-31T14:05:00 or 2026-01-31")
}

// consoleHistoryQuery reads a history page's parameters (the API's) for
// the reader, once the views have caught up with acknowledged writes.
func (s *Server) consoleHistoryQuery(r *http.Request, id Identity) (projections.HistoryQuery, error) {
	hq, err := historyQuery(r, projections.Viewer{User: id.User, Admin: id.Admin})
	if err == nil {
		err = s.waitForPosition(r)
	}
	return hq, err
}

// consoleMember is a room member with the room's moderator status now.
type consoleMember struct {
	projections.Member
	Moderator bool
}

// handleConsoleRoom shows a room to an admin or one of its moderators:
// members and look-alike alerts (now or as of a moment) and a page of the
// history. It reads the room view with the reader as viewer, so it shows
// what the API would show them.
func (s *Server) handleConsoleRoom(w http.ResponseWriter, r *http.Request, id Identity) {
	room, err := roomVar(r)
	if err != nil {
		s.renderError(w, r, id, err)
		return
	}
	// The console reviews rooms; a moderator's other rooms (where they
	// are a plain member) stay in their Matrix client.
	if !id.Admin && !s.cfg.RoomView.IsModerator(room, id.User) {
		s.renderError(w, r, id, domain.Errorf(domain.ErrCodeForbidden, "You do not moderate this room, so the console does not show it to you."))
		return
	}
	at, err := s.consoleMoment(r)
	var hq projections.HistoryQuery
	if err == nil {
		hq, err = s.consoleHistoryQuery(r, id)
	}
	var members []projections.Member
	var pos eventstore.Position
	if err == nil {
		members, pos, err = s.membersAt(room, at, hq.Viewer)
	}
	var hist projections.HistoryPage
	if err == nil {
		hist, err = s.cfg.RoomView.RoomHistory(room, hq)
	}
	var profiles map[domain.UserID]domain.Profile
	if err == nil {
		profiles, err = s.historyFacts(r.Context(), hist.Entries)
	}
	if err != nil {
		s.renderError(w, r, id, err)
		return
	}
	shown := make([]consoleMember, len(members))
	for i, m := range members {
		shown[i] = consoleMember{m, s.cfg.RoomView.IsModerator(room, m.User)}
	}
	q := r.URL.Query()
	path := consoleRoomPath(room)
	history := consoleHistoryOf(hist, hq, path, q, false, profiles)
	s.addActions(&history, id, profiles)
	s.render(w, r, http.StatusOK, "room", s.page(id, string(room)), map[string]any{
		"Room": room, "Path": path, "Query": q, "AsOf": at.pos != nil || at.time != nil, "Position": pos,
		"Members": shown, "Alerts": s.roomLookalikes(room, members),
		"History": history,
		"Kinds":   consoleKinds(),
	})
}
