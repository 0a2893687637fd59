package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/ehealth-pseudo/pseudonymizer/client"
	"github.com/ehealth-pseudo/pseudonymizer/keys"
	"github.com/ehealth-pseudo/pseudonymizer/keys/vault"
	"github.com/ehealth-pseudo/pseudonymizer/owner"
)

// Token lifetimes of the service's AppRole in TestFlows: short, so that the
// server must log in again several times while the tests run.
const (
	appRoleTTL    = 3 * time.Second
	appRoleMaxTTL = 6 * time.Second
)

// Domains of the Vault-specific subtests, one each so that they do not
// disturb the scenarios.
const (
	rotDomain     = "rotation_v1"
	appRoleDomain = "approle_v1"
	rotOwner      = "rotation-owner"
)

// TestFlows runs the prescription scenarios, the Vault integration checks
// and the replica failover against one Vault and the built server (mTLS,
// AppRole with the service policy), then checks that nothing the server
// received or logged meanwhile holds an identifier or a pseudonym.
func TestFlows(t *testing.T) {
	t.Parallel()
	ve := startVault(t)
	pk := newPKI(t)
	ve.createDomain(t, rxSpec)
	ve.createDomain(t, tlSpec)
	ve.createDomain(t, domainSpec{name: rotDomain, audience: "urn:e2e:rotation",
		pseudonymize: []string{alice}, identify: []string{alice}, owners: []string{rotOwner}})
	ve.createDomain(t, domainSpec{name: appRoleDomain, audience: "urn:e2e:approle",
		pseudonymize: []string{alice}, identify: []string{alice}})

	roleID, secretIDFile := ve.serviceAppRole(t, appRoleTTL, appRoleMaxTTL)
	serverArgs := append(pk.serverTLSArgs(),
		"-vault-addr", ve.v.Addr, "-vault-role-id", roleID, "-vault-secret-id-file", secretIDFile,
		"-poll-interval", "1s", "-health-interval", "250ms", "-log-level", "debug",
		"-rate", "100000", "-burst", "100000", "-shutdown-timeout", "5s", "-rest-listen", "127.0.0.1:0")
	loginTime := time.Now()
	srv := startServer(t, "pseudonymizer", cleanEnv(), serverArgs...)
	restAddr := srv.waitLog(t, restRe, 10*time.Second)[1]

	rec := &recorder{}
	sec := newSecrets()
	w := newWorld(sec, func(p string) *grpc.ClientConn { return pk.dial(t, p, []string{srv.addr}, rec.option()) })
	w.rx = ve.newOwner(t, rxOwner, rxDomain)
	w.tl = ve.newOwner(t, therlinkOwner, tlDomain)
	w.rxOwner = func(t *testing.T, opts ...owner.Option) *owner.Owner {
		return ve.newOwner(t, rxOwner, rxDomain, opts...)
	}
	w.secondKey = func(t *testing.T) []byte {
		out := ve.ctl(t, "owner-key", "create", rxOwner, rxDomain)
		if !strings.Contains(out, "created the second key") {
			t.Fatalf("pseudoctl owner-key create printed %q", out)
		}
		k2, err := ve.ownerStore(t, rxOwner, rxDomain).OwnerKey(context.Background(), rxOwner, rxDomain)
		if err != nil {
			t.Fatalf("the owner reading its k2: %v", err)
		}
		return k2
	}

	// Output of the servers the subtests start, for the blind check.
	var extraMu sync.Mutex
	extra := map[string][]byte{}
	keep := func(name string, b []byte) {
		extraMu.Lock()
		extra[name] = b
		extraMu.Unlock()
	}

	t.Run("scenarios", func(t *testing.T) {
		for _, sc := range scenarios {
			t.Run(sc.name, func(t *testing.T) {
				t.Parallel()
				sc.run(t, w)
			})
		}
		t.Run("VaultPolicies", func(t *testing.T) {
			t.Parallel()
			testVaultPolicies(t, ve)
		})
		t.Run("REST", func(t *testing.T) {
			t.Parallel()
			testREST(t, w, pk, restAddr)
		})
		t.Run("TransitKeyRotation", func(t *testing.T) {
			t.Parallel()
			testRotation(t, w, ve)
		})
		t.Run("AppRoleRelogin", func(t *testing.T) {
			t.Parallel()
			testAppRole(t, w, ve, loginTime)
		})
		t.Run("Replicas", func(t *testing.T) {
			t.Parallel()
			testReplicas(t, w, pk, rec, serverArgs, keep)
		})
	})

	t.Run("Blind", func(t *testing.T) {
		requests, replies, calls := rec.captured()
		// The recorder holds the request messages as the server decodes
		// them: the domain names they carry are there in clear.
		if calls == 0 || !bytes.Contains(requests, []byte(rxDomain)) {
			t.Fatalf("the recorder saw %d calls and not their messages", calls)
		}
		captures := map[string][]byte{
			"requests received by the server": requests,
			"replies of the server":           replies,
			"server output":                   srv.output(),
			"server /metrics":                 srv.metrics(t),
		}
		extraMu.Lock()
		for k, v := range extra {
			captures[k] = v
		}
		extraMu.Unlock()
		assertBlind(t, sec, captures)
	})
}

// testVaultPolicies checks what the Vault policies refuse, through the
// same keys/vault client the programs use.
func testVaultPolicies(t *testing.T, ve *vaultEnv) {
	ctx := context.Background()
	// An owner reads its domain's transit keys, never the scalar k, nor
	// another domain.
	ownerTok := ve.ownerToken(t, rxOwner, rxDomain)
	d, err := ve.open(t, ownerTok, vault.Owner).Domain(ctx, rxDomain)
	if err != nil || len(d.Scalar) != 0 || len(d.Transit.Keys) == 0 {
		t.Fatalf("owner reading its domain: %v (scalar %d bytes, %d transit keys)", err, len(d.Scalar), len(d.Transit.Keys))
	}
	if _, err := ve.open(t, ownerTok, vault.Service).Domain(ctx, rxDomain); !errors.Is(err, keys.ErrDenied) {
		t.Errorf("owner reading the scalar k: %v; want ErrDenied", err)
	}
	if _, err := ve.open(t, ownerTok, vault.Owner).Domain(ctx, tlDomain); !errors.Is(err, keys.ErrDenied) {
		t.Errorf("owner reading another domain: %v; want ErrDenied", err)
	}
	// The service reads every domain but no owner's k2, and writes nothing.
	svc := ve.open(t, ve.v.Token(t, servicePolicy), vault.Service)
	if d, err := svc.Domain(ctx, rxDomain); err != nil || len(d.Scalar) == 0 {
		t.Fatalf("service reading a domain: %v", err)
	}
	if _, err := svc.OwnerKey(ctx, rxOwner, rxDomain); !errors.Is(err, keys.ErrDenied) {
		t.Errorf("service reading an owner key: %v; want ErrDenied", err)
	}
	if _, err := svc.RotateTransitKey(ctx, rxDomain); !errors.Is(err, keys.ErrDenied) {
		t.Errorf("service rotating a transit key: %v; want ErrDenied", err)
	}
	// Administrators never read a scalar.
	if _, err := ve.open(t, ve.adminToken, vault.Service).Domain(ctx, rxDomain); !errors.Is(err, keys.ErrDenied) {
		t.Errorf("administrator reading the scalar k: %v; want ErrDenied", err)
	}
}

// load runs calls on workers goroutines until stop is closed, and counts
// them. Each call returns an error for a failure (including a wrong
// result).
type load struct {
	ok, failed atomic.Int64
	mu         sync.Mutex
	errs       []error
	stop       chan struct{}
	wg         sync.WaitGroup
}

func startLoad(workers int, call func() error) *load {
	l := &load{stop: make(chan struct{})}
	for range workers {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for {
				select {
				case <-l.stop:
					return
				default:
				}
				if err := call(); err != nil {
					l.failed.Add(1)
					l.mu.Lock()
					if len(l.errs) < 5 {
						l.errs = append(l.errs, err)
					}
					l.mu.Unlock()
				} else {
					l.ok.Add(1)
				}
				time.Sleep(5 * time.Millisecond) // leave the shared CPUs some air
			}
		}()
	}
	return l
}

// waitCalls waits until n more calls succeeded than at the time of the
// call.
func (l *load) waitCalls(t testing.TB, n int64, what string) {
	t.Helper()
	target := l.ok.Load() + n
	waitFor(t, 90*time.Second, what, func() (bool, string) {
		return l.ok.Load() >= target || l.failed.Load() > 0, fmt.Sprintf("%d calls succeeded, %d failed", l.ok.Load(), l.failed.Load())
	})
}

// finish stops the load and fails the test if any call failed.
func (l *load) finish(t testing.TB, what string) {
	t.Helper()
	close(l.stop)
	l.wg.Wait()
	if n := l.failed.Load(); n > 0 {
		t.Errorf("%s: %d of %d calls failed; first errors: %v", what, n, n+l.ok.Load(), l.errs)
	}
	t.Logf("%s: %d calls, none failed", what, l.ok.Load())
}

// testRotation rotates the transit key with `pseudoctl transit-key rotate`
// while calls run, then retires the old kid.
func testRotation(t *testing.T, w *world, ve *vaultEnv) {
	ctx := context.Background()
	// The owner re-reads its keys every 100 ms, faster than the service
	// polls Vault (1 s): it adopts the new active kid first and seals
	// transit pseudonyms the service cannot open yet. The service then
	// re-reads the domain on the unknown kid (rate-limited) and evaluates
	// those items again, so no call fails.
	o := ve.newOwner(t, rotOwner, rotDomain, owner.WithRefreshInterval(100*time.Millisecond))
	doc := w.client(alice)
	x := w.newPatient()

	first := w.pseudonymize(t, alice, rotDomain, x.plain())
	op, err := o.Open(ctx, first)
	if err != nil {
		t.Fatal(err)
	}
	p := op.Pseudonym
	w.sec.atRest(rotDomain, p)
	oldKid := op.Kid
	oldForAlice, err := o.InTransit(p, owner.Subject(alice)) // sealed under the old kid
	if err != nil {
		t.Fatal(err)
	}
	w.sec.transit(oldForAlice)

	// Load: pseudonymize (opened by the owner) and identify (of a fresh
	// transit form from the owner), checking every result.
	l := startLoad(3, func() error {
		tr, err := doc.Pseudonymize(ctx, rotDomain, x.niss)
		if err != nil {
			return fmt.Errorf("pseudonymize: %w", err)
		}
		w.sec.transit(tr)
		if got, err := o.AtRest(ctx, tr); err != nil || got != p {
			return fmt.Errorf("owner opening: %v (same pseudonym: %t)", err, got == p)
		}
		back, err := o.InTransit(p, owner.Subject(alice))
		if err != nil {
			return err
		}
		w.sec.transit(back)
		id, err := doc.Identify(ctx, rotDomain, back)
		if err != nil || string(id) != x.plain() {
			return fmt.Errorf("identify: %v (right patient: %t)", err, string(id) == x.plain())
		}
		return nil
	})
	l.waitCalls(t, 20, "calls before the rotation")
	out := ve.ctl(t, "transit-key", "rotate", rotDomain)
	var newKid string
	if _, err := fmt.Sscanf(out, "domain "+rotDomain+": transit key %s is active", &newKid); err != nil || newKid == oldKid {
		t.Fatalf("pseudoctl transit-key rotate printed %q", out)
	}
	// New transit pseudonyms use the new kid once the server has polled
	// Vault (-poll-interval 1s).
	start := time.Now()
	waitFor(t, 30*time.Second, "transit pseudonyms sealed under "+newKid, func() (bool, string) {
		tr, err := doc.Pseudonymize(ctx, rotDomain, x.niss)
		if err != nil {
			return false, err.Error()
		}
		w.sec.transit(tr)
		op, err := o.Open(ctx, tr)
		if err != nil {
			return false, err.Error()
		}
		return op.Kid == newKid, "kid " + op.Kid
	})
	t.Logf("new transit pseudonyms sealed under %s %v after the rotation", newKid, time.Since(start).Round(100*time.Millisecond))
	l.waitCalls(t, 20, "calls after the rotation")
	l.finish(t, "load during the rotation")

	info, err := doc.Domain(ctx, rotDomain)
	if err != nil || info.ActiveKid != newKid || len(info.AcceptedKids) != 2 {
		t.Fatalf("GetDomain after the rotation: %+v, %v; want %s active and 2 accepted kids", info, err, newKid)
	}
	// Until it is retired, the old kid is still accepted.
	if id, err := doc.Identify(ctx, rotDomain, oldForAlice); err != nil || string(id) != x.plain() {
		t.Fatalf("identify under the old kid before retiring it: %v", err)
	}

	// Retiring before max_lifetime + 60 s have passed since the rotation
	// would refuse transit pseudonyms still valid: pseudoctl refuses it
	// unless forced; the test forces it.
	ve.ctl(t, "transit-key", "retire", "-force", rotDomain, oldKid)
	waitFor(t, 30*time.Second, "the service to refuse kid "+oldKid, func() (bool, string) {
		_, err := doc.Identify(ctx, rotDomain, oldForAlice)
		return errors.Is(err, client.ErrUnknownKid), fmt.Sprint(err)
	})
	// An owner that reads its keys now refuses the old kid too.
	if _, err := ve.newOwner(t, rotOwner, rotDomain).AtRest(ctx, first); !errors.Is(err, owner.ErrUnknownKid) {
		t.Errorf("owner opening a transit pseudonym under the retired kid: %v; want ErrUnknownKid", err)
	}
	// The domain scalar did not change: the patient's pseudonym at rest is
	// the same under the new transit key.
	if got, err := o.AtRest(ctx, w.pseudonymize(t, alice, rotDomain, x.formatted())); err != nil || got != p {
		t.Fatalf("pseudonym at rest after the rotation: %v (same: %t)", err, got == p)
	}
}

// testAppRole checks that the server, logged in with an AppRole whose
// tokens live appRoleTTL and at most appRoleMaxTTL, keeps reading Vault
// well past several maximum TTLs: the token it started with is long
// expired when it sees a rotation made now.
func testAppRole(t *testing.T, w *world, ve *vaultEnv, loginTime time.Time) {
	ctx := context.Background()
	doc := w.client(alice)
	x := w.newPatient()
	l := startLoad(1, func() error {
		tr, err := doc.Pseudonymize(ctx, appRoleDomain, x.niss)
		if err == nil {
			w.sec.transit(tr)
		}
		time.Sleep(200 * time.Millisecond)
		return err
	})
	if d := time.Until(loginTime.Add(3*appRoleMaxTTL + time.Second)); d > 0 {
		time.Sleep(d)
	}
	before, err := doc.Domain(ctx, appRoleDomain)
	if err != nil {
		t.Fatal(err)
	}
	out := ve.ctl(t, "transit-key", "rotate", appRoleDomain)
	var newKid string
	if _, err := fmt.Sscanf(out, "domain "+appRoleDomain+": transit key %s is active", &newKid); err != nil || newKid == before.ActiveKid {
		t.Fatalf("pseudoctl transit-key rotate printed %q", out)
	}
	waitFor(t, 30*time.Second, "the server to read the rotation from Vault", func() (bool, string) {
		info, err := doc.Domain(ctx, appRoleDomain)
		if err != nil {
			return false, err.Error()
		}
		return info.ActiveKid == newKid, "active kid " + info.ActiveKid
	})
	waitHealth(t, w.conns[alice], healthpb.HealthCheckResponse_SERVING, 30*time.Second)
	l.finish(t, "calls across several AppRole token lifetimes")
}

// testReplicas runs two more servers on the same Vault, balances calls
// over both with client-side round robin, and kills one (SIGKILL) under
// load: no call may fail, thanks to the SDK's retry of Unavailable.
func testReplicas(t *testing.T, w *world, pk *pki, rec *recorder, serverArgs []string, keep func(string, []byte)) {
	ctx := context.Background()
	var a, b *server
	// Registered first, so run last: after both servers stopped.
	t.Cleanup(func() {
		for name, s := range map[string]*server{"replica-a": a, "replica-b": b} {
			if s != nil {
				keep(name+" output", s.output())
			}
		}
	})
	a = startServer(t, "replica-a", cleanEnv(), serverArgs...)
	b = startServer(t, "replica-b", cleanEnv(), serverArgs...)
	// Count the attempts that failed with Unavailable: the SDK retries
	// them, on the other replica.
	var unavailable atomic.Int64
	countUnavailable := func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		err := invoker(ctx, method, req, reply, cc, opts...)
		if status.Code(err) == codes.Unavailable {
			unavailable.Add(1)
		}
		return err
	}
	cc := pk.dial(t, alice, []string{a.addr, b.addr}, rec.option(), grpc.WithChainUnaryInterceptor(countUnavailable))
	doc := sdk(cc, client.WithRetries(5, 50*time.Millisecond))
	x := w.newPatient()
	p := w.rx // the prescription service opens every result
	want, err := p.AtRest(ctx, w.pseudonymize(t, alice, rxDomain, x.plain()))
	if err != nil {
		t.Fatal(err)
	}
	// Batches of 50, so that calls are in flight on the replica when it is
	// killed.
	batch := make([][]byte, 50)
	for i := range batch {
		batch[i] = x.niss
	}
	l := startLoad(4, func() error {
		trs, errs, err := doc.PseudonymizeBatch(ctx, rxDomain, batch)
		if err != nil {
			return err
		}
		for i, tr := range trs {
			if errs[i] != nil {
				return fmt.Errorf("item %d: %w", i, errs[i])
			}
			w.sec.transit(tr)
			if got, err := p.AtRest(ctx, tr); err != nil || got != want {
				return fmt.Errorf("owner opening item %d: %v (same pseudonym: %t)", i, err, got == want)
			}
		}
		return nil
	})
	waitFor(t, 60*time.Second, "calls on both replicas", func() (bool, string) {
		na, nb := a.handled(t, "Pseudonymize", "OK"), b.handled(t, "Pseudonymize", "OK")
		return na > 0 && nb > 0 && l.failed.Load() == 0, fmt.Sprintf("replica a %v, b %v, %d failed", na, nb, l.failed.Load())
	})
	keep("replica-b /metrics", b.metrics(t))
	handledA := a.handled(t, "Pseudonymize", "OK")
	b.kill()
	t.Logf("replica b killed after %d calls", l.ok.Load())
	l.waitCalls(t, 100, "calls after the kill")
	l.finish(t, "load across the kill of a replica")
	t.Logf("%d attempts failed with Unavailable and were retried", unavailable.Load())
	if got := a.handled(t, "Pseudonymize", "OK"); got <= handledA {
		t.Errorf("replica a handled %v calls before the kill and %v after: the calls went nowhere", handledA, got)
	}
	keep("replica-a /metrics", a.metrics(t))
}
