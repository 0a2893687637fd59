package grpcserver

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"slices"
	"sort"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/ehealth-pseudo/pseudonymizer/internal/audit"
	"github.com/ehealth-pseudo/pseudonymizer/internal/auth"
	"github.com/ehealth-pseudo/pseudonymizer/internal/rpcstatus"
	"github.com/ehealth-pseudo/pseudonymizer/internal/transit"
	"github.com/ehealth-pseudo/pseudonymizer/keys"
	pb "github.com/ehealth-pseudo/pseudonymizer/proto/pseudonymizer/v1"
	"github.com/ehealth-pseudo/pseudonymizer/pseudonymizer"
)

// DefaultMaxBatch is the maximum number of items of one call (or stream
// chunk) when none is configured.
const DefaultMaxBatch = 1000

// KeySource is where the handler reads domains. *keys.Cache implements it.
// Implementations must be safe for concurrent use.
type KeySource interface {
	// Domain returns the current snapshot of a domain, without I/O (it is
	// called on every request). The error wraps keys.ErrUnknownDomain for
	// a domain that does not exist.
	Domain(name string) (*keys.Domain, error)
	// Health is nil while the key store answers; otherwise the error wraps
	// keys.ErrUnavailable, keys.ErrDenied or keys.ErrInvalid. The health
	// service reports it.
	Health() error
	// IsOwner reports whether the principal is an owner (Policy.Owners) of
	// any domain of the current snapshot: owners never identify, in any
	// domain. It does no I/O.
	IsOwner(principal string) bool
}

// Refresher is optionally implemented by a [KeySource] that can re-read a
// domain now. The server uses it when items carry a transit key id it does
// not know (an owner may have seen a rotation before the next poll), then
// evaluates those items again. *keys.Cache implements it, rate-limited.
type Refresher interface {
	Refresh(ctx context.Context, name string) (*keys.Domain, error)
}

var (
	_ KeySource = (*keys.Cache)(nil)
	_ Refresher = (*keys.Cache)(nil)
)

// handler implements pseudonymizerv1.PseudonymizerServer.
//
// Authorization, from each domain's keys.Policy, for the principal that the
// interceptors authenticated (internal/auth); "*" in a list matches every
// authenticated principal:
//
//   - Pseudonymize: the principal is in Policy.Pseudonymize and is an owner
//     of no domain (an owner pseudonymizing identifiers of its choice would
//     build a dictionary of its own pseudonyms).
//   - Identify: the principal is in Policy.Identify and is an owner of no
//     domain at all (KeySource.IsOwner). Being an owner is a property of
//     the principal, not of a domain: an owner may convert its pseudonyms
//     into another domain, but can then not identify them there either.
//     This is the invariant "owners never obtain an identifier"; the
//     policy validation (keys.ValidateSet) refuses policies that list an
//     owner in Identify, and the authorizer refuses whatever they say.
//   - ConvertTo: the principal is in Policy.Convert[to_domain] of the
//     from_domain.
//   - GetDomain: the principal may run at least one of the above.
//
// A transitInfo bound to a subject (sub) is only accepted from that
// principal: other callers get a per-item PERMISSION_DENIED with
// ERROR_REASON_WRONG_SUBJECT.
//
// Unknown domains: a domain that does not exist and a domain on which the
// caller may not run the operation give the same PERMISSION_DENIED (reason
// ERROR_REASON_OPERATION_NOT_ALLOWED, fixed message), so that no caller can
// list the domains by probing names. NOT_FOUND (ERROR_REASON_UNKNOWN_DOMAIN)
// is only returned for a ConvertTo target that the caller's policy names
// but that does not exist (yet): the policy already told the caller its
// name. "*" in Policy.Owners makes every principal an owner, so nobody may
// identify.
//
// A call is checked in this order, the first failure failing the whole call:
// empty domain name (INVALID_ARGUMENT), more items than the maximum batch
// size (INVALID_ARGUMENT, ERROR_REASON_BATCH_TOO_LARGE, whose ErrorInfo
// metadata "max_batch_size" gives the limit), ConvertTo within one domain
// (INVALID_ARGUMENT), authorization (PERMISSION_DENIED). Then every item is
// evaluated, and an item that fails gets its own google.rpc.Status.
type handler struct {
	pb.UnimplementedPseudonymizerServer

	src      KeySource
	maxBatch int
	prepared sync.Map // domain name → *prepared
	seals    *pseudonymizer.SealLimiter
	log      *slog.Logger
}

var _ pb.PseudonymizerServer = (*handler)(nil)

// prepared is a Domain made from one generation of a domain's keys, with
// that generation's policy.
type prepared struct {
	generation uint64
	d          *pseudonymizer.Domain
	policy     keys.Policy
}

// RefreshTimeout bounds how long a call waits for the key store when its
// items name an unknown transit key id: past it, those items fail with
// ERROR_REASON_UNKNOWN_KID and the call is not held up by a slow store.
const RefreshTimeout = 250 * time.Millisecond

// newHandler returns the handler of pseudonymizer.v1 serving the domains of
// src, batches of at most maxBatch items, seals counted by seals.
func newHandler(src KeySource, maxBatch int, seals *pseudonymizer.SealLimiter, log *slog.Logger) *handler {
	return &handler{src: src, maxBatch: maxBatch, seals: seals, log: log}
}

// Items returns the number of items of a pseudonymizer.v1 request or stream
// message, and 0 for any other message. Rate limits count items with it.
func Items(msg any) int {
	switch m := msg.(type) {
	case *pb.PseudonymizeRequest:
		return len(m.GetItems())
	case *pb.IdentifyRequest:
		return len(m.GetItems())
	case *pb.ConvertToRequest:
		return len(m.GetItems())
	case *pb.PseudonymizeStreamRequest:
		return len(m.GetRequest().GetItems())
	case *pb.IdentifyStreamRequest:
		return len(m.GetRequest().GetItems())
	case *pb.ConvertToStreamRequest:
		return len(m.GetRequest().GetItems())
	}
	return 0
}

// domain returns the prepared domain, computing it (and k⁻¹) only when the
// key source has a new generation of it.
func (s *handler) domain(name string) (*prepared, error) {
	kd, err := s.src.Domain(name)
	if err != nil {
		return nil, err
	}
	if kd.Disabled {
		// A disabled domain is served as one that does not exist.
		return nil, keys.ErrUnknownDomain
	}
	if v, ok := s.prepared.Load(name); ok {
		if p := v.(*prepared); p.generation == kd.Generation {
			return p, nil
		}
	}
	d, err := pseudonymizer.NewDomain(kd, pseudonymizer.WithSealLimiter(s.seals))
	if err != nil {
		return nil, err
	}
	p := &prepared{generation: kd.Generation, d: d, policy: kd.Policy}
	s.prepared.Store(name, p)
	return p, nil
}

// retryUnknownKids evaluates again, with freshly read keys, the items whose
// transitInfo named a kid that d does not know. eval evaluates a subset of
// the items (given by index) with a domain and writes their outcome.
func (s *handler) retryUnknownKids(ctx context.Context, d *pseudonymizer.Domain, errs []error, eval func(nd *pseudonymizer.Domain, idx []int)) {
	var idx []int
	for i, err := range errs {
		if errors.Is(err, transit.ErrUnknownKid) {
			idx = append(idx, i)
		}
	}
	r, ok := s.src.(Refresher)
	if len(idx) == 0 || !ok {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, RefreshTimeout)
	defer cancel()
	kd, err := r.Refresh(ctx, d.Name())
	if err != nil || kd.Generation == d.Generation() {
		return
	}
	np, err := s.domain(d.Name())
	if err != nil {
		return
	}
	eval(np.d, idx)
}

// callContext is what every operation needs besides its request.
type callContext struct {
	ctx         context.Context
	caller      string
	rec         *audit.Record
	log         *slog.Logger
	panicLogged bool
}

func (s *handler) begin(ctx context.Context) (*callContext, error) {
	caller, ok := auth.Principal(ctx)
	if !ok {
		return nil, errUnauthenticated
	}
	return &callContext{ctx: ctx, caller: caller, rec: audit.FromContext(ctx), log: s.log}, nil
}

// authorized returns the domain if it exists and allowed says the caller
// may use it; errDenied otherwise, whichever it is. The audit record gets
// the name of an existing domain, allowed or not, and never a name that the
// caller made up.
func (s *handler) authorized(c *callContext, name string, allowed func(*handler, keys.Policy, string) bool) (*prepared, error) {
	if name == "" {
		return nil, errNoDomain
	}
	p, err := s.domain(name)
	switch {
	case errors.Is(err, keys.ErrUnknownDomain):
		return nil, errDenied
	case err != nil:
		return nil, err
	}
	c.rec.AddDomain(p.d.Name())
	if !allowed(s, p.policy, c.caller) {
		return nil, errDenied
	}
	return p, nil
}

func (s *handler) checkBatch(n int) error {
	if n > s.maxBatch {
		return &BatchTooLargeError{Max: s.maxBatch}
	}
	return nil
}

// itemError turns an item's error into its google.rpc.Status and records
// it. The first recovered panic of a call is logged, without its value.
func itemError(c *callContext, err error) *status.Status {
	var pe *pseudonymizer.PanicError
	if !c.panicLogged && errors.As(err, &pe) {
		c.panicLogged = true
		c.log.ErrorContext(c.ctx, "pseudonymizer: panic while evaluating items (recovered; the items got INTERNAL)",
			"panic_type", pe.Panic.Type, "stack", pe.Panic.Frames)
	}
	st := toStatus(err)
	c.rec.AddItemError(rpcstatus.ReasonOf(st))
	return st
}

// start runs the checks every batch call begins with, in order: the
// caller's identity, a domain name, the batch size, the authorization.
func (s *handler) start(ctx context.Context, domain string, n int, allowed func(*handler, keys.Policy, string) bool) (*callContext, *pseudonymizer.Domain, error) {
	c, err := s.begin(ctx)
	if err != nil {
		return nil, nil, err
	}
	if domain == "" {
		return nil, nil, errNoDomain
	}
	if err := s.checkBatch(n); err != nil {
		return nil, nil, err
	}
	p, err := s.authorized(c, domain, allowed)
	if err != nil {
		return nil, nil, err
	}
	return c, p.d, nil
}

// transitItems are the inputs of identify and convert.
func transitItems[T interface {
	GetBlinded() []byte
	GetTransitInfo() string
}](items []T) []pseudonymizer.Item {
	in := make([]pseudonymizer.Item, len(items))
	for i, it := range items {
		in[i] = pseudonymizer.Item{Blinded: it.GetBlinded(), TransitInfo: it.GetTransitInfo()}
	}
	return in
}

func pick[T any](s []T, idx []int) []T {
	out := make([]T, len(idx))
	for j, i := range idx {
		out[j] = s[i]
	}
	return out
}

func evaluatedPB(e *pseudonymizer.Evaluated) *pb.Evaluated {
	return &pb.Evaluated{Point: e.Point[:], TransitInfo: e.TransitInfo}
}

func (s *handler) pseudonymize(ctx context.Context, req *pb.PseudonymizeRequest) (*pb.PseudonymizeResponse, error) {
	items := req.GetItems()
	c, d, err := s.start(ctx, req.GetDomain(), len(items), canPseudonymize)
	if err != nil {
		return nil, err
	}
	c.rec.AddItems(len(items))

	blinded := make([][]byte, len(items))
	for i, it := range items {
		blinded[i] = it.GetBlinded()
	}
	out, errs := d.PseudonymizeBatch(blinded, &pseudonymizer.Params{Now: time.Now(), Caller: c.caller, Context: ctx})
	res := make([]*pb.PseudonymizeResult, len(items))
	for i, it := range items {
		r := &pb.PseudonymizeResult{Id: it.GetId()}
		if errs[i] != nil {
			r.Outcome = &pb.PseudonymizeResult_Error{Error: itemError(c, errs[i]).Proto()}
		} else {
			r.Outcome = &pb.PseudonymizeResult_Evaluated{Evaluated: evaluatedPB(&out[i])}
		}
		res[i] = r
	}
	return &pb.PseudonymizeResponse{Results: res}, nil
}

func (s *handler) identify(ctx context.Context, req *pb.IdentifyRequest) (*pb.IdentifyResponse, error) {
	items := req.GetItems()
	c, d, err := s.start(ctx, req.GetDomain(), len(items), canIdentify)
	if err != nil {
		return nil, err
	}
	c.rec.AddItems(len(items))

	in := transitItems(items)
	p := &pseudonymizer.Params{Now: time.Now(), Caller: c.caller, Context: ctx}
	out, errs := d.IdentifyBatch(in, p)
	s.retryUnknownKids(ctx, d, errs, func(nd *pseudonymizer.Domain, idx []int) {
		o, e := nd.IdentifyBatch(pick(in, idx), p)
		for j, i := range idx {
			out[i], errs[i] = o[j], e[j]
		}
	})
	res := make([]*pb.IdentifyResult, len(items))
	for i, it := range items {
		r := &pb.IdentifyResult{Id: it.GetId()}
		if errs[i] != nil {
			r.Outcome = &pb.IdentifyResult_Error{Error: itemError(c, errs[i]).Proto()}
		} else {
			r.Outcome = &pb.IdentifyResult_Point{Point: out[i][:]}
		}
		res[i] = r
	}
	return &pb.IdentifyResponse{Results: res}, nil
}

func (s *handler) convert(ctx context.Context, req *pb.ConvertToRequest) (*pb.ConvertToResponse, error) {
	c, err := s.begin(ctx)
	if err != nil {
		return nil, err
	}
	from, to := req.GetFromDomain(), req.GetToDomain()
	if from == "" || to == "" {
		return nil, errNoDomain
	}
	items := req.GetItems()
	if err := s.checkBatch(len(items)); err != nil {
		return nil, err
	}
	if from == to {
		return nil, pseudonymizer.ErrSameDomain
	}
	fp, err := s.authorized(c, from, func(_ *handler, p keys.Policy, caller string) bool {
		return canConvert(p, to, caller)
	})
	if err != nil {
		return nil, err
	}
	fd := fp.d
	// The policy of from_domain names to_domain: its existence is no
	// secret to this caller.
	tp, err := s.domain(to)
	if err != nil {
		return nil, err
	}
	td := tp.d
	c.rec.AddDomain(td.Name())
	c.rec.AddItems(len(items))

	in := transitItems(items)
	p := &pseudonymizer.Params{Now: time.Now(), Caller: c.caller, Context: ctx}
	out, errs := pseudonymizer.ConvertBatch(fd, td, in, p)
	s.retryUnknownKids(ctx, fd, errs, func(nd *pseudonymizer.Domain, idx []int) {
		o, e := pseudonymizer.ConvertBatch(nd, td, pick(in, idx), p)
		for j, i := range idx {
			out[i], errs[i] = o[j], e[j]
		}
	})
	res := make([]*pb.ConvertResult, len(items))
	for i, it := range items {
		r := &pb.ConvertResult{Id: it.GetId()}
		if errs[i] != nil {
			r.Outcome = &pb.ConvertResult_Error{Error: itemError(c, errs[i]).Proto()}
		} else {
			r.Outcome = &pb.ConvertResult_Evaluated{Evaluated: evaluatedPB(&out[i])}
		}
		res[i] = r
	}
	return &pb.ConvertToResponse{Results: res}, nil
}

func (s *handler) Pseudonymize(ctx context.Context, req *pb.PseudonymizeRequest) (*pb.PseudonymizeResponse, error) {
	resp, err := s.pseudonymize(ctx, req)
	if err != nil {
		return nil, toStatus(err).Err()
	}
	return resp, nil
}

// Identify implements pseudonymizerv1.PseudonymizerServer.
func (s *handler) Identify(ctx context.Context, req *pb.IdentifyRequest) (*pb.IdentifyResponse, error) {
	resp, err := s.identify(ctx, req)
	if err != nil {
		return nil, toStatus(err).Err()
	}
	return resp, nil
}

// ConvertTo implements pseudonymizerv1.PseudonymizerServer.
func (s *handler) ConvertTo(ctx context.Context, req *pb.ConvertToRequest) (*pb.ConvertToResponse, error) {
	resp, err := s.convert(ctx, req)
	if err != nil {
		return nil, toStatus(err).Err()
	}
	return resp, nil
}

// serveStream answers each chunk of a stream like the unary call, in order.
func serveStream[Req, Resp, In, Out any](
	stream grpc.BidiStreamingServer[Req, Resp],
	chunk func(*Req) *In,
	call func(context.Context, *In) (*Out, error),
	wrap func(*Out) *Resp,
) error {
	ctx := stream.Context()
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			// A gRPC status (cancellation, message too large, rate limit)
			// goes back as it is; anything else is internal.
			if _, ok := status.FromError(err); ok {
				return err
			}
			return rpcstatus.Internal().Err()
		}
		out, err := call(ctx, chunk(req))
		if err != nil {
			return toStatus(err).Err()
		}
		if err := stream.Send(wrap(out)); err != nil {
			return err
		}
	}
}

// PseudonymizeStream implements pseudonymizerv1.PseudonymizerServer: each
// chunk is handled as one Pseudonymize call.
func (s *handler) PseudonymizeStream(stream grpc.BidiStreamingServer[pb.PseudonymizeStreamRequest, pb.PseudonymizeStreamResponse]) error {
	return serveStream(stream, (*pb.PseudonymizeStreamRequest).GetRequest, s.pseudonymize,
		func(r *pb.PseudonymizeResponse) *pb.PseudonymizeStreamResponse {
			return &pb.PseudonymizeStreamResponse{Response: r}
		})
}

// IdentifyStream implements pseudonymizerv1.PseudonymizerServer: each chunk
// is handled as one Identify call.
func (s *handler) IdentifyStream(stream grpc.BidiStreamingServer[pb.IdentifyStreamRequest, pb.IdentifyStreamResponse]) error {
	return serveStream(stream, (*pb.IdentifyStreamRequest).GetRequest, s.identify,
		func(r *pb.IdentifyResponse) *pb.IdentifyStreamResponse {
			return &pb.IdentifyStreamResponse{Response: r}
		})
}

// ConvertToStream implements pseudonymizerv1.PseudonymizerServer: each
// chunk is handled as one ConvertTo call.
func (s *handler) ConvertToStream(stream grpc.BidiStreamingServer[pb.ConvertToStreamRequest, pb.ConvertToStreamResponse]) error {
	return serveStream(stream, (*pb.ConvertToStreamRequest).GetRequest, s.convert,
		func(r *pb.ConvertToResponse) *pb.ConvertToStreamResponse {
			return &pb.ConvertToStreamResponse{Response: r}
		})
}

// GetDomain implements pseudonymizerv1.PseudonymizerServer.
func (s *handler) GetDomain(ctx context.Context, req *pb.GetDomainRequest) (*pb.GetDomainResponse, error) {
	c, err := s.begin(ctx)
	if err != nil {
		return nil, toStatus(err).Err()
	}
	dp, err := s.authorized(c, req.GetName(), func(s *handler, p keys.Policy, caller string) bool {
		return len(s.allowedOperations(p, caller)) > 0
	})
	if err != nil {
		return nil, toStatus(err).Err()
	}
	d, p := dp.d, dp.policy
	return &pb.GetDomainResponse{
		Name:              d.Name(),
		Audience:          d.Audience(),
		Ttl:               durationpb.New(d.TTL()),
		ActiveKid:         d.ActiveKid(),
		AcceptedKids:      d.Kids(),
		AllowedOperations: s.allowedOperations(p, c.caller),
		ConvertTargets:    convertTargets(p, c.caller),
	}, nil
}

// matches reports whether a policy list admits the caller.
func matches(list []string, caller string) bool {
	return slices.Contains(list, "*") || slices.Contains(list, caller)
}

// canPseudonymize refuses owners, of this domain or of any other: an owner
// that pseudonymizes identifiers of its choice and opens the results (or
// converts them into its domain) builds a dictionary of its pseudonyms.
func canPseudonymize(s *handler, p keys.Policy, caller string) bool {
	return matches(p.Pseudonymize, caller) && !matches(p.Owners, caller) && !s.src.IsOwner(caller)
}

// canIdentify refuses owners, of this domain or of any other, whatever the
// Identify list says.
func canIdentify(s *handler, p keys.Policy, caller string) bool {
	return matches(p.Identify, caller) && !matches(p.Owners, caller) && !s.src.IsOwner(caller)
}

func canConvert(p keys.Policy, to, caller string) bool { return matches(p.Convert[to], caller) }

// convertTargets returns, sorted, the domains the caller may convert into.
func convertTargets(p keys.Policy, caller string) []string {
	var out []string
	for to := range p.Convert {
		if canConvert(p, to, caller) {
			out = append(out, to)
		}
	}
	sort.Strings(out)
	return out
}

func (s *handler) allowedOperations(p keys.Policy, caller string) []pb.Operation {
	var ops []pb.Operation
	if canPseudonymize(s, p, caller) {
		ops = append(ops, pb.Operation_OPERATION_PSEUDONYMIZE)
	}
	if canIdentify(s, p, caller) {
		ops = append(ops, pb.Operation_OPERATION_IDENTIFY)
	}
	if len(convertTargets(p, caller)) > 0 {
		ops = append(ops, pb.Operation_OPERATION_CONVERT)
	}
	return ops
}
