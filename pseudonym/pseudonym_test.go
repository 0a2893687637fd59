package pseudonym

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/gtank/ristretto255"

	"github.com/ehealth-pseudo/pseudonymizer/internal/point"
	"github.com/ehealth-pseudo/pseudonymizer/internal/transit"
)

func sample(t testing.TB) (AtRest, *Transit) {
	t.Helper()
	var p AtRest
	copy(p[:], ristretto255.NewGeneratorElement().Bytes())
	ks, err := transit.NewKeySet("t1", map[string][]byte{"t1": bytes.Repeat([]byte{9}, 32)})
	if err != nil {
		t.Fatal(err)
	}
	s, _ := point.RandomScalar(nil)
	ti, err := ks.Seal(s, &transit.Claims{Aud: "urn:x", Iat: time.Unix(1000, 0), TTL: time.Minute, Sub: "dr"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return p, &Transit{Point: p, Info: ti}
}

func TestTextForms(t *testing.T) {
	p, tp := sample(t)
	s := p.String()
	if len(s) != 43 {
		t.Fatalf("at rest text has %d chars", len(s))
	}
	if q, err := ParseAtRest(s); err != nil || q != p {
		t.Fatalf("ParseAtRest: %v", err)
	}
	ts := tp.String()
	if !strings.HasPrefix(ts, s+":") {
		t.Fatalf("transit text %q", ts)
	}
	q, err := ParseTransit(ts)
	if err != nil || *q != *tp {
		t.Fatalf("ParseTransit: %v", err)
	}
	if exp, err := q.Expiry(); err != nil || !exp.Equal(time.Unix(1060, 0)) {
		t.Fatalf("Expiry = %v, %v", exp, err)
	}
	if sub, err := q.Subject(); err != nil || sub != "dr" {
		t.Fatalf("Subject = %q, %v", sub, err)
	}
	// JSON via TextMarshaler.
	type rec struct {
		P AtRest
		T *Transit
	}
	b, err := json.Marshal(rec{p, tp})
	if err != nil {
		t.Fatal(err)
	}
	var r rec
	if err := json.Unmarshal(b, &r); err != nil || r.P != p || *r.T != *tp {
		t.Fatalf("JSON round trip: %v", err)
	}
	for _, bad := range []string{"", s[:42], s + "A", strings.Repeat("A", 43), strings.Repeat("_", 43), s[:42] + "+"} {
		if _, err := ParseAtRest(bad); !errors.Is(err, ErrMalformedText) {
			t.Errorf("ParseAtRest(%q) accepted", bad)
		}
	}
	for _, bad := range []string{"", s, s + ":", s + ":a.b.c", strings.Repeat("A", 43) + ":" + tp.Info, s + ";" + tp.Info} {
		if _, err := ParseTransit(bad); !errors.Is(err, ErrMalformedText) {
			t.Errorf("ParseTransit(%q) accepted", bad)
		}
	}
}

func FuzzParseAtRest(f *testing.F) {
	p, _ := sample(f)
	f.Add(p.String())
	f.Add(strings.Repeat("A", 43))
	f.Fuzz(func(t *testing.T, s string) {
		q, err := ParseAtRest(s)
		if err != nil {
			if !errors.Is(err, ErrMalformedText) {
				t.Fatal(err)
			}
			return
		}
		if q.String() != s {
			t.Fatal("accepted a non-canonical text form")
		}
	})
}

func FuzzParseTransit(f *testing.F) {
	_, tp := sample(f)
	f.Add(tp.String())
	f.Add("A:B")
	f.Fuzz(func(t *testing.T, s string) {
		q, err := ParseTransit(s)
		if err != nil {
			if !errors.Is(err, ErrMalformedText) {
				t.Fatal(err)
			}
			return
		}
		if q.String() != s {
			t.Fatal("accepted a non-canonical text form")
		}
		if _, err := q.Expiry(); err != nil {
			t.Fatal("parsed but has no expiry")
		}
	})
}
