package http

import (
	"net/http"

	"github.com/profilestore/profilestore/domain"
	"github.com/profilestore/profilestore/projections"
)

type lookalikeJSON struct {
	Identical bool                `json:"identical"`
	Moderator bool                `json:"moderator"`
	Members   []lookalikeMemberJS `json:"members"`
}

type lookalikeMemberJS struct {
	UserID      domain.UserID `json:"user_id"`
	DisplayName string        `json:"displayname"`
	Moderator   bool          `json:"moderator"`
}

// handleRoomLookalikes is GET /_profilestore/v1/rooms/{roomId}/lookalikes:
// the room's members (now, or as of ?at= / ?at_ts= like the members route)
// whose names are confusable with another member's, alerts involving a
// moderator first. It reads the members through the room view, so it shows
// exactly the names the reader may see there; moderator status is the
// room's now.
func (s *Server) handleRoomLookalikes(w http.ResponseWriter, r *http.Request) {
	room, members, pos, err := s.roomMembersAsOf(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	alerts := s.roomLookalikes(room, members)
	out := make([]lookalikeJSON, len(alerts))
	for i, a := range alerts {
		out[i] = lookalikeJSON{Identical: a.Identical, Moderator: a.Moderator}
		for _, m := range a.Members {
			out[i].Members = append(out[i].Members, lookalikeMemberJS{UserID: m.User, DisplayName: m.DisplayName, Moderator: m.Moderator})
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"room_id": room, "position": pos.String(), "alerts": out})
}

// roomLookalikes groups the members (as the room view showed them to the
// reader) whose names are confusable; moderator status is the room's now.
// The API and the console's room page both answer from it.
func (s *Server) roomLookalikes(room domain.RoomID, members []projections.Member) []domain.LookalikeAlert {
	named := make([]domain.NamedMember, 0, len(members))
	for _, m := range members {
		if m.DisplayName == nil {
			continue
		}
		named = append(named, domain.NamedMember{User: m.User, DisplayName: *m.DisplayName, Moderator: s.cfg.RoomView.IsModerator(room, m.User)})
	}
	return domain.Lookalikes(named)
}
