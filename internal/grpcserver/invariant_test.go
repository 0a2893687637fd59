package grpcserver

import (
	"context"
	"log/slog"
	"slices"
	"testing"

	"github.com/ehealth-pseudo/pseudonymizer/keys"
	pb "github.com/ehealth-pseudo/pseudonymizer/proto/pseudonymizer/v1"
)

// memSource is an in-memory keys.Source: the cache, not the test, decides
// what is served.
type memSource struct{ domains map[string]*keys.Domain }

func (m *memSource) Domain(_ context.Context, name string) (*keys.Domain, error) {
	d, ok := m.domains[name]
	if !ok {
		return nil, keys.ErrUnknownDomain
	}
	return d, nil
}

func (m *memSource) Domains(context.Context) ([]string, error) {
	var names []string
	for n := range m.domains {
		names = append(names, n)
	}
	slices.Sort(names)
	return names, nil
}

func (m *memSource) Version(ctx context.Context, name string) (uint64, error) {
	d, err := m.Domain(ctx, name)
	if err != nil {
		return 0, err
	}
	return d.Generation, nil
}

// rawSet is a KeySource serving domains as they are, without the cache's
// validation.
type rawSet map[string]*keys.Domain

func (r rawSet) Domain(name string) (*keys.Domain, error) {
	if d, ok := r[name]; ok {
		return d, nil
	}
	return nil, keys.ErrUnknownDomain
}

func (r rawSet) Health() error { return nil }

func (r rawSet) IsOwner(p string) bool {
	for _, d := range r {
		if slices.Contains(d.Policy.Owners, p) || slices.Contains(d.Policy.Owners, "*") {
			return true
		}
	}
	return false
}

// subsets returns every subset of set.
func subsets(set []string) [][]string {
	var out [][]string
	for mask := 0; mask < 1<<len(set); mask++ {
		var s []string
		for i, e := range set {
			if mask&(1<<i) != 0 {
				s = append(s, e)
			}
		}
		out = append(out, s)
	}
	return out
}

// TestOwnersNeverIdentify checks the invariant "a principal that owns any
// domain can never obtain an identifier, directly or through convert" (it
// may neither identify, nor pseudonymize identifiers of its choice, which
// would give it a dictionary of its own pseudonyms) by enumerating every
// policy set over two domains and principals a and b (each domain:
// Identify, Pseudonymize and Convert to the other domain ⊆ {a, *}, Owners ⊆
// {a, b}: 65,536 configurations), served by a real keys.Cache to the live
// authorizer of Server. For each configuration and principal it computes
// what the principal can reach from any domain through convert, and
// asserts that an owner reaches no domain where it may identify or
// pseudonymize, and that a non-owner listed may (so that the check cannot
// pass by refusing everyone).
func TestOwnersNeverIdentify(t *testing.T) {
	names := []string{"d1", "d2"}
	base := map[string]*keys.Domain{}
	for _, n := range names {
		d, err := keys.GenerateDomain(keys.DomainSpec{Name: n, Audience: "urn:test:" + n}, nil)
		if err != nil {
			t.Fatal(err)
		}
		base[n] = d
	}
	principals := []string{"a", "b"}
	lists := subsets([]string{"a", "*"})
	owners := subsets(principals)
	type pol struct{ identify, pseudonymize, owners, convert []string }
	var pols []pol
	for _, id := range lists {
		for _, ps := range lists {
			for _, ow := range owners {
				for _, cv := range lists {
					pols = append(pols, pol{id, ps, ow, cv})
				}
			}
		}
	}
	ctx := context.Background()
	checked, refused := 0, 0
	var gen uint64
	for _, p1 := range pols {
		for _, p2 := range pols {
			gen++
			src := &memSource{domains: map[string]*keys.Domain{}}
			for i, p := range []pol{p1, p2} {
				d := *base[names[i]]
				d.Policy = keys.Policy{Identify: p.identify, Pseudonymize: p.pseudonymize, Owners: p.owners, Convert: map[string][]string{names[1-i]: p.convert}}
				d.Generation = gen
				src.domains[names[i]] = &d
			}
			cache, err := keys.NewCache(ctx, src, &keys.CacheOptions{Logger: slog.New(slog.DiscardHandler)})
			if err != nil {
				t.Fatal(err)
			}
			s := newHandler(cache, DefaultMaxBatch, nil, slog.Default())
			for _, who := range principals {
				owner := slices.Contains(p1.owners, who) || slices.Contains(p2.owners, who)
				for i, name := range names {
					d, err := cache.Domain(name)
					if err != nil {
						// Refused at load (keys.ValidateSet): nothing is
						// served, every call is denied.
						if _, err := s.domain(name); err == nil {
							t.Fatalf("%s refused by the cache but prepared by the server", name)
						}
						refused++
						continue
					}
					canID, canPs := canIdentify(s, d.Policy, who), canPseudonymize(s, d.Policy, who)
					listed := func(l []string) bool { return slices.Contains(l, who) || slices.Contains(l, "*") }
					ops := s.allowedOperations(d.Policy, who)
					if owner && (canID || canPs || slices.Contains(ops, pb.Operation_OPERATION_IDENTIFY) || slices.Contains(ops, pb.Operation_OPERATION_PSEUDONYMIZE)) {
						t.Fatalf("owner %q may identify or pseudonymize in %s: policies %+v / %+v", who, name, p1, p2)
					}
					if !owner && (listed(d.Policy.Identify) != canID || listed(d.Policy.Pseudonymize) != canPs) {
						t.Fatalf("non-owner %q: listed but refused, or allowed unlisted, in %s: %+v / %+v", who, name, p1, p2)
					}
					// Through convert: from this domain, every domain the
					// principal can reach; an owner may identify in none.
					reach := []string{name}
					if canConvert(d.Policy, names[1-i], who) {
						reach = append(reach, names[1-i])
					}
					for _, r := range reach {
						rd, err := cache.Domain(r)
						if err == nil && owner && (canIdentify(s, rd.Policy, who) || canPseudonymize(s, rd.Policy, who)) {
							t.Fatalf("owner %q identifies through convert %s→%s: %+v / %+v", who, name, r, p1, p2)
						}
					}
					checked++
				}
			}
			_ = cache.Close()
			// Defence in depth: even a source that validates nothing (every
			// domain served as it is) lets no owner identify.
			raw := newHandler(rawSet(src.domains), DefaultMaxBatch, nil, slog.Default())
			for _, who := range principals {
				owner := slices.Contains(p1.owners, who) || slices.Contains(p2.owners, who)
				for _, name := range names {
					if owner && (canIdentify(raw, src.domains[name].Policy, who) || canPseudonymize(raw, src.domains[name].Policy, who)) {
						t.Fatalf("unvalidated source: owner %q may identify in %s: %+v / %+v", who, name, p1, p2)
					}
				}
			}
		}
	}
	if checked+refused != len(pols)*len(pols)*len(principals)*len(names) || checked < 50000 {
		t.Fatalf("%d checks on served domains, %d on refused ones", checked, refused)
	}
	t.Logf("%d configurations: %d principal×domain checks on served domains, %d on domains refused at load", len(pols)*len(pols), checked, refused)
}
