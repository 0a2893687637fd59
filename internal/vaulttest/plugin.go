package vaulttest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"
)

// WithPluginDir gives a dev server a plugin directory (Vault's
// plugin_directory, through -dev-plugin-dir), in the test's temporary
// directory; [Server.InstallPlugin] puts plugins there and registers them.
func WithPluginDir() Option {
	return func(s *Server) { s.pluginDir = filepath.Join(s.dir, "plugins") }
}

var (
	sharePluginOnce sync.Once
	sharePluginPath string
	sharePluginErr  error
)

// SharePlugin returns the path of the pseudonymizer's Vault plugin
// (cmd/pseudonymizer-vault-plugin), built once per test process by
// scripts/vault-plugin.sh into .cache/vault/plugins/.
func SharePlugin(t testing.TB) string {
	t.Helper()
	sharePluginOnce.Do(func() {
		root, err := RepoRoot()
		if err != nil {
			sharePluginErr = err
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "bash", filepath.Join(root, "scripts", "vault-plugin.sh"))
		cmd.Dir = root
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			sharePluginErr = fmt.Errorf("scripts/vault-plugin.sh: %v\n%s", err, tail(stderr.String(), 3000))
			return
		}
		lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
		sharePluginPath = strings.TrimSpace(lines[0])
	})
	if sharePluginErr != nil {
		t.Fatalf("vaulttest: building the plugin: %v", sharePluginErr)
	}
	return sharePluginPath
}

// PluginDir returns the server's plugin directory, "" without
// [WithPluginDir].
func (s *Server) PluginDir() string { return s.pluginDir }

// InstallPlugin copies the binary bin into the server's plugin directory as
// name (atomically: a running plugin is not disturbed) and registers it in
// Vault's catalog as a secrets engine with its SHA-256, as `vault plugin
// register -sha256=… secret name` does. It returns the SHA-256 (hex).
func (s *Server) InstallPlugin(t testing.TB, bin, name string) string {
	t.Helper()
	if s.pluginDir == "" {
		t.Fatal("vaulttest: InstallPlugin needs a server started WithPluginDir")
	}
	b, err := os.ReadFile(bin)
	if err != nil {
		t.Fatalf("vaulttest: %v", err)
	}
	sum := s.WritePluginFile(t, name, b)
	err = s.Client(t).Sys().RegisterPluginWithContext(context.Background(), &api.RegisterPluginInput{
		Name:    name,
		Type:    api.PluginTypeSecrets,
		Command: name,
		SHA256:  sum,
	})
	if err != nil {
		t.Fatalf("vaulttest: registering plugin %s: %v", name, err)
	}
	return sum
}

// WritePluginFile replaces the file name of the plugin directory by b,
// atomically, without registering it, and returns its SHA-256 (hex).
// Tests use it to make a registered plugin unable to start (its checksum no
// longer matches) and to restore it.
func (s *Server) WritePluginFile(t testing.TB, name string, b []byte) string {
	t.Helper()
	tmp := filepath.Join(s.pluginDir, "."+name+".tmp")
	if err := os.WriteFile(tmp, b, 0o755); err != nil {
		t.Fatalf("vaulttest: %v", err)
	}
	if err := os.Rename(tmp, filepath.Join(s.pluginDir, name)); err != nil {
		t.Fatalf("vaulttest: %v", err)
	}
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// MountPlugin enables the secrets engine plugin name at path.
func (s *Server) MountPlugin(t testing.TB, path, name string) {
	t.Helper()
	if err := s.Client(t).Sys().Mount(path, &api.MountInput{Type: name}); err != nil {
		t.Fatalf("vaulttest: mounting %s at %s: %v", name, path, err)
	}
}

// ReloadPlugin restarts every backend of plugin name (the plugin process
// is stopped and started again), as `vault plugin reload -plugin=name`
// does (a local reload: done when Vault answers).
func (s *Server) ReloadPlugin(t testing.TB, name string) {
	t.Helper()
	c := s.Client(t)
	if _, err := c.Sys().ReloadPluginWithContext(context.Background(), &api.ReloadPluginInput{Plugin: name}); err != nil {
		t.Fatalf("vaulttest: reloading plugin %s: %v", name, err)
	}
}

// EnableFileAudit enables a file audit device writing to path (Vault's own
// record of every request, with secrets HMAC'd).
func (s *Server) EnableFileAudit(t testing.TB, path string) {
	t.Helper()
	err := s.Client(t).Sys().EnableAuditWithOptions("file", &api.EnableAuditOptions{
		Type:    "file",
		Options: map[string]string{"file_path": path},
	})
	if err != nil {
		t.Fatalf("vaulttest: enabling the file audit device: %v", err)
	}
}

// Processes returns the processes that run the binary bin (for a plugin:
// the copy in this server's plugin directory that Vault started), none
// when there are none.
func Processes(t testing.TB, bin string) []int {
	t.Helper()
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if exe, err := os.Readlink(filepath.Join("/proc", e.Name(), "exe")); err == nil && exe == bin {
			pids = append(pids, pid)
		}
	}
	return pids
}
