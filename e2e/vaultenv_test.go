package e2e

import (
	"context"
	"io"
	"log/slog"
	"maps"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ehealth-pseudo/pseudonymizer/internal/vaulttest"
	"github.com/ehealth-pseudo/pseudonymizer/keys/vault"
	"github.com/ehealth-pseudo/pseudonymizer/owner"
)

// Vault policy names, as an operator would choose them.
const (
	servicePolicy = "pseudonymizer-service"
	adminPolicy   = "pseudonymizer-admin"
	serviceRole   = "pseudonymizer"
)

var discard = slog.New(slog.NewTextHandler(io.Discard, nil))

// vaultEnv is a real Vault set up as an operator does for the service.
type vaultEnv struct {
	v          *vaulttest.Server
	adminToken string
}

// startVault starts Vault and sets it up: the KV v2 mount, the service and
// admin policies printed by `pseudoctl policy`, and an administrator token.
func startVault(t testing.TB, opts ...vaulttest.Option) *vaultEnv {
	t.Helper()
	ve := &vaultEnv{v: vaulttest.Start(t, opts...)}
	ve.setup(t)
	return ve
}

// setup (re)creates the mount, the policies and the admin token; after a
// restart of a dev-mode Vault, which forgets everything, it runs again.
func (ve *vaultEnv) setup(t testing.TB) {
	t.Helper()
	ve.v.EnableKV(t, vault.DefaultMount)
	ve.v.WritePolicy(t, servicePolicy, runCtl(t, nil, "policy", "service"))
	ve.v.WritePolicy(t, adminPolicy, runCtl(t, nil, "policy", "admin"))
	ve.adminToken = ve.v.Token(t, adminPolicy)
}

// ctl runs pseudoctl against this Vault as an administrator.
func (ve *vaultEnv) ctl(t testing.TB, args ...string) string {
	t.Helper()
	env := []string{"VAULT_ADDR=" + ve.v.Addr, "VAULT_TOKEN=" + ve.adminToken}
	if ve.v.CACert != "" {
		env = append(env, "VAULT_CACERT="+ve.v.CACert)
	}
	return runCtl(t, env, args...)
}

// domainSpec is a domain an administrator creates.
type domainSpec struct {
	name, audience                 string
	pseudonymize, identify, owners []string
	convert                        map[string][]string // target domain → principals
}

// createDomain creates a domain with `pseudoctl domain create`, as an
// administrator does, with the admin policy's token.
func (ve *vaultEnv) createDomain(t testing.TB, d domainSpec) {
	t.Helper()
	out := ve.ctl(t, ctlCreateArgs(d)...)
	if !strings.Contains(out, "created domain "+d.name) {
		t.Fatalf("pseudoctl domain create %s printed %q", d.name, out)
	}
}

func ctlCreateArgs(d domainSpec) []string {
	args := []string{"domain", "create", d.name, "-audience", d.audience,
		"-pseudonymize", strings.Join(d.pseudonymize, ","),
		"-identify", strings.Join(d.identify, ","),
		"-owners", strings.Join(d.owners, ",")}
	for _, target := range slices.Sorted(maps.Keys(d.convert)) {
		args = append(args, "-convert", target+"="+strings.Join(d.convert[target], ","))
	}
	return args
}

// open logs in to Vault with token and returns a store in mode.
func (ve *vaultEnv) open(t testing.TB, token string, mode vault.Mode) *vault.Store {
	t.Helper()
	st, err := vault.Open(context.Background(), vault.Config{
		Address: ve.v.Addr, CACert: ve.v.CACert, Token: token, Mode: mode, MaxRetries: -1, Logger: discard,
	})
	if err != nil {
		t.Fatalf("vault.Open: %v", err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return st
}

// ownerToken writes the policy of owner for domain (as printed by
// `pseudoctl policy owner`) and returns a token bound to it alone.
func (ve *vaultEnv) ownerToken(t testing.TB, ownerName, domain string) string {
	t.Helper()
	name := "pseudonymizer-owner-" + ownerName + "-" + domain
	ve.v.WritePolicy(t, name, runCtl(t, nil, "policy", "owner", ownerName, domain))
	return ve.v.Token(t, name)
}

// ownerStore is what an owner's software opens: Vault in Owner mode with
// a token of its owner policy.
func (ve *vaultEnv) ownerStore(t testing.TB, ownerName, domain string) *vault.Store {
	t.Helper()
	return ve.open(t, ve.ownerToken(t, ownerName, domain), vault.Owner)
}

// newOwner starts the owner SDK of domain on keys read from Vault with the
// owner's policy.
func (ve *vaultEnv) newOwner(t testing.TB, ownerName, domain string, opts ...owner.Option) *owner.Owner {
	t.Helper()
	st := ve.ownerStore(t, ownerName, domain)
	o, err := owner.New(context.Background(), domain, st, append([]owner.Option{owner.WithLogger(discard)}, opts...)...)
	if err != nil {
		t.Fatalf("owner.New(%s): %v", domain, err)
	}
	t.Cleanup(func() { _ = o.Close() })
	return o
}

// serviceAppRole creates the service's AppRole (service policy, tokens of
// the given TTLs) and writes its secret_id to a file, as a secret-id
// delivery (Kubernetes secret, Vault agent) would.
func (ve *vaultEnv) serviceAppRole(t testing.TB, ttl, maxTTL time.Duration) (roleID, secretIDFile string) {
	t.Helper()
	roleID, secretID := ve.v.AppRoleOnly(t, serviceRole, ttl, maxTTL, servicePolicy)
	secretIDFile = filepath.Join(t.TempDir(), "secret-id")
	writeFile(t, secretIDFile, secretID+"\n")
	return roleID, secretIDFile
}
