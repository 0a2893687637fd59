package e2e

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/ehealth-pseudo/pseudonymizer/client"
	"github.com/ehealth-pseudo/pseudonymizer/internal/vaulttest"
	"github.com/ehealth-pseudo/pseudonymizer/keys/vault"
	"github.com/ehealth-pseudo/pseudonymizer/keyshare"
	"github.com/ehealth-pseudo/pseudonymizer/owner"
	"github.com/ehealth-pseudo/pseudonymizer/pseudonym"
)

// Split domain keys (docs/split-keys.md): the domains of TestSplitKeys
// besides the scenarios' (which it creates split).
const (
	migratePolicy = "pseudonymizer-migrate"
	// migratedDomain and fileMigratedDomain are created single, used, then
	// split with `pseudoctl domain split`; fileSplitDomain and
	// splitLoadDomain are created split.
	migratedDomain     = "migrated_v1"
	splitLoadDomain    = "splitload_v1"
	fileSplitDomain    = "filesplit_v1"
	fileMigratedDomain = "filemigrated_v1"
	// fileSharesMount is where the file world mounts the plugin: not the
	// default, so that -vault-shares-mount is exercised too.
	fileSharesMount = "keyshare-e2e"
)

// TestSplitKeys runs split domain keys (k = k₁·k₂, k₂ in the real
// key-share plugin inside a real Vault) with the built binaries, in two
// deployments side by side:
//
//   - KV: the service's shares k₁ in Vault KV, the plugin at its default
//     mount, the service run with no split-specific flag. The prescription
//     scenarios (register, pharmacist, "my prescriptions", convert to
//     TherLink, double pseudonymization) run on domains created with
//     `pseudoctl domain create -split`; the policies refuse k₂ to admin and
//     owner tokens and the KV holds no k; a single-mode domain in use is
//     migrated with `pseudoctl domain split` and refreshed with `domain
//     refresh-shares`, its pseudonyms at rest (by the owner SDK) unchanged;
//     under load, a refresh, a reload of the plugin
//     (sys/plugins/reload/backend) and a crash of its process (SIGKILL) fail
//     no call; then the plugin made unable to start fails items with
//     UNAVAILABLE and turns the server's health NOT_SERVING, and both
//     recover once it is back.
//   - File: the service's shares k₁ in a file of its own (-share-file),
//     the plugin at another mount (-vault-shares-mount, policies rewritten
//     for it as an operator would): a domain created split and a migrated
//     one, refreshed, pseudonyms unchanged; the KV holds neither k nor k₁.
//
// Both end with the blind check over the server's output and metrics.
func TestSplitKeys(t *testing.T) {
	t.Parallel()
	pk := newPKI(t)
	t.Run("KV", func(t *testing.T) {
		t.Parallel()
		testSplitKV(t, pk)
	})
	t.Run("File", func(t *testing.T) {
		t.Parallel()
		testSplitFile(t, pk)
	})
}

// splitVault is Vault set up for split keys as docs/split-keys.md says: the
// plugin built by scripts/vault-plugin.sh in Vault's plugin directory,
// registered with its SHA-256 and mounted, the service, admin and migrate
// policies printed by pseudoctl, and where the service's shares are.
type splitVault struct {
	*vaultEnv
	plugin       string // the plugin binary installed
	mount        string // the plugin's mount
	shareFile    string // the file of the service's shares k₁; "" for KV
	migrateToken string // admin + migrate policies: `pseudoctl domain split`
}

func startSplitVault(t *testing.T, mount, shareFile string) *splitVault {
	t.Helper()
	sv := &splitVault{vaultEnv: startVault(t, vaulttest.WithPluginDir()), mount: mount, shareFile: shareFile}
	v := sv.v
	sv.plugin = vaulttest.SharePlugin(t)
	v.InstallPlugin(t, sv.plugin, keyshare.Name)
	v.MountPlugin(t, mount, keyshare.Name)
	if mount != keyshare.DefaultMount {
		// The policies name the plugin's mount: mounted elsewhere, an
		// operator replaces that prefix, as for the KV mount.
		for name, which := range map[string]string{servicePolicy: "service", adminPolicy: "admin"} {
			v.WritePolicy(t, name, strings.ReplaceAll(runCtl(t, nil, "policy", which), keyshare.DefaultMount+"/", mount+"/"))
		}
	}
	v.WritePolicy(t, migratePolicy, runCtl(t, nil, "policy", "migrate"))
	sv.migrateToken = v.Token(t, adminPolicy, migratePolicy)
	return sv
}

// storeArgs are the flags, the same for pseudoctl and the service, that
// say where the shares are; none for the defaults.
func (sv *splitVault) storeArgs() []string {
	var args []string
	if sv.mount != keyshare.DefaultMount {
		args = append(args, "-vault-shares-mount", sv.mount)
	}
	if sv.shareFile != "" {
		args = append(args, "-share-file", sv.shareFile)
	}
	return args
}

// ctl runs pseudoctl as an administrator, with the store flags.
func (sv *splitVault) ctl(t testing.TB, args ...string) string {
	t.Helper()
	return sv.vaultEnv.ctl(t, append(args, sv.storeArgs()...)...)
}

// createSplit creates a domain with `pseudoctl domain create -split`.
func (sv *splitVault) createSplit(t testing.TB, d domainSpec) {
	t.Helper()
	out := sv.ctl(t, append(ctlCreateArgs(d), "-split")...)
	if !strings.Contains(out, "created domain "+d.name) || !strings.Contains(out, "mode split") {
		t.Fatalf("pseudoctl domain create -split %s printed %q", d.name, out)
	}
}

// split migrates a domain with `pseudoctl domain split`, with the token of
// the admin and migrate policies.
func (sv *splitVault) split(t testing.TB, domain string) {
	t.Helper()
	out := runCtl(t, []string{"VAULT_ADDR=" + sv.v.Addr, "VAULT_TOKEN=" + sv.migrateToken},
		append([]string{"domain", "split", domain}, sv.storeArgs()...)...)
	if !strings.Contains(out, "domain "+domain+": split (share generation 1)") {
		t.Fatalf("pseudoctl domain split %s printed %q", domain, out)
	}
}

// shareStatus is what `pseudoctl domain show -json` says of the shares.
type shareStatus struct {
	Mode   string `json:"mode"`
	Shares *struct {
		Service        uint64 `json:"service_generation"`
		Plugin         uint64 `json:"plugin_generation"`
		PluginPrevious uint64 `json:"plugin_previous_generation"`
		Origin         string `json:"origin"`
	} `json:"shares"`
}

func (sv *splitVault) show(t testing.TB, domain string) shareStatus {
	t.Helper()
	var st shareStatus
	if err := json.Unmarshal([]byte(sv.ctl(t, "domain", "show", "-json", domain)), &st); err != nil {
		t.Fatalf("pseudoctl domain show -json %s: %v", domain, err)
	}
	return st
}

// noKV checks that Vault's KV holds no version of the domain's path (its
// metadata is gone: every version destroyed, or never written).
func (sv *splitVault) noKV(t testing.TB, domain, path string) {
	t.Helper()
	md, err := sv.v.Client(t).KVv2(vault.DefaultMount).GetMetadata(context.Background(), "domains/"+domain+"/"+path)
	if err == nil {
		t.Fatalf("the KV holds %s of %s: %d versions", path, domain, len(md.Versions))
	}
	if !errors.Is(err, api.ErrSecretNotFound) {
		t.Fatalf("reading the KV metadata of %s of %s: %v", path, domain, err)
	}
}

// startSplitServer runs the service on sv (mTLS, AppRole with the service
// policy, the store flags of sv), polling Vault every second.
func startSplitServer(t *testing.T, sv *splitVault, pk *pki) *server {
	t.Helper()
	roleID, secretIDFile := sv.serviceAppRole(t, time.Hour, 2*time.Hour)
	args := append(pk.serverTLSArgs(),
		"-vault-addr", sv.v.Addr, "-vault-role-id", roleID, "-vault-secret-id-file", secretIDFile,
		"-poll-interval", "1s", "-health-interval", "250ms",
		"-rate", "100000", "-burst", "100000", "-shutdown-timeout", "5s")
	return startServer(t, "pseudonymizer", cleanEnv(), append(args, sv.storeArgs()...)...)
}

// waitShares waits until the server logs that it serves the split domain
// with its share k₁ of generation gen.
func waitShares(t testing.TB, srv *server, domain string, gen uint64) {
	t.Helper()
	re := regexp.MustCompile(`"msg":"keys: domain (?:added|changed)","domain":"` + regexp.QuoteMeta(domain) +
		`",[^\n]*"mode":"split","share_generation":` + strconv.FormatUint(gen, 10) + `[,}]`)
	srv.waitLog(t, re, 60*time.Second)
}

// splitDomainSpec is a domain where Alice pseudonymizes and identifies and
// the prescription service owns.
func splitDomainSpec(name string) domainSpec {
	return domainSpec{name: name, audience: "urn:e2e:" + strings.ReplaceAll(name, "_", "-"),
		pseudonymize: []string{alice}, identify: []string{alice}, owners: []string{rxService}}
}

func testSplitKV(t *testing.T, pk *pki) {
	sv := startSplitVault(t, keyshare.DefaultMount, "")
	sv.createSplit(t, rxSpec)
	sv.createSplit(t, tlSpec)
	sv.createDomain(t, splitDomainSpec(migratedDomain))
	sv.createSplit(t, splitDomainSpec(splitLoadDomain))
	// Created split: k never existed; k₁ is in KV.
	for _, d := range []string{rxDomain, tlDomain, splitLoadDomain} {
		sv.noKV(t, d, "scalar")
		if st := sv.show(t, d); st.Mode != "split" || st.Shares == nil || st.Shares.Service != 1 || st.Shares.Plugin != 1 || st.Shares.Origin != "created" {
			t.Fatalf("%s: %+v; want split, generation 1 in KV and in the plugin", d, st)
		}
	}

	srv := startSplitServer(t, sv, pk)
	for _, d := range []string{rxDomain, tlDomain, splitLoadDomain} {
		waitShares(t, srv, d, 1)
	}
	sec := newSecrets()
	w := newWorld(sec, func(p string) *grpc.ClientConn { return pk.dial(t, p, []string{srv.addr}) })
	w.rx = sv.newOwner(t, rxOwner, rxDomain)
	w.tl = sv.newOwner(t, therlinkOwner, tlDomain)
	w.rxOwner = func(t *testing.T, opts ...owner.Option) *owner.Owner {
		return sv.newOwner(t, rxOwner, rxDomain, opts...)
	}
	w.secondKey = func(t *testing.T) []byte {
		if out := sv.ctl(t, "owner-key", "create", rxOwner, rxDomain); !strings.Contains(out, "created the second key") {
			t.Fatalf("pseudoctl owner-key create printed %q", out)
		}
		k2, err := sv.ownerStore(t, rxOwner, rxDomain).OwnerKey(context.Background(), rxOwner, rxDomain)
		if err != nil {
			t.Fatalf("the owner reading its k2: %v", err)
		}
		return k2
	}

	t.Run("group", func(t *testing.T) {
		for _, sc := range scenarios {
			t.Run(sc.name, func(t *testing.T) {
				t.Parallel()
				sc.run(t, w)
			})
		}
		t.Run("Policies", func(t *testing.T) {
			t.Parallel()
			testSplitPolicies(t, sv)
		})
		t.Run("Migrate", func(t *testing.T) {
			t.Parallel()
			testShares(t, sv, srv, w, sv.newOwner(t, "migrated-owner", migratedDomain), migratedDomain, true)
		})
	})
	doc := sdk(w.conns[alice], client.WithRetries(5, 50*time.Millisecond))
	o := sv.newOwner(t, "load-owner", splitLoadDomain)
	x := w.newPatient()
	tr := w.pseudonymize(t, alice, splitLoadDomain, x.plain())
	p, err := o.AtRest(context.Background(), tr)
	if err != nil {
		t.Fatal(err)
	}
	sec.atRest(splitLoadDomain, p)
	t.Run("RefreshAndRestartUnderLoad", func(t *testing.T) {
		testSplitUnderLoad(t, sv, srv, doc, o, sec, x, p)
	})
	t.Run("PluginDown", func(t *testing.T) {
		testPluginDown(t, sv, w.conns[alice], doc, o, x, p)
	})
	t.Run("Blind", func(t *testing.T) {
		assertBlind(t, sec, map[string][]byte{"server output": srv.output(), "server /metrics": srv.metrics(t)})
	})
}

func testSplitFile(t *testing.T, pk *pki) {
	shareFile := filepath.Join(t.TempDir(), "shares.json")
	sv := startSplitVault(t, fileSharesMount, shareFile)
	sv.createSplit(t, splitDomainSpec(fileSplitDomain))
	sv.createDomain(t, splitDomainSpec(fileMigratedDomain))
	// k₁ is in the service's file (mode 0600), neither k nor k₁ in KV.
	sv.noKV(t, fileSplitDomain, "scalar")
	sv.noKV(t, fileSplitDomain, "share")
	if fi, err := os.Stat(shareFile); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("the share file: %v, %v; want mode 0600", fi, err)
	}

	srv := startSplitServer(t, sv, pk)
	waitShares(t, srv, fileSplitDomain, 1)
	sec := newSecrets()
	w := newWorld(sec, func(p string) *grpc.ClientConn { return pk.dial(t, p, []string{srv.addr}) })
	// One after the other: each pseudoctl rewrites the whole share file.
	t.Run("Created", func(t *testing.T) {
		testShares(t, sv, srv, w, sv.newOwner(t, "file-owner", fileSplitDomain), fileSplitDomain, false)
	})
	t.Run("Migrated", func(t *testing.T) {
		testShares(t, sv, srv, w, sv.newOwner(t, "file-migrated-owner", fileMigratedDomain), fileMigratedDomain, true)
		sv.noKV(t, fileMigratedDomain, "share")
	})
	t.Run("Blind", func(t *testing.T) {
		assertBlind(t, sec, map[string][]byte{"server output": srv.output(), "server /metrics": srv.metrics(t)})
	})
}

// testShares pseudonymizes patients through the service into domain,
// opened by its owner, and identifies them back; migrate: the domain is
// single and is split with `pseudoctl domain split`. Then the shares are
// refreshed with `pseudoctl domain refresh-shares`. After each step, once
// the server serves the new share, the pseudonyms at rest are the same and
// identify still finds the patients.
func testShares(t *testing.T, sv *splitVault, srv *server, w *world, o *owner.Owner, domain string, migrate bool) {
	ctx := context.Background()
	doc := w.client(alice)
	patients := []patient{w.newPatient(), w.newPatient(), w.newPatient()}
	ids := make([][]byte, len(patients))
	for i, p := range patients {
		ids[i] = p.niss
	}
	atRest := func(when string) []pseudonym.AtRest {
		t.Helper()
		trs, errs, err := doc.PseudonymizeBatch(ctx, domain, ids)
		if err != nil {
			t.Fatalf("%s: pseudonymize: %v", when, err)
		}
		out := make([]pseudonym.AtRest, len(trs))
		for i, tr := range trs {
			if errs[i] != nil {
				t.Fatalf("%s: pseudonymize item %d: %v", when, i, errs[i])
			}
			w.sec.transit(tr)
			if out[i], err = o.AtRest(ctx, tr); err != nil {
				t.Fatalf("%s: the owner opening item %d: %v", when, i, err)
			}
			w.sec.atRest(domain, out[i])
		}
		return out
	}
	identify := func(when string, ps []pseudonym.AtRest) {
		t.Helper()
		trs := make([]*pseudonym.Transit, len(ps))
		for i, p := range ps {
			tr, err := o.InTransit(p, owner.Subject(alice))
			if err != nil {
				t.Fatal(err)
			}
			w.sec.transit(tr)
			trs[i] = tr
		}
		got, errs, err := doc.IdentifyBatch(ctx, domain, trs)
		if err != nil {
			t.Fatalf("%s: identify: %v", when, err)
		}
		for i := range got {
			if errs[i] != nil || string(got[i]) != patients[i].plain() {
				t.Fatalf("%s: identify item %d: %v (right patient: %t)", when, i, errs[i], string(got[i]) == patients[i].plain())
			}
		}
	}
	same := func(when string, want []pseudonym.AtRest) {
		t.Helper()
		if got := atRest(when); !slices.Equal(got, want) {
			t.Fatalf("%s: the pseudonyms at rest changed", when)
		}
		identify(when, want)
	}

	before := atRest("before")
	identify("before", before)
	if migrate {
		if st := sv.show(t, domain); st.Mode != "single" {
			t.Fatalf("%s before the split: mode %q", domain, st.Mode)
		}
		sv.split(t, domain)
		sv.noKV(t, domain, "scalar") // every version of k destroyed
		waitShares(t, srv, domain, 1)
		same("after the split", before)
	}
	out := sv.ctl(t, "domain", "refresh-shares", domain)
	if !strings.Contains(out, "shares refreshed (generation 2)") {
		t.Fatalf("pseudoctl domain refresh-shares printed %q", out)
	}
	waitShares(t, srv, domain, 2)
	same("after refresh-shares", before)
	st := sv.show(t, domain)
	if st.Mode != "split" || st.Shares == nil || st.Shares.Service != 2 || st.Shares.Plugin != 2 || st.Shares.PluginPrevious != 1 {
		t.Fatalf("%s after the refresh: %+v; want split, generation 2 for both shares, 1 the previous one", domain, st)
	}
	if want := map[bool]string{true: "split", false: "created"}[migrate]; st.Shares.Origin != want {
		t.Errorf("%s: origin %q, want %q", domain, st.Shares.Origin, want)
	}
}

// testSplitPolicies: a service token may multiply; admin and owner tokens
// may not, and no token, not even root, reads k₂: the plugin's metadata of
// a domain holds generations and dates, no key.
func testSplitPolicies(t *testing.T, sv *splitVault) {
	ctx := context.Background()
	multiply := sv.mount + "/" + keyshare.PathMultiply
	meta := sv.mount + "/domains/" + rxDomain
	// One group with the base point: the service token multiplies it.
	groups := []map[string]any{{"op": "pseudonymize", "domain": rxDomain, "generation": 1,
		"points": base64.StdEncoding.EncodeToString(basePoint)}}
	svc := sv.v.ClientWithToken(t, sv.v.Token(t, servicePolicy))
	if sec, err := svc.Logical().WriteWithContext(ctx, multiply, map[string]any{"groups": groups}); err != nil || sec == nil {
		t.Fatalf("the service multiplying: %v", err)
	}
	if sec, err := svc.Logical().JSONMergePatch(ctx, multiply, map[string]any{"groups": groups}); err != nil || sec == nil {
		t.Fatalf("the service multiplying with PATCH: %v", err)
	}
	forbidden := func(who, what string, err error) {
		t.Helper()
		var re *api.ResponseError
		if !errors.As(err, &re) || re.StatusCode != 403 {
			t.Errorf("%s %s: %v; want 403", who, what, err)
		}
	}
	for who, tok := range map[string]string{"admin": sv.adminToken, "owner": sv.ownerToken(t, rxOwner, rxDomain)} {
		c := sv.v.ClientWithToken(t, tok)
		_, err := c.Logical().WriteWithContext(ctx, multiply, map[string]any{"groups": groups})
		forbidden(who, "multiplying", err)
		_, err = c.Logical().JSONMergePatch(ctx, multiply, map[string]any{"groups": groups})
		forbidden(who, "multiplying with PATCH", err)
		if who == "owner" {
			_, err = c.Logical().ReadWithContext(ctx, meta)
			forbidden(who, "reading the plugin's metadata", err)
		}
	}
	sec, err := sv.v.Client(t).Logical().ReadWithContext(ctx, meta)
	if err != nil || sec == nil {
		t.Fatalf("root reading the plugin's metadata: %v", err)
	}
	for k, v := range sec.Data {
		if s, ok := v.(string); ok {
			if b, err := base64.StdEncoding.DecodeString(s); err == nil && len(b) >= 32 {
				t.Errorf("the plugin's metadata has %s = %d bytes of base64", k, len(b))
			}
		}
	}
}

// basePoint is the ristretto255 base point's encoding (RFC 9496).
var basePoint = []byte{
	0xe2, 0xf2, 0xae, 0x0a, 0x6a, 0xbc, 0x4e, 0x71, 0xa8, 0x84, 0xa9, 0x61, 0xc5, 0x00, 0x51, 0x5f,
	0x58, 0xe3, 0x0b, 0x6a, 0xa5, 0x82, 0xdd, 0x8d, 0xb6, 0xa6, 0x59, 0x45, 0xe0, 0x8d, 0x2d, 0x76,
}

// testSplitUnderLoad: workers pseudonymize and identify in a split domain
// through the service while the shares are refreshed, the plugin is
// reloaded (sys/plugins/reload/backend) and its process killed: no call
// fails (with the SDK's retries), every pseudonym at rest stays the same.
func testSplitUnderLoad(t *testing.T, sv *splitVault, srv *server, doc *client.Client, o *owner.Owner, sec *secrets, x patient, p pseudonym.AtRest) {
	ctx := context.Background()
	l := startLoad(3, func() error {
		tr, err := doc.Pseudonymize(ctx, splitLoadDomain, x.niss)
		if err != nil {
			return fmt.Errorf("pseudonymize: %w", err)
		}
		sec.transit(tr)
		if got, err := o.AtRest(ctx, tr); err != nil || got != p {
			return fmt.Errorf("owner opening: %v (same pseudonym: %t)", err, got == p)
		}
		back, err := o.InTransit(p, owner.Subject(alice))
		if err != nil {
			return err
		}
		sec.transit(back)
		if id, err := doc.Identify(ctx, splitLoadDomain, back); err != nil || string(id) != x.plain() {
			return fmt.Errorf("identify: %v (right patient: %t)", err, string(id) == x.plain())
		}
		return nil
	})
	defer func() {
		if l != nil {
			l.finish(t, "load")
		}
	}()
	l.waitCalls(t, 20, "calls before the refresh")

	if out := sv.ctl(t, "domain", "refresh-shares", splitLoadDomain); !strings.Contains(out, "(generation 2)") {
		t.Fatalf("pseudoctl domain refresh-shares printed %q", out)
	}
	waitShares(t, srv, splitLoadDomain, 2)
	l.waitCalls(t, 50, "calls after the refresh")

	bin := filepath.Join(sv.v.PluginDir(), keyshare.Name)
	before := vaulttest.Processes(t, bin)
	if len(before) == 0 {
		t.Fatalf("no process runs %s", bin)
	}
	sv.v.ReloadPlugin(t, keyshare.Name)
	l.waitCalls(t, 50, "calls after the reload of the plugin")
	var pids []int
	waitFor(t, 30*time.Second, "a new plugin process", func() (bool, string) {
		pids = vaulttest.Processes(t, bin)
		return len(pids) > 0 && !slices.Contains(before, pids[0]), fmt.Sprintf("processes %v, before the reload %v", pids, before)
	})

	// A crash: Vault starts the plugin again at the next request.
	for _, pid := range pids {
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatalf("killing the plugin (pid %d): %v", pid, err)
		}
	}
	waitFor(t, 30*time.Second, "the plugin to run again after its crash", func() (bool, string) {
		now := vaulttest.Processes(t, bin)
		return len(now) > 0 && !slices.Contains(pids, now[0]), fmt.Sprintf("processes %v, killed %v", now, pids)
	})
	l.waitCalls(t, 50, "calls after the crash of the plugin")
	l.finish(t, "calls across a refresh, a reload and a crash of the plugin")
	l = nil
}

// testPluginDown makes the plugin unable to start (its binary no longer
// matches the registered SHA-256) and reloads it: items fail UNAVAILABLE,
// the server's overall health turns NOT_SERVING (its service name stays
// SERVING: degraded, not unready); once the plugin is back, both recover
// and the pseudonym is unchanged.
func testPluginDown(t *testing.T, sv *splitVault, cc *grpc.ClientConn, doc *client.Client, o *owner.Owner, x patient, p pseudonym.AtRest) {
	ctx := context.Background()
	waitHealth(t, cc, healthpb.HealthCheckResponse_SERVING, 30*time.Second)
	sv.v.WritePluginFile(t, keyshare.Name, []byte("#!/bin/sh\nexit 1\n"))
	// Stops the running plugin; starting it again fails.
	_, _ = sv.v.Client(t).Sys().ReloadPluginWithContext(ctx, &api.ReloadPluginInput{Plugin: keyshare.Name})
	waitFor(t, 60*time.Second, "items to fail UNAVAILABLE", func() (bool, string) {
		_, err := doc.Pseudonymize(ctx, splitLoadDomain, x.niss)
		var ie *client.ItemError
		return errors.As(err, &ie) && status.Code(err) == codes.Unavailable, fmt.Sprint(err)
	})
	waitHealth(t, cc, healthpb.HealthCheckResponse_NOT_SERVING, 60*time.Second)
	if st, err := health(ctx, cc, serviceHealth); err != nil || st != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("health of %s with the plugin down: %v, %v; want SERVING", serviceHealth, st, err)
	}

	sv.v.InstallPlugin(t, sv.plugin, keyshare.Name)
	waitHealth(t, cc, healthpb.HealthCheckResponse_SERVING, 60*time.Second)
	waitFor(t, 60*time.Second, "calls to succeed again", func() (bool, string) {
		tr, err := doc.Pseudonymize(ctx, splitLoadDomain, x.niss)
		if err != nil {
			return false, err.Error()
		}
		got, err := o.AtRest(ctx, tr)
		if err != nil {
			t.Fatal(err)
		}
		if got != p {
			t.Fatal("the pseudonym at rest changed across the plugin's outage")
		}
		return true, ""
	})
}
