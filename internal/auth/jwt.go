package auth

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// JWTLeeway is the clock skew tolerated on exp, nbf and iat.
const JWTLeeway = 30 * time.Second

// MaxTokenLen bounds the length of a bearer token.
const MaxTokenLen = 8192

// jwtAlgorithms are the signature algorithms accepted: asymmetric only, so
// that the service holds no secret able to mint tokens.
var jwtAlgorithms = []jose.SignatureAlgorithm{
	jose.RS256, jose.RS384, jose.RS512,
	jose.PS256, jose.PS384, jose.PS512,
	jose.ES256, jose.ES384, jose.ES512,
	jose.EdDSA,
}

// JWTVerifier verifies OAuth2 / OIDC bearer tokens (signed JWTs) issued by
// one issuer for one audience. It is safe for concurrent use.
type JWTVerifier struct {
	key      any // *jose.JSONWebKeySet or a crypto.PublicKey
	issuer   string
	audience string
	now      func() time.Time
}

// NewJWTVerifier returns a verifier of tokens signed by key, which is a
// *jose.JSONWebKeySet (tokens must then name their key with "kid"), or an
// *rsa.PublicKey, *ecdsa.PublicKey or ed25519.PublicKey. Issuer and audience
// are required: a token must carry exactly this "iss" and list this "aud".
func NewJWTVerifier(key any, issuer, audience string) (*JWTVerifier, error) {
	if issuer == "" || audience == "" {
		return nil, errors.New("auth: JWT verification needs an issuer and an audience")
	}
	switch k := key.(type) {
	case *jose.JSONWebKeySet:
		if len(k.Keys) == 0 {
			return nil, errors.New("auth: the JWKS has no key")
		}
		for _, jwk := range k.Keys {
			if !jwk.IsPublic() {
				return nil, errors.New("auth: the JWKS holds a private or symmetric key: give public keys only")
			}
		}
	case *rsa.PublicKey, *ecdsa.PublicKey, ed25519.PublicKey:
	default:
		return nil, fmt.Errorf("auth: unsupported JWT verification key type %T", key)
	}
	return &JWTVerifier{key: key, issuer: issuer, audience: audience, now: time.Now}, nil
}

// LoadJWTKey reads the verification keys of a [JWTVerifier] from a file: a
// JWKS (JSON, {"keys": [...]}) or a PEM public key ("PUBLIC KEY", PKIX).
func LoadJWTKey(path string) (any, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("auth: reading the JWT key: %v", err)
	}
	if block, _ := pem.Decode(b); block != nil {
		if block.Type != "PUBLIC KEY" {
			return nil, fmt.Errorf("auth: %s: want a PEM \"PUBLIC KEY\" block, got %q", path, block.Type)
		}
		pub, err := x509.ParsePKIXPublicKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("auth: %s: bad public key", path)
		}
		return pub.(crypto.PublicKey), nil
	}
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(b, &set); err != nil {
		return nil, fmt.Errorf("auth: %s is neither a PEM public key nor a JWKS", path)
	}
	return &set, nil
}

// Verify checks a token's signature, issuer, audience, expiry (required)
// and not-before, and returns its subject. Every failure is
// ErrInvalidToken (or ErrNoPrincipal for a token without a usable "sub"),
// without detail: the caller learns nothing about the check that failed.
func (v *JWTVerifier) Verify(token string) (string, error) {
	if token == "" || len(token) > MaxTokenLen {
		return "", ErrInvalidToken
	}
	tok, err := jwt.ParseSigned(token, jwtAlgorithms)
	if err != nil {
		return "", ErrInvalidToken
	}
	var c jwt.Claims
	if err := tok.Claims(v.key, &c); err != nil {
		return "", ErrInvalidToken
	}
	if c.Expiry == nil {
		return "", ErrInvalidToken
	}
	err = c.ValidateWithLeeway(jwt.Expected{
		Issuer:      v.issuer,
		AnyAudience: jwt.Audience{v.audience},
		Time:        v.now(),
	}, JWTLeeway)
	if err != nil {
		return "", ErrInvalidToken
	}
	if !validPrincipal(c.Subject) {
		return "", ErrNoPrincipal
	}
	return c.Subject, nil
}
