package client

import (
	"testing"
	"time"

	"github.com/ehealth-pseudo/pseudonymizer/internal/point"
	"github.com/ehealth-pseudo/pseudonymizer/internal/transit"
	"github.com/ehealth-pseudo/pseudonymizer/pseudonym"
)

// TestJoinFindsAnswerStoredMeanwhile: a caller that missed the cache just
// before a flight stored its answer and ended does not lead a second
// service call: join hands it the stored answer.
func TestJoinFindsAnswerStoredMeanwhile(t *testing.T) {
	ks, err := transit.NewKeySet("t1", map[string][]byte{"t1": make([]byte, 32)})
	if err != nil {
		t.Fatal(err)
	}
	s, err := point.RandomScalar(nil)
	if err != nil {
		t.Fatal(err)
	}
	ti, err := ks.Seal(s, &transit.Claims{Aud: "urn:test:cache", Iat: time.Now(), TTL: 5 * time.Minute}, nil)
	if err != nil {
		t.Fatal(err)
	}
	tp := &pseudonym.Transit{Info: ti}
	c := newTransitCache(time.Second)
	id := []byte("85073003328")

	// The second caller's miss, then the first caller's whole flight.
	if c.get("d_v1", id, time.Now()) != nil {
		t.Fatal("an empty cache answered")
	}
	f, leader := c.join("d_v1", id, time.Now())
	if !leader {
		t.Fatal("the first caller does not lead")
	}
	f.t = tp
	c.put("d_v1", id, tp)
	c.leave("d_v1", id, f)

	// The second caller joins after the flight ended.
	f2, leader2 := c.join("d_v1", id, time.Now())
	if leader2 || f2.t != tp {
		t.Fatalf("the second caller leads a new call (%v) or gets another answer", leader2)
	}
	select {
	case <-f2.done:
	default:
		t.Fatal("the flight handed to the second caller is not done")
	}
	// Past its use-by time, the answer is not handed out.
	if _, leader3 := c.join("d_v1", id, time.Now().Add(10*time.Minute)); !leader3 {
		t.Fatal("an expired answer was handed out")
	}
}
