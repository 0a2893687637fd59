package vaulttest_test

import (
	"testing"
	"time"

	"github.com/ehealth-pseudo/pseudonymizer/internal/vaulttest"
)

func TestServer(t *testing.T) {
	srv := vaulttest.Start(t)
	srv.EnableKV(t, "kv")
	c := srv.Client(t)
	if _, err := c.KVv2("kv").Put(t.Context(), "a", map[string]any{"x": "1"}); err != nil {
		t.Fatal(err)
	}
	srv.WritePolicy(t, "p", `path "kv/data/a" { capabilities = ["read"] }`)
	roleID, secretID := srv.AppRole(t, "r", time.Minute, time.Hour, "p")
	sec, err := c.Logical().Write("auth/approle/login", map[string]any{"role_id": roleID, "secret_id": secretID})
	if err != nil || sec.Auth == nil {
		t.Fatalf("AppRole login: %v", err)
	}
	if _, err := srv.ClientWithToken(t, sec.Auth.ClientToken).KVv2("kv").Get(t.Context(), "a"); err != nil {
		t.Fatal(err)
	}

	addr := srv.Addr
	srv.Stop(t)
	if _, err := c.Sys().Health(); err == nil {
		t.Fatal("Vault answers after Stop")
	}
	srv.Restart(t)
	if srv.Addr != addr {
		t.Fatalf("address changed: %s -> %s", addr, srv.Addr)
	}
	// Same root token, empty storage.
	mounts, err := c.Sys().ListMounts()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := mounts["kv/"]; ok {
		t.Fatal("a restarted dev server kept its mounts")
	}
}
