package pseudonymizer

import (
	"errors"
	"runtime"
	"slices"
	"sync"
	"testing"

	"github.com/ehealth-pseudo/pseudonymizer/keys"
)

// oneDomain is a KeySource serving one domain that a test can replace.
type oneDomain struct {
	mu sync.Mutex
	d  *keys.Domain
}

func (o *oneDomain) Domain(name string) (*keys.Domain, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if name != o.d.Name {
		return nil, keys.ErrUnknownDomain
	}
	return o.d, nil
}

func (o *oneDomain) Health() error { return nil }

func TestPreparedOncePerGeneration(t *testing.T) {
	d, err := keys.GenerateDomain(keys.DomainSpec{Name: "a_v1", Audience: "urn:test:a"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	d.Generation = 1
	src := &oneDomain{d: d}
	s := NewServer(src)
	first, err := s.domain("a_v1")
	if err != nil {
		t.Fatal(err)
	}
	again, _ := s.domain("a_v1")
	if again != first {
		t.Fatal("the domain was prepared again without a key change")
	}

	// A new generation (a transit key rotation) is prepared anew.
	n := *d
	k, _ := keys.NewTransitKey(nil)
	n.Transit = keys.Transit{Active: "t2", Keys: map[string]keys.Secret{"t1": d.Transit.Keys["t1"], "t2": k}}
	n.Generation = 2
	src.mu.Lock()
	src.d = &n
	src.mu.Unlock()
	rotated, _ := s.domain("a_v1")
	if rotated == first || rotated.ActiveKid() != "t2" {
		t.Fatal("a new generation was not prepared")
	}
	if _, err := s.domain("b_v1"); !errors.Is(err, keys.ErrUnknownDomain) {
		t.Fatalf("unknown domain: %v", err)
	}
}

func (o *oneDomain) IsOwner(p string) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return slices.Contains(o.d.Policy.Owners, p) || slices.Contains(o.d.Policy.Owners, "*")
}

// TestParallelRecovers: a panic in the evaluation of a chunk, on any of
// the goroutines of a large batch or inline for a small one, becomes a
// *PanicError on exactly that chunk's items; the others keep their
// results and nothing panics out of parallel.
func TestParallelRecovers(t *testing.T) {
	for _, n := range []int{1, 31, 64, 256, 1000} {
		for _, bad := range []int{0, n / 2, n - 1} {
			errs := make([]error, n)
			done := make([]bool, n)
			var mu sync.Mutex
			parallel(n, &Params{}, errs, func(lo, hi int) {
				for i := lo; i < hi; i++ {
					if i == bad {
						var a []int
						_ = a[i] // index out of range
					}
					mu.Lock()
					done[i] = true
					mu.Unlock()
				}
			})
			panicked := 0
			for i, err := range errs {
				var pe *PanicError
				switch {
				case errors.As(err, &pe):
					panicked++
					if !errors.Is(err, ErrInternal) || pe.Panic.Type == "" || len(pe.Panic.Frames) == 0 {
						t.Fatalf("n=%d: item %d: %v %+v", n, i, err, pe.Panic)
					}
				case err != nil:
					t.Fatalf("n=%d: item %d: %v", n, i, err)
				case !done[i]:
					t.Fatalf("n=%d: item %d neither done nor failed", n, i)
				}
			}
			if errs[bad] == nil || panicked == n && n >= 2*minChunk && runtime.GOMAXPROCS(0) > 1 {
				t.Fatalf("n=%d bad=%d: %d items failed", n, bad, panicked)
			}
		}
	}
}
