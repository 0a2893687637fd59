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
