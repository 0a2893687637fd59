package tracing_test

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel"

	"github.com/ehealth-pseudo/pseudonymizer/internal/otlptest"
	"github.com/ehealth-pseudo/pseudonymizer/internal/tracing"
)

// clearEnv empties every OTEL_* variable of the test's environment, then
// sets kv (pairs of name and value), for the test's duration; it restores
// the global tracer provider and propagator when the test ends.
func clearEnv(t *testing.T, kv ...string) {
	t.Helper()
	for _, e := range os.Environ() {
		if k, _, _ := strings.Cut(e, "="); strings.HasPrefix(k, "OTEL_") {
			t.Setenv(k, "")
		}
	}
	for i := 0; i+1 < len(kv); i += 2 {
		t.Setenv(kv[i], kv[i+1])
	}
	tp, prop := otel.GetTracerProvider(), otel.GetTextMapPropagator()
	t.Cleanup(func() {
		otel.SetTracerProvider(tp)
		otel.SetTextMapPropagator(prop)
	})
}

func TestFromEnv(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  map[string]string
		want string // Config.String(), or "error"
	}{
		{"nothing set", nil, "off"},
		{"endpoint", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, "otlp/http/protobuf"},
		{"traces endpoint", map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"}, "otlp/http/protobuf"},
		{"exporter otlp without endpoint", map[string]string{"OTEL_TRACES_EXPORTER": "otlp"}, "otlp/http/protobuf"},
		{"grpc", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, "otlp/grpc"},
		{"traces protocol wins", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317",
			"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc"}, "otlp/grpc"},
		{"http/json", map[string]string{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}, "otlp/http/json"},
		{"protocol alone", map[string]string{"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, "off"},
		{"none", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_TRACES_EXPORTER": "none"}, "off"},
		{"none in a list", map[string]string{"OTEL_TRACES_EXPORTER": "otlp, none"}, "off"},
		{"sdk disabled", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "TRUE"}, "off"},
		{"sdk disabled false", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "false"}, "otlp/http/protobuf"},
		{"unsupported exporter", map[string]string{"OTEL_TRACES_EXPORTER": "zipkin"}, "error"},
		{"unsupported exporter disabled", map[string]string{"OTEL_TRACES_EXPORTER": "zipkin", "OTEL_SDK_DISABLED": "true"}, "off"},
		{"unsupported protocol", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_EXPORTER_OTLP_PROTOCOL": "thrift"}, "error"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := tracing.FromEnv(func(k string) string { return tc.env[k] })
			got := cfg.String()
			if err != nil {
				got = "error"
			}
			if got != tc.want {
				t.Fatalf("FromEnv: %q (%v); want %q", got, err, tc.want)
			}
		})
	}
}

// probe makes one span through the global provider, then shuts tracing
// down, which exports what is queued.
func probe(t *testing.T, shutdown func(context.Context) error) {
	t.Helper()
	_, span := otel.Tracer("tracing_test").Start(context.Background(), "probe")
	span.End()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := shutdown(ctx); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
}

func setup(t *testing.T) func(context.Context) error {
	t.Helper()
	shutdown, err := tracing.Setup(context.Background(), "pseudonymizer-test", "v1.2.3")
	if err != nil {
		t.Fatalf("Setup: %v", err)
	}
	return shutdown
}

// off checks that Setup installed nothing: the global provider is the one
// of before, and a collector that the environment may name receives
// nothing, even after shutdown.
func off(t *testing.T, c *otlptest.Collector) {
	t.Helper()
	tp := otel.GetTracerProvider()
	shutdown := setup(t)
	if otel.GetTracerProvider() != tp {
		t.Fatal("Setup changed the global tracer provider while tracing is off")
	}
	probe(t, shutdown)
	if c != nil {
		if n := len(c.Exports()); n != 0 {
			t.Fatalf("the collector received %d exports while tracing is off", n)
		}
	}
}

func TestSetupOffByDefault(t *testing.T) {
	clearEnv(t)
	off(t, nil)
}

func TestSetupNone(t *testing.T) {
	c := otlptest.StartGRPC(t)
	clearEnv(t, "OTEL_EXPORTER_OTLP_ENDPOINT", c.Endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL", "grpc", "OTEL_TRACES_EXPORTER", "none")
	off(t, c)
}

func TestSetupSDKDisabled(t *testing.T) {
	c := otlptest.StartGRPC(t)
	clearEnv(t, "OTEL_EXPORTER_OTLP_ENDPOINT", c.Endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL", "grpc", "OTEL_SDK_DISABLED", "true")
	off(t, c)
}

func TestSetupRefusesUnsupported(t *testing.T) {
	clearEnv(t, "OTEL_TRACES_EXPORTER", "console")
	if _, err := tracing.Setup(context.Background(), "pseudonymizer-test", "v1"); err == nil {
		t.Fatal("OTEL_TRACES_EXPORTER=console accepted")
	}
}

// exported checks the probe span and its resource as a collector received
// them.
func exported(t *testing.T, c *otlptest.Collector, service string) otlptest.Export {
	t.Helper()
	spans := c.WaitSpans(t, 30*time.Second, "the probe span", func(s []otlptest.Span) bool { return len(s) > 0 })
	if len(spans) != 1 || spans[0].GetName() != "probe" {
		t.Fatalf("spans received: %v", spans)
	}
	for key, want := range map[string]string{"service.name": service, "service.version": "v1.2.3", "deployment.environment.name": "test"} {
		if v, ok := spans[0].ResourceAttr(key); !ok || v.GetStringValue() != want {
			t.Errorf("resource %s = %v; want %q", key, v, want)
		}
	}
	return c.Exports()[0]
}

func TestSetupGRPC(t *testing.T) {
	c := otlptest.StartGRPC(t)
	clearEnv(t, "OTEL_EXPORTER_OTLP_ENDPOINT", c.Endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL", "grpc",
		"OTEL_EXPORTER_OTLP_HEADERS", "x-collector-key=k1",
		"OTEL_RESOURCE_ATTRIBUTES", "deployment.environment.name=test")
	shutdown := setup(t)
	// The W3C propagators are installed.
	if f := otel.GetTextMapPropagator().Fields(); !strings.Contains(strings.Join(f, ","), "traceparent") || !strings.Contains(strings.Join(f, ","), "baggage") {
		t.Errorf("propagator fields %v; want traceparent and baggage", f)
	}
	probe(t, shutdown)
	e := exported(t, c, "pseudonymizer-test")
	if got := e.Header["x-collector-key"]; len(got) != 1 || got[0] != "k1" {
		t.Errorf("OTEL_EXPORTER_OTLP_HEADERS not sent: %v", e.Header)
	}
}

func TestSetupHTTPByDefault(t *testing.T) {
	c := otlptest.StartHTTP(t)
	clearEnv(t, "OTEL_EXPORTER_OTLP_ENDPOINT", c.Endpoint,
		"OTEL_SERVICE_NAME", "renamed", "OTEL_RESOURCE_ATTRIBUTES", "deployment.environment.name=test")
	probe(t, setup(t))
	if e := exported(t, c, "renamed"); e.ContentType != "application/x-protobuf" {
		t.Errorf("content type %q; want application/x-protobuf (the default protocol)", e.ContentType)
	}
}

func TestSetupHTTPJSON(t *testing.T) {
	c := otlptest.StartHTTP(t)
	clearEnv(t, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", c.Endpoint+"/v1/traces", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/json",
		"OTEL_RESOURCE_ATTRIBUTES", "deployment.environment.name=test")
	probe(t, setup(t))
	if e := exported(t, c, "pseudonymizer-test"); e.ContentType != "application/json" {
		t.Errorf("content type %q; want application/json", e.ContentType)
	}
}
