package http

import (
	"net/http"
	"time"

	"github.com/profilestore/profilestore/domain"
	"github.com/profilestore/profilestore/eventstore"
	"github.com/profilestore/profilestore/projections"
)

// handleErase erases a user's profile data (the domain says who may). The
// answer is the same whether or not there was anything to erase.
func (s *Server) handleErase(w http.ResponseWriter, r *http.Request) {
	user, err := userVar(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if s.cfg.Eraser == nil {
		s.writeError(w, r, domain.Errorf(domain.ErrCodeForbidden, "Erasure is not enabled on this server"))
		return
	}
	inRooms, err := s.hasRoomEntries(r, user)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	id, _ := identity(r)
	source := "client"
	if id.Admin && id.User != user {
		source = "admin"
	}
	res, err := s.cfg.Eraser.Erase(r.Context(), domain.EraseProfile{User: user, Actor: actor(r), InRooms: inRooms,
		Meta: domain.Metadata{OccurredAt: time.Now().UTC(), Actor: id.User, Source: source}})
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	requestLogger(r, s.log).WithField("user_id", user).WithField("actor", id.User).Info("user erased")
	s.afterWriteSettled(w, r, res)
	writeJSON(w, http.StatusOK, map[string]bool{"erased": true})
}

// hasRoomEntries reports whether any room holds an entry of user (once the
// room view has caught up), for erasure of users without a profile stream.
func (s *Server) hasRoomEntries(r *http.Request, user domain.UserID) (bool, error) {
	if s.cfg.RoomView == nil {
		return false, nil
	}
	if err := s.waitForPosition(r); err != nil {
		return false, err
	}
	page, err := s.cfg.RoomView.UserHistory(user, projections.HistoryQuery{Viewer: projections.Viewer{Admin: true}, Limit: 1, Backwards: true})
	return len(page.Entries) > 0, err
}

// handleHide hides an entry of a user's history (a deadname, say) from
// everyone but admins and the rooms' moderators. Hiding is itself an event;
// hiding twice appends nothing.
func (s *Server) handleHide(w http.ResponseWriter, r *http.Request) {
	user, err := userVar(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	tok, err := pathVar(r, "position")
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	pos, err := eventstore.ParsePosition(tok)
	if err != nil {
		s.writeError(w, r, domain.Errorf(domain.ErrCodeInvalidParam, "%q is not a position token", tok))
		return
	}
	// The history must show every acknowledged write before the domain
	// looks the entry up in it.
	if err := s.waitForPosition(r); err != nil {
		s.writeError(w, r, err)
		return
	}
	var history domain.UserHistory
	if s.cfg.RoomView != nil {
		history = s.cfg.RoomView
	}
	res, err := s.cfg.Profiles.HideEntry(r.Context(), domain.HideEntry{User: user, Entry: pos, Actor: actor(r), Meta: s.meta(r)}, history)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.afterWrite(w, r, res)
	writeJSON(w, http.StatusOK, map[string]any{"hidden": true, "position": pos.String()})
}
