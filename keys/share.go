package keys

import (
	"context"
	"fmt"
)

// Mode is how a domain's scalar k is held: whole by the service (single,
// the default), or split in two shares, k = k₁·k₂ mod ℓ, with k₁ the
// service's (Domain.Scalar) and k₂ held by the Vault plugin of package
// keyshare, which only multiplies points by it (see docs/PROTOCOL.md,
// "Split keys"). Stores keep it as "mode" in a domain's meta, absent for
// single.
type Mode string

const (
	// ModeSingle: the service holds k.
	ModeSingle Mode = ""
	// ModeSplit: the service holds k₁, the plugin k₂.
	ModeSplit Mode = "split"
)

// ParseMode decodes a stored mode: "" or "single" is ModeSingle, "split"
// ModeSplit. The error wraps [ErrInvalid].
func ParseMode(s string) (Mode, error) {
	switch s {
	case "", "single":
		return ModeSingle, nil
	case "split":
		return ModeSplit, nil
	}
	return "", fmt.Errorf("%w: mode %q is neither single nor split", ErrInvalid, s)
}

// String returns "single" or "split".
func (m Mode) String() string {
	if m == ModeSingle {
		return "single"
	}
	return string(m)
}

// ShareOp is what [Multiplier] multiplies by.
type ShareOp int

const (
	// SharePseudonymize multiplies by k₂ of the from domain.
	SharePseudonymize ShareOp = iota + 1
	// ShareIdentify multiplies by k₂⁻¹ of the from domain.
	ShareIdentify
	// ShareConvert multiplies by k₂ of the to domain times k₂⁻¹ of the
	// from domain, in one multiplication.
	ShareConvert
)

// ShareRef names one generation of a split domain's shares.
type ShareRef struct {
	Domain     string
	Generation uint64
}

// Multiplier holds the other share k₂ of split domains and multiplies
// points by it: keys/vault.Shares (the Vault plugin of package keyshare).
// Implementations must be safe for concurrent use.
type Multiplier interface {
	// Multiply replaces each points[i] whose errs[i] is nil (the 32-byte
	// encoding of a valid point) by its product with k₂ of from
	// (SharePseudonymize), k₂⁻¹ of from (ShareIdentify) or k₂ of to times
	// k₂⁻¹ of from (ShareConvert; to is ignored otherwise). An item that
	// fails gets its error in errs[i]: wrapping [ErrUnavailable] when the
	// holder cannot be reached or does not have the generation (retry
	// later), [ErrInvalid] for a point the holder refuses. It returns when
	// every item is done or ctx ends (the items left then fail with an
	// error wrapping ErrUnavailable).
	Multiply(ctx context.Context, op ShareOp, from, to ShareRef, points [][]byte, errs []error)
}
