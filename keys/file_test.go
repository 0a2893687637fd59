package keys

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func newFileStore(t *testing.T) *FileStore {
	t.Helper()
	s, err := OpenFileStore(filepath.Join(t.TempDir(), "data", "keys.json"), true)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

var spec = DomainSpec{
	Name:     "prescriptions_v1",
	Audience: "urn:ehealth:pseudo:prescriptions:v1",
	Policy: Policy{
		Pseudonymize: []string{"prescriber", "pharmacy"},
		Identify:     []string{"pharmacy"},
		Owners:       []string{"recip-e"},
	},
}

func TestFileStoreCreate(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	path := filepath.Join(dir, "data", "keys.json")
	if _, err := OpenFileStore(path, false); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("OpenFileStore(missing, false) = %v, want ErrUnavailable", err)
	}
	s, err := OpenFileStore(path, true)
	if err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]os.FileMode{path: 0o600, filepath.Dir(path): 0o700} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != want {
			t.Errorf("%s: mode %04o, want %04o", p, fi.Mode().Perm(), want)
		}
	}
	created, err := s.EnsureDemo(ctx)
	if err != nil || !created {
		t.Fatalf("EnsureDemo = %v, %v", created, err)
	}
	created, err = s.EnsureDemo(ctx)
	if err != nil || created {
		t.Fatalf("second EnsureDemo = %v, %v", created, err)
	}
	d, err := s.Domain(ctx, DemoDomain)
	if err != nil {
		t.Fatal(err)
	}
	if d.Audience != DemoSpec.Audience || len(d.Scalar) != ScalarSize {
		t.Fatalf("demo domain: %v", d)
	}
	// Written atomically: no temporary file is left behind, and the mode is
	// still 0600 after a rewrite.
	if _, err := s.RotateTransitKey(ctx, DemoDomain); err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	for _, e := range entries {
		if strings.Contains(e.Name(), ".tmp") {
			t.Errorf("temporary file left: %s", e.Name())
		}
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Errorf("mode after rewrite %04o", fi.Mode().Perm())
	}
	// Reopening works; a file others can read is refused.
	if _, err := OpenFileStore(path, false); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenFileStore(path, false); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("OpenFileStore(0644) = %v", err)
	}
}

// TestFileStoreOwnerKey reads the k2 back (the Vault admin cannot).
func TestFileStoreOwnerKey(t *testing.T) {
	ctx := context.Background()
	s := newFileStore(t)
	if _, err := s.CreateDomain(ctx, spec); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateOwnerKey(ctx, "recip-e", spec.Name); err != nil {
		t.Fatal(err)
	}
	k2, err := s.OwnerKey(ctx, "recip-e", spec.Name)
	if err != nil {
		t.Fatal(err)
	}
	if err := CheckScalar(k2); err != nil {
		t.Fatal(err)
	}
}

// TestFileStoreConcurrentWriters runs two stores on one file, as two
// processes would: no update is lost and readers never see a partial file.
func TestFileStoreConcurrentWriters(t *testing.T) {
	ctx := context.Background()
	a := newFileStore(t)
	b, err := OpenFileStore(a.Path(), false)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.CreateDomain(ctx, spec); err != nil {
		t.Fatal(err)
	}
	const n = 10
	var wg sync.WaitGroup
	stop := make(chan struct{})
	readErr := make(chan error, 1)
	go func() {
		for {
			select {
			case <-stop:
				close(readErr)
				return
			default:
			}
			if _, err := a.Domain(ctx, spec.Name); err != nil {
				readErr <- err
				close(readErr)
				return
			}
		}
	}()
	for _, s := range []*FileStore{a, b, a, b} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range n {
				if _, err := s.RotateTransitKey(ctx, spec.Name); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(stop)
	if err := <-readErr; err != nil {
		t.Fatalf("reader saw: %v", err)
	}
	d, err := b.Domain(ctx, spec.Name)
	if err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("t%d", 4*n+1); d.Transit.Active != want || len(d.Transit.Keys) != 4*n+1 {
		t.Fatalf("after %d rotations: active %s, %d keys", 4*n, d.Transit.Active, len(d.Transit.Keys))
	}
}

// TestFileStoreMaxLifetime stores the max lifetime, keeps it across
// changes and new versions, and refuses bad values in the file.
func TestFileStoreMaxLifetime(t *testing.T) {
	ctx := context.Background()
	s := newFileStore(t)
	d, err := s.CreateDomainWith(ctx, spec, DomainOptions{MaxLifetime: 36 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if d.MaxLifetime != 36*time.Hour {
		t.Fatalf("CreateDomainWith: max lifetime %v", d.MaxLifetime)
	}
	b, err := os.ReadFile(s.Path())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"max_lifetime": "36h0m0s"`) {
		t.Fatalf("no max_lifetime in the file:\n%s", b)
	}
	if _, err := s.RotateTransitKey(ctx, spec.Name); err != nil {
		t.Fatal(err)
	}
	if d, err := s.Domain(ctx, spec.Name); err != nil || d.MaxLifetime != 36*time.Hour {
		t.Fatalf("after rotation: %v, %v", d, err)
	}

	// NewVersion copies everything but the audience, which is its own.
	v2, err := s.NewVersion(ctx, spec.Name, "prescriptions_v2")
	if err != nil || v2.MaxLifetime != 36*time.Hour || v2.Audience != NextAudience(spec.Audience, "prescriptions_v2") {
		t.Fatalf("NewVersion = %v (max lifetime %v), %v", v2, v2.MaxLifetime, err)
	}
	// NewVersionWith takes the new domain's settings.
	next := spec
	next.Name, next.Audience = "prescriptions_v3", NextAudience(spec.Audience, "prescriptions_v3")
	v3, err := s.NewVersionWith(ctx, "prescriptions_v2", next, DomainOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if v3.Audience != "urn:ehealth:pseudo:prescriptions:v3" || v3.MaxLifetime != 0 || v3.EffectiveMaxLifetime() != DefaultMaxLifetime {
		t.Fatalf("NewVersionWith = %v, audience %s, max lifetime %v", v3, v3.Audience, v3.MaxLifetime)
	}
	if od, err := s.Domain(ctx, "prescriptions_v2"); err != nil || fmt.Sprint(od.Policy.Convert["prescriptions_v3"]) != "[recip-e]" {
		t.Fatalf("old domain after NewVersionWith: %+v, %v", od.Policy, err)
	}
	if _, err := s.NewVersionWith(ctx, "prescriptions_v2", next, DomainOptions{}); !errors.Is(err, ErrExists) {
		t.Fatalf("NewVersionWith to an existing domain = %v", err)
	}
	next.Name = "nope_v2"
	if _, err := s.NewVersionWith(ctx, "nope_v1", next, DomainOptions{}); !errors.Is(err, ErrUnknownDomain) {
		t.Fatalf("NewVersionWith from an unknown domain = %v", err)
	}
	next.Name = "prescriptions_v2"
	if _, err := s.NewVersionWith(ctx, "prescriptions_v2", next, DomainOptions{}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("NewVersionWith to itself = %v", err)
	}
	next.Name = "prescriptions_v4"
	if _, err := s.NewVersionWith(ctx, "prescriptions_v3", next, DomainOptions{MaxLifetime: time.Second}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("NewVersionWith(max lifetime < ttl) = %v", err)
	}

	// In the file: absent is unset; present must be a positive duration of
	// at least the ttl.
	b, err = os.ReadFile(s.Path())
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(b), `"max_lifetime"`); n != 2 {
		t.Fatalf("%d max_lifetime in the file, want 2 (unset in prescriptions_v3)", n)
	}
	for _, bad := range []string{"0s", "-1h", "soon", "1m"} {
		nb := strings.Replace(string(b), `"max_lifetime": "36h0m0s"`, fmt.Sprintf(`"max_lifetime": %q`, bad), 1)
		if _, err := decodeFile([]byte(nb)); !errors.Is(err, ErrInvalid) {
			t.Errorf("max_lifetime %q: decodeFile = %v, want ErrInvalid", bad, err)
		}
	}
	g1, err := s.Version(ctx, spec.Name)
	if err != nil {
		t.Fatal(err)
	}
	nb := strings.Replace(string(b), `"max_lifetime": "36h0m0s"`, `"max_lifetime": "37h"`, 1)
	if err := os.WriteFile(s.Path(), []byte(nb), 0o600); err != nil {
		t.Fatal(err)
	}
	d, err = s.Domain(ctx, spec.Name)
	if err != nil || d.MaxLifetime != 37*time.Hour || d.Generation == g1 {
		t.Fatalf("after editing the file: %v, %v (generation %d, was %d)", d, err, d.Generation, g1)
	}
}
