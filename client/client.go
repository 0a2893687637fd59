package client

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ehealth-pseudo/pseudonymizer/internal/transit"
	pb "github.com/ehealth-pseudo/pseudonymizer/proto/pseudonymizer/v1"
	"github.com/ehealth-pseudo/pseudonymizer/pseudonym"
)

// Errors a Client returns for items the service refused, usable with
// errors.Is. The *ItemError that carries them also gives the gRPC code.
var (
	ErrMalformedTransitInfo = transit.ErrMalformed
	ErrUnknownKid           = transit.ErrUnknownKid
	ErrBadTag               = transit.ErrBadTag
	ErrWrongAudience        = transit.ErrWrongAudience
	ErrExpired              = transit.ErrExpired
	ErrNotYetValid          = transit.ErrNotYetValid
	ErrSubjectMismatch      = transit.ErrSubjectMismatch
	// ErrLifetimeTooLong: the transitInfo's exp − iat exceeds the domain's
	// maximum lifetime.
	ErrLifetimeTooLong = transit.ErrLifetimeTooLong
	// ErrTransitKeyExhausted: the replica that answered reached the seal
	// limit of the domain's active transit key; an administrator must
	// rotate it.
	ErrTransitKeyExhausted = transit.ErrKeyExhausted
	// ErrMissingResult: the service's answer lacked an item.
	ErrMissingResult = errors.New("client: the service returned no result for an item")
)

var reasons = map[string]error{
	pb.ErrorReason_ERROR_REASON_INVALID_POINT.String():          ErrInvalidPoint,
	pb.ErrorReason_ERROR_REASON_MALFORMED_TRANSIT_INFO.String(): ErrMalformedTransitInfo,
	pb.ErrorReason_ERROR_REASON_UNKNOWN_KID.String():            ErrUnknownKid,
	pb.ErrorReason_ERROR_REASON_BAD_TAG.String():                ErrBadTag,
	pb.ErrorReason_ERROR_REASON_WRONG_AUDIENCE.String():         ErrWrongAudience,
	pb.ErrorReason_ERROR_REASON_NOT_YET_VALID.String():          ErrNotYetValid,
	pb.ErrorReason_ERROR_REASON_EXPIRED.String():                ErrExpired,
	pb.ErrorReason_ERROR_REASON_WRONG_SUBJECT.String():          ErrSubjectMismatch,
	pb.ErrorReason_ERROR_REASON_LIFETIME_TOO_LONG.String():      ErrLifetimeTooLong,
	pb.ErrorReason_ERROR_REASON_TRANSIT_KEY_EXHAUSTED.String():  ErrTransitKeyExhausted,
}

// ItemError is the service's refusal of one item of a batch.
type ItemError struct {
	Code   codes.Code
	Reason string // an ErrorReason name, e.g. "ERROR_REASON_EXPIRED"
	status *status.Status
}

func (e *ItemError) Error() string {
	return fmt.Sprintf("client: item refused: %s (%s)", e.Code, e.Reason)
}

// Is makes errors.Is(err, ErrExpired) and the like work on item errors.
func (e *ItemError) Is(target error) bool { return reasons[e.Reason] == target && target != nil }

// GRPCStatus lets status.Code and status.FromError read the item's status.
func (e *ItemError) GRPCStatus() *status.Status { return e.status }

// itemError is the error of an item the service refused. A refusal whose
// code says OK is not one the service writes; it gets codes.Unknown, so that
// status.Code never reports OK for an error.
func itemError(s *spb.Status) error {
	st := status.FromProto(s)
	if st.Code() == codes.OK {
		st = status.FromProto(&spb.Status{Code: int32(codes.Unknown), Message: s.GetMessage(), Details: s.GetDetails()})
	}
	e := &ItemError{Code: st.Code(), status: st}
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			e.Reason = info.GetReason()
		}
	}
	return e
}

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

// NewClient returns a Client over cc, a connection the caller dials with
// the options it needs (mTLS credentials, per-RPC tokens, load balancing).
func NewClient(cc grpc.ClientConnInterface, opts ...Option) *Client {
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

func chunks(n, size int) [][2]int {
	var out [][2]int
	for lo := 0; lo < n; lo += size {
		out = append(out, [2]int{lo, min(lo+size, n)})
	}
	return out
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
	f, leader := c.cache.join(domain, id)
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
	var todo []int
	if c.cache != nil {
		now := time.Now()
		for i, id := range ids {
			if t := c.cache.get(domain, id, now); t != nil {
				out[i] = t
			} else {
				todo = append(todo, i)
			}
		}
	} else {
		for i := range ids {
			todo = append(todo, i)
		}
	}
	for _, ch := range chunks(len(todo), c.maxBatch) {
		idx := todo[ch[0]:ch[1]]
		sub := make([][]byte, len(idx))
		for j, i := range idx {
			sub[j] = ids[i]
		}
		res, rerrs, err := c.pseudonymizeChunk(ctx, domain, sub)
		if err != nil {
			return nil, nil, err
		}
		for j, i := range idx {
			out[i], errs[i] = res[j], rerrs[j]
			if rerrs[j] == nil && c.cache != nil {
				c.cache.put(domain, ids[i], res[j])
			}
		}
	}
	return out, errs, nil
}

func (c *Client) pseudonymizeChunk(ctx context.Context, domain string, ids [][]byte) ([]*pseudonym.Transit, []error, error) {
	blinded, bu, errs := BlindBatch(ids)
	req := &pb.PseudonymizeRequest{Domain: domain}
	for i, b := range blinded {
		if errs[i] == nil {
			req.Items = append(req.Items, &pb.PseudonymizeItem{Id: strconv.Itoa(i), Blinded: b})
		}
	}
	var resp *pb.PseudonymizeResponse
	if len(req.Items) > 0 {
		err := c.call(ctx, func(ctx context.Context) (err error) {
			resp, err = c.rpc.Pseudonymize(ctx, req)
			return err
		})
		if err != nil {
			return nil, nil, err
		}
	}
	out := make([]*pseudonym.Transit, len(ids))
	unblindResults(resp.GetResults(), bu, errs, out, errs, 0)
	return out, errs, nil
}

type itemResult interface {
	GetId() string
	GetError() *spb.Status
}

type evaluatedResult interface {
	itemResult
	GetEvaluated() *pb.Evaluated
}

// unblindResults reads the service's results for one pseudonymize or
// convert chunk blinded into bu, whose blinding errors are in berrs (which
// also gets the service's item errors), into out and errs from index lo.
func unblindResults[R evaluatedResult](results []R, bu *BatchUnblinder, berrs []error, out []*pseudonym.Transit, errs []error, lo int) {
	points := make([][]byte, bu.Len())
	infos := make([]string, bu.Len())
	collect(results, berrs, func(i int, r R) {
		points[i], infos[i] = r.GetEvaluated().GetPoint(), r.GetEvaluated().GetTransitInfo()
	})
	res, uerrs := bu.UnblindBatch(points, infos)
	merge(out, errs, lo, res, uerrs, berrs, points)
}

// identifyResults is unblindResults for identify.
func identifyResults(results []*pb.IdentifyResult, bu *BatchUnblinder, berrs []error, out [][]byte, errs []error, lo int) {
	points := make([][]byte, bu.Len())
	collect(results, berrs, func(i int, r *pb.IdentifyResult) { points[i] = r.GetPoint() })
	ids, ierrs := bu.IdentifyBatch(points)
	merge(out, errs, lo, ids, ierrs, berrs, points)
}

// collect reads one chunk's results: errs[i] gets the error of item i, and
// the others go to ok. errs holds the blinding errors on entry, and an item
// that failed to blind was not sent: a result for it, like one with an
// unknown id, is ignored, and so is any result after the first for an item
// (the item keeps its own error, or has no answer).
func collect[R itemResult](results []R, errs []error, ok func(i int, r R)) {
	seen := make([]bool, len(errs))
	for _, r := range results {
		i, known := index(r.GetId(), len(errs))
		if !known || errs[i] != nil || seen[i] {
			continue
		}
		seen[i] = true
		if e := r.GetError(); e != nil {
			errs[i] = itemError(e)
		} else {
			ok(i, r)
		}
	}
}

// merge writes one chunk's outcome into the batch's, from index lo: item i
// keeps its blinding or service error (cerrs), gets ErrMissingResult when
// the service sent no point for it, and else its unblinded result.
func merge[T any](out []T, errs []error, lo int, res []T, uerrs, cerrs []error, points [][]byte) {
	var zero T
	for i := range res {
		j := lo + i
		switch {
		case cerrs[i] != nil:
			out[j], errs[j] = zero, cerrs[i]
		case points[i] == nil:
			out[j], errs[j] = zero, ErrMissingResult
		default:
			out[j], errs[j] = res[i], uerrs[i]
		}
	}
}

func index(id string, n int) (int, bool) {
	i, err := strconv.Atoi(id)
	return i, err == nil && i >= 0 && i < n
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

// IdentifyBatch identifies many transit pseudonyms of one domain.
func (c *Client) IdentifyBatch(ctx context.Context, domain string, ts []*pseudonym.Transit) ([][]byte, []error, error) {
	out := make([][]byte, len(ts))
	errs := make([]error, len(ts))
	for _, ch := range chunks(len(ts), c.maxBatch) {
		sub := ts[ch[0]:ch[1]]
		blinded, bu, berrs := BlindTransitBatch(sub)
		req := &pb.IdentifyRequest{Domain: domain}
		for i, b := range blinded {
			if berrs[i] == nil {
				req.Items = append(req.Items, &pb.IdentifyItem{Id: strconv.Itoa(i), Blinded: b, TransitInfo: sub[i].Info})
			}
		}
		var resp *pb.IdentifyResponse
		if len(req.Items) > 0 {
			err := c.call(ctx, func(ctx context.Context) (err error) {
				resp, err = c.rpc.Identify(ctx, req)
				return err
			})
			if err != nil {
				return nil, nil, err
			}
		}
		identifyResults(resp.GetResults(), bu, berrs, out, errs, ch[0])
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
func (c *Client) ConvertBatch(ctx context.Context, from, to string, ts []*pseudonym.Transit) ([]*pseudonym.Transit, []error, error) {
	out := make([]*pseudonym.Transit, len(ts))
	errs := make([]error, len(ts))
	for _, ch := range chunks(len(ts), c.maxBatch) {
		sub := ts[ch[0]:ch[1]]
		blinded, bu, berrs := BlindTransitBatch(sub)
		req := &pb.ConvertToRequest{FromDomain: from, ToDomain: to}
		for i, b := range blinded {
			if berrs[i] == nil {
				req.Items = append(req.Items, &pb.ConvertItem{Id: strconv.Itoa(i), Blinded: b, TransitInfo: sub[i].Info})
			}
		}
		var resp *pb.ConvertToResponse
		if len(req.Items) > 0 {
			err := c.call(ctx, func(ctx context.Context) (err error) {
				resp, err = c.rpc.ConvertTo(ctx, req)
				return err
			})
			if err != nil {
				return nil, nil, err
			}
		}
		unblindResults(resp.GetResults(), bu, berrs, out, errs, ch[0])
	}
	return out, errs, nil
}

// DomainInfo is the public description of a domain.
type DomainInfo struct {
	Name           string
	Audience       string
	TTL            time.Duration
	ActiveKid      string
	AcceptedKids   []string
	Operations     []pb.Operation // what this caller may do
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
	return &DomainInfo{
		Name: resp.GetName(), Audience: resp.GetAudience(), TTL: resp.GetTtl().AsDuration(),
		ActiveKid: resp.GetActiveKid(), AcceptedKids: resp.GetAcceptedKids(),
		Operations: resp.GetAllowedOperations(), ConvertTargets: resp.GetConvertTargets(),
	}, nil
}

// transitCache keeps transit pseudonyms until margin before their exp.
type transitCache struct {
	margin time.Duration
	key    [32]byte
	mu     sync.Mutex
	m      map[[32]byte]cached
	flying map[[32]byte]*flight
	puts   int
}

// flight is a service call in progress that others wait for.
type flight struct {
	done chan struct{}
	t    *pseudonym.Transit
	err  error
}

type cached struct {
	t   *pseudonym.Transit
	use time.Time // serve until
}

func newTransitCache(margin time.Duration) *transitCache {
	c := &transitCache{margin: margin, m: make(map[[32]byte]cached), flying: make(map[[32]byte]*flight)}
	_, _ = rand.Read(c.key[:])
	return c
}

func (c *transitCache) k(domain string, id []byte) [32]byte {
	m := hmac.New(sha256.New, c.key[:])
	m.Write([]byte(domain))
	m.Write([]byte{0})
	m.Write(id)
	var k [32]byte
	m.Sum(k[:0])
	return k
}

func (c *transitCache) get(domain string, id []byte, now time.Time) *pseudonym.Transit {
	k := c.k(domain, id)
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[k]
	if !ok {
		return nil
	}
	if !now.Before(e.use) {
		delete(c.m, k)
		return nil
	}
	return e.t
}

func (c *transitCache) put(domain string, id []byte, t *pseudonym.Transit) {
	exp, err := t.Expiry()
	if err != nil {
		return
	}
	use := exp.Add(-c.margin)
	now := time.Now()
	if !use.After(now) {
		return
	}
	k := c.k(domain, id)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.m[k] = cached{t: t, use: use}
	c.puts++
	if c.puts%1024 == 0 { // sweep expired entries now and then
		for k, e := range c.m {
			if !now.Before(e.use) {
				delete(c.m, k)
			}
		}
	}
}

// join returns the flight for (domain, id) and whether the caller leads it
// (makes the call) or follows (waits for f.done).
func (c *transitCache) join(domain string, id []byte) (f *flight, leader bool) {
	k := c.k(domain, id)
	c.mu.Lock()
	defer c.mu.Unlock()
	if f, ok := c.flying[k]; ok {
		return f, false
	}
	f = &flight{done: make(chan struct{})}
	c.flying[k] = f
	return f, true
}

// leave ends the leader's flight; its result is in f.
func (c *transitCache) leave(domain string, id []byte, f *flight) {
	k := c.k(domain, id)
	c.mu.Lock()
	delete(c.flying, k)
	c.mu.Unlock()
	close(f.done)
}
