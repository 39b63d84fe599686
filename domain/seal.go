package domain

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"

	"github.com/profilestore/profilestore/eventstore"
)

// Sealed is a personal value (a name, an avatar, a field value) encrypted
// with its owner's data key, as it is stored in events: "s1.<generation>.<
// base64url(nonce || AES-256-GCM ciphertext)>". The owner's user id is the
// associated data, so a sealed value cannot be moved to another user.
// Destroying the owner's keys (erasure) leaves every sealed copy unreadable.
type Sealed string

// ErrErased is returned when a sealed value's key has been destroyed.
var ErrErased = errors.New("domain: value erased")

// maxCachedCiphers bounds the Sealer's cache of per-user ciphers.
const maxCachedCiphers = 100_000

// Sealer seals and opens personal values with per-user keys from a keyring.
type Sealer struct {
	keys eventstore.Keyring

	mu    sync.RWMutex
	aeads map[aeadKey]cipher.AEAD
	// moved: where the entries that imported hides name are in this store
	// (LoadMovedHides); Decode reads hides through it.
	moved map[movedKey]eventstore.Position
}

type aeadKey struct {
	user UserID
	gen  uint32
}

// NewSealer returns a Sealer over the keyring.
func NewSealer(keys eventstore.Keyring) *Sealer {
	return &Sealer{keys: keys, aeads: make(map[aeadKey]cipher.AEAD)}
}

// Seal encrypts plain for user with the user's current key.
func (s *Sealer) Seal(ctx context.Context, user UserID, plain []byte) (Sealed, error) {
	key, err := s.keys.Current(ctx, string(user))
	if err != nil {
		return "", fmt.Errorf("seal for %s: %w", user, err)
	}
	aead, err := s.aead(user, key)
	if err != nil {
		return "", err
	}
	buf := make([]byte, aead.NonceSize(), aead.NonceSize()+len(plain)+aead.Overhead())
	if _, err := rand.Read(buf); err != nil {
		return "", fmt.Errorf("seal nonce: %w", err)
	}
	buf = aead.Seal(buf, buf, plain, []byte(user))
	return Sealed("s1." + strconv.FormatUint(uint64(key.Generation), 10) + "." + base64.RawURLEncoding.EncodeToString(buf)), nil
}

// Open decrypts a value sealed for user; ErrErased if its key is destroyed.
func (s *Sealer) Open(ctx context.Context, user UserID, v Sealed) ([]byte, error) {
	rest, ok := strings.CutPrefix(string(v), "s1.")
	if !ok {
		return nil, fmt.Errorf("open sealed value: unknown format")
	}
	genStr, body, ok := strings.Cut(rest, ".")
	if !ok {
		return nil, fmt.Errorf("open sealed value: malformed")
	}
	gen, err := strconv.ParseUint(genStr, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("open sealed value: bad generation")
	}
	raw, err := base64.RawURLEncoding.DecodeString(body)
	if err != nil {
		return nil, fmt.Errorf("open sealed value: %w", err)
	}
	aead, err := s.aeadFor(ctx, user, uint32(gen))
	if err != nil {
		return nil, err
	}
	if len(raw) < aead.NonceSize() {
		return nil, fmt.Errorf("open sealed value: too short")
	}
	plain, err := aead.Open(nil, raw[:aead.NonceSize()], raw[aead.NonceSize():], []byte(user))
	if err != nil {
		return nil, fmt.Errorf("open sealed value for %s: %w", user, err)
	}
	return plain, nil
}

// FirstKeyGone reports whether the user's first key generation is gone:
// the user was erased at some time, or never had a value sealed. Keys are
// never destroyed one by one, so a user whose first key is alive was never
// erased; readers use it to skip looking for an erasure. It asks the
// keyring (which caches key states) and builds no cipher: a history page
// checks every user on it, and a cipher per user checked held 64 MiB of a
// served process's heap at a million users (bench scale).
func (s *Sealer) FirstKeyGone(ctx context.Context, user UserID) (bool, error) {
	s.mu.RLock()
	cached := s.aeads[aeadKey{user, 1}] != nil
	s.mu.RUnlock()
	if cached {
		return false, nil
	}
	_, err := s.keys.Lookup(ctx, string(user), 1)
	if errors.Is(err, eventstore.ErrKeyDestroyed) {
		return true, nil
	}
	if err != nil {
		return false, fmt.Errorf("data key of %s: %w", user, err)
	}
	return false, nil
}

// FirstKeysGone is FirstKeyGone for many users at once (gone[i] answers
// for users[i]), in one read of a keyring that can (eventstore.
// LiveKeyChecker): a page of history asks it for every user on the page.
func (s *Sealer) FirstKeysGone(ctx context.Context, users []UserID) ([]bool, error) {
	gone := make([]bool, len(users))
	var ask []int
	s.mu.RLock()
	for i, u := range users {
		if s.aeads[aeadKey{u, 1}] == nil {
			ask = append(ask, i)
		}
	}
	s.mu.RUnlock()
	if len(ask) == 0 {
		return gone, nil
	}
	checker, ok := s.keys.(eventstore.LiveKeyChecker)
	if !ok {
		for _, i := range ask {
			g, err := s.FirstKeyGone(ctx, users[i])
			if err != nil {
				return nil, err
			}
			gone[i] = g
		}
		return gone, nil
	}
	subjects := make([]string, len(ask))
	for j, i := range ask {
		subjects[j] = string(users[i])
	}
	live, err := checker.LiveKeys(ctx, subjects, 1)
	if err != nil {
		return nil, fmt.Errorf("data keys of %d users: %w", len(subjects), err)
	}
	for j, i := range ask {
		gone[i] = !live[j]
	}
	return gone, nil
}

// Forget drops the user's cached ciphers; call it when the keys are destroyed.
func (s *Sealer) Forget(user UserID) {
	s.mu.Lock()
	for k := range s.aeads {
		if k.user == user {
			delete(s.aeads, k)
		}
	}
	s.mu.Unlock()
}

func (s *Sealer) aeadFor(ctx context.Context, user UserID, gen uint32) (cipher.AEAD, error) {
	s.mu.RLock()
	aead := s.aeads[aeadKey{user, gen}]
	s.mu.RUnlock()
	if aead != nil {
		return aead, nil
	}
	key, err := s.keys.Lookup(ctx, string(user), gen)
	if errors.Is(err, eventstore.ErrKeyDestroyed) {
		return nil, ErrErased
	}
	if err != nil {
		return nil, fmt.Errorf("data key of %s: %w", user, err)
	}
	return s.aead(user, key)
}

func (s *Sealer) aead(user UserID, key eventstore.DataKey) (cipher.AEAD, error) {
	k := aeadKey{user, key.Generation}
	s.mu.RLock()
	aead := s.aeads[k]
	s.mu.RUnlock()
	if aead != nil {
		return aead, nil
	}
	block, err := aes.NewCipher(key.Secret[:])
	if err != nil {
		return nil, err
	}
	aead, err = cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	if len(s.aeads) >= maxCachedCiphers {
		// Bound memory with a million users: start over rather than track
		// recency; keys come back from the keyring's own cache or file.
		s.aeads = make(map[aeadKey]cipher.AEAD)
	}
	s.aeads[k] = aead
	s.mu.Unlock()
	return aead, nil
}
