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
	// The engine's memory: block cache, open tables, memtables.
	blockBytes, blockHits, blockMisses *prometheus.Desc
	fileCacheBytes, openTables         *prometheus.Desc
	memtableBytes                      *prometheus.Desc
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
		blockBytes: prometheus.NewDesc("profilestore_view_store_block_cache_bytes",
			"Bytes the view store's block cache holds (at most views.block_cache_mb).", nil, nil),
		blockHits:   prometheus.NewDesc("profilestore_view_store_block_cache_hits_total", "Block reads the view store's block cache answered.", nil, nil),
		blockMisses: prometheus.NewDesc("profilestore_view_store_block_cache_misses_total", "Block reads that went to the view store's files.", nil, nil),
		fileCacheBytes: prometheus.NewDesc("profilestore_view_store_table_readers_bytes",
			"Memory of the view store's open table readers.", nil, nil),
		openTables: prometheus.NewDesc("profilestore_view_store_open_tables", "Table files the view store holds open.", nil, nil),
		memtableBytes: prometheus.NewDesc("profilestore_view_store_memtable_bytes",
			"Bytes of the view store's memtables (writes not yet flushed to its files).", nil, nil),
	}}
}

func (m *viewMetrics) Describe(ch chan<- *prometheus.Desc) {
	ch <- m.entries
	ch <- m.capacity
	ch <- m.hits
	ch <- m.misses
	ch <- m.diskBytes
	for _, d := range []*prometheus.Desc{m.blockBytes, m.blockHits, m.blockMisses, m.fileCacheBytes, m.openTables, m.memtableBytes} {
		ch <- d
	}
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
		if e, ok := m.db.EngineStats(); ok {
			ch <- prometheus.MustNewConstMetric(m.blockBytes, prometheus.GaugeValue, float64(e.BlockCacheBytes))
			ch <- prometheus.MustNewConstMetric(m.blockHits, prometheus.CounterValue, float64(e.BlockCacheHits))
			ch <- prometheus.MustNewConstMetric(m.blockMisses, prometheus.CounterValue, float64(e.BlockCacheMisses))
			ch <- prometheus.MustNewConstMetric(m.fileCacheBytes, prometheus.GaugeValue, float64(e.FileCacheBytes))
			ch <- prometheus.MustNewConstMetric(m.openTables, prometheus.GaugeValue, float64(e.OpenTables))
			ch <- prometheus.MustNewConstMetric(m.memtableBytes, prometheus.GaugeValue, float64(e.MemTableBytes))
		}
	}
}
