package http

import (
	"math"
	"net/http"
	"net/url"
	"strconv"

	"github.com/profilestore/profilestore/domain"
	"github.com/profilestore/profilestore/eventstore"
)

// consoleAlertsPage is how many alerts a page lists; consoleAlertsScan
// bounds how many recorded alerts one page reads to find them (a moderator
// sees only their rooms' alerts among everyone's).
const (
	consoleAlertsPage = 50
	consoleAlertsScan = 2000
)

// consoleAlert is a recorded alert as the alerts page lists it.
type consoleAlert struct {
	domain.Alert
	Revision uint64
	Erased   bool
	// Lookalike is the alert's names as a look-alike group (the taker
	// first), with the differing characters marked.
	Lookalike *lookalike
	// Protected marks what tells the name from the protected one.
	Segments []nameSegment
	Differs  []domain.Char
}

// visibleAlert says whether the reader may see an alert: admins all,
// moderators those of the rooms they moderate now.
func (s *Server) visibleAlert(id Identity, a domain.Alert) bool {
	if id.Admin {
		return true
	}
	return a.Room != "" && s.cfg.RoomView != nil && s.cfg.RoomView.IsModerator(a.Room, id.User)
}

// handleConsoleAlerts lists the recorded alerts the reader may see, newest
// first, optionally of one room; ?before=<n> pages back.
func (s *Server) handleConsoleAlerts(w http.ResponseWriter, r *http.Request, id Identity) {
	q := r.URL.Query()
	var room domain.RoomID
	if raw := q.Get("room"); raw != "" {
		var err error
		if room, err = domain.ParseRoomID(raw); err != nil {
			s.renderError(w, r, id, err)
			return
		}
	}
	from := uint64(math.MaxUint64)
	if raw := q.Get("before"); raw != "" {
		n, err := strconv.ParseUint(raw, 10, 64)
		if err != nil || n == 0 {
			s.renderError(w, r, id, domain.Errorf(domain.ErrCodeInvalidParam, "before must be a positive whole number, as in the page links"))
			return
		}
		from = n - 1
	}
	var shown []consoleAlert
	next := ""
	if s.cfg.Store != nil && s.cfg.Sealer != nil {
		recs, err := s.cfg.Store.ReadStream(r.Context(), domain.AlertStream, from, eventstore.Backwards, consoleAlertsScan)
		if err != nil {
			s.renderError(w, r, id, err)
			return
		}
		for i, rec := range recs {
			if len(shown) == consoleAlertsPage {
				next = consoleURL("/console/alerts", url.Values{"room": {string(room)}, "before": {strconv.FormatUint(rec.Revision+1, 10)}})
				break
			}
			a, erased, err := domain.DecodeAlert(r.Context(), s.cfg.Sealer, rec)
			if err != nil {
				requestLogger(r, s.log).WithError(err).WithField("revision", rec.Revision).Warn("console: an alert that cannot be read")
				continue
			}
			if (room != "" && a.Room != room) || !s.visibleAlert(id, a) {
				if i == len(recs)-1 && len(recs) == consoleAlertsScan && rec.Revision > 0 {
					next = consoleURL("/console/alerts", url.Values{"room": {string(room)}, "before": {strconv.FormatUint(rec.Revision, 10)}})
				}
				continue
			}
			shown = append(shown, describeAlert(a, rec.Revision, erased))
		}
	}
	title := "Alerts"
	if room != "" {
		title = "Alerts in " + string(room)
	}
	s.render(w, r, http.StatusOK, "alerts", s.page(id, title), map[string]any{"Alerts": shown, "Room": room, "Older": next})
}

func describeAlert(a domain.Alert, revision uint64, erased bool) consoleAlert {
	ca := consoleAlert{Alert: a, Revision: revision, Erased: erased}
	switch a.Rule {
	case domain.AlertLookalike:
		group := domain.LookalikeAlert{Members: append([]domain.NamedMember{{User: a.User, DisplayName: a.Name}}, a.Others...),
			Moderator: a.Moderator, Identical: true}
		group.Differences = make([]domain.NameDifference, len(group.Members))
		for i, d := range a.Differences() {
			group.Differences[i+1] = d
			group.Identical = group.Identical && d.Identical
		}
		l := lookalikeOf(group)
		ca.Lookalike = &l
	case domain.AlertProtectedName:
		ca.Differs = domain.CompareNames(a.Name, a.Protected).A
		ca.Segments = segments(a.Name, ca.Differs)
	}
	return ca
}
