package http

import (
	"net/http"
	"time"

	"github.com/profilestore/profilestore/domain"
	"github.com/profilestore/profilestore/eventstore"
)

// handleErase erases a user's profile data: admins erase anyone, users
// themselves (when deactivating). The answer is the same whether or not
// there was anything to erase.
func (s *Server) handleErase(w http.ResponseWriter, r *http.Request) {
	user, err := userVar(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	id, _ := identity(r)
	if id.User != user && !id.Admin {
		s.writeError(w, r, domain.Errorf(domain.ErrCodeForbidden, "Only an admin or the user may erase a profile"))
		return
	}
	if s.cfg.Eraser == nil {
		s.writeError(w, r, domain.Errorf(domain.ErrCodeForbidden, "Erasure is not enabled on this server"))
		return
	}
	source := "client"
	if id.Admin && id.User != user {
		source = "admin"
	}
	res, err := s.cfg.Eraser.Erase(r.Context(), user, domain.Metadata{OccurredAt: time.Now().UTC(), Actor: id.User, Source: source})
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	requestLogger(r, s.log).WithField("user_id", user).WithField("actor", id.User).Info("user erased")
	s.afterWriteSettled(w, r, res)
	writeJSON(w, http.StatusOK, map[string]bool{"erased": true})
}

// handleHide hides an entry of a user's history (a deadname, say) from
// everyone but admins and the rooms' moderators: the user themself or an
// admin may. Hiding is itself an event; hiding twice appends nothing.
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
	id, _ := identity(r)
	if id.User != user && !id.Admin {
		s.writeError(w, r, domain.Errorf(domain.ErrCodeForbidden, "Only the user or an admin may hide the user's entries"))
		return
	}
	if s.cfg.RoomView == nil {
		s.writeError(w, r, domain.Errorf(domain.ErrCodeNotFound, "No history is kept here"))
		return
	}
	if err := s.waitForPosition(r); err != nil {
		s.writeError(w, r, err)
		return
	}
	found, hidden := s.cfg.RoomView.UserEntry(user, pos)
	if !found {
		s.writeError(w, r, domain.Errorf(domain.ErrCodeNotFound, "No entry of %s's history is at %s", user, tok))
		return
	}
	var res domain.WriteResult
	if hidden {
		_, res, err = s.cfg.Profiles.Profile(r.Context(), user)
	} else {
		meta := s.meta(r)
		meta.IdempotencyKey = "hide:" + string(user) + ":" + pos.String()
		res, err = s.cfg.Profiles.Append(r.Context(), user, meta.IdempotencyKey, func(*domain.Profile) ([]domain.Event, error) {
			return []domain.Event{{Type: domain.TypeEntryHidden, User: user, Hidden: pos, Meta: meta}}, nil
		})
	}
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.afterWrite(w, r, res)
	writeJSON(w, http.StatusOK, map[string]any{"hidden": true, "position": pos.String()})
}
