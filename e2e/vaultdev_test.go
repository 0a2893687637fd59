package e2e

import (
	"context"
	"encoding/json"
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
// command line it prints and its pseudo round trips (pseudonymize, then
// identify) in both demo domains, the one with a whole key and the split
// one (k₂ in the key-share plugin the script registered and mounted),
// checks with the printed pseudoctl set-up that the latter is split, and
// stops it as Ctrl-C does: Vault stops with it.
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

	// The demo domains: a whole key, and split.
	domains := []string{"prescriptions_v1", "therlink_v1"}
	var serverLine, ctlLine string
	pseudonymizeLines, identifyLines := map[string]string{}, map[string]string{}
	for _, l := range strings.Split(string(script.stdout.Bytes()), "\n") {
		l = strings.TrimSpace(l)
		switch {
		case strings.HasPrefix(l, "pseudonymizer "):
			serverLine = l
		case strings.HasPrefix(l, "export VAULT_ADDR="):
			ctlLine = l
		case strings.HasPrefix(l, "pseudo "):
			for _, d := range domains {
				switch {
				case strings.Contains(l, " identify -domain "+d+" "):
					identifyLines[d] = l
				case strings.Contains(l, " pseudonymize -domain "+d+" "):
					pseudonymizeLines[d] = l
				}
			}
		}
	}
	if serverLine == "" || ctlLine == "" || len(pseudonymizeLines) != len(domains) || len(identifyLines) != len(domains) {
		t.Fatalf("vault-dev.sh did not print the command lines (service, pseudoctl set-up, a round trip per domain):\n%s", script.stdout.Bytes())
	}
	for _, want := range []string{"-tls-client-ca ", "-vault-addr http://127.0.0.1:", "-vault-role-id ", "-vault-secret-id-file ", "-health-listen 127.0.0.1:"} {
		if !strings.Contains(serverLine, want) {
			t.Errorf("pseudonymizer line lacks %q: %s", want, serverLine)
		}
	}
	for _, f := range []string{"ca.crt", "server.crt", "server.key", "client.crt", "client.key",
		"service-role-id", "service-secret-id", "owner-role-id", "owner-secret-id", "admin-token", "migrate-token",
		"audit.log", "plugins/pseudonymizer-vault-plugin"} {
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
	for _, d := range domains {
		tr := shell(pseudonymizeLines[d])
		if _, err := pseudonym.ParseTransit(tr); err != nil {
			t.Fatalf("%s: pseudonymize printed %q: %v", d, tr, err)
		}
		if got := shell(identifyLines[d]); got != "85.07.30-033.28" {
			t.Fatalf("%s: the identify round trip printed %q, want the demo NISS back", d, got)
		}
	}
	// pseudoctl with the printed set-up: the second domain is split, its
	// shares at generation 1 in the service's KV and in the plugin.
	var show struct {
		Mode   string `json:"mode"`
		Shares struct {
			Service uint64 `json:"service_generation"`
			Plugin  uint64 `json:"plugin_generation"`
		} `json:"shares"`
	}
	if err := json.Unmarshal([]byte(shell(ctlLine+"; pseudoctl domain show -json therlink_v1")), &show); err != nil {
		t.Fatalf("pseudoctl domain show -json: %v", err)
	}
	if show.Mode != "split" || show.Shares.Service != 1 || show.Shares.Plugin != 1 {
		t.Fatalf("therlink_v1: mode %q, share generations %+v; want split, 1 and 1", show.Mode, show.Shares)
	}

	srv.stop()
	interrupt()
	if !strings.Contains(string(script.stderr.Bytes()), "Vault stopped") {
		t.Errorf("vault-dev.sh did not stop Vault on SIGINT:\n%s", script.stderr.Bytes())
	}
}
