package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/ehealth-pseudo/pseudonymizer/client"
	"github.com/ehealth-pseudo/pseudonymizer/identifier"
	"github.com/ehealth-pseudo/pseudonymizer/owner"
	"github.com/ehealth-pseudo/pseudonymizer/pseudonym"
)

// The domains of the prescription use case.
const (
	rxDomain = "prescriptions_v1"
	tlDomain = "therlink_v1"
)

// rxSpec: doctors and pharmacists pseudonymize and identify; the
// prescription service owns the domain and may convert to TherLink's.
var rxSpec = domainSpec{
	name:         rxDomain,
	audience:     "urn:e2e:prescriptions",
	pseudonymize: []string{alice, bob, pharmacist},
	identify:     []string{alice, bob, pharmacist},
	owners:       []string{rxService},
	convert:      map[string][]string{tlDomain: {rxService}},
}

// tlSpec: care providers register therapeutic links; TherLink owns it.
var tlSpec = domainSpec{
	name:         tlDomain,
	audience:     "urn:e2e:therlink",
	pseudonymize: []string{alice, bob},
	identify:     []string{alice, bob},
	owners:       []string{therlink},
}

// world is one deployment the scenarios run against: a connection per
// principal, the owners of both domains, and the record of secrets.
type world struct {
	sec   *secrets
	conns map[string]*grpc.ClientConn
	rx    *owner.Owner // the prescription service's owner SDK
	tl    *owner.Owner // TherLink's owner SDK
	// secondKey creates the prescription service's k2 and reads it back
	// the way the owner does. Called once.
	secondKey func(t *testing.T) []byte
	// rxOwner starts another owner SDK of prescriptions_v1 from the key
	// store.
	rxOwner func(t *testing.T, opts ...owner.Option) *owner.Owner
}

// newWorld connects every principal with dial.
func newWorld(sec *secrets, dial func(principal string) *grpc.ClientConn) *world {
	w := &world{sec: sec, conns: map[string]*grpc.ClientConn{}}
	for _, p := range []string{alice, bob, pharmacist, rxService, therlink} {
		w.conns[p] = dial(p)
	}
	return w
}

func (w *world) client(principal string) *client.Client { return sdk(w.conns[principal]) }

// patient is a person known by a NISS, written in several ways.
type patient struct{ niss []byte }

func (w *world) newPatient() patient { return newPatient(w.sec) }

// newPatient makes a random valid NISS (born 1940 to 1998) and records
// its forms as secrets.
func newPatient(sec *secrets) patient {
	yy, mm, dd, serial := 40+rand.IntN(59), 1+rand.IntN(12), 1+rand.IntN(28), 1+rand.IntN(997)
	base := ((yy*100+mm)*100+dd)*1000 + serial
	typed := fmt.Sprintf("%02d.%02d.%02d-%03d.%02d", yy, mm, dd, serial, 97-base%97)
	p := patient{niss: sec.niss(typed)}
	sec.add("NISS (as typed)", []byte(p.spaced()))
	return p
}

func (p patient) plain() string     { return string(p.niss) }
func (p patient) formatted() string { return identifier.FormatNISS(p.niss) }
func (p patient) spaced() string {
	return strings.ReplaceAll(strings.ReplaceAll(p.formatted(), ".", " "), "-", " ")
}

// pseudonymize is what the prescriber's or pharmacist's software does: it
// normalizes what was typed and asks the service for a transit pseudonym
// for the domain's owner.
func (w *world) pseudonymize(t testing.TB, who, domain, typed string) *pseudonym.Transit {
	t.Helper()
	id, err := identifier.NISS(typed)
	if err != nil {
		t.Fatalf("NISS: %v", err)
	}
	tr, err := w.client(who).Pseudonymize(context.Background(), domain, id)
	if err != nil {
		t.Fatalf("%s: Pseudonymize(%s): %v", who, domain, err)
	}
	w.sec.transit(tr)
	return tr
}

// sendText is the network between a client and an owner: the transit
// pseudonym travels as text.
func sendText(t testing.TB, tr *pseudonym.Transit) *pseudonym.Transit {
	t.Helper()
	got, err := pseudonym.ParseTransit(tr.String())
	if err != nil {
		t.Fatalf("ParseTransit: %v", err)
	}
	return got
}

// prescription is a record of the prescription service. It knows the
// patient only by the pseudonym at rest.
type prescription struct {
	prescriber string
	patient    pseudonym.AtRest
	drug       string
	issued     time.Time // day of issue
}

// prescriptionService is the owner of prescriptions_v1: it stores
// prescriptions by pseudonym at rest, finds them by pseudonym, and sends
// transit forms of its pseudonyms to the prescribers.
type prescriptionService struct {
	w     *world
	owner *owner.Owner
	mu    sync.Mutex
	db    []prescription
}

func (w *world) prescriptionService(o *owner.Owner) *prescriptionService {
	if o == nil {
		o = w.rx
	}
	return &prescriptionService{w: w, owner: o}
}

// register stores a prescription for the patient of a transit pseudonym.
func (ps *prescriptionService) register(t testing.TB, prescriber string, patientTr *pseudonym.Transit, drug string, issued time.Time) pseudonym.AtRest {
	t.Helper()
	p, err := ps.owner.AtRest(context.Background(), sendText(t, patientTr))
	if err != nil {
		t.Fatalf("prescription service: AtRest: %v", err)
	}
	ps.w.sec.atRest(rxDomain, p)
	ps.mu.Lock()
	defer ps.mu.Unlock()
	ps.db = append(ps.db, prescription{prescriber: prescriber, patient: p, drug: drug, issued: day(issued)})
	return p
}

// forPatient returns the prescriptions of the patient of a transit
// pseudonym.
func (ps *prescriptionService) forPatient(t testing.TB, patientTr *pseudonym.Transit) []prescription {
	t.Helper()
	p, err := ps.owner.AtRest(context.Background(), sendText(t, patientTr))
	if err != nil {
		t.Fatalf("prescription service: AtRest: %v", err)
	}
	ps.mu.Lock()
	defer ps.mu.Unlock()
	var out []prescription
	for _, r := range ps.db {
		if r.patient == p {
			out = append(out, r)
		}
	}
	return out
}

// issuedBy returns the prescriptions a prescriber issued on a day, with a
// fresh transit form of each patient's pseudonym (opts: subject binding,
// issue time).
func (ps *prescriptionService) issuedBy(t testing.TB, prescriber string, on time.Time, opts ...owner.TransitOption) ([]prescription, []*pseudonym.Transit) {
	t.Helper()
	ps.mu.Lock()
	defer ps.mu.Unlock()
	var recs []prescription
	var trs []*pseudonym.Transit
	for _, r := range ps.db {
		if r.prescriber != prescriber || !r.issued.Equal(day(on)) {
			continue
		}
		tr, err := ps.owner.InTransit(r.patient, opts...)
		if err != nil {
			t.Fatalf("prescription service: InTransit: %v", err)
		}
		ps.w.sec.transit(tr)
		recs = append(recs, r)
		trs = append(trs, sendText(t, tr))
	}
	return recs, trs
}

func day(t time.Time) time.Time {
	y, m, d := t.Date()
	return time.Date(y, m, d, 0, 0, 0, 0, time.UTC)
}

// therlinkService is the owner of therlink_v1: it records therapeutic
// links by pseudonym at rest.
type therlinkService struct {
	w     *world
	mu    sync.Mutex
	links map[pseudonym.AtRest][]string // patient → care providers
}

func (w *world) therlinkService() *therlinkService {
	return &therlinkService{w: w, links: map[pseudonym.AtRest][]string{}}
}

// atRest opens a transit pseudonym of therlink_v1.
func (tl *therlinkService) atRest(t testing.TB, tr *pseudonym.Transit) pseudonym.AtRest {
	t.Helper()
	p, err := tl.w.tl.AtRest(context.Background(), sendText(t, tr))
	if err != nil {
		t.Fatalf("TherLink: AtRest: %v", err)
	}
	tl.w.sec.atRest(tlDomain, p)
	return p
}

func (tl *therlinkService) addLink(t testing.TB, provider string, patientTr *pseudonym.Transit) pseudonym.AtRest {
	t.Helper()
	p := tl.atRest(t, patientTr)
	tl.mu.Lock()
	defer tl.mu.Unlock()
	tl.links[p] = append(tl.links[p], provider)
	return p
}

func (tl *therlinkService) providers(t testing.TB, patientTr *pseudonym.Transit) []string {
	t.Helper()
	p := tl.atRest(t, patientTr)
	tl.mu.Lock()
	defer tl.mu.Unlock()
	return tl.links[p]
}
