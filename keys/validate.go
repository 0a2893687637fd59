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
// [ValidAudience]), a positive TTL, the max lifetime when set (positive, at
// least the TTL), the scalar when present (see [CheckScalar]; owners read
// domains without it), the transit keys (the active kid is present, every
// key is 32 bytes) and the policy: no empty principal, convert targets are
// domain names, and "*" is not an owner (owners may never identify, so "*"
// there would be nonsense). Errors wrap [ErrInvalid] and never contain key
// material.
//
// Validate sees one domain only: see [ValidateSet] for the invariants that
// span domains.
func (d *Domain) Validate() error {
	if err := d.ValidateSettings(); err != nil {
		return err
	}
	if len(d.Scalar) != 0 {
		if err := CheckScalar(d.Scalar); err != nil {
			return fmt.Errorf("domain %q: %w", d.Name, err)
		}
	}
	switch d.Mode {
	case ModeSingle:
		if d.ShareGeneration != 0 {
			return fmt.Errorf("%w: domain %q: a share generation in single mode", ErrInvalid, d.Name)
		}
	case ModeSplit:
		if len(d.Scalar) != 0 && d.ShareGeneration == 0 {
			return fmt.Errorf("%w: domain %q: split share without a generation", ErrInvalid, d.Name)
		}
	default:
		return fmt.Errorf("%w: domain %q: mode %q is neither single nor split", ErrInvalid, d.Name, string(d.Mode))
	}
	if err := d.Transit.validate(); err != nil {
		return fmt.Errorf("domain %q: %w", d.Name, err)
	}
	return nil
}

// ValidateSettings is [Domain.Validate] without the keys: name, audience,
// ttl, max lifetime and policy. Stores use it to check a change of settings
// without reading the keys.
func (d *Domain) ValidateSettings() error {
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
	if d.MaxLifetime < 0 {
		return fmt.Errorf("%w: domain %q: max lifetime %v is not positive", ErrInvalid, d.Name, d.MaxLifetime)
	}
	if d.MaxLifetime > 0 && d.MaxLifetime < d.TTL {
		return fmt.Errorf("%w: domain %q: max lifetime %v is shorter than the ttl %v", ErrInvalid, d.Name, d.MaxLifetime, d.TTL)
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
	if slices.Contains(p.Owners, "*") {
		return fmt.Errorf("%w: policy: \"*\" cannot be an owner: name each owner (owners may never identify)", ErrInvalid)
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

// ValidateSet checks the invariants that span the domains of a key store,
// which [Domain.Validate] cannot see:
//
//   - audiences are unique, so that a transit pseudonym made for one domain
//     never opens in another (compared as strings, exactly);
//   - owners never identify: a principal listed in the Owners of any domain
//     may not be named in the Identify list of any domain, its own or
//     another. "*" in Identify is allowed: the service refuses owners (see
//     [Owners]) whatever the policy says.
//
// It returns nil when the set is consistent, and otherwise an error for each
// domain involved in a violation, keyed by domain name. Both domains of a
// violation get one: for a shared audience, each names the other(s); for an
// owner that may identify, the domain whose Identify names the principal
// and the domain it owns, each naming the principal and the other domain.
// Each error wraps [ErrInvalid] and reads "keys: invalid key material:
// domain "x": " followed by the domain's violations, sorted and separated by
// "; ". The result depends only on the set of domains, not on their order.
// Nil entries are skipped; names are expected to be unique, as in a store.
func ValidateSet(domains []*Domain) map[string]error {
	ds := slices.DeleteFunc(slices.Clone(domains), func(d *Domain) bool { return d == nil })
	slices.SortFunc(ds, func(a, b *Domain) int {
		if c := strings.Compare(a.Name, b.Name); c != 0 {
			return c
		}
		return strings.Compare(a.Audience, b.Audience)
	})
	problems := map[string][]string{}
	add := func(domain, format string, a ...any) {
		problems[domain] = append(problems[domain], fmt.Sprintf(format, a...))
	}

	byAudience := map[string][]string{} // audience → domain names, sorted
	for _, d := range ds {
		byAudience[d.Audience] = append(byAudience[d.Audience], d.Name)
	}
	for _, d := range ds {
		others := slices.DeleteFunc(slices.Clone(byAudience[d.Audience]), func(n string) bool { return n == d.Name })
		if len(others) > 0 {
			add(d.Name, "audience %q is also the audience of %s: audiences must be unique", d.Audience, quoteDomains(others))
		}
	}

	// Owners never identify, and never pseudonymize either: an owner that
	// pseudonymizes identifiers of its choice and opens the results gets
	// the pseudonyms at rest of those identifiers, a dictionary that
	// re-identifies its own data.
	owned := ownedDomains(ds)
	for _, d := range ds {
		for _, op := range []struct {
			verb string
			list []string
		}{{"identify", d.Policy.Identify}, {"pseudonymize", d.Policy.Pseudonymize}} {
			list := slices.Clone(op.list)
			slices.Sort(list)
			for _, p := range slices.Compact(list) {
				for _, o := range owned[p] {
					if o == d.Name {
						add(d.Name, "%q is both an owner and allowed to %s: owners may never %s", p, op.verb, op.verb)
						continue
					}
					add(d.Name, "policy lets %q %s, but %q owns domain %q: owners may never %s", p, op.verb, p, o, op.verb)
					add(o, "owner %q may %s in domain %q: owners may never %s", p, op.verb, d.Name, op.verb)
				}
			}
		}
	}

	if len(problems) == 0 {
		return nil
	}
	errs := make(map[string]error, len(problems))
	for name, msgs := range problems {
		slices.Sort(msgs)
		errs[name] = fmt.Errorf("%w: domain %q: %s", ErrInvalid, name, strings.Join(slices.Compact(msgs), "; "))
	}
	return errs
}

// Owners returns the set of principals listed in the Owners of any of the
// domains (nil entries are skipped). The service refuses identify to each of
// them in every domain, even where Identify is "*". A "*" is included as
// listed, although [Domain.Validate] refuses it: a caller that meets it
// should treat every principal as an owner.
func Owners(domains []*Domain) map[string]bool {
	owners := map[string]bool{}
	for _, d := range domains {
		if d == nil {
			continue
		}
		for _, o := range d.Policy.Owners {
			owners[o] = true
		}
	}
	return owners
}

// ownedDomains maps each owner to the names of the domains it owns, sorted
// and without repetition; ds is sorted by name.
func ownedDomains(ds []*Domain) map[string][]string {
	owned := map[string][]string{}
	for _, d := range ds {
		for _, o := range d.Policy.Owners {
			if l := owned[o]; len(l) == 0 || l[len(l)-1] != d.Name {
				owned[o] = append(l, d.Name)
			}
		}
	}
	return owned
}

// quoteDomains formats domain names for a message: domain "a", or domains
// "a", "b".
func quoteDomains(names []string) string {
	q := make([]string, len(names))
	for i, n := range names {
		q[i] = fmt.Sprintf("%q", n)
	}
	if len(q) == 1 {
		return "domain " + q[0]
	}
	return "domains " + strings.Join(q, ", ")
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
