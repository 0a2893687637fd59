// Package servertest runs the real pseudonymizer gRPC server (every
// interceptor, internal/grpcserver) in process for tests: on bufconn, or
// on a loopback TCP port when the code under test dials an address (the
// CLIs). It is the one fixture that package tests share; e2e runs the
// built binaries instead.
package servertest

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/test/bufconn"

	"github.com/ehealth-pseudo/pseudonymizer/internal/grpcserver"
)

// Server is a running server and a way to reach it.
type Server struct {
	*grpcserver.Server
	// Addr is the TCP address ("127.0.0.1:port"), or "" on bufconn.
	Addr string
	buf  *bufconn.Listener
}

// Start serves cfg until the test ends, on bufconn, or on TCP when tcp is
// true. A nil Logger discards the server's logs; a nil Registry is a fresh
// one.
func Start(t testing.TB, cfg grpcserver.Config, tcp bool) *Server {
	t.Helper()
	var lis net.Listener
	s := &Server{}
	if tcp {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lis, s.Addr = l, l.Addr().String()
	} else {
		s.buf = bufconn.Listen(1 << 20)
		lis = s.buf
	}
	return s.serve(t, cfg, lis)
}

// StartOn serves cfg on lis until the test ends.
func StartOn(t testing.TB, cfg grpcserver.Config, lis net.Listener) *Server {
	t.Helper()
	return (&Server{Addr: lis.Addr().String()}).serve(t, cfg, lis)
}

func (s *Server) serve(t testing.TB, cfg grpcserver.Config, lis net.Listener) *Server {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if cfg.Registry == nil {
		cfg.Registry = prometheus.NewRegistry()
	}
	srv, err := grpcserver.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	s.Server = srv
	served := make(chan error, 1)
	go func() {
		defer func() {
			if p := recover(); p != nil {
				served <- fmt.Errorf("servertest: Serve panicked: %T", p)
			}
		}()
		served <- srv.Serve(lis)
	}()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return s
}

// Dial returns a plaintext connection to the server (bufconn or TCP),
// closed when the test ends.
func (s *Server) Dial(t testing.TB, opts ...grpc.DialOption) *grpc.ClientConn {
	t.Helper()
	target := s.Addr
	if s.buf != nil {
		target = "passthrough:///bufnet"
		opts = append(opts, grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return s.buf.DialContext(ctx) }))
	}
	conn, err := grpc.NewClient(target, append(opts, grpc.WithTransportCredentials(insecure.NewCredentials()))...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// RawRequest is a request message sent as it is: arbitrary bytes on the
// wire, which the protobuf marshaller would refuse to produce. Send it with
// the call option grpc.ForceCodecV2(RawCodec{}).
type RawRequest []byte

// RawCodec is a client codec that marshals a RawRequest as it is, and
// everything else (and every response) as protobuf.
type RawCodec struct{}

// Marshal implements encoding.CodecV2.
func (RawCodec) Marshal(v any) (mem.BufferSlice, error) {
	if b, ok := v.(RawRequest); ok {
		return mem.BufferSlice{mem.SliceBuffer(b)}, nil
	}
	return encoding.GetCodecV2("proto").Marshal(v)
}

// Unmarshal implements encoding.CodecV2.
func (RawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	return encoding.GetCodecV2("proto").Unmarshal(data, v)
}

// Name implements encoding.CodecV2.
func (RawCodec) Name() string { return "proto" }
