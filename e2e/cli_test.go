package e2e

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ehealth-pseudo/pseudonymizer/internal/vaulttest"
)

// TestREADMELargeFile is the README's promise about files: a 20,000-line
// file sent by the built pseudo to the built server with its default
// settings (1000 items/s per principal, bursts of 2000, batches of 1000)
// completes, every line answered in order, because the batches refused for
// the rate limit are retried after the service's RetryInfo delay (about
// 18 s of waiting).
func TestREADMELargeFile(t *testing.T) {
	t.Parallel()
	root, err := vaulttest.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	pseudoBin := filepath.Join(t.TempDir(), "pseudo")
	build := exec.Command("go", "build", "-o", pseudoBin, "./cmd/pseudo")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/pseudo: %v\n%s", err, out)
	}
	srv := startServer(t, "pseudonymizer-defaults", cleanEnv(), "-dev", "-data-dir", t.TempDir())

	const lines = 20000
	in := filepath.Join(t.TempDir(), "niss.txt")
	var b strings.Builder
	for range lines {
		b.WriteString("85.07.30-033.28\n")
	}
	writeFile(t, in, b.String())

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, pseudoBin, "-addr", srv.addr, "-insecure", "-principal", "alice",
		"pseudonymize", "-domain", "demo_v1", "-in", in)
	cmd.Env = cleanEnv()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	start := time.Now()
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("pseudo: %v\n%s", err, stderr.Bytes())
	}
	got := strings.Split(strings.TrimRight(string(out), "\n"), "\n")
	if len(got) != lines {
		t.Fatalf("%d output lines for %d input lines", len(got), lines)
	}
	for i, l := range got {
		if strings.HasPrefix(l, "ERROR") || l == "" {
			t.Fatalf("line %d: %q", i+1, l)
		}
	}
	t.Logf("%d lines in %v with the default rate limit", lines, time.Since(start).Round(time.Second))
	_ = os.Remove(in)
}
