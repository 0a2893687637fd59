package vault

import (
	"context"
	"syscall"
	"testing"
	"time"

	"github.com/gtank/ristretto255"

	"github.com/ehealth-pseudo/pseudonymizer/internal/scalarmult"
	"github.com/ehealth-pseudo/pseudonymizer/internal/sharetest"
	"github.com/ehealth-pseudo/pseudonymizer/keys"
)

// processCPU is the CPU time of this process so far.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkSharesMultiply100 is the service's side of the plugin hop of a
// split domain: round trips of 100 points through Shares to a real Vault
// with the real plugin. "cpu-x-scalarmult/point" is this process's CPU
// (the client: JSON, base64, HTTP) per point in ScalarMults timed right
// after; Vault's and the plugin's CPU are other processes'
// (scripts/bench-split.sh measures them).
func BenchmarkSharesMultiply100(b *testing.B) {
	e := sharetest.Start(b)
	ctx := context.Background()
	splitDomain(b, e, "bench_v1")
	shares, ref := serviceShares(b, e, "bench_v1", SharesOptions{})
	const n = 100
	g := ristretto255.NewGeneratorElement().Bytes()
	pts, errs := make([][]byte, n), make([]error, n)
	start := processCPU(b)
	for b.Loop() {
		for i := range pts {
			pts[i], errs[i] = append(pts[i][:0], g...), nil
		}
		shares.Multiply(ctx, keys.SharePseudonymize, ref, keys.ShareRef{}, pts, errs)
		for _, err := range errs {
			if err != nil {
				b.Fatal(err)
			}
		}
	}
	cpu := processCPU(b) - start
	rounds, round := 5, 200*time.Millisecond
	if b.N == 1 {
		rounds, round = 1, time.Millisecond
	}
	b.ReportMetric(float64(cpu)/float64(b.N*n)/float64(scalarmult.Median(rounds, round)), "cpu-x-scalarmult/point")
}
