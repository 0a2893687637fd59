package e2e

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ehealth-pseudo/pseudonymizer/internal/vaulttest"
)

// Paths of the binaries TestMain builds from this checkout.
var (
	serverBin string // cmd/pseudonymizer
	ctlBin    string // cmd/pseudoctl
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "pseudonymizer-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		os.Exit(1)
	}
	if err := build(dir); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: building the binaries:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// build compiles the server and the admin CLI into dir, as users do.
func build(dir string) error {
	root, err := vaulttest.RepoRoot()
	if err != nil {
		return err
	}
	serverBin = filepath.Join(dir, "pseudonymizer")
	ctlBin = filepath.Join(dir, "pseudoctl")
	for bin, pkg := range map[string]string{serverBin: "./cmd/pseudonymizer", ctlBin: "./cmd/pseudoctl"} {
		cmd := exec.Command("go", "build", "-o", bin, pkg)
		cmd.Dir = root
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("go build %s: %v\n%s", pkg, err, stderr.String())
		}
	}
	return nil
}

// cleanEnv is the environment of the child processes: the test's, without
// the variables that would change what the binaries do behind the test's
// back.
func cleanEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "VAULT_") || strings.HasPrefix(kv, "PSEUDONYMIZER_") || strings.HasPrefix(kv, "OTEL_") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, extra...)
}
