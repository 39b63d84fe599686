package http

import (
	"context"
	"encoding/json"
	"net/http"
	"sync"

	"github.com/profilestore/profilestore/domain"
)

// Limits of POST /_profilestore/v1/profiles/query.
const (
	// maxQueryUsers bounds one request: a page of a member list. Past it
	// the caller splits the list (400 M_TOO_LARGE says so).
	maxQueryUsers = 100
	// maxQueryKeys bounds the keys asked for.
	maxQueryKeys = 64
	// querySupplementWorkers bounds the MSC4337 supplement requests one
	// query has in flight at a time.
	querySupplementWorkers = 8
)

// profilesQuery is a parsed profiles/query body.
type profilesQuery struct {
	users []domain.UserID
	// keys is nil for every key.
	keys []string
}

// parseProfilesQuery reads {"users": [...], "keys": [...]}: users required
// (1 to maxQueryUsers ids), keys optional (absent: every key; present: 1
// to maxQueryKeys valid key names).
func parseProfilesQuery(obj map[string]json.RawMessage) (profilesQuery, error) {
	var q profilesQuery
	rawUsers, ok := obj["users"]
	if !ok {
		return q, domain.Errorf(domain.ErrCodeMissingParam, "users is required: the user ids to look up")
	}
	var users []string
	if err := json.Unmarshal(rawUsers, &users); err != nil || users == nil {
		return q, domain.Errorf(domain.ErrCodeInvalidParam, "users must be an array of user ids")
	}
	if len(users) == 0 {
		return q, domain.Errorf(domain.ErrCodeInvalidParam, "users is empty")
	}
	if len(users) > maxQueryUsers {
		return q, domain.Errorf(domain.ErrCodeTooLarge, "At most %d users per request (got %d): split the list", maxQueryUsers, len(users))
	}
	for _, u := range users {
		// Reads accept historical ids, as GET /profile does.
		id, err := domain.ParseHistoricalUserID(u)
		if err != nil {
			return q, domain.Errorf(domain.ErrCodeInvalidParam, "users: %q: %s", u, domain.ErrorMessage(err))
		}
		q.users = append(q.users, id)
	}
	rawKeys, ok := obj["keys"]
	if !ok {
		return q, nil
	}
	if err := json.Unmarshal(rawKeys, &q.keys); err != nil || q.keys == nil {
		return q, domain.Errorf(domain.ErrCodeInvalidParam, "keys must be an array of profile keys (leave it out for every key)")
	}
	if len(q.keys) == 0 {
		return q, domain.Errorf(domain.ErrCodeInvalidParam, "keys is empty (leave it out for every key)")
	}
	if len(q.keys) > maxQueryKeys {
		return q, domain.Errorf(domain.ErrCodeTooLarge, "At most %d keys per request (got %d)", maxQueryKeys, len(q.keys))
	}
	for _, k := range q.keys {
		if err := domain.ValidateKeyName(k); err != nil {
			return q, err
		}
	}
	return q, nil
}

// handleProfilesQuery is POST /_profilestore/v1/profiles/query: the chosen
// keys of many users in one request, for bridges and clients rendering
// member lists. It follows GET /profile's read rules (require_auth,
// MSC4337 supplements); every user asked for is in the answer, with the
// chosen keys they have ({} for none).
func (s *Server) handleProfilesQuery(w http.ResponseWriter, r *http.Request) {
	requester, err := s.profileReader(r)
	var obj map[string]json.RawMessage
	if err == nil {
		obj, err = s.readJSONObject(w, r)
	}
	var q profilesQuery
	if err == nil {
		q, err = parseProfilesQuery(obj)
	}
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	fields := make([]map[string]json.RawMessage, len(q.users))
	for i, u := range q.users {
		fields[i] = s.cfg.ProfileView.Get(u).Profile.Fields
	}
	if s.cfg.Supplier != nil {
		// The answer may depend on who asks: no shared cache may keep it.
		w.Header().Set("Cache-Control", "no-store")
		s.supplementAll(r.Context(), q, requester, fields)
	}
	out := make(map[domain.UserID]map[string]json.RawMessage, len(q.users))
	for i, u := range q.users {
		chosen := make(map[string]json.RawMessage)
		if q.keys == nil {
			for k, v := range fields[i] {
				chosen[k] = v
			}
		}
		for _, k := range q.keys {
			if v, ok := fields[i][k]; ok {
				chosen[k] = v
			}
		}
		out[u] = chosen
	}
	writeJSON(w, http.StatusOK, map[string]any{"profiles": out})
}

// supplementAll lays MSC4337 supplements over each user's fields, a few
// users at a time (each supplier answers within its own deadline). With
// one key chosen it asks for that key only, as GET /profile/{u}/{key} does.
func (s *Server) supplementAll(ctx context.Context, q profilesQuery, requester domain.UserID, fields []map[string]json.RawMessage) {
	key := ""
	if len(q.keys) == 1 {
		key = q.keys[0]
	}
	sem := make(chan struct{}, querySupplementWorkers)
	var wg sync.WaitGroup
	for i, u := range q.users {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			sup := s.cfg.Supplier.Supplement(ctx, u, key, requester)
			if len(sup) == 0 {
				return
			}
			merged := make(map[string]json.RawMessage, len(fields[i])+len(sup))
			for k, v := range fields[i] {
				merged[k] = v
			}
			for k, v := range sup {
				merged[k] = v
			}
			fields[i] = merged // each goroutine owns its index
		}()
	}
	wg.Wait()
}
