package http

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/profilestore/profilestore/projections"
)

// viewMetrics reports the view caches and the view store's size at each
// scrape.
type viewMetrics struct {
	db                              *projections.DB
	caches                          []*projections.CacheStats
	entries, capacity, hits, misses *prometheus.Desc
	diskBytes                       *prometheus.Desc
}

// ViewMetrics returns the collectors of the views' memory and disk use: for
// each cache its entries, capacity, hits and misses, and the view store's
// bytes on disk.
func ViewMetrics(db *projections.DB, caches ...*projections.CacheStats) []prometheus.Collector {
	label := []string{"cache"}
	return []prometheus.Collector{&viewMetrics{db: db, caches: caches,
		entries:   prometheus.NewDesc("profilestore_view_cache_entries", "Decoded objects a view cache holds.", label, nil),
		capacity:  prometheus.NewDesc("profilestore_view_cache_capacity", "The most objects a view cache keeps.", label, nil),
		hits:      prometheus.NewDesc("profilestore_view_cache_hits_total", "Reads a view cache answered.", label, nil),
		misses:    prometheus.NewDesc("profilestore_view_cache_misses_total", "Reads that went to the view store.", label, nil),
		diskBytes: prometheus.NewDesc("profilestore_view_store_bytes", "Bytes of the view store's files on disk.", nil, nil),
	}}
}

func (m *viewMetrics) Describe(ch chan<- *prometheus.Desc) {
	ch <- m.entries
	ch <- m.capacity
	ch <- m.hits
	ch <- m.misses
	ch <- m.diskBytes
}

func (m *viewMetrics) Collect(ch chan<- prometheus.Metric) {
	for _, c := range m.caches {
		ch <- prometheus.MustNewConstMetric(m.entries, prometheus.GaugeValue, float64(c.Len()), c.Name)
		ch <- prometheus.MustNewConstMetric(m.capacity, prometheus.GaugeValue, float64(c.Capacity), c.Name)
		ch <- prometheus.MustNewConstMetric(m.hits, prometheus.CounterValue, float64(c.Hits()), c.Name)
		ch <- prometheus.MustNewConstMetric(m.misses, prometheus.CounterValue, float64(c.Misses()), c.Name)
	}
	if m.db != nil {
		ch <- prometheus.MustNewConstMetric(m.diskBytes, prometheus.GaugeValue, float64(m.db.DiskBytes()))
	}
}
