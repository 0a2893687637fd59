// Package compare measures, in one process and in interleaved rounds, the
// server side of our pseudonymize beside its floor and its nearest peer:
//
//   - ristretto255 ScalarMult (github.com/gtank/ristretto255, constant
//     time): the one scalar multiplication every item needs, the floor;
//   - circl OPRF Evaluate (github.com/cloudflare/circl/oprf,
//     SuiteRistretto255, base mode, RFC 9497): k·B for already-decoded
//     elements, and "+wire" with the decoding of the request's points and
//     the encoding of the answers that a server also has to do;
//   - circl VOPRF Evaluate, which adds a batched DLEQ proof, for reference;
//   - our pseudonymizer.Domain.Pseudonymize and PseudonymizeBatch: decode,
//     draw s, seal the transitInfo (AES-256-GCM JWE), (s·k)·B, encode.
//
// Each round runs every case for the same short time, in a different order;
// a case's cost is the median over the rounds, and each ratio is the median
// of the ratios taken within a round, so that a change of machine load
// between rounds moves both sides of a ratio together. Costs are in CPU
// time of the process (garbage collection included) where the platform
// tells it, so that other processes that take the CPU away on a shared
// machine do not count; the wall-clock cost is given beside it.
package compare

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"runtime"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/cloudflare/circl/group"
	"github.com/cloudflare/circl/oprf"
	"github.com/gtank/ristretto255"

	"github.com/ehealth-pseudo/pseudonymizer/bench/internal/measure"
	"github.com/ehealth-pseudo/pseudonymizer/keys"
	"github.com/ehealth-pseudo/pseudonymizer/pseudonymizer"
)

// Case names.
const (
	ScalarMult       = "ristretto255 ScalarMult"
	CirclEvaluate    = "circl OPRF Evaluate"
	CirclWire        = "circl OPRF Evaluate+wire"
	CirclVerifiable  = "circl VOPRF Evaluate"
	OursPseudonymize = "ours Pseudonymize"
)

// Case is one measured operation at one batch size.
type Case struct {
	Name  string `json:"name"`
	Batch int    `json:"batch"`
	// NsPerItem is the median over the rounds, in CPU time (wall clock
	// where CPU time is unknown); Min and Max bound it. WallNsPerItem is
	// the median in wall-clock time.
	NsPerItem     float64 `json:"ns_per_item"`
	MinNs         float64 `json:"min_ns_per_item"`
	MaxNs         float64 `json:"max_ns_per_item"`
	WallNsPerItem float64 `json:"wall_ns_per_item"`
	// XScalarMult is the cost of an item in ScalarMults (median of the
	// per-round ratios). XScalarMultBest is the ratio of the best rounds
	// (MinNs of both): another process only ever slows a round down, so on
	// a busy machine it is the steadier of the two.
	XScalarMult     float64 `json:"x_scalarmult"`
	XScalarMultBest float64 `json:"x_scalarmult_best"`
	// For our cases: the ratio to circl OPRF Evaluate and to
	// Evaluate+wire at the same batch size (median of per-round ratios).
	XCirclEvaluate float64 `json:"x_circl_evaluate,omitempty"`
	XCirclWire     float64 `json:"x_circl_wire,omitempty"`

	run   func(n int) error // n batches
	round []float64         // ns/item of each round
	wall  []float64         // wall-clock ns/item of each round
}

// Result is the output of Run.
type Result struct {
	Tool          string    `json:"tool"`
	SchemaVersion int       `json:"schema_version"`
	Started       time.Time `json:"started"`
	GoVersion     string    `json:"go_version"`
	Rounds        int       `json:"rounds"`
	RoundMs       float64   `json:"round_ms"`
	// Clock is "process-cpu" or "wall": what NsPerItem counts.
	Clock string  `json:"clock"`
	Cases []*Case `json:"cases"`
}

// Options set the length of a measurement.
type Options struct {
	// Rounds is the number of rounds (at least 1; 15 when zero).
	Rounds int
	// PerCase is the time of each case in each round (30 ms when zero).
	PerCase time.Duration
	// Batches are the batch sizes (1 and 100 when empty).
	Batches []int
}

// Run measures every case and returns the result.
func Run(opts Options) (*Result, error) {
	if opts.Rounds <= 0 {
		opts.Rounds = 15
	}
	if opts.PerCase <= 0 {
		opts.PerCase = 30 * time.Millisecond
	}
	if len(opts.Batches) == 0 {
		opts.Batches = []int{1, 100}
	}
	cases, err := newCases(opts.Batches)
	if err != nil {
		return nil, err
	}
	res := &Result{Tool: "compare", SchemaVersion: 1, Started: time.Now().UTC(), GoVersion: runtime.Version(),
		Rounds: opts.Rounds, RoundMs: float64(opts.PerCase) / float64(time.Millisecond), Cases: cases, Clock: "wall"}
	if measure.ProcessCPU() > 0 {
		res.Clock = "process-cpu"
	}
	for _, c := range cases { // warm up, and check that every case works
		if err := c.run(1); err != nil {
			return nil, fmt.Errorf("%s batch %d: %v", c.Name, c.Batch, err)
		}
	}
	order := slices.Clone(cases)
	for range opts.Rounds {
		mrand.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
		for _, c := range order {
			ns, wall, err := timeCase(c, opts.PerCase)
			if err != nil {
				return nil, fmt.Errorf("%s batch %d: %v", c.Name, c.Batch, err)
			}
			c.round = append(c.round, ns)
			c.wall = append(c.wall, wall)
		}
	}
	summarize(cases)
	return res, nil
}

// timeCase runs c for about d and returns its ns per item in CPU time
// (wall clock if unknown) and in wall-clock time.
func timeCase(c *Case, d time.Duration) (ns, wall float64, err error) {
	runtime.GC() // do not charge a case with the garbage of the one before
	n, start, cpu := 0, time.Now(), measure.ProcessCPU()
	step := 1
	for {
		if err := c.run(step); err != nil {
			return 0, 0, err
		}
		n += step
		el := time.Since(start)
		if el >= d {
			items := float64(n * c.Batch)
			wall = float64(el.Nanoseconds()) / items
			if used := measure.ProcessCPU() - cpu; cpu > 0 && used > 0 {
				return float64(used.Nanoseconds()) / items, wall, nil
			}
			return wall, wall, nil
		}
		// Grow the step so that the clock is read rarely.
		if el < d/10 {
			step *= 2
		}
	}
}

func summarize(cases []*Case) {
	find := func(name string, batch int) *Case {
		for _, c := range cases {
			if c.Name == name && c.Batch == batch {
				return c
			}
		}
		return nil
	}
	sm := find(ScalarMult, 1)
	for _, c := range cases {
		c.NsPerItem = measure.Median(c.round)
		c.WallNsPerItem = measure.Median(c.wall)
		c.MinNs, c.MaxNs = slices.Min(c.round), slices.Max(c.round)
		c.XScalarMult = ratio(c.round, sm.round)
		c.XScalarMultBest = c.MinNs / slices.Min(sm.round)
		if strings.HasPrefix(c.Name, "ours") {
			if e := find(CirclEvaluate, c.Batch); e != nil {
				c.XCirclEvaluate = ratio(c.round, e.round)
			}
			if w := find(CirclWire, c.Batch); w != nil {
				c.XCirclWire = ratio(c.round, w.round)
			}
		}
	}
}

// ratio is the median of a[i]/b[i].
func ratio(a, b []float64) float64 {
	r := make([]float64, len(a))
	for i := range a {
		r[i] = a[i] / b[i]
	}
	return measure.Median(r)
}

// newCases builds every case with its inputs.
func newCases(batches []int) ([]*Case, error) {
	nMax := slices.Max(batches)
	// Inputs: uniformly random points, as the service sees them.
	points := make([][]byte, nMax)
	for i := range points {
		var b [64]byte
		if _, err := rand.Read(b[:]); err != nil {
			return nil, err
		}
		e, err := ristretto255.NewIdentityElement().SetUniformBytes(b[:])
		if err != nil {
			return nil, err
		}
		points[i] = e.Bytes()
	}

	// The floor.
	s, err := randomScalar()
	if err != nil {
		return nil, err
	}
	P := ristretto255.NewGeneratorElement()
	cases := []*Case{{Name: ScalarMult, Batch: 1, run: func(n int) error {
		for range n {
			P.ScalarMult(s, P)
		}
		return nil
	}}}

	// Ours.
	kd, err := keys.GenerateDomain(keys.DomainSpec{Name: "bench_v1", Audience: "urn:pseudonymizer:bench:v1", TTL: keys.DefaultTTL}, nil)
	if err != nil {
		return nil, err
	}
	d, err := pseudonymizer.NewDomain(kd)
	if err != nil {
		return nil, err
	}
	params := &pseudonymizer.Params{Now: time.Now()}

	// circl.
	sk, err := oprf.GenerateKey(oprf.SuiteRistretto255, rand.Reader)
	if err != nil {
		return nil, err
	}
	srv := oprf.NewServer(oprf.SuiteRistretto255, sk)
	vsrv := oprf.NewVerifiableServer(oprf.SuiteRistretto255, sk)
	elems := make([]group.Element, nMax)
	for i, p := range points {
		elems[i] = group.Ristretto255.NewElement()
		if err := elems[i].UnmarshalBinary(p); err != nil {
			return nil, err
		}
	}

	for _, batch := range batches {
		in := points[:batch]
		req := &oprf.EvaluationRequest{Elements: elems[:batch]}
		cases = append(cases,
			&Case{Name: CirclEvaluate, Batch: batch, run: func(n int) error {
				for range n {
					if _, err := srv.Evaluate(req); err != nil {
						return err
					}
				}
				return nil
			}},
			&Case{Name: CirclWire, Batch: batch, run: func(n int) error {
				for range n {
					if err := circlWire(srv, in); err != nil {
						return err
					}
				}
				return nil
			}},
			&Case{Name: CirclVerifiable, Batch: batch, run: func(n int) error {
				for range n {
					if _, err := vsrv.Evaluate(req); err != nil {
						return err
					}
				}
				return nil
			}},
		)
		ours := &Case{Name: OursPseudonymize, Batch: batch}
		if batch == 1 {
			ours.run = func(n int) error {
				for range n {
					if _, err := d.Pseudonymize(in[0], params); err != nil {
						return err
					}
				}
				return nil
			}
		} else {
			ours.run = func(n int) error {
				for range n {
					if _, errs := d.PseudonymizeBatch(in, params); errors.Join(errs...) != nil {
						return errors.Join(errs...)
					}
				}
				return nil
			}
		}
		cases = append(cases, ours)
	}
	return cases, nil
}

// circlWire is what a circl-based server does with a request on the wire:
// decode the points, Evaluate, encode the answers.
func circlWire(srv oprf.Server, in [][]byte) error {
	req := &oprf.EvaluationRequest{Elements: make([]group.Element, len(in))}
	for i, b := range in {
		e := group.Ristretto255.NewElement()
		if err := e.UnmarshalBinary(b); err != nil {
			return err
		}
		req.Elements[i] = e
	}
	ev, err := srv.Evaluate(req)
	if err != nil {
		return err
	}
	for _, e := range ev.Elements {
		if _, err := e.MarshalBinaryCompress(); err != nil {
			return err
		}
	}
	return nil
}

func randomScalar() (*ristretto255.Scalar, error) {
	var b [64]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, err
	}
	return ristretto255.NewScalar().SetUniformBytes(b[:])
}

// WriteTable prints the result as an aligned table.
func WriteTable(w io.Writer, r *Result) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "case\tbatch\tns/item (%s)\t(min–max)\twall ns/item\t× ScalarMult\t(best rounds)\t× circl Evaluate\t× circl Evaluate+wire\t\n", r.Clock)
	for _, c := range r.Cases {
		fmt.Fprintf(tw, "%s\t%d\t%.0f\t%.0f–%.0f\t%.0f\t%.3f\t%.3f\t%s\t%s\t\n", c.Name, c.Batch, c.NsPerItem, c.MinNs, c.MaxNs,
			c.WallNsPerItem, c.XScalarMult, c.XScalarMultBest, opt(c.XCirclEvaluate), opt(c.XCirclWire))
	}
	return tw.Flush()
}

// WriteMarkdown prints the result as a markdown table.
func WriteMarkdown(w io.Writer, r *Result) error {
	var b strings.Builder
	fmt.Fprintf(&b, "| case | batch | ns/item (%s) | × ScalarMult | × ScalarMult, best rounds | × circl Evaluate | × circl Evaluate+wire |\n", r.Clock)
	b.WriteString("|---|---:|---:|---:|---:|---:|---:|\n")
	for _, c := range r.Cases {
		fmt.Fprintf(&b, "| %s | %d | %.0f | %.3f | %.3f | %s | %s |\n", c.Name, c.Batch, c.NsPerItem,
			c.XScalarMult, c.XScalarMultBest, opt(c.XCirclEvaluate), opt(c.XCirclWire))
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func opt(x float64) string {
	if x == 0 {
		return "-"
	}
	return fmt.Sprintf("%.3f", x)
}
