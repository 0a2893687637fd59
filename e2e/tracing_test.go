package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"maps"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"

	"github.com/ehealth-pseudo/pseudonymizer/internal/otlptest"
	"github.com/ehealth-pseudo/pseudonymizer/keys"
	"github.com/ehealth-pseudo/pseudonymizer/owner"
	pb "github.com/ehealth-pseudo/pseudonymizer/proto/pseudonymizer/v1"
	"github.com/ehealth-pseudo/pseudonymizer/pseudonym"
)

const (
	tracedIssuer   = "https://idp.traces.e2e.test"
	tracedAudience = "urn:e2e:traces"
)

// TestTracesExported runs the built server with tracing on (OTLP/gRPC to a
// collector in the test), makes calls of every kind, with client
// certificates and bearer tokens, some failing, and checks the spans the
// collector receives: their pseudonymizer.* attributes, the caller's
// trace context continued, no span for health checks, and no identifier,
// pseudonym, transitInfo nor token in anything exported, in any encoding.
//
// The server runs in development mode with TLS (keys in a key file, which
// the spans do not depend on), so that callers can use client
// certificates and bearer tokens without Vault.
func TestTracesExported(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	col := otlptest.StartGRPC(t)

	dir := t.TempDir()
	fs, err := keys.OpenFileStore(filepath.Join(dir, "keys.json"), true)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []domainSpec{rxSpec, tlSpec} {
		if _, err := fs.CreateDomain(ctx, keys.DomainSpec{Name: d.name, Audience: d.audience, Policy: keys.Policy{
			Pseudonymize: d.pseudonymize, Identify: d.identify, Owners: d.owners, Convert: d.convert,
		}}); err != nil {
			t.Fatal(err)
		}
	}
	jwtKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	jwks, err := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{
		Key: &jwtKey.PublicKey, KeyID: "traces-kid", Algorithm: string(jose.ES256), Use: "sig",
	}}})
	if err != nil {
		t.Fatal(err)
	}
	jwksFile := filepath.Join(dir, "jwks.json")
	writeFile(t, jwksFile, string(jwks))

	pk := newPKI(t)
	srv := startServer(t, "pseudonymizer-traced", cleanEnv(
		"OTEL_EXPORTER_OTLP_ENDPOINT="+col.Endpoint,
		"OTEL_EXPORTER_OTLP_PROTOCOL=grpc",
		"OTEL_EXPORTER_OTLP_HEADERS=x-collector-key=e2e-collector-key",
		"OTEL_BSP_SCHEDULE_DELAY=50",
	), append(pk.serverTLSArgs(), "-dev", "-data-dir", dir,
		"-jwt-jwks", jwksFile, "-jwt-issuer", tracedIssuer, "-jwt-audience", tracedAudience,
		"-shutdown-timeout", "5s")...)
	srv.waitLog(t, regexp.MustCompile(`"msg":"pseudonymizer: tracing","traces":"otlp/grpc"`), 10*time.Second)

	sec := newSecrets()
	transit := func(tr *pseudonym.Transit) *pseudonym.Transit {
		sec.transit(tr)
		sec.add("transitInfo", []byte(tr.Info))
		return tr
	}
	aliceConn := pk.dial(t, alice, []string{srv.addr})
	ownerConn := pk.dial(t, rxService, []string{srv.addr})
	noCert := dialAddrs(t, []string{srv.addr}, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{
		RootCAs: pk.ca.Pool(), ServerName: "localhost", MinVersion: tls.VersionTLS13,
	})))
	rx, err := owner.New(ctx, rxDomain, fs, owner.WithLogger(discard))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rx.Close() })

	// Alice (client certificate) pseudonymizes a patient; the owner
	// stores it and sends a transit form back, which she identifies.
	tr, err := sdk(aliceConn).Pseudonymize(ctx, rxDomain, newPatient(sec).niss)
	if err != nil {
		t.Fatal(err)
	}
	atRest, err := rx.AtRest(ctx, transit(tr))
	if err != nil {
		t.Fatal(err)
	}
	sec.atRest(rxDomain, atRest)
	back, err := rx.InTransit(atRest)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sdk(aliceConn).Identify(ctx, rxDomain, transit(back)); err != nil {
		t.Fatal(err)
	}
	// The owner converts a transit form to TherLink's domain.
	fwd, err := rx.InTransit(atRest)
	if err != nil {
		t.Fatal(err)
	}
	conv, err := sdk(ownerConn).Convert(ctx, rxDomain, tlDomain, transit(fwd))
	if err != nil {
		t.Fatal(err)
	}
	transit(conv)
	// Bob, with a bearer token and no certificate, pseudonymizes another
	// patient inside the caller's trace, and reads the domain's settings.
	token := signJWT(t, jose.ES256, jwtKey, "traces-kid", tracedClaims(bob))
	sec.add("bearer token", []byte(token))
	for _, part := range strings.Split(token, ".") {
		sec.add("bearer token part", []byte(part))
	}
	var traceID, parentID [16]byte
	_, _ = rand.Read(traceID[:])
	_, _ = rand.Read(parentID[:8])
	traceparent := "00-" + hex.EncodeToString(traceID[:]) + "-" + hex.EncodeToString(parentID[:8]) + "-01"
	bobCtx := metadata.AppendToOutgoingContext(withBearer(ctx, token), "traceparent", traceparent)
	bobTr, err := sdk(noCert).Pseudonymize(bobCtx, rxDomain, newPatient(sec).niss)
	if err != nil {
		t.Fatal(err)
	}
	transit(bobTr)
	if _, err := sdk(noCert).Domain(withBearer(ctx, token), rxDomain); err != nil {
		t.Fatal(err)
	}
	// Refused: an unknown domain, a forged token.
	if _, err := sdk(aliceConn).Pseudonymize(ctx, "unknown_v1", newPatient(sec).niss); err == nil {
		t.Fatal("an unknown domain was accepted")
	}
	otherKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	forged := signJWT(t, jose.ES256, otherKey, "traces-kid", tracedClaims(bob))
	sec.add("forged bearer token", []byte(forged))
	if _, err := pb.NewPseudonymizerClient(noCert).GetDomain(withBearer(ctx, forged), &pb.GetDomainRequest{Name: rxDomain}); err == nil {
		t.Fatal("a forged token was accepted")
	}
	// A health check: no span.
	if _, err := healthpb.NewHealthClient(aliceConn).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatal(err)
	}

	want := map[string]int{"Pseudonymize": 3, "Identify": 1, "ConvertTo": 1, "GetDomain": 2}
	spans := col.WaitSpans(t, 60*time.Second, "the spans of every call", func(spans []otlptest.Span) bool {
		got := map[string]int{}
		for _, s := range spans {
			got[strings.TrimPrefix(s.GetName(), "pseudonymizer.v1.Pseudonymizer/")]++
		}
		for m, n := range want {
			if got[m] < n {
				return false
			}
		}
		return true
	})
	byOutcome := map[string][]otlptest.Span{}
	for _, s := range spans {
		if !strings.HasPrefix(s.GetName(), "pseudonymizer.v1.Pseudonymizer/") {
			t.Errorf("unexpected span %s", s.GetName())
			continue
		}
		key := strings.TrimPrefix(s.GetName(), "pseudonymizer.v1.Pseudonymizer/") + " " + strAttr(s, "pseudonymizer.outcome")
		byOutcome[key] = append(byOutcome[key], s)
		if v, ok := s.ResourceAttr("service.name"); !ok || v.GetStringValue() != "pseudonymizer" {
			t.Errorf("%s: resource service.name %v", s.GetName(), v)
		}
		if _, ok := s.ResourceAttr("service.version"); !ok {
			t.Errorf("%s: no service.version", s.GetName())
		}
		if len(s.GetEvents()) != 0 || len(s.GetLinks()) != 0 {
			t.Errorf("%s: %d events, %d links; want none", s.GetName(), len(s.GetEvents()), len(s.GetLinks()))
		}
	}
	for key, attrs := range map[string]map[string]string{
		"Pseudonymize ok": {"operation": "pseudonymize", "domain": rxDomain, "items": "1", "failed_items": "0"},
		"Identify ok":     {"operation": "identify", "domain": rxDomain, "items": "1", "failed_items": "0"},
		"ConvertTo ok":    {"operation": "convert", "domain": rxDomain, "to_domain": tlDomain, "items": "1", "failed_items": "0"},
		"GetDomain ok":    {"operation": "get_domain", "domain": rxDomain, "items": "0", "failed_items": "0"},
		"Pseudonymize ERROR_REASON_OPERATION_NOT_ALLOWED": {"operation": "pseudonymize", "domain": "", "items": "0", "failed_items": "0"},
		"GetDomain Unauthenticated":                       {"operation": "get_domain", "domain": "", "items": "0", "failed_items": "0"},
	} {
		ss := byOutcome[key]
		if len(ss) == 0 {
			t.Errorf("no span %q; got %v", key, slices.Sorted(maps.Keys(byOutcome)))
			continue
		}
		for _, s := range ss {
			for k, v := range attrs {
				if got := strAttr(s, "pseudonymizer."+k); got != v {
					t.Errorf("%s: pseudonymizer.%s = %q; want %q", key, k, got, v)
				}
			}
			failed := !strings.HasSuffix(key, " ok")
			if st := s.GetStatus(); failed != (st.GetCode().String() == "STATUS_CODE_ERROR") || (failed && st.GetMessage() != "call failed") {
				t.Errorf("%s: status %v %q", key, st.GetCode(), st.GetMessage())
			}
		}
	}
	// Bob's pseudonymize continues his trace.
	continued := false
	for _, s := range byOutcome["Pseudonymize ok"] {
		if hex.EncodeToString(s.GetTraceId()) == hex.EncodeToString(traceID[:]) {
			continued = hex.EncodeToString(s.GetParentSpanId()) == hex.EncodeToString(parentID[:8])
		}
	}
	if !continued {
		t.Error("no span continues the trace context the caller sent")
	}
	// The exporter sends the headers of its environment.
	if e := col.Exports()[0]; len(e.Header["x-collector-key"]) != 1 {
		t.Errorf("OTEL_EXPORTER_OTLP_HEADERS not sent: %v", e.Header)
	}
	assertBlind(t, sec, map[string][]byte{"exported spans": col.Dump()})
}

// strAttr is a string or integer span attribute as text ("" when absent).
func strAttr(s otlptest.Span, key string) string {
	v, _ := s.Attr(key)
	switch v := v.GetValue().(type) {
	case *commonpb.AnyValue_StringValue:
		return v.StringValue
	case *commonpb.AnyValue_IntValue:
		return strconv.FormatInt(v.IntValue, 10)
	}
	return ""
}

// tracedClaims are valid claims of TestTracesExported's issuer.
func tracedClaims(sub string) jwt.Claims {
	now := time.Now()
	return jwt.Claims{
		Issuer: tracedIssuer, Subject: sub, Audience: jwt.Audience{tracedAudience},
		IssuedAt: jwt.NewNumericDate(now), Expiry: jwt.NewNumericDate(now.Add(5 * time.Minute)),
	}
}
