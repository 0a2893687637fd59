package client_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ehealth-pseudo/pseudonymizer/client"
	"github.com/ehealth-pseudo/pseudonymizer/internal/point"
	pb "github.com/ehealth-pseudo/pseudonymizer/proto/pseudonymizer/v1"
	"github.com/ehealth-pseudo/pseudonymizer/pseudonym"
)

// itemScripted is an identify service that evaluates with the key 1
// (Y = B) and refuses item id of call n (from 1) with refuse(n, id) when
// that is not OK; a call fails as a whole with callErr(n) when that is
// not nil. It records the ids of each call.
type itemScripted struct {
	pb.UnimplementedPseudonymizerServer
	refuse  func(n int, id string) codes.Code
	callErr func(n int) error
	// extra answers call n with these results first.
	extra func(n int) []*pb.IdentifyResult

	mu    sync.Mutex
	calls [][]string
}

func (s *itemScripted) Identify(_ context.Context, req *pb.IdentifyRequest) (*pb.IdentifyResponse, error) {
	s.mu.Lock()
	var ids []string
	for _, it := range req.GetItems() {
		ids = append(ids, it.GetId())
	}
	s.calls = append(s.calls, ids)
	n := len(s.calls)
	s.mu.Unlock()
	if s.callErr != nil {
		if err := s.callErr(n); err != nil {
			return nil, err
		}
	}
	resp := &pb.IdentifyResponse{}
	if s.extra != nil {
		resp.Results = append(resp.Results, s.extra(n)...)
	}
	for _, it := range req.GetItems() {
		r := &pb.IdentifyResult{Id: it.GetId()}
		if c := s.refuse(n, it.GetId()); c != codes.OK {
			r.Outcome = &pb.IdentifyResult_Error{Error: status.New(c, "scripted refusal").Proto()}
		} else {
			r.Outcome = &pb.IdentifyResult_Point{Point: it.GetBlinded()}
		}
		resp.Results = append(resp.Results, r)
	}
	return resp, nil
}

func (s *itemScripted) sent() [][]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.calls)
}

// patients returns n pseudonyms in transit whose point embeds an
// identifier, so that identify with the key 1 returns it.
func patients(t *testing.T, n int) ([]*pseudonym.Transit, []string) {
	t.Helper()
	ts := make([]*pseudonym.Transit, n)
	ids := make([]string, n)
	for i := range ts {
		ids[i] = fmt.Sprintf("8507300%04d", i)
		M, err := point.Encode([]byte(ids[i]))
		if err != nil {
			t.Fatal(err)
		}
		ts[i] = &pseudonym.Transit{Info: "scripted"}
		copy(ts[i].Point[:], M.Bytes())
	}
	return ts, ids
}

func startItemScripted(t *testing.T, s pb.PseudonymizerServer, opts ...client.Option) *client.Client {
	t.Helper()
	return client.New(startScripted(t, s), opts...)
}

// TestRetryUnavailableItems: items a batch's answer refuses with
// UNAVAILABLE (the service's key store or key-share plugin out of reach)
// are sent again, alone, under the retry policy; every other refusal is
// final; the other items keep their answers whatever the retries do.
func TestRetryUnavailableItems(t *testing.T) {
	ctx := context.Background()
	ts, ids := patients(t, 5)
	unavailable := func(tries map[string]int) func(int, string) codes.Code {
		return func(n int, id string) codes.Code {
			if n <= tries[id] {
				return codes.Unavailable
			}
			return codes.OK
		}
	}
	check := func(t *testing.T, got [][]byte, errs []error, refused map[int]codes.Code) {
		t.Helper()
		for i := range ts {
			if c, ok := refused[i]; ok {
				var ie *client.ItemError
				if !errors.As(errs[i], &ie) || ie.Code != c || got[i] != nil {
					t.Errorf("item %d: %q, %v; want a %v refusal", i, got[i], errs[i], c)
				}
				continue
			}
			if errs[i] != nil || string(got[i]) != ids[i] {
				t.Errorf("item %d: %q, %v; want %q", i, got[i], errs[i], ids[i])
			}
		}
	}

	t.Run("recover", func(t *testing.T) {
		svc := &itemScripted{refuse: unavailable(map[string]int{"1": 1, "3": 2})}
		clock := newFakeClock()
		c := startItemScripted(t, svc, clock.option(), jitterMax, policy(func(p *client.RetryPolicy) {
			p.BaseDelay, p.MaxDelay = 10*time.Millisecond, time.Second
		}))
		got, errs, err := c.IdentifyBatch(ctx, "rx_v1", ts)
		if err != nil {
			t.Fatal(err)
		}
		check(t, got, errs, nil)
		if want := [][]string{{"0", "1", "2", "3", "4"}, {"1", "3"}, {"3"}}; !slices.EqualFunc(svc.sent(), want, slices.Equal) {
			t.Fatalf("calls %v, want %v", svc.sent(), want)
		}
		if w := clock.waits(); !slices.Equal(w, []time.Duration{10 * time.Millisecond, 20 * time.Millisecond}) {
			t.Fatalf("waits %v: want the backoff of the retry policy", w)
		}
	})

	t.Run("up to the limit", func(t *testing.T) {
		svc := &itemScripted{refuse: unavailable(map[string]int{"2": 100, "4": 1})}
		c := startItemScripted(t, svc, newFakeClock().option(), jitterZero, policy(func(p *client.RetryPolicy) { p.MaxRetries = 2 }))
		got, errs, err := c.IdentifyBatch(ctx, "rx_v1", ts)
		if err != nil {
			t.Fatal(err)
		}
		check(t, got, errs, map[int]codes.Code{2: codes.Unavailable})
		if want := [][]string{{"0", "1", "2", "3", "4"}, {"2", "4"}, {"2"}}; !slices.EqualFunc(svc.sent(), want, slices.Equal) {
			t.Fatalf("calls %v, want %v", svc.sent(), want)
		}
	})

	t.Run("other refusals are final", func(t *testing.T) {
		for _, code := range []codes.Code{codes.InvalidArgument, codes.PermissionDenied, codes.FailedPrecondition,
			codes.NotFound, codes.ResourceExhausted, codes.Internal, codes.DeadlineExceeded, codes.Unknown} {
			svc := &itemScripted{refuse: func(_ int, id string) codes.Code {
				if id == "0" {
					return code
				}
				return codes.OK
			}}
			c := startItemScripted(t, svc, newFakeClock().option(), jitterZero)
			got, errs, err := c.IdentifyBatch(ctx, "rx_v1", ts)
			if err != nil {
				t.Fatal(err)
			}
			check(t, got, errs, map[int]codes.Code{0: code})
			if n := len(svc.sent()); n != 1 {
				t.Errorf("%v: %d calls, want 1", code, n)
			}
		}
	})

	t.Run("a retry that fails keeps the answers", func(t *testing.T) {
		svc := &itemScripted{refuse: unavailable(map[string]int{"0": 1, "4": 1}),
			callErr: func(n int) error {
				if n > 1 {
					return status.Error(codes.PermissionDenied, "scripted")
				}
				return nil
			}}
		c := startItemScripted(t, svc, newFakeClock().option(), jitterZero)
		got, errs, err := c.IdentifyBatch(ctx, "rx_v1", ts)
		if err != nil {
			t.Fatalf("call error %v: the first call was answered", err)
		}
		check(t, got, errs, map[int]codes.Code{0: codes.Unavailable, 4: codes.Unavailable})
	})

	t.Run("an item the retry does not answer keeps its refusal", func(t *testing.T) {
		svc := &itemScripted{refuse: unavailable(map[string]int{"1": 1})}
		c := startItemScripted(t, &omitting{svc}, newFakeClock().option(), jitterZero, policy(func(p *client.RetryPolicy) { p.MaxRetries = 1 }))
		got, errs, err := c.IdentifyBatch(ctx, "rx_v1", ts)
		if err != nil {
			t.Fatal(err)
		}
		check(t, got, errs, map[int]codes.Code{1: codes.Unavailable})
	})

	t.Run("only the first answer for an item sent counts", func(t *testing.T) {
		refusal := func(id string, c codes.Code) *pb.IdentifyResult {
			return &pb.IdentifyResult{Id: id, Outcome: &pb.IdentifyResult_Error{Error: status.New(c, "scripted").Proto()}}
		}
		svc := &itemScripted{refuse: unavailable(map[string]int{"2": 1}),
			extra: func(n int) []*pb.IdentifyResult {
				if n == 2 {
					// An answer for an item not sent in this round (already
					// answered), and one for the item sent, ahead of its own.
					return []*pb.IdentifyResult{refusal("0", codes.PermissionDenied), refusal("2", codes.InvalidArgument)}
				}
				return nil
			}}
		c := startItemScripted(t, svc, newFakeClock().option(), jitterZero)
		got, errs, err := c.IdentifyBatch(ctx, "rx_v1", ts)
		if err != nil {
			t.Fatal(err)
		}
		check(t, got, errs, map[int]codes.Code{2: codes.InvalidArgument})
	})

	t.Run("each round takes a budget token", func(t *testing.T) {
		svc := &itemScripted{refuse: unavailable(map[string]int{"1": 100})}
		c := startItemScripted(t, svc, newFakeClock().option(), jitterZero, policy(func(p *client.RetryPolicy) {
			p.MaxRetries, p.BudgetTokens, p.BudgetRatio = 5, 2, 0
		}))
		_, errs, err := c.IdentifyBatch(ctx, "rx_v1", ts)
		if err != nil {
			t.Fatal(err)
		}
		if n := len(svc.sent()); n != 3 {
			t.Errorf("%d calls, want 1 + 2 rounds (the budget's 2 tokens)", n)
		}
		if status.Code(errs[1]) != codes.Unavailable {
			t.Errorf("item 1: %v", errs[1])
		}
		// The budget is spent: a new call's refused items are not sent again.
		svc2 := len(svc.sent())
		if _, _, err := c.IdentifyBatch(ctx, "rx_v1", ts); err != nil {
			t.Fatal(err)
		}
		if n := len(svc.sent()) - svc2; n != 1 {
			t.Errorf("with the budget spent: %d calls, want 1", n)
		}
	})

	t.Run("a round adds nothing to the budget", func(t *testing.T) {
		svc := &itemScripted{refuse: unavailable(map[string]int{"1": 100})}
		c := startItemScripted(t, svc, newFakeClock().option(), jitterZero, policy(func(p *client.RetryPolicy) {
			p.MaxRetries, p.BudgetTokens, p.BudgetRatio = 5, 1, 1
		}))
		if _, _, err := c.IdentifyBatch(ctx, "rx_v1", ts); err != nil {
			t.Fatal(err)
		}
		if n := len(svc.sent()); n != 2 {
			t.Errorf("%d calls, want 1 + 1 round (one token: one call's share)", n)
		}
	})

	t.Run("the context ends the rounds", func(t *testing.T) {
		svc := &itemScripted{refuse: unavailable(map[string]int{"3": 100})}
		cctx, cancel := context.WithCancel(ctx)
		defer cancel()
		// The wait before the first round ends with the context.
		sleep := func(ctx context.Context, _ time.Duration) error { cancel(); <-ctx.Done(); return ctx.Err() }
		c := startItemScripted(t, svc, client.WithRetryClock(time.Now, sleep))
		got, errs, err := c.IdentifyBatch(cctx, "rx_v1", ts)
		if err != nil {
			t.Fatalf("call error %v: the first call was answered", err)
		}
		check(t, got, errs, map[int]codes.Code{3: codes.Unavailable})
		if n := len(svc.sent()); n != 1 {
			t.Errorf("%d calls, want 1", n)
		}
	})

	t.Run("no retries", func(t *testing.T) {
		svc := &itemScripted{refuse: unavailable(map[string]int{"1": 1})}
		c := startItemScripted(t, svc, client.WithRetries(0, 0))
		got, errs, err := c.IdentifyBatch(ctx, "rx_v1", ts)
		if err != nil {
			t.Fatal(err)
		}
		check(t, got, errs, map[int]codes.Code{1: codes.Unavailable})
		if n := len(svc.sent()); n != 1 {
			t.Errorf("%d calls, want 1", n)
		}
	})
}

// omitting answers every call after the first without any result.
type omitting struct{ *itemScripted }

func (o *omitting) Identify(ctx context.Context, req *pb.IdentifyRequest) (*pb.IdentifyResponse, error) {
	resp, err := o.itemScripted.Identify(ctx, req)
	if len(o.sent()) > 1 {
		return &pb.IdentifyResponse{}, err
	}
	return resp, err
}
