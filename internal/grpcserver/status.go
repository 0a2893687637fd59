package grpcserver

import (
	"errors"
	"fmt"
	"strconv"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ehealth-pseudo/pseudonymizer/internal/point"
	"github.com/ehealth-pseudo/pseudonymizer/internal/rpcstatus"
	"github.com/ehealth-pseudo/pseudonymizer/internal/transit"
	"github.com/ehealth-pseudo/pseudonymizer/keys"
	pb "github.com/ehealth-pseudo/pseudonymizer/proto/pseudonymizer/v1"
	"github.com/ehealth-pseudo/pseudonymizer/pseudonymizer"
)

// Errors of the Server's requests, before they become statuses.
var (
	errNoDomain        = errors.New("pseudonymizer: empty domain name")
	errDenied          = errors.New("pseudonymizer: operation not allowed")
	errUnauthenticated = errors.New("pseudonymizer: no authenticated principal")
)

// MaxItemIDLen bounds the length in bytes of an item's id: the id is echoed
// back, and a request is at most the maximum batch size of items of
// bounded size.
const MaxItemIDLen = 256

// Status returns the google.rpc.Status of an error of the service, per item
// or per call: its gRPC code, its ErrorReason and a fixed message. The
// transport uses it for the errors it raises itself (a request too large or
// malformed).
func Status(err error) *status.Status { return toStatus(err) }

// ErrMalformedRequest is the error of a request (or stream message) that
// cannot be decoded: malformed protobuf, invalid UTF-8 in a string, or an
// item id longer than MaxItemIDLen.
var ErrMalformedRequest = errors.New("pseudonymizer: malformed request")

// BatchTooLargeError is the error of a request with more items than the
// maximum batch size.
type BatchTooLargeError struct{ Max int }

// Error implements error.
func (e *BatchTooLargeError) Error() string {
	return fmt.Sprintf("pseudonymizer: more than %d items", e.Max)
}

// toStatus maps every error of the service, per item or per call, to its
// gRPC code, its ErrorReason and a fixed message (see pseudonymizer.proto).
// No message is ever taken from the error: none can carry a point, a key or
// an identifier.
func toStatus(err error) *status.Status {
	var tooLarge *BatchTooLargeError
	var lifetime *pseudonymizer.LifetimeError
	switch {
	// Item errors.
	case errors.Is(err, point.ErrInvalidPoint):
		return rpcstatus.New(codes.InvalidArgument, pb.ErrorReason_ERROR_REASON_INVALID_POINT,
			"invalid point: not a 32-byte canonical ristretto255 encoding of a non-identity element", nil)
	case errors.Is(err, transit.ErrMalformed):
		return rpcstatus.New(codes.InvalidArgument, pb.ErrorReason_ERROR_REASON_MALFORMED_TRANSIT_INFO,
			"malformed transitInfo", nil)
	case errors.Is(err, transit.ErrUnknownKid):
		return rpcstatus.New(codes.FailedPrecondition, pb.ErrorReason_ERROR_REASON_UNKNOWN_KID,
			"transitInfo sealed under a transit key the domain no longer accepts", nil)
	case errors.Is(err, transit.ErrBadTag):
		return rpcstatus.New(codes.InvalidArgument, pb.ErrorReason_ERROR_REASON_BAD_TAG,
			"transitInfo failed authentication", nil)
	case errors.Is(err, transit.ErrWrongAudience):
		return rpcstatus.New(codes.InvalidArgument, pb.ErrorReason_ERROR_REASON_WRONG_AUDIENCE,
			"transitInfo is for another domain", nil)
	case errors.Is(err, transit.ErrNotYetValid):
		return rpcstatus.New(codes.FailedPrecondition, pb.ErrorReason_ERROR_REASON_NOT_YET_VALID,
			"transitInfo is not yet valid", nil)
	case errors.Is(err, transit.ErrExpired):
		return rpcstatus.New(codes.FailedPrecondition, pb.ErrorReason_ERROR_REASON_EXPIRED,
			"transitInfo has expired", nil)
	case errors.Is(err, transit.ErrSubjectMismatch):
		return rpcstatus.New(codes.PermissionDenied, pb.ErrorReason_ERROR_REASON_WRONG_SUBJECT,
			"transitInfo is bound to another caller", nil)
	case errors.As(err, &lifetime):
		return rpcstatus.New(codes.InvalidArgument, pb.ErrorReason_ERROR_REASON_LIFETIME_TOO_LONG,
			"transitInfo lifetime (exp - iat) exceeds the domain's maximum",
			map[string]string{"max_lifetime_seconds": strconv.FormatInt(int64(lifetime.Max/time.Second), 10)})
	case errors.Is(err, transit.ErrLifetimeTooLong):
		return rpcstatus.New(codes.InvalidArgument, pb.ErrorReason_ERROR_REASON_LIFETIME_TOO_LONG,
			"transitInfo lifetime (exp - iat) exceeds the domain's maximum", nil)
	case errors.Is(err, pseudonymizer.ErrTransitKeyExhausted):
		return rpcstatus.New(codes.FailedPrecondition, pb.ErrorReason_ERROR_REASON_TRANSIT_KEY_EXHAUSTED,
			"the domain's active transit key reached its seal limit: it must be rotated", nil)

	// Call errors.
	case errors.As(err, &tooLarge):
		return rpcstatus.New(codes.InvalidArgument, pb.ErrorReason_ERROR_REASON_BATCH_TOO_LARGE,
			fmt.Sprintf("too many items: the maximum batch size is %d", tooLarge.Max),
			map[string]string{"max_batch_size": strconv.Itoa(tooLarge.Max)})
	case errors.Is(err, ErrMalformedRequest):
		return rpcstatus.New(codes.InvalidArgument, pb.ErrorReason_ERROR_REASON_MALFORMED_REQUEST,
			"malformed request", nil)
	case errors.Is(err, errNoDomain):
		return rpcstatus.New(codes.InvalidArgument, pb.ErrorReason_ERROR_REASON_UNSPECIFIED,
			"domain name is empty", nil)
	case errors.Is(err, pseudonymizer.ErrSameDomain):
		return rpcstatus.New(codes.InvalidArgument, pb.ErrorReason_ERROR_REASON_UNSPECIFIED,
			"from_domain and to_domain are the same", nil)
	case errors.Is(err, errDenied):
		return rpcstatus.New(codes.PermissionDenied, pb.ErrorReason_ERROR_REASON_OPERATION_NOT_ALLOWED,
			"permission denied", nil)
	case errors.Is(err, keys.ErrUnknownDomain):
		return rpcstatus.New(codes.NotFound, pb.ErrorReason_ERROR_REASON_UNKNOWN_DOMAIN,
			"unknown domain", nil)
	case errors.Is(err, keys.ErrUnavailable), errors.Is(err, keys.ErrDenied):
		return rpcstatus.New(codes.Unavailable, pb.ErrorReason_ERROR_REASON_UNSPECIFIED,
			"key store unavailable, retry later", nil)
	case errors.Is(err, errUnauthenticated):
		return rpcstatus.New(codes.Unauthenticated, pb.ErrorReason_ERROR_REASON_UNSPECIFIED,
			"unauthenticated", nil)
	default:
		return rpcstatus.Internal()
	}
}
