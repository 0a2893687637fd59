package vaulttest_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ehealth-pseudo/pseudonymizer/internal/vaulttest"
)

func TestServer(t *testing.T) {
	srv := vaulttest.Start(t)
	srv.EnableKV(t, "kv")
	c := srv.Client(t)
	if _, err := c.KVv2("kv").Put(t.Context(), "a", map[string]any{"x": "1"}); err != nil {
		t.Fatal(err)
	}
	srv.WritePolicy(t, "p", `path "kv/data/a" { capabilities = ["read"] }`)
	roleID, secretID := srv.AppRole(t, "r", time.Minute, time.Hour, "p")
	sec, err := c.Logical().Write("auth/approle/login", map[string]any{"role_id": roleID, "secret_id": secretID})
	if err != nil || sec.Auth == nil {
		t.Fatalf("AppRole login: %v", err)
	}
	if _, err := srv.ClientWithToken(t, sec.Auth.ClientToken).KVv2("kv").Get(t.Context(), "a"); err != nil {
		t.Fatal(err)
	}

	addr := srv.Addr
	srv.Stop(t)
	if _, err := c.Sys().Health(); err == nil {
		t.Fatal("Vault answers after Stop")
	}
	srv.Restart(t)
	if srv.Addr != addr {
		t.Fatalf("address changed: %s -> %s", addr, srv.Addr)
	}
	// Same root token, empty storage.
	mounts, err := c.Sys().ListMounts()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := mounts["kv/"]; ok {
		t.Fatal("a restarted dev server kept its mounts")
	}
}

// fakeVault writes an executable named vault into a new directory that
// prints out when asked for its version (and fails with status 1 when
// out is ""), and returns its path. It is a POSIX shell script: the
// project runs on Linux (a platform without /bin/sh fails here, loudly).
func fakeVault(t *testing.T, out string) string {
	t.Helper()
	script := "#!/bin/sh\nexit 1\n"
	if out != "" {
		script = "#!/bin/sh\n[ \"$1\" = version ] && echo '" + out + "' && exit 0\nexit 1\n"
	}
	path := filepath.Join(t.TempDir(), "vault")
	if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestLookupBinary covers the choice of the binary: VAULT_BIN first (an
// error when it does not work), then a working vault on PATH, else nothing
// (Binary then builds one with scripts/vault-bin.sh).
func TestLookupBinary(t *testing.T) {
	good := fakeVault(t, "Vault v1.21.0 (fake), built 2025-01-01T00:00:00Z")
	onPath := fakeVault(t, "Vault v1.20.0 (fake)")
	broken := fakeVault(t, "")
	notVault := fakeVault(t, "something else 1.0")
	empty := t.TempDir()

	type testCase struct {
		name, vaultBin, path string
		want, from, err      string
	}
	var cases []testCase
	if real := os.Getenv("VAULT_BIN"); real != "" { // scripts/test.sh exports the real one
		cases = append(cases, testCase{name: "real VAULT_BIN", vaultBin: real, path: empty, want: real, from: "VAULT_BIN"})
	}
	for _, c := range append(cases, []testCase{
		{name: "VAULT_BIN", vaultBin: good, path: empty, want: good, from: "VAULT_BIN"},
		{name: "VAULT_BIN before PATH", vaultBin: good, path: filepath.Dir(onPath), want: good, from: "VAULT_BIN"},
		{name: "VAULT_BIN missing", vaultBin: filepath.Join(empty, "nope"), path: filepath.Dir(onPath),
			err: "VAULT_BIN=" + filepath.Join(empty, "nope") + " is not a working Vault binary"},
		{name: "VAULT_BIN fails", vaultBin: broken, path: filepath.Dir(onPath), err: "VAULT_BIN=" + broken + " is not a working Vault binary"},
		{name: "VAULT_BIN not Vault", vaultBin: notVault, path: empty, err: `not "Vault v…"`},
		{name: "PATH", path: empty + string(os.PathListSeparator) + filepath.Dir(onPath), want: onPath, from: "PATH"},
		{name: "PATH vault fails", path: filepath.Dir(broken)},
		{name: "PATH vault is not Vault", path: filepath.Dir(notVault)},
		{name: "neither", path: empty},
	}...) {
		t.Run(c.name, func(t *testing.T) {
			t.Setenv("VAULT_BIN", c.vaultBin)
			t.Setenv("PATH", c.path)
			got, from, err := vaulttest.LookupBinary()
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("LookupBinary() = %q, %q, %v; want an error containing %q", got, from, err, c.err)
				}
				return
			}
			if err != nil || got != c.want || from != c.from {
				t.Fatalf("LookupBinary() = %q, %q, %v; want %q, %q", got, from, err, c.want, c.from)
			}
		})
	}
}
