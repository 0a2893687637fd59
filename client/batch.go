package client

import (
	"filippo.io/edwards25519"
	"github.com/gtank/ristretto255"

	"github.com/ehealth-pseudo/pseudonymizer/internal/point"
	"github.com/ehealth-pseudo/pseudonymizer/pseudonym"
)

// BatchUnblinder is the secret half of a blinded batch. Unblinding a batch
// costs one scalar inversion in all, not one per item.
type BatchUnblinder struct {
	u []*Unblinder // nil where blinding failed
}

// String implements fmt.Stringer without revealing the blinding scalars.
func (bu *BatchUnblinder) String() string { return "client.BatchUnblinder(redacted)" }

// Len returns the number of items of the batch.
func (bu *BatchUnblinder) Len() int { return len(bu.u) }

// Item returns the Unblinder of item i (nil if that item failed to blind).
func (bu *BatchUnblinder) Item(i int) *Unblinder { return bu.u[i] }

// BlindBatch blinds many identifiers. blinded[i] is nil and errs[i] says why
// when identifier i cannot be blinded; the others are unaffected.
func BlindBatch(ids [][]byte, opts ...BlindOption) (blinded [][]byte, u *BatchUnblinder, errs []error) {
	rnd := blindOptions(opts).rnd
	return blindBatch(len(ids), func(i int) ([]byte, *Unblinder, error) { return blindID(ids[i], rnd) })
}

// BlindTransitBatch blinds many pseudonyms in transit (identify, convert);
// a nil one gets ErrInvalidPoint.
func BlindTransitBatch(ts []*pseudonym.Transit, opts ...BlindOption) (blinded [][]byte, u *BatchUnblinder, errs []error) {
	rnd := blindOptions(opts).rnd
	return blindBatch(len(ts), func(i int) ([]byte, *Unblinder, error) { return blindTransit(ts[i], rnd) })
}

func blindBatch(n int, one func(int) ([]byte, *Unblinder, error)) ([][]byte, *BatchUnblinder, []error) {
	blinded := make([][]byte, n)
	errs := make([]error, n)
	bu := &BatchUnblinder{u: make([]*Unblinder, n)}
	for i := range n {
		blinded[i], bu.u[i], errs[i] = one(i)
	}
	return blinded, bu, errs
}

// invert computes every missing b⁻¹ with one inversion.
func (bu *BatchUnblinder) invert() {
	s := make([]*ristretto255.Scalar, len(bu.u))
	for i, u := range bu.u {
		if u != nil && u.bInv == nil {
			u.bInv = ristretto255.NewScalar().Set(u.b)
			s[i] = u.bInv
		}
	}
	point.InvertAll(s)
}

// unblindAll computes b⁻¹·Y for the items i with want[i], encoding the
// results together (one field inversion for the batch, point.EncodeDoubled).
// An answer that is not a valid point gets its item's error.
func (bu *BatchUnblinder) unblindAll(evaluated [][]byte, want []bool, out [][point.Size]byte, errs []error) {
	bu.invert()
	dst := make([][]byte, 0, len(bu.u))
	pts := make([]*edwards25519.Point, 0, len(bu.u))
	for i, u := range bu.u {
		if !want[i] {
			continue
		}
		if u == nil {
			errs[i] = ErrInvalidPoint
			continue
		}
		Y, err := point.DecodeEdwards(evaluated[i])
		if err != nil {
			errs[i] = err
			continue
		}
		dst = append(dst, out[i][:])
		pts = append(pts, Y.ScalarMult(point.HalfScalar(point.EdwardsScalar(u.inverse())), Y))
	}
	point.EncodeDoubled(dst, pts)
}

// UnblindBatch unblinds the answers to a pseudonymize or convert batch.
// evaluated[i] and transitInfos[i] answer item i; an item whose answer is
// missing (nil point), whose blinding failed, or that is invalid gets its
// own error. The results are encoded together, with one field inversion.
func (bu *BatchUnblinder) UnblindBatch(evaluated [][]byte, transitInfos []string) ([]*pseudonym.Transit, []error) {
	out := make([]*pseudonym.Transit, len(bu.u))
	errs := make([]error, len(bu.u))
	if len(evaluated) != len(bu.u) || len(transitInfos) != len(bu.u) {
		for i := range errs {
			errs[i] = ErrLengthMismatch
		}
		return out, errs
	}
	want := make([]bool, len(bu.u))
	for i, u := range bu.u {
		if u == nil {
			errs[i] = ErrInvalidPoint
			continue
		}
		errs[i] = checkTransitInfo(transitInfos[i])
		want[i] = errs[i] == nil
	}
	pts := make([][point.Size]byte, len(bu.u))
	bu.unblindAll(evaluated, want, pts, errs)
	for i := range out {
		if want[i] && errs[i] == nil {
			out[i] = &pseudonym.Transit{Point: pts[i], Info: transitInfos[i]}
		}
	}
	return out, errs
}

// IdentifyBatch unblinds the answers to an identify batch into identifiers.
func (bu *BatchUnblinder) IdentifyBatch(evaluated [][]byte) ([][]byte, []error) {
	out := make([][]byte, len(bu.u))
	errs := make([]error, len(bu.u))
	if len(evaluated) != len(bu.u) {
		for i := range errs {
			errs[i] = ErrLengthMismatch
		}
		return out, errs
	}
	want := make([]bool, len(bu.u))
	for i := range want {
		want[i] = true
	}
	pts := make([][point.Size]byte, len(bu.u))
	bu.unblindAll(evaluated, want, pts, errs)
	for i := range out {
		if errs[i] == nil {
			out[i], errs[i] = point.IdentifierOf(pts[i][:])
		}
	}
	return out, errs
}
