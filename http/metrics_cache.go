package http

import (
	"github.com/profilestore/profilestore/domain"
	"github.com/prometheus/client_golang/prometheus"
)

// commandCaches exports the command side's aggregate caches (profiles,
// rooms): configured size, entries, hits, misses and evictions, read at
// scrape time.
type commandCaches struct {
	stats                                    map[string]func() domain.CacheStats
	capacity, entries, hits, misses, evicted *prometheus.Desc
}

func newCommandCaches(profiles *domain.ProfileService, rooms *domain.RoomService) *commandCaches {
	c := &commandCaches{stats: map[string]func() domain.CacheStats{}}
	if profiles != nil {
		c.stats["profiles"] = profiles.CacheStats
	}
	if rooms != nil {
		c.stats["rooms"] = rooms.CacheStats
	}
	desc := func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc("profilestore_command_cache_"+name, help, []string{"cache"}, nil)
	}
	c.capacity = desc("capacity", "Configured number of streams' states the command side keeps in memory (command_cache).")
	c.entries = desc("entries", "Streams' states the command side keeps in memory now.")
	c.hits = desc("hits_total", "Commands and reads that found the stream's state in memory.")
	c.misses = desc("misses_total", "Commands and reads that folded the stream's state from the store.")
	c.evicted = desc("evictions_total", "States dropped, least recently used first, to stay within the configured size.")
	return c
}

func (c *commandCaches) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.capacity, c.entries, c.hits, c.misses, c.evicted} {
		ch <- d
	}
}

func (c *commandCaches) Collect(ch chan<- prometheus.Metric) {
	for name, stats := range c.stats {
		s := stats()
		ch <- prometheus.MustNewConstMetric(c.capacity, prometheus.GaugeValue, float64(s.Capacity), name)
		ch <- prometheus.MustNewConstMetric(c.entries, prometheus.GaugeValue, float64(s.Size), name)
		ch <- prometheus.MustNewConstMetric(c.hits, prometheus.CounterValue, float64(s.Hits), name)
		ch <- prometheus.MustNewConstMetric(c.misses, prometheus.CounterValue, float64(s.Misses), name)
		ch <- prometheus.MustNewConstMetric(c.evicted, prometheus.CounterValue, float64(s.Evictions), name)
	}
}
