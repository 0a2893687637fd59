package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ehealth-pseudo/pseudonymizer/internal/vaulttest"
	"github.com/ehealth-pseudo/pseudonymizer/pseudonym"
)

// TestVaultDevScript runs scripts/vault-dev.sh as the README says (the
// binaries of ./cmd/... on PATH), then runs exactly the pseudonymizer
// command line it prints and its pseudo round trip (pseudonymize, then
// identify), and stops it as Ctrl-C does: Vault stops with it.
func TestVaultDevScript(t *testing.T) {
	root, err := vaulttest.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	bin := t.TempDir()
	build := exec.Command("go", "build", "-o", filepath.Join(bin, "pseudo"), "./cmd/pseudo")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/pseudo: %v\n%s", err, out)
	}
	// pseudonymizer and pseudoctl as TestMain built them, pseudo as above.
	env := cleanEnv("VAULT_BIN="+vaulttest.Binary(t),
		"PATH="+bin+string(os.PathListSeparator)+filepath.Dir(serverBin)+string(os.PathListSeparator)+os.Getenv("PATH"))
	dir := filepath.Join(t.TempDir(), "vault-dev")

	script := startProc(t, "vault-dev.sh", filepath.Join(root, "scripts", "vault-dev.sh"), env, dir)
	// Ctrl-C: SIGINT to the script's process group (registered after
	// startProc, so it runs before its SIGTERM/SIGKILL clean-up).
	stopped := false
	interrupt := func() {
		if stopped {
			return
		}
		stopped = true
		_ = syscall.Kill(-script.cmd.Process.Pid, syscall.SIGINT)
		select {
		case <-script.exited:
		case <-time.After(30 * time.Second):
			t.Errorf("vault-dev.sh still running 30 s after SIGINT")
		}
	}
	t.Cleanup(interrupt)
	script.wait(t, script.stdout, "stdout", regexp.MustCompile(`(?m)^vault-dev: ready`), 3*time.Minute)

	var serverLine, pseudonymizeLine, identifyLine string
	for _, l := range strings.Split(string(script.stdout.Bytes()), "\n") {
		l = strings.TrimSpace(l)
		switch {
		case strings.HasPrefix(l, "pseudonymizer "):
			serverLine = l
		case strings.HasPrefix(l, "pseudo ") && strings.Contains(l, " identify "):
			identifyLine = l
		case strings.HasPrefix(l, "pseudo ") && strings.Contains(l, " pseudonymize "):
			pseudonymizeLine = l
		}
	}
	if serverLine == "" || pseudonymizeLine == "" || identifyLine == "" {
		t.Fatalf("vault-dev.sh did not print the three command lines:\n%s", script.stdout.Bytes())
	}
	for _, want := range []string{"-tls-client-ca ", "-vault-addr http://127.0.0.1:", "-vault-role-id ", "-vault-secret-id-file ", "-health-listen 127.0.0.1:"} {
		if !strings.Contains(serverLine, want) {
			t.Errorf("pseudonymizer line lacks %q: %s", want, serverLine)
		}
	}
	for _, f := range []string{"ca.crt", "server.crt", "server.key", "client.crt", "client.key",
		"service-role-id", "service-secret-id", "owner-role-id", "owner-secret-id"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("vault-dev.sh did not write %s: %v", f, err)
		}
	}

	srv := startProc(t, "pseudonymizer", "bash", env, "-c", "exec "+serverLine)
	srv.waitLog(t, servingRe, time.Minute)

	shell := func(line string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "bash", "-c", line)
		cmd.Env = env
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("%s: %v\n%s", line, err, stderr.String())
		}
		return strings.TrimSpace(string(out))
	}
	tr := shell(pseudonymizeLine)
	if _, err := pseudonym.ParseTransit(tr); err != nil {
		t.Fatalf("pseudonymize printed %q: %v", tr, err)
	}
	if got := shell(identifyLine); got != "85.07.30-033.28" {
		t.Fatalf("the identify round trip printed %q, want the demo NISS back", got)
	}

	srv.stop()
	interrupt()
	if !strings.Contains(string(script.stderr.Bytes()), "Vault stopped") {
		t.Errorf("vault-dev.sh did not stop Vault on SIGINT:\n%s", script.stderr.Bytes())
	}
}
