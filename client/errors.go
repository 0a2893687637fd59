package client

import (
	"errors"
	"fmt"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ehealth-pseudo/pseudonymizer/protoerr"
)

// Errors of blinding and unblinding, and of items the service refused,
// usable with errors.Is. Those of the protocol are the values of package
// protoerr, which package owner exposes under the same names; an item the
// service refused is an *ItemError that matches them (and gives the gRPC
// code). None carries a point, scalar, key or identifier.
var (
	// ErrInvalidPoint: an identifier's or transit pseudonym's point, or an
	// answer of the service, is not a valid point (wrong length,
	// non-canonical, identity); or the service refused a blinded point.
	ErrInvalidPoint = protoerr.ErrInvalidPoint
	// ErrEmptyIdentifier: an identifier of zero bytes.
	ErrEmptyIdentifier = protoerr.ErrEmptyIdentifier
	// ErrIdentifierTooLong: an identifier over identifier.MaxLen (29)
	// bytes.
	ErrIdentifierTooLong = protoerr.ErrIdentifierTooLong
	// ErrNotIdentifier: identify gave a point that embeds no identifier,
	// which happens when the transit pseudonym was not made from one.
	ErrNotIdentifier = protoerr.ErrNotIdentifier

	// ErrMalformedTransitInfo: a transitInfo whose shape or header is not
	// one the protocol allows, in an answer of the service or, refused by
	// the service, in a transit pseudonym sent to identify or convert.
	ErrMalformedTransitInfo = protoerr.ErrMalformedTransitInfo
	// ErrUnknownKid: the service refused a transit pseudonym sealed under
	// a transit key the domain no longer accepts; ask the owner again.
	ErrUnknownKid = protoerr.ErrUnknownKid
	// ErrBadTag: the service refused a transitInfo that failed
	// authentication.
	ErrBadTag = protoerr.ErrBadTag
	// ErrWrongAudience: the service refused a transit pseudonym of another
	// domain.
	ErrWrongAudience = protoerr.ErrWrongAudience
	// ErrExpired: the service refused an expired transit pseudonym; ask the
	// owner for a fresh one.
	ErrExpired = protoerr.ErrExpired
	// ErrNotYetValid: the service refused a transit pseudonym issued in the
	// future (iat more than 60 s ahead).
	ErrNotYetValid = protoerr.ErrNotYetValid
	// ErrSubjectMismatch: the service refused a transit pseudonym bound to
	// another caller.
	ErrSubjectMismatch = protoerr.ErrSubjectMismatch
	// ErrLifetimeTooLong: the transitInfo's exp − iat exceeds the domain's
	// maximum lifetime.
	ErrLifetimeTooLong = protoerr.ErrLifetimeTooLong
	// ErrTransitKeyExhausted: the replica that answered reached the seal
	// limit of the domain's active transit key; an administrator must
	// rotate it.
	ErrTransitKeyExhausted = protoerr.ErrTransitKeyExhausted

	// ErrMissingResult: the service's answer lacked an item.
	ErrMissingResult = errors.New("client: the service returned no result for an item")
	// ErrLengthMismatch: a batch call got slices of different lengths.
	ErrLengthMismatch = errors.New("client: batch lengths differ")
	// ErrMissingTransitInfo: Unblind was given no transitInfo.
	ErrMissingTransitInfo = errors.New("client: missing transitInfo")
)

// ItemError is the service's refusal of one item of a batch. errors.Is
// matches it with the sentinel of its reason (ErrExpired, ErrUnknownKid,
// ...), as the table of package protoerr says.
type ItemError struct {
	// Code is the status's gRPC code (never OK).
	Code codes.Code
	// Reason is the name of the status's ErrorReason, e.g.
	// "ERROR_REASON_EXPIRED"; empty when the status carries none.
	Reason string
	status *status.Status
}

// Error implements error.
func (e *ItemError) Error() string {
	return fmt.Sprintf("client: item refused: %s (%s)", e.Code, e.Reason)
}

// Is makes errors.Is(err, ErrExpired) and the like work on item errors: it
// reports whether target is the sentinel of the row of protoerr's table
// that the status names.
func (e *ItemError) Is(target error) bool {
	en, ok := protoerr.Match(e.Code, e.Reason, e.status.Message())
	return ok && target != nil && target == en.Err
}

// GRPCStatus lets status.Code and status.FromError read the item's status.
func (e *ItemError) GRPCStatus() *status.Status { return e.status }

// itemError is the error of an item the service refused. A refusal whose
// code says OK is not one the service writes; it gets codes.Unknown, so that
// status.Code never reports OK for an error.
func itemError(s *spb.Status) error {
	st := status.FromProto(s)
	if st.Code() == codes.OK {
		st = status.FromProto(&spb.Status{Code: int32(codes.Unknown), Message: s.GetMessage(), Details: s.GetDetails()})
	}
	e := &ItemError{Code: st.Code(), status: st}
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			e.Reason = info.GetReason()
		}
	}
	return e
}
