package grpcserver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"mime"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"github.com/rs/cors"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/ehealth-pseudo/pseudonymizer/internal/audit"
	"github.com/ehealth-pseudo/pseudonymizer/internal/auth"
	"github.com/ehealth-pseudo/pseudonymizer/internal/recovered"
	"github.com/ehealth-pseudo/pseudonymizer/internal/rpcstatus"
	pb "github.com/ehealth-pseudo/pseudonymizer/proto/pseudonymizer/v1"
)

// The REST/JSON gateway.
//
// Non-Go callers (Java, .NET, browsers) call the same API as JSON over
// HTTP, on the paths of the google.api.http options of pseudonymizer.proto:
//
//	POST /pseudo/v1/domains/{domain}/pseudonymize
//	POST /pseudo/v1/domains/{domain}/identify
//	POST /pseudo/v1/domains/{fromDomain}/convertTo/{toDomain}
//	GET  /pseudo/v1/domains/{name}
//	GET  /pseudo/v1/openapi.json   (the OpenAPI document; no credentials)
//
// A request goes through, in order:
//
//  1. The browser origin check: a request whose Origin header is not one
//     of RESTConfig.AllowedOrigins is refused (403) before anything else;
//     allowed origins get CORS headers (rs/cors), preflights are answered.
//  2. Routing (grpc-gateway's mux): unknown paths are 404 and nothing is
//     read.
//  3. Authentication, before the body is read, by the same
//     auth.Authenticator as gRPC calls: a bearer token (Authorization), the
//     verified client certificate of the TLS connection (mTLS), or, in
//     development mode from a loopback peer, X-Pseudonymizer-Principal.
//     A refusal is 401, audited.
//  4. The body: application/json only (415), at most MaxBodyBytes (413),
//     decoded by the proto JSON mapping with unknown fields refused (400,
//     MALFORMED_REQUEST; the decoder's message, which may quote the body,
//     is never returned nor logged).
//  5. The call itself, over an in-process connection to a gRPC server that
//     shares this Server's interceptor chain and handler: the same
//     metrics, audit record, recovery, batch limit, rate limiter (one
//     budget per principal across gRPC and REST), authorization and
//     per-item errors. Its authentication step takes the principal that
//     step 3 established; that server has no network listener.
//
// Errors are the gRPC status as google.rpc.Status JSON with the HTTP status
// of its code (runtime.HTTPStatusFromCode: 400, 401, 403, 404, 429, 503…);
// a 429 carries Retry-After from its google.rpc.RetryInfo, a 401
// WWW-Authenticate.

// RESTConfig configures the REST/JSON gateway of a [Server]
// (Config.REST); nil disables it.
type RESTConfig struct {
	// AllowedOrigins are the browser origins, exactly as browsers send them
	// (scheme://host[:port], e.g. "https://prescriber.example"), that may
	// call the API from a web page. A request with any other Origin header
	// is refused; requests without one (non-browser callers) are not
	// affected. Empty: no web page may call the API.
	AllowedOrigins []string
	// MaxBodyBytes bounds a request body; MaxRESTBodyFor(MaxBatch) when
	// zero.
	MaxBodyBytes int64
}

// MaxRESTBodyFor returns the largest JSON request body accepted for
// batches of maxBatch items: twice the largest protobuf request
// (MaxRecvMsgSizeFor), which covers base64 and field names.
func MaxRESTBodyFor(maxBatch int) int64 {
	return 2 * int64(MaxRecvMsgSizeFor(maxBatch))
}

// gatewayPrincipalKey is the metadata key by which the gateway hands the
// principal it authenticated to its in-process gRPC server. Only that
// server trusts it, and only the gateway can reach that server.
const gatewayPrincipalKey = "x-pseudonymizer-gateway-principal"

// restRoutes maps the gateway's path patterns (runtime.Pattern.String) to
// the gRPC method they call, for the audit record of calls refused before
// they reach the gRPC server. TestRESTRoutesAudited checks it covers every
// route of the generated gateway.
var restRoutes = map[string]string{
	"/pseudo/v1/domains/{domain=*}/pseudonymize":                 pb.Pseudonymizer_Pseudonymize_FullMethodName,
	"/pseudo/v1/domains/{domain=*}/identify":                     pb.Pseudonymizer_Identify_FullMethodName,
	"/pseudo/v1/domains/{from_domain=*}/convertTo/{to_domain=*}": pb.Pseudonymizer_ConvertTo_FullMethodName,
	"/pseudo/v1/domains/{name=*}":                                pb.Pseudonymizer_GetDomain_FullMethodName,
}

// restCall is what the authentication step learned about a REST call.
type restCall struct {
	method    string
	principal string
}

type restCallKey struct{}

func restCallFrom(ctx context.Context) (restCall, bool) {
	c, ok := ctx.Value(restCallKey{}).(restCall)
	return c, ok
}

// gateway is the REST/JSON gateway of a Server.
type gateway struct {
	auth    *auth.Authenticator
	auditor *audit.Logger
	log     *slog.Logger
	maxBody int64
	origins map[string]bool
	bearer  bool // the authenticator verifies bearer tokens

	inproc  *grpc.Server
	lis     *bufconn.Listener
	conn    *grpc.ClientConn
	handler http.Handler

	http *http.Server // set by ServeREST
}

// newGateway starts the in-process gRPC server srv on an in-memory
// listener, connects the grpc-gateway mux to it, and builds the HTTP
// handler.
func newGateway(cfg RESTConfig, a *auth.Authenticator, bearer bool, auditor *audit.Logger, log *slog.Logger,
	inproc *grpc.Server, maxMsg int, maxBatch int, tp trace.TracerProvider) (*gateway, error) {
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = MaxRESTBodyFor(maxBatch)
	}
	g := &gateway{
		auth: a, auditor: auditor, log: log, maxBody: cfg.MaxBodyBytes, bearer: bearer,
		origins: map[string]bool{}, inproc: inproc, lis: bufconn.Listen(1 << 20),
	}
	for _, o := range cfg.AllowedOrigins {
		if o == "" || o == "*" || o == "null" {
			return nil, fmt.Errorf("grpcserver: REST allowed origin %q: name each origin (scheme://host[:port])", o)
		}
		g.origins[o] = true
	}
	go func() {
		defer func() {
			if p := recover(); p != nil {
				rp := recovered.Describe(p)
				log.Error("grpcserver: panic in the REST gateway's in-process server", "panic_type", rp.Type, "stack", rp.Frames)
			}
		}()
		_ = inproc.Serve(g.lis)
	}()
	conn, err := grpc.NewClient("passthrough:///pseudonymizer-gateway",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return g.lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(maxMsg), grpc.MaxCallRecvMsgSize(math.MaxInt32)),
	)
	if err != nil {
		inproc.Stop()
		return nil, fmt.Errorf("grpcserver: REST gateway connection: %v", err)
	}
	g.conn = conn

	mux := runtime.NewServeMux(
		// No HTTP header becomes gRPC metadata but the principal the
		// gateway authenticated (grpc-gateway adds Authorization and
		// X-Forwarded-* itself; the in-process server ignores them).
		runtime.WithIncomingHeaderMatcher(func(string) (string, bool) { return "", false }),
		runtime.WithOutgoingHeaderMatcher(func(string) (string, bool) { return "", false }),
		runtime.WithOutgoingTrailerMatcher(func(string) (string, bool) { return "", false }),
		runtime.WithMetadata(func(ctx context.Context, _ *http.Request) metadata.MD {
			c, _ := restCallFrom(ctx)
			md := metadata.Pairs(gatewayPrincipalKey, c.principal)
			// The trace context of the HTTP server span (otelhttp, below),
			// so that the in-process call's span is its child.
			traceContext.Inject(ctx, mdCarrier(md))
			return md
		}),
		runtime.WithMarshalerOption(runtime.MIMEWildcard, &runtime.JSONPb{
			MarshalOptions:   protojson.MarshalOptions{EmitUnpopulated: true},
			UnmarshalOptions: protojson.UnmarshalOptions{DiscardUnknown: false},
		}),
		runtime.WithErrorHandler(g.writeError),
		runtime.WithRoutingErrorHandler(func(ctx context.Context, mux *runtime.ServeMux, m runtime.Marshaler, w http.ResponseWriter, r *http.Request, code int) {
			g.writeError(ctx, mux, m, w, r, &runtime.HTTPStatusError{HTTPStatus: code})
		}),
		runtime.WithMiddlewares(g.authenticate),
		// A POST never becomes another method, and a form body is never
		// parsed (both would read the body before authentication).
		runtime.WithDisablePathLengthFallback(),
		runtime.WithDisableHTTPMethodOverride(),
	)
	if err := pb.RegisterPseudonymizerHandlerClient(context.Background(), mux, pb.NewPseudonymizerClient(conn)); err != nil {
		_ = conn.Close()
		inproc.Stop()
		return nil, fmt.Errorf("grpcserver: REST gateway routes: %v", err)
	}

	// Not an http.ServeMux: it would answer unclean paths ("/.") with a
	// redirect in HTML. Everything but the document is the gateway's.
	root := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/pseudo/v1/openapi.json" && (r.Method == http.MethodGet || r.Method == http.MethodHead) {
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write(pb.OpenAPI)
			return
		}
		mux.ServeHTTP(w, r)
	})
	c := cors.New(cors.Options{
		AllowedOrigins: slices.Sorted(maps.Keys(g.origins)),
		AllowedMethods: []string{http.MethodGet, http.MethodPost},
		AllowedHeaders: []string{"Authorization", "Content-Type", auth.DevPrincipalHeader},
		ExposedHeaders: []string{"Retry-After", "WWW-Authenticate"},
		MaxAge:         600,
	})
	g.handler = g.checkOrigin(c.Handler(root))
	// When tracing is on, an HTTP server span per request (otelhttp:
	// method, route, status; no body, no query), parent of the in-process
	// call's span; the caller's traceparent, if any, is its parent. Metrics
	// stay Prometheus'.
	if tp == nil {
		return g, nil // tracing is off
	}
	g.handler = otelhttp.NewHandler(g.handler, "pseudonymizer.rest",
		otelhttp.WithTracerProvider(tp),
		otelhttp.WithMeterProvider(metricnoop.NewMeterProvider()),
		otelhttp.WithPropagators(traceContext),
		otelhttp.WithSpanNameFormatter(func(_ string, r *http.Request) string { return "REST " + r.Method }),
	)
	return g, nil
}

// traceContext is how a trace context travels: W3C traceparent and
// tracestate only (no baggage: caller-chosen data the service has no use
// for), whatever the global propagator.
var traceContext = propagation.TraceContext{}

// mdCarrier carries a trace context in gRPC metadata.
type mdCarrier metadata.MD

func (c mdCarrier) Get(key string) string {
	if v := metadata.MD(c).Get(key); len(v) > 0 {
		return v[0]
	}
	return ""
}

func (c mdCarrier) Set(key, value string) { metadata.MD(c).Set(key, value) }

func (c mdCarrier) Keys() []string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	return keys
}

// checkOrigin refuses requests from browser origins that are not allowed.
// CORS alone only hides the answer from the page: a "simple" cross-origin
// POST would still be executed, with the browser's client certificate.
func (g *gateway) checkOrigin(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if o := r.Header.Values("Origin"); len(o) > 0 && (len(o) != 1 || !g.origins[o[0]]) {
			g.fail(w, http.StatusForbidden, rpcstatus.New(codes.PermissionDenied, pb.ErrorReason_ERROR_REASON_UNSPECIFIED,
				"origin not allowed: the server's -rest-cors-origins does not list this web origin", nil))
			return
		}
		next.ServeHTTP(w, r)
	})
}

// authenticate is the gateway's middleware, run once a route matched and
// before its handler reads the body.
func (g *gateway) authenticate(next runtime.HandlerFunc) runtime.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request, params map[string]string) {
		ctx := r.Context()
		method := ""
		if pat, ok := runtime.HTTPPattern(ctx); ok {
			method = restRoutes[pat.String()]
		}
		// A path parameter becomes a proto string, which must be UTF-8: the
		// in-process call would fail to marshal it (INTERNAL) otherwise.
		for _, v := range params {
			if !utf8.ValidString(v) {
				g.fail(w, http.StatusBadRequest, rpcstatus.New(codes.InvalidArgument, pb.ErrorReason_ERROR_REASON_MALFORMED_REQUEST, "malformed path", nil))
				return
			}
		}
		actx, err := g.auth.Authenticate(restCallContext(r))
		if err != nil {
			g.auditor.Refused(ctx, method, "", err)
			if g.bearer {
				w.Header().Set("WWW-Authenticate", `Bearer realm="pseudonymizer"`)
			}
			g.fail(w, 0, status.Convert(err))
			return
		}
		principal, _ := auth.Principal(actx)
		if r.Method != http.MethodGet {
			mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
			if err != nil || mt != "application/json" {
				st := rpcstatus.New(codes.InvalidArgument, pb.ErrorReason_ERROR_REASON_MALFORMED_REQUEST,
					"unsupported content type: send application/json", nil)
				g.auditor.Refused(ctx, method, principal, st.Err())
				g.fail(w, http.StatusUnsupportedMediaType, st)
				return
			}
			if r.ContentLength > g.maxBody {
				st := tooLarge()
				g.auditor.Refused(ctx, method, principal, st.Err())
				g.fail(w, http.StatusRequestEntityTooLarge, st)
				return
			}
			r.Body = http.MaxBytesReader(w, r.Body, g.maxBody)
		}
		ctx = context.WithValue(ctx, restCallKey{}, restCall{method: method, principal: principal})
		next(w, r.WithContext(ctx), params)
	}
}

func tooLarge() *status.Status {
	return rpcstatus.New(codes.ResourceExhausted, pb.ErrorReason_ERROR_REASON_UNSPECIFIED,
		"request body larger than the server accepts: send fewer items per call", nil)
}

// restCallContext presents an HTTP request to the authenticator as a gRPC call
// would be: the peer (address and verified TLS state) and, as metadata,
// only the headers the authenticator reads.
func restCallContext(r *http.Request) context.Context {
	p := &peer.Peer{}
	if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil {
		p.Addr = net.TCPAddrFromAddrPort(ap)
	}
	if r.TLS != nil {
		p.AuthInfo = credentials.TLSInfo{State: *r.TLS, CommonAuthInfo: credentials.CommonAuthInfo{SecurityLevel: credentials.PrivacyAndIntegrity}}
	}
	md := metadata.MD{}
	if v := r.Header.Values("Authorization"); len(v) > 0 {
		md["authorization"] = v
	}
	if v := r.Header.Values(auth.DevPrincipalHeader); len(v) > 0 {
		md[auth.DevPrincipalHeader] = v
	}
	return metadata.NewIncomingContext(peer.NewContext(context.Background(), p), md)
}

// writeError is the mux's error handler: errors of the call (statuses of
// the gRPC server, which carry an ErrorInfo) are written as they are;
// errors of the gateway itself (routing, a body that is not a JSON request
// of the method) get a fixed message, since the JSON decoder's may quote
// the body, and are audited when the caller was authenticated.
func (g *gateway) writeError(ctx context.Context, _ *runtime.ServeMux, _ runtime.Marshaler, w http.ResponseWriter, r *http.Request, err error) {
	var hse *runtime.HTTPStatusError
	if errors.As(err, &hse) {
		st := rpcstatus.New(codes.NotFound, pb.ErrorReason_ERROR_REASON_UNSPECIFIED, "no such route: see /pseudo/v1/openapi.json", nil)
		switch hse.HTTPStatus {
		case http.StatusMethodNotAllowed:
			st = rpcstatus.New(codes.Unimplemented, pb.ErrorReason_ERROR_REASON_UNSPECIFIED, "method not allowed on this route", nil)
		case http.StatusBadRequest:
			st = rpcstatus.New(codes.InvalidArgument, pb.ErrorReason_ERROR_REASON_MALFORMED_REQUEST, "malformed path", nil)
		}
		g.fail(w, hse.HTTPStatus, st)
		return
	}
	st := status.Convert(err)
	if rpcstatus.ReasonOf(st) != "" {
		g.fail(w, 0, st)
		return
	}
	// Not from the service: from the gateway's decoding of the request, or
	// from the gRPC library (message size, deadline, cancellation).
	httpCode := 0
	switch st.Code() {
	case codes.InvalidArgument:
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) || isBodyTooLarge(st) {
			st, httpCode = tooLarge(), http.StatusRequestEntityTooLarge
		} else {
			st = rpcstatus.New(codes.InvalidArgument, pb.ErrorReason_ERROR_REASON_MALFORMED_REQUEST,
				"malformed request: the body is not a JSON request of this method (proto3 JSON mapping, no unknown fields)", nil)
		}
	case codes.ResourceExhausted:
		st, httpCode = tooLarge(), http.StatusRequestEntityTooLarge
	default:
		st = rpcstatus.New(st.Code(), pb.ErrorReason_ERROR_REASON_UNSPECIFIED, "call failed: "+st.Code().String(), nil)
	}
	if c, ok := restCallFrom(ctx); ok {
		g.auditor.Refused(ctx, c.method, c.principal, st.Err())
	}
	g.fail(w, httpCode, st)
}

// isBodyTooLarge recognizes the decoding error of a body cut by
// http.MaxBytesReader, which grpc-gateway turns into a status.
func isBodyTooLarge(st *status.Status) bool {
	const msg = "http: request body too large"
	m := st.Message()
	return len(m) >= len(msg) && m[len(m)-len(msg):] == msg
}

// fail writes st as google.rpc.Status JSON with httpCode, or the HTTP
// status of its code when httpCode is 0.
func (g *gateway) fail(w http.ResponseWriter, httpCode int, st *status.Status) {
	if httpCode == 0 {
		httpCode = runtime.HTTPStatusFromCode(st.Code())
	}
	if st.Code() == codes.ResourceExhausted {
		for _, d := range st.Details() {
			if ri, ok := d.(*errdetails.RetryInfo); ok && ri.GetRetryDelay() != nil {
				secs := int64(math.Ceil(ri.GetRetryDelay().AsDuration().Seconds()))
				w.Header().Set("Retry-After", strconv.FormatInt(max(secs, 1), 10))
			}
		}
	}
	body, err := (&protojson.MarshalOptions{}).Marshal(st.Proto())
	if err != nil {
		body = []byte(`{"code":13,"message":"internal error"}`)
		httpCode = http.StatusInternalServerError
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(httpCode)
	_, _ = w.Write(body)
}

// gatewayPrincipal is the authentication step of the gateway's in-process
// gRPC server: the principal the gateway authenticated.
func gatewayPrincipal(ctx context.Context) (context.Context, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	v := md.Get(gatewayPrincipalKey)
	if len(v) != 1 || v[0] == "" {
		return nil, rpcstatus.Error(codes.Unauthenticated, pb.ErrorReason_ERROR_REASON_UNSPECIFIED, "unauthenticated")
	}
	ctx = auth.WithPrincipal(ctx, v[0])
	audit.FromContext(ctx).SetPrincipal(v[0])
	return ctx, nil
}

// Timeouts of the REST listener's HTTP server.
const (
	restReadHeaderTimeout = 10 * time.Second
	restReadTimeout       = time.Minute
	restWriteTimeout      = 2 * time.Minute
	restIdleTimeout       = 2 * time.Minute
)

// ServeREST serves the REST/JSON gateway on lis until Shutdown, with the
// server's TLS configuration (the same certificates, the same client
// certificate verification) or in plaintext in development mode. It
// returns nil after a shutdown, and an error when the gateway is not
// configured (Config.REST).
func (s *Server) ServeREST(lis net.Listener) error {
	if s.rest == nil {
		return errors.New("grpcserver: the REST gateway is not configured (Config.REST)")
	}
	srv := &http.Server{
		Handler:           s.rest.handler,
		ReadHeaderTimeout: restReadHeaderTimeout,
		ReadTimeout:       restReadTimeout,
		WriteTimeout:      restWriteTimeout,
		IdleTimeout:       restIdleTimeout,
		MaxHeaderBytes:    MaxHeaderListSize,
		HTTP2:             &http.HTTP2Config{MaxConcurrentStreams: int(s.maxStreams)},
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	if s.tls != nil {
		tc := s.tls.Clone()
		tc.NextProtos = []string{"h2", "http/1.1"}
		srv.TLSConfig = tc
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.rest.http = srv
	s.mu.Unlock()
	var err error
	if srv.TLSConfig != nil {
		err = srv.ServeTLS(lis, "", "")
	} else {
		err = srv.Serve(lis)
	}
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// RESTHandler returns the gateway's HTTP handler (nil when Config.REST is
// nil), for tests and for embedding behind another listener.
func (s *Server) RESTHandler() http.Handler {
	if s.rest == nil {
		return nil
	}
	return s.rest.handler
}

// shutdown stops the HTTP server (waiting for calls in flight until ctx
// ends), then the in-process gRPC server.
func (g *gateway) shutdown(ctx context.Context, srv *http.Server) {
	if srv != nil {
		if err := srv.Shutdown(ctx); err != nil {
			_ = srv.Close()
		}
	}
	_ = g.conn.Close()
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		defer func() { _ = recover() }() // GracefulStop does not panic; the rule is that no goroutine of ours may
		g.inproc.GracefulStop()
	}()
	select {
	case <-stopped:
	case <-ctx.Done():
		g.inproc.Stop()
		<-stopped
	}
}
