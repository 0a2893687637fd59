//go:build unix

package cpuprofile

import (
	"crypto/sha256"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/ehealth-pseudo/pseudonymizer/internal/waitfor"
)

// TestOnSignal: with the variable set, SIGUSR1 starts a CPU profile
// into its file and SIGUSR2 writes it out.
func TestOnSignal(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cpu.pprof")
	t.Setenv(testEnv, path)
	stop := OnSignal(testEnv, nil, t.Logf)
	defer stop()

	if err := syscall.Kill(os.Getpid(), syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	waitfor.Cond(t, 10*time.Second, "the profile file", func() bool { _, err := os.Stat(path); return err == nil })
	sum := [32]byte{}
	for end := time.Now().Add(100 * time.Millisecond); time.Now().Before(end); {
		sum = sha256.Sum256(sum[:])
	}
	if err := syscall.Kill(os.Getpid(), syscall.SIGUSR2); err != nil {
		t.Fatal(err)
	}
	// A profile is gzipped protobuf: the gzip magic once it is written.
	waitfor.Cond(t, 10*time.Second, "the profile written", func() bool {
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
	t.Setenv(testEnv, "")
	OnSignal(testEnv, nil, t.Logf)()
	var warned []string
	t.Setenv(testEnv, "relative.pprof")
	OnSignal(testEnv, nil, func(msg string, _ ...any) { warned = append(warned, msg) })()
	if len(warned) != 1 {
		t.Fatalf("a relative path: warnings %q, want one", warned)
	}
}

const testEnv = "PSEUDONYMIZER_TEST_CPUPROFILE"

// TestCreateRefuses: a profile never goes through a symbolic link, into a
// file with other names, or into anything but a regular file; an existing
// file is emptied and made 0600.
func TestCreateRefuses(t *testing.T) {
	dir := t.TempDir()
	secret := filepath.Join(dir, "shares.json")
	if err := os.WriteFile(secret, []byte("k1"), 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link.pprof")
	if err := os.Symlink(secret, link); err != nil {
		t.Fatal(err)
	}
	hard := filepath.Join(dir, "hard.pprof")
	if err := os.Link(secret, hard); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{link, hard, dir} {
		if f, err := create(p); err == nil {
			f.Close()
			t.Errorf("%s: created", p)
		}
	}
	if b, err := os.ReadFile(secret); err != nil || string(b) != "k1" {
		t.Fatalf("the linked file: %q, %v", b, err)
	}
	old := filepath.Join(dir, "old.pprof")
	if err := os.WriteFile(old, []byte("old profile"), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := create(old)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	if st, err := os.Stat(old); err != nil || st.Size() != 0 || st.Mode().Perm() != 0o600 {
		t.Fatalf("an existing file: %v, %v; want empty, 0600", st, err)
	}
}
