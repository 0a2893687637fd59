package grpcserver_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/ehealth-pseudo/pseudonymizer/client"
	"github.com/ehealth-pseudo/pseudonymizer/internal/auth"
	"github.com/ehealth-pseudo/pseudonymizer/internal/grpcserver"
	"github.com/ehealth-pseudo/pseudonymizer/internal/servertest"
	"github.com/ehealth-pseudo/pseudonymizer/keys"
	pb "github.com/ehealth-pseudo/pseudonymizer/proto/pseudonymizer/v1"
)

// fuzzFixture is a real server (every interceptor, rate limit included)
// over bufconn, with two domains, fuzz_v1 → fuzz_v2 convertible by the
// caller, who may also pseudonymize and identify in both.
type fuzzFixture struct {
	conn *grpc.ClientConn
	// transit is a valid transit pseudonym of fuzz_v1 (blinded point and
	// transitInfo) for seeds.
	blinded []byte
	ti      string
}

const fuzzCaller = "fuzzer"

// fuzzKeys is the key cache of the fuzz targets: fuzz_v1 → fuzz_v2
// convertible by fuzzCaller, who may also pseudonymize and identify in
// both; and a logger that discards.
func fuzzKeys(f *testing.F) (*keys.Cache, *slog.Logger) {
	f.Helper()
	ctx := context.Background()
	store, err := keys.OpenFileStore(filepath.Join(f.TempDir(), "keys.json"), true)
	if err != nil {
		f.Fatal(err)
	}
	all := []string{fuzzCaller}
	for _, spec := range []keys.DomainSpec{
		{Name: "fuzz_v1", Audience: "urn:test:fuzz:v1", Policy: keys.Policy{Pseudonymize: all, Identify: all, Convert: map[string][]string{"fuzz_v2": all}}},
		{Name: "fuzz_v2", Audience: "urn:test:fuzz:v2", Policy: keys.Policy{Pseudonymize: all, Identify: all}},
	} {
		if _, err := store.CreateDomain(ctx, spec); err != nil {
			f.Fatal(err)
		}
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	cache, err := keys.NewCache(ctx, store, &keys.CacheOptions{Interval: time.Hour, Logger: log})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { _ = cache.Close() })
	return cache, log
}

func newFuzzFixture(f *testing.F) *fuzzFixture {
	f.Helper()
	cache, log := fuzzKeys(f)
	conn := servertest.Start(f, grpcserver.Config{
		Keys: cache, Auth: auth.New(auth.Config{Dev: true}), MaxBatch: 64,
		Rate: 1e9, Burst: 1e9, StreamIdleTimeout: 5 * time.Second, Logger: log,
	}, false).Dial(f)
	fx := &fuzzFixture{conn: conn}
	b, _, err := client.Blind([]byte("85073003328"))
	if err != nil {
		f.Fatal(err)
	}
	resp, err := pb.NewPseudonymizerClient(conn).Pseudonymize(fx.ctx(), &pb.PseudonymizeRequest{
		Domain: "fuzz_v1", Items: []*pb.PseudonymizeItem{{Blinded: b}}})
	if err != nil {
		f.Fatal(err)
	}
	fx.blinded, fx.ti = resp.GetResults()[0].GetEvaluated().GetPoint(), resp.GetResults()[0].GetEvaluated().GetTransitInfo()
	return fx
}

func (fx *fuzzFixture) ctx() context.Context {
	return metadata.AppendToOutgoingContext(context.Background(), auth.DevPrincipalHeader, fuzzCaller)
}

// The methods of pseudonymizer.v1, with their request and response types.
var fuzzMethods = []struct {
	name      string
	stream    bool
	req, resp func() proto.Message
}{
	{"Pseudonymize", false, func() proto.Message { return &pb.PseudonymizeRequest{} }, func() proto.Message { return &pb.PseudonymizeResponse{} }},
	{"Identify", false, func() proto.Message { return &pb.IdentifyRequest{} }, func() proto.Message { return &pb.IdentifyResponse{} }},
	{"ConvertTo", false, func() proto.Message { return &pb.ConvertToRequest{} }, func() proto.Message { return &pb.ConvertToResponse{} }},
	{"GetDomain", false, func() proto.Message { return &pb.GetDomainRequest{} }, func() proto.Message { return &pb.GetDomainResponse{} }},
	{"PseudonymizeStream", true, func() proto.Message { return &pb.PseudonymizeStreamRequest{} }, func() proto.Message { return &pb.PseudonymizeStreamResponse{} }},
	{"IdentifyStream", true, func() proto.Message { return &pb.IdentifyStreamRequest{} }, func() proto.Message { return &pb.IdentifyStreamResponse{} }},
	{"ConvertToStream", true, func() proto.Message { return &pb.ConvertToStreamRequest{} }, func() proto.Message { return &pb.ConvertToStreamResponse{} }},
}

// checkCallError: a call may fail, but never with INTERNAL or UNKNOWN, and
// never without a status.
func checkCallError(t *testing.T, what string, err error) {
	t.Helper()
	if err == nil || errors.Is(err, io.EOF) {
		return
	}
	st, ok := status.FromError(err)
	if !ok {
		t.Fatalf("%s: not a status: %v", what, err)
	}
	if st.Code() == codes.Internal || st.Code() == codes.Unknown {
		t.Fatalf("%s: %v", what, err)
	}
}

// itemResults returns, for a response, the number of results and checks
// that each one has an output or a typed, non-internal error.
func itemResults(t *testing.T, resp proto.Message) int {
	t.Helper()
	type result interface {
		GetId() string
		GetError() *spb.Status
	}
	var results []result
	switch r := resp.(type) {
	case *pb.PseudonymizeResponse:
		for _, x := range r.GetResults() {
			if x.GetEvaluated() == nil && x.GetError() == nil {
				t.Fatal("a result with neither output nor error")
			}
			results = append(results, x)
		}
	case *pb.IdentifyResponse:
		for _, x := range r.GetResults() {
			if x.GetPoint() == nil && x.GetError() == nil {
				t.Fatal("a result with neither output nor error")
			}
			results = append(results, x)
		}
	case *pb.ConvertToResponse:
		for _, x := range r.GetResults() {
			if x.GetEvaluated() == nil && x.GetError() == nil {
				t.Fatal("a result with neither output nor error")
			}
			results = append(results, x)
		}
	case *pb.PseudonymizeStreamResponse:
		return itemResults(t, r.GetResponse())
	case *pb.IdentifyStreamResponse:
		return itemResults(t, r.GetResponse())
	case *pb.ConvertToStreamResponse:
		return itemResults(t, r.GetResponse())
	default:
		return -1
	}
	for _, x := range results {
		if e := x.GetError(); e != nil {
			if c := codes.Code(e.GetCode()); c == codes.OK || c == codes.Internal || c == codes.Unknown || len(e.GetDetails()) == 0 {
				t.Fatalf("item error %v", e)
			}
		}
	}
	return len(results)
}

// requestItems is the number of items of a request, -1 for GetDomain.
func requestItems(req proto.Message) int {
	switch r := req.(type) {
	case *pb.PseudonymizeRequest:
		return len(r.GetItems())
	case *pb.IdentifyRequest:
		return len(r.GetItems())
	case *pb.ConvertToRequest:
		return len(r.GetItems())
	case *pb.PseudonymizeStreamRequest:
		return requestItems(r.GetRequest())
	case *pb.IdentifyStreamRequest:
		return requestItems(r.GetRequest())
	case *pb.ConvertToStreamRequest:
		return requestItems(r.GetRequest())
	}
	return -1
}

// send sends body (arbitrary bytes) to a method through the whole server,
// and checks the outcome.
func (fx *fuzzFixture) send(t *testing.T, which uint8, body []byte) {
	m := fuzzMethods[int(which)%len(fuzzMethods)]
	ctx, cancel := context.WithTimeout(fx.ctx(), 10*time.Second)
	defer cancel()
	full := "/pseudonymizer.v1.Pseudonymizer/" + m.name
	req := m.req()
	decodable := proto.Unmarshal(body, req) == nil
	if !m.stream {
		resp := m.resp()
		err := fx.conn.Invoke(ctx, full, servertest.RawRequest(body), resp, grpc.ForceCodecV2(servertest.RawCodec{}))
		checkCallError(t, m.name, err)
		if err == nil {
			if !decodable {
				t.Fatalf("%s: a request that does not decode was answered", m.name)
			}
			if n := requestItems(req); n >= 0 && itemResults(t, resp) != n {
				t.Fatalf("%s: %d items, %d results", m.name, n, itemResults(t, resp))
			}
		}
		return
	}
	cs, err := fx.conn.NewStream(ctx, &grpc.StreamDesc{ClientStreams: true, ServerStreams: true}, full, grpc.ForceCodecV2(servertest.RawCodec{}))
	if err != nil {
		t.Fatal(err)
	}
	// The same message twice: the second answer must match too.
	for range 2 {
		if err := cs.SendMsg(servertest.RawRequest(body)); err != nil {
			break
		}
	}
	_ = cs.CloseSend()
	for {
		resp := m.resp()
		err := cs.RecvMsg(resp)
		if err != nil {
			checkCallError(t, m.name, err)
			return
		}
		if n := requestItems(req); !decodable || itemResults(t, resp) != n {
			t.Fatalf("%s stream: %d items (decodable %v), %d results", m.name, n, decodable, itemResults(t, resp))
		}
	}
}

// FuzzRequests sends arbitrary bytes as the request of every method of
// pseudonymizer.v1, unary and stream, through the real server and its
// whole interceptor chain: the server survives, answers a status that is
// never INTERNAL, and a decodable batch gets one result per item, each an
// output or a typed error.
func FuzzRequests(f *testing.F) {
	fx := newFuzzFixture(f)
	const crashTI = "eyJhbGciOiJkaXIiLCJlbmMiOiJBMjU2R0NNIiwia2lkIjoidDEiLCJhdWQiOiJ4IiwiaWF0IjowLCJleHAiOjR9..AAAAAAAAAAAAAAAAAA.AAAA.AAAAAAAAAAAAAAAAAAAAAA"
	items := func(ti string) []*pb.IdentifyItem {
		return []*pb.IdentifyItem{{Id: "a", Blinded: fx.blinded, TransitInfo: ti}, {Blinded: fx.blinded[:31], TransitInfo: ti}}
	}
	seeds := []proto.Message{
		&pb.PseudonymizeRequest{Domain: "fuzz_v1", Items: []*pb.PseudonymizeItem{{Id: "x", Blinded: fx.blinded}, {Blinded: make([]byte, 32)}}},
		&pb.IdentifyRequest{Domain: "fuzz_v1", Items: items(fx.ti)},
		&pb.IdentifyRequest{Domain: "fuzz_v1", Items: items(crashTI)},
		&pb.ConvertToRequest{FromDomain: "fuzz_v1", ToDomain: "fuzz_v2", Items: []*pb.ConvertItem{{Blinded: fx.blinded, TransitInfo: fx.ti}}},
		&pb.GetDomainRequest{Name: "fuzz_v1"},
		&pb.PseudonymizeStreamRequest{Request: &pb.PseudonymizeRequest{Domain: "fuzz_v1", Items: []*pb.PseudonymizeItem{{Blinded: fx.blinded}}}},
		&pb.IdentifyStreamRequest{Request: &pb.IdentifyRequest{Domain: "fuzz_v1", Items: items(fx.ti)}},
		&pb.ConvertToStreamRequest{Request: &pb.ConvertToRequest{FromDomain: "fuzz_v1", ToDomain: "fuzz_v2", Items: []*pb.ConvertItem{{Blinded: fx.blinded, TransitInfo: crashTI}}}},
	}
	for i, m := range seeds {
		b, err := proto.Marshal(m)
		if err != nil {
			f.Fatal(err)
		}
		which := []uint8{0, 1, 1, 2, 3, 4, 5, 6}[i]
		f.Add(which, b)
	}
	f.Add(uint8(1), []byte{0x0a, 0x05})
	f.Add(uint8(5), emptyItems(65))
	f.Fuzz(func(t *testing.T, which uint8, body []byte) {
		fx.send(t, which, body)
	})
}

// FuzzItems builds well-formed identify and convert requests, alone and on
// streams, from arbitrary ids, points and transitInfo texts (the fields
// that reach the parsers), and sends them through the real server.
func FuzzItems(f *testing.F) {
	fx := newFuzzFixture(f)
	f.Add("a", fx.blinded, fx.ti, uint8(0))
	f.Add("", fx.blinded, fx.ti[:len(fx.ti)-2]+"AA", uint8(1))
	f.Add("b", fx.blinded, "eyJhbGciOiJkaXIiLCJlbmMiOiJBMjU2R0NNIiwia2lkIjoidDEiLCJhdWQiOiJ4IiwiaWF0IjowLCJleHAiOjR9..AAAAAAAAAAAAAAAAAA.AAAA.AAAAAAAAAAAAAAAAAAAAAA", uint8(2))
	f.Add("c", []byte{1, 2, 3}, "....", uint8(3))
	f.Fuzz(func(t *testing.T, id string, blinded []byte, ti string, which uint8) {
		var req proto.Message
		switch which % 4 {
		case 0:
			req = &pb.IdentifyRequest{Domain: "fuzz_v1", Items: []*pb.IdentifyItem{{Id: id, Blinded: blinded, TransitInfo: ti}}}
		case 1:
			req = &pb.ConvertToRequest{FromDomain: "fuzz_v1", ToDomain: "fuzz_v2", Items: []*pb.ConvertItem{{Id: id, Blinded: blinded, TransitInfo: ti}}}
		case 2:
			req = &pb.IdentifyStreamRequest{Request: &pb.IdentifyRequest{Domain: "fuzz_v1", Items: []*pb.IdentifyItem{{Id: id, Blinded: blinded, TransitInfo: ti}}}}
		default:
			req = &pb.PseudonymizeRequest{Domain: "fuzz_v1", Items: []*pb.PseudonymizeItem{{Id: id, Blinded: blinded}}}
		}
		b, err := proto.Marshal(req)
		if err != nil {
			return // invalid UTF-8 in a string: FuzzRequests covers raw bytes
		}
		fx.send(t, []uint8{1, 2, 5, 0}[which%4], b)
	})
}
