package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ehealth-pseudo/pseudonymizer/internal/auth"
	"github.com/ehealth-pseudo/pseudonymizer/internal/testpki"
)

// short are flags that keep a test run well under a second per run.
var short = []string{"-duration", "250ms", "-warmup", "50ms", "-points", "64", "-scalarmult-time", "20ms", "-q"}

func runJSON(t *testing.T, args ...string) (*report, string) {
	t.Helper()
	out := filepath.Join(t.TempDir(), "out.json")
	var stdout, stderr bytes.Buffer
	// The test's own flags come last: they override short.
	args = append(append(slices.Clone(short), args...), "-json", out)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := run(ctx, args, &stdout, &stderr); err != nil {
		t.Fatalf("run(%q) = %v\nstdout:\n%s\nstderr:\n%s", args, err, &stdout, &stderr)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var r report
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatalf("bad JSON: %v\n%s", err, b)
	}
	return &r, stdout.String()
}

// checkRuns checks that every run did work, without errors, and that the
// derived numbers are consistent. No timing thresholds.
func checkRuns(t *testing.T, r *report, want int) {
	t.Helper()
	if r.Tool != "pseudobench" || r.SchemaVersion != schemaVersion || r.Cores < 1 {
		t.Errorf("header = %q v%d cores %d", r.Tool, r.SchemaVersion, r.Cores)
	}
	if r.ScalarMultNs <= 0 || r.CeilingItemsPerSec <= 0 {
		t.Errorf("scalarmult_ns = %v, ceiling = %v", r.ScalarMultNs, r.CeilingItemsPerSec)
	}
	if len(r.Runs) != want {
		t.Fatalf("%d runs, want %d", len(r.Runs), want)
	}
	for _, x := range r.Runs {
		if x.Items == 0 || x.Calls == 0 || x.ItemsPerSec <= 0 {
			t.Errorf("%s: items = %d, calls = %d, items/s = %v", x.Name, x.Items, x.Calls, x.ItemsPerSec)
		}
		if x.CallErrors != 0 || x.ItemErrors != 0 || len(x.Errors) != 0 {
			t.Errorf("%s: errors %d+%d %v", x.Name, x.CallErrors, x.ItemErrors, x.Errors)
		}
		if x.Items != x.Calls*uint64(x.Batch) {
			t.Errorf("%s: %d items in %d calls of %d", x.Name, x.Items, x.Calls, x.Batch)
		}
		l := x.LatencyMs
		if !(0 < l.P50 && l.P50 <= l.P90 && l.P90 <= l.P99 && l.P99 <= l.Max) {
			t.Errorf("%s: latency %+v", x.Name, l)
		}
		if x.ScalarMultNs <= 0 || x.XCeiling <= 0 || x.XScalarMult <= 0 {
			t.Errorf("%s: scalarmult %v, x_ceiling %v, x_scalarmult %v", x.Name, x.ScalarMultNs, x.XCeiling, x.XScalarMult)
		}
	}
}

func TestInProcess(t *testing.T) {
	r, stdout := runJSON(t, "-inprocess", "-runs", "1x2,10x2", "-load", "0.5")
	checkRuns(t, r, 3)
	if !r.Target.InProcess || !slices.Equal(r.Target.Ops, []string{"pseudonymize"}) || r.Target.ToDomain != "" {
		t.Errorf("target = %+v", r.Target)
	}
	for _, x := range r.Runs {
		if x.ServerRSSPeakBytes <= 0 {
			t.Errorf("%s: no RSS from the metrics", x.Name)
		}
	}
	load := r.Runs[2]
	if load.Load != 0.5 || load.TargetCallsPerSec <= 0 || load.Batch != 1 || load.Concurrency != 2 {
		t.Errorf("load run = %+v", load)
	}
	if !strings.Contains(stdout, "pseudonymize b10 c2") || !strings.Contains(stdout, "ScalarMult") {
		t.Errorf("table:\n%s", stdout)
	}
}

// TestOpenLoopIsBounded asks for far more calls than can be made: the run
// still ends on time, and says how many calls it could not send.
func TestOpenLoopIsBounded(t *testing.T) {
	start := time.Now()
	r, _ := runJSON(t, "-inprocess", "-runs", "1x2", "-rate", "1000000")
	if el := time.Since(start); el > 5*time.Second {
		t.Errorf("run took %v", el)
	}
	checkRuns(t, r, 1)
	if x := r.Runs[0]; x.TargetCallsPerSec != 1e6 || x.UnsentCalls == 0 || x.LateCalls == 0 {
		t.Errorf("run = %+v", x)
	}
}

// TestMTLSIdentify drives a server started here with mTLS, over TCP, with
// identify items prepared through the server, and reads the server's RSS
// and CPU time from /proc (it is this process).
func TestMTLSIdentify(t *testing.T) {
	dir := t.TempDir()
	ca := testpki.NewCA(t, "bench CA")
	caFile := ca.WriteCA(t, dir)
	srvCert, srvKey := testpki.WriteFiles(t, dir, "server", ca.Server(t))
	cliCert, cliKey := testpki.WriteFiles(t, dir, "client", ca.Client(t, "pseudobench", ""))
	tlsCfg, err := auth.ServerTLSConfig(auth.TLSFiles{Cert: srvCert, Key: srvKey, ClientCA: caFile})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := startInProcess(context.Background(), tlsCfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.stop)

	args := []string{"-addr", srv.addr, "-ca", caFile, "-cert", cliCert, "-key", cliKey,
		"-op", "identify", "-runs", "1x1,16x2", "-conns", "2"}
	if _, err := os.Stat("/proc/self/status"); err == nil {
		args = append(args, "-pid", strconv.Itoa(os.Getpid()))
	}
	r, _ := runJSON(t, args...)
	checkRuns(t, r, 2)
	if !r.Target.TLS || !r.Target.MTLS || !slices.Equal(r.Target.Ops, []string{"identify"}) || r.Target.Conns != 2 {
		t.Errorf("target = %+v", r.Target)
	}
	if r.Target.Stats == "proc" {
		for _, x := range r.Runs {
			if x.ServerRSSPeakBytes <= 0 {
				t.Errorf("%s: no RSS from /proc", x.Name)
			}
		}
	}
}

func TestUnreachableServer(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close() // nothing listens there now
	err = run(context.Background(), append([]string{"-addr", addr, "-wait", "300ms", "-runs", "1x1"}, short...), io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "not serving") {
		t.Errorf("run = %v, want a not-serving error", err)
	}
}

func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{"-op", "convert,nope"},
		{"-op", "mix"},
		{"-runs", "nope:1x1"},
		{"-runs", ":1x1"},
		{"-runs", "identify:1x"},
		{"-op", "convert", "-to-domain", "demo_v1"},
		{"-mix", "-mix-steps", "0"},
		{"-mix-rate", "-1"},
		{"-mix", "-mix-callers", "0"},
		{"-soak", "48h"},
		{"-soak", "1m", "-soak-op", "mix"},
		{"-soak", "1m", "-soak-load", "1.5"},
		{"-soak", "1m", "-soak-window", "2m"},
		{"-soak", "1h", "-soak-window", "5s"},
		{"-soak", "1m", "-soak-sample", "30s", "-soak-window", "10s"},
		{"-soak", "1m", "-soak-batch", "10", "-points", "5"},
		{"-batch", "0"},
		{"-batch", "10", "-runs", "1x1"},
		{"-runs", "1y1"},
		{"-runs", "1x1", "-concurrency", "2"},
		{"-concurrency", "1,x"},
		{"-load", "0"},
		{"-load-batch", "-1"},
		{"-cert", "c.pem"},
		{"-cert", "c.pem", "-key", "k.pem"},
		{"-duration", "1h"},
		{"-load", "2"},
		{"-points", "10", "-batch", "100"},
		{"-cpuprofile", "cpu.out"},
		{"-inprocess", "-pid", "1"},
		{"-metrics", "http://127.0.0.1:1/metrics", "-pid", "1"},
		{"-addr", "192.0.2.1:50051"},
		{"-addr", ":50051"},
		{"extra"},
	} {
		err := run(context.Background(), args, io.Discard, io.Discard)
		var ue *usageError
		if !errors.As(err, &ue) {
			t.Errorf("run(%q) = %v, want a usage error", args, err)
		}
	}
}

func TestParseRuns(t *testing.T) {
	c, err := parseConfig([]string{"-runs", "1x1, 100x4", "-load", "0.5", "-load-batch", "1,10"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	want := []runSpec{{op: "pseudonymize", batch: 1, concurrency: 1}, {op: "pseudonymize", batch: 100, concurrency: 4}}
	if len(c.runs) != 2 || c.runs[0] != want[0] || c.runs[1] != want[1] {
		t.Errorf("runs = %+v", c.runs)
	}
	ls := c.loadSpecs()
	if len(ls) != 2 || ls[0] != (runSpec{op: "pseudonymize", batch: 1, concurrency: 4, load: 0.5}) || ls[1].batch != 10 {
		t.Errorf("load specs = %+v", ls)
	}
	c, err = parseConfig([]string{"-op", "identify,convert-stream", "-runs", "1x2,pseudonymize:10x1", "-load", "0.5"}, io.Discard)
	wantOps := []runSpec{{op: "identify", batch: 1, concurrency: 2}, {op: "convert-stream", batch: 1, concurrency: 2}, {op: "pseudonymize", batch: 10, concurrency: 1}}
	if err != nil || !slices.Equal(c.runs, wantOps) {
		t.Errorf("runs with operations = %+v, %v", c.runs, err)
	}
	if ls := c.loadSpecs(); len(ls) != 2 || ls[0] != (runSpec{op: "identify", batch: 1, concurrency: 2, load: 0.5}) || ls[1].op != "convert-stream" {
		t.Errorf("load specs of two operations = %+v", ls)
	}
	if got := c.allOps(); !slices.Equal(got, []string{"identify", "convert-stream", "pseudonymize"}) {
		t.Errorf("allOps = %v", got)
	}
	// -mix and -soak alone run no matrix; with -runs they do.
	c, err = parseConfig([]string{"-mix", "-soak", "2m"}, io.Discard)
	if err != nil || len(c.runs) != 0 || !slices.Equal(c.allOps(), []string{"mix", "pseudonymize"}) {
		t.Errorf("-mix -soak = %+v, %v", c, err)
	}
	if c.soakWindow != time.Minute || c.soakSample != 5*time.Second {
		t.Errorf("soak defaults: window %v, sample %v", c.soakWindow, c.soakSample)
	}
	c, err = parseConfig([]string{"-mix-rate", "100", "-runs", "1x1", "-soak", "10s"}, io.Discard)
	if err != nil || !c.mix || len(c.runs) != 1 || c.soakWindow != 5*time.Second || c.soakSample != time.Second {
		t.Errorf("-mix-rate -runs -soak = %+v, %v", c, err)
	}
	c, err = parseConfig([]string{"-batch", "1,10,1", "-concurrency", "2,3"}, io.Discard)
	if err != nil || len(c.runs) != 4 || c.runs[3] != (runSpec{op: "pseudonymize", batch: 10, concurrency: 3}) {
		t.Errorf("cross product = %+v, %v", c.runs, err)
	}
	c, err = parseConfig([]string{"-batch", "100"}, io.Discard)
	if err != nil || len(c.runs) != 2 || c.runs[1] != (runSpec{op: "pseudonymize", batch: 100, concurrency: 4}) {
		t.Errorf("default -concurrency = %+v, %v", c.runs, err)
	}
	for _, addr := range []string{"localhost:1", "[::1]:1", "127.0.0.2:1"} {
		if _, err := parseConfig([]string{"-addr", addr}, io.Discard); err != nil {
			t.Errorf("-addr %s: %v", addr, err)
		}
	}
	if _, err := parseConfig([]string{"-addr", "192.0.2.1:50051", "-ca", "ca.pem"}, io.Discard); err != nil {
		t.Errorf("TLS to another host: %v", err)
	}
}

func TestHistogram(t *testing.T) {
	var h histogram
	for i := 1; i <= 10000; i++ {
		h.add(time.Duration(i) * time.Microsecond)
	}
	for _, c := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 5 * time.Millisecond}, {0.9, 9 * time.Millisecond}, {0.99, 9900 * time.Microsecond}, {1, 10 * time.Millisecond}} {
		got := h.quantile(c.q)
		if d := float64(got-c.want) / float64(c.want); d < -0.01 || d > 0.01 {
			t.Errorf("quantile(%v) = %v, want %v ±1%%", c.q, got, c.want)
		}
	}
	if h.mean() != 5000500*time.Nanosecond || h.max != 10*time.Millisecond {
		t.Errorf("mean %v max %v", h.mean(), h.max)
	}
	for _, d := range []time.Duration{0, 1, 127, 128, 255, 256, 1<<40 + 12345, 1<<63 - 1} {
		if v := bucketValue(bucketOf(d)); float64(v) < float64(d)*0.99 || float64(v) > float64(d)*1.01+1 {
			t.Errorf("bucket of %d is worth %d", d, v)
		}
	}
	var empty histogram
	if empty.quantile(0.99) != 0 || empty.mean() != 0 {
		t.Error("empty histogram")
	}
}

func TestParseMetrics(t *testing.T) {
	st, err := parseMetrics(strings.NewReader(`# HELP process_resident_memory_bytes Resident memory size in bytes.
# TYPE process_resident_memory_bytes gauge
process_resident_memory_bytes 2.4576e+07
process_cpu_seconds_total 12.5
go_sched_gomaxprocs_threads 2
go_goroutines 17
grpc_server_handled_total{grpc_code="OK"} 5
`))
	if err != nil || st.rss != 24576000 || st.cpuSeconds != 12.5 || st.gomaxprocs != 2 || st.goroutines != 17 {
		t.Errorf("parseMetrics = %+v, %v", st, err)
	}
	if _, err := parseMetrics(strings.NewReader("up 1\n")); err == nil {
		t.Error("no error without process_resident_memory_bytes")
	}
}
