package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/hashicorp/vault/api"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/ehealth-pseudo/pseudonymizer/keys"
	"github.com/ehealth-pseudo/pseudonymizer/keys/vault"
	"github.com/ehealth-pseudo/pseudonymizer/owner"
	pb "github.com/ehealth-pseudo/pseudonymizer/proto/pseudonymizer/v1"
	"github.com/ehealth-pseudo/pseudonymizer/pseudonym"
)

// The principals, domains and limits of TestHostileInputs, besides those of
// the prescription use case.
const (
	greedy    = "greedy-client" // the principal that exhausts its rate limit
	openOwner = "open-owner"

	openDomain  = "open_v1"  // anyone pseudonymizes and identifies ("*")
	quotaDomain = "quota_v1" // greedy's domain: rate limits
	sealDomain  = "seal_v1"  // its transit key seals up to its limit
	faultDomain = "fault_v1" // its meta is overwritten with garbage in Vault
	ghostDomain = "ghost_v1" // a convert target the policy names, never created

	hostileMaxBatch = 1000
	hostileMaxSeals = 500
	hostileRate     = 1000
	hostileBurst    = 2000
	hostileIdle     = 2 * time.Second // -stream-idle-timeout

	hostileIssuer   = "https://idp.e2e.test"
	hostileAudience = "urn:e2e:pseudonymizer"
	hostileKid      = "idp-key-1"

	// rssSlack is how far above its idle RSS the server may go, during an
	// attack or after it.
	rssSlack = 64 << 20
)

// hostileRx is the prescription domain with convert targets for the owner:
// TherLink, the open domain (where identify is "*") and a domain that does
// not exist.
var hostileRx = domainSpec{
	name: rxDomain, audience: rxSpec.audience,
	pseudonymize: rxSpec.pseudonymize, identify: rxSpec.identify, owners: rxSpec.owners,
	convert: map[string][]string{tlDomain: {rxService}, openDomain: {rxService}, ghostDomain: {rxService}},
}

var hostileDomains = []domainSpec{
	hostileRx,
	tlSpec,
	{name: openDomain, audience: "urn:e2e:open", pseudonymize: []string{"*"}, identify: []string{"*"}, owners: []string{openOwner}},
	{name: quotaDomain, audience: "urn:e2e:quota", pseudonymize: []string{greedy}},
	{name: sealDomain, audience: "urn:e2e:seal", pseudonymize: []string{alice}},
	{name: faultDomain, audience: "urn:e2e:fault", pseudonymize: []string{alice}},
}

// hostileEnv is the deployment TestHostileInputs attacks: Vault, the
// built server in production mode (Vault, mTLS with optional client
// certificates, bearer tokens from a JWKS file), a connection per
// principal, one without a certificate, and the material the attacks start
// from (valid transit pseudonyms and the keys to forge others).
type hostileEnv struct {
	ve       *vaultEnv
	pk       *pki
	srv      *server
	pid      int
	tokenID  string // the service's Vault token
	conns    map[string]*grpc.ClientConn
	noCert   *grpc.ClientConn // TLS without a client certificate
	probe    *grpc.ClientConn // health checks
	idleRSS  int64
	jwtKey   *ecdsa.PrivateKey
	rxOwner  *owner.Owner // the prescription service, keys from its owner policy
	adminKey *keys.Domain // prescriptions_v1 as an administrator reads it (transit keys, no k)

	niss []byte             // a patient
	trRx *pseudonym.Transit // alice's pseudonym of niss in prescriptions_v1
	trTl *pseudonym.Transit // alice's pseudonym of niss in therlink_v1
	atRx pseudonym.AtRest   // the prescription service's pseudonym at rest of niss
}

func newHostileEnv(t *testing.T) *hostileEnv {
	t.Helper()
	ctx := context.Background()
	h := &hostileEnv{ve: startVault(t), pk: newPKI(t), conns: map[string]*grpc.ClientConn{}}
	h.pk.clients[greedy] = h.pk.ca.Client(t, greedy, "")
	for _, d := range hostileDomains {
		h.ve.createDomain(t, d)
	}

	// The service reads Vault with a token of the service policy, given in
	// its environment; its id is fixed so that the token can be made again
	// after Vault restarts empty (the last fault).
	var rnd [12]byte
	_, _ = rand.Read(rnd[:])
	h.tokenID = "e2e-hostile-" + hex.EncodeToString(rnd[:])
	h.serviceToken(t)

	// Bearer tokens: an identity provider's ES256 key, published to the
	// server as a JWKS file.
	var err error
	if h.jwtKey, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		t.Fatal(err)
	}
	jwks, err := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{
		Key: &h.jwtKey.PublicKey, KeyID: hostileKid, Algorithm: string(jose.ES256), Use: "sig",
	}}})
	if err != nil {
		t.Fatal(err)
	}
	jwksFile := filepath.Join(t.TempDir(), "jwks.json")
	writeFile(t, jwksFile, string(jwks))

	h.srv = startServer(t, "pseudonymizer-hostile", cleanEnv("VAULT_TOKEN="+h.tokenID), append(h.pk.serverTLSArgs(),
		"-vault-addr", h.ve.v.Addr, "-poll-interval", "1s", "-health-interval", "250ms",
		"-jwt-jwks", jwksFile, "-jwt-issuer", hostileIssuer, "-jwt-audience", hostileAudience,
		"-max-batch", strconv.Itoa(hostileMaxBatch), "-max-seals-per-key", strconv.Itoa(hostileMaxSeals),
		"-rate", strconv.Itoa(hostileRate), "-burst", strconv.Itoa(hostileBurst),
		"-stream-idle-timeout", hostileIdle.String(), "-shutdown-timeout", "5s", "-log-level", "info")...)
	h.pid = h.srv.cmd.Process.Pid

	for _, p := range []string{alice, bob, rxService, therlink, greedy} {
		h.conns[p] = h.pk.dial(t, p, []string{h.srv.addr})
	}
	h.noCert = dialAddrs(t, []string{h.srv.addr}, grpc.WithTransportCredentials(h.tlsCreds(nil)))
	h.probe = h.pk.dial(t, pharmacist, []string{h.srv.addr})

	// The material the attacks start from.
	h.rxOwner = h.ve.newOwner(t, rxOwner, rxDomain)
	h.adminKey, err = h.ve.open(t, h.ve.adminToken, vault.Owner).Domain(ctx, rxDomain)
	if err != nil || len(h.adminKey.Transit.Keys) == 0 {
		t.Fatalf("the administrator reading the transit keys of %s: %v", rxDomain, err)
	}
	h.niss = newPatient(newSecrets()).niss
	if h.trRx, err = sdk(h.conns[alice]).Pseudonymize(ctx, rxDomain, h.niss); err != nil {
		t.Fatal(err)
	}
	if h.trTl, err = sdk(h.conns[alice]).Pseudonymize(ctx, tlDomain, h.niss); err != nil {
		t.Fatal(err)
	}
	if h.atRx, err = h.rxOwner.AtRest(ctx, h.trRx); err != nil {
		t.Fatal(err)
	}
	waitHealth(t, h.probe, healthpb.HealthCheckResponse_SERVING, 30*time.Second)
	h.idleRSS = h.rss(t)
	return h
}

// serviceToken (re)creates the service's Vault token.
func (h *hostileEnv) serviceToken(t *testing.T) {
	t.Helper()
	_, err := h.ve.v.Client(t).Auth().Token().Create(&api.TokenCreateRequest{
		ID: h.tokenID, Policies: []string{servicePolicy}, TTL: "1h",
	})
	if err != nil {
		t.Fatalf("creating the service token: %v", err)
	}
}

// tlsCreds are TLS credentials that trust the server, with cert as client
// certificate (none when nil).
func (h *hostileEnv) tlsCreds(cert *tls.Certificate) credentials.TransportCredentials {
	return credentials.NewTLS(h.tlsConfig(cert, nil))
}

func (h *hostileEnv) tlsConfig(cert *tls.Certificate, nextProtos []string) *tls.Config {
	cfg := &tls.Config{RootCAs: h.pk.ca.Pool(), ServerName: "localhost", MinVersion: tls.VersionTLS13, NextProtos: nextProtos}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	return cfg
}

func (h *hostileEnv) api(principal string) pb.PseudonymizerClient {
	return pb.NewPseudonymizerClient(h.conns[principal])
}

// rss reads the server's resident set size from /proc.
func (h *hostileEnv) rss(t testing.TB) int64 {
	t.Helper()
	n, err := readRSS(h.pid)
	if err != nil {
		t.Fatalf("reading the server's RSS: %v", err)
	}
	return n
}

// readRSS returns the VmRSS of a process, in bytes.
func readRSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(v)
			if len(f) != 2 || f[1] != "kB" {
				return 0, fmt.Errorf("unexpected VmRSS line %q", line)
			}
			kb, err := strconv.ParseInt(f[0], 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
}

func fmtMiB(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

// rssPeak samples the server's RSS every 10 ms until stop is called, and
// returns the highest value seen.
func (h *hostileEnv) rssPeak() (stop func() int64) {
	var peak atomic.Int64
	done, finished := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(finished)
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			if n, err := readRSS(h.pid); err == nil && n > peak.Load() {
				peak.Store(n)
			}
			select {
			case <-done:
				return
			case <-tick.C:
			}
		}
	}()
	var once sync.Once
	return func() int64 {
		once.Do(func() { close(done) })
		<-finished
		return peak.Load()
	}
}

func (h *hostileEnv) exited() bool {
	select {
	case <-h.srv.exited:
		return true
	default:
		return false
	}
}

// checkAlive is run after every attack: the process is still there, its
// service health is SERVING, and its RSS is within rssSlack of the idle
// RSS. It returns the RSS.
func (h *hostileEnv) checkAlive(t *testing.T) int64 {
	t.Helper()
	if h.exited() {
		t.Fatalf("the server exited: %v", h.srv.cmd.ProcessState)
	}
	if st, err := health(context.Background(), h.probe, serviceHealth); err != nil || st != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("health of %s: %v, %v; want SERVING", serviceHealth, st, err)
	}
	rss := h.rss(t)
	if rss > h.idleRSS+rssSlack {
		t.Errorf("server RSS %s; idle was %s: more than %s above", fmtMiB(rss), fmtMiB(h.idleRSS), fmtMiB(rssSlack))
	}
	return rss
}

// hostileOutcome is what an attack got: a call status, or the status of
// the attacking item within a successful call.
type hostileOutcome struct {
	code   codes.Code
	reason string // ErrorInfo reason, "" without ErrorInfo
	level  string // "call", "item", "stream", "rst" (RST_STREAM), "conn" (closed), "tls"
	note   string
}

func (o hostileOutcome) String() string {
	s := o.code.String()
	if o.reason != "" {
		s += "/" + strings.TrimPrefix(o.reason, "ERROR_REASON_")
	}
	return s + " (" + o.level + ")"
}

// hostileAttack is one row of TestHostileInputs: the attack and what the
// server must answer, a gRPC code and, as info says, the ErrorInfo reason
// or none.
type hostileAttack struct {
	name   string
	code   codes.Code
	reason pb.ErrorReason
	info   hostileInfo
	run    func(ctx context.Context, t *testing.T) hostileOutcome
}

// hostileInfo says what an attack's answer carries besides its code.
type hostileInfo string

const (
	// withInfo: an ErrorInfo with the row's reason.
	withInfo hostileInfo = ""
	// noInfo: no ErrorInfo (errors of the gRPC library or of the TLS
	// handshake).
	noInfo hostileInfo = "none"
)

// resetWith: no gRPC status at all, the stream is reset (RST_STREAM)
// with this HTTP/2 error code (an attack on HTTP/2 itself); the row's code
// is what gRPC clients report for it.
func resetWith(http2Code string) hostileInfo { return hostileInfo("RST_STREAM " + http2Code) }

// fromGRPCLibrary: the status, without ErrorInfo and with this message,
// that grpc-go's transport writes itself for a violation of the gRPC
// framing, before any code of the service runs (serverStream.RecvMsg
// writes it on a receive error). It may be INTERNAL: gRPC reports protocol
// violations so, and the service cannot answer in its place.
func fromGRPCLibrary(msg string) hostileInfo { return hostileInfo("grpc-go: " + msg) }

func (a hostileAttack) resets() bool { return strings.HasPrefix(string(a.info), "RST_STREAM ") }

func (a hostileAttack) library() (string, bool) {
	return strings.CutPrefix(string(a.info), "grpc-go: ")
}

func (a hostileAttack) want() string {
	if a.resets() {
		return string(a.info)
	}
	if msg, ok := a.library(); ok {
		return fmt.Sprintf("%v %q (grpc-go)", a.code, msg)
	}
	if a.code == codes.OK || a.info == noInfo {
		return a.code.String()
	}
	return a.code.String() + "/" + strings.TrimPrefix(a.reason.String(), "ERROR_REASON_")
}

func (a hostileAttack) wantReason() string {
	if a.code == codes.OK || a.info != withInfo {
		return ""
	}
	return a.reason.String()
}

// check compares what an attack got with what its row expects.
func (a hostileAttack) check(t *testing.T, got hostileOutcome) {
	t.Helper()
	if a.resets() {
		if got.level != "rst" || "RST_STREAM "+got.note != string(a.info) {
			t.Errorf("%s: got %v %s; want %s", a.name, got, got.note, a.want())
		}
		return
	}
	if msg, ok := a.library(); ok {
		if got.code != a.code || got.reason != "" || got.note != fmt.Sprintf("%q", msg) {
			t.Errorf("%s: got %v %s; want %s", a.name, got, got.note, a.want())
		}
		return
	}
	if got.code == codes.Internal || got.code == codes.Unknown {
		t.Errorf("%s: the server answered %v %s to hostile input: never INTERNAL nor UNKNOWN", a.name, got, got.note)
	}
	if got.code != a.code || got.reason != a.wantReason() {
		t.Errorf("%s: got %v %s; want %s", a.name, got, got.note, a.want())
	}
}

// TestHostileInputs attacks the built server in production mode with a
// table of hostile inputs: malformed points, tampered and forged
// transitInfo, undecodable requests, oversized batches, authentication
// bypasses, owners trying to identify, rate limits, floods of
// unauthenticated bodies and of idle streams, and key store faults. Each
// row says what the server must answer (a gRPC code and an ErrorInfo
// reason, for the call or for the attacking item); after each row the
// process must be alive, its service health SERVING and its RSS within
// 64 MiB of what it was idle. The table of results is logged at the end.
//
// The service never answers INTERNAL to hostile input. A few rows attack
// HTTP/2 or the gRPC framing themselves, which grpc-go answers before any
// code of the service runs: they expect what the library does (a reset
// stream, a closed connection, or its own status; see resetWith and
// fromGRPCLibrary).
//
// The two floods are measured: their RSS figures are logged on lines
// starting with "RSS:".
func TestHostileInputs(t *testing.T) {
	t.Parallel()
	began := time.Now()
	h := newHostileEnv(t)
	t.Logf("RSS: idle %s (pid %d), set up in %v", fmtMiB(h.idleRSS), h.pid, time.Since(began).Round(time.Millisecond))

	attacks := h.attacks()
	if len(attacks) < 40 {
		t.Fatalf("%d attacks; want at least 40", len(attacks))
	}
	type result struct {
		name, want, got string
		rss             int64
		ok              bool
	}
	var results []result
	for _, a := range attacks {
		r := result{name: a.name, want: a.want(), got: "(not run)"}
		r.ok = t.Run(a.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			got := a.run(ctx, t)
			r.got = got.String()
			if got.note != "" {
				r.got += " " + got.note
			}
			a.check(t, got)
			r.rss = h.checkAlive(t)
		})
		results = append(results, r)
		if h.exited() {
			t.Errorf("the server died during %q: the other attacks are not run", a.name)
			break
		}
	}

	var b strings.Builder
	fmt.Fprintf(&b, "%d attacks on the server (idle RSS %s):\n", len(results), fmtMiB(h.idleRSS))
	fmt.Fprintf(&b, "%-4s %-62s %-38s %-60s %10s\n", "ok", "attack", "expected", "got", "RSS")
	for _, r := range results {
		mark := "ok"
		if !r.ok {
			mark = "FAIL"
		}
		fmt.Fprintf(&b, "%-4s %-62s %-38s %-60s %10s\n", mark, r.name, r.want, r.got, fmtMiB(r.rss))
	}
	t.Logf("attack → code/reason → RSS\n%s", b.String())
	t.Logf("TestHostileInputs ran in %v", time.Since(began).Round(time.Millisecond))
}
