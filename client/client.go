package client

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"time"

	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/ehealth-pseudo/pseudonymizer/proto/pseudonymizer/v1"
	"github.com/ehealth-pseudo/pseudonymizer/pseudonym"
)

// Client calls the pseudonymization service over gRPC: it blinds, calls,
// and unblinds, for single values and batches. It is safe for concurrent
// use.
type Client struct {
	rpc      pb.PseudonymizerClient
	maxBatch int
	cache    *transitCache

	retry  RetryPolicy
	budget *retryBudget // nil: no budget
	jitter func(n int64) int64
	now    func() time.Time
	sleep  func(context.Context, time.Duration) error
}

// Option configures a Client.
type Option func(*Client)

// WithMaxBatch sets the largest batch sent in one call (default 1000, the
// service's default limit); larger batches are split.
func WithMaxBatch(n int) Option {
	return func(c *Client) {
		if n > 0 {
			c.maxBatch = n
		}
	}
}

// WithCache sets how long before exp a cached transit pseudonym stops
// being served (default 30 s); zero or negative disables the cache.
// Pseudonymize caches its results per (domain, identifier), keyed by an
// HMAC under a per-Client random key so that no identifier is kept in
// memory as a map key, and merges concurrent calls for the same value.
func WithCache(margin time.Duration) Option {
	return func(c *Client) {
		if margin <= 0 {
			c.cache = nil
			return
		}
		c.cache = newTransitCache(margin)
	}
}

// New returns a Client over cc, a connection the caller dials with the
// options it needs (mTLS credentials, per-RPC tokens, load balancing).
func New(cc grpc.ClientConnInterface, opts ...Option) *Client {
	c := &Client{
		rpc:      pb.NewPseudonymizerClient(cc),
		maxBatch: 1000,
		cache:    newTransitCache(30 * time.Second),
		retry:    DefaultRetryPolicy(),
		jitter:   defaultJitter,
		now:      time.Now,
		sleep:    sleepCtx,
	}
	for _, o := range opts {
		o(c)
	}
	c.budget = newRetryBudget(c.retry)
	return c
}

// Pseudonymize returns a pseudonym in transit of the identifier id (1 to
// 29 bytes, normalized with package identifier) in domain, to forward to
// the domain's owner.
//
// With the cache on (the default), a value pseudonymized recently is served
// from memory, and concurrent calls for the same value share one service
// call.
func (c *Client) Pseudonymize(ctx context.Context, domain string, id []byte) (*pseudonym.Transit, error) {
	one := func() (*pseudonym.Transit, error) {
		out, errs, err := c.PseudonymizeBatch(ctx, domain, [][]byte{id})
		if err != nil {
			return nil, err
		}
		return out[0], errs[0]
	}
	if c.cache == nil {
		return one()
	}
	if t := c.cache.get(domain, id, time.Now()); t != nil {
		return t, nil
	}
	f, leader := c.cache.join(domain, id, time.Now())
	if leader {
		f.t, f.err = one()
		c.cache.leave(domain, id, f)
		return f.t, f.err
	}
	select {
	case <-f.done:
		if f.err != nil && ctx.Err() == nil && (errors.Is(f.err, context.Canceled) || errors.Is(f.err, context.DeadlineExceeded) ||
			status.Code(f.err) == codes.Canceled || status.Code(f.err) == codes.DeadlineExceeded) {
			return one() // the leader gave up, not the service
		}
		return f.t, f.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// PseudonymizeBatch pseudonymizes many identifiers. The call error is for
// the call as a whole (permission, quota, network); errs[i] is item i's own
// error. Batches over the maximum size are split into several calls.
func (c *Client) PseudonymizeBatch(ctx context.Context, domain string, ids [][]byte) ([]*pseudonym.Transit, []error, error) {
	out := make([]*pseudonym.Transit, len(ids))
	errs := make([]error, len(ids))
	todo := make([]int, 0, len(ids)) // the items the cache does not answer
	now := time.Now()
	for i, id := range ids {
		if c.cache != nil {
			if t := c.cache.get(domain, id, now); t != nil {
				out[i] = t
				continue
			}
		}
		todo = append(todo, i)
	}
	sub := make([][]byte, len(todo))
	for j, i := range todo {
		sub[j] = ids[i]
	}
	res := make([]*pseudonym.Transit, len(todo))
	rerrs := make([]error, len(todo))
	err := batch(ctx, c, c.pseudonymizeOp(domain), sub, res, rerrs)
	for j, i := range todo { // also after a call error: the calls before it were answered
		out[i], errs[i] = res[j], rerrs[j]
		if res[j] != nil && rerrs[j] == nil && c.cache != nil {
			c.cache.put(domain, ids[i], res[j])
		}
	}
	if err != nil {
		return nil, nil, err
	}
	return out, errs, nil
}

// Identify returns the identifier behind a pseudonym in transit that an
// owner sent. It fails if the pseudonym expired or is bound to another
// caller, or if the policy does not let this caller identify.
func (c *Client) Identify(ctx context.Context, domain string, t *pseudonym.Transit) ([]byte, error) {
	out, errs, err := c.IdentifyBatch(ctx, domain, []*pseudonym.Transit{t})
	if err != nil {
		return nil, err
	}
	return out[0], errs[0]
}

// IdentifyBatch identifies many transit pseudonyms of one domain. The call
// error and errs are as for PseudonymizeBatch.
func (c *Client) IdentifyBatch(ctx context.Context, domain string, ts []*pseudonym.Transit) ([][]byte, []error, error) {
	out := make([][]byte, len(ts))
	errs := make([]error, len(ts))
	if err := batch(ctx, c, c.identifyOp(domain), ts, out, errs); err != nil {
		return nil, nil, err
	}
	return out, errs, nil
}

// Convert turns a pseudonym in transit of domain from into one of domain
// to, for an owner of from that talks to an owner of to (the caller must
// be allowed to convert from → to).
func (c *Client) Convert(ctx context.Context, from, to string, t *pseudonym.Transit) (*pseudonym.Transit, error) {
	out, errs, err := c.ConvertBatch(ctx, from, to, []*pseudonym.Transit{t})
	if err != nil {
		return nil, err
	}
	return out[0], errs[0]
}

// ConvertBatch converts many transit pseudonyms from one domain to another.
// The call error and errs are as for PseudonymizeBatch.
func (c *Client) ConvertBatch(ctx context.Context, from, to string, ts []*pseudonym.Transit) ([]*pseudonym.Transit, []error, error) {
	out := make([]*pseudonym.Transit, len(ts))
	errs := make([]error, len(ts))
	if err := batch(ctx, c, c.convertOp(from, to), ts, out, errs); err != nil {
		return nil, nil, err
	}
	return out, errs, nil
}

// Operation is an operation a domain's policy may allow a caller.
type Operation string

// The operations of the service.
const (
	// OpPseudonymize: Pseudonymize and PseudonymizeBatch into the domain.
	OpPseudonymize Operation = "pseudonymize"
	// OpIdentify: Identify and IdentifyBatch on the domain.
	OpIdentify Operation = "identify"
	// OpConvert: Convert and ConvertBatch from the domain into one of
	// DomainInfo.ConvertTargets.
	OpConvert Operation = "convert"
)

// operationOf names an operation of the API: "pseudonymize" for
// OPERATION_PSEUDONYMIZE, and so on for those a newer service may add.
func operationOf(op pb.Operation) Operation {
	return Operation(strings.ToLower(strings.TrimPrefix(op.String(), "OPERATION_")))
}

// DomainInfo is the public description of a domain, and what the caller
// may do with it.
type DomainInfo struct {
	// Name is the domain's name, e.g. "prescriptions_v1".
	Name string
	// Audience is the aud of the domain's transitInfo values.
	Audience string
	// TTL is the lifetime of the transit pseudonyms the service makes.
	TTL time.Duration
	// ActiveKid is the transit key new transitInfo values are sealed
	// under.
	ActiveKid string
	// AcceptedKids are the transit keys the domain accepts.
	AcceptedKids []string
	// Operations are what this caller may do with the domain.
	Operations []Operation
	// ConvertTargets are the domains this caller may convert into.
	ConvertTargets []string
}

// Domain returns the public description of a domain and what the caller
// may do with it.
func (c *Client) Domain(ctx context.Context, name string) (*DomainInfo, error) {
	var resp *pb.GetDomainResponse
	err := c.call(ctx, func(ctx context.Context) (err error) {
		resp, err = c.rpc.GetDomain(ctx, &pb.GetDomainRequest{Name: name})
		return err
	})
	if err != nil {
		return nil, err
	}
	ops := make([]Operation, len(resp.GetAllowedOperations()))
	for i, op := range resp.GetAllowedOperations() {
		ops[i] = operationOf(op)
	}
	return &DomainInfo{
		Name: resp.GetName(), Audience: resp.GetAudience(), TTL: resp.GetTtl().AsDuration(),
		ActiveKid: resp.GetActiveKid(), AcceptedKids: resp.GetAcceptedKids(),
		Operations: ops, ConvertTargets: resp.GetConvertTargets(),
	}, nil
}

// The batch path: the three operations differ only in what they blind,
// which RPC they call and how they unblind; batch does the rest for all.

// item is one blinded item of a call.
type item struct {
	id      string // its index in the call
	blinded []byte
	info    string // the transitInfo sent along (identify, convert)
}

// answer is the service's answer to one item: a refusal, or a point (and a
// transitInfo for pseudonymize and convert).
type answer struct {
	id    string
	err   *spb.Status
	point []byte
	info  string
}

// batchOp is one of the service's batch operations, from inputs In to
// results Out.
type batchOp[In, Out any] struct {
	// blind blinds one call's inputs.
	blind func(in []In) (blinded [][]byte, bu *BatchUnblinder, errs []error)
	// info is the transitInfo sent along with an input ("" for none).
	info func(in In) string
	// request builds the request of one call and returns what sends it,
	// once per attempt, and reads the answers.
	request func(items []item) func(ctx context.Context) ([]answer, error)
	// unblind turns one call's answers (points and transitInfos, by item)
	// into results.
	unblind func(bu *BatchUnblinder, points [][]byte, infos []string) ([]Out, []error)
}

// batch runs op over in, splitting it into calls of at most maxBatch items,
// and writes item i's result or error into out[i] or errs[i]. A call error
// stops it: the items of the calls before keep their answers, and it
// returns the error.
func batch[In, Out any](ctx context.Context, c *Client, op batchOp[In, Out], in []In, out []Out, errs []error) error {
	for lo := 0; lo < len(in); lo += c.maxBatch {
		hi := min(lo+c.maxBatch, len(in))
		sub := in[lo:hi]
		blinded, bu, berrs := op.blind(sub)
		var items []item
		for i, b := range blinded {
			if berrs[i] == nil {
				items = append(items, item{id: strconv.Itoa(i), blinded: b, info: op.info(sub[i])})
			}
		}
		var answers []answer
		if len(items) > 0 {
			var err error
			if answers, err = c.send(ctx, op.request, items); err != nil {
				return err
			}
		}
		readAnswers(answers, bu, berrs, op.unblind, out[lo:hi], errs[lo:hi])
	}
	return nil
}

// send makes one call of items and returns the service's answers. The call
// is retried as a whole when it fails (c.call); then the items the service
// refused with UNAVAILABLE (its key store, or the key-share plugin of a
// split domain, out of reach for a moment) are sent again, alone, in
// rounds under the same RetryPolicy: its backoff, at most MaxRetries
// rounds, a budget token each (a round's call is retried as a whole as
// any call). When the rounds end (or one fails as a whole, or ctx ends),
// an item still refused keeps its last UNAVAILABLE refusal, and every
// other item keeps its answer. The same blinded points are sent again:
// the service learns nothing from a retry that it did not from the first
// call.
func (c *Client) send(ctx context.Context, request func([]item) func(context.Context) ([]answer, error), items []item) ([]answer, error) {
	var final []answer
	var refused map[string]answer // of the items sent again, by id
	for attempt := 0; ; attempt++ {
		send := request(items)
		var got []answer
		try := c.call
		if attempt > 0 {
			try = c.attempts // a round is no call of its own for the budget
		}
		err := try(ctx, func(ctx context.Context) (err error) {
			got, err = send(ctx)
			return err
		})
		if err != nil {
			if attempt == 0 {
				return nil, err
			}
			for _, a := range refused {
				final = append(final, a)
			}
			return final, nil
		}
		// Only the first answer for an item sent in this call counts, as in
		// collect; an item sent again that gets none keeps its refusal.
		pending := make(map[string]item, len(items))
		for _, it := range items {
			pending[it.id] = it
		}
		var again []item
		now := make(map[string]answer)
		for _, a := range got {
			it, sent := pending[a.id]
			if !sent {
				continue
			}
			delete(pending, a.id)
			if a.err != nil && codes.Code(a.err.GetCode()) == codes.Unavailable {
				again, now[a.id] = append(again, it), a
				continue
			}
			final = append(final, a)
		}
		for id := range pending {
			if a, ok := refused[id]; ok {
				final = append(final, a)
			}
		}
		refused = now
		if len(again) == 0 {
			return final, nil
		}
		wait, ok := c.retryWait(ctx, status.ErrorProto(now[again[0].id].err), attempt)
		if !ok || c.sleep(ctx, wait) != nil {
			for _, a := range refused {
				final = append(final, a)
			}
			return final, nil
		}
		items = again
	}
}

// readAnswers reads the answers of one call, whose items were blinded into
// bu with the blinding errors berrs (which also gets the service's
// refusals), into out and errs, one per item: an item keeps its blinding
// error or the service's refusal, gets ErrMissingResult when the service
// sent no point for it, and else its unblinded result or error.
func readAnswers[Out any](answers []answer, bu *BatchUnblinder, berrs []error,
	unblind func(*BatchUnblinder, [][]byte, []string) ([]Out, []error), out []Out, errs []error) {
	points := make([][]byte, bu.Len())
	infos := make([]string, bu.Len())
	collect(answers, berrs, func(i int, a answer) { points[i], infos[i] = a.point, a.info })
	res, uerrs := unblind(bu, points, infos)
	var zero Out
	for i := range res {
		switch {
		case berrs[i] != nil:
			out[i], errs[i] = zero, berrs[i]
		case points[i] == nil:
			out[i], errs[i] = zero, ErrMissingResult
		default:
			out[i], errs[i] = res[i], uerrs[i]
		}
	}
}

// collect reads one call's answers: errs[i] gets the refusal of item i, and
// the others go to ok. errs holds the blinding errors on entry, and an item
// that failed to blind was not sent: an answer for it, like one with an
// unknown id, is ignored, and so is any answer after the first for an item
// (the item keeps its own error, or has no answer).
func collect(answers []answer, errs []error, ok func(i int, a answer)) {
	seen := make([]bool, len(errs))
	for _, a := range answers {
		i, known := index(a.id, len(errs))
		if !known || errs[i] != nil || seen[i] {
			continue
		}
		seen[i] = true
		if a.err != nil {
			errs[i] = itemError(a.err)
		} else {
			ok(i, a)
		}
	}
}

func index(id string, n int) (int, bool) {
	i, err := strconv.Atoi(id)
	return i, err == nil && i >= 0 && i < n
}

// evaluatedResult is a result of pseudonymize or convert.
type evaluatedResult interface {
	GetId() string
	GetError() *spb.Status
	GetEvaluated() *pb.Evaluated
}

// evaluatedAnswers reads the results of pseudonymize or convert.
func evaluatedAnswers[R evaluatedResult](results []R) []answer {
	as := make([]answer, len(results))
	for i, r := range results {
		as[i] = answer{id: r.GetId(), err: r.GetError(), point: r.GetEvaluated().GetPoint(), info: r.GetEvaluated().GetTransitInfo()}
	}
	return as
}

// transitInfo is the transitInfo sent with a transit pseudonym, which is
// never nil: BlindTransitBatch refuses nil.
func transitInfo(t *pseudonym.Transit) string { return t.Info }

func identifyBatch(bu *BatchUnblinder, points [][]byte, _ []string) ([][]byte, []error) {
	return bu.IdentifyBatch(points)
}

func (c *Client) pseudonymizeOp(domain string) batchOp[[]byte, *pseudonym.Transit] {
	return batchOp[[]byte, *pseudonym.Transit]{
		blind: func(ids [][]byte) ([][]byte, *BatchUnblinder, []error) { return BlindBatch(ids) },
		info:  func([]byte) string { return "" },
		request: func(items []item) func(context.Context) ([]answer, error) {
			req := &pb.PseudonymizeRequest{Domain: domain, Items: make([]*pb.PseudonymizeItem, len(items))}
			for i, it := range items {
				req.Items[i] = &pb.PseudonymizeItem{Id: it.id, Blinded: it.blinded}
			}
			return func(ctx context.Context) ([]answer, error) {
				resp, err := c.rpc.Pseudonymize(ctx, req)
				return evaluatedAnswers(resp.GetResults()), err
			}
		},
		unblind: (*BatchUnblinder).UnblindBatch,
	}
}

func (c *Client) identifyOp(domain string) batchOp[*pseudonym.Transit, []byte] {
	return batchOp[*pseudonym.Transit, []byte]{
		blind: func(ts []*pseudonym.Transit) ([][]byte, *BatchUnblinder, []error) { return BlindTransitBatch(ts) },
		info:  transitInfo,
		request: func(items []item) func(context.Context) ([]answer, error) {
			req := &pb.IdentifyRequest{Domain: domain, Items: make([]*pb.IdentifyItem, len(items))}
			for i, it := range items {
				req.Items[i] = &pb.IdentifyItem{Id: it.id, Blinded: it.blinded, TransitInfo: it.info}
			}
			return func(ctx context.Context) ([]answer, error) {
				resp, err := c.rpc.Identify(ctx, req)
				as := make([]answer, len(resp.GetResults()))
				for i, r := range resp.GetResults() {
					as[i] = answer{id: r.GetId(), err: r.GetError(), point: r.GetPoint()}
				}
				return as, err
			}
		},
		unblind: identifyBatch,
	}
}

func (c *Client) convertOp(from, to string) batchOp[*pseudonym.Transit, *pseudonym.Transit] {
	return batchOp[*pseudonym.Transit, *pseudonym.Transit]{
		blind: func(ts []*pseudonym.Transit) ([][]byte, *BatchUnblinder, []error) { return BlindTransitBatch(ts) },
		info:  transitInfo,
		request: func(items []item) func(context.Context) ([]answer, error) {
			req := &pb.ConvertToRequest{FromDomain: from, ToDomain: to, Items: make([]*pb.ConvertItem, len(items))}
			for i, it := range items {
				req.Items[i] = &pb.ConvertItem{Id: it.id, Blinded: it.blinded, TransitInfo: it.info}
			}
			return func(ctx context.Context) ([]answer, error) {
				resp, err := c.rpc.ConvertTo(ctx, req)
				return evaluatedAnswers(resp.GetResults()), err
			}
		},
		unblind: (*BatchUnblinder).UnblindBatch,
	}
}
