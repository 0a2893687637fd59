package pseudonymizer

import (
	"errors"
	"runtime"
	"sync"
	"testing"
)

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
