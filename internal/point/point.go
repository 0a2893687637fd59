// Package point validates ristretto255 elements and scalars at the trust
// boundary and embeds identifiers into elements, as docs/PROTOCOL.md specifies
// ("Encoding an identifier as a point", "Validation rules").
//
// All operations on scalars are constant time. Identifier encoding and
// decoding are not: the identifier is known to the party that encodes it,
// and an identifier point is only ever handled blinded outside that party.
package point

import (
	"crypto/rand"
	"errors"
	"io"

	"github.com/gtank/ristretto255"

	"github.com/ehealth-pseudo/pseudonymizer/identifier"
	"github.com/ehealth-pseudo/pseudonymizer/protoerr"
)

// Size is the size of an encoded element or scalar.
const Size = 32

// MaxIdentifierLen is the longest identifier that can be embedded:
// identifier.MaxLen, the one limit of the protocol.
const MaxIdentifierLen = identifier.MaxLen

// maxCounter bounds the try-and-increment loop of Encode.
const maxCounter = 128

// Errors, none of which carries the offending value. They are the
// protocol's errors of package protoerr, under the names this package has
// always used: the values are the same.
var (
	ErrInvalidPoint      = protoerr.ErrInvalidPoint      // anything that is not a valid point; the next three wrap it
	ErrPointLength       = protoerr.ErrPointLength       // an encoding that is not 32 bytes
	ErrNonCanonical      = protoerr.ErrNonCanonical      // not the canonical encoding of an element
	ErrIdentity          = protoerr.ErrIdentity          // the identity element
	ErrInvalidScalar     = protoerr.ErrInvalidScalar     // anything that is not a valid scalar
	ErrZeroScalar        = protoerr.ErrZeroScalar        // the zero scalar
	ErrEmptyIdentifier   = protoerr.ErrEmptyIdentifier   // an identifier of zero bytes
	ErrIdentifierTooLong = protoerr.ErrIdentifierTooLong // an identifier over MaxIdentifierLen bytes
	ErrNoEncoding        = protoerr.ErrNoEncoding        // no counter gives a valid point
	ErrNotIdentifier     = protoerr.ErrNotIdentifier     // a point that embeds no identifier
)

var identity = ristretto255.NewIdentityElement()

// Decode parses a canonical, non-identity ristretto255 element.
func Decode(b []byte) (*ristretto255.Element, error) {
	if len(b) != Size {
		return nil, ErrPointLength
	}
	e, err := ristretto255.NewIdentityElement().SetCanonicalBytes(b)
	if err != nil {
		return nil, ErrNonCanonical
	}
	if e.Equal(identity) == 1 {
		return nil, ErrIdentity
	}
	return e, nil
}

var zero = ristretto255.NewScalar()

// DecodeScalar parses a canonical, non-zero scalar.
func DecodeScalar(b []byte) (*ristretto255.Scalar, error) {
	if len(b) != Size {
		return nil, ErrInvalidScalar
	}
	s, err := ristretto255.NewScalar().SetCanonicalBytes(b)
	if err != nil {
		return nil, ErrInvalidScalar
	}
	if s.Equal(zero) == 1 {
		return nil, ErrZeroScalar
	}
	return s, nil
}

// IsZero reports whether s is zero, in constant time.
func IsZero(s *ristretto255.Scalar) bool { return s.Equal(zero) == 1 }

// RandomScalar draws a uniformly random non-zero scalar from 64 bytes of rnd
// (crypto/rand when rnd is nil).
func RandomScalar(rnd io.Reader) (*ristretto255.Scalar, error) {
	if rnd == nil {
		rnd = rand.Reader
	}
	var buf [64]byte
	for range 8 { // zero has probability 2^-252 per try
		if _, err := io.ReadFull(rnd, buf[:]); err != nil {
			return nil, errors.New("point: reading randomness failed")
		}
		s, err := ristretto255.NewScalar().SetUniformBytes(buf[:])
		clear(buf[:])
		if err != nil {
			return nil, err
		}
		if !IsZero(s) {
			return s, nil
		}
	}
	return nil, ErrZeroScalar
}

// Encode embeds an identifier of 1 to 29 bytes into a point, as
// docs/PROTOCOL.md specifies: b[0] = counter<<1, b[1] = len(v), b[2:] = v
// then zeros, taking the first counter for which b is a canonical element
// encoding.
func Encode(v []byte) (*ristretto255.Element, error) {
	if len(v) == 0 {
		return nil, ErrEmptyIdentifier
	}
	if len(v) > MaxIdentifierLen {
		return nil, ErrIdentifierTooLong
	}
	var b [Size]byte
	b[1] = byte(len(v))
	copy(b[2:], v)
	e := ristretto255.NewIdentityElement()
	for counter := range maxCounter {
		b[0] = byte(counter << 1)
		if _, err := e.SetCanonicalBytes(b[:]); err == nil {
			if e.Equal(identity) == 1 { // unreachable: b[1] != 0
				continue
			}
			return e, nil
		}
	}
	return nil, ErrNoEncoding
}

// Identifier extracts the identifier embedded in e by Encode.
func Identifier(e *ristretto255.Element) ([]byte, error) {
	return IdentifierOf(e.Bytes())
}

// IdentifierOf is Identifier for the canonical encoding b of the point
// (Size bytes).
func IdentifierOf(b []byte) ([]byte, error) {
	if len(b) != Size {
		return nil, ErrNotIdentifier
	}
	n := int(b[1])
	if b[0]&1 != 0 || n == 0 || n > MaxIdentifierLen {
		return nil, ErrNotIdentifier
	}
	var pad byte
	for _, x := range b[2+n:] {
		pad |= x
	}
	if pad != 0 {
		return nil, ErrNotIdentifier
	}
	return append([]byte(nil), b[2:2+n]...), nil
}

// InvertAll replaces each non-nil scalar of s by its inverse, with a single
// scalar inversion for the whole slice (Montgomery's trick). The scalars
// must be non-zero (DecodeScalar and RandomScalar never return zero).
func InvertAll(s []*ristretto255.Scalar) {
	idx := make([]int, 0, len(s))
	for i := range s {
		if s[i] != nil {
			idx = append(idx, i)
		}
	}
	if len(idx) == 0 {
		return
	}
	prefix := make([]ristretto255.Scalar, len(idx)) // prefix[j] = s_0···s_j
	prefix[0].Set(s[idx[0]])
	for j := 1; j < len(idx); j++ {
		prefix[j].Multiply(&prefix[j-1], s[idx[j]])
	}
	inv := ristretto255.NewScalar().Invert(&prefix[len(idx)-1])
	tmp := ristretto255.NewScalar()
	for j := len(idx) - 1; j > 0; j-- {
		x := s[idx[j]]
		tmp.Multiply(inv, &prefix[j-1]) // x⁻¹
		inv.Multiply(inv, x)            // (s_0···s_{j-1})⁻¹
		x.Set(tmp)
	}
	s[idx[0]].Set(inv)
	for j := range prefix {
		prefix[j].Zero()
	}
}
