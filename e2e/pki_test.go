package e2e

import (
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"

	"github.com/ehealth-pseudo/pseudonymizer/client"
	"github.com/ehealth-pseudo/pseudonymizer/internal/testpki"
)

// The principals of the tests. The server names a caller by the first URI
// SAN of its certificate, else by its Common Name: Alice and the
// prescription service have a URI SAN (and a CN that policies do not
// list, so that a server reading the CN instead would be refused); the
// others have a CN only.
const (
	alice        = "spiffe://test/doctor-alice"
	bob          = "doctor-bob"
	pharmacist   = "pharmacist"
	rxService    = "spiffe://test/prescription-service"
	therlink     = "therlink"
	roundRobinSC = `{"loadBalancingConfig":[{"round_robin":{}}]}`
)

// Owner names in Vault (paths owners/<owner>/<domain>/k2 and the owner
// policies).
const (
	rxOwner       = "prescription-service"
	therlinkOwner = "therlink"
)

// pki holds the test CA, the server's certificate files and each
// principal's client certificate.
type pki struct {
	ca                            *testpki.CA
	caFile, serverCert, serverKey string
	clients                       map[string]tls.Certificate
}

func newPKI(t testing.TB) *pki {
	t.Helper()
	dir := t.TempDir()
	ca := testpki.NewCA(t, "e2e test CA")
	p := &pki{ca: ca, caFile: ca.WriteCA(t, dir), clients: map[string]tls.Certificate{}}
	p.serverCert, p.serverKey = testpki.WriteFiles(t, dir, "server", ca.Server(t))
	p.clients[alice] = ca.Client(t, "Alice (CN not in any policy)", alice)
	p.clients[rxService] = ca.Client(t, "prescription service (CN not in any policy)", rxService)
	for _, cn := range []string{bob, pharmacist, therlink} {
		p.clients[cn] = ca.Client(t, cn, "")
	}
	return p
}

// serverTLSArgs are the server's mTLS flags.
func (p *pki) serverTLSArgs() []string {
	return []string{"-tls-cert", p.serverCert, "-tls-key", p.serverKey, "-tls-client-ca", p.caFile}
}

// creds are the transport credentials of principal.
func (p *pki) creds(t testing.TB, principal string) credentials.TransportCredentials {
	t.Helper()
	cert, ok := p.clients[principal]
	if !ok {
		t.Fatalf("no certificate for %s", principal)
	}
	return credentials.NewTLS(&tls.Config{
		Certificates: []tls.Certificate{cert},
		RootCAs:      p.ca.Pool(),
		ServerName:   "localhost",
		MinVersion:   tls.VersionTLS13,
	})
}

// dial connects principal to the given servers with mTLS. With several
// addresses, a manual resolver lists them all and the channel balances
// calls over them round robin (what a client does with the headless
// Service of the Kubernetes deployment). opts come after the defaults.
func (p *pki) dial(t testing.TB, principal string, addrs []string, opts ...grpc.DialOption) *grpc.ClientConn {
	t.Helper()
	base := []grpc.DialOption{grpc.WithTransportCredentials(p.creds(t, principal))}
	return dialAddrs(t, addrs, append(base, opts...)...)
}

func dialAddrs(t testing.TB, addrs []string, opts ...grpc.DialOption) *grpc.ClientConn {
	t.Helper()
	var rnd [8]byte
	_, _ = rand.Read(rnd[:])
	r := manual.NewBuilderWithScheme("e2e" + hex.EncodeToString(rnd[:]))
	var st resolver.State
	for _, a := range addrs {
		st.Addresses = append(st.Addresses, resolver.Address{Addr: a})
	}
	r.InitialState(st)
	opts = append([]grpc.DialOption{grpc.WithResolvers(r), grpc.WithDefaultServiceConfig(roundRobinSC)}, opts...)
	cc, err := grpc.NewClient(r.Scheme()+":///pseudonymizer", opts...)
	if err != nil {
		t.Fatalf("dialing %v: %v", addrs, err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	return cc
}

// sdk is the client SDK over cc, with the transit cache off (every call
// reaches the service) unless opts turn it on.
func sdk(cc grpc.ClientConnInterface, opts ...client.Option) *client.Client {
	return client.New(cc, append([]client.Option{client.WithCache(0)}, opts...)...)
}
