package http

import (
	"sync"
	"time"

	"github.com/profilestore/profilestore/domain"
	"golang.org/x/time/rate"
)

// writeLimiter is a token bucket per user. Buckets idle for long enough to be
// full again are dropped, so memory follows active writers only.
type writeLimiter struct {
	limit rate.Limit
	burst int

	mu      sync.Mutex
	buckets map[domain.UserID]*bucket
	swept   time.Time
}

type bucket struct {
	lim  *rate.Limiter
	last time.Time
}

func newWriteLimiter(perSecond float64, burst int) *writeLimiter {
	if burst <= 0 {
		burst = int(perSecond) + 1
	}
	return &writeLimiter{limit: rate.Limit(perSecond), burst: burst, buckets: make(map[domain.UserID]*bucket), swept: time.Now()}
}

// allow takes a token for user, or says how long until one is available.
func (l *writeLimiter) allow(user domain.UserID) (time.Duration, bool) {
	if l.limit <= 0 {
		return 0, true
	}
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.swept) > time.Minute {
		full := time.Duration(float64(l.burst)/float64(l.limit)*float64(time.Second)) + time.Second
		for u, b := range l.buckets {
			if now.Sub(b.last) > full {
				delete(l.buckets, u)
			}
		}
		l.swept = now
	}
	b := l.buckets[user]
	if b == nil {
		b = &bucket{lim: rate.NewLimiter(l.limit, l.burst)}
		l.buckets[user] = b
	}
	b.last = now
	r := b.lim.ReserveN(now, 1)
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return d, false
	}
	return 0, true
}
