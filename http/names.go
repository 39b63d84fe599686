package http

import (
	"net/http"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/profilestore/profilestore/domain"
	"github.com/profilestore/profilestore/projections"
)

// Limits of names search and stats.
const (
	maxNameQueryChars  = 256 // a display name's own limit
	defaultNameResults = 20
	maxNameResults     = 100
	maxStatsDays       = 366
	defaultStatsDays   = 30
	maxStatsTop        = 100
)

// nameVisibility is the read policy's filter of the names index for the
// reader, with the room view's moderators (when rooms are served).
func (s *Server) nameVisibility(id Identity) domain.NameFilter {
	var moderates func(domain.RoomID, domain.UserID) bool
	if s.cfg.RoomView != nil {
		moderates = s.cfg.RoomView.IsModerator
	}
	return domain.Reads.Names(domain.Reader{User: id.User, Admin: id.Admin}, moderates)
}

type nameResult struct {
	Name          string          `json:"name"`
	UserID        domain.UserID   `json:"user_id"`
	Match         string          `json:"match"`
	Global        bool            `json:"global"`
	Rooms         []domain.RoomID `json:"rooms"`
	FirstSeen     time.Time       `json:"first_seen"`
	LastSeen      time.Time       `json:"last_seen"`
	FirstPosition string          `json:"first_position"`
	LastPosition  string          `json:"last_position"`
	Hidden        bool            `json:"hidden,omitempty"`
}

// handleNamesSearch finds names equal to or confusable with q.
func (s *Server) handleNamesSearch(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query().Get("q")
	if q == "" {
		s.writeError(w, r, domain.Errorf(domain.ErrCodeMissingParam, "q is required"))
		return
	}
	if !utf8.ValidString(q) || utf8.RuneCountInString(q) > maxNameQueryChars {
		s.writeError(w, r, domain.Errorf(domain.ErrCodeInvalidParam, "q must be valid UTF-8 of at most %d characters", maxNameQueryChars))
		return
	}
	limit, err := intParam(r, "limit", defaultNameResults, 1, maxNameResults)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if err := s.waitForPosition(r); err != nil {
		s.writeError(w, r, err)
		return
	}
	id, _ := identity(r)
	matches, more := s.cfg.Names.Search(q, limit, s.nameVisibility(id))
	out := make([]nameResult, len(matches))
	for i, m := range matches {
		out[i] = nameResultOf(m)
	}
	writeJSON(w, http.StatusOK, map[string]any{"results": out, "limited": more})
}

func nameResultOf(m projections.NameMatch) nameResult {
	rooms := m.Rooms
	if rooms == nil {
		rooms = []domain.RoomID{}
	}
	return nameResult{Name: m.Name, UserID: m.User, Match: m.Match.String(), Global: m.Global, Rooms: rooms,
		FirstSeen: m.First, LastSeen: m.Last, FirstPosition: m.FirstPosition.String(), LastPosition: m.LastPosition.String(), Hidden: m.Hidden}
}

// intParam reads an optional integer query parameter within [lo, hi].
func intParam(r *http.Request, name string, def, lo, hi int) (int, error) {
	raw := r.URL.Query().Get(name)
	if raw == "" {
		return def, nil
	}
	n, err := strconv.Atoi(raw)
	if err != nil || n < lo || n > hi {
		return 0, domain.Errorf(domain.ErrCodeInvalidParam, "%s must be an integer from %d to %d", name, lo, hi)
	}
	return n, nil
}

type statsDay struct {
	Day            string `json:"day"`
	ProfileChanges int    `json:"profile_changes"`
	RoomChanges    int    `json:"room_changes"`
	Renames        int    `json:"renames"`
}

// statsWindow reads from / to (dates, UTC, inclusive; default the last 30
// days) and top.
func statsWindow(r *http.Request, now time.Time) (from, to time.Time, top int, err error) {
	to = now.UTC()
	if raw := r.URL.Query().Get("to"); raw != "" {
		if to, err = time.Parse(time.DateOnly, raw); err != nil {
			return from, to, 0, domain.Errorf(domain.ErrCodeInvalidParam, "to must be a date (YYYY-MM-DD)")
		}
	}
	from = to.AddDate(0, 0, -(defaultStatsDays - 1))
	if raw := r.URL.Query().Get("from"); raw != "" {
		if from, err = time.Parse(time.DateOnly, raw); err != nil {
			return from, to, 0, domain.Errorf(domain.ErrCodeInvalidParam, "from must be a date (YYYY-MM-DD)")
		}
	}
	days := int(to.Sub(from).Hours()/24) + 1
	if days < 1 || days > maxStatsDays {
		return from, to, 0, domain.Errorf(domain.ErrCodeInvalidParam, "the window must be 1 to %d days, from before to", maxStatsDays)
	}
	top, err = intParam(r, "top", 10, 1, maxStatsTop)
	return from, to, top, err
}

// handleStats reports activity over a window: changes per day, the most
// renamed users and the rooms with most renames. Admins and analytics tokens.
func (s *Server) handleStats(w http.ResponseWriter, r *http.Request) {
	if _, err := s.feedAuth(r); err != nil {
		s.writeError(w, r, err)
		return
	}
	from, to, top, err := statsWindow(r, time.Now())
	if err == nil {
		err = s.waitForPosition(r)
	}
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	rep := s.cfg.Stats.Report(from, to, top)
	days := make([]statsDay, len(rep.Days))
	for i, d := range rep.Days {
		days[i] = statsDay{Day: d.Day.Format(time.DateOnly), ProfileChanges: d.ProfileChanges, RoomChanges: d.RoomChanges, Renames: d.Renames}
	}
	users := make([]map[string]any, len(rep.TopUsers))
	for i, u := range rep.TopUsers {
		users[i] = map[string]any{"user_id": u.User, "renames": u.N}
	}
	rooms := make([]map[string]any, len(rep.TopRooms))
	for i, rc := range rep.TopRooms {
		rooms[i] = map[string]any{"room_id": rc.Room, "renames": rc.N}
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"from": from.Format(time.DateOnly), "to": to.Format(time.DateOnly),
		"days": days, "most_renamed_users": users, "rooms_with_most_renames": rooms,
	})
}
