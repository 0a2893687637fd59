package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// schemaVersion changes when a field of report changes meaning or goes.
// 2: target.op became target.ops (every operation of the invocation); runs
// may be of any operation.
const schemaVersion = 2

// report is the JSON output (-json); docs/benchmarks.md documents it.
type report struct {
	Tool          string    `json:"tool"`
	SchemaVersion int       `json:"schema_version"`
	Started       time.Time `json:"started"`
	Finished      time.Time `json:"finished"`
	Host          host      `json:"host"`
	Target        target    `json:"target"`
	// Pinning is -pinning: where the server and pseudobench ran
	// (scripts/bench.sh: "pinned: server cpu 0, generator cpu 1" or
	// "unpinned"); "" when not stated.
	Pinning string `json:"pinning,omitempty"`
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
	Mix        *mixResult  `json:"mix,omitempty"`
	Soak       *soakResult `json:"soak,omitempty"`
}

// mixResult is the prescription mix (-mix): its definition, each step of
// the search (or the one run of -mix-rate), and the highest rate that
// passed.
type mixResult struct {
	Arrivals      string  `json:"arrivals"` // "poisson"
	IdentifyShare float64 `json:"identify_share"`
	ItemsMin      int     `json:"items_min"`
	ItemsMax      int     `json:"items_max"`
	Callers       int     `json:"callers"`
	P99BoundMs    float64 `json:"p99_bound_ms"`
	// Search is false for -mix-rate (one step, nothing searched).
	Search bool `json:"search"`
	// MaxCallsPerSec is the highest target rate of a step that passed
	// (p99 within the bound, no error, every call sent), 0 if none did;
	// MaxItemsPerSec and MaxLatencyMs are what that step measured.
	// FailedCallsPerSec is the lowest rate that failed above it (0 if the
	// search never failed: the ramp ran out of steps); Converged says
	// whether the two are within 5 %.
	MaxCallsPerSec    float64     `json:"max_calls_per_s"`
	MaxItemsPerSec    float64     `json:"max_items_per_s"`
	MaxLatencyMs      *latency    `json:"max_latency_ms,omitempty"`
	FailedCallsPerSec float64     `json:"failed_calls_per_s,omitempty"`
	Converged         bool        `json:"converged"`
	Steps             []runResult `json:"steps"`
}

// soakResult is the soak (-soak): the whole run, per-window numbers and
// the server's RSS and goroutines over time.
type soakResult struct {
	Run          runResult    `json:"run"`
	WindowSec    float64      `json:"window_s"`
	SampleSec    float64      `json:"sample_s"`
	Windows      []soakWindow `json:"windows"`
	Samples      []soakSample `json:"samples,omitempty"`
	SampleErrors int          `json:"sample_errors,omitempty"`
	// RSS and Goroutines are nil when the server was not sampled (no
	// -metrics, -pid or -inprocess; goroutines need the metrics).
	RSS        *drift `json:"rss_bytes,omitempty"`
	Goroutines *drift `json:"goroutines,omitempty"`
}

// soakWindow is one window of the soak, calls counted by the time they
// were due.
type soakWindow struct {
	StartSec       float64 `json:"start_s"`
	Calls          uint64  `json:"calls"`
	Items          uint64  `json:"items"`
	Errors         uint64  `json:"errors"`
	P50Ms          float64 `json:"p50_ms"`
	P99Ms          float64 `json:"p99_ms"`
	MaxMs          float64 `json:"max_ms"`
	RSSMeanBytes   float64 `json:"rss_mean_bytes,omitempty"`
	GoroutinesMean float64 `json:"goroutines_mean,omitempty"`
}

// soakSample is one sample of the server, TSec after the start of the
// measured time.
type soakSample struct {
	TSec       float64 `json:"t_s"`
	RSSBytes   float64 `json:"rss_bytes"`
	Goroutines float64 `json:"goroutines,omitempty"`
}

// drift summarizes a sampled quantity: the first, last and largest
// sample, the means of the samples of the first and of the last window,
// and DriftPct = (LastWindowMean − FirstWindowMean) ÷ FirstWindowMean × 100.
type drift struct {
	First           float64 `json:"first"`
	Last            float64 `json:"last"`
	Max             float64 `json:"max"`
	FirstWindowMean float64 `json:"first_window_mean"`
	LastWindowMean  float64 `json:"last_window_mean"`
	DriftPct        float64 `json:"drift_pct"`
}

type host struct {
	Hostname string `json:"hostname"`
	OS       string `json:"os"`
	Arch     string `json:"arch"`
	CPU      string `json:"cpu,omitempty"`
	// NumCPU is the machine's CPU count (CPUsAllowed are those
	// pseudobench may use).
	NumCPU       int    `json:"num_cpu"`
	GoVersion    string `json:"go_version"`
	LoadAvgStart string `json:"loadavg_start,omitempty"`
	LoadAvgEnd   string `json:"loadavg_end,omitempty"`
	// CPUsAllowed is the CPU affinity of pseudobench (Linux
	// Cpus_allowed_list), "" elsewhere.
	CPUsAllowed string `json:"cpus_allowed,omitempty"`
}

type target struct {
	Addr      string   `json:"addr"`
	InProcess bool     `json:"in_process,omitempty"`
	TLS       bool     `json:"tls"`
	MTLS      bool     `json:"mtls"`
	Domain    string   `json:"domain"`
	ToDomain  string   `json:"to_domain,omitempty"` // convert
	Ops       []string `json:"ops"`
	Conns     int      `json:"conns"`
	Points    int      `json:"points"`
	Stats     string   `json:"server_stats,omitempty"` // "metrics", "proc" or ""
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
	// LatencyByOpMs splits the latency by RPC (the mix).
	LatencyByOpMs map[string]latency `json:"latency_by_op_ms,omitempty"`
	// Pass is set for the steps of the mix: p99 within the bound, no
	// error, every call sent.
	Pass *bool `json:"pass,omitempty"`

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

	// SDK is set for the runs of the client SDK (sdk-pseudonymize,
	// sdk-cached), whose ServerCPUNsPerItem is per item that reached the
	// server (SDK.ServerItems), not per item answered to the callers.
	SDK *sdkResult `json:"sdk,omitempty"`
}

// sdkResult is what a run of the client SDK measured beyond the other
// runs. The counts and the CPU times are those of the whole run, warm-up
// included.
type sdkResult struct {
	// Cache: sdk-cached (the client's transit cache and in-flight merge
	// on). Kind is the kind of identifier (-sdk-kind). WorkingSet and
	// RepeatShare are the draw of sdk-cached: an item is one of the last
	// WorkingSet distinct identifiers with probability RepeatShare, else a
	// new one.
	Cache       bool    `json:"cache"`
	Kind        string  `json:"kind"`
	WorkingSet  int     `json:"working_set,omitempty"`
	RepeatShare float64 `json:"repeat_share,omitempty"`

	// Calls and Items are the callers' successful calls and items;
	// DistinctItems the distinct identifiers asked for. CacheHits are the
	// items whose identifier had been answered before the call began
	// (served by the cache); Merged the other items answered without
	// reaching the server (a concurrent call's answer: the in-flight
	// merge); HitRate = CacheHits ÷ Items and LocalShare = (CacheHits +
	// Merged) ÷ Items. ServerCalls and ServerItems are the Pseudonymize
	// calls and items the client sent to the server (retries included).
	Calls         uint64  `json:"calls"`
	Items         uint64  `json:"items"`
	DistinctItems uint64  `json:"distinct_items"`
	CacheHits     uint64  `json:"cache_hits"`
	Merged        uint64  `json:"merged"`
	HitRate       float64 `json:"hit_rate"`
	LocalShare    float64 `json:"local_share"`
	ServerCalls   uint64  `json:"server_calls"`
	ServerItems   uint64  `json:"server_items"`

	// ClientCPU*: pseudobench's process CPU time during the run (the
	// client's, the generator's own loop included) per call, per item and
	// per distinct item, in ns and in ScalarMults of the report. Not
	// measured (0, and ClientCPUNote says why) when the server runs in the
	// same process (-inprocess).
	ClientCPUNsPerCall           float64 `json:"client_cpu_ns_per_call,omitempty"`
	ClientCPUNsPerItem           float64 `json:"client_cpu_ns_per_item,omitempty"`
	ClientCPUNsPerDistinctItem   float64 `json:"client_cpu_ns_per_distinct_item,omitempty"`
	ClientCPUCallXScalarMult     float64 `json:"client_cpu_call_x_scalarmult,omitempty"`
	ClientCPUXScalarMult         float64 `json:"client_cpu_x_scalarmult,omitempty"`
	ClientCPUDistinctXScalarMult float64 `json:"client_cpu_distinct_x_scalarmult,omitempty"`
	ClientCPUNote                string  `json:"client_cpu_note,omitempty"`
	// CryptoNsPerItem is the client's work on one item without the call,
	// timed alone on one goroutine right after the run (process CPU, like
	// ScalarMult): the identifier normalized, BlindBatch and UnblindBatch
	// of Batch items; CryptoXScalarMult in ScalarMults. 0 while profiling.
	CryptoNsPerItem   float64 `json:"crypto_ns_per_item,omitempty"`
	CryptoXScalarMult float64 `json:"crypto_x_scalarmult,omitempty"`
}

// derive fills the ratios of s for the given ScalarMult cost.
func (s *sdkResult) derive(smNs float64) {
	s.ClientCPUCallXScalarMult = s.ClientCPUNsPerCall / smNs
	s.ClientCPUXScalarMult = s.ClientCPUNsPerItem / smNs
	s.ClientCPUDistinctXScalarMult = s.ClientCPUNsPerDistinctItem / smNs
	s.CryptoXScalarMult = s.CryptoNsPerItem / smNs
}

type latency struct {
	P50  float64 `json:"p50"`
	P90  float64 `json:"p90"`
	P99  float64 `json:"p99"`
	P999 float64 `json:"p999"`
	Max  float64 `json:"max"`
	Mean float64 `json:"mean"`
}

func latencyOf(h *histogram) latency {
	return latency{
		P50: ms(h.quantile(0.50)), P90: ms(h.quantile(0.90)), P99: ms(h.quantile(0.99)),
		P999: ms(h.quantile(0.999)), Max: ms(h.max), Mean: ms(h.mean()),
	}
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func newHost() host {
	h := host{OS: runtime.GOOS, Arch: runtime.GOARCH, NumCPU: runtime.NumCPU(), GoVersion: runtime.Version()}
	h.Hostname, _ = os.Hostname()
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		// runtime.NumCPU counts the CPUs this process may use (its
		// affinity); the machine's are the processors listed here.
		n := 0
		for line := range strings.Lines(string(b)) {
			k, v, ok := strings.Cut(line, ":")
			switch k = strings.TrimSpace(k); {
			case !ok:
			case k == "model name" && h.CPU == "":
				h.CPU = strings.TrimSpace(v)
			case k == "processor":
				n++
			}
		}
		h.NumCPU = max(h.NumCPU, n)
	}
	h.LoadAvgStart = loadAvg()
	if b, err := os.ReadFile("/proc/self/status"); err == nil {
		for line := range strings.Lines(string(b)) {
			if v, ok := strings.CutPrefix(line, "Cpus_allowed_list:"); ok {
				h.CPUsAllowed = strings.TrimSpace(v)
			}
		}
	}
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
	fmt.Fprintf(w, "pseudobench: %s in %s on %s (%s)\n", strings.Join(r.Target.Ops, ", "), r.Target.Domain, r.Target.Addr, transport(r.Target))
	fmt.Fprintf(w, "machine: %s, %d CPUs, %s; load average %s\n", orUnknown(r.Host.CPU), r.Host.NumCPU, r.Host.GoVersion, orUnknown(r.Host.LoadAvgStart))
	fmt.Fprintf(w, "mode: %s; ceiling for %s of the server\n", pinning(r), plural(r.Cores, "core"))
}

// pinning describes where the server and the generator ran.
func pinning(r *report) string {
	switch {
	case r.Pinning != "":
		return r.Pinning
	case r.Target.InProcess:
		return "in-process (server and generator in one process)"
	}
	return "placement not stated (-pinning)"
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

// printTable prints the runs as an aligned table, then the mix and the
// soak.
func printTable(w io.Writer, r *report) {
	fmt.Fprintf(w, "mode: %s\n", pinning(r))
	if len(r.Runs) > 0 {
		printRuns(w, r)
	}
	if r.Mix != nil {
		printMix(w, r.Mix)
	}
	if r.Soak != nil {
		printSoak(w, r.Soak)
	}
	if slices.ContainsFunc(r.Runs, func(x runResult) bool { return x.SDK != nil }) {
		printSDK(w, r)
	}
	if r.Target.InProcess {
		fmt.Fprintln(w, "in-process: RSS and CPU are those of the whole process, load generator included")
	}
	fmt.Fprintf(w, "ScalarMult %.0f ns (median of %d timings, %.0f–%.0f); ceiling %s ÷ ScalarMult = %.0f items/s; load average %s → %s\n",
		r.ScalarMultNs, r.ScalarMultTimings, r.ScalarMultMinNs, r.ScalarMultMaxNs, plural(r.Cores, "core"), r.CeilingItemsPerSec,
		orUnknown(r.Host.LoadAvgStart), orUnknown(r.Host.LoadAvgEnd))
}

func printRuns(w io.Writer, r *report) {
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
}

func printMix(w io.Writer, m *mixResult) {
	fmt.Fprintf(w, "\nprescription mix: Poisson arrivals, %d–%d items per call, %.0f %% identify, %d callers; p99 bound %.3g ms\n",
		m.ItemsMin, m.ItemsMax, 100*m.IdentifyShare, m.Callers, m.P99BoundMs)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "step\ttarget calls/s\tcalls/s\titems/s\tp50 ms\tp99 ms\tp99.9 ms\tpseudonymize p99\tidentify p99\tlate\tunsent\terrors\tpass\t")
	for i, x := range m.Steps {
		pass := "-"
		if x.Pass != nil {
			pass = map[bool]string{true: "yes", false: "no"}[*x.Pass]
		}
		fmt.Fprintf(tw, "%d\t%.0f\t%.0f\t%.0f\t%.3f\t%.3f\t%.3f\t%s\t%s\t%d\t%d\t%d\t%s\t\n",
			i+1, x.TargetCallsPerSec, x.CallsPerSec, x.ItemsPerSec, x.LatencyMs.P50, x.LatencyMs.P99, x.LatencyMs.P999,
			orDash(x.LatencyByOpMs[opPseudonymize].P99, "%.3f"), orDash(x.LatencyByOpMs[opIdentify].P99, "%.3f"),
			x.LateCalls, x.UnsentCalls, x.CallErrors+x.ItemErrors, pass)
	}
	tw.Flush()
	if !m.Search {
		return
	}
	switch {
	case m.MaxCallsPerSec == 0:
		fmt.Fprintf(w, "no step kept p99 within %.3g ms\n", m.P99BoundMs)
	default:
		fmt.Fprintf(w, "highest rate with p99 ≤ %.3g ms: %.0f calls/s (%.0f items/s; p50 %.3f, p99 %.3f, p99.9 %.3f ms)",
			m.P99BoundMs, m.MaxCallsPerSec, m.MaxItemsPerSec, m.MaxLatencyMs.P50, m.MaxLatencyMs.P99, m.MaxLatencyMs.P999)
		if m.FailedCallsPerSec > 0 {
			fmt.Fprintf(w, "; %.0f calls/s failed", m.FailedCallsPerSec)
		}
		if !m.Converged {
			fmt.Fprint(w, " (not converged within -mix-steps)")
		}
		fmt.Fprintln(w)
	}
}

func printSoak(w io.Writer, s *soakResult) {
	x := &s.Run
	fmt.Fprintf(w, "\nsoak: %s batch %d, %.0f calls/s for %.0f s, %d callers: %d calls, %.0f items/s, p50 %.3f ms, p99 %.3f ms, p99.9 %.3f ms, %d errors, %d late, %d unsent\n",
		x.Op, x.Batch, x.TargetCallsPerSec, x.DurationSec, x.Concurrency, x.Calls, x.ItemsPerSec,
		x.LatencyMs.P50, x.LatencyMs.P99, x.LatencyMs.P999, x.CallErrors+x.ItemErrors, x.LateCalls, x.UnsentCalls)
	if d := s.RSS; d != nil {
		fmt.Fprintf(w, "server RSS MiB: first %.1f, last %.1f, max %.1f; drift %+.1f %% (mean of the first %g s %.1f → of the last %.1f)\n",
			d.First/(1<<20), d.Last/(1<<20), d.Max/(1<<20), d.DriftPct, s.WindowSec, d.FirstWindowMean/(1<<20), d.LastWindowMean/(1<<20))
	} else {
		fmt.Fprintln(w, "server RSS: not sampled (give -metrics or -pid)")
	}
	if d := s.Goroutines; d != nil {
		fmt.Fprintf(w, "server goroutines: first %.0f, last %.0f, max %.0f; drift %+.1f %% (%.1f → %.1f)\n",
			d.First, d.Last, d.Max, d.DriftPct, d.FirstWindowMean, d.LastWindowMean)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "window from s\tcalls\titems\terrors\tp50 ms\tp99 ms\tmax ms\tRSS MiB\tgoroutines\t")
	for _, x := range s.Windows {
		fmt.Fprintf(tw, "%g\t%d\t%d\t%d\t%.3f\t%.3f\t%.3f\t%s\t%s\t\n", x.StartSec, x.Calls, x.Items, x.Errors, x.P50Ms, x.P99Ms, x.MaxMs,
			orDash(x.RSSMeanBytes/(1<<20), "%.1f"), orDash(x.GoroutinesMean, "%.0f"))
	}
	tw.Flush()
}

// printSDK prints the runs of the client SDK: CPU per item on both sides
// in ScalarMults, the cache and what reached the server.
func printSDK(w io.Writer, r *report) {
	fmt.Fprintln(w, "\nclient SDK (client.Client; CPU per item in ScalarMults: the client is pseudobench's process, the server's per item it computed)")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "run\tbatch\tconc\titems/s\tclient/item\tclient/distinct\tblind+unblind\tcall+rest\tsrv/item\thit rate\tmerged\tsrv calls\tsrv items\tp50 ms\tp99 ms\terrors\t")
	for _, x := range r.Runs {
		s := x.SDK
		if s == nil {
			continue
		}
		rest := 0.0
		if s.ClientCPUDistinctXScalarMult > 0 && s.CryptoXScalarMult > 0 {
			rest = s.ClientCPUDistinctXScalarMult - s.CryptoXScalarMult
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%.0f\t%s\t%s\t%s\t%s\t%s\t%.3f\t%.3f\t%d\t%d\t%.3f\t%.3f\t%d\t\n",
			x.Name, x.Batch, x.Concurrency, x.ItemsPerSec,
			orDash(s.ClientCPUXScalarMult, "%.2f×SM"), orDash(s.ClientCPUDistinctXScalarMult, "%.2f×SM"),
			orDash(s.CryptoXScalarMult, "%.2f×SM"), orDash(rest, "%.2f×SM"), orDash(x.ServerCPUXScalarMult, "%.2f×SM"),
			s.HitRate, ratio(s.Merged, s.Items), s.ServerCalls, s.ServerItems,
			x.LatencyMs.P50, x.LatencyMs.P99, x.CallErrors+x.ItemErrors)
	}
	tw.Flush()
	for _, x := range r.Runs {
		if x.SDK != nil && x.SDK.ClientCPUNote != "" {
			fmt.Fprintf(w, "client CPU not measured: %s\n", x.SDK.ClientCPUNote)
			break
		}
	}
}

// ratio is a ÷ b, 0 when b is 0.
func ratio(a, b uint64) float64 {
	if b == 0 {
		return 0
	}
	return float64(a) / float64(b)
}

// plural is "1 core", "2 cores".
func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}

func orDash(x float64, format string) string {
	if x == 0 {
		return "-"
	}
	return fmt.Sprintf(format, x)
}
