package owner

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ehealth-pseudo/pseudonymizer/internal/point"
	"github.com/ehealth-pseudo/pseudonymizer/internal/waitfor"
	"github.com/ehealth-pseudo/pseudonymizer/keys"
	"github.com/ehealth-pseudo/pseudonymizer/protoerr"
	"github.com/ehealth-pseudo/pseudonymizer/pseudonym"
)

// rotatingKeys is a KeyProvider whose domain can be replaced, counting reads.
type rotatingKeys struct {
	mu    sync.Mutex
	d     *keys.Domain
	reads atomic.Int32
	fail  bool
}

func (r *rotatingKeys) Domain(_ context.Context, name string) (*keys.Domain, error) {
	r.reads.Add(1)
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fail {
		return nil, keys.ErrUnavailable
	}
	if r.d.Name != name {
		return nil, keys.ErrUnknownDomain
	}
	return r.d, nil
}

func (r *rotatingKeys) set(d *keys.Domain) {
	r.mu.Lock()
	r.d = d
	r.mu.Unlock()
}

func testDomain(t testing.TB) *keys.Domain {
	t.Helper()
	d, err := keys.GenerateDomain(keys.DomainSpec{Name: "prescriptions_v1", Audience: "urn:test:prescriptions_v1", TTL: 5 * time.Minute}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func randomAtRest(t testing.TB) pseudonym.AtRest {
	t.Helper()
	s, _ := point.RandomScalar(nil)
	M, _ := point.Encode([]byte("85073003328"))
	var p pseudonym.AtRest
	copy(p[:], M.ScalarMult(s, M).Bytes())
	return p
}

func rotated(d *keys.Domain, kid string) *keys.Domain {
	tk, _ := keys.NewTransitKey(nil)
	n := *d
	n.Transit = keys.Transit{Active: kid, Keys: map[string]keys.Secret{kid: tk}}
	for k, v := range d.Transit.Keys {
		n.Transit.Keys[k] = v
	}
	n.Generation++
	return &n
}

func TestRoundTripAndChecks(t *testing.T) {
	ctx := context.Background()
	d := testDomain(t)
	o, err := New(ctx, d.Name, StaticKeys{D: d}, WithRefreshInterval(0))
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	p := randomAtRest(t)
	t0 := time.Unix(1_800_000_000, 0)
	tp, err := o.InTransit(p, IssuedAt(t0), TTL(time.Minute), Subject("dr-1"), Claims(map[string]any{"rx": "42"}))
	if err != nil {
		t.Fatal(err)
	}
	op, err := o.Open(ctx, tp, At(t0), ExpectSubject("dr-1"))
	if err != nil {
		t.Fatal(err)
	}
	if op.Pseudonym != p || op.Subject != "dr-1" || !op.Expiry.Equal(t0.Add(time.Minute)) || string(op.Claims["rx"]) != `"42"` || op.Kid != "t1" {
		t.Fatalf("opened %+v", op)
	}
	for _, c := range []struct {
		name string
		opts []OpenOption
		want error
	}{
		{"expired", []OpenOption{At(t0.Add(time.Minute + 61*time.Second))}, ErrExpired},
		{"expired within skew", []OpenOption{At(t0.Add(time.Minute + 60*time.Second))}, nil},
		{"expired, recovery", []OpenOption{At(t0.Add(time.Hour)), SkipExpiry()}, nil},
		{"not yet valid", []OpenOption{At(t0.Add(-61 * time.Second))}, ErrNotYetValid},
		{"subject", []OpenOption{At(t0), ExpectSubject("dr-2")}, ErrSubjectMismatch},
	} {
		_, err := o.AtRest(ctx, tp, c.opts...)
		if !errors.Is(err, c.want) || (err == nil) != (c.want == nil) {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
	}
	// Unbound pseudonym with an expected subject.
	free, _ := o.InTransit(p, IssuedAt(t0))
	if _, err := o.AtRest(ctx, free, At(t0), ExpectSubject("dr-1")); !errors.Is(err, ErrSubjectMismatch) {
		t.Errorf("unbound with expected subject: %v", err)
	}
	// Wrong audience: same keys, other audience.
	d2 := *d
	d2.Audience = "urn:test:other"
	o2, _ := New(ctx, d.Name, StaticKeys{D: &d2}, WithRefreshInterval(0))
	if _, err := o2.AtRest(ctx, free, At(t0)); !errors.Is(err, ErrWrongAudience) {
		t.Errorf("wrong audience: %v", err)
	}
	if _, err := o.InTransit(p, Claims(map[string]any{"scalar": 1})); !errors.Is(err, ErrInvalidClaims) {
		t.Errorf("reserved claim: %v", err)
	}
	if _, err := o.InTransit(pseudonym.AtRest{}); !errors.Is(err, ErrInvalidPoint) {
		t.Errorf("identity at rest: %v", err)
	}
	if _, err := o.AtRest(ctx, nil); !errors.Is(err, ErrMalformedTransitInfo) {
		t.Errorf("nil: %v", err)
	}
}

func TestRefreshOnUnknownKid(t *testing.T) {
	ctx := context.Background()
	d := testDomain(t)
	prov := &rotatingKeys{d: d}
	o, err := New(ctx, d.Name, prov, WithRefreshInterval(0), WithMinRefreshGap(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	// The service rotates: a pseudonym sealed under t2 arrives.
	d2 := rotated(d, "t2")
	prov.set(d2)
	svc, _ := New(ctx, d.Name, StaticKeys{D: d2}, WithRefreshInterval(0))
	tp, _ := svc.InTransit(randomAtRest(t))
	if _, err := o.AtRest(ctx, tp); err != nil {
		t.Fatalf("after rotation: %v", err)
	}
	if n := prov.reads.Load(); n != 2 {
		t.Fatalf("%d reads, want 2", n)
	}
	// A flood of unknown kids triggers no more reads within the gap.
	d3 := rotated(d2, "t3")
	svc3, _ := New(ctx, d.Name, StaticKeys{D: d3}, WithRefreshInterval(0))
	forged, _ := svc3.InTransit(randomAtRest(t))
	for range 100 {
		var uk *protoerr.UnknownKidError
		if _, err := o.AtRest(ctx, forged); !errors.Is(err, ErrUnknownKid) || !errors.As(err, &uk) || uk.Kid != "t3" {
			t.Fatalf("unknown kid: %v (the error carries the kid)", err)
		}
	}
	if n := prov.reads.Load(); n != 2 {
		t.Fatalf("%d reads after a flood, want 2 (rate-limited)", n)
	}
	// New transit forms use the active kid at once.
	if h, _ := o.InTransit(randomAtRest(t)); h == nil {
		t.Fatal("no transit")
	} else if op, err := o.Open(ctx, h); err != nil || op.Kid != "t2" {
		t.Fatalf("kid %v, %v", op, err)
	}
}

func TestPeriodicRefreshAndOutage(t *testing.T) {
	ctx := context.Background()
	d := testDomain(t)
	prov := &rotatingKeys{d: d}
	o, err := New(ctx, d.Name, prov, WithRefreshInterval(20*time.Millisecond), WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	p := randomAtRest(t)
	tp, _ := o.InTransit(p)
	prov.mu.Lock()
	prov.fail = true
	prov.mu.Unlock()
	// The key store is down: a refresh fails, and the owner keeps working
	// with what it has.
	if err := o.Refresh(ctx); err == nil {
		t.Fatal("Refresh succeeded against a failing provider")
	}
	if got, err := o.AtRest(ctx, tp); err != nil || got != p {
		t.Fatalf("during outage: %v", err)
	}
	prov.mu.Lock()
	prov.fail = false
	prov.d = rotated(d, "t2")
	prov.mu.Unlock()
	if err := o.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if op, err := o.Open(ctx, must(o.InTransit(p))); err != nil || op.Kid != "t2" {
		t.Fatalf("after Refresh: %v %v", op, err)
	}
	// The periodic refresh picks up a rotation by itself.
	prov.mu.Lock()
	prov.d = rotated(prov.d, "t3")
	prov.mu.Unlock()
	waitfor.Cond(t, 5*time.Second, "the periodic refresh to pick up t3", func() bool {
		op, err := o.Open(ctx, must(o.InTransit(p)))
		return err == nil && op.Kid == "t3"
	})
	if _, err := New(ctx, "nope", prov); !errors.Is(err, keys.ErrUnknownDomain) {
		t.Fatalf("unknown domain: %v", err)
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
