package grpcserver_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"

	"github.com/ehealth-pseudo/pseudonymizer/client"
	"github.com/ehealth-pseudo/pseudonymizer/internal/auth"
	"github.com/ehealth-pseudo/pseudonymizer/internal/grpcserver"
	"github.com/ehealth-pseudo/pseudonymizer/internal/servertest"
	"github.com/ehealth-pseudo/pseudonymizer/internal/syncbuf"
	"github.com/ehealth-pseudo/pseudonymizer/internal/testpki"
	"github.com/ehealth-pseudo/pseudonymizer/internal/waitfor"
	"github.com/ehealth-pseudo/pseudonymizer/keys"
	pb "github.com/ehealth-pseudo/pseudonymizer/proto/pseudonymizer/v1"
)

const (
	uriPrescriber = "spiffe://test.example/prescriber"
	cnPharmacy    = "pharmacy-cn"
	jwtUser       = "jwt-user"
)

// keyFixture is a file store with one domain and a cache over it.
type keyFixture struct {
	path  string
	store *keys.FileStore
	cache *keys.Cache
}

func newKeys(t *testing.T, poll time.Duration) *keyFixture {
	t.Helper()
	path := filepath.Join(t.TempDir(), "keys.json")
	store, err := keys.OpenFileStore(path, true)
	if err != nil {
		t.Fatal(err)
	}
	_, err = store.CreateDomain(context.Background(), keys.DomainSpec{
		Name: "tls_v1", Audience: "urn:test:tls:v1",
		Policy: keys.Policy{
			Pseudonymize: []string{uriPrescriber, cnPharmacy, jwtUser, auth.DevPrincipal},
			Identify:     []string{cnPharmacy},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	cache, err := keys.NewCache(context.Background(), store, &keys.CacheOptions{Interval: poll, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cache.Close() })
	return &keyFixture{path: path, store: store, cache: cache}
}

// start serves cfg on lis until the test ends (internal/servertest).
func start(t *testing.T, cfg grpcserver.Config, lis net.Listener) *grpcserver.Server {
	t.Helper()
	return servertest.StartOn(t, cfg, lis).Server
}

func tcpListener(t *testing.T) net.Listener {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return lis
}

func dial(t *testing.T, target string, creds credentials.TransportCredentials, opts ...grpc.DialOption) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(target, append(opts, grpc.WithTransportCredentials(creds))...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

func ctxTimeout(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// allowedOps calls GetDomain and returns the caller's operations.
func allowedOps(t *testing.T, ctx context.Context, conn *grpc.ClientConn) ([]pb.Operation, error) {
	t.Helper()
	resp, err := pb.NewPseudonymizerClient(conn).GetDomain(ctx, &pb.GetDomainRequest{Name: "tls_v1"})
	return resp.GetAllowedOperations(), err
}

func reasonOf(err error) string {
	for _, d := range status.Convert(err).Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			return info.GetReason()
		}
	}
	return ""
}

func TestMTLS(t *testing.T) {
	dir := t.TempDir()
	ca := testpki.NewCA(t, "test CA")
	certFile, keyFile := testpki.WriteFiles(t, dir, "server", ca.Server(t))
	tlsCfg, err := auth.ServerTLSConfig(auth.TLSFiles{Cert: certFile, Key: keyFile, ClientCA: ca.WriteCA(t, dir)})
	if err != nil {
		t.Fatal(err)
	}
	lis := tcpListener(t)
	start(t, grpcserver.Config{Keys: newKeys(t, time.Hour).cache, Auth: auth.New(auth.Config{}), TLS: tlsCfg}, lis)
	addr := lis.Addr().String()

	clientWith := func(certs ...tls.Certificate) *grpc.ClientConn {
		return dial(t, addr, credentials.NewTLS(&tls.Config{RootCAs: ca.Pool(), Certificates: certs, MinVersion: tls.VersionTLS12}))
	}
	P, I := pb.Operation_OPERATION_PSEUDONYMIZE, pb.Operation_OPERATION_IDENTIFY

	// The principal is the first URI SAN...
	ops, err := allowedOps(t, ctxTimeout(t), clientWith(ca.Client(t, "some-cn", uriPrescriber)))
	if err != nil || !slices.Equal(ops, []pb.Operation{P}) {
		t.Fatalf("URI SAN client: %v, %v", ops, err)
	}
	// ... else the subject CN.
	ops, err = allowedOps(t, ctxTimeout(t), clientWith(ca.Client(t, cnPharmacy, "")))
	if err != nil || !slices.Equal(ops, []pb.Operation{P, I}) {
		t.Fatalf("CN-only client: %v, %v", ops, err)
	}
	// A URI SAN wins over the CN.
	_, err = allowedOps(t, ctxTimeout(t), clientWith(ca.Client(t, cnPharmacy, "spiffe://test.example/other")))
	if status.Code(err) != codes.PermissionDenied {
		t.Fatalf("URI SAN + CN client: %v", err)
	}
	// The whole flow works over mTLS.
	conn := clientWith(ca.Client(t, "", uriPrescriber))
	b, _, err := client.Blind([]byte("85073003328"))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := pb.NewPseudonymizerClient(conn).Pseudonymize(ctxTimeout(t), &pb.PseudonymizeRequest{Domain: "tls_v1", Items: []*pb.PseudonymizeItem{{Blinded: b}}})
	if err != nil || resp.GetResults()[0].GetEvaluated() == nil {
		t.Fatalf("pseudonymize over mTLS: %v, %v", resp, err)
	}
	// The health service needs the handshake only.
	hr, err := healthpb.NewHealthClient(conn).Check(ctxTimeout(t), &healthpb.HealthCheckRequest{})
	if err != nil || hr.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health: %v, %v", hr, err)
	}

	// No client certificate, or one from another CA: the connection is
	// refused.
	other := testpki.NewCA(t, "other CA")
	for name, conn := range map[string]*grpc.ClientConn{
		"no client certificate":        clientWith(),
		"certificate of another CA":    clientWith(other.Client(t, cnPharmacy, "")),
		"server certificate as client": clientWith(ca.Server(t)),
	} {
		if _, err := allowedOps(t, ctxTimeout(t), conn); status.Code(err) != codes.Unavailable {
			t.Errorf("%s: %v; want the connection refused", name, err)
		}
	}
}

// jwtIssuer signs test tokens.
type jwtIssuer struct {
	signer jose.Signer
	jwks   *jose.JSONWebKeySet
}

func newJWTIssuer(t *testing.T, kid string) *jwtIssuer {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: key, KeyID: kid}},
		(&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		t.Fatal(err)
	}
	return &jwtIssuer{signer: signer, jwks: &jose.JSONWebKeySet{Keys: []jose.JSONWebKey{
		{Key: &key.PublicKey, KeyID: kid, Algorithm: string(jose.ES256), Use: "sig"},
	}}}
}

func (j *jwtIssuer) token(t *testing.T, c jwt.Claims) string {
	t.Helper()
	tok, err := jwt.Signed(j.signer).Claims(c).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// jwtServer is a server on TCP with TLS, optional client certificates of
// ca, and bearer tokens of iss (issuer https://idp.test.example, audience
// pseudonymizer).
type jwtServer struct {
	srv  *grpcserver.Server
	addr string
	ca   *testpki.CA
	iss  *jwtIssuer
}

// startJWTServer starts a jwtServer; configure, when not nil, changes its
// configuration first.
func startJWTServer(t *testing.T, configure func(*grpcserver.Config)) *jwtServer {
	t.Helper()
	dir := t.TempDir()
	ca := testpki.NewCA(t, "test CA")
	certFile, keyFile := testpki.WriteFiles(t, dir, "server", ca.Server(t))
	tlsCfg, err := auth.ServerTLSConfig(auth.TLSFiles{Cert: certFile, Key: keyFile, ClientCA: ca.WriteCA(t, dir), OptionalClientCert: true})
	if err != nil {
		t.Fatal(err)
	}
	iss := newJWTIssuer(t, "k1")
	verifier, err := auth.NewJWTVerifier(iss.jwks, "https://idp.test.example", "pseudonymizer")
	if err != nil {
		t.Fatal(err)
	}
	cfg := grpcserver.Config{Keys: newKeys(t, time.Hour).cache, Auth: auth.New(auth.Config{JWT: verifier}), TLS: tlsCfg}
	if configure != nil {
		configure(&cfg)
	}
	lis := tcpListener(t)
	return &jwtServer{srv: start(t, cfg, lis), addr: lis.Addr().String(), ca: ca, iss: iss}
}

// dialNoCert connects over TLS without a client certificate.
func (j *jwtServer) dialNoCert(t *testing.T) *grpc.ClientConn {
	return dial(t, j.addr, credentials.NewTLS(&tls.Config{RootCAs: j.ca.Pool(), MinVersion: tls.VersionTLS12}))
}

func TestJWT(t *testing.T) {
	js := startJWTServer(t, nil)
	ca, iss := js.ca, js.iss
	noCert := js.dialNoCert(t)

	now := time.Now()
	valid := jwt.Claims{
		Issuer: "https://idp.test.example", Subject: jwtUser, Audience: jwt.Audience{"pseudonymizer"},
		IssuedAt: jwt.NewNumericDate(now), Expiry: jwt.NewNumericDate(now.Add(5 * time.Minute)),
	}
	with := func(f func(c *jwt.Claims)) jwt.Claims {
		c := valid
		f(&c)
		return c
	}
	bearer := func(tok string) context.Context {
		return metadata.AppendToOutgoingContext(ctxTimeout(t), "authorization", "Bearer "+tok)
	}

	ops, err := allowedOps(t, bearer(iss.token(t, valid)), noCert)
	if err != nil || !slices.Equal(ops, []pb.Operation{pb.Operation_OPERATION_PSEUDONYMIZE}) {
		t.Fatalf("valid token: %v, %v", ops, err)
	}
	forger := newJWTIssuer(t, "k1") // same kid, another key
	for name, ctx := range map[string]context.Context{
		"expired":        bearer(iss.token(t, with(func(c *jwt.Claims) { c.Expiry = jwt.NewNumericDate(now.Add(-time.Hour)) }))),
		"no expiry":      bearer(iss.token(t, with(func(c *jwt.Claims) { c.Expiry = nil }))),
		"wrong issuer":   bearer(iss.token(t, with(func(c *jwt.Claims) { c.Issuer = "https://evil.example" }))),
		"wrong audience": bearer(iss.token(t, with(func(c *jwt.Claims) { c.Audience = jwt.Audience{"other"} }))),
		"not yet valid":  bearer(iss.token(t, with(func(c *jwt.Claims) { c.NotBefore = jwt.NewNumericDate(now.Add(time.Hour)) }))),
		"no subject":     bearer(iss.token(t, with(func(c *jwt.Claims) { c.Subject = "" }))),
		"bad signature":  bearer(forger.token(t, valid)),
		"garbage":        bearer("not-a-jwt"),
		"basic scheme":   metadata.AppendToOutgoingContext(ctxTimeout(t), "authorization", "Basic dXNlcjpwYXNz"),
		"no credentials": ctxTimeout(t),
	} {
		_, err := allowedOps(t, ctx, noCert)
		if status.Code(err) != codes.Unauthenticated || reasonOf(err) != pb.ErrorReason_ERROR_REASON_UNSPECIFIED.String() {
			t.Errorf("%s: %v; want UNAUTHENTICATED with an ErrorInfo", name, err)
		}
		if err != nil && strings.Contains(status.Convert(err).Message(), "expired") {
			t.Errorf("%s: the message tells which check failed: %v", name, err)
		}
	}

	// A client certificate still works when tokens are accepted.
	withCert := dial(t, js.addr, credentials.NewTLS(&tls.Config{
		RootCAs: ca.Pool(), Certificates: []tls.Certificate{ca.Client(t, cnPharmacy, "")}, MinVersion: tls.VersionTLS12,
	}))
	if ops, err := allowedOps(t, ctxTimeout(t), withCert); err != nil || len(ops) != 2 {
		t.Fatalf("client certificate with optional mTLS: %v, %v", ops, err)
	}
}

func bufconnServer(t *testing.T, cfg grpcserver.Config) (*grpcserver.Server, *grpc.ClientConn) {
	t.Helper()
	s := servertest.Start(t, cfg, false)
	return s.Server, s.Dial(t)
}

func TestHealthFollowsKeyStore(t *testing.T) {
	kf := newKeys(t, 20*time.Millisecond)
	_, conn := bufconnServer(t, grpcserver.Config{Keys: kf.cache, Auth: auth.New(auth.Config{Dev: true}), HealthInterval: 20 * time.Millisecond})
	hc := healthpb.NewHealthClient(conn)
	// waitFor waits until the overall health ("") is want, and checks that
	// the service's own name, which readiness probes use, stays SERVING.
	waitFor := func(want healthpb.HealthCheckResponse_ServingStatus) {
		t.Helper()
		waitfor.Cond(t, 10*time.Second, "health "+want.String(), func() bool {
			resp, err := hc.Check(ctxTimeout(t), &healthpb.HealthCheckRequest{Service: ""})
			if err != nil {
				t.Fatal(err)
			}
			svc, err := hc.Check(ctxTimeout(t), &healthpb.HealthCheckRequest{Service: "pseudonymizer.v1.Pseudonymizer"})
			if err != nil {
				t.Fatal(err)
			}
			if svc.GetStatus() != healthpb.HealthCheckResponse_SERVING {
				t.Fatalf("service health %v while the cache serves", svc.GetStatus())
			}
			return resp.GetStatus() == want
		})
	}
	waitFor(healthpb.HealthCheckResponse_SERVING)

	// The key store disappears: the server reports NOT_SERVING (degraded),
	// while the last snapshot is still served.
	if err := os.Rename(kf.path, kf.path+".away"); err != nil {
		t.Fatal(err)
	}
	waitFor(healthpb.HealthCheckResponse_NOT_SERVING)
	ctx := metadata.AppendToOutgoingContext(ctxTimeout(t), auth.DevPrincipalHeader, cnPharmacy)
	if _, err := allowedOps(t, ctx, conn); err != nil {
		t.Fatalf("the last snapshot is not served: %v", err)
	}

	// It comes back.
	if err := os.Rename(kf.path+".away", kf.path); err != nil {
		t.Fatal(err)
	}
	waitFor(healthpb.HealthCheckResponse_SERVING)
}

func TestGracefulShutdown(t *testing.T) {
	lis := bufconn.Listen(1 << 20)
	cfg := grpcserver.Config{
		Keys: newKeys(t, time.Hour).cache, Auth: auth.New(auth.Config{Dev: true}),
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Registry: prometheus.NewRegistry(),
	}
	srv, err := grpcserver.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	conn := dial(t, "passthrough:///bufnet", insecure.NewCredentials(),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }))
	c := pb.NewPseudonymizerClient(conn)

	b, _, _ := client.Blind([]byte("85073003328"))
	chunk := &pb.PseudonymizeStreamRequest{Request: &pb.PseudonymizeRequest{Domain: "tls_v1", Items: []*pb.PseudonymizeItem{{Blinded: b}}}}
	stream, err := c.PseudonymizeStream(ctxTimeout(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(chunk); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}

	// Shut down with a call in flight.
	shut := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		shut <- srv.Shutdown(ctx)
	}()
	// New calls are refused once the shutdown began...
	waitfor.Cond(t, 5*time.Second, "new calls refused during shutdown", func() bool {
		_, err := c.GetDomain(ctxTimeout(t), &pb.GetDomainRequest{Name: "tls_v1"})
		return status.Code(err) == codes.Unavailable
	})
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned (%v) with a call in flight", err)
	default:
	}
	// ... but the call in flight goes on to its end.
	if err := stream.Send(chunk); err != nil {
		t.Fatal(err)
	}
	if resp, err := stream.Recv(); err != nil || resp.GetResponse().GetResults()[0].GetEvaluated() == nil {
		t.Fatalf("in-flight stream after shutdown began: %v, %v", resp, err)
	}
	if err := stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != io.EOF {
		t.Fatalf("end of the in-flight stream: %v", err)
	}
	if err := <-shut; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if err := <-served; err != nil {
		t.Fatalf("Serve: %v", err)
	}
}

func TestShutdownTimeout(t *testing.T) {
	lis := bufconn.Listen(1 << 20)
	srv, err := grpcserver.New(grpcserver.Config{
		Keys: newKeys(t, time.Hour).cache, Auth: auth.New(auth.Config{Dev: true}),
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Registry: prometheus.NewRegistry(),
	})
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(lis) }()
	conn := dial(t, "passthrough:///bufnet", insecure.NewCredentials(),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }))
	stream, err := pb.NewPseudonymizerClient(conn).PseudonymizeStream(ctxTimeout(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&pb.PseudonymizeStreamRequest{Request: &pb.PseudonymizeRequest{Domain: "tls_v1"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := srv.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown with a stream left open = %v; want the deadline", err)
	}
	if _, err := stream.Recv(); status.Code(err) != codes.Unavailable && status.Code(err) != codes.Canceled {
		t.Fatalf("the stream cut by the shutdown: %v", err)
	}
}

func TestMetricsEndpoint(t *testing.T) {
	srv, conn := bufconnServer(t, grpcserver.Config{Keys: newKeys(t, time.Hour).cache, Auth: auth.New(auth.Config{Dev: true})})
	b, _, _ := client.Blind([]byte("85073003328"))
	_, err := pb.NewPseudonymizerClient(conn).Pseudonymize(ctxTimeout(t), &pb.PseudonymizeRequest{
		Domain: "tls_v1", Items: []*pb.PseudonymizeItem{{Blinded: b}, {Blinded: b[:3]}},
	})
	if err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	srv.MetricsHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	out := rec.Body.String()
	for _, want := range []string{
		`grpc_server_handled_total{grpc_code="OK",grpc_method="Pseudonymize",grpc_service="pseudonymizer.v1.Pseudonymizer",grpc_type="unary"} 1`,
		`grpc_server_handling_seconds_bucket`,
		`pseudonymizer_items_total{operation="Pseudonymize",outcome="ok"} 1`,
		`pseudonymizer_items_total{operation="Pseudonymize",outcome="ERROR_REASON_INVALID_POINT"} 1`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

func TestAuditRecord(t *testing.T) {
	logs := &syncbuf.Buffer{}
	_, conn := bufconnServer(t, grpcserver.Config{
		Keys: newKeys(t, time.Hour).cache, Auth: auth.New(auth.Config{Dev: true}),
		Logger: slog.New(slog.NewJSONHandler(logs, nil)),
	})
	ctx := metadata.AppendToOutgoingContext(ctxTimeout(t), auth.DevPrincipalHeader, cnPharmacy)
	b, _, _ := client.Blind([]byte("85073003328"))
	_, err := pb.NewPseudonymizerClient(conn).Pseudonymize(ctx, &pb.PseudonymizeRequest{
		Domain: "tls_v1", Items: []*pb.PseudonymizeItem{{Id: "85073003328", Blinded: b}, {Blinded: b[:3]}},
	})
	if err != nil {
		t.Fatal(err)
	}
	_, _ = healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	out := logs.String()
	for _, want := range []string{
		`"msg":"grpc call"`, `"principal":"pharmacy-cn"`, `"method":"/pseudonymizer.v1.Pseudonymizer/Pseudonymize"`,
		`"domains":"tls_v1"`, `"items":2`, `"item_errors":1`, `"code":"OK"`, `"latency_us":`,
		`"item_error_reasons":{"ERROR_REASON_INVALID_POINT":1}`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("audit record lacks %s:\n%s", want, out)
		}
	}
	if strings.Contains(out, "85073003328") {
		t.Error("the audit record holds an item id")
	}
	if n := strings.Count(out, `"msg":"grpc call"`); n != 1 {
		t.Errorf("%d audit records for one audited call (health checks are not audited):\n%s", n, out)
	}
}

func TestNewRefusesPlaintextOutsideDevMode(t *testing.T) {
	_, err := grpcserver.New(grpcserver.Config{Keys: newKeys(t, time.Hour).cache, Auth: auth.New(auth.Config{})})
	if err == nil {
		t.Fatal("plaintext accepted outside development mode")
	}
}

func TestCheckLoopbackAddr(t *testing.T) {
	for addr, ok := range map[string]bool{
		"127.0.0.1:50051": true,
		"127.0.0.2:1":     true,
		"[::1]:50051":     true,
		"localhost:50051": true,
		":50051":          false,
		"0.0.0.0:50051":   false,
		"[::]:50051":      false,
		"10.0.0.1:50051":  false,
		"example.com:1":   false,
		"no-port":         false,
	} {
		if err := grpcserver.CheckLoopbackAddr(addr); (err == nil) != ok {
			t.Errorf("CheckLoopbackAddr(%q) = %v", addr, err)
		}
	}
}
