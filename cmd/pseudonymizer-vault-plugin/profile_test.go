//go:build unix

package main

import (
	"crypto/sha256"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
)

// TestProfileOnSignal: with the variable set, SIGUSR1 starts a CPU profile
// into its file and SIGUSR2 writes it out.
func TestProfileOnSignal(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cpu.pprof")
	t.Setenv(profileEnv, path)
	stop := profileOnSignal(hclog.NewNullLogger())
	defer stop()

	if err := syscall.Kill(os.Getpid(), syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { _, err := os.Stat(path); return err == nil })
	sum := [32]byte{}
	for end := time.Now().Add(100 * time.Millisecond); time.Now().Before(end); {
		sum = sha256.Sum256(sum[:])
	}
	if err := syscall.Kill(os.Getpid(), syscall.SIGUSR2); err != nil {
		t.Fatal(err)
	}
	// A profile is gzipped protobuf: the gzip magic once it is written.
	waitFor(t, func() bool {
		b, err := os.ReadFile(path)
		return err == nil && len(b) > 2 && b[0] == 0x1f && b[1] == 0x8b
	})
	if st, err := os.Stat(path); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("profile file: %v, %v; want mode 0600", st, err)
	}
}

// TestProfileOffByDefault: without the variable, or with a relative path,
// nothing is installed and the stop function does nothing.
func TestProfileOffByDefault(t *testing.T) {
	t.Setenv(profileEnv, "")
	profileOnSignal(hclog.NewNullLogger())()
	t.Setenv(profileEnv, "relative.pprof")
	profileOnSignal(hclog.NewNullLogger())()
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatal("timed out")
}
