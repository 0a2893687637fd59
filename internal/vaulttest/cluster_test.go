package vaulttest_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ehealth-pseudo/pseudonymizer/internal/vaulttest"
	"github.com/ehealth-pseudo/pseudonymizer/internal/waitfor"
)

func TestCluster(t *testing.T) {
	t.Parallel()
	start := time.Now()
	cl := vaulttest.StartCluster(t)
	t.Logf("cluster up in %v", time.Since(start).Round(100*time.Millisecond))
	if len(cl.Nodes) != 3 || strings.Count(cl.Addr(), ",") != 2 || cl.RootToken == "" {
		t.Fatalf("cluster: %d nodes, Addr %q", len(cl.Nodes), cl.Addr())
	}
	active := cl.Active(t, time.Minute)
	active.EnableKV(t, "kv")
	if _, err := active.Client(t).KVv2("kv").Put(t.Context(), "a", map[string]any{"x": "1"}); err != nil {
		t.Fatal(err)
	}
	// Every node serves, standbys by forwarding to the active node.
	for i, n := range cl.Nodes {
		if n.RootToken != cl.RootToken {
			t.Fatalf("node %d has another root token", i)
		}
		if _, err := n.Client(t).KVv2("kv").Get(t.Context(), "a"); err != nil {
			t.Fatalf("node %d: %v", i, err)
		}
	}

	// Stop the active node: another becomes active, with the data.
	stopped := time.Now()
	i := cl.Index(active)
	cl.Stop(t, i)
	next := cl.Active(t, time.Minute)
	t.Logf("node %d active %v after node %d stopped", cl.Index(next), time.Since(stopped).Round(100*time.Millisecond), i)
	if next == active {
		t.Fatal("the stopped node is active")
	}
	if s, err := next.Client(t).KVv2("kv").Get(t.Context(), "a"); err != nil || s.Data["x"] != "1" {
		t.Fatalf("after the failover: %v, %v", s, err)
	}
	if _, err := active.Client(t).Sys().Health(); err == nil {
		t.Fatal("the stopped node answers")
	}

	// The stopped node comes back as a standby, with the data written
	// meanwhile.
	if _, err := next.Client(t).KVv2("kv").Put(t.Context(), "b", map[string]any{"y": "2"}); err != nil {
		t.Fatal(err)
	}
	cl.Start(t, i)
	waitfor.State(t, 30*time.Second, "the restarted node to be a standby of "+next.Addr, func() (bool, string) {
		l, err := active.Client(t).Sys().Leader()
		return err == nil && !l.IsSelf && l.LeaderAddress == next.Addr, fmt.Sprintf("sys/leader %+v, %v", l, err)
	})
	// Right after it found the active node, a standby may still fail to
	// forward for a moment.
	waitfor.State(t, 30*time.Second, "the restarted node to serve the data", func() (bool, string) {
		s, err := active.Client(t).KVv2("kv").Get(t.Context(), "b")
		return err == nil && s.Data["y"] == "2", fmt.Sprintf("%v, %v", s, err)
	})
}
