package grpcserver

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ehealth-pseudo/pseudonymizer/internal/audit"
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
