package point

import (
	"crypto/subtle"
	"errors"

	"filippo.io/edwards25519"
	"filippo.io/edwards25519/field"
	"github.com/gtank/ristretto255"
)

// The batch fast path of evaluation: ristretto255 elements held as their
// Edwards representatives (filippo.io/edwards25519, the arithmetic under
// gtank/ristretto255), so that the encodings of a batch of results share
// one field inversion instead of one inverse square root each.
//
// The ristretto255 encoding needs an inverse square root per element, which
// cannot be batched. The encoding of a doubled element can be computed with
// an inversion instead (curve25519-dalek's double_and_compress_batch), and
// inversions batch (Montgomery's trick: one inversion and three
// multiplications per element). An evaluation that wants enc(c·B) computes
// Q = (c/2)·B and writes enc(2·Q) with [EncodeDoubled]: the halving is
// folded into the scalar, so it costs nothing.
//
// DecodeEdwards and EncodeDoubled are proven equal to gtank/ristretto255's
// SetCanonicalBytes and Bytes by the differential fuzz targets
// FuzzDecodeEdwards and FuzzEncodeDoubled (edwards_test.go). Everything is
// constant time in the values of the points, like the library.

// Field constants of RFC 9496, Section 4.1, computed from their
// definitions (TestEdwardsConstants checks them against the RFC's decimal
// values).
var (
	feOne = new(field.Element).One()
	feTwo = new(field.Element).Add(feOne, feOne)
	// curveD is d = -121665/121666, the constant of edwards25519.
	curveD = func() *field.Element {
		num := new(field.Element).Mult32(feOne, 121665)
		den := new(field.Element).Mult32(feOne, 121666)
		return num.Negate(num).Multiply(num, den.Invert(den))
	}()
	// sqrtM1 is the non-negative square root of -1.
	sqrtM1 = func() *field.Element {
		r, _ := new(field.Element).SqrtRatio(new(field.Element).Negate(feOne), feOne)
		return r
	}()
	// invSqrtAMinusD is 1/sqrt(a - d), non-negative, with a = -1.
	invSqrtAMinusD = func() *field.Element {
		aMinusD := new(field.Element).Negate(feOne)
		aMinusD.Subtract(aMinusD, curveD)
		r, _ := new(field.Element).SqrtRatio(feOne, aMinusD)
		return r
	}()
)

// errDecode is the error of DecodeEdwards for anything but a canonical
// encoding of a non-identity element; Decode's sentinels wrap it.
var errDecode = errors.New("point: not a canonical ristretto255 encoding")

// DecodeEdwards is [Decode] returning the element's Edwards
// representative: the Decode operation of RFC 9496, Section 4.3.1, with the
// same errors as Decode (ErrPointLength, ErrNonCanonical, ErrIdentity).
func DecodeEdwards(b []byte) (*edwards25519.Point, error) {
	if len(b) != Size {
		return nil, ErrPointLength
	}
	// s as a field element; the encoding must be canonical (< p, top bit
	// clear: SetBytes accepts both, Bytes gives the canonical form back)
	// and s non-negative.
	s, err := new(field.Element).SetBytes(b)
	if err != nil || subtle.ConstantTimeCompare(s.Bytes(), b) != 1 || s.IsNegative() == 1 {
		return nil, ErrNonCanonical
	}
	var ss, u1, u2, u2u2, v, invSqrt, tmp, denX, denY field.Element
	ss.Square(s)
	u1.Subtract(feOne, &ss) // 1 + a·s², a = -1
	u2.Add(feOne, &ss)      // 1 - a·s²
	u2u2.Square(&u2)
	v.Square(&u1).Multiply(&v, curveD).Negate(&v).Subtract(&v, &u2u2) // a·d·u1² - u2²
	_, wasSquare := invSqrt.SqrtRatio(feOne, tmp.Multiply(&v, &u2u2))
	denX.Multiply(&invSqrt, &u2)
	denY.Multiply(&invSqrt, &denX).Multiply(&denY, &v)
	var x, y, z, t field.Element
	x.Multiply(feTwo, s).Multiply(&x, &denX).Absolute(&x)
	y.Multiply(&u1, &denY)
	z.One()
	t.Multiply(&x, &y)
	if wasSquare == 0 || t.IsNegative() == 1 || y.Equal(new(field.Element)) == 1 {
		return nil, ErrNonCanonical
	}
	// The only canonical encoding of the identity is s = 0, which decodes
	// to (0, 1).
	if s.Equal(new(field.Element)) == 1 {
		return nil, ErrIdentity
	}
	p, err := new(edwards25519.Point).SetExtendedCoordinates(&x, &y, &z, &t)
	if err != nil {
		return nil, errDecode // unreachable: the coordinates satisfy the curve equation
	}
	return p, nil
}

// EdwardsScalar converts a ristretto255 scalar to the edwards25519 scalar
// of the same value.
func EdwardsScalar(s *ristretto255.Scalar) *edwards25519.Scalar {
	var b [Size]byte
	copy(b[:], s.Bytes())
	out, err := edwards25519.NewScalar().SetCanonicalBytes(b[:])
	if err != nil {
		panic("point: a ristretto255 scalar is not a canonical edwards25519 scalar") // unreachable: same field
	}
	clear(b[:])
	return out
}

// half is 2⁻¹ mod ℓ.
var half = func() *edwards25519.Scalar {
	var two [Size]byte
	two[0] = 2
	s, _ := edwards25519.NewScalar().SetCanonicalBytes(two[:])
	return s.Invert(s)
}()

// HalfScalar returns c/2 mod ℓ, the scalar whose product with a point Q
// [EncodeDoubled] turns into the encoding of c·Q.
func HalfScalar(c *edwards25519.Scalar) *edwards25519.Scalar {
	return edwards25519.NewScalar().Multiply(c, half)
}

// doubleState is what encoding 2·P needs of P = (X:Y:Z:T).
type doubleState struct {
	e, f, g, h, eg, fh field.Element
}

func (st *doubleState) set(p *edwards25519.Point) {
	X, Y, Z, T := p.ExtendedCoordinates()
	var xx, yy, zz, dtt field.Element
	xx.Square(X)
	yy.Square(Y)
	zz.Square(Z)
	dtt.Square(T).Multiply(&dtt, curveD)
	st.e.Add(Y, Y).Multiply(&st.e, X) // 2XY
	st.f.Add(&zz, &dtt)               // Z² + dT²
	st.g.Add(&yy, &xx)                // Y² - aX²
	st.h.Subtract(&zz, &dtt)          // Z² - dT²
	st.eg.Multiply(&st.e, &st.g)
	st.fh.Multiply(&st.f, &st.h)
}

// encode writes enc(2·P) given inv = 1/(e·f·g·h).
func (st *doubleState) encode(out []byte, inv *field.Element) {
	var zInv, tInv, tmp, negE, fSqrtA field.Element
	zInv.Multiply(&st.eg, inv)
	tInv.Multiply(&st.fh, inv)
	magic := new(field.Element).Set(invSqrtAMinusD)
	rotate := tmp.Multiply(&st.eg, &zInv).IsNegative()
	e := new(field.Element).Set(&st.e)
	g := new(field.Element).Set(&st.g)
	h := new(field.Element).Set(&st.h)
	negE.Negate(&st.e)
	fSqrtA.Multiply(&st.f, sqrtM1)
	e.Select(&st.g, e, rotate)
	g.Select(&negE, g, rotate)
	h.Select(&fSqrtA, h, rotate)
	magic.Select(sqrtM1, magic, rotate)
	negY := tmp.Multiply(h, e).Multiply(&tmp, &zInv).IsNegative()
	g.Select(new(field.Element).Negate(g), g, negY)
	var s field.Element
	s.Subtract(h, g).Multiply(&s, tmp.Multiply(g, &tInv).Multiply(&tmp, magic))
	s.Absolute(&s)
	copy(out, s.Bytes())
}

// EncodeDoubled writes into out[i] (Size bytes each) the ristretto255
// encoding of 2·ps[i], for every i, with one field inversion for the whole
// batch. An element whose doubling is the identity (ps[i] of order 1 or 2
// in the group, impossible for results of evaluation) gets the identity's
// encoding, all zeros, and takes no part in the batch inversion.
func EncodeDoubled(out [][]byte, ps []*edwards25519.Point) {
	if len(out) != len(ps) {
		panic("point: EncodeDoubled: out and ps differ in length")
	}
	states := make([]doubleState, len(ps))
	// Montgomery's trick: prefix products, one inversion, then back.
	prefix := make([]field.Element, len(ps))
	acc := new(field.Element).One()
	zero := make([]int, len(ps))
	var efgh field.Element
	for i, p := range ps {
		states[i].set(p)
		efgh.Multiply(&states[i].eg, &states[i].fh)
		// A zero factor would make the whole product zero: such an element
		// counts as one in the product and is encoded as the identity.
		zero[i] = efgh.Equal(new(field.Element))
		efgh.Select(feOne, &efgh, zero[i])
		prefix[i].Set(acc)
		acc.Multiply(acc, &efgh)
	}
	inv := new(field.Element).Invert(acc)
	var itemInv field.Element
	for i := len(ps) - 1; i >= 0; i-- {
		st := &states[i]
		efgh.Multiply(&st.eg, &st.fh)
		efgh.Select(feOne, &efgh, zero[i])
		itemInv.Multiply(inv, &prefix[i]) // 1/efgh_i
		inv.Multiply(inv, &efgh)          // 1/(efgh_0 … efgh_{i-1})
		var b [Size]byte
		st.encode(b[:], &itemInv)
		for j := range b {
			b[j] &^= byte(-zero[i]) // all zeros for the identity
		}
		copy(out[i][:Size], b[:])
	}
}
