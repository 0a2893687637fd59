package client

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"

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
