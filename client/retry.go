package client

import (
	"context"
	"math"
	"math/rand/v2"
	"sync"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// RetryPolicy says when and how a Client retries a call that failed as a
// whole, and the items of a batch that the service refused with
// UNAVAILABLE (see below). Every other per-item refusal is an answer,
// never retried.
//
// A call is retried only when it failed with UNAVAILABLE (the service or
// its key store cannot be reached: another replica, or the same one a
// little later, may answer) or with RESOURCE_EXHAUSTED carrying a
// google.rpc.RetryInfo (the caller's rate limit; the service says when its
// quota allows the same request again). RESOURCE_EXHAUSTED without
// RetryInfo is the gRPC library refusing a message over its size limit,
// which no retry cures. Every other code is final: INTERNAL,
// INVALID_ARGUMENT, PERMISSION_DENIED, UNAUTHENTICATED, FAILED_PRECONDITION,
// NOT_FOUND, and DEADLINE_EXCEEDED or CANCELED (the caller's context).
//
// Items refused with UNAVAILABLE (the service could not reach its key
// store, or the key-share plugin of a split domain, for them) are sent
// again in a call of their own, a round, after the same backoff: at most
// MaxRetries rounds, each taking a token from the budget like a retry
// (a round's call is itself retried when it fails as a whole, as any
// call). The other items keep their answers. When the rounds end (the
// limit, the budget, the context, or a round's call failing), the items
// still refused keep their UNAVAILABLE refusal, and the call returns
// without error: its first attempt was answered.
//
// Before retry n (0 for the first) the client waits a uniformly random
// time in [0, min(MaxDelay, BaseDelay·2ⁿ)] ("full jitter", so that clients
// that failed together do not come back together); after RESOURCE_EXHAUSTED
// it waits at least the RetryInfo delay, capped by MaxServerDelay. It never
// waits past the context's deadline: when the wait would reach it, the call
// returns the last error at once.
//
// Retries also draw on a retry budget shared by all calls of the Client, a
// token bucket in the spirit of gRPC's retry throttling: it holds at most
// BudgetTokens tokens and starts full, every call (not every attempt) adds
// BudgetRatio of a token, and every retry takes a whole token; with less
// than one token left, calls are not retried. So when every replica fails,
// retries cost at most BudgetTokens calls plus BudgetRatio per call, instead
// of multiplying the load by MaxRetries+1.
type RetryPolicy struct {
	// MaxRetries is the most retries of one call after its first attempt;
	// zero disables retries.
	MaxRetries int
	// BaseDelay and MaxDelay bound the exponential backoff: the wait before
	// retry n is at most min(MaxDelay, BaseDelay·2ⁿ). Zero retries at once.
	BaseDelay, MaxDelay time.Duration
	// MaxServerDelay caps the delay honoured from a RetryInfo, so that a
	// service cannot make a client wait longer than this (the backoff
	// still applies). Zero ignores RetryInfo delays.
	MaxServerDelay time.Duration
	// BudgetTokens is the capacity of the retry budget; zero or less
	// disables the budget (retries are then bounded per call only).
	BudgetTokens float64
	// BudgetRatio is the part of a token each call adds to the budget.
	BudgetRatio float64
}

// DefaultRetryPolicy returns the policy of a new Client: 3 retries, backoff
// from 100 ms to at most 5 s, server delays honoured up to 30 s, a budget of
// 10 tokens refilled by 0.1 per call (retries add at most 10 % to the calls
// once the first 10 tokens are spent).
func DefaultRetryPolicy() RetryPolicy {
	return RetryPolicy{
		MaxRetries:     3,
		BaseDelay:      100 * time.Millisecond,
		MaxDelay:       5 * time.Second,
		MaxServerDelay: 30 * time.Second,
		BudgetTokens:   10,
		BudgetRatio:    0.1,
	}
}

// WithRetryPolicy sets the whole retry policy (see RetryPolicy). Start from
// DefaultRetryPolicy and change what you need: p is used as it is.
func WithRetryPolicy(p RetryPolicy) Option {
	return func(c *Client) { c.retry = p }
}

// WithRetries sets how many times a call that failed with UNAVAILABLE or
// with RESOURCE_EXHAUSTED and a RetryInfo is retried (default 3), and the
// base of the exponential backoff (default 100 ms); the rest of the policy
// is kept. See RetryPolicy.
func WithRetries(n int, base time.Duration) Option {
	return func(c *Client) { c.retry.MaxRetries, c.retry.BaseDelay = n, base }
}

// WithRetryJitter replaces the source of the backoff's jitter, for tests:
// rnd(n) must return a value in [0, n) and be safe for concurrent use. The
// default is math/rand/v2's Int64N.
func WithRetryJitter(rnd func(n int64) int64) Option {
	return func(c *Client) {
		if rnd != nil {
			c.jitter = rnd
		}
	}
}

// WithRetryClock replaces the clock that deadlines are compared with and the
// wait between attempts, for tests. sleep must return early, with a non-nil
// error, when ctx is done; after a sleep error the call returns its last
// error. The defaults are time.Now and a timer.
func WithRetryClock(now func() time.Time, sleep func(ctx context.Context, d time.Duration) error) Option {
	return func(c *Client) {
		if now != nil {
			c.now = now
		}
		if sleep != nil {
			c.sleep = sleep
		}
	}
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// retryBudget is the client-wide token bucket of RetryPolicy.
type retryBudget struct {
	mu     sync.Mutex
	tokens float64
	max    float64
	ratio  float64
}

func newRetryBudget(p RetryPolicy) *retryBudget {
	if p.BudgetTokens <= 0 {
		return nil
	}
	return &retryBudget{tokens: p.BudgetTokens, max: p.BudgetTokens, ratio: max(p.BudgetRatio, 0)}
}

// earn credits one call.
func (b *retryBudget) earn() {
	if b == nil {
		return
	}
	b.mu.Lock()
	b.tokens = min(b.tokens+b.ratio, b.max)
	b.mu.Unlock()
}

// spend takes the token of one retry, and reports whether there was one.
func (b *retryBudget) spend() bool {
	if b == nil {
		return true
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// call runs f, retrying as the RetryPolicy says. All the service's calls are
// idempotent in effect: a retried pseudonymize draws a new s.
func (c *Client) call(ctx context.Context, f func(context.Context) error) error {
	c.budget.earn()
	return c.attempts(ctx, f)
}

// attempts is call without adding to the budget: for the rounds of a call
// (Client.send), which is one call.
func (c *Client) attempts(ctx context.Context, f func(context.Context) error) error {
	for attempt := 0; ; attempt++ {
		err := f(ctx)
		if err == nil {
			return nil
		}
		wait, ok := c.retryWait(ctx, err, attempt)
		if !ok {
			return err
		}
		if c.sleep(ctx, wait) != nil {
			return err
		}
	}
}

// retryWait decides whether the call that failed with err after attempt
// retries (from 0) is retried, and after how long. It takes a token from the
// budget when it says yes.
func (c *Client) retryWait(ctx context.Context, err error, attempt int) (time.Duration, bool) {
	if attempt >= c.retry.MaxRetries || ctx.Err() != nil {
		return 0, false
	}
	var floor time.Duration
	switch st := status.Convert(err); st.Code() {
	case codes.Unavailable:
	case codes.ResourceExhausted:
		d, ok := retryDelay(st)
		if !ok {
			return 0, false
		}
		floor = max(min(d, c.retry.MaxServerDelay), 0)
	default:
		return 0, false
	}
	wait := max(c.backoff(attempt), floor)
	if dl, ok := ctx.Deadline(); ok && !c.now().Add(wait).Before(dl) {
		return 0, false
	}
	if !c.budget.spend() {
		return 0, false
	}
	return wait, true
}

// backoff draws the wait before retry n: full jitter over
// [0, min(MaxDelay, BaseDelay·2ⁿ)].
func (c *Client) backoff(n int) time.Duration {
	ceil := c.retry.BaseDelay
	if ceil <= 0 {
		return 0
	}
	for range n {
		if ceil >= c.retry.MaxDelay/2 {
			ceil = c.retry.MaxDelay
			break
		}
		ceil *= 2
	}
	ceil = min(ceil, c.retry.MaxDelay)
	if ceil <= 0 {
		return 0
	}
	span := int64(ceil)
	if span < math.MaxInt64 {
		span++ // [0, ceil], both ends included
	}
	return time.Duration(min(max(c.jitter(span), 0), int64(ceil)))
}

// retryDelay returns the delay of the status's google.rpc.RetryInfo.
func retryDelay(st *status.Status) (time.Duration, bool) {
	for _, d := range st.Details() {
		if ri, ok := d.(*errdetails.RetryInfo); ok {
			return ri.GetRetryDelay().AsDuration(), true
		}
	}
	return 0, false
}

func defaultJitter(n int64) int64 { return rand.Int64N(n) }
