package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ehealth-pseudo/pseudonymizer/internal/vaulttest"
	"github.com/ehealth-pseudo/pseudonymizer/keys"
	"github.com/ehealth-pseudo/pseudonymizer/keys/vault"
	"github.com/ehealth-pseudo/pseudonymizer/vault/policies"
)

type result struct {
	code           int
	stdout, stderr string
}

func pseudoctl(t *testing.T, env map[string]string, args ...string) result {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), args, &stdout, &stderr, func(k string) string { return env[k] })
	return result{code, stdout.String(), stderr.String()}
}

// ok runs pseudoctl and wants exit status 0.
func ok(t *testing.T, env map[string]string, args ...string) string {
	t.Helper()
	r := pseudoctl(t, env, args...)
	if r.code != 0 {
		t.Fatalf("pseudoctl %s: exit %d\n%s%s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	return r.stdout
}

// fails runs pseudoctl and wants exit status code and stderr containing
// want.
func fails(t *testing.T, env map[string]string, code int, want string, args ...string) {
	t.Helper()
	r := pseudoctl(t, env, args...)
	if r.code != code || !strings.Contains(r.stderr, want) {
		t.Fatalf("pseudoctl %s: exit %d, stderr %q; want exit %d and %q", strings.Join(args, " "), r.code, r.stderr, code, want)
	}
}

// script runs the administration scenario with the store flags given.
func script(t *testing.T, env map[string]string, store ...string) {
	t.Helper()
	with := func(args ...string) []string { return append(append([]string{}, store...), args...) }
	out := ok(t, env, with("domain", "create", "prescriptions_v1",
		"-audience", "urn:ehealth:pseudo:prescriptions:v1", "-ttl", "10m",
		"-pseudonymize", "prescriber,pharmacy", "-identify", "pharmacy", "-owners", "recip-e")...)
	if !strings.Contains(out, "created domain prescriptions_v1") {
		t.Fatalf("create: %s", out)
	}
	fails(t, env, 1, "already exists", with("domain", "create", "prescriptions_v1", "-audience", "urn:x")...)
	// Flags after the command and its arguments work too.
	ok(t, env, append([]string{"domain", "create", "other_v1", "-audience", "urn:other:v1",
		"-convert", "prescriptions_v1=recip-e,therlink", "-convert", "prescriptions_v1=audit"}, store...)...)
	if out := ok(t, env, with("domain", "show", "other_v1")...); !strings.Contains(out, "convert to prescriptions_v1: recip-e, therlink, audit") {
		t.Fatalf("-convert: %s", out)
	}
	fails(t, env, 2, "target=", with("domain", "create", "x_v1", "-audience", "urn:x", "-convert", "nope")...)

	if out := ok(t, env, with("domain", "list")...); out != "other_v1\nprescriptions_v1\n" {
		t.Fatalf("list: %q", out)
	}
	if out := ok(t, env, with("transit-key", "rotate", "prescriptions_v1")...); !strings.Contains(out, "transit key t2 is active") {
		t.Fatalf("rotate: %s", out)
	}
	fails(t, env, 1, "cannot retire the active transit key", with("transit-key", "retire", "prescriptions_v1", "t2")...)
	fails(t, env, 1, "unknown key", with("transit-key", "retire", "prescriptions_v1", "t9")...)
	ok(t, env, with("transit-key", "retire", "prescriptions_v1", "t1")...)
	ok(t, env, with("domain", "new-version", "prescriptions_v1", "prescriptions_v2")...)
	ok(t, env, with("owner-key", "create", "recip-e", "prescriptions_v2")...)
	fails(t, env, 1, "already exists", with("owner-key", "create", "recip-e", "prescriptions_v2")...)
	fails(t, env, 1, "unknown domain", with("domain", "show", "nope")...)

	out = ok(t, env, with("domain", "show", "prescriptions_v1")...)
	for _, want := range []string{"audience:      urn:ehealth:pseudo:prescriptions:v1", "ttl:           10m0s",
		"transit keys:  t2 (active t2)", "owners:        recip-e", "convert to prescriptions_v2: recip-e"} {
		if !strings.Contains(out, want) {
			t.Fatalf("show: no %q in\n%s", want, out)
		}
	}
	var info domainInfo
	out = ok(t, env, with("domain", "show", "-json", "prescriptions_v2")...)
	if err := json.Unmarshal([]byte(out), &info); err != nil {
		t.Fatal(err)
	}
	if info.Active != "t1" || info.TTL != "10m0s" || len(info.Policy.Owners) != 1 {
		t.Fatalf("show -json: %s", out)
	}
}

// assertNoKeys checks that nothing pseudoctl printed holds a key of d.
func assertNoKeys(t *testing.T, out string, d *keys.Domain) {
	t.Helper()
	for _, k := range append([]keys.Secret{d.Scalar}, d.Transit.Keys["t1"], d.Transit.Keys["t2"]) {
		if len(k) > 0 && strings.Contains(out, base64.StdEncoding.EncodeToString(k)) {
			t.Fatal("pseudoctl printed key material")
		}
	}
}

func TestFileStore(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keys.json")
	store := "file:" + path
	fails(t, nil, 1, "no such file", "-store", store, "domain", "list")
	script(t, nil, "-store", store)
	fs, err := keys.OpenFileStore(path, false)
	if err != nil {
		t.Fatal(err)
	}
	d, err := fs.Domain(context.Background(), "prescriptions_v1")
	if err != nil {
		t.Fatal(err)
	}
	out := ok(t, nil, "-store", store, "domain", "show", "-json", "prescriptions_v1")
	assertNoKeys(t, out, d)
	if _, err := fs.OwnerKey(context.Background(), "recip-e", "prescriptions_v2"); err != nil {
		t.Fatal(err)
	}
}

func TestVault(t *testing.T) {
	srv := vaulttest.Start(t)
	srv.EnableKV(t, vault.DefaultMount)
	srv.WritePolicy(t, "pseudonymizer-admin", policies.Admin)
	roleID, secretID := srv.AppRole(t, "admin", 0, 0, "pseudonymizer-admin")
	secretFile := filepath.Join(t.TempDir(), "secret-id")
	if err := os.WriteFile(secretFile, []byte(secretID), 0o600); err != nil {
		t.Fatal(err)
	}
	// With VAULT_ADDR and VAULT_TOKEN from the environment.
	env := map[string]string{"VAULT_ADDR": srv.Addr, "VAULT_TOKEN": srv.Token(t, "pseudonymizer-admin")}
	script(t, env)

	// With AppRole and flags only.
	out := ok(t, nil, "-vault-addr", srv.Addr, "-approle-role-id", roleID, "-approle-secret-id-file", secretFile,
		"-vault-mount", "pseudonymizer", "domain", "show", "prescriptions_v1")
	s := vault.NewStore(srv.Client(t), "", vault.Service)
	d, err := s.Domain(context.Background(), "prescriptions_v1")
	if err != nil {
		t.Fatal(err)
	}
	assertNoKeys(t, out, d)
	if d.Transit.Active != "t2" || d.Policy.Convert["prescriptions_v2"][0] != "recip-e" {
		t.Fatalf("service view: %v %+v", d, d.Policy)
	}
	if _, err := s.OwnerKey(context.Background(), "recip-e", "prescriptions_v2"); err != nil {
		t.Fatal(err)
	}
	fails(t, map[string]string{"VAULT_ADDR": srv.Addr, "VAULT_TOKEN": "wrong"}, 1, "access denied", "domain", "list")
}

func TestUsage(t *testing.T) {
	path := "file:" + filepath.Join(t.TempDir(), "keys.json")
	fails(t, nil, 2, "no command")
	fails(t, nil, 2, "unknown command", "-store", path, "domain", "delete", "x")
	fails(t, nil, 2, "no key store", "domain", "list")
	fails(t, nil, 2, "-store must be file:<path>", "-store", "/tmp/x", "domain", "list")
	fails(t, nil, 2, "-audience is required", "-store", path, "domain", "create", "x")
	fails(t, nil, 2, "want 1 argument(s), got 0", "-store", path, "transit-key", "rotate")
	fails(t, nil, 2, "flag provided but not defined", "-store", path, "domain", "list", "-bogus")
	fails(t, nil, 1, "invalid key material", "-store", path, "domain", "create", "Bad/Name", "-audience", "urn:x")
	if r := pseudoctl(t, nil, "-h"); r.code != 0 || !strings.Contains(r.stdout, "Usage:") {
		t.Fatalf("-h: %+v", r)
	}
	for _, args := range [][]string{{"policy", "service"}, {"policy", "admin"}, {"policy", "owner", "recip-e", "prescriptions_v1"}} {
		if out := ok(t, nil, args...); !strings.Contains(out, `path "pseudonymizer/`) {
			t.Fatalf("%v: %s", args, out)
		}
	}
	fails(t, nil, 2, "policy: want", "policy", "owner")
}
