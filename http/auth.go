package http

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/profilestore/profilestore/domain"
	"gopkg.in/yaml.v3"
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

// bearerToken reads "Authorization: Bearer <token>"; the query-string
// access_token is no longer part of Matrix (v1.20) and is not read.
func bearerToken(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	if h == "" {
		return "", false
	}
	scheme, token, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(token) == "" {
		return "", false
	}
	return strings.TrimSpace(token), true
}

// TokenFile authenticates with a YAML file of token hashes:
//
//	tokens:
//	  - user_id: "@alice:example.com"
//	    token_sha256: "<hex sha-256 of the token>"
//	    admin: false
//
// Only hashes are stored, so the file does not hand out access if read.
type TokenFile struct {
	path    string
	mu      sync.RWMutex
	entries []tokenEntry
	byHash  map[[sha256.Size]byte]int
	// loaded and checked let a token issued while the server runs work
	// without a restart: an unknown token re-reads a changed file, at most
	// once a second.
	loaded  os.FileInfo
	checked time.Time
}

type tokenEntry struct {
	UserID      domain.UserID `yaml:"user_id"`
	TokenSHA256 string        `yaml:"token_sha256"`
	Admin       bool          `yaml:"admin,omitempty"`
	// Comment is free text (who asked for the token, when).
	Comment string `yaml:"comment,omitempty"`
	sum     [sha256.Size]byte
}

type tokenFileDoc struct {
	Tokens []tokenEntry `yaml:"tokens"`
}

// LoadTokenFile reads the file at path; a missing file is an empty one.
func LoadTokenFile(path string) (*TokenFile, error) {
	tf := &TokenFile{path: path}
	return tf, tf.Reload()
}

// Reload re-reads the file.
func (tf *TokenFile) Reload() error {
	loaded, _ := os.Stat(tf.path)
	data, err := os.ReadFile(tf.path)
	if errors.Is(err, os.ErrNotExist) {
		data = nil
	} else if err != nil {
		return fmt.Errorf("read tokens file: %w", err)
	}
	var doc tokenFileDoc
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return fmt.Errorf("tokens file %s: %w", tf.path, err)
	}
	for i := range doc.Tokens {
		e := &doc.Tokens[i]
		if _, err := domain.ParseUserID(string(e.UserID)); err != nil {
			return fmt.Errorf("tokens file %s: entry %d: %v", tf.path, i+1, err)
		}
		b, err := hex.DecodeString(e.TokenSHA256)
		if err != nil || len(b) != sha256.Size {
			return fmt.Errorf("tokens file %s: entry %d: token_sha256 is not 64 hex digits", tf.path, i+1)
		}
		copy(e.sum[:], b)
	}
	byHash := make(map[[sha256.Size]byte]int, len(doc.Tokens))
	for i := range doc.Tokens {
		byHash[doc.Tokens[i].sum] = i
	}
	tf.mu.Lock()
	tf.entries, tf.byHash, tf.loaded = doc.Tokens, byHash, loaded
	tf.mu.Unlock()
	return nil
}

// reloadIfChanged re-reads the file if it changed since it was loaded.
func (tf *TokenFile) reloadIfChanged() bool {
	tf.mu.Lock()
	if time.Since(tf.checked) < time.Second {
		tf.mu.Unlock()
		return false
	}
	tf.checked = time.Now()
	loaded := tf.loaded
	tf.mu.Unlock()
	fi, err := os.Stat(tf.path)
	// IssueToken renames a new file into place, so a new inode tells a
	// change even within the file system's coarse timestamp tick.
	if err != nil || loaded != nil && os.SameFile(fi, loaded) && fi.ModTime().Equal(loaded.ModTime()) && fi.Size() == loaded.Size() {
		return false
	}
	return tf.Reload() == nil
}

// Authenticate looks the token's SHA-256 up and compares the hashes in
// constant time. The lookup's timing can only tell about the hash of a
// guess, never about a stored token.
func (tf *TokenFile) Authenticate(_ context.Context, token string) (Identity, error) {
	id, err := tf.lookup(token)
	if err != nil && tf.reloadIfChanged() {
		return tf.lookup(token)
	}
	return id, err
}

func (tf *TokenFile) lookup(token string) (Identity, error) {
	sum := sha256.Sum256([]byte(token))
	tf.mu.RLock()
	defer tf.mu.RUnlock()
	found, ok := tf.byHash[sum]
	if !ok || subtle.ConstantTimeCompare(sum[:], tf.entries[found].sum[:]) != 1 {
		return Identity{}, domain.Errorf(domain.ErrCodeUnknownToken, "Unknown access token")
	}
	e := tf.entries[found]
	return Identity{User: e.UserID, Admin: e.Admin}, nil
}

// IssueToken creates a random token for user, appends its hash to the file
// at path (created with mode 0600 if missing) and returns the token, which
// is shown once and stored nowhere.
func IssueToken(path string, user domain.UserID, admin bool, comment string) (string, error) {
	if _, err := domain.ParseUserID(string(user)); err != nil {
		return "", err
	}
	var raw [32]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", err
	}
	token := "ps_" + hex.EncodeToString(raw[:])
	sum := sha256.Sum256([]byte(token))
	var doc tokenFileDoc
	data, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return "", err
	}
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return "", fmt.Errorf("tokens file %s: %w", path, err)
	}
	doc.Tokens = append(doc.Tokens, tokenEntry{UserID: user, TokenSHA256: hex.EncodeToString(sum[:]), Admin: admin, Comment: comment})
	out, err := yaml.Marshal(doc)
	if err != nil {
		return "", err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, out, 0o600); err != nil {
		return "", err
	}
	if err := os.Rename(tmp, path); err != nil {
		return "", err
	}
	return token, nil
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
