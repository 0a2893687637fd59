package keys

import (
	"context"
	"errors"
	"time"
)

// More errors returned by stores. Each store error wraps one of these or
// [ErrUnknownDomain], [ErrUnavailable], [ErrInvalid].
var (
	// ErrExists is returned when creating a domain or an owner key that
	// already exists.
	ErrExists = errors.New("keys: already exists")
	// ErrConflict is returned when another administrator changed the same
	// domain at the same time (a failed check-and-set). Retry the operation.
	ErrConflict = errors.New("keys: concurrent modification, retry")
	// ErrDenied is returned when the key store refuses access (for example a
	// Vault policy that does not grant the path).
	ErrDenied = errors.New("keys: access denied by the key store")
	// ErrActiveKey is returned when retiring the active transit key: rotate
	// first.
	ErrActiveKey = errors.New("keys: cannot retire the active transit key")
	// ErrUnknownKey is returned for a transit key id or an owner key that
	// the domain does not have.
	ErrUnknownKey = errors.New("keys: unknown key")
)

// Source returns domain keys. It is what the service and the owners read
// through, usually via a [Cache]. Implementations ([FileStore] and
// keys/vault.Store) must be safe for concurrent use.
type Source interface {
	// Domain reads one domain from the store, now. The result is valid (see
	// [Domain.Validate]) and its Generation equals what Version returns for
	// the same state of the store. Errors wrap ErrUnknownDomain,
	// ErrUnavailable, ErrDenied or ErrInvalid.
	Domain(ctx context.Context, name string) (*Domain, error)
	// Domains lists the names of the domains in the store, sorted.
	Domains(ctx context.Context) ([]string, error)
	// Version is a cheap way to know whether a domain changed: it returns
	// the Generation that Domain would return now.
	Version(ctx context.Context, name string) (uint64, error)
}

// DomainSpec is what an administrator chooses when creating a domain; the
// keys are generated.
type DomainSpec struct {
	Name     string
	Audience string
	// TTL of pseudonyms in transit; zero means DefaultTTL.
	TTL    time.Duration
	Policy Policy
}

// Admin is implemented by stores that can change domains ([FileStore] and
// keys/vault.Store). cmd/pseudoctl uses it.
type Admin interface {
	Source
	// CreateDomain creates a domain with a new random scalar and a first
	// transit key "t1". It fails with ErrExists if the domain exists.
	CreateDomain(ctx context.Context, spec DomainSpec) (*Domain, error)
	// RotateTransitKey adds a new transit key, makes it active and keeps
	// the previous ones accepted. It returns the new kid.
	RotateTransitKey(ctx context.Context, domain string) (string, error)
	// RetireTransitKey removes an accepted transit key. It fails with
	// ErrActiveKey for the active key and ErrUnknownKey for an unknown kid.
	RetireTransitKey(ctx context.Context, domain, kid string) error
	// NewVersion creates domain newName with new keys and the audience, TTL
	// and policy of domain old, and lets the owners of old convert from old
	// to newName (Policy.Convert[newName] of old).
	NewVersion(ctx context.Context, old, newName string) (*Domain, error)
	// CreateOwnerKey creates the owner's second scalar k2 for a domain
	// (double pseudonymization). It fails with ErrExists if there is one.
	CreateOwnerKey(ctx context.Context, owner, domain string) error
	// OwnerKey reads the owner's second scalar k2 for a domain. It fails
	// with ErrUnknownKey if there is none.
	OwnerKey(ctx context.Context, owner, domain string) (Secret, error)
	// SetPolicy replaces the policy of a domain. Like the Creator methods
	// it does not check the invariants that span domains: see
	// [ValidateSet], which cmd/pseudoctl runs first.
	SetPolicy(ctx context.Context, domain string, p Policy) error
	// SetLifetimes changes the ttl and the max lifetime of a domain; a zero
	// value keeps the current one. The result must be valid (a max
	// lifetime, when set, is at least the ttl): ErrInvalid otherwise.
	SetLifetimes(ctx context.Context, domain string, ttl, maxLifetime time.Duration) error
	// SetDisabled disables a domain (the service refuses every call on it,
	// as for an unknown domain; its keys stay) or enables it again.
	SetDisabled(ctx context.Context, domain string, disabled bool) error
	// DeleteDomain removes a domain and all its keys, scalar included: it
	// is no longer listed, so services and owners drop it, and its
	// pseudonyms can never be identified or converted again. Owner keys
	// for the domain are kept (see DeleteOwnerKey). It fails with
	// ErrUnknownDomain if the domain does not exist.
	DeleteDomain(ctx context.Context, domain string) error
	// RotateOwnerKey replaces the owner's second scalar k2 for a domain
	// with a new random one (the old one is destroyed). It fails with
	// ErrUnknownKey if there is none.
	RotateOwnerKey(ctx context.Context, owner, domain string) error
	// DeleteOwnerKey destroys the owner's second scalar k2 for a domain.
	// It fails with ErrUnknownKey if there is none.
	DeleteOwnerKey(ctx context.Context, owner, domain string) error
}
