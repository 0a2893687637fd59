package e2e

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ehealth-pseudo/pseudonymizer/client"
	"github.com/ehealth-pseudo/pseudonymizer/owner"
	"github.com/ehealth-pseudo/pseudonymizer/pseudonym"
)

// scenarios run in every world: over mTLS against the Vault-backed server
// (TestFlows) and through the wire tap of the plaintext development server
// (TestBlindOnTheWire).
var scenarios = []struct {
	name string
	run  func(*testing.T, *world)
}{
	{"Scenario1_DoctorRegistersPrescription", scenarioRegister},
	{"Scenario2_PharmacistFindsPrescriptions", scenarioPharmacist},
	{"Scenario3_DoctorIdentifiesHerPatients", scenarioMyPrescriptions},
	{"ConvertToTherLink", scenarioConvert},
	{"DoublePseudonymization", scenarioDouble},
}

// Scenario 1: a doctor registers an e-prescription for a patient. Her
// software pseudonymizes the NISS into prescriptions_v1 and sends the
// transit pseudonym with the prescription; the prescription service
// stores it under the pseudonym at rest.
func scenarioRegister(t *testing.T, w *world) {
	ctx := context.Background()
	rx := w.prescriptionService(nil)
	x, y := w.newPatient(), w.newPatient()
	today := time.Now()

	tr := w.pseudonymize(t, alice, rxDomain, x.formatted())
	p := rx.register(t, alice, tr, "amoxicillin 500 mg", today)
	if bytes.Equal(tr.Point[:], p[:]) {
		t.Fatal("the transit point is the pseudonym at rest: the client saw a pseudonym")
	}
	op, err := rx.owner.Open(ctx, tr)
	if err != nil {
		t.Fatal(err)
	}
	if op.Subject != "" || !op.Expiry.After(time.Now()) || op.Kid == "" {
		t.Errorf("opened transitInfo: sub %q, exp %v, kid %q; want no sub, a future exp, a kid", op.Subject, op.Expiry, op.Kid)
	}

	// The same NISS, typed another way and pseudonymized again (by another
	// doctor), is the same pseudonym at rest; its transit form is not
	// linkable to the first one.
	tr2 := w.pseudonymize(t, bob, rxDomain, x.spaced())
	if tr2.Point == tr.Point || tr2.Info == tr.Info {
		t.Error("two transit pseudonyms of one NISS are equal: they are linkable")
	}
	if p2 := rx.register(t, bob, tr2, "paracetamol 1 g", today); p2 != p {
		t.Error("one NISS gave two pseudonyms at rest")
	}
	// Another patient has another pseudonym.
	py := rx.register(t, alice, w.pseudonymize(t, alice, rxDomain, y.plain()), "ibuprofen 400 mg", today)
	if py == p {
		t.Error("two patients have the same pseudonym at rest")
	}

	// A batch (prescriptions of several patients at once) gives the same
	// pseudonyms at rest, item by item.
	trs, errs, err := w.client(alice).PseudonymizeBatch(ctx, rxDomain, [][]byte{y.niss, x.niss})
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []pseudonym.AtRest{py, p} {
		if errs[i] != nil {
			t.Fatalf("batch item %d: %v", i, errs[i])
		}
		w.sec.transit(trs[i])
		if got, err := rx.owner.AtRest(ctx, trs[i]); err != nil || got != want {
			t.Errorf("batch item %d: %v (same pseudonym as alone: %t)", i, err, got == want)
		}
	}

	// The service refuses principals the policy does not list for
	// pseudonymize: TherLink, and the domain's owner itself.
	for _, who := range []string{therlink, rxService} {
		_, err := w.client(who).Pseudonymize(ctx, rxDomain, x.niss)
		if status.Code(err) != codes.PermissionDenied {
			t.Errorf("%s pseudonymizing into %s: %v; want PermissionDenied", who, rxDomain, err)
		}
	}
}

// Scenario 2: a pharmacist asks for the prescriptions of a patient. The
// pharmacy software pseudonymizes the NISS; the prescription service finds
// the prescriptions by the pseudonym at rest.
func scenarioPharmacist(t *testing.T, w *world) {
	rx := w.prescriptionService(nil)
	x, y := w.newPatient(), w.newPatient()
	yesterday, today := time.Now().AddDate(0, 0, -1), time.Now()
	rx.register(t, alice, w.pseudonymize(t, alice, rxDomain, x.formatted()), "amoxicillin 500 mg", yesterday)
	rx.register(t, bob, w.pseudonymize(t, bob, rxDomain, x.plain()), "salbutamol inhaler", today)
	rx.register(t, alice, w.pseudonymize(t, alice, rxDomain, y.formatted()), "insulin glargine", today)

	// The patient hands over an eID: the pharmacy reads the NISS as digits
	// with spaces.
	got := rx.forPatient(t, w.pseudonymize(t, pharmacist, rxDomain, x.spaced()))
	var drugs []string
	for _, r := range got {
		drugs = append(drugs, r.drug)
	}
	slices.Sort(drugs)
	if want := []string{"amoxicillin 500 mg", "salbutamol inhaler"}; !slices.Equal(drugs, want) {
		t.Errorf("prescriptions of the patient: %q; want %q", drugs, want)
	}
	if got := rx.forPatient(t, w.pseudonymize(t, pharmacist, rxDomain, y.plain())); len(got) != 1 || got[0].drug != "insulin glargine" {
		t.Errorf("prescriptions of the other patient: %v", got)
	}
}

// Scenario 3: a doctor asks for the prescriptions she issued yesterday. The
// prescription service returns them with transit pseudonyms bound to her;
// her software identifies the patients. Another doctor cannot identify
// them, nor can anyone after exp, nor the owner itself.
func scenarioMyPrescriptions(t *testing.T, w *world) {
	ctx := context.Background()
	rx := w.prescriptionService(nil)
	yesterday, today := time.Now().AddDate(0, 0, -1), time.Now()
	patients := []patient{w.newPatient(), w.newPatient(), w.newPatient()}
	for _, p := range patients {
		rx.register(t, alice, w.pseudonymize(t, alice, rxDomain, p.formatted()), "amoxicillin 500 mg", yesterday)
	}
	rx.register(t, alice, w.pseudonymize(t, alice, rxDomain, w.newPatient().plain()), "paracetamol 1 g", today)
	rx.register(t, bob, w.pseudonymize(t, bob, rxDomain, w.newPatient().plain()), "ibuprofen 400 mg", yesterday)

	recs, trs := rx.issuedBy(t, alice, yesterday, owner.Subject(alice))
	if len(recs) != len(patients) {
		t.Fatalf("the prescription service found %d prescriptions of Alice yesterday; want %d", len(recs), len(patients))
	}
	for _, tr := range trs {
		if sub, _ := tr.Subject(); sub != alice {
			t.Fatalf("transit pseudonym bound to %q; want %q", sub, alice)
		}
	}
	ids, errs, err := w.client(alice).IdentifyBatch(ctx, rxDomain, trs)
	if err != nil {
		t.Fatal(err)
	}
	var got, want []string
	for i := range ids {
		if errs[i] != nil {
			t.Fatalf("Alice identifying item %d: %v", i, errs[i])
		}
		got = append(got, string(ids[i]))
	}
	for _, p := range patients {
		want = append(want, p.plain())
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("Alice identified %d patients, not the ones she treated yesterday", len(got))
	}

	// Another doctor, allowed to identify in this domain, is refused item
	// by item: the pseudonyms are bound to Alice.
	_, errs, err = w.client(bob).IdentifyBatch(ctx, rxDomain, trs)
	if err != nil {
		t.Fatal(err)
	}
	for i, e := range errs {
		if !errors.Is(e, client.ErrSubjectMismatch) || status.Code(e) != codes.PermissionDenied {
			t.Errorf("Bob identifying item %d: %v; want WRONG_SUBJECT, PermissionDenied", i, e)
		}
	}
	// The owner may never identify, whatever it holds.
	if _, err := w.client(rxService).Identify(ctx, rxDomain, trs[0]); status.Code(err) != codes.PermissionDenied {
		t.Errorf("the owner identifying: %v; want PermissionDenied", err)
	}

	// After exp nobody can identify: forms issued 10 minutes ago with the
	// domain's 5-minute ttl expired beyond the 60 s clock skew.
	long := time.Now().Add(-10 * time.Minute)
	_, expiredBound := rx.issuedBy(t, alice, yesterday, owner.Subject(alice), owner.IssuedAt(long))
	_, expiredFree := rx.issuedBy(t, alice, yesterday, owner.IssuedAt(long))
	for _, c := range []struct {
		who string
		trs []*pseudonym.Transit
	}{{alice, expiredBound}, {alice, expiredFree}, {bob, expiredFree}, {pharmacist, expiredFree}} {
		_, errs, err := w.client(c.who).IdentifyBatch(ctx, rxDomain, c.trs)
		if err != nil {
			t.Fatal(err)
		}
		for i, e := range errs {
			if !errors.Is(e, client.ErrExpired) {
				t.Errorf("%s identifying expired item %d: %v; want EXPIRED", c.who, i, e)
			}
		}
	}
}

// Convert: the prescription service sends a patient's pseudonym to
// TherLink. It converts the pseudonym into therlink_v1 (its policy allows
// it); TherLink's pseudonym at rest matches the one it holds from a
// doctor's direct pseudonymization into its domain.
func scenarioConvert(t *testing.T, w *world) {
	ctx := context.Background()
	rx, tl := w.prescriptionService(nil), w.therlinkService()
	x, y := w.newPatient(), w.newPatient()
	pRx := rx.register(t, alice, w.pseudonymize(t, alice, rxDomain, x.formatted()), "amoxicillin 500 mg", time.Now())
	// Alice declares her therapeutic link with x to TherLink directly.
	pTL := tl.addLink(t, alice, w.pseudonymize(t, alice, tlDomain, x.plain()))
	if pTL == pRx {
		t.Fatal("the pseudonyms at rest of two domains are equal: domains are linkable")
	}
	pY := rx.register(t, bob, w.pseudonymize(t, bob, rxDomain, y.plain()), "salbutamol inhaler", time.Now())

	// The prescription service converts both patients in one batch.
	var in []*pseudonym.Transit
	for _, p := range []pseudonym.AtRest{pRx, pY} {
		tr, err := rx.owner.InTransit(p)
		if err != nil {
			t.Fatal(err)
		}
		w.sec.transit(tr)
		in = append(in, tr)
	}
	out, errs, err := w.client(rxService).ConvertBatch(ctx, rxDomain, tlDomain, in)
	if err != nil {
		t.Fatal(err)
	}
	for i, e := range errs {
		if e != nil {
			t.Fatalf("converting item %d: %v", i, e)
		}
		w.sec.transit(out[i])
	}
	if got := tl.providers(t, out[0]); !slices.Equal(got, []string{alice}) {
		t.Errorf("TherLink's links for the converted patient: %q; want Alice's", got)
	}
	if got := tl.providers(t, out[1]); len(got) != 0 {
		t.Errorf("TherLink's links for the other patient: %q; want none", got)
	}
	if tl.atRest(t, out[0]) != pTL {
		t.Error("the converted pseudonym differs from TherLink's own")
	}

	// Who may not convert: TherLink back to prescriptions, a doctor, and
	// the prescription service to a domain its policy does not name.
	for _, c := range []struct{ who, from, to string }{
		{therlink, tlDomain, rxDomain}, {alice, rxDomain, tlDomain}, {rxService, rxDomain, "demo_v1"},
	} {
		_, err := w.client(c.who).Convert(ctx, c.from, c.to, in[0])
		if code := status.Code(err); code != codes.PermissionDenied && code != codes.NotFound {
			t.Errorf("%s converting %s → %s: %v; want PermissionDenied or NotFound", c.who, c.from, c.to, err)
		}
	}
}

// Double pseudonymization: the prescription service stores k2·P, with k2
// created by an administrator and read by the owner from the key store.
// Doctors still identify, and conversion still reaches TherLink's
// pseudonyms, because k2 is removed before a pseudonym leaves the owner.
func scenarioDouble(t *testing.T, w *world) {
	ctx := context.Background()
	k2 := w.secondKey(t)
	w.sec.add("owner key k2", k2)
	o2 := w.rxOwner(t, owner.WithSecondKey(k2))
	rx2, tl := w.prescriptionService(o2), w.therlinkService()
	x := w.newPatient()

	tr := w.pseudonymize(t, alice, rxDomain, x.formatted())
	p2 := rx2.register(t, alice, tr, "amoxicillin 500 mg", time.Now().AddDate(0, 0, -1))
	p, err := w.rx.AtRest(ctx, tr)
	if err != nil {
		t.Fatal(err)
	}
	w.sec.atRest("single", p)
	if p2 == p {
		t.Fatal("with k2 the owner stores P itself")
	}
	if got := rx2.forPatient(t, w.pseudonymize(t, pharmacist, rxDomain, x.spaced())); len(got) != 1 || got[0].patient != p2 {
		t.Fatalf("lookup by a second pseudonymization: %v", got)
	}

	// Identify through the second key.
	_, trs := rx2.issuedBy(t, alice, time.Now().AddDate(0, 0, -1), owner.Subject(alice))
	if len(trs) != 1 {
		t.Fatalf("%d prescriptions of Alice yesterday; want 1", len(trs))
	}
	id, err := w.client(alice).Identify(ctx, rxDomain, trs[0])
	if err != nil || string(id) != x.plain() {
		t.Fatalf("Alice identifying through k2: %v (right patient: %t)", err, string(id) == x.plain())
	}

	// Convert through the second key: TherLink gets its usual pseudonym.
	pTL := w.therlinkService().addLink(t, alice, w.pseudonymize(t, alice, tlDomain, x.plain()))
	out, err := o2.InTransit(p2)
	if err != nil {
		t.Fatal(err)
	}
	w.sec.transit(out)
	conv, err := w.client(rxService).Convert(ctx, rxDomain, tlDomain, out)
	if err != nil {
		t.Fatal(err)
	}
	w.sec.transit(conv)
	if tl.atRest(t, conv) != pTL {
		t.Error("a pseudonym converted from the double-pseudonymized store differs from TherLink's")
	}
}
