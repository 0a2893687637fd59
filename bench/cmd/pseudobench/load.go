package main

import (
	"context"
	"math"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/ehealth-pseudo/pseudonymizer/proto/pseudonymizer/v1"
)

// loadParams are the settings of one run of the load.
type loadParams struct {
	apis []pb.PseudonymizerClient
	// reqs are *pb.PseudonymizeRequest, *pb.IdentifyRequest or
	// *pb.ConvertToRequest, mixed or not.
	reqs []any
	// stream sends them on one bidirectional stream per caller instead of
	// unary calls.
	stream      bool
	concurrency int
	// rate is the target in calls per second over all callers; 0 is a
	// closed loop, where each caller sends its next call when the previous
	// one is answered.
	rate float64
	// poisson draws exponential gaps between the open loop's calls (mean
	// 1/rate) instead of spacing them evenly.
	poisson  bool
	warmup   time.Duration
	duration time.Duration
	timeout  time.Duration
	// convertCtx, when set, is the context of the convert calls (it names
	// another caller); the context of runLoad otherwise.
	convertCtx context.Context
	// byOp keeps one latency histogram per RPC (the mix).
	byOp bool
	// window, when positive, keeps the calls, errors and latency of each
	// window of that length of the measured time (the soak).
	window time.Duration
	// sdk, when set, makes every caller a user of the client SDK (the
	// requests are sdkCall).
	sdk *sdkRun
}

// loadResult is what one run measured. Calls are counted in the measured
// window [warmup, warmup+duration] by their completion for the throughput
// (so that calls that straddle either end of it balance out), and by the
// time they were sent for the latency and the errors.
type loadResult struct {
	from       time.Time // start of the measured time
	elapsed    time.Duration
	calls      uint64 // completed in the window
	items      uint64 // items of the successful calls completed in the window
	allItems   uint64 // successful items of every call, warm-up included
	callErrors uint64
	itemErrors uint64
	errors     map[string]uint64 // by status code, "item " prefix for item errors
	late       uint64            // open loop: calls sent over 1 ms after their time
	unsent     uint64            // open loop: calls due before the end but never sent
	hist       histogram
	byOp       map[string]*histogram
	windows    []windowStats
}

// windowStats are the calls sent in one window of a soak.
type windowStats struct {
	calls, items, callErrors, itemErrors uint64
	hist                                 histogram
}

// callerStats is one caller's share of a loadResult.
type callerStats struct {
	calls, items, allItems, callErrors, itemErrors, late uint64
	errors                                               map[string]uint64
	hist                                                 histogram
	byOp                                                 map[string]*histogram
}

// lateAfter is how far behind schedule an open-loop call counts as late
// (all callers were busy: the latency then includes the wait).
const lateAfter = time.Millisecond

// schedule hands out the due times of an open loop's calls.
type schedule struct {
	start   time.Time
	end     time.Time
	rate    float64
	poisson bool
	ticket  atomic.Int64 // even spacing: index of the next call

	mu     sync.Mutex // Poisson arrivals
	rng    *rand.Rand
	next   float64 // seconds from start to the next arrival
	issued int64   // arrivals handed out that were due before end
}

func newSchedule(start, end time.Time, rate float64, poisson bool) *schedule {
	return &schedule{start: start, end: end, rate: rate, poisson: poisson, rng: rand.New(rand.NewPCG(uint64(start.UnixNano()), 7))}
}

func (s *schedule) due() time.Time {
	if !s.poisson {
		k := s.ticket.Add(1) - 1
		return s.start.Add(time.Duration(float64(k) / s.rate * float64(time.Second)))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	d := s.start.Add(time.Duration(s.next * float64(time.Second)))
	if d.Before(s.end) {
		s.issued++
	}
	s.next += s.rng.ExpFloat64() / s.rate
	return d
}

// total is the number of calls due before end, once the callers are done.
func (s *schedule) total() int64 {
	if !s.poisson {
		return int64(math.Ceil(s.end.Sub(s.start).Seconds() * s.rate))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	n, span := s.issued, s.end.Sub(s.start).Seconds()
	for t := s.next; t < span; t += s.rng.ExpFloat64() / s.rate {
		n++
	}
	return n
}

// windowRec collects the soak's per-window statistics (shared by the
// callers: a soak's rate is modest).
type windowRec struct {
	mu      sync.Mutex
	from    time.Time
	window  time.Duration
	windows []windowStats
}

func (w *windowRec) add(sent time.Time, items int, failed int, err error, lat time.Duration) {
	i := int(sent.Sub(w.from) / w.window)
	if i < 0 || i >= len(w.windows) {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	ws := &w.windows[i]
	if err != nil {
		ws.callErrors++
		return
	}
	ws.calls++
	ws.items += uint64(items - failed)
	ws.itemErrors += uint64(failed)
	ws.hist.add(lat)
}

// runLoad drives the service for warmup+duration and returns what it
// measured. In a closed loop, latency is the time of a call; in an open
// loop it is counted from the time the call was due, so that a server that
// falls behind is not hidden by callers that wait for it.
func runLoad(ctx context.Context, p loadParams) *loadResult {
	start := time.Now()
	from := start.Add(p.warmup)
	end := from.Add(p.duration)
	var sched *schedule
	if p.rate > 0 {
		sched = newSchedule(start, end, p.rate, p.poisson)
	}
	var rec *windowRec
	if p.window > 0 {
		n := int((p.duration + p.window - 1) / p.window)
		rec = &windowRec{from: from, window: p.window, windows: make([]windowStats, n)}
	}
	var next atomic.Uint64 // index of the next request
	var sent atomic.Int64  // calls sent
	stats := make([]*callerStats, p.concurrency)
	var wg sync.WaitGroup
	for w := range p.concurrency {
		st := &callerStats{errors: map[string]uint64{}}
		if p.byOp {
			st.byOp = map[string]*histogram{}
		}
		stats[w] = st
		s := newSender(ctx, p, p.apis[w%len(p.apis)])
		wg.Go(func() {
			defer s.close()
			timer := time.NewTimer(time.Hour)
			timer.Stop()
			for ctx.Err() == nil {
				due := time.Now()
				if sched != nil {
					due = sched.due()
					if !due.Before(end) || !time.Now().Before(end) {
						return // the run is over, even if calls are left
					}
					if d := time.Until(due); d > 0 {
						timer.Reset(d)
						select {
						case <-ctx.Done():
							timer.Stop()
							return
						case <-timer.C:
						}
					}
				} else if !due.Before(end) {
					return
				}
				sent.Add(1)
				req := p.reqs[next.Add(1)%uint64(len(p.reqs))]
				t0 := time.Now()
				items, failed, err := s.send(req)
				t1 := time.Now()
				if err == nil {
					st.allItems += uint64(items - len(failed))
					if t1.After(from) && !t1.After(end) {
						st.calls++
						st.items += uint64(items - len(failed))
					}
				}
				if t0.Before(from) {
					continue // sent during the warm-up
				}
				lat := t1.Sub(t0)
				if sched != nil {
					if t0.Sub(due) > lateAfter {
						st.late++
					}
					lat = t1.Sub(due)
				}
				if rec != nil {
					rec.add(due, items, len(failed), err, lat)
				}
				if err != nil {
					st.callErrors++
					st.errors[status.Code(err).String()]++
					continue
				}
				st.itemErrors += uint64(len(failed))
				for _, c := range failed {
					st.errors["item "+c.String()]++
				}
				st.hist.add(lat)
				if st.byOp != nil {
					op := opOf(req)
					h := st.byOp[op]
					if h == nil {
						h = new(histogram)
						st.byOp[op] = h
					}
					h.add(lat)
				}
			}
		})
	}
	wg.Wait()
	r := &loadResult{from: from, elapsed: end.Sub(from), errors: map[string]uint64{}}
	if sched != nil {
		r.unsent = uint64(max(sched.total()-sent.Load(), 0))
	}
	if p.byOp {
		r.byOp = map[string]*histogram{}
	}
	for _, st := range stats {
		r.calls += st.calls
		r.items += st.items
		r.allItems += st.allItems
		r.callErrors += st.callErrors
		r.itemErrors += st.itemErrors
		r.late += st.late
		for k, v := range st.errors {
			r.errors[k] += v
		}
		r.hist.merge(&st.hist)
		for op, h := range st.byOp {
			if r.byOp[op] == nil {
				r.byOp[op] = new(histogram)
			}
			r.byOp[op].merge(h)
		}
	}
	if rec != nil {
		r.windows = rec.windows
	}
	return r
}

// opOf is the RPC of a request.
func opOf(req any) string {
	switch req.(type) {
	case *pb.IdentifyRequest:
		return opIdentify
	case *pb.ConvertToRequest:
		return opConvert
	}
	return opPseudonymize
}

// errShortResponse is a response without one result per item.
var errShortResponse = status.Error(codes.DataLoss, "pseudobench: response without one result per item")

// results checks a response against its request and returns the number of
// items and the codes of the items that failed.
func results(req, resp any) (items int, failed []codes.Code, err error) {
	switch req := req.(type) {
	case *pb.PseudonymizeRequest:
		rs := resp.(*pb.PseudonymizeResponse).GetResults()
		if len(rs) != len(req.GetItems()) {
			return 0, nil, errShortResponse
		}
		for _, r := range rs {
			if e := r.GetError(); e != nil || len(r.GetEvaluated().GetPoint()) != 32 {
				failed = append(failed, codes.Code(e.GetCode()))
			}
		}
		return len(rs), failed, nil
	case *pb.IdentifyRequest:
		rs := resp.(*pb.IdentifyResponse).GetResults()
		if len(rs) != len(req.GetItems()) {
			return 0, nil, errShortResponse
		}
		for _, r := range rs {
			if e := r.GetError(); e != nil || len(r.GetPoint()) != 32 {
				failed = append(failed, codes.Code(e.GetCode()))
			}
		}
		return len(rs), failed, nil
	case *pb.ConvertToRequest:
		rs := resp.(*pb.ConvertToResponse).GetResults()
		if len(rs) != len(req.GetItems()) {
			return 0, nil, errShortResponse
		}
		for _, r := range rs {
			if e := r.GetError(); e != nil || len(r.GetEvaluated().GetPoint()) != 32 {
				failed = append(failed, codes.Code(e.GetCode()))
			}
		}
		return len(rs), failed, nil
	}
	panic("pseudobench: unexpected request")
}
