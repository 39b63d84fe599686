package http

import (
	"context"
	"net/http"
	"strconv"
	"time"

	"github.com/profilestore/profilestore/eventstore"
	"github.com/profilestore/profilestore/projections"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics are the Prometheus metrics of one server (own registry, so tests
// can run many servers in one process).
type Metrics struct {
	Registry *prometheus.Registry
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
	// Append observes the store's append latency, as seen by the domain.
	Append prometheus.Histogram
}

// NewMetrics registers the server's metrics; store and runner feed the
// projection lag gauges.
func NewMetrics(store eventstore.Store, runner *projections.Runner) *Metrics {
	m := &Metrics{Registry: prometheus.NewRegistry()}
	m.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "profilestore_http_requests_total", Help: "HTTP requests by route template, method and status.",
	}, []string{"route", "method", "code"})
	m.latency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "profilestore_http_request_duration_seconds", Help: "HTTP request latency by route template.",
		Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
	}, []string{"route", "method"})
	m.Append = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "profilestore_append_duration_seconds", Help: "Latency of durable appends to the event store.",
		Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1},
	})
	m.Registry.MustRegister(m.requests, m.latency, m.Append,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if runner != nil {
		m.Registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "profilestore_projection_checkpoint", Help: "Commit position of the last event applied to the views.",
		}, func() float64 { return float64(runner.Checkpoint().Commit) }))
	}
	if store != nil && runner != nil {
		m.Registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "profilestore_projection_lag", Help: "Commit positions between the log's head and the views' checkpoint (events, on the embedded store).",
		}, func() float64 {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			head, err := store.Head(ctx)
			if err != nil {
				return -1
			}
			cp := runner.Checkpoint()
			if head.Commit < cp.Commit {
				return 0
			}
			return float64(head.Commit - cp.Commit)
		}))
	}
	return m
}

// Handler serves the metrics in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{})
}

func (m *Metrics) observeRequest(route, method string, status int, d time.Duration) {
	m.requests.WithLabelValues(route, method, strconv.Itoa(status)).Inc()
	m.latency.WithLabelValues(route, method).Observe(d.Seconds())
}
