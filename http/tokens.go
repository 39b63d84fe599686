package http

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/profilestore/profilestore/domain"
	"gopkg.in/yaml.v3"
)

// bearerToken reads the access token: "Authorization: Bearer <token>", or
// else the access_token query parameter. The query form is deprecated
// (Matrix v1.11) but older clients and bridges still send it, and Synapse
// accepts it. Request logs name the route template, never the URL, so a
// token in the query is not logged. When both are given, authenticate
// refuses a mismatch (tokenConflict).
func bearerToken(r *http.Request) (string, bool) {
	if h := r.Header.Get("Authorization"); h != "" {
		scheme, token, ok := strings.Cut(h, " ")
		if !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(token) == "" {
			return "", false
		}
		return strings.TrimSpace(token), true
	}
	if t := r.URL.Query().Get("access_token"); t != "" {
		return t, true
	}
	return "", false
}

// tokenConflict reports a request that carries two different tokens, one in
// the header and one in the query: which one a proxy checked is unknown.
func tokenConflict(r *http.Request) error {
	q := r.URL.Query().Get("access_token")
	if q == "" || r.Header.Get("Authorization") == "" {
		return nil
	}
	if h, ok := bearerToken(r); !ok || subtle.ConstantTimeCompare([]byte(h), []byte(q)) != 1 {
		return domain.Errorf(domain.ErrCodeUnknownToken, "The Authorization header and the access_token parameter name different tokens")
	}
	return nil
}

// TokenFile authenticates with a YAML file of token hashes:
//
//	tokens:
//	  - user_id: "@alice:example.com"
//	    token_sha256: "<hex sha-256 of the token>"
//	    admin: false
//	    comment: "laptop"
//	    created: 2026-01-02T15:04:05Z
//	    expires: 2026-02-01T15:04:05Z   # optional
//
// Only hashes are stored, so the file does not hand out access if read. The
// file is checked for changes at most every tokenRecheck on requests, so a
// token issued or revoked (by profilestore token, or by editing the file)
// takes effect on a running server within that time.
type TokenFile struct {
	path    string
	mu      sync.RWMutex
	entries []tokenEntry
	byHash  map[[sha256.Size]byte]int
	loaded  os.FileInfo // the file as last read; nil if missing
	// checked is when the file was last compared with loaded (Unix ns).
	checked atomic.Int64
}

// tokenRecheck bounds how stale a running server's view of the tokens file
// can be: well under the second a revocation must take.
const tokenRecheck = 200 * time.Millisecond

type tokenEntry struct {
	UserID      domain.UserID `yaml:"user_id"`
	TokenSHA256 string        `yaml:"token_sha256"`
	Admin       bool          `yaml:"admin,omitempty"`
	// Comment is free text (who asked for the token, when).
	Comment string    `yaml:"comment,omitempty"`
	Created time.Time `yaml:"created,omitempty"`
	// Expires, if set, is when the token stops working.
	Expires time.Time `yaml:"expires,omitempty"`
	sum     [sha256.Size]byte
}

type tokenFileDoc struct {
	Tokens []tokenEntry `yaml:"tokens"`
}

// LoadTokenFile reads the file at path; a missing file is an empty one.
func LoadTokenFile(path string) (*TokenFile, error) {
	tf := &TokenFile{path: path}
	tf.checked.Store(time.Now().UnixNano())
	return tf, tf.Reload()
}

// readTokenDoc reads and checks a tokens file; a missing file is empty.
func readTokenDoc(path string) (tokenFileDoc, os.FileInfo, error) {
	var doc tokenFileDoc
	fi, _ := os.Stat(path)
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return doc, nil, nil
	} else if err != nil {
		return doc, nil, fmt.Errorf("read tokens file: %w", err)
	}
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return doc, nil, fmt.Errorf("tokens file %s: %w", path, err)
	}
	for i := range doc.Tokens {
		e := &doc.Tokens[i]
		if _, err := domain.ParseHistoricalUserID(string(e.UserID)); err != nil {
			return doc, nil, fmt.Errorf("tokens file %s: entry %d: %q is not a Matrix user id", path, i+1, e.UserID)
		}
		b, err := hex.DecodeString(e.TokenSHA256)
		if err != nil || len(b) != sha256.Size {
			return doc, nil, fmt.Errorf("tokens file %s: entry %d: token_sha256 is not 64 hex digits", path, i+1)
		}
		copy(e.sum[:], b)
	}
	return doc, fi, nil
}

// Reload re-reads the file. On an error the tokens loaded before stay in
// force (a file caught half-written by an editor is read again on the next
// check).
func (tf *TokenFile) Reload() error {
	doc, fi, err := readTokenDoc(tf.path)
	if err != nil {
		return err
	}
	byHash := make(map[[sha256.Size]byte]int, len(doc.Tokens))
	for i := range doc.Tokens {
		byHash[doc.Tokens[i].sum] = i
	}
	tf.mu.Lock()
	tf.entries, tf.byHash, tf.loaded = doc.Tokens, byHash, fi
	tf.mu.Unlock()
	return nil
}

// refresh re-reads the file if it changed since it was loaded; one request
// in each tokenRecheck interval pays for the stat.
func (tf *TokenFile) refresh() {
	now := time.Now().UnixNano()
	last := tf.checked.Load()
	if now-last < int64(tokenRecheck) || !tf.checked.CompareAndSwap(last, now) {
		return
	}
	fi, err := os.Stat(tf.path)
	tf.mu.RLock()
	loaded := tf.loaded
	tf.mu.RUnlock()
	switch {
	case err != nil && loaded == nil: // still missing
		return
	case err == nil && loaded != nil && os.SameFile(fi, loaded) && fi.ModTime().Equal(loaded.ModTime()) && fi.Size() == loaded.Size():
		return // profilestore token renames a new file into place: a new inode tells a change within one timestamp tick
	}
	_ = tf.Reload() // on an error the loaded tokens stay; the next check retries
}

// Authenticate looks the token's SHA-256 up and compares the hashes in
// constant time. The lookup's timing can only tell about the hash of a
// guess, never about a stored token.
func (tf *TokenFile) Authenticate(_ context.Context, token string) (Identity, error) {
	tf.refresh()
	sum := sha256.Sum256([]byte(token))
	tf.mu.RLock()
	defer tf.mu.RUnlock()
	found, ok := tf.byHash[sum]
	if !ok || subtle.ConstantTimeCompare(sum[:], tf.entries[found].sum[:]) != 1 {
		return Identity{}, domain.Errorf(domain.ErrCodeUnknownToken, "Unknown access token")
	}
	e := tf.entries[found]
	if !e.Expires.IsZero() && !time.Now().Before(e.Expires) {
		return Identity{}, domain.Errorf(domain.ErrCodeUnknownToken, "The access token has expired")
	}
	return Identity{User: e.UserID, Admin: e.Admin}, nil
}

// TokenSpec describes a token to issue.
type TokenSpec struct {
	User    domain.UserID
	Admin   bool
	Comment string
	// Expires is when the token stops working; zero for never.
	Expires time.Time
}

// IssueToken creates a random token for user, appends its hash to the file
// at path (created with mode 0600 if missing) and returns the token, which
// is shown once and stored nowhere.
func IssueToken(path string, user domain.UserID, admin bool, comment string) (string, error) {
	return IssueTokenFor(path, TokenSpec{User: user, Admin: admin, Comment: comment})
}

// IssueTokenFor is IssueToken with every option.
func IssueTokenFor(path string, spec TokenSpec) (string, error) {
	if _, err := domain.ParseUserID(string(spec.User)); err != nil {
		return "", err
	}
	var raw [32]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", err
	}
	token := "ps_" + hex.EncodeToString(raw[:])
	sum := sha256.Sum256([]byte(token))
	doc, _, err := readTokenDoc(path)
	if err != nil {
		return "", err
	}
	doc.Tokens = append(doc.Tokens, tokenEntry{UserID: spec.User, TokenSHA256: hex.EncodeToString(sum[:]), Admin: spec.Admin,
		Comment: spec.Comment, Created: time.Now().UTC().Truncate(time.Second), Expires: spec.Expires.UTC()})
	if err := writeTokenDoc(path, doc); err != nil {
		return "", err
	}
	return token, nil
}

// writeTokenDoc replaces the file atomically: a running server reads either
// the old or the new file, never a half-written one.
func writeTokenDoc(path string, doc tokenFileDoc) error {
	out, err := yaml.Marshal(doc)
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tokens-*.tmp")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(out); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// TokenInfo describes a stored token; the token itself is stored nowhere.
type TokenInfo struct {
	User    domain.UserID
	Admin   bool
	Comment string
	Created time.Time
	Expires time.Time
	// Hash is the hex SHA-256 of the token; its first digits name it in
	// "profilestore token revoke".
	Hash string
}

func (e tokenEntry) info() TokenInfo {
	return TokenInfo{User: e.UserID, Admin: e.Admin, Comment: e.Comment, Created: e.Created, Expires: e.Expires, Hash: e.TokenSHA256}
}

// ListTokens returns the tokens of the file, in the order they were issued.
func ListTokens(path string) ([]TokenInfo, error) {
	doc, _, err := readTokenDoc(path)
	if err != nil {
		return nil, err
	}
	out := make([]TokenInfo, len(doc.Tokens))
	for i, e := range doc.Tokens {
		out[i] = e.info()
	}
	return out, nil
}

// MinTokenHashPrefix is the shortest hash prefix RevokeTokens accepts.
const MinTokenHashPrefix = 6

// TokenMatch selects tokens to revoke: exactly one of its fields is set.
type TokenMatch struct {
	Token      string        // the token itself
	HashPrefix string        // leading hex digits of its SHA-256 (token list)
	User       domain.UserID // every token of the user
}

// RevokeTokens removes the matching tokens from the file and returns them.
// A prefix must name exactly one token; nothing matching is an error.
func RevokeTokens(path string, m TokenMatch) ([]TokenInfo, error) {
	doc, _, err := readTokenDoc(path)
	if err != nil {
		return nil, err
	}
	var match func(e tokenEntry) bool
	switch {
	case m.Token != "":
		sum := sha256.Sum256([]byte(m.Token))
		match = func(e tokenEntry) bool { return e.sum == sum }
	case m.HashPrefix != "":
		p := strings.ToLower(m.HashPrefix)
		if len(p) < MinTokenHashPrefix {
			return nil, fmt.Errorf("a hash prefix needs at least %d hex digits (from profilestore token list)", MinTokenHashPrefix)
		}
		if _, err := hex.DecodeString(p[:len(p)&^1]); err != nil {
			return nil, fmt.Errorf("%q is not a hash prefix (hex digits from profilestore token list)", m.HashPrefix)
		}
		match = func(e tokenEntry) bool { return strings.HasPrefix(e.TokenSHA256, p) }
	case m.User != "":
		match = func(e tokenEntry) bool { return e.UserID == m.User }
	default:
		return nil, errors.New("nothing selects the tokens to revoke")
	}
	var kept []tokenEntry
	var revoked []TokenInfo
	for _, e := range doc.Tokens {
		if match(e) {
			revoked = append(revoked, e.info())
		} else {
			kept = append(kept, e)
		}
	}
	switch {
	case len(revoked) == 0:
		return nil, errors.New("no token matches; profilestore token list shows them")
	case m.HashPrefix != "" && len(revoked) > 1:
		return nil, fmt.Errorf("the prefix %s matches %d tokens; give more digits", m.HashPrefix, len(revoked))
	}
	doc.Tokens = kept
	return revoked, writeTokenDoc(path, doc)
}
