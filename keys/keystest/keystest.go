// Package keystest checks implementations of keys.Admin: the file store and
// the Vault store pass the same test.
package keystest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"

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

	kid, err := s.RotateTransitKey(ctx, Spec.Name)
	if err != nil || kid != "t2" {
		t.Fatalf("RotateTransitKey = %q, %v", kid, err)
	}
	d2, err := s.Domain(ctx, Spec.Name)
	if err != nil {
		t.Fatal(err)
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
}
