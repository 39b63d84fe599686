package http

import (
	"net/http"
	"slices"

	"github.com/profilestore/profilestore/domain"
	"github.com/profilestore/profilestore/projections"
)

// lookalike is a group of confusable names as the API and the console show
// it: in words ("identical", "confusable") and with the characters that
// tell each name from the group's first.
type lookalike struct {
	// Identical is true when the names are the same once case-folded.
	Identical bool `json:"identical"`
	// Relation says the same in words: "identical" or "confusable".
	Relation  string            `json:"relation"`
	Moderator bool              `json:"moderator"`
	Members   []lookalikeMember `json:"members"`
}

type lookalikeMember struct {
	UserID      domain.UserID `json:"user_id"`
	DisplayName string        `json:"displayname"`
	Moderator   bool          `json:"moderator"`
	// Scripts are the scripts of the name's letters; two or more is how a
	// spoof usually shows ("Аlice": Cyrillic and Latin).
	Scripts []string `json:"scripts"`
	// Differs are the characters of this name that the group's first name
	// does not have at the same place (for the first member: those that
	// any other name lacks), with code point, Unicode name and script.
	Differs []domain.Char `json:"differs"`
	// Segments split the name for display, the differing characters apart.
	Segments []nameSegment `json:"-"`
}

// nameSegment is a run of plain text or one marked character of a name.
type nameSegment struct {
	Text string
	Char *domain.Char
}

// lookalikeOf describes an alert of domain.Lookalikes.
func lookalikeOf(a domain.LookalikeAlert) lookalike {
	out := lookalike{Identical: a.Identical, Moderator: a.Moderator, Relation: "confusable"}
	if a.Identical {
		out.Relation = "identical"
	}
	first := map[int]domain.Char{}
	var firstOrder []int
	for i := 1; i < len(a.Differences); i++ {
		for _, c := range a.Differences[i].A {
			if _, ok := first[c.Index]; !ok {
				first[c.Index] = c
				firstOrder = append(firstOrder, c.Index)
			}
		}
	}
	for i, m := range a.Members {
		lm := lookalikeMember{UserID: m.User, DisplayName: m.DisplayName, Moderator: m.Moderator, Scripts: domain.Scripts(m.DisplayName), Differs: []domain.Char{}}
		if lm.Scripts == nil {
			lm.Scripts = []string{}
		}
		if i == 0 {
			slices.Sort(firstOrder)
			for _, idx := range firstOrder {
				lm.Differs = append(lm.Differs, first[idx])
			}
		} else if i < len(a.Differences) {
			lm.Differs = append(lm.Differs, a.Differences[i].B...)
		}
		lm.Segments = segments(m.DisplayName, lm.Differs)
		out.Members = append(out.Members, lm)
	}
	return out
}

// segments splits name into plain runs and the marked characters.
func segments(name string, marked []domain.Char) []nameSegment {
	at := make(map[int]*domain.Char, len(marked))
	for i := range marked {
		at[marked[i].Index] = &marked[i]
	}
	var out []nameSegment
	plain := []rune{}
	for i, r := range []rune(name) {
		if c := at[i]; c != nil {
			if len(plain) > 0 {
				out = append(out, nameSegment{Text: string(plain)})
				plain = plain[:0]
			}
			out = append(out, nameSegment{Char: c})
			continue
		}
		plain = append(plain, r)
	}
	if len(plain) > 0 {
		out = append(out, nameSegment{Text: string(plain)})
	}
	return out
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
	writeJSON(w, http.StatusOK, map[string]any{"room_id": room, "position": pos.String(), "alerts": s.roomLookalikes(room, members)})
}

// roomLookalikes groups the members (as the room view showed them to the
// reader) whose names are confusable; moderator status is the room's now.
// The API and the console's room page both answer from it.
func (s *Server) roomLookalikes(room domain.RoomID, members []projections.Member) []lookalike {
	named := make([]domain.NamedMember, 0, len(members))
	for _, m := range members {
		if m.DisplayName == nil {
			continue
		}
		named = append(named, domain.NamedMember{User: m.User, DisplayName: *m.DisplayName, Moderator: s.cfg.RoomView.IsModerator(room, m.User)})
	}
	alerts := domain.Lookalikes(named)
	out := make([]lookalike, len(alerts))
	for i, a := range alerts {
		out[i] = lookalikeOf(a)
	}
	return out
}
