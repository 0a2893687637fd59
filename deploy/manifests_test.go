package deploy

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/hashicorp/hcl"
	"github.com/hashicorp/hcl/hcl/ast"
	"github.com/hashicorp/hcl/hcl/token"
	"go.yaml.in/yaml/v3"
)

// object is one Kubernetes manifest: a YAML document of a file.
type object struct {
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
	Metadata   struct {
		Name      string            `yaml:"name"`
		Namespace string            `yaml:"namespace"`
		Labels    map[string]string `yaml:"labels"`
	} `yaml:"metadata"`

	file string
	node *yaml.Node
}

func (o *object) String() string { return o.file + ": " + o.Kind + " " + o.Metadata.Name }

// decode decodes the whole document into v.
func (o *object) decode(t *testing.T, v any) {
	t.Helper()
	if err := o.node.Decode(v); err != nil {
		t.Fatalf("%s: %v", o, err)
	}
}

// readYAML decodes every document of a (multi-document) YAML file, skipping
// empty ones.
func readYAML(t *testing.T, path string) []*yaml.Node {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var docs []*yaml.Node
	dec := yaml.NewDecoder(f)
	for {
		var n yaml.Node
		err := dec.Decode(&n)
		if errors.Is(err, io.EOF) {
			return docs
		}
		if err != nil {
			t.Fatalf("%s: document %d: %v", path, len(docs)+1, err)
		}
		if len(n.Content) == 0 || n.Content[0].Kind == yaml.ScalarNode && n.Content[0].Tag == "!!null" {
			continue
		}
		docs = append(docs, &n)
	}
}

func yamlFiles(t *testing.T, dir string) []string {
	t.Helper()
	var files []string
	for _, pattern := range []string{"*.yaml", "*.yml"} {
		m, err := filepath.Glob(filepath.Join(dir, pattern))
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, m...)
	}
	if len(files) == 0 {
		t.Fatalf("no YAML file in %s", dir)
	}
	slices.Sort(files)
	return files
}

// manifests reads every Kubernetes manifest of kubernetes/ and checks that
// each has an apiVersion, a kind and a name, and a unique identity.
func manifests(t *testing.T) []*object {
	t.Helper()
	var out []*object
	seen := map[string]string{}
	for _, file := range yamlFiles(t, "kubernetes") {
		for i, n := range readYAML(t, file) {
			o := &object{file: filepath.Base(file), node: n}
			if err := n.Decode(o); err != nil {
				t.Fatalf("%s: document %d: %v", file, i+1, err)
			}
			if o.APIVersion == "" || o.Kind == "" || o.Metadata.Name == "" {
				t.Errorf("%s: document %d lacks apiVersion, kind or metadata.name", file, i+1)
				continue
			}
			if o.Kind != "Namespace" && o.Kind != "Kustomization" && o.Metadata.Namespace != "pseudonymizer" {
				t.Errorf("%s: namespace %q; want pseudonymizer", o, o.Metadata.Namespace)
			}
			id := o.Kind + "/" + o.Metadata.Namespace + "/" + o.Metadata.Name
			if prev, ok := seen[id]; ok {
				t.Errorf("%s is defined in %s and %s", id, prev, o.file)
			}
			seen[id] = o.file
			out = append(out, o)
		}
	}
	return out
}

func find(t *testing.T, objs []*object, kind, name string) *object {
	t.Helper()
	for _, o := range objs {
		if o.Kind == kind && o.Metadata.Name == name {
			return o
		}
	}
	t.Fatalf("no %s %s in kubernetes/", kind, name)
	return nil
}

func TestManifestsParse(t *testing.T) {
	objs := manifests(t)
	kinds := map[string]bool{}
	for _, o := range objs {
		kinds[o.Kind] = true
	}
	for _, k := range []string{"Namespace", "ServiceAccount", "ConfigMap", "Deployment", "Service",
		"PodDisruptionBudget", "NetworkPolicy", "Secret", "Kustomization"} {
		if !kinds[k] {
			t.Errorf("no %s among the manifests", k)
		}
	}
	// Plain YAML (Helm values) must parse too.
	for _, f := range yamlFiles(t, "vault") {
		readYAML(t, f)
	}
}

// TestKustomization checks that kustomization.yaml lists every manifest
// file but the templates (*.example.yaml), and only existing ones.
func TestKustomization(t *testing.T) {
	var k struct {
		Resources []string `yaml:"resources"`
	}
	find(t, manifests(t), "Kustomization", "pseudonymizer").decode(t, &k)
	for _, r := range k.Resources {
		if _, err := os.Stat(filepath.Join("kubernetes", r)); err != nil {
			t.Errorf("kustomization.yaml lists %s: %v", r, err)
		}
	}
	for _, f := range yamlFiles(t, "kubernetes") {
		base := filepath.Base(f)
		if base == "kustomization.yaml" || strings.HasSuffix(base, ".example.yaml") {
			continue
		}
		if !slices.Contains(k.Resources, base) {
			t.Errorf("kustomization.yaml does not list %s", base)
		}
	}
}

// Kubernetes types, reduced to what the tests check.
type (
	labelSelector struct {
		MatchLabels map[string]string `yaml:"matchLabels"`
	}
	probe struct {
		GRPC *struct {
			Port    int     `yaml:"port"`
			Service *string `yaml:"service"`
		} `yaml:"grpc"`
		PeriodSeconds int `yaml:"periodSeconds"`
	}
	container struct {
		Name    string   `yaml:"name"`
		Image   string   `yaml:"image"`
		Command []string `yaml:"command"`
		Args    []string `yaml:"args"`
		Env     []struct {
			Name  string `yaml:"name"`
			Value string `yaml:"value"`
		} `yaml:"env"`
		Ports []struct {
			Name          string `yaml:"name"`
			ContainerPort int    `yaml:"containerPort"`
		} `yaml:"ports"`
		StartupProbe   *probe `yaml:"startupProbe"`
		ReadinessProbe *probe `yaml:"readinessProbe"`
		LivenessProbe  *probe `yaml:"livenessProbe"`
		Resources      struct {
			Requests map[string]string `yaml:"requests"`
			Limits   map[string]string `yaml:"limits"`
		} `yaml:"resources"`
		SecurityContext struct {
			AllowPrivilegeEscalation *bool `yaml:"allowPrivilegeEscalation"`
			ReadOnlyRootFilesystem   *bool `yaml:"readOnlyRootFilesystem"`
			RunAsNonRoot             *bool `yaml:"runAsNonRoot"`
			Capabilities             struct {
				Drop []string `yaml:"drop"`
			} `yaml:"capabilities"`
		} `yaml:"securityContext"`
		VolumeMounts []struct {
			Name      string `yaml:"name"`
			MountPath string `yaml:"mountPath"`
			SubPath   string `yaml:"subPath"`
		} `yaml:"volumeMounts"`
	}
	affinityTerm struct {
		TopologyKey   string        `yaml:"topologyKey"`
		LabelSelector labelSelector `yaml:"labelSelector"`
	}
	deployment struct {
		Spec struct {
			Replicas *int          `yaml:"replicas"`
			Selector labelSelector `yaml:"selector"`
			Strategy struct {
				Type          string `yaml:"type"`
				RollingUpdate struct {
					MaxSurge       any `yaml:"maxSurge"`
					MaxUnavailable any `yaml:"maxUnavailable"`
				} `yaml:"rollingUpdate"`
			} `yaml:"strategy"`
			Template struct {
				Metadata struct {
					Labels map[string]string `yaml:"labels"`
				} `yaml:"metadata"`
				Spec struct {
					ServiceAccountName            string `yaml:"serviceAccountName"`
					AutomountServiceAccountToken  *bool  `yaml:"automountServiceAccountToken"`
					TerminationGracePeriodSeconds *int   `yaml:"terminationGracePeriodSeconds"`
					SecurityContext               struct {
						RunAsNonRoot   *bool `yaml:"runAsNonRoot"`
						RunAsUser      *int  `yaml:"runAsUser"`
						SeccompProfile struct {
							Type string `yaml:"type"`
						} `yaml:"seccompProfile"`
					} `yaml:"securityContext"`
					Affinity struct {
						PodAntiAffinity struct {
							Required  []affinityTerm `yaml:"requiredDuringSchedulingIgnoredDuringExecution"`
							Preferred []struct {
								Weight int          `yaml:"weight"`
								Term   affinityTerm `yaml:"podAffinityTerm"`
							} `yaml:"preferredDuringSchedulingIgnoredDuringExecution"`
						} `yaml:"podAntiAffinity"`
					} `yaml:"affinity"`
					TopologySpreadConstraints []struct {
						MaxSkew           int           `yaml:"maxSkew"`
						TopologyKey       string        `yaml:"topologyKey"`
						WhenUnsatisfiable string        `yaml:"whenUnsatisfiable"`
						LabelSelector     labelSelector `yaml:"labelSelector"`
					} `yaml:"topologySpreadConstraints"`
					Containers []container `yaml:"containers"`
					Volumes    []struct {
						Name      string `yaml:"name"`
						ConfigMap *struct {
							Name string `yaml:"name"`
						} `yaml:"configMap"`
						Secret *struct {
							SecretName string `yaml:"secretName"`
						} `yaml:"secret"`
					} `yaml:"volumes"`
				} `yaml:"spec"`
			} `yaml:"template"`
		} `yaml:"spec"`
	}
)

// serviceHealthName is the health name readiness and liveness must check:
// it stays SERVING during a Vault outage, while "" (the whole server)
// turns NOT_SERVING (internal/grpcserver).
const serviceHealthName = "pseudonymizer.v1.Pseudonymizer"

func TestDeployment(t *testing.T) {
	objs := manifests(t)
	var d deployment
	find(t, objs, "Deployment", "pseudonymizer").decode(t, &d)
	spec := d.Spec.Template.Spec
	podLabels := d.Spec.Template.Metadata.Labels

	if d.Spec.Replicas == nil || *d.Spec.Replicas < 2 {
		t.Errorf("replicas %s; want at least 2", show(d.Spec.Replicas))
	}
	if !selects(d.Spec.Selector.MatchLabels, podLabels) {
		t.Errorf("the selector %v does not select the pod labels %v", d.Spec.Selector.MatchLabels, podLabels)
	}
	if spec.ServiceAccountName == "" {
		t.Error("no serviceAccountName")
	} else {
		find(t, objs, "ServiceAccount", spec.ServiceAccountName)
	}
	if spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
		t.Error("the Kubernetes API token is mounted; the service needs none")
	}
	if spec.SecurityContext.RunAsNonRoot == nil || !*spec.SecurityContext.RunAsNonRoot || spec.SecurityContext.SeccompProfile.Type != "RuntimeDefault" {
		t.Error("pod securityContext: want runAsNonRoot and the RuntimeDefault seccomp profile")
	}
	if len(spec.Containers) != 1 {
		t.Fatalf("%d containers; want 1", len(spec.Containers))
	}
	c := spec.Containers[0]
	ports := map[string]int{}
	for _, p := range c.Ports {
		ports[p.Name] = p.ContainerPort
	}

	// Never the development mode (plaintext, key file, caller named by a
	// header).
	for _, a := range slices.Concat(c.Command, c.Args) {
		if a == "-dev" || a == "--dev" || strings.HasPrefix(a, "-dev=") || strings.HasPrefix(a, "--dev=") {
			t.Errorf("the container runs with %s", a)
		}
	}
	for _, e := range c.Env {
		if e.Name == "PSEUDONYMIZER_DEV" && e.Value != "" && e.Value != "false" {
			t.Errorf("the container sets %s=%s", e.Name, e.Value)
		}
		if e.Name == "PSEUDONYMIZER_VAULT_TOKEN" || e.Name == "VAULT_TOKEN" {
			if e.Value != "" {
				t.Errorf("a Vault token in plain text in the Deployment (%s)", e.Name)
			}
		}
	}

	// Probes: gRPC health, on a declared port, for the service's health
	// name.
	for name, p := range map[string]*probe{"readiness": c.ReadinessProbe, "liveness": c.LivenessProbe, "startup": c.StartupProbe} {
		switch {
		case p == nil && name == "startup":
		case p == nil || p.GRPC == nil:
			t.Errorf("no gRPC %s probe", name)
		case p.GRPC.Service == nil || *p.GRPC.Service != serviceHealthName:
			t.Errorf("%s probe checks health name %s; want %q (\"\" turns NOT_SERVING during a Vault outage)", name, show(p.GRPC.Service), serviceHealthName)
		case !slices.Contains(slices.Collect(maps.Values(ports)), p.GRPC.Port):
			t.Errorf("%s probe on port %d, which the container does not declare", name, p.GRPC.Port)
		}
	}

	if c.Resources.Requests["cpu"] == "" || c.Resources.Requests["memory"] == "" || c.Resources.Limits["memory"] == "" {
		t.Errorf("resources %+v: want cpu and memory requests and a memory limit", c.Resources)
	}
	sc := c.SecurityContext
	if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Error("the root filesystem is writable")
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Error("privilege escalation is allowed")
	}
	if !slices.Contains(sc.Capabilities.Drop, "ALL") {
		t.Error("capabilities are not all dropped")
	}
	if c.Image == "" || strings.HasSuffix(c.Image, ":latest") || !strings.Contains(c.Image, ":") {
		t.Errorf("image %q: want a pinned tag or digest", c.Image)
	}

	// Volumes: every mount has a volume, and the ConfigMaps and Secrets the
	// kustomization creates exist.
	volumes := map[string]bool{}
	for _, v := range spec.Volumes {
		volumes[v.Name] = true
		if v.ConfigMap != nil && v.ConfigMap.Name == "pseudonymizer-config" {
			find(t, objs, "ConfigMap", v.ConfigMap.Name)
		}
	}
	mounts := map[string]string{} // path → volume
	for _, m := range c.VolumeMounts {
		if !volumes[m.Name] {
			t.Errorf("volume mount %s: no such volume", m.Name)
		}
		mounts[m.MountPath] = m.Name
	}

	// The configuration file: the one -config names, mounted; production
	// settings; its files mounted; its ports declared.
	cfgPath := ""
	for i, a := range c.Args {
		if (a == "-config" || a == "--config") && i+1 < len(c.Args) {
			cfgPath = c.Args[i+1]
		}
	}
	if mounts[cfgPath] != "config" {
		t.Fatalf("-config %q is not the mounted ConfigMap", cfgPath)
	}
	var cm struct {
		Data map[string]string `yaml:"data"`
	}
	find(t, objs, "ConfigMap", "pseudonymizer-config").decode(t, &cm)
	var cfg map[string]any
	if err := json.Unmarshal([]byte(cm.Data[filepath.Base(cfgPath)]), &cfg); err != nil {
		t.Fatalf("config.json: %v", err)
	}
	if dev, _ := cfg["dev"].(bool); dev {
		t.Error("config.json enables development mode")
	}
	if _, ok := cfg["vault-token"]; ok {
		t.Error("config.json holds a Vault token")
	}
	if addr, _ := cfg["vault-addr"].(string); !strings.HasPrefix(addr, "https://") {
		t.Errorf("vault-addr %q: want https", addr)
	}
	for _, key := range []string{"tls-cert", "tls-key", "tls-client-ca", "vault-ca", "vault-secret-id-file"} {
		path, _ := cfg[key].(string)
		if path == "" {
			t.Errorf("config.json: no %s", key)
			continue
		}
		if !mountedFile(mounts, path) {
			t.Errorf("config.json: %s %s is in no mounted volume", key, path)
		}
	}
	for key, port := range map[string]string{"listen": "grpc", "metrics-listen": "metrics", "health-listen": "health"} {
		addr, _ := cfg[key].(string)
		_, p, err := net.SplitHostPort(addr)
		n, _ := strconv.Atoi(p)
		if err != nil || n != ports[port] {
			t.Errorf("config.json: %s %q; want the %s port %d", key, addr, port, ports[port])
		}
	}
	if grace, shutdown := d.Spec.Template.Spec.TerminationGracePeriodSeconds, cfg["shutdown-timeout"]; grace == nil || shutdown == nil {
		t.Error("want terminationGracePeriodSeconds and shutdown-timeout")
	}

	// What selects the pods: both Services, the PodDisruptionBudget, the
	// NetworkPolicy.
	var headless, regular int
	for _, o := range objs {
		switch o.Kind {
		case "Service":
			var s struct {
				Spec struct {
					ClusterIP string            `yaml:"clusterIP"`
					Selector  map[string]string `yaml:"selector"`
					Ports     []struct {
						Name       string `yaml:"name"`
						TargetPort any    `yaml:"targetPort"`
					} `yaml:"ports"`
				} `yaml:"spec"`
			}
			o.decode(t, &s)
			if !selects(s.Spec.Selector, podLabels) {
				t.Errorf("%s selects %v, not the pods", o, s.Spec.Selector)
			}
			for _, p := range s.Spec.Ports {
				if name, ok := p.TargetPort.(string); ok && ports[name] == 0 {
					t.Errorf("%s: targetPort %s is not a container port", o, name)
				}
			}
			if s.Spec.ClusterIP == "None" {
				headless++
			} else {
				regular++
			}
		case "PodDisruptionBudget":
			var p struct {
				Spec struct {
					MinAvailable *int          `yaml:"minAvailable"`
					Selector     labelSelector `yaml:"selector"`
				} `yaml:"spec"`
			}
			o.decode(t, &p)
			if !selects(p.Spec.Selector.MatchLabels, podLabels) {
				t.Errorf("%s does not select the pods", o)
			}
			if p.Spec.MinAvailable == nil || *p.Spec.MinAvailable < 1 || d.Spec.Replicas != nil && *p.Spec.MinAvailable >= *d.Spec.Replicas {
				t.Errorf("%s: minAvailable %s with %s replicas: want at least 1 and fewer than the replicas (or drains block)", o, show(p.Spec.MinAvailable), show(d.Spec.Replicas))
			}
		case "NetworkPolicy":
			var np struct {
				Spec struct {
					PodSelector labelSelector `yaml:"podSelector"`
					PolicyTypes []string      `yaml:"policyTypes"`
					Ingress     []struct {
						Ports []struct {
							Port any `yaml:"port"`
						} `yaml:"ports"`
					} `yaml:"ingress"`
				} `yaml:"spec"`
			}
			o.decode(t, &np)
			if !selects(np.Spec.PodSelector.MatchLabels, podLabels) {
				t.Errorf("%s does not select the pods", o)
			}
			if !slices.Contains(np.Spec.PolicyTypes, "Ingress") || !slices.Contains(np.Spec.PolicyTypes, "Egress") {
				t.Errorf("%s: policyTypes %v; want Ingress and Egress", o, np.Spec.PolicyTypes)
			}
			for _, in := range np.Spec.Ingress {
				for _, p := range in.Ports {
					if name, ok := p.Port.(string); ok && ports[name] == 0 {
						t.Errorf("%s: port %s is not a container port", o, name)
					}
				}
			}
		}
	}
	if headless != 1 || regular != 1 {
		t.Errorf("%d headless and %d regular Services; want one of each", headless, regular)
	}
}

// show formats an optional value.
func show[T any](p *T) string {
	if p == nil {
		return "(unset)"
	}
	return fmt.Sprintf("%#v", *p)
}

// selects reports whether a non-empty selector matches labels.
func selects(selector, labels map[string]string) bool {
	if len(selector) == 0 {
		return false
	}
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// mountedFile reports whether path is inside one of the mounts.
func mountedFile(mounts map[string]string, path string) bool {
	for m := range mounts {
		if strings.HasPrefix(path, strings.TrimSuffix(m, "/")+"/") {
			return true
		}
	}
	return false
}

// TestHCL parses every HCL file of the deployment and the Vault policies.
func TestHCL(t *testing.T) {
	var files []string
	for _, pattern := range []string{"*.hcl", "*/*.hcl", "../vault/policies/*.hcl"} {
		m, err := filepath.Glob(pattern)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, m...)
	}
	if len(files) < 2 {
		t.Fatalf("HCL files: %v", files)
	}
	for _, f := range files {
		parseHCL(t, f)
	}
}

func parseHCL(t *testing.T, path string) *ast.ObjectList {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	f, err := hcl.Parse(string(b))
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return f.Node.(*ast.ObjectList)
}

// TestVaultHA checks the Vault server configuration: Raft storage joined
// to three nodes over TLS, and TLS on the listener.
func TestVaultHA(t *testing.T) {
	root := parseHCL(t, filepath.Join("vault", "vault-config.hcl"))

	raft := root.Filter("storage", "raft").Items
	if len(raft) != 1 {
		t.Fatalf("%d storage \"raft\" blocks; want 1", len(raft))
	}
	if len(root.Filter("storage").Items) != 1 {
		t.Error("more than one storage block")
	}
	body := raft[0].Val.(*ast.ObjectType).List
	if p := str(body, "path"); p == "" {
		t.Error("raft storage has no path")
	}
	joins := body.Filter("retry_join").Items
	if len(joins) != 3 {
		t.Fatalf("%d retry_join blocks; want 3", len(joins))
	}
	leaders := map[string]bool{}
	for _, j := range joins {
		jb := j.Val.(*ast.ObjectType).List
		addr := str(jb, "leader_api_addr")
		if !strings.HasPrefix(addr, "https://") {
			t.Errorf("retry_join leader_api_addr %q: want https", addr)
		}
		if str(jb, "leader_ca_cert_file") == "" {
			t.Errorf("retry_join %s: no leader_ca_cert_file", addr)
		}
		leaders[addr] = true
	}
	if len(leaders) != 3 {
		t.Errorf("retry_join names %d distinct leaders; want 3", len(leaders))
	}

	listeners := root.Filter("listener", "tcp").Items
	if len(listeners) == 0 {
		t.Fatal("no tcp listener")
	}
	for _, l := range listeners {
		lb := l.Val.(*ast.ObjectType).List
		if v := lit(lb, "tls_disable"); v != nil && (v.Type == token.BOOL && v.Text == "true" || v.Text == `"true"` || v.Text == "1") {
			t.Error("a listener disables TLS")
		}
		if str(lb, "tls_cert_file") == "" || str(lb, "tls_key_file") == "" {
			t.Error("a listener has no TLS certificate")
		}
	}

	// The Helm values run three Raft replicas.
	var values struct {
		Server struct {
			HA struct {
				Enabled  bool `yaml:"enabled"`
				Replicas int  `yaml:"replicas"`
				Raft     struct {
					Enabled bool `yaml:"enabled"`
				} `yaml:"raft"`
			} `yaml:"ha"`
		} `yaml:"server"`
	}
	docs := readYAML(t, filepath.Join("vault", "values.yaml"))
	if len(docs) != 1 {
		t.Fatalf("values.yaml: %d documents", len(docs))
	}
	if err := docs[0].Decode(&values); err != nil {
		t.Fatal(err)
	}
	if ha := values.Server.HA; !ha.Enabled || !ha.Raft.Enabled || ha.Replicas != len(joins) {
		t.Errorf("values.yaml server.ha %+v; want enabled, raft enabled, %d replicas", ha, len(joins))
	}
}

// lit returns the literal assigned to key in an HCL block, or nil.
func lit(l *ast.ObjectList, key string) *token.Token {
	items := l.Filter(key).Items
	if len(items) == 0 {
		return nil
	}
	if v, ok := items[0].Val.(*ast.LiteralType); ok {
		return &v.Token
	}
	return nil
}

// str returns the string assigned to key in an HCL block, or "".
func str(l *ast.ObjectList, key string) string {
	if tk := lit(l, key); tk != nil && tk.Type == token.STRING {
		s, _ := tk.Value().(string)
		return s
	}
	return ""
}

const hostnameKey = "kubernetes.io/hostname"

// intOrPercent resolves a rolling update's maxSurge or maxUnavailable
// against the replicas, as Kubernetes does (surge rounds up, unavailable
// down); def when unset (25%).
func intOrPercent(t *testing.T, n any, replicas int, roundUp bool) int {
	t.Helper()
	v := "25%"
	if n != nil {
		v = fmt.Sprint(n)
	}
	if p, ok := strings.CutSuffix(v, "%"); ok {
		pct, err := strconv.Atoi(p)
		if err != nil {
			t.Fatalf("rolling update value %q", v)
		}
		if roundUp {
			return (pct*replicas + 99) / 100
		}
		return pct * replicas / 100
	}
	i, err := strconv.Atoi(v)
	if err != nil {
		t.Fatalf("rolling update value %q", v)
	}
	return i
}

// TestRolloutProgresses: a rolling update can always make progress, even on
// a cluster with exactly as many nodes as replicas, and the replicas are
// still spread over nodes and zones (softly). The deadlock this guards
// against: required one-replica-per-node anti-affinity with maxUnavailable
// 0 leaves the surge pod no node to run on, so no old pod is ever removed.
func TestRolloutProgresses(t *testing.T) {
	var d deployment
	find(t, manifests(t), "Deployment", "pseudonymizer").decode(t, &d)
	spec := d.Spec.Template.Spec
	podLabels := d.Spec.Template.Metadata.Labels
	replicas := 1
	if d.Spec.Replicas != nil {
		replicas = *d.Spec.Replicas
	}
	if d.Spec.Strategy.Type != "" && d.Spec.Strategy.Type != "RollingUpdate" {
		t.Fatalf("strategy %q; want RollingUpdate", d.Spec.Strategy.Type)
	}
	surge := intOrPercent(t, d.Spec.Strategy.RollingUpdate.MaxSurge, replicas, true)
	unavailable := intOrPercent(t, d.Spec.Strategy.RollingUpdate.MaxUnavailable, replicas, false)
	if surge < 1 && unavailable < 1 {
		t.Fatalf("maxSurge %d and maxUnavailable %d: a rollout can neither add nor remove a pod", surge, unavailable)
	}

	// Hard rules that keep a new pod off a node that runs a replica.
	hardPerNode := false
	for _, term := range spec.Affinity.PodAntiAffinity.Required {
		if term.TopologyKey == hostnameKey && selects(term.LabelSelector.MatchLabels, podLabels) {
			hardPerNode = true
		}
	}
	for _, c := range spec.TopologySpreadConstraints {
		if c.TopologyKey == hostnameKey && c.WhenUnsatisfiable != "ScheduleAnyway" && c.MaxSkew < 1 {
			hardPerNode = true
		}
	}
	// With N nodes for N replicas, a surge pod only fits when no hard rule
	// keeps it off the nodes; otherwise the rollout must be allowed to
	// remove an old pod first.
	if hardPerNode && unavailable < 1 {
		t.Errorf("required per-node anti-affinity with maxUnavailable %d: on %d nodes the surge pod fits nowhere and the rollout never progresses; use preferred anti-affinity or a ScheduleAnyway topology spread", unavailable, replicas)
	}
	if !hardPerNode && surge < 1 && unavailable < 1 {
		t.Error("no surge and no unavailability: the rollout cannot progress")
	}

	// Spreading is still asked for, softly, over nodes and zones.
	for _, key := range []string{hostnameKey, "topology.kubernetes.io/zone"} {
		spread := false
		for _, p := range spec.Affinity.PodAntiAffinity.Preferred {
			if p.Term.TopologyKey == key && p.Weight > 0 && selects(p.Term.LabelSelector.MatchLabels, podLabels) {
				spread = true
			}
		}
		for _, r := range spec.Affinity.PodAntiAffinity.Required {
			if r.TopologyKey == key && selects(r.LabelSelector.MatchLabels, podLabels) {
				spread = true
			}
		}
		for _, c := range spec.TopologySpreadConstraints {
			if c.TopologyKey == key && c.MaxSkew >= 1 && selects(c.LabelSelector.MatchLabels, podLabels) {
				spread = true
			}
		}
		if !spread {
			t.Errorf("replicas are not spread over %s (preferred pod anti-affinity or a topology spread constraint)", key)
		}
	}
}
