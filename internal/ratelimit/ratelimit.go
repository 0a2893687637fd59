// Package ratelimit bounds how fast each principal may use the service: one
// token bucket (golang.org/x/time/rate) per principal, where each item of a
// batch costs one token (a call without items costs one). A call or stream
// message over quota fails with RESOURCE_EXHAUSTED and the ErrorInfo reason
// ERROR_REASON_RATE_LIMITED and a google.rpc.RetryInfo whose retry_delay is
// when the same request would pass; nothing is evaluated.
//
// Rate limits bound the number of evaluations per key, which is what limits
// the static Diffie-Hellman oracle (docs/PROTOCOL.md, "Security notes").
//
// The table of buckets is bounded: buckets idle for a while are dropped
// (a dropped bucket would have refilled anyway), and when the table is full
// the least recently used bucket is dropped.
package ratelimit

import (
	"context"
	"sync"
	"time"

	"golang.org/x/time/rate"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/ehealth-pseudo/pseudonymizer/internal/rpcstatus"
	pb "github.com/ehealth-pseudo/pseudonymizer/proto/pseudonymizer/v1"
)

// DefaultMaxKeys is the size of the bucket table when Config.MaxKeys is 0.
const DefaultMaxKeys = 10000

// Config configures a [Limiter].
type Config struct {
	// Rate is the sustained number of items per second of one principal;
	// zero or negative means no limit.
	Rate float64
	// Burst is the most items one principal may use at once; a batch
	// larger than Burst is always refused, so it should be at least the
	// maximum batch size.
	Burst int
	// MaxKeys bounds the number of principals tracked; DefaultMaxKeys when
	// zero.
	MaxKeys int
	// Key returns the principal of a call ("" for none: the call is not
	// limited, e.g. health checks that need no authentication).
	Key func(ctx context.Context) string
	// Cost returns the number of items of a request or stream message;
	// calls with fewer than one item cost one.
	Cost func(msg any) int
}

// Limiter is a table of token buckets, one per principal. It is safe for
// concurrent use.
type Limiter struct {
	cfg  Config
	idle time.Duration
	now  func() time.Time

	mu        sync.Mutex
	buckets   map[string]*bucket
	lastSweep time.Time
}

type bucket struct {
	lim  *rate.Limiter
	used time.Time
}

// New returns a Limiter.
func New(cfg Config) *Limiter {
	if cfg.MaxKeys <= 0 {
		cfg.MaxKeys = DefaultMaxKeys
	}
	if cfg.Burst < 1 {
		cfg.Burst = 1
	}
	// A bucket idle for this long is full again: dropping it changes
	// nothing.
	idle := time.Minute
	if cfg.Rate > 0 {
		idle += time.Duration(float64(cfg.Burst) / cfg.Rate * float64(time.Second))
	}
	return &Limiter{cfg: cfg, idle: idle, now: time.Now, buckets: map[string]*bucket{}}
}

// Allow reports whether key may use n items now, and takes them if so.
func (l *Limiter) Allow(key string, n int) bool {
	ok, _ := l.Take(key, n)
	return ok
}

// Take is Allow that also says, when it refuses, how long until the same
// request would pass (the time the bucket needs to hold n tokens; for n
// over the burst, the time to refill the whole bucket).
func (l *Limiter) Take(key string, n int) (bool, time.Duration) {
	n = max(n, 1)
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.buckets[key]
	if !ok {
		l.makeRoom(now)
		lim := rate.Inf
		if l.cfg.Rate > 0 {
			lim = rate.Limit(l.cfg.Rate)
		}
		b = &bucket{lim: rate.NewLimiter(lim, l.cfg.Burst)}
		l.buckets[key] = b
	}
	b.used = now
	if b.lim.AllowN(now, n) {
		return true, 0
	}
	if l.cfg.Rate <= 0 {
		return false, 0
	}
	need := float64(min(n, l.cfg.Burst)) - b.lim.TokensAt(now)
	wait := time.Duration(need / l.cfg.Rate * float64(time.Second))
	return false, max(wait, time.Millisecond)
}

// Len returns the number of principals tracked.
func (l *Limiter) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.buckets)
}

// makeRoom drops idle buckets (at most once per idle period, or when the
// table is full), then the least recently used one if still full.
func (l *Limiter) makeRoom(now time.Time) {
	full := len(l.buckets) >= l.cfg.MaxKeys
	if full || now.Sub(l.lastSweep) > l.idle {
		l.lastSweep = now
		for k, b := range l.buckets {
			if now.Sub(b.used) > l.idle {
				delete(l.buckets, k)
			}
		}
	}
	if len(l.buckets) < l.cfg.MaxKeys {
		return
	}
	var oldest string
	var when time.Time
	for k, b := range l.buckets {
		if when.IsZero() || b.used.Before(when) {
			oldest, when = k, b.used
		}
	}
	delete(l.buckets, oldest)
}

// limited is the refusal: RESOURCE_EXHAUSTED with its ErrorInfo and a
// google.rpc.RetryInfo that says when to retry.
func limited(wait time.Duration) error {
	st := rpcstatus.New(codes.ResourceExhausted, pb.ErrorReason_ERROR_REASON_RATE_LIMITED,
		"rate limit reached, retry later", nil)
	if withRetry, err := st.WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(wait)}); err == nil {
		st = withRetry
	}
	return st.Err()
}

func (l *Limiter) check(ctx context.Context, msg any) error {
	key := l.cfg.Key(ctx)
	if key == "" {
		return nil
	}
	n := 1
	if l.cfg.Cost != nil {
		n = l.cfg.Cost(msg)
	}
	if ok, wait := l.Take(key, n); !ok {
		return limited(wait)
	}
	return nil
}

// UnaryServerInterceptor limits unary calls by their number of items.
func (l *Limiter) UnaryServerInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if err := l.check(ctx, req); err != nil {
			return nil, err
		}
		return handler(ctx, req)
	}
}

// StreamServerInterceptor limits each message a client sends on a stream by
// its number of items: the message over quota fails the stream.
func (l *Limiter) StreamServerInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		return handler(srv, &stream{ServerStream: ss, l: l})
	}
}

type stream struct {
	grpc.ServerStream
	l *Limiter
}

// RecvMsg receives a message and takes its cost from the caller's bucket.
func (s *stream) RecvMsg(m any) error {
	if err := s.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	return s.l.check(s.Context(), m)
}
