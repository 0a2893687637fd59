package keys

import (
	"fmt"
	"log/slog"
	"net/url"
	"slices"
	"strings"

	"github.com/gtank/ristretto255"
)

// MaxNameLen is the maximum length of a domain name, a kid or an owner name.
const MaxNameLen = 64

// ValidName reports whether name is a valid domain name: 1 to 64 characters
// from [a-z0-9_.-], starting with a letter or a digit. Domain names are used
// as path elements in Vault, so the set is deliberately small.
func ValidName(name string) bool {
	return validToken(name, func(c byte) bool {
		return c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '.' || c == '-'
	})
}

// ValidKid reports whether kid is a valid transit key id: 1 to 64 characters
// from [A-Za-z0-9_.-], starting with a letter or a digit.
func ValidKid(kid string) bool { return validToken(kid, isPathChar) }

// ValidOwner reports whether owner can name an owner in a key store path
// (owner second keys): 1 to 64 characters from [A-Za-z0-9_.@-], starting
// with a letter or a digit.
func ValidOwner(owner string) bool {
	return validToken(owner, func(c byte) bool { return isPathChar(c) || c == '@' })
}

func isPathChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '.' || c == '-'
}

func validToken(s string, ok func(byte) bool) bool {
	if len(s) == 0 || len(s) > MaxNameLen {
		return false
	}
	first := s[0]
	if !(first >= 'a' && first <= 'z' || first >= 'A' && first <= 'Z' || first >= '0' && first <= '9') {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !ok(s[i]) {
			return false
		}
	}
	return true
}

// ValidAudience reports whether aud is an absolute URI (it has a scheme), such
// as "urn:ehealth:pseudo:prescriptions:v1" or "https://example.org/d/x".
func ValidAudience(aud string) bool {
	if aud == "" || len(aud) > 1024 || strings.TrimSpace(aud) != aud {
		return false
	}
	u, err := url.Parse(aud)
	return err == nil && u.Scheme != "" && (u.Opaque != "" || u.Host != "" || u.Path != "")
}

// CheckScalar reports whether b is the 32-byte canonical encoding of a
// non-zero ristretto255 scalar. The error wraps [ErrInvalid] and never
// contains the value.
func CheckScalar(b []byte) error {
	if len(b) != ScalarSize {
		return fmt.Errorf("%w: scalar is %d bytes, want %d", ErrInvalid, len(b), ScalarSize)
	}
	s, err := ristretto255.NewScalar().SetCanonicalBytes(b)
	if err != nil {
		return fmt.Errorf("%w: scalar is not canonical", ErrInvalid)
	}
	if s.Equal(ristretto255.NewScalar()) == 1 {
		return fmt.Errorf("%w: scalar is zero", ErrInvalid)
	}
	return nil
}

// Validate checks a domain: its name (see [ValidName]), its audience (see
// [ValidAudience]), a positive TTL, the scalar when present (see
// [CheckScalar]; owners read domains without it), the transit keys (the
// active kid is present, every key is 32 bytes) and the policy's domain
// names. Errors wrap [ErrInvalid] and never contain key material.
func (d *Domain) Validate() error {
	if d == nil {
		return fmt.Errorf("%w: nil domain", ErrInvalid)
	}
	if !ValidName(d.Name) {
		return fmt.Errorf("%w: domain name %q: want 1 to %d characters from [a-z0-9_.-]", ErrInvalid, d.Name, MaxNameLen)
	}
	if !ValidAudience(d.Audience) {
		return fmt.Errorf("%w: domain %q: audience %q is not an absolute URI", ErrInvalid, d.Name, d.Audience)
	}
	if d.TTL <= 0 {
		return fmt.Errorf("%w: domain %q: ttl %v is not positive", ErrInvalid, d.Name, d.TTL)
	}
	if len(d.Scalar) != 0 {
		if err := CheckScalar(d.Scalar); err != nil {
			return fmt.Errorf("domain %q: %w", d.Name, err)
		}
	}
	if err := d.Transit.validate(); err != nil {
		return fmt.Errorf("domain %q: %w", d.Name, err)
	}
	if err := d.Policy.validate(); err != nil {
		return fmt.Errorf("domain %q: %w", d.Name, err)
	}
	return nil
}

func (t *Transit) validate() error {
	if len(t.Keys) == 0 {
		return fmt.Errorf("%w: no transit key", ErrInvalid)
	}
	if _, ok := t.Keys[t.Active]; !ok {
		return fmt.Errorf("%w: active transit key %q is not among the accepted keys", ErrInvalid, t.Active)
	}
	for kid, k := range t.Keys {
		if !ValidKid(kid) {
			return fmt.Errorf("%w: transit key id %q: want 1 to %d characters from [A-Za-z0-9_.-]", ErrInvalid, kid, MaxNameLen)
		}
		if len(k) != TransitKeySize {
			return fmt.Errorf("%w: transit key %q is %d bytes, want %d", ErrInvalid, kid, len(k), TransitKeySize)
		}
	}
	return nil
}

func (p *Policy) validate() error {
	for _, l := range [][]string{p.Pseudonymize, p.Identify, p.Owners} {
		if slices.Contains(l, "") {
			return fmt.Errorf("%w: empty principal in policy", ErrInvalid)
		}
	}
	for target, l := range p.Convert {
		if !ValidName(target) {
			return fmt.Errorf("%w: policy: convert target %q is not a domain name", ErrInvalid, target)
		}
		if slices.Contains(l, "") {
			return fmt.Errorf("%w: empty principal in policy", ErrInvalid)
		}
	}
	return nil
}

// Kids returns the accepted transit key ids, sorted.
func (t *Transit) Kids() []string {
	kids := make([]string, 0, len(t.Keys))
	for kid := range t.Keys {
		kids = append(kids, kid)
	}
	sortKids(kids)
	return kids
}

// String describes the domain without any key material.
func (d *Domain) String() string {
	if d == nil {
		return "domain(nil)"
	}
	return fmt.Sprintf("domain(%s active=%s kids=%v gen=%d)", d.Name, d.Transit.Active, d.Transit.Kids(), d.Generation)
}

// LogValue implements slog.LogValuer: it logs the domain without any key
// material.
func (d *Domain) LogValue() slog.Value {
	if d == nil {
		return slog.StringValue("domain(nil)")
	}
	return slog.GroupValue(
		slog.String("name", d.Name),
		slog.String("active", d.Transit.Active),
		slog.Any("kids", d.Transit.Kids()),
		slog.Uint64("generation", d.Generation),
	)
}
