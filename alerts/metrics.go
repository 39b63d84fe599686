package alerts

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the alerts' Prometheus metrics, served at /metrics.
type Metrics struct {
	raisedTotal    *prometheus.CounterVec
	deliveredTotal *prometheus.CounterVec
	failedTotal    *prometheus.CounterVec
	backlog        *prometheus.GaugeVec
	latency        *prometheus.HistogramVec
}

// NewMetrics returns unregistered metrics; Collectors lists them.
func NewMetrics() *Metrics {
	return &Metrics{
		raisedTotal: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "profilestore_alerts_raised_total",
			Help: "Alerts recorded, by rule."}, []string{"rule"}),
		deliveredTotal: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "profilestore_alert_deliveries_total",
			Help: "Alerts delivered, by sink."}, []string{"sink"}),
		failedTotal: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "profilestore_alert_delivery_failures_total",
			Help: "Failed delivery attempts (each is retried), by sink."}, []string{"sink"}),
		backlog: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "profilestore_alert_delivery_backlog",
			Help: "Alerts recorded but not yet delivered, by sink."}, []string{"sink"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "profilestore_alert_delivery_seconds",
			Help: "Time from an alert's trigger to its delivery, by sink.", Buckets: prometheus.ExponentialBuckets(0.05, 4, 8)}, []string{"sink"}),
	}
}

// Collectors lists the metrics for a registry.
func (m *Metrics) Collectors() []prometheus.Collector {
	return []prometheus.Collector{m.raisedTotal, m.deliveredTotal, m.failedTotal, m.backlog, m.latency}
}

func (m *Metrics) raised(rule string) {
	if m != nil {
		m.raisedTotal.WithLabelValues(rule).Inc()
	}
}
