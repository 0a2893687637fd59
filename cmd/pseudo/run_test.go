package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/ehealth-pseudo/pseudonymizer/internal/auth"
	"github.com/ehealth-pseudo/pseudonymizer/internal/grpcserver"
	"github.com/ehealth-pseudo/pseudonymizer/internal/servertest"
	"github.com/ehealth-pseudo/pseudonymizer/internal/testpki"
	"github.com/ehealth-pseudo/pseudonymizer/keys"
	"github.com/ehealth-pseudo/pseudonymizer/owner"
	"github.com/ehealth-pseudo/pseudonymizer/pseudonym"
)

// startDev runs a dev-mode service (the one `pseudonymizer -dev` runs) on
// a loopback TCP port with the demo domain.
func startDev(t *testing.T) (addr string, store *keys.FileStore) {
	return startDevRate(t, 1e6, 1e6)
}

// startDevRate is startDev with a rate limit of rate items/s, bursts of
// burst.
func startDevRate(t *testing.T, rate float64, burst int) (addr string, store *keys.FileStore) {
	t.Helper()
	ctx := context.Background()
	store, err := keys.OpenFileStore(filepath.Join(t.TempDir(), "keys.json"), true)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.EnsureDemo(ctx); err != nil {
		t.Fatal(err)
	}
	cache, err := keys.NewCache(ctx, store, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cache.Close() })
	s := servertest.Start(t, grpcserver.Config{
		Keys: cache, Auth: auth.New(auth.Config{Dev: true}), Rate: rate, Burst: burst,
	}, true)
	return s.Addr, store
}

func pseudo(t *testing.T, stdin string, args ...string) (string, string, error) {
	t.Helper()
	var out, errb bytes.Buffer
	err := run(context.Background(), args, strings.NewReader(stdin), &out, &errb)
	return out.String(), errb.String(), err
}

func TestPseudoEndToEnd(t *testing.T) {
	addr, store := startDev(t)
	conn := []string{"-addr", addr, "-insecure", "-principal", "dr-alice"}
	ctx := context.Background()

	// pseudonymize from arguments: one transit pseudonym per value.
	out, _, err := pseudo(t, "", append(conn, "pseudonymize", "-domain", keys.DemoDomain, "85.07.30-033.28", "85073003328")...)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 {
		t.Fatalf("output %q", out)
	}
	o, err := owner.New(ctx, keys.DemoDomain, store, owner.WithRefreshInterval(0))
	if err != nil {
		t.Fatal(err)
	}
	var ats []pseudonym.AtRest
	for _, l := range lines {
		tp, err := pseudonym.ParseTransit(l)
		if err != nil {
			t.Fatalf("not a transit pseudonym: %q", l)
		}
		ats = append(ats, must(o.AtRest(ctx, tp)))
	}
	if ats[0] != ats[1] {
		t.Fatal("the two spellings of one NISS got different pseudonyms")
	}

	// identify from a file, batched in 2s, with a bad line kept in place.
	var in strings.Builder
	for range 3 {
		in.WriteString(must(o.InTransit(ats[0])).String() + "\n")
	}
	in.WriteString("garbage\n")
	f := filepath.Join(t.TempDir(), "in.txt")
	os.WriteFile(f, []byte(in.String()), 0o600)
	out, _, err = pseudo(t, "", append(conn, "-batch", "2", "identify", "-domain", keys.DemoDomain, "-in", f)...)
	if _, ok := err.(itemsFailed); !ok {
		t.Fatalf("want itemsFailed, got %v", err)
	}
	want := "85.07.30-033.28\n85.07.30-033.28\n85.07.30-033.28\nERROR malformed transit pseudonym\n"
	if out != want {
		t.Fatalf("identify output %q, want %q", out, want)
	}

	// stdin, an invalid NISS, and the domain command.
	out, _, err = pseudo(t, "85073003328\n12345\n", append(conn, "pseudonymize", "-domain", keys.DemoDomain)...)
	if _, ok := err.(itemsFailed); !ok || !strings.HasSuffix(out, "ERROR invalid identifier\n") {
		t.Fatalf("stdin: %q, %v", out, err)
	}
	out, _, err = pseudo(t, "", append(conn, "domain", keys.DemoDomain)...)
	if err != nil || !strings.Contains(out, "you may: pseudonymize") {
		t.Fatalf("domain: %q, %v", out, err)
	}
	// A transit pseudonym whose point starts with "-" (base64url, one in
	// 64) is a value, not a flag.
	dash := ""
	for range 5000 {
		if tp := must(o.InTransit(ats[0])).String(); strings.HasPrefix(tp, "-") {
			dash = tp
			break
		}
	}
	if dash == "" {
		t.Fatal("no transit pseudonym starting with '-' in 5000")
	}
	out, _, err = pseudo(t, "", append(conn, "identify", "-domain", keys.DemoDomain, dash)...)
	if err != nil || out != "85.07.30-033.28\n" {
		t.Fatalf("identify %s…: %q, %v", dash[:8], out, err)
	}
	if got := endFlagsAtValues(flag.NewFlagSet("x", flag.ContinueOnError), []string{"-x:y"}); !slices.Equal(got, []string{"--", "-x:y"}) {
		t.Fatalf("endFlagsAtValues: %q", got)
	}

	// A bound transit pseudonym cannot be identified by someone else.
	bound := must(o.InTransit(ats[0], owner.Subject("dr-alice"))).String()
	out, _, _ = pseudo(t, "", "-addr", addr, "-insecure", "-principal", "dr-bob", "identify", "-domain", keys.DemoDomain, bound)
	if out != "ERROR wrong_subject\n" {
		t.Fatalf("identify by another: %q", out)
	}
}

func TestPseudoUsage(t *testing.T) {
	var errb bytes.Buffer
	for _, args := range [][]string{
		{}, {"frobnicate"}, {"pseudonymize"}, {"convert", "-from", "a"}, {"domain"},
		{"pseudonymize", "-domain", "d", "-kind", "ssn"}, {"-batch", "0", "pseudonymize", "-domain", "d"},
	} {
		err := run(context.Background(), args, strings.NewReader(""), io.Discard, &errb)
		if _, ok := err.(usageError); !ok {
			t.Errorf("%v: %v, want a usage error", args, err)
		}
		if code := exitCode(err, &errb); code != 2 {
			t.Errorf("%v: exit %d", args, code)
		}
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// A large input against a service with a low rate limit completes: the
// calls refused with RESOURCE_EXHAUSTED are retried after the service's
// RetryInfo delay. JSON output has one object per input value.
func TestPseudoRateLimited(t *testing.T) {
	// 4000 items at 4000/s with a burst of 400: about 1 s, and most
	// batches are refused at first.
	addr, _ := startDevRate(t, 4000, 400)
	var in strings.Builder
	for range 4000 {
		in.WriteString("85073003328\n")
	}
	out, errOut, err := pseudo(t, in.String(), "-addr", addr, "-insecure", "-batch", "400", "-o", "json",
		"pseudonymize", "-domain", keys.DemoDomain)
	if err != nil {
		t.Fatalf("%v\n%s", err, errOut)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 4000 {
		t.Fatalf("%d lines of output", len(lines))
	}
	for i, l := range lines {
		var v struct {
			Line          int
			Result, Error string
		}
		if err := json.Unmarshal([]byte(l), &v); err != nil || v.Line != i+1 || v.Error != "" || v.Result == "" {
			t.Fatalf("line %d: %q (%v)", i+1, l, err)
		}
	}
}

// -h succeeds on pseudo and on each command; a TLS failure says what to
// add.
func TestPseudoHelpAndHints(t *testing.T) {
	for _, args := range [][]string{{"-h"}, {"pseudonymize", "-h"}, {"identify", "-h"}, {"convert", "-h"}, {"domain", "-h"}} {
		out, _, err := pseudo(t, "", args...)
		if err != nil || exitCode(err, io.Discard) != 0 || !strings.Contains(out, "usage:") {
			t.Errorf("%v: %v %q", args, err, out)
		}
	}
	o := &options{}
	if h := tlsHint("transport: authentication handshake failed: tls: failed to verify certificate: x509: certificate signed by unknown authority", o); !strings.Contains(h, "add -ca") {
		t.Errorf("unknown authority hint %q", h)
	}
	o.insecure = true
	if h := tlsHint(`connection error: desc = "error reading server preface: EOF"`, o); !strings.Contains(h, "drop -insecure") {
		t.Errorf("insecure hint %q", h)
	}
	if eta(3000, 1000) != "3s" || eta(0, 0) != "0s" || eta(5, 0) != "?" {
		t.Errorf("eta: %s %s %s", eta(3000, 1000), eta(0, 0), eta(5, 0))
	}
}

// TestPseudoTLSHintsLive: against real listeners, each usual TLS mistake
// fails fast with the hint that fixes it.
func TestPseudoTLSHintsLive(t *testing.T) {
	dir := t.TempDir()
	ca := testpki.NewCA(t, "hint CA")
	certFile, keyFile := testpki.WriteFiles(t, dir, "server", ca.Server(t))
	tlsCfg, err := auth.ServerTLSConfig(auth.TLSFiles{Cert: certFile, Key: keyFile, ClientCA: ca.WriteCA(t, dir)})
	if err != nil {
		t.Fatal(err)
	}
	store, err := keys.OpenFileStore(filepath.Join(dir, "keys.json"), true)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.EnsureDemo(context.Background()); err != nil {
		t.Fatal(err)
	}
	cache, err := keys.NewCache(context.Background(), store, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cache.Close() })
	tlsSrv := servertest.Start(t, grpcserver.Config{Keys: cache, Auth: auth.New(auth.Config{}), TLS: tlsCfg}, true)
	devAddr, _ := startDev(t)
	other := testpki.NewCA(t, "another CA").WriteCA(t, t.TempDir())
	clientCert, clientKey := testpki.WriteFiles(t, dir, "client", ca.Client(t, "hint-client", ""))

	for _, c := range []struct {
		name string
		args []string
		hint string
	}{
		{"TLS service, no -ca", []string{"-addr", tlsSrv.Addr}, "add -ca"},
		{"TLS service, -ca of another CA", []string{"-addr", tlsSrv.Addr, "-ca", other}, "not signed by the CA of -ca"},
		{"TLS service, -insecure", []string{"-addr", tlsSrv.Addr, "-insecure"}, "drop -insecure"},
		{"TLS service, no client certificate", []string{"-addr", tlsSrv.Addr, "-ca", ca.WriteCA(t, t.TempDir())}, "give -cert and -key"},
		{"plaintext service, TLS", []string{"-addr", devAddr, "-ca", other}, "add -insecure"},
	} {
		args := append(c.args, "-timeout", "5s", "domain", "demo_v1")
		_, _, err := pseudo(t, "", args...)
		if err == nil || !strings.Contains(err.Error(), "hint:") || !strings.Contains(err.Error(), c.hint) {
			t.Errorf("%s: %v; want a hint with %q", c.name, err, c.hint)
		}
	}
	// With everything right, the same command works.
	if out, _, err := pseudo(t, "", "-addr", tlsSrv.Addr, "-ca", ca.WriteCA(t, t.TempDir()), "-cert", clientCert, "-key", clientKey,
		"-timeout", "5s", "domain", "demo_v1"); err != nil || !strings.Contains(out, "demo_v1") {
		t.Fatalf("with -ca, -cert and -key: %v %s", err, out)
	}
}
