package owner

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/gtank/ristretto255"

	"github.com/ehealth-pseudo/pseudonymizer/internal/point"
	"github.com/ehealth-pseudo/pseudonymizer/keys"
	"github.com/ehealth-pseudo/pseudonymizer/pseudonym"
)

// Transit infos that used to panic the transit parser (internal/transit
// Open decoded into fixed-size arrays before checking lengths): an
// 18-character IV, then also a 24-character tag, then a well-formed IV with
// a 24-character tag. Their kid, t1, is the first kid of every domain.
const (
	crashIV       = "eyJhbGciOiJkaXIiLCJlbmMiOiJBMjU2R0NNIiwia2lkIjoidDEiLCJhdWQiOiJ4IiwiaWF0IjowLCJleHAiOjR9..AAAAAAAAAAAAAAAAAA.AAAA.AAAAAAAAAAAAAAAAAAAAAA"
	crashIVAndTag = "eyJhbGciOiJkaXIiLCJlbmMiOiJBMjU2R0NNIiwia2lkIjoidDEiLCJhdWQiOiJ4IiwiaWF0IjowLCJleHAiOjR9..AAAAAAAAAAAAAAAAAA.AAAA.AAAAAAAAAAAAAAAAAAAAAAAA"
	crashTag      = "eyJhbGciOiJkaXIiLCJlbmMiOiJBMjU2R0NNIiwia2lkIjoidDEiLCJhdWQiOiJ4IiwiaWF0IjowLCJleHAiOjR9..AAAAAAAAAAAAAAAA.AAAA.AAAAAAAAAAAAAAAAAAAAAAAA"
)

// fixedRand is a deterministic randomness source, so that the domain's
// keys, and thus the seeds sealed under them, are the same in every run.
type fixedRand byte

func (r fixedRand) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte(r) + byte(i)
	}
	return len(p), nil
}

// isOpenError reports whether err is one of the errors AtRest and Open
// document (or pseudonym.ErrMalformedText, from parsing the text).
func isOpenError(err error) bool {
	for _, e := range []error{
		ErrMalformedTransitInfo, ErrUnknownKid, ErrBadTag, ErrWrongAudience, ErrExpired, ErrNotYetValid,
		ErrSubjectMismatch, ErrInvalidPoint, pseudonym.ErrMalformedText,
	} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// FuzzAtRest opens arbitrary received text with a real owner, as an owner
// service does: pseudonym.ParseTransit, then Owner.AtRest. It also hands
// the text as a transitInfo, with a valid point, straight to Open (what a
// caller that builds a pseudonym.Transit itself does), with a second key
// and an expected subject. Nothing may panic, every error is a documented
// sentinel, and a pseudonym that opens comes back through InTransit.
func FuzzAtRest(f *testing.F) {
	ctx := context.Background()
	d, err := keys.GenerateDomain(keys.DomainSpec{Name: "rx_v1", Audience: "urn:test:rx", TTL: 5 * time.Minute}, fixedRand(1))
	if err != nil {
		f.Fatal(err)
	}
	o, err := New(ctx, d.Name, StaticKeys{D: d}, WithRefreshInterval(0))
	if err != nil {
		f.Fatal(err)
	}
	k2 := ristretto255.NewScalar()
	if _, err := k2.SetUniformBytes(bytes.Repeat([]byte{5}, 64)); err != nil {
		f.Fatal(err)
	}
	o2, err := New(ctx, d.Name, StaticKeys{D: d}, WithRefreshInterval(0), WithSecondKey(k2.Bytes()))
	if err != nil {
		f.Fatal(err)
	}
	t0 := time.Unix(1_800_000_000, 0)
	M, _ := point.Encode([]byte("85073003328"))
	var p pseudonym.AtRest
	copy(p[:], M.Bytes())
	g := ristretto255.NewGeneratorElement().Bytes()
	var gp [pseudonym.Size]byte
	copy(gp[:], g)
	G := pseudonym.AtRest(gp).String()

	seal := func(o *Owner, opts ...TransitOption) *pseudonym.Transit {
		tp, err := o.InTransit(p, append(opts, IssuedAt(t0), Rand(fixedRand(2)))...)
		if err != nil {
			f.Fatal(err)
		}
		return tp
	}
	for _, tp := range []*pseudonym.Transit{
		seal(o), seal(o, Subject("dr-1")), seal(o2, Subject("dr-1"), Claims(map[string]any{"rx": "42"})),
		seal(o, TTL(time.Second)),
	} {
		f.Add(tp.String())
		f.Add(tp.Info)
	}
	for _, ti := range []string{crashIV, crashIVAndTag, crashTag} {
		f.Add(G + ":" + ti)
		f.Add(ti)
	}
	f.Add(G + ":")
	f.Add("")

	f.Fuzz(func(t *testing.T, s string) {
		check := func(o *Owner, tp *pseudonym.Transit, opts ...OpenOption) {
			op, err := o.Open(ctx, tp, opts...)
			if err != nil {
				if op != nil || !isOpenError(err) {
					t.Fatalf("Open: %v, %v", op, err)
				}
				return
			}
			if _, err := point.Decode(op.Pseudonym[:]); err != nil {
				t.Fatal("opened an invalid pseudonym at rest")
			}
			back, err := o.InTransit(op.Pseudonym, IssuedAt(t0))
			if err != nil {
				t.Fatal(err)
			}
			if q, err := o.AtRest(ctx, back, At(t0)); err != nil || q != op.Pseudonym {
				t.Fatalf("opened pseudonym does not come back: %v", err)
			}
		}
		// As an owner service receives it.
		if tp, err := pseudonym.ParseTransit(s); err != nil {
			if tp != nil || !errors.Is(err, pseudonym.ErrMalformedText) {
				t.Fatalf("ParseTransit: %v", err)
			}
		} else {
			if _, err := o.AtRest(ctx, tp, At(t0)); err != nil && !isOpenError(err) {
				t.Fatalf("AtRest: %v", err)
			}
			check(o, tp, At(t0))
		}
		// As a transitInfo, unparsed.
		check(o2, &pseudonym.Transit{Point: gp, Info: s}, At(t0), ExpectSubject("dr-1"))
	})
}
