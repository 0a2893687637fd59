// Package transit seals and opens transitInfo, the compact JWE that carries
// the transit scalar s of a pseudonym in transit (docs/PROTOCOL.md,
// "transitInfo").
//
// A transitInfo is a compact JWE with alg "dir" and enc "A256GCM". Its
// protected header carries kid, aud, iat, exp and optionally sub; its payload
// carries "scalar" (base64url of the 32-byte scalar) and optional custom
// claims.
//
// Seal and Open are on the hot paths of the service and of owners, so they
// write and read the JWE themselves over crypto/cipher's AES-GCM: go-jose's
// compact open alone costs about a fifth of a scalar multiplication. Tests
// prove that go-jose (github.com/go-jose/go-jose/v4) opens everything Seal
// writes and that Open accepts nothing go-jose would refuse.
package transit

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/gtank/ristretto255"

	"github.com/ehealth-pseudo/pseudonymizer/internal/point"
	"github.com/ehealth-pseudo/pseudonymizer/protoerr"
)

// Skew is the clock skew tolerated on iat and exp.
const Skew = 60 * time.Second

// KeySize is the size of a transit key.
const KeySize = 32

// Errors, each distinct and usable with errors.Is. None carries key
// material or scalars; Open's unknown-kid error, a
// *protoerr.UnknownKidError, carries the kid and no other header value.
// The transitInfo errors are the protocol's errors of package protoerr,
// under the names this package has always used: the values are the same.
var (
	ErrMalformed       = protoerr.ErrMalformedTransitInfo
	ErrUnknownKid      = protoerr.ErrUnknownKid
	ErrBadTag          = protoerr.ErrBadTag
	ErrWrongAudience   = protoerr.ErrWrongAudience
	ErrExpired         = protoerr.ErrExpired
	ErrNotYetValid     = protoerr.ErrNotYetValid
	ErrSubjectMismatch = protoerr.ErrSubjectMismatch
	ErrLifetimeTooLong = protoerr.ErrLifetimeTooLong
	ErrKeyExhausted    = protoerr.ErrTransitKeyExhausted
	ErrInvalidClaims   = protoerr.ErrInvalidClaims

	// ErrNoActiveKey is the error of sealing with a key set that has no
	// active key, or of a key set whose active kid has no key.
	ErrNoActiveKey = errors.New("transit: no active transit key")
	// ErrInvalidKey is the error of a transit key that is not 32 bytes or
	// whose kid is empty or not UTF-8.
	ErrInvalidKey = errors.New("transit: invalid transit key")
)

// Header is the protected header of a transitInfo: readable by anyone,
// authenticated by the AEAD.
type Header struct {
	Kid string
	Aud string
	Iat int64 // seconds since the Unix epoch
	Exp int64 // seconds since the Unix epoch
	Sub string
}

// Expiry returns Exp as a time.
func (h *Header) Expiry() time.Time { return time.Unix(h.Exp, 0) }

// KeySet is a domain's set of transit keys, ready to seal and open.
// It is immutable and safe for concurrent use.
type KeySet struct {
	active string
	aeads  map[string]cipher.AEAD // by kid, for Seal and Open
}

// NewKeySet prepares the transit keys of a domain. active may be empty for a
// key set that only opens.
func NewKeySet(active string, keys map[string][]byte) (*KeySet, error) {
	ks := &KeySet{
		active: active,
		aeads:  make(map[string]cipher.AEAD, len(keys)),
	}
	for kid, k := range keys {
		if len(k) != KeySize || kid == "" || !validString(kid) {
			return nil, ErrInvalidKey
		}
		block, err := aes.NewCipher(k)
		if err != nil {
			return nil, ErrInvalidKey
		}
		aead, err := cipher.NewGCM(block)
		if err != nil {
			return nil, ErrInvalidKey
		}
		ks.aeads[kid] = aead
	}
	if active != "" && ks.aeads[active] == nil {
		return nil, ErrNoActiveKey
	}
	return ks, nil
}

// Active returns the kid new transitInfo values are sealed under.
func (ks *KeySet) Active() string { return ks.active }

// Has reports whether kid is an accepted key id.
func (ks *KeySet) Has(kid string) bool {
	_, ok := ks.aeads[kid]
	return ok
}

// Claims are the values sealed into a new transitInfo.
type Claims struct {
	Aud string
	Iat time.Time
	TTL time.Duration
	Sub string // optional: binds the pseudonym to one caller
	// Extra holds optional custom payload claims. "scalar" is reserved.
	Extra map[string]any
}

var b64 = base64.RawURLEncoding

// Seal writes a transitInfo carrying s under the active key. rnd supplies
// the 12-byte nonce (crypto/rand when nil).
func (ks *KeySet) Seal(s *ristretto255.Scalar, c *Claims, rnd io.Reader) (string, error) {
	if ks.active == "" {
		return "", ErrNoActiveKey
	}
	if c.Aud == "" || c.TTL <= 0 || !validString(c.Aud) || !validString(c.Sub) {
		return "", ErrInvalidClaims
	}
	if _, ok := c.Extra["scalar"]; ok {
		return "", ErrInvalidClaims
	}
	if rnd == nil {
		rnd = rand.Reader
	}
	aead := ks.aeads[ks.active]

	// Protected header, then its base64url form, which is also the AAD.
	var hdr [256]byte
	h := append(hdr[:0], `{"alg":"dir","enc":"A256GCM","kid":`...)
	h = appendString(h, ks.active)
	h = append(h, `,"aud":`...)
	h = appendString(h, c.Aud)
	iat := c.Iat.Unix()
	h = append(h, `,"iat":`...)
	h = strconv.AppendInt(h, iat, 10)
	h = append(h, `,"exp":`...)
	h = strconv.AppendInt(h, iat+int64((c.TTL+time.Second-1)/time.Second), 10)
	if c.Sub != "" {
		h = append(h, `,"sub":`...)
		h = appendString(h, c.Sub)
	}
	h = append(h, '}')

	// Payload.
	var pl [128]byte
	p := append(pl[:0], `{"scalar":"`...)
	sb := s.Bytes()
	p = b64.AppendEncode(p, sb)
	clear(sb)
	p = append(p, '"')
	if len(c.Extra) > 0 {
		extra, err := json.Marshal(c.Extra)
		if err != nil || len(extra) < 2 || extra[0] != '{' {
			return "", ErrInvalidClaims
		}
		if len(extra) > 2 {
			p = append(p, ',')
			p = append(p, extra[1:len(extra)-1]...)
		}
	}
	p = append(p, '}')

	var nonce [12]byte
	if _, err := io.ReadFull(rnd, nonce[:]); err != nil {
		clear(pl[:])
		return "", errors.New("transit: reading randomness failed")
	}

	n := b64.EncodedLen(len(h)) + 2 + b64.EncodedLen(len(nonce)) + 1 +
		b64.EncodedLen(len(p)) + 1 + b64.EncodedLen(aead.Overhead())
	out := make([]byte, 0, n+len(p)+aead.Overhead())
	out = b64.AppendEncode(out, h)
	aad := out[:len(out):len(out)]
	out = append(out, '.', '.')
	out = b64.AppendEncode(out, nonce[:])
	out = append(out, '.')
	// Encrypt into the spare capacity after the output, then encode.
	sealed := aead.Seal(out[n:n], nonce[:], p, aad)
	clear(p)
	ct, tag := sealed[:len(sealed)-aead.Overhead()], sealed[len(sealed)-aead.Overhead():]
	out = b64.AppendEncode(out, ct)
	out = append(out, '.')
	out = b64.AppendEncode(out, tag)
	str := string(out)
	clear(out[:cap(out)])
	return str, nil
}

// Check says what Open verifies besides the key.
type Check struct {
	// Aud is the expected audience (required).
	Aud string
	// Now is the time to check iat and exp against.
	Now time.Time
	// Sub, when not empty, is the caller: a transitInfo bound to another
	// subject is refused. A transitInfo without sub is accepted.
	Sub string
	// RequireSub refuses a transitInfo whose sub is not Sub, including one
	// without sub.
	RequireSub bool
	// AnySub skips the sub check (an owner that expects no subject).
	AnySub bool
	// SkipExpiry skips the exp check (recovery of stored transit forms).
	SkipExpiry bool
	// MaxLifetime, when positive, refuses a transitInfo whose exp is more
	// than MaxLifetime after its iat (ErrLifetimeTooLong): whoever holds a
	// transit key cannot make a transit pseudonym valid for years.
	MaxLifetime time.Duration
}

// Opened is the content of a transitInfo.
type Opened struct {
	Header Header
	Scalar *ristretto255.Scalar
	// Extra holds the custom payload claims, if any.
	Extra map[string]json.RawMessage
}

// MaxLen bounds the length of a transitInfo accepted by Open.
const MaxLen = 4096

// parseHeader decodes a protected header strictly: a single JSON object
// whose members are exactly named (case-sensitive), each at most once, from
// alg, enc, kid, aud, iat and exp (all required) and sub (optional, not
// empty); strings are strings, iat and exp are integers. Whitespace is
// allowed where JSON allows it. It is written by hand because it is on the
// hot path of every open; FuzzJWEDifferential checks it against go-jose.
func parseHeader(hj []byte) (*Header, error) {
	var h Header
	var alg, enc string
	var seen uint8
	i := skipSpace(hj, 0)
	if i >= len(hj) || hj[i] != '{' {
		return nil, ErrMalformed
	}
	i = skipSpace(hj, i+1)
	if i < len(hj) && hj[i] == '}' {
		return nil, ErrMalformed // empty object: required members missing
	}
	for {
		name, j, ok := jsonString(hj, i)
		if !ok {
			return nil, ErrMalformed
		}
		i = skipSpace(hj, j)
		if i >= len(hj) || hj[i] != ':' {
			return nil, ErrMalformed
		}
		i = skipSpace(hj, i+1)
		var bit uint8
		var str *string
		var num *int64
		switch name {
		case "alg":
			bit, str = 1, &alg
		case "enc":
			bit, str = 2, &enc
		case "kid":
			bit, str = 4, &h.Kid
		case "aud":
			bit, str = 8, &h.Aud
		case "sub":
			bit, str = 16, &h.Sub
		case "iat":
			bit, num = 32, &h.Iat
		case "exp":
			bit, num = 64, &h.Exp
		default:
			return nil, ErrMalformed
		}
		if seen&bit != 0 {
			return nil, ErrMalformed
		}
		seen |= bit
		if str != nil {
			v, j, ok := jsonString(hj, i)
			if !ok || v == "" {
				return nil, ErrMalformed
			}
			*str, i = v, j
		} else {
			v, j, ok := jsonInt(hj, i)
			if !ok {
				return nil, ErrMalformed
			}
			*num, i = v, j
		}
		i = skipSpace(hj, i)
		if i >= len(hj) {
			return nil, ErrMalformed
		}
		if hj[i] == '}' {
			break
		}
		if hj[i] != ',' {
			return nil, ErrMalformed
		}
		i = skipSpace(hj, i+1)
	}
	if skipSpace(hj, i+1) != len(hj) {
		return nil, ErrMalformed
	}
	if seen|16 != 127 || alg != "dir" || enc != "A256GCM" {
		return nil, ErrMalformed
	}
	return &h, nil
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// jsonString reads the JSON string that starts at b[i]. Strings without
// escapes are taken as they are (valid UTF-8, no control characters);
// strings with escapes are decoded by encoding/json.
func jsonString(b []byte, i int) (string, int, bool) {
	if i >= len(b) || b[i] != '"' {
		return "", i, false
	}
	escaped := false
	for j := i + 1; j < len(b); j++ {
		switch c := b[j]; {
		case c == '\\':
			escaped = true
			j++ // skip the escaped byte; encoding/json checks the escape
		case c == '"':
			if !escaped {
				raw := b[i+1 : j]
				if !utf8.Valid(raw) {
					return "", i, false
				}
				return string(raw), j + 1, true
			}
			var s string
			if json.Unmarshal(b[i:j+1], &s) != nil || !utf8.ValidString(s) {
				return "", i, false
			}
			return s, j + 1, true
		case c < 0x20:
			return "", i, false
		}
	}
	return "", i, false
}

// jsonInt reads a JSON integer (no fraction, no exponent) at b[i].
func jsonInt(b []byte, i int) (int64, int, bool) {
	j := i
	if j < len(b) && b[j] == '-' {
		j++
	}
	start := j
	for j < len(b) && b[j] >= '0' && b[j] <= '9' {
		j++
	}
	if j == start || (b[start] == '0' && j-start > 1) {
		return 0, i, false
	}
	if j < len(b) && (b[j] == '.' || b[j] == 'e' || b[j] == 'E') {
		return 0, i, false
	}
	n, err := strconv.ParseInt(string(b[i:j]), 10, 64)
	if err != nil {
		return 0, i, false
	}
	return n, j, true
}

// parts splits a compact JWE into its five parts and decodes the protected
// header strictly: alg "dir" (so an empty encrypted key), enc "A256GCM",
// kid, aud, iat and exp present, sub a non-empty string when present, no
// other member (in particular no "typ", "cty", "crit" and no "zip"). CR
// and LF are refused anywhere: Go's base64 decoder would skip them, and a
// transitInfo has one text form.
func parts(ti string) (h *Header, p [5]string, err error) {
	if len(ti) > MaxLen || strings.ContainsAny(ti, "\r\n") {
		return nil, p, ErrMalformed
	}
	rest := ti
	for i := range 4 {
		j := strings.IndexByte(rest, '.')
		if j < 0 {
			return nil, p, ErrMalformed
		}
		p[i], rest = rest[:j], rest[j+1:]
	}
	p[4] = rest
	if strings.IndexByte(rest, '.') >= 0 || p[1] != "" {
		return nil, p, ErrMalformed
	}
	var buf [512]byte
	hj, err := b64s.AppendDecode(buf[:0], []byte(p[0]))
	if err != nil {
		return nil, p, ErrMalformed
	}
	h, err = parseHeader(hj)
	return h, p, err
}

var b64s = base64.RawURLEncoding.Strict()

// ParseHeader reads the protected header of a transitInfo without opening
// it. The values are not authenticated: use them only to decide whether a
// transitInfo is still worth sending.
func ParseHeader(ti string) (*Header, error) {
	h, _, err := parts(ti)
	return h, err
}

const (
	scalarPrefix = `{"scalar":"`
	scalarLen    = len(scalarPrefix) + 43 + len(`"}`)
)

// Open authenticates and decrypts a transitInfo with the key its kid names,
// then checks aud, iat, exp, the lifetime and sub (in that order), each failure being a
// distinct error. Parsing is strict (see ParseHeader); a fuzz test checks
// that go-jose accepts all that Open accepts, with the same plaintext.
func (ks *KeySet) Open(ti string, c *Check) (*Opened, error) {
	h, p, err := parts(ti)
	if err != nil {
		return nil, err
	}
	aead, ok := ks.aeads[h.Kid]
	if !ok {
		return nil, &protoerr.UnknownKidError{Kid: h.Kid}
	}
	// Lengths first: a fixed-size array is only ever decoded into from a
	// text of exactly the length that fills it.
	var nonce [12]byte
	var tag [16]byte
	if len(p[2]) != b64.EncodedLen(len(nonce)) || len(p[4]) != b64.EncodedLen(len(tag)) {
		return nil, ErrMalformed
	}
	if n, err := b64s.Decode(nonce[:], []byte(p[2])); err != nil || n != len(nonce) {
		return nil, ErrMalformed
	}
	if n, err := b64s.Decode(tag[:], []byte(p[4])); err != nil || n != len(tag) {
		return nil, ErrMalformed
	}
	var buf [256]byte
	ct, err := b64s.AppendDecode(buf[:0], []byte(p[3]))
	if err != nil {
		return nil, ErrMalformed
	}
	ct = append(ct, tag[:]...)
	pt, err := aead.Open(ct[:0], nonce[:], ct, []byte(p[0]))
	defer clear(ct[:cap(ct)])
	if err != nil {
		return nil, ErrBadTag
	}
	if err := c.verify(h); err != nil {
		return nil, err
	}
	o := &Opened{Header: *h}
	var sb [point.Size]byte
	var sbErr error
	if len(pt) == scalarLen && string(pt[:len(scalarPrefix)]) == scalarPrefix && string(pt[scalarLen-2:]) == `"}` {
		// The common payload, as Seal writes it: exactly 43 characters,
		// which decode to exactly 32 bytes.
		var n int
		n, sbErr = b64s.Decode(sb[:], pt[len(scalarPrefix):scalarLen-2])
		if n != point.Size {
			sbErr = ErrMalformed
		}
	} else {
		var raw map[string]json.RawMessage
		if err := json.Unmarshal(pt, &raw); err != nil {
			return nil, ErrMalformed
		}
		var enc string
		if err := json.Unmarshal(raw["scalar"], &enc); err != nil {
			return nil, ErrMalformed
		}
		if len(enc) != b64.EncodedLen(point.Size) {
			return nil, ErrMalformed
		}
		var n int
		n, sbErr = b64s.Decode(sb[:], []byte(enc))
		if n != point.Size {
			sbErr = ErrMalformed
		}
		delete(raw, "scalar")
		if len(raw) > 0 {
			o.Extra = raw
		}
	}
	if sbErr != nil {
		return nil, ErrMalformed
	}
	o.Scalar, err = point.DecodeScalar(sb[:])
	clear(sb[:])
	if err != nil {
		return nil, ErrMalformed
	}
	return o, nil
}

func (c *Check) verify(h *Header) error {
	if h.Aud != c.Aud {
		return ErrWrongAudience
	}
	now := c.Now.Unix()
	skew := int64(Skew / time.Second)
	if h.Iat > now+skew {
		return ErrNotYetValid
	}
	if !c.SkipExpiry && h.Exp < now-skew {
		return ErrExpired
	}
	// exp > iat first, so that the difference cannot overflow.
	if c.MaxLifetime > 0 && h.Exp > h.Iat && uint64(h.Exp)-uint64(h.Iat) > uint64(c.MaxLifetime/time.Second) {
		return ErrLifetimeTooLong
	}
	if !c.AnySub && (h.Sub != "" || c.RequireSub) { // not secret: plain compare
		if h.Sub != c.Sub {
			return ErrSubjectMismatch
		}
	}
	return nil
}

// validString reports whether s can go into a header as is: valid UTF-8.
func validString(s string) bool { return utf8.ValidString(s) }

// appendString appends s as a JSON string.
func appendString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c < 0x20:
			b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		default:
			b = append(b, c)
		}
	}
	return append(b, '"')
}
