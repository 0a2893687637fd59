// Package rpcstatus builds the error statuses of the pseudonymizer.v1 API:
// a gRPC code, a fixed message and one google.rpc.ErrorInfo detail whose
// domain is [Domain] and whose reason is the name of a
// pseudonymizerv1.ErrorReason value, as pseudonymizer.proto promises.
//
// Messages are fixed texts chosen by the caller of this package: they never
// carry a point, scalar, key, identifier or pseudonym.
package rpcstatus

import (
	"errors"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/ehealth-pseudo/pseudonymizer/proto/pseudonymizer/v1"
)

// Domain is the ErrorInfo.domain of every error the service reports.
const Domain = "pseudonymizer.v1"

// New returns a status with code c, message msg and an ErrorInfo detail
// with the given reason and metadata (which may be nil).
func New(c codes.Code, reason pb.ErrorReason, msg string, metadata map[string]string) *status.Status {
	st := status.New(c, msg)
	withInfo, err := st.WithDetails(&errdetails.ErrorInfo{
		Reason:   reason.String(),
		Domain:   Domain,
		Metadata: metadata,
	})
	if err != nil {
		// Only a nil or unmarshalable detail fails; ours is neither.
		return st
	}
	return withInfo
}

// Error is New as an error.
func Error(c codes.Code, reason pb.ErrorReason, msg string) error {
	return New(c, reason, msg, nil).Err()
}

// Internal is the status of every unexpected failure: the message never
// says more than "internal error".
func Internal() *status.Status {
	return New(codes.Internal, pb.ErrorReason_ERROR_REASON_UNSPECIFIED, "internal error", nil)
}

// Reason returns the ErrorInfo reason of an error status ("" when err is
// nil or has no ErrorInfo of [Domain]).
func Reason(err error) string {
	if err == nil {
		return ""
	}
	var se interface{ GRPCStatus() *status.Status }
	if !errors.As(err, &se) {
		return ""
	}
	return ReasonOf(se.GRPCStatus())
}

// ReasonOf returns the ErrorInfo reason of a status ("" when it has none
// of [Domain]).
func ReasonOf(st *status.Status) string {
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetDomain() == Domain {
			return info.GetReason()
		}
	}
	return ""
}
