// Package scalarmult times one ristretto255 ScalarMult, the unit in which
// the project's benchmarks report costs (docs/benchmarks.md): every
// operation of the protocol costs at least one.
package scalarmult

import (
	"slices"
	"time"

	"github.com/gtank/ristretto255"
)

// Median returns the time of one ScalarMult: the median of rounds rounds
// of round each (at least one of each), timed on the calling goroutine.
// Time it right after what it is compared with, so that both run under
// the same conditions.
func Median(rounds int, round time.Duration) time.Duration {
	var seed [64]byte
	seed[0] = 1 // any fixed non-zero scalar: ScalarMult is constant-time
	s, err := ristretto255.NewScalar().SetUniformBytes(seed[:])
	if err != nil {
		panic(err) // 64 bytes are always accepted
	}
	p := ristretto255.NewGeneratorElement()
	times := make([]time.Duration, 0, max(rounds, 1))
	for range max(rounds, 1) {
		n, start := 0, time.Now()
		for n == 0 || time.Since(start) < round {
			for range 20 {
				p.ScalarMult(s, p)
			}
			n += 20
		}
		times = append(times, time.Since(start)/time.Duration(n))
	}
	slices.Sort(times)
	return times[len(times)/2]
}
