package http

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/profilestore/profilestore/domain"
	"github.com/profilestore/profilestore/eventstore"
	"github.com/profilestore/profilestore/projections"
)

// maxReasonChars bounds the reason typed into a moderation form.
const maxReasonChars = 500

// consoleActionRoutes adds the console's two actions, each a confirmation
// page (GET) and the form it posts (POST): hide an entry of a user's
// history, erase a user.
func (s *Server) consoleActionRoutes() {
	s.csrfKey = make([]byte, 32)
	_, _ = rand.Read(s.csrfKey) // crypto/rand.Read never fails (Go 1.24+): it crashes the program first
	r := s.router
	r.HandleFunc("/console/users/{userId}/history/{position}/hide", s.consoleAuthed(s.handleConsoleHideForm)).Methods(http.MethodGet)
	r.HandleFunc("/console/users/{userId}/history/{position}/hide", s.consoleAuthed(s.handleConsoleHide)).Methods(http.MethodPost)
	r.HandleFunc("/console/users/{userId}/erase", s.consoleAuthed(s.handleConsoleEraseForm)).Methods(http.MethodGet)
	r.HandleFunc("/console/users/{userId}/erase", s.consoleAuthed(s.handleConsoleErase)).Methods(http.MethodPost)
}

// csrfToken is the form token of the request's console session: an HMAC,
// keyed with this server's random key, of the session cookie. It differs
// per session, needs no storage, and another site can neither read it
// (same-origin policy) nor compute it.
func (s *Server) csrfToken(r *http.Request) string {
	c, err := r.Cookie(consoleCookie)
	if err != nil || c.Value == "" || s.csrfKey == nil {
		return ""
	}
	mac := hmac.New(sha256.New, s.csrfKey)
	mac.Write([]byte("console-form\x00" + c.Value))
	return hex.EncodeToString(mac.Sum(nil))
}

var errCrossSite = errors.New("console: a form from another site, or from before the server's last restart")

// crossSiteMessage is what the reader of a refused form is told.
const crossSiteMessage = "This form did not come from this console, or it is older than the server's last restart. Load the page again and resend it."

// checkCSRF accepts a console POST only with the session's form token and,
// where the browser says where the request came from (Origin,
// Sec-Fetch-Site), only from this origin. The SameSite=Strict cookie is a
// second, independent guard.
func (s *Server) checkCSRF(r *http.Request) error {
	if !sameOrigin(r) {
		return errCrossSite
	}
	if err := r.ParseForm(); err != nil {
		return errCrossSite
	}
	want := s.csrfToken(r)
	got := r.PostForm.Get("csrf")
	if want == "" || !hmac.Equal([]byte(got), []byte(want)) {
		return errCrossSite
	}
	return nil
}

// sameOrigin reports whether the browser, where it says so (Sec-Fetch-Site,
// Origin), sent the request from this console's own pages.
func sameOrigin(r *http.Request) bool {
	if site := r.Header.Get("Sec-Fetch-Site"); site != "" && site != "same-origin" && site != "none" {
		return false
	}
	if origin := r.Header.Get("Origin"); origin != "" && origin != "null" {
		u, err := url.Parse(origin)
		if err != nil || u.Host != r.Host {
			return false
		}
	}
	return true
}

// readReason reads the form's reason: required, at most maxReasonChars.
func readReason(r *http.Request) (string, error) {
	reason := strings.TrimSpace(r.PostForm.Get("reason"))
	switch {
	case reason == "":
		return "", domain.Errorf(domain.ErrCodeInvalidParam, "Give a reason: it is recorded with the action.")
	case !utf8.ValidString(reason) || utf8.RuneCountInString(reason) > maxReasonChars:
		return "", domain.Errorf(domain.ErrCodeInvalidParam, "A reason has at most %d characters.", maxReasonChars)
	}
	return reason, nil
}

func actorOf(id Identity) domain.Actor { return domain.Actor{User: id.User, Admin: id.Admin} }

// mayHide and mayErase ask the domain's write policy, so the console offers
// exactly what the API would allow.
func (s *Server) mayHide(id Identity, user domain.UserID) bool {
	return s.cfg.Profiles != nil && s.cfg.RoomView != nil && s.cfg.Profiles.Policy().CheckHide(actorOf(id), user) == nil
}

func (s *Server) mayErase(id Identity, user domain.UserID) bool {
	return s.cfg.Profiles != nil && s.cfg.Eraser != nil && s.cfg.Profiles.Policy().CheckErase(actorOf(id), user) == nil
}

func consoleUserPath(user domain.UserID) string {
	return "/console/users/" + url.PathEscape(string(user))
}

func consoleHidePath(user domain.UserID, pos eventstore.Position) string {
	return consoleUserPath(user) + "/history/" + pos.String() + "/hide"
}

// addActions offers "Hide…" on the entries the reader may hide and says,
// on hidden ones, who hid them and why (from the users' streams).
func (s *Server) addActions(h *consoleHistory, id Identity, profiles map[domain.UserID]domain.Profile) {
	for i := range h.Entries {
		e := &h.Entries[i]
		if !e.Hidden && !e.Erased && s.mayHide(id, e.User) {
			e.HideLink = consoleHidePath(e.User, e.Position)
			h.Actions = true
		}
		if e.Hidden {
			for _, m := range profiles[e.User].Moderation {
				if m.Type == domain.TypeEntryHidden && m.Entry == e.Position {
					rec := m
					e.HiddenBy = &rec
				}
			}
		}
	}
}

// consoleAction is one hide or erasure as the user page lists it.
type consoleAction struct {
	domain.ModerationRecord
	What string
}

func consoleActions(p domain.Profile) []consoleAction {
	out := make([]consoleAction, 0, len(p.Moderation))
	for _, m := range slices.Backward(p.Moderation) {
		a := consoleAction{ModerationRecord: m, What: "erased the user's profile data"}
		if m.Type == domain.TypeEntryHidden {
			a.What = "hid the entry at position " + m.Entry.String()
		}
		out = append(out, a)
	}
	return out
}

// hideTarget reads the user and position of a hide route and finds the
// entry in the user's history as the reader may see it.
func (s *Server) hideTarget(r *http.Request, id Identity) (domain.UserID, *consoleEntry, error) {
	user, err := userVar(r)
	if err != nil {
		return "", nil, err
	}
	tok, err := pathVar(r, "position")
	if err != nil {
		return "", nil, err
	}
	pos, err := eventstore.ParsePosition(tok)
	if err != nil {
		return "", nil, domain.Errorf(domain.ErrCodeInvalidParam, "%q is not a position in a history", tok)
	}
	if !s.mayHide(id, user) {
		return "", nil, s.cfg.Profiles.Policy().CheckHide(actorOf(id), user)
	}
	if err := s.waitForPosition(r); err != nil {
		return "", nil, err
	}
	found, err := s.findEntry(user, pos, projections.Viewer{User: id.User, Admin: id.Admin})
	if err != nil {
		return "", nil, err
	}
	page := projections.HistoryPage{Entries: []projections.HistoryEntry{found}}
	profiles, err := s.historyFacts(r.Context(), page.Entries)
	if err != nil {
		return "", nil, err
	}
	h := consoleHistoryOf(page, projections.HistoryQuery{}, "", nil, true, profiles)
	s.addActions(&h, id, profiles)
	return user, &h.Entries[0], nil
}

// findEntry finds the entry at pos in the user's history as the viewer
// sees it, paging from the newest entry back (the view's tokens are
// opaque, so the console does not build one for pos).
func (s *Server) findEntry(user domain.UserID, pos eventstore.Position, v projections.Viewer) (projections.HistoryEntry, error) {
	q := projections.HistoryQuery{Viewer: v, Backwards: true, Limit: projections.MaxHistoryLimit}
	for {
		page, err := s.cfg.RoomView.UserHistory(user, q)
		if err != nil {
			return projections.HistoryEntry{}, err
		}
		for _, e := range page.Entries {
			if e.Position == pos {
				return e, nil
			}
			if e.Position.Before(pos) {
				page.End = ""
				break
			}
		}
		if page.End == "" {
			return projections.HistoryEntry{}, domain.Errorf(domain.ErrCodeNotFound, "No entry of %s's history is at position %s", user, pos)
		}
		q.From = page.End
	}
}

func (s *Server) handleConsoleHideForm(w http.ResponseWriter, r *http.Request, id Identity) {
	user, entry, err := s.hideTarget(r, id)
	if err != nil {
		s.renderError(w, r, id, err)
		return
	}
	s.render(w, r, http.StatusOK, "hide", s.page(id, "Hide an entry of "+string(user)), map[string]any{
		"User": user, "Entry": entry, "Action": consoleHidePath(user, entry.Position), "Back": consoleUserPath(user), "MaxReason": maxReasonChars,
	})
}

func (s *Server) handleConsoleHide(w http.ResponseWriter, r *http.Request, id Identity) {
	r.Body = http.MaxBytesReader(w, r.Body, 16<<10)
	if err := s.checkCSRF(r); err != nil {
		s.render(w, r, http.StatusForbidden, "refused", consolePage{Title: "Not done", Who: id.User, Admin: id.Admin, Error: crossSiteMessage}, nil)
		return
	}
	user, entry, err := s.hideTarget(r, id)
	var reason string
	if err == nil {
		reason, err = readReason(r)
	}
	if err == nil && entry.Hidden {
		http.Redirect(w, r, consoleUserPath(user)+"?done=hidden&position="+entry.Position.String(), http.StatusSeeOther)
		return
	}
	if err != nil {
		s.renderError(w, r, id, err)
		return
	}
	meta := domain.Metadata{OccurredAt: time.Now().UTC(), Actor: id.User, Source: "console", Reason: reason}
	res, err := s.cfg.Profiles.HideEntry(r.Context(), domain.HideEntry{User: user, Entry: entry.Position, Actor: actorOf(id), Meta: meta}, s.cfg.RoomView)
	if err != nil {
		s.renderError(w, r, id, err)
		return
	}
	requestLogger(r, s.log).WithField("user_id", user).WithField("actor", id.User).WithField("position", entry.Position.String()).Info("console: entry hidden")
	s.answerWrite(w, r, res, s.cfg.Runner.WaitFor)
	http.Redirect(w, r, consoleUserPath(user)+"?done=hidden&position="+entry.Position.String(), http.StatusSeeOther)
}

func (s *Server) eraseTarget(r *http.Request, id Identity) (domain.UserID, error) {
	user, err := userVar(r)
	if err != nil {
		return "", err
	}
	if !s.mayErase(id, user) {
		if s.cfg.Eraser == nil || s.cfg.Profiles == nil {
			return "", domain.Errorf(domain.ErrCodeForbidden, "Erasure is not enabled on this server")
		}
		return "", s.cfg.Profiles.Policy().CheckErase(actorOf(id), user)
	}
	return user, nil
}

func (s *Server) handleConsoleEraseForm(w http.ResponseWriter, r *http.Request, id Identity) {
	user, err := s.eraseTarget(r, id)
	if err != nil {
		s.renderError(w, r, id, err)
		return
	}
	s.render(w, r, http.StatusOK, "erase", s.page(id, "Erase "+string(user)), map[string]any{
		"User": user, "Action": consoleUserPath(user) + "/erase", "Back": consoleUserPath(user), "MaxReason": maxReasonChars,
	})
}

func (s *Server) handleConsoleErase(w http.ResponseWriter, r *http.Request, id Identity) {
	r.Body = http.MaxBytesReader(w, r.Body, 16<<10)
	if err := s.checkCSRF(r); err != nil {
		s.render(w, r, http.StatusForbidden, "refused", consolePage{Title: "Not done", Who: id.User, Admin: id.Admin, Error: crossSiteMessage}, nil)
		return
	}
	user, err := s.eraseTarget(r, id)
	var reason string
	if err == nil {
		reason, err = readReason(r)
	}
	if err == nil && strings.TrimSpace(r.PostForm.Get("confirm")) != string(user) {
		err = domain.Errorf(domain.ErrCodeInvalidParam, "To confirm, type the user id %s exactly; nothing was erased.", user)
	}
	var inRooms bool
	if err == nil {
		inRooms, err = s.hasRoomEntries(r, user)
	}
	if err != nil {
		s.renderError(w, r, id, err)
		return
	}
	source := "console"
	meta := domain.Metadata{OccurredAt: time.Now().UTC(), Actor: id.User, Source: source, Reason: reason}
	res, err := s.cfg.Eraser.Erase(r.Context(), domain.EraseProfile{User: user, Actor: actorOf(id), InRooms: inRooms, Meta: meta})
	if err != nil {
		s.renderError(w, r, id, err)
		return
	}
	requestLogger(r, s.log).WithField("user_id", user).WithField("actor", id.User).Info("console: user erased")
	s.answerWrite(w, r, res, s.cfg.Runner.WaitFor)
	http.Redirect(w, r, consoleUserPath(user)+"?done=erased", http.StatusSeeOther)
}
