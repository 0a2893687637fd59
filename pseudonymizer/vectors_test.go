package pseudonymizer_test

import (
	"bytes"
	"context"
	"crypto/sha3"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"flag"
	"io"
	"os"
	"testing"
	"time"

	"github.com/gtank/ristretto255"

	"github.com/ehealth-pseudo/pseudonymizer/client"
	"github.com/ehealth-pseudo/pseudonymizer/internal/point"
	"github.com/ehealth-pseudo/pseudonymizer/internal/transit"
	"github.com/ehealth-pseudo/pseudonymizer/keys"
	"github.com/ehealth-pseudo/pseudonymizer/owner"
	"github.com/ehealth-pseudo/pseudonymizer/pseudonym"
	"github.com/ehealth-pseudo/pseudonymizer/pseudonymizer"
)

// The format of testdata/vectors.json is documented in docs/test-vectors.md.
// Regenerate with: go test ./pseudonymizer -run TestVectors -update
// (only with a written reason: vectors are a contract).

var updateVectors = flag.Bool("update", false, "rewrite testdata/vectors.json")

const vecFile = "testdata/vectors.json"

// vecRand is the deterministic random stream of the vectors:
// SHAKE256("pseudonymizer/v1 test vectors/" + label).
func vecRand(label string) io.Reader {
	h := sha3.NewSHAKE256()
	h.Write([]byte("pseudonymizer/v1 test vectors/" + label))
	return h
}

type vecDomain struct {
	Name       string `json:"name"`
	Audience   string `json:"audience"`
	TTLSeconds int64  `json:"ttl_seconds"`
	K          string `json:"k"`
	Kid        string `json:"kid"`
	TransitKey string `json:"transit_key"`
}

type vecEncode struct {
	ID      string `json:"id_hex"`
	Counter int    `json:"counter"`
	Point   string `json:"point"`
}

type vecPseudonymize struct {
	Seed         string `json:"seed"`
	ID           string `json:"id_hex"`
	B            string `json:"b"`
	Blinded      string `json:"blinded"`
	S            string `json:"s"`
	Nonce        string `json:"nonce"`
	Evaluated    string `json:"evaluated"`
	TransitInfo  string `json:"transit_info"`
	TransitPoint string `json:"transit_point"`
	TransitText  string `json:"transit_text"`
	AtRest       string `json:"at_rest"`
	AtRestText   string `json:"at_rest_text"`
	AtRestDouble string `json:"at_rest_double"`
}

type vecIdentify struct {
	Seed         string `json:"seed"`
	AtRest       string `json:"at_rest"`
	Sub          string `json:"sub"`
	S            string `json:"s"`
	Nonce        string `json:"nonce"`
	TransitPoint string `json:"transit_point"`
	TransitInfo  string `json:"transit_info"`
	TransitText  string `json:"transit_text"`
	B            string `json:"b"`
	Blinded      string `json:"blinded"`
	Evaluated    string `json:"evaluated"`
	ID           string `json:"id_hex"`
}

type vecConvert struct {
	Seed          string `json:"seed"`
	From          string `json:"from"`
	To            string `json:"to"`
	AtRestFrom    string `json:"at_rest_from"`
	S             string `json:"s"`
	TransitPoint  string `json:"transit_point"`
	TransitInfo   string `json:"transit_info"`
	TransitText   string `json:"transit_text"`
	B             string `json:"b"`
	Blinded       string `json:"blinded"`
	S2            string `json:"s2"`
	Nonce2        string `json:"nonce2"`
	Evaluated     string `json:"evaluated"`
	TransitInfoTo string `json:"transit_info_to"`
	TransitPointB string `json:"transit_point_to"`
	TransitTextTo string `json:"transit_text_to"`
	AtRestTo      string `json:"at_rest_to"`
}

type vecFileT struct {
	Comment      string            `json:"comment"`
	IssuedAt     int64             `json:"iat"`
	Domains      []vecDomain       `json:"domains"`
	OwnerK2      string            `json:"owner_k2"`
	Encode       []vecEncode       `json:"encode"`
	Pseudonymize []vecPseudonymize `json:"pseudonymize"`
	Identify     []vecIdentify     `json:"identify"`
	Convert      []vecConvert      `json:"convert"`
}

var vecIat = time.Unix(1767225600, 0) // 2026-01-01T00:00:00Z

func hx(b []byte) string { return hex.EncodeToString(b) }

// must stops a test on an error in a step that cannot fail with the
// vectors' fixed inputs.
func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// vecScalar draws a scalar the way every party does: 64 bytes, reduced.
func vecScalar(t testing.TB, r io.Reader) *ristretto255.Scalar {
	return must(point.RandomScalar(r))
}

func vecMakeDomain(t testing.TB, name string) (*keys.Domain, vecDomain) {
	r := vecRand("domain/" + name)
	k := vecScalar(t, r)
	tk := make([]byte, 32)
	io.ReadFull(r, tk)
	d := &keys.Domain{
		Name: name, Audience: "urn:be:ehealth:pseudonymisation:" + name, TTL: 5 * time.Minute,
		Scalar:  keys.Secret(k.Bytes()),
		Transit: keys.Transit{Active: "t1", Keys: map[string]keys.Secret{"t1": tk}},
	}
	return d, vecDomain{Name: d.Name, Audience: d.Audience, TTLSeconds: 300, K: hx(k.Bytes()), Kid: "t1", TransitKey: hx(tk)}
}

// peek returns the scalar and nonce a party will draw from the stream of
// label, in the order the code draws them (scalar: 64 bytes, nonce: 12).
func peek(t testing.TB, label string, skip int) (s *ristretto255.Scalar, nonce []byte) {
	r := vecRand(label)
	io.CopyN(io.Discard, r, int64(skip))
	s = vecScalar(t, r)
	nonce = make([]byte, 12)
	io.ReadFull(r, nonce)
	return s, nonce
}

func computeVectors(t testing.TB) *vecFileT {
	ctx := context.Background()
	v := &vecFileT{
		Comment:  "Known-answer vectors for the ristretto255 blind pseudonymization protocol. Format: docs/test-vectors.md.",
		IssuedAt: vecIat.Unix(),
	}
	kdA, vdA := vecMakeDomain(t, "prescriptions_v1")
	kdB, vdB := vecMakeDomain(t, "therlink_v1")
	v.Domains = []vecDomain{vdA, vdB}
	dA := must(pseudonymizer.NewDomain(kdA))
	dB := must(pseudonymizer.NewDomain(kdB))
	k2 := vecScalar(t, vecRand("owner_k2"))
	v.OwnerK2 = hx(k2.Bytes())
	ownA := must(owner.New(ctx, kdA.Name, owner.StaticKeys{D: kdA}, owner.WithRefreshInterval(0)))
	ownA2 := must(owner.New(ctx, kdA.Name, owner.StaticKeys{D: kdA}, owner.WithRefreshInterval(0), owner.WithSecondKey(k2.Bytes())))
	ownB := must(owner.New(ctx, kdB.Name, owner.StaticKeys{D: kdB}, owner.WithRefreshInterval(0)))
	at := owner.At(vecIat)

	ids := [][]byte{[]byte("85073003328"), []byte("00010100105"), {0}, []byte("A"), bytes.Repeat([]byte{0xfe}, 29), []byte("INAMI:19012345004")}
	for _, id := range ids {
		M := must(point.Encode(id))
		b := M.Bytes()
		v.Encode = append(v.Encode, vecEncode{ID: hx(id), Counter: int(b[0] >> 1), Point: hx(b)})
	}

	for i, id := range ids[:4] {
		seed := "pseudonymize/" + string(rune('0'+i))
		cr, sr := vecRand(seed+"/client"), vecRand(seed+"/service")
		bScalar, _ := peek(t, seed+"/client", 0)
		s, nonce := peek(t, seed+"/service", 0)
		blinded, u := must2(t)(client.Blind(id, client.Rand(cr)))
		ev := must(dA.Pseudonymize(blinded, &pseudonymizer.Params{Now: vecIat, Rand: sr}))
		tp := must(u.Unblind(ev.Point[:], ev.TransitInfo))
		ar := must(ownA.AtRest(ctx, tp, at))
		ar2 := must(ownA2.AtRest(ctx, tp, at))
		v.Pseudonymize = append(v.Pseudonymize, vecPseudonymize{
			Seed: seed, ID: hx(id), B: hx(bScalar.Bytes()), Blinded: hx(blinded), S: hx(s.Bytes()), Nonce: hx(nonce),
			Evaluated: hx(ev.Point[:]), TransitInfo: ev.TransitInfo, TransitPoint: hx(tp.Point[:]), TransitText: tp.String(),
			AtRest: hx(ar[:]), AtRestText: ar.String(), AtRestDouble: hx(ar2[:]),
		})
	}

	for i, id := range ids[:3] {
		seed := "identify/" + string(rune('0'+i))
		M := must(point.Encode(id))
		kA := must(point.DecodeScalar(kdA.Scalar))
		var P pseudonym.AtRest
		copy(P[:], M.ScalarMult(kA, M).Bytes())
		sub := ""
		if i == 1 {
			sub = "urn:be:fgov:ehealth:1.0:nihii:19012345004"
		}
		s, nonce := peek(t, seed+"/owner", 0)
		tp := must(ownA.InTransit(P, owner.IssuedAt(vecIat), owner.Subject(sub), owner.Rand(vecRand(seed+"/owner"))))
		bScalar, _ := peek(t, seed+"/client", 0)
		blinded, u := must2(t)(client.BlindTransit(tp, client.Rand(vecRand(seed+"/client"))))
		y := must(dA.Identify(blinded, tp.Info, &pseudonymizer.Params{Now: vecIat, Caller: sub}))
		got := must(u.Identify(y[:]))
		v.Identify = append(v.Identify, vecIdentify{
			Seed: seed, AtRest: hx(P[:]), Sub: sub, S: hx(s.Bytes()), Nonce: hx(nonce), TransitPoint: hx(tp.Point[:]),
			TransitInfo: tp.Info, TransitText: tp.String(), B: hx(bScalar.Bytes()), Blinded: hx(blinded), Evaluated: hx(y[:]), ID: hx(got),
		})
	}

	for i, id := range ids[:2] {
		seed := "convert/" + string(rune('0'+i))
		M := must(point.Encode(id))
		var P pseudonym.AtRest
		copy(P[:], M.ScalarMult(must(point.DecodeScalar(kdA.Scalar)), M).Bytes())
		s, _ := peek(t, seed+"/owner", 0)
		tp := must(ownA.InTransit(P, owner.IssuedAt(vecIat), owner.Rand(vecRand(seed+"/owner"))))
		bScalar, _ := peek(t, seed+"/owner-blind", 0)
		blinded, u := must2(t)(client.BlindTransit(tp, client.Rand(vecRand(seed+"/owner-blind"))))
		s2, nonce2 := peek(t, seed+"/service", 0)
		ev := must(pseudonymizer.Convert(dA, dB, blinded, tp.Info, &pseudonymizer.Params{Now: vecIat, Rand: vecRand(seed + "/service")}))
		tpB := must(u.Unblind(ev.Point[:], ev.TransitInfo))
		arB := must(ownB.AtRest(ctx, tpB, at))
		v.Convert = append(v.Convert, vecConvert{
			Seed: seed, From: kdA.Name, To: kdB.Name, AtRestFrom: hx(P[:]), S: hx(s.Bytes()), TransitPoint: hx(tp.Point[:]),
			TransitInfo: tp.Info, TransitText: tp.String(), B: hx(bScalar.Bytes()), Blinded: hx(blinded), S2: hx(s2.Bytes()), Nonce2: hx(nonce2),
			Evaluated: hx(ev.Point[:]), TransitInfoTo: ev.TransitInfo, TransitPointB: hx(tpB.Point[:]), TransitTextTo: tpB.String(),
			AtRestTo: hx(arB[:]),
		})
	}
	return v
}

func must2(t testing.TB) func([]byte, *client.Unblinder, error) ([]byte, *client.Unblinder) {
	return func(b []byte, u *client.Unblinder, err error) ([]byte, *client.Unblinder) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return b, u
	}
}

func TestVectors(t *testing.T) {
	got := computeVectors(t)
	enc, err := json.MarshalIndent(got, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	enc = append(enc, '\n')
	if *updateVectors {
		if err := os.WriteFile(vecFile, enc, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(vecFile)
	if err != nil {
		t.Fatal(err)
	}
	var file vecFileT
	if err := json.Unmarshal(want, &file); err != nil {
		t.Fatal(err)
	}
	t.Run("recompute", func(t *testing.T) {
		if !bytes.Equal(enc, want) {
			t.Fatalf("recomputed vectors differ from %s (run with -update only with a written reason)", vecFile)
		}
	})
	// Independent checks of what the file says, with the raw group
	// operations and the protocol's equations rather than the SDKs.
	keysOf := map[string]*vecDomain{}
	for i := range file.Domains {
		keysOf[file.Domains[i].Name] = &file.Domains[i]
	}
	A := keysOf["prescriptions_v1"]
	B := keysOf["therlink_v1"]
	kA := vecDecScalar(t, A.K)
	kB := vecDecScalar(t, B.K)
	k2 := vecDecScalar(t, file.OwnerK2)
	for _, e := range file.Encode {
		t.Run("encode/"+e.ID, func(t *testing.T) {
			t.Parallel()
			id := vecHex(t, e.ID)
			p := vecHex(t, e.Point)
			if p[0] != byte(e.Counter<<1) || int(p[1]) != len(id) || !bytes.Equal(p[2:2+len(id)], id) {
				t.Errorf("%s: layout", e.ID)
			}
			if _, err := point.Decode(p); err != nil {
				t.Errorf("%s: not a point", e.ID)
			}
		})
	}
	for _, p := range file.Pseudonymize {
		t.Run(p.Seed, func(t *testing.T) {
			t.Parallel()
			M := must(point.Encode(vecHex(t, p.ID)))
			b, s := vecDecScalar(t, p.B), vecDecScalar(t, p.S)
			vecEq(t, "blinded", p.Blinded, ristretto255.NewIdentityElement().ScalarMult(b, M))
			sk := ristretto255.NewScalar().Multiply(s, kA)
			vecEq(t, "evaluated", p.Evaluated, ristretto255.NewIdentityElement().ScalarMult(ristretto255.NewScalar().Multiply(sk, b), M))
			vecEq(t, "transit point", p.TransitPoint, ristretto255.NewIdentityElement().ScalarMult(sk, M))
			P := ristretto255.NewIdentityElement().ScalarMult(kA, M)
			vecEq(t, "at rest", p.AtRest, P)
			vecEq(t, "at rest double", p.AtRestDouble, ristretto255.NewIdentityElement().ScalarMult(k2, P))
			o := vecOpen(t, A, p.TransitInfo, "")
			if o.Scalar.Equal(s) != 1 || o.Header.Iat != file.IssuedAt || o.Header.Exp != file.IssuedAt+A.TTLSeconds {
				t.Errorf("transitInfo content")
			}
			if ar, err := pseudonym.ParseAtRest(p.AtRestText); err != nil || hx(ar[:]) != p.AtRest {
				t.Errorf("at rest text")
			}
			vecTransitText(t, "transit text", p.TransitText, p.TransitPoint, p.TransitInfo)
		})
	}
	for _, p := range file.Identify {
		t.Run(p.Seed, func(t *testing.T) {
			t.Parallel()
			P := vecPoint(t, p.AtRest)
			s, b := vecDecScalar(t, p.S), vecDecScalar(t, p.B)
			PT := ristretto255.NewIdentityElement().ScalarMult(s, P)
			vecEq(t, "transit point", p.TransitPoint, PT)
			vecEq(t, "blinded", p.Blinded, ristretto255.NewIdentityElement().ScalarMult(b, PT))
			o := vecOpen(t, A, p.TransitInfo, p.Sub)
			if o.Scalar.Equal(s) != 1 || o.Header.Sub != p.Sub {
				t.Errorf("transitInfo content")
			}
			inv := ristretto255.NewScalar().Invert(ristretto255.NewScalar().Multiply(s, kA))
			Bl := vecPoint(t, p.Blinded)
			vecEq(t, "evaluated", p.Evaluated, ristretto255.NewIdentityElement().ScalarMult(inv, Bl))
			M := must(point.Encode(vecHex(t, p.ID)))
			vecEq(t, "identifier point", hx(M.Bytes()), ristretto255.NewIdentityElement().ScalarMult(ristretto255.NewScalar().Invert(kA), P))
			vecTransitText(t, "transit text", p.TransitText, p.TransitPoint, p.TransitInfo)
		})
	}
	for _, p := range file.Convert {
		t.Run(p.Seed, func(t *testing.T) {
			t.Parallel()
			P := vecPoint(t, p.AtRestFrom)
			s, b, s2 := vecDecScalar(t, p.S), vecDecScalar(t, p.B), vecDecScalar(t, p.S2)
			PT := ristretto255.NewIdentityElement().ScalarMult(s, P)
			vecEq(t, "transit point", p.TransitPoint, PT)
			vecEq(t, "blinded", p.Blinded, ristretto255.NewIdentityElement().ScalarMult(b, PT))
			f := ristretto255.NewScalar().Invert(ristretto255.NewScalar().Multiply(s, kA))
			f.Multiply(f, kB)
			f.Multiply(f, s2)
			vecEq(t, "evaluated", p.Evaluated, ristretto255.NewIdentityElement().ScalarMult(f, vecPoint(t, p.Blinded)))
			o := vecOpen(t, B, p.TransitInfoTo, "")
			if o.Scalar.Equal(s2) != 1 {
				t.Errorf("transitInfo_to content")
			}
			// Owner B's pseudonym equals k_B·M, a direct pseudonymize into B.
			M := ristretto255.NewIdentityElement().ScalarMult(ristretto255.NewScalar().Invert(kA), P)
			vecEq(t, "at rest in B", p.AtRestTo, ristretto255.NewIdentityElement().ScalarMult(kB, M))
			vecTransitText(t, "transit text", p.TransitText, p.TransitPoint, p.TransitInfo)
			vecTransitText(t, "transit text to", p.TransitTextTo, p.TransitPointB, p.TransitInfoTo)
		})
	}
}

// vecTransitText checks the text form of a transit pseudonym: it parses
// into the listed point and transitInfo (base64url of the point, ":", the
// transitInfo), and pseudonym.Transit.String gives it back unchanged.
func vecTransitText(t testing.TB, what, text, pointHex, info string) {
	t.Helper()
	tp, err := pseudonym.ParseTransit(text)
	if err != nil {
		t.Errorf("%s: %v", what, err)
		return
	}
	if hx(tp.Point[:]) != pointHex || tp.Info != info {
		t.Errorf("%s: parses into another point or transitInfo", what)
	}
	if tp.String() != text {
		t.Errorf("%s: String gives %q, the file has %q", what, tp.String(), text)
	}
	if want := base64.RawURLEncoding.EncodeToString(vecHex(t, pointHex)) + ":" + info; text != want {
		t.Errorf("%s: file has %q, base64url(point) + \":\" + transitInfo gives %q", what, text, want)
	}
}

func vecHex(t testing.TB, s string) []byte {
	t.Helper()
	return must(hex.DecodeString(s))
}

func vecDecScalar(t testing.TB, s string) *ristretto255.Scalar {
	t.Helper()
	return must(point.DecodeScalar(vecHex(t, s)))
}

func vecPoint(t testing.TB, s string) *ristretto255.Element {
	t.Helper()
	return must(point.Decode(vecHex(t, s)))
}

func vecEq(t testing.TB, what, want string, got *ristretto255.Element) {
	t.Helper()
	if hx(got.Bytes()) != want {
		t.Errorf("%s: file has %s, the equation gives %s", what, want, hx(got.Bytes()))
	}
}

func vecOpen(t testing.TB, d *vecDomain, ti, sub string) *transit.Opened {
	t.Helper()
	ks := must(transit.NewKeySet(d.Kid, map[string][]byte{d.Kid: vecHex(t, d.TransitKey)}))
	return must(ks.Open(ti, &transit.Check{Aud: d.Audience, Now: vecIat, Sub: sub}))
}
