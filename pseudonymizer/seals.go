package pseudonymizer

import (
	"sort"
	"sync"
	"sync/atomic"

	"github.com/ehealth-pseudo/pseudonymizer/internal/transit"
)

// DefaultMaxSealsPerKey is the number of transitInfo values one process
// seals under one transit key before it refuses to seal more (2²⁸), far
// below the 2³² random-nonce limit of AES-GCM (NIST SP 800-38D, 8.3): even
// a dozen replicas each sealing that many stay under it. Transit keys are
// meant to be rotated on a schedule long before.
const DefaultMaxSealsPerKey = 1 << 28

// ErrTransitKeyExhausted is the error of an item that would need a seal
// past the limit of the domain's active transit key: an administrator
// must rotate the key.
var ErrTransitKeyExhausted = transit.ErrKeyExhausted

// SealLimiter counts, per domain and transit key id, the transitInfo
// values sealed by this process, and refuses seals past a limit. Counts
// survive new generations of a domain's keys (a policy change does not
// reset them); they start from zero when the process starts, so the limit
// is per process: a key's total over replicas and restarts is bounded by
// rotating it on a schedule. It is safe for concurrent use.
type SealLimiter struct {
	limit uint64
	// warn is called once per key when half the limit is reached.
	warn func(domain, kid string, limit uint64)

	mu     sync.Mutex
	counts map[sealKey]*sealCount
}

type sealKey struct{ domain, kid string }

// sealCount is one key's counter.
type sealCount struct {
	n, limit uint64 // n is atomic
	half     func()
	halfOnce sync.Once
}

// take counts one seal, or fails past the limit. A nil counter has no
// limit.
func (c *sealCount) take() error {
	if c == nil {
		return nil
	}
	n := atomic.AddUint64(&c.n, 1)
	if n > c.limit {
		atomic.AddUint64(&c.n, ^uint64(0)) // not sealed: do not count it
		return ErrTransitKeyExhausted
	}
	if n == c.limit/2 && c.half != nil {
		c.halfOnce.Do(c.half)
	}
	return nil
}

// NewSealLimiter returns a limiter allowing limit seals per key
// (DefaultMaxSealsPerKey when limit is 0). warn, which may be nil, is
// called once per key when half the limit is reached, from the sealing
// call.
func NewSealLimiter(limit uint64, warn func(domain, kid string, limit uint64)) *SealLimiter {
	if limit == 0 {
		limit = DefaultMaxSealsPerKey
	}
	return &SealLimiter{limit: limit, warn: warn, counts: map[sealKey]*sealCount{}}
}

// counter returns the counter of a domain's transit key, creating it.
func (l *SealLimiter) counter(domain, kid string) *sealCount {
	if l == nil {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	k := sealKey{domain, kid}
	c, ok := l.counts[k]
	if !ok {
		c = &sealCount{limit: l.limit}
		if l.warn != nil {
			c.half = func() { l.warn(domain, kid, l.limit) }
		}
		l.counts[k] = c
	}
	return c
}

// SealCount is the number of seals of one transit key.
type SealCount struct {
	Domain, Kid string
	Seals       uint64
}

// Counts returns the count of every key sealed under, sorted by domain
// and kid.
func (l *SealLimiter) Counts() []SealCount {
	l.mu.Lock()
	out := make([]SealCount, 0, len(l.counts))
	for k, c := range l.counts {
		out = append(out, SealCount{Domain: k.domain, Kid: k.kid, Seals: atomic.LoadUint64(&c.n)})
	}
	l.mu.Unlock()
	sort.Slice(out, func(i, j int) bool {
		if out[i].Domain != out[j].Domain {
			return out[i].Domain < out[j].Domain
		}
		return out[i].Kid < out[j].Kid
	})
	return out
}

// Limit returns the number of seals allowed per key.
func (l *SealLimiter) Limit() uint64 { return l.limit }
