package client

import (
	"errors"
	"testing"

	"github.com/ehealth-pseudo/pseudonymizer/internal/grpcserver"
	"github.com/ehealth-pseudo/pseudonymizer/internal/point"
	"github.com/ehealth-pseudo/pseudonymizer/internal/transit"
	pb "github.com/ehealth-pseudo/pseudonymizer/proto/pseudonymizer/v1"
	"github.com/ehealth-pseudo/pseudonymizer/pseudonymizer"
)

// TestItemReasonsRoundTrip: every per-item error the service can report
// comes back to the client as the sentinel of the same name, through the
// service's own status mapping and the client's reading of it, and every
// item reason of the API is covered.
func TestItemReasonsRoundTrip(t *testing.T) {
	cases := []struct {
		server error // what the service's evaluation fails with
		client error // what errors.Is must match on the client
	}{
		{point.ErrNonCanonical, ErrInvalidPoint},
		{transit.ErrMalformed, ErrMalformedTransitInfo},
		{transit.ErrUnknownKid, ErrUnknownKid},
		{transit.ErrBadTag, ErrBadTag},
		{transit.ErrWrongAudience, ErrWrongAudience},
		{transit.ErrNotYetValid, ErrNotYetValid},
		{transit.ErrExpired, ErrExpired},
		{transit.ErrSubjectMismatch, ErrSubjectMismatch},
		{transit.ErrLifetimeTooLong, ErrLifetimeTooLong},
		{pseudonymizer.ErrTransitKeyExhausted, ErrTransitKeyExhausted},
	}
	covered := map[string]bool{}
	for _, tc := range cases {
		st := grpcserver.Status(tc.server)
		err := itemError(st.Proto())
		if !errors.Is(err, tc.client) {
			t.Errorf("%v: the client reads %v, not %v", tc.server, err, tc.client)
		}
		for _, other := range cases {
			if other.client != tc.client && errors.Is(err, other.client) {
				t.Errorf("%v also matches %v", tc.server, other.client)
			}
		}
		var ie *ItemError
		if !errors.As(err, &ie) || ie.Code != st.Code() {
			t.Errorf("%v: code %v, want %v", tc.server, ie, st.Code())
		}
		covered[ie.Reason] = true
	}
	// Per-item reasons of the API (the others fail whole calls).
	for v, name := range pb.ErrorReason_name {
		switch pb.ErrorReason(v) {
		case pb.ErrorReason_ERROR_REASON_UNSPECIFIED, pb.ErrorReason_ERROR_REASON_BATCH_TOO_LARGE,
			pb.ErrorReason_ERROR_REASON_UNKNOWN_DOMAIN, pb.ErrorReason_ERROR_REASON_OPERATION_NOT_ALLOWED,
			pb.ErrorReason_ERROR_REASON_RATE_LIMITED, pb.ErrorReason_ERROR_REASON_MALFORMED_REQUEST:
			continue
		}
		if !covered[name] {
			t.Errorf("item reason %s has no client sentinel", name)
		}
	}
}
