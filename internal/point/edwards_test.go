package point

import (
	"bytes"
	"encoding/hex"
	"errors"
	"math/big"
	"slices"
	"testing"

	"filippo.io/edwards25519"
	"filippo.io/edwards25519/field"
	"github.com/gtank/ristretto255"
)

// feDecimal is a field element as a decimal integer.
func feDecimal(fe *field.Element) string {
	le := fe.Bytes()
	slices.Reverse(le)
	return new(big.Int).SetBytes(le).String()
}

// TestEdwardsConstants checks the computed constants against the decimal
// values of RFC 9496, Section 4.1.
func TestEdwardsConstants(t *testing.T) {
	for name, c := range map[string]struct {
		fe   *field.Element
		want string
	}{
		"D":                 {curveD, "37095705934669439343138083508754565189542113879843219016388785533085940283555"},
		"SQRT_M1":           {sqrtM1, "19681161376707505956807079304988542015446066515923890162744021073123829784752"},
		"INVSQRT_A_MINUS_D": {invSqrtAMinusD, "54469307008909316920995813868745141605393597292927456921205312896311721017578"},
	} {
		if got := feDecimal(c.fe); got != c.want {
			t.Errorf("%s = %s, want %s", name, got, c.want)
		}
	}
}

// badEncodings are encodings RFC 9496 (Appendix A.2) lists as invalid:
// non-canonical field encodings, negative field elements, non-square x²,
// negative xy, s = -1.
var badEncodings = []string{
	"00ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
	"ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
	"f3ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
	"edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
	"0100000000000000000000000000000000000000000000000000000000000000",
	"01ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
	"ed57ffd8c914fb201471d1c3d245ce3c746fcbe63a3679d51b6a516ebebe0e20",
	"c34c4e1826e5d403b78e246e88aa051c36ccf0aafebffe137d148a2bf9104562",
	"c940e5a4404157cfb1628b108db051a8d439e1a421394ec4ebccb9ec92a8ac78",
	"26948d35ca62e643e26a83177332e6b6afeb9d08e4268b650f1f5bbd8d81d371",
	"26e5ba6ef3e03e2c4a93fa3a7dee50de6ea55bf00a4e2f9e1f6b5dcea3ebd0b4",
	"c73db8bd4eb3a5d8213f51fd7dbd0d8fe2a1d98ab6fe19e40cd1e6cb2a01e11e",
	"ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
}

// checkDecode compares DecodeEdwards with Decode (gtank's
// SetCanonicalBytes) on b: the same verdict and error, and for a valid
// encoding, the same element: (½·P) doubled encodes back to b exactly.
func checkDecode(t *testing.T, b []byte) (ok bool) {
	t.Helper()
	want, wantErr := Decode(b)
	got, err := DecodeEdwards(b)
	if (err == nil) != (wantErr == nil) || !errors.Is(err, wantErr) && wantErr != nil {
		t.Fatalf("%x: DecodeEdwards error %v, Decode error %v", b, err, wantErr)
	}
	if err != nil {
		return false
	}
	q := new(edwards25519.Point).ScalarMult(half, got)
	out := [][]byte{make([]byte, Size)}
	EncodeDoubled(out, []*edwards25519.Point{q})
	if !bytes.Equal(out[0], b) || !bytes.Equal(want.Bytes(), b) {
		t.Fatalf("%x: re-encoded as %x (library: %x)", b, out[0], want.Bytes())
	}
	return true
}

func TestDecodeEdwards(t *testing.T) {
	// The first multiples of the generator (valid), the RFC's invalid
	// encodings, the identity, and wrong lengths.
	g := ristretto255.NewGeneratorElement()
	e := ristretto255.NewIdentityElement()
	for range 16 {
		e.Add(e, g)
		if !checkDecode(t, e.Bytes()) {
			t.Fatalf("%x: a multiple of the generator was refused", e.Bytes())
		}
	}
	for _, h := range badEncodings {
		b, _ := hex.DecodeString(h)
		if checkDecode(t, b) {
			t.Fatalf("%s: an invalid encoding was accepted", h)
		}
	}
	if _, err := DecodeEdwards(make([]byte, Size)); !errors.Is(err, ErrIdentity) {
		t.Fatalf("identity: %v", err)
	}
	for _, n := range []int{0, 31, 33, 64} {
		if _, err := DecodeEdwards(make([]byte, n)); !errors.Is(err, ErrPointLength) {
			t.Fatalf("%d bytes: %v", n, err)
		}
	}
}

// FuzzDecodeEdwards: DecodeEdwards agrees with gtank/ristretto255's
// SetCanonicalBytes on every input.
func FuzzDecodeEdwards(f *testing.F) {
	for _, h := range badEncodings {
		b, _ := hex.DecodeString(h)
		f.Add(b)
	}
	f.Add(ristretto255.NewGeneratorElement().Bytes())
	f.Add(make([]byte, Size))
	f.Fuzz(func(t *testing.T, b []byte) {
		checkDecode(t, b)
	})
}

// checkEncodeDoubled builds a batch from data (64 bytes of uniform input
// and 32 of scalar per element; the identity where the scalar's first
// byte is 0xff) and compares EncodeDoubled with the library's encoding of
// each doubled element.
func checkEncodeDoubled(t *testing.T, data []byte) {
	t.Helper()
	var ps []*edwards25519.Point
	var want [][]byte
	for len(data) >= 96 {
		u, sb := data[:64], data[64:96]
		data = data[96:]
		if sb[0] == 0xff {
			ps = append(ps, edwards25519.NewIdentityPoint())
			want = append(want, make([]byte, Size))
			continue
		}
		e := ristretto255.NewIdentityElement()
		if _, err := e.SetUniformBytes(u); err != nil {
			t.Fatal(err)
		}
		wide := make([]byte, 64)
		copy(wide, sb)
		c, err := ristretto255.NewScalar().SetUniformBytes(wide)
		if err != nil {
			t.Fatal(err)
		}
		// The library: enc(2·c·E).
		w := ristretto255.NewIdentityElement().ScalarMult(c, e)
		w.Add(w, w)
		want = append(want, w.Bytes())
		// Ours: c·E computed on the Edwards representative (so Z ≠ 1).
		var p *edwards25519.Point
		if e.Equal(ristretto255.NewIdentityElement()) == 1 {
			p = edwards25519.NewIdentityPoint()
		} else if p, err = DecodeEdwards(e.Bytes()); err != nil {
			t.Fatal(err)
		}
		ps = append(ps, new(edwards25519.Point).ScalarMult(EdwardsScalar(c), p))
	}
	out := make([][]byte, len(ps))
	for i := range out {
		out[i] = make([]byte, Size)
	}
	EncodeDoubled(out, ps)
	for i := range out {
		if !bytes.Equal(out[i], want[i]) {
			t.Fatalf("element %d of %d: %x, library %x", i, len(ps), out[i], want[i])
		}
	}
}

func TestEncodeDoubled(t *testing.T) {
	for _, n := range []int{0, 1, 2, 3, 17, 100} {
		data := make([]byte, 96*n)
		for i := range data {
			data[i] = byte(i*7 + n)
		}
		if n > 2 {
			data[96*2+64] = 0xff // an identity in the middle of the batch
		}
		checkEncodeDoubled(t, data)
	}
}

// FuzzEncodeDoubled: EncodeDoubled agrees with gtank/ristretto255's
// encoding of the doubled elements, for batches of any size, identities
// included.
func FuzzEncodeDoubled(f *testing.F) {
	f.Add(make([]byte, 96))
	f.Add(bytes.Repeat([]byte{1, 2, 3}, 96))
	f.Add(append(bytes.Repeat([]byte{9}, 64), bytes.Repeat([]byte{0xff}, 32)...))
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > 96*64 {
			data = data[:96*64]
		}
		checkEncodeDoubled(t, data)
	})
}

// BenchmarkEncode100 compares encoding 100 results one by one (the
// library) with EncodeDoubled.
func BenchmarkEncode100(b *testing.B) {
	es := make([]*ristretto255.Element, 100)
	ps := make([]*edwards25519.Point, 100)
	out := make([][]byte, 100)
	for i := range es {
		u := bytes.Repeat([]byte{byte(i + 1)}, 64)
		es[i], _ = ristretto255.NewIdentityElement().SetUniformBytes(u)
		ps[i], _ = DecodeEdwards(es[i].Bytes())
		out[i] = make([]byte, Size)
	}
	b.Run("library", func(b *testing.B) {
		for b.Loop() {
			for i, e := range es {
				copy(out[i], e.Bytes())
			}
		}
	})
	b.Run("batch", func(b *testing.B) {
		for b.Loop() {
			EncodeDoubled(out, ps)
		}
	})
}
