// Package keys holds the key material of pseudonymization domains and the
// stores it is read from.
//
// A domain (for example "prescriptions_v1") has a pseudonymization scalar k,
// held by the service only, and a set of transit keys (AES-256-GCM, one of
// them active) shared by the service and the domain's owners. See
// docs/PROTOCOL.md, "Domains and keys".
//
// Secret values are held in [Secret], which never prints its content.
//
// Domains are read through a [Source]: [FileStore] (one JSON file, for
// development mode) or keys/vault.Store (HashiCorp Vault KV v2, for
// production; a separate package so that programs without Vault do not
// import its client). Both also implement [Admin], used by cmd/pseudoctl.
// The service reads through a [Cache], which loads every domain at start,
// polls the source for changes and serves snapshots without I/O:
//
//	src, err := keys.OpenFileStore(path, true) // or vault.Open(ctx, cfg)
//	cache, err := keys.NewCache(ctx, src, &keys.CacheOptions{Interval: 10 * time.Second})
//	defer cache.Close()
//	d, err := cache.Domain("prescriptions_v1") // hot path: no I/O
//	err = cache.Health()                        // nil, or degraded (ErrUnavailable)
package keys

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// ScalarSize is the size of a domain scalar (a canonical ristretto255 scalar).
const ScalarSize = 32

// TransitKeySize is the size of a transit key (AES-256).
const TransitKeySize = 32

// DefaultTTL is the lifetime of a pseudonym in transit when a domain sets none.
const DefaultTTL = 5 * time.Minute

// DefaultMaxLifetime is the longest lifetime (exp − iat) of a transitInfo
// that the service accepts, when a domain sets none. Owners make transit
// forms with their own lifetimes (to hand a pseudonym to a doctor for a
// day, say); the service refuses longer ones, so that a transit pseudonym
// cannot be made valid for years.
const DefaultMaxLifetime = 24 * time.Hour

// Errors returned by stores.
var (
	ErrUnknownDomain = errors.New("keys: unknown domain")
	ErrUnavailable   = errors.New("keys: key store unavailable")
	ErrInvalid       = errors.New("keys: invalid key material")
)

// Secret is key material. It formats as "[redacted]" with every verb of the
// fmt and log/slog packages, so that it cannot end up in a log by accident,
// and refuses to be marshaled as text (encoding/json, YAML, ...): a store
// that writes keys converts them to []byte itself, on purpose.
type Secret []byte

// String implements fmt.Stringer.
func (Secret) String() string { return "[redacted]" }

// GoString implements fmt.GoStringer.
func (Secret) GoString() string { return "[redacted]" }

// Format implements fmt.Formatter.
func (Secret) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte("[redacted]")) }

// LogValue implements slog.LogValuer.
func (Secret) LogValue() slog.Value { return slog.StringValue("[redacted]") }

// errSecretText is the error of marshaling a Secret as text.
var errSecretText = errors.New("keys: a Secret is key material: it is never marshaled as text")

// MarshalText implements encoding.TextMarshaler by failing: a secret is
// never serialized by accident, and a value that holds one does not
// marshal quietly into something else (such as "[redacted]") either.
func (Secret) MarshalText() ([]byte, error) { return nil, errSecretText }

// Transit is the set of transit keys of one domain.
type Transit struct {
	// Active is the kid new transitInfo values are sealed under.
	Active string
	// Keys maps each accepted kid to its 32-byte AES-256-GCM key. Retired
	// kids are absent.
	Keys map[string]Secret
	// ActiveSince is when Active became active, by the administrator's
	// clock (UTC, second precision): set by a rotation, zero for the first
	// key or when unknown (rotated by an older version). A key made
	// inactive by that rotation may be retired once every pseudonym sealed
	// under it has expired (see docs/PROTOCOL.md). Stores keep it as
	// "active_since", RFC 3339, absent when zero.
	ActiveSince time.Time
}

// Policy says which principals may call which operation on a domain.
// Principals are the names the service derives from the caller's
// certificate or token. "*" matches every authenticated principal.
type Policy struct {
	// Pseudonymize lists who may pseudonymize into this domain.
	Pseudonymize []string `json:"pseudonymize,omitempty"`
	// Identify lists who may identify pseudonyms of this domain. Owners are
	// refused even when listed.
	Identify []string `json:"identify,omitempty"`
	// Convert maps a target domain to who may convert pseudonyms of this
	// domain into it.
	Convert map[string][]string `json:"convert,omitempty"`
	// Owners lists the principals of the domain's data owners. They may
	// never identify.
	Owners []string `json:"owners,omitempty"`
}

// Domain is everything the service holds for one domain. A *Domain returned
// by a store is a snapshot: it is never modified afterwards, and a change
// (rotation) yields a new *Domain.
type Domain struct {
	Name     string
	Audience string
	TTL      time.Duration
	// MaxLifetime is the longest lifetime (exp − iat) of a transitInfo the
	// service accepts for identify and convert. When set it is at least
	// TTL; zero means DefaultMaxLifetime, or TTL if that is longer (see
	// [Domain.EffectiveMaxLifetime]). Stores keep it as "max_lifetime", a
	// Go duration string, absent when zero.
	MaxLifetime time.Duration
	// Scalar is k, the 32-byte canonical encoding of a non-zero ristretto255
	// scalar; in split mode it is the service's share k₁. Owners never get
	// it: it is empty in what an owner reads.
	Scalar Secret
	// Mode says whether Scalar is k (ModeSingle) or the share k₁ of
	// k = k₁·k₂ (ModeSplit), from the domain's meta.
	Mode Mode
	// ShareGeneration is the generation of the share k₁ in split mode
	// (at least 1), zero in single mode or when Scalar is empty.
	ShareGeneration uint64
	// Share multiplies by the other share k₂ in split mode: set by the
	// store the service reads (keys/vault with the plugin), nil otherwise.
	Share   Multiplier
	Transit Transit
	Policy  Policy
	// Disabled domains keep their keys, but the service refuses every call
	// on them as for a domain that does not exist, until they are enabled
	// again (with the same keys: the same pseudonyms). Stores keep it as
	// "disabled": true in a domain's meta, absent when false.
	Disabled bool
	// Generation changes whenever any of the above changes, so that
	// consumers can cache what they derive from a snapshot.
	Generation uint64
}

// EffectiveMaxLifetime returns d.MaxLifetime, or when it is zero the longer
// of DefaultMaxLifetime and the TTL (DefaultTTL when zero).
func (d *Domain) EffectiveMaxLifetime() time.Duration {
	if d.MaxLifetime > 0 {
		return d.MaxLifetime
	}
	ttl := d.TTL
	if ttl <= 0 {
		ttl = DefaultTTL
	}
	return max(DefaultMaxLifetime, ttl)
}

// DomainOptions are the settings of a new domain that [DomainSpec] does not
// hold.
type DomainOptions struct {
	// MaxLifetime is the domain's [Domain].MaxLifetime; zero leaves it
	// unset (the default).
	MaxLifetime time.Duration
	// Split creates the domain in split mode (keys/vault with the key-share
	// plugin only): the plugin draws k₂, the store k₁, and k = k₁·k₂ never
	// exists anywhere. [FileStore] refuses it: development mode keeps the
	// single mode.
	Split bool
}

// Creator is implemented, next to [Admin], by the stores ([FileStore] and
// keys/vault.Store): it creates domains and new domain versions with every
// setting chosen by the administrator. cmd/pseudoctl uses it.
//
// Neither method checks the invariants that span domains (unique audiences,
// owners that may identify): see [ValidateSet], which cmd/pseudoctl runs
// before it calls them.
type Creator interface {
	// CreateDomainWith is [Admin].CreateDomain with opts.
	CreateDomainWith(ctx context.Context, spec DomainSpec, opts DomainOptions) (*Domain, error)
	// NewVersionWith is [Admin].NewVersion, except that the new domain,
	// spec.Name, is made from spec and opts (audience, TTL, max lifetime,
	// policy) instead of copying domain old: a new version needs its own
	// audience (see [NextVersionSpec] and [NextAudience]). The owners of
	// old may then convert from old to spec.Name. It fails with
	// ErrUnknownDomain when old does not exist, and ErrExists when
	// spec.Name does.
	NewVersionWith(ctx context.Context, old string, spec DomainSpec, opts DomainOptions) (*Domain, error)
}

// FormatMaxLifetime is how stores keep [Domain].MaxLifetime: a Go duration
// string ("24h0m0s"), empty when unset (zero).
func FormatMaxLifetime(d time.Duration) string {
	if d == 0 {
		return ""
	}
	return d.String()
}

// ParseMaxLifetime decodes what [FormatMaxLifetime] encodes: empty is unset
// (zero), anything else must be a positive Go duration. The error wraps
// [ErrInvalid].
func ParseMaxLifetime(s string) (time.Duration, error) {
	if s == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("%w: max lifetime %q is not a positive duration", ErrInvalid, s)
	}
	return d, nil
}

// RetireSkew is the clock skew the service tolerates on a transit
// pseudonym's iat and exp (internal/transit.Skew): a retirement waits for
// it on top of the lifetimes.
const RetireSkew = 60 * time.Second

// RetireAfter is the earliest time a transit key made inactive by the last
// rotation may be retired: ActiveSince plus the longest lifetime of a
// transit pseudonym the service accepts (the effective max lifetime, at
// least the ttl) plus [RetireSkew]. It is zero when ActiveSince is unknown.
func (d *Domain) RetireAfter() time.Time {
	if d.Transit.ActiveSince.IsZero() {
		return time.Time{}
	}
	return d.Transit.ActiveSince.Add(max(d.TTL, d.EffectiveMaxLifetime()) + RetireSkew)
}

// FormatActiveSince is how stores keep [Transit].ActiveSince: RFC 3339 in
// UTC, empty when zero.
func FormatActiveSince(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}

// ParseActiveSince decodes what [FormatActiveSince] encodes. The error wraps
// [ErrInvalid].
func ParseActiveSince(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%w: active_since %q is not an RFC 3339 time", ErrInvalid, s)
	}
	return t.UTC(), nil
}

// now is the clock of the stores' rotations; tests replace it.
var now = time.Now
