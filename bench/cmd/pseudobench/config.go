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
each run (a batch size and a number of concurrent callers), the throughput in
items/s, the p50/p90/p99 latency of a call, the errors, the server's memory
and CPU, and the throughput as a fraction of cores ÷ ScalarMult, the cost of
one ristretto255 scalar multiplication timed on this machine in the same run.

Runs are the cross product of -batch and -concurrency, or the list -runs;
-load adds, for the batch sizes of -load-batch, one open-loop run at that
fraction of the best throughput measured for the batch size.

Connection: plaintext to a -dev server on loopback (the caller is named by
-principal), or TLS with -ca and mTLS with -cert and -key. -inprocess starts a
development server inside pseudobench instead (for profiling: -cpuprofile);
its numbers include the load generator's own CPU.

Flags:
`

// Limits that keep every run bounded.
const (
	maxDuration    = 10 * time.Minute
	maxConcurrency = 1024
	maxPoints      = 1 << 20
)

// usageError is a mistake on the command line.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, a ...any) error { return &usageError{fmt.Sprintf(format, a...)} }

// runSpec is one run of the matrix.
type runSpec struct {
	batch       int
	concurrency int
	// rate is the target in calls per second; 0 is a closed loop.
	rate float64
	// load, when positive, sets rate to this fraction of the best
	// throughput measured for the batch size.
	load float64
}

// config is the command line.
type config struct {
	addr      string
	inprocess bool
	ca        string
	cert, key string
	sni       string
	principal string
	domain    string
	op        string

	runs            []runSpec
	rate            float64
	loads           []float64
	loadBatch       []int
	loadConcurrency int
	conns           int

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
	c := &config{loadBatch: []int{1}}
	batch, conc := []int{1, 10, 100, 1000}, []int{1, 4}
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
	fs.StringVar(&c.domain, "domain", keys.DemoDomain, "`domain` to call")
	fs.StringVar(&c.op, "op", "pseudonymize", "operation: pseudonymize or identify")

	fs.Func("batch", "comma-separated batch `sizes` (items per call; default 1,10,100,1000)", listOf(&batch, "a positive integer", positive))
	fs.Func("concurrency", "comma-separated `numbers` of concurrent callers (default 1,4)", listOf(&conc, "a positive integer", positive))
	fs.Func("runs", "explicit `list` of runs BATCHxCONCURRENCY (e.g. 1x1,1x8,100x4), instead of -batch × -concurrency", listOf(&c.runs, "BATCHxCONCURRENCY (e.g. 100x4)", parseRun))
	fs.Float64Var(&c.rate, "rate", 0, "target `calls/s` of every run (open loop); 0 sends as fast as the server answers")
	fs.Func("load", "comma-separated `fractions` (e.g. 0.5): add open-loop runs at that fraction of the best items/s measured for each -load-batch size", listOf(&c.loads, "a fraction in (0, 1]", fraction))
	fs.Func("load-batch", "batch `sizes` of the -load runs (default 1)", listOf(&c.loadBatch, "a positive integer", positive))
	fs.IntVar(&c.loadConcurrency, "load-concurrency", 0, "callers of the -load runs (default: the largest -concurrency)")
	fs.IntVar(&c.conns, "conns", 1, "gRPC connections shared by the callers")

	fs.DurationVar(&c.duration, "duration", 5*time.Second, "measured `time` of each run")
	fs.DurationVar(&c.warmup, "warmup", 500*time.Millisecond, "unmeasured `time` before each run")
	fs.DurationVar(&c.timeout, "timeout", 10*time.Second, "deadline of one call")
	fs.DurationVar(&c.wait, "wait", 10*time.Second, "how long to wait for the server to report SERVING")
	fs.IntVar(&c.points, "points", 4096, "distinct blinded points made before the timed phase (at least the largest batch)")
	fs.IntVar(&c.cores, "cores", runtime.NumCPU(), "GOMAXPROCS of the server: the ceiling is cores ÷ ScalarMult")
	fs.DurationVar(&c.floorTime, "scalarmult-time", 200*time.Millisecond, "`time` spent timing ScalarMult after each run")

	fs.StringVar(&c.metricsURL, "metrics", "", "`URL` of the server's Prometheus /metrics, for its RSS and CPU time")
	fs.IntVar(&c.pid, "pid", 0, "process `id` of the server, for its RSS and CPU time from /proc (instead of -metrics)")

	fs.StringVar(&c.jsonOut, "json", "", "write the results as JSON to `file`")
	fs.StringVar(&c.cpuProfile, "cpuprofile", "", "with -inprocess, write a CPU profile of the timed runs to `file`")
	fs.BoolVar(&c.quiet, "q", false, "print only the final table")

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
	switch {
	case set["runs"] && (set["batch"] || set["concurrency"]):
		return nil, usagef("give -runs or -batch/-concurrency, not both")
	case !set["runs"]:
		for _, b := range batch {
			for _, n := range conc {
				c.runs = append(c.runs, runSpec{batch: b, concurrency: n})
			}
		}
	}
	return c, c.check()
}

func (c *config) check() error {
	switch c.op {
	case "pseudonymize", "identify":
	default:
		return usagef("-op must be pseudonymize or identify")
	}
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
	if c.rate < 0 {
		return usagef("-rate must not be negative")
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
	maxBatch := 0
	for _, r := range slices.Concat(c.runs, c.loadSpecs()) {
		if r.concurrency > maxConcurrency {
			return usagef("concurrency must be at most %d", maxConcurrency)
		}
		maxBatch = max(maxBatch, r.batch)
	}
	if c.points < maxBatch || c.points > maxPoints {
		return usagef("-points must be between the largest batch (%d) and %d", maxBatch, maxPoints)
	}
	return nil
}

// loadSpecs are the -load runs for the batch sizes of -load-batch.
func (c *config) loadSpecs() []runSpec {
	n := c.loadConcurrency
	if n == 0 {
		for _, r := range c.runs {
			n = max(n, r.concurrency)
		}
	}
	var out []runSpec
	for _, b := range c.loadBatch {
		for _, l := range c.loads {
			out = append(out, runSpec{batch: b, concurrency: n, load: l})
		}
	}
	return out
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

// parseRun parses BATCHxCONCURRENCY.
func parseRun(s string) (runSpec, bool) {
	b, n, ok := strings.Cut(s, "x")
	bi, okb := positive(b)
	ni, okn := positive(n)
	return runSpec{batch: bi, concurrency: ni}, ok && okb && okn
}
