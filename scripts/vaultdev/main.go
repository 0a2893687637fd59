// Command vaultdev is a production-like set-up in one command, run by
// scripts/vault-dev.sh: it starts a Vault dev server on loopback, sets it
// up as an operator would for the pseudonymizer (KV v2 mount, service and
// admin policies, AppRoles for the service and for one owner, a demo domain
// made by pseudoctl), makes a CA with a server and a client certificate,
// writes everything into a directory and prints the exact pseudonymizer and
// pseudo command lines to run against it. Vault runs until Ctrl-C (SIGINT or
// SIGTERM), and is stopped then.
//
// It needs pseudoctl on PATH (go install ./cmd/...) or named by -pseudoctl,
// and the Vault binary named by -vault (scripts/vault-bin.sh prints it).
package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
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

	"github.com/ehealth-pseudo/pseudonymizer/vault/policies"
)

// The demo deployment.
const (
	mount         = "pseudonymizer"
	domain        = "prescriptions_v1"
	audience      = "urn:demo:prescriptions"
	ownerName     = "recip-e"
	clientPrinc   = "spiffe://demo/prescriber"
	servicePolicy = "pseudonymizer-service"
	adminPolicy   = "pseudonymizer-admin"
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
	flag.Parse()
	if *vaultBin == "" {
		return errors.New("no Vault binary: give -vault (scripts/vault-bin.sh prints its path)")
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
		"-dev-listen-address="+vaultListen, "-dev-no-store-token")
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
	a, err := setup(ctx, root, ctlPath, vaultAddr, dir)
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

	fmt.Printf(`Vault %s (dev server, in memory; log %s)
  root token %s, admin token in %s
  service AppRole: role_id %s, secret_id in %s
  owner %s AppRole: role_id %s, secret_id in %s
  demo domain %s: owner %s, client %s may pseudonymize and identify
  CA, server and client certificates in %s

pseudoctl against it:
  export VAULT_ADDR=%s VAULT_TOKEN=$(cat %s)

run the service:
  %s

then, in another terminal, a pseudonymize and identify round trip:
  %s
  %s

vault-dev: ready; Ctrl-C stops Vault
`, vaultAddr, logFile.Name(), rootToken, p("admin-token"),
		a.serviceRoleID, p("service-secret-id"),
		ownerName, a.ownerRoleID, p("owner-secret-id"),
		domain, ownerName, clientPrinc, dir,
		vaultAddr, q(p("admin-token")),
		server, pz, id)

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

// setup does what the README's "Vault in production" set-up does.
func setup(ctx context.Context, c *api.Client, ctl, addr, dir string) (appRoles, error) {
	var a appRoles
	if err := c.Sys().MountWithContext(ctx, mount, &api.MountInput{Type: "kv", Options: map[string]string{"version": "2"}}); err != nil {
		return a, fmt.Errorf("enabling KV v2 at %s: %v", mount, err)
	}
	// A new KV v2 mount upgrades itself in the background.
	if err := retry(ctx, func() error {
		_, err := c.Logical().ListWithContext(ctx, mount+"/metadata/")
		return err
	}); err != nil {
		return a, fmt.Errorf("KV v2 at %s not ready: %v", mount, err)
	}
	ownerHCL, err := policies.Owner(ownerName, domain)
	if err != nil {
		return a, err
	}
	ownerPolicy := "owner-" + ownerName + "-" + domain
	for name, hcl := range map[string]string{servicePolicy: policies.Service, adminPolicy: policies.Admin, ownerPolicy: ownerHCL} {
		if err := c.Sys().PutPolicyWithContext(ctx, name, hcl); err != nil {
			return a, fmt.Errorf("writing policy %s: %v", name, err)
		}
	}
	if err := c.Sys().EnableAuthWithOptionsWithContext(ctx, "approle", &api.EnableAuthOptions{Type: "approle"}); err != nil {
		return a, fmt.Errorf("enabling AppRole: %v", err)
	}
	if a.serviceRoleID, err = appRole(ctx, c, serviceRole, servicePolicy, filepath.Join(dir, "service")); err != nil {
		return a, err
	}
	if a.ownerRoleID, err = appRole(ctx, c, ownerPolicy, ownerPolicy, filepath.Join(dir, "owner")); err != nil {
		return a, err
	}
	tok, err := c.Auth().Token().CreateWithContext(ctx, &api.TokenCreateRequest{Policies: []string{adminPolicy}, TTL: "24h"})
	if err != nil {
		return a, fmt.Errorf("creating the admin token: %v", err)
	}
	adminToken := tok.Auth.ClientToken
	if err := os.WriteFile(filepath.Join(dir, "admin-token"), []byte(adminToken+"\n"), 0o600); err != nil {
		return a, err
	}
	cmd := exec.CommandContext(ctx, ctl, "domain", "create", domain, "-audience", audience,
		"-pseudonymize", clientPrinc, "-identify", clientPrinc, "-owners", ownerName)
	cmd.Env = append(withoutVaultEnv(), "VAULT_ADDR="+addr, "VAULT_TOKEN="+adminToken)
	if out, err := cmd.CombinedOutput(); err != nil {
		return a, fmt.Errorf("pseudoctl domain create: %v\n%s", err, out)
	}
	return a, nil
}

// appRole creates an AppRole role and writes its role_id and a secret_id
// to prefix-role-id and prefix-secret-id.
func appRole(ctx context.Context, c *api.Client, role, policy, prefix string) (string, error) {
	if _, err := c.Logical().WriteWithContext(ctx, "auth/approle/role/"+role, map[string]any{
		"token_policies": []string{policy}, "token_ttl": "1h", "token_max_ttl": "24h",
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
