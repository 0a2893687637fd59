package client

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/ehealth-pseudo/pseudonymizer/internal/point"
	"github.com/ehealth-pseudo/pseudonymizer/pseudonym"
)

func TestUnblinderNeverPrints(t *testing.T) {
	_, u, err := Blind([]byte("85073003328"))
	if err != nil {
		t.Fatal(err)
	}
	secret := fmt.Sprintf("%x", u.b.Bytes())
	var logs bytes.Buffer
	slog.New(slog.NewJSONHandler(&logs, nil)).Info("x", "u", u)
	for _, s := range []string{fmt.Sprint(u), fmt.Sprintf("%v %+v %#v %x %s %q", u, u, u, u, u, u), logs.String()} {
		if strings.Contains(s, secret) || strings.Contains(s, u.b.String()) {
			t.Fatalf("Unblinder printed its scalar: %s", s)
		}
	}
	_, bu, _ := BlindBatch([][]byte{[]byte("a")})
	if strings.Contains(fmt.Sprintf("%v %+v", bu, bu), "b:") {
		t.Fatal("BatchUnblinder prints fields")
	}
}

func TestBlindIsRandomized(t *testing.T) {
	b1, _, _ := Blind([]byte("85073003328"))
	b2, _, _ := Blind([]byte("85073003328"))
	if bytes.Equal(b1, b2) {
		t.Fatal("two blindings of one identifier are equal")
	}
}

// zeroes is a source of randomness that is anything but random.
type zeroes struct{ n byte }

func (z *zeroes) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = z.n
	}
	z.n++
	return len(p), nil
}

// TestRandOption: Rand replaces crypto/rand for every blinding form, and
// the batch forms draw one scalar per item, in order.
func TestRandOption(t *testing.T) {
	id := []byte("85073003328")
	b1, _, _ := Blind(id, Rand(&zeroes{n: 1}))
	b2, _, _ := Blind(id, Rand(&zeroes{n: 1}))
	if !bytes.Equal(b1, b2) {
		t.Fatal("Blind ignores Rand")
	}
	bs, _, errs := BlindBatch([][]byte{id, id}, Rand(&zeroes{n: 1}))
	b3, _, _ := Blind(id, Rand(&zeroes{n: 2}))
	if errs[0] != nil || !bytes.Equal(bs[0], b1) || !bytes.Equal(bs[1], b3) {
		t.Fatal("BlindBatch ignores Rand")
	}
	tp, _ := (&Unblinder{b: must(point.RandomScalar(nil))}).Unblind(b1, newFuzzFixture(t).info)
	t1, _, _ := BlindTransit(tp, Rand(&zeroes{n: 7}))
	ts, _, _ := BlindTransitBatch([]*pseudonym.Transit{tp}, Rand(&zeroes{n: 7}))
	if t1 == nil || !bytes.Equal(t1, ts[0]) {
		t.Fatal("BlindTransit or BlindTransitBatch ignores Rand")
	}
	if _, _, err := BlindTransit(nil); !errors.Is(err, ErrInvalidPoint) {
		t.Fatalf("BlindTransit(nil) = %v", err)
	}
}

func TestBatchErrors(t *testing.T) {
	_, bu, errs := BlindBatch([][]byte{[]byte("a"), nil})
	if errs[0] != nil || !errors.Is(errs[1], ErrEmptyIdentifier) {
		t.Fatal(errs)
	}
	if _, errs := bu.UnblindBatch([][]byte{nil}, []string{""}); !errors.Is(errs[0], ErrLengthMismatch) {
		t.Fatal(errs)
	}
	if _, errs := bu.IdentifyBatch(nil); !errors.Is(errs[0], ErrLengthMismatch) {
		t.Fatal(errs)
	}
	_, _, errs = BlindTransitBatch([]*pseudonym.Transit{nil, {}})
	if !errors.Is(errs[0], ErrInvalidPoint) || !errors.Is(errs[1], ErrInvalidPoint) {
		t.Fatal(errs)
	}
	_, u, _ := Blind([]byte("a"))
	if _, err := u.Unblind(make([]byte, 32), ""); !errors.Is(err, ErrMissingTransitInfo) {
		t.Fatal(err)
	}
	if _, err := u.Identify([]byte{1, 2}); !errors.Is(err, ErrInvalidPoint) {
		t.Fatal(err)
	}
}
