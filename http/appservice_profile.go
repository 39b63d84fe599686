package http

import (
	"crypto/sha256"
	"encoding/json"
	"net/http"

	"github.com/gorilla/mux"
	"github.com/profilestore/profilestore/domain"
)

// ProfileLookup configures the MSC4337 routes profilestore serves as an
// appservice: the homeserver asks GET /_matrix/app/v1/profile/{userId}[/{key}]
// (or the unstable uk.half-shot.msc4337 prefix) and lays the answer over its
// own stored profile.
type ProfileLookup struct {
	// StandardFields supplies displayname and avatar_url too. Off, only the
	// other keys are: in mirror mode those two are copies of the
	// homeserver's own values, and a copy can only be older than them (a
	// rename made while the user is in no room sends profilestore no event).
	StandardFields bool
}

// msc4337Prefixes are the stable and unstable bases of the MSC4337 route.
var msc4337Prefixes = []string{"/_matrix/app/v1", "/_matrix/app/uk.half-shot.msc4337"}

// profileLookupRoutes serves MSC4337 to the homeserver, under its hs_token.
func (s *Server) profileLookupRoutes(hsToken [sha256.Size]byte) {
	if s.cfg.ProfileLookup == nil {
		return
	}
	for _, base := range msc4337Prefixes {
		a := prefixed{s.router, base}
		a.HandleFunc("/profile/{userId}", s.homeserverAuthed(hsToken, s.handleLookupProfile)).Methods(http.MethodGet)
		a.HandleFunc("/profile/{userId}/{keyName}", s.homeserverAuthed(hsToken, s.handleLookupProfile)).Methods(http.MethodGet)
	}
}

// lookupRequester reads MSC4337's optional from_user_id (the user asking)
// and origin_server (the server asking, over federation). Each may be given
// once; neither means the requester is unknown.
func lookupRequester(r *http.Request) (user domain.UserID, server string, err error) {
	q := r.URL.Query()
	if vs := q["from_user_id"]; len(vs) > 0 {
		if len(vs) > 1 {
			return "", "", domain.Errorf(domain.ErrCodeInvalidParam, "from_user_id given more than once")
		}
		if user, err = domain.ParseHistoricalUserID(vs[0]); err != nil {
			return "", "", domain.Errorf(domain.ErrCodeInvalidParam, "from_user_id is not a user id")
		}
	}
	if vs := q["origin_server"]; len(vs) > 0 {
		if len(vs) > 1 || !domain.ValidServerName(vs[0]) {
			return "", "", domain.Errorf(domain.ErrCodeInvalidParam, "origin_server must be one server name")
		}
		server = vs[0]
	}
	return user, server, nil
}

// handleLookupProfile answers MSC4337 from the stored profile alone (never
// from other appservices' supplements: the homeserver asks those itself,
// and asking them here could loop back to the homeserver). The answer is
// the same for every requester profilestore lets read, but it is decided
// per request and never cached: with profile.require_auth an unknown
// requester (no from_user_id, no origin_server) is told nothing, as
// profilestore's own client API tells an anonymous reader nothing. 404
// M_NOT_FOUND for a user with nothing to supply, or an unset key.
func (s *Server) handleLookupProfile(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	user, err := userVar(r)
	var key string
	if err == nil {
		if _, asked := mux.Vars(r)["keyName"]; asked {
			if key, err = pathVar(r, "keyName"); err == nil {
				err = domain.ValidateKeyName(key)
			}
		}
	}
	var from domain.UserID
	var origin string
	if err == nil {
		from, origin, err = lookupRequester(r)
	}
	if err == nil {
		err = s.waitForMinPosition(r)
	}
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if s.cfg.RequireAuthForProfile && from == "" && origin == "" {
		s.writeError(w, r, domain.Errorf(domain.ErrCodeNotFound, "Nothing to supply to an unknown requester"))
		return
	}
	supplied := func(k string) bool {
		return s.cfg.ProfileLookup.StandardFields || (k != domain.KeyDisplayName && k != domain.KeyAvatarURL)
	}
	if key != "" {
		field := s.cfg.ProfileView.Field(user, key)
		if !field.Set || !supplied(key) {
			s.writeError(w, r, domain.Errorf(domain.ErrCodeNotFound, "The requested profile key does not exist"))
			return
		}
		writeJSON(w, http.StatusOK, map[string]json.RawMessage{key: field.Value})
		return
	}
	out := map[string]json.RawMessage{}
	for k, v := range s.cfg.ProfileView.Get(user).Profile.Fields {
		if supplied(k) {
			out[k] = v
		}
	}
	if len(out) == 0 {
		s.writeError(w, r, domain.Errorf(domain.ErrCodeNotFound, "Profile not found"))
		return
	}
	writeJSON(w, http.StatusOK, out)
}
