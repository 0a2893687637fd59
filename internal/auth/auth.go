// Package auth identifies the callers of the pseudonymizer service. The
// identity of a caller is a principal: a string that domain policies
// (keys.Policy) list.
//
// A call is authenticated by the first of these that applies:
//
//  1. A bearer token (metadata "authorization: Bearer <JWT>"), when the
//     server is configured with a [JWTVerifier]: the token must be a JWS
//     signed by a configured key, with the configured issuer ("iss") and
//     audience ("aud"), an expiry ("exp") in the future and, if present, a
//     "nbf" in the past (30 s leeway). The principal is its "sub" claim. A
//     token that is present but fails any check fails the call, even if a
//     client certificate was also given.
//  2. A client certificate verified by the server's TLS configuration
//     (mTLS). The principal is the certificate's first URI SAN (for
//     example "spiffe://ehealth.example/prescriber-app"), or, when it has
//     none, its Subject Common Name. A certificate with neither is refused.
//  3. In development mode only, and only for a caller connected from a
//     loopback address (127.0.0.0/8, ::1): the principal named by the
//     metadata "x-pseudonymizer-principal", or [DevPrincipal] when absent.
//     The header is honoured nowhere else, whatever the configuration:
//     cmd/pseudonymizer also refuses -dev on a non-loopback address.
//
// Anything else fails with UNAUTHENTICATED. Error messages are fixed and
// never say which check failed nor echo the token.
package auth

import (
	"context"
	"crypto/x509"
	"errors"
	"net"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"

	"github.com/ehealth-pseudo/pseudonymizer/internal/rpcstatus"
	pb "github.com/ehealth-pseudo/pseudonymizer/proto/pseudonymizer/v1"
)

// DevPrincipal is the principal of a development-mode call that names none.
const DevPrincipal = "dev"

// DevPrincipalHeader is the metadata key that names the caller in
// development mode.
const DevPrincipalHeader = "x-pseudonymizer-principal"

// MaxPrincipalLen bounds the length of a principal.
const MaxPrincipalLen = 256

// Errors of [PrincipalFromCert] and [JWTVerifier.Verify]. Authenticate
// reports each of them as the same UNAUTHENTICATED status, with a fixed
// message.
var (
	// ErrNoCredentials: the call carries no client certificate nor bearer
	// token.
	ErrNoCredentials = errors.New("auth: no credentials")
	// ErrNoPrincipal: the client certificate has no URI SAN and no CN, or
	// the token has no "sub".
	ErrNoPrincipal = errors.New("auth: credentials name no principal")
	// ErrInvalidToken: the bearer token failed verification.
	ErrInvalidToken = errors.New("auth: invalid bearer token")
)

type principalKey struct{}

// WithPrincipal returns a context that carries the authenticated principal.
func WithPrincipal(ctx context.Context, principal string) context.Context {
	return context.WithValue(ctx, principalKey{}, principal)
}

// Principal returns the principal the context was authenticated as.
func Principal(ctx context.Context) (string, bool) {
	p, ok := ctx.Value(principalKey{}).(string)
	return p, ok && p != ""
}

// Config says how an [Authenticator] identifies callers.
type Config struct {
	// JWT, when set, accepts bearer tokens it verifies.
	JWT *JWTVerifier
	// Dev accepts calls without credentials, naming the caller from the
	// DevPrincipalHeader metadata. Only for plaintext on a loopback address.
	Dev bool
}

// Authenticator identifies the caller of each call. It is safe for
// concurrent use.
type Authenticator struct {
	jwt *JWTVerifier
	dev bool
}

// New returns an Authenticator.
func New(cfg Config) *Authenticator {
	return &Authenticator{jwt: cfg.JWT, dev: cfg.Dev}
}

// Dev reports whether the authenticator accepts development-mode calls.
func (a *Authenticator) Dev() bool { return a.dev }

// Bearer reports whether the authenticator verifies bearer tokens.
func (a *Authenticator) Bearer() bool { return a.jwt != nil }

// unauthenticated is the status error of every failed authentication.
func unauthenticated() error {
	return rpcstatus.Error(codes.Unauthenticated, pb.ErrorReason_ERROR_REASON_UNSPECIFIED,
		"unauthenticated: a verified client certificate or a valid bearer token is required")
}

// Authenticate identifies the caller of the call ctx belongs to and returns
// a context carrying its principal (see [Principal]). Its signature is that
// of go-grpc-middleware's auth.AuthFunc. The error is an UNAUTHENTICATED
// status.
func (a *Authenticator) Authenticate(ctx context.Context) (context.Context, error) {
	p, err := a.principal(ctx)
	if err != nil {
		return nil, unauthenticated()
	}
	return WithPrincipal(ctx, p), nil
}

func (a *Authenticator) principal(ctx context.Context) (string, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	if authz := md.Get("authorization"); len(authz) > 0 {
		if a.jwt == nil || len(authz) != 1 {
			return "", ErrInvalidToken
		}
		scheme, token, ok := strings.Cut(authz[0], " ")
		if !ok || !strings.EqualFold(scheme, "bearer") {
			return "", ErrInvalidToken
		}
		return a.jwt.Verify(strings.TrimSpace(token))
	}
	if cert := peerCertificate(ctx); cert != nil {
		return PrincipalFromCert(cert)
	}
	if a.dev && peerIsLoopback(ctx) {
		names := md.Get(DevPrincipalHeader)
		switch {
		case len(names) == 0:
			return DevPrincipal, nil
		case len(names) == 1 && validPrincipal(names[0]):
			return names[0], nil
		}
		return "", ErrNoPrincipal
	}
	return "", ErrNoCredentials
}

// peerIsLoopback reports whether the call comes from a loopback address.
// An in-process connection (bufconn, a pipe) has no IP address and counts
// as loopback: it cannot come from another machine.
func peerIsLoopback(ctx context.Context) bool {
	p, ok := peer.FromContext(ctx)
	if !ok || p.Addr == nil {
		return false
	}
	switch a := p.Addr.(type) {
	case *net.TCPAddr:
		return a.IP.IsLoopback()
	case *net.UnixAddr:
		return true
	}
	if p.Addr.Network() == "bufconn" || p.Addr.Network() == "pipe" {
		return true
	}
	host, _, err := net.SplitHostPort(p.Addr.String())
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// peerCertificate returns the verified client certificate of the call, or
// nil.
func peerCertificate(ctx context.Context) *x509.Certificate {
	p, ok := peer.FromContext(ctx)
	if !ok || p.AuthInfo == nil {
		return nil
	}
	ti, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(ti.State.VerifiedChains) == 0 || len(ti.State.VerifiedChains[0]) == 0 {
		return nil
	}
	return ti.State.VerifiedChains[0][0]
}

// PrincipalFromCert returns the principal a verified client certificate
// names: its first URI SAN, else its Subject Common Name. It fails with
// ErrNoPrincipal when the certificate has neither (or an unusable one).
func PrincipalFromCert(cert *x509.Certificate) (string, error) {
	if len(cert.URIs) > 0 {
		if p := cert.URIs[0].String(); validPrincipal(p) {
			return p, nil
		}
		return "", ErrNoPrincipal
	}
	if p := cert.Subject.CommonName; validPrincipal(p) {
		return p, nil
	}
	return "", ErrNoPrincipal
}

// validPrincipal accepts 1 to MaxPrincipalLen printable ASCII characters
// without spaces, so that a principal can be logged and matched as is.
func validPrincipal(p string) bool {
	if p == "" || len(p) > MaxPrincipalLen {
		return false
	}
	for i := 0; i < len(p); i++ {
		if p[i] <= ' ' || p[i] > '~' {
			return false
		}
	}
	return true
}
