package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ehealth-pseudo/pseudonymizer/internal/sharetest"
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
		"-audience", "urn:ehealth:pseudo:prescriptions:v1", "-ttl", "10m", "-max-lifetime", "36h",
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
	fails(t, env, 2, "-max-lifetime must be positive", with("domain", "create", "x_v1", "-audience", "urn:x", "-max-lifetime", "0s")...)
	fails(t, env, 1, "max lifetime 1m0s is shorter than the ttl 10m0s",
		with("domain", "create", "x_v1", "-audience", "urn:x", "-ttl", "10m", "-max-lifetime", "1m")...)
	// Audiences are unique; owners never identify, in any domain; "*" is
	// no owner.
	fails(t, env, 1, `domain "x_v1": audience "urn:other:v1" is also the audience of domain "other_v1"`,
		with("domain", "create", "x_v1", "-audience", "urn:other:v1")...)
	fails(t, env, 1, `domain "x_v1": policy lets "recip-e" identify, but "recip-e" owns domain "prescriptions_v1"`,
		with("domain", "create", "x_v1", "-audience", "urn:x", "-identify", "pharmacy,recip-e")...)
	fails(t, env, 1, `domain "x_v1": owner "pharmacy" may identify in domain "prescriptions_v1"`,
		with("domain", "create", "x_v1", "-audience", "urn:x", "-owners", "pharmacy")...)
	fails(t, env, 1, `domain "x_v1": "recip-e" is both an owner and allowed to identify`,
		with("domain", "create", "x_v1", "-audience", "urn:x", "-identify", "recip-e", "-owners", "recip-e")...)
	fails(t, env, 1, `"*" cannot be an owner`, with("domain", "create", "x_v1", "-audience", "urn:x", "-owners", "*")...)
	ok(t, env, with("domain", "create", "x_v1", "-audience", "urn:x", "-identify", "*", "-owners", "x-owner")...)
	if out := ok(t, env, with("domain", "show", "x_v1")...); !strings.Contains(out, "max lifetime:  24h0m0s\n") {
		t.Fatalf("default -max-lifetime: %s", out)
	}

	if out := ok(t, env, with("domain", "list")...); out != "other_v1\nprescriptions_v1\nx_v1\n" {
		t.Fatalf("list: %q", out)
	}
	if out := ok(t, env, with("transit-key", "rotate", "prescriptions_v1")...); !strings.Contains(out, "transit key t2 is active") {
		t.Fatalf("rotate: %s", out)
	}
	fails(t, env, 1, "cannot retire the active transit key", with("transit-key", "retire", "prescriptions_v1", "t2")...)
	fails(t, env, 1, "unknown key", with("transit-key", "retire", "prescriptions_v1", "t9")...)
	// t1 may still seal live pseudonyms until max lifetime (36h) + 60 s
	// after the rotation.
	fails(t, env, 1, "transit key t1 may still seal live pseudonyms: retire it after", with("transit-key", "retire", "prescriptions_v1", "t1")...)
	if out := ok(t, env, with("domain", "show", "prescriptions_v1")...); !strings.Contains(out, "rotated:") {
		t.Fatalf("show after rotation: %s", out)
	}
	setClock(t, time.Now().Add(36*time.Hour+time.Minute-5*time.Second))
	fails(t, env, 1, "retire it after", with("transit-key", "retire", "prescriptions_v1", "t1")...)
	setClock(t, time.Now().Add(36*time.Hour+time.Minute+5*time.Second))
	ok(t, env, with("transit-key", "retire", "prescriptions_v1", "t1")...)
	setClock(t, time.Now())
	ok(t, env, with("transit-key", "rotate", "other_v1")...)
	ok(t, env, with("transit-key", "retire", "-force", "other_v1", "t1")...)
	// A new version gets its own audience: derived from the old one, or
	// -audience, unique either way.
	fails(t, env, 1, `domain "prescriptions_v2": audience "urn:other:v1" is also the audience of domain "other_v1"`,
		with("domain", "new-version", "prescriptions_v1", "prescriptions_v2", "-audience", "urn:other:v1")...)
	fails(t, env, 1, "not an absolute URI", with("domain", "new-version", "prescriptions_v1", "prescriptions_v2", "-audience", "v2")...)
	fails(t, env, 1, "shorter than the ttl", with("domain", "new-version", "prescriptions_v1", "prescriptions_v2", "-max-lifetime", "5m")...)
	fails(t, env, 1, "unknown domain", with("domain", "new-version", "nope_v1", "nope_v2")...)
	out = ok(t, env, with("domain", "new-version", "prescriptions_v1", "prescriptions_v2")...)
	if !strings.Contains(out, "created domain prescriptions_v2 from prescriptions_v1 (audience urn:ehealth:pseudo:prescriptions:v2, max lifetime 36h0m0s,") {
		t.Fatalf("new-version: %s", out)
	}
	ok(t, env, with("domain", "new-version", "other_v1", "other_v2", "-audience", "urn:other:second", "-max-lifetime", "48h")...)
	if out := ok(t, env, with("domain", "show", "other_v2")...); !strings.Contains(out, "audience:      urn:other:second\n") ||
		!strings.Contains(out, "max lifetime:  48h0m0s\n") {
		t.Fatalf("new-version -audience -max-lifetime: %s", out)
	}
	ok(t, env, with("owner-key", "create", "recip-e", "prescriptions_v2")...)
	fails(t, env, 1, "already exists", with("owner-key", "create", "recip-e", "prescriptions_v2")...)
	fails(t, env, 1, "unknown domain", with("domain", "show", "nope")...)

	// Policy and lifetimes change after creation, checked like create.
	fails(t, env, 2, "give -pseudonymize, -identify, -owners or -convert", with("domain", "set-policy", "x_v1")...)
	fails(t, env, 1, `domain "x_v1": policy lets "recip-e" identify, but "recip-e" owns domain "prescriptions_v1"`,
		with("domain", "set-policy", "x_v1", "-identify", "pharmacy,recip-e")...)
	fails(t, env, 1, `domain "x_v1": owner "pharmacy" may identify in domain "prescriptions_v1"`,
		with("domain", "set-policy", "x_v1", "-owners", "pharmacy")...)
	ok(t, env, with("domain", "set-policy", "x_v1", "-pseudonymize", "lab", "-convert", "other_v1=lab")...)
	out = ok(t, env, with("domain", "show", "x_v1")...)
	for _, want := range []string{"pseudonymize:  lab\n", "identify:      *\n", "owners:        x-owner\n", "convert to other_v1: lab\n"} {
		if !strings.Contains(out, want) {
			t.Fatalf("set-policy: no %q in\n%s", want, out)
		}
	}
	fails(t, env, 2, "give a positive -ttl", with("domain", "set-ttl", "x_v1")...)
	fails(t, env, 1, "shorter than the ttl", with("domain", "set-ttl", "x_v1", "-ttl", "48h")...)
	if out := ok(t, env, with("domain", "set-ttl", "x_v1", "-ttl", "1h", "-max-lifetime", "48h")...); !strings.Contains(out, "ttl 1h0m0s, max lifetime 48h0m0s") {
		t.Fatalf("set-ttl: %s", out)
	}
	// Disabling is reversible and keeps the keys.
	before := ok(t, env, with("domain", "show", "-json", "x_v1")...)
	if out := ok(t, env, with("domain", "disable", "x_v1")...); !strings.Contains(out, "domain x_v1 disabled") {
		t.Fatalf("disable: %s", out)
	}
	if out := ok(t, env, with("domain", "show", "x_v1")...); !strings.Contains(out, "status:        disabled") {
		t.Fatalf("show a disabled domain: %s", out)
	}
	fails(t, env, 1, "unknown domain", with("domain", "disable", "nope_v1")...)
	if out := ok(t, env, with("domain", "enable", "x_v1")...); !strings.Contains(out, "domain x_v1 enabled") {
		t.Fatalf("enable: %s", out)
	}
	var b, a domainInfo
	if err := json.Unmarshal([]byte(before), &b); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal([]byte(ok(t, env, with("domain", "show", "-json", "x_v1")...)), &a); err != nil {
		t.Fatal(err)
	}
	b.Generation, a.Generation = 0, 0 // a new version of the meta
	if a.Disabled || fmt.Sprint(a) != fmt.Sprint(b) {
		t.Fatalf("disable then enable changed the domain: %+v → %+v", b, a)
	}
	// Deleting wants -yes; the domain is then no longer listed.
	fails(t, env, 2, "add -yes to confirm", with("domain", "delete", "x_v1")...)
	ok(t, env, with("domain", "delete", "x_v1", "-yes")...)
	fails(t, env, 1, "unknown domain", with("domain", "show", "x_v1")...)
	fails(t, env, 1, "unknown domain", with("domain", "delete", "x_v1", "-yes")...)
	// Owner keys are rotated and deleted with -yes.
	fails(t, env, 2, "add -yes to confirm", with("owner-key", "rotate", "recip-e", "prescriptions_v2")...)
	ok(t, env, with("owner-key", "rotate", "-yes", "recip-e", "prescriptions_v2")...)
	fails(t, env, 1, "unknown key", with("owner-key", "rotate", "-yes", "nobody", "prescriptions_v2")...)
	ok(t, env, with("owner-key", "create", "recip-e", "other_v1")...)
	fails(t, env, 2, "add -yes to confirm", with("owner-key", "delete", "recip-e", "other_v1")...)
	ok(t, env, with("owner-key", "delete", "recip-e", "other_v1", "-yes")...)
	fails(t, env, 1, "unknown key", with("owner-key", "delete", "recip-e", "other_v1", "-yes")...)

	out = ok(t, env, with("domain", "show", "prescriptions_v1")...)
	for _, want := range []string{"audience:      urn:ehealth:pseudo:prescriptions:v1", "ttl:           10m0s", "max lifetime:  36h0m0s\n",
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
	if info.Active != "t1" || info.TTL != "10m0s" || info.MaxLifetime != "36h0m0s" || info.DefaultMaxLifetime ||
		info.Audience != "urn:ehealth:pseudo:prescriptions:v2" || len(info.Policy.Owners) != 1 {
		t.Fatalf("show -json: %s", out)
	}
}

// setClock sets pseudoctl's clock to t until the test ends.
func setClock(t *testing.T, at time.Time) {
	t.Cleanup(func() { now = time.Now })
	now = func() time.Time { return at }
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

// TestSetChecks runs the checks that span domains on a store that already
// breaks them (made without pseudoctl).
func TestSetChecks(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "keys.json")
	store := "file:" + path
	fs, err := keys.OpenFileStore(path, true)
	if err != nil {
		t.Fatal(err)
	}
	long := "urn:" + strings.Repeat("a", 1016) // no version: ":long_v2" is appended, too long
	for _, spec := range []keys.DomainSpec{
		{Name: "a_v1", Audience: "urn:a:v1", Policy: keys.Policy{Owners: []string{"o"}}},
		{Name: "b_v1", Audience: "urn:b:v1", Policy: keys.Policy{Identify: []string{"o", "p"}}},
		{Name: "long_v1", Audience: long},
	} {
		if _, err := fs.CreateDomain(ctx, spec); err != nil {
			t.Fatal(err)
		}
	}
	// An unrelated domain is created; the existing violation is reported.
	r := pseudoctl(t, nil, "-store", store, "domain", "create", "c_v1", "-audience", "urn:c:v1", "-identify", "p")
	if r.code != 0 || !strings.Contains(r.stderr, `warning: keys: invalid key material: domain "a_v1": owner "o" may identify in domain "b_v1"`) {
		t.Fatalf("create next to a violation: %+v", r)
	}
	// A new version of b_v1 would repeat it: refused, naming the principal
	// and both domains.
	fails(t, nil, 1, `domain "b_v2": policy lets "o" identify, but "o" owns domain "a_v1": owners may never identify`,
		"-store", store, "domain", "new-version", "b_v1", "b_v2")
	// No one may become the owner of a domain while identifying elsewhere.
	fails(t, nil, 1, `owner "p" may identify in domain "c_v1"`,
		"-store", store, "domain", "create", "a_v2", "-audience", "urn:a:v2", "-owners", "o,p")
	fails(t, nil, 1, `the audience derived for long_v2 from that of long_v1`, "-store", store, "domain", "new-version", "long_v1", "long_v2")
	ok(t, nil, "-store", store, "domain", "new-version", "long_v1", "long_v2", "-audience", "urn:long:v2")
	if out := ok(t, nil, "-store", store, "domain", "list"); out != "a_v1\nb_v1\nc_v1\nlong_v1\nlong_v2\n" {
		t.Fatalf("list: %q", out)
	}
	// A domain without a max lifetime shows the default.
	if out := ok(t, nil, "-store", store, "domain", "show", "long_v1"); !strings.Contains(out, "max lifetime:  24h0m0s (default)\n") {
		t.Fatalf("show: %s", out)
	}
	if out := ok(t, nil, "-store", store, "domain", "show", "long_v2"); !strings.Contains(out, "max lifetime:  24h0m0s (default)\n") {
		t.Fatalf("show: %s", out)
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

	// With AppRole and flags only, under pseudonymizer's names and the old
	// ones; and from the environment.
	out := ok(t, nil, "-vault-addr", srv.Addr, "-vault-role-id", roleID, "-vault-secret-id-file", secretFile,
		"-vault-mount", "pseudonymizer", "domain", "show", "prescriptions_v1")
	ok(t, nil, "-vault-addr", srv.Addr, "-approle-role-id", roleID, "-approle-secret-id-file", secretFile, "domain", "list")
	ok(t, map[string]string{"VAULT_ADDR": srv.Addr, "VAULT_ROLE_ID": roleID, "VAULT_SECRET_ID_FILE": secretFile}, "domain", "list")
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
	fails(t, nil, 2, "unknown command", "-store", path, "domain", "frobnicate", "x")
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
	// Every command of the table is documented, and -h works after it.
	documented := map[string]bool{}
	for line := range strings.Lines(usage) {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(line), "pseudoctl "); ok {
			f := append(strings.Fields(strings.TrimPrefix(rest, "[store flags] ")), "", "")
			documented[f[0]] = true
			documented[f[0]+" "+f[1]] = true
		}
	}
	for name := range commands {
		if !documented[name] {
			t.Errorf("usage does not document %q", name)
		}
		if r := pseudoctl(t, nil, append(strings.Fields(name), "-h")...); r.code != 0 || !strings.Contains(r.stdout, "Usage:") {
			t.Errorf("%s -h: %+v", name, r)
		}
	}
}

// TestSplit runs the split-key commands on Vault with the real key-share
// plugin: a domain created split, a single domain split with the migrate
// token (the admin token alone cannot), shares refreshed, and the mode and
// generations shown; the file store refuses split keys.
func TestSplit(t *testing.T) {
	e := sharetest.Start(t)
	admin := map[string]string{"VAULT_ADDR": e.Addr, "VAULT_TOKEN": e.AdminToken}
	migrate := map[string]string{"VAULT_ADDR": e.Addr, "VAULT_TOKEN": e.MigrateToken}
	out := ok(t, admin, "domain", "create", "created_v1", "-audience", "urn:test:created_v1", "-split")
	if !strings.Contains(out, "mode split") {
		t.Fatalf("create -split: %s", out)
	}
	ok(t, admin, "domain", "create", "prescriptions_v1", "-audience", "urn:test:prescriptions_v1")
	if out := ok(t, admin, "domain", "show", "prescriptions_v1"); !strings.Contains(out, "mode:          single") {
		t.Fatalf("show: %s", out)
	}
	fails(t, admin, 1, "migrate policy", "domain", "split", "prescriptions_v1")
	if out := ok(t, migrate, "domain", "split", "prescriptions_v1"); !strings.Contains(out, "split (share generation 1)") {
		t.Fatalf("split: %s", out)
	}
	if out := ok(t, admin, "domain", "refresh-shares", "prescriptions_v1"); !strings.Contains(out, "generation 2") {
		t.Fatalf("refresh-shares: %s", out)
	}
	fails(t, admin, 1, "previous generation 1 was used", "domain", "refresh-shares", "prescriptions_v1")
	out = ok(t, admin, "domain", "show", "prescriptions_v1")
	for _, want := range []string{"mode:          split", "service k1 generation 2; plugin k2 generation 2 (previous 1 accepted", "; split"} {
		if !strings.Contains(out, want) {
			t.Fatalf("show after refresh: want %q in\n%s", want, out)
		}
	}
	out = ok(t, admin, "domain", "show", "-json", "created_v1")
	var info struct {
		Mode   string `json:"mode"`
		Shares struct {
			Service uint64 `json:"service_generation"`
			Plugin  uint64 `json:"plugin_generation"`
			Origin  string `json:"origin"`
		} `json:"shares"`
	}
	if err := json.Unmarshal([]byte(out), &info); err != nil || info.Mode != "split" || info.Shares.Service != 1 || info.Shares.Plugin != 1 || info.Shares.Origin != "created" {
		t.Fatalf("show -json: %v\n%s", err, out)
	}
	ok(t, admin, "domain", "delete", "created_v1", "-yes")

	store := "file:" + filepath.Join(t.TempDir(), "keys.json")
	fails(t, nil, 1, "single mode", "-store", store, "domain", "create", "x_v1", "-audience", "urn:x", "-split")
}
