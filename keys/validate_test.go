package keys

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
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
		"negative max life":   func(d *Domain) { d.MaxLifetime = -time.Hour },
		"max life below ttl":  func(d *Domain) { d.MaxLifetime = d.TTL - time.Second },
		"star owner":          func(d *Domain) { d.Policy.Owners = []string{"recip-e", "*"} },
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
	for name, mutate := range map[string]func(d *Domain){
		"max lifetime = ttl":         func(d *Domain) { d.MaxLifetime = d.TTL },
		"max lifetime unset, ttl 2d": func(d *Domain) { d.TTL = 48 * time.Hour },
		"star identify":              func(d *Domain) { d.Policy.Identify = []string{"*"} },
	} {
		t.Run(name, func(t *testing.T) {
			d := testDomain(t).clone()
			mutate(d)
			if err := d.Validate(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestMaxLifetime(t *testing.T) {
	for _, c := range []struct {
		ttl, max, want time.Duration
	}{
		{0, 0, DefaultMaxLifetime},
		{time.Minute, 0, DefaultMaxLifetime},
		{48 * time.Hour, 0, 48 * time.Hour},
		{time.Minute, time.Hour, time.Hour},
	} {
		d := &Domain{TTL: c.ttl, MaxLifetime: c.max}
		if got := d.EffectiveMaxLifetime(); got != c.want {
			t.Errorf("ttl %v, max lifetime %v: EffectiveMaxLifetime() = %v, want %v", c.ttl, c.max, got, c.want)
		}
	}
	for _, d := range []time.Duration{0, time.Second, 36 * time.Hour} {
		got, err := ParseMaxLifetime(FormatMaxLifetime(d))
		if err != nil || got != d {
			t.Errorf("round trip of %v: %v, %v", d, got, err)
		}
	}
	if FormatMaxLifetime(0) != "" || FormatMaxLifetime(time.Hour) != "1h0m0s" {
		t.Error("FormatMaxLifetime: want empty when unset, a Go duration otherwise")
	}
	for _, s := range []string{"0s", "0", "-1h", "1 hour", "x"} {
		if _, err := ParseMaxLifetime(s); !errors.Is(err, ErrInvalid) {
			t.Errorf("ParseMaxLifetime(%q) = %v, want ErrInvalid", s, err)
		}
	}
	// GenerateDomainWith sets it and validates it against the TTL.
	sp := DomainSpec{Name: "x_v1", Audience: "urn:x:v1", TTL: 2 * time.Hour}
	if d, err := GenerateDomainWith(sp, DomainOptions{MaxLifetime: 3 * time.Hour}, nil); err != nil || d.MaxLifetime != 3*time.Hour {
		t.Fatalf("GenerateDomainWith = %v, %v", d, err)
	}
	if _, err := GenerateDomainWith(sp, DomainOptions{MaxLifetime: time.Hour}, nil); !errors.Is(err, ErrInvalid) {
		t.Fatalf("GenerateDomainWith(max lifetime < ttl) = %v, want ErrInvalid", err)
	}
	if d, err := GenerateDomain(sp, nil); err != nil || d.MaxLifetime != 0 {
		t.Fatalf("GenerateDomain = %v, %v", d, err)
	}
}

// setDomain is a domain for the set checks: only the name, the audience
// and the policy matter.
func setDomain(name, aud string, identify, owners []string) *Domain {
	return &Domain{Name: name, Audience: aud, Policy: Policy{Identify: identify, Owners: owners}}
}

func TestValidateSet(t *testing.T) {
	l := func(s ...string) []string { return s }
	for _, c := range []struct {
		name    string
		domains []*Domain
		want    map[string]string // domain → error message
	}{
		{name: "empty"},
		{name: "nil entries", domains: []*Domain{nil, setDomain("a", "urn:a", nil, nil), nil}},
		{name: "consistent", domains: []*Domain{
			setDomain("a", "urn:a", l("pharmacy", "*"), l("recip-e")),
			setDomain("b", "urn:b", l("*"), l("therlink")),
		}},
		{name: "same audience", domains: []*Domain{
			setDomain("a", "urn:x", nil, nil),
			setDomain("b", "urn:x", nil, nil),
			setDomain("c", "urn:c", nil, nil),
		}, want: map[string]string{
			"a": `keys: invalid key material: domain "a": audience "urn:x" is also the audience of domain "b": audiences must be unique`,
			"b": `keys: invalid key material: domain "b": audience "urn:x" is also the audience of domain "a": audiences must be unique`,
		}},
		{name: "three with one audience", domains: []*Domain{
			setDomain("c", "urn:x", nil, nil),
			setDomain("a", "urn:x", nil, nil),
			setDomain("b", "urn:x", nil, nil),
		}, want: map[string]string{
			"a": `keys: invalid key material: domain "a": audience "urn:x" is also the audience of domains "b", "c": audiences must be unique`,
			"b": `keys: invalid key material: domain "b": audience "urn:x" is also the audience of domains "a", "c": audiences must be unique`,
			"c": `keys: invalid key material: domain "c": audience "urn:x" is also the audience of domains "a", "b": audiences must be unique`,
		}},
		{name: "owner identifies elsewhere", domains: []*Domain{
			setDomain("rx", "urn:rx", l("pharmacy"), l("recip-e")),
			setDomain("other", "urn:other", l("recip-e", "pharmacy"), l("therlink")),
		}, want: map[string]string{
			"other": `keys: invalid key material: domain "other": policy lets "recip-e" identify, but "recip-e" owns domain "rx": owners may never identify`,
			"rx":    `keys: invalid key material: domain "rx": owner "recip-e" may identify in domain "other": owners may never identify`,
		}},
		{name: "owner identifies in its own domain", domains: []*Domain{
			setDomain("rx", "urn:rx", l("recip-e", "recip-e"), l("recip-e")),
		}, want: map[string]string{
			"rx": `keys: invalid key material: domain "rx": "recip-e" is both an owner and allowed to identify: owners may never identify`,
		}},
		{name: "star identify", domains: []*Domain{
			setDomain("rx", "urn:rx", l("*"), l("recip-e")),
			setDomain("other", "urn:other", l("*"), l("recip-e")),
		}},
		{name: "several violations", domains: []*Domain{
			setDomain("a", "urn:x", l("o"), l("o")),
			setDomain("b", "urn:x", nil, l("o")),
		}, want: map[string]string{
			"a": `keys: invalid key material: domain "a": "o" is both an owner and allowed to identify: owners may never identify; ` +
				`audience "urn:x" is also the audience of domain "b": audiences must be unique; ` +
				`policy lets "o" identify, but "o" owns domain "b": owners may never identify`,
			"b": `keys: invalid key material: domain "b": audience "urn:x" is also the audience of domain "a": audiences must be unique; ` +
				`owner "o" may identify in domain "a": owners may never identify`,
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			got := ValidateSet(c.domains)
			if len(c.want) == 0 && got != nil {
				t.Fatalf("ValidateSet = %v, want nil", got)
			}
			if len(got) != len(c.want) {
				t.Fatalf("ValidateSet = %v, want %d errors", got, len(c.want))
			}
			for name, want := range c.want {
				err := got[name]
				if !errors.Is(err, ErrInvalid) || err.Error() != want {
					t.Errorf("domain %s:\n got %v\nwant %s", name, err, want)
				}
			}
		})
	}
}

// TestValidateSetEnumeration checks ValidateSet on every set of up to three
// domains built from two audiences, two principals and "*", against a
// direct statement of the rules, and checks that the result does not depend
// on the order of the domains.
func TestValidateSetEnumeration(t *testing.T) {
	audiences := []string{"urn:a", "urn:b"}
	identifies := [][]string{nil, {"p"}, {"*"}, {"p", "q"}}
	ownerLists := [][]string{nil, {"p"}, {"q"}}
	var variants []*Domain // name set later
	for _, a := range audiences {
		for _, id := range identifies {
			for _, o := range ownerLists {
				variants = append(variants, setDomain("", a, id, o))
			}
		}
	}
	names := []string{"d0", "d1", "d2"}
	sets := 0
	var walk func(set []*Domain)
	walk = func(set []*Domain) {
		if len(set) > 0 {
			checkSetRules(t, set)
			sets++
		}
		if len(set) == len(names) {
			return
		}
		for _, v := range variants {
			d := *v
			d.Name = names[len(set)]
			walk(append(set[:len(set):len(set)], &d))
		}
	}
	walk(nil)
	if want := 24 + 24*24 + 24*24*24; sets != want {
		t.Fatalf("checked %d sets, want %d", sets, want)
	}
}

func checkSetRules(t *testing.T, set []*Domain) {
	t.Helper()
	// involved[d][x]: domain d is in a violation with domain x (through
	// principal p when p is not empty).
	type peer struct{ domain, principal string }
	involved := map[string][]peer{}
	for _, d := range set {
		for _, e := range set {
			if d != e && d.Audience == e.Audience {
				involved[d.Name] = append(involved[d.Name], peer{e.Name, ""})
			}
			for _, p := range d.Policy.Identify {
				if p != "*" && slices.Contains(e.Policy.Owners, p) {
					involved[d.Name] = append(involved[d.Name], peer{e.Name, p})
					involved[e.Name] = append(involved[e.Name], peer{d.Name, p})
				}
			}
		}
	}
	got := ValidateSet(set)
	if (got == nil) != (len(involved) == 0) || len(got) != len(involved) {
		t.Fatalf("%s: ValidateSet = %v, want errors for %v", describe(set), got, slices.Sorted(maps.Keys(involved)))
	}
	for name, peers := range involved {
		err := got[name]
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), fmt.Sprintf("domain %q: ", name)) {
			t.Fatalf("%s: domain %s: %v", describe(set), name, err)
		}
		for _, p := range peers {
			if !strings.Contains(err.Error(), fmt.Sprintf("%q", p.domain)) ||
				p.principal != "" && !strings.Contains(err.Error(), fmt.Sprintf("%q", p.principal)) {
				t.Fatalf("%s: domain %s: %v does not name %s and %q", describe(set), name, err, p.domain, p.principal)
			}
		}
	}
	rev := slices.Clone(set)
	slices.Reverse(rev)
	if fmt.Sprint(ValidateSet(rev)) != fmt.Sprint(got) {
		t.Fatalf("%s: the result depends on the order", describe(set))
	}
}

func describe(set []*Domain) string {
	var b strings.Builder
	for _, d := range set {
		fmt.Fprintf(&b, "[%s %s identify=%v owners=%v]", d.Name, d.Audience, d.Policy.Identify, d.Policy.Owners)
	}
	return b.String()
}

func TestOwners(t *testing.T) {
	got := Owners([]*Domain{
		setDomain("a", "urn:a", []string{"x"}, []string{"o1", "o2"}),
		nil,
		setDomain("b", "urn:b", nil, []string{"o2", "o3"}),
	})
	if fmt.Sprint(got) != "map[o1:true o2:true o3:true]" {
		t.Fatalf("Owners = %v", got)
	}
	if len(Owners(nil)) != 0 {
		t.Fatal("Owners(nil) not empty")
	}
}

func TestNextAudience(t *testing.T) {
	for _, c := range []struct{ aud, name, want string }{
		{"urn:ehealth:pseudo:prescriptions:v1", "prescriptions_v2", "urn:ehealth:pseudo:prescriptions:v2"},
		{"https://example.org/d/x/v3", "x.v4", "https://example.org/d/x/v4"},
		{"urn:x_v9", "x-v10", "urn:x_v10"},
		{"urn:be:ehealth:prescriptions", "prescriptions_v2", "urn:be:ehealth:prescriptions:prescriptions_v2"},
		{"urn:x:v1", "next", "urn:x:v1:next"},
		{"urn:x:v1", "xv2", "urn:x:v1:xv2"},
		{"urn:x:dev1", "x_v2", "urn:x:dev1:x_v2"},
		{"urn:x:v", "x_v2", "urn:x:v:x_v2"},
		{"urn:x:v1a", "x_v2", "urn:x:v1a:x_v2"},
	} {
		got := NextAudience(c.aud, c.name)
		if got != c.want || !ValidAudience(got) {
			t.Errorf("NextAudience(%q, %q) = %q, want %q (valid)", c.aud, c.name, got, c.want)
		}
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
