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
	} `json:"host"`
	Target struct {
		Addr      string `json:"addr"`
		InProcess bool   `json:"in_process"`
		TLS       bool   `json:"tls"`
		Op        string `json:"op"`
	} `json:"target"`
	Cores              int       `json:"cores"`
	ScalarMultNs       float64   `json:"scalarmult_ns"`
	CeilingItemsPerSec float64   `json:"ceiling_items_per_s"`
	Runs               []GRPCRun `json:"runs"`
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
	Calls             uint64  `json:"calls"`
	ItemsPerSec       float64 `json:"items_per_s"`
	CallErrors        uint64  `json:"call_errors"`
	ItemErrors        uint64  `json:"item_errors"`
	LateCalls         uint64  `json:"late_calls"`
	LatencyMs         struct {
		P50 float64 `json:"p50"`
		P90 float64 `json:"p90"`
		P99 float64 `json:"p99"`
		Max float64 `json:"max"`
	} `json:"latency_ms"`
	ScalarMultNs         float64 `json:"scalarmult_ns"`
	CeilingItemsPerSec   float64 `json:"ceiling_items_per_s"`
	XCeiling             float64 `json:"x_ceiling"`
	ServerRSSPeakBytes   float64 `json:"server_rss_peak_bytes"`
	ServerCPUXScalarMult float64 `json:"server_cpu_x_scalarmult"`
	ServerCPUXCeiling    float64 `json:"server_cpu_x_ceiling"`
	ClientCPUSec         float64 `json:"client_cpu_s"`
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
	Tool       string          `json:"tool"`
	Generated  time.Time       `json:"generated"`
	Targets    []Target        `json:"targets"`
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
		GRPCRaw: gRaw, CompareRaw: cRaw, Targets: targets(g, c)}
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

	const shared = "load generator on the same cores; server-bound = if the server had the cores to itself (its CPU time per item)"
	out = append(out, throughputTarget(g, "gRPC batch-100 throughput", 100, 0.75, shared))
	out = append(out, throughputTarget(g, "gRPC unary throughput", 1, 0.40, shared))

	p99 := missing("p99 unary latency at half load", "≤ 2 ms")
	rss := missing("server RSS at full load", "≤ 100 MiB")
	if g != nil {
		for _, r := range g.Runs {
			if r.Batch == 1 && r.Load == 0.5 {
				p99 = target(p99.Name, p99.Goal, r.LatencyMs.P99,
					fmt.Sprintf("%.3f ms (%.0f calls/s, %d callers; %d of %d calls sent over 1 ms late by the generator)",
						r.LatencyMs.P99, r.TargetCallsPerSec, r.Concurrency, r.LateCalls, r.Calls),
					r.LatencyMs.P99 <= 2, "half of the best unary throughput measured in the same run")
			}
		}
		peak := 0.0
		for _, r := range g.Runs {
			peak = max(peak, r.ServerRSSPeakBytes)
		}
		if peak > 0 {
			mib := peak / (1 << 20)
			rss = target(rss.Name, rss.Goal, mib, fmt.Sprintf("%.1f MiB (peak over all runs)", mib), mib <= 100, "")
		}
	}
	return append(out, p99, rss)
}

func throughputTarget(g *GRPC, name string, batch int, goal float64, note string) Target {
	t := missing(name, fmt.Sprintf("≥ %.2f × (cores ÷ ScalarMult)", goal))
	if g == nil {
		return t
	}
	var best *GRPCRun
	for i := range g.Runs {
		r := &g.Runs[i]
		if r.Batch == batch && r.closedLoop() && r.Op == "pseudonymize" && (best == nil || r.XCeiling > best.XCeiling) {
			best = r
		}
	}
	if best == nil {
		return t
	}
	m := fmt.Sprintf("%.3f× (%.0f items/s, %d callers)", best.XCeiling, best.ItemsPerSec, best.Concurrency)
	if best.ServerCPUXCeiling > 0 {
		m += fmt.Sprintf("; server-bound %.3f×", best.ServerCPUXCeiling)
	}
	return target(name, t.Goal, best.XCeiling, m, best.XCeiling >= goal, note)
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
		fmt.Fprintf(&b, "- Server: %s, %s; ScalarMult %.0f ns (median of the run); ceiling %d cores ÷ ScalarMult = %.0f items/s\n",
			g.Target.Addr, transport(g), g.ScalarMultNs, g.Cores, g.CeilingItemsPerSec)
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
	if g := s.GRPC; g != nil {
		b.WriteString("\n## gRPC load (bench/cmd/pseudobench)\n\n")
		b.WriteString("| run | batch | callers | target calls/s | items/s | × ceiling | server-bound × ceiling | p50 ms | p90 ms | p99 ms | errors | RSS MiB |\n")
		b.WriteString("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
		for _, r := range g.Runs {
			fmt.Fprintf(&b, "| %s | %d | %d | %s | %.0f | %.3f | %s | %.3f | %.3f | %.3f | %d | %s |\n",
				r.Name, r.Batch, r.Concurrency, num(r.TargetCallsPerSec, "%.0f"), r.ItemsPerSec, r.XCeiling,
				num(r.ServerCPUXCeiling, "%.3f"), r.LatencyMs.P50, r.LatencyMs.P90, r.LatencyMs.P99,
				r.CallErrors+r.ItemErrors, num(r.ServerRSSPeakBytes/(1<<20), "%.1f"))
		}
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

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

// throughputRuns are the closed-loop pseudonymize runs, by concurrency.
func throughputRuns(g *GRPC) (concurrencies []int, byConc map[int][]GRPCRun) {
	byConc = map[int][]GRPCRun{}
	for _, r := range g.Runs {
		if !r.closedLoop() || r.Calibration {
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
