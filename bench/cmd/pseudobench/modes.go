package main

import (
	"context"
	"fmt"
	"math"
)

// runMix runs the prescription mix: one step at -mix-rate, or the search
// of the highest rate whose p99 stays within -mix-p99. The search doubles
// the rate from -mix-start while steps pass (or halves it while they
// fail), then bisects between the highest rate that passed and the lowest
// that failed until they are within 5 %, in at most -mix-steps steps. A
// step passes when its p99 is within the bound, no call or item failed and
// every call due was sent (otherwise the generator, not the server, set the
// pace).
func (b *bench) runMix(ctx context.Context) error {
	c := b.c
	m := &mixResult{
		Arrivals: "poisson", IdentifyShare: mixIdentifyShare, ItemsMin: mixItemsMin, ItemsMax: mixItemsMax,
		Callers: c.mixCallers, P99BoundMs: ms(c.mixP99), Search: c.mixRate == 0,
	}
	b.rep.Mix = m
	step := func(rate float64) (bool, error) {
		spec := runSpec{op: opMix, concurrency: c.mixCallers, rate: rate, poisson: true}
		x, err := b.measure(ctx, spec, fmt.Sprintf("mix @%.0f/s", rate))
		if err != nil {
			return false, err
		}
		r := x.r
		pass := r.Calls > 0 && r.CallErrors+r.ItemErrors == 0 && r.UnsentCalls == 0 && r.LatencyMs.P99 <= m.P99BoundMs
		r.Pass = &pass
		m.Steps = append(m.Steps, r)
		return pass, nil
	}
	if !m.Search {
		_, err := step(c.mixRate)
		return err
	}
	rate := c.mixStart
	if rate == 0 {
		// Half of the best unary pseudonymize calls/s, when measured.
		rate = b.best(opPseudonymize, 1) / 2
	}
	if rate == 0 {
		rate = 100
	}
	lo, hi := 0.0, math.Inf(1)
	for range c.mixSteps {
		pass, err := step(rate)
		if err != nil {
			return err
		}
		if pass {
			if rate > lo {
				lo = rate
				last := m.Steps[len(m.Steps)-1]
				m.MaxItemsPerSec, m.MaxLatencyMs = last.ItemsPerSec, &last.LatencyMs
			}
		} else {
			hi = min(hi, rate)
		}
		switch {
		case math.IsInf(hi, 1):
			rate = lo * 2
		case lo == 0:
			rate = hi / 2
		default:
			rate = (lo + hi) / 2
		}
		if (lo > 0 && hi-lo <= mixPrecision*lo) || rate < 1 || rate > maxRate {
			break
		}
	}
	m.MaxCallsPerSec = lo
	if !math.IsInf(hi, 1) {
		m.FailedCallsPerSec = hi
	}
	m.Converged = lo > 0 && !math.IsInf(hi, 1) && hi-lo <= mixPrecision*lo
	return nil
}

// runSoak holds a steady open-loop rate for -soak, the server sampled every
// -soak-sample, and summarizes it per -soak-window.
func (b *bench) runSoak(ctx context.Context) error {
	c := b.c
	rate, load := c.soakRate, 0.0
	if rate == 0 {
		best, err := b.bestOrCalibrate(ctx, c.soakOp, c.soakBatch, c.maxConcurrency(c.soakOp))
		if err != nil {
			return err
		}
		load = c.soakLoad
		rate = load * best / float64(c.soakBatch)
	}
	spec := runSpec{
		op: c.soakOp, batch: c.soakBatch, concurrency: c.soakCallers, rate: rate, load: load,
		duration: c.soak, window: c.soakWindow, interval: c.soakSample,
	}
	x, err := b.measure(ctx, spec, fmt.Sprintf("soak %s b%d @%.0f/s", c.soakOp, c.soakBatch, rate))
	if err != nil {
		return err
	}
	s := &soakResult{Run: x.r, WindowSec: c.soakWindow.Seconds(), SampleSec: c.soakSample.Seconds(), SampleErrors: x.sampleErrs}
	from, total := x.load.from, c.soak.Seconds()
	for _, t := range x.samples {
		if ts := t.at.Sub(from).Seconds(); ts >= 0 {
			s.Samples = append(s.Samples, soakSample{TSec: ts, RSSBytes: t.rss, Goroutines: t.goroutines})
		}
	}
	for i, w := range x.load.windows {
		sw := soakWindow{
			StartSec: float64(i) * s.WindowSec, Calls: w.calls, Items: w.items, Errors: w.callErrors + w.itemErrors,
			P50Ms: ms(w.hist.quantile(0.5)), P99Ms: ms(w.hist.quantile(0.99)), MaxMs: ms(w.hist.max),
		}
		sw.RSSMeanBytes = meanOf(s.Samples, sw.StartSec, sw.StartSec+s.WindowSec, func(x soakSample) float64 { return x.RSSBytes })
		sw.GoroutinesMean = meanOf(s.Samples, sw.StartSec, sw.StartSec+s.WindowSec, func(x soakSample) float64 { return x.Goroutines })
		s.Windows = append(s.Windows, sw)
	}
	s.RSS = driftOf(s.Samples, s.WindowSec, total, func(x soakSample) float64 { return x.RSSBytes })
	s.Goroutines = driftOf(s.Samples, s.WindowSec, total, func(x soakSample) float64 { return x.Goroutines })
	b.rep.Soak = s
	return nil
}

// meanOf is the mean of f over the samples taken in [from, to), 0 if none.
func meanOf(samples []soakSample, from, to float64, f func(soakSample) float64) float64 {
	sum, n := 0.0, 0
	for _, x := range samples {
		if x.TSec >= from && x.TSec < to {
			sum += f(x)
			n++
		}
	}
	if n == 0 {
		return 0
	}
	return sum / float64(n)
}

// driftOf summarizes f over the samples: first, last, max, and the drift
// between the mean of the first window and that of the last (the samples of
// [0, window) and of [total−window, total], the final sample included).
// nil when f is never positive (not sampled).
func driftOf(samples []soakSample, window, total float64, f func(soakSample) float64) *drift {
	var d drift
	seen := false
	for _, x := range samples {
		v := f(x)
		if v <= 0 {
			continue
		}
		if !seen {
			d.First = v
		}
		seen = true
		d.Last, d.Max = v, max(d.Max, v)
	}
	if !seen {
		return nil
	}
	d.FirstWindowMean = meanOf(samples, 0, window, f)
	d.LastWindowMean = meanOf(samples, total-window, math.Inf(1), f)
	if d.FirstWindowMean > 0 {
		d.DriftPct = (d.LastWindowMean - d.FirstWindowMean) / d.FirstWindowMean * 100
	}
	return &d
}
