package grpcserver

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ehealth-pseudo/pseudonymizer/internal/audit"
	"github.com/ehealth-pseudo/pseudonymizer/pseudonymizer"
)

// itemMetrics counts the items evaluated, by operation and outcome ("ok"
// or the ErrorReason name of the failure). Labels take fixed values only.
type itemMetrics struct {
	items *prometheus.CounterVec
}

func newItemMetrics() *itemMetrics {
	return &itemMetrics{items: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "pseudonymizer_items_total",
		Help: "Batch items evaluated, by operation and outcome (ok or the ErrorReason of the item's failure).",
	}, []string{"operation", "outcome"})}
}

// observe is an audit observer.
func (m *itemMetrics) observe(s *audit.Summary) {
	op := s.Operation()
	failed := 0
	for reason, n := range s.ItemErrors {
		m.items.WithLabelValues(op, reason).Add(float64(n))
		failed += n
	}
	if ok := s.Items - failed; ok > 0 {
		m.items.WithLabelValues(op, "ok").Add(float64(ok))
	}
}

// Describe implements prometheus.Collector.
func (m *itemMetrics) Describe(ch chan<- *prometheus.Desc) { m.items.Describe(ch) }

// Collect implements prometheus.Collector.
func (m *itemMetrics) Collect(ch chan<- prometheus.Metric) { m.items.Collect(ch) }

// sealMetrics exports the seal counts of the transit keys: how close each
// key is to the limit that makes the service refuse to seal under it.
type sealMetrics struct {
	seals      *pseudonymizer.SealLimiter
	count, lim *prometheus.Desc
}

func newSealMetrics(l *pseudonymizer.SealLimiter) *sealMetrics {
	return &sealMetrics{
		seals: l,
		count: prometheus.NewDesc("pseudonymizer_transit_seals_total",
			"transitInfo values sealed by this process under each transit key (AES-GCM random nonces).",
			[]string{"domain", "kid"}, nil),
		lim: prometheus.NewDesc("pseudonymizer_transit_seal_limit",
			"Seals per transit key after which this process refuses to seal (ERROR_REASON_TRANSIT_KEY_EXHAUSTED) until the key is rotated.",
			nil, nil),
	}
}

// Describe implements prometheus.Collector.
func (m *sealMetrics) Describe(ch chan<- *prometheus.Desc) { ch <- m.count; ch <- m.lim }

// Collect implements prometheus.Collector.
func (m *sealMetrics) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(m.lim, prometheus.GaugeValue, float64(m.seals.Limit()))
	for _, c := range m.seals.Counts() {
		ch <- prometheus.MustNewConstMetric(m.count, prometheus.CounterValue, float64(c.Seals), c.Domain, c.Kid)
	}
}
