package pseudonymizer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"slices"
	"sync"
	"time"

	"filippo.io/edwards25519"
	"github.com/gtank/ristretto255"

	"github.com/ehealth-pseudo/pseudonymizer/internal/point"
	"github.com/ehealth-pseudo/pseudonymizer/internal/recovered"
	"github.com/ehealth-pseudo/pseudonymizer/internal/transit"
	"github.com/ehealth-pseudo/pseudonymizer/keys"
	"github.com/ehealth-pseudo/pseudonymizer/protoerr"
)

// ErrSameDomain is returned by Convert when both domains are the same.
var ErrSameDomain = protoerr.ErrSameDomain

// ErrInternal is the error of the items of a batch whose evaluation
// panicked: the panic is recovered, the other items are unaffected. The
// error is a *PanicError.
var ErrInternal = protoerr.ErrInternal

// LifetimeError is the error of an item whose transitInfo lifetime (exp −
// iat) exceeds the domain's maximum; it matches transit.ErrLifetimeTooLong
// with errors.Is and carries the limit.
type LifetimeError = protoerr.LifetimeTooLongError

// PanicError is the error of items whose evaluation panicked. It describes
// the panic without its value, which could hold request data.
type PanicError struct{ Panic *recovered.Panic }

// Error implements error.
func (e *PanicError) Error() string { return ErrInternal.Error() }

// Unwrap makes errors.Is(err, ErrInternal) true.
func (e *PanicError) Unwrap() error { return ErrInternal }

// Domain is one domain's keys, prepared for evaluation: k and k⁻¹ as
// scalars and the transit keys ready to seal and open. It is immutable and
// safe for concurrent use. It never prints its keys.
type Domain struct {
	name        string
	audience    string
	ttl         time.Duration
	maxLifetime time.Duration
	generation  uint64
	// seals counts the transitInfo values sealed under the active transit
	// key; nil means no limit (see [SealLimiter]).
	seals *sealCount
	// k is the domain's scalar, or in split mode the service's share k₁,
	// whose product with the other share (held by share, generation
	// shareGen) is the domain's scalar.
	k, kInv  *ristretto255.Scalar
	share    keys.Multiplier
	shareGen uint64
	transit  *transit.KeySet
	kids     []string
}

// DomainOption configures a [Domain] made by [NewDomain].
type DomainOption func(*Domain)

// WithSealLimiter counts the domain's seals under its active transit key
// with l, which refuses those past its limit (per item,
// ErrTransitKeyExhausted). Without it, seals are not limited. The counts
// live in l, so that they survive new generations of the domain's keys.
func WithSealLimiter(l *SealLimiter) DomainOption {
	return func(d *Domain) { d.seals = l.counter(d.name, d.ActiveKid()) }
}

// NewDomain prepares a domain's keys for evaluation.
func NewDomain(d *keys.Domain, opts ...DomainOption) (*Domain, error) {
	if d == nil || d.Name == "" || d.Audience == "" {
		return nil, fmt.Errorf("%w: domain without name or audience", keys.ErrInvalid)
	}
	k, err := point.DecodeScalar(d.Scalar)
	if err != nil {
		return nil, fmt.Errorf("%w: domain %q: bad scalar", keys.ErrInvalid, d.Name)
	}
	raw := make(map[string][]byte, len(d.Transit.Keys))
	kids := make([]string, 0, len(d.Transit.Keys))
	for kid, key := range d.Transit.Keys {
		raw[kid] = key
		kids = append(kids, kid)
	}
	ks, err := transit.NewKeySet(d.Transit.Active, raw)
	if err != nil || d.Transit.Active == "" {
		return nil, fmt.Errorf("%w: domain %q: bad transit keys", keys.ErrInvalid, d.Name)
	}
	ttl := d.TTL
	if ttl <= 0 {
		ttl = keys.DefaultTTL
	}
	maxLifetime := d.MaxLifetime
	if maxLifetime <= 0 {
		maxLifetime = max(keys.DefaultMaxLifetime, ttl)
	}
	slices.Sort(kids)
	if d.Mode == keys.ModeSplit && (d.Share == nil || d.ShareGeneration == 0) {
		return nil, fmt.Errorf("%w: domain %q: split mode without the other share", keys.ErrInvalid, d.Name)
	}
	dom := &Domain{
		name:        d.Name,
		audience:    d.Audience,
		ttl:         ttl,
		maxLifetime: maxLifetime,
		generation:  d.Generation,
		k:           k,
		kInv:        ristretto255.NewScalar().Invert(k),
		transit:     ks,
		kids:        kids,
	}
	if d.Mode == keys.ModeSplit {
		dom.share, dom.shareGen = d.Share, d.ShareGeneration
	}
	for _, o := range opts {
		o(dom)
	}
	return dom, nil
}

// Name returns the domain's name.
func (d *Domain) Name() string { return d.name }

// Audience returns the URI that names the domain in transitInfo.
func (d *Domain) Audience() string { return d.audience }

// TTL returns the lifetime of the domain's pseudonyms in transit.
func (d *Domain) TTL() time.Duration { return d.ttl }

// MaxLifetime returns the longest lifetime (exp − iat) of a transitInfo
// that identify and convert accept.
func (d *Domain) MaxLifetime() time.Duration { return d.maxLifetime }

// ActiveKid returns the transit key id new transitInfo values use.
func (d *Domain) ActiveKid() string { return d.transit.Active() }

// Kids returns the accepted transit key ids, sorted.
func (d *Domain) Kids() []string { return append([]string(nil), d.kids...) }

// Mode returns keys.ModeSplit when the domain's scalar is split between
// the service and the holder of the other share, keys.ModeSingle otherwise.
func (d *Domain) Mode() keys.Mode {
	if d.share != nil {
		return keys.ModeSplit
	}
	return keys.ModeSingle
}

// Generation returns the generation of the key material it was made from.
func (d *Domain) Generation() uint64 { return d.generation }

// String describes the domain without its keys.
func (d *Domain) String() string { return fmt.Sprintf("domain(%s)", d.name) }

// LogValue implements slog.LogValuer without the keys.
func (d *Domain) LogValue() slog.Value { return slog.StringValue(d.String()) }

// Params are the per-call inputs of an evaluation besides the points.
type Params struct {
	// Now is the time transitInfo values are issued and checked at.
	Now time.Time
	// Caller is the authenticated principal. A transitInfo bound to a
	// subject (sub) is only accepted from that caller.
	Caller string
	// Sub, when set, binds the transitInfo values produced to that subject.
	Sub string
	// Rand supplies the transit scalars and nonces; crypto/rand when nil.
	// Test vectors pass a deterministic stream.
	Rand io.Reader
	// Context bounds the round trip to the holder of the other share of a
	// split domain (its items fail with an error wrapping
	// keys.ErrUnavailable when it ends); context.Background() when nil.
	Context context.Context
}

// Evaluated is the service's answer to pseudonymize and convert: a point Y
// and the transitInfo that carries s for the owner.
type Evaluated struct {
	Point       [point.Size]byte
	TransitInfo string
}

// Item is one identify or convert input: a blinded transit pseudonym.
type Item struct {
	Blinded     []byte
	TransitInfo string
}

func (d *Domain) claims(p *Params) *transit.Claims {
	return &transit.Claims{Aud: d.audience, Iat: p.Now, TTL: d.ttl, Sub: p.Sub}
}

func (d *Domain) check(p *Params) *transit.Check {
	return &transit.Check{Aud: d.audience, Now: p.Now, Sub: p.Caller, MaxLifetime: d.maxLifetime}
}

// seal draws nothing: it seals s under the active transit key, within the
// key's seal limit.
func (d *Domain) seal(s *ristretto255.Scalar, p *Params) (string, error) {
	if err := d.seals.take(); err != nil {
		return "", err
	}
	return d.transit.Seal(s, d.claims(p), p.Rand)
}

// Pseudonymize evaluates one blinded identifier point B: it draws s and
// returns Y = (s·k)·B with transitInfo = Seal(s). No scalar inversion.
func (d *Domain) Pseudonymize(blinded []byte, p *Params) (Evaluated, error) {
	out, errs := d.PseudonymizeBatch([][]byte{blinded}, p)
	return out[0], errs[0]
}

// pseudonymize is PseudonymizeBatch on one chunk with the service's
// scalar only: k, or k₁ in split mode.
func (d *Domain) pseudonymize(blinded [][]byte, p *Params, out []Evaluated, errs []error) {
	var enc halvedBatch
	for i := range blinded {
		B, err := point.DecodeEdwards(blinded[i])
		if err != nil {
			errs[i] = err
			continue
		}
		s, err := point.RandomScalar(p.Rand)
		if err != nil {
			errs[i] = err
			continue
		}
		ti, err := d.seal(s, p)
		if err != nil {
			errs[i] = err
			continue
		}
		out[i].TransitInfo = ti
		enc.add(out[i].Point[:], s.Multiply(s, d.k), B) // s·k
	}
	enc.encode()
}

// halvedBatch collects the results of a chunk, c·B each, as (c/2)·B, and
// encodes them together as 2·((c/2)·B) with one field inversion
// (point.EncodeDoubled) instead of one inverse square root per result.
type halvedBatch struct {
	dst [][]byte
	pts []*edwards25519.Point
}

// add computes (c/2)·B, to be encoded into dst.
func (h *halvedBatch) add(dst []byte, c *ristretto255.Scalar, B *edwards25519.Point) {
	h.dst = append(h.dst, dst)
	h.pts = append(h.pts, B.ScalarMult(point.HalfScalar(point.EdwardsScalar(c)), B))
}

// encode writes every result.
func (h *halvedBatch) encode() { point.EncodeDoubled(h.dst, h.pts) }

// PseudonymizeBatch evaluates many blinded points. errs[i] is the error of
// item i alone (nil on success); the other items are unaffected.
//
// A large batch is spread over the available cores (GOMAXPROCS), unless
// p.Rand is set: a caller's random stream is read in order, by one
// goroutine.
func (d *Domain) PseudonymizeBatch(blinded [][]byte, p *Params) (out []Evaluated, errs []error) {
	out = make([]Evaluated, len(blinded))
	errs = make([]error, len(blinded))
	parallel(len(blinded), p, errs, func(lo, hi int) { d.pseudonymize(blinded[lo:hi], p, out[lo:hi], errs[lo:hi]) })
	otherShare(p, nil, d, out, errs)
	return out, errs
}

// otherShare multiplies the points of the items that succeeded by the
// other share, when from or to is split: k₂ of to (pseudonymize: from is
// nil), k₂⁻¹ of from (identify: to is nil), or k₂,to·k₂,from⁻¹ (convert).
// A domain in single mode contributes the factor 1: in single mode
// nothing happens, so that both modes share one evaluation path. The
// points are those of out (each an Evaluated or a [point.Size]byte).
func otherShare[T Evaluated | [point.Size]byte](p *Params, from, to *Domain, out []T, errs []error) {
	var m keys.Multiplier
	var op keys.ShareOp
	var fr, tr keys.ShareRef
	switch {
	case from != nil && from.share != nil && to != nil && to.share != nil:
		m, op, fr, tr = from.share, keys.ShareConvert, from.shareRef(), to.shareRef()
	case from != nil && from.share != nil:
		m, op, fr = from.share, keys.ShareIdentify, from.shareRef()
	case to != nil && to.share != nil:
		m, op, fr = to.share, keys.SharePseudonymize, to.shareRef()
	default:
		return
	}
	pts := make([][]byte, len(out))
	for i := range out {
		switch o := any(&out[i]).(type) {
		case *Evaluated:
			pts[i] = o.Point[:]
		case *[point.Size]byte:
			pts[i] = o[:]
		}
	}
	ctx := p.Context
	if ctx == nil {
		ctx = context.Background()
	}
	m.Multiply(ctx, op, fr, tr, pts, errs)
	for i := range out {
		if errs[i] != nil {
			var zero T
			out[i] = zero
		}
	}
}

func (d *Domain) shareRef() keys.ShareRef {
	return keys.ShareRef{Domain: d.name, Generation: d.shareGen}
}

// minChunk is the least number of items worth a goroutine of their own.
const minChunk = 32

// parallel calls f on chunks of [0, n), on up to GOMAXPROCS goroutines when
// the batch is large enough and p.Rand is nil (crypto/rand is safe for
// concurrent use; a caller's deterministic stream is not). One call thus
// uses every core; under full load, concurrent calls would anyway.
//
// A panic in f is recovered, on whichever goroutine it happens: every item
// of the chunk that panicked gets a *PanicError in errs, and the other
// chunks are unaffected. No panic leaves parallel.
func parallel(n int, p *Params, errs []error, f func(lo, hi int)) {
	run := func(lo, hi int) {
		defer func() {
			if r := recover(); r != nil {
				pe := &PanicError{Panic: recovered.Describe(r)}
				for i := lo; i < hi; i++ {
					errs[i] = pe
				}
			}
		}()
		f(lo, hi)
	}
	w := min(runtime.GOMAXPROCS(0), n/minChunk)
	if w <= 1 || p.Rand != nil {
		run(0, n)
		return
	}
	size := (n + w - 1) / w
	var wg sync.WaitGroup
	for lo := 0; lo < n; lo += size {
		wg.Add(1)
		go func(lo, hi int) {
			defer wg.Done()
			run(lo, hi)
		}(lo, min(lo+size, n))
	}
	wg.Wait()
}

// opened is a validated identify/convert input.
type opened struct {
	B *edwards25519.Point
	s *ristretto255.Scalar
}

// open validates the items of a batch and opens their transitInfo. Items
// that fail get their error and a nil entry.
func (d *Domain) open(items []Item, p *Params, errs []error) []opened {
	op := make([]opened, len(items))
	c := d.check(p)
	for i, it := range items {
		B, err := point.DecodeEdwards(it.Blinded)
		if err != nil {
			errs[i] = err
			continue
		}
		o, err := d.transit.Open(it.TransitInfo, c)
		if errors.Is(err, transit.ErrLifetimeTooLong) {
			err = &LifetimeError{Max: d.maxLifetime}
		}
		if err != nil {
			errs[i] = err
			continue
		}
		op[i] = opened{B: B, s: o.Scalar}
	}
	return op
}

// invertAll replaces each opened transit scalar by its inverse, with one
// scalar inversion for the whole batch.
func invertAll(op []opened) {
	s := make([]*ristretto255.Scalar, len(op))
	for i := range op {
		s[i] = op[i].s
	}
	point.InvertAll(s)
}

// Identify evaluates one blinded transit pseudonym: it opens transitInfo
// (aud, iat, exp, and sub against the caller) and returns Y = (s·k)⁻¹·B.
func (d *Domain) Identify(blinded []byte, transitInfo string, p *Params) ([point.Size]byte, error) {
	out, errs := d.IdentifyBatch([]Item{{blinded, transitInfo}}, p)
	return out[0], errs[0]
}

// IdentifyBatch evaluates many identify items with a single scalar
// inversion (one per core for a large batch, spread like
// PseudonymizeBatch). errs[i] is the error of item i alone.
func (d *Domain) IdentifyBatch(items []Item, p *Params) (out [][point.Size]byte, errs []error) {
	out = make([][point.Size]byte, len(items))
	errs = make([]error, len(items))
	parallel(len(items), p, errs, func(lo, hi int) { d.identify(items[lo:hi], p, out[lo:hi], errs[lo:hi]) })
	otherShare(p, d, nil, out, errs)
	return out, errs
}

func (d *Domain) identify(items []Item, p *Params, out [][point.Size]byte, errs []error) {
	op := d.open(items, p, errs)
	invertAll(op)
	var enc halvedBatch
	for i := range op {
		if op[i].s == nil {
			continue
		}
		enc.add(out[i][:], op[i].s.Multiply(op[i].s, d.kInv), op[i].B) // s⁻¹·k⁻¹
	}
	enc.encode()
}

// Convert evaluates one blinded transit pseudonym of domain from into a
// transit pseudonym of domain to: it opens transitInfo_A, draws s' and
// returns Y = (s'·k_B·(s·k_A)⁻¹)·B with transitInfo_B = Seal_{K_B}(s').
func Convert(from, to *Domain, blinded []byte, transitInfo string, p *Params) (Evaluated, error) {
	out, errs := ConvertBatch(from, to, []Item{{blinded, transitInfo}}, p)
	return out[0], errs[0]
}

// ConvertBatch converts many items with a single scalar inversion (one per
// core for a large batch, spread like PseudonymizeBatch). errs[i] is the
// error of item i alone.
func ConvertBatch(from, to *Domain, items []Item, p *Params) (out []Evaluated, errs []error) {
	out = make([]Evaluated, len(items))
	errs = make([]error, len(items))
	if from.name == to.name {
		for i := range errs {
			errs[i] = ErrSameDomain
		}
		return out, errs
	}
	parallel(len(items), p, errs, func(lo, hi int) { convert(from, to, items[lo:hi], p, out[lo:hi], errs[lo:hi]) })
	otherShare(p, from, to, out, errs)
	return out, errs
}

func convert(from, to *Domain, items []Item, p *Params, out []Evaluated, errs []error) {
	op := from.open(items, p, errs)
	invertAll(op)
	kBA := ristretto255.NewScalar().Multiply(to.k, from.kInv) // k_B·k_A⁻¹
	var enc halvedBatch
	defer enc.encode()
	for i := range op {
		if op[i].s == nil {
			continue
		}
		s2, err := point.RandomScalar(p.Rand)
		if err != nil {
			errs[i] = err
			continue
		}
		ti, err := to.seal(s2, p)
		if err != nil {
			errs[i] = err
			continue
		}
		f := op[i].s.Multiply(op[i].s, kBA) // s⁻¹·k_B·k_A⁻¹
		f.Multiply(f, s2)
		out[i].TransitInfo = ti
		enc.add(out[i].Point[:], f, op[i].B)
	}
}
