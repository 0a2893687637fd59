package main

import (
	"context"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/ehealth-pseudo/pseudonymizer/proto/pseudonymizer/v1"
)

// loadParams are the settings of one run of the load.
type loadParams struct {
	apis        []pb.PseudonymizerClient
	reqs        []any // *pb.PseudonymizeRequest or *pb.IdentifyRequest
	concurrency int
	// rate is the target in calls per second over all callers; 0 is a
	// closed loop, where each caller sends its next call when the previous
	// one is answered.
	rate     float64
	warmup   time.Duration
	duration time.Duration
	timeout  time.Duration
}

// loadResult is what one run measured. Calls are counted in the measured
// window [warmup, warmup+duration] by their completion for the throughput
// (so that calls that straddle either end of it balance out), and by the
// time they were sent for the latency and the errors.
type loadResult struct {
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
}

// callerStats is one caller's share of a loadResult.
type callerStats struct {
	calls, items, allItems, callErrors, itemErrors, late uint64
	errors                                               map[string]uint64
	hist                                                 histogram
}

// lateAfter is how far behind schedule an open-loop call counts as late
// (all callers were busy: the latency then includes the wait).
const lateAfter = time.Millisecond

// runLoad drives the service for warmup+duration and returns what it
// measured. In a closed loop, latency is the time of a call; in an open
// loop it is counted from the time the call was due, so that a server that
// falls behind is not hidden by callers that wait for it.
func runLoad(ctx context.Context, p loadParams) *loadResult {
	start := time.Now()
	from := start.Add(p.warmup)
	end := from.Add(p.duration)
	var ticket atomic.Int64 // open loop: index of the next call
	var next atomic.Uint64  // index of the next request
	var sent atomic.Int64   // calls sent
	stats := make([]*callerStats, p.concurrency)
	var wg sync.WaitGroup
	for w := range p.concurrency {
		st := &callerStats{errors: map[string]uint64{}}
		stats[w] = st
		api := p.apis[w%len(p.apis)]
		wg.Go(func() {
			timer := time.NewTimer(time.Hour)
			timer.Stop()
			for ctx.Err() == nil {
				due := time.Now()
				if p.rate > 0 {
					k := ticket.Add(1) - 1
					due = start.Add(time.Duration(float64(k) / p.rate * float64(time.Second)))
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
				items, failed, err := call(ctx, api, req, p.timeout)
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
				if err != nil {
					st.callErrors++
					st.errors[status.Code(err).String()]++
					continue
				}
				st.itemErrors += uint64(len(failed))
				for _, c := range failed {
					st.errors["item "+c.String()]++
				}
				if p.rate > 0 {
					if t0.Sub(due) > lateAfter {
						st.late++
					}
					st.hist.add(t1.Sub(due))
				} else {
					st.hist.add(t1.Sub(t0))
				}
			}
		})
	}
	wg.Wait()
	r := &loadResult{elapsed: end.Sub(from), errors: map[string]uint64{}}
	if p.rate > 0 {
		due := int64(math.Ceil(end.Sub(start).Seconds() * p.rate))
		r.unsent = uint64(max(due-sent.Load(), 0))
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
	}
	return r
}

// errShortResponse is a response without one result per item.
var errShortResponse = status.Error(codes.DataLoss, "pseudobench: response without one result per item")

// call sends one request and returns its number of items and the codes of
// the items that failed.
func call(ctx context.Context, api pb.PseudonymizerClient, req any, timeout time.Duration) (items int, failed []codes.Code, err error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	switch req := req.(type) {
	case *pb.PseudonymizeRequest:
		resp, err := api.Pseudonymize(ctx, req)
		if err != nil {
			return 0, nil, err
		}
		if len(resp.GetResults()) != len(req.GetItems()) {
			return 0, nil, errShortResponse
		}
		for _, r := range resp.GetResults() {
			if e := r.GetError(); e != nil || len(r.GetEvaluated().GetPoint()) != 32 {
				failed = append(failed, codes.Code(e.GetCode()))
			}
		}
		return len(req.GetItems()), failed, nil
	case *pb.IdentifyRequest:
		resp, err := api.Identify(ctx, req)
		if err != nil {
			return 0, nil, err
		}
		if len(resp.GetResults()) != len(req.GetItems()) {
			return 0, nil, errShortResponse
		}
		for _, r := range resp.GetResults() {
			if e := r.GetError(); e != nil || len(r.GetPoint()) != 32 {
				failed = append(failed, codes.Code(e.GetCode()))
			}
		}
		return len(req.GetItems()), failed, nil
	}
	panic(fmt.Sprintf("pseudobench: unexpected request %T", req))
}
