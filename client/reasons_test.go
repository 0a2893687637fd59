package client

import (
	"errors"
	"testing"

	"google.golang.org/grpc/status"

	"github.com/ehealth-pseudo/pseudonymizer/internal/rpcstatus"
	pb "github.com/ehealth-pseudo/pseudonymizer/proto/pseudonymizer/v1"
	"github.com/ehealth-pseudo/pseudonymizer/protoerr"
)

// tableStatus is the status of err as protoerr's table describes it, built
// the way the service builds its statuses.
func tableStatus(err error) *status.Status {
	e, _ := protoerr.Lookup(err)
	msg, md := e.Describe(err)
	return rpcstatus.New(e.Code, pb.ErrorReason(pb.ErrorReason_value[e.Reason]), msg, md)
}

// TestReasonsRoundTrip: every row of the table goes error → status → the
// client's ItemError → errors.Is with the same sentinel, and with no other
// row's; the code, reason and message survive.
func TestReasonsRoundTrip(t *testing.T) {
	entries := protoerr.Entries()
	for _, e := range entries {
		t.Run(e.Reason+"/"+e.Code.String(), func(t *testing.T) {
			st := tableStatus(e.Err)
			err := itemError(st.Proto())
			if !errors.Is(err, e.Err) {
				t.Errorf("the client reads %v, not %v", err, e.Err)
			}
			for _, other := range entries {
				if other.Err != e.Err && errors.Is(err, other.Err) {
					t.Errorf("%v also matches %v", e.Err, other.Err)
				}
			}
			var ie *ItemError
			if !errors.As(err, &ie) || ie.Code != e.Code || ie.Reason != e.Reason || status.Code(err) != e.Code ||
				status.Convert(err).Message() != e.Message {
				t.Errorf("read as %+v, want code %v, reason %s, message %q", ie, e.Code, e.Reason, e.Message)
			}
		})
	}
}

// TestItemReasonsHaveSentinels: every per-item row's sentinel is one the
// client exports.
func TestItemReasonsHaveSentinels(t *testing.T) {
	exported := []error{ErrInvalidPoint, ErrMalformedTransitInfo, ErrUnknownKid, ErrBadTag, ErrWrongAudience,
		ErrNotYetValid, ErrExpired, ErrSubjectMismatch, ErrLifetimeTooLong, ErrTransitKeyExhausted}
	for _, e := range protoerr.Entries() {
		if !e.PerItem {
			continue
		}
		found := false
		for _, x := range exported {
			found = found || x == e.Err
		}
		if !found {
			t.Errorf("item reason %s has no client sentinel", e.Reason)
		}
	}
}
