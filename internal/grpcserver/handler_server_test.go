package grpcserver_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/ehealth-pseudo/pseudonymizer/client"
	"github.com/ehealth-pseudo/pseudonymizer/internal/grpcserver"
	"github.com/ehealth-pseudo/pseudonymizer/keys"
	"github.com/ehealth-pseudo/pseudonymizer/owner"
	pb "github.com/ehealth-pseudo/pseudonymizer/proto/pseudonymizer/v1"
	"github.com/ehealth-pseudo/pseudonymizer/pseudonym"
)

func TestPseudonymizeIdentifyRoundTrip(t *testing.T) {
	e := newEnv(t)
	ids := [][]byte{randomID(t), randomID(t)}
	ts := e.pseudonymize("prescriber", "rx_v1", ids...)
	ps := e.atRest("rx_v1", ts...)
	if ps[0] == ps[1] {
		t.Fatal("two identifiers gave the same pseudonym")
	}
	// Deterministic at rest, unlinkable in transit.
	ts2 := e.pseudonymize("pharmacy", "rx_v1", ids[0])
	if got := e.atRest("rx_v1", ts2...)[0]; got != ps[0] {
		t.Fatal("pseudonymizing twice gave two pseudonyms at rest")
	}
	if ts2[0].Point == ts[0].Point || ts2[0].Info == ts[0].Info {
		t.Fatal("two transit forms of one pseudonym are equal")
	}

	items, us := identifyItems(t, e.inTransit("rx_v1", ps[1]), e.inTransit("rx_v1", ps[0]))
	items[0].Id, items[1].Id = "first", "second"
	resp, err := e.client.Identify(as("pharmacy"), &pb.IdentifyRequest{Domain: "rx_v1", Items: items})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.GetResults()) != 2 {
		t.Fatalf("got %d results", len(resp.GetResults()))
	}
	for i, want := range [][]byte{ids[1], ids[0]} {
		r := resp.GetResults()[i]
		if r.GetId() != items[i].Id {
			t.Errorf("result %d id = %q", i, r.GetId())
		}
		got, err := us[i].Identify(r.GetPoint())
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("identify %d = %q, %v; want %q", i, got, err, want)
		}
	}

	// An empty batch is valid.
	empty, err := e.client.Pseudonymize(as("prescriber"), &pb.PseudonymizeRequest{Domain: "rx_v1"})
	if err != nil || len(empty.GetResults()) != 0 {
		t.Fatalf("empty batch: %v, %v", empty, err)
	}
}

func TestConvertTo(t *testing.T) {
	e := newEnv(t)
	id := randomID(t)
	p1 := e.atRest("rx_v1", e.pseudonymize("prescriber", "rx_v1", id)...)[0]
	items, us := convertItems(t, e.inTransit("rx_v1", p1))
	resp, err := e.client.ConvertTo(as("rx-owner"), &pb.ConvertToRequest{FromDomain: "rx_v1", ToDomain: "rx_v2", Items: items})
	if err != nil {
		t.Fatal(err)
	}
	ev := resp.GetResults()[0].GetEvaluated()
	if ev == nil {
		t.Fatalf("convert failed: %v", resp.GetResults()[0].GetError())
	}
	tb, err := us[0].Unblind(ev.GetPoint(), ev.GetTransitInfo())
	if err != nil {
		t.Fatal(err)
	}
	got := e.atRest("rx_v2", tb)[0]
	want := e.atRest("rx_v2", e.pseudonymize("prescriber", "rx_v2", id)...)[0]
	if got != want {
		t.Fatal("converted pseudonym differs from the pseudonym of the same identifier in the target domain")
	}
	if got == p1 {
		t.Fatal("pseudonyms of two domains are equal")
	}
}

func TestStreams(t *testing.T) {
	e := newEnv(t)
	ctx := as("alice")

	// PseudonymizeStream: two chunks, answered in order.
	ps, err := e.client.PseudonymizeStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ids := [][]byte{randomID(t), randomID(t), randomID(t)}
	blinded, bu, _ := client.BlindBatch(ids)
	chunks := [][]int{{0, 1}, {2}}
	var transits []*pseudonym.Transit
	for _, chunk := range chunks {
		req := &pb.PseudonymizeRequest{Domain: "open_v1"}
		for _, i := range chunk {
			req.Items = append(req.Items, &pb.PseudonymizeItem{Id: string(rune('a' + i)), Blinded: blinded[i]})
		}
		if err := ps.Send(&pb.PseudonymizeStreamRequest{Request: req}); err != nil {
			t.Fatal(err)
		}
		resp, err := ps.Recv()
		if err != nil {
			t.Fatal(err)
		}
		res := resp.GetResponse().GetResults()
		if len(res) != len(chunk) {
			t.Fatalf("chunk of %d answered with %d results", len(chunk), len(res))
		}
		for j, i := range chunk {
			if res[j].GetId() != string(rune('a'+i)) {
				t.Fatalf("result id %q for item %d", res[j].GetId(), i)
			}
			tp, err := bu.Item(i).Unblind(res[j].GetEvaluated().GetPoint(), res[j].GetEvaluated().GetTransitInfo())
			if err != nil {
				t.Fatal(err)
			}
			transits = append(transits, tp)
		}
	}
	if err := ps.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if _, err := ps.Recv(); err != io.EOF {
		t.Fatalf("end of stream: %v", err)
	}
	atRest := e.atRest("open_v1", transits...)

	// IdentifyStream gives the identifiers back.
	is, err := e.client.IdentifyStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i, p := range atRest {
		items, us := identifyItems(t, e.inTransit("open_v1", p))
		if err := is.Send(&pb.IdentifyStreamRequest{Request: &pb.IdentifyRequest{Domain: "open_v1", Items: items}}); err != nil {
			t.Fatal(err)
		}
		resp, err := is.Recv()
		if err != nil {
			t.Fatal(err)
		}
		got, err := us[0].Identify(resp.GetResponse().GetResults()[0].GetPoint())
		if err != nil || !bytes.Equal(got, ids[i]) {
			t.Fatalf("identify stream item %d = %q, %v", i, got, err)
		}
	}
	_ = is.CloseSend()
	if _, err := is.Recv(); err != io.EOF {
		t.Fatalf("end of identify stream: %v", err)
	}

	// ConvertToStream, then a chunk the caller may not run: the stream
	// ends with that status after the first answer.
	p1 := e.atRest("rx_v1", e.pseudonymize("prescriber", "rx_v1", ids[0])...)[0]
	want := e.atRest("rx_v2", e.pseudonymize("prescriber", "rx_v2", ids[0])...)[0]
	cs, err := e.client.ConvertToStream(as("rx-owner"))
	if err != nil {
		t.Fatal(err)
	}
	items, us := convertItems(t, e.inTransit("rx_v1", p1))
	if err := cs.Send(&pb.ConvertToStreamRequest{Request: &pb.ConvertToRequest{FromDomain: "rx_v1", ToDomain: "rx_v2", Items: items}}); err != nil {
		t.Fatal(err)
	}
	resp, err := cs.Recv()
	if err != nil {
		t.Fatal(err)
	}
	ev := resp.GetResponse().GetResults()[0].GetEvaluated()
	tb, err := us[0].Unblind(ev.GetPoint(), ev.GetTransitInfo())
	if err != nil {
		t.Fatal(err)
	}
	if got := e.atRest("rx_v2", tb)[0]; got != want {
		t.Fatal("convert stream gave a wrong pseudonym")
	}
	items, _ = convertItems(t, e.inTransit("rx_v1", p1))
	if err := cs.Send(&pb.ConvertToStreamRequest{Request: &pb.ConvertToRequest{FromDomain: "rx_v1", ToDomain: "open_v1", Items: items}}); err != nil {
		t.Fatal(err)
	}
	_, err = cs.Recv()
	wantCallErr(t, err, codes.PermissionDenied, pb.ErrorReason_ERROR_REASON_OPERATION_NOT_ALLOWED)
}

func TestGetDomain(t *testing.T) {
	e := newEnv(t)
	P, I, C := pb.Operation_OPERATION_PSEUDONYMIZE, pb.Operation_OPERATION_IDENTIFY, pb.Operation_OPERATION_CONVERT
	for _, tc := range []struct {
		who, domain string
		ops         []pb.Operation
		targets     []string
	}{
		{"pharmacy", "rx_v1", []pb.Operation{P, I}, nil},
		{"prescriber", "rx_v1", []pb.Operation{P}, nil},
		{"rx-owner", "rx_v1", []pb.Operation{C}, []string{"ghost_v1", "rx_v2"}},
		{"anyone", "open_v1", []pb.Operation{P, I}, nil},
	} {
		resp, err := e.client.GetDomain(as(tc.who), &pb.GetDomainRequest{Name: tc.domain})
		if err != nil {
			t.Fatalf("%s on %s: %v", tc.who, tc.domain, err)
		}
		if !slices.Equal(resp.GetAllowedOperations(), tc.ops) || !slices.Equal(resp.GetConvertTargets(), tc.targets) {
			t.Errorf("%s on %s: ops %v targets %v; want %v %v", tc.who, tc.domain,
				resp.GetAllowedOperations(), resp.GetConvertTargets(), tc.ops, tc.targets)
		}
		if resp.GetName() != tc.domain || !strings.HasPrefix(resp.GetAudience(), "urn:test:") ||
			resp.GetTtl().AsDuration() != keys.DefaultTTL || resp.GetActiveKid() != keys.FirstKid ||
			!slices.Equal(resp.GetAcceptedKids(), []string{keys.FirstKid}) {
			t.Errorf("%s: public settings %v", tc.domain, resp)
		}
	}

	// "*" lets an owner neither identify nor pseudonymize: it may do
	// nothing on open_v1.
	_, errOwner := e.client.GetDomain(as("open-owner"), &pb.GetDomainRequest{Name: "open_v1"})
	wantCallErr(t, errOwner, codes.PermissionDenied, pb.ErrorReason_ERROR_REASON_OPERATION_NOT_ALLOWED)

	// Forbidden and unknown domains look the same.
	_, errForbidden := e.client.GetDomain(as("prescriber"), &pb.GetDomainRequest{Name: "secret_v1"})
	_, errUnknown := e.client.GetDomain(as("prescriber"), &pb.GetDomainRequest{Name: "nope_v1"})
	wantCallErr(t, errForbidden, codes.PermissionDenied, pb.ErrorReason_ERROR_REASON_OPERATION_NOT_ALLOWED)
	sameStatus(t, errForbidden, errUnknown)

	_, err := e.client.GetDomain(as("prescriber"), &pb.GetDomainRequest{})
	wantCallErr(t, err, codes.InvalidArgument, pb.ErrorReason_ERROR_REASON_UNSPECIFIED)
}

// sameStatus fails unless two errors are the same status, details included.
func sameStatus(t *testing.T, a, b error) {
	t.Helper()
	if !proto.Equal(status.Convert(a).Proto(), status.Convert(b).Proto()) {
		t.Fatalf("statuses differ: %v / %v", a, b)
	}
}

func TestAuthorization(t *testing.T) {
	e := newEnv(t)
	id := randomID(t)
	pRx := e.atRest("rx_v1", e.pseudonymize("prescriber", "rx_v1", id)...)[0]
	pOpen := e.atRest("open_v1", e.pseudonymize("x", "open_v1", id)...)[0]
	pRx2 := e.atRest("rx_v2", e.pseudonymize("prescriber", "rx_v2", id)...)[0]

	pseudonymize := func(who, domain string) error {
		b, _, _ := client.Blind(id)
		_, err := e.client.Pseudonymize(as(who), &pb.PseudonymizeRequest{Domain: domain, Items: []*pb.PseudonymizeItem{{Blinded: b}}})
		return err
	}
	identify := func(who, domain string, p pseudonym.AtRest) error {
		items, _ := identifyItems(t, e.inTransit(domain, p))
		resp, err := e.client.Identify(as(who), &pb.IdentifyRequest{Domain: domain, Items: items})
		if err == nil && resp.GetResults()[0].GetError() != nil {
			t.Fatalf("identify item failed: %v", resp.GetResults()[0].GetError())
		}
		return err
	}
	convert := func(who, from, to string, p pseudonym.AtRest) error {
		items, _ := convertItems(t, e.inTransit(from, p))
		resp, err := e.client.ConvertTo(as(who), &pb.ConvertToRequest{FromDomain: from, ToDomain: to, Items: items})
		if err == nil && resp.GetResults()[0].GetError() != nil {
			t.Fatalf("convert item failed: %v", resp.GetResults()[0].GetError())
		}
		return err
	}
	const ok = codes.OK
	denied := pb.ErrorReason_ERROR_REASON_OPERATION_NOT_ALLOWED
	var deniedErr error
	for _, tc := range []struct {
		name   string
		call   func() error
		code   codes.Code
		reason pb.ErrorReason
	}{
		{"pseudonymize allowed", func() error { return pseudonymize("prescriber", "rx_v1") }, ok, 0},
		{"pseudonymize by an owner not listed", func() error { return pseudonymize("rx-owner", "rx_v1") }, codes.PermissionDenied, denied},
		{"pseudonymize by a stranger", func() error { return pseudonymize("stranger", "rx_v1") }, codes.PermissionDenied, denied},
		{"pseudonymize on a forbidden domain", func() error { return pseudonymize("prescriber", "secret_v1") }, codes.PermissionDenied, denied},
		{"pseudonymize on an unknown domain", func() error { return pseudonymize("prescriber", "nope_v1") }, codes.PermissionDenied, denied},
		{"pseudonymize with any principal (*)", func() error { return pseudonymize("stranger", "open_v1") }, ok, 0},
		{"pseudonymize without domain", func() error { return pseudonymize("prescriber", "") }, codes.InvalidArgument, 0},
		{"identify allowed", func() error { return identify("pharmacy", "rx_v1", pRx) }, ok, 0},
		{"identify by a listed owner", func() error { return identify("rx-owner", "rx_v1", pRx) }, codes.PermissionDenied, denied},
		{"identify not listed", func() error { return identify("prescriber", "rx_v1", pRx) }, codes.PermissionDenied, denied},
		{"identify with any principal (*)", func() error { return identify("stranger", "open_v1", pOpen) }, ok, 0},
		{"identify by an owner with *", func() error { return identify("open-owner", "open_v1", pOpen) }, codes.PermissionDenied, denied},
		{"convert allowed", func() error { return convert("rx-owner", "rx_v1", "rx_v2", pRx) }, ok, 0},
		{"convert not listed", func() error { return convert("pharmacy", "rx_v1", "rx_v2", pRx) }, codes.PermissionDenied, denied},
		{"convert to a target not allowed", func() error { return convert("rx-owner", "rx_v1", "open_v1", pRx) }, codes.PermissionDenied, denied},
		{"convert backwards", func() error { return convert("rx-owner", "rx_v2", "rx_v1", pRx2) }, codes.PermissionDenied, denied},
		{"convert to an allowed target that does not exist", func() error { return convert("rx-owner", "rx_v1", "ghost_v1", pRx) }, codes.NotFound, pb.ErrorReason_ERROR_REASON_UNKNOWN_DOMAIN},
		{"convert within one domain", func() error { return convert("rx-owner", "rx_v1", "rx_v1", pRx) }, codes.InvalidArgument, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			if tc.code == ok {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			wantCallErr(t, err, tc.code, tc.reason)
			if tc.reason == denied {
				if deniedErr != nil {
					sameStatus(t, deniedErr, err) // nothing tells the cases apart
				}
				deniedErr = err
			}
		})
	}
}

func TestSubjectBoundTransit(t *testing.T) {
	e := newEnv(t)
	id := randomID(t)
	p := e.atRest("open_v1", e.pseudonymize("alice", "open_v1", id)...)[0]
	bound := e.inTransit("open_v1", p, owner.Subject("alice"))

	items, us := identifyItems(t, bound)
	resp, err := e.client.Identify(as("alice"), &pb.IdentifyRequest{Domain: "open_v1", Items: items})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := us[0].Identify(resp.GetResults()[0].GetPoint()); err != nil || !bytes.Equal(got, id) {
		t.Fatalf("identify by the subject = %q, %v", got, err)
	}

	items, _ = identifyItems(t, bound, e.inTransit("open_v1", p))
	resp, err = e.client.Identify(as("bob"), &pb.IdentifyRequest{Domain: "open_v1", Items: items})
	if err != nil {
		t.Fatal(err)
	}
	wantItemErr(t, "identify by another caller", resp.GetResults()[0], codes.PermissionDenied, pb.ErrorReason_ERROR_REASON_WRONG_SUBJECT)
	if resp.GetResults()[1].GetPoint() == nil {
		t.Fatal("the unbound item of the batch failed")
	}

	// Convert checks sub too.
	pRx := e.atRest("rx_v1", e.pseudonymize("prescriber", "rx_v1", id)...)[0]
	citems, _ := convertItems(t, e.inTransit("rx_v1", pRx, owner.Subject("pharmacy")))
	cresp, err := e.client.ConvertTo(as("rx-owner"), &pb.ConvertToRequest{FromDomain: "rx_v1", ToDomain: "rx_v2", Items: citems})
	if err != nil {
		t.Fatal(err)
	}
	wantItemErr(t, "convert of a transit bound to another caller", cresp.GetResults()[0], codes.PermissionDenied, pb.ErrorReason_ERROR_REASON_WRONG_SUBJECT)
}

func TestInvalidPoints(t *testing.T) {
	e := newEnv(t)
	good, _, _ := client.Blind(randomID(t))
	nonCanonical := bytes.Repeat([]byte{0xff}, 32)
	identity := make([]byte, 32)
	inputs := [][]byte{good, good[:31], nonCanonical, identity, append(slices.Clone(good), 0), nil, good}
	req := &pb.PseudonymizeRequest{Domain: "rx_v1"}
	for i, b := range inputs {
		req.Items = append(req.Items, &pb.PseudonymizeItem{Id: string(rune('a' + i)), Blinded: b})
	}
	resp, err := e.client.Pseudonymize(as("prescriber"), req)
	if err != nil {
		t.Fatal(err)
	}
	res := resp.GetResults()
	for i, r := range res {
		if r.GetId() != string(rune('a'+i)) {
			t.Fatalf("result %d has id %q", i, r.GetId())
		}
		if i == 0 || i == len(res)-1 {
			if r.GetEvaluated() == nil {
				t.Fatalf("valid item %d failed: %v", i, r.GetError())
			}
			continue
		}
		wantItemErr(t, "invalid point", r, codes.InvalidArgument, pb.ErrorReason_ERROR_REASON_INVALID_POINT)
		if msg := r.GetError().GetMessage(); strings.Contains(msg, "%") || len(r.GetError().GetDetails()) != 1 {
			t.Errorf("item status %v", r.GetError())
		}
	}
}

// foreignOwner is an owner of domain name with its keys changed by f: a
// forger.
func (e *env) foreignOwner(name string, f func(d *keys.Domain)) *owner.Owner {
	e.t.Helper()
	d, err := e.store.Domain(context.Background(), name)
	if err != nil {
		e.t.Fatal(err)
	}
	c := *d
	f(&c)
	o, err := owner.New(context.Background(), name, owner.StaticKeys{D: &c}, owner.WithRefreshInterval(0))
	if err != nil {
		e.t.Fatal(err)
	}
	return o
}

// tamper changes the first character of the ciphertext of a transitInfo.
func tamper(ti string) string {
	parts := strings.Split(ti, ".")
	c := []byte(parts[3])
	if c[0] == 'A' {
		c[0] = 'B'
	} else {
		c[0] = 'A'
	}
	parts[3] = string(c)
	return strings.Join(parts, ".")
}

func TestTransitInfoErrors(t *testing.T) {
	e := newEnv(t)
	id := randomID(t)
	p := e.atRest("open_v1", e.pseudonymize("alice", "open_v1", id)...)[0]
	now := time.Now()
	unknownKid := e.foreignOwner("open_v1", func(d *keys.Domain) {
		k, _ := keys.NewTransitKey(nil)
		d.Transit = keys.Transit{Active: "t9", Keys: map[string]keys.Secret{"t9": k}}
	})
	otherAudience := e.foreignOwner("open_v1", func(d *keys.Domain) { d.Audience = "urn:test:elsewhere" })
	mustTransit := func(o *owner.Owner) *pseudonym.Transit {
		tp, err := o.InTransit(p)
		if err != nil {
			t.Fatal(err)
		}
		return tp
	}
	forged := e.inTransit("open_v1", p)
	forged.Info = tamper(forged.Info)
	malformed := e.inTransit("open_v1", p)
	malformed.Info = "not.a.jwe"

	cases := []struct {
		name   string
		tp     *pseudonym.Transit
		code   codes.Code
		reason pb.ErrorReason
	}{
		{"valid", e.inTransit("open_v1", p), codes.OK, 0},
		{"expired", e.inTransit("open_v1", p, owner.IssuedAt(now.Add(-time.Hour))), codes.FailedPrecondition, pb.ErrorReason_ERROR_REASON_EXPIRED},
		{"not yet valid", e.inTransit("open_v1", p, owner.IssuedAt(now.Add(time.Hour))), codes.FailedPrecondition, pb.ErrorReason_ERROR_REASON_NOT_YET_VALID},
		{"forged", forged, codes.InvalidArgument, pb.ErrorReason_ERROR_REASON_BAD_TAG},
		{"malformed", malformed, codes.InvalidArgument, pb.ErrorReason_ERROR_REASON_MALFORMED_TRANSIT_INFO},
		{"unknown kid", mustTransit(unknownKid), codes.FailedPrecondition, pb.ErrorReason_ERROR_REASON_UNKNOWN_KID},
		{"wrong audience", mustTransit(otherAudience), codes.InvalidArgument, pb.ErrorReason_ERROR_REASON_WRONG_AUDIENCE},
		{"valid again", e.inTransit("open_v1", p), codes.OK, 0},
	}
	ts := make([]*pseudonym.Transit, len(cases))
	for i, c := range cases {
		ts[i] = c.tp
	}
	items, us := identifyItems(t, ts...)
	items = append(items, &pb.IdentifyItem{Id: "bad point", Blinded: []byte{1, 2, 3}, TransitInfo: ts[0].Info})
	resp, err := e.client.Identify(as("alice"), &pb.IdentifyRequest{Domain: "open_v1", Items: items})
	if err != nil {
		t.Fatal(err)
	}
	res := resp.GetResults()
	for i, c := range cases {
		if c.code == codes.OK {
			got, err := us[i].Identify(res[i].GetPoint())
			if err != nil || !bytes.Equal(got, id) {
				t.Errorf("%s: identify = %q, %v", c.name, got, err)
			}
			continue
		}
		wantItemErr(t, c.name, res[i], c.code, c.reason)
	}
	wantItemErr(t, "bad point", res[len(cases)], codes.InvalidArgument, pb.ErrorReason_ERROR_REASON_INVALID_POINT)

	// The same checks run on convert, against from_domain.
	pRx := e.atRest("rx_v1", e.pseudonymize("prescriber", "rx_v1", id)...)[0]
	citems, _ := convertItems(t,
		e.inTransit("rx_v1", pRx, owner.IssuedAt(now.Add(-time.Hour))),
		e.inTransit("open_v1", p), // sealed for another domain
		e.inTransit("rx_v1", pRx))
	cresp, err := e.client.ConvertTo(as("rx-owner"), &pb.ConvertToRequest{FromDomain: "rx_v1", ToDomain: "rx_v2", Items: citems})
	if err != nil {
		t.Fatal(err)
	}
	wantItemErr(t, "convert expired", cresp.GetResults()[0], codes.FailedPrecondition, pb.ErrorReason_ERROR_REASON_EXPIRED)
	wantItemErr(t, "convert from another domain", cresp.GetResults()[1], codes.InvalidArgument, pb.ErrorReason_ERROR_REASON_BAD_TAG)
	if cresp.GetResults()[2].GetEvaluated() == nil {
		t.Fatal("valid convert item failed")
	}
}

func TestBatchTooLarge(t *testing.T) {
	e := newEnv(t, func(c *grpcserver.Config) { c.MaxBatch = 3 })
	b, _, _ := client.Blind(randomID(t))
	pItems := func(n int) []*pb.PseudonymizeItem {
		items := make([]*pb.PseudonymizeItem, n)
		for i := range items {
			items[i] = &pb.PseudonymizeItem{Blinded: b}
		}
		return items
	}
	if _, err := e.client.Pseudonymize(as("prescriber"), &pb.PseudonymizeRequest{Domain: "rx_v1", Items: pItems(3)}); err != nil {
		t.Fatalf("batch of the maximum size: %v", err)
	}
	_, err := e.client.Pseudonymize(as("prescriber"), &pb.PseudonymizeRequest{Domain: "rx_v1", Items: pItems(4)})
	st := wantCallErr(t, err, codes.InvalidArgument, pb.ErrorReason_ERROR_REASON_BATCH_TOO_LARGE)
	if got := errorInfo(t, st).GetMetadata()["max_batch_size"]; got != "3" {
		t.Fatalf("max_batch_size = %q", got)
	}
	_, err = e.client.Identify(as("pharmacy"), &pb.IdentifyRequest{Domain: "rx_v1", Items: make([]*pb.IdentifyItem, 4)})
	wantCallErr(t, err, codes.InvalidArgument, pb.ErrorReason_ERROR_REASON_BATCH_TOO_LARGE)
	_, err = e.client.ConvertTo(as("rx-owner"), &pb.ConvertToRequest{FromDomain: "rx_v1", ToDomain: "rx_v2", Items: make([]*pb.ConvertItem, 4)})
	wantCallErr(t, err, codes.InvalidArgument, pb.ErrorReason_ERROR_REASON_BATCH_TOO_LARGE)

	s, err := e.client.PseudonymizeStream(as("prescriber"))
	if err != nil {
		t.Fatal(err)
	}
	_ = s.Send(&pb.PseudonymizeStreamRequest{Request: &pb.PseudonymizeRequest{Domain: "rx_v1", Items: pItems(2)}})
	if _, err := s.Recv(); err != nil {
		t.Fatal(err)
	}
	_ = s.Send(&pb.PseudonymizeStreamRequest{Request: &pb.PseudonymizeRequest{Domain: "rx_v1", Items: pItems(4)}})
	_, err = s.Recv()
	wantCallErr(t, err, codes.InvalidArgument, pb.ErrorReason_ERROR_REASON_BATCH_TOO_LARGE)
}

func TestMaxMessageSize(t *testing.T) {
	e := newEnv(t, func(c *grpcserver.Config) { c.MaxRecvMsgSize = 2048 })
	b, _, _ := client.Blind(randomID(t))
	req := &pb.PseudonymizeRequest{Domain: "rx_v1"}
	for range 100 {
		req.Items = append(req.Items, &pb.PseudonymizeItem{Blinded: b})
	}
	_, err := e.client.Pseudonymize(as("prescriber"), req)
	if st := status.Convert(err); st.Code() != codes.ResourceExhausted || !strings.Contains(st.Message(), "larger than max") {
		t.Fatalf("oversized message: %v", err)
	}
	s, err := e.client.PseudonymizeStream(as("prescriber"))
	if err != nil {
		t.Fatal(err)
	}
	_ = s.Send(&pb.PseudonymizeStreamRequest{Request: req})
	if _, err := s.Recv(); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("oversized stream message: %v", err)
	}
	req.Items = req.Items[:10]
	if _, err := e.client.Pseudonymize(as("prescriber"), req); err != nil {
		t.Fatalf("small message: %v", err)
	}
}

func TestRateLimitPerItem(t *testing.T) {
	// 10 items at once, then (practically) nothing.
	e := newEnv(t, func(c *grpcserver.Config) { c.Rate, c.Burst = 0.001, 10 })
	b, _, _ := client.Blind(randomID(t))
	call := func(who string, n int) error {
		req := &pb.PseudonymizeRequest{Domain: "open_v1"}
		for range n {
			req.Items = append(req.Items, &pb.PseudonymizeItem{Blinded: b})
		}
		_, err := e.client.Pseudonymize(as(who), req)
		return err
	}
	limited := pb.ErrorReason_ERROR_REASON_RATE_LIMITED
	wantCallErr(t, call("alice", 11), codes.ResourceExhausted, limited) // over the burst: never passes
	if err := call("alice", 10); err != nil {
		t.Fatalf("batch of the burst size: %v", err)
	}
	wantCallErr(t, call("alice", 1), codes.ResourceExhausted, limited)
	_, err := e.client.GetDomain(as("alice"), &pb.GetDomainRequest{Name: "open_v1"})
	wantCallErr(t, err, codes.ResourceExhausted, limited)
	if err := call("bob", 10); err != nil {
		t.Fatalf("another principal: %v", err)
	}

	// Streams: each chunk is counted.
	s, err := e.client.PseudonymizeStream(as("carol"))
	if err != nil {
		t.Fatal(err)
	}
	chunk := &pb.PseudonymizeRequest{Domain: "open_v1", Items: []*pb.PseudonymizeItem{{Blinded: b}, {Blinded: b}, {Blinded: b}, {Blinded: b}, {Blinded: b}, {Blinded: b}}}
	_ = s.Send(&pb.PseudonymizeStreamRequest{Request: chunk})
	if _, err := s.Recv(); err != nil {
		t.Fatal(err)
	}
	_ = s.Send(&pb.PseudonymizeStreamRequest{Request: chunk})
	_, err = s.Recv()
	wantCallErr(t, err, codes.ResourceExhausted, limited)
}

// panicky is a key source that panics for one domain name.
type panicky struct{ grpcserver.KeySource }

const panicValue = "panic-value-that-must-not-leak"

func (p panicky) Domain(name string) (*keys.Domain, error) {
	if name == "boom" {
		panic(errors.New(panicValue))
	}
	return p.KeySource.Domain(name)
}

func TestPanicRecovery(t *testing.T) {
	e := newEnv(t, func(c *grpcserver.Config) { c.Keys = panicky{c.Keys} })
	_, err := e.client.Pseudonymize(as("alice"), &pb.PseudonymizeRequest{Domain: "boom"})
	st := wantCallErr(t, err, codes.Internal, pb.ErrorReason_ERROR_REASON_UNSPECIFIED)
	if st.Message() != "internal error" {
		t.Fatalf("message %q", st.Message())
	}
	s, err := e.client.IdentifyStream(as("alice"))
	if err != nil {
		t.Fatal(err)
	}
	_ = s.Send(&pb.IdentifyStreamRequest{Request: &pb.IdentifyRequest{Domain: "boom"}})
	_, err = s.Recv()
	wantCallErr(t, err, codes.Internal, pb.ErrorReason_ERROR_REASON_UNSPECIFIED)

	// The server goes on.
	e.pseudonymize("alice", "open_v1", randomID(t))
	logs := e.logs.Bytes()
	if bytes.Contains(logs, []byte(panicValue)) {
		t.Fatal("the panic value was logged")
	}
	if !bytes.Contains(logs, []byte("panic in a call handler")) {
		t.Fatalf("the panic was not logged:\n%s", logs)
	}
}
