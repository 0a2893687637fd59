package client

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"sync"
	"time"

	"github.com/ehealth-pseudo/pseudonymizer/pseudonym"
)

// transitCache keeps transit pseudonyms until margin before their exp, and
// the service calls in flight for them. Its keys are HMACs under a random
// key of its own, so that no identifier is kept in memory as a map key.
type transitCache struct {
	margin time.Duration
	key    [32]byte
	mu     sync.Mutex
	m      map[[32]byte]cached
	flying map[[32]byte]*flight
	puts   int
}

// flight is a service call in progress that others wait for.
type flight struct {
	done chan struct{}
	t    *pseudonym.Transit
	err  error
}

type cached struct {
	t   *pseudonym.Transit
	use time.Time // serve until
}

func newTransitCache(margin time.Duration) *transitCache {
	c := &transitCache{margin: margin, m: make(map[[32]byte]cached), flying: make(map[[32]byte]*flight)}
	_, _ = rand.Read(c.key[:])
	return c
}

func (c *transitCache) k(domain string, id []byte) [32]byte {
	m := hmac.New(sha256.New, c.key[:])
	m.Write([]byte(domain))
	m.Write([]byte{0})
	m.Write(id)
	var k [32]byte
	m.Sum(k[:0])
	return k
}

func (c *transitCache) get(domain string, id []byte, now time.Time) *pseudonym.Transit {
	k := c.k(domain, id)
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[k]
	if !ok {
		return nil
	}
	if !now.Before(e.use) {
		delete(c.m, k)
		return nil
	}
	return e.t
}

func (c *transitCache) put(domain string, id []byte, t *pseudonym.Transit) {
	exp, err := t.Expiry()
	if err != nil {
		return
	}
	use := exp.Add(-c.margin)
	now := time.Now()
	if !use.After(now) {
		return
	}
	k := c.k(domain, id)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.m[k] = cached{t: t, use: use}
	c.puts++
	if c.puts%1024 == 0 { // sweep expired entries now and then
		for k, e := range c.m {
			if !now.Before(e.use) {
				delete(c.m, k)
			}
		}
	}
}

// join returns the flight for (domain, id) and whether the caller leads it
// (makes the call) or follows (waits for f.done). A caller that missed the
// cache just before a flight stored its answer and ended finds the answer
// here, in a flight already done, instead of leading a second call.
func (c *transitCache) join(domain string, id []byte, now time.Time) (f *flight, leader bool) {
	k := c.k(domain, id)
	c.mu.Lock()
	defer c.mu.Unlock()
	if f, ok := c.flying[k]; ok {
		return f, false
	}
	if e, ok := c.m[k]; ok && now.Before(e.use) {
		f = &flight{done: make(chan struct{}), t: e.t}
		close(f.done)
		return f, false
	}
	f = &flight{done: make(chan struct{})}
	c.flying[k] = f
	return f, true
}

// leave ends the leader's flight; its result is in f.
func (c *transitCache) leave(domain string, id []byte, f *flight) {
	k := c.k(domain, id)
	c.mu.Lock()
	delete(c.flying, k)
	c.mu.Unlock()
	close(f.done)
}
