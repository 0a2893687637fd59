package vault_test

import (
	"context"
	"syscall"
	"testing"
	"time"

	"github.com/gtank/ristretto255"

	"github.com/ehealth-pseudo/pseudonymizer/internal/scalarmult"
	"github.com/ehealth-pseudo/pseudonymizer/internal/sharetest"
	"github.com/ehealth-pseudo/pseudonymizer/keys"
	"github.com/ehealth-pseudo/pseudonymizer/keys/vault"
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
	admin := vault.NewStore(e.ClientWithToken(b, e.AdminToken), "", vault.Owner)
	ctx := context.Background()
	if _, err := admin.CreateDomainWith(ctx, keys.DomainSpec{Name: "bench_v1", Audience: "urn:test:bench",
		Policy: keys.Policy{Pseudonymize: []string{"client"}}}, keys.DomainOptions{Split: true}); err != nil {
		b.Fatal(err)
	}
	svc := vault.NewStore(e.ClientWithToken(b, e.ServiceToken), "", vault.Service)
	d, err := svc.Domain(ctx, "bench_v1")
	if err != nil {
		b.Fatal(err)
	}
	shares, err := svc.Shares()
	if err != nil {
		b.Fatal(err)
	}
	const n = 100
	g := ristretto255.NewGeneratorElement().Bytes()
	pts, errs := make([][]byte, n), make([]error, n)
	ref := keys.ShareRef{Domain: "bench_v1", Generation: d.ShareGeneration}
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
