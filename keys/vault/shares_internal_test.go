package vault

import (
	"bytes"
	"context"
	"sync"
	"testing"

	"github.com/gtank/ristretto255"

	"github.com/ehealth-pseudo/pseudonymizer/internal/sharetest"
	"github.com/ehealth-pseudo/pseudonymizer/keys"
)

// TestSharesInFlight: concurrent calls share round trips to the real
// plugin, and never more than InFlight round trips are in flight at once;
// every point gets its own product (equal inputs, equal products).
func TestSharesInFlight(t *testing.T) {
	e := sharetest.Start(t)
	ctx := context.Background()
	admin := NewStore(e.ClientWithToken(t, e.AdminToken), "", Owner)
	if _, err := admin.CreateDomainWith(ctx, keys.DomainSpec{Name: "batch_v1", Audience: "urn:test:batch",
		Policy: keys.Policy{Pseudonymize: []string{"client"}}}, keys.DomainOptions{Split: true}); err != nil {
		t.Fatal(err)
	}
	for _, inFlight := range []int{1, 2} {
		svc := NewStore(e.ClientWithToken(t, e.ServiceToken), "", Service)
		svc.SetShares(ShareConfig{Options: SharesOptions{InFlight: inFlight}})
		d, err := svc.Domain(ctx, "batch_v1")
		if err != nil {
			t.Fatal(err)
		}
		sh, err := svc.Shares()
		if err != nil {
			t.Fatal(err)
		}
		ref := keys.ShareRef{Domain: "batch_v1", Generation: d.ShareGeneration}
		const calls, distinct = 48, 6
		in := make([][]byte, distinct)
		for i := range in {
			var s [64]byte
			s[0] = byte(i + 1)
			k, _ := ristretto255.NewScalar().SetUniformBytes(s[:])
			in[i] = ristretto255.NewIdentityElement().ScalarBaseMult(k).Bytes()
		}
		out := make([][]byte, calls)
		start := make(chan struct{})
		var wg sync.WaitGroup
		for c := range calls {
			wg.Go(func() {
				<-start
				pts, errs := [][]byte{bytes.Clone(in[c%distinct])}, []error{nil}
				sh.Multiply(ctx, keys.SharePseudonymize, ref, keys.ShareRef{}, pts, errs)
				if errs[0] != nil {
					t.Errorf("call %d: %v", c, errs[0])
					return
				}
				out[c] = pts[0]
			})
		}
		close(start)
		wg.Wait()
		for c := range calls {
			for o := range c {
				if same := bytes.Equal(out[c], out[o]); same != (c%distinct == o%distinct) {
					t.Fatalf("InFlight %d: products of calls %d and %d equal: %t", inFlight, c, o, same)
				}
			}
		}
		trips, items, failures := sh.Stats()
		sh.mu.Lock()
		peak := sh.peak
		sh.mu.Unlock()
		t.Logf("InFlight %d: %d calls in %d round trips, at most %d in flight", inFlight, calls, trips, peak)
		if items != calls || failures != 0 || trips >= calls {
			t.Fatalf("InFlight %d: %d round trips, %d points, %d failures for %d calls: want shared round trips", inFlight, trips, items, failures, calls)
		}
		if peak > inFlight {
			t.Fatalf("InFlight %d: %d round trips in flight at once", inFlight, peak)
		}
	}
}
