package main

import (
	"context"
	"errors"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ehealth-pseudo/pseudonymizer/bench/internal/measure"
	"github.com/ehealth-pseudo/pseudonymizer/client"
	"github.com/ehealth-pseudo/pseudonymizer/identifier"
	pb "github.com/ehealth-pseudo/pseudonymizer/proto/pseudonymizer/v1"
	"github.com/ehealth-pseudo/pseudonymizer/pseudonym"
)

// The client SDK's operations: each call is what prescriber software does
// with client.Client, over the connections pseudobench dialled: make the
// identifier's text, normalize it (package identifier), then Pseudonymize
// (1 item) or PseudonymizeBatch, which blind, call and unblind.
const (
	// opSDK: a new identifier for every item, the client's transit cache
	// off (client.WithCache(0)): every item is blinded, sent and unblinded.
	opSDK = "sdk-pseudonymize"
	// opSDKCached: the client's defaults (transit cache and in-flight
	// merge on), one client.Client shared by all the callers, identifiers
	// drawn with repetition (-sdk-repeat, -sdk-ids).
	opSDKCached = "sdk-cached"
)

// sdkOps are the values of -op that drive the client SDK.
var sdkOps = []string{opSDK, opSDKCached}

func isSDK(op string) bool { return slices.Contains(sdkOps, op) }

// Kinds of identifier of the SDK operations (-sdk-kind).
const (
	kindNISS = string(identifier.KindNISS)
	kindRaw  = string(identifier.KindRaw)
)

// sdkCall is the request of an SDK run: the callers draw the identifiers
// themselves.
type sdkCall struct{ items int }

// nissDates is the number of birth dates appendNISS uses (years 00–99,
// months 1–12, days 1–28), each with the serial numbers 001–999.
const nissDates = 100 * 12 * 28

// appendNISS appends the k-th test identifier as a person would type it: a
// valid NISS "YY.MM.DD-SSS.CC" for kind niss (distinct for the first
// 33 566 400 values of k), "pseudobench-k" for kind raw.
func appendNISS(dst []byte, kind string, k uint64) []byte {
	if kind == kindRaw {
		return strconv.AppendUint(append(dst, "pseudobench-"...), k, 10)
	}
	serial := k%999 + 1
	d := k / 999 % nissDates
	yy, mm, dd := d/(12*28), d/28%12+1, d%28+1
	base := yy*10_000_000 + mm*100_000 + dd*1000 + serial
	check := 97 - base%97 // born before 2000
	two := func(b []byte, v uint64) []byte { return append(b, byte('0'+v/10), byte('0'+v%10)) }
	dst = two(dst, yy)
	dst = two(append(dst, '.'), mm)
	dst = two(append(dst, '.'), dd)
	dst = append(dst, '-', byte('0'+serial/100), byte('0'+serial/10%10), byte('0'+serial%10), '.')
	return two(dst, check)
}

// normalize is what the caller's software does with the text of an
// identifier before it blinds it.
func normalize(kind string, text []byte) ([]byte, error) {
	if kind == kindRaw {
		return identifier.Raw(text)
	}
	return identifier.NISS(string(text))
}

// countingConn is the grpc.ClientConnInterface the SDK's client.Client
// calls through: it spreads the calls over pseudobench's connections and
// counts the Pseudonymize calls and items that reach the server (every
// attempt, retries included).
type countingConn struct {
	conns        []*grpc.ClientConn
	next         atomic.Uint64
	calls, items atomic.Uint64
}

func (c *countingConn) pick() *grpc.ClientConn {
	return c.conns[c.next.Add(1)%uint64(len(c.conns))]
}

func (c *countingConn) Invoke(ctx context.Context, method string, args, reply any, opts ...grpc.CallOption) error {
	if r, ok := args.(*pb.PseudonymizeRequest); ok {
		c.calls.Add(1)
		c.items.Add(uint64(len(r.GetItems())))
	}
	return c.pick().Invoke(ctx, method, args, reply, opts...)
}

func (c *countingConn) NewStream(ctx context.Context, desc *grpc.StreamDesc, method string, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	return c.pick().NewStream(ctx, desc, method, opts...)
}

// sdkRun is the state the callers of one SDK run share: the client, the
// identifiers drawn so far, and the counts of the whole run (warm-up
// included, like the CPU times they are divided into).
type sdkRun struct {
	cl     *client.Client
	conn   *countingConn
	domain string
	kind   string
	cached bool
	repeat float64
	seeds  atomic.Uint64

	// The draw: new identifiers are numbered from 0; with the cache, ring
	// holds the last len(ring) new ones, which repeats draw from.
	mu     sync.Mutex
	fresh  uint64
	ring   []ringSlot
	filled int

	calls, items, hits atomic.Uint64
	// answer is one answer of the run, which sdkCryptoNs unblinds.
	answer atomic.Pointer[pseudonym.Transit]
}

// ringSlot is an identifier of the working set and whether an answer for it
// came back.
type ringSlot struct {
	n        uint64
	answered bool
}

func newSDKRun(conns []*grpc.ClientConn, op, domain, kind string, workingSet int, repeat float64) *sdkRun {
	r := &sdkRun{conn: &countingConn{conns: conns}, domain: domain, kind: kind, cached: op == opSDKCached}
	opts := []client.Option{client.WithCache(0)}
	if r.cached {
		opts = nil // the defaults: cache and in-flight merge on
		r.repeat = repeat
		r.ring = make([]ringSlot, workingSet)
	}
	r.cl = client.New(r.conn, opts...)
	return r
}

// draw picks the number of the next identifier of a caller: with the
// cache, one of the working set with probability repeat (hit says whether
// it was answered before), else a new one.
func (r *sdkRun) draw(rng *rand.Rand) (n uint64, hit bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ring == nil {
		n = r.fresh
		r.fresh++
		return n, false
	}
	if r.filled > 0 && rng.Float64() < r.repeat {
		s := r.ring[rng.IntN(r.filled)]
		return s.n, s.answered
	}
	n = r.fresh
	r.fresh++
	r.ring[n%uint64(len(r.ring))] = ringSlot{n: n}
	r.filled = min(r.filled+1, len(r.ring))
	return n, false
}

// done records that the identifiers nums were answered.
func (r *sdkRun) done(nums []uint64) {
	if r.ring == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, n := range nums {
		if s := &r.ring[n%uint64(len(r.ring))]; s.n == n {
			s.answered = true
		}
	}
}

// distinct is the number of distinct identifiers asked for so far.
func (r *sdkRun) distinct() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.fresh
}

func (r *sdkRun) newSender(ctx context.Context, timeout time.Duration) sender {
	return &sdkSender{r: r, ctx: ctx, timeout: timeout, rng: rand.New(rand.NewPCG(2026, r.seeds.Add(1)))}
}

// sdkSender is one caller of an SDK run.
type sdkSender struct {
	r       *sdkRun
	ctx     context.Context
	timeout time.Duration
	rng     *rand.Rand
	text    []byte
	nums    []uint64
}

func (s *sdkSender) send(req any) (int, []codes.Code, error) {
	r, n := s.r, req.(sdkCall).items
	s.nums = s.nums[:0]
	ids := make([][]byte, n)
	hits := 0
	for i := range ids {
		k, hit := r.draw(s.rng)
		if hit {
			hits++
		}
		s.nums = append(s.nums, k)
		s.text = appendNISS(s.text[:0], r.kind, k)
		id, err := normalize(r.kind, s.text)
		if err != nil {
			panic("pseudobench: invalid test identifier: " + err.Error())
		}
		ids[i] = id
	}
	ctx, cancel := context.WithTimeout(s.ctx, s.timeout)
	defer cancel()
	var (
		out  []*pseudonym.Transit
		errs []error
		err  error
	)
	if n == 1 {
		var t *pseudonym.Transit
		t, err = r.cl.Pseudonymize(ctx, r.domain, ids[0])
		var ie *client.ItemError
		if errors.As(err, &ie) || (err != nil && !isCallError(err)) {
			out, errs, err = []*pseudonym.Transit{nil}, []error{err}, nil
		} else {
			out, errs = []*pseudonym.Transit{t}, []error{nil}
		}
	} else {
		out, errs, err = r.cl.PseudonymizeBatch(ctx, r.domain, ids)
	}
	if err != nil {
		return 0, nil, callError(err)
	}
	var failed []codes.Code
	ok := s.nums[:0]
	for i, t := range out {
		if errs[i] != nil || t == nil {
			failed = append(failed, itemCode(errs[i]))
			continue
		}
		ok = append(ok, s.nums[i])
		if r.answer.Load() == nil {
			r.answer.Store(t)
		}
	}
	r.done(ok)
	r.calls.Add(1)
	r.items.Add(uint64(len(ok)))
	r.hits.Add(uint64(min(hits, len(ok))))
	return n, failed, nil
}

func (*sdkSender) close() {}

// isCallError reports whether an error of client.Pseudonymize is that of
// the call (a gRPC status or the context's), not the item's.
func isCallError(err error) bool {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	_, ok := status.FromError(err)
	return ok
}

// callError gives an error of the client a gRPC code for the errors column.
func callError(err error) error {
	if _, ok := status.FromError(err); ok {
		return err
	}
	if st := status.FromContextError(err); st.Code() != codes.Unknown {
		return st.Err()
	}
	return status.Error(codes.Unknown, err.Error())
}

// itemCode is the code of an item's error: the service's refusal, or
// DataLoss when the client refused the answer.
func itemCode(err error) codes.Code {
	var ie *client.ItemError
	switch {
	case errors.As(err, &ie):
		return ie.Code
	case err == nil:
		return codes.DataLoss // no result and no error
	}
	if st, ok := status.FromError(err); ok && st.Code() != codes.Unknown {
		return st.Code()
	}
	return codes.DataLoss
}

// sdkCryptoNs times, on one goroutine and in process CPU time, the client
// side of one item without the call: the identifier's text normalized,
// client.BlindBatch and BatchUnblinder.UnblindBatch of batch items (what
// Client.PseudonymizeBatch does around its call, even for one item),
// unblinding the answer t. The median of five rounds sharing total, in ns
// per item.
func sdkCryptoNs(total time.Duration, kind string, batch int, t *pseudonym.Transit) float64 {
	const rounds = 5
	per := max(total/rounds, time.Millisecond)
	points := make([][]byte, batch)
	infos := make([]string, batch)
	for i := range points {
		points[i], infos[i] = t.Point[:], t.Info
	}
	var text []byte
	k := uint64(0)
	ns := make([]float64, 0, rounds)
	for range rounds {
		n, start, cpu := 0, time.Now(), measure.ProcessCPU()
		for time.Since(start) < per {
			ids := make([][]byte, batch)
			for i := range ids {
				text = appendNISS(text[:0], kind, k)
				k++
				ids[i], _ = normalize(kind, text)
			}
			_, bu, _ := client.BlindBatch(ids)
			bu.UnblindBatch(points, infos)
			n += batch
		}
		el := time.Since(start)
		if c := measure.ProcessCPU() - cpu; cpu > 0 && c > 0 {
			el = c
		}
		ns = append(ns, float64(el.Nanoseconds())/float64(n))
	}
	slices.Sort(ns)
	return ns[rounds/2]
}
