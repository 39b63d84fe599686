package http

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/profilestore/profilestore/domain"
)

// unstable feature flags of the propagation MSCs we implement.
const (
	msc4069Flag      = "org.matrix.msc4069"
	msc4069Propagate = "org.matrix.msc4069.propagate"
	msc4466Flag      = "computer.gingershaped.msc4466"
	msc4466Param     = "computer.gingershaped.msc4466.propagate_to"
	// Extended profiles (MSC4133, stable in v1.16). matrix-js-sdk before
	// v39, and the Element builds made with it, look only for these flags
	// and refuse custom keys without them; Synapse advertises both.
	msc4133Flag       = "uk.tcpip.msc4133"
	msc4133StableFlag = "uk.tcpip.msc4133.stable"
)

func (s *Server) handleVersions(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{
		"versions": []string{"v1.1", "v1.2", "v1.3", "v1.4", "v1.5", "v1.6", "v1.7", "v1.8", "v1.9", "v1.10",
			"v1.11", "v1.12", "v1.13", "v1.14", "v1.15", "v1.16"},
		"unstable_features": map[string]bool{msc4069Flag: true, msc4466Flag: true, msc4133Flag: true, msc4133StableFlag: true},
	})
}

func (s *Server) handleCapabilities(w http.ResponseWriter, r *http.Request) {
	p := s.cfg.Profiles.Policy().Fields
	fields := map[string]any{"enabled": !p.Disabled}
	if p.Allowed != nil {
		fields["allowed"] = p.Allowed
	} else if len(p.Disallowed) > 0 {
		fields["disallowed"] = p.Disallowed
	}
	writeJSON(w, http.StatusOK, map[string]any{"capabilities": map[string]any{
		"m.profile_fields":  fields,
		"m.set_displayname": map[string]bool{"enabled": p.Permits(domain.KeyDisplayName)},
		"m.set_avatar_url":  map[string]bool{"enabled": p.Permits(domain.KeyAvatarURL)},
	}})
}

func (s *Server) handleWhoami(w http.ResponseWriter, r *http.Request) {
	id, _ := identity(r)
	writeJSON(w, http.StatusOK, map[string]any{"user_id": id.User, "is_guest": false})
}

// profileTarget reads and validates {userId} and, when reads need a token,
// authenticates. It also returns who is asking, when known, for MSC4337.
func (s *Server) profileTarget(r *http.Request) (domain.UserID, domain.UserID, error) {
	// Reads accept historical ids: they may name users created before v1.8.
	user, err := userVar(r)
	if err != nil {
		return "", "", err
	}
	requester, err := s.profileReader(r)
	return user, requester, err
}

// profileReader applies the read rules of profiles: with require_auth a
// valid token, otherwise an optional one (that only names the requester,
// for MSC4337). It also applies X-Profilestore-Min-Position.
func (s *Server) profileReader(r *http.Request) (domain.UserID, error) {
	var requester domain.UserID
	if s.cfg.RequireAuthForProfile {
		id, err := s.authenticate(r)
		if err != nil {
			return "", err
		}
		requester = id.User
	} else if _, ok := bearerToken(r); ok && s.cfg.Supplier != nil && s.cfg.Auth != nil {
		// The token is optional here: a bad one only means "requester unknown".
		if id, err := s.authenticate(r); err == nil {
			requester = id.User
		}
	}
	return requester, s.waitForMinPosition(r) // the profile view is never deferred
}

// supplement lays appservice supplements (MSC4337) over stored fields; the
// stored map is not modified.
func (s *Server) supplement(w http.ResponseWriter, r *http.Request, user domain.UserID, key string, requester domain.UserID, fields map[string]json.RawMessage) map[string]json.RawMessage {
	if s.cfg.Supplier == nil {
		return fields
	}
	// The answer may depend on who asks: no shared cache may keep it.
	w.Header().Set("Cache-Control", "no-store")
	sup := s.cfg.Supplier.Supplement(r.Context(), user, key, requester)
	if len(sup) == 0 {
		return fields
	}
	merged := make(map[string]json.RawMessage, len(fields)+len(sup))
	for k, v := range fields {
		merged[k] = v
	}
	for k, v := range sup {
		merged[k] = v
	}
	return merged
}

func (s *Server) handleGetProfile(w http.ResponseWriter, r *http.Request) {
	user, requester, err := s.profileTarget(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	st := s.cfg.ProfileView.Get(user)
	fields := s.supplement(w, r, user, "", requester, st.Profile.Fields)
	if len(fields) == 0 {
		s.writeError(w, r, domain.Errorf(domain.ErrCodeNotFound, "Profile not found"))
		return
	}
	w.Header().Set("ETag", etag(st.Revision, st.Exists))
	writeJSON(w, http.StatusOK, fields)
}

func (s *Server) handleGetProfileField(w http.ResponseWriter, r *http.Request) {
	user, requester, err := s.profileTarget(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	key, err := pathVar(r, "keyName")
	if err == nil {
		err = domain.ValidateKeyName(key)
	}
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	stored := map[string]json.RawMessage{}
	field := s.cfg.ProfileView.Field(user, key)
	if field.Set {
		stored[key] = field.Value
	}
	value, ok := s.supplement(w, r, user, key, requester, stored)[key]
	if !ok {
		s.writeError(w, r, domain.Errorf(domain.ErrCodeNotFound, "The requested profile key does not exist"))
		return
	}
	w.Header().Set("ETag", etag(field.Revision, field.Exists))
	writeJSON(w, http.StatusOK, map[string]json.RawMessage{key: value})
}

// profileWrite is what a profile PUT or DELETE asks for.
type profileWrite struct {
	user domain.UserID
	key  string
	prop domain.Propagation
	pre  domain.Precondition
}

// writeTarget reads a profile write's path, propagation and If-Match
// parameters; who may write is the domain's to decide.
func (s *Server) writeTarget(r *http.Request) (profileWrite, error) {
	var pw profileWrite
	var err error
	if pw.user, err = userVar(r); err != nil {
		return pw, err
	}
	if pw.key, err = pathVar(r, "keyName"); err != nil {
		return pw, err
	}
	if err := domain.ValidateKeyName(pw.key); err != nil {
		return pw, err
	}
	if pw.prop, err = s.propagation(r); err != nil {
		return pw, err
	}
	pw.pre, err = ifMatch(r)
	return pw, err
}

// finishProfileWrite answers a profile write and records its append latency.
func (s *Server) finishProfileWrite(w http.ResponseWriter, r *http.Request, start time.Time, res domain.WriteResult, err error) {
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if res.Changed {
		s.metrics.Append.Observe(time.Since(start).Seconds())
	}
	s.afterWrite(w, r, res)
	writeEmptyObject(w)
}

// propagation reads propagate_to (MSC4466) or propagate (MSC4069), stable or
// unstable names; propagate_to wins when both are given.
func (s *Server) propagation(r *http.Request) (domain.Propagation, error) {
	q := r.URL.Query()
	for _, name := range []string{"propagate_to", msc4466Param} {
		if v, ok := q[name]; ok {
			return domain.ParsePropagation(v[0])
		}
	}
	for _, name := range []string{"propagate", msc4069Propagate} {
		if v, ok := q[name]; ok {
			switch v[0] {
			case "true":
				return s.cfg.DefaultPropagation, nil
			case "false":
				return domain.PropagateNone, nil
			}
			return "", domain.Errorf(domain.ErrCodeInvalidParam, "%s must be true or false", name)
		}
	}
	return s.cfg.DefaultPropagation, nil
}

// actor is who the request acts as, for the domain's write policy.
func actor(r *http.Request) domain.Actor {
	id, _ := identity(r)
	return domain.Actor{User: id.User, Admin: id.Admin}
}

func (s *Server) meta(r *http.Request) domain.Metadata {
	id, _ := identity(r)
	source := "client"
	if id.Appservice != "" {
		source = "appservice:" + id.Appservice
	} else if id.Admin {
		source = "admin"
	}
	key := r.Header.Get("Idempotency-Key")
	if len(key) > 255 {
		key = ""
	}
	if key != "" {
		key = "client:" + string(id.User) + ":" + key
	}
	return domain.Metadata{OccurredAt: time.Now().UTC(), Actor: id.User, Source: source, IdempotencyKey: key}
}

// readJSONObject reads a body that must be one JSON object.
func (s *Server) readJSONObject(w http.ResponseWriter, r *http.Request) (map[string]json.RawMessage, error) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes))
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		return nil, bodyTooLargeError{domain.Errorf(domain.ErrCodeTooLarge, "The request body is larger than %d bytes", s.cfg.MaxBodyBytes)}
	}
	if err != nil {
		return nil, domain.Errorf(domain.ErrCodeNotJSON, "Could not read the request body")
	}
	if !json.Valid(body) {
		return nil, domain.Errorf(domain.ErrCodeNotJSON, "Content not JSON")
	}
	if err := checkBody(body); err != nil {
		return nil, err
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(body, &obj); err != nil || obj == nil {
		return nil, domain.Errorf(domain.ErrCodeBadJSON, "The body must be a JSON object")
	}
	return obj, nil
}

func (s *Server) handlePutProfileField(w http.ResponseWriter, r *http.Request) {
	pw, err := s.writeTarget(r)
	var obj map[string]json.RawMessage
	if err == nil {
		obj, err = s.readJSONObject(w, r)
	}
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	raw, ok := obj[pw.key]
	if !ok {
		s.writeError(w, r, domain.Errorf(domain.ErrCodeMissingParam, "The body has no %q property", pw.key))
		return
	}
	value, err := domain.CanonicalJSON(raw)
	if err != nil {
		s.writeError(w, r, domain.Errorf(domain.ErrCodeBadJSON, "The value is not valid JSON"))
		return
	}
	start := time.Now()
	res, err := s.cfg.Profiles.SetField(r.Context(), domain.SetField{User: pw.user, Key: pw.key, Value: value, PropagateTo: pw.prop, Actor: actor(r), Meta: s.meta(r)}, pw.pre)
	s.finishProfileWrite(w, r, start, res, err)
}

func (s *Server) handleDeleteProfileField(w http.ResponseWriter, r *http.Request) {
	pw, err := s.writeTarget(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	start := time.Now()
	res, err := s.cfg.Profiles.DeleteField(r.Context(), domain.DeleteField{User: pw.user, Key: pw.key, PropagateTo: pw.prop, Actor: actor(r), Meta: s.meta(r)}, pw.pre)
	s.finishProfileWrite(w, r, start, res, err)
}

// Limits of the user directory search.
const (
	defaultDirectoryResults = 10
	maxDirectoryResults     = 50
	// maxDirectoryTermChars is a display name's own limit: no longer term
	// can match one.
	maxDirectoryTermChars = 256
)

type directoryResult struct {
	UserID      domain.UserID `json:"user_id"`
	DisplayName string        `json:"display_name,omitempty"`
	AvatarURL   string        `json:"avatar_url,omitempty"`
}

func (s *Server) handleDirectorySearch(w http.ResponseWriter, r *http.Request) {
	obj, err := s.readJSONObject(w, r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	var term string
	rawTerm, ok := obj["search_term"]
	if !ok {
		s.writeError(w, r, domain.Errorf(domain.ErrCodeMissingParam, "search_term is required"))
		return
	}
	if err := json.Unmarshal(rawTerm, &term); err != nil || string(rawTerm) == "null" {
		s.writeError(w, r, domain.Errorf(domain.ErrCodeInvalidParam, "search_term must be a string"))
		return
	}
	if utf8.RuneCountInString(term) > maxDirectoryTermChars {
		s.writeError(w, r, domain.Errorf(domain.ErrCodeInvalidParam, "search_term is longer than %d characters", maxDirectoryTermChars))
		return
	}
	// limit is optional; given, it is a positive integer (null or -1 would
	// otherwise read as the default or as 0). Above the cap it is capped,
	// as Synapse does.
	limit := defaultDirectoryResults
	if rawLimit, ok := obj["limit"]; ok {
		if err := json.Unmarshal(rawLimit, &limit); err != nil || string(rawLimit) == "null" || limit < 1 {
			s.writeError(w, r, domain.Errorf(domain.ErrCodeInvalidParam, "limit must be a positive integer"))
			return
		}
	}
	limit = min(limit, maxDirectoryResults)
	if err := s.waitForPosition(r); err != nil {
		s.writeError(w, r, err)
		return
	}
	found, limited := s.cfg.ProfileView.Search(strings.TrimSpace(term), limit)
	results := make([]directoryResult, len(found))
	for i, f := range found {
		results[i] = directoryResult{UserID: f.UserID, DisplayName: f.DisplayName, AvatarURL: f.AvatarURL}
	}
	writeJSON(w, http.StatusOK, map[string]any{"results": results, "limited": limited})
}

func (s *Server) handleHealth(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// handleReady answers 200 once the views have caught up with the log as it
// was at start and the subscription is healthy.
func (s *Server) handleReady(w http.ResponseWriter, r *http.Request) {
	if s.cfg.Runner == nil {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "starting"})
		return
	}
	if err := s.cfg.Runner.Healthy(); err != nil {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "projections failing"})
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready", "checkpoint": s.cfg.Runner.Checkpoint().String()})
}
