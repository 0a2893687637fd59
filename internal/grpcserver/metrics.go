package grpcserver

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ehealth-pseudo/pseudonymizer/internal/audit"
	"github.com/ehealth-pseudo/pseudonymizer/internal/buildinfo"
	"github.com/ehealth-pseudo/pseudonymizer/keys"
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

// newBuildInfo is the gauge pseudonymizer_build_info, always 1, whose
// labels say which build runs.
func newBuildInfo() prometheus.Collector {
	in := buildinfo.Read()
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "pseudonymizer_build_info",
		Help: "Always 1; the labels are the module version, VCS revision and Go version of the running build.",
		ConstLabels: prometheus.Labels{
			"version":    in.Version,
			"revision":   in.Revision,
			"go_version": in.GoVersion,
		},
	})
	g.Set(1)
	return g
}

// FreshnessSource is implemented by a [KeySource] that knows when the key
// store last confirmed each domain it serves (*keys.Cache). The server
// then exports pseudonymizer_keys_last_good_read_age_seconds.
type FreshnessSource interface {
	// Domains lists the served domains.
	Domains() []string
	// LastGood is when the store last confirmed the served version of a
	// domain; the zero time when unknown.
	LastGood(domain string) time.Time
}

var _ FreshnessSource = (*keys.Cache)(nil)

// freshnessMetrics exports, per served domain, the age of the last read of
// the key store that confirmed the domain's keys (keys.Cache.LastGood):
// it grows by the poll interval and falls back at each good poll, and keeps
// growing while the store cannot be read or the domain's newest version is
// refused. Alert when it exceeds a few poll intervals.
type freshnessMetrics struct {
	src FreshnessSource
	age *prometheus.Desc
	now func() time.Time
}

func newFreshnessMetrics(src FreshnessSource) *freshnessMetrics {
	return &freshnessMetrics{
		src: src,
		age: prometheus.NewDesc("pseudonymizer_keys_last_good_read_age_seconds",
			"Seconds since the key store last confirmed the served keys of the domain (a poll or refresh that read it without error and took what it read).",
			[]string{"domain"}, nil),
		now: time.Now,
	}
}

// Describe implements prometheus.Collector.
func (m *freshnessMetrics) Describe(ch chan<- *prometheus.Desc) { ch <- m.age }

// Collect implements prometheus.Collector.
func (m *freshnessMetrics) Collect(ch chan<- prometheus.Metric) {
	now := m.now()
	for _, d := range m.src.Domains() {
		t := m.src.LastGood(d)
		if t.IsZero() {
			continue
		}
		ch <- prometheus.MustNewConstMetric(m.age, prometheus.GaugeValue, max(0, now.Sub(t).Seconds()), d)
	}
}
