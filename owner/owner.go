// Package owner is the SDK of data-owner services (a prescription service,
// TherLink): the parties that store pseudonyms of their own domain.
//
//	Client                 Pseudonymizer(k)                 Owner(K, k2?)
//	B = b·M      --B-->    Y = (s·k)·B, ti = Seal_K(s)
//	P_T = b⁻¹·Y  <--Y,ti--
//	             ------------------ P_T, ti ---------------> AtRest: P = s⁻¹·P_T
//	                                                         (or P2 = k2·P)
//	             <----------------- s'·P, Seal_K(s') ------- InTransit
//
// An Owner opens confidential pseudonyms (transit forms) with its domain's
// transit keys, checks the rules the service attached (aud, iat, exp, and
// sub), and makes transit forms of its stored pseudonyms to send back to
// clients, without calling the service. With a second key k2 (double
// pseudonymization) it stores k2·P, so that a leak of its database is
// useless even to the service. See docs/PROTOCOL.md.
//
// Owners never hold the domain scalar k and never call identify.
//
// All operations on secret scalars are constant time.
package owner

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gtank/ristretto255"

	"github.com/ehealth-pseudo/pseudonymizer/internal/point"
	"github.com/ehealth-pseudo/pseudonymizer/internal/transit"
	"github.com/ehealth-pseudo/pseudonymizer/keys"
	"github.com/ehealth-pseudo/pseudonymizer/protoerr"
	"github.com/ehealth-pseudo/pseudonymizer/pseudonym"
)

// Errors, usable with errors.Is. Except ErrInvalidKey they are the
// protocol's errors of package protoerr, which package client exposes
// under the same names. None carries a point, scalar, key or identifier.
var (
	// ErrMalformedTransitInfo: the transitInfo's shape, header, lengths,
	// base64url or payload is not what the protocol allows (also a nil
	// transit pseudonym).
	ErrMalformedTransitInfo = protoerr.ErrMalformedTransitInfo
	// ErrUnknownKid: the transitInfo is sealed under a kid the domain does
	// not accept, even after the keys were re-read. The error is a
	// *protoerr.UnknownKidError, which carries the kid.
	ErrUnknownKid = protoerr.ErrUnknownKid
	// ErrBadTag: the transitInfo failed authentication (altered, or sealed
	// under another key).
	ErrBadTag = protoerr.ErrBadTag
	// ErrWrongAudience: the transitInfo is for another domain.
	ErrWrongAudience = protoerr.ErrWrongAudience
	// ErrExpired: exp is more than 60 s in the past.
	ErrExpired = protoerr.ErrExpired
	// ErrNotYetValid: iat is more than 60 s in the future.
	ErrNotYetValid = protoerr.ErrNotYetValid
	// ErrSubjectMismatch: the transitInfo is not bound to the subject that
	// ExpectSubject requires.
	ErrSubjectMismatch = protoerr.ErrSubjectMismatch
	// ErrInvalidPoint: the transit pseudonym's point (or the pseudonym at
	// rest given to InTransit) is not a valid point.
	ErrInvalidPoint = protoerr.ErrInvalidPoint
	// ErrInvalidClaims: InTransit was given claims that cannot be sealed
	// (a non-positive TTL, a non-UTF-8 subject, custom claims that are not
	// a JSON object or that use "scalar").
	ErrInvalidClaims = protoerr.ErrInvalidClaims
	// ErrInvalidKey: the second key given to WithSecondKey is not a
	// canonical, non-zero scalar.
	ErrInvalidKey = errors.New("owner: invalid key")
)

// KeyProvider gives an owner its domain's audience, ttl and transit keys.
// The owner calls it when it starts, on an interval, and when it meets an
// unknown kid (rate-limited). The Scalar of the returned domain is ignored:
// owners have no access to it. keys.FileStore and keys/vault's store
// implement it; StaticKeys serves a fixed domain.
type KeyProvider interface {
	Domain(ctx context.Context, name string) (*keys.Domain, error)
}

// StaticKeys is a KeyProvider that always returns the same domain.
type StaticKeys struct {
	// D is the domain returned for its name; other names are unknown.
	D *keys.Domain
}

// Domain implements KeyProvider.
func (s StaticKeys) Domain(_ context.Context, name string) (*keys.Domain, error) {
	if s.D == nil || s.D.Name != name {
		return nil, keys.ErrUnknownDomain
	}
	return s.D, nil
}

// Option configures an Owner.
type Option func(*Owner) error

// WithSecondKey enables double pseudonymization with the owner's own scalar
// k2 (32-byte canonical, non-zero): pseudonyms at rest are P2 = k2·P.
func WithSecondKey(k2 []byte) Option {
	return func(o *Owner) error {
		k, err := point.DecodeScalar(k2)
		if err != nil {
			return ErrInvalidKey
		}
		o.k2, o.k2Inv = k, ristretto255.NewScalar().Invert(k)
		return nil
	}
}

// WithRefreshInterval sets how often keys are re-read from the provider
// (default one minute; zero or negative disables periodic refresh).
func WithRefreshInterval(d time.Duration) Option {
	return func(o *Owner) error { o.interval = d; return nil }
}

// WithMinRefreshGap sets the least time between two refreshes triggered by
// unknown kids (default one second), so that a flood of forged kids cannot
// hammer the key store.
func WithMinRefreshGap(d time.Duration) Option {
	return func(o *Owner) error { o.minGap = d; return nil }
}

// WithLogger sets the logger for refresh failures (default slog.Default).
func WithLogger(l *slog.Logger) Option {
	return func(o *Owner) error { o.log = l; return nil }
}

// state is one immutable snapshot of the domain's public data and keys.
type state struct {
	audience string
	ttl      time.Duration
	keys     *transit.KeySet
}

// Owner opens and makes pseudonyms of one domain. It is safe for concurrent
// use. Close stops its background refresh.
type Owner struct {
	domain   string
	provider KeyProvider
	k2       *ristretto255.Scalar
	k2Inv    *ristretto255.Scalar
	interval time.Duration
	minGap   time.Duration
	log      *slog.Logger

	cur       atomic.Pointer[state]
	refreshMu sync.Mutex
	lastFetch time.Time
	stop      chan struct{}
	done      chan struct{}
	closeOnce sync.Once
}

// New loads the keys of domain from provider and returns an Owner for it.
func New(ctx context.Context, domain string, provider KeyProvider, opts ...Option) (*Owner, error) {
	o := &Owner{
		domain:   domain,
		provider: provider,
		interval: time.Minute,
		minGap:   time.Second,
		log:      slog.Default(),
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
	}
	for _, opt := range opts {
		if err := opt(o); err != nil {
			return nil, err
		}
	}
	if err := o.fetch(ctx); err != nil {
		return nil, err
	}
	if o.interval > 0 {
		go o.loop()
	} else {
		close(o.done)
	}
	return o, nil
}

// Close stops the periodic refresh. The Owner stays usable.
func (o *Owner) Close() error {
	o.closeOnce.Do(func() { close(o.stop) })
	<-o.done
	return nil
}

// String describes the owner without its keys.
func (o *Owner) String() string { return fmt.Sprintf("owner(%s)", o.domain) }

// Domain returns the domain's name.
func (o *Owner) Domain() string { return o.domain }

// Audience returns the audience of the domain's transitInfo values.
func (o *Owner) Audience() string { return o.cur.Load().audience }

func (o *Owner) loop() {
	defer close(o.done)
	t := time.NewTicker(o.interval)
	defer t.Stop()
	for {
		select {
		case <-o.stop:
			return
		case <-t.C:
			o.periodic()
		}
	}
}

// periodic is one refresh of the loop. A panic in the key provider is
// recovered and logged (its type only): the owner keeps its keys.
func (o *Owner) periodic() {
	defer func() {
		if p := recover(); p != nil {
			o.log.Error("owner: the key provider panicked; keeping the current keys",
				"domain", o.domain, "panic_type", fmt.Sprintf("%T", p))
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), o.interval)
	defer cancel()
	if err := o.fetch(ctx); err != nil {
		o.log.Warn("owner: refreshing transit keys failed; keeping the current ones",
			"domain", o.domain, "err", err)
	}
}

// Refresh re-reads the domain's keys from the provider now, out of the
// periodic schedule (after an administrator rotated a transit key, say).
// On failure the owner keeps the keys it has, and the error says why.
func (o *Owner) Refresh(ctx context.Context) error {
	o.refreshMu.Lock()
	defer o.refreshMu.Unlock()
	o.lastFetch = time.Now()
	return o.fetch(ctx)
}

// fetch reads the domain from the provider and swaps the snapshot.
func (o *Owner) fetch(ctx context.Context) error {
	d, err := o.provider.Domain(ctx, o.domain)
	if err != nil {
		return err
	}
	raw := make(map[string][]byte, len(d.Transit.Keys))
	for kid, k := range d.Transit.Keys {
		raw[kid] = k
	}
	ks, err := transit.NewKeySet(d.Transit.Active, raw)
	if err != nil || d.Audience == "" {
		return fmt.Errorf("%w: domain %q", keys.ErrInvalid, o.domain)
	}
	ttl := d.TTL
	if ttl <= 0 {
		ttl = keys.DefaultTTL
	}
	o.cur.Store(&state{audience: d.Audience, ttl: ttl, keys: ks})
	return nil
}

// refreshFor re-reads the keys when kid is unknown, at most once per minGap.
// It reports whether kid is known afterwards.
func (o *Owner) refreshFor(ctx context.Context, kid string) bool {
	o.refreshMu.Lock()
	defer o.refreshMu.Unlock()
	if o.cur.Load().keys.Has(kid) { // another caller refreshed meanwhile
		return true
	}
	if time.Since(o.lastFetch) < o.minGap {
		return false
	}
	o.lastFetch = time.Now()
	if err := o.fetch(ctx); err != nil {
		o.log.Warn("owner: refreshing transit keys failed", "domain", o.domain, "err", err)
		return false
	}
	return o.cur.Load().keys.Has(kid)
}

// OpenOption changes what AtRest and Open check.
type OpenOption func(*openOpts)

// openOpts is what the OpenOptions set.
type openOpts struct {
	now        time.Time
	sub        string // with requireSub: the subject the transitInfo must name
	requireSub bool
	skipExpiry bool
}

// At checks iat and exp against t instead of the current time.
func At(t time.Time) OpenOption { return func(o *openOpts) { o.now = t } }

// ExpectSubject refuses a transit pseudonym that is not bound to sub.
// Without it, the owner accepts any subject: sub restricts who may identify
// at the service, and the service enforces it.
func ExpectSubject(sub string) OpenOption {
	return func(o *openOpts) { o.sub, o.requireSub = sub, true }
}

// SkipExpiry accepts an expired transit pseudonym. It is meant for
// recovery (reprocessing transit forms stored before an outage); the
// audience, iat and authentication are still checked.
func SkipExpiry() OpenOption { return func(o *openOpts) { o.skipExpiry = true } }

// Opened is an opened pseudonym in transit.
type Opened struct {
	// Pseudonym is the pseudonym at rest (k2·P with a second key).
	Pseudonym pseudonym.AtRest
	// Kid, IssuedAt, Expiry and Subject come from the authenticated header.
	Kid      string    // the transit key it was sealed under
	IssuedAt time.Time // iat
	Expiry   time.Time // exp
	Subject  string    // sub: the caller it is bound to, "" when unbound
	// Claims holds the custom payload claims, if any, as raw JSON.
	Claims map[string][]byte
}

// AtRest opens a pseudonym in transit and returns the pseudonym to store:
// P = s⁻¹·P_T, or k2·P with double pseudonymization.
func (o *Owner) AtRest(ctx context.Context, t *pseudonym.Transit, opts ...OpenOption) (pseudonym.AtRest, error) {
	op, err := o.Open(ctx, t, opts...)
	if err != nil {
		return pseudonym.AtRest{}, err
	}
	return op.Pseudonym, nil
}

// Open is AtRest that also returns the transitInfo's header and claims.
func (o *Owner) Open(ctx context.Context, t *pseudonym.Transit, opts ...OpenOption) (*Opened, error) {
	if t == nil {
		return nil, ErrMalformedTransitInfo
	}
	PT, err := point.Decode(t.Point[:])
	if err != nil {
		return nil, err
	}
	oo := openOpts{now: time.Now()}
	for _, opt := range opts {
		opt(&oo)
	}
	st := o.cur.Load()
	c := &transit.Check{Aud: st.audience, Now: oo.now, AnySub: !oo.requireSub,
		Sub: oo.sub, RequireSub: oo.requireSub, SkipExpiry: oo.skipExpiry}
	ti, err := st.keys.Open(t.Info, c)
	var unknown *protoerr.UnknownKidError
	if errors.As(err, &unknown) && o.refreshFor(ctx, unknown.Kid) {
		st = o.cur.Load()
		c.Aud = st.audience
		ti, err = st.keys.Open(t.Info, c)
	}
	if err != nil {
		return nil, err
	}
	f := ti.Scalar.Invert(ti.Scalar) // s⁻¹
	if o.k2 != nil {
		f.Multiply(f, o.k2) // k2·s⁻¹
	}
	op := &Opened{
		Kid:      ti.Header.Kid,
		IssuedAt: time.Unix(ti.Header.Iat, 0),
		Expiry:   time.Unix(ti.Header.Exp, 0),
		Subject:  ti.Header.Sub,
	}
	copy(op.Pseudonym[:], PT.ScalarMult(f, PT).Bytes())
	f.Zero()
	if len(ti.Extra) > 0 {
		op.Claims = make(map[string][]byte, len(ti.Extra))
		for k, v := range ti.Extra {
			op.Claims[k] = v
		}
	}
	return op, nil
}

// TransitOption changes how InTransit seals.
type TransitOption func(*transitOpts)

type transitOpts struct {
	now    time.Time
	ttl    time.Duration
	sub    string
	claims map[string]any
	rnd    io.Reader
}

// IssuedAt sets iat (default: the current time).
func IssuedAt(t time.Time) TransitOption { return func(o *transitOpts) { o.now = t } }

// TTL sets the lifetime (default: the domain's ttl).
func TTL(d time.Duration) TransitOption { return func(o *transitOpts) { o.ttl = d } }

// Subject binds the transit pseudonym to one caller: only that principal
// may identify it at the service.
func Subject(sub string) TransitOption { return func(o *transitOpts) { o.sub = sub } }

// Claims adds custom claims to the encrypted payload ("scalar" is
// reserved). They must marshal to a JSON object.
func Claims(c map[string]any) TransitOption { return func(o *transitOpts) { o.claims = c } }

// Rand draws the transit scalar and nonce from r instead of crypto/rand.
// Only test vectors need it.
func Rand(r io.Reader) TransitOption { return func(o *transitOpts) { o.rnd = r } }

// InTransit makes a fresh transit form (s·P, Seal_K[active](s, …)) of a
// pseudonym at rest, to send to a client. With double pseudonymization, p
// is k2·P and k2 is removed first. No service call is needed; two transit
// forms of one pseudonym are unlinkable.
func (o *Owner) InTransit(p pseudonym.AtRest, opts ...TransitOption) (*pseudonym.Transit, error) {
	P, err := point.Decode(p[:])
	if err != nil {
		return nil, err
	}
	st := o.cur.Load()
	to := transitOpts{now: time.Now(), ttl: st.ttl}
	for _, opt := range opts {
		opt(&to)
	}
	s, err := point.RandomScalar(to.rnd)
	if err != nil {
		return nil, err
	}
	ti, err := st.keys.Seal(s, &transit.Claims{
		Aud: st.audience, Iat: to.now, TTL: to.ttl, Sub: to.sub, Extra: to.claims,
	}, to.rnd)
	if err != nil {
		return nil, err
	}
	if o.k2Inv != nil {
		s.Multiply(s, o.k2Inv) // s·k2⁻¹
	}
	t := &pseudonym.Transit{Info: ti}
	copy(t.Point[:], P.ScalarMult(s, P).Bytes())
	s.Zero()
	return t, nil
}
