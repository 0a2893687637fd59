package report

import (
	"bytes"
	"encoding/json"
	"image/png"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/ehealth-pseudo/pseudonymizer/bench/compare"
)

// sample is a pseudobench output in the shape cmd/pseudobench writes.
const sample = `{
  "tool": "pseudobench", "schema_version": 2, "started": "2026-01-02T03:04:05Z",
  "host": {"hostname": "h", "os": "linux", "arch": "amd64", "cpu": "Test CPU", "num_cpu": 2,
           "go_version": "go1.26", "loadavg_start": "0.10 0.20 0.30", "loadavg_end": "0.40 0.50 0.60", "cpus_allowed": "1"},
  "target": {"addr": "127.0.0.1:1", "tls": false, "ops": ["pseudonymize", "identify", "mix"]},
  "pinning": "pinned: server cpu 0, generator cpu 1",
  "cores": 2, "scalarmult_ns": 50000, "ceiling_items_per_s": 40000,
  "runs": [
    {"name": "pseudonymize b1 c1", "op": "pseudonymize", "batch": 1, "concurrency": 1, "calls": 100, "items_per_s": 8000,
     "latency_ms": {"p50": 0.2, "p90": 0.3, "p99": 0.5, "max": 1}, "x_ceiling": 0.2,
     "server_rss_peak_bytes": 25000000, "server_cpu_x_scalarmult": 3, "server_cpu_x_ceiling": 0.333},
    {"name": "pseudonymize b1 c8", "op": "pseudonymize", "batch": 1, "concurrency": 8, "calls": 100, "items_per_s": 18000,
     "latency_ms": {"p50": 0.4, "p90": 0.8, "p99": 2.5, "max": 3}, "x_ceiling": 0.45,
     "server_rss_peak_bytes": 26000000, "server_cpu_x_scalarmult": 1.7},
    {"name": "pseudonymize-stream b1 c4", "op": "pseudonymize-stream", "batch": 1, "concurrency": 4, "calls": 100, "items_per_s": 20000,
     "latency_ms": {"p50": 0.4, "p90": 0.8, "p99": 2.5, "max": 3}, "x_ceiling": 0.5, "server_cpu_x_scalarmult": 1.4},
    {"name": "pseudonymize b100 c2", "op": "pseudonymize", "batch": 100, "concurrency": 2, "calls": 10, "items_per_s": 28000,
     "latency_ms": {"p50": 7, "p90": 9, "p99": 12, "max": 13}, "x_ceiling": 0.7,
     "server_rss_peak_bytes": 140000000, "server_cpu_x_ceiling": 0.8, "server_cpu_x_scalarmult": 1.2},
    {"name": "pseudonymize b1 c8 load0.5", "op": "pseudonymize", "batch": 1, "concurrency": 8, "load": 0.5,
     "target_calls_per_s": 9000, "calls": 100, "items_per_s": 9000,
     "latency_ms": {"p50": 0.3, "p90": 0.6, "p99": 1.5, "max": 2}, "x_ceiling": 0.225},
    {"name": "identify b1 c8 load0.5", "op": "identify", "batch": 1, "concurrency": 8, "load": 0.5,
     "target_calls_per_s": 9000, "calls": 100, "items_per_s": 9000,
     "latency_ms": {"p50": 3, "p90": 6, "p99": 15, "max": 20}, "x_ceiling": 0.225},
    {"name": "identify b100 c2", "op": "identify", "batch": 100, "concurrency": 2, "calls": 10, "items_per_s": 39000,
     "latency_ms": {"p50": 7, "p90": 9, "p99": 12, "max": 13}, "x_ceiling": 0.975, "server_cpu_x_scalarmult": 1.22},
    {"name": "convert b100 c2", "op": "convert", "batch": 100, "concurrency": 2, "calls": 10, "items_per_s": 30000,
     "latency_ms": {"p50": 7, "p90": 9, "p99": 12, "max": 13}, "x_ceiling": 0.75, "server_cpu_x_scalarmult": 1.3},
    {"name": "sdk-pseudonymize b1 c1", "op": "sdk-pseudonymize", "batch": 1, "concurrency": 1, "calls": 2000, "items_per_s": 1900,
     "latency_ms": {"p50": 0.5, "p90": 0.6, "p99": 1.7, "max": 3}, "x_ceiling": 0.08, "server_cpu_x_scalarmult": 8.3,
     "sdk": {"cache": false, "kind": "niss", "calls": 2200, "items": 2200, "distinct_items": 2200, "server_calls": 2200, "server_items": 2200,
             "client_cpu_call_x_scalarmult": 7.1, "client_cpu_x_scalarmult": 7.1, "client_cpu_distinct_x_scalarmult": 7.1, "crypto_x_scalarmult": 2.6}},
    {"name": "sdk-cached b1 c100", "op": "sdk-cached", "batch": 1, "concurrency": 100, "calls": 5000, "items_per_s": 5000,
     "latency_ms": {"p50": 15, "p90": 40, "p99": 80, "max": 90}, "x_ceiling": 0.25, "server_cpu_x_scalarmult": 4.5,
     "sdk": {"cache": true, "kind": "niss", "working_set": 1000, "repeat_share": 0.5, "calls": 6000, "items": 6000, "distinct_items": 3000,
             "cache_hits": 2500, "merged": 400, "hit_rate": 0.41667, "local_share": 0.48333, "server_calls": 3100, "server_items": 3100,
             "client_cpu_call_x_scalarmult": 2.3, "client_cpu_x_scalarmult": 2.3, "client_cpu_distinct_x_scalarmult": 4.6, "crypto_x_scalarmult": 2.55}}
  ],
  "mix": {"arrivals": "poisson", "identify_share": 0.2, "items_min": 1, "items_max": 3, "callers": 64, "p99_bound_ms": 5,
          "search": true, "max_calls_per_s": 1500, "max_items_per_s": 3000, "failed_calls_per_s": 1560, "converged": true,
          "max_latency_ms": {"p50": 0.5, "p99": 4.5, "p999": 6},
          "steps": [
            {"name": "mix @1000/s", "op": "mix", "target_calls_per_s": 1000, "calls": 5000, "calls_per_s": 1000, "items_per_s": 2000,
             "latency_ms": {"p50": 0.4, "p99": 2, "p999": 3}, "latency_by_op_ms": {"pseudonymize": {"p99": 1.9}, "identify": {"p99": 2.1}}, "pass": true},
            {"name": "mix @2000/s", "op": "mix", "target_calls_per_s": 2000, "calls": 9000, "calls_per_s": 1800, "items_per_s": 3600,
             "latency_ms": {"p50": 4, "p99": 40, "p999": 60}, "late_calls": 300, "pass": false},
            {"name": "mix @1500/s", "op": "mix", "target_calls_per_s": 1500, "calls": 7500, "calls_per_s": 1500, "items_per_s": 3000,
             "latency_ms": {"p50": 0.5, "p99": 4.5, "p999": 6}, "pass": true}
          ]},
  "soak": {"run": {"name": "soak", "op": "pseudonymize", "batch": 10, "concurrency": 16, "target_calls_per_s": 1000,
                   "duration_s": 120, "calls": 120000, "items_per_s": 10000, "latency_ms": {"p50": 1, "p99": 3, "p999": 4}},
           "window_s": 60,
           "windows": [{"start_s": 0, "calls": 60000, "p50_ms": 1, "p99_ms": 3, "rss_mean_bytes": 31457280, "goroutines_mean": 40},
                       {"start_s": 60, "calls": 60000, "p50_ms": 1, "p99_ms": 3.1, "rss_mean_bytes": 32505856, "goroutines_mean": 40}],
           "rss_bytes": {"first": 30408704, "last": 32505856, "max": 33554432, "first_window_mean": 31457280, "last_window_mean": 32505856, "drift_pct": 3.33},
           "goroutines": {"first": 39, "last": 40, "max": 42, "first_window_mean": 40, "last_window_mean": 40, "drift_pct": 0}}
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
		"server pseudonymize per item, transitInfo included":  false, // 1.32 at batch 100
		"server pseudonymize per item vs circl":               false, // 1.01 at batch 100
		"server CPU per item, unary pseudonymize (8 callers)": true,  // 1.7
		"server CPU per item, 1-item stream messages":         true,  // 1.4
		"server CPU per item, batch 100":                      false, // 1.2
		"identify and convert, batch 100, vs pseudonymize":    false, // convert +8.3 %
		"p99 unary latency at half the best unary rate":       false, // 1.5 ms
		"soak: p99, errors, RSS drift":                        true,  // 3 ms, 0, +3.33 %
		"server RSS at full load":                             false, // 133.5 MiB
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
		Targets   []Target        `json:"targets"`
		ClientSDK []ClientSDK     `json:"client_sdk"`
		GRPC      json.RawMessage `json:"grpc"`
	}
	if err := json.Unmarshal(js.Bytes(), &back); err != nil || len(back.Targets) != len(want) || !bytes.Contains(back.GRPC, []byte("server_cpu_x_ceiling")) {
		t.Errorf("JSON round trip: %v\n%s", err, js.String())
	}
	wantSDK := []ClientSDK{
		{Run: "sdk-pseudonymize b1 c1", Op: "sdk-pseudonymize", Batch: 1, Concurrency: 1, ItemsPerSec: 1900, P50Ms: 0.5, P99Ms: 1.7,
			ClientCPUCallXScalarMult: 7.1, ClientCPUXScalarMult: 7.1, ClientCPUDistinctXScalarMult: 7.1, CryptoXScalarMult: 2.6,
			ServerCPUXScalarMult: 8.3, ServerCalls: 2200, ServerItems: 2200, DistinctItems: 2200, Items: 2200, Mode: g.Pinning},
		{Run: "sdk-cached b1 c100", Op: "sdk-cached", Batch: 1, Concurrency: 100, Cache: true, ItemsPerSec: 5000, P50Ms: 15, P99Ms: 80,
			ClientCPUCallXScalarMult: 2.3, ClientCPUXScalarMult: 2.3, ClientCPUDistinctXScalarMult: 4.6, CryptoXScalarMult: 2.55,
			ServerCPUXScalarMult: 4.5, HitRate: 0.41667, MergedShare: 400.0 / 6000, ServerCalls: 3100, ServerItems: 3100,
			DistinctItems: 3000, Items: 6000, Mode: g.Pinning},
	}
	if !slices.Equal(back.ClientSDK, wantSDK) {
		t.Errorf("client_sdk = %+v\nwant %+v", back.ClientSDK, wantSDK)
	}
	if none := New(nil, nil, nil, nil); none.ClientSDK != nil {
		t.Errorf("client_sdk without inputs: %+v", none.ClientSDK)
	}
}

func TestMarkdown(t *testing.T) {
	g, raw, c := sampleInputs(t)
	var md bytes.Buffer
	if err := New(g, raw, c, nil).WriteMarkdown(&md, "throughput.png"); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"Test CPU", "| pseudonymize b100 c2 | 100 | 2 |", "0.10 0.20 0.30", "ours Pseudonymize", "![throughput and latency](throughput.png)", "**no**",
		"- Mode: **pinned: server cpu 0, generator cpu 1** (the generator's CPUs: 1)",
		"## gRPC load (bench/cmd/pseudobench; pinned: server cpu 0, generator cpu 1)",
		"| identify b100 c2 | 100 | 2 |",
		"## Prescription mix (pinned: server cpu 0, generator cpu 1)",
		"80 % pseudonymize / 20 % identify, 64 callers",
		"**Highest rate with p99 ≤ 5 ms: 1500 calls/s** (3000 items/s; p50 0.500 ms, p99 4.500 ms, p99.9 6.000 ms); 1560 calls/s failed.",
		"| 1 | 1000 | 1000 | 2000 | 0.400 | 2.000 | 3.000 | 1.900 | 2.100 | 0 | 0 | 0 | yes |",
		"| 2 | 2000 | 1800 | 3600 | 4.000 | 40.000 | 60.000 | - | - | 300 | 0 | 0 | no |",
		"## Soak (pinned: server cpu 0, generator cpu 1)",
		"- Server RSS: first 29.0 MiB, last 31.0 MiB, max 32.0 MiB; drift +3.3 % (mean of the first 60 s window 30.0 MiB, of the last 31.0 MiB)",
		"- Server goroutines: first 39, last 40, max 42; drift +0.0 % (40.0 → 40.0)",
		"| 60 | 60000 | 0 | 1.000 | 3.100 | 31.0 | 40 |",
		"## Client SDK (client.Client; pinned: server cpu 0, generator cpu 1)",
		"| sdk-pseudonymize b1 c1 | 1 | 1 | 1900 | 7.10 | 7.10 | 2.60 | 4.50 | 8.30 | 0.000 | 0.000 | 2200 | 2200 | 0.500 | 1.700 | 0 |",
		"| sdk-cached b1 c100 | 1 | 100 | 5000 | 2.30 | 4.60 | 2.55 | 2.05 | 4.50 | 0.417 | 0.067 | 3100 | 3100 | 15.000 | 80.000 | 0 |",
	} {
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
	for _, title := range []string{"Throughput of pseudonymize, server on 2 cores", "Latency of a pseudonymize call", "pinned: server cpu 0, generator cpu 1"} {
		if !strings.Contains(svg.String(), title) {
			t.Errorf("SVG lacks the title %q", title)
		}
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
