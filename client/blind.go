package client

import (
	"fmt"
	"io"
	"log/slog"

	"github.com/gtank/ristretto255"

	"github.com/ehealth-pseudo/pseudonymizer/internal/point"
	"github.com/ehealth-pseudo/pseudonymizer/internal/transit"
	"github.com/ehealth-pseudo/pseudonymizer/pseudonym"
)

// BlindOption changes how Blind, BlindTransit and their batch forms blind.
type BlindOption func(*blindOpts)

type blindOpts struct {
	rnd io.Reader // nil: crypto/rand
}

// Rand draws the blinding scalars from r (64 bytes each) instead of
// crypto/rand. Only test vectors need it: a blinding scalar that can be
// predicted unblinds the request for whoever predicts it.
func Rand(r io.Reader) BlindOption { return func(o *blindOpts) { o.rnd = r } }

func blindOptions(opts []BlindOption) blindOpts {
	var o blindOpts
	for _, opt := range opts {
		opt(&o)
	}
	return o
}

// Unblinder is the secret half of a blinded request: the blinding scalar b.
// Keep it until the service answers, never send or log it; it formats as
// "client.Unblinder(redacted)".
type Unblinder struct {
	b    *ristretto255.Scalar
	bInv *ristretto255.Scalar // computed on first use
}

// String implements fmt.Stringer without revealing b.
func (u *Unblinder) String() string { return "client.Unblinder(redacted)" }

// Format implements fmt.Formatter without revealing b, whatever the verb.
func (u *Unblinder) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, u.String()) }

// LogValue implements slog.LogValuer without revealing b.
func (u *Unblinder) LogValue() slog.Value { return slog.StringValue(u.String()) }

// Blind embeds an identifier (1 to 29 bytes, normalized with package
// identifier) into a point M and blinds it: it returns B = b·M, to send to
// the service's pseudonymize, and the Unblinder that keeps b.
func Blind(id []byte, opts ...BlindOption) (blinded []byte, u *Unblinder, err error) {
	return blindID(id, blindOptions(opts).rnd)
}

func blindID(id []byte, rnd io.Reader) ([]byte, *Unblinder, error) {
	M, err := point.Encode(id)
	if err != nil {
		return nil, nil, err
	}
	return blind(M, rnd)
}

// BlindTransit blinds a pseudonym in transit, for identify (clients) or
// convert (owners): it returns B = b·P_T, to send with t.Info, and the
// Unblinder that keeps b.
func BlindTransit(t *pseudonym.Transit, opts ...BlindOption) (blinded []byte, u *Unblinder, err error) {
	return blindTransit(t, blindOptions(opts).rnd)
}

func blindTransit(t *pseudonym.Transit, rnd io.Reader) ([]byte, *Unblinder, error) {
	if t == nil {
		return nil, nil, ErrInvalidPoint
	}
	P, err := point.Decode(t.Point[:])
	if err != nil {
		return nil, nil, err
	}
	return blind(P, rnd)
}

func blind(M *ristretto255.Element, rnd io.Reader) ([]byte, *Unblinder, error) {
	b, err := point.RandomScalar(rnd)
	if err != nil {
		return nil, nil, err
	}
	return M.ScalarMult(b, M).Bytes(), &Unblinder{b: b}, nil
}

func (u *Unblinder) inverse() *ristretto255.Scalar {
	if u.bInv == nil {
		u.bInv = ristretto255.NewScalar().Invert(u.b)
	}
	return u.bInv
}

func (u *Unblinder) unblind(evaluated []byte) (*ristretto255.Element, error) {
	Y, err := point.Decode(evaluated)
	if err != nil {
		return nil, err
	}
	return Y.ScalarMult(u.inverse(), Y), nil
}

// Unblind turns the service's answer to pseudonymize or convert (the point
// Y and its transitInfo) into a pseudonym in transit P_T = b⁻¹·Y, to forward
// to the domain's owner. The client cannot open it, but it checks the
// transitInfo's shape (a compact JWE whose protected header is one the
// service writes), so that what it forwards parses with
// pseudonym.ParseTransit: an answer that does not is refused with
// ErrInvalidPoint, ErrMissingTransitInfo or ErrMalformedTransitInfo.
func (u *Unblinder) Unblind(evaluated []byte, transitInfo string) (*pseudonym.Transit, error) {
	if err := checkTransitInfo(transitInfo); err != nil {
		return nil, err
	}
	P, err := u.unblind(evaluated)
	if err != nil {
		return nil, err
	}
	t := &pseudonym.Transit{Info: transitInfo}
	copy(t.Point[:], P.Bytes())
	return t, nil
}

// checkTransitInfo checks the shape of a transitInfo the service returned.
func checkTransitInfo(transitInfo string) error {
	if transitInfo == "" {
		return ErrMissingTransitInfo
	}
	if _, err := transit.ParseHeader(transitInfo); err != nil {
		return ErrMalformedTransitInfo
	}
	return nil
}

// Identify turns the service's answer to identify into the identifier:
// M = b⁻¹·Y, then the bytes M embeds.
func (u *Unblinder) Identify(evaluated []byte) ([]byte, error) {
	M, err := u.unblind(evaluated)
	if err != nil {
		return nil, err
	}
	return point.Identifier(M)
}
