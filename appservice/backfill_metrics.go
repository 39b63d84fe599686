package appservice

import "github.com/prometheus/client_golang/prometheus"

// BackfillMetrics show a backfill's progress in /metrics. A nil
// *BackfillMetrics counts nothing (the command line has no /metrics).
type BackfillMetrics struct {
	runningG    prometheus.Gauge
	rooms       *prometheus.GaugeVec
	done        *prometheus.GaugeVec
	eventsC     *prometheus.CounterVec
	rateLimited prometheus.Counter
	problems    *prometheus.GaugeVec
}

// NewBackfillMetrics returns the metrics; register Collectors.
func NewBackfillMetrics() *BackfillMetrics {
	return &BackfillMetrics{
		runningG: prometheus.NewGauge(prometheus.GaugeOpts{Name: "profilestore_backfill_running",
			Help: "1 while a backfill from the homeserver runs."}),
		rooms: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "profilestore_backfill_rooms",
			Help: "Rooms of the running (or last) backfill, by phase (survey, write)."}, []string{"phase"}),
		done: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "profilestore_backfill_rooms_done",
			Help: "Rooms through each phase of the running (or last) backfill."}, []string{"phase"}),
		eventsC: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "profilestore_backfill_events_total",
			Help: "Homeserver events a backfill read while recording, by result (read, recorded, skipped)."}, []string{"result"}),
		rateLimited: prometheus.NewCounter(prometheus.CounterOpts{Name: "profilestore_backfill_rate_limited_total",
			Help: "429 answers of the homeserver a backfill waited out."}),
		problems: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "profilestore_backfill_problems",
			Help: "Rooms the last backfill could not read (unreadable), read in part (incomplete), and users whose rooms it could not list (users)."}, []string{"kind"}),
	}
}

// Collectors returns the metrics to register.
func (m *BackfillMetrics) Collectors() []prometheus.Collector {
	return []prometheus.Collector{m.runningG, m.rooms, m.done, m.eventsC, m.rateLimited, m.problems}
}

func (m *BackfillMetrics) running(on bool) {
	if m == nil {
		return
	}
	v := 0.0
	if on {
		v = 1
	}
	m.runningG.Set(v)
}

func (m *BackfillMetrics) phase(phase string, total, done int) {
	if m == nil {
		return
	}
	m.rooms.WithLabelValues(phase).Set(float64(total))
	m.done.WithLabelValues(phase).Set(float64(done))
}

func (m *BackfillMetrics) events(read, recorded int64) {
	if m == nil {
		return
	}
	m.eventsC.WithLabelValues("read").Add(float64(read))
	m.eventsC.WithLabelValues("recorded").Add(float64(recorded))
}

func (m *BackfillMetrics) skipped() {
	if m != nil {
		m.eventsC.WithLabelValues("skipped").Inc()
	}
}

// RateLimited counts a 429 waited out (HomeserverClient.OnRateLimited).
func (m *BackfillMetrics) RateLimited() {
	if m != nil {
		m.rateLimited.Inc()
	}
}

func (m *BackfillMetrics) report(r BackfillReport) {
	if m == nil {
		return
	}
	m.problems.WithLabelValues("unreadable").Set(float64(len(r.Unreadable)))
	m.problems.WithLabelValues("incomplete").Set(float64(len(r.Incomplete)))
	m.problems.WithLabelValues("users").Set(float64(len(r.Users)))
}
