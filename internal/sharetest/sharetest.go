// Package sharetest starts, for tests, a real Vault dev server with the
// pseudonymizer's KV v2 mount, the real key-share plugin
// (cmd/pseudonymizer-vault-plugin, built by scripts/vault-plugin.sh)
// registered with its SHA-256 and mounted, a file audit device, and the
// project's policies, with a token per role.
package sharetest

import (
	"path/filepath"
	"testing"

	"github.com/ehealth-pseudo/pseudonymizer/internal/vaulttest"
	"github.com/ehealth-pseudo/pseudonymizer/keyshare"
	"github.com/ehealth-pseudo/pseudonymizer/vault/policies"
)

// Env is a running Vault with the plugin.
type Env struct {
	*vaulttest.Server
	// Mount is the KV v2 mount ("pseudonymizer"), SharesMount the plugin's
	// ("pseudonymizer-shares").
	Mount, SharesMount string
	// Plugin is the path of the plugin binary installed.
	Plugin string
	// AuditLog is the file of Vault's audit device.
	AuditLog string
	// ServiceToken, AdminToken and MigrateToken (admin + migrate) are
	// tokens with the project's policies; OwnerToken has the policy of
	// owner "recip-e" for domain "prescriptions_v1".
	ServiceToken, AdminToken, MigrateToken, OwnerToken string
}

// Start starts Vault with the plugin and the policies. The server stops
// when the test ends.
func Start(t testing.TB) *Env {
	t.Helper()
	s := vaulttest.Start(t, vaulttest.WithPluginDir())
	e := &Env{Server: s, Mount: "pseudonymizer", SharesMount: keyshare.DefaultMount, Plugin: vaulttest.SharePlugin(t)}
	e.AuditLog = filepath.Join(t.TempDir(), "audit.log")
	s.EnableFileAudit(t, e.AuditLog)
	s.EnableKV(t, e.Mount)
	s.InstallPlugin(t, e.Plugin, keyshare.Name)
	s.MountPlugin(t, e.SharesMount, keyshare.Name)
	s.WritePolicy(t, "pseudonymizer-service", policies.Service)
	s.WritePolicy(t, "pseudonymizer-admin", policies.Admin)
	s.WritePolicy(t, "pseudonymizer-migrate", policies.Migrate)
	owner, err := policies.Owner("recip-e", "prescriptions_v1")
	if err != nil {
		t.Fatal(err)
	}
	s.WritePolicy(t, "pseudonymizer-owner", owner)
	e.ServiceToken = s.TokenOnly(t, "pseudonymizer-service")
	e.AdminToken = s.Token(t, "pseudonymizer-admin")
	e.MigrateToken = s.Token(t, "pseudonymizer-admin", "pseudonymizer-migrate")
	e.OwnerToken = s.Token(t, "pseudonymizer-owner")
	return e
}
