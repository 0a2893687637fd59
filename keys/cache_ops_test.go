package keys

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ehealth-pseudo/pseudonymizer/internal/waitfor"
)

// recordHandler keeps the log records whose message starts with "keys: domain".
type recordHandler struct {
	mu   sync.Mutex
	recs []string
}

func (h *recordHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *recordHandler) Handle(_ context.Context, r slog.Record) error {
	s := fmt.Sprintf("%s %s", r.Level, r.Message)
	r.Attrs(func(a slog.Attr) bool {
		s += fmt.Sprintf(" %s=%v", a.Key, a.Value)
		return true
	})
	h.mu.Lock()
	h.recs = append(h.recs, s)
	h.mu.Unlock()
	return nil
}
func (h *recordHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *recordHandler) WithGroup(string) slog.Handler      { return h }

func (h *recordHandler) count(rec string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, r := range h.recs {
		if r == rec {
			n++
		}
	}
	return n
}

// failingSource is a memSource whose listing can be made to fail.
type failingSource struct {
	memSource
	fail atomic.Bool
}

func (f *failingSource) Domains(ctx context.Context) ([]string, error) {
	if f.fail.Load() {
		return nil, fmt.Errorf("%w: test outage", ErrUnavailable)
	}
	return f.memSource.Domains(ctx)
}

// TestCacheFreshnessAndChangeLog: LastGood advances with every poll that
// confirms a domain, stops during an outage and while a domain's newest
// version is refused; each added, changed or removed domain is logged once,
// with its generation and active kid only (and, split, its mode and share
// generation).
func TestCacheFreshnessAndChangeLog(t *testing.T) {
	a := genDomain(t, "a_v1", "urn:test:a", 1, Policy{})
	b := genDomain(t, "b_v1", "urn:test:b", 1, Policy{})
	src := &failingSource{}
	src.set(a, b)
	h := &recordHandler{}
	var polls, failed atomic.Int64
	c, err := NewCache(context.Background(), src, &CacheOptions{
		Interval: 5 * time.Millisecond,
		Logger:   slog.New(h),
		OnPoll: func(err error) {
			if err != nil && src.fail.Load() {
				failed.Add(1)
			}
			polls.Add(1)
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	waitPolls := func(n int64) {
		t.Helper()
		p := polls.Load()
		waitfor.Cond(t, 5*time.Second, fmt.Sprintf("%d polls", n), func() bool { return polls.Load() >= p+n })
	}

	for _, d := range []*Domain{a, b} {
		want := fmt.Sprintf("INFO keys: domain added domain=%s generation=1 active_kid=%s", d.Name, d.Transit.Active)
		if n := h.count(want); n != 1 {
			t.Errorf("%d records %q; have %q", n, want, h.recs)
		}
		if c.LastGood(d.Name).IsZero() {
			t.Errorf("LastGood(%s) is zero after the load", d.Name)
		}
	}
	if !c.LastGood("nope").IsZero() {
		t.Error("LastGood of an unknown domain is not zero")
	}

	t.Run("advances", func(t *testing.T) {
		t0 := c.LastGood("a_v1")
		waitfor.Cond(t, 5*time.Second, "LastGood to advance", func() bool { return c.LastGood("a_v1").After(t0) })
	})

	t.Run("change logged once", func(t *testing.T) {
		a2 := genDomain(t, "a_v1", "urn:test:a", 2, Policy{})
		a2.Transit = Transit{Active: "t2", Keys: map[string]Secret{"t1": a.Transit.Keys[a.Transit.Active], "t2": a2.Transit.Keys[a2.Transit.Active]}}
		src.set(a2, b)
		want := "INFO keys: domain changed domain=a_v1 generation=2 active_kid=t2"
		waitfor.Cond(t, 5*time.Second, "the change record", func() bool { return h.count(want) > 0 })
		waitPolls(3)
		if n := h.count(want); n != 1 {
			t.Fatalf("%d records %q", n, want)
		}
		a = a2
	})

	t.Run("split logged with its share generation", func(t *testing.T) {
		split := *a
		split.Mode, split.ShareGeneration, split.Generation = ModeSplit, 2, 3
		src.set(&split, b)
		want := fmt.Sprintf("INFO keys: domain changed domain=a_v1 generation=3 active_kid=%s mode=split share_generation=2", a.Transit.Active)
		waitfor.Cond(t, 5*time.Second, "the change record of the split domain", func() bool { return h.count(want) > 0 })
		a = &split
	})

	t.Run("outage freezes", func(t *testing.T) {
		src.fail.Store(true)
		f := failed.Load()
		waitfor.Cond(t, 5*time.Second, "a failed poll", func() bool { return failed.Load() > f })
		frozen := c.LastGood("a_v1")
		f = failed.Load()
		waitfor.Cond(t, 5*time.Second, "two more failed polls", func() bool { return failed.Load() >= f+2 })
		if got := c.LastGood("a_v1"); !got.Equal(frozen) {
			t.Fatalf("LastGood advanced during the outage: %v -> %v", frozen, got)
		}
		src.fail.Store(false)
		waitfor.Cond(t, 5*time.Second, "LastGood to advance after the outage", func() bool { return c.LastGood("a_v1").After(frozen) })
	})

	t.Run("refused version freezes that domain only", func(t *testing.T) {
		bad := genDomain(t, "b_v1", "urn:test:a", 2, Policy{}) // a_v1's audience: refused
		src.set(a, bad)
		waitPolls(1)
		waitPolls(1) // a poll that started after set
		frozen, fa := c.LastGood("b_v1"), c.LastGood("a_v1")
		waitPolls(2)
		if got := c.LastGood("b_v1"); !got.Equal(frozen) {
			t.Fatalf("LastGood(b_v1) advanced while its newest version is refused: %v -> %v", frozen, got)
		}
		if !c.LastGood("a_v1").After(fa) {
			t.Fatal("LastGood(a_v1) stopped with b_v1")
		}
		if d, _ := c.Domain("b_v1"); d.Generation != 1 {
			t.Fatalf("b_v1 generation %d served", d.Generation)
		}
	})

	t.Run("removal", func(t *testing.T) {
		src.set(a)
		want := "INFO keys: domain removed domain=b_v1"
		waitfor.Cond(t, 5*time.Second, "the removal record", func() bool { return h.count(want) > 0 })
		if !c.LastGood("b_v1").IsZero() {
			t.Fatal("LastGood of a removed domain is not zero")
		}
	})

	// Never key material: the change records name the domain, its
	// generation, active kid, and mode and share generation when split,
	// nothing else.
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, r := range h.recs {
		if !strings.HasPrefix(r, "INFO keys: domain ") {
			continue
		}
		for _, f := range strings.Fields(r)[2:] {
			key, _, _ := strings.Cut(f, "=")
			if !slices.Contains([]string{"added", "changed", "removed", "domain", "generation", "active_kid", "mode", "share_generation"}, key) {
				t.Errorf("record %q has %q", r, key)
			}
		}
		for _, d := range []*Domain{a, b} {
			for _, k := range append(slices.Collect(maps.Values(d.Transit.Keys)), d.Scalar) {
				if len(k) == 0 {
					t.Fatalf("%s: an empty key", d.Name)
				}
				if strings.Contains(r, hex.EncodeToString(k)) || strings.Contains(r, base64.StdEncoding.EncodeToString(k)) || strings.Contains(r, base64.RawURLEncoding.EncodeToString(k)) {
					t.Fatalf("key material in %q", r)
				}
			}
		}
	}
}

// Refresh confirms a domain too.
func TestCacheRefreshMarksGood(t *testing.T) {
	a := genDomain(t, "a_v1", "urn:test:a", 1, Policy{})
	src := &memSource{}
	src.set(a)
	h := &recordHandler{}
	c, err := NewCache(context.Background(), src, &CacheOptions{Interval: time.Hour, RefreshGap: time.Nanosecond, Logger: slog.New(h)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	t0 := c.LastGood("a_v1")
	waitfor.Cond(t, 5*time.Second, "the clock to move", func() bool { return time.Now().After(t0) })
	if _, err := c.Refresh(context.Background(), "a_v1"); err != nil {
		t.Fatal(err)
	}
	if !c.LastGood("a_v1").After(t0) {
		t.Fatal("Refresh of an unchanged domain did not advance LastGood")
	}
	a2 := genDomain(t, "a_v1", "urn:test:a", 2, Policy{})
	src.set(a2)
	t1 := c.LastGood("a_v1")
	waitfor.Cond(t, 5*time.Second, "the clock to move", func() bool { return time.Now().After(t1) })
	if _, err := c.Refresh(context.Background(), "a_v1"); err != nil {
		t.Fatal(err)
	}
	if !c.LastGood("a_v1").After(t1) {
		t.Fatal("Refresh of a changed domain did not advance LastGood")
	}
	want := fmt.Sprintf("INFO keys: domain changed domain=a_v1 generation=2 active_kid=%s", a2.Transit.Active)
	if n := h.count(want); n != 1 {
		t.Fatalf("%d records %q; have %q", n, want, h.recs)
	}
}
