package e2e

import (
	"bytes"
	"context"
	"path/filepath"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/ehealth-pseudo/pseudonymizer/keys"
	"github.com/ehealth-pseudo/pseudonymizer/owner"
)

// TestBlindOnTheWire runs every scenario against the server in plaintext
// development mode, through a TCP proxy that records every byte in both
// directions, and checks that no identifier nor pseudonym crosses the wire
// or reaches the server's logs and metrics, in any encoding.
//
// Development mode is the only plaintext mode (loopback only); its keys
// are in the development key file instead of Vault, which the blind
// property does not depend on. Callers name themselves with the
// x-pseudonymizer-principal metadata instead of a certificate.
func TestBlindOnTheWire(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "keys.json")
	store := "file:" + keyFile

	// Domains, as an administrator creates them in the key file.
	runCtl(t, nil, append([]string{"-store", store}, ctlCreateArgs(tlSpec)...)...)
	fs, err := keys.OpenFileStore(keyFile, false)
	if err != nil {
		t.Fatal(err)
	}
	_, err = fs.CreateDomain(ctx, keys.DomainSpec{Name: rxSpec.name, Audience: rxSpec.audience, Policy: keys.Policy{
		Pseudonymize: rxSpec.pseudonymize, Identify: rxSpec.identify, Owners: rxSpec.owners, Convert: rxSpec.convert,
	}})
	if err != nil {
		t.Fatal(err)
	}

	srv := startServer(t, "pseudonymizer-dev", cleanEnv(), "-dev", "-data-dir", dir,
		"-poll-interval", "1s", "-log-level", "debug", "-shutdown-timeout", "5s")
	tap := startTap(t, srv.addr)

	sec := newSecrets()
	w := newWorld(sec, func(p string) *grpc.ClientConn {
		return dialAddrs(t, []string{tap.addr()},
			grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithChainUnaryInterceptor(devPrincipal(p)))
	})
	newOwner := func(t *testing.T, domain string, opts ...owner.Option) *owner.Owner {
		o, err := owner.New(ctx, domain, fs, append([]owner.Option{owner.WithLogger(discard)}, opts...)...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = o.Close() })
		return o
	}
	w.rx, w.tl = newOwner(t, rxDomain), newOwner(t, tlDomain)
	w.rxOwner = func(t *testing.T, opts ...owner.Option) *owner.Owner { return newOwner(t, rxDomain, opts...) }
	w.secondKey = func(t *testing.T) []byte {
		runCtl(t, nil, "-store", store, "owner-key", "create", rxOwner, rxDomain)
		k2, err := fs.OwnerKey(ctx, rxOwner, rxDomain)
		if err != nil {
			t.Fatal(err)
		}
		return k2
	}

	t.Run("scenarios", func(t *testing.T) {
		for _, sc := range scenarios {
			t.Run(sc.name, func(t *testing.T) {
				t.Parallel()
				sc.run(t, w)
			})
		}
	})

	t.Run("Blind", func(t *testing.T) {
		toServer, toClient := tap.captured()
		// The capture holds the gRPC messages in clear: the domain names
		// the requests carry, and the transitInfo values (compact JWEs,
		// whose header starts with "eyJ") of the answers.
		if !bytes.Contains(toServer, []byte(rxDomain)) || !bytes.Contains(toClient, []byte("eyJ")) {
			t.Fatal("the wire capture does not hold the gRPC messages in clear")
		}
		assertBlind(t, sec, map[string][]byte{
			"bytes received by the server": toServer,
			"bytes sent by the server":     toClient,
			"server output":                srv.output(),
			"server /metrics":              srv.metrics(t),
		})
	})
}

// devPrincipal names the caller in development mode.
func devPrincipal(p string) grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		return invoker(metadata.AppendToOutgoingContext(ctx, "x-pseudonymizer-principal", p), method, req, reply, cc, opts...)
	}
}
