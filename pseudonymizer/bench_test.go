package pseudonymizer_test

import (
	"context"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/gtank/ristretto255"

	"github.com/ehealth-pseudo/pseudonymizer/client"
	"github.com/ehealth-pseudo/pseudonymizer/internal/point"
	"github.com/ehealth-pseudo/pseudonymizer/internal/scalarmult"
	"github.com/ehealth-pseudo/pseudonymizer/pseudonymizer"
)

// Every benchmark reports "x-scalarmult": its cost per item divided by the
// cost of one ristretto255 ScalarMult measured in the same run, the floor
// of every operation of the protocol. Run with
//
//	go test ./pseudonymizer -run '^$' -bench . -benchtime 2s

// floor returns the ns of one ScalarMult, timed right after the benchmark
// it is compared with (median of five 200 ms rounds), so that both run under
// the same conditions. testing.Benchmark cannot be called from a benchmark,
// so it is timed here.
//
// A run of b.N == 1 (-benchtime=1x: the test command checks that the
// benchmarks run) times one short round only: its numbers mean nothing.
func floor(b *testing.B) float64 {
	rounds, round := 5, 200*time.Millisecond
	if b.N == 1 {
		rounds, round = 1, time.Millisecond
	}
	return float64(scalarmult.Median(rounds, round).Nanoseconds())
}

func report(b *testing.B, items int) {
	b.StopTimer()
	perItem := float64(b.Elapsed().Nanoseconds()) / float64(b.N) / float64(items)
	if items > 1 {
		b.ReportMetric(perItem, "ns/item")
	}
	b.ReportMetric(perItem/floor(b), "x-scalarmult")
}

func BenchmarkScalarMult(b *testing.B) {
	s := must(point.RandomScalar(nil))
	p := ristretto255.NewGeneratorElement()
	for b.Loop() {
		p.ScalarMult(s, p)
	}
	report(b, 1)
}

type benchEnv struct {
	*flowEnv
	blinded [][]byte
	items   []pseudonymizer.Item
	p       *pseudonymizer.Params
}

// oneCore makes a batch benchmark measure the cost per item on one core:
// batches are otherwise spread over GOMAXPROCS goroutines, and wall time
// per item would be divided by the cores.
func oneCore(b *testing.B) {
	prev := runtime.GOMAXPROCS(1)
	b.Cleanup(func() { runtime.GOMAXPROCS(prev) })
}

func newBenchEnv(b *testing.B, n int) *benchEnv {
	e := &benchEnv{flowEnv: newFlowEnv(b), p: &pseudonymizer.Params{Now: time.Now()}}
	for i := range n {
		blinded, u, err := client.Blind(fmt.Appendf(nil, "8507300%04d", i))
		if err != nil {
			b.Fatal(err)
		}
		ev := must(e.dA.Pseudonymize(blinded, e.p))
		tp := must(u.Unblind(ev.Point[:], ev.TransitInfo))
		bt, _, _ := client.BlindTransit(tp)
		e.blinded = append(e.blinded, blinded)
		e.items = append(e.items, pseudonymizer.Item{Blinded: bt, TransitInfo: tp.Info})
	}
	return e
}

func BenchmarkPseudonymize(b *testing.B) {
	e := newBenchEnv(b, 1)
	b.ResetTimer()
	for b.Loop() {
		if _, err := e.dA.Pseudonymize(e.blinded[0], e.p); err != nil {
			b.Fatal(err)
		}
	}
	report(b, 1)
}

func BenchmarkPseudonymizeBatch100(b *testing.B) {
	e := newBenchEnv(b, 100)
	oneCore(b)
	b.ResetTimer()
	for b.Loop() {
		e.dA.PseudonymizeBatch(e.blinded, e.p)
	}
	report(b, 100)
}

func BenchmarkIdentify(b *testing.B) {
	e := newBenchEnv(b, 1)
	b.ResetTimer()
	for b.Loop() {
		if _, err := e.dA.Identify(e.items[0].Blinded, e.items[0].TransitInfo, e.p); err != nil {
			b.Fatal(err)
		}
	}
	report(b, 1)
}

func BenchmarkIdentifyBatch100(b *testing.B) {
	e := newBenchEnv(b, 100)
	oneCore(b)
	b.ResetTimer()
	for b.Loop() {
		e.dA.IdentifyBatch(e.items, e.p)
	}
	report(b, 100)
}

func BenchmarkConvert(b *testing.B) {
	e := newBenchEnv(b, 1)
	b.ResetTimer()
	for b.Loop() {
		if _, err := pseudonymizer.Convert(e.dA, e.dB, e.items[0].Blinded, e.items[0].TransitInfo, e.p); err != nil {
			b.Fatal(err)
		}
	}
	report(b, 1)
}

func BenchmarkConvertBatch100(b *testing.B) {
	e := newBenchEnv(b, 100)
	oneCore(b)
	b.ResetTimer()
	for b.Loop() {
		pseudonymizer.ConvertBatch(e.dA, e.dB, e.items, e.p)
	}
	report(b, 100)
}

func BenchmarkOwnerAtRest(b *testing.B) {
	e := newFlowEnv(b)
	ctx := context.Background()
	tp, _ := e.pseudonymize(b, e.dA, flowNISS)
	b.ResetTimer()
	for b.Loop() {
		if _, err := e.ownA.AtRest(ctx, tp); err != nil {
			b.Fatal(err)
		}
	}
	report(b, 1)
}

func BenchmarkOwnerInTransit(b *testing.B) {
	e := newFlowEnv(b)
	tp, _ := e.pseudonymize(b, e.dA, flowNISS)
	p := must(e.ownA.AtRest(context.Background(), tp))
	b.ResetTimer()
	for b.Loop() {
		if _, err := e.ownA.InTransit(p); err != nil {
			b.Fatal(err)
		}
	}
	report(b, 1)
}

// BenchmarkClientBlindUnblind is the client's whole share of a
// pseudonymize: encode, blind, and unblind the service's answer.
func BenchmarkClientBlindUnblind(b *testing.B) {
	e := newFlowEnv(b)
	id := []byte("85073003328")
	blinded, _, _ := client.Blind(id)
	ev := must(e.dA.Pseudonymize(blinded, e.params()))
	b.ResetTimer()
	for b.Loop() {
		_, u, err := client.Blind(id)
		if err != nil {
			b.Fatal(err)
		}
		// The answer is for another blinding; the cost is the same.
		if _, err = u.Unblind(ev.Point[:], ev.TransitInfo); err != nil {
			b.Fatal(err)
		}
	}
	report(b, 1)
}

func BenchmarkClientBlindUnblindBatch100(b *testing.B) {
	e := newFlowEnv(b)
	ids := make([][]byte, 100)
	for i := range ids {
		ids[i] = fmt.Appendf(nil, "8507300%04d", i)
	}
	blinded, _, _ := client.BlindBatch(ids)
	evs, _ := e.dA.PseudonymizeBatch(blinded, e.params())
	pts := make([][]byte, len(evs))
	tis := make([]string, len(evs))
	for i := range evs {
		pts[i], tis[i] = evs[i].Point[:], evs[i].TransitInfo
	}
	b.ResetTimer()
	for b.Loop() {
		_, bu, _ := client.BlindBatch(ids)
		bu.UnblindBatch(pts, tis)
	}
	report(b, 100)
}

func BenchmarkEncode(b *testing.B) {
	for b.Loop() {
		point.Encode([]byte("85073003328"))
	}
	report(b, 1)
}
