package main

import (
	"slices"
	"time"

	"github.com/gtank/ristretto255"

	"github.com/ehealth-pseudo/pseudonymizer/bench/internal/measure"
	"github.com/ehealth-pseudo/pseudonymizer/internal/point"
)

// scalarMultNs times one ristretto255 ScalarMult with a secret (constant
// time) scalar, as the server does for each item, on one goroutine: the
// median of five rounds sharing total, in ns. Called while the server is
// idle, right after each run, so that both see the same machine.
//
// It counts this process's CPU time rather than the wall clock where it
// can, so that other processes that take the CPU away (a shared machine)
// do not inflate it; on an idle machine both are the same.
func scalarMultNs(total time.Duration) (float64, error) {
	s, err := point.RandomScalar(nil)
	if err != nil {
		return 0, err
	}
	p := ristretto255.NewGeneratorElement()
	const rounds = 5
	per := max(total/rounds, time.Millisecond)
	ns := make([]float64, 0, rounds)
	for range rounds {
		n, start, cpu := 0, time.Now(), measure.ProcessCPU()
		for time.Since(start) < per {
			for range 10 {
				p.ScalarMult(s, p)
			}
			n += 10
		}
		el := time.Since(start)
		if c := measure.ProcessCPU() - cpu; cpu > 0 && c > 0 {
			el = c
		}
		ns = append(ns, float64(el.Nanoseconds())/float64(n))
	}
	slices.Sort(ns)
	return ns[rounds/2], nil
}
