package vault

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gtank/ristretto255"
	"github.com/hashicorp/vault/api"

	"github.com/ehealth-pseudo/pseudonymizer/internal/sharetest"
	"github.com/ehealth-pseudo/pseudonymizer/internal/vaulttest"
	"github.com/ehealth-pseudo/pseudonymizer/internal/waitfor"
	"github.com/ehealth-pseudo/pseudonymizer/keys"
)

// splitDomain creates the split domain name in e's Vault (as the
// administrators do).
func splitDomain(t testing.TB, e *sharetest.Env, name string) {
	t.Helper()
	admin := NewStore(e.ClientWithToken(t, e.AdminToken), "", Owner)
	if _, err := admin.CreateDomainWith(context.Background(), keys.DomainSpec{Name: name, Audience: "urn:test:" + name,
		Policy: keys.Policy{Pseudonymize: []string{"client"}}}, keys.DomainOptions{Split: true}); err != nil {
		t.Fatal(err)
	}
}

// serviceShares returns the service's client of the plugin in e, with
// opts, and the reference of the share of domain name.
func serviceShares(t testing.TB, e *sharetest.Env, name string, opts SharesOptions) (*Shares, keys.ShareRef) {
	t.Helper()
	svc := NewStore(e.ClientWithToken(t, e.ServiceToken), "", Service)
	svc.SetShares(ShareConfig{Options: opts})
	d, err := svc.Domain(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	sh, err := svc.Shares()
	if err != nil {
		t.Fatal(err)
	}
	return sh, keys.ShareRef{Domain: name, Generation: d.ShareGeneration}
}

// TestSharesInFlight: concurrent calls share round trips to the real
// plugin, and never more than InFlight round trips are in flight at once;
// every point gets its own product (equal inputs, equal products).
func TestSharesInFlight(t *testing.T) {
	e := sharetest.Start(t)
	ctx := context.Background()
	splitDomain(t, e, "batch_v1")
	for _, inFlight := range []int{1, 2} {
		// A long window: the bound holds while round trips end within
		// StallWindows windows (TestSharesStall covers the others).
		sh, ref := serviceShares(t, e, "batch_v1", SharesOptions{InFlight: inFlight, Window: time.Second})
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
				if bytes.Equal(pts[0], in[c%distinct]) {
					t.Errorf("call %d: the plugin returned the point it got", c)
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

// TestSharesStall: with InFlight round trips hanging (the plugin process
// stopped), queued points still go after StallWindows windows, and every
// call succeeds once the plugin runs again.
func TestSharesStall(t *testing.T) {
	e := sharetest.Start(t)
	ctx := context.Background()
	splitDomain(t, e, "stall_v1")
	sh, ref := serviceShares(t, e, "stall_v1", SharesOptions{InFlight: 1, Window: 50 * time.Millisecond, Timeout: time.Minute})
	g := ristretto255.NewGeneratorElement().Bytes()
	multiply := func() error {
		pts, errs := [][]byte{bytes.Clone(g)}, []error{nil}
		sh.Multiply(ctx, keys.SharePseudonymize, ref, keys.ShareRef{}, pts, errs)
		return errs[0]
	}
	if err := multiply(); err != nil { // the plugin process runs
		t.Fatal(err)
	}
	pids := vaulttest.Processes(t, filepath.Join(e.PluginDir(), filepath.Base(e.Plugin)))
	if len(pids) == 0 {
		t.Fatal("no plugin process")
	}
	signal := func(sig syscall.Signal) {
		for _, pid := range pids {
			if err := syscall.Kill(pid, sig); err != nil {
				t.Fatal(err)
			}
		}
	}
	signal(syscall.SIGSTOP)
	stopped := true
	defer func() {
		if stopped {
			signal(syscall.SIGCONT)
		}
	}()
	state := func() (inflight, peak, queued int) {
		sh.mu.Lock()
		defer sh.mu.Unlock()
		return sh.inflight, sh.peak, sh.queued
	}
	// A round trip's end releases its slot after its callers have their
	// answers: each phase starts once the last phase's slots are free, or
	// a stale slot would pass for this phase's round trip.
	idle := func() {
		waitfor.Cond(t, 10*time.Second, "no round trip in flight", func() bool { n, _, _ := state(); return n == 0 })
	}
	idle()
	errs := make(chan error, 2)
	go func() { errs <- multiply() }()
	waitfor.Cond(t, 10*time.Second, "a round trip in flight", func() bool { n, _, _ := state(); return n == 1 })
	go func() { errs <- multiply() }()
	waitfor.Cond(t, 10*time.Second, "the queued point sent past the stalled round trip", func() bool {
		n, peak, queued := state()
		return n == 2 && peak == 2 && queued == 0
	})
	signal(syscall.SIGCONT)
	stopped = false
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatalf("after the plugin ran again: %v", err)
		}
	}

	// Again, but the round trip ends before the stall: its end sends the
	// queued point, and no timer stays armed with nothing queued (a stale
	// one, the stall's, would hold the next point past its window).
	idle()
	signal(syscall.SIGSTOP)
	stopped = true
	go func() { errs <- multiply() }()
	waitfor.Cond(t, 10*time.Second, "a round trip in flight", func() bool { n, _, _ := state(); return n == 1 })
	go func() { errs <- multiply() }()
	waitfor.Cond(t, 10*time.Second, "the timer armed for the stall", func() bool {
		sh.mu.Lock()
		defer sh.mu.Unlock()
		return sh.armed && len(sh.queue) == 1 && !sh.due.Before(sh.since.Add(StallWindows*sh.window))
	})
	signal(syscall.SIGCONT)
	stopped = false
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatalf("after the plugin ran again: %v", err)
		}
	}
	sh.mu.Lock()
	armed, queued := sh.armed, len(sh.queue)
	sh.mu.Unlock()
	if armed || queued != 0 {
		t.Fatalf("timer armed %t with %d parts queued", armed, queued)
	}
}

// TestSharesBoundedAnswers: the client reads at most maxAnswer bytes of
// any answer, error answers included, and does not try an oversized
// answer again: its points fail UNAVAILABLE. (A server that stands for a
// Vault gone wrong: no real Vault sends these.)
func TestSharesBoundedAnswers(t *testing.T) {
	for _, status := range []int{http.StatusOK, http.StatusInternalServerError} {
		var requests atomic.Int32
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			requests.Add(1)
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(status)
			chunk := bytes.Repeat([]byte(" "), 64<<10)
			_, _ = w.Write([]byte(`{"errors": ["`))
			for range 64 { // 4 MiB, far past the bound
				if _, err := w.Write(chunk); err != nil {
					return
				}
			}
		}))
		c, err := api.NewClient(&api.Config{Address: srv.URL})
		if err != nil {
			t.Fatal(err)
		}
		sh, err := NewShares(c, "", SharesOptions{MaxBatch: 10, Timeout: 10 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		pts, errs := [][]byte{ristretto255.NewGeneratorElement().Bytes()}, []error{nil}
		sh.Multiply(context.Background(), keys.SharePseudonymize, keys.ShareRef{Domain: "d", Generation: 1}, keys.ShareRef{}, pts, errs)
		if !errors.Is(errs[0], keys.ErrUnavailable) || !errors.Is(errs[0], errTooLarge) {
			t.Errorf("status %d: %v; want an unavailable point, for an answer too large", status, errs[0])
		}
		if n := requests.Load(); n != 1 {
			t.Errorf("status %d: %d requests; an oversized answer is not worth another", status, n)
		}
		srv.Close()
	}
}

func TestBoundedBody(t *testing.T) {
	for _, tc := range []struct {
		size, max int
		err       error
	}{{10, 10, nil}, {11, 10, errTooLarge}, {0, 0, nil}, {1, 0, errTooLarge}, {5, 10, nil}} {
		b := &boundedBody{ReadCloser: io.NopCloser(bytes.NewReader(make([]byte, tc.size))), left: int64(tc.max)}
		got, err := io.ReadAll(b)
		if !errors.Is(err, tc.err) || (err == nil && len(got) != tc.size) {
			t.Errorf("%d bytes, bound %d: read %d, %v; want %v", tc.size, tc.max, len(got), err, tc.err)
		}
	}
}
