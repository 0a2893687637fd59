// Package otlptest is an OpenTelemetry collector for tests: it receives
// OTLP trace exports over gRPC or HTTP (protobuf or JSON) on a loopback
// port, keeps them, and lets a test wait until the spans it expects have
// arrived. internal/tracing tests the exporters with it, e2e the built
// server.
package otlptest

import (
	"context"
	"io"
	"mime"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// Collector keeps the trace exports it receives.
type Collector struct {
	// Endpoint is its base URL, "http://127.0.0.1:port", for
	// OTEL_EXPORTER_OTLP_ENDPOINT.
	Endpoint string

	mu      sync.Mutex
	exports []Export
	changed chan struct{} // closed (and replaced) at each export
}

// Export is one export request as received.
type Export struct {
	Request *coltracepb.ExportTraceServiceRequest
	// Header is the request's metadata (gRPC, lower-case keys) or HTTP
	// header (canonical keys).
	Header map[string][]string
	// ContentType is the HTTP Content-Type, or "application/grpc".
	ContentType string
}

// Span is one exported span with the resource it was exported with.
type Span struct {
	*tracepb.Span
	Resource *resourcepb.Resource
}

// Attr returns the value of a span attribute.
func (s Span) Attr(key string) (*commonpb.AnyValue, bool) { return attr(s.GetAttributes(), key) }

// ResourceAttr returns the value of an attribute of the span's resource.
func (s Span) ResourceAttr(key string) (*commonpb.AnyValue, bool) {
	return attr(s.Resource.GetAttributes(), key)
}

func attr(kvs []*commonpb.KeyValue, key string) (*commonpb.AnyValue, bool) {
	for _, kv := range kvs {
		if kv.GetKey() == key {
			return kv.GetValue(), true
		}
	}
	return nil, false
}

func newCollector() *Collector { return &Collector{changed: make(chan struct{})} }

func (c *Collector) add(e Export) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.exports = append(c.exports, e)
	close(c.changed)
	c.changed = make(chan struct{})
}

// Exports returns the exports received so far.
func (c *Collector) Exports() []Export {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]Export(nil), c.exports...)
}

// Spans returns every span received so far, in order of arrival.
func (c *Collector) Spans() []Span {
	var out []Span
	for _, e := range c.Exports() {
		for _, rs := range e.Request.GetResourceSpans() {
			for _, ss := range rs.GetScopeSpans() {
				for _, s := range ss.GetSpans() {
					out = append(out, Span{Span: s, Resource: rs.GetResource()})
				}
			}
		}
	}
	return out
}

// Dump is every export received so far as protobuf JSON, one per line,
// with their headers: what a leak check searches.
func (c *Collector) Dump() []byte {
	var b []byte
	for _, e := range c.Exports() {
		for k, vs := range e.Header {
			b = append(b, k+": "+strings.Join(vs, ",")+"\n"...)
		}
		j, err := protojson.Marshal(e.Request)
		if err != nil {
			panic("otlptest: " + err.Error())
		}
		b = append(append(b, j...), '\n')
	}
	return b
}

// WaitSpans waits until done holds for the spans received so far, woken
// by each export, and fails the test (naming what) after timeout.
func (c *Collector) WaitSpans(t testing.TB, timeout time.Duration, what string, done func([]Span) bool) []Span {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		c.mu.Lock()
		changed := c.changed
		c.mu.Unlock()
		spans := c.Spans()
		if done(spans) {
			return spans
		}
		select {
		case <-changed:
		case <-deadline.C:
			names := make([]string, len(spans))
			for i, s := range spans {
				names[i] = s.GetName()
			}
			t.Fatalf("waited %v for %s; %d spans received: %v", timeout, what, len(spans), names)
		}
	}
}

// StartGRPC starts a collector serving OTLP/gRPC (plaintext) until the
// test ends.
func StartGRPC(t testing.TB) *Collector {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c := newCollector()
	c.Endpoint = "http://" + lis.Addr().String()
	s := grpc.NewServer()
	coltracepb.RegisterTraceServiceServer(s, &grpcService{c: c})
	served := make(chan struct{})
	go func() {
		defer close(served)
		defer func() { _ = recover() }() // a test helper's server never ends the test binary
		_ = s.Serve(lis)
	}()
	t.Cleanup(func() {
		s.Stop()
		<-served
	})
	return c
}

type grpcService struct {
	coltracepb.UnimplementedTraceServiceServer
	c *Collector
}

// Export implements coltracepb.TraceServiceServer.
func (g *grpcService) Export(ctx context.Context, req *coltracepb.ExportTraceServiceRequest) (*coltracepb.ExportTraceServiceResponse, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	g.c.add(Export{Request: req, Header: md.Copy(), ContentType: "application/grpc"})
	return &coltracepb.ExportTraceServiceResponse{}, nil
}

// StartHTTP starts a collector serving OTLP/HTTP (plaintext, protobuf or
// JSON) at /v1/traces until the test ends.
func StartHTTP(t testing.TB) *Collector {
	t.Helper()
	c := newCollector()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != "/v1/traces" {
			http.NotFound(w, r)
			return
		}
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
		req := &coltracepb.ExportTraceServiceRequest{}
		var marshal func(proto.Message) ([]byte, error)
		switch ct {
		case "application/x-protobuf":
			err, marshal = proto.Unmarshal(body, req), proto.Marshal
		case "application/json":
			err, marshal = protojson.Unmarshal(body, req), protojson.Marshal
		default:
			http.Error(w, "unsupported content type", http.StatusUnsupportedMediaType)
			return
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		c.add(Export{Request: req, Header: r.Header.Clone(), ContentType: ct})
		resp, err := marshal(&coltracepb.ExportTraceServiceResponse{})
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", ct)
		_, _ = w.Write(resp)
	}))
	t.Cleanup(srv.Close)
	c.Endpoint = srv.URL
	return c
}
