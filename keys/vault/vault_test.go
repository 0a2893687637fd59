package vault_test

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/ehealth-pseudo/pseudonymizer/internal/vaulttest"
	"github.com/ehealth-pseudo/pseudonymizer/internal/waitfor"
	"github.com/ehealth-pseudo/pseudonymizer/keys"
	"github.com/ehealth-pseudo/pseudonymizer/keys/keystest"
	"github.com/ehealth-pseudo/pseudonymizer/keys/vault"
	"github.com/ehealth-pseudo/pseudonymizer/vault/policies"
)

const mount = vault.DefaultMount

// start starts Vault with the KV v2 engine mounted.
func start(t *testing.T, opts ...vaulttest.Option) *vaulttest.Server {
	t.Helper()
	srv := vaulttest.Start(t, opts...)
	srv.EnableKV(t, mount)
	return srv
}

// rootStore is a service store with the root token.
func rootStore(t *testing.T, srv *vaulttest.Server) *vault.Store {
	return vault.NewStore(srv.Client(t), mount, vault.Service)
}

// logCounter counts log records whose message contains a string.
type logCounter struct {
	slog.Handler
	match string
	n     atomic.Int64
}

func (h *logCounter) Handle(ctx context.Context, r slog.Record) error {
	if strings.Contains(r.Message, h.match) {
		h.n.Add(1)
	}
	return h.Handler.Handle(ctx, r)
}

func (h *logCounter) Enabled(context.Context, slog.Level) bool { return true }

func is403(err error) bool {
	var re *api.ResponseError
	return errors.As(err, &re) && re.StatusCode == http.StatusForbidden
}

func TestVault(t *testing.T) {
	srv := start(t)

	t.Run("Admin", func(t *testing.T) {
		// Same checks as the file store, as root in service mode.
		keystest.TestAdmin(t, rootStore(t, srv))
	})

	t.Run("Policies", func(t *testing.T) { testPolicies(t, srv) })

	t.Run("ConcurrentAdmins", func(t *testing.T) {
		// Two administrators rotate at once: each rotation succeeds or
		// fails with ErrConflict, and none is lost.
		ctx := context.Background()
		a, b := rootStore(t, srv), rootStore(t, srv)
		if _, err := a.CreateDomain(ctx, keys.DomainSpec{Name: "race_v1", Audience: "urn:race:v1"}); err != nil {
			t.Fatal(err)
		}
		var ok, conflicts atomic.Int64
		var wg sync.WaitGroup
		for _, s := range []*vault.Store{a, b, a, b} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range 5 {
					_, err := s.RotateTransitKey(ctx, "race_v1")
					switch {
					case err == nil:
						ok.Add(1)
					case errors.Is(err, keys.ErrConflict):
						conflicts.Add(1)
					default:
						t.Error(err)
					}
				}
			}()
		}
		wg.Wait()
		d, err := a.Domain(ctx, "race_v1")
		if err != nil {
			t.Fatal(err)
		}
		if got := int64(len(d.Transit.Keys)); got != 1+ok.Load() {
			t.Fatalf("%d keys after %d successful rotations (%d conflicts)", got, ok.Load(), conflicts.Load())
		}
		t.Logf("%d rotations, %d conflicts", ok.Load(), conflicts.Load())
	})

	t.Run("MaxLifetime", func(t *testing.T) { testMaxLifetime(t, srv) })
}

// testMaxLifetime checks that the max lifetime is kept in the meta path,
// through rotations and new versions, and that bad values are refused.
func testMaxLifetime(t *testing.T, srv *vaulttest.Server) {
	ctx := context.Background()
	s := rootStore(t, srv)
	kv := srv.Client(t).KVv2(mount)
	spec := keys.DomainSpec{Name: "ml_v1", Audience: "urn:ml:v1", TTL: 10 * time.Minute}
	d, err := s.CreateDomainWith(ctx, spec, keys.DomainOptions{MaxLifetime: 36 * time.Hour})
	if err != nil || d.MaxLifetime != 36*time.Hour {
		t.Fatalf("CreateDomainWith = %v, %v", d, err)
	}
	meta, err := kv.Get(ctx, "domains/ml_v1/meta")
	if err != nil {
		t.Fatal(err)
	}
	if meta.Data["max_lifetime"] != "36h0m0s" || meta.Data["ttl"] != "10m0s" {
		t.Fatalf("meta = %v", meta.Data)
	}
	if _, err := s.RotateTransitKey(ctx, "ml_v1"); err != nil {
		t.Fatal(err)
	}
	if d, err := s.Domain(ctx, "ml_v1"); err != nil || d.MaxLifetime != 36*time.Hour || d.TTL != 10*time.Minute {
		t.Fatalf("after rotation: %v, %v", d, err)
	}

	// NewVersion copies it (the audience is its own); NewVersionWith takes
	// what it is given.
	v2, err := s.NewVersion(ctx, "ml_v1", "ml_v2")
	if err != nil || v2.MaxLifetime != 36*time.Hour || v2.Audience != keys.NextAudience(spec.Audience, "ml_v2") {
		t.Fatalf("NewVersion = %v, %v", v2, err)
	}
	next := spec
	next.Name, next.Audience = "ml_v3", keys.NextAudience(spec.Audience, "ml_v3")
	v3, err := s.NewVersionWith(ctx, "ml_v2", next, keys.DomainOptions{})
	if err != nil || v3.MaxLifetime != 0 || v3.Audience != "urn:ml:v3" {
		t.Fatalf("NewVersionWith = %v, %v", v3, err)
	}
	if d, err := s.Domain(ctx, "ml_v3"); err != nil || d.MaxLifetime != 0 || d.Audience != "urn:ml:v3" {
		t.Fatalf("read back: %v, %v", d, err)
	}
	if meta, err := kv.Get(ctx, "domains/ml_v3/meta"); err != nil || meta.Data["max_lifetime"] != nil {
		t.Fatalf("meta of an unset max lifetime = %v, %v", meta, err)
	}
	if od, err := s.Domain(ctx, "ml_v2"); err != nil || len(od.Policy.Convert["ml_v3"]) != 0 {
		// ml_v2 has no owners: nobody to let convert.
		t.Fatalf("old domain: %v %+v, %v", od, od.Policy, err)
	}
	next.Name = "ml_v4"
	if _, err := s.NewVersionWith(ctx, "nope_v1", next, keys.DomainOptions{}); !errors.Is(err, keys.ErrUnknownDomain) {
		t.Fatalf("NewVersionWith from an unknown domain = %v", err)
	}
	if _, err := s.NewVersionWith(ctx, "ml_v4", next, keys.DomainOptions{}); !errors.Is(err, keys.ErrInvalid) {
		t.Fatalf("NewVersionWith to itself = %v", err)
	}
	if _, err := s.NewVersionWith(ctx, "ml_v3", next, keys.DomainOptions{MaxLifetime: time.Minute}); !errors.Is(err, keys.ErrInvalid) {
		t.Fatalf("NewVersionWith(max lifetime < ttl) = %v", err)
	}

	// Bad values in the meta path.
	for _, bad := range []string{"0s", "-1h", "soon", "1m"} {
		data := map[string]any{}
		for k, v := range meta.Data {
			data[k] = v
		}
		data["max_lifetime"] = bad
		if _, err := kv.Put(ctx, "domains/ml_v1/meta", data); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Domain(ctx, "ml_v1"); !errors.Is(err, keys.ErrInvalid) {
			t.Errorf("max_lifetime %q: Domain = %v, want ErrInvalid", bad, err)
		}
	}
}

// testPolicies loads the policies of vault/policies and checks what each
// role can do. It uses the domains left by the Admin test.
func testPolicies(t *testing.T, srv *vaulttest.Server) {
	ctx := context.Background()
	owner, err := policies.Owner("recip-e", "prescriptions_v1")
	if err != nil {
		t.Fatal(err)
	}
	srv.WritePolicy(t, "pseudonymizer-service", policies.Service)
	srv.WritePolicy(t, "pseudonymizer-admin", policies.Admin)
	srv.WritePolicy(t, "pseudonymizer-owner-recip-e-prescriptions_v1", owner)
	serviceTok := srv.Token(t, "pseudonymizer-service")
	adminTok := srv.Token(t, "pseudonymizer-admin")
	ownerTok := srv.Token(t, "pseudonymizer-owner-recip-e-prescriptions_v1")

	admin := vault.NewStore(srv.ClientWithToken(t, adminTok), mount, vault.Owner)
	service := vault.NewStore(srv.ClientWithToken(t, serviceTok), mount, vault.Service)
	ownerStore := vault.NewStore(srv.ClientWithToken(t, ownerTok), mount, vault.Owner)
	ownerRaw := srv.ClientWithToken(t, ownerTok)

	// Admin: create and rotate; never read a scalar or an owner key.
	if _, err := admin.CreateDomain(ctx, keys.DomainSpec{Name: "other_v1", Audience: "urn:other:v1"}); err != nil {
		t.Fatalf("admin CreateDomain: %v", err)
	}
	kid, err := admin.RotateTransitKey(ctx, "prescriptions_v1")
	if err != nil {
		t.Fatalf("admin RotateTransitKey: %v", err)
	}
	if err := admin.RetireTransitKey(ctx, "prescriptions_v1", "t2"); err != nil {
		t.Fatalf("admin RetireTransitKey: %v", err)
	}
	if _, err := admin.NewVersion(ctx, "other_v1", "other_v2"); err != nil {
		t.Fatalf("admin NewVersion: %v", err)
	}
	if err := admin.CreateOwnerKey(ctx, "recip-e", "other_v1"); err != nil {
		t.Fatalf("admin CreateOwnerKey: %v", err)
	}
	if err := admin.CreateOwnerKey(ctx, "recip-e", "prescriptions_v1"); !errors.Is(err, keys.ErrExists) {
		t.Fatalf("admin CreateOwnerKey over an existing key = %v, want ErrExists", err)
	}
	// Admin: change and delete domains, rotate and delete owner keys.
	od, err := admin.Domain(ctx, "other_v1")
	if err != nil {
		t.Fatal(err)
	}
	if err := admin.SetPolicy(ctx, "other_v1", keys.Policy{Pseudonymize: []string{"lab"}}); err != nil {
		t.Fatalf("admin SetPolicy: %v", err)
	}
	if err := admin.SetPolicy(ctx, "other_v1", od.Policy); err != nil {
		t.Fatalf("admin SetPolicy: %v", err)
	}
	if err := admin.SetLifetimes(ctx, "other_v1", time.Minute, 0); err != nil {
		t.Fatalf("admin SetLifetimes: %v", err)
	}
	if err := admin.RotateOwnerKey(ctx, "recip-e", "other_v1"); err != nil {
		t.Fatalf("admin RotateOwnerKey: %v", err)
	}
	if err := admin.DeleteOwnerKey(ctx, "recip-e", "other_v1"); err != nil {
		t.Fatalf("admin DeleteOwnerKey: %v", err)
	}
	if _, err := admin.CreateDomain(ctx, keys.DomainSpec{Name: "scratch_v1", Audience: "urn:scratch:v1"}); err != nil {
		t.Fatalf("admin CreateDomain: %v", err)
	}
	if err := admin.DeleteDomain(ctx, "scratch_v1"); err != nil {
		t.Fatalf("admin DeleteDomain: %v", err)
	}
	if names, err := admin.Domains(ctx); err != nil || len(names) != 4 {
		t.Fatalf("admin Domains = %v, %v", names, err)
	}
	if d, err := admin.Domain(ctx, "prescriptions_v1"); err != nil || len(d.Scalar) != 0 {
		t.Fatalf("admin Domain (owner mode) = %v, %v", d, err)
	}
	if _, err := srv.ClientWithToken(t, adminTok).KVv2(mount).Get(ctx, "domains/prescriptions_v1/scalar"); !is403(err) {
		t.Fatalf("admin read of a scalar = %v, want 403", err)
	}
	if _, err := admin.OwnerKey(ctx, "recip-e", "prescriptions_v1"); !is403(err) || !errors.Is(err, keys.ErrDenied) {
		t.Fatalf("admin OwnerKey = %v, want 403", err)
	}

	// Service: reads every domain, scalar included; no owner key, no write.
	names, err := service.Domains(ctx)
	if err != nil || len(names) != 4 {
		t.Fatalf("service Domains = %v, %v", names, err)
	}
	sd, err := service.Domain(ctx, "prescriptions_v1")
	if err != nil {
		t.Fatalf("service Domain: %v", err)
	}
	if len(sd.Scalar) != keys.ScalarSize || sd.Transit.Active != kid {
		t.Fatalf("service Domain = %v", sd)
	}
	if v, err := service.Version(ctx, "prescriptions_v1"); err != nil || v != sd.Generation {
		t.Fatalf("service Version = %d, %v; Generation %d", v, err, sd.Generation)
	}
	if _, err := service.OwnerKey(ctx, "recip-e", "prescriptions_v1"); !is403(err) {
		t.Fatalf("service OwnerKey = %v, want 403", err)
	}
	if _, err := service.RotateTransitKey(ctx, "prescriptions_v1"); !errors.Is(err, keys.ErrDenied) {
		t.Fatalf("service RotateTransitKey = %v, want ErrDenied", err)
	}

	// Owner: its domain's meta and transit keys, and its own k2; nothing
	// else.
	_, err = ownerRaw.KVv2(mount).Get(ctx, "domains/prescriptions_v1/scalar")
	if !is403(err) {
		t.Fatalf("owner read of its domain's scalar = %v, want 403", err)
	}
	od, err = ownerStore.Domain(ctx, "prescriptions_v1")
	if err != nil {
		t.Fatalf("owner Domain: %v", err)
	}
	if len(od.Scalar) != 0 || od.Transit.Active != sd.Transit.Active || len(od.Transit.Keys) != len(sd.Transit.Keys) {
		t.Fatalf("owner Domain = %v", od)
	}
	for k, v := range sd.Transit.Keys {
		if string(od.Transit.Keys[k]) != string(v) {
			t.Fatalf("owner transit key %s differs", k)
		}
	}
	if v, err := ownerStore.Version(ctx, "prescriptions_v1"); err != nil || v != od.Generation {
		t.Fatalf("owner Version = %d, %v; Generation %d", v, err, od.Generation)
	}
	if _, err := ownerStore.Domain(ctx, "other_v1"); !is403(err) || !errors.Is(err, keys.ErrDenied) {
		t.Fatalf("owner Domain(other_v1) = %v, want 403", err)
	}
	if _, err := ownerRaw.KVv2(mount).Get(ctx, "domains/other_v1/transit"); !is403(err) {
		t.Fatalf("owner read of another domain's transit keys = %v, want 403", err)
	}
	if k2, err := ownerStore.OwnerKey(ctx, "recip-e", "prescriptions_v1"); err != nil || keys.CheckScalar(k2) != nil {
		t.Fatalf("owner OwnerKey: %v", err)
	}
	if _, err := ownerStore.OwnerKey(ctx, "recip-e", "other_v1"); !is403(err) {
		t.Fatalf("owner OwnerKey of another domain = %v, want 403", err)
	}
	if _, err := ownerStore.Domains(ctx); !is403(err) {
		t.Fatalf("owner Domains = %v, want 403", err)
	}
	if _, err := vault.NewStore(ownerRaw, mount, vault.Service).Domain(ctx, "prescriptions_v1"); !is403(err) {
		t.Fatalf("owner in service mode = %v, want 403", err)
	}

	// An owner runs a cache on its own domains.
	c, err := keys.NewCache(ctx, ownerStore, &keys.CacheOptions{Domains: []string{"prescriptions_v1"}, Interval: 200 * time.Millisecond})
	if err != nil {
		t.Fatalf("owner cache: %v", err)
	}
	defer c.Close()
	kid, err = admin.RotateTransitKey(ctx, "prescriptions_v1")
	if err != nil {
		t.Fatal(err)
	}
	waitfor.Cond(t, 3*time.Second, "owner cache sees the rotation", func() bool {
		d, err := c.Domain("prescriptions_v1")
		return err == nil && d.Transit.Active == kid && len(d.Scalar) == 0
	})
	if err := c.Health(); err != nil {
		t.Fatalf("owner cache health: %v", err)
	}
}

// TestCache checks that a cache on Vault sees rotations, retirements and new
// domains within a few poll intervals, and reloads nothing otherwise.
func TestCache(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	srv := start(t)
	s := rootStore(t, srv)
	if _, err := s.CreateDomain(ctx, keystest.Spec); err != nil {
		t.Fatal(err)
	}
	const interval = 200 * time.Millisecond
	polls := make(chan error, 100)
	c, err := keys.NewCache(ctx, s, &keys.CacheOptions{Interval: interval, OnPoll: func(err error) {
		select {
		case polls <- err:
		default:
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	name := keystest.Spec.Name
	d1, err := c.Domain(name)
	if err != nil || len(d1.Scalar) != keys.ScalarSize {
		t.Fatalf("Domain = %v, %v", d1, err)
	}

	// Unchanged: the snapshot stays the same (Version matches Generation).
	gen := c.Generation()
	for range 3 { // three polls of the unchanged store
		if err := <-polls; err != nil {
			t.Fatalf("poll: %v", err)
		}
	}
	if c.Generation() != gen {
		t.Fatal("the cache reloaded an unchanged domain")
	}

	start := time.Now()
	kid, err := s.RotateTransitKey(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	waitfor.Cond(t, 10*interval, "rotation seen", func() bool {
		d, _ := c.Domain(name)
		return d.Transit.Active == kid
	})
	t.Logf("rotation seen after %v (poll interval %v)", time.Since(start), interval)
	d2, _ := c.Domain(name)
	if d2.Generation == d1.Generation || len(d2.Transit.Keys) != 2 {
		t.Fatalf("after rotation: %v", d2)
	}

	if err := s.RetireTransitKey(ctx, name, "t1"); err != nil {
		t.Fatal(err)
	}
	waitfor.Cond(t, 10*interval, "retirement seen", func() bool {
		d, _ := c.Domain(name)
		return len(d.Transit.Keys) == 1
	})
	// The retired key is gone from every version of the transit path.
	md, err := srv.Client(t).KVv2(mount).GetMetadata(ctx, "domains/"+name+"/transit")
	if err != nil {
		t.Fatal(err)
	}
	for v, vm := range md.Versions {
		if v != "3" && !vm.Destroyed {
			t.Errorf("transit version %s still holds retired keys", v)
		}
	}

	// A new version with its own audience (audiences are unique).
	next := keystest.Spec
	next.Name, next.Audience = "prescriptions_v2", keys.NextAudience(keystest.Spec.Audience, "prescriptions_v2")
	if _, err := s.NewVersionWith(ctx, name, next, keys.DomainOptions{}); err != nil {
		t.Fatal(err)
	}
	waitfor.Cond(t, 10*interval, "new version seen", func() bool {
		d, err := c.Domain("prescriptions_v2")
		if err != nil {
			return false
		}
		old, _ := c.Domain(name)
		return d.Transit.Active == "t1" && len(old.Policy.Convert["prescriptions_v2"]) == 1
	})
	if err := c.Health(); err != nil {
		t.Fatal(err)
	}
}

// TestOutage stops Vault under a running cache: the cache keeps serving its
// snapshot and reports the outage, and recovers when Vault is back.
func TestOutage(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	srv := start(t)
	s, err := vault.Open(ctx, vault.Config{Address: srv.Addr, Token: srv.RootToken, Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.CreateDomain(ctx, keystest.Spec); err != nil {
		t.Fatal(err)
	}
	log := &logCounter{match: "poll failed", Handler: slog.DiscardHandler}
	c, err := keys.NewCache(ctx, s, &keys.CacheOptions{
		Interval: 200 * time.Millisecond,
		Timeout:  time.Second,
		Logger:   slog.New(log),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	name := keystest.Spec.Name
	before, _ := c.Domain(name)

	srv.Stop(t)
	waitfor.Cond(t, 15*time.Second, "degraded", func() bool { return c.Health() != nil })
	if err := c.Health(); !errors.Is(err, keys.ErrUnavailable) {
		t.Fatalf("Health() = %v, want ErrUnavailable", err)
	}
	for range 1000 {
		if d, err := c.Domain(name); err != nil || d != before {
			t.Fatalf("during the outage Domain = %v, %v", d, err)
		}
	}
	if n := log.n.Load(); n == 0 || n > 20 {
		t.Fatalf("%d poll failures logged", n)
	}

	srv.Restart(t)
	srv.EnableKV(t, mount) // a dev server forgets everything: seed it again
	if _, err := s.CreateDomain(ctx, keystest.Spec); err != nil {
		t.Fatal(err)
	}
	waitfor.Cond(t, 15*time.Second, "recovered", func() bool { return c.Health() == nil })
	after, err := c.Domain(name)
	if err != nil || after.Generation == before.Generation {
		t.Fatalf("after recovery Domain = %v, %v", after, err)
	}
}

// TestStartUnavailable: a cache cannot start without Vault.
func TestStartUnavailable(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	srv := start(t)
	s := vault.NewStore(srv.Client(t), mount, vault.Service)
	srv.Stop(t)
	_, err := keys.NewCache(ctx, s, &keys.CacheOptions{Timeout: 5 * time.Second})
	if !errors.Is(err, keys.ErrUnavailable) {
		t.Fatalf("NewCache = %v, want ErrUnavailable", err)
	}
	_, err = vault.Open(ctx, vault.Config{Address: srv.Addr, Token: "x", MaxRetries: -1})
	if !errors.Is(err, keys.ErrUnavailable) {
		t.Fatalf("Open = %v, want ErrUnavailable", err)
	}
}

// TestAppRole logs in with AppRole with a token that lives 4 s, at most 8 s:
// reads go on without error across renewals and new logins.
func TestAppRole(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	srv := start(t)
	if _, err := rootStore(t, srv).CreateDomain(ctx, keystest.Spec); err != nil {
		t.Fatal(err)
	}
	srv.WritePolicy(t, "pseudonymizer-service", policies.Service)
	roleID, secretID := srv.AppRoleOnly(t, "pseudonymizer", 4*time.Second, 8*time.Second, "pseudonymizer-service")
	secretFile := filepath.Join(t.TempDir(), "secret-id")
	if err := os.WriteFile(secretFile, []byte(secretID+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	logins := &logCounter{match: "logged in again", Handler: slog.DiscardHandler}
	s, err := vault.Open(ctx, vault.Config{
		Address:      srv.Addr,
		RoleID:       roleID,
		SecretIDFile: secretFile,
		Logger:       slog.New(logins),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	// The deployment rotates the secret_id: a new one in the file, the old
	// one destroyed. The token dies at its max TTL (8 s); the next login
	// must read the file again. Reads go on until that login happened.
	root := srv.Client(t)
	sec, err := root.Logical().Write("auth/approle/role/pseudonymizer/secret-id", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(secretFile, []byte(sec.Data["secret_id"].(string)), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := root.Logical().Write("auth/approle/role/pseudonymizer/secret-id/destroy", map[string]any{"secret_id": secretID}); err != nil {
		t.Fatal(err)
	}
	reads := 0
	start := time.Now()
	waitfor.Cond(t, 30*time.Second, "a new login, with the rotated secret_id", func() bool {
		if _, err := s.Domain(ctx, keystest.Spec.Name); err != nil {
			t.Fatalf("read %d after %v: %v", reads, time.Since(start), err)
		}
		reads++
		return logins.n.Load() > 0
	})
	// Reads went on across the new login: it used the new secret_id (the
	// old one is destroyed).
	t.Logf("%d reads, %d new logins", reads, logins.n.Load())
	token := s.Client().Token()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// Close revoked the token.
	if _, err := srv.ClientWithToken(t, token).Auth().Token().LookupSelf(); !is403(err) {
		t.Fatalf("token after Close: %v", err)
	}

	bad := vault.Config{Address: srv.Addr, RoleID: roleID, SecretID: "wrong"}
	if _, err := vault.Open(ctx, bad); !errors.Is(err, keys.ErrDenied) {
		t.Fatalf("AppRole login with a wrong secret_id = %v, want ErrDenied", err)
	}
	if _, err := vault.Open(ctx, vault.Config{Address: srv.Addr, Token: "wrong"}); !errors.Is(err, keys.ErrDenied) {
		t.Fatalf("Open with a wrong token = %v, want ErrDenied", err)
	}
}

// TestTLS talks to Vault over TLS, verified with a CA file.
func TestTLS(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	srv := start(t, vaulttest.WithTLS())
	if !strings.HasPrefix(srv.Addr, "https://") {
		t.Fatalf("Addr = %s", srv.Addr)
	}
	s, err := vault.Open(ctx, vault.Config{Address: srv.Addr, CACert: srv.CACert, Token: srv.RootToken})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.CreateDomain(ctx, keystest.Spec); err != nil {
		t.Fatal(err)
	}
	if names, err := s.Domains(ctx); err != nil || len(names) != 1 {
		t.Fatalf("Domains = %v, %v", names, err)
	}
	// Without the CA the certificate is refused.
	if _, err := vault.Open(ctx, vault.Config{Address: srv.Addr, Token: srv.RootToken, MaxRetries: -1}); !errors.Is(err, keys.ErrUnavailable) {
		t.Fatalf("Open without the CA = %v, want ErrUnavailable", err)
	}
	if _, err := vault.Open(ctx, vault.Config{Address: srv.Addr, CACert: filepath.Join(t.TempDir(), "none.pem"), Token: "x"}); err == nil {
		t.Fatal("Open with a missing CA file worked")
	}
}
