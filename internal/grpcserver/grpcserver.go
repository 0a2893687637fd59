// Package grpcserver assembles the pseudonymizer gRPC server: the
// pseudonymizer.v1 handler, the interceptors, the health and reflection
// services, transport limits, Prometheus metrics and graceful shutdown.
// cmd/pseudonymizer configures it; tests run it over bufconn or TCP.
//
// Interceptor chain, outermost first (unary and stream alike):
//
//  1. Prometheus server metrics (go-grpc-middleware providers/prometheus):
//     calls started and handled by method and code, latency histogram.
//  2. Audit (internal/audit): one slog record per call, and the per-item
//     metrics (health checks are not audited); right inside it, the
//     attributes of the call's span, from the audit record (tracing.go).
//  3. Recovery: a panic becomes INTERNAL "internal error"; it is logged
//     with its type and stack frames only, never its value (which could
//     hold request data).
//  4. Authentication (internal/auth through go-grpc-middleware auth) from
//     the call's headers, for every method but grpc.health.v1.Health/Check,
//     before the request body is read (see guard.go); the principal goes
//     into the audit record.
//  5. Decoding within limits: items counted on the wire against the
//     maximum batch size (BATCH_TOO_LARGE), then the request decoded
//     (MALFORMED_REQUEST); for streams, each message, with an idle timeout.
//  6. Rate limiting per principal and per item (internal/ratelimit), whose
//     refusals carry a google.rpc.RetryInfo.
//
// Authorization is the handler's (handler.go), since it depends
// on each domain's policy.
//
// Transport limits (Config): the maximum request size follows from the
// maximum batch size (MaxRecvMsgSizeFor); at most MaxConcurrentStreams
// streams per connection (further ones are refused by HTTP/2); headers of
// at most MaxHeaderListSize bytes; a TLS handshake must finish within
// ConnectionTimeout; a stream on which the caller sends nothing for
// StreamIdleTimeout ends with DEADLINE_EXCEEDED; keepalive pings find dead
// peers, connections idle for 15 minutes are closed, and clients pinging
// more often than every 20 s are disconnected. The number of connections is
// bounded by the listener (cmd/pseudonymizer -max-connections).
package grpcserver

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors"
	mwauth "github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/auth"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/recovery"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/selector"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"

	"github.com/ehealth-pseudo/pseudonymizer/internal/audit"
	"github.com/ehealth-pseudo/pseudonymizer/internal/auth"
	"github.com/ehealth-pseudo/pseudonymizer/internal/ratelimit"
	"github.com/ehealth-pseudo/pseudonymizer/internal/recovered"
	"github.com/ehealth-pseudo/pseudonymizer/internal/rpcstatus"
	"github.com/ehealth-pseudo/pseudonymizer/keys"
	pb "github.com/ehealth-pseudo/pseudonymizer/proto/pseudonymizer/v1"
	"github.com/ehealth-pseudo/pseudonymizer/pseudonymizer"
)

// Defaults of Config fields left zero.
const (
	// DefaultHealthInterval is how often the key store's health is checked.
	DefaultHealthInterval = 5 * time.Second
	// DefaultMaxConcurrentStreams bounds the streams of one connection.
	DefaultMaxConcurrentStreams = 128
	// DefaultStreamIdleTimeout ends a stream that sent nothing for that
	// long.
	DefaultStreamIdleTimeout = time.Minute
	// MaxHeaderListSize bounds a call's headers (a bearer token included).
	MaxHeaderListSize = 64 << 10
	// ConnectionTimeout bounds the TLS handshake of a new connection.
	ConnectionTimeout = 10 * time.Second
)

// Config configures a [Server].
type Config struct {
	// Keys is where domains are read (a *keys.Cache). Required.
	Keys KeySource
	// Auth identifies callers. Required.
	Auth *auth.Authenticator
	// TLS is the transport security; nil means plaintext, which New only
	// accepts for a development-mode Auth (and cmd/pseudonymizer only on a
	// loopback address, see CheckLoopbackAddr).
	TLS *tls.Config
	// MaxBatch is the maximum number of items of a call or stream chunk;
	// DefaultMaxBatch when zero.
	MaxBatch int
	// MaxRecvMsgSize bounds the size of a request message in bytes;
	// MaxRecvMsgSizeFor(MaxBatch) when zero. Larger messages fail with
	// RESOURCE_EXHAUSTED before the handler sees them.
	MaxRecvMsgSize int
	// MaxConcurrentStreams bounds the concurrent calls of one connection;
	// DefaultMaxConcurrentStreams when zero.
	MaxConcurrentStreams uint32
	// StreamIdleTimeout ends a stream whose caller sent no message for that
	// long; DefaultStreamIdleTimeout when zero.
	StreamIdleTimeout time.Duration
	// MaxSealsPerKey bounds the transitInfo values this process seals under
	// one transit key; pseudonymizer.DefaultMaxSealsPerKey when zero.
	MaxSealsPerKey uint64
	// Rate is the number of items per second each principal may submit,
	// with bursts of Burst items; zero or negative disables rate limiting.
	Rate  float64
	Burst int
	// MaxPrincipals bounds the rate limiter's table;
	// ratelimit.DefaultMaxKeys when zero.
	MaxPrincipals int
	// HealthInterval is how often the health status is refreshed from
	// Keys.Health; DefaultHealthInterval when zero.
	HealthInterval time.Duration
	// Logger receives the audit records and the server's events;
	// slog.Default() when nil.
	Logger *slog.Logger
	// TracerProvider makes the calls' spans (tracing.go); nil turns
	// tracing off (nothing of it is installed).
	TracerProvider trace.TracerProvider
	// Registry receives the metrics; a new registry (with the Go and
	// process collectors) when nil.
	Registry *prometheus.Registry
	// REST enables the REST/JSON gateway (rest.go), served by ServeREST;
	// nil disables it.
	REST *RESTConfig
	// AuditSync, when set, is called after each call's audit record is
	// handed to Logger, and the call is answered once it returns: with an
	// audit.GroupWriter under Logger's handler (cmd/pseudonymizer), its
	// Sync, so that concurrent calls' records are written together and
	// none is answered before its record is out.
	AuditSync func() error
}

// Server is the gRPC server of the pseudonymizer, with its health service
// and metrics.
type Server struct {
	grpc   *grpc.Server
	health *health.Server
	// healthOnly serves the health service alone, in plaintext, for
	// probes that cannot do (m)TLS (kubelet gRPC probes).
	healthOnly *grpc.Server
	reg        *prometheus.Registry
	keys       KeySource
	log        *slog.Logger
	// rest is the REST/JSON gateway, nil when disabled; tls and
	// maxStreams configure its listener.
	rest       *gateway
	tls        *tls.Config
	maxStreams uint32

	mu     sync.Mutex
	closed bool // Shutdown has begun: ServeREST serves nothing

	stop     chan struct{}
	done     chan struct{}
	stopOnce sync.Once
}

// New builds the server and starts refreshing its health status. Call
// Shutdown to stop it.
func New(cfg Config) (*Server, error) {
	if cfg.Keys == nil || cfg.Auth == nil {
		return nil, errors.New("grpcserver: Keys and Auth are required")
	}
	if cfg.TLS == nil && !cfg.Auth.Dev() {
		return nil, errors.New("grpcserver: plaintext is only allowed in development mode: configure TLS")
	}
	if cfg.MaxBatch <= 0 {
		cfg.MaxBatch = DefaultMaxBatch
	}
	if cfg.MaxRecvMsgSize <= 0 {
		cfg.MaxRecvMsgSize = MaxRecvMsgSizeFor(cfg.MaxBatch)
	}
	if cfg.MaxConcurrentStreams == 0 {
		cfg.MaxConcurrentStreams = DefaultMaxConcurrentStreams
	}
	if cfg.StreamIdleTimeout <= 0 {
		cfg.StreamIdleTimeout = DefaultStreamIdleTimeout
	}
	if cfg.HealthInterval <= 0 {
		cfg.HealthInterval = DefaultHealthInterval
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	reg := cfg.Registry
	if reg == nil {
		reg = prometheus.NewRegistry()
		reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}

	srvMetrics := grpcprom.NewServerMetrics(grpcprom.WithServerHandlingTimeHistogram())
	items := newItemMetrics()
	if err := reg.Register(srvMetrics); err != nil {
		return nil, fmt.Errorf("grpcserver: registering metrics: %v", err)
	}
	if err := reg.Register(items); err != nil {
		return nil, fmt.Errorf("grpcserver: registering metrics: %v", err)
	}
	auditor := audit.NewLogger(log, items.observe)
	if cfg.AuditSync != nil {
		auditor.SyncWith(cfg.AuditSync)
	}

	notHealth := selector.MatchFunc(func(_ context.Context, c interceptors.CallMeta) bool {
		return c.Service != healthpb.Health_ServiceDesc.ServiceName
	})
	notHealthCheck := selector.MatchFunc(func(_ context.Context, c interceptors.CallMeta) bool {
		return c.FullMethod() != healthCheck
	})
	ours := selector.MatchFunc(func(_ context.Context, c interceptors.CallMeta) bool {
		return c.Service == pb.Pseudonymizer_ServiceDesc.ServiceName
	})
	logPanic := func(ctx context.Context, rp *recovered.Panic) {
		log.ErrorContext(ctx, "grpcserver: panic in a call handler", "panic_type", rp.Type, "stack", rp.Frames)
	}
	onPanic := recovery.WithRecoveryHandlerContext(func(ctx context.Context, p any) error {
		logPanic(ctx, recovered.Describe(p))
		return rpcstatus.Internal().Err()
	})
	dec := &decoder{maxBatch: cfg.MaxBatch}

	var lim *ratelimit.Limiter
	if cfg.Rate > 0 {
		lim = ratelimit.New(ratelimit.Config{
			Rate:    cfg.Rate,
			Burst:   cfg.Burst,
			MaxKeys: cfg.MaxPrincipals,
			Key: func(ctx context.Context) string {
				p, _ := auth.Principal(ctx)
				return p
			},
			Cost: Items,
		})
	}
	// chain builds the interceptor chain around an authentication step:
	// the gRPC listener authenticates the call's credentials, the REST/JSON
	// gateway's in-process server takes the principal the gateway
	// authenticated (rest.go). Everything else is the same instances:
	// metrics, audit, recovery, decoding limits, one rate limiter.
	spans := spanAnnotator{on: cfg.TracerProvider != nil}
	chain := func(authn mwauth.AuthFunc) ([]grpc.UnaryServerInterceptor, []grpc.StreamServerInterceptor) {
		unary := []grpc.UnaryServerInterceptor{
			srvMetrics.UnaryServerInterceptor(),
			selector.UnaryServerInterceptor(auditor.UnaryServerInterceptor(), notHealth),
			spans.unary(),
			recovery.UnaryServerInterceptor(onPanic),
			selector.UnaryServerInterceptor(mwauth.UnaryServerInterceptor(authn), notHealthCheck),
			selector.UnaryServerInterceptor(dec.unaryInterceptor(), ours),
		}
		stream := []grpc.StreamServerInterceptor{
			srvMetrics.StreamServerInterceptor(),
			selector.StreamServerInterceptor(auditor.StreamServerInterceptor(), notHealth),
			spans.stream(),
			recovery.StreamServerInterceptor(onPanic),
			selector.StreamServerInterceptor(mwauth.StreamServerInterceptor(authn), notHealthCheck),
			selector.StreamServerInterceptor(dec.streamInterceptor(cfg.StreamIdleTimeout, func(rp *recovered.Panic) {
				logPanic(context.Background(), rp)
			}), ours),
		}
		if lim != nil {
			unary = append(unary, lim.UnaryServerInterceptor())
			stream = append(stream, lim.StreamServerInterceptor())
		}
		// Interceptors that are off are nil.
		unary = slices.DeleteFunc(unary, func(i grpc.UnaryServerInterceptor) bool { return i == nil })
		stream = slices.DeleteFunc(stream, func(i grpc.StreamServerInterceptor) bool { return i == nil })
		return unary, stream
	}
	unary, stream := chain(authenticate(cfg.Auth))
	// opts are the options of both the gRPC listener's server and the
	// gateway's in-process one (tracing, when on, included).
	opts := []grpc.ServerOption{
		grpc.ForceServerCodecV2(newCodec()),
		// Calls run on long-lived workers (a new goroutine only when all
		// are busy): a call's goroutine then already has the stack that
		// scalar multiplication needs, instead of growing (copying) a
		// fresh 8 KiB one on every call.
		grpc.NumStreamWorkers(uint32(max(8, 4*runtime.GOMAXPROCS(0)))),
		grpc.MaxRecvMsgSize(cfg.MaxRecvMsgSize),
		grpc.MaxConcurrentStreams(cfg.MaxConcurrentStreams),
		grpc.MaxHeaderListSize(MaxHeaderListSize),
		grpc.ConnectionTimeout(ConnectionTimeout),
		// Pings find dead peers; idle connections are closed. No
		// MaxConnectionAge: it would cut long stream jobs.
		grpc.KeepaliveParams(keepalive.ServerParameters{
			MaxConnectionIdle: 15 * time.Minute,
			Time:              time.Minute,
			Timeout:           20 * time.Second,
		}),
		// Clients may ping every 20 s at most, even without calls.
		// Faster pings get the connection closed (ENHANCE_YOUR_CALM).
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{
			MinTime:             20 * time.Second,
			PermitWithoutStream: true,
		}),
	}
	if cfg.TracerProvider != nil {
		opts = append(opts, tracingOption(cfg.TracerProvider))
	}
	gsOpts := append(slices.Clip(opts), grpc.ChainUnaryInterceptor(unary...), grpc.ChainStreamInterceptor(stream...))
	if cfg.TLS != nil {
		gsOpts = append(gsOpts, grpc.Creds(credentials.NewTLS(cfg.TLS)))
	}
	gs := grpc.NewServer(gsOpts...)
	seals := pseudonymizer.NewSealLimiter(cfg.MaxSealsPerKey, func(domain, kid string, limit uint64) {
		log.Warn("grpcserver: a transit key has sealed half of its limit: rotate it (pseudoctl transit-key rotate)",
			"domain", domain, "kid", kid, "limit", limit)
	})
	handler := newHandler(cfg.Keys, cfg.MaxBatch, seals, log)
	gs.RegisterService(deferDecoding(pb.Pseudonymizer_ServiceDesc), handler)
	if err := reg.Register(newSealMetrics(seals)); err != nil {
		return nil, fmt.Errorf("grpcserver: registering metrics: %v", err)
	}
	if err := reg.Register(newBuildInfo()); err != nil {
		return nil, fmt.Errorf("grpcserver: registering metrics: %v", err)
	}
	if fs, ok := cfg.Keys.(FreshnessSource); ok {
		if err := reg.Register(newFreshnessMetrics(fs)); err != nil {
			return nil, fmt.Errorf("grpcserver: registering metrics: %v", err)
		}
	}
	hs := health.NewServer()
	healthpb.RegisterHealthServer(gs, hs)
	reflection.Register(gs)
	srvMetrics.InitializeMetrics(gs)

	// The health-only listener is plaintext and unauthenticated: Check
	// only (Watch would hold a connection as long as the caller likes),
	// few streams, tiny messages, and connections recycled.
	ho := grpc.NewServer(grpc.MaxConcurrentStreams(4), grpc.MaxHeaderListSize(8<<10),
		grpc.MaxRecvMsgSize(4<<10), grpc.ConnectionTimeout(ConnectionTimeout),
		grpc.KeepaliveParams(keepalive.ServerParameters{
			MaxConnectionIdle: time.Minute, MaxConnectionAge: 5 * time.Minute, MaxConnectionAgeGrace: 10 * time.Second,
		}))
	healthpb.RegisterHealthServer(ho, checkOnly{hs})

	s := &Server{
		grpc: gs, health: hs, healthOnly: ho, reg: reg, keys: cfg.Keys, log: log,
		tls: cfg.TLS, maxStreams: cfg.MaxConcurrentStreams,
		stop: make(chan struct{}), done: make(chan struct{}),
	}
	if cfg.REST != nil {
		gwUnary, gwStream := chain(gatewayPrincipal)
		inproc := grpc.NewServer(append(slices.Clip(opts), grpc.ChainUnaryInterceptor(gwUnary...), grpc.ChainStreamInterceptor(gwStream...))...)
		inproc.RegisterService(deferDecoding(pb.Pseudonymizer_ServiceDesc), handler)
		var err error
		s.rest, err = newGateway(*cfg.REST, cfg.Auth, cfg.Auth.Bearer(), auditor, log, inproc, cfg.MaxRecvMsgSize, cfg.MaxBatch, cfg.TracerProvider)
		if err != nil {
			return nil, err
		}
	}
	s.updateHealth()
	go s.watchHealth(cfg.HealthInterval)
	return s, nil
}

// servingStatus is SERVING unless the key store cannot be trusted: it
// cannot be read, refuses access, answers with a listing that does not
// parse, or suddenly lists nothing (keys.ErrUnavailable, keys.ErrDenied).
// A domain that fails validation only degrades the service: the others are
// served.
func servingStatus(err error) healthpb.HealthCheckResponse_ServingStatus {
	if errors.Is(err, keys.ErrUnavailable) || errors.Is(err, keys.ErrDenied) {
		return healthpb.HealthCheckResponse_NOT_SERVING
	}
	return healthpb.HealthCheckResponse_SERVING
}

// updateHealth publishes two health statuses:
//
//   - "" (the server as a whole) is NOT_SERVING while the key store is at
//     fault (servingStatus): the degraded state that monitoring alerts on.
//     The service keeps serving from the last good keys meanwhile: faults
//     degrade, they never wipe.
//   - "pseudonymizer.v1.Pseudonymizer" is SERVING as long as the server
//     holds the keys of at least one domain, since it serves from them
//     whatever the store does; NOT_SERVING when it holds none (nothing
//     could be served). Readiness probes and load balancers check this
//     name, so that a Vault outage does not drain every replica at once.
func (s *Server) updateHealth() {
	s.health.SetServingStatus("", servingStatus(s.keys.Health()))
	svc := healthpb.HealthCheckResponse_SERVING
	if l, ok := s.keys.(interface{ Domains() []string }); ok && len(l.Domains()) == 0 {
		svc = healthpb.HealthCheckResponse_NOT_SERVING
	}
	s.health.SetServingStatus(pb.Pseudonymizer_ServiceDesc.ServiceName, svc)
}

func (s *Server) watchHealth(every time.Duration) {
	defer close(s.done)
	t := time.NewTicker(every)
	defer t.Stop()
	last := healthpb.HealthCheckResponse_SERVING
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
		err := s.keys.Health()
		st := servingStatus(err)
		if st != last {
			if st == healthpb.HealthCheckResponse_NOT_SERVING {
				s.log.Error("grpcserver: key store unavailable, health is NOT_SERVING", "err", err)
			} else {
				s.log.Info("grpcserver: key store available again, health is SERVING")
			}
			last = st
		}
		s.updateHealth()
	}
}

// Serve accepts connections on lis until Shutdown. It returns nil after a
// shutdown.
func (s *Server) Serve(lis net.Listener) error {
	err := s.grpc.Serve(lis)
	if errors.Is(err, grpc.ErrServerStopped) {
		return nil
	}
	return err
}

// ServeHealth serves grpc.health.v1.Health alone, in plaintext, on lis,
// until Shutdown: for probes that cannot present a client certificate
// (kubelet's gRPC probes). It exposes the health statuses and nothing
// else.
func (s *Server) ServeHealth(lis net.Listener) error {
	err := s.healthOnly.Serve(lis)
	if errors.Is(err, grpc.ErrServerStopped) {
		return nil
	}
	return err
}

// MetricsHandler serves the registry in the Prometheus text format, for
// /metrics on a separate listener.
func (s *Server) MetricsHandler() http.Handler {
	return promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{Registry: s.reg})
}

// Shutdown marks the server NOT_SERVING, stops accepting calls and waits
// for the calls in flight to finish; when ctx ends first, it closes the
// remaining connections. It returns ctx.Err() in that case.
func (s *Server) Shutdown(ctx context.Context) error {
	s.stopOnce.Do(func() { close(s.stop) })
	<-s.done
	s.health.Shutdown()
	defer s.healthOnly.Stop()
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	if s.rest != nil {
		// REST calls in flight finish through the in-process server,
		// alongside the gRPC calls.
		restStopped := make(chan struct{})
		go func() {
			defer close(restStopped)
			defer func() { _ = recover() }()
			s.mu.Lock()
			srv := s.rest.http
			s.mu.Unlock()
			s.rest.shutdown(ctx, srv)
		}()
		defer func() { <-restStopped }()
	}
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		defer func() { _ = recover() }() // GracefulStop does not panic; no goroutine of ours may end the process
		s.grpc.GracefulStop()
	}()
	select {
	case <-stopped:
		return nil
	case <-ctx.Done():
		s.grpc.Stop()
		<-stopped
		return ctx.Err()
	}
}

// checkOnly serves grpc.health.v1.Health's Check and refuses Watch.
type checkOnly struct{ *health.Server }

// Watch implements grpc_health_v1.HealthServer: not on this listener.
func (checkOnly) Watch(*healthpb.HealthCheckRequest, healthpb.Health_WatchServer) error {
	return status.Error(codes.Unimplemented, "Watch is not served on the health-only listener: use Check")
}

// CheckLoopbackAddr accepts a listen address only when its host is a
// loopback address or "localhost": development mode (plaintext, or the dev
// principal header) must never be reachable from another machine. An empty
// host ("":port, all interfaces) is refused.
func CheckLoopbackAddr(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("grpcserver: listen address %q: %v", addr, err)
	}
	if strings.EqualFold(host, "localhost") {
		return nil
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return nil
	}
	return fmt.Errorf("grpcserver: refusing %q: development mode listens on a loopback address only (127.0.0.1:PORT, [::1]:PORT or localhost:PORT)", addr)
}
