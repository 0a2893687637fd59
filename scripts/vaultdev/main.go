// Command vaultdev is a production-like set-up in one command, run by
// scripts/vault-dev.sh: it starts a Vault dev server on loopback, sets it
// up as an operator would for the pseudonymizer (KV v2 mount, the key-share
// plugin of split domain keys registered with its SHA-256 and mounted, a
// file audit device, service, admin and migrate policies, AppRoles for the
// service and for one owner, two demo domains made by pseudoctl: one with a
// whole key, one split), makes a CA with a server and a client certificate,
// writes everything into a directory and prints the exact pseudonymizer and
// pseudo command lines to run against it. Vault runs until Ctrl-C (SIGINT or
// SIGTERM), and is stopped then.
//
// It needs pseudoctl on PATH (go install ./cmd/...) or named by -pseudoctl,
// the Vault binary named by -vault (scripts/vault-bin.sh prints it) and the
// plugin binary named by -plugin (scripts/vault-plugin.sh prints it).
package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/ehealth-pseudo/pseudonymizer/keyshare"
	"github.com/ehealth-pseudo/pseudonymizer/vault/policies"
)

// The demo deployment: domain has a whole scalar k (single mode),
// splitDomain a split one (k = k₁·k₂, k₁ in KV, k₂ in the plugin).
const (
	mount         = "pseudonymizer"
	domain        = "prescriptions_v1"
	audience      = "urn:demo:prescriptions"
	splitDomain   = "therlink_v1"
	splitAudience = "urn:demo:therlink"
	ownerName     = "recip-e"
	clientPrinc   = "spiffe://demo/prescriber"
	servicePolicy = "pseudonymizer-service"
	adminPolicy   = "pseudonymizer-admin"
	migratePolicy = "pseudonymizer-migrate"
	serviceRole   = "pseudonymizer"
	demoNISS      = "85.07.30-033.28"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "vault-dev:", err)
		os.Exit(1)
	}
}

func run() error {
	vaultBin := flag.String("vault", os.Getenv("VAULT_BIN"), "Vault binary (scripts/vault-bin.sh prints it)")
	ctl := flag.String("pseudoctl", "pseudoctl", "pseudoctl binary (go install ./cmd/... puts it on PATH)")
	plugin := flag.String("plugin", "", "the key-share plugin binary, cmd/pseudonymizer-vault-plugin (scripts/vault-plugin.sh prints it)")
	flag.Parse()
	if *vaultBin == "" {
		return errors.New("no Vault binary: give -vault (scripts/vault-bin.sh prints its path)")
	}
	if *plugin == "" {
		return errors.New("no key-share plugin: give -plugin (scripts/vault-plugin.sh prints its path)")
	}
	ctlPath, err := exec.LookPath(*ctl)
	if err != nil {
		return fmt.Errorf("%s not found: run go install ./cmd/... first (%v)", *ctl, err)
	}
	dir := "vault-dev"
	if flag.NArg() > 0 {
		dir = flag.Arg(0)
	}
	if dir, err = filepath.Abs(dir); err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	// Vault's plugin directory (plugin_directory; -dev-plugin-dir in dev
	// mode) and the plugin's checksum for the registration.
	pluginDir := filepath.Join(dir, "plugins")
	pluginSum, err := installPlugin(*plugin, pluginDir)
	if err != nil {
		return err
	}

	ports, err := freePorts(4)
	if err != nil {
		return err
	}
	vaultListen := fmt.Sprintf("127.0.0.1:%d", ports[0])
	vaultAddr := "http://" + vaultListen
	rootToken, err := randomHex(16)
	if err != nil {
		return err
	}
	logFile, err := os.OpenFile(filepath.Join(dir, "vault.log"), os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	defer logFile.Close()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	vcmd := exec.Command(*vaultBin, "server", "-dev", "-dev-root-token-id="+rootToken,
		"-dev-listen-address="+vaultListen, "-dev-no-store-token", "-dev-plugin-dir="+pluginDir)
	vcmd.Stdout, vcmd.Stderr = logFile, logFile
	vcmd.Env = withoutVaultEnv()
	if err := vcmd.Start(); err != nil {
		return fmt.Errorf("starting Vault: %v", err)
	}
	exited := make(chan error, 1)
	go func() {
		defer func() {
			if p := recover(); p != nil {
				exited <- fmt.Errorf("waiting for Vault: panic %T", p)
			}
		}()
		exited <- vcmd.Wait()
	}()
	defer func() {
		_ = vcmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = vcmd.Process.Kill()
			<-exited
		}
		fmt.Fprintln(os.Stderr, "vault-dev: Vault stopped")
	}()

	root, err := api.NewClient(&api.Config{Address: vaultAddr})
	if err != nil {
		return err
	}
	root.SetToken(rootToken)
	if err := waitVault(ctx, root, exited); err != nil {
		return fmt.Errorf("the Vault server did not start (see %s): %v", logFile.Name(), err)
	}
	a, err := setup(ctx, root, ctlPath, vaultAddr, dir, pluginSum)
	if err != nil {
		return err
	}
	if err := writePKI(dir); err != nil {
		return err
	}

	listen := fmt.Sprintf("127.0.0.1:%d", ports[1])
	health := fmt.Sprintf("127.0.0.1:%d", ports[2])
	metrics := fmt.Sprintf("127.0.0.1:%d", ports[3])
	p := func(name string) string { return filepath.Join(dir, name) }
	server := strings.Join([]string{"pseudonymizer", "-listen", listen,
		"-tls-cert", q(p("server.crt")), "-tls-key", q(p("server.key")), "-tls-client-ca", q(p("ca.crt")),
		"-vault-addr", vaultAddr, "-vault-role-id", a.serviceRoleID, "-vault-secret-id-file", q(p("service-secret-id")),
		"-health-listen", health, "-metrics-listen", metrics}, " ")
	conn := strings.Join([]string{"-addr", listen, "-ca", q(p("ca.crt")), "-cert", q(p("client.crt")), "-key", q(p("client.key"))}, " ")
	pz := "pseudo " + conn + " pseudonymize -domain " + domain + " -kind niss " + demoNISS
	id := "pseudo " + conn + " identify -domain " + domain + " -kind niss \"$(" + pz + ")\""
	splitPz := "pseudo " + conn + " pseudonymize -domain " + splitDomain + " -kind niss " + demoNISS
	splitID := "pseudo " + conn + " identify -domain " + splitDomain + " -kind niss \"$(" + splitPz + ")\""

	fmt.Printf(`Vault %s (dev server, in memory; log %s, audit log %s)
  root token %s, admin token in %s, admin + migrate token in %s
  key-share plugin %s (SHA-256 %s) mounted at %s/
  service AppRole: role_id %s, secret_id in %s
  owner %s AppRole: role_id %s, secret_id in %s
  demo domains, owner %s, client %s may pseudonymize and identify:
    %-17s single mode (k in KV)
    %-17s split mode (k = k1*k2: k1 in KV, k2 in the plugin; k never existed)
  CA, server and client certificates in %s

pseudoctl against it (domain show %s, domain refresh-shares %s; domain split
%s needs the admin + migrate token):
  export VAULT_ADDR=%s VAULT_TOKEN=$(cat %s)

run the service:
  %s

then, in another terminal, a pseudonymize and identify round trip in each domain:
  %s
  %s
  %s
  %s

vault-dev: ready; Ctrl-C stops Vault
`, vaultAddr, logFile.Name(), p("audit.log"), rootToken, p("admin-token"), p("migrate-token"),
		keyshare.Name, pluginSum, keyshare.DefaultMount,
		a.serviceRoleID, p("service-secret-id"),
		ownerName, a.ownerRoleID, p("owner-secret-id"),
		ownerName, clientPrinc, domain, splitDomain, dir,
		splitDomain, splitDomain, domain,
		vaultAddr, q(p("admin-token")),
		server, pz, id, splitPz, splitID)

	select {
	case <-ctx.Done():
		return nil
	case err := <-exited:
		exited <- err
		return fmt.Errorf("the Vault server exited (see %s): %v", logFile.Name(), err)
	}
}

// q quotes a path for a shell when it needs it.
func q(s string) string {
	if strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("/._-+:,=@", r))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

type appRoles struct{ serviceRoleID, ownerRoleID string }

// installPlugin copies the plugin binary into Vault's plugin directory
// (atomically) and returns its SHA-256 in hex, which its registration
// pins.
func installPlugin(bin, dir string) (string, error) {
	b, err := os.ReadFile(bin)
	if err != nil {
		return "", fmt.Errorf("the key-share plugin: %v", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	tmp := filepath.Join(dir, "."+keyshare.Name+".tmp")
	if err := os.WriteFile(tmp, b, 0o755); err != nil {
		return "", err
	}
	if err := os.Rename(tmp, filepath.Join(dir, keyshare.Name)); err != nil {
		return "", err
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:]), nil
}

// setup does what the README's "Vault in production" set-up and
// docs/split-keys.md's deployment do.
func setup(ctx context.Context, c *api.Client, ctl, addr, dir, pluginSum string) (appRoles, error) {
	var a appRoles
	// The audit device records every request, the plugin's multiply
	// included (values HMAC'd).
	if err := c.Sys().EnableAuditWithOptionsWithContext(ctx, "file", &api.EnableAuditOptions{
		Type: "file", Options: map[string]string{"file_path": filepath.Join(dir, "audit.log")},
	}); err != nil {
		return a, fmt.Errorf("enabling the file audit device: %v", err)
	}
	if err := c.Sys().MountWithContext(ctx, mount, &api.MountInput{Type: "kv", Options: map[string]string{"version": "2"}}); err != nil {
		return a, fmt.Errorf("enabling KV v2 at %s: %v", mount, err)
	}
	// vault plugin register -sha256=… secret pseudonymizer-vault-plugin;
	// vault secrets enable -path=pseudonymizer-shares pseudonymizer-vault-plugin
	if err := c.Sys().RegisterPluginWithContext(ctx, &api.RegisterPluginInput{
		Name: keyshare.Name, Type: api.PluginTypeSecrets, Command: keyshare.Name, SHA256: pluginSum,
	}); err != nil {
		return a, fmt.Errorf("registering the key-share plugin: %v", err)
	}
	if err := c.Sys().MountWithContext(ctx, keyshare.DefaultMount, &api.MountInput{Type: keyshare.Name}); err != nil {
		return a, fmt.Errorf("enabling the key-share plugin at %s: %v", keyshare.DefaultMount, err)
	}
	// A new KV v2 mount upgrades itself in the background.
	if err := retry(ctx, func() error {
		_, err := c.Logical().ListWithContext(ctx, mount+"/metadata/")
		return err
	}); err != nil {
		return a, fmt.Errorf("KV v2 at %s not ready: %v", mount, err)
	}
	hcl := map[string]string{servicePolicy: policies.Service, adminPolicy: policies.Admin, migratePolicy: policies.Migrate}
	var ownerPolicies []string
	for _, d := range []string{domain, splitDomain} {
		ownerHCL, err := policies.Owner(ownerName, d)
		if err != nil {
			return a, err
		}
		name := "owner-" + ownerName + "-" + d
		hcl[name] = ownerHCL
		ownerPolicies = append(ownerPolicies, name)
	}
	for name, text := range hcl {
		if err := c.Sys().PutPolicyWithContext(ctx, name, text); err != nil {
			return a, fmt.Errorf("writing policy %s: %v", name, err)
		}
	}
	if err := c.Sys().EnableAuthWithOptionsWithContext(ctx, "approle", &api.EnableAuthOptions{Type: "approle"}); err != nil {
		return a, fmt.Errorf("enabling AppRole: %v", err)
	}
	var err error
	if a.serviceRoleID, err = appRole(ctx, c, serviceRole, filepath.Join(dir, "service"), true, servicePolicy); err != nil {
		return a, err
	}
	if a.ownerRoleID, err = appRole(ctx, c, "owner-"+ownerName, filepath.Join(dir, "owner"), false, ownerPolicies...); err != nil {
		return a, err
	}
	adminToken, err := token(ctx, c, filepath.Join(dir, "admin-token"), adminPolicy)
	if err != nil {
		return a, err
	}
	// For `pseudoctl domain split` (reads k once): revoke it after use.
	if _, err := token(ctx, c, filepath.Join(dir, "migrate-token"), adminPolicy, migratePolicy); err != nil {
		return a, err
	}
	for _, args := range [][]string{
		{domain, "-audience", audience},
		{splitDomain, "-audience", splitAudience, "-split"},
	} {
		cmd := exec.CommandContext(ctx, ctl, append(append([]string{"domain", "create"}, args...),
			"-pseudonymize", clientPrinc, "-identify", clientPrinc, "-owners", ownerName)...)
		cmd.Env = append(withoutVaultEnv(), "VAULT_ADDR="+addr, "VAULT_TOKEN="+adminToken)
		if out, err := cmd.CombinedOutput(); err != nil {
			return a, fmt.Errorf("pseudoctl domain create %s: %v\n%s", args[0], err, out)
		}
	}
	return a, nil
}

// token creates a token with policies, valid 24 hours, and writes it to
// the file path.
func token(ctx context.Context, c *api.Client, path string, policies ...string) (string, error) {
	tok, err := c.Auth().Token().CreateWithContext(ctx, &api.TokenCreateRequest{Policies: policies, TTL: "24h"})
	if err != nil {
		return "", fmt.Errorf("creating a token of %v: %v", policies, err)
	}
	return tok.Auth.ClientToken, os.WriteFile(path, []byte(tok.Auth.ClientToken+"\n"), 0o600)
}

// appRole creates an AppRole role with policies (and, unless noDefault,
// Vault's default policy: the service's policy does without it, which
// saves Vault CPU on every request) and writes its role_id and a secret_id
// to prefix-role-id and prefix-secret-id.
func appRole(ctx context.Context, c *api.Client, role, prefix string, noDefault bool, policies ...string) (string, error) {
	if _, err := c.Logical().WriteWithContext(ctx, "auth/approle/role/"+role, map[string]any{
		"token_policies": policies, "token_ttl": "1h", "token_max_ttl": "24h", "token_no_default_policy": noDefault,
	}); err != nil {
		return "", fmt.Errorf("creating AppRole %s: %v", role, err)
	}
	sec, err := c.Logical().ReadWithContext(ctx, "auth/approle/role/"+role+"/role-id")
	if err != nil || sec == nil {
		return "", fmt.Errorf("reading the role_id of %s: %v", role, err)
	}
	roleID, _ := sec.Data["role_id"].(string)
	sec, err = c.Logical().WriteWithContext(ctx, "auth/approle/role/"+role+"/secret-id", nil)
	if err != nil || sec == nil {
		return "", fmt.Errorf("creating a secret_id for %s: %v", role, err)
	}
	secretID, _ := sec.Data["secret_id"].(string)
	if roleID == "" || secretID == "" {
		return "", fmt.Errorf("AppRole %s: empty role_id or secret_id", role)
	}
	if err := os.WriteFile(prefix+"-role-id", []byte(roleID+"\n"), 0o600); err != nil {
		return "", err
	}
	return roleID, os.WriteFile(prefix+"-secret-id", []byte(secretID+"\n"), 0o600)
}

// waitVault waits until Vault answers as an unsealed active node.
func waitVault(ctx context.Context, c *api.Client, exited chan error) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	return retry(ctx, func() error {
		select {
		case err := <-exited:
			exited <- err
			return backoffStop{fmt.Errorf("the Vault server exited: %v", err)}
		default:
		}
		h, err := c.Sys().HealthWithContext(ctx)
		if err == nil && (!h.Initialized || h.Sealed) {
			err = errors.New("not ready")
		}
		return err
	})
}

type backoffStop struct{ error }

// retry calls f every 100 ms until it succeeds, returns a backoffStop or
// ctx ends.
func retry(ctx context.Context, f func() error) error {
	for {
		err := f()
		var stop backoffStop
		if err == nil || errors.As(err, &stop) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// withoutVaultEnv is the environment without VAULT_* variables, which would
// point Vault or pseudoctl elsewhere.
func withoutVaultEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "VAULT_") {
			env = append(env, kv)
		}
	}
	return env
}

func freePorts(n int) ([]int, error) {
	var ports []int
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

func randomHex(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return hex.EncodeToString(b), nil
}

// writePKI makes a CA (ca.crt), a server certificate for 127.0.0.1, ::1
// and localhost (server.crt, server.key) and a client certificate for the
// demo principal (client.crt, client.key), valid 30 days.
func writePKI(dir string) error {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	caTmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: "pseudonymizer vault-dev CA"},
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	caCert, _, err := issue(dir, "ca", caTmpl, nil, caKey)
	if err != nil {
		return err
	}
	if _, _, err := issue(dir, "server", &x509.Certificate{
		Subject:     pkix.Name{CommonName: "localhost"},
		DNSNames:    []string{"localhost"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		KeyUsage:    x509.KeyUsageDigitalSignature,
	}, caCert, caKey); err != nil {
		return err
	}
	u, err := url.Parse(clientPrinc)
	if err != nil {
		return err
	}
	_, _, err = issue(dir, "client", &x509.Certificate{
		Subject:     pkix.Name{CommonName: "prescriber"},
		URIs:        []*url.URL{u},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		KeyUsage:    x509.KeyUsageDigitalSignature,
	}, caCert, caKey)
	return err
}

// issue signs tmpl with the CA (self-signed with signer when ca is nil)
// and writes name.crt, and name.key unless it is the CA.
func issue(dir, name string, tmpl, ca *x509.Certificate, caKey *ecdsa.PrivateKey) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	key := caKey
	if ca != nil {
		var err error
		if key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
			return nil, nil, err
		}
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 64))
	if err != nil {
		return nil, nil, err
	}
	tmpl.SerialNumber = serial
	tmpl.NotBefore = time.Now().Add(-time.Hour)
	tmpl.NotAfter = time.Now().Add(30 * 24 * time.Hour)
	parent := ca
	if parent == nil {
		parent = tmpl
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, caKey)
	if err != nil {
		return nil, nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, name+".crt"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return nil, nil, err
	}
	if ca != nil {
		keyDER, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			return nil, nil, err
		}
		if err := os.WriteFile(filepath.Join(dir, name+".key"), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
			return nil, nil, err
		}
	}
	return cert, key, nil
}
