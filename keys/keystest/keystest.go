// Package keystest checks implementations of keys.Admin: the file store and
// the Vault store pass the same test.
package keystest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/ehealth-pseudo/pseudonymizer/keys"
)

// Spec is the domain TestAdmin creates first.
var Spec = keys.DomainSpec{
	Name:     "prescriptions_v1",
	Audience: "urn:ehealth:pseudo:prescriptions:v1",
	Policy: keys.Policy{
		Pseudonymize: []string{"prescriber", "pharmacy"},
		Identify:     []string{"pharmacy"},
		Owners:       []string{"recip-e"},
	},
}

// TestAdmin runs the admin operations of keys.Admin on s, which must be
// empty, and checks what they do, as seen through s.
func TestAdmin(t *testing.T, s keys.Admin) {
	t.Helper()
	ctx := context.Background()
	d, err := s.CreateDomain(ctx, Spec)
	if err != nil {
		t.Fatal(err)
	}
	if d.Name != Spec.Name || d.Transit.Active != "t1" || d.TTL != keys.DefaultTTL {
		t.Fatalf("CreateDomain = %v", d)
	}
	if _, err := s.CreateDomain(ctx, Spec); !errors.Is(err, keys.ErrExists) {
		t.Fatalf("second CreateDomain = %v, want keys.ErrExists", err)
	}
	bad := Spec
	bad.Name, bad.Audience = "other_v1", "not a uri"
	if _, err := s.CreateDomain(ctx, bad); !errors.Is(err, keys.ErrInvalid) {
		t.Fatalf("CreateDomain(bad audience) = %v, want keys.ErrInvalid", err)
	}
	if _, err := s.Domain(ctx, "nope"); !errors.Is(err, keys.ErrUnknownDomain) {
		t.Fatalf("Domain(nope) = %v", err)
	}
	v1, err := s.Version(ctx, Spec.Name)
	if err != nil {
		t.Fatal(err)
	}
	d1, err := s.Domain(ctx, Spec.Name)
	if err != nil {
		t.Fatal(err)
	}
	if d1.Generation != v1 {
		t.Fatalf("Generation %d != Version %d", d1.Generation, v1)
	}

	if !d1.Transit.ActiveSince.IsZero() || !d1.RetireAfter().IsZero() {
		t.Fatalf("first key: ActiveSince %v, want zero", d1.Transit.ActiveSince)
	}
	before := time.Now().Add(-time.Second)
	kid, err := s.RotateTransitKey(ctx, Spec.Name)
	if err != nil || kid != "t2" {
		t.Fatalf("RotateTransitKey = %q, %v", kid, err)
	}
	after := time.Now().Add(time.Second)
	d2, err := s.Domain(ctx, Spec.Name)
	if err != nil {
		t.Fatal(err)
	}
	if since := d2.Transit.ActiveSince; since.Before(before) || since.After(after) {
		t.Fatalf("after rotation: ActiveSince %v, want between %v and %v", since, before, after)
	}
	if want := d2.Transit.ActiveSince.Add(d2.EffectiveMaxLifetime() + keys.RetireSkew); !d2.RetireAfter().Equal(want) {
		t.Fatalf("RetireAfter = %v, want %v", d2.RetireAfter(), want)
	}
	if d2.Transit.Active != "t2" || len(d2.Transit.Keys) != 2 || d2.Generation == d1.Generation {
		t.Fatalf("after rotation: %v", d2)
	}
	if !bytes.Equal(d2.Transit.Keys["t1"], d1.Transit.Keys["t1"]) || bytes.Equal(d2.Transit.Keys["t2"], d1.Transit.Keys["t1"]) {
		t.Fatal("rotation changed t1 or reused it")
	}
	if len(d2.Scalar) != 0 && !bytes.Equal(d2.Scalar, d1.Scalar) {
		t.Fatal("rotation changed the scalar")
	}
	if v, _ := s.Version(ctx, Spec.Name); v != d2.Generation {
		t.Fatalf("Version %d != Generation %d", v, d2.Generation)
	}

	if err := s.RetireTransitKey(ctx, Spec.Name, "t2"); !errors.Is(err, keys.ErrActiveKey) {
		t.Fatalf("retire active = %v", err)
	}
	if err := s.RetireTransitKey(ctx, Spec.Name, "t7"); !errors.Is(err, keys.ErrUnknownKey) {
		t.Fatalf("retire unknown = %v", err)
	}
	if err := s.RetireTransitKey(ctx, "nope", "t1"); !errors.Is(err, keys.ErrUnknownDomain) {
		t.Fatalf("retire in unknown domain = %v", err)
	}
	if err := s.RetireTransitKey(ctx, Spec.Name, "t1"); err != nil {
		t.Fatal(err)
	}
	d3, err := s.Domain(ctx, Spec.Name)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(d3.Transit.Kids()) != "[t2]" {
		t.Fatalf("after retire: %v", d3)
	}
	if kid, _ := s.RotateTransitKey(ctx, Spec.Name); kid != "t3" {
		t.Fatalf("rotation after retire = %q, want t3", kid)
	}

	nd, err := s.NewVersion(ctx, Spec.Name, "prescriptions_v2")
	if err != nil {
		t.Fatal(err)
	}
	if nd.Name != "prescriptions_v2" || nd.Audience != keys.NextAudience(Spec.Audience, "prescriptions_v2") || nd.Transit.Active != "t1" ||
		fmt.Sprint(nd.Policy.Pseudonymize) != fmt.Sprint(Spec.Policy.Pseudonymize) {
		t.Fatalf("NewVersion = %v %+v", nd, nd.Policy)
	}
	od, err := s.Domain(ctx, Spec.Name)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(od.Policy.Convert["prescriptions_v2"]) != "[recip-e]" {
		t.Fatalf("old domain convert policy: %+v", od.Policy)
	}
	if _, err := s.NewVersion(ctx, Spec.Name, "prescriptions_v2"); !errors.Is(err, keys.ErrExists) {
		t.Fatalf("NewVersion to existing = %v", err)
	}
	if _, err := s.NewVersion(ctx, "nope", "nope_v2"); !errors.Is(err, keys.ErrUnknownDomain) {
		t.Fatalf("NewVersion from unknown = %v", err)
	}
	testSettings(t, s, od)
	testDelete(t, s)

	names, err := s.Domains(ctx)
	if err != nil || fmt.Sprint(names) != "[prescriptions_v1 prescriptions_v2]" {
		t.Fatalf("Domains = %v, %v", names, err)
	}

	if _, err := s.OwnerKey(ctx, "recip-e", Spec.Name); !errors.Is(err, keys.ErrUnknownKey) {
		t.Fatalf("OwnerKey before creation = %v", err)
	}
	if err := s.CreateOwnerKey(ctx, "recip-e", Spec.Name); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateOwnerKey(ctx, "recip-e", Spec.Name); !errors.Is(err, keys.ErrExists) {
		t.Fatalf("second CreateOwnerKey = %v", err)
	}
	if err := s.CreateOwnerKey(ctx, "recip-e", "nope"); !errors.Is(err, keys.ErrUnknownDomain) {
		t.Fatalf("CreateOwnerKey(unknown domain) = %v", err)
	}
	if err := s.CreateOwnerKey(ctx, "a/b", Spec.Name); !errors.Is(err, keys.ErrInvalid) {
		t.Fatalf("CreateOwnerKey(bad owner) = %v", err)
	}
	testOwnerKeys(t, s)
}

// testSettings changes the policy and the lifetimes of od's domain, and
// restores them.
func testSettings(t *testing.T, s keys.Admin, od *keys.Domain) {
	t.Helper()
	ctx := context.Background()
	p := keys.Policy{Pseudonymize: []string{"lab"}, Identify: []string{"*"}, Owners: []string{"recip-e"},
		Convert: map[string][]string{"prescriptions_v2": {"recip-e"}}}
	if err := s.SetPolicy(ctx, od.Name, p); err != nil {
		t.Fatal(err)
	}
	d, err := s.Domain(ctx, od.Name)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(d.Policy) != fmt.Sprint(p) || d.Generation == od.Generation || d.Transit.Active != od.Transit.Active {
		t.Fatalf("after SetPolicy: %v %+v", d, d.Policy)
	}
	bad := keys.Policy{Owners: []string{"*"}}
	if err := s.SetPolicy(ctx, od.Name, bad); !errors.Is(err, keys.ErrInvalid) {
		t.Fatalf("SetPolicy(bad) = %v, want keys.ErrInvalid", err)
	}
	if err := s.SetPolicy(ctx, "nope", p); !errors.Is(err, keys.ErrUnknownDomain) {
		t.Fatalf("SetPolicy(unknown domain) = %v", err)
	}
	if err := s.SetPolicy(ctx, od.Name, od.Policy); err != nil {
		t.Fatal(err)
	}

	if err := s.SetLifetimes(ctx, od.Name, 10*time.Minute, 0); err != nil {
		t.Fatal(err)
	}
	if d, err = s.Domain(ctx, od.Name); err != nil || d.TTL != 10*time.Minute || d.MaxLifetime != od.MaxLifetime {
		t.Fatalf("after SetLifetimes(10m, 0): %v, %v", d, err)
	}
	if err := s.SetLifetimes(ctx, od.Name, 2*time.Hour, time.Hour); !errors.Is(err, keys.ErrInvalid) {
		t.Fatalf("SetLifetimes(ttl > max lifetime) = %v, want keys.ErrInvalid", err)
	}
	if err := s.SetLifetimes(ctx, "nope", time.Hour, 0); !errors.Is(err, keys.ErrUnknownDomain) {
		t.Fatalf("SetLifetimes(unknown domain) = %v", err)
	}
	if err := s.SetLifetimes(ctx, od.Name, od.TTL, 0); err != nil {
		t.Fatal(err)
	}
	if d, err = s.Domain(ctx, od.Name); err != nil || fmt.Sprint(d.Policy) != fmt.Sprint(od.Policy) || d.TTL != od.TTL {
		t.Fatalf("after restoring: %v %+v, %v", d, d.Policy, err)
	}

	// Disable and enable: the flag changes the generation, nothing else.
	before := d
	if err := s.SetDisabled(ctx, od.Name, true); err != nil {
		t.Fatal(err)
	}
	if d, err = s.Domain(ctx, od.Name); err != nil || !d.Disabled || d.Generation == before.Generation ||
		!bytes.Equal(d.Scalar, before.Scalar) || d.Transit.Active != before.Transit.Active {
		t.Fatalf("after SetDisabled(true): %v, %v", d, err)
	}
	if err := s.SetDisabled(ctx, "nope", true); !errors.Is(err, keys.ErrUnknownDomain) {
		t.Fatalf("SetDisabled(unknown domain) = %v", err)
	}
	if err := s.SetDisabled(ctx, od.Name, false); err != nil {
		t.Fatal(err)
	}
	if d, err = s.Domain(ctx, od.Name); err != nil || d.Disabled || !bytes.Equal(d.Scalar, before.Scalar) {
		t.Fatalf("after SetDisabled(false): %v, %v", d, err)
	}
}

// testDelete creates, deletes and re-creates a scratch domain.
func testDelete(t *testing.T, s keys.Admin) {
	t.Helper()
	ctx := context.Background()
	spec := keys.DomainSpec{Name: "scratch_v1", Audience: "urn:scratch:v1"}
	for range 2 {
		if _, err := s.CreateDomain(ctx, spec); err != nil {
			t.Fatal(err)
		}
		if err := s.DeleteDomain(ctx, spec.Name); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Domain(ctx, spec.Name); !errors.Is(err, keys.ErrUnknownDomain) {
			t.Fatalf("Domain after DeleteDomain = %v, want keys.ErrUnknownDomain", err)
		}
		if _, err := s.Version(ctx, spec.Name); !errors.Is(err, keys.ErrUnknownDomain) {
			t.Fatalf("Version after DeleteDomain = %v, want keys.ErrUnknownDomain", err)
		}
		names, err := s.Domains(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range names {
			if n == spec.Name {
				t.Fatalf("Domains after DeleteDomain = %v", names)
			}
		}
	}
	if err := s.DeleteDomain(ctx, spec.Name); !errors.Is(err, keys.ErrUnknownDomain) {
		t.Fatalf("second DeleteDomain = %v, want keys.ErrUnknownDomain", err)
	}
}

// testOwnerKeys rotates and deletes the owner key of recip-e for Spec's
// domain, and creates it again.
func testOwnerKeys(t *testing.T, s keys.Admin) {
	t.Helper()
	ctx := context.Background()
	k1, err := s.OwnerKey(ctx, "recip-e", Spec.Name)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.RotateOwnerKey(ctx, "recip-e", Spec.Name); err != nil {
		t.Fatal(err)
	}
	k2, err := s.OwnerKey(ctx, "recip-e", Spec.Name)
	if err != nil || keys.CheckScalar(k2) != nil || bytes.Equal(k1, k2) {
		t.Fatalf("after RotateOwnerKey: same key or %v", err)
	}
	if err := s.RotateOwnerKey(ctx, "nobody", Spec.Name); !errors.Is(err, keys.ErrUnknownKey) {
		t.Fatalf("RotateOwnerKey(no key) = %v, want keys.ErrUnknownKey", err)
	}
	if err := s.DeleteOwnerKey(ctx, "recip-e", Spec.Name); err != nil {
		t.Fatal(err)
	}
	if _, err := s.OwnerKey(ctx, "recip-e", Spec.Name); !errors.Is(err, keys.ErrUnknownKey) {
		t.Fatalf("OwnerKey after DeleteOwnerKey = %v, want keys.ErrUnknownKey", err)
	}
	if err := s.DeleteOwnerKey(ctx, "recip-e", Spec.Name); !errors.Is(err, keys.ErrUnknownKey) {
		t.Fatalf("second DeleteOwnerKey = %v, want keys.ErrUnknownKey", err)
	}
	if err := s.CreateOwnerKey(ctx, "recip-e", Spec.Name); err != nil {
		t.Fatalf("CreateOwnerKey after DeleteOwnerKey: %v", err)
	}
}
