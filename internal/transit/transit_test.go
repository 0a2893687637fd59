package transit

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/gtank/ristretto255"

	"github.com/ehealth-pseudo/pseudonymizer/internal/point"
	"github.com/ehealth-pseudo/pseudonymizer/protoerr"
)

var (
	key1 = bytes.Repeat([]byte{1}, 32)
	key2 = bytes.Repeat([]byte{2}, 32)
	t0   = time.Unix(1_800_000_000, 0)
)

const aud = "urn:be:ehealth:pseudo:prescriptions_v1"

func keySet(t testing.TB) *KeySet {
	ks, err := NewKeySet("k1", map[string][]byte{"k1": key1, "k2": key2})
	if err != nil {
		t.Fatal(err)
	}
	return ks
}

func scalar(t testing.TB) *ristretto255.Scalar {
	s, err := point.RandomScalar(nil)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func seal(t testing.TB, ks *KeySet, s *ristretto255.Scalar, c Claims) string {
	ti, err := ks.Seal(s, &c, nil)
	if err != nil {
		t.Fatal(err)
	}
	return ti
}

func TestSealOpen(t *testing.T) {
	ks := keySet(t)
	s := scalar(t)
	ti := seal(t, ks, s, Claims{Aud: aud, Iat: t0, TTL: 5 * time.Minute})
	o, err := ks.Open(ti, &Check{Aud: aud, Now: t0.Add(time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	if o.Scalar.Equal(s) != 1 {
		t.Fatal("scalar differs")
	}
	want := Header{Kid: "k1", Aud: aud, Iat: t0.Unix(), Exp: t0.Unix() + 300}
	if o.Header != want {
		t.Fatalf("header %+v, want %+v", o.Header, want)
	}
	if o.Extra != nil {
		t.Fatalf("extra %v", o.Extra)
	}
	if h, err := ParseHeader(ti); err != nil || *h != want {
		t.Fatalf("ParseHeader = %+v, %v", h, err)
	}
	// Two seals of one scalar differ (fresh nonce).
	if ti2 := seal(t, ks, s, Claims{Aud: aud, Iat: t0, TTL: 5 * time.Minute}); ti2 == ti {
		t.Fatal("two seals are equal")
	}
}

func TestSealExtraAndSub(t *testing.T) {
	ks := keySet(t)
	s := scalar(t)
	ti := seal(t, ks, s, Claims{Aud: aud, Iat: t0, TTL: time.Minute, Sub: `dr "quoted" \ ü`,
		Extra: map[string]any{"purpose": "care", "n": 3}})
	o, err := ks.Open(ti, &Check{Aud: aud, Now: t0, Sub: `dr "quoted" \ ü`})
	if err != nil {
		t.Fatal(err)
	}
	if string(o.Extra["purpose"]) != `"care"` || string(o.Extra["n"]) != "3" || len(o.Extra) != 2 {
		t.Fatalf("extra %v", o.Extra)
	}
	if o.Scalar.Equal(s) != 1 {
		t.Fatal("scalar differs")
	}
	if _, err := ks.Seal(s, &Claims{Aud: aud, Iat: t0, TTL: time.Minute, Extra: map[string]any{"scalar": 1}}, nil); !errors.Is(err, ErrInvalidClaims) {
		t.Fatalf("reserved claim: %v", err)
	}
	if _, err := ks.Seal(s, &Claims{Aud: "", Iat: t0, TTL: time.Minute}, nil); !errors.Is(err, ErrInvalidClaims) {
		t.Fatalf("no aud: %v", err)
	}
	if _, err := ks.Seal(s, &Claims{Aud: aud, Iat: t0}, nil); !errors.Is(err, ErrInvalidClaims) {
		t.Fatalf("no ttl: %v", err)
	}
}

// goJoseOpen opens ti with go-jose, the reference implementation.
func goJoseOpen(ti string, key []byte) (*jose.JSONWebEncryption, []byte, error) {
	obj, err := jose.ParseEncryptedCompact(ti, []jose.KeyAlgorithm{jose.DIRECT}, []jose.ContentEncryption{jose.A256GCM})
	if err != nil {
		return nil, nil, err
	}
	pt, err := obj.Decrypt(key)
	return obj, pt, err
}

func TestGoJoseOpensWhatSealWrites(t *testing.T) {
	ks := keySet(t)
	for i := range 200 {
		s := scalar(t)
		c := Claims{Aud: aud, Iat: t0.Add(time.Duration(i) * time.Second), TTL: time.Duration(i+1) * time.Second}
		if i%2 == 1 {
			c.Sub = strings.Repeat("x", i%7) + "dr-1"
		}
		if i%3 == 0 {
			c.Extra = map[string]any{"i": i, "s": strings.Repeat("<>&\u2028", i%4)}
		}
		ti := seal(t, ks, s, c)
		obj, pt, err := goJoseOpen(ti, key1)
		if err != nil {
			t.Fatalf("go-jose refuses item %d: %v", i, err)
		}
		if obj.Header.KeyID != "k1" || obj.Header.ExtraHeaders["aud"] != aud ||
			obj.Header.ExtraHeaders["iat"] != float64(c.Iat.Unix()) {
			t.Fatalf("go-jose header %+v", obj.Header)
		}
		if c.Sub != "" && obj.Header.ExtraHeaders["sub"] != c.Sub {
			t.Fatalf("go-jose sub %v", obj.Header.ExtraHeaders["sub"])
		}
		var p map[string]any
		if err := json.Unmarshal(pt, &p); err != nil {
			t.Fatal(err)
		}
		if p["scalar"] != base64.RawURLEncoding.EncodeToString(s.Bytes()) {
			t.Fatalf("go-jose payload %s", pt)
		}
	}
}

func TestOpenWhatGoJoseSeals(t *testing.T) {
	enc, err := jose.NewEncrypter(jose.A256GCM, jose.Recipient{Algorithm: jose.DIRECT, Key: key2, KeyID: "k2"},
		(&jose.EncrypterOptions{}).WithHeader("aud", aud).WithHeader("iat", t0.Unix()).
			WithHeader("exp", t0.Unix()+60).WithHeader("sub", "dr-7"))
	if err != nil {
		t.Fatal(err)
	}
	s := scalar(t)
	payload, _ := json.Marshal(map[string]any{"scalar": base64.RawURLEncoding.EncodeToString(s.Bytes()), "x": true})
	obj, err := enc.Encrypt(payload)
	if err != nil {
		t.Fatal(err)
	}
	ti, err := obj.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	o, err := keySet(t).Open(ti, &Check{Aud: aud, Now: t0, Sub: "dr-7"})
	if err != nil {
		t.Fatalf("Open refuses go-jose's JWE: %v", err)
	}
	if o.Scalar.Equal(s) != 1 || o.Header.Sub != "dr-7" || string(o.Extra["x"]) != "true" {
		t.Fatalf("opened %+v", o)
	}
}

func TestOpenErrors(t *testing.T) {
	ks := keySet(t)
	s := scalar(t)
	ti := seal(t, ks, s, Claims{Aud: aud, Iat: t0, TTL: 5 * time.Minute})
	bound := seal(t, ks, s, Claims{Aud: aud, Iat: t0, TTL: 5 * time.Minute, Sub: "dr-1"})
	other, _ := NewKeySet("k9", map[string][]byte{"k9": key1})
	wrongKey, _ := NewKeySet("k1", map[string][]byte{"k1": key2})
	parts := strings.Split(ti, ".")
	flip := func(i int) string {
		p := append([]string(nil), parts...)
		b := []byte(p[i])
		if b[0] == 'A' {
			b[0] = 'B'
		} else {
			b[0] = 'A'
		}
		p[i] = string(b)
		return strings.Join(p, ".")
	}
	cases := []struct {
		name string
		ks   *KeySet
		ti   string
		c    Check
		want error
	}{
		{"ok", ks, ti, Check{Aud: aud, Now: t0}, nil},
		{"unknown kid", other, ti, Check{Aud: aud, Now: t0}, ErrUnknownKid},
		{"wrong key", wrongKey, ti, Check{Aud: aud, Now: t0}, ErrBadTag},
		{"tampered ciphertext", ks, flip(3), Check{Aud: aud, Now: t0}, ErrBadTag},
		{"tampered tag", ks, flip(4), Check{Aud: aud, Now: t0}, ErrBadTag},
		{"tampered nonce", ks, flip(2), Check{Aud: aud, Now: t0}, ErrBadTag},
		{"tampered header", ks, flip(0), Check{Aud: aud, Now: t0}, ErrMalformed},
		{"wrong audience", ks, ti, Check{Aud: aud + "x", Now: t0}, ErrWrongAudience},
		{"expired", ks, ti, Check{Aud: aud, Now: t0.Add(5*time.Minute + Skew + time.Second)}, ErrExpired},
		{"expired within skew", ks, ti, Check{Aud: aud, Now: t0.Add(5*time.Minute + Skew)}, nil},
		{"expired but skipped", ks, ti, Check{Aud: aud, Now: t0.Add(time.Hour), SkipExpiry: true}, nil},
		{"not yet valid", ks, ti, Check{Aud: aud, Now: t0.Add(-Skew - time.Second)}, ErrNotYetValid},
		{"iat within skew", ks, ti, Check{Aud: aud, Now: t0.Add(-Skew)}, nil},
		{"bound, right caller", ks, bound, Check{Aud: aud, Now: t0, Sub: "dr-1"}, nil},
		{"bound, other caller", ks, bound, Check{Aud: aud, Now: t0, Sub: "dr-2"}, ErrSubjectMismatch},
		{"bound, no caller", ks, bound, Check{Aud: aud, Now: t0}, ErrSubjectMismatch},
		{"bound, any subject", ks, bound, Check{Aud: aud, Now: t0, AnySub: true}, nil},
		{"unbound, sub required", ks, ti, Check{Aud: aud, Now: t0, Sub: "dr-1", RequireSub: true}, ErrSubjectMismatch},
		{"empty", ks, "", Check{Aud: aud, Now: t0}, ErrMalformed},
		{"four parts", ks, strings.Join(parts[:4], "."), Check{Aud: aud, Now: t0}, ErrMalformed},
		{"six parts", ks, ti + ".", Check{Aud: aud, Now: t0}, ErrMalformed},
		{"encrypted key", ks, parts[0] + ".AAAA." + strings.Join(parts[2:], "."), Check{Aud: aud, Now: t0}, ErrMalformed},
		{"too long", ks, ti + strings.Repeat("A", MaxLen), Check{Aud: aud, Now: t0}, ErrMalformed},
	}
	for _, c := range cases {
		_, err := c.ks.Open(c.ti, &c.c)
		if !errors.Is(err, c.want) || (c.want == nil) != (err == nil) {
			t.Errorf("%s: got %v, want %v", c.name, err, c.want)
		}
		if err != nil && strings.Contains(err.Error(), aud) {
			t.Errorf("%s: error echoes the audience", c.name)
		}
	}
}

// TestUnknownKidCarriesKid: the unknown-kid error names the kid, so that an
// owner can refresh its keys for it without parsing the header again.
func TestUnknownKidCarriesKid(t *testing.T) {
	ti := seal(t, keySet(t), scalar(t), Claims{Aud: aud, Iat: t0, TTL: 5 * time.Minute})
	other, _ := NewKeySet("k9", map[string][]byte{"k9": key1})
	_, err := other.Open(ti, &Check{Aud: aud, Now: t0})
	var uk *protoerr.UnknownKidError
	if !errors.As(err, &uk) || uk.Kid != "k1" || !errors.Is(err, ErrUnknownKid) {
		t.Fatalf("Open = %v, want an UnknownKidError for k1", err)
	}
}

// sealRaw seals an arbitrary header and payload as a compact JWE, the way
// any JOSE library would, so that the strict parser can be compared with
// go-jose on inputs Seal never writes.
func sealRaw(header, payload []byte, key []byte, nonce []byte) string {
	block, _ := aes.NewCipher(key)
	aead, _ := cipher.NewGCM(block)
	h := base64.RawURLEncoding.EncodeToString(header)
	ct := aead.Seal(nil, nonce, payload, []byte(h))
	n := len(ct) - 16
	return h + ".." + base64.RawURLEncoding.EncodeToString(nonce) + "." +
		base64.RawURLEncoding.EncodeToString(ct[:n]) + "." + base64.RawURLEncoding.EncodeToString(ct[n:])
}

func TestStrictHeader(t *testing.T) {
	ks := keySet(t)
	sc := base64.RawURLEncoding.EncodeToString(scalar(t).Bytes())
	payload := []byte(`{"scalar":"` + sc + `"}`)
	nonce := make([]byte, 12)
	ok := `{"alg":"dir","enc":"A256GCM","kid":"k1","aud":"a","iat":1,"exp":2}`
	for _, h := range []string{
		`{"alg":"dir","enc":"A256GCM","kid":"k1","aud":"a","iat":1}`,                      // no exp
		`{"alg":"dir","enc":"A256GCM","kid":"k1","iat":1,"exp":2}`,                        // no aud
		`{"alg":"dir","enc":"A256GCM","aud":"a","iat":1,"exp":2}`,                         // no kid
		`{"alg":"dir","enc":"A128GCM","kid":"k1","aud":"a","iat":1,"exp":2}`,              // enc
		`{"alg":"A256KW","enc":"A256GCM","kid":"k1","aud":"a","iat":1,"exp":2}`,           // alg
		`{"ALG":"dir","enc":"A256GCM","kid":"k1","aud":"a","iat":1,"exp":2}`,              // case
		`{"alg":"dir","alg":"dir","enc":"A256GCM","kid":"k1","aud":"a","iat":1,"exp":2}`,  // duplicate
		`{"alg":"dir","enc":"A256GCM","kid":"k1","aud":"a","iat":1,"exp":2,"zip":"DEF"}`,  // zip
		`{"alg":"dir","enc":"A256GCM","kid":"k1","aud":"a","iat":1,"exp":2,"crit":["x"]}`, // crit
		`{"alg":"dir","enc":"A256GCM","kid":"k1","aud":"a","iat":1.5,"exp":2}`,            // float
		`{"alg":"dir","enc":"A256GCM","kid":"k1","aud":"a","iat":"1","exp":2}`,            // string number
		`{"alg":"dir","enc":"A256GCM","kid":"k1","aud":"a","iat":1,"exp":2,"sub":""}`,     // empty sub
		`{"alg":"dir","enc":"A256GCM","kid":"k1","aud":"a","iat":1,"exp":2} {}`,           // trailing
		`{"alg":"dir","enc":"A256GCM","kid":"k1","aud":["a"],"iat":1,"exp":2}`,            // array aud
		`[]`,
	} {
		ti := sealRaw([]byte(h), payload, key1, nonce)
		if _, err := ks.Open(ti, &Check{Aud: "a", Now: time.Unix(1, 0)}); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: got %v, want ErrMalformed", h, err)
		}
	}
	if _, err := ks.Open(sealRaw([]byte(ok), payload, key1, nonce), &Check{Aud: "a", Now: time.Unix(1, 0)}); err != nil {
		t.Fatalf("valid header refused: %v", err)
	}
	for _, p := range []string{
		`{}`, `{"scalar":1}`, `{"scalar":"` + sc + `=="}`, `{"scalar":"AAAA"}`,
		`{"scalar":"` + base64.RawURLEncoding.EncodeToString(make([]byte, 32)) + `"}`, // zero
		`not json`,
	} {
		ti := sealRaw([]byte(ok), []byte(p), key1, nonce)
		if _, err := ks.Open(ti, &Check{Aud: "a", Now: time.Unix(1, 0)}); !errors.Is(err, ErrMalformed) {
			t.Errorf("payload %s: got %v, want ErrMalformed", p, err)
		}
	}
}

// TestRefusedHeaderMembers: the protected header holds exactly alg, enc,
// kid, aud, iat, exp and optionally sub (docs/PROTOCOL.md, "transitInfo").
// Any other member is refused with ErrMalformed even when the transitInfo
// is correctly sealed under an accepted key, wherever the member stands:
// typ and cty (which Seal never writes, and which RFC 7516 lets a JOSE
// library accept) as much as the members that change how a JWE is
// processed (zip, crit, the key and certificate references, the members of
// other algorithms) and JWT claims that this protocol does not define.
// ParseHeader, which clients and pseudonym.ParseTransit use without a key,
// refuses them too.
func TestRefusedHeaderMembers(t *testing.T) {
	ks := keySet(t)
	sc := base64.RawURLEncoding.EncodeToString(scalar(t).Bytes())
	payload := []byte(`{"scalar":"` + sc + `"}`)
	nonce := make([]byte, 12)
	const base = `"alg":"dir","enc":"A256GCM","kid":"k1","aud":"a","iat":1,"exp":2`
	check := &Check{Aud: "a", Now: time.Unix(1, 0)}
	if _, err := ks.Open(sealRaw([]byte("{"+base+"}"), payload, key1, nonce), check); err != nil {
		t.Fatalf("header without extra members refused: %v", err)
	}
	for _, member := range []string{
		`"typ":"JWE"`,
		`"typ":"JOSE"`,
		`"cty":"JWT"`,
		`"cty":"application/json"`,
		`"zip":"DEF"`,
		`"crit":["exp"]`,
		`"jku":"https://example.org/jwks.json"`,
		`"jwk":{"kty":"oct","k":"AAAA"}`,
		`"x5u":"https://example.org/cert.pem"`,
		`"x5c":["AAAA"]`,
		`"x5t":"AAAA"`,
		`"x5t#S256":"AAAA"`,
		`"epk":{"kty":"OKP","crv":"X25519","x":"AAAA"}`,
		`"apu":"AAAA"`,
		`"apv":"AAAA"`,
		`"iv":"AAAAAAAAAAAAAAAA"`,
		`"tag":"AAAAAAAAAAAAAAAAAAAAAA"`,
		`"p2s":"AAAA"`,
		`"p2c":1000`,
		`"b64":false`,
		`"nbf":1`,
		`"iss":"x"`,
		`"jti":"x"`,
		`"scalar":"` + sc + `"`,
		`"Kid":"k1"`,
		`"":""`,
	} {
		for _, h := range []string{"{" + member + "," + base + "}", "{" + base + "," + member + "}"} {
			ti := sealRaw([]byte(h), payload, key1, nonce)
			if _, err := ks.Open(ti, check); !errors.Is(err, ErrMalformed) {
				t.Errorf("Open with %s: got %v, want ErrMalformed", h, err)
			}
			if _, err := ParseHeader(ti); !errors.Is(err, ErrMalformed) {
				t.Errorf("ParseHeader with %s: got %v, want ErrMalformed", h, err)
			}
		}
	}
}

// TestLineBreaksRefused: base64url parts are strict, so a transitInfo has
// one text form. Go's base64 decoder skips CR and LF; Open and ParseHeader
// refuse them in every part instead (a line break in the ciphertext part
// would otherwise leave the tag valid).
func TestLineBreaksRefused(t *testing.T) {
	ks := keySet(t)
	ti := seal(t, ks, scalar(t), Claims{Aud: aud, Iat: t0, TTL: time.Minute})
	for i := range 5 {
		for _, lb := range []string{"\n", "\r", "\r\n"} {
			p := strings.Split(ti, ".")
			p[i] = p[i][:len(p[i])/2] + lb + p[i][len(p[i])/2:]
			bad := strings.Join(p, ".")
			if _, err := ks.Open(bad, &Check{Aud: aud, Now: t0}); !errors.Is(err, ErrMalformed) {
				t.Errorf("part %d with %q: Open = %v, want ErrMalformed", i, lb, err)
			}
			if _, err := ParseHeader(bad); !errors.Is(err, ErrMalformed) {
				t.Errorf("part %d with %q: ParseHeader = %v, want ErrMalformed", i, lb, err)
			}
		}
	}
}

func TestNewKeySet(t *testing.T) {
	if _, err := NewKeySet("k1", map[string][]byte{"k1": key1[:16]}); !errors.Is(err, ErrInvalidKey) {
		t.Errorf("short key: %v", err)
	}
	if _, err := NewKeySet("k3", map[string][]byte{"k1": key1}); !errors.Is(err, ErrNoActiveKey) {
		t.Errorf("missing active: %v", err)
	}
	ks, err := NewKeySet("", map[string][]byte{"k1": key1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ks.Seal(scalar(t), &Claims{Aud: aud, Iat: t0, TTL: time.Minute}, nil); !errors.Is(err, ErrNoActiveKey) {
		t.Errorf("seal without active: %v", err)
	}
}

// FuzzOpen feeds arbitrary strings to Open: no panic, typed errors only.
func FuzzOpen(f *testing.F) {
	ks := keySet(f)
	f.Add(seal(f, ks, scalar(f), Claims{Aud: aud, Iat: t0, TTL: time.Minute}))
	f.Add(seal(f, ks, scalar(f), Claims{Aud: aud, Iat: t0, TTL: time.Minute, Sub: "x", Extra: map[string]any{"a": 1}}))
	f.Add("....")
	f.Add("")
	// Inputs that used to panic Open (an IV or a tag one base64 block too
	// long, decoded into a fixed-size array before the length check).
	for _, ti := range lengthAttacks() {
		f.Add(ti)
	}
	f.Fuzz(func(t *testing.T, ti string) {
		_, err := ks.Open(ti, &Check{Aud: aud, Now: t0})
		if err == nil {
			return
		}
		for _, e := range []error{ErrMalformed, ErrUnknownKid, ErrBadTag, ErrWrongAudience, ErrExpired, ErrNotYetValid, ErrSubjectMismatch} {
			if errors.Is(err, e) {
				return
			}
		}
		t.Fatalf("untyped error %v", err)
	})
}

// lengthAttacks returns transitInfo texts under the accepted kid "k1" whose
// IV, ciphertext and tag parts have every length from 0 to 48 characters
// (one part varied at a time), including the lengths that are not base64.
func lengthAttacks() []string {
	hdr := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"dir","enc":"A256GCM","kid":"k1","aud":"` + aud + `","iat":0,"exp":4}`))
	a := func(n int) string { return strings.Repeat("A", n) }
	var out []string
	for n := 0; n <= 48; n++ {
		out = append(out,
			hdr+".."+a(n)+".AAAA."+a(22),
			hdr+".."+a(16)+".AAAA."+a(n),
			hdr+".."+a(16)+"."+a(n)+"."+a(22),
		)
	}
	return out
}

// TestOpenPartLengths: no length of any part makes Open panic, and every
// wrong IV or tag length is ErrMalformed, whatever the kid.
func TestOpenPartLengths(t *testing.T) {
	ks := keySet(t)
	for _, ti := range lengthAttacks() {
		_, err := ks.Open(ti, &Check{Aud: aud, Now: t0, SkipExpiry: true})
		if err == nil {
			t.Fatalf("Open(%q) accepted a forged transitInfo", ti)
		}
		parts := strings.Split(ti, ".")
		if (len(parts[2]) != 16 || len(parts[4]) != 22) && !errors.Is(err, ErrMalformed) {
			t.Fatalf("Open(%q) = %v, want ErrMalformed", ti, err)
		}
	}
	// The input of the report, with its own kid (t1): unknown here.
	const reported = "eyJhbGciOiJkaXIiLCJlbmMiOiJBMjU2R0NNIiwia2lkIjoidDEiLCJhdWQiOiJ4IiwiaWF0IjowLCJleHAiOjR9..AAAAAAAAAAAAAAAAAA.AAAA.AAAAAAAAAAAAAAAAAAAAAA"
	t1, err := NewKeySet("t1", map[string][]byte{"t1": key1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := t1.Open(reported, &Check{Aud: "x", Now: time.Unix(0, 0)}); !errors.Is(err, ErrMalformed) {
		t.Fatalf("reported input: %v, want ErrMalformed", err)
	}
}

// FuzzJWEDifferential seals arbitrary headers and payloads with a real key
// and checks that the strict parser accepts nothing go-jose refuses, and
// reads the same scalar and header when both accept.
func FuzzJWEDifferential(f *testing.F) {
	sc := base64.RawURLEncoding.EncodeToString(bytes.Repeat([]byte{7}, 32))
	f.Add([]byte(`{"alg":"dir","enc":"A256GCM","kid":"k1","aud":"a","iat":1,"exp":2}`), []byte(`{"scalar":"`+sc+`"}`))
	f.Add([]byte(`{"kid":"k1","exp":2,"enc":"A256GCM","alg":"dir","aud":"a","iat":1,"sub":"s"}`), []byte(`{"x":[1],"scalar":"`+sc+`"}`))
	f.Add([]byte(`{"alg":"dir","enc":"A256GCM","kid":"k1","aud":"a","iat":1,"exp":2,"zip":"DEF"}`), []byte(`{"scalar":"`+sc+`"}`))
	ks := keySet(f)
	f.Fuzz(func(t *testing.T, header, payload []byte) {
		ti := sealRaw(header, payload, key1, make([]byte, 12))
		o, err := ks.Open(ti, &Check{Aud: "a", Now: time.Unix(1, 0), SkipExpiry: true, Sub: "s"})
		if err != nil {
			return
		}
		obj, pt, gerr := goJoseOpen(ti, key1)
		if gerr != nil {
			t.Fatalf("Open accepted what go-jose refuses (%v)", gerr)
		}
		if !bytes.Equal(pt, payload) || obj.Header.KeyID != o.Header.Kid || obj.Header.ExtraHeaders["aud"] != o.Header.Aud {
			t.Fatal("Open and go-jose disagree on the content")
		}
		var p struct{ Scalar string }
		if json.Unmarshal(pt, &p) != nil || p.Scalar != base64.RawURLEncoding.EncodeToString(o.Scalar.Bytes()) {
			t.Fatal("Open and go-jose disagree on the scalar")
		}
	})
}

func BenchmarkSeal(b *testing.B) {
	ks := keySet(b)
	s := scalar(b)
	c := &Claims{Aud: aud, Iat: t0, TTL: 5 * time.Minute}
	for b.Loop() {
		if _, err := ks.Seal(s, c, nil); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkOpen(b *testing.B) {
	ks := keySet(b)
	ti := seal(b, ks, scalar(b), Claims{Aud: aud, Iat: t0, TTL: 5 * time.Minute})
	c := &Check{Aud: aud, Now: t0}
	for b.Loop() {
		if _, err := ks.Open(ti, c); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkGoJoseOpen is the reference: what Open would cost through
// go-jose.
func BenchmarkGoJoseOpen(b *testing.B) {
	ks := keySet(b)
	ti := seal(b, ks, scalar(b), Claims{Aud: aud, Iat: t0, TTL: 5 * time.Minute})
	for b.Loop() {
		if _, _, err := goJoseOpen(ti, key1); err != nil {
			b.Fatal(err)
		}
	}
}

// TestMaxLifetime: a transitInfo whose exp − iat exceeds Check.MaxLifetime
// is refused, at the limit it is accepted, and extreme iat/exp values do
// not overflow the check.
func TestMaxLifetime(t *testing.T) {
	ks := keySet(t)
	for _, tc := range []struct {
		ttl  time.Duration
		want error
	}{
		{time.Hour, nil},
		{24 * time.Hour, nil},
		{24*time.Hour + time.Second, ErrLifetimeTooLong},
		{100 * 365 * 24 * time.Hour, ErrLifetimeTooLong},
	} {
		ti := seal(t, ks, scalar(t), Claims{Aud: aud, Iat: t0, TTL: tc.ttl})
		_, err := ks.Open(ti, &Check{Aud: aud, Now: t0, MaxLifetime: 24 * time.Hour})
		if !errors.Is(err, tc.want) {
			t.Errorf("ttl %v: %v, want %v", tc.ttl, err, tc.want)
		}
	}
	// iat far in the past, exp at the end of int64: refused, no overflow.
	hdr := []byte(`{"alg":"dir","enc":"A256GCM","kid":"k1","aud":"` + aud + `","iat":-9223372036854775808,"exp":9223372036854775807}`)
	sc := base64.RawURLEncoding.EncodeToString(bytes.Repeat([]byte{7}, 32))
	ti := sealRaw(hdr, []byte(`{"scalar":"`+sc+`"}`), key1, make([]byte, 12))
	if _, err := ks.Open(ti, &Check{Aud: aud, Now: t0, MaxLifetime: time.Hour}); !errors.Is(err, ErrLifetimeTooLong) {
		t.Fatalf("extreme iat/exp: %v, want ErrLifetimeTooLong", err)
	}
}
