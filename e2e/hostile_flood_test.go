package e2e

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/ehealth-pseudo/pseudonymizer/client"
	"github.com/ehealth-pseudo/pseudonymizer/keys/vault"
	pb "github.com/ehealth-pseudo/pseudonymizer/proto/pseudonymizer/v1"
)

// rateLimit sends batches of max-batch items (empty points: each costs a
// token all the same) as the greedy principal until it is refused, which
// must happen once its burst is spent, with a RetryInfo.
func (h *hostileEnv) rateLimit(ctx context.Context, t *testing.T) hostileOutcome {
	items := make([]*pb.PseudonymizeItem, hostileMaxBatch)
	for i := range items {
		items[i] = &pb.PseudonymizeItem{}
	}
	req := &pb.PseudonymizeRequest{Domain: quotaDomain, Items: items}
	c := h.api(greedy)
	const maxCalls = 10
	for calls := 0; calls < maxCalls; calls++ {
		resp, err := c.Pseudonymize(ctx, req)
		if err == nil {
			if n := len(resp.GetResults()); n != hostileMaxBatch {
				t.Fatalf("%d results for %d items", n, hostileMaxBatch)
			}
			if o := itemOutcome(resp.GetResults()[0].GetError()); o.reason != rInvalidPoint.String() {
				t.Errorf("an empty point got %v; want INVALID_POINT", o)
			}
			continue
		}
		out := callOutcome(err)
		var delay time.Duration
		for _, d := range status.Convert(err).Details() {
			if ri, ok := d.(*errdetails.RetryInfo); ok {
				delay = ri.GetRetryDelay().AsDuration()
			}
		}
		maxDelay := time.Duration(hostileBurst/hostileRate) * time.Second
		if delay <= 0 || delay > maxDelay {
			t.Errorf("RetryInfo delay %v; want one in (0, %v]", delay, maxDelay)
		}
		if calls < hostileBurst/hostileMaxBatch {
			t.Errorf("refused after %d calls of %d items: the burst is %d", calls, hostileMaxBatch, hostileBurst)
		}
		out.note = fmt.Sprintf("after %d calls; RetryInfo %v", calls, delay.Round(time.Millisecond))
		return out
	}
	t.Errorf("%d calls of %d items were never rate limited", maxCalls, hostileMaxBatch)
	return hostileOutcome{code: codes.OK, level: "call"}
}

// sealLimit pseudonymizes max-seals+1 items in seal_v1 at once: exactly
// max-seals are sealed, the last item is refused, and so is any later one.
func (h *hostileEnv) sealLimit(ctx context.Context, t *testing.T) hostileOutcome {
	ids := make([][]byte, hostileMaxSeals+1)
	for i := range ids {
		ids[i] = h.niss
	}
	blinded, _, errs := client.BlindBatch(ids)
	items := make([]*pb.PseudonymizeItem, len(ids))
	for i := range ids {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		items[i] = &pb.PseudonymizeItem{Id: fmt.Sprint(i), Blinded: blinded[i]}
	}
	resp, err := h.api(alice).Pseudonymize(ctx, &pb.PseudonymizeRequest{Domain: sealDomain, Items: items})
	if err != nil {
		return callOutcome(err)
	}
	sealed := 0
	var refused []hostileOutcome
	for _, r := range resp.GetResults() {
		if o := itemOutcome(r.GetError()); o.code == codes.OK {
			sealed++
		} else {
			refused = append(refused, o)
		}
	}
	if sealed != hostileMaxSeals || len(refused) != 1 {
		t.Errorf("%d items sealed, %d refused; want %d and 1", sealed, len(refused), hostileMaxSeals)
	}
	next := h.pseudonymizeItem(ctx, t, h.conns[alice], sealDomain, h.blinded(t))
	if next.reason != rExhausted.String() {
		t.Errorf("a seal after the limit: %v; want TRANSIT_KEY_EXHAUSTED", next)
	}
	if len(refused) == 0 {
		return hostileOutcome{code: codes.OK, level: "item"}
	}
	out := refused[0]
	out.note = fmt.Sprintf("%d sealed, %d refused, next call %s", sealed, len(refused), strings.TrimPrefix(next.reason, "ERROR_REASON_"))
	return out
}

// floodUnauthenticated is measured flood (a): 4 connections without
// credentials each send 25 requests of 4 MiB (2M empty items) one after
// the other. Every one must be refused from its headers, and the server's
// RSS must stay within rssSlack of idle meanwhile.
func (h *hostileEnv) floodUnauthenticated(ctx context.Context, t *testing.T) hostileOutcome {
	const workers, rounds = 4, 25
	body := emptyItemsBody(rxDomain, 2<<20)
	conns := make([]*grpc.ClientConn, workers)
	for i := range conns {
		conns[i] = dialAddrs(t, []string{h.srv.addr}, grpc.WithTransportCredentials(h.tlsCreds(nil)))
	}
	before := h.rss(t)
	peak := h.rssPeak()
	began := time.Now()
	var mu sync.Mutex
	got := map[string]int{}
	var first hostileOutcome
	var wg sync.WaitGroup
	for _, cc := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range rounds {
				cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
				out := rawUnary(cctx, cc, body)
				cancel()
				mu.Lock()
				got[out.String()]++
				if out.code != codes.Unauthenticated || len(got) == 1 {
					first = out
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	took := time.Since(began)
	p := peak()
	after := h.rss(t)
	t.Logf("RSS: flood (a) %d×%d unauthenticated requests of %d bytes in %v: before %s, peak %s (+%s), after %s",
		workers, rounds, len(body), took.Round(time.Millisecond), fmtMiB(before), fmtMiB(p), fmtMiB(p-h.idleRSS), fmtMiB(after))
	if p > h.idleRSS+rssSlack {
		t.Errorf("RSS peaked at %s during flood (a): more than %s above idle %s", fmtMiB(p), fmtMiB(rssSlack), fmtMiB(h.idleRSS))
	}
	if len(got) != 1 {
		t.Errorf("outcomes of the flood: %v; want every request UNAUTHENTICATED", got)
	}
	var seen []string
	for o, k := range got {
		seen = append(seen, fmt.Sprintf("%d× %s", k, o))
	}
	first.note = fmt.Sprintf("[%s]; peak RSS %s", strings.Join(seen, ", "), fmtMiB(p))
	return first
}

// floodStreams is measured flood (b): 40,000 streams opened on one raw
// HTTP/2 connection with a valid client certificate, none of which sends
// a message. The server may run MaxConcurrentStreams (128) of them at a
// time and must refuse the others (RST_STREAM REFUSED_STREAM); those it
// runs end after the stream idle timeout (DEADLINE_EXCEEDED). Meanwhile
// its RSS stays within rssSlack of idle and it answers a normal call on
// another connection.
func (h *hostileEnv) floodStreams(ctx context.Context, t *testing.T) hostileOutcome {
	const n = 40_000
	cert := h.pk.clients[bob]
	c, err := dialH2(ctx, h.srv.addr, h.tlsConfig(&cert, []string{"h2"}))
	if err != nil {
		t.Fatalf("raw HTTP/2 connection: %v", err)
	}
	defer c.Close()
	defer context.AfterFunc(ctx, func() { _ = c.Close() })()

	before := h.rss(t)
	peak := h.rssPeak()
	var mu sync.Mutex
	answered := make(map[uint32]bool, n)
	var refused, otherRST, goaway int
	trailers := map[codes.Code]int{}
	readDone := make(chan error, 1)
	go func() {
		readDone <- c.readLoop(func(f http2.Frame) bool {
			mu.Lock()
			defer mu.Unlock()
			switch f := f.(type) {
			case *http2.RSTStreamFrame:
				if !answered[f.StreamID] {
					answered[f.StreamID] = true
					if f.ErrCode == http2.ErrCodeRefusedStream {
						refused++
					} else {
						otherRST++
					}
				}
			case *http2.MetaHeadersFrame:
				if f.StreamEnded() && !answered[f.StreamID] {
					answered[f.StreamID] = true
					out, _ := trailerOutcome(f.Fields)
					trailers[out.code]++
				}
			case *http2.GoAwayFrame:
				goaway++
				return false
			}
			return len(answered) < n
		})
	}()

	began := time.Now()
	for i := range n {
		if err := c.headers(uint32(2*i+1), identifyStreamPath, false); err != nil {
			t.Fatalf("writing HEADERS of stream %d: %v", 2*i+1, err)
		}
		if i%512 == 511 {
			if err := c.flush(); err != nil {
				t.Fatalf("flushing at stream %d: %v", 2*i+1, err)
			}
		}
	}
	if err := c.flush(); err != nil {
		t.Fatal(err)
	}
	wrote := time.Since(began)

	// A normal call on another connection while the streams are open.
	callBegan := time.Now()
	normal := h.pseudonymizeItem(ctx, t, h.conns[alice], rxDomain, h.blinded(t))
	callTook := time.Since(callBegan)
	if normal.code != codes.OK {
		t.Errorf("a normal call during the flood: %v", normal)
	}
	during := h.rss(t)

	select {
	case err := <-readDone:
		if err != nil {
			t.Errorf("reading the flood connection: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Errorf("not every stream was answered within 30 s")
	}
	took := time.Since(began)
	p := peak()
	mu.Lock()
	defer mu.Unlock()
	t.Logf("RSS: flood (b) %d streams on one connection, written in %v, all answered in %v: before %s, during %s, peak %s (+%s)",
		n, wrote.Round(time.Millisecond), took.Round(time.Millisecond), fmtMiB(before), fmtMiB(during), fmtMiB(p), fmtMiB(p-h.idleRSS))
	t.Logf("flood (b): %d refused (REFUSED_STREAM), %d other RST_STREAM, trailers %v, %d GOAWAY; a normal call on another connection took %v",
		refused, otherRST, trailers, goaway, callTook.Round(time.Millisecond))
	if p > h.idleRSS+rssSlack {
		t.Errorf("RSS peaked at %s during flood (b): more than %s above idle %s", fmtMiB(p), fmtMiB(rssSlack), fmtMiB(h.idleRSS))
	}
	if len(answered) != n || goaway != 0 {
		t.Errorf("%d of %d streams answered, %d GOAWAY", len(answered), n, goaway)
	}
	if refused == 0 {
		t.Error("no stream was refused: MAX_CONCURRENT_STREAMS is not enforced")
	}
	for code, k := range trailers {
		if code != codes.DeadlineExceeded {
			t.Errorf("%d idle streams ended with %v; want DEADLINE_EXCEEDED (stream idle timeout)", k, code)
		}
	}
	normal.note = fmt.Sprintf("normal call in %v; %d refused, %d idle-timed-out; peak RSS %s",
		callTook.Round(time.Millisecond), refused, trailers[codes.DeadlineExceeded], fmtMiB(p))
	return normal
}

// serverLog counts the lines of the server's stderr holding all of the
// given strings.
func (h *hostileEnv) serverLog(all ...string) int {
	n := 0
	for _, line := range strings.Split(string(h.srv.stderr.Bytes()), "\n") {
		ok := true
		for _, s := range all {
			ok = ok && strings.Contains(line, s)
		}
		if ok {
			n++
		}
	}
	return n
}

// faultGarbageMeta overwrites fault_v1's meta in Vault with a value that
// does not parse: the server keeps the domain's last good keys and serves
// it.
func (h *hostileEnv) faultGarbageMeta(ctx context.Context, t *testing.T) hostileOutcome {
	kv := h.ve.v.Client(t).KVv2(vault.DefaultMount)
	if _, err := kv.Put(ctx, "domains/"+faultDomain+"/meta", map[string]any{"audience": 42, "accepted": "t1"}); err != nil {
		t.Fatalf("overwriting the meta of %s: %v", faultDomain, err)
	}
	waitFor(t, 30*time.Second, "the server to find the garbage", func() (bool, string) {
		n := h.serverLog("poll failed", faultDomain+"/meta")
		return n > 0, fmt.Sprintf("%d log records", n)
	})
	out := h.pseudonymizeItem(ctx, t, h.conns[alice], faultDomain, h.blinded(t))
	st, err := health(ctx, h.probe, "")
	out.note = fmt.Sprintf("(last good keys); overall health %v %v", st, errText(err))
	return out
}

// faultVaultStopped stops Vault: the server serves from its cache and its
// overall health turns NOT_SERVING.
func (h *hostileEnv) faultVaultStopped(ctx context.Context, t *testing.T) hostileOutcome {
	h.ve.v.Stop(t)
	waitHealth(t, h.probe, healthpb.HealthCheckResponse_NOT_SERVING, 30*time.Second)
	out := h.identify(ctx, t, h.conns[alice], rxDomain, h.trRx.Point, h.trRx.Info)
	if p := h.pseudonymizeItem(ctx, t, h.conns[alice], rxDomain, h.blinded(t)); p.code != codes.OK {
		t.Errorf("pseudonymize with Vault down: %v", p)
	}
	out.note = "(identify and pseudonymize); overall health NOT_SERVING"
	return out
}

// faultVaultEmpty starts Vault again, empty (a dev server forgets
// everything), with the mount, the policies and the service's token: the
// key store now lists no domain. The server keeps its keys and stays
// NOT_SERVING overall.
func (h *hostileEnv) faultVaultEmpty(ctx context.Context, t *testing.T) hostileOutcome {
	seen := h.serverLog("lists no domain")
	h.ve.v.Restart(t)
	h.ve.setup(t)
	h.serviceToken(t)
	waitFor(t, 30*time.Second, "the server to find Vault empty", func() (bool, string) {
		n := h.serverLog("lists no domain")
		return n > seen, fmt.Sprintf("%d log records", n-seen)
	})
	out := h.identify(ctx, t, h.conns[alice], rxDomain, h.trRx.Point, h.trRx.Info)
	if p := h.pseudonymizeItem(ctx, t, h.conns[alice], rxDomain, h.blinded(t)); p.code != codes.OK {
		t.Errorf("pseudonymize with Vault empty: %v", p)
	}
	if st, err := health(ctx, h.probe, ""); err != nil || st != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Errorf("overall health with Vault empty: %v, %v; want NOT_SERVING", st, err)
	}
	out.note = "(identify and pseudonymize); overall health NOT_SERVING"
	return out
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
