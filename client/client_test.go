package client_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/ehealth-pseudo/pseudonymizer/client"
	"github.com/ehealth-pseudo/pseudonymizer/internal/auth"
	"github.com/ehealth-pseudo/pseudonymizer/internal/grpcserver"
	"github.com/ehealth-pseudo/pseudonymizer/internal/rpcstatus"
	"github.com/ehealth-pseudo/pseudonymizer/internal/servertest"
	"github.com/ehealth-pseudo/pseudonymizer/keys"
	"github.com/ehealth-pseudo/pseudonymizer/owner"
	"github.com/ehealth-pseudo/pseudonymizer/protoerr"
	"github.com/ehealth-pseudo/pseudonymizer/pseudonym"
)

// testService is a real server (every interceptor) on a TCP loopback
// listener, in dev mode: the caller names itself in metadata.
type testService struct {
	addr  string
	store *keys.FileStore
	calls atomic.Int32 // unary calls seen by the client interceptor
}

func startService(t *testing.T, lis net.Listener) *testService {
	t.Helper()
	ctx := context.Background()
	store, err := keys.OpenFileStore(filepath.Join(t.TempDir(), "keys.json"), true)
	if err != nil {
		t.Fatal(err)
	}
	for _, spec := range []keys.DomainSpec{
		{Name: "rx_v1", Audience: "urn:test:rx", Policy: keys.Policy{
			Pseudonymize: []string{"*"}, Identify: []string{"doctor", "other-doctor"}, Owners: []string{"rx-owner"},
			Convert: map[string][]string{"tl_v1": {"rx-owner"}},
		}},
		{Name: "tl_v1", Audience: "urn:test:tl", Policy: keys.Policy{Pseudonymize: []string{"*"}, Owners: []string{"tl-owner"}}},
	} {
		if _, err := store.CreateDomain(ctx, spec); err != nil {
			t.Fatal(err)
		}
	}
	cache, err := keys.NewCache(ctx, store, &keys.CacheOptions{Interval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cache.Close() })
	servertest.StartOn(t, grpcserver.Config{
		Keys: cache, Auth: auth.New(auth.Config{Dev: true}), MaxBatch: 1000, Rate: 1e6, Burst: 1e6,
	}, lis)
	return &testService{addr: lis.Addr().String(), store: store}
}

func (s *testService) conn(t *testing.T) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient(s.addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, inv grpc.UnaryInvoker, opts ...grpc.CallOption) error {
			s.calls.Add(1)
			return inv(ctx, method, req, reply, cc, opts...)
		}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

func (s *testService) owner(t *testing.T, domain string) *owner.Owner {
	t.Helper()
	o, err := owner.New(context.Background(), domain, s.store, owner.WithRefreshInterval(0))
	if err != nil {
		t.Fatal(err)
	}
	return o
}

func listen(t *testing.T) net.Listener {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return lis
}

func as(principal string) context.Context {
	return metadata.AppendToOutgoingContext(context.Background(), auth.DevPrincipalHeader, principal)
}

func TestClientRoundTrips(t *testing.T) {
	svc := startService(t, listen(t))
	c := client.New(svc.conn(t))
	rx := svc.owner(t, "rx_v1")
	tl := svc.owner(t, "tl_v1")
	doctor := as("doctor")

	tp, err := c.Pseudonymize(doctor, "rx_v1", []byte("85073003328"))
	if err != nil {
		t.Fatal(err)
	}
	p, err := rx.AtRest(context.Background(), tp)
	if err != nil {
		t.Fatal(err)
	}
	// Identify: bound to the doctor, refused to another.
	back, _ := rx.InTransit(p, owner.Subject("doctor"))
	id, err := c.Identify(doctor, "rx_v1", back)
	if err != nil || string(id) != "85073003328" {
		t.Fatalf("Identify = %q, %v", id, err)
	}
	_, err = c.Identify(as("other-doctor"), "rx_v1", back)
	var ie *client.ItemError
	if !errors.Is(err, client.ErrSubjectMismatch) || !errors.As(err, &ie) || ie.Code != codes.PermissionDenied || status.Code(err) != codes.PermissionDenied {
		t.Fatalf("identify by another doctor: %v", err)
	}
	old, _ := rx.InTransit(p, owner.IssuedAt(time.Now().Add(-time.Hour)))
	if _, err := c.Identify(doctor, "rx_v1", old); !errors.Is(err, client.ErrExpired) {
		t.Fatalf("identify expired: %v", err)
	}
	// The owner may not identify: a whole-call denial.
	if _, err := c.Identify(as("rx-owner"), "rx_v1", back); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("owner identify: %v", err)
	}
	// Convert to TherLink equals a direct pseudonymize there.
	tB, err := c.Convert(as("rx-owner"), "rx_v1", "tl_v1", must(rx.InTransit(p)))
	if err != nil {
		t.Fatal(err)
	}
	direct, _ := c.Pseudonymize(doctor, "tl_v1", []byte("85073003328"))
	if must(tl.AtRest(context.Background(), tB)) != must(tl.AtRest(context.Background(), direct)) {
		t.Fatal("convert differs from a direct pseudonymize")
	}
	// Domain info.
	d, err := c.Domain(doctor, "rx_v1")
	if err != nil || d.Audience != "urn:test:rx" || d.ActiveKid == "" || d.TTL != keys.DefaultTTL {
		t.Fatalf("Domain = %+v, %v", d, err)
	}
	if !slices.Equal(d.Operations, []client.Operation{client.OpPseudonymize, client.OpIdentify}) {
		t.Fatalf("the doctor may %v", d.Operations)
	}
	if d, err := c.Domain(as("rx-owner"), "rx_v1"); err != nil || !slices.Contains(d.Operations, client.OpConvert) ||
		!slices.Equal(d.ConvertTargets, []string{"tl_v1"}) {
		t.Fatalf("the owner: %+v, %v", d, err)
	}
}

func TestClientBatchesSplitAndStayDistinct(t *testing.T) {
	svc := startService(t, listen(t))
	c := client.New(svc.conn(t), client.WithMaxBatch(100), client.WithCache(0))
	rx := svc.owner(t, "rx_v1")
	const n = 250
	ids := make([][]byte, n)
	for i := range ids {
		ids[i] = fmt.Appendf(nil, "patient-%04d", i)
	}
	ids[17] = bytes.Repeat([]byte{'x'}, 30) // refused by the client, alone
	tps, errs, err := c.PseudonymizeBatch(as("doctor"), "rx_v1", ids)
	if err != nil {
		t.Fatal(err)
	}
	if got := svc.calls.Load(); got != 3 {
		t.Fatalf("%d calls for %d items in batches of 100", got, n)
	}
	seen := map[pseudonym.AtRest]int{}
	ats := make([]*pseudonym.Transit, 0, n)
	for i, tp := range tps {
		if i == 17 {
			if !errors.Is(errs[i], client.ErrIdentifierTooLong) {
				t.Fatalf("item 17: %v", errs[i])
			}
			continue
		}
		if errs[i] != nil {
			t.Fatalf("item %d: %v", i, errs[i])
		}
		p := must(rx.AtRest(context.Background(), tp))
		if j, dup := seen[p]; dup {
			t.Fatalf("items %d and %d share a pseudonym", j, i)
		}
		seen[p] = i
		ats = append(ats, must(rx.InTransit(p, owner.Subject("doctor"))))
	}
	got, gerrs, err := c.IdentifyBatch(as("doctor"), "rx_v1", ats)
	if err != nil {
		t.Fatal(err)
	}
	j := 0
	for i := range ids {
		if i == 17 {
			continue
		}
		if gerrs[j] != nil || !bytes.Equal(got[j], ids[i]) {
			t.Fatalf("identify %d = %q, %v", i, got[j], gerrs[j])
		}
		j++
	}
}

func TestClientCacheAndInFlightMerge(t *testing.T) {
	svc := startService(t, listen(t))
	c := client.New(svc.conn(t))
	ctx := as("doctor")
	var wg sync.WaitGroup
	res := make([]*pseudonym.Transit, 20)
	for i := range res {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tp, err := c.Pseudonymize(ctx, "rx_v1", []byte("85073003328"))
			if err != nil {
				t.Error(err)
			}
			res[i] = tp
		}()
	}
	wg.Wait()
	if n := svc.calls.Load(); n != 1 {
		t.Fatalf("%d service calls for 20 concurrent identical requests", n)
	}
	for _, tp := range res[1:] {
		if tp.String() != res[0].String() {
			t.Fatal("merged calls returned different pseudonyms")
		}
	}
	// Another value, or the same value in another domain, is not cached.
	c.Pseudonymize(ctx, "rx_v1", []byte("00010100105"))
	c.Pseudonymize(ctx, "tl_v1", []byte("85073003328"))
	if n := svc.calls.Load(); n != 3 {
		t.Fatalf("%d calls, want 3", n)
	}
	// A cache whose margin exceeds the ttl serves nothing.
	c2 := client.New(svc.conn(t), client.WithCache(time.Hour))
	c2.Pseudonymize(ctx, "rx_v1", []byte("85073003328"))
	c2.Pseudonymize(ctx, "rx_v1", []byte("85073003328"))
	if n := svc.calls.Load(); n != 5 {
		t.Fatalf("%d calls, want 5 (nothing cached past exp - margin)", n)
	}
}

func TestClientRetriesUnavailable(t *testing.T) {
	// Reserve a port, and start the service on it only once the first
	// attempt has failed: from the first wait between attempts, which
	// returns when the connection is ready (an event, not a duration).
	lis := listen(t)
	addr := lis.Addr().String()
	lis.Close()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	var waits int
	started := false
	up := func(ctx context.Context, _ time.Duration) error {
		waits++
		if !started {
			started = true
			l, err := net.Listen("tcp", addr)
			if err != nil {
				return err
			}
			startService(t, l)
		}
		for s := cc.GetState(); s != connectivity.Ready; s = cc.GetState() {
			cc.Connect()
			if !cc.WaitForStateChange(ctx, s) {
				return ctx.Err()
			}
		}
		return nil
	}
	c := client.New(cc, client.WithRetries(8, 50*time.Millisecond), client.WithRetryClock(nil, up))
	if _, err := c.Pseudonymize(as("doctor"), "rx_v1", []byte("85073003328")); err != nil {
		t.Fatalf("no retry through the outage: %v", err)
	}
	if waits != 1 {
		t.Fatalf("%d waits, want 1", waits)
	}
	// Without retries the first failure is returned.
	lis2 := listen(t)
	addr2 := lis2.Addr().String()
	lis2.Close()
	cc2, _ := grpc.NewClient(addr2, grpc.WithTransportCredentials(insecure.NewCredentials()))
	defer cc2.Close()
	if _, err := client.New(cc2, client.WithRetries(0, 0)).Pseudonymize(as("doctor"), "rx_v1", []byte("1")); status.Code(err) != codes.Unavailable {
		t.Fatalf("without retries: %v", err)
	}
}

func TestClientCallErrors(t *testing.T) {
	svc := startService(t, listen(t))
	c := client.New(svc.conn(t))
	if _, err := c.Pseudonymize(as("doctor"), "nope_v1", []byte("1")); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("unknown domain: %v", err)
	}
	if _, err := c.Convert(as("doctor"), "rx_v1", "tl_v1", &pseudonym.Transit{}); !errors.Is(err, client.ErrInvalidPoint) {
		t.Fatalf("convert of an invalid transit pseudonym: %v", err)
	}
}

// TestServiceStatusesAreTheTable: what the real service answers, per item
// and per call, is the code, reason, message and metadata that protoerr's
// table gives for the error.
func TestServiceStatusesAreTheTable(t *testing.T) {
	svc := startService(t, listen(t))
	c := client.New(svc.conn(t), client.WithCache(0), client.WithMaxBatch(2000))
	rx, tl := svc.owner(t, "rx_v1"), svc.owner(t, "tl_v1")
	doctor := as("doctor")
	p := must(rx.AtRest(context.Background(), must(c.Pseudonymize(doctor, "rx_v1", []byte("85073003328")))))
	bound := must(rx.InTransit(p, owner.Subject("doctor")))
	malformed := *bound
	malformed.Info = "a.b.c.d.e"
	foreign := must(tl.InTransit(must(tl.AtRest(context.Background(), must(c.Pseudonymize(doctor, "tl_v1", []byte("85073003328")))))))

	want := func(what string, err, tableErr error) {
		t.Helper()
		e, ok := protoerr.Lookup(tableErr)
		if !ok {
			t.Fatalf("%s: %v is not in the table", what, tableErr)
		}
		msg, md := e.Describe(tableErr)
		st := status.Convert(err)
		var got map[string]string
		for _, d := range st.Details() {
			if info, ok := d.(*errdetails.ErrorInfo); ok {
				got = info.GetMetadata()
			}
		}
		if st.Code() != e.Code || st.Message() != msg || rpcstatus.ReasonOf(st) != e.Reason || !maps.Equal(got, md) {
			t.Errorf("%s: the service says %v %q %s %v; the table %v %q %s %v", what,
				st.Code(), st.Message(), rpcstatus.ReasonOf(st), got, e.Code, msg, e.Reason, md)
		}
		if e.PerItem && !errors.Is(err, e.Err) {
			t.Errorf("%s: %v does not match %v", what, err, e.Err)
		}
	}
	// Per item.
	_, err := c.Identify(doctor, "rx_v1", must(rx.InTransit(p, owner.IssuedAt(time.Now().Add(-time.Hour)))))
	want("expired", err, protoerr.ErrExpired)
	_, err = c.Identify(doctor, "rx_v1", must(rx.InTransit(p, owner.IssuedAt(time.Now().Add(time.Hour)))))
	want("not yet valid", err, protoerr.ErrNotYetValid)
	_, err = c.Identify(as("other-doctor"), "rx_v1", bound)
	want("wrong subject", err, protoerr.ErrSubjectMismatch)
	_, err = c.Identify(doctor, "rx_v1", &malformed)
	want("malformed transitInfo", err, protoerr.ErrMalformedTransitInfo)
	_, err = c.Identify(doctor, "rx_v1", foreign)
	want("another domain's key", err, protoerr.ErrBadTag)
	_, err = c.Identify(doctor, "rx_v1", must(rx.InTransit(p, owner.TTL(48*time.Hour))))
	want("lifetime", err, &protoerr.LifetimeTooLongError{Max: keys.DefaultMaxLifetime})

	// Per call.
	_, err = c.Pseudonymize(doctor, "nope_v1", []byte("1"))
	want("unknown domain", err, protoerr.ErrOperationNotAllowed)
	_, err = c.Pseudonymize(doctor, "", []byte("1"))
	want("empty domain", err, protoerr.ErrEmptyDomain)
	_, err = c.Convert(as("rx-owner"), "rx_v1", "rx_v1", bound)
	want("same domain", err, protoerr.ErrSameDomain)
	ids := make([][]byte, 1001)
	for i := range ids {
		ids[i] = []byte("1")
	}
	_, _, err = c.PseudonymizeBatch(doctor, "rx_v1", ids)
	want("batch too large", err, &protoerr.BatchTooLargeError{Max: 1000})
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
