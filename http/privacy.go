package http

import (
	"net/http"
	"time"

	"github.com/profilestore/profilestore/domain"
)

// handleErase erases a user's profile data: admins erase anyone, users
// themselves (when deactivating). The answer is the same whether or not
// there was anything to erase.
func (s *Server) handleErase(w http.ResponseWriter, r *http.Request) {
	raw, err := pathVar(r, "userId")
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	user, err := domain.ParseHistoricalUserID(raw)
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
	s.afterWrite(w, r, res)
	writeJSON(w, http.StatusOK, map[string]bool{"erased": true})
}
