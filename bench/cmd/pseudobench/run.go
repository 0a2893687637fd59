package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime/pprof"
	"slices"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"

	"github.com/ehealth-pseudo/pseudonymizer/bench/internal/measure"
	"github.com/ehealth-pseudo/pseudonymizer/client"
	"github.com/ehealth-pseudo/pseudonymizer/internal/auth"
	"github.com/ehealth-pseudo/pseudonymizer/internal/buildinfo"
	pb "github.com/ehealth-pseudo/pseudonymizer/proto/pseudonymizer/v1"
)

// errFailures is returned, after the report is written, when calls or items
// failed.
var errFailures = errors.New("some calls or items failed: see the errors column")

// run is the command without the process.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if buildinfo.Requested(args) {
		buildinfo.Print(stdout, "pseudobench")
		return nil
	}
	c, err := parseConfig(args, stderr)
	if err != nil {
		return err
	}
	b := &bench{c: c, out: stdout, log: stderr}
	if c.quiet {
		b.log = io.Discard
	}
	return b.run(ctx)
}

// bench is one invocation: its configuration, connections and results.
type bench struct {
	c        *config
	out, log io.Writer
	rep      report
	apis     []pb.PseudonymizerClient
	sampler  sampler
	in       inputs
	unblind  *client.BatchUnblinder
	ttl      time.Duration
	floors   []float64
}

func (b *bench) run(ctx context.Context) error {
	c := b.c
	b.rep = report{
		Tool: "pseudobench", SchemaVersion: schemaVersion, Started: time.Now().UTC(),
		Host: newHost(), Cores: c.cores,
		Target: target{Addr: c.addr, TLS: c.ca != "", MTLS: c.cert != "", Domain: c.domain, Op: c.op, Conns: c.conns, Points: c.points},
	}
	addr := c.addr
	switch {
	case c.inprocess:
		srv, err := startInProcess(ctx, nil)
		if err != nil {
			return fmt.Errorf("starting the in-process server: %v", err)
		}
		defer srv.stop()
		addr = srv.addr
		b.rep.Target.Addr, b.rep.Target.InProcess = addr, true
		b.sampler = newMetricsSampler(srv.metricsURL)
		b.rep.Target.Stats = "metrics"
	case c.metricsURL != "":
		b.sampler = newMetricsSampler(c.metricsURL)
		b.rep.Target.Stats = "metrics"
	case c.pid != 0:
		b.sampler = procSampler{pid: c.pid}
		b.rep.Target.Stats = "proc"
	}
	printHeader(b.log, &b.rep)
	if !c.inprocess {
		return b.drive(ctx, addr)
	}
	// Label the generator's goroutines (and those they start: the client
	// transport's), so that a profile separates them from the server's:
	// go tool pprof -tagignore pseudobench=generator.
	var err error
	pprof.Do(ctx, pprof.Labels("pseudobench", "generator"), func(ctx context.Context) {
		err = b.drive(ctx, addr)
	})
	return err
}

// drive prepares the inputs, does the runs and writes the report.
func (b *bench) drive(ctx context.Context, addr string) error {
	c := b.c
	conns, err := dial(c, addr)
	if err != nil {
		return err
	}
	defer func() {
		for _, cc := range conns {
			_ = cc.Close()
		}
	}()
	for _, cc := range conns {
		b.apis = append(b.apis, pb.NewPseudonymizerClient(cc))
	}
	if c.ca == "" {
		ctx = metadata.AppendToOutgoingContext(ctx, auth.DevPrincipalHeader, c.principal)
	}
	if err := waitServing(ctx, conns[0], c.wait); err != nil {
		return err
	}
	if err := b.checkDomain(ctx); err != nil {
		return err
	}
	if b.sampler != nil {
		st, err := b.sampler.sample(ctx)
		if err != nil {
			return fmt.Errorf("reading the server's memory and CPU: %v", err)
		}
		b.rep.ServerGOMAXPROCS = st.gomaxprocs
		if st.gomaxprocs > 0 && int(st.gomaxprocs) != c.cores {
			fmt.Fprintf(b.log, "warning: the server's GOMAXPROCS is %.0f, -cores is %d: the ceiling uses -cores\n", st.gomaxprocs, c.cores)
		}
	}

	prep := time.Now()
	if err := b.prepare(ctx); err != nil {
		return err
	}
	b.rep.PrepareSec = time.Since(prep).Seconds()
	fmt.Fprintf(b.log, "prepared %d blinded points in %.1fs (untimed)\n", c.points, b.rep.PrepareSec)
	if err := b.floor(); err != nil {
		return err
	}

	if c.cpuProfile != "" {
		f, err := os.Create(c.cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}

	for _, spec := range c.runs {
		spec.rate = c.rate
		if err := b.measure(ctx, spec, false); err != nil {
			return err
		}
	}
	for _, spec := range c.loadSpecs() {
		best := b.best(spec.batch)
		if best == 0 {
			if err := b.measure(ctx, runSpec{batch: spec.batch, concurrency: spec.concurrency}, true); err != nil {
				return err
			}
			best = b.best(spec.batch)
		}
		spec.rate = spec.load * best / float64(spec.batch)
		if spec.rate <= 0 {
			return fmt.Errorf("no throughput measured for batch %d: cannot run at %g of it", spec.batch, spec.load)
		}
		if err := b.measure(ctx, spec, false); err != nil {
			return err
		}
	}
	if c.cpuProfile != "" {
		pprof.StopCPUProfile()
		if err := b.floor(); err != nil {
			return err
		}
	}

	b.rep.Finished = time.Now().UTC()
	b.rep.Host.LoadAvgEnd = loadAvg()
	b.rep.ScalarMultNs = measure.Median(b.floors)
	b.rep.ScalarMultMinNs, b.rep.ScalarMultMaxNs = slices.Min(b.floors), slices.Max(b.floors)
	b.rep.ScalarMultTimings = len(b.floors)
	b.rep.CeilingItemsPerSec = float64(c.cores) * 1e9 / b.rep.ScalarMultNs
	for i := range b.rep.Runs {
		b.rep.Runs[i].derive(c.cores, b.rep.ScalarMultNs)
	}
	fmt.Fprintln(b.log)
	printTable(b.out, &b.rep)
	if c.jsonOut != "" {
		if err := writeJSON(c.jsonOut, &b.rep); err != nil {
			return err
		}
	}
	for _, r := range b.rep.Runs {
		if r.CallErrors+r.ItemErrors > 0 {
			return errFailures
		}
	}
	return nil
}

func dial(c *config, addr string) ([]*grpc.ClientConn, error) {
	creds := insecure.NewCredentials()
	if c.ca != "" {
		cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: c.sni}
		pemCA, err := os.ReadFile(c.ca)
		if err != nil {
			return nil, err
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pemCA) {
			return nil, fmt.Errorf("-ca %s: no PEM certificate", c.ca)
		}
		cfg.RootCAs = pool
		if c.cert != "" {
			cert, err := tls.LoadX509KeyPair(c.cert, c.key)
			if err != nil {
				return nil, fmt.Errorf("client certificate: %v", err)
			}
			cfg.Certificates = []tls.Certificate{cert}
		}
		creds = credentials.NewTLS(cfg)
	}
	var conns []*grpc.ClientConn
	for range c.conns {
		cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
		if err != nil {
			for _, cc := range conns {
				_ = cc.Close()
			}
			return nil, err
		}
		conns = append(conns, cc)
	}
	return conns, nil
}

// waitServing polls the health service until the pseudonymizer reports
// SERVING.
func waitServing(ctx context.Context, cc *grpc.ClientConn, wait time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	h := healthpb.NewHealthClient(cc)
	var last error
	for {
		cctx, ccancel := context.WithTimeout(ctx, time.Second)
		resp, err := h.Check(cctx, &healthpb.HealthCheckRequest{Service: pb.Pseudonymizer_ServiceDesc.ServiceName})
		ccancel()
		if err == nil && resp.GetStatus() == healthpb.HealthCheckResponse_SERVING {
			return nil
		}
		if err == nil {
			err = fmt.Errorf("health is %s", resp.GetStatus())
		}
		last = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("the server is not serving after %s: %v", wait, last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// checkDomain asks GetDomain for the domain's transit TTL and checks that
// the caller may run the operation.
func (b *bench) checkDomain(ctx context.Context) error {
	cctx, cancel := context.WithTimeout(ctx, b.c.timeout)
	defer cancel()
	d, err := b.apis[0].GetDomain(cctx, &pb.GetDomainRequest{Name: b.c.domain})
	if err != nil {
		return fmt.Errorf("GetDomain %q: %v", b.c.domain, err)
	}
	b.ttl = d.GetTtl().AsDuration()
	need := []pb.Operation{pb.Operation_OPERATION_PSEUDONYMIZE}
	if b.c.op == "identify" {
		need = append(need, pb.Operation_OPERATION_IDENTIFY)
	}
	for _, op := range need {
		if !slices.Contains(d.GetAllowedOperations(), op) {
			return fmt.Errorf("domain %q does not allow %s to this caller", b.c.domain, op)
		}
	}
	return nil
}

// prepare makes the inputs before the timed phase.
func (b *bench) prepare(ctx context.Context) error {
	blinded, u, err := blindPoints(b.c.points)
	if err != nil {
		return err
	}
	b.in.blinded, b.unblind = blinded, u
	if b.c.op == "identify" {
		return b.prepareIdentify(ctx)
	}
	return nil
}

func (b *bench) prepareIdentify(ctx context.Context) error {
	items, exp, err := prepareIdentify(ctx, b.apis[0], b.c.domain, b.ttl, b.in.blinded, b.unblind, 100)
	if err != nil {
		return err
	}
	b.in.transit, b.in.expires = items, exp
	return nil
}

// floor times ScalarMult and keeps the result.
func (b *bench) floor() error {
	ns, err := scalarMultNs(b.c.floorTime)
	if err != nil {
		return err
	}
	b.floors = append(b.floors, ns)
	return nil
}

// best is the highest throughput measured so far for a batch size.
func (b *bench) best(batch int) float64 {
	var best float64
	for _, r := range b.rep.Runs {
		if r.Batch == batch && r.TargetCallsPerSec == 0 {
			best = max(best, r.ItemsPerSec)
		}
	}
	return best
}

// measure does one run and appends it to the report.
func (b *bench) measure(ctx context.Context, spec runSpec, calibration bool) error {
	c := b.c
	if c.op == "identify" && time.Now().Add(c.warmup+c.duration+c.timeout+time.Minute).After(b.in.expires) {
		if err := b.prepareIdentify(ctx); err != nil {
			return err
		}
	}
	name := runName(c.op, spec.batch, spec.concurrency, spec.load, calibration)
	fmt.Fprintf(b.log, "run %s: %s…\n", name, c.warmup+c.duration)
	reqs := b.in.requests(c.op, c.domain, spec.batch)

	var before serverStats
	if b.sampler != nil {
		st, err := b.sampler.sample(ctx)
		if err != nil {
			return fmt.Errorf("reading the server's memory and CPU: %v", err)
		}
		before = st
	}
	w := startWatch(ctx, b.sampler, 250*time.Millisecond)
	cpu0 := measure.ProcessCPU()
	res := runLoad(ctx, loadParams{
		apis: b.apis, reqs: reqs, concurrency: spec.concurrency,
		rate: spec.rate, warmup: c.warmup, duration: c.duration, timeout: c.timeout,
	})
	cpu := measure.ProcessCPU() - cpu0
	peak, werr := w.end()
	if err := ctx.Err(); err != nil {
		return err
	}
	var after serverStats
	if b.sampler != nil {
		st, err := b.sampler.sample(ctx)
		if err != nil {
			return fmt.Errorf("reading the server's memory and CPU: %v", err)
		}
		if werr != nil {
			return fmt.Errorf("reading the server's memory and CPU: %v", werr)
		}
		after = st
	}
	// The server is idle now: time ScalarMult (not while profiling, where
	// it would appear in the profile).
	if c.cpuProfile == "" {
		if err := b.floor(); err != nil {
			return err
		}
	}
	sm := b.floors[len(b.floors)-1]
	if c.cpuProfile != "" {
		sm = 0 // not timed after this run
	}

	secs := res.elapsed.Seconds()
	r := runResult{
		Name: name, Op: c.op, Batch: spec.batch, Concurrency: spec.concurrency,
		Calibration: calibration, Load: spec.load, TargetCallsPerSec: spec.rate,
		DurationSec: secs,
		Calls:       res.calls, Items: res.items,
		CallsPerSec: float64(res.calls) / secs, ItemsPerSec: float64(res.items) / secs,
		CallErrors: res.callErrors, ItemErrors: res.itemErrors, LateCalls: res.late, UnsentCalls: res.unsent,
		LatencyMs: latency{
			P50: ms(res.hist.quantile(0.50)), P90: ms(res.hist.quantile(0.90)),
			P99: ms(res.hist.quantile(0.99)), Max: ms(res.hist.max), Mean: ms(res.hist.mean()),
		},
		ScalarMultNs: sm,
		ClientCPUSec: cpu.Seconds(),
	}
	if len(res.errors) > 0 {
		r.Errors = res.errors
	}
	if b.sampler != nil {
		r.ServerRSSPeakBytes = max(peak, after.rss)
		// CPU time and items of the whole run, warm-up included.
		r.ServerCPUSec = after.cpuSeconds - before.cpuSeconds
		if res.allItems > 0 && r.ServerCPUSec > 0 {
			r.ServerCPUNsPerItem = r.ServerCPUSec * 1e9 / float64(res.allItems)
		}
	}
	// The ratios use the median of the ScalarMult timings so far (and of
	// all of them in the end): one timing disturbed by another process
	// must not skew a run.
	r.derive(c.cores, measure.Median(b.floors))
	b.rep.Runs = append(b.rep.Runs, r)
	fmt.Fprintf(b.log, "  %.0f items/s (%.3f × ceiling), p50 %.3f ms, p99 %.3f ms, %d errors\n",
		r.ItemsPerSec, r.XCeiling, r.LatencyMs.P50, r.LatencyMs.P99, r.CallErrors+r.ItemErrors)
	if r.LateCalls > 0 || r.UnsentCalls > 0 {
		fmt.Fprintf(b.log, "  open loop: %d calls sent over 1 ms late, %d never sent: the callers could not keep up\n", r.LateCalls, r.UnsentCalls)
	}
	return nil
}

// derive fills the ratios of r for the given ScalarMult cost.
func (r *runResult) derive(cores int, smNs float64) {
	r.CeilingItemsPerSec = float64(cores) * 1e9 / smNs
	r.XCeiling = r.ItemsPerSec / r.CeilingItemsPerSec
	r.XScalarMult = 0
	if r.XCeiling > 0 {
		r.XScalarMult = 1 / r.XCeiling
	}
	if r.ServerCPUNsPerItem > 0 {
		r.ServerCPUXScalarMult = r.ServerCPUNsPerItem / smNs
		r.ServerCPUXCeiling = 1 / r.ServerCPUXScalarMult
	}
}
