package auth

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

func TestPrincipalFromCert(t *testing.T) {
	u1, _ := url.Parse("spiffe://example/first")
	u2, _ := url.Parse("spiffe://example/second")
	for _, tc := range []struct {
		name string
		cert *x509.Certificate
		want string
	}{
		{"first URI SAN", &x509.Certificate{URIs: []*url.URL{u1, u2}, Subject: pkix.Name{CommonName: "cn"}}, "spiffe://example/first"},
		{"CN", &x509.Certificate{Subject: pkix.Name{CommonName: "pharmacy-1"}}, "pharmacy-1"},
		{"nothing", &x509.Certificate{}, ""},
		{"CN with a space", &x509.Certificate{Subject: pkix.Name{CommonName: "a b"}}, ""},
		{"CN too long", &x509.Certificate{Subject: pkix.Name{CommonName: strings.Repeat("x", MaxPrincipalLen+1)}}, ""},
	} {
		got, err := PrincipalFromCert(tc.cert)
		if tc.want == "" {
			if !errors.Is(err, ErrNoPrincipal) {
				t.Errorf("%s: %q, %v; want ErrNoPrincipal", tc.name, got, err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%s: %q, %v; want %q", tc.name, got, err, tc.want)
		}
	}
}

func TestDevPrincipal(t *testing.T) {
	dev := New(Config{Dev: true})
	for _, tc := range []struct {
		md   metadata.MD
		want string // "" for unauthenticated
	}{
		{metadata.MD{}, DevPrincipal},
		{metadata.Pairs(DevPrincipalHeader, "alice"), "alice"},
		{metadata.Pairs(DevPrincipalHeader, "a", DevPrincipalHeader, "b"), ""},
		{metadata.Pairs(DevPrincipalHeader, "bad name"), ""},
		{metadata.Pairs("authorization", "Bearer x"), ""}, // no verifier: refused
	} {
		local := peer.NewContext(context.Background(), &peer.Peer{Addr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 5000}})
		ctx, err := dev.Authenticate(metadata.NewIncomingContext(local, tc.md))
		if tc.want == "" {
			if status.Code(err) != codes.Unauthenticated {
				t.Errorf("%v: %v; want UNAUTHENTICATED", tc.md, err)
			}
			continue
		}
		if p, ok := Principal(ctx); err != nil || !ok || p != tc.want {
			t.Errorf("%v: %q, %v", tc.md, p, err)
		}
	}
	// Outside development mode, no credentials is no access.
	if _, err := New(Config{}).Authenticate(context.Background()); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("no credentials: %v", err)
	}
}

// TestDevHeaderLoopbackOnly enumerates development mode on and off, with
// and without the dev header, over peers at loopback, private, public and
// unspecified addresses, in-process connections and none: the header (or
// the default dev principal) is honoured exactly when development mode is
// on and the peer is on this machine.
func TestDevHeaderLoopbackOnly(t *testing.T) {
	peers := []struct {
		addr  net.Addr
		local bool
	}{
		{&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)}, true},
		{&net.TCPAddr{IP: net.IPv4(127, 8, 9, 10)}, true},
		{&net.TCPAddr{IP: net.IPv6loopback}, true},
		{&net.TCPAddr{IP: net.IPv4(10, 0, 0, 1)}, false},
		{&net.TCPAddr{IP: net.IPv4(192, 168, 1, 2)}, false},
		{&net.TCPAddr{IP: net.IPv4(8, 8, 8, 8)}, false},
		{&net.TCPAddr{IP: net.IPv4zero}, false},
		{&net.TCPAddr{IP: net.ParseIP("::ffff:10.1.2.3")}, false},
		{&net.TCPAddr{IP: net.ParseIP("fe80::1")}, false},
		{&net.UnixAddr{Name: "/tmp/s", Net: "unix"}, true},
		{nil, false},
	}
	for _, devMode := range []bool{false, true} {
		a := New(Config{Dev: devMode})
		for _, p := range peers {
			for _, md := range []metadata.MD{{}, metadata.Pairs(DevPrincipalHeader, "alice")} {
				ctx := metadata.NewIncomingContext(context.Background(), md)
				if p.addr != nil {
					ctx = peer.NewContext(ctx, &peer.Peer{Addr: p.addr})
				}
				_, err := a.Authenticate(ctx)
				if want := devMode && p.local; (err == nil) != want {
					t.Errorf("dev=%v peer=%v md=%v: err=%v, want accepted=%v", devMode, p.addr, md, err, want)
				}
			}
		}
	}
}

func TestJWTVerifier(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	signer, _ := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: key}, nil)
	v, err := NewJWTVerifier(&key.PublicKey, "iss", "aud")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1_800_000_000, 0)
	v.now = func() time.Time { return now }
	sign := func(c jwt.Claims) string {
		s, err := jwt.Signed(signer).Claims(c).Serialize()
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	good := jwt.Claims{Issuer: "iss", Audience: jwt.Audience{"other", "aud"}, Subject: "svc-a", Expiry: jwt.NewNumericDate(now.Add(time.Minute))}
	if p, err := v.Verify(sign(good)); err != nil || p != "svc-a" {
		t.Fatalf("valid token: %q, %v", p, err)
	}
	// Within the leeway.
	skewed := good
	skewed.Expiry = jwt.NewNumericDate(now.Add(-JWTLeeway / 2))
	if _, err := v.Verify(sign(skewed)); err != nil {
		t.Fatalf("token expired within the leeway: %v", err)
	}
	expired := good
	expired.Expiry = jwt.NewNumericDate(now.Add(-2 * JWTLeeway))
	if _, err := v.Verify(sign(expired)); !errors.Is(err, ErrInvalidToken) {
		t.Fatalf("expired: %v", err)
	}
	// An unsigned token ("alg": "none") and a symmetric one are refused.
	hs, _ := jose.NewSigner(jose.SigningKey{Algorithm: jose.HS256, Key: []byte("0123456789abcdef0123456789abcdef")}, nil)
	hsTok, _ := jwt.Signed(hs).Claims(good).Serialize()
	if _, err := v.Verify(hsTok); !errors.Is(err, ErrInvalidToken) {
		t.Fatalf("HS256: %v", err)
	}
	parts := strings.Split(sign(good), ".")
	if _, err := v.Verify("eyJhbGciOiJub25lIn0." + parts[1] + "."); !errors.Is(err, ErrInvalidToken) {
		t.Fatalf("alg none: %v", err)
	}
	if _, err := v.Verify(strings.Repeat("a", MaxTokenLen+1)); !errors.Is(err, ErrInvalidToken) {
		t.Fatalf("huge token: %v", err)
	}
}

func TestNewJWTVerifierChecks(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if _, err := NewJWTVerifier(&key.PublicKey, "", "aud"); err == nil {
		t.Error("no issuer accepted")
	}
	if _, err := NewJWTVerifier(&key.PublicKey, "iss", ""); err == nil {
		t.Error("no audience accepted")
	}
	if _, err := NewJWTVerifier(key, "iss", "aud"); err == nil {
		t.Error("a private key accepted")
	}
	private := &jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: key, KeyID: "k"}}}
	if _, err := NewJWTVerifier(private, "iss", "aud"); err == nil {
		t.Error("a JWKS with a private key accepted")
	}
	if _, err := NewJWTVerifier(&jose.JSONWebKeySet{}, "iss", "aud"); err == nil {
		t.Error("an empty JWKS accepted")
	}
}

func TestLoadJWTKey(t *testing.T) {
	dir := t.TempDir()
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	der, _ := x509.MarshalPKIXPublicKey(pub)
	pemFile := filepath.Join(dir, "key.pem")
	if err := os.WriteFile(pemFile, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	k, err := LoadJWTKey(pemFile)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := k.(ed25519.PublicKey); !ok {
		t.Fatalf("PEM key loaded as %T", k)
	}
	if _, err := NewJWTVerifier(k, "iss", "aud"); err != nil {
		t.Fatal(err)
	}

	jwksFile := filepath.Join(dir, "jwks.json")
	b, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: pub, KeyID: "k1", Algorithm: "EdDSA"}}})
	if err := os.WriteFile(jwksFile, b, 0o600); err != nil {
		t.Fatal(err)
	}
	k, err = LoadJWTKey(jwksFile)
	if err != nil {
		t.Fatal(err)
	}
	if set, ok := k.(*jose.JSONWebKeySet); !ok || len(set.Keys) != 1 {
		t.Fatalf("JWKS loaded as %T", k)
	}

	bad := filepath.Join(dir, "bad")
	_ = os.WriteFile(bad, []byte("hello"), 0o600)
	if _, err := LoadJWTKey(bad); err == nil {
		t.Fatal("garbage accepted")
	}
}
