package main

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/ehealth-pseudo/pseudonymizer/internal/auth"
	"github.com/ehealth-pseudo/pseudonymizer/internal/grpcserver"
	"github.com/ehealth-pseudo/pseudonymizer/keys"
)

// inProcess is a development server started by -inprocess: the server of
// cmd/pseudonymizer -dev -rate 0 (demo domain in a temporary key file,
// plaintext on a loopback port, audit records formatted and discarded), and
// its /metrics on another loopback port. The key file also holds
// DemoDomain2, a new version of the demo domain, into which the demo
// domain's owners may convert.
type inProcess struct {
	addr       string
	metricsURL string
	stop       func()
}

// startInProcess starts the server. With a TLS configuration (the tests'),
// it serves TLS instead of plaintext and takes the caller from the client
// certificate instead of the development header.
func startInProcess(ctx context.Context, tlsCfg *tls.Config) (_ *inProcess, err error) {
	dir, err := os.MkdirTemp("", "pseudobench-")
	if err != nil {
		return nil, err
	}
	var cleanup []func()
	defer func() {
		if err != nil {
			for i := len(cleanup) - 1; i >= 0; i-- {
				cleanup[i]()
			}
		}
	}()
	cleanup = append(cleanup, func() { _ = os.RemoveAll(dir) })

	fs, err := keys.OpenFileStore(filepath.Join(dir, "keys.json"), true)
	if err != nil {
		return nil, err
	}
	if _, err := fs.EnsureDemo(ctx); err != nil {
		return nil, err
	}
	if _, err := fs.NewVersion(ctx, keys.DemoDomain, DemoDomain2); err != nil {
		return nil, err
	}
	log := slog.New(slog.NewJSONHandler(io.Discard, nil))
	cache, err := keys.NewCache(ctx, fs, &keys.CacheOptions{Logger: log})
	if err != nil {
		return nil, err
	}
	cleanup = append(cleanup, func() { _ = cache.Close() })
	srv, err := grpcserver.New(grpcserver.Config{
		Keys:   cache,
		Auth:   auth.New(auth.Config{Dev: tlsCfg == nil}),
		TLS:    tlsCfg,
		Logger: log,
	})
	if err != nil {
		return nil, err
	}
	cleanup = append(cleanup, func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	mlis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		_ = lis.Close()
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", srv.MetricsHandler())
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		defer func() { _ = recover() }() // a panic of the server under test ends its runs, not the tool
		_ = srv.Serve(lis)
	}()
	go func() {
		defer func() { _ = recover() }()
		if err := hs.Serve(mlis); !errors.Is(err, http.ErrServerClosed) {
			log.Error("pseudobench: metrics server", "err", err)
		}
	}()
	cleanup = append(cleanup, func() { _ = hs.Close() })
	stop := func() {
		for i := len(cleanup) - 1; i >= 0; i-- {
			cleanup[i]()
		}
	}
	return &inProcess{
		addr:       lis.Addr().String(),
		metricsURL: "http://" + mlis.Addr().String() + "/metrics",
		stop:       stop,
	}, nil
}
