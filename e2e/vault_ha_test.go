package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/ehealth-pseudo/pseudonymizer/internal/vaulttest"
)

// TestVaultHA runs the server against a Vault HA cluster: three nodes with
// integrated storage (raft), all listed in -vault-addr. The active node is
// stopped while calls run: no call fails; once the cluster has elected a
// new active node the server follows it (a transit key rotated there with
// pseudoctl reaches the server, GetDomain shows its kid), and its overall
// health is SERVING again.
func TestVaultHA(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	begin := time.Now()
	cl := vaulttest.StartCluster(t)
	first := cl.Active(t, 60*time.Second)
	t.Logf("3-node Vault cluster up in %v, active node %d (%s)", time.Since(begin).Round(100*time.Millisecond), cl.Index(first), first.Addr)

	// Set up as the other tests do, through the active node.
	ve := &vaultEnv{v: first}
	ve.setup(t)
	const domain = "ha_v1"
	ve.createDomain(t, domainSpec{name: domain, audience: "urn:e2e:ha",
		pseudonymize: []string{alice}, identify: []string{alice}, owners: []string{rxService}})
	roleID, secretIDFile := ve.serviceAppRole(t, time.Hour, 2*time.Hour)
	pk := newPKI(t)
	srv := startServer(t, "pseudonymizer", cleanEnv(), append(pk.serverTLSArgs(),
		"-vault-addr", cl.Addr(), "-vault-role-id", roleID, "-vault-secret-id-file", secretIDFile,
		"-poll-interval", "200ms", "-health-interval", "250ms", "-log-level", "debug",
		"-rate", "100000", "-burst", "100000", "-shutdown-timeout", "5s")...)
	cc := pk.dial(t, alice, []string{srv.addr})
	doc := sdk(cc)
	waitHealth(t, cc, healthpb.HealthCheckResponse_SERVING, 30*time.Second)
	before, err := doc.Domain(ctx, domain)
	if err != nil {
		t.Fatalf("GetDomain: %v", err)
	}
	sec := newSecrets()
	x := newPatient(sec)

	// Pseudonymize and identify round trips on 4 workers for the whole
	// test (every call bounded by its deadline).
	l := startLoad(4, func() error {
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		tr, err := doc.Pseudonymize(ctx, domain, x.niss)
		if err != nil {
			return fmt.Errorf("pseudonymize: %w", err)
		}
		sec.transit(tr)
		id, err := doc.Identify(ctx, domain, tr)
		if err != nil || string(id) != x.plain() {
			return fmt.Errorf("identify: %v (right patient: %t)", err, string(id) == x.plain())
		}
		return nil
	})
	defer func() { // on a failure before finish
		select {
		case <-l.stop:
		default:
			close(l.stop)
		}
		l.wg.Wait()
	}()
	l.waitCalls(t, 20, "calls before the failover")

	stopped := time.Now()
	cl.Stop(t, cl.Index(first))
	next := cl.Active(t, 45*time.Second)
	t.Logf("active node stopped; node %d (%s) active %v later", cl.Index(next), next.Addr, time.Since(stopped).Round(100*time.Millisecond))
	if next == first {
		t.Fatal("the stopped node is still active")
	}
	l.waitCalls(t, 20, "calls after the election")

	// A transit key rotated on the new active node reaches the server: it
	// reads from the new active node.
	ve2 := &vaultEnv{v: next, adminToken: ve.adminToken}
	out := ve2.ctl(t, "transit-key", "rotate", domain)
	var kid string
	if _, err := fmt.Sscanf(out, "domain "+domain+": transit key %s is active", &kid); err != nil || kid == before.ActiveKid {
		t.Fatalf("pseudoctl transit-key rotate printed %q", out)
	}
	rotated := time.Now()
	waitFor(t, 30*time.Second, "GetDomain showing active kid "+kid, func() (bool, string) {
		d, err := doc.Domain(ctx, domain)
		if err != nil {
			return false, err.Error()
		}
		return d.ActiveKid == kid, "active kid " + d.ActiveKid
	})
	t.Logf("server saw the rotation %v after it; %v after the node stopped", time.Since(rotated).Round(100*time.Millisecond), time.Since(stopped).Round(100*time.Millisecond))
	waitHealth(t, cc, healthpb.HealthCheckResponse_SERVING, 30*time.Second)
	if st, err := health(ctx, cc, serviceHealth); err != nil || st != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("health of %s: %v, %v; want SERVING", serviceHealth, st, err)
	}
	// The server's Vault client says which node it moved to.
	if o := string(srv.output()); !strings.Contains(o, "now using another node") || !strings.Contains(o, next.Addr) {
		t.Errorf("the server did not log its move to %s:\n%s", next.Addr, tail(srv.output(), 4000))
	}

	l.waitCalls(t, 20, "calls after the rotation")
	l.finish(t, "calls across the Vault failover")
	t.Logf("whole test %v", time.Since(begin).Round(100*time.Millisecond))
	assertBlind(t, sec, map[string][]byte{"server output": srv.output(), "server /metrics": srv.metrics(t)})
}
