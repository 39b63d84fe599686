package domain

import (
	"sync/atomic"

	"github.com/hashicorp/golang-lru/v2/simplelru"
)

// Default sizes of the command side's aggregate caches. A profile aggregate
// is a few hundred bytes; a room's grows with its members, so fewer rooms
// are kept.
const (
	DefaultCachedProfiles = 50_000
	DefaultCachedRooms    = 2_000
)

// ServiceOption configures a command service.
type ServiceOption func(*serviceOptions)

type serviceOptions struct {
	cacheSize int
}

// CacheSize bounds how many streams' states the service keeps in memory
// (least recently used go first; at least 1). A state not in the cache is
// folded from the store when a command needs it.
func CacheSize(n int) ServiceOption { return func(o *serviceOptions) { o.cacheSize = n } }

func applyOptions(cacheSize int, opts []ServiceOption) serviceOptions {
	o := serviceOptions{cacheSize: cacheSize}
	for _, opt := range opts {
		opt(&o)
	}
	o.cacheSize = max(o.cacheSize, 1)
	return o
}

// CacheStats describe a command service's aggregate cache, for /metrics.
type CacheStats struct {
	// Capacity is the configured size, Size the streams cached now.
	Capacity, Size int
	// Hits and Misses count commands and reads that found the stream's
	// state in memory or had to fold it from the store; Evictions count the
	// states dropped to stay within Capacity.
	Hits, Misses, Evictions uint64
}

// aggregateCache is a bounded LRU of aggregates; callers hold streams.mu.
type aggregateCache[S any] struct {
	lru                     *simplelru.LRU[string, *aggregate[S]]
	capacity                int
	hits, misses, evictions atomic.Uint64
}

func newAggregateCache[S any](capacity int) *aggregateCache[S] {
	c := &aggregateCache[S]{capacity: capacity}
	lru, err := simplelru.NewLRU[string, *aggregate[S]](capacity, func(string, *aggregate[S]) { c.evictions.Add(1) })
	if err != nil {
		panic(err) // only for a size below 1, which applyOptions rules out
	}
	c.lru = lru
	return c
}

// peek returns the cached aggregate of stream without marking it used
// (add does that).
func (c *aggregateCache[S]) peek(stream string) *aggregate[S] {
	agg, _ := c.lru.Peek(stream)
	return agg
}

// add caches agg as the most recently used, evicting the least recently
// used beyond capacity.
func (c *aggregateCache[S]) add(stream string, agg *aggregate[S]) { c.lru.Add(stream, agg) }

// stats needs streams.mu for the size.
func (c *aggregateCache[S]) stats() CacheStats {
	return CacheStats{Capacity: c.capacity, Size: c.lru.Len(), Hits: c.hits.Load(), Misses: c.misses.Load(), Evictions: c.evictions.Load()}
}
