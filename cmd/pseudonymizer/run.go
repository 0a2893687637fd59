package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/net/netutil"

	"github.com/ehealth-pseudo/pseudonymizer/internal/audit"
	"github.com/ehealth-pseudo/pseudonymizer/internal/auth"
	"github.com/ehealth-pseudo/pseudonymizer/internal/buildinfo"
	"github.com/ehealth-pseudo/pseudonymizer/internal/cpuprofile"
	"github.com/ehealth-pseudo/pseudonymizer/internal/cpusched"
	"github.com/ehealth-pseudo/pseudonymizer/internal/grpcserver"
	"github.com/ehealth-pseudo/pseudonymizer/internal/recovered"
	"github.com/ehealth-pseudo/pseudonymizer/internal/tracing"
	"github.com/ehealth-pseudo/pseudonymizer/keys"
	"github.com/ehealth-pseudo/pseudonymizer/keys/vault"
)

// profileEnv names the file of the service's CPU profile, taken between
// SIGUSR1 and SIGUSR2 (package cpuprofile), for benchmarks. It is not a
// flag: profiling is no part of the service's configuration.
const profileEnv = "PSEUDONYMIZER_CPUPROFILE"

// run is the command without the process: it serves until ctx is done (a
// signal), then shuts down gracefully.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	c, err := parseConfig(args, getenv, stderr)
	if err != nil {
		return err
	}
	if c.version {
		buildinfo.Print(stdout, "pseudonymizer")
		return nil
	}
	if err := c.check(getenv); err != nil {
		return err
	}
	// Log records go out through a group-commit writer: the audit records
	// of concurrent calls are written together, and each call is answered
	// once its record is written (grpcserver.Config.AuditSync).
	logOut := audit.NewGroupWriter(stderr)
	defer logOut.Close()
	log, err := newLogger(c, logOut)
	if err != nil {
		return err
	}
	if c.schedBatch {
		if err := cpusched.Batch(); err != nil {
			return err
		}
		log.Info("pseudonymizer: SCHED_BATCH scheduling policy")
	}
	// Off unless PSEUDONYMIZER_CPUPROFILE is set (scripts/bench-split.sh).
	if p := getenv(profileEnv); p != "" {
		log.Info("pseudonymizer: CPU profile between SIGUSR1 and SIGUSR2", "file", p)
	}
	defer cpuprofile.OnSignal(profileEnv, getenv, log.Warn)()
	stopTracing, tracer, err := startTracing(ctx, log)
	if err != nil {
		return err
	}
	defer stopTracing()

	src, storeDesc, closeStore, err := openStore(ctx, c, log)
	if err != nil {
		return err
	}
	defer closeStore()
	cache, err := keys.NewCache(ctx, src, &keys.CacheOptions{Interval: c.pollInterval, Logger: log})
	if err != nil {
		return err
	}
	defer cache.Close()

	authn, tlsCfg, err := identity(c)
	if err != nil {
		return err
	}
	srv, err := grpcserver.New(grpcserver.Config{
		Keys:                 cache,
		Auth:                 authn,
		TLS:                  tlsCfg,
		MaxBatch:             c.maxBatch,
		MaxRecvMsgSize:       c.maxMsgSize,
		MaxConcurrentStreams: uint32(c.maxStreams),
		StreamIdleTimeout:    c.streamIdle,
		MaxSealsPerKey:       c.maxSeals,
		Rate:                 c.rate,
		Burst:                c.burst,
		MaxPrincipals:        c.maxPrincipals,
		HealthInterval:       c.healthInterval,
		Logger:               log,
		AuditSync:            logOut.Sync,
		TracerProvider:       tracer,
		REST:                 restConfig(c),
	})
	if err != nil {
		return err
	}

	// The listeners: gRPC, then the optional ones. If one cannot be
	// opened, those already open are closed.
	var opened []net.Listener
	listen := func(what, addr string) (net.Listener, error) {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			for _, o := range opened {
				_ = o.Close()
			}
			_ = srv.Shutdown(ctx)
			return nil, fmt.Errorf("listening for %s: %v", what, err)
		}
		opened = append(opened, l)
		return l, nil
	}
	lis, err := listen("gRPC", c.listen)
	if err != nil {
		return err
	}
	// Connections beyond the limit wait in the kernel's backlog until one
	// closes: a flood of connections cannot exhaust the process.
	lis = netutil.LimitListener(lis, c.maxConns)
	var metrics *http.Server
	var metricsLis, healthLis, restLis net.Listener
	if c.metricsListen != "" {
		if metricsLis, err = listen("metrics", c.metricsListen); err != nil {
			return err
		}
		mux := http.NewServeMux()
		mux.Handle("/metrics", srv.MetricsHandler())
		metrics = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	}
	if c.healthListen != "" {
		if healthLis, err = listen("health probes", c.healthListen); err != nil {
			return err
		}
		// Probes need few connections; nobody may hold many.
		healthLis = netutil.LimitListener(healthLis, 64)
	}
	if c.restListen != "" {
		if restLis, err = listen("REST/JSON", c.restListen); err != nil {
			return err
		}
		restLis = netutil.LimitListener(restLis, c.maxConns)
	}

	// Each listener is served on a goroutine of its own, which reports its
	// failure (or a recovered panic, by type only) on errc.
	errc := make(chan error, 8)
	serve := func(what string, f func() error) {
		go func() {
			defer func() {
				if p := recover(); p != nil {
					errc <- fmt.Errorf("%s: panic %s", what, recovered.Describe(p).Type)
				}
			}()
			if err := f(); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("%s: %v", what, err)
			}
		}()
	}
	serve("gRPC server", func() error { return srv.Serve(lis) })
	if healthLis != nil {
		serve("health server", func() error { return srv.ServeHealth(healthLis) })
	}
	if restLis != nil {
		serve("REST/JSON server", func() error { return srv.ServeREST(restLis) })
	}
	if metrics != nil {
		serve("metrics server", func() error { return metrics.Serve(metricsLis) })
	}
	mode := "TLS"
	switch {
	case tlsCfg == nil:
		mode = "plaintext, development mode: not for production"
	case c.dev:
		mode = "TLS, development mode"
	}
	attrs := []any{"grpc", lis.Addr().String(), "mode", mode, "keys", storeDesc,
		"max_batch", c.maxBatch, "rate", c.rate, "burst", c.burst}
	if metricsLis != nil {
		attrs = append(attrs, "metrics", metricsLis.Addr().String())
	}
	if healthLis != nil {
		attrs = append(attrs, "health", healthLis.Addr().String())
	}
	if restLis != nil {
		attrs = append(attrs, "rest", restLis.Addr().String())
	}
	log.Info("pseudonymizer: serving", attrs...)
	// Outside development mode the structured log line above is all:
	// stdout stays empty (no banner for log collectors to misread).
	if c.dev {
		fmt.Fprintf(stdout, "pseudonymizer: serving gRPC on %s (%s)\n", lis.Addr(), mode)
		if metricsLis != nil {
			fmt.Fprintf(stdout, "pseudonymizer: serving metrics on http://%s/metrics\n", metricsLis.Addr())
		}
		if healthLis != nil {
			fmt.Fprintf(stdout, "pseudonymizer: serving health probes (plaintext, health only) on %s\n", healthLis.Addr())
		}
		if restLis != nil {
			scheme := "https"
			if tlsCfg == nil {
				scheme = "http"
			}
			fmt.Fprintf(stdout, "pseudonymizer: serving REST/JSON on %s://%s/pseudo/v1/ (OpenAPI: /pseudo/v1/openapi.json)\n", scheme, restLis.Addr())
		}
		printDevHint(stdout, lis.Addr().String(), storeDesc, cache.Domains(), tlsCfg == nil)
	}

	var serveErr error
	select {
	case <-ctx.Done():
		log.Info("pseudonymizer: shutting down, finishing the calls in flight", "timeout", c.shutdownTimeout.String())
	case serveErr = <-errc:
		log.Error("pseudonymizer: server failed, shutting down", "err", serveErr)
	}
	sctx, cancel := context.WithTimeout(context.Background(), c.shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		log.Warn("pseudonymizer: shutdown timeout reached, in-flight calls were cut")
	}
	if metrics != nil {
		_ = metrics.Shutdown(sctx)
	}
	log.Info("pseudonymizer: stopped")
	return serveErr
}

// restConfig is the gateway's configuration, nil without -rest-listen.
func restConfig(c *config) *grpcserver.RESTConfig {
	if c.restListen == "" {
		return nil
	}
	return &grpcserver.RESTConfig{AllowedOrigins: c.origins()}
}

// tracingShutdownTimeout bounds the export of the spans still queued at
// exit: a collector that is down must not hold the process.
const tracingShutdownTimeout = 5 * time.Second

// startTracing sets up OpenTelemetry tracing from the OTEL_* environment
// (internal/tracing: off unless an OTLP collector is named) and logs
// whether it is on and over which protocol, never the exporter's endpoint
// or headers (OTEL_EXPORTER_OTLP_HEADERS may hold credentials). tp is the
// tracer provider when tracing is on, nil when off (the server then
// installs no instrumentation at all). stop exports the spans still
// queued, within tracingShutdownTimeout.
func startTracing(ctx context.Context, log *slog.Logger) (stop func(), tp trace.TracerProvider, err error) {
	cfg, err := tracing.FromEnv(os.Getenv)
	if err != nil {
		return nil, nil, err
	}
	tracing.LogErrors(log)
	shutdown, err := tracing.Setup(ctx, "pseudonymizer", buildinfo.Read().Version)
	if err != nil {
		return nil, nil, err
	}
	log.Info("pseudonymizer: tracing", "traces", cfg.String())
	if cfg.Enabled {
		tp = otel.GetTracerProvider()
	}
	return func() {
		sctx, cancel := context.WithTimeout(context.Background(), tracingShutdownTimeout)
		defer cancel()
		if err := shutdown(sctx); err != nil {
			log.Warn("pseudonymizer: tracing shutdown: spans may be lost", "err", err)
		}
	}, tp, nil
}

func newLogger(c *config, stderr io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.logLevel)); err != nil {
		return nil, usagef("-log-level: %v", err)
	}
	opts := &slog.HandlerOptions{Level: level}
	if c.logFormat == "text" {
		return slog.New(slog.NewTextHandler(stderr, opts)), nil
	}
	return slog.New(slog.NewJSONHandler(stderr, opts)), nil
}

// openStore opens the key store: the development key file, with the demo
// domain, or Vault.
func openStore(ctx context.Context, c *config, log *slog.Logger) (src keys.Source, desc string, closeFn func(), err error) {
	if c.dev {
		path := filepath.Join(c.dataDir, "keys.json")
		fs, err := keys.OpenFileStore(path, true)
		if err != nil {
			return nil, "", nil, err
		}
		created, err := fs.EnsureDemo(ctx)
		if err != nil {
			return nil, "", nil, err
		}
		if created {
			log.Info("pseudonymizer: created the demo domain", "domain", keys.DemoDomain, "file", path)
		}
		return fs, "file:" + path, func() {}, nil
	}
	st, err := vault.Open(ctx, vault.Config{
		Address:      c.vaultAddr,
		CACert:       c.vaultCA,
		Token:        c.vaultToken,
		RoleID:       c.vaultRoleID,
		SecretIDFile: c.vaultSecretIDFile,
		Mount:        c.vaultMount,
		Shares: vault.ShareConfig{Mount: c.vaultSharesMount, File: c.shareFile,
			Options: vault.SharesOptions{Window: c.sharesWindow, InFlight: c.sharesInFlight, Logger: log}},
		Mode:   vault.Service,
		Logger: log,
	})
	if err != nil {
		return nil, "", nil, err
	}
	return st, "vault:" + c.vaultAddr, func() { _ = st.Close() }, nil
}

// identity builds the authenticator and the TLS configuration.
func identity(c *config) (*auth.Authenticator, *tls.Config, error) {
	var verifier *auth.JWTVerifier
	if path := c.jwtJWKS + c.jwtKey; path != "" {
		key, err := auth.LoadJWTKey(path)
		if err != nil {
			return nil, nil, err
		}
		if verifier, err = auth.NewJWTVerifier(key, c.jwtIssuer, c.jwtAudience); err != nil {
			return nil, nil, err
		}
	}
	var tlsCfg *tls.Config
	if c.tlsCert != "" {
		var err error
		tlsCfg, err = auth.ServerTLSConfig(auth.TLSFiles{
			Cert:               c.tlsCert,
			Key:                c.tlsKey,
			ClientCA:           c.tlsClientCA,
			OptionalClientCert: verifier != nil || c.dev,
		})
		if err != nil {
			return nil, nil, err
		}
	}
	return auth.New(auth.Config{JWT: verifier, Dev: c.dev}), tlsCfg, nil
}

func printDevHint(w io.Writer, addr, store string, domains []string, plaintext bool) {
	domain := keys.DemoDomain
	if len(domains) > 0 && !slices.Contains(domains, domain) {
		domain = domains[0]
	}
	tlsFlag, pseudoFlag := "-plaintext", "-insecure "
	if !plaintext {
		tlsFlag, pseudoFlag = "-insecure", ""
	}
	fmt.Fprintf(w, `
Development mode. Keys: %s (domains: %v)
The caller is named by the metadata x-pseudonymizer-principal (default "dev").
Try:
  grpcurl %s -H 'x-pseudonymizer-principal: alice' -d '{"name": "%s"}' %s pseudonymizer.v1.Pseudonymizer/GetDomain
  go run ./cmd/pseudo -addr %s %s-principal alice pseudonymize -domain %s 85.07.30-033.28
Stop with Ctrl-C.
`, store, domains, tlsFlag, domain, addr, addr, pseudoFlag, domain)
}
