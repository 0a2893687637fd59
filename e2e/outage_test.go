package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/ehealth-pseudo/pseudonymizer/keys/vault"
	"github.com/ehealth-pseudo/pseudonymizer/owner"
)

// TestVaultOutage stops Vault while calls run: the server keeps serving
// from its cached keys (no call fails), its overall gRPC health turns
// NOT_SERVING (degraded) while the service's own health name stays
// SERVING; once Vault is back with its data, health recovers and the
// pseudonyms are unchanged.
//
// Vault runs in dev mode, which keeps everything in memory: after the
// restart the test restores what a production Vault keeps in its Raft
// storage (the mount, the policies, the service's token, and the domain's
// data, written back as read before the outage, as a snapshot restore
// would).
func TestVaultOutage(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	ve := startVault(t)
	pk := newPKI(t)
	const domain = "outage_v1"
	ve.createDomain(t, domainSpec{name: domain, audience: "urn:e2e:outage",
		pseudonymize: []string{alice}, identify: []string{alice}, owners: []string{rxService}})

	// The service logs in with a token of the service policy (in its
	// environment, not in its arguments).
	var rnd [12]byte
	_, _ = rand.Read(rnd[:])
	tokenID := "e2e-service-" + hex.EncodeToString(rnd[:])
	serviceToken := func() {
		_, err := ve.v.Client(t).Auth().Token().Create(&api.TokenCreateRequest{
			ID: tokenID, Policies: []string{servicePolicy}, TTL: "1h",
		})
		if err != nil {
			t.Fatalf("creating the service token: %v", err)
		}
	}
	serviceToken()
	srv := startServer(t, "pseudonymizer", cleanEnv("VAULT_TOKEN="+tokenID), append(pk.serverTLSArgs(),
		"-vault-addr", ve.v.Addr, "-poll-interval", "500ms", "-health-interval", "250ms",
		"-log-level", "debug", "-rate", "100000", "-burst", "100000", "-shutdown-timeout", "5s")...)
	cc := pk.dial(t, alice, []string{srv.addr})
	doc := sdk(cc)
	o := ve.newOwner(t, "outage-owner", domain)
	sec := newSecrets()
	x := newPatient(sec)

	tr, err := doc.Pseudonymize(ctx, domain, x.niss)
	if err != nil {
		t.Fatal(err)
	}
	p, err := o.AtRest(ctx, tr)
	if err != nil {
		t.Fatal(err)
	}
	sec.atRest(domain, p)
	waitHealth(t, cc, healthpb.HealthCheckResponse_SERVING, 30*time.Second)

	// What the restore writes back, in the order pseudoctl writes a new
	// domain (meta last).
	kv := ve.v.Client(t).KVv2(vault.DefaultMount)
	paths := []string{"domains/" + domain + "/scalar", "domains/" + domain + "/transit", "domains/" + domain + "/meta"}
	backup := map[string]map[string]any{}
	for _, path := range paths {
		s, err := kv.Get(ctx, path)
		if err != nil {
			t.Fatalf("reading %s: %v", path, err)
		}
		backup[path] = s.Data
	}

	l := startLoad(3, func() error {
		tr, err := doc.Pseudonymize(ctx, domain, x.niss)
		if err != nil {
			return err
		}
		sec.transit(tr)
		back, err := o.InTransit(p, owner.Subject(alice))
		if err != nil {
			return err
		}
		id, err := doc.Identify(ctx, domain, back)
		if err != nil || string(id) != x.plain() {
			return fmt.Errorf("identify: %v (right patient: %t)", err, string(id) == x.plain())
		}
		if got, err := o.AtRest(ctx, tr); err != nil || got != p {
			return fmt.Errorf("owner opening: %v (same pseudonym: %t)", err, got == p)
		}
		return nil
	})
	l.waitCalls(t, 20, "calls before the outage")

	ve.v.Stop(t)
	waitHealth(t, cc, healthpb.HealthCheckResponse_NOT_SERVING, 60*time.Second)
	l.waitCalls(t, 50, "calls while Vault is down")
	// The server is degraded, not unready: the service's own health name,
	// which readiness probes check, stays SERVING, so that a Vault outage
	// does not drain every replica at once.
	if st, err := health(ctx, cc, serviceHealth); err != nil || st != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("health of %s during the outage: %v, %v; want SERVING", serviceHealth, st, err)
	}
	if st, err := health(ctx, cc, ""); err != nil || st != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Errorf("overall health during the outage: %v, %v; want NOT_SERVING", st, err)
	}

	ve.v.Restart(t)
	ve.setup(t)
	serviceToken()
	kv = ve.v.Client(t).KVv2(vault.DefaultMount)
	for _, path := range paths {
		if _, err := kv.Put(ctx, path, backup[path]); err != nil {
			t.Fatalf("restoring %s: %v", path, err)
		}
	}
	waitHealth(t, cc, healthpb.HealthCheckResponse_SERVING, 60*time.Second)
	l.waitCalls(t, 20, "calls after the recovery")
	l.finish(t, "calls across the Vault outage")

	assertBlind(t, sec, map[string][]byte{"server output": srv.output(), "server /metrics": srv.metrics(t)})
}
