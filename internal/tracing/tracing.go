// Package tracing sets up OpenTelemetry tracing for the service from the
// standard OTEL_* environment variables.
//
// Tracing is off by default: Setup installs an exporter only when an OTLP
// endpoint is configured (OTEL_EXPORTER_OTLP_ENDPOINT or
// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) or OTEL_TRACES_EXPORTER is "otlp";
// OTEL_TRACES_EXPORTER=none or OTEL_SDK_DISABLED=true turn it off whatever
// else is set. The transport is OTLP over HTTP (protobuf, or JSON) or gRPC,
// chosen by OTEL_EXPORTER_OTLP_TRACES_PROTOCOL or
// OTEL_EXPORTER_OTLP_PROTOCOL; the specification's default, http/protobuf,
// applies when neither is set. The exporters read the rest of their
// configuration themselves (OTEL_EXPORTER_OTLP_* endpoint, headers, TLS
// files, timeout, compression), and the SDK reads OTEL_BSP_* (the batch
// span processor), OTEL_TRACES_SAMPLER*, OTEL_SPAN_*_LIMIT,
// OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES.
//
// What goes into spans is decided where they are made (internal/grpcserver):
// never a point, an identifier, an item id, a transitInfo, a token or an
// error message.
package tracing

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// The OTLP transports, as OTEL_EXPORTER_OTLP_PROTOCOL names them.
const (
	// ProtocolGRPC is OTLP over gRPC (otlptracegrpc).
	ProtocolGRPC = "grpc"
	// ProtocolHTTPProtobuf is OTLP over HTTP with protobuf payloads
	// (otlptracehttp), the default.
	ProtocolHTTPProtobuf = "http/protobuf"
	// ProtocolHTTPJSON is OTLP over HTTP with JSON payloads (otlptracehttp).
	ProtocolHTTPJSON = "http/json"
)

// Config is what the environment asks of tracing.
type Config struct {
	// Enabled is true when spans are to be exported.
	Enabled bool
	// Protocol is the OTLP transport when Enabled: ProtocolGRPC,
	// ProtocolHTTPProtobuf or ProtocolHTTPJSON.
	Protocol string
}

// String describes c for a log record: "off", or "otlp/" and the
// protocol. It never holds an endpoint or a header (headers may hold
// credentials).
func (c Config) String() string {
	if !c.Enabled {
		return "off"
	}
	return "otlp/" + c.Protocol
}

// FromEnv reads the Config from the environment through getenv
// (os.Getenv in the service). It fails on an exporter or a protocol it does
// not support.
func FromEnv(getenv func(string) string) (Config, error) {
	if strings.EqualFold(strings.TrimSpace(getenv("OTEL_SDK_DISABLED")), "true") {
		return Config{}, nil
	}
	otlp := false
	for e := range strings.SplitSeq(getenv("OTEL_TRACES_EXPORTER"), ",") {
		switch e = strings.ToLower(strings.TrimSpace(e)); e {
		case "":
		case "none":
			return Config{}, nil
		case "otlp":
			otlp = true
		default:
			return Config{}, fmt.Errorf("tracing: OTEL_TRACES_EXPORTER=%q is not supported: otlp or none", e)
		}
	}
	endpoint := getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != "" || getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != ""
	if !otlp && !endpoint {
		return Config{}, nil
	}
	proto := strings.TrimSpace(getenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"))
	if proto == "" {
		proto = strings.TrimSpace(getenv("OTEL_EXPORTER_OTLP_PROTOCOL"))
	}
	switch proto {
	case "":
		proto = ProtocolHTTPProtobuf
	case ProtocolGRPC, ProtocolHTTPProtobuf, ProtocolHTTPJSON:
	default:
		return Config{}, fmt.Errorf("tracing: OTLP protocol %q is not supported: grpc, http/protobuf or http/json", proto)
	}
	return Config{Enabled: true, Protocol: proto}, nil
}

// Setup configures tracing from the environment (FromEnv). When tracing
// is off it installs nothing and returns a shutdown that does nothing.
// Otherwise it sets the global tracer provider (an OTLP exporter behind a
// batch span processor, the resource service.name and service.version,
// which OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES override) and the
// global propagator (W3C trace context and baggage). Call shutdown when
// the process ends: it exports the spans still queued, within its context.
//
// The exporter connects lazily: an unreachable collector never fails Setup,
// only its exports (see LogErrors).
func Setup(ctx context.Context, serviceName, version string) (shutdown func(context.Context) error, err error) {
	cfg, err := FromEnv(os.Getenv)
	if err != nil {
		return nil, err
	}
	if !cfg.Enabled {
		return func(context.Context) error { return nil }, nil
	}
	var exp sdktrace.SpanExporter
	if cfg.Protocol == ProtocolGRPC {
		exp, err = otlptracegrpc.New(ctx)
	} else {
		exp, err = otlptracehttp.New(ctx) // it reads the encoding from the environment
	}
	if err != nil {
		return nil, fmt.Errorf("tracing: OTLP exporter: %v", err)
	}
	// Later options override earlier ones: the environment wins over the
	// names given here.
	res, err := resource.New(ctx,
		resource.WithTelemetrySDK(),
		resource.WithAttributes(
			attribute.String("service.name", serviceName),
			attribute.String("service.version", version),
		),
		resource.WithFromEnv(),
	)
	if err != nil {
		_ = exp.Shutdown(ctx)
		return nil, fmt.Errorf("tracing: resource: %v", err)
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
	otel.SetTracerProvider(tp)
	otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}))
	return tp.Shutdown, nil
}

// LogErrors sends the errors the OpenTelemetry SDK reports (a failed
// export, a dropped span) to log, at level Warn, instead of the standard
// library's logger. Their text is the exporters' (the collector's address,
// a status), which does not hold the exporter's headers.
func LogErrors(log *slog.Logger) {
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) {
		log.Warn("tracing: OpenTelemetry error", "err", err)
	}))
}
