package e2e

import (
	"context"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/ehealth-pseudo/pseudonymizer/internal/vaulttest"
)

// pendingFlags are configuration keys of deploy/kubernetes that
// cmd/pseudonymizer does not have yet, with what they are for. While the
// built binary lacks one, TestDeployConfig drops it (and says so); once the
// binary has it, the test runs with it and checks it.
var pendingFlags = map[string]string{}

// TestDeployConfig runs the built server the way deploy/kubernetes runs
// it: the Deployment's arguments and environment, and the ConfigMap's
// config.json, with only file paths and addresses pointed at the test's
// certificates and at a Vault served over TLS. It catches a configuration
// key the binary does not know (the pod would crash at start), a setting
// the deployment forgets, and checks the health names the probes use.
func TestDeployConfig(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	root, err := vaulttest.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	dep := deploymentContainer(t, filepath.Join(root, "deploy", "kubernetes", "deployment.yaml"))
	cfg := deployConfig(t, filepath.Join(root, "deploy", "kubernetes", "configmap.yaml"))
	flags := serverFlags(t)

	ve := startVault(t, vaulttest.WithTLS())
	const domain = "deploy_v1"
	ve.createDomain(t, domainSpec{name: domain, audience: "urn:e2e:deploy", pseudonymize: []string{alice}})
	roleID, secretIDFile := ve.serviceAppRole(t, 0, 0)
	pk := newPKI(t)

	healthPort := freePort(t)
	local := map[string]string{
		"tls-cert": pk.serverCert, "tls-key": pk.serverKey, "tls-client-ca": pk.caFile,
		"vault-addr": ve.v.Addr, "vault-ca": ve.v.CACert, "vault-secret-id-file": secretIDFile,
		"listen": "127.0.0.1:0", "metrics-listen": "127.0.0.1:0", "health-listen": "127.0.0.1:" + strconv.Itoa(healthPort),
	}
	for key, v := range local {
		if _, ok := cfg[key]; !ok {
			t.Errorf("config.json has no %q", key)
		}
		cfg[key] = v
	}
	healthListener := true
	for key := range cfg {
		if slices.Contains(flags, key) {
			continue
		}
		if why, ok := pendingFlags[key]; ok {
			t.Logf("NOTE: the built pseudonymizer has no -%s yet (%s); running without it", key, why)
			delete(cfg, key)
			healthListener = healthListener && key != "health-listen"
			continue
		}
		t.Errorf("config.json key %q is not a flag of pseudonymizer: the pods would not start", key)
	}
	if t.Failed() {
		t.FailNow()
	}
	cfgFile := filepath.Join(t.TempDir(), "config.json")
	b, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, cfgFile, string(b))

	args := slices.Clone(dep.Args)
	i := slices.Index(args, "-config")
	if i < 0 || i+1 >= len(args) {
		t.Fatalf("the Deployment's args %q have no -config", dep.Args)
	}
	args[i+1] = cfgFile
	var env []string
	for _, e := range dep.Env {
		switch {
		case e.Name == "PSEUDONYMIZER_VAULT_ROLE_ID":
			env = append(env, e.Name+"="+roleID)
		case e.ValueFrom != nil:
			t.Fatalf("the Deployment sets %s from a source this test does not know", e.Name)
		default:
			env = append(env, e.Name+"="+e.Value)
		}
	}

	srv := startServer(t, "pseudonymizer-deployed", cleanEnv(env...), args...)
	cc := pk.dial(t, alice, []string{srv.addr})
	for _, name := range []string{serviceHealth, ""} {
		if st, err := health(ctx, cc, name); err != nil || st != healthpb.HealthCheckResponse_SERVING {
			t.Errorf("health %q: %v, %v; want SERVING", name, st, err)
		}
	}
	tr, err := sdk(cc).Pseudonymize(ctx, domain, newPatient(newSecrets()).niss)
	if err != nil || tr == nil {
		t.Fatalf("pseudonymize on the deployed configuration: %v", err)
	}

	if healthListener {
		// What kubelet does: plaintext, no client certificate.
		plain := dialAddrs(t, []string{"127.0.0.1:" + strconv.Itoa(healthPort)}, grpc.WithTransportCredentials(insecure.NewCredentials()))
		waitFor(t, 10*time.Second, "the health listener", func() (bool, string) {
			st, err := health(ctx, plain, serviceHealth)
			return err == nil && st == healthpb.HealthCheckResponse_SERVING, st.String()
		})
		_, err := sdk(plain).Pseudonymize(ctx, domain, newPatient(newSecrets()).niss)
		if code := status.Code(err); code != codes.Unimplemented && code != codes.Unavailable {
			t.Errorf("pseudonymize on the plaintext health listener: %v; want Unimplemented", err)
		}
	}
}

// container is what the test reads of the Deployment's container.
type container struct {
	Args []string `yaml:"args"`
	Env  []struct {
		Name      string `yaml:"name"`
		Value     string `yaml:"value"`
		ValueFrom any    `yaml:"valueFrom"`
	} `yaml:"env"`
}

func deploymentContainer(t *testing.T, path string) container {
	t.Helper()
	var d struct {
		Spec struct {
			Template struct {
				Spec struct {
					Containers []container `yaml:"containers"`
				} `yaml:"spec"`
			} `yaml:"template"`
		} `yaml:"spec"`
	}
	readYAMLFile(t, path, &d)
	if len(d.Spec.Template.Spec.Containers) != 1 {
		t.Fatalf("%s: want one container", path)
	}
	return d.Spec.Template.Spec.Containers[0]
}

func deployConfig(t *testing.T, path string) map[string]any {
	t.Helper()
	var cm struct {
		Data map[string]string `yaml:"data"`
	}
	readYAMLFile(t, path, &cm)
	var cfg map[string]any
	if err := json.Unmarshal([]byte(cm.Data["config.json"]), &cfg); err != nil {
		t.Fatalf("%s: config.json: %v", path, err)
	}
	return cfg
}

// readYAMLFile decodes the single YAML document of path.
func readYAMLFile(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// serverFlags lists the flags of the built server, from its -h.
func serverFlags(t *testing.T) []string {
	t.Helper()
	out, _ := exec.Command(serverBin, "-h").CombinedOutput() // -h exits 0 or 2 depending on the flag package
	var flags []string
	for _, m := range regexp.MustCompile(`(?m)^\s+-([a-z][a-z0-9-]*)`).FindAllStringSubmatch(string(out), -1) {
		flags = append(flags, m[1])
	}
	if !slices.Contains(flags, "listen") || !slices.Contains(flags, "vault-addr") {
		t.Fatalf("could not read the flags from pseudonymizer -h:\n%s", out)
	}
	return flags
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
