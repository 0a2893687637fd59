package protoerr_test

import (
	"errors"
	"fmt"
	"maps"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	pb "github.com/ehealth-pseudo/pseudonymizer/proto/pseudonymizer/v1"
	"github.com/ehealth-pseudo/pseudonymizer/protoerr"
)

// TestTableCoversEveryReason: every ErrorReason of the API has a row, every
// row names an ErrorReason of the API, and every reason but UNSPECIFIED
// has exactly one row.
func TestTableCoversEveryReason(t *testing.T) {
	rows := map[string]int{}
	for _, e := range protoerr.Entries() {
		if _, ok := pb.ErrorReason_value[e.Reason]; !ok {
			t.Errorf("%v: reason %q is not an ErrorReason", e.Err, e.Reason)
		}
		rows[e.Reason]++
	}
	for _, name := range pb.ErrorReason_name {
		switch n := rows[name]; {
		case n == 0:
			t.Errorf("%s has no row", name)
		case n > 1 && name != pb.ErrorReason_ERROR_REASON_UNSPECIFIED.String():
			t.Errorf("%s has %d rows", name, n)
		}
	}
}

// TestTableRows: each row is found again from its sentinel (wrapped or
// not), from its reason, and from the status it describes; no sentinel
// matches another row's; messages are fixed texts and codes are errors.
func TestTableRows(t *testing.T) {
	entries := protoerr.Entries()
	for _, e := range entries {
		t.Run(e.Reason+"/"+e.Code.String(), func(t *testing.T) {
			if e.Err == nil || e.Message == "" || e.Code == codes.OK {
				t.Fatalf("incomplete row %+v", e)
			}
			for _, err := range []error{e.Err, fmt.Errorf("context: %w", e.Err)} {
				if got, ok := protoerr.Lookup(err); !ok || got != e {
					t.Errorf("Lookup(%v) = %+v, %v", err, got, ok)
				}
			}
			if got, ok := protoerr.Match(e.Code, e.Reason, e.Message); !ok || got != e {
				t.Errorf("Match = %+v, %v", got, ok)
			}
			got, ok := protoerr.ByReason(e.Reason)
			if e.Reason == pb.ErrorReason_ERROR_REASON_UNSPECIFIED.String() {
				if ok {
					t.Errorf("ByReason(UNSPECIFIED) = %+v", got)
				}
			} else if !ok || got != e {
				t.Errorf("ByReason = %+v, %v", got, ok)
			}
			for _, other := range entries {
				if other != e && errors.Is(e.Err, other.Err) {
					t.Errorf("%v also matches %v", e.Err, other.Err)
				}
			}
		})
	}
}

func TestLookupUnknownIsInternal(t *testing.T) {
	for _, err := range []error{nil, errors.New("boom")} {
		e, ok := protoerr.Lookup(err)
		if ok || e.Err != protoerr.ErrInternal || e.Code != codes.Internal || e.Message != "internal error" {
			t.Errorf("Lookup(%v) = %+v, %v", err, e, ok)
		}
	}
	if _, ok := protoerr.ByReason("ERROR_REASON_NOPE"); ok {
		t.Error("ByReason of an unknown reason")
	}
	// UNSPECIFIED with a code that several rows share and a message of none.
	if e, ok := protoerr.Match(codes.InvalidArgument, "", "something else"); ok {
		t.Errorf("Match = %+v", e)
	}
	if e, ok := protoerr.Match(codes.Internal, "", "anything"); !ok || e.Err != protoerr.ErrInternal {
		t.Errorf("Match(INTERNAL) = %+v, %v", e, ok)
	}
}

// TestPreciseErrorsMapToTheirFamily: the precise point errors are reported
// as invalid points, and the typed errors as their sentinel's row.
func TestPreciseErrorsMapToTheirFamily(t *testing.T) {
	cases := map[error]error{
		protoerr.ErrPointLength:                                  protoerr.ErrInvalidPoint,
		protoerr.ErrNonCanonical:                                 protoerr.ErrInvalidPoint,
		protoerr.ErrIdentity:                                     protoerr.ErrInvalidPoint,
		&protoerr.UnknownKidError{Kid: "t9"}:                     protoerr.ErrUnknownKid,
		&protoerr.BatchTooLargeError{Max: 10}:                    protoerr.ErrBatchTooLarge,
		&protoerr.LifetimeTooLongError{Max: time.Hour}:           protoerr.ErrLifetimeTooLong,
		fmt.Errorf("x: %w", &protoerr.UnknownKidError{Kid: "k"}): protoerr.ErrUnknownKid,
	}
	for err, want := range cases {
		if e, ok := protoerr.Lookup(err); !ok || e.Err != want || !errors.Is(err, want) {
			t.Errorf("Lookup(%v) = %v, want %v", err, e.Err, want)
		}
	}
	var uk *protoerr.UnknownKidError
	if !errors.As(fmt.Errorf("x: %w", &protoerr.UnknownKidError{Kid: "t9"}), &uk) || uk.Kid != "t9" {
		t.Error("the kid is not carried")
	}
	if strings.Contains((&protoerr.UnknownKidError{Kid: "secret-looking"}).Error(), "secret-looking") {
		t.Error("the message quotes the kid")
	}
}

func TestDescribe(t *testing.T) {
	e, _ := protoerr.Lookup(&protoerr.BatchTooLargeError{Max: 1000})
	msg, md := e.Describe(&protoerr.BatchTooLargeError{Max: 1000})
	if msg != "too many items: the maximum batch size is 1000" || !maps.Equal(md, map[string]string{"max_batch_size": "1000"}) {
		t.Errorf("batch too large: %q %v", msg, md)
	}
	e, _ = protoerr.Lookup(&protoerr.LifetimeTooLongError{Max: 24 * time.Hour})
	msg, md = e.Describe(&protoerr.LifetimeTooLongError{Max: 24 * time.Hour})
	if msg != e.Message || !maps.Equal(md, map[string]string{"max_lifetime_seconds": "86400"}) {
		t.Errorf("lifetime: %q %v", msg, md)
	}
	// The bare sentinels carry no limit: the fixed message, no metadata.
	for _, err := range []error{protoerr.ErrBatchTooLarge, protoerr.ErrLifetimeTooLong, protoerr.ErrExpired} {
		e, _ := protoerr.Lookup(err)
		if msg, md := e.Describe(err); msg != e.Message || md != nil {
			t.Errorf("%v: %q %v", err, msg, md)
		}
	}
}

// TestMessagesNamePackage: every error's text starts with the package's
// name, so that a log line says where to look it up.
func TestMessagesNamePackage(t *testing.T) {
	errs := []error{
		protoerr.ErrPointLength, protoerr.ErrNonCanonical, protoerr.ErrIdentity, protoerr.ErrInvalidScalar,
		protoerr.ErrZeroScalar, protoerr.ErrEmptyIdentifier, protoerr.ErrIdentifierTooLong, protoerr.ErrNoEncoding,
		protoerr.ErrNotIdentifier, protoerr.ErrInvalidClaims,
		&protoerr.UnknownKidError{}, &protoerr.BatchTooLargeError{Max: 1}, &protoerr.LifetimeTooLongError{},
	}
	for _, e := range protoerr.Entries() {
		errs = append(errs, e.Err)
	}
	for _, err := range errs {
		if !strings.HasPrefix(err.Error(), "protoerr: ") {
			t.Errorf("%q has no package prefix", err)
		}
	}
}
