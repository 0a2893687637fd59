package grpcserver_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ehealth-pseudo/pseudonymizer/internal/servertest"
	"github.com/ehealth-pseudo/pseudonymizer/internal/syncbuf"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/ehealth-pseudo/pseudonymizer/client"
	"github.com/ehealth-pseudo/pseudonymizer/internal/auth"
	"github.com/ehealth-pseudo/pseudonymizer/internal/grpcserver"
	"github.com/ehealth-pseudo/pseudonymizer/internal/point"
	"github.com/ehealth-pseudo/pseudonymizer/internal/transit"
	"github.com/ehealth-pseudo/pseudonymizer/internal/waitfor"
	"github.com/ehealth-pseudo/pseudonymizer/keys"
	pb "github.com/ehealth-pseudo/pseudonymizer/proto/pseudonymizer/v1"
)

const pseudonymizeMethod = "/pseudonymizer.v1.Pseudonymizer/Pseudonymize"

// invokeRaw sends b as the request of a unary method.
func invokeRaw(ctx context.Context, conn *grpc.ClientConn, method string, b []byte) error {
	return conn.Invoke(ctx, method, servertest.RawRequest(b), &pb.PseudonymizeResponse{}, grpc.ForceCodecV2(servertest.RawCodec{}))
}

// emptyItems encodes a PseudonymizeRequest for domain tls_v1 with n empty
// items (two bytes each on the wire).
func emptyItems(n int) []byte {
	b := protowire.AppendTag(nil, 1, protowire.BytesType)
	b = protowire.AppendString(b, "tls_v1")
	for range n {
		b = protowire.AppendTag(b, 2, protowire.BytesType)
		b = protowire.AppendVarint(b, 0)
	}
	return b
}

func devCtx(t *testing.T, principal string) context.Context {
	return metadata.AppendToOutgoingContext(ctxTimeout(t), auth.DevPrincipalHeader, principal)
}

// TestUnauthenticatedRefusedBeforeBody: with mTLS and bearer tokens, a call
// without credentials is refused from its headers: a body over the size
// limit, or one that does not decode, still gets UNAUTHENTICATED (had the
// body been read first, it would be RESOURCE_EXHAUSTED or INVALID_ARGUMENT),
// and the refusal is audited.
func TestUnauthenticatedRefusedBeforeBody(t *testing.T) {
	logs := &syncbuf.Buffer{}
	js := startJWTServer(t, func(c *grpcserver.Config) {
		c.MaxBatch, c.Logger = 10, slog.New(slog.NewJSONHandler(logs, nil))
	})
	conn := js.dialNoCert(t)
	for name, body := range map[string][]byte{
		"over the size limit": emptyItems(1 << 20),
		"not protobuf":        {0xff, 0xff, 0xff},
		"valid":               emptyItems(1),
	} {
		err := invokeRaw(ctxTimeout(t), conn, pseudonymizeMethod, body)
		if status.Code(err) != codes.Unauthenticated {
			t.Errorf("%s: %v, want UNAUTHENTICATED before the body is read", name, err)
		}
	}
	// A forged bearer token is refused the same way.
	ctx := metadata.AppendToOutgoingContext(ctxTimeout(t), "authorization", "Bearer x.y.z")
	if err := invokeRaw(ctx, conn, pseudonymizeMethod, emptyItems(1<<20)); status.Code(err) != codes.Unauthenticated {
		t.Errorf("forged token: %v", err)
	}
	if n := strings.Count(logs.String(), `"code":"Unauthenticated"`); n != 4 {
		t.Errorf("%d audit records of refused calls, want 4:\n%s", n, logs.String())
	}
}

// TestBatchTooLargeBeforeRateAccounting: a request of more items than the
// maximum fails with BATCH_TOO_LARGE however often it is sent, is counted
// on the wire (2M empty items in 4 MB are not decoded), and takes nothing
// from the caller's quota.
func TestBatchTooLargeBeforeRateAccounting(t *testing.T) {
	kf := newKeys(t, time.Hour)
	_, conn := bufconnServer(t, grpcserver.Config{
		Keys: kf.cache, Auth: auth.New(auth.Config{Dev: true}),
		MaxBatch: 100, Rate: 1, Burst: 100, MaxRecvMsgSize: 8 << 20,
	})
	for _, n := range []int{101, 1000, 2_000_000} {
		for range 5 {
			err := invokeRaw(devCtx(t, cnPharmacy), conn, pseudonymizeMethod, emptyItems(n))
			if status.Code(err) != codes.InvalidArgument || reasonOf(err) != "ERROR_REASON_BATCH_TOO_LARGE" {
				t.Fatalf("%d items: %v, want BATCH_TOO_LARGE", n, err)
			}
		}
	}
	// The whole burst is still there.
	blinded, _, _ := client.Blind([]byte("85073003328"))
	items := make([]*pb.PseudonymizeItem, 100)
	for i := range items {
		items[i] = &pb.PseudonymizeItem{Blinded: blinded}
	}
	if _, err := pb.NewPseudonymizerClient(conn).Pseudonymize(devCtx(t, cnPharmacy), &pb.PseudonymizeRequest{Domain: "tls_v1", Items: items}); err != nil {
		t.Fatalf("a full batch after the refused ones: %v", err)
	}
	// A stream message too large is refused the same way.
	st, err := pb.NewPseudonymizerClient(conn).PseudonymizeStream(devCtx(t, cnPharmacy))
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(&pb.PseudonymizeStreamRequest{Request: &pb.PseudonymizeRequest{Domain: "tls_v1", Items: make([]*pb.PseudonymizeItem, 101)}}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Recv(); reasonOf(err) != "ERROR_REASON_BATCH_TOO_LARGE" {
		t.Fatalf("stream: %v", err)
	}
}

// TestMalformedRequests: a request that does not decode is INVALID_ARGUMENT
// with ERROR_REASON_MALFORMED_REQUEST, unary or stream, and it is audited.
func TestMalformedRequests(t *testing.T) {
	logs := &syncbuf.Buffer{}
	_, conn := bufconnServer(t, grpcserver.Config{
		Keys: newKeys(t, time.Hour).cache, Auth: auth.New(auth.Config{Dev: true}),
		Logger: slog.New(slog.NewJSONHandler(logs, nil)),
	})
	badUTF8 := protowire.AppendString(protowire.AppendTag(nil, 1, protowire.BytesType), "tls\xff")
	longID, _ := proto.Marshal(&pb.PseudonymizeRequest{Domain: "tls_v1", Items: []*pb.PseudonymizeItem{{Id: strings.Repeat("x", 257)}}})
	cases := map[string][]byte{
		"truncated tag":     {0x0a},
		"truncated length":  {0x0a, 0x05, 'a'},
		"invalid wire type": {0x0f},
		"field number 0":    {0x02, 0x00},
		"invalid UTF-8":     badUTF8,
		"id over 256 bytes": longID,
		"nested garbage":    {0x12, 0x02, 0xff, 0xff},
		"varint too long":   {0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01},
	}
	for name, body := range cases {
		err := invokeRaw(devCtx(t, cnPharmacy), conn, pseudonymizeMethod, body)
		if status.Code(err) != codes.InvalidArgument || reasonOf(err) != "ERROR_REASON_MALFORMED_REQUEST" {
			t.Errorf("%s: %v, want MALFORMED_REQUEST", name, err)
		}
	}
	if n := strings.Count(logs.String(), `"reason":"ERROR_REASON_MALFORMED_REQUEST"`); n != len(cases) {
		t.Errorf("%d audit records of malformed requests, want %d", n, len(cases))
	}
	// A body over the size limit is refused by the gRPC library while it is
	// received, and still audited.
	if err := invokeRaw(devCtx(t, cnPharmacy), conn, pseudonymizeMethod, emptyItems(3<<20)); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("oversized body: %v", err)
	}
	if !strings.Contains(logs.String(), `"code":"ResourceExhausted"`) {
		t.Errorf("the oversized request is not audited:\n%s", logs.String())
	}
	// On a stream.
	desc := &grpc.StreamDesc{ServerStreams: true, ClientStreams: true}
	cs, err := conn.NewStream(devCtx(t, cnPharmacy), desc, "/pseudonymizer.v1.Pseudonymizer/IdentifyStream", grpc.ForceCodecV2(servertest.RawCodec{}))
	if err != nil {
		t.Fatal(err)
	}
	if err := cs.SendMsg(servertest.RawRequest{0x0a, 0x05}); err != nil {
		t.Fatal(err)
	}
	if err := cs.RecvMsg(&pb.IdentifyStreamResponse{}); reasonOf(err) != "ERROR_REASON_MALFORMED_REQUEST" {
		t.Fatalf("stream: %v", err)
	}
}

// TestRateLimitedCarriesRetryInfo: RESOURCE_EXHAUSTED says when to retry.
func TestRateLimitedCarriesRetryInfo(t *testing.T) {
	_, conn := bufconnServer(t, grpcserver.Config{
		Keys: newKeys(t, time.Hour).cache, Auth: auth.New(auth.Config{Dev: true}),
		MaxBatch: 10, Rate: 0.5, Burst: 10,
	})
	c := pb.NewPseudonymizerClient(conn)
	req := &pb.PseudonymizeRequest{Domain: "tls_v1", Items: make([]*pb.PseudonymizeItem, 10)}
	if _, err := c.Pseudonymize(devCtx(t, cnPharmacy), req); err != nil {
		t.Fatal(err)
	}
	_, err := c.Pseudonymize(devCtx(t, cnPharmacy), req)
	if status.Code(err) != codes.ResourceExhausted || reasonOf(err) != "ERROR_REASON_RATE_LIMITED" {
		t.Fatalf("%v, want RATE_LIMITED", err)
	}
	var ri *errdetails.RetryInfo
	for _, d := range status.Convert(err).Details() {
		if r, ok := d.(*errdetails.RetryInfo); ok {
			ri = r
		}
	}
	// 10 tokens at 0.5/s: about 20 s.
	if ri == nil || ri.GetRetryDelay().AsDuration() < 15*time.Second || ri.GetRetryDelay().AsDuration() > 21*time.Second {
		t.Fatalf("RetryInfo %v, want about 20 s", ri)
	}
}

// TestStreamIdleTimeout: a stream on which the caller sends nothing ends.
func TestStreamIdleTimeout(t *testing.T) {
	_, conn := bufconnServer(t, grpcserver.Config{
		Keys: newKeys(t, time.Hour).cache, Auth: auth.New(auth.Config{Dev: true}),
		StreamIdleTimeout: 100 * time.Millisecond,
	})
	st, err := pb.NewPseudonymizerClient(conn).IdentifyStream(devCtx(t, cnPharmacy))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Recv(); status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("idle stream: %v, want DEADLINE_EXCEEDED", err)
	}
}

// TestSealLimit: past the seal limit of the active transit key, items fail
// with TRANSIT_KEY_EXHAUSTED; the count is a metric; a rotation restores
// the service.
func TestSealLimit(t *testing.T) {
	kf := newKeys(t, time.Hour)
	reg := prometheus.NewRegistry()
	_, conn := bufconnServer(t, grpcserver.Config{
		Keys: kf.cache, Auth: auth.New(auth.Config{Dev: true}), MaxSealsPerKey: 5, Registry: reg,
	})
	blinded, _, _ := client.Blind([]byte("85073003328"))
	items := make([]*pb.PseudonymizeItem, 7)
	for i := range items {
		items[i] = &pb.PseudonymizeItem{Blinded: blinded}
	}
	c := pb.NewPseudonymizerClient(conn)
	resp, err := c.Pseudonymize(devCtx(t, cnPharmacy), &pb.PseudonymizeRequest{Domain: "tls_v1", Items: items})
	if err != nil {
		t.Fatal(err)
	}
	ok, exhausted := 0, 0
	for _, r := range resp.GetResults() {
		switch {
		case r.GetEvaluated() != nil:
			ok++
		case r.GetError().GetCode() == int32(codes.FailedPrecondition) && strings.Contains(r.GetError().String(), "ERROR_REASON_TRANSIT_KEY_EXHAUSTED"):
			exhausted++
		}
	}
	if ok != 5 || exhausted != 2 {
		t.Fatalf("%d sealed, %d exhausted; want 5 and 2", ok, exhausted)
	}
	if n := testutil.CollectAndCount(reg, "pseudonymizer_transit_seals_total"); n != 1 {
		t.Fatalf("%d seal series", n)
	}
	if _, err := kf.store.RotateTransitKey(context.Background(), "tls_v1"); err != nil {
		t.Fatal(err)
	}
	if _, err := kf.cache.Refresh(context.Background(), "tls_v1"); err != nil {
		t.Fatal(err)
	}
	resp, err = c.Pseudonymize(devCtx(t, cnPharmacy), &pb.PseudonymizeRequest{Domain: "tls_v1", Items: items[:1]})
	if err != nil || resp.GetResults()[0].GetEvaluated() == nil {
		t.Fatalf("after rotation: %v %v", resp, err)
	}
}

// TestLifetimeTooLong: a transitInfo sealed with a valid key but a
// lifetime over the domain's maximum is refused by identify.
func TestLifetimeTooLong(t *testing.T) {
	kf := newKeys(t, time.Hour)
	_, conn := bufconnServer(t, grpcserver.Config{Keys: kf.cache, Auth: auth.New(auth.Config{Dev: true})})
	d, err := kf.cache.Domain("tls_v1")
	if err != nil {
		t.Fatal(err)
	}
	ks, err := transit.NewKeySet(d.Transit.Active, map[string][]byte{d.Transit.Active: d.Transit.Keys[d.Transit.Active]})
	if err != nil {
		t.Fatal(err)
	}
	blinded, _, _ := client.Blind([]byte("85073003328"))
	for _, tc := range []struct {
		ttl    time.Duration
		reason string
	}{
		{100 * 365 * 24 * time.Hour, "ERROR_REASON_LIFETIME_TOO_LONG"},
		{keys.DefaultMaxLifetime + time.Hour, "ERROR_REASON_LIFETIME_TOO_LONG"},
	} {
		sc, err := point.RandomScalar(nil)
		if err != nil {
			t.Fatal(err)
		}
		ti, err := ks.Seal(sc, &transit.Claims{Aud: d.Audience, Iat: time.Now(), TTL: tc.ttl}, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := pb.NewPseudonymizerClient(conn).Identify(devCtx(t, cnPharmacy), &pb.IdentifyRequest{
			Domain: "tls_v1", Items: []*pb.IdentifyItem{{Blinded: blinded, TransitInfo: ti}},
		})
		if err != nil {
			t.Fatal(err)
		}
		if e := resp.GetResults()[0].GetError(); e == nil || !strings.Contains(e.String(), tc.reason) {
			t.Fatalf("ttl %v: %v, want %s", tc.ttl, resp.GetResults()[0], tc.reason)
		}
	}
}

// TestKeyStoreFaultsDegrade: a key file that no longer parses, or that
// suddenly holds no domain, keeps the last good keys served and turns the
// overall health NOT_SERVING; the service's own health stays SERVING while
// it holds keys.
func TestKeyStoreFaultsDegrade(t *testing.T) {
	kf := newKeys(t, 20*time.Millisecond)
	_, conn := bufconnServer(t, grpcserver.Config{Keys: kf.cache, Auth: auth.New(auth.Config{Dev: true}), HealthInterval: 20 * time.Millisecond})
	good, err := os.ReadFile(kf.path)
	if err != nil {
		t.Fatal(err)
	}
	emptyPath := filepath.Join(t.TempDir(), "empty.json")
	if _, err := keys.OpenFileStore(emptyPath, true); err != nil {
		t.Fatal(err)
	}
	empty, err := os.ReadFile(emptyPath)
	if err != nil {
		t.Fatal(err)
	}
	for name, content := range map[string][]byte{
		"garbage":          []byte("{not json"),
		"truncated":        good[:len(good)/2],
		"empty file":       {},
		"no domain at all": empty,
	} {
		t.Run(name, func(t *testing.T) {
			if err := os.WriteFile(kf.path, content, 0o600); err != nil {
				t.Fatal(err)
			}
			waitHealth(t, conn, "", "NOT_SERVING")
			waitHealth(t, conn, "pseudonymizer.v1.Pseudonymizer", "SERVING")
			if ops, err := allowedOps(t, devCtx(t, cnPharmacy), conn); err != nil || len(ops) == 0 {
				t.Fatalf("the last good keys are not served: %v %v", ops, err)
			}
			if err := os.WriteFile(kf.path, good, 0o600); err != nil {
				t.Fatal(err)
			}
			waitHealth(t, conn, "", "SERVING")
		})
	}
}

// waitHealth waits until the health of service is want.
func waitHealth(t *testing.T, conn *grpc.ClientConn, service, want string) {
	t.Helper()
	hc := healthpb.NewHealthClient(conn)
	waitfor.State(t, 10*time.Second, "health of "+service+" "+want, func() (bool, string) {
		resp, err := hc.Check(ctxTimeout(t), &healthpb.HealthCheckRequest{Service: service})
		return err == nil && resp.GetStatus().String() == want, fmt.Sprintf("%v %v", resp.GetStatus(), err)
	})
}

// TestHealthWatchNeedsCredentials: on the authenticated port, Check needs
// no credentials but Watch (a stream that could hold a connection open)
// does; the health-only listener serves Check and refuses Watch.
func TestHealthWatchNeedsCredentials(t *testing.T) {
	js := startJWTServer(t, nil)
	srv, conn := js.srv, js.dialNoCert(t)
	hc := healthpb.NewHealthClient(conn)
	if _, err := hc.Check(ctxTimeout(t), &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatalf("Check without credentials: %v", err)
	}
	w, err := hc.Watch(ctxTimeout(t), &healthpb.HealthCheckRequest{})
	if err == nil {
		_, err = w.Recv()
	}
	if status.Code(err) != codes.Unauthenticated {
		t.Fatalf("Watch without credentials: %v, want UNAUTHENTICATED", err)
	}

	hl := tcpListener(t)
	go func() { _ = srv.ServeHealth(hl) }()
	hconn := dial(t, hl.Addr().String(), insecure.NewCredentials())
	hh := healthpb.NewHealthClient(hconn)
	if _, err := hh.Check(ctxTimeout(t), &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatalf("Check on the health-only listener: %v", err)
	}
	w, err = hh.Watch(ctxTimeout(t), &healthpb.HealthCheckRequest{})
	if err == nil {
		_, err = w.Recv()
	}
	if status.Code(err) != codes.Unimplemented {
		t.Fatalf("Watch on the health-only listener: %v, want UNIMPLEMENTED", err)
	}
}
