package auth

import (
	"crypto/tls"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ehealth-pseudo/pseudonymizer/internal/testpki"
)

func TestTLSReload(t *testing.T) {
	dir := t.TempDir()
	ca := testpki.NewCA(t, "reload CA")
	certA, keyA := testpki.WriteFiles(t, dir, "a", ca.Server(t))
	certB, keyB := testpki.WriteFiles(t, dir, "b", ca.Server(t))
	cert, key := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	install := func(c, k string, at time.Time) {
		t.Helper()
		for src, dst := range map[string]string{c: cert, k: key} {
			b, err := os.ReadFile(src)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(dst, b, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Chtimes(dst, at, at); err != nil {
				t.Fatal(err)
			}
		}
	}
	leaf := func(cfg *tls.Config) string { return string(cfg.Certificates[0].Certificate[0]) }
	t0 := time.Now()
	install(certA, keyA, t0)
	r := &tlsReloader{files: TLSFiles{Cert: cert, Key: key, ClientCA: ca.WriteCA(t, dir)}}
	first, err := r.get(t0)
	if err != nil {
		t.Fatal(err)
	}
	if first.ClientAuth != tls.RequireAndVerifyClientCert || first.NextProtos[0] != "h2" {
		t.Fatalf("config %+v", first)
	}
	// Renewed on disk: within a second the old one is still served, then
	// the new one.
	install(certB, keyB, t0.Add(time.Minute))
	if got, _ := r.get(t0.Add(500 * time.Millisecond)); leaf(got) != leaf(first) {
		t.Fatal("reloaded within the check interval")
	}
	second, _ := r.get(t0.Add(2 * time.Second))
	if leaf(second) == leaf(first) {
		t.Fatal("the renewed certificate was not loaded")
	}
	// A half-written file keeps the last good configuration.
	if err := os.WriteFile(cert, []byte("-----BEGIN CERT"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got, err := r.get(t0.Add(4 * time.Second)); err != nil || leaf(got) != leaf(second) {
		t.Fatalf("broken file: %v", err)
	}
	// ServerTLSConfig itself refuses files that do not load.
	if _, err := ServerTLSConfig(TLSFiles{Cert: cert, Key: key}); err == nil {
		t.Fatal("a broken certificate was accepted at start")
	}
}
