// Package identifier normalizes and validates the identifiers that are
// pseudonymized, before the client SDK embeds them into points.
//
// An identifier is 1 to 29 bytes (docs/PROTOCOL.md, "Encoding an identifier
// as a point"). Two kinds are known: NISS/INSZ, the Belgian social security
// identification number (11 digits with a mod-97 check), and Raw, an opaque
// value taken as is. Normalization makes equal identifiers byte-equal, which
// is what makes their pseudonyms equal: "85.07.30-033.28" and "85073003328"
// are the same NISS.
//
// Errors never quote the value that was refused.
package identifier

import (
	"errors"
	"fmt"

	"github.com/ehealth-pseudo/pseudonymizer/protoerr"
)

// MaxLen is the longest identifier that can be pseudonymized, in bytes: the
// 32 bytes of a point less the counter byte, the length byte and the zero
// last byte. It is the protocol's one identifier length limit; the point
// encoding uses it too.
const MaxLen = 29

// Errors.
var (
	// ErrEmpty is the error of an identifier of zero bytes. It is
	// protoerr.ErrEmptyIdentifier, which client.Blind returns too.
	ErrEmpty = protoerr.ErrEmptyIdentifier
	// ErrTooLong is the error of an identifier over MaxLen bytes. It is
	// protoerr.ErrIdentifierTooLong, which client.Blind returns too.
	ErrTooLong = protoerr.ErrIdentifierTooLong
	// ErrInvalidNISS is the error of a text that is not a valid NISS/INSZ.
	ErrInvalidNISS = errors.New("identifier: invalid NISS")
	// ErrUnknownKind is the error of a Kind this package does not know.
	ErrUnknownKind = errors.New("identifier: unknown kind")
)

// Kind names a kind of identifier.
type Kind string

// Known kinds.
const (
	KindNISS Kind = "niss" // a NISS/INSZ number: see NISS
	KindRaw  Kind = "raw"  // an opaque value of 1 to MaxLen bytes: see Raw
)

// Normalize validates s as an identifier of the given kind and returns its
// normalized bytes.
func Normalize(kind Kind, s string) ([]byte, error) {
	switch kind {
	case KindNISS:
		return NISS(s)
	case KindRaw:
		return Raw([]byte(s))
	default:
		return nil, ErrUnknownKind
	}
}

// Raw validates an opaque identifier (1 to 29 bytes) and returns a copy.
func Raw(b []byte) ([]byte, error) {
	switch {
	case len(b) == 0:
		return nil, ErrEmpty
	case len(b) > MaxLen:
		return nil, ErrTooLong
	}
	return append([]byte(nil), b...), nil
}

// NISS normalizes and validates a NISS/INSZ number (national register or
// BIS number). It accepts the 11 digits with '.', '-', '/' and spaces as
// separators ("85.07.30-033.28") and returns the 11 ASCII digits. The check
// digits are 97 - (first nine digits mod 97), where for people born from
// 2000 on the nine digits are prefixed with a 2.
func NISS(s string) ([]byte, error) {
	if len(s) > 32 {
		return nil, ErrInvalidNISS
	}
	d := make([]byte, 0, 11)
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= '0' && c <= '9':
			if len(d) == 11 {
				return nil, ErrInvalidNISS
			}
			d = append(d, c)
		case c == '.' || c == '-' || c == ' ' || c == '/':
		default:
			return nil, ErrInvalidNISS
		}
	}
	if len(d) != 11 {
		return nil, ErrInvalidNISS
	}
	var base uint64
	for _, c := range d[:9] {
		base = base*10 + uint64(c-'0')
	}
	check := uint64(d[9]-'0')*10 + uint64(d[10]-'0')
	if 97-base%97 != check && 97-(2_000_000_000+base)%97 != check {
		return nil, ErrInvalidNISS
	}
	// Month: 00-12 for national register numbers (00 when unknown), +20 or
	// +40 for BIS numbers.
	month := int(d[2]-'0')*10 + int(d[3]-'0')
	if month%20 > 12 || month > 52 {
		return nil, ErrInvalidNISS
	}
	return d, nil
}

// FormatNISS writes a normalized NISS as "YY.MM.DD-SSS.CC". It returns the
// input unchanged when it is not 11 digits.
func FormatNISS(b []byte) string {
	if len(b) != 11 {
		return string(b)
	}
	for _, c := range b {
		if c < '0' || c > '9' {
			return string(b)
		}
	}
	return fmt.Sprintf("%s.%s.%s-%s.%s", b[0:2], b[2:4], b[4:6], b[6:9], b[9:11])
}
