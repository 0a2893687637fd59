package grpcserver

import (
	"errors"

	"google.golang.org/grpc/status"

	"github.com/ehealth-pseudo/pseudonymizer/internal/rpcstatus"
	"github.com/ehealth-pseudo/pseudonymizer/keys"
	pb "github.com/ehealth-pseudo/pseudonymizer/proto/pseudonymizer/v1"
	"github.com/ehealth-pseudo/pseudonymizer/protoerr"
)

// Errors of the handler's requests, before they become statuses: the
// protocol's own (protoerr), so that the table maps them.
var (
	errNoDomain        = protoerr.ErrEmptyDomain
	errDenied          = protoerr.ErrOperationNotAllowed
	errUnauthenticated = protoerr.ErrUnauthenticated
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
var ErrMalformedRequest = protoerr.ErrMalformedRequest

// BatchTooLargeError is the error of a request with more items than the
// maximum batch size.
type BatchTooLargeError = protoerr.BatchTooLargeError

// toStatus maps every error of the service, per item or per call, to its
// gRPC code, its ErrorReason and a fixed message, from the one table of the
// protocol's errors (protoerr.Lookup), which the client SDK reads back with
// the same table. Key store errors are translated first. No message is
// ever taken from the error: none can carry a point, a key or an
// identifier; an error the table does not know is INTERNAL.
func toStatus(err error) *status.Status {
	switch {
	case errors.Is(err, keys.ErrUnknownDomain):
		err = protoerr.ErrUnknownDomain
	case errors.Is(err, keys.ErrUnavailable), errors.Is(err, keys.ErrDenied):
		err = protoerr.ErrKeyStoreUnavailable
	}
	e, _ := protoerr.Lookup(err)
	msg, md := e.Describe(err)
	return rpcstatus.New(e.Code, pb.ErrorReason(pb.ErrorReason_value[e.Reason]), msg, md)
}
