package integrity

import (
	"context"
	"crypto/ed25519"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/profilestore/profilestore/eventstore"
)

// CheckStatus is the outcome of the online check, for the console:
// "history verified up to seal N, at T".
type CheckStatus struct {
	Running bool `json:"running"`
	// Checked is when the last check finished (zero: never).
	Checked time.Time `json:"checked,omitzero"`
	// VerifiedSeal is the last seal the checks verified, 0 if none.
	VerifiedSeal uint64    `json:"verified_seal"`
	SealedAt     time.Time `json:"sealed_at,omitzero"`
	Events       uint64    `json:"events"`
	// Breaks found by the last check (at most MaxReportedBreaks).
	Breaks []Break `json:"breaks"`
	Error  string  `json:"error,omitempty"`
}

// MaxReportedBreaks bounds the breaks an online check keeps; the command
// line verify reports all of them.
const MaxReportedBreaks = 100

// Checker runs verification online, in the background, one check at a
// time. After a clean check the next one starts at the last verified seal
// (verify --since), so repeated checks cost only what is new.
type Checker struct {
	store eventstore.Store
	keys  []ed25519.PublicKey
	log   logrus.FieldLogger

	mu     sync.Mutex
	status CheckStatus
}

// NewChecker returns a checker over the store with the trusted keys.
func NewChecker(store eventstore.Store, keys []ed25519.PublicKey, log logrus.FieldLogger) *Checker {
	if log == nil {
		log = logrus.StandardLogger()
	}
	return &Checker{store: store, keys: keys, log: log, status: CheckStatus{Breaks: []Break{}}}
}

// Keys are the public keys the checker trusts, the current one first.
func (c *Checker) Keys() []ed25519.PublicKey { return c.keys }

// Status returns the state of the last check.
func (c *Checker) Status() CheckStatus {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.status
	s.Breaks = append([]Break{}, s.Breaks...)
	return s
}

// Start begins a check unless one is running; it reports whether it did.
// The check runs until done or until ctx ends.
func (c *Checker) Start(ctx context.Context) bool {
	c.mu.Lock()
	if c.status.Running {
		c.mu.Unlock()
		return false
	}
	c.status.Running = true
	since := uint64(0)
	if len(c.status.Breaks) == 0 && c.status.Error == "" {
		since = c.status.VerifiedSeal
	}
	c.mu.Unlock()
	go func() {
		r, err := VerifyStore(ctx, c.store, c.keys, since, nil, nil)
		c.mu.Lock()
		defer c.mu.Unlock()
		c.status.Running, c.status.Checked, c.status.Error = false, time.Now().UTC(), ""
		if err != nil {
			c.status.Error = err.Error()
			c.log.WithError(err).Warn("integrity: online check failed")
			return
		}
		c.status.Events = r.Events
		if r.LastSeal != nil {
			c.status.VerifiedSeal, c.status.SealedAt = r.LastSeal.Seq, r.LastSeal.SealedAt
		}
		c.status.Breaks = r.Breaks[:min(len(r.Breaks), MaxReportedBreaks)]
		if len(r.Breaks) > 0 {
			c.log.WithField("breaks", len(r.Breaks)).WithField("first", r.Breaks[0].String()).Error("integrity: the online check found breaks in the history")
		}
	}()
	return true
}
