package grpcserver

import (
	"context"
	"io"
	"log/slog"
	"net/http/httptest"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/ehealth-pseudo/pseudonymizer/internal/auth"
	"github.com/ehealth-pseudo/pseudonymizer/internal/buildinfo"
	"github.com/ehealth-pseudo/pseudonymizer/keys"
)

// scrape returns the server's /metrics page.
func scrape(t *testing.T, s *Server) string {
	t.Helper()
	rec := httptest.NewRecorder()
	s.MetricsHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	b, _ := io.ReadAll(rec.Result().Body)
	return string(b)
}

// The server exports its build, and the freshness of each domain's keys
// when its key source is a keys.Cache.
func TestBuildInfoAndFreshnessMetrics(t *testing.T) {
	ctx := context.Background()
	fs, err := keys.OpenFileStore(filepath.Join(t.TempDir(), "keys.json"), true)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fs.EnsureDemo(ctx); err != nil {
		t.Fatal(err)
	}
	cache, err := keys.NewCache(ctx, fs, &keys.CacheOptions{Interval: time.Hour, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer cache.Close()
	s, err := New(Config{Keys: cache, Auth: auth.New(auth.Config{Dev: true}), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = s.Shutdown(ctx) }()

	page := scrape(t, s)
	in := buildinfo.Read()
	want := `pseudonymizer_build_info{go_version="` + in.GoVersion + `",revision="` + in.Revision + `",version="` + in.Version + `"} 1`
	if !strings.Contains(page, want+"\n") {
		t.Errorf("no %s in:\n%s", want, page)
	}
	m := regexp.MustCompile(`(?m)^pseudonymizer_keys_last_good_read_age_seconds\{domain="` + keys.DemoDomain + `"\} (\S+)$`).FindStringSubmatch(page)
	if m == nil {
		t.Fatalf("no freshness metric for %s in:\n%s", keys.DemoDomain, page)
	}
	// Loaded just now; a poll every hour.
	if age, err := strconv.ParseFloat(m[1], 64); err != nil || age < 0 || age > 60 {
		t.Fatalf("age %q, %v", m[1], err)
	}
}

// fresh is a FreshnessSource with fixed times.
type fresh map[string]time.Time

func (f fresh) Domains() []string              { return []string{"a_v1", "b_v1", "gone_v1"} }
func (f fresh) LastGood(name string) time.Time { return f[name] }

func TestFreshnessAge(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	m := newFreshnessMetrics(fresh{"a_v1": now.Add(-90 * time.Second), "b_v1": now.Add(-1500 * time.Millisecond)})
	m.now = func() time.Time { return now }
	want := `# HELP pseudonymizer_keys_last_good_read_age_seconds Seconds since the key store last confirmed the served keys of the domain (a poll or refresh that read it without error and took what it read).
# TYPE pseudonymizer_keys_last_good_read_age_seconds gauge
pseudonymizer_keys_last_good_read_age_seconds{domain="a_v1"} 90
pseudonymizer_keys_last_good_read_age_seconds{domain="b_v1"} 1.5
`
	// gone_v1, never confirmed, has no sample.
	if err := testutil.CollectAndCompare(m, strings.NewReader(want)); err != nil {
		t.Fatal(err)
	}
}
