// Package vaulttest runs a real HashiCorp Vault server (dev mode) for tests.
//
// The binary is, in this order (see [Binary]): the one named by $VAULT_BIN
// (scripts/test.sh exports it), a vault on $PATH that runs and reports a
// version, or the one scripts/vault-bin.sh builds from Vault's Go module
// once and caches. That first build takes 5 to 20 minutes, more than go
// test's default 10-minute timeout: run the script before the tests (as CI
// should), or pass -timeout 40m; a test process that starts the build says
// so on stderr. Tests that use this package never skip: when Vault cannot
// be had they fail with the reason.
//
// A dev server keeps its data in memory: after [Server.Stop] and
// [Server.Restart] it is empty again (same address, same root token), and
// the test seeds it again.
//
// [StartCluster] runs a Vault HA cluster instead: three nodes with
// integrated storage (raft), each a [Server] that keeps its data across
// Stop and Restart.
package vaulttest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ehealth-pseudo/pseudonymizer/internal/syncbuf"
	"github.com/hashicorp/vault/api"
)

// Server is a running Vault dev server.
type Server struct {
	// Addr is the URL of the server, such as "http://127.0.0.1:43011".
	Addr string
	// RootToken is the root token, valid again after a restart.
	RootToken string
	// CACert is the PEM file of the CA of the server's certificate when the
	// server was started with TLS, and "" otherwise.
	CACert string

	bin    string
	listen string
	dir    string
	tls    bool
	// pluginDir is the server's plugin directory (-dev-plugin-dir), ""
	// for none; see WithPluginDir.
	pluginDir string
	// config is the server's configuration file for a node of a Cluster
	// (not dev mode), and cluster that cluster.
	config  string
	cluster *Cluster

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
	log    *syncbuf.Buffer
}

// Option changes how Start runs the server.
type Option func(*Server)

// WithTLS serves HTTPS with a certificate from a CA that the server makes,
// written to Server.CACert.
func WithTLS() Option { return func(s *Server) { s.tls = true } }

var (
	binOnce sync.Once
	binPath string
	binFrom string
	binErr  error
)

// Binary returns the path of the Vault binary: $VAULT_BIN when it is set
// (it must run and report a version, or the test fails), else a vault on
// $PATH that does, else the one scripts/vault-bin.sh builds once and caches
// (5 to 20 minutes the first time, announced on stderr). The choice is made
// once per test process.
func Binary(t testing.TB) string {
	t.Helper()
	binOnce.Do(func() {
		binPath, binFrom, binErr = LookupBinary()
		if binErr == nil && binPath == "" {
			binPath, binErr = buildBinary(os.Stderr)
			binFrom = "scripts/vault-bin.sh"
		}
	})
	if binErr != nil {
		t.Fatalf("vaulttest: no Vault binary: %v", binErr)
	}
	t.Logf("vaulttest: Vault %s (from %s)", binPath, binFrom)
	return binPath
}

// LookupBinary finds an existing Vault binary without building one: the
// path in the environment variable VAULT_BIN when it is set, which must
// run and report a version (an error otherwise: a VAULT_BIN that does not
// work is a mistake to report, not to work around), else "vault" on PATH
// when it runs and reports a version. from names where the binary was
// found. It returns "" and no error when there is neither: Binary then
// builds one with scripts/vault-bin.sh.
func LookupBinary() (path, from string, err error) {
	if bin := os.Getenv("VAULT_BIN"); bin != "" {
		if err := checkVersion(bin); err != nil {
			return "", "", fmt.Errorf("VAULT_BIN=%s is not a working Vault binary (%v): fix it, or unset it to use a vault on PATH or build one with scripts/vault-bin.sh", bin, err)
		}
		return bin, "VAULT_BIN", nil
	}
	if bin, err := exec.LookPath("vault"); err == nil && checkVersion(bin) == nil {
		return bin, "PATH", nil
	}
	return "", "", nil
}

// checkVersion runs "bin version" and wants Vault's answer, "Vault v…".
func checkVersion(bin string) error {
	if _, err := os.Stat(bin); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "version").CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s version: %v: %s", bin, err, tail(strings.TrimSpace(string(out)), 200))
	}
	if !strings.HasPrefix(string(out), "Vault v") {
		return fmt.Errorf("%s version printed %q, not \"Vault v…\"", bin, tail(strings.TrimSpace(string(out)), 200))
	}
	return nil
}

// buildBinary gets the binary from scripts/vault-bin.sh: the cached one if
// there is one, else one it builds, after telling w (stderr) why the tests
// wait.
func buildBinary(w io.Writer) (string, error) {
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	if bin, err := vaultBinScript(ctx, root, "--cached"); err == nil {
		return bin, nil
	}
	fmt.Fprintln(w, "vaulttest: no VAULT_BIN and no working vault on PATH: building Vault once with scripts/vault-bin.sh "+
		"(5-10 minutes; later runs reuse .cache/vault/). To skip this, set VAULT_BIN to a Vault binary or put vault on PATH; "+
		"if go test times out meanwhile, run scripts/vault-bin.sh first or pass -timeout 40m.")
	return vaultBinScript(ctx, root)
}

// vaultBinScript runs scripts/vault-bin.sh and returns the path it prints.
func vaultBinScript(ctx context.Context, root string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "bash", append([]string{filepath.Join(root, "scripts", "vault-bin.sh")}, args...)...)
	cmd.Dir = root
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("scripts/vault-bin.sh: %v\n%s", err, tail(stderr.String(), 3000))
	}
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	bin := strings.TrimSpace(lines[len(lines)-1])
	if _, err := os.Stat(bin); err != nil {
		return "", fmt.Errorf("scripts/vault-bin.sh printed %q: %v", bin, err)
	}
	return bin, nil
}

// RepoRoot walks up from the working directory to the directory of go.mod:
// the root of the checkout, for tests that run its scripts or build it.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory")
		}
		dir = parent
	}
}

// Start starts a Vault dev server on a free loopback port and stops it when
// the test ends. It fails the test (never skips) if Vault cannot be started.
func Start(t testing.TB, opts ...Option) *Server {
	t.Helper()
	s := &Server{bin: Binary(t), dir: t.TempDir()}
	for _, o := range opts {
		o(s)
	}
	var tok [16]byte
	_, _ = rand.Read(tok[:])
	s.RootToken = "root-" + hex.EncodeToString(tok[:])
	var err error
	for try := 0; try < 3; try++ {
		var port int
		if port, err = freePort(); err != nil {
			continue
		}
		s.listen = fmt.Sprintf("127.0.0.1:%d", port)
		scheme := "http"
		if s.tls {
			scheme = "https"
			s.CACert = filepath.Join(s.dir, "tls", "vault-ca.pem")
		}
		s.Addr = scheme + "://" + s.listen
		if err = s.start(); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatalf("vaulttest: starting Vault: %v", err)
	}
	t.Cleanup(func() { s.stop() })
	return s
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// start runs the server and waits until it answers: a dev server as the
// active node, a cluster node unsealed (once the cluster is initialized).
func (s *Server) start() error {
	home := filepath.Join(s.dir, "home")
	if err := os.MkdirAll(home, 0o700); err != nil {
		return err
	}
	args := []string{"server", "-dev",
		"-dev-root-token-id=" + s.RootToken,
		"-dev-listen-address=" + s.listen,
		"-dev-no-store-token",
		"-log-level=warn",
	}
	if s.config != "" {
		args = []string{"server", "-config=" + s.config, "-log-level=warn"}
	}
	if s.pluginDir != "" && s.config == "" {
		if err := os.MkdirAll(s.pluginDir, 0o700); err != nil {
			return err
		}
		args = append(args, "-dev-plugin-dir="+s.pluginDir)
	}
	if s.tls {
		certDir := filepath.Join(s.dir, "tls")
		if err := os.MkdirAll(certDir, 0o700); err != nil {
			return err
		}
		args = append(args, "-dev-tls", "-dev-tls-cert-dir="+certDir)
	}
	cmd := exec.Command(s.bin, args...)
	cmd.Env = []string{"HOME=" + home, "PATH=" + os.Getenv("PATH"), "TMPDIR=" + s.dir}
	log := &syncbuf.Buffer{}
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	s.mu.Lock()
	s.cmd, s.exited, s.log = cmd, exited, log
	s.mu.Unlock()

	hc, err := s.httpClient(exited)
	if err != nil {
		s.stop()
		return err
	}
	if s.cluster == nil {
		// A dev server is ready once it is the active node.
		return s.waitHealth(hc, exited, "become active", func(code int) bool { return code == http.StatusOK })
	}
	// A cluster node answers sealed (or uninitialized) first.
	if err := s.waitHealth(hc, exited, "answer", func(int) bool { return true }); err != nil {
		return err
	}
	if key := s.cluster.key(); key != "" {
		return s.unseal(hc, exited, key)
	}
	return nil
}

// waitHealth polls sys/health until ok accepts its status code; after 60 s
// it stops the server and fails.
func (s *Server) waitHealth(hc *http.Client, exited <-chan struct{}, what string, ok func(code int) bool) error {
	deadline := time.Now().Add(60 * time.Second)
	for {
		select {
		case <-exited:
			return fmt.Errorf("vault exited: %s", tail(s.logs(), 3000))
		default:
		}
		resp, err := hc.Get(s.Addr + "/v1/sys/health")
		code := 0
		if err == nil {
			resp.Body.Close()
			code = resp.StatusCode
			if ok(code) {
				return nil
			}
		}
		if time.Now().After(deadline) {
			s.stop()
			return fmt.Errorf("vault did not %s within 60s: status %d, %v\n%s", what, code, err, tail(s.logs(), 3000))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (s *Server) httpClient(exited <-chan struct{}) (*http.Client, error) {
	cfg := api.DefaultConfig()
	if s.tls {
		// The CA file appears once the server has started.
		deadline := time.Now().Add(60 * time.Second)
		for {
			if _, err := os.Stat(s.CACert); err == nil {
				break
			}
			select {
			case <-exited:
				return nil, fmt.Errorf("vault exited: %s", tail(s.logs(), 3000))
			default:
			}
			if time.Now().After(deadline) {
				return nil, fmt.Errorf("vault wrote no CA certificate: %s", tail(s.logs(), 3000))
			}
			time.Sleep(50 * time.Millisecond)
		}
		time.Sleep(100 * time.Millisecond) // let the server finish writing it
		if err := cfg.ConfigureTLS(&api.TLSConfig{CACert: s.CACert}); err != nil {
			return nil, err
		}
	}
	hc := cfg.HttpClient
	hc.Timeout = 2 * time.Second
	return hc, nil
}

func (s *Server) logs() string {
	s.mu.Lock()
	log := s.log
	s.mu.Unlock()
	if log == nil {
		return ""
	}
	return log.String()
}

// stop stops the server process and waits for it.
func (s *Server) stop() {
	s.mu.Lock()
	cmd, exited := s.cmd, s.exited
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-exited
	}
}

// Pid is the process ID of the running server, 0 when it is not running.
func (s *Server) Pid() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil || s.cmd.Process == nil {
		return 0
	}
	return s.cmd.Process.Pid
}

// Stop stops the server (to simulate an outage). The address stays
// reserved for Restart.
func (s *Server) Stop(t testing.TB) {
	t.Helper()
	s.stop()
}

// Restart starts the server again on the same address with the same root
// token. The storage of a dev server is empty: seed it again. A node of a
// Cluster keeps its data; Restart unseals it and waits until it is back in
// the cluster (standby or active).
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	s.stop()
	var err error
	for try := 0; try < 20; try++ {
		if err = s.start(); err == nil {
			return
		}
		time.Sleep(250 * time.Millisecond) // the port may still be held
	}
	t.Fatalf("vaulttest: restarting Vault: %v", err)
}

// Client returns a client of the server with the root token, without
// retries (see ClientWithToken).
func (s *Server) Client(t testing.TB) *api.Client {
	t.Helper()
	return s.ClientWithToken(t, s.RootToken)
}

// ClientWithToken returns a client of the server that uses token, without
// retries; for a node of a Cluster, with the Vault client's default
// retries of network errors and 5xx answers, since a raft cluster on a
// loaded machine may be without a leader for a moment.
func (s *Server) ClientWithToken(t testing.TB, token string) *api.Client {
	t.Helper()
	c, err := s.apiClient(token)
	if err != nil {
		t.Fatalf("vaulttest: %v", err)
	}
	if s.cluster != nil {
		c.SetMaxRetries(2) // the Vault client's default
	}
	return c
}

func (s *Server) apiClient(token string) (*api.Client, error) {
	cfg := api.DefaultConfig()
	cfg.Address = s.Addr
	cfg.MaxRetries = 0
	cfg.Timeout = 10 * time.Second
	if s.CACert != "" {
		if err := cfg.ConfigureTLS(&api.TLSConfig{CACert: s.CACert}); err != nil {
			return nil, err
		}
	}
	c, err := api.NewClient(cfg)
	if err != nil {
		return nil, err
	}
	c.SetToken(token)
	return c, nil
}

// EnableKV mounts a KV version 2 secrets engine at path.
func (s *Server) EnableKV(t testing.TB, path string) {
	t.Helper()
	err := s.Client(t).Sys().Mount(path, &api.MountInput{Type: "kv", Options: map[string]string{"version": "2"}})
	if err != nil {
		t.Fatalf("vaulttest: mounting KV v2 at %s: %v", path, err)
	}
	// A new KV v2 mount upgrades itself in the background; wait for it.
	c := s.Client(t)
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := c.Logical().List(path + "/metadata/")
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("vaulttest: KV v2 at %s not ready: %v", path, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// WritePolicy writes an ACL policy.
func (s *Server) WritePolicy(t testing.TB, name, hcl string) {
	t.Helper()
	if err := s.Client(t).Sys().PutPolicy(name, hcl); err != nil {
		t.Fatalf("vaulttest: writing policy %s: %v", name, err)
	}
}

// Token creates a token with the given policies (and not the default
// policy's ability to create children), valid for an hour.
func (s *Server) Token(t testing.TB, policies ...string) string {
	t.Helper()
	return s.token(t, false, policies)
}

// TokenOnly is Token without Vault's default policy: the policies given
// are all the token has (as the service's AppRole is deployed).
func (s *Server) TokenOnly(t testing.TB, policies ...string) string {
	t.Helper()
	return s.token(t, true, policies)
}

func (s *Server) token(t testing.TB, noDefault bool, policies []string) string {
	t.Helper()
	sec, err := s.Client(t).Auth().Token().Create(&api.TokenCreateRequest{
		Policies:        policies,
		NoDefaultPolicy: noDefault,
		TTL:             "1h",
	})
	if err != nil {
		t.Fatalf("vaulttest: creating a token: %v", err)
	}
	return sec.Auth.ClientToken
}

// EnableAppRole enables the AppRole auth method at "approle" (once).
func (s *Server) EnableAppRole(t testing.TB) {
	t.Helper()
	c := s.Client(t)
	auths, err := c.Sys().ListAuth()
	if err != nil {
		t.Fatalf("vaulttest: listing auth methods: %v", err)
	}
	if _, ok := auths["approle/"]; ok {
		return
	}
	if err := c.Sys().EnableAuthWithOptions("approle", &api.EnableAuthOptions{Type: "approle"}); err != nil {
		t.Fatalf("vaulttest: enabling AppRole: %v", err)
	}
}

// AppRole enables AppRole if needed, creates the role with the given
// policies (and Vault's default policy) and token TTLs (zero: Vault's
// defaults), and returns its role_id and a new secret_id.
func (s *Server) AppRole(t testing.TB, role string, ttl, maxTTL time.Duration, policies ...string) (roleID, secretID string) {
	t.Helper()
	return s.appRole(t, role, ttl, maxTTL, false, policies)
}

// AppRoleOnly is AppRole without Vault's default policy, as the project's
// documentation deploys the service's role: the tests that use it show
// that the policies given suffice.
func (s *Server) AppRoleOnly(t testing.TB, role string, ttl, maxTTL time.Duration, policies ...string) (roleID, secretID string) {
	t.Helper()
	return s.appRole(t, role, ttl, maxTTL, true, policies)
}

func (s *Server) appRole(t testing.TB, role string, ttl, maxTTL time.Duration, noDefault bool, policies []string) (roleID, secretID string) {
	t.Helper()
	s.EnableAppRole(t)
	c := s.Client(t)
	params := map[string]any{"token_policies": policies, "token_no_default_policy": noDefault}
	if ttl > 0 {
		params["token_ttl"] = int(ttl / time.Second)
	}
	if maxTTL > 0 {
		params["token_max_ttl"] = int(maxTTL / time.Second)
	}
	if _, err := c.Logical().Write("auth/approle/role/"+role, params); err != nil {
		t.Fatalf("vaulttest: creating AppRole role %s: %v", role, err)
	}
	sec, err := c.Logical().Read("auth/approle/role/" + role + "/role-id")
	if err != nil || sec == nil {
		t.Fatalf("vaulttest: reading the role_id of %s: %v", role, err)
	}
	roleID, _ = sec.Data["role_id"].(string)
	sec, err = c.Logical().Write("auth/approle/role/"+role+"/secret-id", nil)
	if err != nil || sec == nil {
		t.Fatalf("vaulttest: creating a secret_id for %s: %v", role, err)
	}
	secretID, _ = sec.Data["secret_id"].(string)
	return roleID, secretID
}

func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}
