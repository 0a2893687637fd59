package main

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseStat(t *testing.T) {
	// The command name may hold spaces and parentheses.
	line := "4242 (a (b) c) S 17 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 9 0 123 0 0\n"
	cpu, ppid, err := parseStat([]byte(line))
	if err != nil || ppid != 17 || math.Abs(cpu-3.0) > 1e-9 {
		t.Fatalf("parseStat = %v, %d, %v; want 3 s, parent 17", cpu, ppid, err)
	}
	if _, _, err := parseStat([]byte("4242 (x) S 1")); err == nil {
		t.Fatal("a short line parsed")
	}
	// This process: its CPU time is readable.
	if _, _, err := procCPU(os.Getpid()); err != nil {
		t.Fatal(err)
	}
}

func TestSumCounter(t *testing.T) {
	text := `# HELP pseudonymizer_items_total Batch items evaluated.
# TYPE pseudonymizer_items_total counter
pseudonymizer_items_total{operation="Pseudonymize",outcome="ok"} 1200
pseudonymizer_items_total{operation="Pseudonymize",outcome="INVALID_POINT"} 3
pseudonymizer_items_total_other 99
pseudonymizer_items_totals{x="y"} 7
`
	got, err := sumCounter(strings.NewReader(text), "pseudonymizer_items_total")
	if err != nil || got != 1203 {
		t.Fatalf("sumCounter = %v, %v; want 1203", got, err)
	}
}

func TestCountRoundTrips(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	before := `{"request":{"path":"pseudonymizer-shares/multiply"},"type":"response"}` + "\n"
	after := `{"request":{"path":"pseudonymizer-shares/multiply"},"type":"request"}
{"request":{"path":"pseudonymizer-shares/multiply"},"response":{},"type":"response"}
{"request":{"path":"pseudonymizer/data/domains/x"},"type":"response"}
{"request":{"path":"pseudonymizer-shares/multiply"},"response":{},"type":"response"}
`
	if err := os.WriteFile(path, []byte(before+after), 0o600); err != nil {
		t.Fatal(err)
	}
	n, err := countRoundTrips(path, int64(len(before)), "pseudonymizer-shares/multiply")
	if err != nil || n != 2 {
		t.Fatalf("countRoundTrips = %d, %v; want 2", n, err)
	}
}

// TestReport: the per-item ratios and the three targets from records.
func TestReport(t *testing.T) {
	dir := t.TempDir()
	const sm = 50_000.0 // ns
	write := func(r record) string {
		t.Helper()
		b, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, r.Mode+"-"+r.Run+".json")
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	cpu := func(items, x float64) float64 { return items * x * sm / 1e9 }
	recs := []string{
		write(record{Mode: "split", Run: "low", Items: 100, CPUSec: map[string]float64{},
			Bench: bench{ScalarMultNs: sm, TargetCallsPerSec: 10, Batch: 1, Concurrency: 1, Calls: 100, P50Ms: 2.2}}),
		write(record{Mode: "single", Run: "low", Items: 100, CPUSec: map[string]float64{},
			Bench: bench{ScalarMultNs: sm, TargetCallsPerSec: 10, Batch: 1, Concurrency: 1, Calls: 100, P50Ms: 1.0}}),
		write(record{Mode: "split", Run: "1x8", Items: 1000, RoundTrips: 250,
			CPUSec: map[string]float64{"server": cpu(1000, 1.5), "plugin": cpu(1000, 1.5), "vault": cpu(1000, 2)},
			Bench:  bench{ScalarMultNs: sm, ItemsPerSec: 900}}),
		write(record{Mode: "split", Run: "100x2", Items: 10000, RoundTrips: 100,
			CPUSec: map[string]float64{"server": cpu(10000, 1.2), "plugin": cpu(10000, 1.0), "vault": cpu(10000, 0.1)},
			Bench:  bench{ScalarMultNs: sm * 1.1, ItemsPerSec: 7000}}),
		write(record{Mode: "single", Run: "100x2", Items: 10000,
			CPUSec: map[string]float64{"server": cpu(10000, 1.1), "plugin": 0, "vault": 0},
			Bench:  bench{ScalarMultNs: sm * 0.9, ItemsPerSec: 9000}}),
	}
	var out strings.Builder
	js := filepath.Join(dir, "summary.json")
	if err := reportCmd(append([]string{"-cores", "1", "-json", js, "-md", filepath.Join(dir, "s.md")}, recs...), &out); err != nil {
		t.Fatal(err)
	}
	var s summary
	b, err := os.ReadFile(js)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatal(err)
	}
	if s.ScalarMultNs != sm {
		t.Fatalf("ScalarMult %v, want the median %v", s.ScalarMultNs, sm)
	}
	want := []struct {
		value float64
		pass  bool
	}{
		{3.0, false}, // 1x8: server 1.5 + plugin 1.5
		{2.2, true},  // 100x2: 1.2 + 1.0
		{0.7, true},  // 7000 ÷ (1e9 ÷ 2 ÷ 50 µs = 10000)
		{1.2, true},  // 2.2 − 1.0 ms
	}
	if len(s.Targets) != len(want) {
		t.Fatalf("%d targets, want %d:\n%s", len(s.Targets), len(want), out.String())
	}
	for i, w := range want {
		if got := s.Targets[i]; math.Abs(got.Value-w.value) > 1e-9 || got.Pass != w.pass {
			t.Errorf("target %q = %v (pass %v), want %v (pass %v)", got.Name, got.Value, got.Pass, w.value, w.pass)
		}
	}
	if r := s.Rows[2]; r.PointsPerTrip != 4 || math.Abs(r.VaultX-2) > 1e-9 {
		t.Errorf("1x8: %v points per round trip, Vault %v ×SM; want 4 and 2", r.PointsPerTrip, r.VaultX)
	}
	if !strings.Contains(out.String(), "FAIL server + plugin CPU per item, split 1x8") {
		t.Errorf("no verdict in:\n%s", out.String())
	}
}

func TestOwnScalarMults(t *testing.T) {
	r := &record{Items: 1000, CPUSec: map[string]float64{"server": 0.1, "plugin": 0.08}}
	o, err := ownScalarMults(r, 0.75, 0.5)
	if err != nil {
		t.Fatal(err)
	}
	// 0.1 s × 0.75 ÷ 1000 items = 75 µs; 0.08 s × 0.5 ÷ 1000 = 40 µs.
	if math.Abs(o.serverSMNs-75e3) > 1e-6 || math.Abs(o.pluginSMNs-40e3) > 1e-6 {
		t.Fatalf("got %+v", o)
	}
	for _, bad := range []struct {
		r        *record
		srv, plg float64
	}{
		{&record{CPUSec: r.CPUSec}, 0.5, 0.5},
		{r, 0, 0.5},
		{r, 0.5, 1.5},
		{&record{Items: 10, CPUSec: map[string]float64{"server": 1}}, 0.5, 0.5},
	} {
		if _, err := ownScalarMults(bad.r, bad.srv, bad.plg); err == nil {
			t.Errorf("%+v, %v, %v: no error", bad.r, bad.srv, bad.plg)
		}
	}
}
