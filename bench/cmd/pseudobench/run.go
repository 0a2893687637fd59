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
	conns    []*grpc.ClientConn
	sampler  sampler
	in       inputs
	unblind  *client.BatchUnblinder
	ttl      time.Duration
	floors   []float64
	// convertCtx names -convert-principal to a plaintext -dev server.
	convertCtx context.Context
}

func (b *bench) run(ctx context.Context) error {
	c := b.c
	b.rep = report{
		Tool: "pseudobench", SchemaVersion: schemaVersion, Started: time.Now().UTC(),
		Host: newHost(), Cores: c.cores, Pinning: c.pinning,
		Target: target{Addr: c.addr, TLS: c.ca != "", MTLS: c.cert != "", Domain: c.domain, Ops: c.allOps(), Conns: c.conns, Points: c.points},
	}
	if slices.ContainsFunc(b.rep.Target.Ops, func(op string) bool { return baseOp(op) == opConvert }) {
		b.rep.Target.ToDomain = c.toDomain
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

// drive prepares the inputs, does the runs, the mix and the soak, and
// writes the report.
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
	b.conns = conns
	for _, cc := range conns {
		b.apis = append(b.apis, pb.NewPseudonymizerClient(cc))
	}
	b.convertCtx = ctx
	if c.ca == "" {
		b.convertCtx = metadata.AppendToOutgoingContext(ctx, auth.DevPrincipalHeader, c.convertPrincipal)
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
		if err := b.run1(ctx, spec, false); err != nil {
			return err
		}
	}
	for _, spec := range c.loadSpecs() {
		best, err := b.bestOrCalibrate(ctx, spec.op, spec.batch, spec.concurrency)
		if err != nil {
			return err
		}
		spec.rate = spec.load * best / float64(spec.batch)
		if err := b.run1(ctx, spec, false); err != nil {
			return err
		}
	}
	if c.mix {
		if err := b.runMix(ctx); err != nil {
			return err
		}
	}
	if c.soak > 0 {
		if err := b.runSoak(ctx); err != nil {
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
	if m := b.rep.Mix; m != nil {
		for i := range m.Steps {
			m.Steps[i].derive(c.cores, b.rep.ScalarMultNs)
		}
	}
	if s := b.rep.Soak; s != nil {
		s.Run.derive(c.cores, b.rep.ScalarMultNs)
	}
	fmt.Fprintln(b.log)
	printTable(b.out, &b.rep)
	if c.jsonOut != "" {
		if err := writeJSON(c.jsonOut, &b.rep); err != nil {
			return err
		}
	}
	if b.rep.failed() {
		return errFailures
	}
	return nil
}

// failed reports whether a call or an item failed in a run, a step of the
// mix or the soak.
func (r *report) failed() bool {
	all := slices.Clone(r.Runs)
	if r.Mix != nil {
		all = append(all, r.Mix.Steps...)
	}
	if r.Soak != nil {
		all = append(all, r.Soak.Run)
	}
	for _, x := range all {
		if x.CallErrors+x.ItemErrors > 0 {
			return true
		}
	}
	return false
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
// the callers may run the operations.
func (b *bench) checkDomain(ctx context.Context) error {
	c := b.c
	d, err := b.getDomain(ctx, c.domain)
	if err != nil {
		return err
	}
	b.ttl = d.GetTtl().AsDuration()
	var need []pb.Operation
	add := func(op pb.Operation) {
		if !slices.Contains(need, op) {
			need = append(need, op)
		}
	}
	convert := false
	for _, op := range c.allOps() {
		add(pb.Operation_OPERATION_PSEUDONYMIZE) // identify and convert items are pseudonymized first
		switch baseOp(op) {
		case opIdentify, opMix:
			add(pb.Operation_OPERATION_IDENTIFY)
		case opConvert:
			convert = true
		}
	}
	for _, op := range need {
		if !slices.Contains(d.GetAllowedOperations(), op) {
			return fmt.Errorf("domain %q does not allow %s to this caller", c.domain, op)
		}
	}
	if convert {
		d, err := b.getDomain(b.convertCtx, c.domain)
		if err != nil {
			return fmt.Errorf("as -convert-principal: %v", err)
		}
		if !slices.Contains(d.GetConvertTargets(), c.toDomain) {
			who := "this caller"
			if c.ca == "" {
				who = fmt.Sprintf("%q (-convert-principal)", c.convertPrincipal)
			}
			return fmt.Errorf("domain %q does not let %s convert into %q (its targets: %v); pseudoctl domain new-version %s %s lets the owners of %s do it",
				c.domain, who, c.toDomain, d.GetConvertTargets(), c.domain, c.toDomain, c.domain)
		}
	}
	// Transit pseudonyms made before a run must outlive it.
	longest := c.duration
	if c.soak > 0 && needsTransit(c.soakOp) {
		longest = max(longest, c.soak)
	}
	if slices.ContainsFunc(c.allOps(), needsTransit) && c.warmup+longest+c.timeout+time.Minute > b.ttl {
		return usagef("identify and convert items live for the transit ttl of %q (%s): -warmup + the longest run + -timeout + 1m must fit in it", c.domain, b.ttl)
	}
	return nil
}

func (b *bench) getDomain(ctx context.Context, name string) (*pb.GetDomainResponse, error) {
	cctx, cancel := context.WithTimeout(ctx, b.c.timeout)
	defer cancel()
	d, err := b.apis[0].GetDomain(cctx, &pb.GetDomainRequest{Name: name})
	if err != nil {
		return nil, fmt.Errorf("GetDomain %q: %v", name, err)
	}
	return d, nil
}

// prepare makes the inputs before the timed phase.
func (b *bench) prepare(ctx context.Context) error {
	blinded, u, err := blindPoints(b.c.points)
	if err != nil {
		return err
	}
	b.in.blinded, b.unblind = blinded, u
	if slices.ContainsFunc(b.c.allOps(), needsTransit) {
		return b.prepareTransit(ctx)
	}
	return nil
}

func (b *bench) prepareTransit(ctx context.Context) error {
	items, exp, err := prepareTransit(ctx, b.apis[0], b.c.domain, b.ttl, b.in.blinded, b.unblind, 100)
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

// best is the highest closed-loop throughput measured so far for an
// operation and a batch size.
func (b *bench) best(op string, batch int) float64 {
	var best float64
	for _, r := range b.rep.Runs {
		if r.Op == op && r.Batch == batch && r.TargetCallsPerSec == 0 {
			best = max(best, r.ItemsPerSec)
		}
	}
	return best
}

// bestOrCalibrate is best, after a closed-loop calibration run with
// concurrency callers when nothing was measured.
func (b *bench) bestOrCalibrate(ctx context.Context, op string, batch, concurrency int) (float64, error) {
	if best := b.best(op, batch); best > 0 {
		return best, nil
	}
	if err := b.run1(ctx, runSpec{op: op, batch: batch, concurrency: concurrency}, true); err != nil {
		return 0, err
	}
	if best := b.best(op, batch); best > 0 {
		return best, nil
	}
	return 0, fmt.Errorf("no throughput measured for %s batch %d", op, batch)
}

// run1 does one run of the matrix and appends it to the report.
func (b *bench) run1(ctx context.Context, spec runSpec, calibration bool) error {
	m, err := b.measure(ctx, spec, runName(spec.op, spec.batch, spec.concurrency, spec.load, calibration))
	if err != nil {
		return err
	}
	m.r.Calibration = calibration
	b.rep.Runs = append(b.rep.Runs, m.r)
	return nil
}

// measured is what measure returns.
type measured struct {
	r          runResult
	load       *loadResult
	samples    []timedStats // with spec.window: the server's samples
	sampleErrs int
}

// measure does one run.
func (b *bench) measure(ctx context.Context, spec runSpec, name string) (*measured, error) {
	c := b.c
	duration := c.duration
	if spec.duration > 0 {
		duration = spec.duration
	}
	if needsTransit(spec.op) && time.Now().Add(c.warmup+duration+c.timeout+time.Minute).After(b.in.expires) {
		if err := b.prepareTransit(ctx); err != nil {
			return nil, err
		}
	}
	fmt.Fprintf(b.log, "run %s: %s…\n", name, c.warmup+duration)
	var (
		reqs []any
		sdk  *sdkRun
	)
	switch {
	case spec.op == opMix:
		reqs = b.in.mixRequests(c.domain)
	case isSDK(spec.op):
		// A client of its own for each run: its cache starts empty.
		sdk = newSDKRun(b.conns, spec.op, c.domain, c.sdkKind, c.sdkIDs, c.sdkRepeat)
		reqs = []any{sdkCall{items: spec.batch}}
	default:
		reqs = b.in.requests(spec.op, c.domain, c.toDomain, spec.batch)
	}

	var before serverStats
	if b.sampler != nil {
		st, err := b.sampler.sample(ctx)
		if err != nil {
			return nil, fmt.Errorf("reading the server's memory and CPU: %v", err)
		}
		before = st
	}
	// Each sample of a server's /metrics costs it a scrape (a profile of
	// unary runs showed 4 scrapes/s at ~3 % of its CPU, counted as its cost
	// per item): one per second is enough for the peak RSS.
	interval := time.Second
	if spec.interval > 0 {
		interval = spec.interval
	}
	w := startWatch(ctx, b.sampler, interval, spec.window > 0)
	cpu0 := measure.ProcessCPU()
	res := runLoad(ctx, loadParams{
		apis: b.apis, reqs: reqs, stream: isStream(spec.op), concurrency: spec.concurrency,
		rate: spec.rate, poisson: spec.poisson, warmup: c.warmup, duration: duration, timeout: c.timeout,
		convertCtx: b.convertCtx, byOp: spec.op == opMix, window: spec.window, sdk: sdk,
	})
	cpu := measure.ProcessCPU() - cpu0
	peak, werr := w.end()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	m := &measured{load: res}
	m.samples, m.sampleErrs = w.series()
	var after serverStats
	if b.sampler != nil {
		st, err := b.sampler.sample(ctx)
		if err != nil {
			return nil, fmt.Errorf("reading the server's memory and CPU: %v", err)
		}
		if werr != nil {
			return nil, fmt.Errorf("reading the server's memory and CPU: %v", werr)
		}
		after = st
		if spec.window > 0 {
			m.samples = append(m.samples, timedStats{time.Now(), st})
		}
	}
	// The server is idle now: time ScalarMult (not while profiling, where
	// it would appear in the profile).
	if c.cpuProfile == "" {
		if err := b.floor(); err != nil {
			return nil, err
		}
	}
	sm := b.floors[len(b.floors)-1]
	if c.cpuProfile != "" {
		sm = 0 // not timed after this run
	}
	var sdkRes *sdkResult
	if sdk != nil {
		sdkRes = b.sdkResult(sdk, spec, cpu)
	}

	secs := res.elapsed.Seconds()
	r := runResult{
		Name: name, Op: spec.op, Batch: spec.batch, Concurrency: spec.concurrency,
		Load: spec.load, TargetCallsPerSec: spec.rate,
		DurationSec: secs,
		Calls:       res.calls, Items: res.items,
		CallsPerSec: float64(res.calls) / secs, ItemsPerSec: float64(res.items) / secs,
		CallErrors: res.callErrors, ItemErrors: res.itemErrors, LateCalls: res.late, UnsentCalls: res.unsent,
		LatencyMs:    latencyOf(&res.hist),
		ScalarMultNs: sm,
		ClientCPUSec: cpu.Seconds(),
	}
	if len(res.byOp) > 0 {
		r.LatencyByOpMs = map[string]latency{}
		for op, h := range res.byOp {
			r.LatencyByOpMs[op] = latencyOf(h)
		}
	}
	if len(res.errors) > 0 {
		r.Errors = res.errors
	}
	if b.sampler != nil {
		r.ServerRSSPeakBytes = max(peak, after.rss)
		// CPU time and items of the whole run, warm-up included.
		r.ServerCPUSec = after.cpuSeconds - before.cpuSeconds
		served := res.allItems
		if sdkRes != nil {
			served = sdkRes.ServerItems // the others never reached the server
		}
		if served > 0 && r.ServerCPUSec > 0 {
			r.ServerCPUNsPerItem = r.ServerCPUSec * 1e9 / float64(served)
		}
	}
	r.SDK = sdkRes
	// The ratios use the median of the ScalarMult timings so far (and of
	// all of them in the end): one timing disturbed by another process
	// must not skew a run.
	r.derive(c.cores, measure.Median(b.floors))
	m.r = r
	fmt.Fprintf(b.log, "  %.0f items/s (%.3f × ceiling), p50 %.3f ms, p99 %.3f ms, p99.9 %.3f ms, %d errors\n",
		r.ItemsPerSec, r.XCeiling, r.LatencyMs.P50, r.LatencyMs.P99, r.LatencyMs.P999, r.CallErrors+r.ItemErrors)
	if r.LateCalls > 0 || r.UnsentCalls > 0 {
		fmt.Fprintf(b.log, "  open loop: %d calls sent over 1 ms late, %d never sent: the callers could not keep up\n", r.LateCalls, r.UnsentCalls)
	}
	if s := r.SDK; s != nil {
		fmt.Fprintf(b.log, "  client %s per item (%s per distinct item; blind+unblind %s), server %s per item it computed; hit rate %.3f, merged %.3f, %d calls and %d items reached the server\n",
			orDash(s.ClientCPUXScalarMult, "%.2f×SM"), orDash(s.ClientCPUDistinctXScalarMult, "%.2f×SM"), orDash(s.CryptoXScalarMult, "%.2f×SM"),
			orDash(r.ServerCPUXScalarMult, "%.2f×SM"), s.HitRate, ratio(s.Merged, s.Items), s.ServerCalls, s.ServerItems)
	}
	return m, nil
}

// sdkResult gathers the counts of an SDK run, pseudobench's CPU time cpu
// during it, and times the client's crypto alone (after the run, while the
// server is idle).
func (b *bench) sdkResult(sdk *sdkRun, spec runSpec, cpu time.Duration) *sdkResult {
	c := b.c
	s := &sdkResult{
		Cache: sdk.cached, Kind: c.sdkKind,
		Calls: sdk.calls.Load(), Items: sdk.items.Load(), DistinctItems: sdk.distinct(),
		CacheHits: sdk.hits.Load(), ServerCalls: sdk.conn.calls.Load(), ServerItems: sdk.conn.items.Load(),
	}
	if sdk.cached {
		s.WorkingSet, s.RepeatShare = c.sdkIDs, c.sdkRepeat
	}
	if s.Items > 0 {
		// Items that neither hit the cache nor reached the server shared
		// another call's answer. ServerItems also counts retries and the
		// items of failed calls: then the difference is a lower bound, and
		// it may not go below 0.
		if local := s.CacheHits + s.ServerItems; local < s.Items {
			s.Merged = s.Items - local
		}
		s.HitRate = ratio(s.CacheHits, s.Items)
		s.LocalShare = ratio(s.CacheHits+s.Merged, s.Items)
	}
	switch {
	case c.inprocess:
		s.ClientCPUNote = "-inprocess: the server runs in pseudobench's process, whose CPU time is then both sides'; give -addr"
	case cpu <= 0:
		s.ClientCPUNote = "no process CPU time on this platform"
	case s.Items > 0:
		ns := float64(cpu.Nanoseconds())
		s.ClientCPUNsPerCall = ns / float64(s.Calls)
		s.ClientCPUNsPerItem = ns / float64(s.Items)
		if s.DistinctItems > 0 {
			s.ClientCPUNsPerDistinctItem = ns / float64(s.DistinctItems)
		}
	}
	if t := sdk.answer.Load(); t != nil && c.cpuProfile == "" {
		s.CryptoNsPerItem = sdkCryptoNs(c.floorTime, c.sdkKind, spec.batch, t)
	}
	s.derive(measure.Median(b.floors))
	return s
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
	if r.SDK != nil {
		r.SDK.derive(smNs)
	}
}
