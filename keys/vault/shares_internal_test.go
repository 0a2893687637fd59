package vault

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gtank/ristretto255"
	"github.com/hashicorp/vault/api"

	"github.com/ehealth-pseudo/pseudonymizer/internal/sharetest"
	"github.com/ehealth-pseudo/pseudonymizer/internal/syncbuf"
	"github.com/ehealth-pseudo/pseudonymizer/internal/vaulttest"
	"github.com/ehealth-pseudo/pseudonymizer/internal/waitfor"
	"github.com/ehealth-pseudo/pseudonymizer/keys"
	"github.com/ehealth-pseudo/pseudonymizer/vault/policies"
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
	return sharesWithToken(t, e, e.ServiceToken, name, opts)
}

// sharesWithToken is serviceShares with another token of the service's.
func sharesWithToken(t testing.TB, e *sharetest.Env, token, name string, opts SharesOptions) (*Shares, keys.ShareRef) {
	t.Helper()
	svc := NewStore(e.ClientWithToken(t, token), "", Service)
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

// TestSharesPatch: the client multiplies with PATCH (decision 25), which
// Vault audits as such; with a service policy from before PATCH ("update"
// only on multiply) Vault refuses it, and the client sends PUT from then
// on, saying so once; a token that may do neither fails UNAVAILABLE and
// does not switch.
func TestSharesPatch(t *testing.T) {
	e := sharetest.Start(t)
	splitDomain(t, e, "patch_v1")
	old := strings.Replace(policies.Service, `capabilities = ["update", "patch"]`, `capabilities = ["update"]`, 1)
	none := strings.Replace(policies.Service, `capabilities = ["update", "patch"]`, `capabilities = ["read"]`, 1)
	if old == policies.Service || none == policies.Service {
		t.Fatal("the service policy no longer grants multiply as this test expects")
	}
	e.WritePolicy(t, "service-before-patch", old)
	e.WritePolicy(t, "service-no-multiply", none)
	g := ristretto255.NewGeneratorElement().Bytes()
	multiply := func(sh *Shares, ref keys.ShareRef) error {
		pts, errs := [][]byte{bytes.Clone(g)}, []error{nil}
		sh.Multiply(context.Background(), keys.SharePseudonymize, ref, keys.ShareRef{}, pts, errs)
		return errs[0]
	}
	for _, tc := range []struct {
		policy   string
		ok, put  bool
		warnings int
	}{
		{"pseudonymizer-service", true, false, 0},
		{"service-before-patch", true, true, 1},
		{"service-no-multiply", false, false, 0},
	} {
		var logs syncbuf.Buffer
		sh, ref := sharesWithToken(t, e, e.TokenOnly(t, tc.policy), "patch_v1",
			SharesOptions{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
		for i := range 3 {
			err := multiply(sh, ref)
			if (err == nil) != tc.ok || (err != nil && !errors.Is(err, keys.ErrUnavailable)) {
				t.Fatalf("%s, multiply %d: %v; want success %t", tc.policy, i, err, tc.ok)
			}
		}
		if sh.put.Load() != tc.put {
			t.Errorf("%s: sends PUT %t, want %t", tc.policy, sh.put.Load(), tc.put)
		}
		if n := strings.Count(logs.String(), "refused PATCH"); n != tc.warnings {
			t.Errorf("%s: %d warnings of PATCH refused, want %d:\n%s", tc.policy, n, tc.warnings, logs.String())
		}
	}
	// Vault's audit device has the multiplications with their method.
	raw, err := os.ReadFile(e.AuditLog)
	if err != nil {
		t.Fatal(err)
	}
	ops := map[string]int{}
	for _, line := range bytes.Split(raw, []byte("\n")) {
		var entry struct {
			Type    string `json:"type"`
			Request struct {
				Operation string `json:"operation"`
				Path      string `json:"path"`
			} `json:"request"`
			Error string `json:"error"`
		}
		if json.Unmarshal(line, &entry) == nil && entry.Type == "response" && entry.Request.Path == e.SharesMount+"/multiply" && entry.Error == "" {
			ops[entry.Request.Operation]++
		}
	}
	if ops["patch"] < 3 || ops["update"] < 3 {
		t.Errorf("audited multiplications by operation: %v; want at least 3 patch and 3 update", ops)
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
