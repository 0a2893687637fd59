package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"text/tabwriter"
	"time"
)

// schemaVersion changes when a field of report changes meaning or goes.
const schemaVersion = 1

// report is the JSON output (-json); docs/benchmarks.md documents it.
type report struct {
	Tool          string    `json:"tool"`
	SchemaVersion int       `json:"schema_version"`
	Started       time.Time `json:"started"`
	Finished      time.Time `json:"finished"`
	Host          host      `json:"host"`
	Target        target    `json:"target"`
	// Cores is the server's GOMAXPROCS (-cores); ServerGOMAXPROCS is what
	// the server's metrics said, when they did.
	Cores            int     `json:"cores"`
	ServerGOMAXPROCS float64 `json:"server_gomaxprocs,omitempty"`
	// ScalarMultNs is the median of the ScalarMultTimings timings of the
	// run (one before the runs, one after each), in CPU time of one
	// goroutine where the platform tells it, and CeilingItemsPerSec is
	// Cores × 1e9 ÷ ScalarMultNs. Every ratio uses them.
	ScalarMultNs       float64 `json:"scalarmult_ns"`
	ScalarMultMinNs    float64 `json:"scalarmult_min_ns"`
	ScalarMultMaxNs    float64 `json:"scalarmult_max_ns"`
	ScalarMultTimings  int     `json:"scalarmult_timings"`
	CeilingItemsPerSec float64 `json:"ceiling_items_per_s"`
	// PrepareSec is the untimed time spent making the inputs.
	PrepareSec float64     `json:"prepare_s"`
	Runs       []runResult `json:"runs"`
}

type host struct {
	Hostname     string `json:"hostname"`
	OS           string `json:"os"`
	Arch         string `json:"arch"`
	CPU          string `json:"cpu,omitempty"`
	NumCPU       int    `json:"num_cpu"`
	GoVersion    string `json:"go_version"`
	LoadAvgStart string `json:"loadavg_start,omitempty"`
	LoadAvgEnd   string `json:"loadavg_end,omitempty"`
}

type target struct {
	Addr      string `json:"addr"`
	InProcess bool   `json:"in_process,omitempty"`
	TLS       bool   `json:"tls"`
	MTLS      bool   `json:"mtls"`
	Domain    string `json:"domain"`
	Op        string `json:"op"`
	Conns     int    `json:"conns"`
	Points    int    `json:"points"`
	Stats     string `json:"server_stats,omitempty"` // "metrics", "proc" or ""
}

// runResult is one run of the matrix.
type runResult struct {
	Name        string  `json:"name"`
	Op          string  `json:"op"`
	Batch       int     `json:"batch"`
	Concurrency int     `json:"concurrency"`
	Calibration bool    `json:"calibration,omitempty"`
	Load        float64 `json:"load,omitempty"`
	// TargetCallsPerSec is the open-loop rate; 0 for a closed loop.
	TargetCallsPerSec float64 `json:"target_calls_per_s,omitempty"`
	DurationSec       float64 `json:"duration_s"`

	Calls       uint64            `json:"calls"`
	Items       uint64            `json:"items"`
	CallsPerSec float64           `json:"calls_per_s"`
	ItemsPerSec float64           `json:"items_per_s"`
	CallErrors  uint64            `json:"call_errors"`
	ItemErrors  uint64            `json:"item_errors"`
	Errors      map[string]uint64 `json:"errors,omitempty"`
	LateCalls   uint64            `json:"late_calls,omitempty"`
	UnsentCalls uint64            `json:"unsent_calls,omitempty"`
	LatencyMs   latency           `json:"latency_ms"`

	// ScalarMultNs was timed right after the run (0 while profiling). The
	// ratios use the report's ScalarMultNs (the median of all timings):
	// the ceiling is cores ÷ ScalarMult; XCeiling = ItemsPerSec ÷
	// CeilingItemsPerSec and XScalarMult = 1 ÷ XCeiling, the cost of one
	// item in ScalarMults of one core.
	ScalarMultNs       float64 `json:"scalarmult_ns,omitempty"`
	CeilingItemsPerSec float64 `json:"ceiling_items_per_s"`
	XCeiling           float64 `json:"x_ceiling"`
	XScalarMult        float64 `json:"x_scalarmult"`

	// Server process, when -metrics or -pid is given (with -inprocess, the
	// whole process: generator included). ServerCPUXScalarMult is the
	// server's CPU time per item in ScalarMults, and ServerCPUXCeiling =
	// 1 ÷ ServerCPUXScalarMult the fraction of the ceiling the server would
	// reach if it had the cores to itself (the generator shares them here).
	ServerRSSPeakBytes   float64 `json:"server_rss_peak_bytes,omitempty"`
	ServerCPUSec         float64 `json:"server_cpu_s,omitempty"`
	ServerCPUNsPerItem   float64 `json:"server_cpu_ns_per_item,omitempty"`
	ServerCPUXScalarMult float64 `json:"server_cpu_x_scalarmult,omitempty"`
	ServerCPUXCeiling    float64 `json:"server_cpu_x_ceiling,omitempty"`
	// ClientCPUSec is pseudobench's own CPU time during the run.
	ClientCPUSec float64 `json:"client_cpu_s"`
}

type latency struct {
	P50  float64 `json:"p50"`
	P90  float64 `json:"p90"`
	P99  float64 `json:"p99"`
	Max  float64 `json:"max"`
	Mean float64 `json:"mean"`
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func newHost() host {
	h := host{OS: runtime.GOOS, Arch: runtime.GOARCH, NumCPU: runtime.NumCPU(), GoVersion: runtime.Version()}
	h.Hostname, _ = os.Hostname()
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.Lines(string(b)) {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				h.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	h.LoadAvgStart = loadAvg()
	return h
}

// loadAvg returns the 1, 5 and 15 minute load averages, "" where unknown.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}

func writeJSON(path string, r *report) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// runName names a run in tables and charts.
func runName(op string, batch, concurrency int, load float64, calibration bool) string {
	s := fmt.Sprintf("%s b%d c%d", op, batch, concurrency)
	switch {
	case calibration:
		s += " calibration"
	case load > 0:
		s += fmt.Sprintf(" load%g", load)
	}
	return s
}

func printHeader(w io.Writer, r *report) {
	fmt.Fprintf(w, "pseudobench: %s %s on %s (%s)\n", r.Target.Op, r.Target.Domain, r.Target.Addr, transport(r.Target))
	fmt.Fprintf(w, "machine: %s, %d CPUs, %s; load average %s\n", orUnknown(r.Host.CPU), r.Host.NumCPU, r.Host.GoVersion, orUnknown(r.Host.LoadAvgStart))
}

func transport(t target) string {
	switch {
	case t.InProcess:
		return "in-process server, plaintext"
	case t.MTLS:
		return "mTLS"
	case t.TLS:
		return "TLS"
	}
	return "plaintext"
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

// printTable prints the runs as an aligned table.
func printTable(w io.Writer, r *report) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "run\tbatch\tconc\ttarget calls/s\tcalls\titems/s\t× ceiling\tp50 ms\tp90 ms\tp99 ms\terrors\tRSS MiB\tsrv CPU/item\tsrv-bound × ceiling\t")
	for _, x := range r.Runs {
		tgt := "-"
		if x.TargetCallsPerSec > 0 {
			tgt = fmt.Sprintf("%.0f", x.TargetCallsPerSec)
		}
		rss, cpu, proj := "-", "-", "-"
		if x.ServerRSSPeakBytes > 0 {
			rss = fmt.Sprintf("%.1f", x.ServerRSSPeakBytes/(1<<20))
		}
		if x.ServerCPUXScalarMult > 0 {
			cpu = fmt.Sprintf("%.2f×SM", x.ServerCPUXScalarMult)
			proj = fmt.Sprintf("%.3f", x.ServerCPUXCeiling)
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%d\t%.0f\t%.3f\t%.3f\t%.3f\t%.3f\t%d\t%s\t%s\t%s\t\n",
			x.Name, x.Batch, x.Concurrency, tgt, x.Calls, x.ItemsPerSec, x.XCeiling,
			x.LatencyMs.P50, x.LatencyMs.P90, x.LatencyMs.P99, x.CallErrors+x.ItemErrors, rss, cpu, proj)
	}
	tw.Flush()
	if r.Target.InProcess {
		fmt.Fprintln(w, "in-process: RSS and CPU are those of the whole process, load generator included")
	}
	fmt.Fprintf(w, "ScalarMult %.0f ns (median of %d timings, %.0f–%.0f); ceiling %d cores ÷ ScalarMult = %.0f items/s; load average %s → %s\n",
		r.ScalarMultNs, r.ScalarMultTimings, r.ScalarMultMinNs, r.ScalarMultMaxNs, r.Cores, r.CeilingItemsPerSec,
		orUnknown(r.Host.LoadAvgStart), orUnknown(r.Host.LoadAvgEnd))
}
