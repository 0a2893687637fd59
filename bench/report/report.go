// Package report turns the outputs of bench/cmd/pseudobench (gRPC load) and
// cmd/compare (crypto comparison) into one summary: the targets of the
// performance issue with what was measured against each, a markdown page
// and a chart. It reads the JSON of both tools; docs/benchmarks.md
// documents their fields.
package report

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/ehealth-pseudo/pseudonymizer/bench/compare"
)

// GRPC is the part of bench/cmd/pseudobench's JSON output that the report uses.
type GRPC struct {
	Tool          string    `json:"tool"`
	SchemaVersion int       `json:"schema_version"`
	Started       time.Time `json:"started"`
	Host          struct {
		Hostname     string `json:"hostname"`
		OS           string `json:"os"`
		Arch         string `json:"arch"`
		CPU          string `json:"cpu"`
		NumCPU       int    `json:"num_cpu"`
		GoVersion    string `json:"go_version"`
		LoadAvgStart string `json:"loadavg_start"`
		LoadAvgEnd   string `json:"loadavg_end"`
		CPUsAllowed  string `json:"cpus_allowed"`
	} `json:"host"`
	Target struct {
		Addr      string   `json:"addr"`
		InProcess bool     `json:"in_process"`
		TLS       bool     `json:"tls"`
		Ops       []string `json:"ops"`
	} `json:"target"`
	// Pinning says where the server and the generator ran
	// (scripts/bench.sh: "pinned: server cpu 0, generator cpu 1" or
	// "unpinned"); see Mode.
	Pinning            string    `json:"pinning"`
	Cores              int       `json:"cores"`
	ScalarMultNs       float64   `json:"scalarmult_ns"`
	CeilingItemsPerSec float64   `json:"ceiling_items_per_s"`
	Runs               []GRPCRun `json:"runs"`
	Mix                *Mix      `json:"mix"`
	Soak               *Soak     `json:"soak"`
}

// Mode says where the server and the load generator ran, for every title
// and table: the pinning, "in-process", or "placement not stated".
func (g *GRPC) Mode() string {
	switch {
	case g.Pinning != "":
		return g.Pinning
	case g.Target.InProcess:
		return "in-process"
	}
	return "placement not stated"
}

// pinned reports whether the server had its cores to itself.
func (g *GRPC) pinned() bool { return strings.HasPrefix(g.Pinning, "pinned") }

// Mix is the prescription mix of bench/cmd/pseudobench -mix.
type Mix struct {
	IdentifyShare     float64   `json:"identify_share"`
	ItemsMin          int       `json:"items_min"`
	ItemsMax          int       `json:"items_max"`
	Callers           int       `json:"callers"`
	P99BoundMs        float64   `json:"p99_bound_ms"`
	Search            bool      `json:"search"`
	MaxCallsPerSec    float64   `json:"max_calls_per_s"`
	MaxItemsPerSec    float64   `json:"max_items_per_s"`
	MaxLatencyMs      *Latency  `json:"max_latency_ms"`
	FailedCallsPerSec float64   `json:"failed_calls_per_s"`
	Converged         bool      `json:"converged"`
	Steps             []GRPCRun `json:"steps"`
}

// Soak is the soak of bench/cmd/pseudobench -soak.
type Soak struct {
	Run       GRPCRun `json:"run"`
	WindowSec float64 `json:"window_s"`
	Windows   []struct {
		StartSec       float64 `json:"start_s"`
		Calls          uint64  `json:"calls"`
		Errors         uint64  `json:"errors"`
		P50Ms          float64 `json:"p50_ms"`
		P99Ms          float64 `json:"p99_ms"`
		RSSMeanBytes   float64 `json:"rss_mean_bytes"`
		GoroutinesMean float64 `json:"goroutines_mean"`
	} `json:"windows"`
	RSS        *Drift `json:"rss_bytes"`
	Goroutines *Drift `json:"goroutines"`
}

// Drift is a sampled quantity of the soak.
type Drift struct {
	First           float64 `json:"first"`
	Last            float64 `json:"last"`
	Max             float64 `json:"max"`
	FirstWindowMean float64 `json:"first_window_mean"`
	LastWindowMean  float64 `json:"last_window_mean"`
	DriftPct        float64 `json:"drift_pct"`
}

// Latency is the latency of a call, in ms.
type Latency struct {
	P50  float64 `json:"p50"`
	P90  float64 `json:"p90"`
	P99  float64 `json:"p99"`
	P999 float64 `json:"p999"`
	Max  float64 `json:"max"`
}

// GRPCRun is one run of bench/cmd/pseudobench.
type GRPCRun struct {
	Name              string  `json:"name"`
	Op                string  `json:"op"`
	Batch             int     `json:"batch"`
	Concurrency       int     `json:"concurrency"`
	Calibration       bool    `json:"calibration"`
	Load              float64 `json:"load"`
	TargetCallsPerSec float64 `json:"target_calls_per_s"`
	DurationSec       float64 `json:"duration_s"`
	Calls             uint64  `json:"calls"`
	CallsPerSec       float64 `json:"calls_per_s"`
	ItemsPerSec       float64 `json:"items_per_s"`
	CallErrors        uint64  `json:"call_errors"`
	ItemErrors        uint64  `json:"item_errors"`
	LateCalls         uint64  `json:"late_calls"`
	UnsentCalls       uint64  `json:"unsent_calls"`
	LatencyMs         Latency `json:"latency_ms"`
	// LatencyByOpMs splits a mix step's latency by RPC.
	LatencyByOpMs        map[string]Latency `json:"latency_by_op_ms"`
	Pass                 *bool              `json:"pass"`
	ScalarMultNs         float64            `json:"scalarmult_ns"`
	CeilingItemsPerSec   float64            `json:"ceiling_items_per_s"`
	XCeiling             float64            `json:"x_ceiling"`
	ServerRSSPeakBytes   float64            `json:"server_rss_peak_bytes"`
	ServerCPUXScalarMult float64            `json:"server_cpu_x_scalarmult"`
	ServerCPUXCeiling    float64            `json:"server_cpu_x_ceiling"`
	ClientCPUSec         float64            `json:"client_cpu_s"`
	// SDK is set for the runs of the client SDK (sdk-pseudonymize,
	// sdk-cached).
	SDK *SDKRun `json:"sdk"`
}

// SDKRun is what a run of the client SDK measured beyond the other runs
// (bench/cmd/pseudobench: sdkResult).
type SDKRun struct {
	Cache                        bool    `json:"cache"`
	Kind                         string  `json:"kind"`
	WorkingSet                   int     `json:"working_set"`
	RepeatShare                  float64 `json:"repeat_share"`
	Calls                        uint64  `json:"calls"`
	Items                        uint64  `json:"items"`
	DistinctItems                uint64  `json:"distinct_items"`
	CacheHits                    uint64  `json:"cache_hits"`
	Merged                       uint64  `json:"merged"`
	HitRate                      float64 `json:"hit_rate"`
	LocalShare                   float64 `json:"local_share"`
	ServerCalls                  uint64  `json:"server_calls"`
	ServerItems                  uint64  `json:"server_items"`
	ClientCPUCallXScalarMult     float64 `json:"client_cpu_call_x_scalarmult"`
	ClientCPUXScalarMult         float64 `json:"client_cpu_x_scalarmult"`
	ClientCPUDistinctXScalarMult float64 `json:"client_cpu_distinct_x_scalarmult"`
	ClientCPUNote                string  `json:"client_cpu_note"`
	CryptoXScalarMult            float64 `json:"crypto_x_scalarmult"`
}

// ClientSDK is one run of the client SDK in the summary: the client's CPU
// per call, per item and per distinct item (the client is the generator's
// process), the client's crypto alone and the server's CPU per item it
// computed, all in ScalarMults, with the cache's numbers.
type ClientSDK struct {
	Run         string  `json:"run"`
	Op          string  `json:"op"`
	Batch       int     `json:"batch"`
	Concurrency int     `json:"concurrency"`
	Cache       bool    `json:"cache"`
	ItemsPerSec float64 `json:"items_per_s"`
	P50Ms       float64 `json:"p50_ms"`
	P99Ms       float64 `json:"p99_ms"`
	Errors      uint64  `json:"errors"`
	// 0 when not measured (ClientCPUNote says why).
	ClientCPUCallXScalarMult     float64 `json:"client_cpu_call_x_scalarmult"`
	ClientCPUXScalarMult         float64 `json:"client_cpu_x_scalarmult"`
	ClientCPUDistinctXScalarMult float64 `json:"client_cpu_distinct_x_scalarmult"`
	ClientCPUNote                string  `json:"client_cpu_note,omitempty"`
	CryptoXScalarMult            float64 `json:"crypto_x_scalarmult"`
	ServerCPUXScalarMult         float64 `json:"server_cpu_x_scalarmult"`
	HitRate                      float64 `json:"hit_rate"`
	MergedShare                  float64 `json:"merged_share"`
	ServerCalls                  uint64  `json:"server_calls"`
	ServerItems                  uint64  `json:"server_items"`
	DistinctItems                uint64  `json:"distinct_items"`
	Items                        uint64  `json:"items"`
	// Mode is where the server and the generator ran: the client's CPU is
	// its own only when the generator had its CPU to itself.
	Mode string `json:"mode"`
}

// clientSDK gathers the runs of the client SDK.
func clientSDK(g *GRPC) []ClientSDK {
	if g == nil {
		return nil
	}
	var out []ClientSDK
	for _, r := range g.Runs {
		s := r.SDK
		if s == nil {
			continue
		}
		merged := 0.0
		if s.Items > 0 {
			merged = float64(s.Merged) / float64(s.Items)
		}
		out = append(out, ClientSDK{
			Run: r.Name, Op: r.Op, Batch: r.Batch, Concurrency: r.Concurrency, Cache: s.Cache,
			ItemsPerSec: r.ItemsPerSec, P50Ms: r.LatencyMs.P50, P99Ms: r.LatencyMs.P99, Errors: r.CallErrors + r.ItemErrors,
			ClientCPUCallXScalarMult: s.ClientCPUCallXScalarMult, ClientCPUXScalarMult: s.ClientCPUXScalarMult,
			ClientCPUDistinctXScalarMult: s.ClientCPUDistinctXScalarMult, ClientCPUNote: s.ClientCPUNote,
			CryptoXScalarMult: s.CryptoXScalarMult, ServerCPUXScalarMult: r.ServerCPUXScalarMult,
			HitRate: s.HitRate, MergedShare: merged, ServerCalls: s.ServerCalls, ServerItems: s.ServerItems,
			DistinctItems: s.DistinctItems, Items: s.Items, Mode: g.Mode(),
		})
	}
	return out
}

// closedLoop reports whether the run sent calls as fast as the server
// answered (a throughput run).
func (r *GRPCRun) closedLoop() bool { return r.TargetCallsPerSec == 0 }

// Target is one goal of the performance issue and what was measured.
type Target struct {
	Name     string  `json:"name"`
	Goal     string  `json:"goal"`
	Value    float64 `json:"value"`
	Measured string  `json:"measured"`
	// Met is nil when nothing was measured for the target.
	Met  *bool  `json:"met"`
	Note string `json:"note,omitempty"`
}

// Summary is the combined output, written as bench/results/latest.json:
// the targets, and the two tools' outputs unchanged.
type Summary struct {
	Tool      string    `json:"tool"`
	Generated time.Time `json:"generated"`
	Targets   []Target  `json:"targets"`
	// ClientSDK are the runs of the client SDK (empty when none ran).
	ClientSDK  []ClientSDK     `json:"client_sdk,omitempty"`
	GRPCRaw    json.RawMessage `json:"grpc,omitempty"`
	CompareRaw json.RawMessage `json:"compare,omitempty"`
	GRPC       *GRPC           `json:"-"`
	Compare    *compare.Result `json:"-"`
}

// ReadJSON decodes the JSON file at path into v and returns its bytes.
func ReadJSON(path string, v any) (json.RawMessage, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return nil, fmt.Errorf("%s: %v", path, err)
	}
	return b, nil
}

// New builds the summary; either input may be nil. The raw JSON, when
// given, is kept whole in the summary's JSON.
func New(g *GRPC, gRaw json.RawMessage, c *compare.Result, cRaw json.RawMessage) *Summary {
	return &Summary{Tool: "bench-report", Generated: time.Now().UTC(), GRPC: g, Compare: c,
		GRPCRaw: gRaw, CompareRaw: cRaw, Targets: targets(g, c), ClientSDK: clientSDK(g)}
}

func ptr(b bool) *bool { return &b }

func target(name, goal string, v float64, measured string, met bool, note string) Target {
	return Target{Name: name, Goal: goal, Value: v, Measured: measured, Met: ptr(met), Note: note}
}

func missing(name, goal string) Target {
	return Target{Name: name, Goal: goal, Measured: "not measured"}
}

// targets checks the goals of the performance issue. They are reported,
// not asserted.
func targets(g *GRPC, c *compare.Result) []Target {
	var out []Target
	const (
		smGoal    = "≤ 1.25 × ScalarMult"
		circlGoal = "≤ 1.0 × circl OPRF Evaluate"
	)
	var ours []*compare.Case
	if c != nil {
		for _, x := range c.Cases {
			if x.Name == compare.OursPseudonymize {
				ours = append(ours, x)
			}
		}
	}
	if len(ours) == 0 {
		out = append(out, missing("server pseudonymize per item, transitInfo included", smGoal),
			missing("server pseudonymize per item vs circl", circlGoal))
	} else {
		worstSM, worstCircl := 0.0, 0.0
		var sm, ci []string
		for _, x := range ours {
			worstSM = max(worstSM, x.XScalarMult)
			worstCircl = max(worstCircl, x.XCirclEvaluate)
			sm = append(sm, fmt.Sprintf("%.3f× (batch %d, %.0f ns; best rounds %.3f×)", x.XScalarMult, x.Batch, x.NsPerItem, x.XScalarMultBest))
			ci = append(ci, fmt.Sprintf("%.3f× (batch %d; %.3f× Evaluate+wire)", x.XCirclEvaluate, x.Batch, x.XCirclWire))
		}
		out = append(out,
			target("server pseudonymize per item, transitInfo included", smGoal, worstSM, strings.Join(sm, ", "), worstSM <= 1.25, ""),
			target("server pseudonymize per item vs circl", circlGoal, worstCircl, strings.Join(ci, ", "), worstCircl <= 1.0,
				"circl Evaluate takes decoded points and returns points; ours decodes, seals the transitInfo and encodes"))
	}

	// The targets of the performance issue (#13): the server's CPU per
	// item in ScalarMults, from its process CPU time in the same run
	// (pinned: its core to itself), the latency at half load, the soak and
	// the memory.
	out = append(out,
		cpuTarget(g, "server CPU per item, unary pseudonymize (8 callers)", 1.8,
			func(r *GRPCRun) bool {
				return r.Op == "pseudonymize" && r.Batch == 1 && r.Concurrency == 8 && r.closedLoop()
			}),
		cpuTarget(g, "server CPU per item, 1-item stream messages", 1.5,
			func(r *GRPCRun) bool { return r.Op == "pseudonymize-stream" && r.Batch == 1 && r.closedLoop() }),
		cpuTarget(g, "server CPU per item, batch 100", 1.15,
			func(r *GRPCRun) bool { return r.Op == "pseudonymize" && r.Batch == 100 && r.closedLoop() }),
		batchOpsTarget(g))

	p99 := missing("p99 unary latency at half the best unary rate", "≤ 1 ms")
	rss := missing("server RSS at full load", "≤ 64 MiB")
	soak := missing("soak: p99, errors, RSS drift", "p99 ≤ 5 ms, 0 errors, RSS drift ≤ 5 %")
	if g != nil {
		for _, r := range g.Runs {
			if r.Op == "pseudonymize" && r.Batch == 1 && r.Load == 0.5 {
				p99 = target(p99.Name, p99.Goal, r.LatencyMs.P99,
					fmt.Sprintf("%.3f ms (%.0f calls/s, %d callers; %d of %d calls sent over 1 ms late by the generator)",
						r.LatencyMs.P99, r.TargetCallsPerSec, r.Concurrency, r.LateCalls, r.Calls),
					r.LatencyMs.P99 <= 1, "half of the best unary throughput measured in the same run")
			}
		}
		peak := 0.0
		for _, r := range g.Runs {
			peak = max(peak, r.ServerRSSPeakBytes)
		}
		if peak > 0 {
			mib := peak / (1 << 20)
			rss = target(rss.Name, rss.Goal, mib, fmt.Sprintf("%.1f MiB (peak over all runs)", mib), mib <= 64, "")
		}
		if sk := g.Soak; sk != nil && sk.RSS != nil {
			errs := sk.Run.CallErrors + sk.Run.ItemErrors
			soak = target(soak.Name, soak.Goal, sk.Run.LatencyMs.P99,
				fmt.Sprintf("p99 %.3f ms over %.0f s at %.0f calls/s of batch %d, %d errors, RSS drift %+.1f %%",
					sk.Run.LatencyMs.P99, sk.Run.DurationSec, sk.Run.TargetCallsPerSec, sk.Run.Batch, errs, sk.RSS.DriftPct),
				sk.Run.LatencyMs.P99 <= 5 && errs == 0 && math.Abs(sk.RSS.DriftPct) <= 5, "")
		}
	}
	return append(out, p99, soak, rss)
}

// cpuTarget is the server's CPU per item of the best (lowest) run that
// sel picks, against goal (in ScalarMults).
func cpuTarget(g *GRPC, name string, goal float64, sel func(*GRPCRun) bool) Target {
	t := missing(name, fmt.Sprintf("≤ %.2f × ScalarMult", goal))
	if g == nil {
		return t
	}
	var best *GRPCRun
	for i := range g.Runs {
		r := &g.Runs[i]
		if sel(r) && r.ServerCPUXScalarMult > 0 && (best == nil || r.ServerCPUXScalarMult < best.ServerCPUXScalarMult) {
			best = r
		}
	}
	if best == nil {
		return t
	}
	return target(name, t.Goal, best.ServerCPUXScalarMult,
		fmt.Sprintf("%.2f× (%s: %.0f items/s, %.3f × ceiling)", best.ServerCPUXScalarMult, best.Name, best.ItemsPerSec, best.XCeiling),
		best.ServerCPUXScalarMult <= goal, "")
}

// batchOpsTarget compares the server's CPU per item of identify and
// convert with pseudonymize's, at batch 100.
func batchOpsTarget(g *GRPC) Target {
	t := missing("identify and convert, batch 100, vs pseudonymize", "within 5 % of pseudonymize's server CPU per item")
	if g == nil {
		return t
	}
	cpu := map[string]float64{}
	for _, r := range g.Runs {
		if r.Batch == 100 && r.closedLoop() && r.ServerCPUXScalarMult > 0 {
			if c, ok := cpu[r.Op]; !ok || r.ServerCPUXScalarMult < c {
				cpu[r.Op] = r.ServerCPUXScalarMult
			}
		}
	}
	p, ok := cpu["pseudonymize"]
	if !ok || cpu["identify"] == 0 || cpu["convert"] == 0 {
		return t
	}
	worst := max(cpu["identify"], cpu["convert"]) / p
	return target(t.Name, t.Goal, worst,
		fmt.Sprintf("identify %.2f×, convert %.2f× ScalarMult against pseudonymize %.2f× (%+.1f %%, %+.1f %%)",
			cpu["identify"], cpu["convert"], p, 100*(cpu["identify"]/p-1), 100*(cpu["convert"]/p-1)),
		worst <= 1.05, "")
}

// WriteJSON writes the summary as indented JSON.
func (s *Summary) WriteJSON(w io.Writer) error {
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

// WriteMarkdown writes the summary as a markdown page; chart, when not
// empty, is the path of the chart relative to the page.
func (s *Summary) WriteMarkdown(w io.Writer, chart string) error {
	var b strings.Builder
	b.WriteString("# Benchmark results\n\n")
	b.WriteString("Generated by `scripts/bench.sh`; see `docs/benchmarks.md` for what each number means.\n\n")
	if g := s.GRPC; g != nil {
		h := g.Host
		fmt.Fprintf(&b, "- Machine: %s, %d CPUs (%s/%s), %s, host %s\n", orUnknown(h.CPU), h.NumCPU, h.OS, h.Arch, h.GoVersion, h.Hostname)
		fmt.Fprintf(&b, "- Started: %s; load average %s at the start, %s at the end\n",
			g.Started.Format(time.RFC3339), orUnknown(h.LoadAvgStart), orUnknown(h.LoadAvgEnd))
		fmt.Fprintf(&b, "- Mode: **%s**", g.Mode())
		if h.CPUsAllowed != "" {
			fmt.Fprintf(&b, " (the generator's CPUs: %s)", h.CPUsAllowed)
		}
		b.WriteString("\n")
		fmt.Fprintf(&b, "- Server: %s, %s; ScalarMult %.0f ns (median of the run); ceiling %s ÷ ScalarMult = %.0f items/s\n",
			g.Target.Addr, transport(g), g.ScalarMultNs, cores(g.Cores), g.CeilingItemsPerSec)
	}
	b.WriteString("\n## Targets\n\n| target | goal | measured | met |\n|---|---|---|---|\n")
	for _, t := range s.Targets {
		met := "not measured"
		if t.Met != nil {
			met = map[bool]string{true: "yes", false: "**no**"}[*t.Met]
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", t.Name, t.Goal, t.Measured, met)
	}
	for _, t := range s.Targets {
		if t.Note != "" {
			fmt.Fprintf(&b, "\n- %s: %s", t.Name, t.Note)
		}
	}
	b.WriteString("\n")
	if g := s.GRPC; g != nil && len(g.Runs) > 0 {
		fmt.Fprintf(&b, "\n## gRPC load (bench/cmd/pseudobench; %s)\n\n", g.Mode())
		b.WriteString("| run | batch | callers | target calls/s | items/s | × ceiling | server-bound × ceiling | p50 ms | p90 ms | p99 ms | errors | RSS MiB |\n")
		b.WriteString("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
		for _, r := range g.Runs {
			fmt.Fprintf(&b, "| %s | %d | %d | %s | %.0f | %.3f | %s | %.3f | %.3f | %.3f | %d | %s |\n",
				r.Name, r.Batch, r.Concurrency, num(r.TargetCallsPerSec, "%.0f"), r.ItemsPerSec, r.XCeiling,
				num(r.ServerCPUXCeiling, "%.3f"), r.LatencyMs.P50, r.LatencyMs.P90, r.LatencyMs.P99,
				r.CallErrors+r.ItemErrors, num(r.ServerRSSPeakBytes/(1<<20), "%.1f"))
		}
	}
	if g := s.GRPC; g != nil && g.Mix != nil {
		writeMix(&b, g)
	}
	if g := s.GRPC; g != nil && g.Soak != nil {
		writeSoak(&b, g)
	}
	if len(s.ClientSDK) > 0 {
		writeClientSDK(&b, s.GRPC, s.ClientSDK)
	}
	if c := s.Compare; c != nil {
		fmt.Fprintf(&b, "\n## Server-side crypto per item (cmd/compare, %d interleaved rounds of %.0f ms per case)\n\n", c.Rounds, c.RoundMs)
		if err := compare.WriteMarkdown(&b, c); err != nil {
			return err
		}
	}
	if chart != "" {
		fmt.Fprintf(&b, "\n![throughput and latency](%s)\n", chart)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func writeMix(b *strings.Builder, g *GRPC) {
	m := g.Mix
	fmt.Fprintf(b, "\n## Prescription mix (%s)\n\n", g.Mode())
	fmt.Fprintf(b, "Open loop, Poisson arrivals, %d–%d items per call, %.0f %% pseudonymize / %.0f %% identify, %d callers. ",
		m.ItemsMin, m.ItemsMax, 100*(1-m.IdentifyShare), 100*m.IdentifyShare, m.Callers)
	if m.Search {
		if m.MaxCallsPerSec > 0 && m.MaxLatencyMs != nil {
			fmt.Fprintf(b, "**Highest rate with p99 ≤ %g ms: %.0f calls/s** (%.0f items/s; p50 %.3f ms, p99 %.3f ms, p99.9 %.3f ms)",
				m.P99BoundMs, m.MaxCallsPerSec, m.MaxItemsPerSec, m.MaxLatencyMs.P50, m.MaxLatencyMs.P99, m.MaxLatencyMs.P999)
			if m.FailedCallsPerSec > 0 {
				fmt.Fprintf(b, "; %.0f calls/s failed", m.FailedCallsPerSec)
			}
			if !m.Converged {
				b.WriteString(" (not converged)")
			}
			b.WriteString(".\n")
		} else {
			fmt.Fprintf(b, "**No step kept p99 ≤ %g ms.**\n", m.P99BoundMs)
		}
	}
	b.WriteString("\n| step | target calls/s | calls/s | items/s | p50 ms | p99 ms | p99.9 ms | pseudonymize p99 ms | identify p99 ms | late | unsent | errors | pass |\n")
	b.WriteString("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n")
	for i, r := range m.Steps {
		pass := "-"
		if r.Pass != nil {
			pass = map[bool]string{true: "yes", false: "no"}[*r.Pass]
		}
		fmt.Fprintf(b, "| %d | %.0f | %.0f | %.0f | %.3f | %.3f | %.3f | %s | %s | %d | %d | %d | %s |\n",
			i+1, r.TargetCallsPerSec, r.CallsPerSec, r.ItemsPerSec, r.LatencyMs.P50, r.LatencyMs.P99, r.LatencyMs.P999,
			num(r.LatencyByOpMs["pseudonymize"].P99, "%.3f"), num(r.LatencyByOpMs["identify"].P99, "%.3f"),
			r.LateCalls, r.UnsentCalls, r.CallErrors+r.ItemErrors, pass)
	}
}

func writeSoak(b *strings.Builder, g *GRPC) {
	s, r := g.Soak, &g.Soak.Run
	fmt.Fprintf(b, "\n## Soak (%s)\n\n", g.Mode())
	fmt.Fprintf(b, "%s, batch %d, open loop at %.0f calls/s for %.0f s, %d callers: %d calls, %.0f items/s, p50 %.3f ms, p99 %.3f ms, p99.9 %.3f ms, %d errors, %d calls late, %d unsent.\n\n",
		r.Op, r.Batch, r.TargetCallsPerSec, r.DurationSec, r.Concurrency, r.Calls, r.ItemsPerSec,
		r.LatencyMs.P50, r.LatencyMs.P99, r.LatencyMs.P999, r.CallErrors+r.ItemErrors, r.LateCalls, r.UnsentCalls)
	if d := s.RSS; d != nil {
		fmt.Fprintf(b, "- Server RSS: first %.1f MiB, last %.1f MiB, max %.1f MiB; drift %+.1f %% (mean of the first %g s window %.1f MiB, of the last %.1f MiB)\n",
			d.First/(1<<20), d.Last/(1<<20), d.Max/(1<<20), d.DriftPct, s.WindowSec, d.FirstWindowMean/(1<<20), d.LastWindowMean/(1<<20))
	}
	if d := s.Goroutines; d != nil {
		fmt.Fprintf(b, "- Server goroutines: first %.0f, last %.0f, max %.0f; drift %+.1f %% (%.1f → %.1f)\n",
			d.First, d.Last, d.Max, d.DriftPct, d.FirstWindowMean, d.LastWindowMean)
	}
	b.WriteString("\n| window from s | calls | errors | p50 ms | p99 ms | RSS MiB | goroutines |\n|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, w := range s.Windows {
		fmt.Fprintf(b, "| %g | %d | %d | %.3f | %.3f | %s | %s |\n", w.StartSec, w.Calls, w.Errors, w.P50Ms, w.P99Ms,
			num(w.RSSMeanBytes/(1<<20), "%.1f"), num(w.GoroutinesMean, "%.0f"))
	}
}

func writeClientSDK(b *strings.Builder, g *GRPC, rows []ClientSDK) {
	fmt.Fprintf(b, "\n## Client SDK (client.Client; %s)\n\n", g.Mode())
	b.WriteString("CPU per item in ScalarMults. *client*: the generator's process CPU time (the client's when the server is another process)" +
		" per item and per distinct identifier; *blind+unblind*: the client's work on one item without the call, timed alone;" +
		" *call and rest* = client per distinct item − blind+unblind; *server*: per item that reached it.\n\n")
	b.WriteString("| run | batch | callers | items/s | client per item | client per distinct item | blind+unblind | call and rest | server per item | cache hit rate | merged | server calls | server items | p50 ms | p99 ms | errors |\n")
	b.WriteString("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	var notes []string
	for _, r := range rows {
		rest := 0.0
		if r.ClientCPUDistinctXScalarMult > 0 && r.CryptoXScalarMult > 0 {
			rest = r.ClientCPUDistinctXScalarMult - r.CryptoXScalarMult
		}
		fmt.Fprintf(b, "| %s | %d | %d | %.0f | %s | %s | %s | %s | %s | %.3f | %.3f | %d | %d | %.3f | %.3f | %d |\n",
			r.Run, r.Batch, r.Concurrency, r.ItemsPerSec,
			num(r.ClientCPUXScalarMult, "%.2f"), num(r.ClientCPUDistinctXScalarMult, "%.2f"), num(r.CryptoXScalarMult, "%.2f"),
			num(rest, "%.2f"), num(r.ServerCPUXScalarMult, "%.2f"), r.HitRate, r.MergedShare,
			r.ServerCalls, r.ServerItems, r.P50Ms, r.P99Ms, r.Errors)
		if r.ClientCPUNote != "" && !slices.Contains(notes, r.ClientCPUNote) {
			notes = append(notes, r.ClientCPUNote)
		}
	}
	for _, n := range notes {
		fmt.Fprintf(b, "\n- Client CPU not measured: %s\n", n)
	}
	if !g.pinned() {
		b.WriteString("\n- Not pinned: the client's CPU time is its own, but it shares the cores with the server.\n")
	}
}

func transport(g *GRPC) string {
	switch {
	case g.Target.InProcess:
		return "in-process, plaintext"
	case g.Target.TLS:
		return "TLS"
	}
	return "plaintext"
}

func num(x float64, format string) string {
	if x == 0 || math.IsNaN(x) {
		return "-"
	}
	return fmt.Sprintf(format, x)
}

// cores is "1 core", "2 cores".
func cores(n int) string {
	if n == 1 {
		return "1 core"
	}
	return fmt.Sprintf("%d cores", n)
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

// throughputRuns are the closed-loop unary pseudonymize runs, by
// concurrency.
func throughputRuns(g *GRPC) (concurrencies []int, byConc map[int][]GRPCRun) {
	byConc = map[int][]GRPCRun{}
	for _, r := range g.Runs {
		if !r.closedLoop() || r.Calibration || r.Op != "pseudonymize" {
			continue
		}
		if _, ok := byConc[r.Concurrency]; !ok {
			concurrencies = append(concurrencies, r.Concurrency)
		}
		byConc[r.Concurrency] = append(byConc[r.Concurrency], r)
	}
	slices.Sort(concurrencies)
	for _, rs := range byConc {
		slices.SortFunc(rs, func(a, b GRPCRun) int { return a.Batch - b.Batch })
	}
	return concurrencies, byConc
}
