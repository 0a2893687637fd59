// Command splitbench is the helper of scripts/bench-split.sh, which
// measures split domain keys (docs/split-keys.md, "Benchmarks"): the
// service, Vault and the key-share plugin on this machine, driven by
// pseudobench over mTLS.
//
//	splitbench pids -exe PATH
//	    prints "PID PPID" of every process running the executable PATH
//	    (the plugin, from the set-up's own plugin directory; its parent is
//	    Vault).
//	splitbench run -out REC.json -domain D -mode split|single -run NAME
//	    -proc ROLE=PID[,PID] ... -metrics URL [-audit FILE] -bench-json PB.json
//	    -- COMMAND...
//	    reads the CPU time (utime + stime, /proc/PID/stat) of every process,
//	    the service's item counter (pseudonymizer_items_total at URL) and
//	    the plugin round trips in Vault's audit log, runs COMMAND
//	    (pseudobench writing PB.json), reads them again and writes the
//	    differences with pseudobench's numbers into REC.json.
//	splitbench report [-cores N] [-pinning TEXT] [-json FILE] [-md FILE] REC.json...
//	    prints the per-run table (CPU per item of each process in
//	    ScalarMults) and the three targets of issue 11.
//	splitbench vault-profile -addr URL -seconds N -o FILE
//	    writes Vault's CPU profile of the next N seconds
//	    (/v1/sys/pprof/profile, token in VAULT_TOKEN: the dev root token).
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: splitbench pids|run|report|vault-profile|own [flags]")
		os.Exit(2)
	}
	var err error
	switch cmd, args := os.Args[1], os.Args[2:]; cmd {
	case "pids":
		err = pidsCmd(args)
	case "run":
		err = runCmd(args)
	case "report":
		err = reportCmd(args, os.Stdout)
	case "vault-profile":
		err = vaultProfileCmd(args)
	case "own":
		err = ownCmd(args, os.Stdout)
	default:
		err = fmt.Errorf("unknown command %q: pids, run, report, vault-profile or own", cmd)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "splitbench:", err)
		os.Exit(1)
	}
}

// clockTicks is USER_HZ, 100 on every Linux platform Go supports.
const clockTicks = 100

// procCPU returns the user + system CPU seconds of process pid, all its
// threads, from /proc/<pid>/stat, and its parent's pid.
func procCPU(pid int) (cpu float64, ppid int, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, err
	}
	return parseStat(b)
}

func parseStat(b []byte) (cpu float64, ppid int, err error) {
	// The command name, field 2, may hold spaces: count from after it.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, 0, errors.New("/proc stat: unexpected format")
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, 0, errors.New("/proc stat: unexpected format")
	}
	ppid, err1 := strconv.Atoi(f[1])             // field 4
	utime, err2 := strconv.ParseFloat(f[11], 64) // field 14
	stime, err3 := strconv.ParseFloat(f[12], 64) // field 15
	if err := errors.Join(err1, err2, err3); err != nil {
		return 0, 0, fmt.Errorf("/proc stat: %v", err)
	}
	return (utime + stime) / clockTicks, ppid, nil
}

func pidsCmd(args []string) error {
	fs := flag.NewFlagSet("pids", flag.ContinueOnError)
	exe := fs.String("exe", "", "absolute `path` of the executable")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if !filepath.IsAbs(*exe) {
		return errors.New("pids: -exe must be an absolute path")
	}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return err
	}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if target, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid)); err != nil || target != *exe {
			continue
		}
		if _, ppid, err := procCPU(pid); err == nil {
			fmt.Println(pid, ppid)
		}
	}
	return nil
}

// record is one pseudobench invocation with what the other processes did
// meanwhile (splitbench run).
type record struct {
	Domain       string           `json:"domain"`
	Mode         string           `json:"mode"` // split or single
	Run          string           `json:"run"`  // low, 1x8, 100x2…
	Command      []string         `json:"command"`
	Exit         int              `json:"exit"`
	WallSec      float64          `json:"wall_s"`
	LoadAvgStart string           `json:"loadavg_start"`
	LoadAvgEnd   string           `json:"loadavg_end"`
	PIDs         map[string][]int `json:"pids"`
	// CPUSec is the CPU time of each process (its role: server, vault,
	// plugin) over the whole invocation; ProcErrors notes a process that
	// could not be read afterwards (it exited: its time is lost).
	CPUSec     map[string]float64 `json:"cpu_s"`
	ProcErrors []string           `json:"proc_errors,omitempty"`
	// Items is the service's pseudonymizer_items_total over the
	// invocation (warm-up and every call included): the denominator of
	// every CPU time per item. RoundTrips is the plugin's multiply
	// responses in Vault's audit log over the same time (split mode).
	Items      float64 `json:"items"`
	RoundTrips int64   `json:"plugin_round_trips"`
	Bench      bench   `json:"pseudobench"`
}

// bench is what splitbench takes from pseudobench's JSON: the first run.
type bench struct {
	ScalarMultNs         float64           `json:"scalarmult_ns"`
	Batch                int               `json:"batch"`
	Concurrency          int               `json:"concurrency"`
	TargetCallsPerSec    float64           `json:"target_calls_per_s,omitempty"`
	DurationSec          float64           `json:"duration_s"`
	Calls                uint64            `json:"calls"`
	Items                uint64            `json:"items"`
	ItemsPerSec          float64           `json:"items_per_s"`
	Errors               uint64            `json:"errors"`
	ErrorKinds           map[string]uint64 `json:"error_kinds,omitempty"`
	LateCalls            uint64            `json:"late_calls,omitempty"`
	P50Ms                float64           `json:"p50_ms"`
	P99Ms                float64           `json:"p99_ms"`
	ServerCPUNsPerItem   float64           `json:"server_cpu_ns_per_item"`
	ServerCPUXScalarMult float64           `json:"server_cpu_x_scalarmult"`
}

// readBench reads pseudobench's -json output.
func readBench(path string) (bench, error) {
	var pb struct {
		ScalarMultNs float64 `json:"scalarmult_ns"`
		Runs         []struct {
			Batch             int               `json:"batch"`
			Concurrency       int               `json:"concurrency"`
			TargetCallsPerSec float64           `json:"target_calls_per_s"`
			DurationSec       float64           `json:"duration_s"`
			Calls             uint64            `json:"calls"`
			Items             uint64            `json:"items"`
			ItemsPerSec       float64           `json:"items_per_s"`
			CallErrors        uint64            `json:"call_errors"`
			ItemErrors        uint64            `json:"item_errors"`
			Errors            map[string]uint64 `json:"errors"`
			LateCalls         uint64            `json:"late_calls"`
			UnsentCalls       uint64            `json:"unsent_calls"`
			LatencyMs         struct {
				P50 float64 `json:"p50"`
				P99 float64 `json:"p99"`
			} `json:"latency_ms"`
			ServerCPUNsPerItem   float64 `json:"server_cpu_ns_per_item"`
			ServerCPUXScalarMult float64 `json:"server_cpu_x_scalarmult"`
		} `json:"runs"`
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return bench{}, err
	}
	if err := json.Unmarshal(b, &pb); err != nil {
		return bench{}, fmt.Errorf("%s: %v", path, err)
	}
	if len(pb.Runs) != 1 || pb.ScalarMultNs <= 0 {
		return bench{}, fmt.Errorf("%s: want one run and a ScalarMult timing", path)
	}
	r := pb.Runs[0]
	return bench{
		ScalarMultNs: pb.ScalarMultNs, Batch: r.Batch, Concurrency: r.Concurrency,
		TargetCallsPerSec: r.TargetCallsPerSec, DurationSec: r.DurationSec,
		Calls: r.Calls, Items: r.Items, ItemsPerSec: r.ItemsPerSec,
		Errors: r.CallErrors + r.ItemErrors, ErrorKinds: r.Errors, LateCalls: r.LateCalls + r.UnsentCalls,
		P50Ms: r.LatencyMs.P50, P99Ms: r.LatencyMs.P99,
		ServerCPUNsPerItem: r.ServerCPUNsPerItem, ServerCPUXScalarMult: r.ServerCPUXScalarMult,
	}, nil
}

// procFlag is -proc ROLE=PID[,PID…], repeated.
type procFlag map[string][]int

func (p procFlag) String() string { return fmt.Sprint(map[string][]int(p)) }

func (p procFlag) Set(s string) error {
	role, list, ok := strings.Cut(s, "=")
	if !ok || role == "" || list == "" {
		return errors.New("want ROLE=PID[,PID]")
	}
	for f := range strings.SplitSeq(list, ",") {
		pid, err := strconv.Atoi(f)
		if err != nil || pid <= 0 {
			return fmt.Errorf("%q is not a process id", f)
		}
		p[role] = append(p[role], pid)
	}
	return nil
}

func runCmd(args []string) error {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	out := fs.String("out", "", "`file` of the record (JSON)")
	domain := fs.String("domain", "", "the `domain` pseudobench calls")
	mode := fs.String("mode", "", "its mode: split or single")
	run := fs.String("run", "", "`name` of the run (low, 1x8, 100x2)")
	procs := procFlag{}
	fs.Var(procs, "proc", "`ROLE=PID[,PID]` of a process whose CPU time to read (repeat)")
	metrics := fs.String("metrics", "", "`URL` of the service's Prometheus /metrics")
	audit := fs.String("audit", "", "Vault's audit log `file`, for the plugin round trips")
	auditPath := fs.String("audit-path", "pseudonymizer-shares/multiply", "request `path` of the plugin's multiply")
	benchJSON := fs.String("bench-json", "", "pseudobench's -json `file`")
	if err := fs.Parse(args); err != nil {
		return err
	}
	command := fs.Args()
	switch {
	case *out == "" || *domain == "" || *run == "" || *metrics == "" || *benchJSON == "":
		return errors.New("run: -out, -domain, -run, -metrics and -bench-json are required")
	case *mode != "split" && *mode != "single":
		return errors.New("run: -mode must be split or single")
	case len(command) == 0:
		return errors.New("run: no command after --")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	rec := record{Domain: *domain, Mode: *mode, Run: *run, Command: command, PIDs: procs, CPUSec: map[string]float64{}}
	cpu := func() (map[string]float64, []string) {
		m, errs := map[string]float64{}, []string(nil)
		for role, pids := range procs {
			for _, pid := range pids {
				c, _, err := procCPU(pid)
				if err != nil {
					errs = append(errs, fmt.Sprintf("%s %d: %v", role, pid, err))
				}
				m[role] += c
			}
		}
		return m, errs
	}
	cpu0, errs := cpu()
	if len(errs) > 0 {
		return fmt.Errorf("before the run: %s", strings.Join(errs, "; "))
	}
	items0, err := scrapeItems(ctx, *metrics)
	if err != nil {
		return err
	}
	var off int64
	if *audit != "" {
		if off, err = fileSize(*audit); err != nil {
			return err
		}
	}
	rec.LoadAvgStart = loadAvg()
	start := time.Now()

	cmd := exec.CommandContext(ctx, command[0], command[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = nil, os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			return err
		}
		rec.Exit = ee.ExitCode()
	}

	rec.WallSec = time.Since(start).Seconds()
	rec.LoadAvgEnd = loadAvg()
	cpu1, errs := cpu()
	rec.ProcErrors = errs
	for role := range procs {
		rec.CPUSec[role] = cpu1[role] - cpu0[role]
	}
	items1, err := scrapeItems(ctx, *metrics)
	if err != nil {
		return err
	}
	rec.Items = items1 - items0
	if *audit != "" {
		if rec.RoundTrips, err = countRoundTrips(*audit, off, *auditPath); err != nil {
			return err
		}
	}
	if rec.Bench, err = readBench(*benchJSON); err != nil {
		return fmt.Errorf("%v (pseudobench exit status %d)", err, rec.Exit)
	}
	b, err := json.MarshalIndent(&rec, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(*out, append(b, '\n'), 0o644)
}

// scrapeItems sums the service's pseudonymizer_items_total (every
// operation and outcome).
func scrapeItems(ctx context.Context, url string) (float64, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("%s: %s", url, resp.Status)
	}
	return sumCounter(io.LimitReader(resp.Body, 16<<20), "pseudonymizer_items_total")
}

// sumCounter sums the samples of a metric in the Prometheus text format.
func sumCounter(r io.Reader, name string) (float64, error) {
	sum := 0.0
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		rest, ok := strings.CutPrefix(line, name)
		if !ok || rest == "" || (rest[0] != '{' && rest[0] != ' ') {
			continue
		}
		f := strings.Fields(rest[strings.LastIndexByte(rest, '}')+1:])
		if len(f) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			return 0, fmt.Errorf("metrics: %q: %v", line, err)
		}
		sum += v
	}
	return sum, sc.Err()
}

func fileSize(path string) (int64, error) {
	st, err := os.Stat(path)
	if err != nil {
		return 0, err
	}
	return st.Size(), nil
}

// countRoundTrips counts the responses to path in Vault's file audit log
// (one JSON object a line) from byte off on.
func countRoundTrips(file string, off int64, path string) (int64, error) {
	f, err := os.Open(file)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	if _, err := f.Seek(off, io.SeekStart); err != nil {
		return 0, err
	}
	var n int64
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 64<<20)
	wantPath := []byte(`"path":"` + path + `"`)
	for sc.Scan() {
		l := sc.Bytes()
		if bytes.Contains(l, []byte(`"type":"response"`)) && bytes.Contains(l, wantPath) {
			n++
		}
	}
	return n, sc.Err()
}

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

func vaultProfileCmd(args []string) error {
	fs := flag.NewFlagSet("vault-profile", flag.ContinueOnError)
	addr := fs.String("addr", "", "Vault's `URL` (http://127.0.0.1:port)")
	secs := fs.Int("seconds", 10, "profile `duration`")
	out := fs.String("o", "", "profile `file`")
	if err := fs.Parse(args); err != nil {
		return err
	}
	token := os.Getenv("VAULT_TOKEN")
	if *addr == "" || *out == "" || token == "" || *secs < 1 || *secs > 600 {
		return errors.New("vault-profile: -addr, -o, 1 to 600 -seconds and VAULT_TOKEN are required")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(*secs+30)*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("%s/v1/sys/pprof/profile?seconds=%d", strings.TrimSuffix(*addr, "/"), *secs), nil)
	if err != nil {
		return err
	}
	req.Header.Set("X-Vault-Token", token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return fmt.Errorf("vault-profile: %s: %s", resp.Status, bytes.TrimSpace(b))
	}
	f, err := os.Create(*out)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// Targets of issue 11 (deliverable 5).
const (
	targetCPU        = 2.4  // server + plugin CPU per item, in ScalarMults (floor 2.0)
	targetThroughput = 0.65 // batch-100 items/s ÷ (cores ÷ 2 ScalarMult)
	targetHopMs      = 1.5  // unary p50 at low load, split − single
)

// row is one run with its derived numbers.
type row struct {
	record
	// Per item, in ScalarMults (of the report's ScalarMult): the CPU time
	// of each process over the invocation ÷ the service's items.
	ServerX float64 `json:"server_cpu_x_scalarmult"`
	PluginX float64 `json:"plugin_cpu_x_scalarmult"`
	VaultX  float64 `json:"vault_cpu_x_scalarmult"`
	// BenchServerX is pseudobench's own (-pid; the run's warm-up and
	// measured time): a check of ServerX.
	BenchServerX float64 `json:"pseudobench_server_cpu_x_scalarmult"`
	// PointsPerTrip is items ÷ plugin round trips (split mode).
	PointsPerTrip float64 `json:"points_per_round_trip,omitempty"`
}

type summary struct {
	Cores        int      `json:"cores"`
	Pinning      string   `json:"pinning"`
	ScalarMultNs float64  `json:"scalarmult_ns"` // median of every invocation's
	Rows         []row    `json:"runs"`
	Targets      []target `json:"targets"`
}

type target struct {
	Name   string  `json:"name"`
	Value  float64 `json:"value"`
	Bound  float64 `json:"bound"`
	Unit   string  `json:"unit"`
	Max    bool    `json:"is_max"` // value must stay at most Bound (else at least)
	Pass   bool    `json:"pass"`
	Detail string  `json:"detail"`
}

func reportCmd(args []string, w io.Writer) error {
	fs := flag.NewFlagSet("report", flag.ContinueOnError)
	cores := fs.Int("cores", 1, "CPUs of the service side (server, Vault, plugin): the ceiling is cores ÷ 2 ScalarMult")
	pinning := fs.String("pinning", "", "`text` describing the CPU placement")
	jsonOut := fs.String("json", "", "write the summary as JSON to `file`")
	mdOut := fs.String("md", "", "write the tables as Markdown to `file`")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *cores < 1 || fs.NArg() == 0 {
		return errors.New("report: give -cores ≥ 1 and the records")
	}
	var rows []row
	var sms []float64
	for _, p := range fs.Args() {
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		var r row
		if err := json.Unmarshal(b, &r.record); err != nil {
			return fmt.Errorf("%s: %v", p, err)
		}
		rows = append(rows, r)
		sms = append(sms, r.Bench.ScalarMultNs)
	}
	sm := median(sms)
	s := summary{Cores: *cores, Pinning: *pinning, ScalarMultNs: sm}
	perItem := func(r *row, role string) float64 {
		if r.Items <= 0 {
			return 0
		}
		return r.CPUSec[role] * 1e9 / r.Items / sm
	}
	for i := range rows {
		r := &rows[i]
		r.ServerX, r.PluginX, r.VaultX = perItem(r, "server"), perItem(r, "plugin"), perItem(r, "vault")
		r.BenchServerX = r.Bench.ServerCPUNsPerItem / sm
		if r.RoundTrips > 0 {
			r.PointsPerTrip = r.Items / float64(r.RoundTrips)
		}
	}
	s.Rows = rows
	get := func(mode, run string) *row { return find(rows, mode, run) }
	for _, run := range []string{"1x8", "100x2"} {
		if r := get("split", run); r != nil {
			v := r.ServerX + r.PluginX
			s.Targets = append(s.Targets, target{
				Name: "server + plugin CPU per item, split " + run, Value: v, Bound: targetCPU, Unit: "×SM", Max: true,
				Detail: fmt.Sprintf("server %.2f + plugin %.2f ×SM (Vault %.2f more; floor 2.0)", r.ServerX, r.PluginX, r.VaultX),
			})
		}
	}
	if r := get("split", "100x2"); r != nil {
		ceiling := float64(*cores) * 1e9 / (2 * sm)
		s.Targets = append(s.Targets, target{
			Name: "batch-100 throughput, split 100x2", Value: r.Bench.ItemsPerSec / ceiling, Bound: targetThroughput, Unit: "× (cores ÷ 2 SM)",
			Detail: fmt.Sprintf("%.0f items/s ÷ %.0f items/s (%d core(s) ÷ 2 × %.1f µs)", r.Bench.ItemsPerSec, ceiling, *cores, sm/1e3),
		})
	}
	if sp, si := get("split", "low"), get("single", "low"); sp != nil && si != nil {
		s.Targets = append(s.Targets, target{
			Name: "plugin hop, unary p50 at low load", Value: sp.Bench.P50Ms - si.Bench.P50Ms, Bound: targetHopMs, Unit: "ms", Max: true,
			Detail: fmt.Sprintf("split %.3f ms − single %.3f ms, %d and %d calls at %.0f calls/s", sp.Bench.P50Ms, si.Bench.P50Ms, sp.Bench.Calls, si.Bench.Calls, sp.Bench.TargetCallsPerSec),
		})
	}
	for i := range s.Targets {
		t := &s.Targets[i]
		t.Pass = t.Value >= t.Bound
		if t.Max {
			t.Pass = t.Value <= t.Bound
		}
	}

	printText(w, &s, rows)
	if *jsonOut != "" {
		b, err := json.MarshalIndent(&s, "", "  ")
		if err != nil {
			return err
		}
		if err := os.WriteFile(*jsonOut, append(b, '\n'), 0o644); err != nil {
			return err
		}
	}
	if *mdOut != "" {
		var buf bytes.Buffer
		printMarkdown(&buf, &s, rows)
		if err := os.WriteFile(*mdOut, buf.Bytes(), 0o644); err != nil {
			return err
		}
	}
	return nil
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s) == 0 {
		return math.NaN()
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func runLabel(r *row) string {
	if r.Bench.TargetCallsPerSec > 0 {
		return fmt.Sprintf("%s %dx%d @%.0f/s", r.Run, r.Bench.Batch, r.Bench.Concurrency, r.Bench.TargetCallsPerSec)
	}
	return r.Run
}

func printText(w io.Writer, s *summary, rows []row) {
	fmt.Fprintf(w, "ScalarMult %.1f µs (median of %d timings, one per invocation); service side: %d core(s), %s\n",
		s.ScalarMultNs/1e3, len(rows), s.Cores, s.Pinning)
	fmt.Fprintln(w, "CPU per item in ScalarMults: each process's CPU time over the invocation ÷ the service's items (pseudonymizer_items_total);")
	fmt.Fprintln(w, "at low load it is mostly the processes' idle background (token renewal, key polls), not a cost of the items")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "mode\trun\titems/s\tp50 ms\tp99 ms\terrors\tserver\tplugin\tVault\tsrv+plugin\tall 3\tsrv (pb)\tpts/trip\tload avg\t")
	for i := range rows {
		r := &rows[i]
		errs := fmt.Sprint(r.Bench.Errors)
		if r.Exit != 0 || len(r.ProcErrors) > 0 {
			errs += "!"
		}
		fmt.Fprintf(tw, "%s\t%s\t%.0f\t%.3f\t%.3f\t%s\t%.2f\t%s\t%s\t%.2f\t%.2f\t%.2f\t%s\t%s\t\n",
			r.Mode, runLabel(r), r.Bench.ItemsPerSec, r.Bench.P50Ms, r.Bench.P99Ms, errs,
			r.ServerX, dash(r.PluginX, r.Mode), fmt.Sprintf("%.2f", r.VaultX), r.ServerX+r.PluginX, r.ServerX+r.PluginX+r.VaultX,
			r.BenchServerX, trips(r), r.LoadAvgEnd)
	}
	tw.Flush()
	for i := range rows {
		if r := &rows[i]; r.Exit != 0 || len(r.ProcErrors) > 0 {
			fmt.Fprintf(w, "! %s %s: pseudobench exit status %d; errors %v %s\n", r.Mode, r.Run, r.Exit, r.Bench.ErrorKinds, strings.Join(r.ProcErrors, "; "))
		}
	}
	if sp, si := find(rows, "split", "100x2"), find(rows, "single", "100x2"); sp != nil && si != nil {
		fmt.Fprintf(w, "split − single, 100x2: server %+.2f ×SM (the service's side of the plugin hop), plugin %.2f, Vault %+.2f\n",
			sp.ServerX-si.ServerX, sp.PluginX, sp.VaultX-si.VaultX)
	}
	fmt.Fprintln(w, "\ntargets (issue 11, deliverable 5):")
	for _, t := range s.Targets {
		verdict, op := "FAIL", "≥"
		if t.Pass {
			verdict = "pass"
		}
		if t.Max {
			op = "≤"
		}
		fmt.Fprintf(w, "  %-4s %s: %.3f %s (target %s %.2f): %s\n", verdict, t.Name, t.Value, t.Unit, op, t.Bound, t.Detail)
	}
}

func find(rows []row, mode, run string) *row {
	for i := range rows {
		if rows[i].Mode == mode && rows[i].Run == run {
			return &rows[i]
		}
	}
	return nil
}

func trips(r *row) string {
	if r.RoundTrips == 0 {
		return "–"
	}
	return fmt.Sprintf("%.1f", r.PointsPerTrip)
}

// dash prints x, or – for the plugin of a single-mode run (it has none).
func dash(x float64, mode string) string {
	if mode == "single" && x < 0.005 {
		return "–"
	}
	return fmt.Sprintf("%.2f", x)
}

func printMarkdown(w io.Writer, s *summary, rows []row) {
	fmt.Fprintf(w, "ScalarMult %.1f µs; service side %d core(s), %s. CPU per item in ScalarMults.\n\n", s.ScalarMultNs/1e3, s.Cores, s.Pinning)
	fmt.Fprintln(w, "| mode | run | items/s | p50 ms | p99 ms | errors | server | plugin | Vault | server + plugin | all three | points/round trip |")
	fmt.Fprintln(w, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
	for i := range rows {
		r := &rows[i]
		fmt.Fprintf(w, "| %s | %s | %.0f | %.3f | %.3f | %d | %.2f | %s | %s | %.2f | %.2f | %s |\n",
			r.Mode, runLabel(r), r.Bench.ItemsPerSec, r.Bench.P50Ms, r.Bench.P99Ms, r.Bench.Errors,
			r.ServerX, dash(r.PluginX, r.Mode), fmt.Sprintf("%.2f", r.VaultX), r.ServerX+r.PluginX, r.ServerX+r.PluginX+r.VaultX, trips(r))
	}
	fmt.Fprintln(w, "\n| target | value | bound | |\n|---|---:|---:|---|")
	for _, t := range s.Targets {
		verdict, op := "**fail**", "≥"
		if t.Pass {
			verdict = "pass"
		}
		if t.Max {
			op = "≤"
		}
		fmt.Fprintf(w, "| %s | %.3f %s | %s %.2f | %s |\n", t.Name, t.Value, t.Unit, op, t.Bound, verdict)
	}
}

// ownCmd reads the record of a profiled split run and ScalarMult's share
// of the service's and of the plugin's CPU profiles (pprof's cumulative
// share of edwards25519.(*Point).ScalarMult, which each makes once per
// item), and prints the time of that ScalarMult per item in each process
// against pseudobench's reference, and each process's CPU per item in its
// own ScalarMults (1 ÷ the share).
func ownCmd(args []string, w io.Writer) error {
	fs := flag.NewFlagSet("own", flag.ContinueOnError)
	recPath := fs.String("rec", "", "record of the profiled run (splitbench run -out)")
	srvShare := fs.Float64("server-share", 0, "ScalarMult's share of the service's profile, in (0, 1]")
	plgShare := fs.Float64("plugin-share", 0, "ScalarMult's share of the plugin's profile, in (0, 1]")
	if err := fs.Parse(args); err != nil {
		return err
	}
	b, err := os.ReadFile(*recPath)
	if err != nil {
		return err
	}
	var r record
	if err := json.Unmarshal(b, &r); err != nil {
		return fmt.Errorf("%s: %v", *recPath, err)
	}
	o, err := ownScalarMults(&r, *srvShare, *plgShare)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "ScalarMult inside the processes (profiles, split %s): service %.1f µs, plugin %.1f µs per item; pseudobench's reference %.1f µs\n",
		r.Run, o.serverSMNs/1e3, o.pluginSMNs/1e3, r.Bench.ScalarMultNs/1e3)
	fmt.Fprintf(w, "in their own ScalarMults: service %.2f + plugin %.2f = %.2f per item (ScalarMult %.0f %% and %.0f %% of their CPU; target ≤ 2.40, floor 2.0)\n",
		1 / *srvShare, 1 / *plgShare, 1 / *srvShare + 1 / *plgShare, 100**srvShare, 100**plgShare)
	return nil
}

// own is what ownCmd prints: the ns of the service's and of the plugin's
// ScalarMult per item.
type own struct{ serverSMNs, pluginSMNs float64 }

func ownScalarMults(r *record, srvShare, plgShare float64) (own, error) {
	switch {
	case r.Items <= 0:
		return own{}, errors.New("the record has no items")
	case srvShare <= 0 || srvShare > 1 || plgShare <= 0 || plgShare > 1:
		return own{}, errors.New("-server-share and -plugin-share must be in (0, 1]")
	case r.CPUSec["server"] <= 0 || r.CPUSec["plugin"] <= 0:
		return own{}, errors.New("the record has no CPU time of the service or of the plugin")
	}
	return own{
		serverSMNs: r.CPUSec["server"] * srvShare / r.Items * 1e9,
		pluginSMNs: r.CPUSec["plugin"] * plgShare / r.Items * 1e9,
	}, nil
}
