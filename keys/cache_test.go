package keys

import (
	"context"
	"errors"
	"log/slog"
	"maps"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ehealth-pseudo/pseudonymizer/internal/waitfor"
)

// countHandler counts log records by level.
type countHandler struct {
	warn, info atomic.Int64
}

func (h *countHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *countHandler) Handle(_ context.Context, r slog.Record) error {
	switch {
	case r.Level >= slog.LevelWarn:
		h.warn.Add(1)
	case r.Level == slog.LevelInfo:
		h.info.Add(1)
	}
	return nil
}
func (h *countHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *countHandler) WithGroup(string) slog.Handler      { return h }

func TestCacheFileStore(t *testing.T) {
	ctx := context.Background()
	s := newFileStore(t)
	if _, err := s.CreateDomain(ctx, spec); err != nil {
		t.Fatal(err)
	}
	h := &countHandler{}
	var mu sync.Mutex
	var changes [][]string
	var polls atomic.Int64
	c, err := NewCache(ctx, s, &CacheOptions{
		Interval: 100 * time.Millisecond,
		Logger:   slog.New(h),
		OnChange: func(names []string) {
			mu.Lock()
			changes = append(changes, names)
			mu.Unlock()
		},
		OnPoll: func(error) { polls.Add(1) },
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Health(); err != nil {
		t.Fatal(err)
	}
	d1, err := c.Domain(spec.Name)
	if err != nil || d1.Transit.Active != "t1" {
		t.Fatalf("Domain = %v, %v", d1, err)
	}
	if _, err := c.Domain("nope"); !errors.Is(err, ErrUnknownDomain) {
		t.Fatalf("Domain(nope) = %v", err)
	}

	// Readers on the hot path while the cache changes (run with -race).
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if d, err := c.Domain(spec.Name); err != nil || d.Validate() != nil {
					t.Errorf("Domain = %v, %v", d, err)
					return
				}
			}
		}()
	}

	t.Run("rotation", func(t *testing.T) {
		gen := c.Generation()
		if _, err := s.RotateTransitKey(ctx, spec.Name); err != nil {
			t.Fatal(err)
		}
		waitfor.Cond(t, 2*time.Second, "rotation seen", func() bool {
			d, _ := c.Domain(spec.Name)
			return d.Transit.Active == "t2"
		})
		d2, _ := c.Domain(spec.Name)
		if d2.Generation == d1.Generation || c.Generation() == gen || d1.Transit.Active != "t1" {
			t.Fatal("generation did not change, or the old snapshot was modified")
		}
	})

	t.Run("new version", func(t *testing.T) {
		if _, err := s.NewVersion(ctx, spec.Name, "prescriptions_v2"); err != nil {
			t.Fatal(err)
		}
		waitfor.Cond(t, 2*time.Second, "new domain seen", func() bool {
			_, err := c.Domain("prescriptions_v2")
			return err == nil
		})
		if got := c.Domains(); len(got) != 2 {
			t.Fatalf("Domains() = %v", got)
		}
	})

	// Outage: the file disappears. The cache serves its snapshot, reports
	// it, and logs once per poll, not once per request.
	t.Run("outage", func(t *testing.T) {
		hidden := s.Path() + ".hidden"
		if err := os.Rename(s.Path(), hidden); err != nil {
			t.Fatal(err)
		}
		waitfor.Cond(t, 2*time.Second, "degraded", func() bool { return c.Health() != nil })
		if err := c.Health(); !errors.Is(err, ErrUnavailable) {
			t.Fatalf("Health() = %v, want ErrUnavailable", err)
		}
		warn0, polls0 := h.warn.Load(), polls.Load()
		for range 5 { // many requests during five polls
			p := polls.Load()
			waitfor.Cond(t, 2*time.Second, "a poll", func() bool {
				if _, err := c.Domain(spec.Name); err != nil {
					t.Fatal(err)
				}
				return polls.Load() > p
			})
		}
		if n, p := h.warn.Load()-warn0, polls.Load()-polls0; n > p+1 || n == 0 {
			t.Fatalf("%d warnings in %d polls", n, p)
		}
		if err := os.Rename(hidden, s.Path()); err != nil {
			t.Fatal(err)
		}
		waitfor.Cond(t, 2*time.Second, "recovered", func() bool { return c.Health() == nil })
		if h.info.Load() == 0 {
			t.Error("recovery not logged")
		}
	})

	close(stop)
	wg.Wait()
	mu.Lock()
	if len(changes) < 2 {
		t.Errorf("OnChange calls: %v", changes)
	}
	mu.Unlock()

	t.Run("closed", func(t *testing.T) {
		c.Close()
		c.Close()
		gen := c.Generation()
		if _, err := s.RotateTransitKey(ctx, spec.Name); err != nil {
			t.Fatal(err)
		}
		// Close returned: the poller has exited, so nothing can change.
		select {
		case <-c.done:
		default:
			t.Fatal("the poller is still running after Close")
		}
		if c.Generation() != gen {
			t.Fatal("cache polled after Close")
		}
	})
}

func TestCacheStartUnavailable(t *testing.T) {
	s := newFileStore(t)
	if err := os.Remove(s.Path()); err != nil {
		t.Fatal(err)
	}
	_, err := NewCache(context.Background(), s, nil)
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("NewCache = %v, want ErrUnavailable", err)
	}
}

func TestCacheDomainsOption(t *testing.T) {
	ctx := context.Background()
	s := newFileStore(t)
	if _, err := s.EnsureDemo(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateDomain(ctx, spec); err != nil {
		t.Fatal(err)
	}
	c, err := NewCache(ctx, s, &CacheOptions{Domains: []string{spec.Name}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Domain(DemoDomain); !errors.Is(err, ErrUnknownDomain) {
		t.Fatalf("a domain outside Domains was loaded: %v", err)
	}
	if _, err := NewCache(ctx, s, &CacheOptions{Domains: []string{"nope"}}); !errors.Is(err, ErrUnknownDomain) {
		t.Fatalf("NewCache with a missing domain = %v", err)
	}
}

// memSource is a Source whose domains a test sets directly.
type memSource struct {
	mu      sync.Mutex
	domains map[string]*Domain
}

func (m *memSource) set(ds ...*Domain) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.domains = map[string]*Domain{}
	for _, d := range ds {
		m.domains[d.Name] = d
	}
}

func (m *memSource) Domain(_ context.Context, name string) (*Domain, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if d, ok := m.domains[name]; ok {
		return d, nil
	}
	return nil, ErrUnknownDomain
}

func (m *memSource) Domains(context.Context) ([]string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Sorted(maps.Keys(m.domains)), nil
}

func (m *memSource) Version(ctx context.Context, name string) (uint64, error) {
	d, err := m.Domain(ctx, name)
	if err != nil {
		return 0, err
	}
	return d.Generation, nil
}

func genDomain(t *testing.T, name, aud string, gen uint64, p Policy) *Domain {
	t.Helper()
	d, err := GenerateDomain(DomainSpec{Name: name, Audience: aud, Policy: p}, nil)
	if err != nil {
		t.Fatal(err)
	}
	d.Generation = gen
	return d
}

// TestCacheInvariantsAcrossDomains: a domain that would break an invariant
// across domains (a duplicate audience, an owner allowed to identify) is
// not taken, at load or later; its last good version stays; Health says
// why; the others are served.
func TestCacheInvariantsAcrossDomains(t *testing.T) {
	a := genDomain(t, "a_v1", "urn:test:a", 1, Policy{Owners: []string{"owner-a"}})
	b := genDomain(t, "b_v1", "urn:test:b", 1, Policy{Identify: []string{"client"}})
	dup := genDomain(t, "c_v1", "urn:test:a", 1, Policy{})
	src := &memSource{}
	src.set(a, b, dup)
	c, err := NewCache(context.Background(), src, &CacheOptions{Interval: 10 * time.Millisecond, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// At load, both domains of the duplicate audience are new: neither is
	// served.
	if got := c.Domains(); !slices.Equal(got, []string{"b_v1"}) || !errors.Is(c.Health(), ErrInvalid) {
		t.Fatalf("at load: %v %v", got, c.Health())
	}
	src.set(a, b)
	waitfor.Cond(t, 2*time.Second, "a_v1 served once alone", func() bool { _, err := c.Domain("a_v1"); return err == nil })
	// b_v1 now lets a_v1's owner identify: the change is refused, the last
	// good b_v1 stays.
	b2 := genDomain(t, "b_v1", "urn:test:b", 2, Policy{Identify: []string{"client", "owner-a"}})
	b2.Scalar, b2.Transit = b.Scalar, b.Transit
	src.set(a, b2)
	waitfor.Cond(t, 2*time.Second, "refused change reported", func() bool { return errors.Is(c.Health(), ErrInvalid) })
	if d, _ := c.Domain("b_v1"); d.Generation != 1 {
		t.Fatalf("the offending version of b_v1 is served: %v", d)
	}
	if _, err := c.Refresh(context.Background(), "b_v1"); err != nil {
		t.Fatal(err)
	}
	if d, _ := c.Domain("b_v1"); d.Generation != 1 {
		t.Fatalf("Refresh took the offending version: %v", d)
	}
	if !c.IsOwner("owner-a") || c.IsOwner("client") {
		t.Fatal("IsOwner")
	}
}

// TestCacheEmptyListingKeepsDomains: a source that suddenly lists nothing is
// a fault, not a removal.
func TestCacheEmptyListingKeepsDomains(t *testing.T) {
	a := genDomain(t, "a_v1", "urn:test:a", 1, Policy{})
	b := genDomain(t, "b_v1", "urn:test:b", 1, Policy{})
	src := &memSource{}
	src.set(a, b)
	c, err := NewCache(context.Background(), src, &CacheOptions{Interval: 10 * time.Millisecond, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	src.set()
	waitfor.Cond(t, 2*time.Second, "fault reported", func() bool { return errors.Is(c.Health(), ErrUnavailable) })
	if got := c.Domains(); len(got) != 2 {
		t.Fatalf("domains wiped: %v", got)
	}
	// One domain removed from a listing that still has the other: removed.
	src.set(a)
	waitfor.Cond(t, 2*time.Second, "b_v1 removed", func() bool { return len(c.Domains()) == 1 && c.Health() == nil })
}

// TestCacheRefusedOwnersCount: an update that makes a principal an owner
// while another domain lets it identify is refused, yet the principal
// counts as an owner from then on (the authorizer refuses it everywhere),
// also after a Refresh of another domain.
func TestCacheRefusedOwnersCount(t *testing.T) {
	y := genDomain(t, "y_v1", "urn:test:y", 1, Policy{Owners: []string{"owner-a"}})
	z := genDomain(t, "z_v1", "urn:test:z", 1, Policy{Identify: []string{"mallory"}})
	src := &memSource{}
	src.set(y, z)
	c, err := NewCache(context.Background(), src, &CacheOptions{Interval: 10 * time.Millisecond, RefreshGap: time.Nanosecond, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.IsOwner("mallory") {
		t.Fatal("mallory is no owner yet")
	}
	y2 := genDomain(t, "y_v1", "urn:test:y", 2, Policy{Owners: []string{"owner-a", "mallory"}})
	src.set(y2, z)
	waitfor.Cond(t, 2*time.Second, "mallory counted as owner", func() bool { return c.IsOwner("mallory") })
	if d, _ := c.Domain("y_v1"); d.Generation != 1 {
		t.Fatal("the refused version is served")
	}
	if _, err := c.Refresh(context.Background(), "z_v1"); err != nil {
		t.Fatal(err)
	}
	if !c.IsOwner("mallory") {
		t.Fatal("a Refresh dropped the refused domain's owners")
	}
}

// listedButGone lists a domain whose entry cannot be read (Vault's current
// version of the meta soft-deleted).
type listedButGone struct {
	*memSource
	gone atomic.Value // string
}

func (l *listedButGone) Domain(ctx context.Context, name string) (*Domain, error) {
	if g, _ := l.gone.Load().(string); name == g {
		return nil, ErrUnknownDomain
	}
	return l.memSource.Domain(ctx, name)
}

func (l *listedButGone) Version(ctx context.Context, name string) (uint64, error) {
	if g, _ := l.gone.Load().(string); name == g {
		return 0, ErrUnknownDomain
	}
	return l.memSource.Version(ctx, name)
}

// TestCacheListedButUnreadableKept: a domain still listed whose entry
// cannot be read is kept, and health is degraded (NOT_SERVING).
func TestCacheListedButUnreadableKept(t *testing.T) {
	a := genDomain(t, "a_v1", "urn:test:a", 1, Policy{})
	b := genDomain(t, "b_v1", "urn:test:b", 1, Policy{})
	ms := &memSource{}
	ms.set(a, b)
	src := &listedButGone{memSource: ms}
	c, err := NewCache(context.Background(), src, &CacheOptions{Interval: 10 * time.Millisecond, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	src.gone.Store("a_v1")
	waitfor.Cond(t, 2*time.Second, "fault reported", func() bool { return errors.Is(c.Health(), ErrUnavailable) })
	if _, err := c.Domain("a_v1"); err != nil {
		t.Fatalf("a listed domain was dropped: %v", err)
	}
}
