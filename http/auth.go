package http

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/profilestore/profilestore/domain"
)

// Identity is who a request acts as.
type Identity struct {
	User domain.UserID
	// Admin may read and write every profile, room and history.
	Admin bool
	// Appservice is the id of the application service whose as_token was
	// presented, "" for an ordinary user.
	Appservice string
}

// Authenticator turns an access token into an identity. It returns a
// *domain.Error with M_UNKNOWN_TOKEN for a token it does not know, and
// another error when it cannot tell (e.g. the homeserver is unreachable).
type Authenticator interface {
	Authenticate(ctx context.Context, token string) (Identity, error)
}

// HomeserverAuth validates tokens with a homeserver's
// /_matrix/client/v3/account/whoami, caching answers (positive and negative)
// briefly so a busy client costs the homeserver one call per TTL.
type HomeserverAuth struct {
	base   string
	client *http.Client
	ttl    time.Duration
	negTTL time.Duration
	admins map[domain.UserID]bool

	mu    sync.Mutex
	cache map[[sha256.Size]byte]cachedIdentity
}

type cachedIdentity struct {
	id      Identity
	err     error
	expires time.Time
}

// NewHomeserverAuth delegates to the homeserver at baseURL (e.g.
// "https://matrix.example.com"); admins are granted admin rights here.
func NewHomeserverAuth(baseURL string, client *http.Client, ttl, negativeTTL time.Duration, admins []domain.UserID) *HomeserverAuth {
	if client == nil {
		client = &http.Client{Timeout: 5 * time.Second}
	}
	a := &HomeserverAuth{base: strings.TrimRight(baseURL, "/"), client: client, ttl: ttl, negTTL: negativeTTL,
		admins: make(map[domain.UserID]bool), cache: make(map[[sha256.Size]byte]cachedIdentity)}
	for _, u := range admins {
		a.admins[u] = true
	}
	return a
}

// Authenticate asks the homeserver who the token belongs to.
func (a *HomeserverAuth) Authenticate(ctx context.Context, token string) (Identity, error) {
	key := sha256.Sum256([]byte(token)) // the cache never holds tokens themselves
	now := time.Now()
	a.mu.Lock()
	if c, ok := a.cache[key]; ok && now.Before(c.expires) {
		a.mu.Unlock()
		return c.id, c.err
	}
	a.mu.Unlock()

	id, cacheFor, err := a.ask(ctx, token)
	if cacheFor > 0 {
		a.mu.Lock()
		if len(a.cache) > 100_000 { // bound memory under a token-guessing flood
			a.cache = make(map[[sha256.Size]byte]cachedIdentity)
		}
		a.cache[key] = cachedIdentity{id: id, err: err, expires: now.Add(cacheFor)}
		a.mu.Unlock()
	}
	return id, err
}

func (a *HomeserverAuth) ask(ctx context.Context, token string) (Identity, time.Duration, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, a.base+"/_matrix/client/v3/account/whoami", nil)
	if err != nil {
		return Identity{}, 0, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := a.client.Do(req)
	if err != nil {
		return Identity{}, 0, domain.Errorf(domain.ErrCodeUnavailable, "The homeserver that checks access tokens is unreachable")
	}
	defer resp.Body.Close()
	var body struct {
		UserID  string `json:"user_id"`
		ErrCode string `json:"errcode"`
	}
	_ = json.NewDecoder(http.MaxBytesReader(nil, resp.Body, 64<<10)).Decode(&body)
	switch {
	case resp.StatusCode == http.StatusOK:
		u, err := domain.ParseHistoricalUserID(body.UserID)
		if err != nil {
			return Identity{}, 0, domain.Errorf(domain.ErrCodeUnavailable, "The homeserver answered whoami with an invalid user id")
		}
		return Identity{User: u, Admin: a.admins[u]}, a.ttl, nil
	case resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden:
		return Identity{}, a.negTTL, domain.Errorf(domain.ErrCodeUnknownToken, "The homeserver does not know this access token")
	default:
		return Identity{}, 0, domain.Errorf(domain.ErrCodeUnavailable, "The homeserver answered whoami with HTTP %d", resp.StatusCode)
	}
}
