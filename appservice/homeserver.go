package appservice

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/profilestore/profilestore/domain"
)

// HomeserverProfiles reads users' global profiles from the homeserver as the
// appservice (Authorization: Bearer <as_token>), caching each answer briefly.
// Mirror mode asks it only when member events alone cannot tell a global
// change from a per-room one.
type HomeserverProfiles struct {
	base    string
	asToken string
	client  *http.Client
	ttl     time.Duration

	mu    sync.Mutex
	cache map[domain.UserID]cachedProfile
}

type cachedProfile struct {
	fields  map[string]string
	fetched time.Time
	// recheckedFor holds, per field, the value whose disagreement caused
	// this fetch: more events carrying it trust this answer.
	recheckedFor map[string]string
}

// NewHomeserverProfiles asks the homeserver at baseURL; answers are reused
// for ttl (default 5 s).
func NewHomeserverProfiles(baseURL, asToken string, client *http.Client, ttl time.Duration) *HomeserverProfiles {
	if client == nil {
		client = &http.Client{Timeout: 5 * time.Second}
	}
	if ttl <= 0 {
		ttl = 5 * time.Second
	}
	return &HomeserverProfiles{base: strings.TrimRight(baseURL, "/"), asToken: asToken, client: client, ttl: ttl,
		cache: make(map[domain.UserID]cachedProfile)}
}

// Field returns the homeserver's current value of the user's displayname or
// avatar_url ("" when unset) and false when the homeserver could not say.
// expect is the value a member event carries. A cached answer that agrees is
// used; one that disagrees is fetched again once per value, so a rename
// right after a look-up is seen, while a burst of stale events carrying one
// old value costs a single call.
func (h *HomeserverProfiles) Field(ctx context.Context, user domain.UserID, field, expect string) (string, bool) {
	now := time.Now()
	h.mu.Lock()
	c, ok := h.cache[user]
	h.mu.Unlock()
	if ok && now.Sub(c.fetched) < h.ttl && (c.fields[field] == expect || c.recheckedFor[field] == expect) {
		return c.fields[field], true
	}
	fields, ok := h.fetch(ctx, user)
	if !ok {
		return "", false
	}
	entry := cachedProfile{fields: fields, fetched: now, recheckedFor: map[string]string{}}
	if fields[field] != expect {
		entry.recheckedFor[field] = expect
	}
	h.mu.Lock()
	if len(h.cache) > 10_000 {
		h.cache = make(map[domain.UserID]cachedProfile)
	}
	h.cache[user] = entry
	h.mu.Unlock()
	return fields[field], true
}

func (h *HomeserverProfiles) fetch(ctx context.Context, user domain.UserID) (map[string]string, bool) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, h.base+"/_matrix/client/v3/profile/"+url.PathEscape(string(user)), nil)
	if err != nil {
		return nil, false
	}
	req.Header.Set("Authorization", "Bearer "+h.asToken)
	resp, err := h.client.Do(req)
	if err != nil {
		return nil, false
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusNotFound:
		return map[string]string{}, true // no profile: every field unset
	default:
		return nil, false
	}
	var body map[string]json.RawMessage
	if err := json.NewDecoder(io.LimitReader(resp.Body, domain.MaxProfileBytes+1)).Decode(&body); err != nil {
		return nil, false
	}
	fields := map[string]string{}
	for _, k := range []string{domain.KeyDisplayName, domain.KeyAvatarURL} {
		var s string
		if raw, ok := body[k]; ok && json.Unmarshal(raw, &s) == nil {
			fields[k] = s
		}
	}
	return fields, true
}
