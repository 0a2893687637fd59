package grpcserver

import (
	"context"
	"strings"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc/filters"
	"go.opentelemetry.io/otel/attribute"
	otelcodes "go.opentelemetry.io/otel/codes"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	reflectionv1 "google.golang.org/grpc/reflection/grpc_reflection_v1"
	reflectionv1alpha "google.golang.org/grpc/reflection/grpc_reflection_v1alpha"
	"google.golang.org/grpc/stats"
	"google.golang.org/grpc/status"

	"github.com/ehealth-pseudo/pseudonymizer/internal/audit"
	"github.com/ehealth-pseudo/pseudonymizer/internal/rpcstatus"
	pb "github.com/ehealth-pseudo/pseudonymizer/proto/pseudonymizer/v1"
)

// Tracing (OpenTelemetry).
//
// Each call of pseudonymizer.v1 (and of server reflection) gets a server
// span, made by otelgrpc's stats handler (tracingOption) with the tracer
// provider of Config.TracerProvider (cmd/pseudonymizer passes the one that
// internal/tracing.Setup installs when tracing is on). When it is nil,
// tracing is off and nothing of it is installed: no stats handler, no
// interceptor, no HTTP instrumentation, so an untraced call pays nothing.
// The
// caller's W3C trace context, when it sends one, is the span's parent.
// Health checks get no span (probes would flood the traces), nor do
// unknown methods, whose names are whatever the caller sent. Calls through
// the REST/JSON gateway get the same spans from its in-process server,
// built with the same options and interceptors; since the gateway forwards
// no HTTP header, they start new traces.
//
// What a span holds:
//
//   - from otelgrpc: its name and rpc.method (the full method name),
//     rpc.system.name, server.address and server.port (the listener's own
//     address), rpc.response.status_code (the code's name). otelgrpc records
//     no metadata, no message and no message event in this version, and
//     none is asked for: even WithMessageEvents would only add sizes, which
//     the item counts below already tell, so the spans stay without events.
//     Its metrics go to a no-op meter provider: the service's metrics are
//     the Prometheus ones.
//   - from spanAnnotator, at the end of the call, what the audit record
//     (internal/audit) holds, which is made to be logged: the attributes
//     below, with domain names that exist only, counts and fixed names.
//   - for a failed call, the status Error with the fixed description
//     failedCall: never the status message (statusOnly).
//
// Never a point, an identifier, an item id, a transitInfo, a token, a
// principal, a message or an error message.

// The attributes of a pseudonymizer.v1 call's span.
const (
	// AttrDomain is the domain the call used (from_domain for ConvertTo):
	// set only when the domain exists.
	AttrDomain = attribute.Key("pseudonymizer.domain")
	// AttrToDomain is the to_domain of ConvertTo, when it exists.
	AttrToDomain = attribute.Key("pseudonymizer.to_domain")
	// AttrDomains lists every domain a stream used, when it used more
	// than AttrDomain and AttrToDomain tell (at most 16).
	AttrDomains = attribute.Key("pseudonymizer.domains")
	// AttrOperation is pseudonymize, identify, convert or get_domain
	// (streams included: the span name tells a stream).
	AttrOperation = attribute.Key("pseudonymizer.operation")
	// AttrItems is the number of items evaluated (a stream's total).
	AttrItems = attribute.Key("pseudonymizer.items")
	// AttrFailedItems is the number of items that failed.
	AttrFailedItems = attribute.Key("pseudonymizer.failed_items")
	// AttrOutcome is "ok", or the ErrorReason name of a failed call
	// (ERROR_REASON_…), or, for a failure without one (or with
	// ERROR_REASON_UNSPECIFIED), the gRPC code's name as the audit record
	// writes it (Unauthenticated, Canceled…).
	AttrOutcome = attribute.Key("pseudonymizer.outcome")
)

// failedCall is the description of the span status of every failed call:
// fixed, since a status message could quote a request (the library's
// messages included). The outcome attribute says what failed.
const failedCall = "call failed"

// operations maps the methods of pseudonymizer.v1 to AttrOperation.
var operations = map[string]string{
	"Pseudonymize":       "pseudonymize",
	"PseudonymizeStream": "pseudonymize",
	"Identify":           "identify",
	"IdentifyStream":     "identify",
	"ConvertTo":          "convert",
	"ConvertToStream":    "convert",
	"GetDomain":          "get_domain",
}

// tracedMethods are the full names of the methods that get a span.
var tracedMethods = func() map[string]bool {
	m := map[string]bool{}
	for _, sd := range []grpc.ServiceDesc{pb.Pseudonymizer_ServiceDesc, reflectionv1.ServerReflection_ServiceDesc, reflectionv1alpha.ServerReflection_ServiceDesc} {
		for _, md := range sd.Methods {
			m["/"+sd.ServiceName+"/"+md.MethodName] = true
		}
		for _, st := range sd.Streams {
			m["/"+sd.ServiceName+"/"+st.StreamName] = true
		}
	}
	return m
}()

// tracingOption is the server option that makes the calls' spans, with
// tp. Every grpc.Server built with it traces the same way; spanAnnotator
// completes its spans.
func tracingOption(tp trace.TracerProvider) grpc.ServerOption {
	return grpc.StatsHandler(statusOnly{otelgrpc.NewServerHandler(
		otelgrpc.WithTracerProvider(tp),
		otelgrpc.WithMeterProvider(metricnoop.NewMeterProvider()),
		otelgrpc.WithPropagators(traceContext), // rest.go
		otelgrpc.WithFilter(filters.All(
			filters.Not(filters.HealthCheck()),
			func(info *stats.RPCTagInfo) bool { return tracedMethods[info.FullMethodName] },
		)),
	)})
}

// statusOnly passes the events of a call to otelgrpc's stats handler, but
// the error of a failed call with its code only: otelgrpc copies the
// status message into the span status of some codes (INTERNAL,
// UNAVAILABLE…), and a message is no span's business. It sets the span
// status Error, with the fixed description, for every failed call (otelgrpc
// leaves client errors Unset).
type statusOnly struct{ stats.Handler }

// HandleRPC implements stats.Handler.
func (h statusOnly) HandleRPC(ctx context.Context, s stats.RPCStats) {
	if end, ok := s.(*stats.End); ok && end.Error != nil {
		trace.SpanFromContext(ctx).SetStatus(otelcodes.Error, failedCall)
		e := *end
		e.Error = status.Error(status.Code(end.Error), failedCall)
		s = &e
	}
	h.Handler.HandleRPC(ctx, s)
}

// spanAnnotator is the interceptor that sets the pseudonymizer.* attributes
// of the span of a pseudonymizer.v1 call when the call ends, from the
// call's audit record (other calls pass through): it goes right inside the
// audit interceptor, which gives it the record, and outside the recovery
// interceptor, so that it sees the error the caller gets, a panic's
// included.
type spanAnnotator struct {
	// on: tracing is on (Config.TracerProvider is set); off, the
	// interceptors are nil and left out of the chain.
	on bool
}

func (a spanAnnotator) unary() grpc.UnaryServerInterceptor {
	if !a.on {
		return nil
	}
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		resp, err := handler(ctx, req)
		annotateSpan(ctx, info.FullMethod, err)
		return resp, err
	}
}

func (a spanAnnotator) stream() grpc.StreamServerInterceptor {
	if !a.on {
		return nil
	}
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		err := handler(srv, ss)
		annotateSpan(ss.Context(), info.FullMethod, err)
		return err
	}
}

// annotateSpan sets the attributes of the span of ctx for a call of method
// that ended with err.
func annotateSpan(ctx context.Context, method string, err error) {
	span := trace.SpanFromContext(ctx)
	if !span.IsRecording() || !isOurs(method) {
		return
	}
	rec := audit.FromContext(ctx).Snapshot()
	rec.Method = method
	op := operations[rec.Operation()]
	attrs := make([]attribute.KeyValue, 0, 7)
	if op != "" {
		attrs = append(attrs, AttrOperation.String(op))
	}
	// The record lists the domains in the order the handler used them:
	// ConvertTo's from_domain, then its to_domain.
	shown := 1
	if len(rec.Domains) > 0 {
		attrs = append(attrs, AttrDomain.String(rec.Domains[0]))
	}
	if op == "convert" {
		shown = 2
		if len(rec.Domains) > 1 {
			attrs = append(attrs, AttrToDomain.String(rec.Domains[1]))
		}
	}
	if len(rec.Domains) > shown {
		attrs = append(attrs, AttrDomains.StringSlice(rec.Domains))
	}
	attrs = append(attrs,
		AttrItems.Int(rec.Items),
		AttrFailedItems.Int(rec.FailedItems()),
		AttrOutcome.String(outcome(err)),
	)
	span.SetAttributes(attrs...)
}

// outcome is AttrOutcome for a call that ended with err.
func outcome(err error) string {
	st := status.Convert(err)
	if st.Code() == codes.OK {
		return "ok"
	}
	if r := rpcstatus.ReasonOf(st); r != "" && r != pb.ErrorReason_ERROR_REASON_UNSPECIFIED.String() {
		return r
	}
	return st.Code().String()
}

// isOurs reports whether a full method name is one of pseudonymizer.v1.
func isOurs(method string) bool {
	return strings.HasPrefix(method, "/"+pb.Pseudonymizer_ServiceDesc.ServiceName+"/")
}
