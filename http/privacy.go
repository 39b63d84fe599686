package http

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

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
	reason, err := s.bodyReason(w, r)
	if err != nil {
		s.writeError(w, r, err)
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
		Meta: domain.Metadata{OccurredAt: time.Now().UTC(), Actor: id.User, Source: source, Reason: reason}})
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
	reason, err := s.bodyReason(w, r)
	if err != nil {
		s.writeError(w, r, err)
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
	meta := s.meta(r)
	meta.Reason = reason
	res, err := s.cfg.Profiles.HideEntry(r.Context(), domain.HideEntry{User: user, Entry: pos, Actor: actor(r), Meta: meta}, history)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.afterWrite(w, r, res)
	writeJSON(w, http.StatusOK, map[string]any{"hidden": true, "position": pos.String()})
}

// bodyReason reads the optional body of hide and erase: nothing, or a JSON
// object whose "reason" (a string of at most maxReasonChars characters) is
// recorded with the action, as the console's forms record theirs.
func (s *Server) bodyReason(w http.ResponseWriter, r *http.Request) (string, error) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes))
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		return "", bodyTooLargeError{domain.Errorf(domain.ErrCodeTooLarge, "The request body is larger than %d bytes", s.cfg.MaxBodyBytes)}
	}
	if err != nil {
		return "", domain.Errorf(domain.ErrCodeNotJSON, "Could not read the request body")
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return "", nil
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	obj, err := s.readJSONObject(w, r)
	if err != nil {
		return "", err
	}
	raw, ok := obj["reason"]
	if !ok || string(raw) == "null" {
		return "", nil
	}
	var reason string
	if err := json.Unmarshal(raw, &reason); err != nil {
		return "", domain.Errorf(domain.ErrCodeBadJSON, "reason must be a string")
	}
	reason = strings.TrimSpace(reason)
	if utf8.RuneCountInString(reason) > maxReasonChars {
		return "", domain.Errorf(domain.ErrCodeInvalidParam, "reason has at most %d characters", maxReasonChars)
	}
	return reason, nil
}
