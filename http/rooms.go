package http

import (
	"encoding/json"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/profilestore/profilestore/domain"
	"github.com/profilestore/profilestore/eventstore"
	"github.com/profilestore/profilestore/projections"
)

// roomRoutes adds the per-room routes; they answer 404 M_UNRECOGNIZED when
// the server was built without a room service and view.
func (s *Server) roomRoutes() {
	if s.cfg.RoomService == nil || s.cfg.RoomView == nil {
		return
	}
	p := prefixed{s.router, "/_profilestore/v1"}
	p.HandleFunc("/rooms/{roomId}/members", s.authed(s.handleRoomMembers)).Methods(http.MethodGet)
	p.HandleFunc("/rooms/{roomId}/history", s.authed(s.handleRoomHistory)).Methods(http.MethodGet)
	p.HandleFunc("/users/{userId}/history", s.authed(s.handleUserHistory)).Methods(http.MethodGet)
	p.HandleFunc("/rooms/{roomId}/members/{userId}", s.authed(s.limited(s.handlePutMembership))).Methods(http.MethodPut)
	p.HandleFunc("/rooms/{roomId}/members/{userId}/profile/{field}", s.authed(s.limited(s.handlePutMemberProfile))).Methods(http.MethodPut)
	p.HandleFunc("/rooms/{roomId}/members/{userId}/profile/{field}", s.authed(s.limited(s.handleDeleteMemberProfile))).Methods(http.MethodDelete)
	p.HandleFunc("/rooms/{roomId}/history_visibility", s.authed(s.limited(s.handlePutHistoryVisibility))).Methods(http.MethodPut)
	p.HandleFunc("/rooms/{roomId}/power_levels", s.authed(s.limited(s.handlePutPowerLevels))).Methods(http.MethodPut)
	c := prefixed{s.router, "/_matrix/client/v3"}
	c.HandleFunc("/rooms/{roomId}/joined_members", s.authed(s.handleJoinedMembers)).Methods(http.MethodGet)
}

func viewer(r *http.Request) projections.Viewer {
	id, _ := identity(r)
	return projections.Viewer{User: id.User, Admin: id.Admin}
}

func roomVar(r *http.Request) (domain.RoomID, error) {
	raw, err := pathVar(r, "roomId")
	if err != nil {
		return "", err
	}
	return domain.ParseRoomID(raw)
}

func userVar(r *http.Request) (domain.UserID, error) {
	raw, err := pathVar(r, "userId")
	if err != nil {
		return "", err
	}
	return domain.ParseHistoricalUserID(raw)
}

// memberJSON is a member in the profilestore shape.
type memberJSON struct {
	UserID      domain.UserID `json:"user_id"`
	Membership  string        `json:"membership"`
	DisplayName *string       `json:"displayname,omitempty"`
	AvatarURL   *string       `json:"avatar_url,omitempty"`
}

// moment is a point of a room's history to read members as of: a log
// position, or a time (the homeserver's, for backfilled history). Neither
// is now.
type moment struct {
	pos  *eventstore.Position
	time *time.Time
}

// asOf reads ?at=<position> or ?at_ts=<ms>.
func (s *Server) asOf(r *http.Request) (moment, error) {
	q := r.URL.Query()
	if v := q.Get("at"); v != "" {
		if q.Get("at_ts") != "" {
			return moment{}, domain.Errorf(domain.ErrCodeInvalidParam, "Give at or at_ts, not both")
		}
		p, err := eventstore.ParsePosition(v)
		if err != nil {
			return moment{}, domain.Errorf(domain.ErrCodeInvalidParam, "at is not a position token")
		}
		return moment{pos: &p}, nil
	}
	if v := q.Get("at_ts"); v != "" {
		ms, err := strconv.ParseInt(v, 10, 64)
		if err != nil || ms < 0 || ms > 1<<53 {
			return moment{}, domain.Errorf(domain.ErrCodeInvalidParam, "at_ts must be a timestamp in milliseconds")
		}
		t := time.UnixMilli(ms)
		return moment{time: &t}, nil
	}
	return moment{}, nil
}

// membersAt reads the room's members as of the moment.
func (s *Server) membersAt(room domain.RoomID, m moment, v projections.Viewer) ([]projections.Member, eventstore.Position, error) {
	if m.time != nil {
		return s.cfg.RoomView.MembersAtTime(room, *m.time, v)
	}
	return s.cfg.RoomView.Members(room, m.pos, v)
}

// roomMembersAsOf reads {roomId} and ?at= / ?at_ts= and returns the members
// the reader may see then (now without them).
func (s *Server) roomMembersAsOf(r *http.Request) (domain.RoomID, []projections.Member, eventstore.Position, error) {
	room, err := roomVar(r)
	if err == nil {
		err = s.waitForPosition(r)
	}
	var at moment
	if err == nil {
		at, err = s.asOf(r)
	}
	if err != nil {
		return "", nil, eventstore.Position{}, err
	}
	members, pos, err := s.membersAt(room, at, viewer(r))
	return room, members, pos, err
}

func (s *Server) handleRoomMembers(w http.ResponseWriter, r *http.Request) {
	room, members, pos, err := s.roomMembersAsOf(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	out := make([]memberJSON, len(members))
	for i, m := range members {
		out[i] = memberJSON{UserID: m.User, Membership: m.Membership, DisplayName: m.DisplayName, AvatarURL: m.AvatarURL}
	}
	writeJSON(w, http.StatusOK, map[string]any{"room_id": room, "position": pos.String(), "members": out})
}

// handleJoinedMembers is GET /_matrix/client/v3/rooms/{roomId}/joined_members.
func (s *Server) handleJoinedMembers(w http.ResponseWriter, r *http.Request) {
	room, err := roomVar(r)
	if err == nil {
		err = s.waitForPosition(r)
	}
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	members, _, err := s.cfg.RoomView.Members(room, nil, viewer(r))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	type joined struct {
		DisplayName *string `json:"display_name,omitempty"`
		AvatarURL   *string `json:"avatar_url,omitempty"`
	}
	out := make(map[domain.UserID]joined, len(members))
	for _, m := range members {
		if m.Membership == domain.MembershipJoin {
			out[m.User] = joined{DisplayName: m.DisplayName, AvatarURL: m.AvatarURL}
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"joined": out})
}

// historyQuery reads dir, from, limit, user and kind, for the viewer v.
func historyQuery(r *http.Request, v projections.Viewer) (projections.HistoryQuery, error) {
	q := r.URL.Query()
	hq := projections.HistoryQuery{Viewer: v, From: q.Get("from"), Limit: 100}
	switch q.Get("dir") {
	case "", "b":
		hq.Backwards = true
	case "f":
	default:
		return hq, domain.Errorf(domain.ErrCodeInvalidParam, "dir must be b or f")
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > projections.MaxHistoryLimit {
			return hq, domain.Errorf(domain.ErrCodeInvalidParam, "limit must be an integer from 1 to %d", projections.MaxHistoryLimit)
		}
		hq.Limit = n
	}
	if v := q.Get("user"); v != "" {
		u, err := domain.ParseHistoricalUserID(v)
		if err != nil {
			return hq, err
		}
		hq.User = u
	}
	if v := q.Get("kind"); v != "" {
		if !slices.Contains(projections.HistoryKinds(), v) {
			return hq, domain.Errorf(domain.ErrCodeInvalidParam, "kind must be one of %s", strings.Join(projections.HistoryKinds(), ", "))
		}
		hq.Kind = v
	}
	if len(hq.From) > 64 {
		return hq, domain.Errorf(domain.ErrCodeInvalidParam, "Invalid pagination token")
	}
	return hq, nil
}

type causeJSON struct {
	Type        string             `json:"type"`
	Actor       domain.UserID      `json:"actor,omitempty"`
	Source      string             `json:"source,omitempty"`
	By          domain.UserID      `json:"by,omitempty"`
	PropagateTo domain.Propagation `json:"propagate_to,omitempty"`
}

type entryJSON struct {
	Position string                    `json:"position"`
	TS       int64                     `json:"origin_server_ts"`
	RoomID   domain.RoomID             `json:"room_id,omitempty"`
	UserID   domain.UserID             `json:"user_id"`
	Kind     string                    `json:"kind"`
	Field    string                    `json:"field,omitempty"`
	Old      projections.DisplayValues `json:"old"`
	New      projections.DisplayValues `json:"new"`
	Cause    causeJSON                 `json:"cause"`
	Hidden   bool                      `json:"hidden,omitempty"`
	// OldHidden: the old value was set by a hidden entry and is left out.
	OldHidden bool `json:"old_hidden,omitempty"`
	// Erased: the user was erased after this entry; its values are gone
	// (old and new read {}), which is not the same as never having had one.
	Erased bool `json:"erased,omitempty"`
}

// writeHistory answers a page of history, marking the entries whose
// values were erased since.
func (s *Server) writeHistory(w http.ResponseWriter, r *http.Request, page projections.HistoryPage) {
	profiles, err := s.historyFacts(r.Context(), page.Entries)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	chunk := make([]entryJSON, len(page.Entries))
	for i, e := range page.Entries {
		chunk[i] = entryJSON{Position: e.Position.String(), TS: e.Time.UnixMilli(), RoomID: e.Room, UserID: e.User, Kind: e.Kind,
			Field: e.Field, Old: e.Old, New: e.New, Hidden: e.Hidden, OldHidden: e.OldHidden, Erased: erased(e, profiles),
			Cause: causeJSON{Type: e.Cause.Type, Actor: e.Cause.Actor, Source: e.Cause.Source, By: e.Cause.By, PropagateTo: e.Cause.PropagateTo}}
	}
	body := map[string]any{"chunk": chunk, "start": page.Start}
	if page.End != "" {
		body["end"] = page.End
	}
	writeJSON(w, http.StatusOK, body)
}

func (s *Server) handleRoomHistory(w http.ResponseWriter, r *http.Request) {
	room, err := roomVar(r)
	var q projections.HistoryQuery
	if err == nil {
		q, err = historyQuery(r, viewer(r))
	}
	if err == nil {
		err = s.waitForPosition(r)
	}
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	page, err := s.cfg.RoomView.RoomHistory(room, q)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.writeHistory(w, r, page)
}

func (s *Server) handleUserHistory(w http.ResponseWriter, r *http.Request) {
	user, err := userVar(r)
	var q projections.HistoryQuery
	if err == nil {
		q, err = historyQuery(r, viewer(r))
	}
	if err == nil && q.User != "" {
		err = domain.Errorf(domain.ErrCodeInvalidParam, "user is not a filter of a user's history")
	}
	if err == nil {
		err = s.waitForPosition(r)
	}
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	page, err := s.cfg.RoomView.UserHistory(user, q)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.writeHistory(w, r, page)
}

// requiredString reads a required string property: absent is
// M_MISSING_PARAM, anything but a non-empty string M_INVALID_PARAM; one of
// names the values allowed, for the message.
func requiredString(obj map[string]json.RawMessage, key, oneOf string) (string, error) {
	raw, ok := obj[key]
	if !ok {
		return "", domain.Errorf(domain.ErrCodeMissingParam, "%s (%s) is required", key, oneOf)
	}
	var v string
	if err := json.Unmarshal(raw, &v); err != nil || v == "" {
		return "", domain.Errorf(domain.ErrCodeInvalidParam, "%s must be one of %s", key, oneOf)
	}
	return v, nil
}

// optionalString reads an optional string property: absent is nil, null is
// a pointer to "" (explicitly none).
func optionalString(obj map[string]json.RawMessage, key string) (*string, error) {
	raw, ok := obj[key]
	if !ok {
		return nil, nil
	}
	if string(raw) == "null" {
		empty := ""
		return &empty, nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return nil, domain.Errorf(domain.ErrCodeInvalidParam, "%s must be a string or null", key)
	}
	return &s, nil
}

func (s *Server) handlePutMembership(w http.ResponseWriter, r *http.Request) {
	room, err := roomVar(r)
	var user domain.UserID
	if err == nil {
		user, err = userVar(r)
	}
	var obj map[string]json.RawMessage
	if err == nil {
		obj, err = s.readJSONObject(w, r)
	}
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	cmd := domain.ChangeMembership{Room: room, User: user, Actor: actor(r), Meta: s.meta(r)}
	if cmd.Membership, err = requiredString(obj, "membership", "join, invite, leave, kick, ban, unban, knock"); err != nil {
		s.writeError(w, r, err)
		return
	}
	if cmd.DisplayName, err = optionalString(obj, domain.KeyDisplayName); err == nil {
		cmd.AvatarURL, err = optionalString(obj, domain.KeyAvatarURL)
	}
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	res, err := s.cfg.RoomService.ChangeMembership(r.Context(), cmd)
	s.finishRoomWrite(w, r, res, err)
}

// finishRoomWrite answers a room write once the local views show it.
func (s *Server) finishRoomWrite(w http.ResponseWriter, r *http.Request, res domain.WriteResult, err error) {
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.afterWrite(w, r, res)
	writeEmptyObject(w)
}

// memberProfileTarget reads a per-room profile write's room, user and field
// (displayname or avatar_url).
func (s *Server) memberProfileTarget(r *http.Request) (domain.RoomID, domain.UserID, string, error) {
	room, err := roomVar(r)
	if err != nil {
		return "", "", "", err
	}
	user, err := userVar(r)
	if err != nil {
		return "", "", "", err
	}
	field, err := pathVar(r, "field")
	if err != nil {
		return "", "", "", err
	}
	if field != domain.KeyDisplayName && field != domain.KeyAvatarURL {
		return "", "", "", domain.Errorf(domain.ErrCodeInvalidParam, "Only displayname and avatar_url can differ per room")
	}
	return room, user, field, nil
}

func (s *Server) handlePutMemberProfile(w http.ResponseWriter, r *http.Request) {
	room, user, field, err := s.memberProfileTarget(r)
	var obj map[string]json.RawMessage
	if err == nil {
		obj, err = s.readJSONObject(w, r)
	}
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	raw, ok := obj[field]
	if !ok {
		s.writeError(w, r, domain.Errorf(domain.ErrCodeMissingParam, "The body has no %q property", field))
		return
	}
	// null is refused as on the global route; "" or DELETE clears.
	var value string
	if err := json.Unmarshal(raw, &value); err != nil || string(raw) == "null" {
		s.writeError(w, r, domain.Errorf(domain.ErrCodeInvalidParam, "%s must be a string", field))
		return
	}
	res, err := s.cfg.RoomService.SetMemberProfile(r.Context(), domain.SetMemberProfile{Room: room, User: user, Field: field, Value: value, Actor: actor(r), Meta: s.meta(r)})
	s.finishRoomWrite(w, r, res, err)
}

func (s *Server) handleDeleteMemberProfile(w http.ResponseWriter, r *http.Request) {
	room, user, field, err := s.memberProfileTarget(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	res, err := s.cfg.RoomService.ClearMemberProfile(r.Context(), domain.ClearMemberProfile{Room: room, User: user, Field: field, Actor: actor(r), Meta: s.meta(r)})
	s.finishRoomWrite(w, r, res, err)
}

// roomSettingsBody reads {roomId} and the JSON object body of a room-settings write.
func (s *Server) roomSettingsBody(w http.ResponseWriter, r *http.Request) (domain.RoomID, map[string]json.RawMessage, error) {
	room, err := roomVar(r)
	var obj map[string]json.RawMessage
	if err == nil {
		obj, err = s.readJSONObject(w, r)
	}
	return room, obj, err
}

func (s *Server) handlePutHistoryVisibility(w http.ResponseWriter, r *http.Request) {
	room, obj, err := s.roomSettingsBody(w, r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	vis, err := requiredString(obj, "history_visibility", "shared, invited, joined, world_readable")
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	res, err := s.cfg.RoomService.SetHistoryVisibility(r.Context(), domain.SetHistoryVisibility{Room: room, Visibility: vis, Actor: actor(r), Meta: s.meta(r)})
	s.finishRoomWrite(w, r, res, err)
}

func (s *Server) handlePutPowerLevels(w http.ResponseWriter, r *http.Request) {
	room, obj, err := s.roomSettingsBody(w, r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	// Matrix defaults: kick 50, users_default 0.
	pl := domain.PowerLevels{Kick: 50}
	var users map[domain.UserID]*int
	for key, dst := range map[string]any{"users": &users, "users_default": &pl.UsersDefault, "kick": &pl.Kick} {
		if raw, ok := obj[key]; ok {
			// null would leave the default in place unsaid: refuse it.
			if err := json.Unmarshal(raw, dst); err != nil || string(raw) == "null" {
				s.writeError(w, r, domain.Errorf(domain.ErrCodeInvalidParam, "%s has the wrong type", key))
				return
			}
		}
	}
	if users != nil {
		pl.Users = make(map[domain.UserID]int, len(users))
		for u, level := range users {
			if level == nil { // null would read as level 0
				s.writeError(w, r, domain.Errorf(domain.ErrCodeInvalidParam, "The power level of %s is null", u))
				return
			}
			pl.Users[u] = *level
		}
	}
	res, err := s.cfg.RoomService.SetPowerLevels(r.Context(), domain.SetPowerLevels{Room: room, PowerLevels: pl, Actor: actor(r), Meta: s.meta(r)})
	s.finishRoomWrite(w, r, res, err)
}
