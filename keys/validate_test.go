package keys

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func testDomain(t *testing.T) *Domain {
	t.Helper()
	d, err := GenerateDomain(DomainSpec{
		Name:     "prescriptions_v1",
		Audience: "urn:ehealth:pseudo:prescriptions:v1",
		Policy:   Policy{Pseudonymize: []string{"prescriber"}, Owners: []string{"recip-e"}},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// assertNoSecret fails if s contains any encoding of the domain's keys.
func assertNoSecret(t *testing.T, s string, secrets ...Secret) {
	t.Helper()
	for _, k := range secrets {
		if len(k) == 0 {
			continue
		}
		for _, enc := range []string{
			hex.EncodeToString(k), base64.StdEncoding.EncodeToString(k),
			base64.RawURLEncoding.EncodeToString(k), string(k), fmt.Sprint([]byte(k)),
		} {
			if strings.Contains(s, enc) {
				t.Fatalf("key material in %q", s)
			}
		}
	}
}

func domainSecrets(d *Domain) []Secret {
	s := []Secret{d.Scalar}
	for _, k := range d.Transit.Keys {
		s = append(s, k)
	}
	return s
}

func TestGenerateDomain(t *testing.T) {
	d := testDomain(t)
	if err := d.Validate(); err != nil {
		t.Fatal(err)
	}
	if d.TTL != DefaultTTL || d.Transit.Active != FirstKid || len(d.Transit.Keys) != 1 {
		t.Fatalf("unexpected domain %v ttl=%v", d, d.TTL)
	}
	d2 := testDomain(t)
	if bytes.Equal(d.Scalar, d2.Scalar) || bytes.Equal(d.Transit.Keys[FirstKid], d2.Transit.Keys[FirstKid]) {
		t.Fatal("two domains share keys")
	}
}

func TestValidate(t *testing.T) {
	zero := make(Secret, ScalarSize)
	nonCanonical := bytes.Repeat([]byte{0xff}, ScalarSize)
	cases := map[string]func(d *Domain){
		"empty name":          func(d *Domain) { d.Name = "" },
		"upper-case name":     func(d *Domain) { d.Name = "Prescriptions" },
		"slash in name":       func(d *Domain) { d.Name = "a/b" },
		"dot-dot name":        func(d *Domain) { d.Name = ".." },
		"long name":           func(d *Domain) { d.Name = strings.Repeat("a", 65) },
		"empty audience":      func(d *Domain) { d.Audience = "" },
		"relative audience":   func(d *Domain) { d.Audience = "prescriptions" },
		"zero ttl":            func(d *Domain) { d.TTL = 0 },
		"negative ttl":        func(d *Domain) { d.TTL = -time.Second },
		"short scalar":        func(d *Domain) { d.Scalar = d.Scalar[:31] },
		"zero scalar":         func(d *Domain) { d.Scalar = zero },
		"non-canonical":       func(d *Domain) { d.Scalar = Secret(nonCanonical) },
		"no transit key":      func(d *Domain) { d.Transit.Keys = nil },
		"active missing":      func(d *Domain) { d.Transit.Active = "t9" },
		"short transit key":   func(d *Domain) { d.Transit.Keys[FirstKid] = d.Transit.Keys[FirstKid][:16] },
		"bad kid":             func(d *Domain) { d.Transit.Keys["a b"] = make(Secret, 32) },
		"empty principal":     func(d *Domain) { d.Policy.Identify = []string{""} },
		"bad convert target":  func(d *Domain) { d.Policy.Convert = map[string][]string{"X/Y": {"a"}} },
		"empty convert entry": func(d *Domain) { d.Policy.Convert = map[string][]string{"x_v2": {""}} },
	}
	for name, mutate := range cases {
		t.Run(name, func(t *testing.T) {
			d := testDomain(t)
			secrets := domainSecrets(d)
			d = d.clone()
			mutate(d)
			err := d.Validate()
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("Validate() = %v, want ErrInvalid", err)
			}
			assertNoSecret(t, err.Error(), secrets...)
		})
	}
	t.Run("owner view without scalar", func(t *testing.T) {
		d := testDomain(t).clone()
		d.Scalar = nil
		if err := d.Validate(); err != nil {
			t.Fatal(err)
		}
	})
	if err := (*Domain)(nil).Validate(); !errors.Is(err, ErrInvalid) {
		t.Fatal("nil domain accepted")
	}
}

func TestCheckScalar(t *testing.T) {
	k, err := NewScalar(nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := CheckScalar(k); err != nil {
		t.Fatal(err)
	}
	// A zero reader gives zero scalars only: NewScalar must refuse them.
	if _, err := NewScalar(bytes.NewReader(make([]byte, 64*8))); err == nil {
		t.Fatal("NewScalar accepted a zero scalar")
	}
	if _, err := NewScalar(bytes.NewReader(nil)); err == nil {
		t.Fatal("NewScalar ignored a failing reader")
	}
}

func TestDomainPrintsNoSecret(t *testing.T) {
	d := testDomain(t)
	var buf bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&buf, nil))
	log.Info("d", "domain", d, "value", *d)
	log.Info("t", "text", fmt.Sprintf("%v %+v %#v %s %x", d, *d, *d, d.Scalar, d.Scalar))
	fmt.Fprintf(&buf, "%v %+v %#v", *d, *d, d.Transit)
	assertNoSecret(t, buf.String(), domainSecrets(d)...)
	if !strings.Contains(buf.String(), "prescriptions_v1") {
		t.Fatalf("domain name not logged: %s", buf.String())
	}
}

func TestNextKid(t *testing.T) {
	for _, c := range []struct {
		kids []string
		want string
	}{
		{nil, "t1"},
		{[]string{"t1"}, "t2"},
		{[]string{"t2", "t10", "t9"}, "t11"},
		{[]string{"custom", "t01", "t"}, "t1"},
	} {
		if got := NextKid(c.kids...); got != c.want {
			t.Errorf("NextKid(%v) = %s, want %s", c.kids, got, c.want)
		}
	}
	tr := Transit{Active: "t10", Keys: map[string]Secret{"t10": nil, "t9": nil, "x": nil, "t2": nil}}
	if got := fmt.Sprint(tr.Kids()); got != "[t2 t9 t10 x]" {
		t.Errorf("Kids() = %s", got)
	}
}

func TestPolicyWithConvert(t *testing.T) {
	p := Policy{Owners: []string{"o1", "o2"}, Convert: map[string][]string{"x_v2": {"o1"}}}
	q := p.WithConvert("x_v2", p.Owners)
	if fmt.Sprint(q.Convert["x_v2"]) != "[o1 o2]" || fmt.Sprint(p.Convert["x_v2"]) != "[o1]" {
		t.Fatalf("WithConvert: %v (original %v)", q.Convert, p.Convert)
	}
	if _, err := NextVersionSpec(testDomain(t), "prescriptions_v1"); !errors.Is(err, ErrInvalid) {
		t.Fatal("NextVersionSpec accepted the same name")
	}
}
