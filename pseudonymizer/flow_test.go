package pseudonymizer_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ehealth-pseudo/pseudonymizer/client"
	"github.com/ehealth-pseudo/pseudonymizer/identifier"
	"github.com/ehealth-pseudo/pseudonymizer/internal/point"
	"github.com/ehealth-pseudo/pseudonymizer/internal/transit"
	"github.com/ehealth-pseudo/pseudonymizer/keys"
	"github.com/ehealth-pseudo/pseudonymizer/owner"
	"github.com/ehealth-pseudo/pseudonymizer/pseudonym"
	"github.com/ehealth-pseudo/pseudonymizer/pseudonymizer"
)

// flowEnv is two domains with their owners, all in process.
type flowEnv struct {
	kdA, kdB *keys.Domain
	dA, dB   *pseudonymizer.Domain
	ownA     *owner.Owner
	ownB     *owner.Owner
	now      time.Time
}

func flowDomain(t testing.TB, name string) *keys.Domain {
	t.Helper()
	d, err := keys.GenerateDomain(keys.DomainSpec{Name: name, Audience: "urn:test:" + name, TTL: 5 * time.Minute}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func newFlowEnv(t testing.TB) *flowEnv {
	t.Helper()
	e := &flowEnv{kdA: flowDomain(t, "prescriptions_v1"), kdB: flowDomain(t, "therlink_v1"), now: time.Now()}
	e.dA = must(pseudonymizer.NewDomain(e.kdA))
	e.dB = must(pseudonymizer.NewDomain(e.kdB))
	e.ownA = must(owner.New(context.Background(), e.kdA.Name, owner.StaticKeys{D: e.kdA}, owner.WithRefreshInterval(0)))
	e.ownB = must(owner.New(context.Background(), e.kdB.Name, owner.StaticKeys{D: e.kdB}, owner.WithRefreshInterval(0)))
	return e
}

func (e *flowEnv) params() *pseudonymizer.Params { return &pseudonymizer.Params{Now: e.now} }

// pseudonymize runs scenario 1's client and service steps for one NISS and
// returns the transit pseudonym the client forwards to the owner, and what
// the service saw.
func (e *flowEnv) pseudonymize(t testing.TB, d *pseudonymizer.Domain, niss string) (*pseudonym.Transit, []byte) {
	t.Helper()
	id, err := identifier.NISS(niss)
	if err != nil {
		t.Fatal(err)
	}
	blinded, u, err := client.Blind(id)
	if err != nil {
		t.Fatal(err)
	}
	ev, err := d.Pseudonymize(blinded, e.params())
	if err != nil {
		t.Fatal(err)
	}
	tp, err := u.Unblind(ev.Point[:], ev.TransitInfo)
	if err != nil {
		t.Fatal(err)
	}
	return tp, blinded
}

func (e *flowEnv) identify(t testing.TB, tp *pseudonym.Transit, caller string) ([]byte, error) {
	t.Helper()
	blinded, u, err := client.BlindTransit(tp)
	if err != nil {
		t.Fatal(err)
	}
	y, err := e.dA.Identify(blinded, tp.Info, &pseudonymizer.Params{Now: e.now, Caller: caller})
	if err != nil {
		return nil, err
	}
	return u.Identify(y[:])
}

const flowNISS = "85.07.30-033.28"

func TestScenarioPseudonymizeAtRest(t *testing.T) {
	e := newFlowEnv(t)
	ctx := context.Background()
	tp1, b1 := e.pseudonymize(t, e.dA, flowNISS)
	tp2, b2 := e.pseudonymize(t, e.dA, "85073003328")
	// The service saw two unrelated points for the same NISS.
	if bytes.Equal(b1, b2) {
		t.Fatal("blinded inputs of one identifier are equal: the service could link them")
	}
	// Two transit forms of the same pseudonym are unlinkable...
	if tp1.Point == tp2.Point || tp1.Info == tp2.Info {
		t.Fatal("two transit forms are equal")
	}
	// ...but open to the same pseudonym at rest: pseudonyms are deterministic.
	p1 := must(e.ownA.AtRest(ctx, tp1))
	p2 := must(e.ownA.AtRest(ctx, tp2))
	if p1 != p2 {
		t.Fatal("same NISS gives different pseudonyms at rest")
	}
	// And it is k·M, what a direct computation gives.
	M := must(point.Encode([]byte("85073003328")))
	k := must(point.DecodeScalar(e.kdA.Scalar))
	if got := M.ScalarMult(k, M).Bytes(); !bytes.Equal(got, p1[:]) {
		t.Fatal("pseudonym at rest is not k·M")
	}
	// Another NISS gives another pseudonym.
	tp3, _ := e.pseudonymize(t, e.dA, "00010100105")
	if p3 := must(e.ownA.AtRest(ctx, tp3)); p3 == p1 {
		t.Fatal("two NISS share a pseudonym")
	}
	// The other domain's owner cannot open it.
	if _, err := e.ownB.AtRest(ctx, tp1); !errors.Is(err, owner.ErrUnknownKid) && !errors.Is(err, owner.ErrBadTag) && !errors.Is(err, owner.ErrWrongAudience) {
		t.Fatalf("owner B opened A's pseudonym: %v", err)
	}
}

func TestScenarioIdentify(t *testing.T) {
	e := newFlowEnv(t)
	ctx := context.Background()
	tp, _ := e.pseudonymize(t, e.dA, flowNISS)
	p := must(e.ownA.AtRest(ctx, tp))

	// Scenario 3: the owner returns a transit form bound to the doctor.
	bound := must(e.ownA.InTransit(p, owner.Subject("dr-alice")))
	if sub, _ := bound.Subject(); sub != "dr-alice" {
		t.Fatalf("subject %q", sub)
	}
	id, err := e.identify(t, bound, "dr-alice")
	if err != nil || string(id) != "85073003328" {
		t.Fatalf("identify by the bound doctor = %q, %v", id, err)
	}
	if _, err := e.identify(t, bound, "dr-bob"); !errors.Is(err, transit.ErrSubjectMismatch) {
		t.Fatalf("identify by another doctor: %v", err)
	}
	// An unbound transit form is identified by anyone the policy allows.
	free := must(e.ownA.InTransit(p))
	if id, err := e.identify(t, free, "pharmacist"); err != nil || string(id) != "85073003328" {
		t.Fatalf("identify unbound = %q, %v", id, err)
	}
	// After exp nobody can.
	old := must(e.ownA.InTransit(p, owner.IssuedAt(e.now.Add(-time.Hour))))
	if _, err := e.identify(t, old, ""); !errors.Is(err, transit.ErrExpired) {
		t.Fatalf("identify expired: %v", err)
	}
}

func TestScenarioConvert(t *testing.T) {
	e := newFlowEnv(t)
	ctx := context.Background()
	tp, _ := e.pseudonymize(t, e.dA, flowNISS)
	pA := must(e.ownA.AtRest(ctx, tp))

	// Owner A converts its pseudonym into B's domain.
	tA := must(e.ownA.InTransit(pA))
	blinded, u, err := client.BlindTransit(tA)
	if err != nil {
		t.Fatal(err)
	}
	ev, err := pseudonymizer.Convert(e.dA, e.dB, blinded, tA.Info, e.params())
	if err != nil {
		t.Fatal(err)
	}
	tB := must(u.Unblind(ev.Point[:], ev.TransitInfo))
	pB := must(e.ownB.AtRest(ctx, tB))

	// It equals a direct pseudonymize into B.
	direct, _ := e.pseudonymize(t, e.dB, flowNISS)
	if want := must(e.ownB.AtRest(ctx, direct)); pB != want {
		t.Fatal("convert A→B differs from pseudonymize into B")
	}
	if pB == pA {
		t.Fatal("domains share pseudonyms")
	}
	// Owner A cannot open the result.
	if _, err := e.ownA.AtRest(ctx, tB); err == nil {
		t.Fatal("owner A opened B's transit pseudonym")
	}
	// Convert within one domain is refused.
	if _, err := pseudonymizer.Convert(e.dA, e.dA, blinded, tA.Info, e.params()); !errors.Is(err, pseudonymizer.ErrSameDomain) {
		t.Fatalf("convert A→A: %v", err)
	}
	// A transit form of B cannot be converted as if it were A's.
	if _, err := pseudonymizer.Convert(e.dA, e.dB, blinded, ev.TransitInfo, e.params()); err == nil {
		t.Fatal("converted with another domain's transitInfo")
	}
}

func TestDoublePseudonymization(t *testing.T) {
	e := newFlowEnv(t)
	ctx := context.Background()
	k2 := must(keys.NewScalar(nil))
	own2 := must(owner.New(ctx, e.kdA.Name, owner.StaticKeys{D: e.kdA}, owner.WithRefreshInterval(0), owner.WithSecondKey(k2)))
	tp, _ := e.pseudonymize(t, e.dA, flowNISS)
	p := must(e.ownA.AtRest(ctx, tp))
	p2 := must(own2.AtRest(ctx, tp))
	if p == p2 {
		t.Fatal("double pseudonym equals the single one")
	}
	// Deterministic too.
	tp2, _ := e.pseudonymize(t, e.dA, flowNISS)
	if again := must(own2.AtRest(ctx, tp2)); again != p2 {
		t.Fatal("double pseudonym not deterministic")
	}
	// In transit, k2 is removed first: identify still works.
	out := must(own2.InTransit(p2))
	if id, err := e.identify(t, out, ""); err != nil || string(id) != "85073003328" {
		t.Fatalf("identify through double pseudonymization = %q, %v", id, err)
	}
	// And the plain owner reads the transit form as the single pseudonym.
	if back := must(e.ownA.AtRest(ctx, out)); back != p {
		t.Fatal("transit form of k2·P does not carry P")
	}
	if _, err := owner.New(ctx, e.kdA.Name, owner.StaticKeys{D: e.kdA}, owner.WithSecondKey(make([]byte, 32))); !errors.Is(err, owner.ErrInvalidKey) {
		t.Fatalf("zero k2: %v", err)
	}
}

func TestForgeriesRejected(t *testing.T) {
	e := newFlowEnv(t)
	ctx := context.Background()
	tp, _ := e.pseudonymize(t, e.dA, flowNISS)
	p := must(e.ownA.AtRest(ctx, tp))
	good := must(e.ownA.InTransit(p))

	// A transitInfo forged under a key the attacker made up.
	fake := flowDomain(t, "prescriptions_v1")
	fake.Audience = e.kdA.Audience
	fakeOwner := must(owner.New(ctx, fake.Name, owner.StaticKeys{D: fake}, owner.WithRefreshInterval(0)))
	forged := must(fakeOwner.InTransit(p))
	if _, err := e.ownA.AtRest(ctx, forged); !errors.Is(err, owner.ErrBadTag) {
		t.Fatalf("owner accepted a forged transitInfo: %v", err)
	}
	blinded, _, _ := client.BlindTransit(forged)
	if _, err := e.dA.Identify(blinded, forged.Info, e.params()); !errors.Is(err, transit.ErrBadTag) {
		t.Fatalf("service accepted a forged transitInfo: %v", err)
	}
	// A transitInfo moved onto another point opens, but to garbage, and
	// identify then yields no identifier.
	swapped := &pseudonym.Transit{Point: tp.Point, Info: good.Info}
	if _, err := e.identify(t, swapped, ""); !errors.Is(err, client.ErrNotIdentifier) {
		t.Fatalf("identify of a swapped pair: %v", err)
	}
	// Invalid points.
	for name, b := range map[string][]byte{
		"identity": make([]byte, 32), "short": make([]byte, 31), "non-canonical": bytes.Repeat([]byte{0xff}, 32),
	} {
		if _, err := e.dA.Pseudonymize(b, e.params()); !errors.Is(err, point.ErrInvalidPoint) {
			t.Errorf("pseudonymize %s: %v", name, err)
		}
		if _, err := e.dA.Identify(b, good.Info, e.params()); !errors.Is(err, point.ErrInvalidPoint) {
			t.Errorf("identify %s: %v", name, err)
		}
		var bad pseudonym.Transit
		copy(bad.Point[:], b)
		bad.Info = good.Info
		if _, err := e.ownA.AtRest(ctx, &bad); !errors.Is(err, owner.ErrInvalidPoint) {
			t.Errorf("owner %s: %v", name, err)
		}
	}
	// The client refuses a bad evaluated point too.
	_, u, _ := client.Blind([]byte("x"))
	if _, err := u.Unblind(make([]byte, 32), good.Info); !errors.Is(err, client.ErrInvalidPoint) {
		t.Fatalf("client unblind identity: %v", err)
	}
	// Errors never echo the inputs.
	_, err := e.dA.Identify(bytes.Repeat([]byte{0xff}, 32), good.Info, e.params())
	if strings.Contains(err.Error(), "ff") || strings.Contains(err.Error(), good.Info[:10]) {
		t.Fatalf("error echoes input: %v", err)
	}
}

func TestBatchesDistinct(t *testing.T) {
	e := newFlowEnv(t)
	ctx := context.Background()
	const n = 150 // over 2×minChunk: the batch is spread over goroutines
	ids := make([][]byte, n)
	for i := range ids {
		ids[i] = []byte(fmt.Sprintf("patient-%03d", i))
	}
	ids[7] = nil                         // fails to blind alone
	ids[9] = bytes.Repeat([]byte{1}, 30) // too long
	blinded, bu, errs := client.BlindBatch(ids)
	if !errors.Is(errs[7], client.ErrEmptyIdentifier) || !errors.Is(errs[9], client.ErrIdentifierTooLong) {
		t.Fatalf("blind errors %v %v", errs[7], errs[9])
	}
	blinded[11] = make([]byte, 32) // identity: the service refuses it alone
	evs, serrs := e.dA.PseudonymizeBatch(blinded, e.params())
	points := make([][]byte, n)
	infos := make([]string, n)
	for i := range evs {
		if i == 7 || i == 9 || i == 11 {
			if serrs[i] == nil {
				t.Fatalf("item %d accepted", i)
			}
			continue
		}
		if serrs[i] != nil {
			t.Fatalf("item %d: %v", i, serrs[i])
		}
		points[i], infos[i] = evs[i].Point[:], evs[i].TransitInfo
	}
	tps, uerrs := bu.UnblindBatch(points, infos)
	seen := map[pseudonym.AtRest]int{}
	ats := make([]pseudonym.AtRest, n)
	for i, tp := range tps {
		if i == 7 || i == 9 || i == 11 {
			if uerrs[i] == nil {
				t.Fatalf("unblind of failed item %d succeeded", i)
			}
			continue
		}
		if uerrs[i] != nil {
			t.Fatalf("unblind %d: %v", i, uerrs[i])
		}
		p := must(e.ownA.AtRest(ctx, tp))
		if j, dup := seen[p]; dup {
			t.Fatalf("items %d and %d share a pseudonym (the eHealth item-0 bug)", j, i)
		}
		seen[p], ats[i] = i, p
		if p != e.direct(e.kdA, ids[i]) {
			t.Fatalf("item %d is not k·M of its own identifier", i)
		}
	}

	// Identify the batch back, with one forged item failing alone.
	tins := make([]*pseudonym.Transit, 0, n)
	want := make([][]byte, 0, n)
	for i, p := range ats {
		if i == 7 || i == 9 || i == 11 {
			continue
		}
		tins = append(tins, must(e.ownA.InTransit(p)))
		want = append(want, ids[i])
	}
	bl, ibu, berrs := client.BlindTransitBatch(tins)
	items := make([]pseudonymizer.Item, len(tins))
	for i := range tins {
		if berrs[i] != nil {
			t.Fatal(berrs[i])
		}
		items[i] = pseudonymizer.Item{Blinded: bl[i], TransitInfo: tins[i].Info}
	}
	items[3].TransitInfo = items[4].TransitInfo[:len(items[4].TransitInfo)-2] + "AA"
	ys, ierrs := e.dA.IdentifyBatch(items, e.params())
	yb := make([][]byte, len(ys))
	for i := range ys {
		if i == 3 {
			if !errors.Is(ierrs[i], transit.ErrBadTag) && !errors.Is(ierrs[i], transit.ErrMalformed) {
				t.Fatalf("forged item: %v", ierrs[i])
			}
			yb[i] = nil
			continue
		}
		if ierrs[i] != nil {
			t.Fatalf("identify item %d: %v", i, ierrs[i])
		}
		yb[i] = ys[i][:]
	}
	got, gerrs := ibu.IdentifyBatch(yb)
	for i := range got {
		if i == 3 {
			if gerrs[i] == nil {
				t.Fatal("missing answer unblinded")
			}
			continue
		}
		if gerrs[i] != nil || !bytes.Equal(got[i], want[i]) {
			t.Fatalf("identify batch item %d = %q, %v; want %q", i, got[i], gerrs[i], want[i])
		}
	}

	// Convert the batch into B: each item lands on k_B·M of its own id.
	cevs, cerrs := pseudonymizer.ConvertBatch(e.dA, e.dB, items, e.params())
	cp := make([][]byte, len(cevs))
	ci := make([]string, len(cevs))
	for i := range cevs {
		if i == 3 {
			if cerrs[i] == nil {
				t.Fatal("forged convert item accepted")
			}
			continue
		}
		if cerrs[i] != nil {
			t.Fatalf("convert item %d: %v", i, cerrs[i])
		}
		cp[i], ci[i] = cevs[i].Point[:], cevs[i].TransitInfo
	}
	ctps, _ := ibu.UnblindBatch(cp, ci)
	for i, tp := range ctps {
		if i == 3 {
			continue
		}
		if p := must(e.ownB.AtRest(ctx, tp)); p != e.direct(e.kdB, want[i]) {
			t.Fatalf("convert batch item %d is not k_B·M of its own identifier", i)
		}
	}
}

// direct computes k·Encode(id) without the protocol, as a reference.
func (e *flowEnv) direct(kd *keys.Domain, id []byte) pseudonym.AtRest {
	M := must(point.Encode(id))
	var p pseudonym.AtRest
	copy(p[:], M.ScalarMult(must(point.DecodeScalar(kd.Scalar)), M).Bytes())
	return p
}
