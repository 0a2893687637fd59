package keys

import (
	"crypto/rand"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"

	"github.com/gtank/ristretto255"
)

// FirstKid is the id of the first transit key of a new domain.
const FirstKid = "t1"

// NewScalar returns the canonical encoding of a uniformly random, non-zero
// ristretto255 scalar, drawn from 64 bytes of rnd (crypto/rand when nil).
func NewScalar(rnd io.Reader) (Secret, error) {
	if rnd == nil {
		rnd = rand.Reader
	}
	var wide [64]byte
	zero := ristretto255.NewScalar()
	for range 8 {
		if _, err := io.ReadFull(rnd, wide[:]); err != nil {
			return nil, fmt.Errorf("keys: reading randomness: %v", err)
		}
		s, err := ristretto255.NewScalar().SetUniformBytes(wide[:])
		if err != nil {
			return nil, fmt.Errorf("keys: %v", err)
		}
		clear(wide[:])
		if s.Equal(zero) == 0 {
			return Secret(s.Bytes()), nil
		}
	}
	return nil, fmt.Errorf("keys: the random source keeps returning zero scalars")
}

// NewTransitKey returns a new 32-byte AES-256-GCM key read from rnd
// (crypto/rand when nil).
func NewTransitKey(rnd io.Reader) (Secret, error) {
	if rnd == nil {
		rnd = rand.Reader
	}
	k := make(Secret, TransitKeySize)
	if _, err := io.ReadFull(rnd, k); err != nil {
		return nil, fmt.Errorf("keys: reading randomness: %v", err)
	}
	return k, nil
}

// NextKid returns the id for a new transit key: "t" followed by one more than
// the largest number of the "t<n>" ids given (the accepted kids and any kid
// that was ever stored), so that a kid is never reused.
func NextKid(kids ...string) string {
	max := 0
	for _, kid := range kids {
		if n, ok := kidNumber(kid); ok && n > max {
			max = n
		}
	}
	return "t" + strconv.Itoa(max+1)
}

func kidNumber(kid string) (int, bool) {
	rest, ok := strings.CutPrefix(kid, "t")
	if !ok || rest == "" || rest[0] == '0' {
		return 0, false
	}
	n, err := strconv.Atoi(rest)
	return n, err == nil && n > 0
}

// sortKids sorts kids, "t<n>" ids by number first, then the others.
func sortKids(kids []string) {
	slices.SortFunc(kids, func(a, b string) int {
		na, oka := kidNumber(a)
		nb, okb := kidNumber(b)
		switch {
		case oka && okb:
			return na - nb
		case oka:
			return -1
		case okb:
			return 1
		}
		return strings.Compare(a, b)
	})
}

// GenerateDomain returns a new domain for spec, with a random scalar and one
// transit key, FirstKid, both read from rnd (crypto/rand when nil). The
// result is validated.
func GenerateDomain(spec DomainSpec, rnd io.Reader) (*Domain, error) {
	return GenerateDomainWith(spec, DomainOptions{}, rnd)
}

// GenerateDomainWith is [GenerateDomain] with opts.
func GenerateDomainWith(spec DomainSpec, opts DomainOptions, rnd io.Reader) (*Domain, error) {
	k, err := NewScalar(rnd)
	if err != nil {
		return nil, err
	}
	tk, err := NewTransitKey(rnd)
	if err != nil {
		return nil, err
	}
	ttl := spec.TTL
	if ttl == 0 {
		ttl = DefaultTTL
	}
	d := &Domain{
		Name:        spec.Name,
		Audience:    spec.Audience,
		TTL:         ttl,
		Scalar:      k,
		Transit:     Transit{Active: FirstKid, Keys: map[string]Secret{FirstKid: tk}},
		Policy:      spec.Policy.Clone(),
		MaxLifetime: opts.MaxLifetime,
	}
	if err := d.Validate(); err != nil {
		return nil, err
	}
	return d, nil
}

// NextVersionSpec returns the spec of the domain that replaces old under the
// name newName: its own audience, NextAudience(old.Audience, newName)
// (audiences are unique, see [ValidateSet]), and the same TTL and policy.
// See [Admin].NewVersion; [Creator].NewVersionWith takes another audience.
func NextVersionSpec(old *Domain, newName string) (DomainSpec, error) {
	if old.Name == newName {
		return DomainSpec{}, fmt.Errorf("%w: new version of %q must have another name", ErrInvalid, old.Name)
	}
	if !ValidName(newName) {
		return DomainSpec{}, fmt.Errorf("%w: domain name %q: want 1 to %d characters from [a-z0-9_.-]", ErrInvalid, newName, MaxNameLen)
	}
	return DomainSpec{Name: newName, Audience: NextAudience(old.Audience, newName), TTL: old.TTL, Policy: old.Policy.Clone()}, nil
}

// Clone returns a deep copy of p.
func (p Policy) Clone() Policy {
	c := Policy{
		Pseudonymize: slices.Clone(p.Pseudonymize),
		Identify:     slices.Clone(p.Identify),
		Owners:       slices.Clone(p.Owners),
	}
	if p.Convert != nil {
		c.Convert = make(map[string][]string, len(p.Convert))
		for k, v := range p.Convert {
			c.Convert[k] = slices.Clone(v)
		}
	}
	return c
}

// WithConvert returns a copy of p that also lets principals convert into
// target.
func (p Policy) WithConvert(target string, principals []string) Policy {
	c := p.Clone()
	if len(principals) == 0 {
		return c
	}
	if c.Convert == nil {
		c.Convert = map[string][]string{}
	}
	l := c.Convert[target]
	for _, pr := range principals {
		if !slices.Contains(l, pr) {
			l = append(l, pr)
		}
	}
	c.Convert[target] = l
	return c
}

// clone returns a deep copy of t.
func (t Transit) clone() Transit {
	c := Transit{Active: t.Active, Keys: make(map[string]Secret, len(t.Keys)), ActiveSince: t.ActiveSince}
	for kid, k := range t.Keys {
		c.Keys[kid] = slices.Clone(k)
	}
	return c
}

// clone returns a deep copy of d.
func (d *Domain) clone() *Domain {
	c := *d
	c.Scalar = slices.Clone(d.Scalar)
	c.Transit = d.Transit.clone()
	c.Policy = d.Policy.Clone()
	return &c
}

// NextAudience returns the audience proposed for newName, a new version of a
// domain whose audience is aud:
//
//   - when aud ends with a version "v<digits>" that follows one of ':' '/'
//     '.' '_' '-', and newName ends with a version the same way, the version
//     of aud is replaced by that of newName:
//     "urn:ehealth:pseudo:prescriptions:v1" for prescriptions_v2 gives
//     "urn:ehealth:pseudo:prescriptions:v2";
//   - otherwise ":" and newName are appended: "urn:be:ehealth:prescriptions"
//     for prescriptions_v2 gives
//     "urn:be:ehealth:prescriptions:prescriptions_v2".
//
// The result may still be unusable (longer than [ValidAudience] allows, or
// the audience of another domain): callers check.
func NextAudience(aud, newName string) string {
	if prefix, _, ok := cutVersion(aud); ok {
		if _, v, ok := cutVersion(newName); ok {
			return prefix + v
		}
	}
	return aud + ":" + newName
}

// cutVersion splits s before a trailing "v<digits>" that follows one of
// ':' '/' '.' '_' '-'.
func cutVersion(s string) (prefix, version string, ok bool) {
	i := strings.LastIndexByte(s, 'v')
	if i < 1 || i == len(s)-1 || !strings.ContainsRune(":/._-", rune(s[i-1])) {
		return "", "", false
	}
	for _, c := range []byte(s[i+1:]) {
		if c < '0' || c > '9' {
			return "", "", false
		}
	}
	return s[:i], s[i:], true
}
