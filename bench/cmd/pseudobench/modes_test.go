package main

import (
	"context"
	"errors"
	"io"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/ehealth-pseudo/pseudonymizer/internal/auth"
	"github.com/ehealth-pseudo/pseudonymizer/keys"
	pb "github.com/ehealth-pseudo/pseudonymizer/proto/pseudonymizer/v1"
)

// TestOperations drives every operation, unary and streamed, with 1-item
// and n-item messages, against an in-process server (convert from the demo
// domain into DemoDomain2 as its owner).
func TestOperations(t *testing.T) {
	r, stdout := runJSON(t, "-inprocess", "-op", strings.Join(ops, ","), "-runs", "1x1,5x2", "-duration", "200ms", "-warmup", "100ms")
	checkRuns(t, r, 2*len(ops))
	if !slices.Equal(r.Target.Ops, ops) || r.Target.ToDomain != DemoDomain2 {
		t.Errorf("target = %+v", r.Target)
	}
	for i, op := range ops {
		for j, batch := range []int{1, 5} {
			x := r.Runs[j*len(ops)+i]
			if x.Op != op || x.Batch != batch || !strings.HasPrefix(x.Name, op+" b") {
				t.Errorf("run %d: %s %s batch %d, want %s batch %d", j*len(ops)+i, x.Name, x.Op, x.Batch, op, batch)
			}
		}
	}
	for _, s := range []string{"convert-stream b5 c2", "identify b1 c1", "mode: in-process"} {
		if !strings.Contains(stdout, s) {
			t.Errorf("table lacks %q:\n%s", s, stdout)
		}
	}
}

// TestConvertDenied: a caller the policy does not name cannot convert, and
// pseudobench says so before any run.
func TestConvertDenied(t *testing.T) {
	err := run(context.Background(), append([]string{"-inprocess", "-op", "convert", "-runs", "1x1", "-convert-principal", "pseudobench"}, short...), io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), `does not let "pseudobench" (-convert-principal) convert into "demo_v2"`) {
		t.Errorf("run = %v", err)
	}
}

// TestRunOutlastsTransitTTL: identify items would expire during the run.
func TestRunOutlastsTransitTTL(t *testing.T) {
	err := run(context.Background(), []string{"-inprocess", "-op", "identify", "-runs", "1x1", "-duration", "5m", "-q"}, io.Discard, io.Discard)
	var ue *usageError
	if !errors.As(err, &ue) || !strings.Contains(err.Error(), "transit ttl") {
		t.Errorf("run = %v, want a usage error about the transit ttl", err)
	}
}

// TestMixSearch runs a short search of the prescription mix. Whether a step
// passes depends on the machine: the test checks the structure only.
func TestMixSearch(t *testing.T) {
	r, stdout := runJSON(t, "-inprocess", "-mix", "-mix-steps", "3", "-mix-start", "40", "-duration", "200ms")
	if len(r.Runs) != 0 {
		t.Errorf("-mix alone ran the matrix: %d runs", len(r.Runs))
	}
	m := r.Mix
	if m == nil {
		t.Fatal("no mix in the report")
	}
	if !m.Search || m.Arrivals != "poisson" || m.IdentifyShare != 0.2 || m.ItemsMin != 1 || m.ItemsMax != 3 || m.P99BoundMs != 5 || m.Callers != 64 {
		t.Errorf("mix = %+v", m)
	}
	if len(m.Steps) < 1 || len(m.Steps) > 3 || m.Steps[0].TargetCallsPerSec != 40 {
		t.Fatalf("%d steps, first at %v calls/s", len(m.Steps), m.Steps[0].TargetCallsPerSec)
	}
	var passed []float64
	for i, x := range m.Steps {
		if x.Pass == nil || x.Op != "mix" || x.CallErrors+x.ItemErrors != 0 {
			t.Errorf("step %d: %+v", i, x)
			continue
		}
		if *x.Pass {
			passed = append(passed, x.TargetCallsPerSec)
		}
		if x.Calls > 0 && (x.Items < x.Calls || x.Items > 3*x.Calls) {
			t.Errorf("step %d: %d items in %d calls of 1 to 3", i, x.Items, x.Calls)
		}
		l := x.LatencyMs
		if x.Calls > 0 && !(l.P50 <= l.P99 && l.P99 <= l.P999 && l.P999 <= l.Max) {
			t.Errorf("step %d: latency %+v", i, l)
		}
		if x.Calls > 0 && len(x.LatencyByOpMs) == 0 {
			t.Errorf("step %d: no latency by operation", i)
		}
		for op := range x.LatencyByOpMs {
			if op != "pseudonymize" && op != "identify" {
				t.Errorf("step %d: latency of %q", i, op)
			}
		}
		// The search doubles from a pass, halves from a failure, bisects
		// once it has both.
		if i > 0 {
			prev := m.Steps[i-1]
			want := prev.TargetCallsPerSec * 2
			if !*prev.Pass {
				want = prev.TargetCallsPerSec / 2
			}
			if i == 2 && *m.Steps[0].Pass != *m.Steps[1].Pass {
				want = (m.Steps[0].TargetCallsPerSec + m.Steps[1].TargetCallsPerSec) / 2
			}
			if math.Abs(x.TargetCallsPerSec-want) > 1e-9 {
				t.Errorf("step %d at %v calls/s, want %v", i, x.TargetCallsPerSec, want)
			}
		}
	}
	switch {
	case len(passed) == 0 && (m.MaxCallsPerSec != 0 || m.MaxLatencyMs != nil):
		t.Errorf("no step passed, max = %v", m.MaxCallsPerSec)
	case len(passed) > 0 && (m.MaxCallsPerSec != slices.Max(passed) || m.MaxLatencyMs == nil):
		t.Errorf("max = %v, passed %v", m.MaxCallsPerSec, passed)
	}
	if !strings.Contains(stdout, "prescription mix: Poisson arrivals, 1–3 items per call, 20 % identify") {
		t.Errorf("table:\n%s", stdout)
	}
}

// TestMixRate runs the mix once at a given rate, after a matrix run.
func TestMixRate(t *testing.T) {
	r, _ := runJSON(t, "-inprocess", "-mix-rate", "30", "-runs", "1x1", "-duration", "200ms")
	checkRuns(t, r, 1)
	m := r.Mix
	if m == nil || m.Search || len(m.Steps) != 1 || m.Steps[0].TargetCallsPerSec != 30 || m.MaxCallsPerSec != 0 {
		t.Fatalf("mix = %+v", m)
	}
	if x := m.Steps[0]; x.Calls == 0 || x.CallErrors+x.ItemErrors != 0 || x.Pass == nil {
		t.Errorf("step = %+v", x)
	}
	if !slices.Equal(r.Target.Ops, []string{"pseudonymize", "mix"}) {
		t.Errorf("ops = %v", r.Target.Ops)
	}
}

// TestSoak holds half of a calibrated batch-4 throughput for a short soak
// and checks its windows, samples and drift.
func TestSoak(t *testing.T) {
	r, stdout := runJSON(t, "-inprocess", "-soak", "600ms", "-soak-window", "200ms", "-soak-sample", "50ms",
		"-soak-batch", "4", "-soak-load", "0.5", "-soak-callers", "4")
	if len(r.Runs) != 1 || !r.Runs[0].Calibration || r.Runs[0].Batch != 4 || r.Runs[0].Op != "pseudonymize" {
		t.Fatalf("runs = %+v, want one calibration run", r.Runs)
	}
	s := r.Soak
	if s == nil {
		t.Fatal("no soak in the report")
	}
	x := s.Run
	if x.Load != 0.5 || x.Batch != 4 || x.Concurrency != 4 || x.TargetCallsPerSec <= 0 || x.Calls == 0 || x.CallErrors+x.ItemErrors != 0 {
		t.Errorf("soak run = %+v", x)
	}
	if math.Abs(x.TargetCallsPerSec-0.5*r.Runs[0].ItemsPerSec/4) > 1e-6*x.TargetCallsPerSec {
		t.Errorf("soak at %v calls/s, calibration %v items/s", x.TargetCallsPerSec, r.Runs[0].ItemsPerSec)
	}
	if s.WindowSec != 0.2 || s.SampleSec != 0.05 || len(s.Windows) != 3 {
		t.Fatalf("windows = %v s × %d, sample %v s", s.WindowSec, len(s.Windows), s.SampleSec)
	}
	var calls uint64
	for i, w := range s.Windows {
		calls += w.Calls
		if math.Abs(w.StartSec-0.2*float64(i)) > 1e-9 || w.Errors != 0 || w.Items != 4*w.Calls {
			t.Errorf("window %d = %+v", i, w)
		}
	}
	if calls == 0 {
		t.Error("no call in any window")
	}
	if len(s.Samples) < 2 {
		t.Fatalf("%d samples", len(s.Samples))
	}
	for i, smp := range s.Samples {
		if smp.TSec < 0 || smp.RSSBytes <= 0 || smp.Goroutines <= 0 || (i > 0 && smp.TSec < s.Samples[i-1].TSec) {
			t.Errorf("sample %d = %+v", i, smp)
		}
	}
	for name, d := range map[string]*drift{"rss": s.RSS, "goroutines": s.Goroutines} {
		if d == nil || d.First <= 0 || d.Last <= 0 || d.Max < d.First || d.Max < d.Last || d.FirstWindowMean <= 0 || d.LastWindowMean <= 0 {
			t.Errorf("%s drift = %+v", name, d)
		}
	}
	for _, want := range []string{"soak: pseudonymize batch 4", "server RSS MiB: first", "server goroutines: first", "window from s"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("output lacks %q:\n%s", want, stdout)
		}
	}
}

func TestDrift(t *testing.T) {
	samples := []soakSample{
		{TSec: 0, RSSBytes: 10}, {TSec: 0.5, RSSBytes: 30}, {TSec: 1, RSSBytes: 40},
		{TSec: 2, RSSBytes: 25}, {TSec: 2.5, RSSBytes: 35}, {TSec: 3, RSSBytes: 30},
	}
	d := driftOf(samples, 1, 3, func(x soakSample) float64 { return x.RSSBytes })
	want := drift{First: 10, Last: 30, Max: 40, FirstWindowMean: 20, LastWindowMean: 30, DriftPct: 50}
	if d == nil || *d != want {
		t.Errorf("drift = %+v, want %+v", d, want)
	}
	if driftOf(samples, 1, 3, func(soakSample) float64 { return 0 }) != nil {
		t.Error("drift of nothing sampled")
	}
}

// TestPoissonSchedule: arrivals come in order, at the asked rate on
// average, and the total counts those due before the end.
func TestPoissonSchedule(t *testing.T) {
	start := time.Unix(1000, 0)
	end := start.Add(100 * time.Second)
	s := newSchedule(start, end, 50, true)
	prev, n := start, 0
	for {
		d := s.due()
		if d.Before(prev) {
			t.Fatalf("arrival %d at %v before %v", n, d, prev)
		}
		prev = d
		if !d.Before(end) {
			break
		}
		n++
		if n == 2000 {
			break // the rest is counted by total
		}
	}
	total := s.total()
	if total < int64(n) || total < 4000 || total > 6000 {
		t.Errorf("%d arrivals in 100 s at 50/s (%d drawn)", total, n)
	}
	u := newSchedule(start, end, 50, false)
	if u.due() != start || u.due() != start.Add(20*time.Millisecond) || u.total() != 5000 {
		t.Error("even schedule")
	}
}

// TestStreamSenderReopens: a refused message ends the stream with the
// server's status; the next message opens another stream and succeeds.
func TestStreamSenderReopens(t *testing.T) {
	ctx := context.Background()
	srv, err := startInProcess(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.stop)
	c := &config{conns: 1}
	conns, err := dial(c, srv.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conns[0].Close() })
	ctx = metadata.AppendToOutgoingContext(ctx, auth.DevPrincipalHeader, "pseudobench")
	blinded, _, err := blindPoints(2)
	if err != nil {
		t.Fatal(err)
	}
	good := &pb.PseudonymizeRequest{Domain: keys.DemoDomain, Items: []*pb.PseudonymizeItem{{Blinded: blinded[0]}, {Blinded: blinded[1]}}}
	bad := &pb.PseudonymizeRequest{Domain: "nope", Items: good.Items}
	s := newSender(ctx, loadParams{stream: true, reqs: []any{good}, timeout: 10 * time.Second}, pb.NewPseudonymizerClient(conns[0]))
	defer s.close()
	for i, step := range []struct {
		req  *pb.PseudonymizeRequest
		code codes.Code
	}{{good, codes.OK}, {bad, codes.PermissionDenied}, {bad, codes.PermissionDenied}, {good, codes.OK}, {good, codes.OK}} {
		items, failed, err := s.send(step.req)
		if status.Code(err) != step.code {
			t.Fatalf("message %d: %v, want %v", i, err, step.code)
		}
		if err == nil && (items != 2 || len(failed) != 0) {
			t.Errorf("message %d: %d items, failed %v", i, items, failed)
		}
	}
}
