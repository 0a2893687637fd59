// Package protoerr holds the errors of the pseudonymization protocol
// (docs/PROTOCOL.md, "Errors"): the sentinels for points, identifiers and
// transitInfo that the service, the client SDK (package client) and the
// owner SDK (package owner) return, the errors of whole calls, and the one
// table that maps each of them to its gRPC code, its ErrorReason and the
// fixed message the service sends (see [Lookup]).
//
// Test errors with errors.Is against the sentinels. Packages client and
// owner expose the same values under the same names (client.ErrExpired is
// protoerr.ErrExpired). No error of this package carries a point, scalar,
// key, identifier or pseudonym; [UnknownKidError] carries the kid of the
// transitInfo's header, which is public.
package protoerr

import (
	"errors"
	"fmt"
	"time"
)

// Errors of points and scalars. ErrPointLength, ErrNonCanonical and
// ErrIdentity wrap ErrInvalidPoint; ErrZeroScalar wraps ErrInvalidScalar.
var (
	// ErrInvalidPoint is the error of anything that is not a valid point:
	// not 32 bytes, not the canonical encoding of a ristretto255 element,
	// or the identity element. The more precise errors below wrap it.
	ErrInvalidPoint = errors.New("protoerr: invalid point")
	// ErrPointLength is the error of an encoding that is not 32 bytes.
	ErrPointLength = fmt.Errorf("%w: not 32 bytes", ErrInvalidPoint)
	// ErrNonCanonical is the error of a 32-byte value that is not the
	// canonical encoding of a ristretto255 element.
	ErrNonCanonical = fmt.Errorf("%w: non-canonical encoding", ErrInvalidPoint)
	// ErrIdentity is the error of the identity element.
	ErrIdentity = fmt.Errorf("%w: identity element", ErrInvalidPoint)

	// ErrInvalidScalar is the error of anything that is not a valid scalar.
	ErrInvalidScalar = errors.New("protoerr: invalid scalar")
	// ErrZeroScalar is the error of the zero scalar.
	ErrZeroScalar = fmt.Errorf("%w: zero", ErrInvalidScalar)
)

// Errors of identifiers and their embedding into points. The length limit
// is identifier.MaxLen (29 bytes).
var (
	// ErrEmptyIdentifier is the error of an identifier of zero bytes.
	ErrEmptyIdentifier = errors.New("protoerr: identifier is empty")
	// ErrIdentifierTooLong is the error of an identifier over 29 bytes.
	ErrIdentifierTooLong = errors.New("protoerr: identifier is longer than 29 bytes")
	// ErrNoEncoding is the error of an identifier for which no counter
	// value gives a valid point (probability below 1e-15).
	ErrNoEncoding = errors.New("protoerr: identifier has no point encoding")
	// ErrNotIdentifier is the error of a point that embeds no identifier
	// (bad length byte or non-zero padding): identify gives one when the
	// transit pseudonym was not made from an identifier.
	ErrNotIdentifier = errors.New("protoerr: point does not embed an identifier")
)

// Errors of transitInfo, in the order an opening checks them
// (docs/PROTOCOL.md, "Opening: the checks in order"), and of sealing one.
var (
	// ErrMalformedTransitInfo is the error of a transitInfo whose shape,
	// protected header, part lengths, base64url or payload is not what the
	// protocol allows.
	ErrMalformedTransitInfo = errors.New("protoerr: transitInfo is malformed")
	// ErrUnknownKid is the error of a transitInfo sealed under a kid the
	// domain does not accept (retired, or never existed). The error
	// returned is an *UnknownKidError, which carries the kid and matches
	// ErrUnknownKid with errors.Is.
	ErrUnknownKid = errors.New("protoerr: transitInfo sealed under an unknown key id")
	// ErrBadTag is the error of a transitInfo that fails authentication
	// (altered, or sealed under another key).
	ErrBadTag = errors.New("protoerr: transitInfo failed authentication")
	// ErrWrongAudience is the error of a transitInfo whose aud is not the
	// domain's audience: a pseudonym of another domain.
	ErrWrongAudience = errors.New("protoerr: transitInfo is for another audience")
	// ErrNotYetValid is the error of a transitInfo whose iat is more than
	// the allowed skew (60 s) in the future.
	ErrNotYetValid = errors.New("protoerr: transitInfo is not yet valid")
	// ErrExpired is the error of a transitInfo whose exp is more than the
	// allowed skew (60 s) in the past: ask the owner for a fresh one.
	ErrExpired = errors.New("protoerr: transitInfo has expired")
	// ErrLifetimeTooLong is the error of a transitInfo whose exp − iat
	// exceeds the domain's maximum lifetime. The service's error is a
	// *LifetimeTooLongError, which carries the maximum.
	ErrLifetimeTooLong = errors.New("protoerr: transitInfo lifetime exceeds the maximum")
	// ErrSubjectMismatch is the error of a transitInfo bound (sub) to
	// another caller than the one that presents it.
	ErrSubjectMismatch = errors.New("protoerr: transitInfo is bound to another subject")
	// ErrTransitKeyExhausted is the error of an item that would need a
	// seal past the limit of the domain's active transit key on the
	// replica that answered: an administrator must rotate the key.
	ErrTransitKeyExhausted = errors.New("protoerr: transit key reached its seal limit: rotate it")
	// ErrInvalidClaims is the error of sealing claims that cannot go into
	// a transitInfo: no audience, a lifetime that is not positive, a
	// string that is not UTF-8, custom claims that are not a JSON object
	// or that use the reserved name "scalar".
	ErrInvalidClaims = errors.New("protoerr: invalid transitInfo claims")
)

// Errors of whole calls.
var (
	// ErrBatchTooLarge is the error of a request with more items than the
	// service's maximum batch size. The service's error is a
	// *BatchTooLargeError, which carries the maximum.
	ErrBatchTooLarge = errors.New("protoerr: too many items in one request")
	// ErrUnknownDomain is the error of a convert whose target domain, named
	// by the caller's policy, does not exist.
	ErrUnknownDomain = errors.New("protoerr: unknown domain")
	// ErrOperationNotAllowed is the error of a call the domain's policy
	// does not allow this caller (or of a domain that does not exist: the
	// service answers both alike).
	ErrOperationNotAllowed = errors.New("protoerr: operation not allowed")
	// ErrRateLimited is the error of a call refused because the caller's
	// quota is spent; the service says when to retry.
	ErrRateLimited = errors.New("protoerr: rate limit reached")
	// ErrMalformedRequest is the error of a request or stream message that
	// does not decode: malformed protobuf, invalid UTF-8 in a string, or an
	// item id over the maximum length.
	ErrMalformedRequest = errors.New("protoerr: malformed request")
	// ErrEmptyDomain is the error of a request that names no domain.
	ErrEmptyDomain = errors.New("protoerr: empty domain name")
	// ErrSameDomain is the error of a convert from a domain into itself.
	ErrSameDomain = errors.New("protoerr: convert within one domain")
	// ErrUnauthenticated is the error of a call without a verified
	// principal.
	ErrUnauthenticated = errors.New("protoerr: no authenticated principal")
	// ErrKeyStoreUnavailable is the error of a call the service cannot
	// serve because its key store cannot be read; retry later.
	ErrKeyStoreUnavailable = errors.New("protoerr: key store unavailable")
	// ErrStreamIdle is the error that ends a stream on which the caller
	// sent nothing for the stream idle timeout.
	ErrStreamIdle = errors.New("protoerr: stream idle for too long")
	// ErrInternal is the error of anything unexpected. The service maps
	// every error that the table does not know to it.
	ErrInternal = errors.New("protoerr: internal error")
)

// UnknownKidError is the error of a transitInfo sealed under a kid the
// domain does not accept. errors.Is(err, ErrUnknownKid) matches it. Kid
// comes from the transitInfo's protected header, which is public and not
// authenticated at that point.
type UnknownKidError struct {
	// Kid is the header's kid.
	Kid string
}

// Error implements error. The message does not quote the kid.
func (e *UnknownKidError) Error() string { return ErrUnknownKid.Error() }

// Is makes errors.Is(err, ErrUnknownKid) match.
func (e *UnknownKidError) Is(target error) bool { return target == ErrUnknownKid }

// BatchTooLargeError is the error of a request with more items than Max,
// the maximum batch size. errors.Is(err, ErrBatchTooLarge) matches it.
type BatchTooLargeError struct {
	// Max is the maximum batch size.
	Max int
}

// Error implements error.
func (e *BatchTooLargeError) Error() string {
	return fmt.Sprintf("protoerr: more than %d items", e.Max)
}

// Is makes errors.Is(err, ErrBatchTooLarge) match.
func (e *BatchTooLargeError) Is(target error) bool { return target == ErrBatchTooLarge }

// LifetimeTooLongError is the error of a transitInfo whose exp − iat
// exceeds Max, the domain's maximum lifetime. errors.Is(err,
// ErrLifetimeTooLong) matches it.
type LifetimeTooLongError struct {
	// Max is the domain's maximum lifetime.
	Max time.Duration
}

// Error implements error.
func (e *LifetimeTooLongError) Error() string { return ErrLifetimeTooLong.Error() }

// Is makes errors.Is(err, ErrLifetimeTooLong) match.
func (e *LifetimeTooLongError) Is(target error) bool { return target == ErrLifetimeTooLong }
