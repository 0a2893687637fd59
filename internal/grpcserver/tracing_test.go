package grpcserver_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4/jwt"
	"go.opentelemetry.io/otel/attribute"
	otelcodes "go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/ehealth-pseudo/pseudonymizer/client"
	"github.com/ehealth-pseudo/pseudonymizer/internal/auth"
	"github.com/ehealth-pseudo/pseudonymizer/internal/grpcserver"
	"github.com/ehealth-pseudo/pseudonymizer/owner"
	pb "github.com/ehealth-pseudo/pseudonymizer/proto/pseudonymizer/v1"
)

// spanSink is a span processor that keeps the spans the server makes and
// wakes whoever waits for them.
type spanSink struct {
	mu      sync.Mutex
	started []string // span names, as they start
	ended   []sdktrace.ReadOnlySpan
	changed chan struct{}
}

func newSpanSink() *spanSink { return &spanSink{changed: make(chan struct{})} }

func (s *spanSink) notify() {
	close(s.changed)
	s.changed = make(chan struct{})
}

func (s *spanSink) OnStart(_ context.Context, sp sdktrace.ReadWriteSpan) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.started = append(s.started, sp.Name())
	s.notify()
}

func (s *spanSink) OnEnd(sp sdktrace.ReadOnlySpan) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ended = append(s.ended, sp)
	s.notify()
}

func (*spanSink) Shutdown(context.Context) error   { return nil }
func (*spanSink) ForceFlush(context.Context) error { return nil }

// provider is a tracer provider that samples every span into s.
func (s *spanSink) provider() trace.TracerProvider {
	return sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(s), sdktrace.WithSampler(sdktrace.AlwaysSample()))
}

// wait waits, woken by each span that starts or ends, until done holds
// for the spans started and ended so far, and returns the ended ones.
func (s *spanSink) wait(t *testing.T, what string, done func(started []string, ended []sdktrace.ReadOnlySpan) bool) []sdktrace.ReadOnlySpan {
	t.Helper()
	deadline := time.NewTimer(30 * time.Second)
	defer deadline.Stop()
	for {
		s.mu.Lock()
		started, ended, changed := slices.Clone(s.started), slices.Clone(s.ended), s.changed
		s.mu.Unlock()
		if done(started, ended) {
			return ended
		}
		select {
		case <-changed:
		case <-deadline.C:
			t.Fatalf("waited 30s for %s: %d spans started, %d ended", what, len(started), len(ended))
		}
	}
}

// all waits until every span started has ended (every call made so far
// has a span that started before the call was answered) and returns them.
func (s *spanSink) all(t *testing.T) []sdktrace.ReadOnlySpan {
	t.Helper()
	return s.wait(t, "every span to end", func(started []string, ended []sdktrace.ReadOnlySpan) bool {
		return len(ended) == len(started)
	})
}

// spanAttrs returns the attributes of a span whose key starts with
// "pseudonymizer.", as text.
func spanAttrs(sp sdktrace.ReadOnlySpan) map[string]string {
	out := map[string]string{}
	for _, kv := range sp.Attributes() {
		if strings.HasPrefix(string(kv.Key), "pseudonymizer.") {
			out[string(kv.Key)] = kv.Value.String()
		}
	}
	return out
}

func attrValue(sp sdktrace.ReadOnlySpan, key attribute.Key) (attribute.Value, bool) {
	for _, kv := range sp.Attributes() {
		if kv.Key == key {
			return kv.Value, true
		}
	}
	return attribute.Value{}, false
}

// dumpSpans is everything the spans hold, raw (strings as they are) and
// as JSON: what a leak check searches.
func dumpSpans(t *testing.T, spans []sdktrace.ReadOnlySpan) string {
	t.Helper()
	var b strings.Builder
	kvs := func(what string, attrs []attribute.KeyValue) {
		for _, kv := range attrs {
			fmt.Fprintf(&b, "%s %s=%s\n", what, kv.Key, kv.Value.String())
		}
	}
	for _, sp := range spans {
		fmt.Fprintf(&b, "span %s (%s) status %s %q\n", sp.Name(), sp.SpanKind(), sp.Status().Code, sp.Status().Description)
		kvs("attr", sp.Attributes())
		for _, ev := range sp.Events() {
			fmt.Fprintf(&b, "event %s\n", ev.Name)
			kvs("event attr", ev.Attributes)
		}
		for _, l := range sp.Links() {
			kvs("link attr", l.Attributes)
		}
		kvs("resource", sp.Resource().Attributes())
		fmt.Fprintf(&b, "scope %s %s\n", sp.InstrumentationScope().Name, sp.InstrumentationScope().Version)
	}
	j, err := json.Marshal(tracetest.SpanStubsFromReadOnlySpans(spans))
	if err != nil {
		t.Fatal(err)
	}
	b.Write(j)
	return b.String()
}

// spanOf returns the only span of a method among spans, failing the test
// otherwise.
func spanOf(t *testing.T, spans []sdktrace.ReadOnlySpan, method string) sdktrace.ReadOnlySpan {
	t.Helper()
	var found []sdktrace.ReadOnlySpan
	for _, sp := range spans {
		if sp.Name() == "pseudonymizer.v1.Pseudonymizer/"+method {
			found = append(found, sp)
		}
	}
	if len(found) != 1 {
		t.Fatalf("%d spans of %s; want 1", len(found), method)
	}
	return found[0]
}

// wantSpan checks a call's span: server kind, its pseudonymizer.*
// attributes exactly, and its status.
func wantSpan(t *testing.T, what string, sp sdktrace.ReadOnlySpan, attrs map[string]string, failed bool) {
	t.Helper()
	if sp.SpanKind() != trace.SpanKindServer {
		t.Errorf("%s: span kind %v", what, sp.SpanKind())
	}
	got := spanAttrs(sp)
	if fmt.Sprint(got) != fmt.Sprint(attrs) {
		t.Errorf("%s: attributes\n %v\nwant\n %v", what, got, attrs)
	}
	st := sp.Status()
	switch {
	case failed && (st.Code != otelcodes.Error || st.Description != "call failed"):
		t.Errorf("%s: status %v %q; want Error %q", what, st.Code, st.Description, "call failed")
	case !failed && st.Code == otelcodes.Error:
		t.Errorf("%s: status %v %q; want not Error", what, st.Code, st.Description)
	}
}

// TestSpans checks the span of each kind of call: its pseudonymizer.*
// attributes from the audit record, its status, and that health checks
// get none.
func TestSpans(t *testing.T) {
	sink := newSpanSink()
	e := newEnv(t, func(c *grpcserver.Config) { c.TracerProvider = sink.provider() })

	// Stored pseudonyms to identify and convert, made before the spans
	// are looked at.
	stored := e.atRest("rx_v1", e.pseudonymize("prescriber", "rx_v1", randomID(t), randomID(t))...)
	before := len(sink.all(t))

	// Pseudonymize: 2 items, one of them not a point.
	good, _ := identifyItems(t, e.inTransit("rx_v1", stored[0]))
	_, err := e.client.Pseudonymize(as("prescriber"), &pb.PseudonymizeRequest{Domain: "rx_v1", Items: []*pb.PseudonymizeItem{
		{Id: "a", Blinded: good[0].GetBlinded()}, {Id: "b", Blinded: make([]byte, 31)},
	}})
	if err != nil {
		t.Fatal(err)
	}
	// Identify: 2 items, one expired.
	items, _ := identifyItems(t, e.inTransit("rx_v1", stored[0]), e.inTransit("rx_v1", stored[1], owner.IssuedAt(time.Now().Add(-time.Hour))))
	if _, err := e.client.Identify(as("pharmacy"), &pb.IdentifyRequest{Domain: "rx_v1", Items: items}); err != nil {
		t.Fatal(err)
	}
	// ConvertTo: 1 item.
	citems, _ := convertItems(t, e.inTransit("rx_v1", stored[0]))
	if _, err := e.client.ConvertTo(as("rx-owner"), &pb.ConvertToRequest{FromDomain: "rx_v1", ToDomain: "rx_v2", Items: citems}); err != nil {
		t.Fatal(err)
	}
	// GetDomain.
	if _, err := e.client.GetDomain(as("pharmacy"), &pb.GetDomainRequest{Name: "rx_v2"}); err != nil {
		t.Fatal(err)
	}
	// A stream of two chunks.
	s, err := e.client.IdentifyStream(as("pharmacy"))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range stored {
		chunk, _ := identifyItems(t, e.inTransit("rx_v1", p))
		if err := s.Send(&pb.IdentifyStreamRequest{Request: &pb.IdentifyRequest{Domain: "rx_v1", Items: chunk}}); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Recv(); err != nil {
			t.Fatal(err)
		}
	}
	_ = s.CloseSend()
	if _, err := s.Recv(); err != io.EOF {
		t.Fatal(err)
	}
	// Health checks: no span.
	if _, err := healthpb.NewHealthClient(e.conn).Check(context.Background(), &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatal(err)
	}
	spans := sink.all(t)[before:]
	for _, sp := range spans {
		if strings.Contains(sp.Name(), "grpc.health") {
			t.Errorf("a health check has a span: %s", sp.Name())
		}
	}
	wantSpan(t, "Pseudonymize", spanOf(t, spans, "Pseudonymize"), map[string]string{
		"pseudonymizer.operation": "pseudonymize", "pseudonymizer.domain": "rx_v1",
		"pseudonymizer.items": "2", "pseudonymizer.failed_items": "1", "pseudonymizer.outcome": "ok",
	}, false)
	wantSpan(t, "Identify", spanOf(t, spans, "Identify"), map[string]string{
		"pseudonymizer.operation": "identify", "pseudonymizer.domain": "rx_v1",
		"pseudonymizer.items": "2", "pseudonymizer.failed_items": "1", "pseudonymizer.outcome": "ok",
	}, false)
	wantSpan(t, "ConvertTo", spanOf(t, spans, "ConvertTo"), map[string]string{
		"pseudonymizer.operation": "convert", "pseudonymizer.domain": "rx_v1", "pseudonymizer.to_domain": "rx_v2",
		"pseudonymizer.items": "1", "pseudonymizer.failed_items": "0", "pseudonymizer.outcome": "ok",
	}, false)
	wantSpan(t, "GetDomain", spanOf(t, spans, "GetDomain"), map[string]string{
		"pseudonymizer.operation": "get_domain", "pseudonymizer.domain": "rx_v2",
		"pseudonymizer.items": "0", "pseudonymizer.failed_items": "0", "pseudonymizer.outcome": "ok",
	}, false)
	wantSpan(t, "IdentifyStream", spanOf(t, spans, "IdentifyStream"), map[string]string{
		"pseudonymizer.operation": "identify", "pseudonymizer.domain": "rx_v1",
		"pseudonymizer.items": "2", "pseudonymizer.failed_items": "0", "pseudonymizer.outcome": "ok",
	}, false)
	if v, ok := attrValue(spanOf(t, spans, "Identify"), "rpc.method"); !ok || v.AsString() != "pseudonymizer.v1.Pseudonymizer/Identify" {
		t.Errorf("otelgrpc's rpc.method = %v", v.String())
	}
	if len(spans) != 5 {
		t.Errorf("%d spans; want 5", len(spans))
	}
}

// TestSpansOfFailedCalls checks the spans of calls that fail: the outcome
// is the reason, the status Error with a fixed description, and a domain
// that does not exist is never named.
func TestSpansOfFailedCalls(t *testing.T) {
	sink := newSpanSink()
	e := newEnv(t, func(c *grpcserver.Config) {
		c.TracerProvider = sink.provider()
		c.MaxBatch, c.StreamIdleTimeout = 2, 100*time.Millisecond
	})
	before := len(sink.all(t))

	const unknown = "no-such-domain-7f3a"
	for _, c := range []struct {
		method string
		call   func() error
		attrs  map[string]string
	}{
		{"Pseudonymize", func() error {
			_, err := e.client.Pseudonymize(as("prescriber"), &pb.PseudonymizeRequest{Domain: unknown})
			return err
		}, map[string]string{"pseudonymizer.operation": "pseudonymize", "pseudonymizer.items": "0",
			"pseudonymizer.failed_items": "0", "pseudonymizer.outcome": "ERROR_REASON_OPERATION_NOT_ALLOWED"}},
		{"Identify", func() error { // an owner may not identify
			_, err := e.client.Identify(as("rx-owner"), &pb.IdentifyRequest{Domain: "rx_v1"})
			return err
		}, map[string]string{"pseudonymizer.operation": "identify", "pseudonymizer.domain": "rx_v1", "pseudonymizer.items": "0",
			"pseudonymizer.failed_items": "0", "pseudonymizer.outcome": "ERROR_REASON_OPERATION_NOT_ALLOWED"}},
		{"ConvertTo", func() error { // to a target the policy names but that does not exist
			_, err := e.client.ConvertTo(as("rx-owner"), &pb.ConvertToRequest{FromDomain: "rx_v1", ToDomain: "ghost_v1"})
			return err
		}, map[string]string{"pseudonymizer.operation": "convert", "pseudonymizer.domain": "rx_v1", "pseudonymizer.items": "0",
			"pseudonymizer.failed_items": "0", "pseudonymizer.outcome": "ERROR_REASON_UNKNOWN_DOMAIN"}},
		{"GetDomain", func() error { // a caller no policy names
			_, err := e.client.GetDomain(as("nobody"), &pb.GetDomainRequest{Name: "rx_v1"})
			return err
		}, map[string]string{"pseudonymizer.operation": "get_domain", "pseudonymizer.domain": "rx_v1", "pseudonymizer.items": "0",
			"pseudonymizer.failed_items": "0", "pseudonymizer.outcome": "ERROR_REASON_OPERATION_NOT_ALLOWED"}},
		{"PseudonymizeStream", func() error { // a chunk over the batch limit
			s, err := e.client.PseudonymizeStream(as("prescriber"))
			if err != nil {
				return err
			}
			items := make([]*pb.PseudonymizeItem, 3)
			for i := range items {
				items[i] = &pb.PseudonymizeItem{Id: "x"}
			}
			if err := s.Send(&pb.PseudonymizeStreamRequest{Request: &pb.PseudonymizeRequest{Domain: "rx_v1", Items: items}}); err != nil {
				return err
			}
			_, err = s.Recv()
			return err
		}, map[string]string{"pseudonymizer.operation": "pseudonymize", "pseudonymizer.items": "0",
			"pseudonymizer.failed_items": "0", "pseudonymizer.outcome": "ERROR_REASON_BATCH_TOO_LARGE"}},
		{"IdentifyStream", func() error { // idle: DEADLINE_EXCEEDED, whose message is not the span's
			s, err := e.client.IdentifyStream(as("pharmacy"))
			if err != nil {
				return err
			}
			_, err = s.Recv()
			return err
		}, map[string]string{"pseudonymizer.operation": "identify", "pseudonymizer.items": "0",
			"pseudonymizer.failed_items": "0", "pseudonymizer.outcome": "DeadlineExceeded"}},
	} {
		if err := c.call(); err == nil {
			t.Fatalf("%s succeeded", c.method)
		}
		spans := sink.wait(t, "the span of "+c.method, func(started []string, ended []sdktrace.ReadOnlySpan) bool {
			return len(ended) == len(started) && len(ended) > before
		})[before:]
		before += len(spans)
		if len(spans) != 1 {
			t.Fatalf("%s: %d spans", c.method, len(spans))
		}
		wantSpan(t, c.method, spanOf(t, spans, c.method), c.attrs, true)
		if strings.Contains(dumpSpans(t, spans), unknown) {
			t.Errorf("%s: the span names a domain that does not exist", c.method)
		}
	}
}

// TestNoTokenInSpans checks that the spans of calls with bearer tokens,
// accepted or refused, hold no part of the tokens.
func TestNoTokenInSpans(t *testing.T) {
	sink := newSpanSink()
	js := startJWTServer(t, func(c *grpcserver.Config) { c.TracerProvider = sink.provider() })
	conn := js.dialNoCert(t)
	now := time.Now()
	valid := js.iss.token(t, jwt.Claims{
		Issuer: "https://idp.test.example", Subject: jwtUser, Audience: jwt.Audience{"pseudonymizer"},
		IssuedAt: jwt.NewNumericDate(now), Expiry: jwt.NewNumericDate(now.Add(5 * time.Minute)),
	})
	expired := js.iss.token(t, jwt.Claims{
		Issuer: "https://idp.test.example", Subject: jwtUser, Audience: jwt.Audience{"pseudonymizer"},
		IssuedAt: jwt.NewNumericDate(now.Add(-time.Hour)), Expiry: jwt.NewNumericDate(now.Add(-time.Minute)),
	})
	sec := &secrets{}
	for _, tok := range []string{valid, expired} {
		sec.addText("bearer token", tok)
		for _, part := range strings.Split(tok, ".") {
			sec.addText("bearer token part", part)
		}
		ctx := metadata.AppendToOutgoingContext(ctxTimeout(t), "authorization", "Bearer "+tok)
		_, _ = allowedOps(t, ctx, conn)
	}
	spans := sink.wait(t, "two spans", func(started []string, ended []sdktrace.ReadOnlySpan) bool {
		return len(started) >= 2 && len(ended) == len(started)
	})
	if got := []string{spanAttrs(spans[0])["pseudonymizer.outcome"], spanAttrs(spans[1])["pseudonymizer.outcome"]}; !slices.Contains(got, "ok") || !slices.Contains(got, "Unauthenticated") {
		t.Errorf("outcomes %v; want ok and Unauthenticated", got)
	}
	if what, found := sec.find(dumpSpans(t, spans)); found {
		t.Errorf("the spans contain a %s", what)
	}
}

// TestSpansOfRESTCalls checks that calls through the REST/JSON gateway get
// the same spans: its in-process server is built with the same options
// and interceptors.
func TestSpansOfRESTCalls(t *testing.T) {
	sink := newSpanSink()
	e := newEnv(t, func(c *grpcserver.Config) {
		c.TracerProvider = sink.provider()
		c.REST = &grpcserver.RESTConfig{}
	})
	base := restGateway(t, e.srv, "http")
	before := len(sink.all(t))
	id := randomID(t)
	good, _, err := client.Blind(id)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := protojson.Marshal(&pb.PseudonymizeRequest{Items: []*pb.PseudonymizeItem{{Id: "item-a7", Blinded: good}, {Id: "b", Blinded: make([]byte, 32)}}})
	// The caller's trace context (W3C traceparent) is the parent of the
	// HTTP server span (otelhttp), itself the parent of the call's span.
	const traceID, callerSpan = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	r := restCall(t, &http.Client{}, "POST", base+"/pseudo/v1/domains/rx_v1/pseudonymize", map[string]string{
		auth.DevPrincipalHeader: "prescriber", "traceparent": "00-" + traceID + "-" + callerSpan + "-01",
	}, b)
	if r.code != 200 {
		t.Fatalf("HTTP %d %s", r.code, r.body)
	}
	var resp pb.PseudonymizeResponse
	if err := protojson.Unmarshal(r.body, &resp); err != nil {
		t.Fatal(err)
	}
	spans := sink.wait(t, "the REST call's spans", func(started []string, ended []sdktrace.ReadOnlySpan) bool {
		return len(ended) == len(started) && len(ended) >= before+2
	})[before:]
	call := spanOf(t, spans, "Pseudonymize")
	wantSpan(t, "REST Pseudonymize", call, map[string]string{
		"pseudonymizer.operation": "pseudonymize", "pseudonymizer.domain": "rx_v1",
		"pseudonymizer.items": "2", "pseudonymizer.failed_items": "1", "pseudonymizer.outcome": "ok",
	}, false)
	var httpSpan sdktrace.ReadOnlySpan
	for _, sp := range spans {
		if sp.Name() == "REST POST" {
			httpSpan = sp
		}
	}
	if httpSpan == nil || httpSpan.SpanKind() != trace.SpanKindServer {
		t.Fatalf("no HTTP server span:\n%s", dumpSpans(t, spans))
	}
	if httpSpan.SpanContext().TraceID().String() != traceID || httpSpan.Parent().SpanID().String() != callerSpan {
		t.Errorf("the HTTP span is not the child of the caller's: trace %s parent %s", httpSpan.SpanContext().TraceID(), httpSpan.Parent().SpanID())
	}
	if call.Parent().SpanID() != httpSpan.SpanContext().SpanID() || call.SpanContext().TraceID() != httpSpan.SpanContext().TraceID() {
		t.Errorf("the call's span is not the child of the HTTP span")
	}
	sec := &secrets{}
	sec.add("identifier", id)
	sec.add("blinded point", good)
	sec.add("item id", []byte("item-a7"))
	sec.add("evaluated point", resp.GetResults()[0].GetEvaluated().GetPoint())
	sec.add("transitInfo", []byte(resp.GetResults()[0].GetEvaluated().GetTransitInfo()))
	if what, found := sec.find(dumpSpans(t, spans)); found {
		t.Errorf("the span contains a %s", what)
	}
}
