package main

import (
	"flag"
	"fmt"
	"io"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ehealth-pseudo/pseudonymizer/internal/grpcserver"
	"github.com/ehealth-pseudo/pseudonymizer/keys"
)

const usage = `Usage:
    pseudobench [-addr host:port | -inprocess] [flags]

Drives a pseudonymization service with pre-blinded points and reports, for
each run (an operation, a batch size and a number of concurrent callers), the
throughput in items/s, the p50/p90/p99/p99.9 latency of a call, the errors,
the server's memory and CPU, and the throughput as a fraction of cores ÷
ScalarMult, the cost of one ristretto255 scalar multiplication timed on this
machine in the same run.

Operations (-op, comma-separated): pseudonymize, identify, convert (unary
calls), and pseudonymize-stream, identify-stream, convert-stream (one
bidirectional stream per caller, one message of -batch items at a time).
Identify and convert items are transit pseudonyms made before the timed
phase (pseudonymized, unblinded and blinded again); convert goes from
-domain to -to-domain as -convert-principal.

sdk-pseudonymize and sdk-cached drive the client SDK instead (client.Client
over the same connections): each caller makes an identifier's text (a NISS,
or -sdk-kind raw), normalizes it, and calls Pseudonymize (batch 1) or
PseudonymizeBatch, which blind, call and unblind, as prescriber software
does. sdk-pseudonymize asks for a new identifier every time with the
client's transit cache off; sdk-cached shares one client with its defaults
(transit cache and in-flight merge on) among the callers, and each item is,
with probability -sdk-repeat, one of the last -sdk-ids identifiers asked
for, else a new one. They report pseudobench's own CPU time per item (the
client's, when the server is another process: not with -inprocess) and the
client-side crypto alone, in ScalarMults, the cache hits, and the calls and
items that reached the server.

Runs are the cross product of -op, -batch and -concurrency, or the list
-runs, whose entries may name their operation (identify:100x2); -load adds,
for the batch sizes of -load-batch, one open-loop run at that fraction of the
best throughput measured for the batch size.

-mix runs the prescription traffic mix: open-loop Poisson arrivals, 1 to 3
items per call, 80 % pseudonymize and 20 % identify, and searches the
highest rate whose p99 stays within -mix-p99 (a geometric ramp, then a
bisection, each step one bounded run); -mix-rate runs it at one rate.

-soak DURATION holds a steady open-loop rate (-soak-load of the best
throughput of -soak-batch, or -soak-rate) and samples the server's RSS and
goroutines every -soak-sample: first, last, max, and the drift between the
first and the last -soak-window, with errors and p50/p99 per window.

With -mix or -soak, the matrix runs only if -runs, -batch or -concurrency is
given.

Connection: plaintext to a -dev server on loopback (the caller is named by
-principal), or TLS with -ca and mTLS with -cert and -key. -inprocess starts a
development server inside pseudobench instead (for profiling: -cpuprofile);
its numbers include the load generator's own CPU.

Flags:
`

// Limits that keep every run bounded.
const (
	maxDuration    = 10 * time.Minute
	maxSoak        = 24 * time.Hour
	maxSoakWindows = 600
	maxConcurrency = 1024
	maxPoints      = 1 << 20
	maxMixSteps    = 40
	maxRate        = 1e7
)

// Operations.
const (
	opPseudonymize = "pseudonymize"
	opIdentify     = "identify"
	opConvert      = "convert"
	streamSuffix   = "-stream"
	// opMix is the prescription mix (-mix), not an -op.
	opMix = "mix"
)

// allOpNames are the values of -op: the RPCs and the client SDK's
// operations (sdk.go).
var allOpNames = slices.Concat(ops, sdkOps)

// ops are the values of -op.
var ops = []string{
	opPseudonymize, opIdentify, opConvert,
	opPseudonymize + streamSuffix, opIdentify + streamSuffix, opConvert + streamSuffix,
}

// baseOp is the RPC of an operation: op without "-stream".
func baseOp(op string) string { return strings.TrimSuffix(op, streamSuffix) }

func isStream(op string) bool { return strings.HasSuffix(op, streamSuffix) }

// needsTransit reports whether op sends transit pseudonyms (identify and
// convert items, made before the timed phase and valid for the domain's
// ttl).
func needsTransit(op string) bool {
	b := baseOp(op)
	return b == opIdentify || b == opConvert || op == opMix
}

// The prescription mix: -mix.
const (
	mixIdentifyShare = 0.2
	mixItemsMin      = 1
	mixItemsMax      = 3
	// mixPrecision ends the bisection when the bracket is this narrow,
	// relative to its lower end.
	mixPrecision = 0.05
)

// DemoDomain2 is the default -to-domain: the second version of the demo
// domain, which -inprocess creates (keys.FileStore.NewVersion) and
// scripts/bench.sh creates with pseudoctl domain new-version. Its owners
// (those of keys.DemoDomain) may convert into it.
const DemoDomain2 = "demo_v2"

// usageError is a mistake on the command line.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, a ...any) error { return &usageError{fmt.Sprintf(format, a...)} }

// runSpec is one run.
type runSpec struct {
	op          string
	batch       int
	concurrency int
	// rate is the target in calls per second; 0 is a closed loop.
	rate float64
	// load, when positive, sets rate to this fraction of the best
	// throughput measured for the operation and batch size.
	load float64
	// Set by the mix and the soak, not by the command line.
	poisson  bool
	duration time.Duration // 0: -duration
	window   time.Duration // per-window statistics (soak)
	interval time.Duration // server sampling interval; 0: 250 ms
}

// config is the command line.
type config struct {
	addr             string
	inprocess        bool
	ca               string
	cert, key        string
	sni              string
	principal        string
	convertPrincipal string
	domain           string
	toDomain         string
	ops              []string
	pinning          string

	sdkKind   string
	sdkIDs    int
	sdkRepeat float64

	runs            []runSpec
	rate            float64
	loads           []float64
	loadBatch       []int
	loadConcurrency int
	conns           int

	mix        bool
	mixRate    float64
	mixP99     time.Duration
	mixStart   float64
	mixSteps   int
	mixCallers int

	soak        time.Duration
	soakOp      string
	soakBatch   int
	soakLoad    float64
	soakRate    float64
	soakCallers int
	soakSample  time.Duration
	soakWindow  time.Duration

	duration  time.Duration
	warmup    time.Duration
	timeout   time.Duration
	wait      time.Duration
	points    int
	cores     int
	floorTime time.Duration

	metricsURL string
	pid        int

	jsonOut    string
	cpuProfile string
	quiet      bool
}

func parseConfig(args []string, stderr io.Writer) (*config, error) {
	c := &config{loadBatch: []int{1}, ops: []string{opPseudonymize}}
	batch, conc := []int{1, 10, 100, 1000}, []int{1, 4}
	var runs []runSpec
	fs := flag.NewFlagSet("pseudobench", flag.ContinueOnError)
	// The usage is printed for -h only; main prints other errors once.
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	fs.StringVar(&c.addr, "addr", "127.0.0.1:50051", "gRPC `host:port` of the service")
	fs.BoolVar(&c.inprocess, "inprocess", false, "start a development server in this process, on a loopback port, instead of -addr")
	fs.StringVar(&c.ca, "ca", "", "PEM `file` of the CAs that verify the server (enables TLS)")
	fs.StringVar(&c.cert, "cert", "", "PEM `file` of the client certificate, for mTLS")
	fs.StringVar(&c.key, "key", "", "PEM `file` of the client private key, for mTLS")
	fs.StringVar(&c.sni, "server-name", "", "TLS server `name` to verify (default: the host of -addr)")
	fs.StringVar(&c.principal, "principal", "pseudobench", "caller `name` sent to a plaintext -dev server (x-pseudonymizer-principal)")
	fs.StringVar(&c.convertPrincipal, "convert-principal", keys.DemoSpec.Policy.Owners[0], "caller `name` of the convert calls on a plaintext -dev server (the policy of -domain must let it convert into -to-domain); with TLS the certificate names the caller of every call")
	fs.StringVar(&c.domain, "domain", keys.DemoDomain, "`domain` to call (the source domain of convert)")
	fs.StringVar(&c.toDomain, "to-domain", DemoDomain2, "target `domain` of convert")
	fs.Func("op", "comma-separated `operations`: pseudonymize, identify, convert, pseudonymize-stream, identify-stream, convert-stream, and through the client SDK sdk-pseudonymize, sdk-cached (default pseudonymize)", listOf(&c.ops, "an operation ("+strings.Join(allOpNames, ", ")+")", parseOp))
	fs.StringVar(&c.sdkKind, "sdk-kind", kindNISS, "`kind` of the identifiers of sdk-pseudonymize and sdk-cached: niss (\"YY.MM.DD-SSS.CC\", normalized with identifier.NISS) or raw (identifier.Raw)")
	fs.IntVar(&c.sdkIDs, "sdk-ids", 1000, "sdk-cached: `number` of the last distinct identifiers a repeated item is drawn from (the working set)")
	fs.Float64Var(&c.sdkRepeat, "sdk-repeat", 0.5, "sdk-cached: `share` of the items drawn from the working set (the others are new identifiers)")
	fs.StringVar(&c.pinning, "pinning", "", "`text` recorded as the CPU placement of the server and of pseudobench (scripts/bench.sh: \"pinned: server cpu 0, generator cpu 1\" or \"unpinned\")")

	fs.Func("batch", "comma-separated batch `sizes` (items per call; default 1,10,100,1000)", listOf(&batch, "a positive integer", positive))
	fs.Func("concurrency", "comma-separated `numbers` of concurrent callers (default 1,4)", listOf(&conc, "a positive integer", positive))
	fs.Func("runs", "explicit `list` of runs [OP:]BATCHxCONCURRENCY (e.g. 1x1,1x8,identify:100x4), instead of -op × -batch × -concurrency; an entry without OP runs for every -op", listOf(&runs, "[OP:]BATCHxCONCURRENCY (e.g. 100x4 or identify:100x4)", parseRun))
	fs.Float64Var(&c.rate, "rate", 0, "target `calls/s` of every run (open loop); 0 sends as fast as the server answers")
	fs.Func("load", "comma-separated `fractions` (e.g. 0.5): add open-loop runs at that fraction of the best items/s measured for each -op and -load-batch size", listOf(&c.loads, "a fraction in (0, 1]", fraction))
	fs.Func("load-batch", "batch `sizes` of the -load runs (default 1)", listOf(&c.loadBatch, "a positive integer", positive))
	fs.IntVar(&c.loadConcurrency, "load-concurrency", 0, "callers of the -load runs (default: the largest -concurrency of the operation)")
	fs.IntVar(&c.conns, "conns", 1, "gRPC connections shared by the callers")

	fs.BoolVar(&c.mix, "mix", false, "run the prescription mix (Poisson arrivals, 1–3 items, 80 % pseudonymize / 20 % identify) and search the highest rate whose p99 stays within -mix-p99")
	fs.Float64Var(&c.mixRate, "mix-rate", 0, "run the mix once at this `calls/s` instead of searching (implies -mix)")
	fs.DurationVar(&c.mixP99, "mix-p99", 5*time.Millisecond, "p99 `latency` a step of the mix search must stay within")
	fs.Float64Var(&c.mixStart, "mix-start", 0, "first `calls/s` of the search (default: half the best unary pseudonymize calls/s measured in this invocation, else 100)")
	fs.IntVar(&c.mixSteps, "mix-steps", 14, "most `steps` of the search (ramp ×2 then bisection to 5 %), each one run of -warmup + -duration")
	fs.IntVar(&c.mixCallers, "mix-callers", 64, "concurrent callers available to the mix's open loop")

	fs.DurationVar(&c.soak, "soak", 0, "hold a steady open-loop rate for this `duration` (minutes), sampling the server's RSS and goroutines; 0: no soak")
	fs.StringVar(&c.soakOp, "soak-op", opPseudonymize, "`operation` of the soak")
	fs.IntVar(&c.soakBatch, "soak-batch", 10, "batch `size` of the soak")
	fs.Float64Var(&c.soakLoad, "soak-load", 0.7, "soak rate as a `fraction` of the best items/s measured for -soak-op and -soak-batch (a closed-loop calibration run measures it if needed)")
	fs.Float64Var(&c.soakRate, "soak-rate", 0, "soak rate in `calls/s`, instead of -soak-load")
	fs.IntVar(&c.soakCallers, "soak-callers", 16, "concurrent callers available to the soak's open loop")
	fs.DurationVar(&c.soakSample, "soak-sample", 0, "`interval` between two samples of the server's RSS and goroutines (default: 5s, or a fifth of -soak-window when that is shorter)")
	fs.DurationVar(&c.soakWindow, "soak-window", 0, "`length` of the windows of the soak's per-window table and of its drift, first window against last (default: 1m, or half of -soak when that is shorter)")

	fs.DurationVar(&c.duration, "duration", 5*time.Second, "measured `time` of each run")
	fs.DurationVar(&c.warmup, "warmup", 500*time.Millisecond, "unmeasured `time` before each run")
	fs.DurationVar(&c.timeout, "timeout", 10*time.Second, "deadline of one call")
	fs.DurationVar(&c.wait, "wait", 10*time.Second, "how long to wait for the server to report SERVING")
	fs.IntVar(&c.points, "points", 4096, "distinct blinded points made before the timed phase (at least the largest batch)")
	fs.IntVar(&c.cores, "cores", runtime.NumCPU(), "GOMAXPROCS of the server (the CPUs it may use): the ceiling is cores ÷ ScalarMult")
	fs.DurationVar(&c.floorTime, "scalarmult-time", 200*time.Millisecond, "`time` spent timing ScalarMult after each run")

	fs.StringVar(&c.metricsURL, "metrics", "", "`URL` of the server's Prometheus /metrics, for its RSS, CPU time and goroutines")
	fs.IntVar(&c.pid, "pid", 0, "process `id` of the server, for its RSS and CPU time from /proc (instead of -metrics)")

	fs.StringVar(&c.jsonOut, "json", "", "write the results as JSON to `file`")
	fs.StringVar(&c.cpuProfile, "cpuprofile", "", "with -inprocess, write a CPU profile of the timed runs to `file`")
	fs.BoolVar(&c.quiet, "q", false, "print only the final tables")

	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			fmt.Fprint(stderr, usage)
			fs.SetOutput(stderr)
			fs.PrintDefaults()
			return nil, err
		}
		return nil, &usageError{err.Error()}
	}
	if fs.NArg() > 0 {
		return nil, usagef("unexpected argument %q", fs.Arg(0))
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if c.mixRate != 0 {
		c.mix = true
	}
	matrix := !(c.mix || c.soak != 0) || set["runs"] || set["batch"] || set["concurrency"]
	switch {
	case set["runs"] && (set["batch"] || set["concurrency"]):
		return nil, usagef("give -runs or -batch/-concurrency, not both")
	case set["runs"]:
		for _, r := range runs {
			if r.op != "" {
				if !slices.Contains(allOpNames, r.op) {
					return nil, usagef("-runs: unknown operation %q (%s)", r.op, strings.Join(allOpNames, ", "))
				}
				c.runs = append(c.runs, r)
				continue
			}
			for _, op := range c.ops {
				r.op = op
				c.runs = append(c.runs, r)
			}
		}
	case matrix:
		for _, op := range c.ops {
			for _, b := range batch {
				for _, n := range conc {
					c.runs = append(c.runs, runSpec{op: op, batch: b, concurrency: n})
				}
			}
		}
	}
	return c, c.check()
}

func (c *config) check() error {
	if (c.cert == "") != (c.key == "") {
		return usagef("-cert and -key go together")
	}
	if c.cert != "" && c.ca == "" {
		return usagef("-cert and -key need -ca (mTLS)")
	}
	if c.ca == "" && !c.inprocess {
		// The -dev server listens only there, and traffic stays on this
		// machine.
		if err := grpcserver.CheckLoopbackAddr(c.addr); err != nil {
			return usagef("-addr: %v; give -ca for TLS", err)
		}
	}
	if c.inprocess && (c.ca != "" || c.metricsURL != "" || c.pid != 0) {
		return usagef("-inprocess starts its own plaintext server: drop -ca, -cert, -key, -metrics and -pid")
	}
	if c.cpuProfile != "" && !c.inprocess {
		return usagef("-cpuprofile profiles the in-process server: add -inprocess")
	}
	if c.metricsURL != "" && c.pid != 0 {
		return usagef("give -metrics or -pid, not both")
	}
	if c.duration <= 0 || c.duration > maxDuration {
		return usagef("-duration must be positive and at most %s", maxDuration)
	}
	if c.warmup < 0 || c.warmup > maxDuration {
		return usagef("-warmup must be between 0 and %s", maxDuration)
	}
	if c.timeout <= 0 || c.wait <= 0 || c.floorTime <= 0 {
		return usagef("-timeout, -wait and -scalarmult-time must be positive")
	}
	if c.rate < 0 || c.rate > maxRate {
		return usagef("-rate must be between 0 and %g", maxRate)
	}
	if c.cores < 1 {
		return usagef("-cores must be at least 1")
	}
	if c.conns < 1 || c.conns > maxConcurrency {
		return usagef("-conns must be between 1 and %d", maxConcurrency)
	}
	if c.loadConcurrency < 0 || c.loadConcurrency > maxConcurrency {
		return usagef("-load-concurrency must be between 1 and %d", maxConcurrency)
	}
	if slices.ContainsFunc(c.allOps(), func(op string) bool { return baseOp(op) == opConvert }) && c.toDomain == c.domain {
		return usagef("-to-domain must differ from -domain")
	}
	if c.mix {
		switch {
		case c.mixRate < 0 || c.mixRate > maxRate:
			return usagef("-mix-rate must be between 0 and %g", maxRate)
		case c.mixP99 <= 0:
			return usagef("-mix-p99 must be positive")
		case c.mixStart < 0 || c.mixStart > maxRate:
			return usagef("-mix-start must be between 0 and %g", maxRate)
		case c.mixSteps < 1 || c.mixSteps > maxMixSteps:
			return usagef("-mix-steps must be between 1 and %d", maxMixSteps)
		case c.mixCallers < 1 || c.mixCallers > maxConcurrency:
			return usagef("-mix-callers must be between 1 and %d", maxConcurrency)
		}
	}
	if c.soak < 0 || c.soak > maxSoak {
		return usagef("-soak must be between 0 and %s", maxSoak)
	}
	if c.soak > 0 {
		if c.soakWindow == 0 {
			c.soakWindow = min(time.Minute, c.soak/2)
		}
		if c.soakSample == 0 {
			c.soakSample = min(5*time.Second, c.soakWindow/5)
		}
		switch {
		case !slices.Contains(allOpNames, c.soakOp):
			return usagef("-soak-op must be one of %s", strings.Join(allOpNames, ", "))
		case c.soakBatch < 1 || c.soakBatch > maxPoints:
			return usagef("-soak-batch must be between 1 and %d", maxPoints)
		case c.soakLoad <= 0 || c.soakLoad > 1:
			return usagef("-soak-load must be in (0, 1]")
		case c.soakRate < 0 || c.soakRate > maxRate:
			return usagef("-soak-rate must be between 0 and %g", maxRate)
		case c.soakCallers < 1 || c.soakCallers > maxConcurrency:
			return usagef("-soak-callers must be between 1 and %d", maxConcurrency)
		case c.soakSample <= 0 || c.soakWindow <= 0:
			return usagef("-soak-sample and -soak-window must be positive")
		case c.soakWindow < c.soakSample || c.soakWindow > c.soak:
			return usagef("-soak-window must be between -soak-sample and -soak")
		case c.soak/c.soakWindow > maxSoakWindows:
			return usagef("-soak is more than %d -soak-window long: give a longer window", maxSoakWindows)
		}
	}
	switch {
	case c.sdkKind != kindNISS && c.sdkKind != kindRaw:
		return usagef("-sdk-kind must be %s or %s", kindNISS, kindRaw)
	case c.sdkIDs < 1 || c.sdkIDs > maxPoints:
		return usagef("-sdk-ids must be between 1 and %d", maxPoints)
	case c.sdkRepeat < 0 || c.sdkRepeat >= 1:
		return usagef("-sdk-repeat must be in [0, 1)")
	}
	// The SDK operations draw their own identifiers: -points bounds the
	// batches of the others.
	maxBatch := mixItemsMax
	if c.soak > 0 && !isSDK(c.soakOp) {
		maxBatch = max(maxBatch, c.soakBatch)
	}
	for _, r := range slices.Concat(c.runs, c.loadSpecs()) {
		if r.concurrency > maxConcurrency {
			return usagef("concurrency must be at most %d", maxConcurrency)
		}
		if isSDK(r.op) {
			if r.batch > maxPoints {
				return usagef("batches of %s must be at most %d", r.op, maxPoints)
			}
			continue
		}
		maxBatch = max(maxBatch, r.batch)
	}
	if c.points < maxBatch || c.points > maxPoints {
		return usagef("-points must be between the largest batch (%d) and %d", maxBatch, maxPoints)
	}
	return nil
}

// allOps are the operations this invocation sends, the mix included.
func (c *config) allOps() []string {
	var out []string
	add := func(op string) {
		if !slices.Contains(out, op) {
			out = append(out, op)
		}
	}
	for _, r := range slices.Concat(c.runs, c.loadSpecs()) {
		add(r.op)
	}
	if c.mix {
		add(opMix)
	}
	if c.soak > 0 {
		add(c.soakOp)
	}
	return out
}

// loadSpecs are the -load runs, for each -op and each size of -load-batch.
func (c *config) loadSpecs() []runSpec {
	var out []runSpec
	for _, op := range c.ops {
		n := c.loadConcurrency
		if n == 0 {
			n = c.maxConcurrency(op)
		}
		for _, b := range c.loadBatch {
			for _, l := range c.loads {
				out = append(out, runSpec{op: op, batch: b, concurrency: n, load: l})
			}
		}
	}
	return out
}

// maxConcurrency is the largest concurrency of the runs of op, 4 if none.
func (c *config) maxConcurrency(op string) int {
	n := 0
	for _, r := range c.runs {
		if r.op == op {
			n = max(n, r.concurrency)
		}
	}
	if n == 0 {
		n = 4
	}
	return n
}

// listOf is a flag.Func that sets *dst to the comma-separated list it is
// given, each element parsed by parse, without duplicates; what describes
// an element in errors.
func listOf[T comparable](dst *[]T, what string, parse func(string) (T, bool)) func(string) error {
	return func(s string) error {
		var out []T
		for f := range strings.SplitSeq(s, ",") {
			v, ok := parse(strings.TrimSpace(f))
			if !ok {
				return fmt.Errorf("%q is not %s", f, what)
			}
			if !slices.Contains(out, v) {
				out = append(out, v)
			}
		}
		*dst = out
		return nil
	}
}

func positive(s string) (int, bool) {
	n, err := strconv.Atoi(s)
	return n, err == nil && n >= 1
}

func fraction(s string) (float64, bool) {
	x, err := strconv.ParseFloat(s, 64)
	return x, err == nil && x > 0 && x <= 1
}

func parseOp(s string) (string, bool) { return s, slices.Contains(allOpNames, s) }

// parseRun parses [OP:]BATCHxCONCURRENCY; the operation is checked by the
// caller, which names the valid ones.
func parseRun(s string) (runSpec, bool) {
	op, bc, ok := strings.Cut(s, ":")
	if !ok {
		op, bc = "", s
	} else if op == "" {
		return runSpec{}, false
	}
	b, n, ok := strings.Cut(bc, "x")
	bi, okb := positive(b)
	ni, okn := positive(n)
	return runSpec{op: op, batch: bi, concurrency: ni}, ok && okb && okn
}
