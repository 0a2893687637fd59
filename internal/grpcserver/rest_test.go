package grpcserver_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4/jwt"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/ehealth-pseudo/pseudonymizer/client"
	"github.com/ehealth-pseudo/pseudonymizer/internal/auth"
	"github.com/ehealth-pseudo/pseudonymizer/internal/grpcserver"
	"github.com/ehealth-pseudo/pseudonymizer/internal/rpcstatus"
	"github.com/ehealth-pseudo/pseudonymizer/internal/syncbuf"
	pb "github.com/ehealth-pseudo/pseudonymizer/proto/pseudonymizer/v1"
	"github.com/ehealth-pseudo/pseudonymizer/pseudonym"
)

// restGateway serves srv's REST/JSON gateway on a loopback TCP listener
// until the test ends, and returns its base URL.
func restGateway(t testing.TB, srv *grpcserver.Server, scheme string) string {
	t.Helper()
	lis := tcpListener(t.(*testing.T))
	served := make(chan error, 1)
	go func() { served <- srv.ServeREST(lis) }()
	t.Cleanup(func() {
		_ = srv.Shutdown(context.Background())
		if err := <-served; err != nil {
			t.Errorf("ServeREST: %v", err)
		}
	})
	return scheme + "://" + lis.Addr().String()
}

// restResult is one REST call's outcome.
type restResult struct {
	code   int
	header http.Header
	body   []byte
}

// restCall sends one request. hdr holds extra headers; a POST body gets
// Content-Type application/json unless hdr sets one.
func restCall(t testing.TB, hc *http.Client, method, url string, hdr map[string]string, body []byte) restResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return restResult{code: resp.StatusCode, header: resp.Header, body: b}
}

// status decodes an error body: a google.rpc.Status in JSON, whose code
// must be the one the HTTP status stands for.
func (r restResult) status(t testing.TB) *status.Status {
	t.Helper()
	var sp spb.Status
	if err := protojson.Unmarshal(r.body, &sp); err != nil {
		t.Fatalf("HTTP %d: body is not a google.rpc.Status: %v: %s", r.code, err, r.body)
	}
	st := status.FromProto(&sp)
	if r.code != 413 && r.code != 415 && r.code != 405 && r.code != grpcHTTP(st.Code()) {
		t.Fatalf("HTTP %d for code %v", r.code, st.Code())
	}
	return st
}

// grpcHTTP is the HTTP status of a gRPC code (the gateway's mapping).
func grpcHTTP(c codes.Code) int {
	switch c {
	case codes.OK:
		return 200
	case codes.InvalidArgument, codes.FailedPrecondition, codes.OutOfRange:
		return 400
	case codes.Unauthenticated:
		return 401
	case codes.PermissionDenied:
		return 403
	case codes.NotFound:
		return 404
	case codes.AlreadyExists, codes.Aborted:
		return 409
	case codes.ResourceExhausted:
		return 429
	case codes.Canceled:
		return 499
	case codes.Unimplemented:
		return 501
	case codes.Unavailable:
		return 503
	case codes.DeadlineExceeded:
		return 504
	}
	return 500
}

// outcome summarizes a call for comparison across transports: the call's
// code and reason, or each item's.
func outcome(err error, results []interface{ GetError() *spb.Status }) string {
	if err != nil {
		st := status.Convert(err)
		return "call " + st.Code().String() + "/" + rpcstatus.ReasonOf(st)
	}
	var parts []string
	for _, r := range results {
		if r.GetError() == nil {
			parts = append(parts, "ok")
			continue
		}
		st := status.FromProto(r.GetError())
		parts = append(parts, st.Code().String()+"/"+rpcstatus.ReasonOf(st))
	}
	return "items " + strings.Join(parts, ",")
}

func errorsOf[T interface{ GetError() *spb.Status }](rs []T) []interface{ GetError() *spb.Status } {
	out := make([]interface{ GetError() *spb.Status }, len(rs))
	for i, r := range rs {
		out[i] = r
	}
	return out
}

// restOutcome is outcome for a REST answer decoded into resp.
func restOutcome(t *testing.T, r restResult, resp proto.Message, results func() []interface{ GetError() *spb.Status }) string {
	t.Helper()
	if r.code != http.StatusOK {
		return "call " + r.status(t).Code().String() + "/" + rpcstatus.ReasonOf(r.status(t))
	}
	if err := protojson.Unmarshal(r.body, resp); err != nil {
		t.Fatalf("200 with a body that is not the response: %v: %s", err, r.body)
	}
	return outcome(nil, results())
}

// TestRESTSameOutcomesAsGRPC enumerates principals × domains × operations
// (owners, strangers, unknown domains, convert targets, a bad item in each
// batch) and checks that every REST call ends exactly as the same gRPC
// call: the same call status and reason, or the same per-item statuses and
// reasons (and the same answer where it is deterministic: GetDomain,
// Identify). In particular an owner's identify, refused over gRPC, is
// refused over REST.
func TestRESTSameOutcomesAsGRPC(t *testing.T) {
	e := newEnv(t, func(c *grpcserver.Config) { c.REST = &grpcserver.RESTConfig{} })
	base := restGateway(t, e.srv, "http")
	hc := &http.Client{}

	good, _, err := client.Blind([]byte("85073003328"))
	if err != nil {
		t.Fatal(err)
	}
	bad := make([]byte, 32) // the identity: INVALID_POINT
	transit := map[string]*pseudonym.Transit{}
	for _, d := range []string{"rx_v1", "rx_v2", "open_v1"} {
		transit[d] = e.pseudonymize("prescriber", d, randomID(t))[0]
	}
	principals := []string{"prescriber", "pharmacy", "rx-owner", "open-owner", "stranger", "someone-else"}
	domains := []string{"rx_v1", "rx_v2", "open_v1", "secret_v1", "nope_v1"}
	targets := []string{"rx_v2", "ghost_v1", "open_v1", "nope_v1"}
	seen := map[string]int{}
	compare := func(what, grpcOut, restOut string) {
		t.Helper()
		seen[grpcOut]++
		if grpcOut != restOut {
			t.Errorf("%s: gRPC %q, REST %q", what, grpcOut, restOut)
		}
	}
	body := func(m proto.Message) []byte {
		b, err := protojson.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	calls := 0
	for _, p := range principals {
		hdr := map[string]string{auth.DevPrincipalHeader: p}
		for _, d := range domains {
			what := p + " on " + d
			// GetDomain.
			gd, gerr := e.client.GetDomain(as(p), &pb.GetDomainRequest{Name: d})
			r := restCall(t, hc, "GET", base+"/pseudo/v1/domains/"+d, hdr, nil)
			var rd pb.GetDomainResponse
			compare(what+" GetDomain", outcome(gerr, nil), restOutcome(t, r, &rd, func() []interface{ GetError() *spb.Status } { return nil }))
			if gerr == nil && !proto.Equal(gd, &rd) {
				t.Errorf("%s GetDomain: gRPC %v, REST %v", what, gd, &rd)
			}

			// Pseudonymize.
			items := []*pb.PseudonymizeItem{{Id: "a", Blinded: good}, {Id: "b", Blinded: bad}}
			gp, gerr := e.client.Pseudonymize(as(p), &pb.PseudonymizeRequest{Domain: d, Items: items})
			r = restCall(t, hc, "POST", base+"/pseudo/v1/domains/"+d+"/pseudonymize", hdr, body(&pb.PseudonymizeRequest{Items: items}))
			var rp pb.PseudonymizeResponse
			compare(what+" Pseudonymize", outcome(gerr, errorsOf(gp.GetResults())),
				restOutcome(t, r, &rp, func() []interface{ GetError() *spb.Status } { return errorsOf(rp.GetResults()) }))

			// Identify: a transit pseudonym of the domain (of rx_v1 for the
			// others) and a bad item.
			tp := transit[d]
			if tp == nil {
				tp = transit["rx_v1"]
			}
			ii, _ := identifyItems(t, tp)
			ii = append(ii, &pb.IdentifyItem{Id: "b", Blinded: bad, TransitInfo: tp.Info})
			gi, gerr := e.client.Identify(as(p), &pb.IdentifyRequest{Domain: d, Items: ii})
			r = restCall(t, hc, "POST", base+"/pseudo/v1/domains/"+d+"/identify", hdr, body(&pb.IdentifyRequest{Items: ii}))
			var ri pb.IdentifyResponse
			compare(what+" Identify", outcome(gerr, errorsOf(gi.GetResults())),
				restOutcome(t, r, &ri, func() []interface{ GetError() *spb.Status } { return errorsOf(ri.GetResults()) }))
			if gerr == nil && !proto.Equal(gi, &ri) {
				t.Errorf("%s Identify: gRPC %v, REST %v", what, gi, &ri)
			}

			// Convert to each target.
			for _, to := range targets {
				ci, _ := convertItems(t, tp)
				ci = append(ci, &pb.ConvertItem{Id: "b", Blinded: bad, TransitInfo: tp.Info})
				gc, gerr := e.client.ConvertTo(as(p), &pb.ConvertToRequest{FromDomain: d, ToDomain: to, Items: ci})
				r = restCall(t, hc, "POST", base+"/pseudo/v1/domains/"+d+"/convertTo/"+to, hdr, body(&pb.ConvertToRequest{Items: ci}))
				var rc pb.ConvertToResponse
				compare(what+" ConvertTo "+to, outcome(gerr, errorsOf(gc.GetResults())),
					restOutcome(t, r, &rc, func() []interface{ GetError() *spb.Status } { return errorsOf(rc.GetResults()) }))
				calls++
			}
			calls += 3
		}
	}
	if calls != len(principals)*len(domains)*(3+len(targets)) {
		t.Fatalf("%d calls", calls)
	}
	// The enumeration reached the interesting outcomes (it cannot pass on
	// refusals alone).
	for _, want := range []string{
		"call PermissionDenied/ERROR_REASON_OPERATION_NOT_ALLOWED",
		"items ok,InvalidArgument/ERROR_REASON_INVALID_POINT",
	} {
		if seen[want] == 0 {
			t.Errorf("no call ended %q; outcomes: %v", want, seen)
		}
	}
	// The owner's identify, by name.
	ii, _ := identifyItems(t, transit["rx_v1"])
	r := restCall(t, hc, "POST", base+"/pseudo/v1/domains/rx_v1/identify", map[string]string{auth.DevPrincipalHeader: "rx-owner"}, body(&pb.IdentifyRequest{Items: ii}))
	if r.code != http.StatusForbidden || rpcstatus.ReasonOf(r.status(t)) != "ERROR_REASON_OPERATION_NOT_ALLOWED" {
		t.Fatalf("owner identify over REST: HTTP %d %s", r.code, r.body)
	}
}

// metricValue reads one sample of the server's metrics, 0 when absent.
func metricValue(t *testing.T, srv *grpcserver.Server, name string, labels ...string) float64 {
	t.Helper()
	req, _ := http.NewRequest("GET", "/metrics", nil)
	rec := &recorder{header: http.Header{}}
	srv.MetricsHandler().ServeHTTP(rec, req)
	for line := range strings.SplitSeq(rec.body.String(), "\n") {
		if !strings.HasPrefix(line, name+"{") {
			continue
		}
		ok := true
		for _, l := range labels {
			ok = ok && strings.Contains(line, l)
		}
		if ok {
			v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
			if err != nil {
				t.Fatal(err)
			}
			return v
		}
	}
	return 0
}

// recorder is a minimal http.ResponseWriter.
type recorder struct {
	header http.Header
	body   bytes.Buffer
}

func (r *recorder) Header() http.Header         { return r.header }
func (r *recorder) Write(b []byte) (int, error) { return r.body.Write(b) }
func (r *recorder) WriteHeader(int)             {}

// auditRecords returns the audit records ("grpc call") in a JSON log.
func auditRecords(t *testing.T, log string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for line := range strings.SplitSeq(log, "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil && m["msg"] == "grpc call" {
			out = append(out, m)
		}
	}
	return out
}

// TestRESTAuditAndMetrics: a REST call leaves the same audit record and
// the same gRPC metrics as a gRPC call: principal, method, domain, item
// counts, reasons.
func TestRESTAuditAndMetrics(t *testing.T) {
	e := newEnv(t, func(c *grpcserver.Config) { c.REST = &grpcserver.RESTConfig{} })
	base := restGateway(t, e.srv, "http")
	good, _, err := client.Blind([]byte("85073003328"))
	if err != nil {
		t.Fatal(err)
	}
	before := metricValue(t, e.srv, "grpc_server_handled_total", `grpc_method="Pseudonymize"`, `grpc_code="OK"`)
	b, _ := protojson.Marshal(&pb.PseudonymizeRequest{Items: []*pb.PseudonymizeItem{{Id: "a", Blinded: good}, {Id: "b", Blinded: make([]byte, 32)}}})
	r := restCall(t, &http.Client{}, "POST", base+"/pseudo/v1/domains/rx_v1/pseudonymize", map[string]string{auth.DevPrincipalHeader: "prescriber"}, b)
	if r.code != 200 {
		t.Fatalf("HTTP %d %s", r.code, r.body)
	}
	if after := metricValue(t, e.srv, "grpc_server_handled_total", `grpc_method="Pseudonymize"`, `grpc_code="OK"`); after != before+1 {
		t.Fatalf("grpc_server_handled_total: %v → %v", before, after)
	}
	var found bool
	for _, rec := range auditRecords(t, e.logs.String()) {
		if rec["principal"] == "prescriber" && rec["method"] == pb.Pseudonymizer_Pseudonymize_FullMethodName &&
			rec["domains"] == "rx_v1" && rec["items"] == 2.0 && rec["item_errors"] == 1.0 {
			found = true
		}
	}
	if !found {
		t.Fatalf("no audit record of the REST call in:\n%s", e.logs.String())
	}
}

// restJWT is a TLS server with client certificates (optional) and bearer
// tokens, whose REST gateway is served on a loopback listener.
type restJWT struct {
	*jwtServer
	base string
	logs *syncbuf.Buffer
}

func startRESTJWT(t *testing.T, rest grpcserver.RESTConfig, configure func(*grpcserver.Config)) *restJWT {
	logs := &syncbuf.Buffer{}
	js := startJWTServer(t, func(c *grpcserver.Config) {
		c.REST = &rest
		c.Logger = slog.New(slog.NewJSONHandler(logs, nil))
		if configure != nil {
			configure(c)
		}
	})
	return &restJWT{jwtServer: js, base: restGateway(t, js.srv, "https"), logs: logs}
}

// httpClient is an HTTPS client trusting the test CA, with cert as its
// client certificate when given.
func (j *restJWT) httpClient(cert *tls.Certificate) *http.Client {
	cfg := &tls.Config{RootCAs: j.ca.Pool(), MinVersion: tls.VersionTLS12}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	return &http.Client{Transport: &http.Transport{TLSClientConfig: cfg, ForceAttemptHTTP2: true}}
}

// TestRESTUnauthenticatedBeforeBody: a REST call without credentials is
// refused from its headers alone. The request announces a 1 MB body and
// sends none: the 401 arrives all the same, so the body was never waited
// for, let alone decoded. The refusal is audited under the method the
// route calls.
func TestRESTUnauthenticatedBeforeBody(t *testing.T) {
	j := startRESTJWT(t, grpcserver.RESTConfig{}, nil)
	conn, err := tls.Dial("tcp", strings.TrimPrefix(j.base, "https://"), &tls.Config{RootCAs: j.ca.Pool(), MinVersion: tls.VersionTLS12, NextProtos: []string{"http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(conn, "POST /pseudo/v1/domains/tls_v1/pseudonymize HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000000\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("no answer before the body: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	r := restResult{code: resp.StatusCode, header: resp.Header, body: b}
	if r.code != 401 || r.status(t).Code() != codes.Unauthenticated || !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer") {
		t.Fatalf("HTTP %d %v %s", r.code, resp.Header, b)
	}
	var audited bool
	for _, rec := range auditRecords(t, j.logs.String()) {
		audited = audited || (rec["method"] == pb.Pseudonymizer_Pseudonymize_FullMethodName && rec["code"] == "Unauthenticated")
	}
	if !audited {
		t.Fatalf("refusal not audited:\n%s", j.logs.String())
	}
}

// TestRESTCredentials: over REST, the principal comes from the same
// credentials as over gRPC: a client certificate (mTLS), a bearer token;
// every invalid token is refused with the same fixed message, and the
// development header is ignored outside development mode.
func TestRESTCredentials(t *testing.T) {
	j := startRESTJWT(t, grpcserver.RESTConfig{}, nil)
	now := time.Now()
	valid := jwt.Claims{
		Issuer: "https://idp.test.example", Subject: jwtUser, Audience: jwt.Audience{"pseudonymizer"},
		IssuedAt: jwt.NewNumericDate(now), Expiry: jwt.NewNumericDate(now.Add(5 * time.Minute)),
	}
	ops := func(hc *http.Client, hdr map[string]string) (restResult, []pb.Operation) {
		r := restCall(t, hc, "GET", j.base+"/pseudo/v1/domains/tls_v1", hdr, nil)
		var d pb.GetDomainResponse
		if r.code == 200 {
			if err := protojson.Unmarshal(r.body, &d); err != nil {
				t.Fatal(err)
			}
		}
		return r, d.GetAllowedOperations()
	}
	noCert := j.httpClient(nil)
	// A bearer token: jwt-user may pseudonymize only (as over gRPC, TestJWT).
	if r, got := ops(noCert, map[string]string{"Authorization": "Bearer " + j.iss.token(t, valid)}); r.code != 200 ||
		!slices.Equal(got, []pb.Operation{pb.Operation_OPERATION_PSEUDONYMIZE}) {
		t.Fatalf("bearer token: HTTP %d %s", r.code, r.body)
	}
	// A client certificate: the pharmacy may pseudonymize and identify.
	cert := j.ca.Client(t, cnPharmacy, "")
	if r, got := ops(j.httpClient(&cert), nil); r.code != 200 || len(got) != 2 {
		t.Fatalf("client certificate: HTTP %d %s", r.code, r.body)
	}
	expired := valid
	expired.Expiry = jwt.NewNumericDate(now.Add(-time.Hour))
	var message string
	for name, hdr := range map[string]map[string]string{
		"no credentials": nil,
		"expired token":  {"Authorization": "Bearer " + j.iss.token(t, expired)},
		"garbage token":  {"Authorization": "Bearer not-a-jwt"},
		"basic scheme":   {"Authorization": "Basic dXNlcjpwYXNz"},
		"dev header":     {auth.DevPrincipalHeader: cnPharmacy},
	} {
		r, _ := ops(noCert, hdr)
		if r.code != 401 || r.status(t).Code() != codes.Unauthenticated {
			t.Errorf("%s: HTTP %d %s", name, r.code, r.body)
			continue
		}
		if message == "" {
			message = r.status(t).Message()
		} else if m := r.status(t).Message(); m != message {
			t.Errorf("%s: message %q differs from %q: it tells which check failed", name, m, message)
		}
		if strings.Contains(string(r.body), "not-a-jwt") || strings.Contains(string(r.body), "dXNlcjpwYXNz") {
			t.Errorf("%s: the token is echoed: %s", name, r.body)
		}
	}
}

// TestRESTRateLimitShared: gRPC and REST draw on one rate budget per
// principal; a REST refusal is 429 with Retry-After and the RetryInfo.
func TestRESTRateLimitShared(t *testing.T) {
	e := newEnv(t, func(c *grpcserver.Config) {
		c.REST = &grpcserver.RESTConfig{}
		c.MaxBatch, c.Rate, c.Burst = 10, 0.5, 10
	})
	base := restGateway(t, e.srv, "http")
	items := make([]*pb.PseudonymizeItem, 10)
	for i := range items {
		items[i] = &pb.PseudonymizeItem{Id: strconv.Itoa(i), Blinded: make([]byte, 32)}
	}
	if _, err := e.client.Pseudonymize(as("prescriber"), &pb.PseudonymizeRequest{Domain: "rx_v1", Items: items}); err != nil {
		t.Fatal(err)
	}
	b, _ := protojson.Marshal(&pb.PseudonymizeRequest{Items: items})
	r := restCall(t, &http.Client{}, "POST", base+"/pseudo/v1/domains/rx_v1/pseudonymize", map[string]string{auth.DevPrincipalHeader: "prescriber"}, b)
	if r.code != 429 || rpcstatus.ReasonOf(r.status(t)) != "ERROR_REASON_RATE_LIMITED" {
		t.Fatalf("HTTP %d %s; want 429 RATE_LIMITED", r.code, r.body)
	}
	var ri *errdetails.RetryInfo
	for _, d := range r.status(t).Details() {
		if x, ok := d.(*errdetails.RetryInfo); ok {
			ri = x
		}
	}
	after, err := strconv.Atoi(r.header.Get("Retry-After"))
	if ri == nil || err != nil || after < 15 || after > 21 || float64(after) < ri.GetRetryDelay().AsDuration().Seconds() {
		t.Fatalf("RetryInfo %v, Retry-After %q: want about 20 s, the header rounded up", ri, r.header.Get("Retry-After"))
	}
	// Another principal has its own budget.
	r = restCall(t, &http.Client{}, "POST", base+"/pseudo/v1/domains/rx_v1/pseudonymize", map[string]string{auth.DevPrincipalHeader: "pharmacy"}, b)
	if r.code != 200 {
		t.Fatalf("another principal: HTTP %d %s", r.code, r.body)
	}
}

// TestRESTRejects: what the gateway refuses itself, each with a typed
// google.rpc.Status, the right HTTP status, an audit record when the
// caller is known, and never an echo of the request.
func TestRESTRejects(t *testing.T) {
	e := newEnv(t, func(c *grpcserver.Config) {
		c.REST = &grpcserver.RESTConfig{MaxBodyBytes: 4096}
		c.MaxBatch = 10
	})
	base := restGateway(t, e.srv, "http")
	hc := &http.Client{}
	niss := "85073003328"
	dev := map[string]string{auth.DevPrincipalHeader: "prescriber"}
	with := func(k, v string) map[string]string {
		m := map[string]string{auth.DevPrincipalHeader: "prescriber"}
		m[k] = v
		return m
	}
	eleven := `{"items":[` + strings.Repeat(`{"id":"x"},`, 10) + `{"id":"x"}]}`
	for _, c := range []struct {
		name, method, path string
		hdr                map[string]string
		body               string
		http               int
		code               codes.Code
		reason             string
	}{
		{"unknown route", "GET", "/pseudo/v1/nothing/here", dev, "", 404, codes.NotFound, "ERROR_REASON_UNSPECIFIED"},
		{"outside the API", "GET", "/", dev, "", 404, codes.NotFound, "ERROR_REASON_UNSPECIFIED"},
		{"GET on a POST route", "GET", "/pseudo/v1/domains/rx_v1/pseudonymize", dev, "", 405, codes.Unimplemented, "ERROR_REASON_UNSPECIFIED"},
		{"form body", "POST", "/pseudo/v1/domains/rx_v1/pseudonymize", with("Content-Type", "application/x-www-form-urlencoded"), "items=" + niss, 415, codes.InvalidArgument, "ERROR_REASON_MALFORMED_REQUEST"},
		{"text body", "POST", "/pseudo/v1/domains/rx_v1/pseudonymize", with("Content-Type", "text/plain"), `{"items":[]}`, 415, codes.InvalidArgument, "ERROR_REASON_MALFORMED_REQUEST"},
		{"method override", "POST", "/pseudo/v1/domains/rx_v1", with("X-HTTP-Method-Override", "GET"), `{}`, 405, codes.Unimplemented, "ERROR_REASON_UNSPECIFIED"},
		{"unknown field", "POST", "/pseudo/v1/domains/rx_v1/pseudonymize", dev, `{"items":[],"nissNumber":"` + niss + `"}`, 400, codes.InvalidArgument, "ERROR_REASON_MALFORMED_REQUEST"},
		{"bad base64", "POST", "/pseudo/v1/domains/rx_v1/pseudonymize", dev, `{"items":[{"id":"a","blinded":"` + niss + `!"}]}`, 400, codes.InvalidArgument, "ERROR_REASON_MALFORMED_REQUEST"},
		{"not JSON", "POST", "/pseudo/v1/domains/rx_v1/pseudonymize", dev, niss, 400, codes.InvalidArgument, "ERROR_REASON_MALFORMED_REQUEST"},
		{"wrong type", "POST", "/pseudo/v1/domains/rx_v1/identify", dev, `{"items":[{"id":` + niss + `}]}`, 400, codes.InvalidArgument, "ERROR_REASON_MALFORMED_REQUEST"},
		{"too many items", "POST", "/pseudo/v1/domains/rx_v1/pseudonymize", dev, eleven, 400, codes.InvalidArgument, "ERROR_REASON_BATCH_TOO_LARGE"},
		{"body over the limit", "POST", "/pseudo/v1/domains/rx_v1/pseudonymize", dev, `{"items":[{"id":"` + strings.Repeat(niss, 400) + `"}]}`, 413, codes.ResourceExhausted, "ERROR_REASON_UNSPECIFIED"},
	} {
		before := len(auditRecords(t, e.logs.String()))
		var body []byte
		if c.body != "" {
			body = []byte(c.body)
		}
		r := restCall(t, hc, c.method, base+c.path, c.hdr, body)
		if r.code != c.http {
			t.Errorf("%s: HTTP %d %s; want %d", c.name, r.code, r.body, c.http)
			continue
		}
		st := r.status(t)
		if st.Code() != c.code || rpcstatus.ReasonOf(st) != c.reason {
			t.Errorf("%s: %v %s; want %v %s", c.name, st.Code(), rpcstatus.ReasonOf(st), c.code, c.reason)
		}
		if strings.Contains(string(r.body), niss) || strings.Contains(e.logs.String(), niss) {
			t.Errorf("%s: the request is echoed: %s", c.name, r.body)
		}
		if c.method == "POST" && c.http != 404 && c.http != 405 {
			recs := auditRecords(t, e.logs.String())
			if len(recs) != before+1 || recs[len(recs)-1]["principal"] != "prescriber" || recs[len(recs)-1]["code"] != c.code.String() {
				t.Errorf("%s: audit records %v", c.name, recs[before:])
			}
		}
	}
	// A chunked body (no Content-Length) over the limit is cut while read.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pr, pw := io.Pipe()
	go func() {
		defer func() { _ = recover() }()
		_, _ = pw.Write([]byte(`{"items":[{"id":"` + strings.Repeat("x", 8192) + `"}]}`))
		_ = pw.Close()
	}()
	req, _ := http.NewRequestWithContext(ctx, "POST", base+"/pseudo/v1/domains/rx_v1/pseudonymize", pr)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(auth.DevPrincipalHeader, "prescriber")
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 413 {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("chunked body over the limit: HTTP %d %s", resp.StatusCode, b)
	}
}

// TestRESTOrigins: CORS for the allowed browser origins only; a request
// from any other origin is refused before anything else.
func TestRESTOrigins(t *testing.T) {
	allowed := "https://prescriber.example"
	e := newEnv(t, func(c *grpcserver.Config) { c.REST = &grpcserver.RESTConfig{AllowedOrigins: []string{allowed}} })
	base := restGateway(t, e.srv, "http")
	hc := &http.Client{}
	url := base + "/pseudo/v1/domains/rx_v1"
	r := restCall(t, hc, "GET", url, map[string]string{"Origin": allowed, auth.DevPrincipalHeader: "prescriber"}, nil)
	if r.code != 200 || r.header.Get("Access-Control-Allow-Origin") != allowed {
		t.Fatalf("allowed origin: HTTP %d %v", r.code, r.header)
	}
	pre := restCall(t, hc, "OPTIONS", base+"/pseudo/v1/domains/rx_v1/pseudonymize", map[string]string{
		"Origin": allowed, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization,content-type", // as browsers send it: lower case, sorted
	}, nil)
	if pre.code/100 != 2 || pre.header.Get("Access-Control-Allow-Origin") != allowed ||
		!strings.Contains(strings.ToLower(pre.header.Get("Access-Control-Allow-Headers")), "authorization") {
		t.Fatalf("preflight: HTTP %d %v", pre.code, pre.header)
	}
	for _, o := range []string{"https://evil.example", "http://prescriber.example", "https://prescriber.example:8443", "null"} {
		for _, m := range []string{"GET", "OPTIONS", "POST"} {
			hdr := map[string]string{"Origin": o, auth.DevPrincipalHeader: "prescriber", "Access-Control-Request-Method": "POST"}
			var body []byte
			if m == "POST" {
				body = []byte(`{"items":[]}`)
			}
			r := restCall(t, hc, m, url, hdr, body)
			if r.code != 403 || r.header.Get("Access-Control-Allow-Origin") != "" {
				t.Errorf("%s from %s: HTTP %d %v", m, o, r.code, r.header)
			}
		}
	}
	// Without an Origin header (not a browser), nothing changes.
	if r := restCall(t, hc, "GET", url, map[string]string{auth.DevPrincipalHeader: "prescriber"}, nil); r.code != 200 {
		t.Fatalf("no origin: HTTP %d", r.code)
	}
}

// TestRESTRoutesAudited: every route of the OpenAPI document is served and
// maps to its gRPC method (restRoutes), so that calls refused before the
// gRPC server are audited under the right method; the document served is
// the generated one.
func TestRESTRoutesAudited(t *testing.T) {
	j := startRESTJWT(t, grpcserver.RESTConfig{}, nil)
	hc := j.httpClient(nil)
	doc := restCall(t, hc, "GET", j.base+"/pseudo/v1/openapi.json", nil, nil)
	if doc.code != 200 || !bytes.Equal(doc.body, pb.OpenAPI) {
		t.Fatalf("openapi.json: HTTP %d", doc.code)
	}
	var api struct {
		Paths map[string]map[string]struct {
			OperationID string `json:"operationId"`
		} `json:"paths"`
	}
	if err := json.Unmarshal(pb.OpenAPI, &api); err != nil {
		t.Fatal(err)
	}
	param := regexp.MustCompile(`\{[^}]+\}`)
	n := 0
	for path, ops := range api.Paths {
		for method, op := range ops {
			url := j.base + param.ReplaceAllString(path, "tls_v1")
			var body []byte
			if method == "post" {
				body = []byte(`{}`)
			}
			before := len(auditRecords(t, j.logs.String()))
			r := restCall(t, hc, strings.ToUpper(method), url, nil, body)
			if r.code != 401 {
				t.Errorf("%s %s: HTTP %d; want 401", method, path, r.code)
			}
			recs := auditRecords(t, j.logs.String())
			want := "/pseudonymizer.v1.Pseudonymizer/" + strings.TrimPrefix(op.OperationID, "Pseudonymizer_")
			if len(recs) != before+1 || recs[len(recs)-1]["method"] != want {
				t.Errorf("%s %s: audit %v; want method %s", method, path, recs[before:], want)
			}
			n++
		}
	}
	if n != 4 {
		t.Fatalf("%d routes in the OpenAPI document; want 4", n)
	}
}

// TestRESTNeedsConfig: ServeREST fails when the gateway is not configured.
func TestRESTNeedsConfig(t *testing.T) {
	e := newEnv(t)
	lis := tcpListener(t)
	defer lis.Close()
	if err := e.srv.ServeREST(lis); err == nil {
		t.Fatal("ServeREST without Config.REST succeeded")
	}
	if e.srv.RESTHandler() != nil {
		t.Fatal("RESTHandler without Config.REST")
	}
}
