// Package pseudonym defines the forms a pseudonym takes outside the service
// and their text encodings (docs/PROTOCOL.md, "Text forms"):
//
//   - at rest, P = k·M, what an owner stores: base64url (no padding) of the
//     32-byte encoding, 43 characters;
//   - in transit, (P_T, transitInfo) with P_T = s·P: base64url(P_T) + ":" +
//     transitInfo, which only the domain's owners and the service can open.
//
// Parsing checks that points are canonical and not the identity element.
package pseudonym

import (
	"encoding/base64"
	"errors"
	"strings"
	"time"

	"github.com/ehealth-pseudo/pseudonymizer/internal/point"
	"github.com/ehealth-pseudo/pseudonymizer/internal/transit"
)

// Size is the size of an encoded pseudonym point.
const Size = point.Size

// ErrMalformedText is the error of parsing a text that is not the text
// form of a pseudonym: wrong length or separator, not base64url, not a
// valid point, or a transitInfo whose shape or header is not one the
// protocol allows. It is about the text only, and is not
// protoerr.ErrMalformedTransitInfo, the error of a transitInfo a key
// holder failed to open. It never quotes the text.
var ErrMalformedText = errors.New("pseudonym: malformed text form")

var b64 = base64.RawURLEncoding.Strict()

// AtRest is a pseudonym at rest: the 32-byte canonical encoding of P.
type AtRest [Size]byte

// String returns the text form: base64url without padding, 43 characters.
func (p AtRest) String() string { return b64.EncodeToString(p[:]) }

// MarshalText implements encoding.TextMarshaler.
func (p AtRest) MarshalText() ([]byte, error) { return []byte(p.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (p *AtRest) UnmarshalText(b []byte) error {
	q, err := ParseAtRest(string(b))
	if err != nil {
		return err
	}
	*p = q
	return nil
}

// ParseAtRest parses the text form of a pseudonym at rest.
func ParseAtRest(s string) (AtRest, error) {
	var p AtRest
	if len(s) != 43 {
		return p, ErrMalformedText
	}
	if n, err := b64.Decode(p[:], []byte(s)); err != nil || n != Size {
		return AtRest{}, ErrMalformedText
	}
	if _, err := point.Decode(p[:]); err != nil {
		return AtRest{}, ErrMalformedText
	}
	return p, nil
}

// Transit is a pseudonym in transit: a point P_T = s·P and the transitInfo
// that carries s for the domain's owners.
type Transit struct {
	// Point is the 32-byte canonical encoding of P_T.
	Point [Size]byte
	// Info is the transitInfo, a compact JWE.
	Info string
}

// String returns the text form base64url(P_T) + ":" + transitInfo.
func (t *Transit) String() string {
	var b strings.Builder
	b.Grow(43 + 1 + len(t.Info))
	b.WriteString(b64.EncodeToString(t.Point[:]))
	b.WriteByte(':')
	b.WriteString(t.Info)
	return b.String()
}

// MarshalText implements encoding.TextMarshaler.
func (t *Transit) MarshalText() ([]byte, error) { return []byte(t.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (t *Transit) UnmarshalText(b []byte) error {
	q, err := ParseTransit(string(b))
	if err != nil {
		return err
	}
	*t = *q
	return nil
}

// ParseTransit parses the text form of a pseudonym in transit. It checks the
// point and the shape of the transitInfo; only a key holder can check the
// rest.
func ParseTransit(s string) (*Transit, error) {
	if len(s) < 44 || s[43] != ':' || len(s)-44 > transit.MaxLen {
		return nil, ErrMalformedText
	}
	t := &Transit{Info: s[44:]}
	if n, err := b64.Decode(t.Point[:], []byte(s[:43])); err != nil || n != Size {
		return nil, ErrMalformedText
	}
	if _, err := point.Decode(t.Point[:]); err != nil {
		return nil, ErrMalformedText
	}
	if _, err := transit.ParseHeader(t.Info); err != nil {
		return nil, ErrMalformedText
	}
	return t, nil
}

// Expiry returns the exp the transitInfo announces. It is read from the
// protected header without a key, so it is not authenticated: use it to
// decide whether a transit pseudonym is still worth sending, not to trust it.
func (t *Transit) Expiry() (time.Time, error) {
	h, err := transit.ParseHeader(t.Info)
	if err != nil {
		return time.Time{}, ErrMalformedText
	}
	return h.Expiry(), nil
}

// Subject returns the sub the transitInfo announces ("" when unbound),
// unauthenticated like Expiry.
func (t *Transit) Subject() (string, error) {
	h, err := transit.ParseHeader(t.Info)
	if err != nil {
		return "", ErrMalformedText
	}
	return h.Sub, nil
}
