package protoerr

import (
	"errors"
	"strconv"
	"time"

	"google.golang.org/grpc/codes"
)

// Entry is one row of the table of the protocol's errors: what the service
// reports, per item or for a whole call, for the errors that match Err.
type Entry struct {
	// Err is the sentinel of the row: errors.Is(err, Err) selects it.
	Err error
	// Code is the gRPC status code.
	Code codes.Code
	// Reason is the name of the pseudonymizer.v1 ErrorReason value carried
	// in the status's google.rpc.ErrorInfo, e.g. "ERROR_REASON_EXPIRED".
	Reason string
	// Message is the status message: a fixed text that never carries a
	// point, scalar, key, identifier or pseudonym. See [Entry.Describe]
	// for the two rows that complete it with a limit.
	Message string
	// PerItem is true for the errors of one item of a batch (the other
	// items are answered), false for the errors of a whole call. The
	// internal error is either.
	PerItem bool
}

// Reason names shared by several rows.
const reasonUnspecified = "ERROR_REASON_UNSPECIFIED"

// table is every error the service reports, in the order Lookup tries
// them. Each ErrorReason other than ERROR_REASON_UNSPECIFIED has exactly
// one row; the rows of ERROR_REASON_UNSPECIFIED differ by code, and by
// message where codes coincide.
var table = []Entry{
	// Per item.
	{ErrInvalidPoint, codes.InvalidArgument, "ERROR_REASON_INVALID_POINT",
		"invalid point: not a 32-byte canonical ristretto255 encoding of a non-identity element", true},
	{ErrMalformedTransitInfo, codes.InvalidArgument, "ERROR_REASON_MALFORMED_TRANSIT_INFO",
		"malformed transitInfo", true},
	{ErrUnknownKid, codes.FailedPrecondition, "ERROR_REASON_UNKNOWN_KID",
		"transitInfo sealed under a transit key the domain no longer accepts", true},
	{ErrBadTag, codes.InvalidArgument, "ERROR_REASON_BAD_TAG",
		"transitInfo failed authentication", true},
	{ErrWrongAudience, codes.InvalidArgument, "ERROR_REASON_WRONG_AUDIENCE",
		"transitInfo is for another domain", true},
	{ErrNotYetValid, codes.FailedPrecondition, "ERROR_REASON_NOT_YET_VALID",
		"transitInfo is not yet valid", true},
	{ErrExpired, codes.FailedPrecondition, "ERROR_REASON_EXPIRED",
		"transitInfo has expired", true},
	{ErrSubjectMismatch, codes.PermissionDenied, "ERROR_REASON_WRONG_SUBJECT",
		"transitInfo is bound to another caller", true},
	{ErrLifetimeTooLong, codes.InvalidArgument, "ERROR_REASON_LIFETIME_TOO_LONG",
		"transitInfo lifetime (exp - iat) exceeds the domain's maximum", true},
	{ErrTransitKeyExhausted, codes.FailedPrecondition, "ERROR_REASON_TRANSIT_KEY_EXHAUSTED",
		"the domain's active transit key reached its seal limit: it must be rotated", true},

	// Per call.
	{ErrBatchTooLarge, codes.InvalidArgument, "ERROR_REASON_BATCH_TOO_LARGE",
		"too many items", false},
	{ErrMalformedRequest, codes.InvalidArgument, "ERROR_REASON_MALFORMED_REQUEST",
		"malformed request", false},
	{ErrEmptyDomain, codes.InvalidArgument, reasonUnspecified,
		"domain name is empty", false},
	{ErrSameDomain, codes.InvalidArgument, reasonUnspecified,
		"from_domain and to_domain are the same", false},
	{ErrOperationNotAllowed, codes.PermissionDenied, "ERROR_REASON_OPERATION_NOT_ALLOWED",
		"permission denied", false},
	{ErrUnknownDomain, codes.NotFound, "ERROR_REASON_UNKNOWN_DOMAIN",
		"unknown domain", false},
	{ErrKeyStoreUnavailable, codes.Unavailable, reasonUnspecified,
		"key store unavailable, retry later", false},
	{ErrUnauthenticated, codes.Unauthenticated, reasonUnspecified,
		"unauthenticated", false},
	{ErrRateLimited, codes.ResourceExhausted, "ERROR_REASON_RATE_LIMITED",
		"rate limit reached, retry later", false},
	{ErrStreamIdle, codes.DeadlineExceeded, reasonUnspecified,
		"stream idle for too long: no message received", false},
	{ErrInternal, codes.Internal, reasonUnspecified,
		"internal error", false},
}

// internal is the row of ErrInternal.
var internal = table[len(table)-1]

// Entries returns a copy of the table, in the order [Lookup] tries it.
func Entries() []Entry { return append([]Entry(nil), table...) }

// Lookup returns the row of err: the first, in table order, whose Err
// matches err with errors.Is. For an error that matches no row (nil
// included) it returns the row of ErrInternal and false, which is what
// the service reports for it.
func Lookup(err error) (Entry, bool) {
	if err != nil {
		for _, e := range table {
			if errors.Is(err, e.Err) {
				return e, true
			}
		}
	}
	return internal, false
}

// ByReason returns the row of an ErrorReason name, e.g.
// "ERROR_REASON_EXPIRED". ERROR_REASON_UNSPECIFIED, shared by several rows,
// names none: see [Match].
func ByReason(reason string) (Entry, bool) {
	if reason == reasonUnspecified {
		return Entry{}, false
	}
	for _, e := range table {
		if e.Reason == reason {
			return e, true
		}
	}
	return Entry{}, false
}

// Match returns the row of a status the service reported: its reason
// alone names the row, except ERROR_REASON_UNSPECIFIED (or no reason),
// whose rows are told apart by code, and by message where codes coincide.
// Callers should tell errors apart by reason, as docs/PROTOCOL.md says;
// Match is how the SDK turns a status back into the sentinel.
func Match(code codes.Code, reason, message string) (Entry, bool) {
	if reason != "" && reason != reasonUnspecified {
		return ByReason(reason)
	}
	var found Entry
	n := 0
	for _, e := range table {
		if e.Reason != reasonUnspecified || e.Code != code {
			continue
		}
		if e.Message == message {
			return e, true
		}
		found = e
		n++
	}
	return found, n == 1
}

// Describe returns the status message and the google.rpc.ErrorInfo
// metadata (nil when none) of err, whose row is e: the fixed Message,
// completed for the two errors that carry the limit they broke. A
// *BatchTooLargeError gives "too many items: the maximum batch size is N"
// and metadata max_batch_size; a *LifetimeTooLongError gives metadata
// max_lifetime_seconds. Both are in decimal.
func (e Entry) Describe(err error) (message string, metadata map[string]string) {
	var tooLarge *BatchTooLargeError
	var lifetime *LifetimeTooLongError
	switch {
	case e.Err == ErrBatchTooLarge && errors.As(err, &tooLarge):
		return e.Message + ": the maximum batch size is " + strconv.Itoa(tooLarge.Max),
			map[string]string{"max_batch_size": strconv.Itoa(tooLarge.Max)}
	case e.Err == ErrLifetimeTooLong && errors.As(err, &lifetime):
		return e.Message, map[string]string{"max_lifetime_seconds": strconv.FormatInt(int64(lifetime.Max/time.Second), 10)}
	}
	return e.Message, nil
}
