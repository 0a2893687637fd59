package compare

import (
	"bytes"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ehealth-pseudo/pseudonymizer/bench/internal/measure"
)

func TestRun(t *testing.T) {
	r, err := Run(Options{Rounds: 2, PerCase: time.Millisecond, Batches: []int{1, 3}})
	if err != nil {
		t.Fatal(err)
	}
	// ScalarMult, then four cases per batch size.
	if len(r.Cases) != 1+4*2 {
		t.Fatalf("%d cases", len(r.Cases))
	}
	for _, c := range r.Cases {
		if c.NsPerItem <= 0 || c.WallNsPerItem <= 0 || c.XScalarMult <= 0 || c.XScalarMultBest <= 0 || c.MinNs > c.NsPerItem || c.NsPerItem > c.MaxNs {
			t.Errorf("%s batch %d: %+v", c.Name, c.Batch, c)
		}
		ours := c.Name == OursPseudonymize
		if ours != (c.XCirclEvaluate > 0) || ours != (c.XCirclWire > 0) {
			t.Errorf("%s batch %d: circl ratios %v %v", c.Name, c.Batch, c.XCirclEvaluate, c.XCirclWire)
		}
	}
	if r.Cases[0].Name != ScalarMult || r.Cases[0].XScalarMult != 1 {
		t.Errorf("first case %+v", r.Cases[0])
	}
	var table, md bytes.Buffer
	if err := WriteTable(&table, r); err != nil {
		t.Fatal(err)
	}
	if err := WriteMarkdown(&md, r); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{table.String(), md.String()} {
		if !strings.Contains(s, CirclEvaluate) || !strings.Contains(s, OursPseudonymize) {
			t.Errorf("output:\n%s", s)
		}
	}
}

func TestRatio(t *testing.T) {
	if got := ratio([]float64{2, 4, 9}, []float64{1, 1, 3}); got != 3 {
		t.Errorf("ratio = %v, want the median of 2, 4, 3", got)
	}
}

// Go benchmarks of the same cases, each with its cost in ScalarMults timed
// right after it (x-scalarmult), for benchstat:
//
//	go test ./compare -run '^$' -bench . -count 10
func BenchmarkCases(b *testing.B) {
	cases, err := newCases([]int{1, 100})
	if err != nil {
		b.Fatal(err)
	}
	floor := func() float64 {
		var ns []float64
		for range 5 {
			x, _, err := timeCase(cases[0], 40*time.Millisecond)
			if err != nil {
				b.Fatal(err)
			}
			ns = append(ns, x)
		}
		return measure.Median(ns)
	}
	for _, c := range cases {
		b.Run(strings.ReplaceAll(c.Name, " ", "_")+"/batch="+strconv.Itoa(c.Batch), func(b *testing.B) {
			for b.Loop() {
				if err := c.run(1); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			perItem := float64(b.Elapsed().Nanoseconds()) / float64(b.N*c.Batch)
			b.ReportMetric(perItem, "ns/item")
			b.ReportMetric(perItem/floor(), "x-scalarmult")
		})
	}
}
