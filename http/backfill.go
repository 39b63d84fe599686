package http

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"time"

	"github.com/profilestore/profilestore/domain"
)

// Backfill starts a backfill from the homeserver on the running server and
// says how it goes (docs/APPSERVICE.md, "Backfill"); cmd wires one.
type Backfill interface {
	// Start starts a backfill in the background, reading the rooms of
	// users besides the configured ones; started is false when one runs.
	Start(users []domain.UserID) (started bool, err error)
	// Status is the running or last backfill's state.
	Status() BackfillStatus
}

// BackfillStatus is GET /_profilestore/v1/backfill: the running or last
// backfill of this server's lifetime.
type BackfillStatus struct {
	Running bool `json:"running"`
	// Phase (survey or write), Rooms in it and Done, the Room being read,
	// Events read and changes Recorded in the phase.
	Phase    string        `json:"phase,omitempty"`
	Rooms    int           `json:"rooms"`
	Done     int           `json:"done"`
	Room     domain.RoomID `json:"room,omitempty"`
	Events   int64         `json:"events"`
	Recorded int64         `json:"recorded"`
	Started  *time.Time    `json:"started_at,omitempty"`
	Finished *time.Time    `json:"finished_at,omitempty"`
	// Error says why the last run stopped before the end.
	Error string `json:"error,omitempty"`
	// Report is the last run's report (as profilestore backfill --json);
	// Unreadable and Incomplete count its problem rooms, for the console.
	Report     any `json:"report,omitempty"`
	Unreadable int `json:"-"`
	Incomplete int `json:"-"`
}

// maxBackfillUsers bounds the users one request may name.
const maxBackfillUsers = 10_000

// handleBackfillStart is POST /_profilestore/v1/backfill (admins only), with
// an optional body {"users": ["@a:example.org", …]}: 202 when it started,
// 200 when one is running already; GET shows the progress.
func (s *Server) handleBackfillStart(w http.ResponseWriter, r *http.Request) {
	if id, _ := identity(r); !id.Admin {
		s.writeError(w, r, domain.Errorf(domain.ErrCodeForbidden, "Only admins may start a backfill"))
		return
	}
	users, err := s.backfillUsers(w, r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	started, err := s.cfg.Backfill.Start(users)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	status := http.StatusAccepted
	if !started {
		status = http.StatusOK
	}
	writeJSON(w, status, map[string]any{"started": started, "backfill": s.cfg.Backfill.Status()})
}

// handleBackfillStatus is GET /_profilestore/v1/backfill (admins only).
func (s *Server) handleBackfillStatus(w http.ResponseWriter, r *http.Request) {
	if id, _ := identity(r); !id.Admin {
		s.writeError(w, r, domain.Errorf(domain.ErrCodeForbidden, "Only admins may read a backfill's progress"))
		return
	}
	writeJSON(w, http.StatusOK, s.cfg.Backfill.Status())
}

// backfillUsers reads the optional body: nothing, or {"users": [user ids]}.
func (s *Server) backfillUsers(w http.ResponseWriter, r *http.Request) ([]domain.UserID, error) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes))
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		return nil, bodyTooLargeError{domain.Errorf(domain.ErrCodeTooLarge, "The request body is larger than %d bytes", s.cfg.MaxBodyBytes)}
	}
	if err != nil {
		return nil, domain.Errorf(domain.ErrCodeNotJSON, "Could not read the request body")
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return nil, nil
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	obj, err := s.readJSONObject(w, r)
	if err != nil {
		return nil, err
	}
	raw, ok := obj["users"]
	if !ok || string(raw) == "null" {
		return nil, nil
	}
	var names []string
	if err := json.Unmarshal(raw, &names); err != nil {
		return nil, domain.Errorf(domain.ErrCodeBadJSON, "users must be a list of user ids")
	}
	if len(names) > maxBackfillUsers {
		return nil, domain.Errorf(domain.ErrCodeInvalidParam, "users names at most %d users", maxBackfillUsers)
	}
	users := make([]domain.UserID, 0, len(names))
	for _, n := range names {
		u, err := domain.ParseHistoricalUserID(n)
		if err != nil {
			return nil, domain.Errorf(domain.ErrCodeInvalidParam, "users: %q is not a user id", n)
		}
		users = append(users, u)
	}
	return users, nil
}
