// Package keys holds the key material of pseudonymization domains and the
// stores it is read from.
//
// A domain (for example "prescriptions_v1") has a pseudonymization scalar k,
// held by the service only, and a set of transit keys (AES-256-GCM, one of
// them active) shared by the service and the domain's owners. See
// PROTOCOL.md, "Domains and keys".
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
// fmt and log/slog packages, so that it cannot end up in a log by accident.
type Secret []byte

// String implements fmt.Stringer.
func (Secret) String() string { return "[redacted]" }

// GoString implements fmt.GoStringer.
func (Secret) GoString() string { return "[redacted]" }

// Format implements fmt.Formatter.
func (Secret) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte("[redacted]")) }

// LogValue implements slog.LogValuer.
func (Secret) LogValue() slog.Value { return slog.StringValue("[redacted]") }

// MarshalText refuses to serialize a secret by accident (JSON, YAML, ...).
func (Secret) MarshalText() ([]byte, error) { return []byte("[redacted]"), nil }

// Transit is the set of transit keys of one domain.
type Transit struct {
	// Active is the kid new transitInfo values are sealed under.
	Active string
	// Keys maps each accepted kid to its 32-byte AES-256-GCM key. Retired
	// kids are absent.
	Keys map[string]Secret
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
	// service accepts for identify and convert; DefaultMaxLifetime when zero.
	// It is at least TTL.
	MaxLifetime time.Duration
	// Scalar is k, the 32-byte canonical encoding of a non-zero ristretto255
	// scalar. Owners never get it: it is empty in what an owner reads.
	Scalar  Secret
	Transit Transit
	Policy  Policy
	// Generation changes whenever any of the above changes, so that
	// consumers can cache what they derive from a snapshot.
	Generation uint64
}
