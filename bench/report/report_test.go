package report

import (
	"bytes"
	"encoding/json"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ehealth-pseudo/pseudonymizer/bench/compare"
)

// sample is a pseudobench output in the shape cmd/pseudobench writes.
const sample = `{
  "tool": "pseudobench", "schema_version": 1, "started": "2026-01-02T03:04:05Z",
  "host": {"hostname": "h", "os": "linux", "arch": "amd64", "cpu": "Test CPU", "num_cpu": 2,
           "go_version": "go1.26", "loadavg_start": "0.10 0.20 0.30", "loadavg_end": "0.40 0.50 0.60"},
  "target": {"addr": "127.0.0.1:1", "tls": false, "op": "pseudonymize"},
  "cores": 2, "scalarmult_ns": 50000, "ceiling_items_per_s": 40000,
  "runs": [
    {"name": "pseudonymize b1 c1", "op": "pseudonymize", "batch": 1, "concurrency": 1, "calls": 100, "items_per_s": 8000,
     "latency_ms": {"p50": 0.2, "p90": 0.3, "p99": 0.5, "max": 1}, "x_ceiling": 0.2,
     "server_rss_peak_bytes": 25000000, "server_cpu_x_scalarmult": 3, "server_cpu_x_ceiling": 0.333},
    {"name": "pseudonymize b1 c8", "op": "pseudonymize", "batch": 1, "concurrency": 8, "calls": 100, "items_per_s": 18000,
     "latency_ms": {"p50": 0.4, "p90": 0.8, "p99": 2.5, "max": 3}, "x_ceiling": 0.45,
     "server_rss_peak_bytes": 26000000},
    {"name": "pseudonymize b100 c2", "op": "pseudonymize", "batch": 100, "concurrency": 2, "calls": 10, "items_per_s": 28000,
     "latency_ms": {"p50": 7, "p90": 9, "p99": 12, "max": 13}, "x_ceiling": 0.7,
     "server_rss_peak_bytes": 140000000, "server_cpu_x_ceiling": 0.8},
    {"name": "pseudonymize b1 c8 load0.5", "op": "pseudonymize", "batch": 1, "concurrency": 8, "load": 0.5,
     "target_calls_per_s": 9000, "calls": 100, "items_per_s": 9000,
     "latency_ms": {"p50": 0.3, "p90": 0.6, "p99": 1.5, "max": 2}, "x_ceiling": 0.225}
  ]
}`

func sampleInputs(t *testing.T) (*GRPC, json.RawMessage, *compare.Result) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "grpc.json")
	if err := os.WriteFile(path, []byte(sample), 0o600); err != nil {
		t.Fatal(err)
	}
	g := new(GRPC)
	raw, err := ReadJSON(path, g)
	if err != nil {
		t.Fatal(err)
	}
	c := &compare.Result{Rounds: 1, Clock: "wall", Cases: []*compare.Case{
		{Name: compare.ScalarMult, Batch: 1, NsPerItem: 50000, XScalarMult: 1},
		{Name: compare.CirclEvaluate, Batch: 1, NsPerItem: 65000, XScalarMult: 1.3},
		{Name: compare.OursPseudonymize, Batch: 1, NsPerItem: 60000, XScalarMult: 1.2, XCirclEvaluate: 0.92, XCirclWire: 0.8},
		{Name: compare.OursPseudonymize, Batch: 100, NsPerItem: 66000, XScalarMult: 1.32, XCirclEvaluate: 1.01, XCirclWire: 0.9},
	}}
	return g, raw, c
}

func TestTargets(t *testing.T) {
	g, raw, c := sampleInputs(t)
	s := New(g, raw, c, nil)
	want := map[string]bool{
		"server pseudonymize per item, transitInfo included": false, // 1.32 at batch 100
		"server pseudonymize per item vs circl":              false, // 1.01 at batch 100
		"gRPC batch-100 throughput":                          false, // 0.70
		"gRPC unary throughput":                              true,  // 0.45 with 8 callers
		"p99 unary latency at half load":                     true,  // 1.5 ms
		"server RSS at full load":                            false, // 133.5 MiB
	}
	if len(s.Targets) != len(want) {
		t.Fatalf("%d targets: %+v", len(s.Targets), s.Targets)
	}
	for _, tg := range s.Targets {
		w, ok := want[tg.Name]
		if !ok || tg.Met == nil || *tg.Met != w {
			t.Errorf("%s: met %v, want %v (%s)", tg.Name, tg.Met, w, tg.Measured)
		}
	}
	if none := New(nil, nil, nil, nil); len(none.Targets) != len(want) || none.Targets[0].Met != nil {
		t.Errorf("targets without inputs: %+v", none.Targets)
	}

	var js bytes.Buffer
	if err := s.WriteJSON(&js); err != nil {
		t.Fatal(err)
	}
	var back struct {
		Targets []Target        `json:"targets"`
		GRPC    json.RawMessage `json:"grpc"`
	}
	if err := json.Unmarshal(js.Bytes(), &back); err != nil || len(back.Targets) != len(want) || !bytes.Contains(back.GRPC, []byte("server_cpu_x_ceiling")) {
		t.Errorf("JSON round trip: %v\n%s", err, js.String())
	}
}

func TestMarkdown(t *testing.T) {
	g, raw, c := sampleInputs(t)
	var md bytes.Buffer
	if err := New(g, raw, c, nil).WriteMarkdown(&md, "throughput.png"); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"Test CPU", "| pseudonymize b100 c2 | 100 | 2 |", "0.10 0.20 0.30", "ours Pseudonymize", "![throughput and latency](throughput.png)", "**no**"} {
		if !strings.Contains(md.String(), s) {
			t.Errorf("markdown lacks %q:\n%s", s, md.String())
		}
	}
}

func TestChart(t *testing.T) {
	g, _, _ := sampleInputs(t)
	var img bytes.Buffer
	if err := WriteChart(&img, g, "png"); err != nil {
		t.Fatal(err)
	}
	cfg, err := png.DecodeConfig(&img)
	if err != nil || cfg.Width < 600 || cfg.Height < 300 {
		t.Errorf("PNG %dx%d, %v", cfg.Width, cfg.Height, err)
	}
	var svg bytes.Buffer
	if err := WriteChart(&svg, g, "svg"); err != nil || !strings.Contains(svg.String(), "<svg") {
		t.Errorf("SVG: %v", err)
	}
	if err := WriteChart(&svg, g, "gif"); err == nil {
		t.Error("no error for an unknown format")
	}
	if err := WriteChart(&svg, nil, "png"); err == nil {
		t.Error("no error without runs")
	}
	if FormatOf("a/b.PNG") != "png" {
		t.Error("FormatOf")
	}
}
