package appservice

import "github.com/prometheus/client_golang/prometheus"

// supplierMetrics are per appservice, labelled by its registration id.
type supplierMetrics struct {
	requests    *prometheus.CounterVec
	duration    *prometheus.HistogramVec
	circuitOpen *prometheus.GaugeVec
}

func newSupplierMetrics() *supplierMetrics {
	return &supplierMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "profilestore_msc4337_requests_total",
			Help: "MSC4337 profile supplement calls by appservice and outcome (ok, not_found, timeout, bad_status, malformed, oversized, transport_error, circuit_open).",
		}, []string{"appservice", "outcome"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "profilestore_msc4337_request_duration_seconds",
			Help:    "Latency of MSC4337 profile supplement calls by appservice.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}, []string{"appservice"}),
		circuitOpen: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "profilestore_msc4337_circuit_open",
			Help: "1 while an appservice's circuit breaker keeps profile reads from asking it.",
		}, []string{"appservice"}),
	}
}

func (m *supplierMetrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.requests, m.duration, m.circuitOpen}
}

// ingestMetrics count what incoming transactions brought.
type ingestMetrics struct {
	transactions *prometheus.CounterVec
	events       *prometheus.CounterVec
}

func newIngestMetrics() *ingestMetrics {
	return &ingestMetrics{
		transactions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "profilestore_appservice_transactions_total",
			Help: "Appservice transactions received, by result (processed, duplicate, failed).",
		}, []string{"result"}),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "profilestore_appservice_events_total",
			Help: "Events in appservice transactions, by type and result (applied, unchanged, duplicate, stale, ignored, malformed).",
		}, []string{"type", "result"}),
	}
}

func (m *ingestMetrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.transactions, m.events}
}
