package vault_test

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ehealth-pseudo/pseudonymizer/internal/vaulttest"
	"github.com/ehealth-pseudo/pseudonymizer/internal/waitfor"
	"github.com/ehealth-pseudo/pseudonymizer/keys"
	"github.com/ehealth-pseudo/pseudonymizer/keys/keystest"
	"github.com/ehealth-pseudo/pseudonymizer/keys/vault"
	"github.com/ehealth-pseudo/pseudonymizer/vault/policies"
)

// closedAddr is the URL of a loopback port nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := "http://" + l.Addr().String()
	l.Close()
	return addr
}

// hangUp listens on loopback and closes every connection it accepts at
// once (a node that dies mid-request), counting them.
type hangUp struct {
	l net.Listener
	n atomic.Int64
}

func newHangUp(t *testing.T) *hangUp {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h := &hangUp{l: l}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			h.n.Add(1)
			c.Close()
		}
	})
	t.Cleanup(func() { l.Close(); wg.Wait() })
	return h
}

func (h *hangUp) addr() string { return "http://" + h.l.Addr().String() }

// moves records the store's "now using another node" events.
type moves struct {
	slog.Handler
	mu    sync.Mutex
	nodes []string
}

func newMoves() *moves { return &moves{Handler: slog.DiscardHandler} }

func (m *moves) Enabled(context.Context, slog.Level) bool { return true }

func (m *moves) Handle(_ context.Context, r slog.Record) error {
	if r.Message != "vault: now using another node" {
		return nil
	}
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "node" {
			m.mu.Lock()
			m.nodes = append(m.nodes, a.Value.String())
			m.mu.Unlock()
		}
		return true
	})
	return nil
}

func (m *moves) list() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]string(nil), m.nodes...)
}

// TestFailover lists nodes that fail in front of a real Vault: a closed
// port, a node that hangs up, a sealed Vault. The store gets through, moves
// to the Vault that answers, sticks to it, and classifies errors as with a
// single address.
func TestFailover(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	var srv, sealed *vaulttest.Server
	var wg sync.WaitGroup
	wg.Go(func() { srv = start(t) })
	wg.Go(func() { sealed = vaulttest.Start(t) })
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	if err := sealed.Client(t).Sys().Seal(); err != nil {
		t.Fatal(err)
	}
	dead, hung := closedAddr(t), newHangUp(t)
	addrs := strings.Join([]string{dead, hung.addr(), sealed.Addr, srv.Addr}, ", ")
	m := newMoves()
	s, err := vault.Open(ctx, vault.Config{Address: addrs, Token: srv.RootToken, MaxRetries: -1, Logger: slog.New(m)})
	if err != nil {
		t.Fatalf("Open(%s): %v", addrs, err)
	}
	defer s.Close()
	if got := m.list(); len(got) != 1 || got[0] != srv.Addr {
		t.Fatalf("moves = %v; want one, to %s", got, srv.Addr)
	}
	if n := hung.n.Load(); n != 1 {
		t.Fatalf("the hanging node got %d connections; want 1", n)
	}
	// It sticks to the node that answered.
	if _, err := s.CreateDomain(ctx, keystest.Spec); err != nil {
		t.Fatal(err)
	}
	for range 20 {
		if _, err := s.Domain(ctx, keystest.Spec.Name); err != nil {
			t.Fatal(err)
		}
	}
	if n := hung.n.Load(); n != 1 {
		t.Fatalf("the hanging node got %d connections after the store moved; want 1", n)
	}
	if got := m.list(); len(got) != 1 {
		t.Fatalf("moves = %v; want one", got)
	}

	// Errors are classified as with one address.
	if _, err := s.Domain(ctx, "nope_v1"); !errors.Is(err, keys.ErrUnknownDomain) {
		t.Errorf("Domain(nope_v1) = %v; want ErrUnknownDomain", err)
	}
	if _, err := vault.Open(ctx, vault.Config{Address: addrs, Token: "wrong", MaxRetries: -1, Logger: slog.New(newMoves())}); !errors.Is(err, keys.ErrDenied) {
		t.Errorf("Open with a wrong token = %v; want ErrDenied", err)
	}
	allDown := strings.Join([]string{dead, hung.addr(), sealed.Addr}, ",")
	_, err = vault.Open(ctx, vault.Config{Address: allDown, Token: srv.RootToken, MaxRetries: -1, Logger: slog.New(newMoves())})
	if !errors.Is(err, keys.ErrUnavailable) {
		t.Errorf("Open with no node up = %v; want ErrUnavailable", err)
	}
	// Bounded: each node once per request.
	n := hung.n.Load()
	_, err = vault.Open(ctx, vault.Config{Address: dead + "," + hung.addr(), Token: srv.RootToken, MaxRetries: -1, Logger: slog.New(newMoves())})
	if !errors.Is(err, keys.ErrUnavailable) || !strings.Contains(err.Error(), dead) || !strings.Contains(err.Error(), hung.addr()) {
		t.Errorf("Open with no node up = %v; want ErrUnavailable naming both nodes", err)
	}
	if got := hung.n.Load() - n; got != 1 {
		t.Errorf("one request reached the hanging node %d times; want 1", got)
	}
	// A cancelled context stops the failover.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	n = hung.n.Load()
	if _, err := s.Domain(cctx, keystest.Spec.Name); !errors.Is(err, keys.ErrUnavailable) || !errors.Is(err, context.Canceled) {
		t.Errorf("Domain with a cancelled context = %v; want ErrUnavailable wrapping context.Canceled", err)
	}
	if hung.n.Load() != n {
		t.Error("a cancelled request reached another node")
	}

	for _, bad := range []string{"http://127.0.0.1:1,ftp://x", "http://127.0.0.1:1,127.0.0.1:2", " , "} {
		if _, err := vault.Open(ctx, vault.Config{Address: bad, Token: "x"}); err == nil || errors.Is(err, keys.ErrUnavailable) {
			t.Errorf("Open(%q) = %v; want an address error", bad, err)
		}
	}
	// One address in a list is one address.
	one, err := vault.Open(ctx, vault.Config{Address: " " + srv.Addr + " , ", Token: srv.RootToken})
	if err != nil {
		t.Fatalf("Open of one listed address: %v", err)
	}
	one.Close()
}

// TestFailoverCluster runs the store on a real 3-node Vault HA cluster. It
// logs in with AppRole through two standbys listed first and moves to the
// active node; when the active node stops, reads fail with ErrUnavailable
// at most, until the store follows the new active node, where a rotation
// is seen.
func TestFailoverCluster(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	cl := vaulttest.StartCluster(t)
	active := cl.Active(t, 60*time.Second)
	active.EnableKV(t, mount)
	active.WritePolicy(t, "pseudonymizer-service", policies.Service)
	roleID, secretID := active.AppRoleOnly(t, "pseudonymizer", time.Hour, 2*time.Hour, "pseudonymizer-service")
	secretFile := filepath.Join(t.TempDir(), "secret-id")
	if err := os.WriteFile(secretFile, []byte(secretID), 0o600); err != nil {
		t.Fatal(err)
	}
	// Standbys first, the active node last.
	var addrs []string
	for _, n := range cl.Nodes {
		if n != active {
			addrs = append(addrs, n.Addr)
		}
	}
	addrs = append(addrs, active.Addr)
	list := strings.Join(addrs, ",")

	admin, err := vault.Open(ctx, vault.Config{Address: list, Token: cl.RootToken, Mode: vault.Owner, Timeout: 5 * time.Second, Logger: slog.New(newMoves())})
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	if _, err := admin.CreateDomain(ctx, keystest.Spec); err != nil {
		t.Fatal(err)
	}
	m := newMoves()
	s, err := vault.Open(ctx, vault.Config{Address: list, RoleID: roleID, SecretIDFile: secretFile, Timeout: 5 * time.Second, Logger: slog.New(m)})
	if err != nil {
		t.Fatalf("AppRole login through the standbys: %v", err)
	}
	defer s.Close()
	// (On a loaded machine raft may elect another leader meanwhile: the
	// store follows it too.)
	if got, now := m.list(), cl.Active(t, 30*time.Second); len(got) == 0 || got[len(got)-1] != now.Addr {
		t.Fatalf("moves = %v; want the last to the active node %s", got, now.Addr)
	} else if now != active {
		t.Logf("the active node changed from %s to %s", active.Addr, now.Addr)
		active = now
	}
	d, err := s.Domain(ctx, keystest.Spec.Name)
	if err != nil || len(d.Scalar) != keys.ScalarSize {
		t.Fatalf("Domain = %v, %v", d, err)
	}

	stopped := time.Now()
	cl.Stop(t, cl.Index(active))
	var failures int
	waitfor.State(t, 45*time.Second, "a read after stopping the active node", func() (bool, string) {
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_, err := s.Domain(rctx, keystest.Spec.Name)
		cancel()
		if err == nil {
			return true, ""
		}
		if !errors.Is(err, keys.ErrUnavailable) {
			t.Fatalf("Domain while the cluster elects a node: %v; want ErrUnavailable", err)
		}
		failures++
		return false, err.Error()
	})
	next := cl.Active(t, 30*time.Second)
	t.Logf("reads again %v after the active node stopped (%d failed reads); new active node %s",
		time.Since(stopped).Round(100*time.Millisecond), failures, next.Addr)
	if got := m.list(); len(got) < 2 || got[len(got)-1] != next.Addr {
		t.Fatalf("moves = %v; want the last to the new active node %s", got, next.Addr)
	}
	kid, err := admin.RotateTransitKey(ctx, keystest.Spec.Name)
	if err != nil {
		t.Fatalf("rotation on the new active node: %v", err)
	}
	if d, err := s.Domain(ctx, keystest.Spec.Name); err != nil || d.Transit.Active != kid {
		t.Fatalf("after the rotation Domain = %v, %v; want active kid %s", d, err, kid)
	}
}
