package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/ehealth-pseudo/pseudonymizer/internal/syncbuf"
	"github.com/ehealth-pseudo/pseudonymizer/internal/testpki"
	"github.com/ehealth-pseudo/pseudonymizer/internal/waitfor"
	"github.com/ehealth-pseudo/pseudonymizer/keys"
	pb "github.com/ehealth-pseudo/pseudonymizer/proto/pseudonymizer/v1"
)

func env(vars map[string]string) func(string) string {
	return func(k string) string { return vars[k] }
}

func TestConfigPrecedence(t *testing.T) {
	file := filepath.Join(t.TempDir(), "config.json")
	if err := os.WriteFile(file, []byte(`{"max-batch": 30, "burst": 300, "rate": 2.5, "dev": true, "listen": "127.0.0.1:1", "log-format": "text"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := parseConfig([]string{"-max-batch", "10"}, env(map[string]string{
		"PSEUDONYMIZER_CONFIG":    file,
		"PSEUDONYMIZER_MAX_BATCH": "20", // a flag beats the environment
		"PSEUDONYMIZER_BURST":     "200",
	}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.maxBatch != 10 || c.burst != 200 || c.rate != 2.5 || !c.dev || c.listen != "127.0.0.1:1" || c.logFormat != "text" {
		t.Fatalf("config %+v", c)
	}
	// Defaults.
	if c.maxMsgSize != 0 || c.pollInterval != keys.DefaultPollInterval || c.metricsListen != "127.0.0.1:9090" {
		t.Fatalf("defaults %+v", c)
	}

	for name, args := range map[string][]string{
		"unknown flag":     {"-nope"},
		"positional":       {"extra"},
		"bad value":        {"-max-batch", "many"},
		"unknown file key": {"-config", writeFile(t, `{"listne": "x"}`)},
		"nested file":      {"-config", writeFile(t, `{"listen": {"a": 1}}`)},
	} {
		if _, err := parseConfig(args, env(nil), io.Discard); !errors.As(err, new(*usageError)) {
			t.Errorf("%s: %v; want a usage error", name, err)
		}
	}
	if _, err := parseConfig([]string{"-h"}, env(nil), io.Discard); !errors.Is(err, flag.ErrHelp) {
		t.Errorf("-h: %v", err)
	}
}

// TestConfigSplitShares: -share-file and -vault-shares-mount come, like
// every flag, from the command line, the environment
// (PSEUDONYMIZER_SHARE_FILE, PSEUDONYMIZER_VAULT_SHARES_MOUNT, or the earlier
// name PSEUDONYMIZER_SHARES_MOUNT when the new one is unset) or the config
// file, in that order; unset, the store's defaults apply (k₁ in KV, the
// plugin at pseudonymizer-shares).
func TestConfigSplitShares(t *testing.T) {
	file := writeFile(t, `{"share-file": "/from/file.json", "vault-shares-mount": "file-mount"}`)
	for _, tc := range []struct {
		name             string
		args             []string
		env              map[string]string
		wantFile, wantMt string
	}{
		{"defaults", nil, nil, "", ""},
		{"flags", []string{"-share-file", "/flag.json", "-vault-shares-mount", "flag-mount"},
			map[string]string{"PSEUDONYMIZER_SHARE_FILE": "/env.json", "PSEUDONYMIZER_VAULT_SHARES_MOUNT": "env-mount"},
			"/flag.json", "flag-mount"},
		{"environment", nil,
			map[string]string{"PSEUDONYMIZER_SHARE_FILE": "/env.json", "PSEUDONYMIZER_VAULT_SHARES_MOUNT": "env-mount", "PSEUDONYMIZER_CONFIG": file},
			"/env.json", "env-mount"},
		{"earlier variable name", nil, map[string]string{"PSEUDONYMIZER_SHARES_MOUNT": "old-mount"}, "", "old-mount"},
		{"new variable name first", nil,
			map[string]string{"PSEUDONYMIZER_SHARES_MOUNT": "old-mount", "PSEUDONYMIZER_VAULT_SHARES_MOUNT": "env-mount"}, "", "env-mount"},
		{"config file", []string{"-config", file}, nil, "/from/file.json", "file-mount"},
	} {
		c, err := parseConfig(tc.args, env(tc.env), io.Discard)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if c.shareFile != tc.wantFile || c.vaultSharesMount != tc.wantMt {
			t.Errorf("%s: share file %q, shares mount %q; want %q, %q", tc.name, c.shareFile, c.vaultSharesMount, tc.wantFile, tc.wantMt)
		}
	}
}

func writeFile(t *testing.T, content string) string {
	p := filepath.Join(t.TempDir(), "f.json")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestConfigChecks(t *testing.T) {
	for _, tc := range []struct {
		args []string
		env  map[string]string
		want string // part of the error; "" for none
	}{
		{[]string{"-dev"}, nil, ""},
		{[]string{"-dev", "-listen", "0.0.0.0:50051"}, nil, "-dev is loopback-only"},
		{[]string{"-dev", "-listen", ":50051"}, nil, "-dev is loopback-only"},
		{[]string{"-listen", "127.0.0.1:1"}, nil, "TLS is required"},
		{[]string{"-tls-cert", "c", "-tls-key", "k", "-vault-addr", "https://v"}, nil, "no way to identify callers"},
		{[]string{"-tls-cert", "c", "-tls-key", "k", "-tls-client-ca", "ca"}, nil, "no key store"},
		{[]string{"-tls-cert", "c", "-tls-key", "k", "-tls-client-ca", "ca"}, map[string]string{"VAULT_ADDR": "https://v"}, ""},
		{[]string{"-tls-cert", "c"}, nil, "go together"},
		{[]string{"-dev", "-jwt-key", "k"}, nil, "-jwt-issuer and -jwt-audience"},
		{[]string{"-dev", "-max-batch", "1000", "-burst", "10"}, nil, "-burst (10) must be at least -max-batch"},
		{[]string{"-dev", "-max-batch", "1000", "-burst", "10", "-rate", "0"}, nil, ""},
		{[]string{"-dev", "-vault-addr", "https://v"}, nil, "drop -vault-addr"},
		{[]string{"-dev"}, map[string]string{"VAULT_ADDR": "https://v"}, ""}, // VAULT_ADDR alone does not conflict
		{[]string{"-dev", "-log-format", "xml"}, nil, "-log-format"},
		// Development mode keeps single-key domains: no share file.
		{[]string{"-dev", "-share-file", "/run/shares.json"}, nil, "drop -share-file"},
		{[]string{"-dev"}, map[string]string{"PSEUDONYMIZER_SHARE_FILE": "/run/shares.json"}, "drop -share-file"},
		{[]string{"-tls-cert", "c", "-tls-key", "k", "-tls-client-ca", "ca", "-vault-addr", "https://v",
			"-share-file", "/run/shares.json", "-vault-shares-mount", "shares"}, nil, ""},
		{[]string{"-dev", "-vault-shares-window", "2ms", "-vault-shares-inflight", "1"}, nil, ""},
		{[]string{"-dev", "-vault-shares-inflight", "0"}, nil, "-vault-shares-inflight must be positive"},
		{[]string{"-dev", "-vault-shares-window", "0s"}, nil, "-vault-shares-window and"},
		{[]string{"-dev"}, map[string]string{"PSEUDONYMIZER_VAULT_SHARES_INFLIGHT": "-1"}, "must be positive"},
	} {
		c, err := parseConfig(tc.args, env(tc.env), io.Discard)
		if err == nil {
			err = c.check(env(tc.env))
		}
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%v: %v", tc.args, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%v: %v; want an error with %q", tc.args, err, tc.want)
		}
	}
}

// TestDevLoopbackOnly enumerates -dev with every transport setting (plaintext,
// TLS, mTLS, mTLS and bearer tokens) and every listener flag over loopback,
// private, public and wildcard addresses: the configuration is accepted
// exactly when every listener given is on a loopback address.
func TestDevLoopbackOnly(t *testing.T) {
	transports := [][]string{
		nil,
		{"-tls-cert", "c", "-tls-key", "k"},
		{"-tls-cert", "c", "-tls-key", "k", "-tls-client-ca", "ca"},
		{"-tls-cert", "c", "-tls-key", "k", "-tls-client-ca", "ca", "-jwt-key", "j", "-jwt-issuer", "i", "-jwt-audience", "a"},
	}
	addrs := map[string]bool{
		"127.0.0.1:1": true, "[::1]:1": true, "localhost:1": true, "127.9.9.9:1": true,
		"0.0.0.0:1": false, ":1": false, "[::]:1": false, "10.0.0.1:1": false, "192.168.0.1:1": false, "8.8.8.8:1": false, "example.org:1": false,
	}
	// Every listener flag, found by name, so that a new listener is covered
	// without editing this test.
	var listeners []string
	(&config{}).flags(io.Discard).VisitAll(func(f *flag.Flag) {
		if f.Name == "listen" || strings.HasSuffix(f.Name, "-listen") {
			listeners = append(listeners, "-"+f.Name)
		}
	})
	if len(listeners) < 4 {
		t.Fatalf("listener flags %v: want -listen, -health-listen, -metrics-listen, -rest-listen at least", listeners)
	}
	n := 0
	for _, tr := range transports {
		for _, flagName := range listeners {
			for addr, ok := range addrs {
				args := append([]string{"-dev", flagName, addr}, tr...)
				c, err := parseConfig(args, env(nil), io.Discard)
				if err == nil {
					err = c.check(env(nil))
				}
				if (err == nil) != ok {
					t.Errorf("%v: %v, want accepted=%v", args, err, ok)
				}
				n++
			}
		}
	}
	if n != len(transports)*len(listeners)*len(addrs) {
		t.Fatalf("%d combinations", n)
	}
}

var servingRE = regexp.MustCompile(`serving gRPC on (\S+)`)

// startRun runs the command until the test ends and returns the gRPC
// address it serves.
func startRun(t *testing.T, args []string) (addr string, stdout *syncbuf.Buffer) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	stdout, stderr := &syncbuf.Buffer{}, &syncbuf.Buffer{}
	done := make(chan error, 1)
	go func() { done <- run(ctx, args, env(nil), stdout, stderr) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("run: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("run did not stop after its context ended")
		}
		if !strings.Contains(stderr.String(), "pseudonymizer: stopped") {
			t.Errorf("no clean stop in the log:\n%s", stderr.String())
		}
	})
	var served string
	waitfor.State(t, 10*time.Second, "the server to start", func() (bool, string) {
		if m := servingRE.FindStringSubmatch(stdout.String()); m != nil {
			served = m[1]
			return true, ""
		}
		select {
		case err := <-done:
			t.Fatalf("run returned %v\nstderr:\n%s", err, stderr.String())
		default:
		}
		return false, "stderr: " + stderr.String()
	})
	return served, stdout
}

func TestRunDev(t *testing.T) {
	dataDir := t.TempDir()
	addr, stdout := startRun(t, []string{"-dev", "-listen", "127.0.0.1:0", "-metrics-listen", "", "-data-dir", dataDir})
	// The hint follows the "serving" line that startRun waited for.
	waitfor.State(t, 10*time.Second, "the development hint", func() (bool, string) {
		for _, want := range []string{"grpcurl -plaintext", "go run ./cmd/pseudo -addr " + addr + " -insecure -principal alice pseudonymize -domain " + keys.DemoDomain} {
			if !strings.Contains(stdout.String(), want) {
				return false, fmt.Sprintf("the hint lacks %q:\n%s", want, stdout.String())
			}
		}
		return true, ""
	})
	fi, err := os.Stat(filepath.Join(dataDir, "keys.json"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v, %v", fi, err)
	}

	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := pb.NewPseudonymizerClient(conn).GetDomain(metadata.AppendToOutgoingContext(ctx, "x-pseudonymizer-principal", "alice"),
		&pb.GetDomainRequest{Name: keys.DemoDomain})
	if err != nil || len(resp.GetAllowedOperations()) != 2 {
		t.Fatalf("GetDomain on the demo domain: %v, %v", resp, err)
	}
	if hr, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil || hr.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health: %v, %v", hr, err)
	}
}

func TestRunDevMTLS(t *testing.T) {
	dir := t.TempDir()
	ca := testpki.NewCA(t, "test CA")
	cert, key := testpki.WriteFiles(t, dir, "server", ca.Server(t))
	addr, stdout := startRun(t, []string{"-dev", "-listen", "127.0.0.1:0", "-metrics-listen", "127.0.0.1:0",
		"-health-listen", "127.0.0.1:0",
		"-data-dir", dir, "-tls-cert", cert, "-tls-key", key, "-tls-client-ca", ca.WriteCA(t, dir)})

	dialAs := func(cn string) *grpc.ClientConn {
		conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{
			RootCAs: ca.Pool(), Certificates: []tls.Certificate{ca.Client(t, cn, "")}, MinVersion: tls.VersionTLS12,
		})))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = conn.Close() })
		return conn
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// The certificate names the caller: a doctor may pseudonymize and
	// identify in the demo domain; demo-owner owns it, so it may do
	// neither (owners never obtain identifiers).
	resp, err := pb.NewPseudonymizerClient(dialAs("doctor-1")).GetDomain(ctx, &pb.GetDomainRequest{Name: keys.DemoDomain})
	if err != nil || !slices.Equal(resp.GetAllowedOperations(), []pb.Operation{pb.Operation_OPERATION_PSEUDONYMIZE, pb.Operation_OPERATION_IDENTIFY}) {
		t.Fatalf("GetDomain as a doctor: %v, %v", resp, err)
	}
	if _, err := pb.NewPseudonymizerClient(dialAs("demo-owner")).GetDomain(ctx, &pb.GetDomainRequest{Name: keys.DemoDomain}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("GetDomain as the demo owner: %v, want PERMISSION_DENIED", err)
	}

	m := regexp.MustCompile(`serving metrics on (\S+)`).FindStringSubmatch(stdout.String())
	if m == nil {
		t.Fatalf("no metrics address in:\n%s", stdout.String())
	}
	hr, err := http.Get(m[1])
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(hr.Body)
	hr.Body.Close()
	if !strings.Contains(string(body), `grpc_server_handled_total{grpc_code="OK",grpc_method="GetDomain"`) {
		t.Fatalf("metrics:\n%s", body)
	}

	// The probe listener: plaintext, no client certificate, health only.
	hm := regexp.MustCompile(`serving health probes \(plaintext, health only\) on (\S+)`).FindStringSubmatch(stdout.String())
	if hm == nil {
		t.Fatalf("no health address in:\n%s", stdout.String())
	}
	probe, err := grpc.NewClient(hm[1], grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer probe.Close()
	for _, service := range []string{"", "pseudonymizer.v1.Pseudonymizer"} {
		if r, err := healthpb.NewHealthClient(probe).Check(ctx, &healthpb.HealthCheckRequest{Service: service}); err != nil || r.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Fatalf("probe health %q: %v, %v", service, r, err)
		}
	}
	if _, err := pb.NewPseudonymizerClient(probe).GetDomain(ctx, &pb.GetDomainRequest{Name: keys.DemoDomain}); status.Code(err) != codes.Unimplemented {
		t.Fatalf("the probe listener serves more than health: %v", err)
	}
}
