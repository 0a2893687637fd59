package vaulttest

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"
)

// Cluster is a running Vault HA cluster of three nodes with integrated
// storage (raft) on loopback, plain HTTP. Each node is a [Server] with its
// own directory, API and cluster ports; [Server.Stop] and [Server.Restart]
// (or [Cluster.Stop] and [Cluster.Start]) take one node down and bring it
// back, with its data. Requests to a standby are forwarded to the active
// node, as in production, unless the client asks otherwise.
type Cluster struct {
	// Nodes are the nodes; Nodes[0] was initialized first.
	Nodes []*Server
	// RootToken is the root token of the cluster.
	RootToken string

	mu        sync.Mutex
	unsealKey string
}

// clusterNodes is the size of the cluster: a majority survives one node.
const clusterNodes = 3

// StartCluster starts three Vault nodes with raft storage, initializes the
// first with a single unseal key share, unseals it, joins the two others
// to it and unseals them, and waits until the cluster has an active node
// and three voters. The nodes stop when the test ends. It fails the test
// (never skips) if the cluster cannot be had.
func StartCluster(t testing.TB) *Cluster {
	t.Helper()
	bin := Binary(t)
	c := &Cluster{}
	for i := range clusterNodes {
		s := &Server{bin: bin, dir: t.TempDir(), cluster: c}
		var err error
		for try := 0; try < 3; try++ {
			if err = c.configure(s, i); err != nil {
				continue
			}
			if err = s.start(); err == nil {
				break
			}
		}
		if err != nil {
			t.Fatalf("vaulttest: starting Vault node %d: %v", i, err)
		}
		t.Cleanup(func() { s.stop() })
		c.Nodes = append(c.Nodes, s)
	}
	if err := c.bootstrap(); err != nil {
		t.Fatalf("vaulttest: forming the Vault cluster: %v", err)
	}
	return c
}

// configure picks free ports for node i and writes its configuration.
func (c *Cluster) configure(s *Server, i int) error {
	apiPort, err := freePort()
	if err != nil {
		return err
	}
	clusterPort, err := freePort()
	if err != nil {
		return err
	}
	if apiPort == clusterPort {
		return fmt.Errorf("port %d picked twice", apiPort)
	}
	s.listen = fmt.Sprintf("127.0.0.1:%d", apiPort)
	s.Addr = "http://" + s.listen
	raftDir := filepath.Join(s.dir, "raft")
	if err := os.MkdirAll(raftDir, 0o700); err != nil {
		return err
	}
	// performance_multiplier 2 (raft timings 2/5 of Vault's default):
	// elections within seconds, yet no spurious ones when the test machine
	// is loaded (with 1 the leader is lost now and then). Short autopilot
	// intervals: joined nodes are promoted to voters within seconds. A
	// stopped active node hands its leadership over at once.
	conf := fmt.Sprintf(`storage "raft" {
  path                         = %q
  node_id                      = "node%d"
  performance_multiplier       = 2
  autopilot_reconcile_interval = "1s"
  autopilot_update_interval    = "500ms"
}
listener "tcp" {
  address         = %q
  cluster_address = "127.0.0.1:%d"
  tls_disable     = true
}
api_addr      = %q
cluster_addr  = "https://127.0.0.1:%d"
disable_mlock = true
`, raftDir, i+1, s.listen, clusterPort, s.Addr, clusterPort)
	s.config = filepath.Join(s.dir, "vault.hcl")
	return os.WriteFile(s.config, []byte(conf), 0o600)
}

func (c *Cluster) key() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.unsealKey
}

// bootstrap initializes the first node and joins the others.
func (c *Cluster) bootstrap() error {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	first := c.Nodes[0]
	fc, err := first.apiClient("")
	if err != nil {
		return err
	}
	fc.SetClientTimeout(time.Minute) // init waits for a raft leader
	res, err := fc.Sys().InitWithContext(ctx, &api.InitRequest{SecretShares: 1, SecretThreshold: 1})
	if err != nil {
		return fmt.Errorf("init: %v", err)
	}
	if len(res.KeysB64) != 1 || res.RootToken == "" {
		return fmt.Errorf("init returned %d keys", len(res.KeysB64))
	}
	c.mu.Lock()
	c.unsealKey = res.KeysB64[0]
	c.RootToken = res.RootToken
	c.mu.Unlock()
	for _, s := range c.Nodes {
		s.RootToken = res.RootToken
	}
	if err := first.unsealRunning(); err != nil {
		return fmt.Errorf("node 0: %v", err)
	}
	// Promote joined nodes to voters after 1 s rather than 10 s.
	root, err := first.apiClient(c.RootToken)
	if err != nil {
		return err
	}
	if err := retry(ctx, func() error {
		_, err := root.Logical().WriteWithContext(ctx, "sys/storage/raft/autopilot/configuration",
			map[string]any{"server_stabilization_time": "1s"})
		return err
	}); err != nil {
		return fmt.Errorf("autopilot configuration: %v", err)
	}
	for i, s := range c.Nodes[1:] {
		sc, err := s.apiClient("")
		if err != nil {
			return err
		}
		if err := retry(ctx, func() error {
			r, err := sc.Sys().RaftJoinWithContext(ctx, &api.RaftJoinRequest{LeaderAPIAddr: first.Addr})
			if err == nil && !r.Joined {
				err = fmt.Errorf("not joined")
			}
			return err
		}); err != nil {
			return fmt.Errorf("node %d joining node 0: %v", i+1, err)
		}
		if err := s.unsealRunning(); err != nil {
			return fmt.Errorf("node %d: %v", i+1, err)
		}
	}
	return retry(ctx, func() error {
		_, voters, err := c.raftServers(ctx, root)
		if err == nil && voters != clusterNodes {
			err = fmt.Errorf("%d voters", voters)
		}
		return err
	})
}

// raftServers reads the raft configuration: whether it has a leader, and
// how many voters.
func (c *Cluster) raftServers(ctx context.Context, root *api.Client) (leader bool, voters int, err error) {
	sec, err := root.Logical().ReadWithContext(ctx, "sys/storage/raft/configuration")
	if err != nil {
		return false, 0, err
	}
	if sec == nil || sec.Data == nil {
		return false, 0, fmt.Errorf("no raft configuration")
	}
	conf, _ := sec.Data["config"].(map[string]any)
	servers, _ := conf["servers"].([]any)
	for _, sv := range servers {
		m, _ := sv.(map[string]any)
		if v, _ := m["voter"].(bool); v {
			voters++
		}
		if l, _ := m["leader"].(bool); l {
			leader = true
		}
	}
	return leader, voters, nil
}

// retry calls f until it succeeds or ctx ends (polling every 100 ms).
func retry(ctx context.Context, f func() error) error {
	for {
		err := f()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// unsealRunning unseals the running node s and waits until it serves.
func (s *Server) unsealRunning() error {
	s.mu.Lock()
	exited := s.exited
	s.mu.Unlock()
	hc, err := s.httpClient(exited)
	if err != nil {
		return err
	}
	return s.unseal(hc, exited, s.cluster.key())
}

// unseal gives a node the unseal key and waits until it is the active node
// or a standby (sys/health 200 or 429).
func (s *Server) unseal(hc *http.Client, exited <-chan struct{}, key string) error {
	c, err := s.apiClient("")
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := retry(ctx, func() error {
		select {
		case <-exited:
			return nil // reported by waitHealth
		default:
		}
		_, err := c.Sys().UnsealWithContext(ctx, key)
		return err
	}); err != nil {
		s.stop()
		return fmt.Errorf("unseal: %v\n%s", err, tail(s.logs(), 3000))
	}
	return s.waitHealth(hc, exited, "serve after unsealing", func(code int) bool {
		return code == http.StatusOK || code == http.StatusTooManyRequests
	})
}

// Addrs are the API addresses of the nodes, in order.
func (c *Cluster) Addrs() []string {
	addrs := make([]string, len(c.Nodes))
	for i, s := range c.Nodes {
		addrs[i] = s.Addr
	}
	return addrs
}

// Addr is the addresses of the nodes separated by commas, the way
// keys/vault and the service's -vault-addr take a cluster.
func (c *Cluster) Addr() string { return strings.Join(c.Addrs(), ",") }

// Stop stops node i.
func (c *Cluster) Stop(t testing.TB, i int) {
	t.Helper()
	c.Nodes[i].Stop(t)
}

// Start starts node i again after Stop, unseals it and waits until it is
// back in the cluster.
func (c *Cluster) Start(t testing.TB, i int) {
	t.Helper()
	c.Nodes[i].Restart(t)
}

// Index returns the index of node s, -1 if it is not a node of c.
func (c *Cluster) Index(s *Server) int {
	for i, n := range c.Nodes {
		if n == s {
			return i
		}
	}
	return -1
}

// running reports whether the node's process runs (it was not stopped).
func (s *Server) running() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cmd != nil
}

// Active waits (up to timeout) until a running node says it is the active
// node (sys/leader is_self, and not a standby by sys/health), and returns
// it.
func (c *Cluster) Active(t testing.TB, timeout time.Duration) *Server {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var active *Server
	err := retry(ctx, func() error {
		var errs []string
		for i, s := range c.Nodes {
			if !s.running() {
				continue
			}
			if err := s.isActive(ctx); err != nil {
				errs = append(errs, fmt.Sprintf("node %d: %v", i, err))
				continue
			}
			active = s
			return nil
		}
		return fmt.Errorf("no active node: %s", strings.Join(errs, "; "))
	})
	if err != nil {
		t.Fatalf("vaulttest: waited %v for an active Vault node: %v", timeout, err)
	}
	return active
}

func (s *Server) isActive(ctx context.Context) error {
	c, err := s.apiClient("")
	if err != nil {
		return err
	}
	l, err := c.Sys().LeaderWithContext(ctx)
	if err != nil {
		return err
	}
	if !l.IsSelf {
		return fmt.Errorf("standby (leader %q)", l.LeaderAddress)
	}
	h, err := c.Sys().HealthWithContext(ctx)
	if err != nil {
		return err
	}
	if h.Sealed || h.Standby || !h.Initialized {
		return fmt.Errorf("health: sealed %t, standby %t", h.Sealed, h.Standby)
	}
	return nil
}

// Client returns a client of the active node with the root token, without
// retries.
func (c *Cluster) Client(t testing.TB) *api.Client {
	t.Helper()
	return c.Active(t, 60*time.Second).Client(t)
}
