package client_test

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/ehealth-pseudo/pseudonymizer/client"
	pb "github.com/ehealth-pseudo/pseudonymizer/proto/pseudonymizer/v1"
)

// scripted is a gRPC pseudonymization service that answers attempt n (from
// 1) of every call with reply(n): its error, or for GetDomain a response
// when reply returns nil. Pseudonymize only ever fails.
type scripted struct {
	pb.UnimplementedPseudonymizerServer
	attempts atomic.Int32
	reply    func(n int) error
}

func (s *scripted) Pseudonymize(context.Context, *pb.PseudonymizeRequest) (*pb.PseudonymizeResponse, error) {
	err := s.reply(int(s.attempts.Add(1)))
	if err == nil {
		err = status.Error(codes.Internal, "scripted: no evaluation")
	}
	return nil, err
}

func (s *scripted) GetDomain(_ context.Context, req *pb.GetDomainRequest) (*pb.GetDomainResponse, error) {
	if err := s.reply(int(s.attempts.Add(1))); err != nil {
		return nil, err
	}
	return &pb.GetDomainResponse{Name: req.GetName()}, nil
}

// startScripted serves s on a TCP loopback listener and returns a
// connection to it.
func startScripted(t *testing.T, s pb.PseudonymizerServer, opts ...grpc.DialOption) *grpc.ClientConn {
	t.Helper()
	lis := listen(t)
	srv := grpc.NewServer()
	pb.RegisterPseudonymizerServer(srv, s)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	cc, err := grpc.NewClient(lis.Addr().String(), append(opts, grpc.WithTransportCredentials(insecure.NewCredentials()))...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

func always(err error) func(int) error { return func(int) error { return err } }

// failing answers the first n attempts with err, the others with success.
func failing(n int, err error) func(int) error {
	return func(i int) error {
		if i <= n {
			return err
		}
		return nil
	}
}

func rateLimited(t *testing.T, delay time.Duration) error {
	t.Helper()
	st, err := status.New(codes.ResourceExhausted, "rate limited").WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(delay)})
	if err != nil {
		t.Fatal(err)
	}
	return st.Err()
}

// fakeClock stands for the wall clock of retries: sleeping records the wait
// and moves the clock on at once.
type fakeClock struct {
	mu     sync.Mutex
	t      time.Time
	sleeps []time.Duration
}

func newFakeClock() *fakeClock { return &fakeClock{t: time.Now()} }

func (f *fakeClock) now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.t
}

func (f *fakeClock) sleep(ctx context.Context, d time.Duration) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.sleeps = append(f.sleeps, d)
	f.t = f.t.Add(d)
	return ctx.Err()
}

func (f *fakeClock) waits() []time.Duration {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.sleeps)
}

func (f *fakeClock) option() client.Option { return client.WithRetryClock(f.now, f.sleep) }

// Jitter sources: the top of the range, or its bottom.
var (
	jitterMax  = client.WithRetryJitter(func(n int64) int64 { return n - 1 })
	jitterZero = client.WithRetryJitter(func(int64) int64 { return 0 })
)

func policy(f func(*client.RetryPolicy)) client.Option {
	p := client.DefaultRetryPolicy()
	f(&p)
	return client.WithRetryPolicy(p)
}

func TestRetryNeverOnFinalCodes(t *testing.T) {
	for _, code := range []codes.Code{
		codes.Internal, codes.InvalidArgument, codes.PermissionDenied, codes.Unauthenticated,
		codes.FailedPrecondition, codes.NotFound, codes.DeadlineExceeded, codes.Canceled,
		codes.ResourceExhausted, // without RetryInfo: a message over the size limit
	} {
		t.Run(code.String(), func(t *testing.T) {
			svc := &scripted{reply: always(status.Error(code, "scripted"))}
			clock := newFakeClock()
			c := client.New(startScripted(t, svc), client.WithCache(0), clock.option(), jitterMax,
				policy(func(p *client.RetryPolicy) { p.MaxRetries = 5 }))
			_, err := c.Domain(context.Background(), "rx_v1")
			if status.Code(err) != code {
				t.Fatalf("Domain: %v, want %v", err, code)
			}
			_, err = c.Pseudonymize(context.Background(), "rx_v1", []byte("85073003328"))
			if status.Code(err) != code {
				t.Fatalf("Pseudonymize: %v, want %v", err, code)
			}
			if n := svc.attempts.Load(); n != 2 {
				t.Fatalf("%d attempts for two calls, want 2 (no retry)", n)
			}
			if w := clock.waits(); len(w) != 0 {
				t.Fatalf("waited %v", w)
			}
		})
	}
}

func TestRetryUnavailableUpToTheLimit(t *testing.T) {
	svc := &scripted{reply: always(status.Error(codes.Unavailable, "scripted"))}
	clock := newFakeClock()
	var spans []int64
	var mu sync.Mutex
	c := client.New(startScripted(t, svc), client.WithCache(0), clock.option(),
		client.WithRetryJitter(func(n int64) int64 {
			mu.Lock()
			spans = append(spans, n)
			mu.Unlock()
			return n - 1
		}),
		policy(func(p *client.RetryPolicy) {
			p.MaxRetries, p.BaseDelay, p.MaxDelay = 4, 10*time.Millisecond, 50*time.Millisecond
		}))
	if _, err := c.Pseudonymize(context.Background(), "rx_v1", []byte("85073003328")); status.Code(err) != codes.Unavailable {
		t.Fatalf("Pseudonymize: %v", err)
	}
	if n := svc.attempts.Load(); n != 5 {
		t.Fatalf("%d attempts, want 1 + 4 retries", n)
	}
	// Exponential, capped: the top of each jitter range.
	ms := time.Millisecond
	if w, want := clock.waits(), []time.Duration{10 * ms, 20 * ms, 40 * ms, 50 * ms}; !slices.Equal(w, want) {
		t.Fatalf("waits %v, want %v", w, want)
	}
	// Full jitter: each wait is drawn from [0, ceiling], both ends included.
	if want := []int64{int64(10*ms) + 1, int64(20*ms) + 1, int64(40*ms) + 1, int64(50*ms) + 1}; !slices.Equal(spans, want) {
		t.Fatalf("jitter ranges %v, want %v", spans, want)
	}

	// The bottom of the range retries at once; a call that recovers within
	// the limit succeeds.
	svc2 := &scripted{reply: failing(2, status.Error(codes.Unavailable, "scripted"))}
	clock2 := newFakeClock()
	c2 := client.New(startScripted(t, svc2), clock2.option(), jitterZero)
	if d, err := c2.Domain(context.Background(), "rx_v1"); err != nil || d.Name != "rx_v1" {
		t.Fatalf("Domain = %+v, %v", d, err)
	}
	if n := svc2.attempts.Load(); n != 3 {
		t.Fatalf("%d attempts, want 3", n)
	}
	if w := clock2.waits(); !slices.Equal(w, []time.Duration{0, 0}) {
		t.Fatalf("waits %v", w)
	}

	// WithRetries(0, …) disables retries.
	svc3 := &scripted{reply: always(status.Error(codes.Unavailable, "scripted"))}
	c3 := client.New(startScripted(t, svc3), client.WithRetries(0, 0))
	if _, err := c3.Domain(context.Background(), "rx_v1"); status.Code(err) != codes.Unavailable || svc3.attempts.Load() != 1 {
		t.Fatalf("without retries: %v after %d attempts", err, svc3.attempts.Load())
	}
}

func TestRetryInfoDelayIsHonoured(t *testing.T) {
	// The server's delay is the least wait, above the backoff.
	svc := &scripted{reply: failing(2, rateLimited(t, 7*time.Second))}
	clock := newFakeClock()
	c := client.New(startScripted(t, svc), clock.option(), jitterMax)
	if _, err := c.Domain(context.Background(), "rx_v1"); err != nil {
		t.Fatal(err)
	}
	if w := clock.waits(); !slices.Equal(w, []time.Duration{7 * time.Second, 7 * time.Second}) {
		t.Fatalf("waits %v, want the server's 7 s twice", w)
	}
	// A backoff longer than the server's delay wins.
	svc2 := &scripted{reply: failing(1, rateLimited(t, time.Second))}
	clock2 := newFakeClock()
	c2 := client.New(startScripted(t, svc2), clock2.option(), jitterMax, client.WithRetries(3, 3*time.Second))
	if _, err := c2.Domain(context.Background(), "rx_v1"); err != nil {
		t.Fatal(err)
	}
	if w := clock2.waits(); !slices.Equal(w, []time.Duration{3 * time.Second}) {
		t.Fatalf("waits %v, want the 3 s backoff", w)
	}
	// A server delay over the maximum is capped.
	svc3 := &scripted{reply: failing(1, rateLimited(t, time.Hour))}
	clock3 := newFakeClock()
	c3 := client.New(startScripted(t, svc3), clock3.option(), jitterZero,
		policy(func(p *client.RetryPolicy) { p.MaxServerDelay = 30 * time.Second }))
	if _, err := c3.Domain(context.Background(), "rx_v1"); err != nil {
		t.Fatal(err)
	}
	if w := clock3.waits(); !slices.Equal(w, []time.Duration{30 * time.Second}) {
		t.Fatalf("waits %v, want the 30 s cap", w)
	}
	// Retries of RESOURCE_EXHAUSTED stop at the limit too.
	svc4 := &scripted{reply: always(rateLimited(t, time.Second))}
	c4 := client.New(startScripted(t, svc4), newFakeClock().option(), client.WithRetries(2, time.Millisecond))
	if _, err := c4.Domain(context.Background(), "rx_v1"); status.Code(err) != codes.ResourceExhausted || svc4.attempts.Load() != 3 {
		t.Fatalf("%v after %d attempts, want RESOURCE_EXHAUSTED after 3", err, svc4.attempts.Load())
	}
}

func TestRetryBudget(t *testing.T) {
	svc := &scripted{reply: always(status.Error(codes.Unavailable, "scripted"))}
	c := client.New(startScripted(t, svc), client.WithCache(0), newFakeClock().option(), jitterZero,
		policy(func(p *client.RetryPolicy) { p.MaxRetries, p.BudgetTokens, p.BudgetRatio = 5, 2, 0.5 }))
	// The budget starts full (2 tokens): the first call retries twice and
	// empties it; then each call earns half a token.
	for i, want := range []int32{3, 1, 2, 1, 2} {
		before := svc.attempts.Load()
		if _, err := c.Domain(context.Background(), "rx_v1"); status.Code(err) != codes.Unavailable {
			t.Fatalf("call %d: %v", i, err)
		}
		if n := svc.attempts.Load() - before; n != want {
			t.Fatalf("call %d: %d attempts, want %d", i, n, want)
		}
	}

	// Shared by concurrent calls: with 4 tokens and no refill, 16 calls
	// that all fail make 4 retries in all, whoever makes them.
	svc2 := &scripted{reply: always(status.Error(codes.Unavailable, "scripted"))}
	c2 := client.New(startScripted(t, svc2), client.WithCache(0), newFakeClock().option(), jitterZero,
		policy(func(p *client.RetryPolicy) { p.MaxRetries, p.BudgetTokens, p.BudgetRatio = 5, 4, 0 }))
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			if _, err := c2.Pseudonymize(context.Background(), "rx_v1", []byte("85073003328")); status.Code(err) != codes.Unavailable {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if n := svc2.attempts.Load(); n != 16+4 {
		t.Fatalf("%d attempts, want 16 calls + 4 retries", n)
	}
}

func TestRetryRespectsTheDeadline(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
	defer cancel()
	// 25 min, 50 min, then a third wait would end past the hour: the last
	// error is returned at once, not DEADLINE_EXCEEDED later.
	svc := &scripted{reply: always(rateLimited(t, 25*time.Minute))}
	clock := newFakeClock()
	c := client.New(startScripted(t, svc), clock.option(), jitterZero,
		policy(func(p *client.RetryPolicy) { p.MaxRetries, p.MaxServerDelay = 10, 2*time.Hour }))
	if _, err := c.Domain(ctx, "rx_v1"); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("Domain: %v", err)
	}
	if n := svc.attempts.Load(); n != 3 {
		t.Fatalf("%d attempts, want 3", n)
	}
	if w := clock.waits(); !slices.Equal(w, []time.Duration{25 * time.Minute, 25 * time.Minute}) {
		t.Fatalf("waits %v", w)
	}
	// A server delay past the deadline: no wait at all.
	svc2 := &scripted{reply: always(rateLimited(t, 2*time.Hour))}
	clock2 := newFakeClock()
	c2 := client.New(startScripted(t, svc2), clock2.option(), jitterZero,
		policy(func(p *client.RetryPolicy) { p.MaxServerDelay = 3 * time.Hour }))
	if _, err := c2.Domain(ctx, "rx_v1"); status.Code(err) != codes.ResourceExhausted || svc2.attempts.Load() != 1 || len(clock2.waits()) != 0 {
		t.Fatalf("%v after %d attempts and waits %v", err, svc2.attempts.Load(), clock2.waits())
	}
	// The same for a backoff past the deadline.
	svc3 := &scripted{reply: always(status.Error(codes.Unavailable, "scripted"))}
	clock3 := newFakeClock()
	c3 := client.New(startScripted(t, svc3), clock3.option(), jitterMax,
		policy(func(p *client.RetryPolicy) { p.BaseDelay, p.MaxDelay = 2*time.Hour, 2*time.Hour }))
	if _, err := c3.Domain(ctx, "rx_v1"); status.Code(err) != codes.Unavailable || svc3.attempts.Load() != 1 || len(clock3.waits()) != 0 {
		t.Fatalf("%v after %d attempts and waits %v", err, svc3.attempts.Load(), clock3.waits())
	}
}

func TestRetryWaitEndsWithTheContext(t *testing.T) {
	// The real clock: a wait of an hour that the caller cancels. The
	// interceptor reports each failed attempt once the client has its
	// status, so that cancelling cannot race with the attempt itself.
	failed := make(chan struct{}, 1)
	svc := &scripted{reply: always(status.Error(codes.Unavailable, "scripted"))}
	cc := startScripted(t, svc, grpc.WithUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, inv grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		err := inv(ctx, method, req, reply, cc, opts...)
		failed <- struct{}{}
		return err
	}))
	c := client.New(cc, jitterMax, policy(func(p *client.RetryPolicy) { p.BaseDelay, p.MaxDelay = time.Hour, time.Hour }))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() {
		_, err := c.Domain(ctx, "rx_v1")
		done <- err
	}()
	<-failed
	cancel()
	if err := <-done; status.Code(err) != codes.Unavailable {
		t.Fatalf("Domain: %v, want the last error", err)
	}
	if n := svc.attempts.Load(); n != 1 {
		t.Fatalf("%d attempts", n)
	}
}
