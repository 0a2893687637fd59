package e2e

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ehealth-pseudo/pseudonymizer/internal/servertest"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/gtank/ristretto255"
	"golang.org/x/net/http2/hpack"
	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/ehealth-pseudo/pseudonymizer/client"
	"github.com/ehealth-pseudo/pseudonymizer/internal/auth"
	"github.com/ehealth-pseudo/pseudonymizer/internal/point"
	"github.com/ehealth-pseudo/pseudonymizer/internal/rpcstatus"
	"github.com/ehealth-pseudo/pseudonymizer/internal/testpki"
	"github.com/ehealth-pseudo/pseudonymizer/internal/transit"
	"github.com/ehealth-pseudo/pseudonymizer/owner"
	pb "github.com/ehealth-pseudo/pseudonymizer/proto/pseudonymizer/v1"
	"github.com/ehealth-pseudo/pseudonymizer/pseudonym"
)

// Full method names of the attacked calls.
const (
	pseudonymizePath   = "/pseudonymizer.v1.Pseudonymizer/Pseudonymize"
	identifyStreamPath = "/pseudonymizer.v1.Pseudonymizer/IdentifyStream"
)

// Reasons, shorter.
const (
	rUnspecified   = pb.ErrorReason_ERROR_REASON_UNSPECIFIED
	rInvalidPoint  = pb.ErrorReason_ERROR_REASON_INVALID_POINT
	rMalformedTI   = pb.ErrorReason_ERROR_REASON_MALFORMED_TRANSIT_INFO
	rUnknownKid    = pb.ErrorReason_ERROR_REASON_UNKNOWN_KID
	rBadTag        = pb.ErrorReason_ERROR_REASON_BAD_TAG
	rWrongAudience = pb.ErrorReason_ERROR_REASON_WRONG_AUDIENCE
	rNotYetValid   = pb.ErrorReason_ERROR_REASON_NOT_YET_VALID
	rExpired       = pb.ErrorReason_ERROR_REASON_EXPIRED
	rWrongSubject  = pb.ErrorReason_ERROR_REASON_WRONG_SUBJECT
	rTooLarge      = pb.ErrorReason_ERROR_REASON_BATCH_TOO_LARGE
	rUnknownDomain = pb.ErrorReason_ERROR_REASON_UNKNOWN_DOMAIN
	rNotAllowed    = pb.ErrorReason_ERROR_REASON_OPERATION_NOT_ALLOWED
	rRateLimited   = pb.ErrorReason_ERROR_REASON_RATE_LIMITED
	rMalformedReq  = pb.ErrorReason_ERROR_REASON_MALFORMED_REQUEST
	rLifetime      = pb.ErrorReason_ERROR_REASON_LIFETIME_TOO_LONG
	rExhausted     = pb.ErrorReason_ERROR_REASON_TRANSIT_KEY_EXHAUSTED
)

// callOutcome is the outcome of a failed call.
func callOutcome(err error) hostileOutcome {
	st := status.Convert(err)
	return hostileOutcome{code: st.Code(), reason: rpcstatus.ReasonOf(st), level: "call"}
}

// itemOutcome is the outcome of one item of a successful call (nil: OK).
func itemOutcome(st *spb.Status) hostileOutcome {
	if st == nil {
		return hostileOutcome{code: codes.OK, level: "item"}
	}
	s := status.FromProto(st)
	return hostileOutcome{code: s.Code(), reason: rpcstatus.ReasonOf(s), level: "item"}
}

// Protobuf encodings written by hand.

func appendPBBytes(b []byte, num protowire.Number, v []byte) []byte {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendBytes(b, v)
}

// pseudonymizeBody encodes a PseudonymizeRequest (also the shape of an
// IdentifyRequest's domain and items) from already encoded items.
func pseudonymizeBody(domain []byte, items ...[]byte) []byte {
	b := appendPBBytes(nil, 1, domain)
	for _, it := range items {
		b = appendPBBytes(b, 2, it)
	}
	return b
}

// encItem encodes a PseudonymizeItem.
func encItem(id, blinded []byte) []byte {
	var b []byte
	if id != nil {
		b = appendPBBytes(b, 1, id)
	}
	if blinded != nil {
		b = appendPBBytes(b, 2, blinded)
	}
	return b
}

// emptyItemsBody is a request of domain with n empty items, two bytes
// each on the wire.
func emptyItemsBody(domain string, n int) []byte {
	b := appendPBBytes(make([]byte, 0, 32+2*n), 1, []byte(domain))
	for range n {
		b = append(b, 0x12, 0x00) // field 2, length-delimited, length 0
	}
	return b
}

// streamChunk wraps an encoded IdentifyRequest as an IdentifyStreamRequest.
func streamChunk(req []byte) []byte { return appendPBBytes(nil, 1, req) }

// Calls.

func (h *hostileEnv) blinded(t *testing.T) []byte {
	t.Helper()
	b, _, err := client.Blind(h.niss)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// pseudonymizeItem pseudonymizes one blinded value and returns its
// outcome; a success must unblind into a transit pseudonym.
func (h *hostileEnv) pseudonymizeItem(ctx context.Context, t *testing.T, cc *grpc.ClientConn, domain string, blinded []byte) hostileOutcome {
	t.Helper()
	resp, err := pb.NewPseudonymizerClient(cc).Pseudonymize(ctx, &pb.PseudonymizeRequest{
		Domain: domain, Items: []*pb.PseudonymizeItem{{Id: "attack", Blinded: blinded}},
	})
	if err != nil {
		return callOutcome(err)
	}
	if len(resp.GetResults()) != 1 {
		t.Fatalf("%d results for 1 item", len(resp.GetResults()))
	}
	return itemOutcome(resp.GetResults()[0].GetError())
}

// identify asks the service, on cc, to identify the transit pseudonym
// (point pt, transitInfo info) blinded as a client does. A success must
// give the patient's NISS.
func (h *hostileEnv) identify(ctx context.Context, t *testing.T, cc *grpc.ClientConn, domain string, pt [32]byte, info string) hostileOutcome {
	t.Helper()
	B, u, err := client.BlindTransit(&pseudonym.Transit{Point: pt, Info: info})
	if err != nil {
		t.Fatal(err)
	}
	return h.identifyBlinded(ctx, t, cc, domain, B, info, u)
}

func (h *hostileEnv) identifyBlinded(ctx context.Context, t *testing.T, cc *grpc.ClientConn, domain string, B []byte, info string, u *client.Unblinder) hostileOutcome {
	t.Helper()
	resp, err := pb.NewPseudonymizerClient(cc).Identify(ctx, &pb.IdentifyRequest{
		Domain: domain, Items: []*pb.IdentifyItem{{Id: "attack", Blinded: B, TransitInfo: info}},
	})
	if err != nil {
		return callOutcome(err)
	}
	if len(resp.GetResults()) != 1 {
		t.Fatalf("%d results for 1 item", len(resp.GetResults()))
	}
	r := resp.GetResults()[0]
	out := itemOutcome(r.GetError())
	if out.code == codes.OK && u != nil {
		if id, err := u.Identify(r.GetPoint()); err != nil || !bytes.Equal(id, h.niss) {
			t.Errorf("identify succeeded with another identifier (%v)", err)
			out.note = "(wrong identifier)"
		}
	}
	return out
}

// convert asks the service, on cc, to convert a transit pseudonym.
func (h *hostileEnv) convert(ctx context.Context, t *testing.T, cc *grpc.ClientConn, from, to string, pt [32]byte, info string) hostileOutcome {
	t.Helper()
	B, _, err := client.BlindTransit(&pseudonym.Transit{Point: pt, Info: info})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := pb.NewPseudonymizerClient(cc).ConvertTo(ctx, &pb.ConvertToRequest{
		FromDomain: from, ToDomain: to, Items: []*pb.ConvertItem{{Id: "attack", Blinded: B, TransitInfo: info}},
	})
	if err != nil {
		return callOutcome(err)
	}
	if len(resp.GetResults()) != 1 {
		t.Fatalf("%d results for 1 item", len(resp.GetResults()))
	}
	return itemOutcome(resp.GetResults()[0].GetError())
}

// rawUnary sends body as a Pseudonymize request on cc; on success, the
// outcome is that of the first item (OK for a request without items).
func rawUnary(ctx context.Context, cc *grpc.ClientConn, body []byte) hostileOutcome {
	var resp pb.PseudonymizeResponse
	if err := cc.Invoke(ctx, pseudonymizePath, servertest.RawRequest(body), &resp, grpc.ForceCodecV2(servertest.RawCodec{})); err != nil {
		return callOutcome(err)
	}
	if len(resp.GetResults()) == 0 {
		return hostileOutcome{code: codes.OK, level: "call"}
	}
	return itemOutcome(resp.GetResults()[0].GetError())
}

var identifyStreamDesc = grpc.StreamDesc{StreamName: "IdentifyStream", ServerStreams: true, ClientStreams: true}

// rawStream sends msgs as the messages of an IdentifyStream on cc, closes
// its side unless idle, and reads until the stream ends. The outcome is the
// stream's status, noting how many responses came first.
func rawStream(ctx context.Context, cc *grpc.ClientConn, idle bool, msgs ...[]byte) hostileOutcome {
	cs, err := cc.NewStream(ctx, &identifyStreamDesc, identifyStreamPath, grpc.ForceCodecV2(servertest.RawCodec{}))
	if err != nil {
		return callOutcome(err)
	}
	for _, m := range msgs {
		if err := cs.SendMsg(servertest.RawRequest(m)); err != nil {
			break // the status comes with RecvMsg
		}
	}
	if !idle {
		_ = cs.CloseSend()
	}
	n := 0
	for {
		var resp pb.IdentifyStreamResponse
		err := cs.RecvMsg(&resp)
		if errors.Is(err, io.EOF) {
			return hostileOutcome{code: codes.OK, level: "stream", note: fmt.Sprintf("after %d responses", n)}
		}
		if err != nil {
			out := callOutcome(err)
			out.level = "stream"
			out.note = fmt.Sprintf("after %d responses", n)
			return out
		}
		n++
	}
}

// Transit pseudonyms, tampered and forged.

// parts splits a transitInfo into its five compact JWE parts.
func jweParts(info string) []string { return strings.Split(info, ".") }

// flipFirst changes the first character of a base64url text: the decoded
// bytes change, the text stays valid.
func flipFirst(s string) string {
	c := byte('A')
	if s[0] == 'A' {
		c = 'B'
	}
	return string(c) + s[1:]
}

// editHeader rewrites the protected header of a transitInfo with edit.
func editHeader(t *testing.T, info string, edit func(h string) string) string {
	t.Helper()
	p := jweParts(info)
	hj, err := base64.RawURLEncoding.DecodeString(p[0])
	if err != nil {
		t.Fatal(err)
	}
	edited := edit(string(hj))
	if edited == string(hj) {
		t.Fatalf("the header edit changed nothing in %s", hj)
	}
	p[0] = base64.RawURLEncoding.EncodeToString([]byte(edited))
	return strings.Join(p, ".")
}

func jweHeader(t *testing.T, info string) *transit.Header {
	t.Helper()
	hd, err := transit.ParseHeader(info)
	if err != nil {
		t.Fatal(err)
	}
	return hd
}

// ownerTransit is a transit form the prescription service makes of the
// patient's pseudonym, with its owner SDK and keys from its owner policy.
func (h *hostileEnv) ownerTransit(t *testing.T, opts ...owner.TransitOption) *pseudonym.Transit {
	t.Helper()
	tr, err := h.rxOwner.InTransit(h.atRx, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

// adminSeal seals s under the active transit key of prescriptions_v1 as
// read from Vault by an administrator, with any claims.
func (h *hostileEnv) adminSeal(t *testing.T, s *ristretto255.Scalar, c *transit.Claims) string {
	t.Helper()
	raw := map[string][]byte{}
	for kid, k := range h.adminKey.Transit.Keys {
		raw[kid] = k
	}
	ks, err := transit.NewKeySet(h.adminKey.Transit.Active, raw)
	if err != nil {
		t.Fatal(err)
	}
	info, err := ks.Seal(s, c, nil)
	if err != nil {
		t.Fatal(err)
	}
	return info
}

// Bearer tokens.

// jwtClaims are valid claims for the server's issuer and audience.
func jwtClaims(sub string) jwt.Claims {
	now := time.Now()
	return jwt.Claims{
		Issuer: hostileIssuer, Subject: sub, Audience: jwt.Audience{hostileAudience},
		IssuedAt: jwt.NewNumericDate(now), NotBefore: jwt.NewNumericDate(now.Add(-time.Minute)),
		Expiry: jwt.NewNumericDate(now.Add(5 * time.Minute)),
	}
}

func signJWT(t *testing.T, alg jose.SignatureAlgorithm, key any, kid string, claims any) string {
	t.Helper()
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: jose.JSONWebKey{Key: key, KeyID: kid}},
		(&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		t.Fatal(err)
	}
	tok, err := jwt.Signed(signer).Claims(claims).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// token is a bearer token signed by the identity provider's real key.
func (h *hostileEnv) token(t *testing.T, c jwt.Claims) string {
	t.Helper()
	return signJWT(t, jose.ES256, h.jwtKey, hostileKid, c)
}

func withBearer(ctx context.Context, token string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
}

// domainOutcome asks for a domain's settings on cc.
func domainOutcome(ctx context.Context, cc *grpc.ClientConn, name string) hostileOutcome {
	if _, err := pb.NewPseudonymizerClient(cc).GetDomain(ctx, &pb.GetDomainRequest{Name: name}); err != nil {
		return callOutcome(err)
	}
	return hostileOutcome{code: codes.OK, level: "call"}
}

// sameStatus fails the test unless two errors carry identical statuses.
func sameStatus(t *testing.T, what string, a, b error) string {
	t.Helper()
	if !proto.Equal(status.Convert(a).Proto(), status.Convert(b).Proto()) {
		t.Errorf("%s: the statuses differ: %v / %v", what, a, b)
		return "(statuses differ)"
	}
	return "(identical to unknown)"
}

// Non-canonical ristretto255 encodings (RFC 9496, A.2).
var (
	pointP        = mustDecodeHex("edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f") // s = p
	pointNegative = mustDecodeHex("0100000000000000000000000000000000000000000000000000000000000000") // s = 1, negative
)

func mustDecodeHex(s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		panic(err)
	}
	return b
}

// attacks is the table of TestHostileInputs.
func (h *hostileEnv) attacks() []hostileAttack {
	alic := h.conns[alice]
	pseudonymizePoint := func(b []byte) func(context.Context, *testing.T) hostileOutcome {
		return func(ctx context.Context, t *testing.T) hostileOutcome {
			return h.pseudonymizeItem(ctx, t, alic, rxDomain, b)
		}
	}
	// identifyInfo identifies the patient's transit point with another
	// transitInfo, as Alice.
	identifyInfo := func(info func(t *testing.T) string) func(context.Context, *testing.T) hostileOutcome {
		return func(ctx context.Context, t *testing.T) hostileOutcome {
			return h.identify(ctx, t, alic, rxDomain, h.trRx.Point, info(t))
		}
	}
	// tamper edits the parts of Alice's transitInfo.
	tamper := func(edit func(p []string) []string) func(context.Context, *testing.T) hostileOutcome {
		return identifyInfo(func(*testing.T) string { return strings.Join(edit(jweParts(h.trRx.Info)), ".") })
	}
	identifyTransit := func(cc *grpc.ClientConn, domain string, tr func(t *testing.T) *pseudonym.Transit) func(context.Context, *testing.T) hostileOutcome {
		return func(ctx context.Context, t *testing.T) hostileOutcome {
			x := tr(t)
			return h.identify(ctx, t, cc, domain, x.Point, x.Info)
		}
	}
	raw := func(body func() []byte) func(context.Context, *testing.T) hostileOutcome {
		return func(ctx context.Context, t *testing.T) hostileOutcome { return rawUnary(ctx, alic, body()) }
	}
	validItem := func(t *testing.T) []byte { return encItem([]byte("ok"), h.blinded(t)) }
	jwtCall := func(tok func(t *testing.T) string) func(context.Context, *testing.T) hostileOutcome {
		return func(ctx context.Context, t *testing.T) hostileOutcome {
			return domainOutcome(withBearer(ctx, tok(t)), h.noCert, rxDomain)
		}
	}
	withCert := func(cn, uri string) func(context.Context, *testing.T) hostileOutcome {
		return func(ctx context.Context, t *testing.T) hostileOutcome {
			cert := h.pk.ca.Client(t, cn, uri)
			cc := dialAddrs(t, []string{h.srv.addr}, grpc.WithTransportCredentials(h.tlsCreds(&cert)))
			return domainOutcome(ctx, cc, rxDomain)
		}
	}

	return []hostileAttack{
		// Controls: the inputs the attacks alter are accepted as they are.
		{"control: pseudonymize a valid blinded point", codes.OK, 0, withInfo, func(ctx context.Context, t *testing.T) hostileOutcome {
			return h.pseudonymizeItem(ctx, t, alic, rxDomain, h.blinded(t))
		}},
		{"control: identify Alice's transit pseudonym", codes.OK, 0, withInfo, identifyInfo(func(*testing.T) string { return h.trRx.Info })},

		// Bad points.
		{"point of 31 bytes", codes.InvalidArgument, rInvalidPoint, withInfo, func(ctx context.Context, t *testing.T) hostileOutcome {
			return h.pseudonymizeItem(ctx, t, alic, rxDomain, h.blinded(t)[:31])
		}},
		{"point of 33 bytes", codes.InvalidArgument, rInvalidPoint, withInfo, func(ctx context.Context, t *testing.T) hostileOutcome {
			return h.pseudonymizeItem(ctx, t, alic, rxDomain, append(h.blinded(t), 0))
		}},
		{"point of 0 bytes", codes.InvalidArgument, rInvalidPoint, withInfo, pseudonymizePoint(nil)},
		{"non-canonical point (s = p)", codes.InvalidArgument, rInvalidPoint, withInfo, pseudonymizePoint(pointP)},
		{"non-canonical point (negative s)", codes.InvalidArgument, rInvalidPoint, withInfo, pseudonymizePoint(pointNegative)},
		{"identity point (32 zero bytes)", codes.InvalidArgument, rInvalidPoint, withInfo, pseudonymizePoint(make([]byte, 32))},
		{"all-0xff point", codes.InvalidArgument, rInvalidPoint, withInfo, pseudonymizePoint(bytes.Repeat([]byte{0xff}, 32))},
		{"identify: all-0xff point, valid transitInfo", codes.InvalidArgument, rInvalidPoint, withInfo, func(ctx context.Context, t *testing.T) hostileOutcome {
			return h.identifyBlinded(ctx, t, alic, rxDomain, bytes.Repeat([]byte{0xff}, 32), h.trRx.Info, nil)
		}},

		// transitInfo tampering.
		{"transitInfo: header exp +1 h (re-encoded)", codes.InvalidArgument, rBadTag, withInfo, identifyInfo(func(t *testing.T) string {
			exp := jweHeader(t, h.trRx.Info).Exp
			return editHeader(t, h.trRx.Info, func(s string) string {
				return strings.Replace(s, fmt.Sprintf(`"exp":%d`, exp), fmt.Sprintf(`"exp":%d`, exp+3600), 1)
			})
		})},
		{"transitInfo: header kid unknown", codes.FailedPrecondition, rUnknownKid, withInfo, identifyInfo(func(t *testing.T) string {
			kid := jweHeader(t, h.trRx.Info).Kid
			return editHeader(t, h.trRx.Info, func(s string) string {
				return strings.Replace(s, `"kid":"`+kid+`"`, `"kid":"t999"`, 1)
			})
		})},
		{"transitInfo: header with a zip member", codes.InvalidArgument, rMalformedTI, withInfo, identifyInfo(func(t *testing.T) string {
			return editHeader(t, h.trRx.Info, func(s string) string { return strings.Replace(s, "{", `{"zip":"DEF",`, 1) })
		})},
		{"transitInfo: encrypted key part not empty", codes.InvalidArgument, rMalformedTI, withInfo, tamper(func(p []string) []string {
			p[1] = "AAAA"
			return p
		})},
		{"transitInfo: IV altered", codes.InvalidArgument, rBadTag, withInfo, tamper(func(p []string) []string {
			p[2] = flipFirst(p[2])
			return p
		})},
		{"transitInfo: IV of 18 characters", codes.InvalidArgument, rMalformedTI, withInfo, tamper(func(p []string) []string {
			p[2] += "AA"
			return p
		})},
		{"transitInfo: ciphertext altered", codes.InvalidArgument, rBadTag, withInfo, tamper(func(p []string) []string {
			p[3] = flipFirst(p[3])
			return p
		})},
		{"transitInfo: tag altered", codes.InvalidArgument, rBadTag, withInfo, tamper(func(p []string) []string {
			p[4] = flipFirst(p[4])
			return p
		})},
		{"transitInfo: tag of 24 characters", codes.InvalidArgument, rMalformedTI, withInfo, tamper(func(p []string) []string {
			p[4] += "AA"
			return p
		})},
		{"transitInfo: 4 parts", codes.InvalidArgument, rMalformedTI, withInfo, tamper(func(p []string) []string { return p[:4] })},
		{"transitInfo: empty", codes.InvalidArgument, rMalformedTI, withInfo, identifyInfo(func(*testing.T) string { return "" })},
		{"transitInfo: 8 kB", codes.InvalidArgument, rMalformedTI, withInfo, tamper(func(p []string) []string {
			p[3] += strings.Repeat("A", 8<<10)
			return p
		})},
		{"transitInfo: TherLink's header on Alice's ciphertext", codes.InvalidArgument, rBadTag, withInfo, identifyInfo(func(t *testing.T) string {
			if jweHeader(t, h.trTl.Info).Kid != jweHeader(t, h.trRx.Info).Kid {
				t.Fatal("the kids differ: the swapped header would be an unknown kid, not a tag failure")
			}
			p := jweParts(h.trRx.Info)
			p[0] = jweParts(h.trTl.Info)[0]
			return strings.Join(p, ".")
		})},
		{"transitInfo: TherLink's, sent to prescriptions_v1", codes.InvalidArgument, rBadTag, withInfo, func(ctx context.Context, t *testing.T) hostileOutcome {
			return h.identify(ctx, t, alic, rxDomain, h.trTl.Point, h.trTl.Info)
		}},
		{"transitInfo: real key, TherLink's audience", codes.InvalidArgument, rWrongAudience, withInfo, identifyInfo(func(t *testing.T) string {
			s, _ := point.RandomScalar(nil)
			return h.adminSeal(t, s, &transit.Claims{Aud: tlSpec.audience, Iat: time.Now(), TTL: 5 * time.Minute})
		})},
		{"transitInfo: real key, zero scalar", codes.InvalidArgument, rMalformedTI, withInfo, identifyInfo(func(t *testing.T) string {
			return h.adminSeal(t, ristretto255.NewScalar(), &transit.Claims{Aud: hostileRx.audience, Iat: time.Now(), TTL: 5 * time.Minute})
		})},
		{"transitInfo: expired (iat -10 min, ttl 5 min)", codes.FailedPrecondition, rExpired, withInfo, identifyTransit(alic, rxDomain, func(t *testing.T) *pseudonym.Transit {
			return h.ownerTransit(t, owner.IssuedAt(time.Now().Add(-10*time.Minute)))
		})},
		{"transitInfo: iat 10 min in the future", codes.FailedPrecondition, rNotYetValid, withInfo, identifyTransit(alic, rxDomain, func(t *testing.T) *pseudonym.Transit {
			return h.ownerTransit(t, owner.IssuedAt(time.Now().Add(10*time.Minute)))
		})},
		{"transitInfo: 100-year lifetime, key read with the admin token", codes.InvalidArgument, rLifetime, withInfo, func(ctx context.Context, t *testing.T) hostileOutcome {
			o, err := owner.New(ctx, rxDomain, owner.StaticKeys{D: h.adminKey}, owner.WithLogger(discard))
			if err != nil {
				t.Fatal(err)
			}
			defer o.Close()
			tr, err := o.InTransit(h.atRx, owner.TTL(100*365*24*time.Hour))
			if err != nil {
				t.Fatal(err)
			}
			return h.identify(ctx, t, alic, rxDomain, tr.Point, tr.Info)
		}},
		{"transitInfo: bound to Bob, identified by Alice", codes.PermissionDenied, rWrongSubject, withInfo, identifyTransit(alic, rxDomain, func(t *testing.T) *pseudonym.Transit {
			return h.ownerTransit(t, owner.Subject(bob))
		})},
		{"convert: tag altered", codes.InvalidArgument, rBadTag, withInfo, func(ctx context.Context, t *testing.T) hostileOutcome {
			tr := h.ownerTransit(t)
			p := jweParts(tr.Info)
			p[4] = flipFirst(p[4])
			return h.convert(ctx, t, h.conns[rxService], rxDomain, tlDomain, tr.Point, strings.Join(p, "."))
		}},
		{"convert: TherLink's transitInfo as prescriptions_v1's", codes.InvalidArgument, rBadTag, withInfo, func(ctx context.Context, t *testing.T) hostileOutcome {
			return h.convert(ctx, t, h.conns[rxService], rxDomain, tlDomain, h.trTl.Point, h.trTl.Info)
		}},

		// Encodings.
		{"invalid UTF-8 in the domain", codes.InvalidArgument, rMalformedReq, withInfo, raw(func() []byte {
			return pseudonymizeBody([]byte(rxDomain+"\xff"), encItem([]byte("a"), make([]byte, 32)))
		})},
		{"invalid UTF-8 in an item id", codes.InvalidArgument, rMalformedReq, withInfo, func(ctx context.Context, t *testing.T) hostileOutcome {
			return rawUnary(ctx, alic, pseudonymizeBody([]byte(rxDomain), encItem([]byte("\xc3\x28"), h.blinded(t))))
		}},
		{"malformed protobuf (ff ff ff)", codes.InvalidArgument, rMalformedReq, withInfo, raw(func() []byte { return []byte{0xff, 0xff, 0xff} })},
		{"truncated message (last item cut)", codes.InvalidArgument, rMalformedReq, withInfo, func(ctx context.Context, t *testing.T) hostileOutcome {
			b := pseudonymizeBody([]byte(rxDomain), validItem(t), validItem(t))
			return rawUnary(ctx, alic, b[:len(b)-10])
		}},
		{"unterminated group", codes.InvalidArgument, rMalformedReq, withInfo, raw(func() []byte {
			return protowire.AppendTag(appendPBBytes(nil, 1, []byte(rxDomain)), 5, protowire.StartGroupType)
		})},
		{"11-byte varint tag", codes.InvalidArgument, rMalformedReq, withInfo, raw(func() []byte {
			return append(appendPBBytes(nil, 1, []byte(rxDomain)), bytes.Repeat([]byte{0xff}, 10)...)
		})},
		{"item id of 10 kB", codes.InvalidArgument, rMalformedReq, withInfo, func(ctx context.Context, t *testing.T) hostileOutcome {
			return rawUnary(ctx, alic, pseudonymizeBody([]byte(rxDomain), encItem(bytes.Repeat([]byte("i"), 10_000), h.blinded(t))))
		}},
		{"item id of 256 bytes (the limit)", codes.OK, 0, withInfo, func(ctx context.Context, t *testing.T) hostileOutcome {
			return rawUnary(ctx, alic, pseudonymizeBody([]byte(rxDomain), encItem(bytes.Repeat([]byte("i"), 256), h.blinded(t))))
		}},
		{"domain with the varint wire type", codes.InvalidArgument, rUnspecified, withInfo, raw(func() []byte {
			return protowire.AppendVarint(protowire.AppendTag(nil, 1, protowire.VarintType), 42)
		})},
		{"empty domain name", codes.InvalidArgument, rUnspecified, withInfo, func(ctx context.Context, t *testing.T) hostileOutcome {
			return h.pseudonymizeItem(ctx, t, alic, "", h.blinded(t))
		}},
		{"message of 5 MiB (over the size limit)", codes.ResourceExhausted, 0, noInfo, raw(func() []byte {
			return pseudonymizeBody([]byte(rxDomain), encItem(bytes.Repeat([]byte("x"), 5<<20), nil))
		})},
		// A gRPC frame that ends before its announced length is a
		// protocol violation that grpc-go answers itself, before the
		// service sees the call (see fromGRPCLibrary).
		{"gRPC frame announcing 1 MiB, 10 bytes sent", codes.Internal, 0, fromGRPCLibrary("unexpected EOF"),
			h.rawH2(pseudonymizePath, grpcFrame(1<<20, make([]byte, 10)))},
		{"stream: gRPC frame announcing 1 MiB, 10 bytes sent", codes.Internal, 0, fromGRPCLibrary("unexpected EOF"),
			h.rawH2(identifyStreamPath, grpcFrame(1<<20, make([]byte, 10)))},
		{"HPACK bomb: a 4 kB header indexed 20 times (raw HTTP/2)", codes.Internal, 0, resetWith("FRAME_SIZE_ERROR"),
			h.rawH2(pseudonymizePath, grpcFrame(0, nil), slices.Repeat(paddingHeaders(1, 4000), 20)...)},
		{"header list of 100 KiB in CONTINUATION frames (raw HTTP/2)", codes.Unavailable, 0, noInfo,
			h.rawH2(pseudonymizePath, grpcFrame(0, nil), paddingHeaders(25, 4<<10)...)},
		{"one header value of 100 KiB (raw HTTP/2)", codes.Unavailable, 0, noInfo,
			h.rawH2(pseudonymizePath, grpcFrame(0, nil), paddingHeaders(1, 100<<10)...)},

		// Batch floods.
		{"max+1 items", codes.InvalidArgument, rTooLarge, withInfo, raw(func() []byte { return emptyItemsBody(rxDomain, hostileMaxBatch+1) })},
		{"2M empty items in 4 MiB", codes.InvalidArgument, rTooLarge, withInfo, raw(func() []byte { return emptyItemsBody(rxDomain, 2<<20) })},
		{"stream chunk of max+1 items", codes.InvalidArgument, rTooLarge, withInfo, func(ctx context.Context, t *testing.T) hostileOutcome {
			return rawStream(ctx, alic, false, streamChunk(emptyItemsBody(rxDomain, hostileMaxBatch+1)))
		}},
		{"stream chunk of 2M empty items in 4 MiB", codes.InvalidArgument, rTooLarge, withInfo, func(ctx context.Context, t *testing.T) hostileOutcome {
			return rawStream(ctx, alic, false, streamChunk(emptyItemsBody(rxDomain, 2<<20)))
		}},
		{"stream: a valid chunk, then garbage", codes.InvalidArgument, rMalformedReq, withInfo, func(ctx context.Context, t *testing.T) hostileOutcome {
			B, _, err := client.BlindTransit(h.trRx)
			if err != nil {
				t.Fatal(err)
			}
			ok, err := proto.Marshal(&pb.IdentifyStreamRequest{Request: &pb.IdentifyRequest{
				Domain: rxDomain, Items: []*pb.IdentifyItem{{Id: "1", Blinded: B, TransitInfo: h.trRx.Info}},
			}})
			if err != nil {
				t.Fatal(err)
			}
			out := rawStream(ctx, alic, false, ok, []byte{0x0a, 0xff, 0xff, 0xff, 0x0f})
			if out.note != "after 1 responses" {
				t.Errorf("the valid chunk was not answered before the garbage: %s", out.note)
			}
			return out
		}},
		{"stream that sends nothing", codes.DeadlineExceeded, rUnspecified, withInfo, func(ctx context.Context, t *testing.T) hostileOutcome {
			return rawStream(ctx, alic, true)
		}},

		// Authentication bypasses.
		{"no certificate, no token", codes.Unauthenticated, rUnspecified, withInfo, func(ctx context.Context, t *testing.T) hostileOutcome {
			return domainOutcome(ctx, h.noCert, rxDomain)
		}},
		{"no certificate, 5 MiB body", codes.Unauthenticated, rUnspecified, withInfo, func(ctx context.Context, t *testing.T) hostileOutcome {
			return rawUnary(ctx, h.noCert, pseudonymizeBody([]byte(rxDomain), encItem(bytes.Repeat([]byte("x"), 5<<20), nil)))
		}},
		{"no certificate, garbage body", codes.Unauthenticated, rUnspecified, withInfo, func(ctx context.Context, t *testing.T) hostileOutcome {
			return rawUnary(ctx, h.noCert, []byte{0xff, 0xff, 0xff})
		}},
		{"certificate from another CA", codes.Unavailable, 0, noInfo, func(ctx context.Context, t *testing.T) hostileOutcome {
			// Sent whatever CAs the server asks for (crypto/tls would
			// otherwise send none, and the call would merely be
			// unauthenticated).
			cert := testpki.NewCA(t, "attacker CA").Client(t, bob, "")
			cfg := h.tlsConfig(nil, nil)
			cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert, nil }
			cc := dialAddrs(t, []string{h.srv.addr}, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
			out := domainOutcome(ctx, cc, rxDomain)
			out.level = "tls"
			return out
		}},
		{"certificate without URI SAN nor CN", codes.Unauthenticated, rUnspecified, withInfo, withCert("", "")},
		{"certificate CN with a space", codes.Unauthenticated, rUnspecified, withInfo, withCert("doctor bob", "")},
		{"control: valid bearer token (sub Alice)", codes.OK, 0, withInfo, jwtCall(func(t *testing.T) string { return h.token(t, jwtClaims(alice)) })},
		{"JWT signed by another key, same kid", codes.Unauthenticated, rUnspecified, withInfo, jwtCall(func(t *testing.T) string {
			k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			return signJWT(t, jose.ES256, k, hostileKid, jwtClaims(alice))
		})},
		{"JWT expired", codes.Unauthenticated, rUnspecified, withInfo, jwtCall(func(t *testing.T) string {
			c := jwtClaims(alice)
			c.IssuedAt, c.NotBefore, c.Expiry = jwt.NewNumericDate(time.Now().Add(-2*time.Hour)), nil, jwt.NewNumericDate(time.Now().Add(-time.Hour))
			return h.token(t, c)
		})},
		{"JWT alg none", codes.Unauthenticated, rUnspecified, withInfo, jwtCall(func(t *testing.T) string {
			hd, _ := json.Marshal(map[string]string{"alg": "none", "typ": "JWT", "kid": hostileKid})
			cl, _ := json.Marshal(jwtClaims(alice))
			return base64.RawURLEncoding.EncodeToString(hd) + "." + base64.RawURLEncoding.EncodeToString(cl) + "."
		})},
		{"JWT HS256 keyed with the public JWKS", codes.Unauthenticated, rUnspecified, withInfo, jwtCall(func(t *testing.T) string {
			pub, _ := json.Marshal(jose.JSONWebKey{Key: &h.jwtKey.PublicKey, KeyID: hostileKid})
			return signJWT(t, jose.HS256, pub, hostileKid, jwtClaims(alice))
		})},
		{"JWT for another audience", codes.Unauthenticated, rUnspecified, withInfo, jwtCall(func(t *testing.T) string {
			c := jwtClaims(alice)
			c.Audience = jwt.Audience{"urn:e2e:another-service"}
			return h.token(t, c)
		})},
		{"JWT from another issuer", codes.Unauthenticated, rUnspecified, withInfo, jwtCall(func(t *testing.T) string {
			c := jwtClaims(alice)
			c.Issuer = "https://evil.example"
			return h.token(t, c)
		})},
		{"JWT without exp", codes.Unauthenticated, rUnspecified, withInfo, jwtCall(func(t *testing.T) string {
			c := jwtClaims(alice)
			c.Expiry = nil
			return h.token(t, c)
		})},
		{"JWT of 48 kB (valid signature, over the 8 KiB limit)", codes.Unauthenticated, rUnspecified, withInfo, jwtCall(func(t *testing.T) string {
			type padded struct {
				jwt.Claims
				Pad string `json:"pad"`
			}
			tok := signJWT(t, jose.ES256, h.jwtKey, hostileKid, padded{jwtClaims(alice), strings.Repeat("p", 36<<10)})
			if len(tok) < 40_000 || len(tok) > 60_000 {
				t.Fatalf("token of %d bytes", len(tok))
			}
			return tok
		})},
		{"valid certificate, forged token", codes.Unauthenticated, rUnspecified, withInfo, func(ctx context.Context, t *testing.T) hostileOutcome {
			return domainOutcome(withBearer(ctx, "eyJhbGciOiJFUzI1NiJ9.e30.AAAA"), alic, rxDomain)
		}},
		{"two authorization headers", codes.Unauthenticated, rUnspecified, withInfo, func(ctx context.Context, t *testing.T) hostileOutcome {
			tok := h.token(t, jwtClaims(alice))
			return domainOutcome(withBearer(withBearer(ctx, tok), tok), h.noCert, rxDomain)
		}},
		{"dev principal header, no certificate", codes.Unauthenticated, rUnspecified, withInfo, func(ctx context.Context, t *testing.T) hostileOutcome {
			return domainOutcome(metadata.AppendToOutgoingContext(ctx, auth.DevPrincipalHeader, alice), h.noCert, rxDomain)
		}},
		{"dev principal header naming Alice, Bob's certificate", codes.PermissionDenied, rWrongSubject, withInfo, func(ctx context.Context, t *testing.T) hostileOutcome {
			tr := h.ownerTransit(t, owner.Subject(alice))
			return h.identify(metadata.AppendToOutgoingContext(ctx, auth.DevPrincipalHeader, alice), t, h.conns[bob], rxDomain, tr.Point, tr.Info)
		}},

		// Owners never identify.
		{"owner identifies in its domain", codes.PermissionDenied, rNotAllowed, withInfo, identifyTransit(h.conns[rxService], rxDomain, func(*testing.T) *pseudonym.Transit { return h.trRx })},
		{"control: Alice identifies in open_v1 (identify *)", codes.OK, 0, withInfo, func(ctx context.Context, t *testing.T) hostileOutcome {
			tr := h.openTransit(ctx, t)
			return h.identify(ctx, t, alic, openDomain, tr.Point, tr.Info)
		}},
		{"owner of another domain identifies where identify is *", codes.PermissionDenied, rNotAllowed, withInfo, func(ctx context.Context, t *testing.T) hostileOutcome {
			tr := h.openTransit(ctx, t)
			return h.identify(ctx, t, h.conns[therlink], openDomain, tr.Point, tr.Info)
		}},
		{"owner pseudonymizes in its domain (a dictionary of its pseudonyms)", codes.PermissionDenied, rNotAllowed, withInfo, func(ctx context.Context, t *testing.T) hostileOutcome {
			return h.pseudonymizeItem(ctx, t, h.conns[rxService], rxDomain, h.blinded(t))
		}},
		{"owner of another domain pseudonymizes where pseudonymize is *", codes.PermissionDenied, rNotAllowed, withInfo, func(ctx context.Context, t *testing.T) hostileOutcome {
			return h.pseudonymizeItem(ctx, t, h.conns[therlink], openDomain, h.blinded(t))
		}},
		{"owner converts to open_v1, then identifies there", codes.PermissionDenied, rNotAllowed, withInfo, func(ctx context.Context, t *testing.T) hostileOutcome {
			conv, err := sdk(h.conns[rxService]).Convert(ctx, rxDomain, openDomain, h.ownerTransit(t))
			if err != nil {
				t.Fatalf("the owner converting into %s: %v", openDomain, err)
			}
			return h.identify(ctx, t, h.conns[rxService], openDomain, conv.Point, conv.Info)
		}},
		{"owner identifies with a bearer token", codes.PermissionDenied, rNotAllowed, withInfo, func(ctx context.Context, t *testing.T) hostileOutcome {
			return h.identify(withBearer(ctx, h.token(t, jwtClaims(rxService))), t, h.noCert, rxDomain, h.trRx.Point, h.trRx.Info)
		}},

		// Unknown and forbidden domains.
		{"pseudonymize into an unknown domain", codes.PermissionDenied, rNotAllowed, withInfo, func(ctx context.Context, t *testing.T) hostileOutcome {
			return h.pseudonymizeItem(ctx, t, alic, "nonexistent_v9", h.blinded(t))
		}},
		{"pseudonymize into a forbidden domain", codes.PermissionDenied, rNotAllowed, withInfo, func(ctx context.Context, t *testing.T) hostileOutcome {
			c := pb.NewPseudonymizerClient(alic)
			req := func(d string) *pb.PseudonymizeRequest {
				return &pb.PseudonymizeRequest{Domain: d, Items: []*pb.PseudonymizeItem{{Blinded: h.blinded(t)}}}
			}
			_, unknown := c.Pseudonymize(ctx, req("nonexistent_v9"))
			_, forbidden := c.Pseudonymize(ctx, req(quotaDomain))
			out := callOutcome(forbidden)
			out.note = sameStatus(t, "pseudonymize", unknown, forbidden)
			return out
		}},
		{"identify in a forbidden domain", codes.PermissionDenied, rNotAllowed, withInfo, func(ctx context.Context, t *testing.T) hostileOutcome {
			c := pb.NewPseudonymizerClient(alic)
			req := func(d string) *pb.IdentifyRequest {
				return &pb.IdentifyRequest{Domain: d, Items: []*pb.IdentifyItem{{Blinded: h.blinded(t), TransitInfo: h.trRx.Info}}}
			}
			_, unknown := c.Identify(ctx, req("nonexistent_v9"))
			_, forbidden := c.Identify(ctx, req(quotaDomain))
			out := callOutcome(forbidden)
			out.note = sameStatus(t, "identify", unknown, forbidden)
			return out
		}},
		{"GetDomain of a forbidden domain", codes.PermissionDenied, rNotAllowed, withInfo, func(ctx context.Context, t *testing.T) hostileOutcome {
			c := pb.NewPseudonymizerClient(alic)
			_, unknown := c.GetDomain(ctx, &pb.GetDomainRequest{Name: "nonexistent_v9"})
			_, forbidden := c.GetDomain(ctx, &pb.GetDomainRequest{Name: quotaDomain})
			out := callOutcome(forbidden)
			out.note = sameStatus(t, "GetDomain", unknown, forbidden)
			return out
		}},
		{"GetDomain of a 10 kB path-like name", codes.PermissionDenied, rNotAllowed, withInfo, func(ctx context.Context, t *testing.T) hostileOutcome {
			return domainOutcome(ctx, alic, strings.Repeat("../", 3400))
		}},
		{"convert without the right (Alice)", codes.PermissionDenied, rNotAllowed, withInfo, func(ctx context.Context, t *testing.T) hostileOutcome {
			return h.convert(ctx, t, alic, rxDomain, tlDomain, h.trRx.Point, h.trRx.Info)
		}},
		{"convert to a domain the policy does not name", codes.PermissionDenied, rNotAllowed, withInfo, func(ctx context.Context, t *testing.T) hostileOutcome {
			return h.convert(ctx, t, h.conns[rxService], rxDomain, quotaDomain, h.trRx.Point, h.trRx.Info)
		}},
		{"convert to a named target that does not exist", codes.NotFound, rUnknownDomain, withInfo, func(ctx context.Context, t *testing.T) hostileOutcome {
			return h.convert(ctx, t, h.conns[rxService], rxDomain, ghostDomain, h.trRx.Point, h.trRx.Info)
		}},
		{"convert within one domain", codes.InvalidArgument, rUnspecified, withInfo, func(ctx context.Context, t *testing.T) hostileOutcome {
			return h.convert(ctx, t, h.conns[rxService], rxDomain, rxDomain, h.trRx.Point, h.trRx.Info)
		}},

		// Limits.
		{"rate limit: batches of 1000 until refused", codes.ResourceExhausted, rRateLimited, withInfo, h.rateLimit},
		{"rate limited principal sends max+1 items", codes.InvalidArgument, rTooLarge, withInfo, func(ctx context.Context, t *testing.T) hostileOutcome {
			return rawUnary(ctx, h.conns[greedy], emptyItemsBody(quotaDomain, hostileMaxBatch+1))
		}},
		{"seal limit: max+1 seals under one transit key", codes.FailedPrecondition, rExhausted, withInfo, h.sealLimit},

		// Floods.
		{"flood: 4×25 unauthenticated 4 MiB requests", codes.Unauthenticated, rUnspecified, withInfo, h.floodUnauthenticated},
		{"flood: 40,000 idle streams on one connection", codes.OK, 0, withInfo, h.floodStreams},

		// Key store faults, last: they change the key store for good.
		{"fault: a domain's meta in Vault is garbage", codes.OK, 0, withInfo, h.faultGarbageMeta},
		{"fault: Vault stopped", codes.OK, 0, withInfo, h.faultVaultStopped},
		{"fault: Vault back empty (lists nothing)", codes.OK, 0, withInfo, h.faultVaultEmpty},
	}
}

// rawH2 sends one call as Alice on a raw HTTP/2 connection: its
// headers plus extra ones, then payload (gRPC framing included) and the
// end of the stream.
func (h *hostileEnv) rawH2(path string, payload []byte, extra ...hpack.HeaderField) func(context.Context, *testing.T) hostileOutcome {
	return func(ctx context.Context, t *testing.T) hostileOutcome {
		cert := h.pk.clients[alice]
		out, err := h2Unary(ctx, h.srv.addr, h.tlsConfig(&cert, []string{"h2"}), path, payload, extra...)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
}

// paddingHeaders are n headers of size bytes each, with distinct names
// and values (so that HPACK cannot shrink them).
func paddingHeaders(n, size int) []hpack.HeaderField {
	out := make([]hpack.HeaderField, n)
	for i := range out {
		out[i] = hpack.HeaderField{Name: fmt.Sprintf("x-padding-%d", i), Value: strings.Repeat(string(rune('a'+i%26)), size)}
	}
	return out
}

// openTransit is Alice's transit pseudonym of the patient in open_v1.
func (h *hostileEnv) openTransit(ctx context.Context, t *testing.T) *pseudonym.Transit {
	t.Helper()
	tr, err := sdk(h.conns[alice]).Pseudonymize(ctx, openDomain, h.niss)
	if err != nil {
		t.Fatal(err)
	}
	return tr
}
