package projections

import "sync/atomic"

// CacheStats counts one view cache's use, for /metrics.
type CacheStats struct {
	// Name is the cache's name in metrics.
	Name string
	// Capacity is the most entries the cache keeps.
	Capacity     int
	len          func() int
	hits, misses atomic.Uint64
}

func newCacheStats(name string, capacity int, length func() int) *CacheStats {
	return &CacheStats{Name: name, Capacity: capacity, len: length}
}

func (c *CacheStats) hit()  { c.hits.Add(1) }
func (c *CacheStats) miss() { c.misses.Add(1) }

// Len is how many entries the cache holds now.
func (c *CacheStats) Len() int { return c.len() }

// Hits is how many reads the cache answered.
func (c *CacheStats) Hits() uint64 { return c.hits.Load() }

// Misses is how many reads went to the view store.
func (c *CacheStats) Misses() uint64 { return c.misses.Load() }
