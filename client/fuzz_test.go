package client

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/gtank/ristretto255"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/ehealth-pseudo/pseudonymizer/identifier"
	"github.com/ehealth-pseudo/pseudonymizer/internal/point"
	"github.com/ehealth-pseudo/pseudonymizer/internal/transit"
	pb "github.com/ehealth-pseudo/pseudonymizer/proto/pseudonymizer/v1"
	"github.com/ehealth-pseudo/pseudonymizer/pseudonym"
)

// Transit infos that used to panic the transit parser of owners and of the
// service (internal/transit.Open): an 18-character IV, then also a
// 24-character tag, then a well-formed IV with a 24-character tag.
const (
	crashIV       = "eyJhbGciOiJkaXIiLCJlbmMiOiJBMjU2R0NNIiwia2lkIjoidDEiLCJhdWQiOiJ4IiwiaWF0IjowLCJleHAiOjR9..AAAAAAAAAAAAAAAAAA.AAAA.AAAAAAAAAAAAAAAAAAAAAA"
	crashIVAndTag = "eyJhbGciOiJkaXIiLCJlbmMiOiJBMjU2R0NNIiwia2lkIjoidDEiLCJhdWQiOiJ4IiwiaWF0IjowLCJleHAiOjR9..AAAAAAAAAAAAAAAAAA.AAAA.AAAAAAAAAAAAAAAAAAAAAAAA"
	crashTag      = "eyJhbGciOiJkaXIiLCJlbmMiOiJBMjU2R0NNIiwia2lkIjoidDEiLCJhdWQiOiJ4IiwiaWF0IjowLCJleHAiOjR9..AAAAAAAAAAAAAAAA.AAAA.AAAAAAAAAAAAAAAAAAAAAAAA"
)

// fuzzRand returns the same blinding scalar to every item that reads it.
type fuzzRand struct{}

func (fuzzRand) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = 3
	}
	return len(p), nil
}

// fuzzFixture is what the fuzz targets answer: an identifier blinded with
// the fixed scalar, and a well-formed transitInfo.
type fuzzFixture struct {
	id      []byte
	blinded []byte // b·M: unblinds to M, identifies to id
	info    string
}

func newFuzzFixture(t testing.TB) fuzzFixture {
	t.Helper()
	id := []byte("85073003328")
	blinded, _, err := Blind(id, Rand(fuzzRand{}))
	if err != nil {
		t.Fatal(err)
	}
	ks, err := transit.NewKeySet("t1", map[string][]byte{"t1": bytes.Repeat([]byte{9}, transit.KeySize)})
	if err != nil {
		t.Fatal(err)
	}
	s, _ := point.RandomScalar(fuzzRand{})
	info, err := ks.Seal(s, &transit.Claims{Aud: "urn:x", Iat: time.Unix(1_800_000_000, 0), TTL: time.Minute, Sub: "dr"}, fuzzRand{})
	if err != nil {
		t.Fatal(err)
	}
	return fuzzFixture{id: id, blinded: blinded, info: info}
}

// isUnblindError reports whether err is one of the documented errors of
// Unblind.
func isUnblindError(err error) bool {
	return errors.Is(err, ErrInvalidPoint) || errors.Is(err, ErrMissingTransitInfo) || errors.Is(err, ErrMalformedTransitInfo)
}

func isIdentifyError(err error) bool {
	return errors.Is(err, ErrInvalidPoint) || errors.Is(err, ErrNotIdentifier)
}

// FuzzUnblind feeds arbitrary answers (a point's bytes and a transitInfo)
// to Unblind and Identify, alone and as one item of a batch: no panic, only
// the documented errors, and what is accepted is well formed.
func FuzzUnblind(f *testing.F) {
	fx := newFuzzFixture(f)
	g := ristretto255.NewGeneratorElement().Bytes()
	f.Add(fx.blinded, fx.info)
	f.Add(g, fx.info)
	f.Add(g, crashIV)
	f.Add(g, crashIVAndTag)
	f.Add(g, crashTag)
	f.Add(make([]byte, 32), fx.info)
	f.Add(fx.blinded[:31], "")
	f.Add(fx.blinded, "a.b.c.d.e")
	f.Fuzz(func(t *testing.T, evaluated []byte, info string) {
		_, u, err := Blind(fx.id, Rand(fuzzRand{}))
		if err != nil {
			t.Fatal(err)
		}
		tp, uerr := u.Unblind(evaluated, info)
		if uerr != nil {
			if tp != nil || !isUnblindError(uerr) {
				t.Fatalf("Unblind: %v, %v", tp, uerr)
			}
		} else {
			// What the client forwards to the owner parses as it is.
			q, err := pseudonym.ParseTransit(tp.String())
			if err != nil || *q != *tp {
				t.Fatalf("Unblind accepted a transit pseudonym that does not parse: %v", err)
			}
			P, err := point.Decode(tp.Point[:])
			if err != nil || !bytes.Equal(P.ScalarMult(u.b, P).Bytes(), evaluated) {
				t.Fatal("b·P_T is not the evaluated point")
			}
		}
		id, ierr := u.Identify(evaluated)
		if ierr != nil {
			if id != nil || !isIdentifyError(ierr) {
				t.Fatalf("Identify: %q, %v", id, ierr)
			}
		} else if len(id) == 0 || len(id) > identifier.MaxLen {
			t.Fatalf("Identify returned %d bytes", len(id))
		}

		// The batch forms: the fuzzed answer, a good one, and an item that
		// failed to blind. All items share b, so item 0 must come out as
		// the single calls did.
		_, bu, berrs := BlindBatch([][]byte{fx.id, fx.id, nil}, Rand(fuzzRand{}))
		if berrs[0] != nil || berrs[1] != nil || berrs[2] == nil {
			t.Fatal(berrs)
		}
		ts, errs := bu.UnblindBatch([][]byte{evaluated, fx.blinded, evaluated}, []string{info, fx.info, info})
		if !sameOutcome(errs[0], uerr) || (uerr == nil && *ts[0] != *tp) {
			t.Fatalf("batch item %v, single %v", errs[0], uerr)
		}
		if errs[1] != nil || !bytes.Equal(ts[1].Point[:], must(point.Encode(fx.id)).Bytes()) {
			t.Fatalf("good batch item: %v", errs[1])
		}
		if !errors.Is(errs[2], ErrInvalidPoint) || ts[2] != nil {
			t.Fatalf("unblinded item: %v", errs[2])
		}
		ids, errs := bu.IdentifyBatch([][]byte{evaluated, fx.blinded, evaluated})
		if !sameOutcome(errs[0], ierr) || !bytes.Equal(ids[0], id) {
			t.Fatalf("batch item %q, %v; single %q, %v", ids[0], errs[0], id, ierr)
		}
		if errs[1] != nil || !bytes.Equal(ids[1], fx.id) {
			t.Fatalf("good batch item: %q, %v", ids[1], errs[1])
		}
		if !errors.Is(errs[2], ErrInvalidPoint) {
			t.Fatalf("unblinded item: %v", errs[2])
		}
		// Answers of the wrong count.
		if _, errs := bu.UnblindBatch([][]byte{evaluated}, []string{info, info, info}); !errors.Is(errs[0], ErrLengthMismatch) {
			t.Fatal(errs)
		}
	})
}

func sameOutcome(a, b error) bool {
	if a == nil || b == nil {
		return a == b
	}
	return errors.Is(a, b) || errors.Is(b, a) || a.Error() == b.Error()
}

// FuzzItemResults feeds arbitrary results of a batch to the Client's
// reading of them (the id, an evaluated point and transitInfo, or a
// google.rpc.Status error in protobuf wire form): no panic, every item gets
// either a result or a typed error, and a result only for the item it
// names.
func FuzzItemResults(f *testing.F) {
	fx := newFuzzFixture(f)
	st, _ := proto.Marshal(status.New(codes.NotFound, "refused").Proto())
	withInfo, _ := proto.Marshal(itemStatus(f))
	f.Add("0", fx.blinded, fx.info, []byte(nil), false)
	f.Add("1", fx.blinded, crashIV, []byte(nil), false)
	f.Add("0", fx.blinded, crashIVAndTag, []byte(nil), false)
	f.Add("0", fx.blinded, crashTag, []byte(nil), false)
	f.Add("-1", fx.blinded, fx.info, []byte(nil), false)
	f.Add("00", []byte(nil), "", []byte(nil), false)
	f.Add("1", []byte(nil), "", st, true)
	f.Add("0", []byte(nil), "", withInfo, true)
	f.Fuzz(func(t *testing.T, id string, evaluated []byte, info string, rawStatus []byte, isError bool) {
		r := &pb.PseudonymizeResult{Id: id}
		if isError {
			var s spb.Status
			if proto.Unmarshal(rawStatus, &s) != nil {
				return
			}
			r.Outcome = &pb.PseudonymizeResult_Error{Error: &s}
		} else {
			r.Outcome = &pb.PseudonymizeResult_Evaluated{Evaluated: &pb.Evaluated{Point: evaluated, TransitInfo: info}}
		}
		// Items 0 and 1 were sent; item 2 failed to blind.
		_, bu, berrs := BlindBatch([][]byte{fx.id, fx.id, nil}, Rand(fuzzRand{}))
		out := make([]*pseudonym.Transit, 4)
		errs := make([]error, 4)
		readAnswers(evaluatedAnswers([]*pb.PseudonymizeResult{r}), bu, berrs, (*BatchUnblinder).UnblindBatch, out[1:], errs[1:])
		if out[0] != nil || errs[0] != nil {
			t.Fatal("wrote outside the call's items")
		}
		target, named := index(id, 3)
		for i := range 3 {
			tp, err := out[1+i], errs[1+i]
			switch {
			case i == 2:
				if !errors.Is(err, ErrEmptyIdentifier) || tp != nil {
					t.Fatalf("item 2: %v", err)
				}
			case !named || i != target:
				if !errors.Is(err, ErrMissingResult) || tp != nil {
					t.Fatalf("item %d without a result: %v", i, err)
				}
			case isError && r.GetError() != nil:
				var ie *ItemError
				if !errors.As(err, &ie) || tp != nil || status.Code(err) != ie.Code || ie.Code == codes.OK {
					t.Fatalf("item %d refused: %v", i, err)
				}
				_ = ie.Error()
			case err == nil:
				if tp == nil {
					t.Fatalf("item %d: no result and no error", i)
				}
			case !isUnblindError(err) && !errors.Is(err, ErrMissingResult):
				t.Fatalf("item %d: untyped error %v", i, err)
			}
		}
	})
}

// itemStatus is an item refusal as the service writes it.
func itemStatus(t testing.TB) *spb.Status {
	t.Helper()
	st, err := status.New(codes.PermissionDenied, "refused").WithDetails(&errdetails.ErrorInfo{
		Reason: pb.ErrorReason_ERROR_REASON_WRONG_SUBJECT.String(), Domain: "pseudonymizer",
	})
	if err != nil {
		t.Fatal(err)
	}
	return st.Proto()
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func TestItemResultsEdgeCases(t *testing.T) {
	fx := newFuzzFixture(t)
	good := func(id string) *pb.PseudonymizeResult {
		return &pb.PseudonymizeResult{Id: id, Outcome: &pb.PseudonymizeResult_Evaluated{Evaluated: &pb.Evaluated{Point: fx.blinded, TransitInfo: fx.info}}}
	}
	refused := func(id string, s *spb.Status) *pb.PseudonymizeResult {
		return &pb.PseudonymizeResult{Id: id, Outcome: &pb.PseudonymizeResult_Error{Error: s}}
	}
	_, bu, berrs := BlindBatch([][]byte{fx.id, fx.id, nil}, Rand(fuzzRand{}))
	out := make([]*pseudonym.Transit, 3)
	errs := make([]error, 3)
	readAnswers(evaluatedAnswers([]*pb.PseudonymizeResult{
		refused("0", &spb.Status{}), // a refusal that says OK
		good("0"),                   // a second answer for item 0
		good("1"),
		refused("1", itemStatus(t)),
		refused("2", itemStatus(t)), // item 2 was never sent
	}), bu, berrs, (*BatchUnblinder).UnblindBatch, out, errs)
	var ie *ItemError
	if !errors.As(errs[0], &ie) || ie.Code != codes.Unknown || status.Code(errs[0]) != codes.Unknown || out[0] != nil {
		t.Fatalf("item 0: %v", errs[0])
	}
	if errs[1] != nil || out[1] == nil {
		t.Fatalf("item 1: %v (the first answer wins)", errs[1])
	}
	if !errors.Is(errs[2], ErrEmptyIdentifier) {
		t.Fatalf("item 2: %v (its own error)", errs[2])
	}
}
