package ratelimit

import (
	"fmt"
	"testing"
	"time"
)

func TestAllowPerItem(t *testing.T) {
	l := New(Config{Rate: 10, Burst: 5})
	now := time.Unix(1000, 0)
	l.now = func() time.Time { return now }
	if l.Allow("a", 6) {
		t.Fatal("a batch over the burst passed")
	}
	if !l.Allow("a", 5) || l.Allow("a", 1) {
		t.Fatal("burst not enforced")
	}
	if !l.Allow("b", 0) { // calls without items cost one
		t.Fatal("another principal is limited")
	}
	now = now.Add(200 * time.Millisecond) // 2 tokens back
	if !l.Allow("a", 2) || l.Allow("a", 1) {
		t.Fatal("refill rate not applied")
	}
}

func TestTableBounded(t *testing.T) {
	l := New(Config{Rate: 1, Burst: 1, MaxKeys: 100})
	now := time.Unix(1000, 0)
	l.now = func() time.Time { return now }
	for i := range 1000 {
		now = now.Add(time.Millisecond)
		l.Allow(fmt.Sprint("p", i), 1)
		if l.Len() > 100 {
			t.Fatalf("%d principals tracked", l.Len())
		}
	}
	// The most recent principal kept its (empty) bucket.
	if l.Allow("p999", 1) {
		t.Fatal("the most recent principal was evicted")
	}
	// Idle buckets go away.
	now = now.Add(time.Hour)
	l.Allow("new", 1)
	if l.Len() != 1 {
		t.Fatalf("%d principals after an hour idle", l.Len())
	}
}

func TestUnlimited(t *testing.T) {
	l := New(Config{Rate: 0, Burst: 1})
	for range 100 {
		if !l.Allow("a", 1000) {
			t.Fatal("unlimited limiter refused")
		}
	}
}

// TestTakeSaysWhen: a refusal says how long until the same request passes.
func TestTakeSaysWhen(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	l := New(Config{Rate: 10, Burst: 20})
	l.now = func() time.Time { return now }
	if ok, _ := l.Take("p", 20); !ok {
		t.Fatal("the burst is refused")
	}
	ok, wait := l.Take("p", 5)
	if ok || wait < 490*time.Millisecond || wait > 510*time.Millisecond {
		t.Fatalf("5 items at 10/s on an empty bucket: %v %v, want a refusal for 0.5 s", ok, wait)
	}
	now = now.Add(wait)
	if ok, _ := l.Take("p", 5); !ok {
		t.Fatal("refused again after the wait it gave")
	}
}
