package vault

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/ehealth-pseudo/pseudonymizer/internal/recovered"
	"github.com/ehealth-pseudo/pseudonymizer/keys"
	"github.com/ehealth-pseudo/pseudonymizer/keyshare/wire"
)

// DefaultSharesMount is the path of the key-share plugin (package
// keyshare) when none is given.
const DefaultSharesMount = "pseudonymizer-shares"

// Defaults of [SharesOptions].
const (
	DefaultSharesWindow   = time.Millisecond
	DefaultSharesInFlight = 2
	// StallWindows is how many windows an item waits at most for a round
	// trip to end when InFlight are in flight: long enough for the round
	// trips of a loaded Vault (several ms), short against a stalled one.
	StallWindows          = 50
	DefaultSharesMaxBatch = 1000
	DefaultSharesTimeout  = 5 * time.Second
)

// pointSize is the size of an encoded point.
const pointSize = 32

// SharesOptions tune a [Shares].
type SharesOptions struct {
	// Window is the longest an item waits for others to share its round
	// trip to the plugin, while an earlier round trip is in flight (an
	// idle client sends at once); DefaultSharesWindow when zero.
	Window time.Duration
	// InFlight is the most round trips in flight at once, short of full
	// ones (MaxBatch points): past it, items wait for a round trip to end,
	// and go together in the next, but never longer than StallWindows
	// windows (round trips that hang must not hold the others).
	// Fewer, fuller round trips cost Vault and both ends less CPU per
	// point. DefaultSharesInFlight when zero.
	InFlight int
	// MaxBatch is the most points of one round trip, at most the plugin's
	// max_batch; DefaultSharesMaxBatch when zero.
	MaxBatch int
	// Timeout bounds a round trip with its retries; DefaultSharesTimeout
	// when zero.
	Timeout time.Duration
	// Logger receives the failed round trips (never a point or a key);
	// slog.Default() when nil.
	Logger *slog.Logger
}

// Shares is the service's client of the key-share plugin: it implements
// keys.Multiplier. Concurrent calls share round trips (micro-batching):
// an idle client sends at once; while a round trip is in flight, items
// queue until it ends, the window passes (StallWindows windows while
// InFlight round trips are in flight) or MaxBatch points are waiting,
// whichever comes first, and then go in one request (or several of at
// most MaxBatch points). Requests go over the Vault client's kept-alive
// connections, with the token the Vault client holds at the time. A round
// trip that fails on the network or with a 5xx (a plugin restarting, say)
// is tried again with a short backoff within Timeout; past it, or on any
// other error, its items fail with an error wrapping keys.ErrUnavailable.
// Nothing ever falls back to a whole k: there is none.
type Shares struct {
	parent   *api.Client
	client   *api.Client // a clone without the Vault client's own retries
	path     string
	window   time.Duration
	inFlight int
	maxBatch int
	timeout  time.Duration
	log      *slog.Logger

	mu       sync.Mutex
	queue    []*part
	queued   int
	since    time.Time // when the oldest item of the queue came
	inflight int
	peak     int // the most round trips ever in flight at once (tests)
	timer    *time.Timer
	armed    bool
	due      time.Time // when the armed timer fires

	roundTrips, items, failures atomic.Uint64
	// put: the client sends PUT rather than PATCH, after Vault refused a
	// PATCH (a plugin or a service policy older than PATCH).
	put atomic.Bool
}

var _ keys.Multiplier = (*Shares)(nil)

// NewShares returns a client of the plugin mounted at mount
// (DefaultSharesMount when empty) that uses client's address, transport
// and token.
func NewShares(client *api.Client, mount string, opts SharesOptions) (*Shares, error) {
	if mount == "" {
		mount = DefaultSharesMount
	}
	if opts.MaxBatch <= 0 {
		opts.MaxBatch = DefaultSharesMaxBatch
	}
	// A client of its own, on the parent's address and transport: no
	// retries of the Vault client's (send has its own), no timeout of the
	// Vault client's (it would end the request's context when the request
	// returns, before the answer is read; each round trip has Timeout),
	// and every answer body bounded, error answers included (the Vault
	// client reads those whole).
	cfg := client.CloneConfig()
	hc := *cfg.HttpClient
	hc.Transport = &boundedBodies{next: hc.Transport, max: maxAnswer(opts.MaxBatch)}
	cfg.HttpClient = &hc
	cfg.MaxRetries = 0
	cfg.Timeout = 0
	c, err := api.NewClient(cfg)
	if err != nil {
		return nil, fmt.Errorf("vault: %v", err)
	}
	c.SetClientTimeout(0)
	c.SetToken(client.Token())
	s := &Shares{
		parent: client, client: c, path: mount + "/multiply",
		window: opts.Window, inFlight: opts.InFlight, maxBatch: opts.MaxBatch, timeout: opts.Timeout, log: opts.Logger,
	}
	if s.window <= 0 {
		s.window = DefaultSharesWindow
	}
	if s.inFlight <= 0 {
		s.inFlight = DefaultSharesInFlight
	}
	if s.timeout <= 0 {
		s.timeout = DefaultSharesTimeout
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	return s, nil
}

// Stats returns the number of round trips (requests to the plugin, tries
// included), of points sent, and of round trips that failed.
func (s *Shares) Stats() (roundTrips, items, failures uint64) {
	return s.roundTrips.Load(), s.items.Load(), s.failures.Load()
}

// part is up to maxBatch points of one Multiply call, of one group.
type part struct {
	op       keys.ShareOp
	from, to keys.ShareRef
	in, out  []byte
	errs     []error
	done     chan struct{}
}

func (p *part) n() int { return len(p.in) / pointSize }

// Multiply implements keys.Multiplier.
func (s *Shares) Multiply(ctx context.Context, op keys.ShareOp, from, to keys.ShareRef, points [][]byte, errs []error) {
	var idx []int
	for i := range points {
		if errs[i] == nil {
			if len(points[i]) != pointSize {
				errs[i] = fmt.Errorf("%w: vault: a point is not %d bytes", keys.ErrInvalid, pointSize)
				continue
			}
			idx = append(idx, i)
		}
	}
	type sent struct {
		p   *part
		idx []int
	}
	var parts []sent
	for lo := 0; lo < len(idx); lo += s.maxBatch {
		hi := min(lo+s.maxBatch, len(idx))
		p := &part{op: op, from: from, to: to, in: make([]byte, 0, (hi-lo)*pointSize), done: make(chan struct{})}
		for _, i := range idx[lo:hi] {
			p.in = append(p.in, points[i]...)
		}
		parts = append(parts, sent{p, idx[lo:hi]})
		s.enqueue(p)
	}
	for _, sp := range parts {
		select {
		case <-sp.p.done:
			for j, i := range sp.idx {
				if sp.p.errs != nil && sp.p.errs[j] != nil {
					errs[i] = sp.p.errs[j]
					continue
				}
				copy(points[i], sp.p.out[j*pointSize:(j+1)*pointSize])
			}
		case <-ctx.Done():
			for _, i := range sp.idx {
				errs[i] = fmt.Errorf("%w: vault: key-share plugin: %v", keys.ErrUnavailable, ctx.Err())
			}
		}
	}
}

// enqueue queues p and sends what is queued when the client is idle or
// MaxBatch points wait; otherwise the timer fires a window from now at
// the latest. With InFlight round trips in flight, the end of one sends
// the queue, or fire after StallWindows windows.
func (s *Shares) enqueue(p *part) {
	s.mu.Lock()
	if len(s.queue) == 0 {
		s.since = time.Now()
	}
	s.queue = append(s.queue, p)
	s.queued += p.n()
	if s.inflight == 0 || s.queued >= s.maxBatch {
		s.flushLocked()
		s.mu.Unlock()
		return
	}
	s.armLocked(time.Now().Add(s.window))
	s.mu.Unlock()
}

// armLocked makes the timer fire at due, unless it is armed to fire
// earlier. s.mu is held.
func (s *Shares) armLocked(due time.Time) {
	if s.armed && !due.Before(s.due) {
		return
	}
	s.armed, s.due = true, due
	if s.timer == nil {
		s.timer = time.AfterFunc(time.Until(due), s.fire)
		return
	}
	s.timer.Reset(time.Until(due))
}

// fire ends a window: everything queued is sent, unless InFlight round
// trips are in flight (the end of one sends it) and the oldest item has
// waited less than StallWindows windows (then fire comes back for it).
func (s *Shares) fire() {
	defer func() { _ = recover() }() // nothing here panics; the process must not die if it does
	s.mu.Lock()
	defer s.mu.Unlock()
	s.armed = false
	if len(s.queue) == 0 {
		return
	}
	if s.inflight >= s.inFlight {
		if stall := s.since.Add(StallWindows * s.window); time.Now().Before(stall) {
			s.armLocked(stall)
			return
		}
	}
	s.flushLocked()
}

// flushLocked sends the queue, in requests of at most maxBatch points, each
// on a goroutine of its own. s.mu is held.
func (s *Shares) flushLocked() {
	for len(s.queue) > 0 {
		var batch []*part
		n := 0
		for len(s.queue) > 0 && (len(batch) == 0 || n+s.queue[0].n() <= s.maxBatch) {
			n += s.queue[0].n()
			batch = append(batch, s.queue[0])
			s.queue = s.queue[1:]
		}
		s.queued -= n
		s.inflight++
		s.peak = max(s.peak, s.inflight)
		go s.send(batch)
	}
	s.queue = nil
	if s.armed { // nothing waits: a window that started stays no longer
		s.timer.Stop()
		s.armed = false
	}
}

// send makes the round trip of one batch and completes its parts; then,
// if items queued meanwhile, sends them without waiting for the window.
func (s *Shares) send(batch []*part) {
	defer func() {
		if r := recover(); r != nil {
			p := recovered.Describe(r)
			s.log.Error("vault: key-share client panicked (recovered; its items failed)", "panic_type", p.Type, "stack", p.Frames)
			fail(batch, fmt.Errorf("%w: vault: key-share client: internal error", keys.ErrUnavailable))
		}
		s.mu.Lock()
		s.inflight--
		s.flushLocked()
		s.mu.Unlock()
	}()
	ctx, cancel := context.WithTimeout(context.Background(), s.timeout)
	defer cancel()
	err := s.roundTrip(ctx, batch)
	for try := 0; err != nil && retryable(err); try++ {
		d := min(5*time.Millisecond<<try, 250*time.Millisecond)
		d = d/2 + rand.N(d/2+1)
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
		case <-t.C:
			err = s.roundTrip(ctx, batch)
			continue
		}
		break
	}
	if err != nil {
		s.failures.Add(1)
		s.log.Warn("vault: key-share plugin round trip failed", "path", s.path, "points", total(batch), "err", err)
		fail(batch, fmt.Errorf("%w: vault: key-share plugin: %w", keys.ErrUnavailable, err))
	}
}

func total(batch []*part) int {
	n := 0
	for _, p := range batch {
		n += p.n()
	}
	return n
}

// fail completes every part of batch that is not done with err.
func fail(batch []*part, err error) {
	for _, p := range batch {
		select {
		case <-p.done:
			continue
		default:
		}
		p.errs = make([]error, p.n())
		for i := range p.errs {
			p.errs[i] = err
		}
		close(p.done)
	}
}

// retryable reports whether a round trip that failed with err may succeed
// when tried again: network errors and 5xx answers (a plugin or Vault
// restarting), not refusals.
func retryable(err error) bool {
	var re *api.ResponseError
	if errors.As(err, &re) {
		return re.StatusCode >= 500 || re.StatusCode == http.StatusTooManyRequests
	}
	return !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, errAnswer)
}

// mergePatch is the content type that Vault requires of a PATCH.
const mergePatch = "application/merge-patch+json"

// post sends a multiply request's body with PATCH, not PUT: before a PUT
// or POST Vault asks the plugin whether the path's resource exists (a
// round trip of its own to the plugin process, with the whole request);
// before a PATCH it does not (docs/PROTOCOL.md, decision 25). Where Vault
// refuses the PATCH (403: a service policy from before PATCH, with
// "update" only; 405: a plugin from before PATCH), the client logs it once
// and sends PUT from then on, this request included: the same endpoint,
// audited the same way. A PUT refused as well changes nothing (a token
// without the policy, say): the next request tries PATCH again.
func (s *Shares) post(ctx context.Context, body []byte) (*api.Response, error) {
	if s.put.Load() {
		return s.client.Logical().WriteRawWithContext(ctx, s.path, body)
	}
	// The Vault client has no other method that sends a raw body with
	// PATCH and returns the raw answer: Logical().JSONMergePatch parses it
	// into maps, the cost that this client avoids.
	r := s.client.NewRequest(http.MethodPatch, "/v1/"+s.path)
	r.Headers.Set("Content-Type", mergePatch)
	r.BodyBytes = body
	//lint:ignore SA1019 the only raw PATCH of the Vault client (above)
	resp, err := s.client.RawRequestWithContext(ctx, r)
	refused := func(err error) (int, bool) {
		var re *api.ResponseError
		if errors.As(err, &re) && (re.StatusCode == http.StatusForbidden || re.StatusCode == http.StatusMethodNotAllowed) {
			return re.StatusCode, true
		}
		return 0, false
	}
	status, ok := refused(err)
	if !ok {
		return resp, err
	}
	if resp != nil {
		resp.Body.Close()
	}
	resp, err = s.client.Logical().WriteRawWithContext(ctx, s.path, body)
	if _, again := refused(err); !again && s.put.CompareAndSwap(false, true) {
		s.log.Warn("vault: Vault refused PATCH on the key-share plugin's multiply but took PUT: sending PUT from now on, which costs Vault a further round trip to the plugin; upgrade the plugin and the service policy (docs/split-keys.md)",
			"path", s.path, "status", status)
	}
	return resp, err
}

// errAnswer is an answer of the plugin that does not have the expected
// shape: not worth trying again.
var errAnswer = errors.New("unexpected answer")

// errTooLarge is an answer body longer than the client reads.
var errTooLarge = fmt.Errorf("%w: answer too large", errAnswer)

// boundedBodies is a transport whose answers' bodies end in errTooLarge
// past max bytes.
type boundedBodies struct {
	next http.RoundTripper // http.DefaultTransport when nil
	max  int64
}

func (t *boundedBodies) RoundTrip(r *http.Request) (*http.Response, error) {
	next := t.next
	if next == nil {
		next = http.DefaultTransport
	}
	resp, err := next.RoundTrip(r)
	if resp != nil && resp.Body != nil {
		resp.Body = &boundedBody{ReadCloser: resp.Body, left: t.max}
	}
	return resp, err
}

type boundedBody struct {
	io.ReadCloser
	left int64
}

func (b *boundedBody) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if b.left <= 0 {
		var one [1]byte
		n, err := b.ReadCloser.Read(one[:])
		if n > 0 {
			return 0, errTooLarge
		}
		return 0, err
	}
	p = p[:min(int64(len(p)), b.left)]
	n, err := b.ReadCloser.Read(p)
	b.left -= int64(n)
	return n, err
}

var opNames = map[keys.ShareOp]string{
	keys.SharePseudonymize: wire.OpPseudonymize,
	keys.ShareIdentify:     wire.OpIdentify,
	keys.ShareConvert:      wire.OpConvert,
}

// maxAnswer bounds an answer of Vault that the client reads: the points
// in base64 with room for Vault's envelope and per-item errors.
func maxAnswer(points int) int64 { return int64(points)*(pointSize*4/3+64) + 64<<10 }

// roundTrip sends one request to the plugin. It writes and reads the JSON
// itself (typed, the points as one base64 string per group) rather than
// through the Vault client's maps (Logical().Write and ParseSecret), which
// cost the service more CPU than the rest of the hop; the request still
// goes through a Vault client: the parent's address and transport, and
// the Vault client's errors.
func (s *Shares) roundTrip(ctx context.Context, batch []*part) error {
	groups := make([]wire.Group, len(batch))
	n := 0
	for i, p := range batch {
		groups[i] = wire.Group{
			Op: opNames[p.op], Domain: p.from.Domain, Generation: p.from.Generation,
			Points: base64.StdEncoding.EncodeToString(p.in),
		}
		if p.op == keys.ShareConvert {
			groups[i].ToDomain, groups[i].ToGeneration = p.to.Domain, p.to.Generation
		}
		n += p.n()
	}
	body, err := json.Marshal(wire.Request{Groups: groups})
	if err != nil {
		return fmt.Errorf("%w: %v", errAnswer, err)
	}
	if t := s.parent.Token(); t != s.client.Token() {
		s.client.SetToken(t)
	}
	s.roundTrips.Add(1)
	s.items.Add(uint64(n))
	resp, err := s.post(ctx, body)
	if resp != nil {
		defer resp.Body.Close()
	}
	if err != nil {
		return err
	}
	var answer struct {
		Data *struct {
			Results []wire.Result `json:"results"`
		} `json:"data"`
	}
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return err // the connection failed (worth trying again), or errTooLarge
	}
	if err := json.Unmarshal(raw, &answer); err != nil || answer.Data == nil {
		return fmt.Errorf("%w: no data", errAnswer)
	}
	rs := answer.Data.Results
	if len(rs) != len(batch) {
		return fmt.Errorf("%w: results do not match the groups", errAnswer)
	}
	// Check every result before completing any part, so that a bad answer
	// fails the batch as a whole.
	outs := make([][]byte, len(batch))
	for i, r := range rs {
		if r.Error != "" {
			continue
		}
		b, err := base64.StdEncoding.DecodeString(r.Points)
		if err != nil || len(b) != len(batch[i].in) {
			return fmt.Errorf("%w: group %d: points do not match", errAnswer, i)
		}
		for _, e := range r.Errors {
			if e.Index < 0 || e.Index >= batch[i].n() {
				return fmt.Errorf("%w: group %d: item index out of range", errAnswer, i)
			}
		}
		outs[i] = b
	}
	for i, p := range batch {
		r := rs[i]
		if r.Error != "" {
			// unknown_domain or unknown_generation: the plugin does not (or no
			// longer) have this share; the store reports the domain, and a
			// retry after the service reads its new share succeeds.
			err := fmt.Errorf("%w: vault: key-share plugin: domain %q generation %d: %s", keys.ErrUnavailable, p.from.Domain, p.from.Generation, r.Error)
			p.errs = make([]error, p.n())
			for j := range p.errs {
				p.errs[j] = err
			}
		} else {
			p.out = outs[i]
			for _, e := range r.Errors {
				if p.errs == nil {
					p.errs = make([]error, p.n())
				}
				p.errs[e.Index] = fmt.Errorf("%w: vault: key-share plugin refused a point (%s)", keys.ErrInvalid, e.Error)
			}
		}
		close(p.done)
	}
	return nil
}
