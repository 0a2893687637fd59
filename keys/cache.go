package keys

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultPollInterval is how often a [Cache] checks its source for changes
// when CacheOptions.Interval is zero.
const DefaultPollInterval = 10 * time.Second

// CacheOptions configures a [Cache]. The zero value is usable.
type CacheOptions struct {
	// Interval between two polls of the source; DefaultPollInterval when
	// zero.
	Interval time.Duration
	// Timeout of one poll (and of the initial load); 10 s or Interval,
	// whichever is larger, when zero.
	Timeout time.Duration
	// Domains, when not empty, are the only domains loaded, and the source
	// is not asked to list domains: owners, whose policy grants their own
	// domains only, set it.
	Domains []string
	// Logger receives one record per failed poll, one when the source is
	// back, and one (Info) per domain added, changed or removed (name,
	// generation, active kid: never key material); slog.Default() when nil.
	Logger *slog.Logger
	// RefreshGap is the least time between two reads of one domain by
	// Refresh (one second when zero), so that a flood of unknown kids
	// cannot hammer the source.
	RefreshGap time.Duration
	// OnChange, when set, is called after each poll (from the polling
	// goroutine) or Refresh (from its caller) that changed the snapshot,
	// with the names of the domains that were added, changed or removed. It must not block for long, nor call
	// Close.
	OnChange func(changed []string)
	// OnPoll, when set, is called after each background poll, from the
	// polling goroutine, with its outcome (nil, or the error Health then
	// reports). Monitoring and tests use it to know that a poll happened.
	// It must not block for long, nor call Close.
	OnPoll func(err error)
}

// Cache serves domains from an in-memory snapshot of a [Source], and polls
// the source for changes in the background. Domain does no I/O: it is meant
// for the hot path.
//
// When the source becomes unreachable, the cache keeps serving its last
// snapshot, [Cache.Health] reports the problem, one record per poll interval
// is logged, and it recovers by itself when the source is back.
type Cache struct {
	src  Source
	opts CacheOptions
	log  *slog.Logger

	snap   atomic.Pointer[snapshot]
	health atomic.Pointer[healthState]
	// lastGood is when the source last confirmed each served domain's
	// version (see LastGood); replaced, never modified, under writeMu.
	lastGood atomic.Pointer[map[string]time.Time]

	// writeMu serializes the writers of snap: the polling loop and Refresh.
	// It is a channel so that Refresh can stop waiting when its context
	// ends (a poll may hold it for as long as the store takes to answer).
	writeMu chan struct{}
	// lastRefresh is when Refresh last read each domain (under writeMu).
	lastRefresh map[string]time.Time

	stop      chan struct{}
	done      chan struct{}
	closeOnce sync.Once
}

// snapshot is immutable once published.
type snapshot struct {
	domains    map[string]*Domain
	names      []string
	generation uint64
	// owners is the union of the domains' Policy.Owners; anyOwner is set
	// when one of them lists "*" (every principal is then an owner).
	owners   map[string]bool
	anyOwner bool
	// refused are the versions refused by the last poll, whose owners
	// count (a Refresh carries them over).
	refused []*Domain
}

// newSnapshot makes a snapshot of domains. The owners of refused domains
// (read, but refused for an invariant across domains) count as owners too:
// refusing an owner's domain must not let it identify elsewhere.
func newSnapshot(domains map[string]*Domain, generation uint64, refused ...*Domain) *snapshot {
	s := &snapshot{
		domains:    domains,
		names:      slices.Sorted(maps.Keys(domains)),
		generation: generation,
		owners:     map[string]bool{},
		refused:    refused,
	}
	for _, d := range slices.Concat(slices.Collect(maps.Values(domains)), refused) {
		for _, o := range d.Policy.Owners {
			if o == "*" {
				s.anyOwner = true
			}
			s.owners[o] = true
		}
	}
	return s
}

func (c *Cache) lock(ctx context.Context) error {
	select {
	case c.writeMu <- struct{}{}:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%w: %w", ErrUnavailable, ctx.Err())
	}
}

func (c *Cache) unlock() { <-c.writeMu }

type healthState struct{ err error }

// NewCache loads every domain of src (or opts.Domains) and starts polling.
// It fails if the source cannot be read; the error then wraps
// [ErrUnavailable] (or [ErrDenied] when the store refuses access). A domain
// that fails validation is skipped, logged and reported by Health. opts may
// be nil. ctx bounds the initial load only; polling goes on until Close.
func NewCache(ctx context.Context, src Source, opts *CacheOptions) (*Cache, error) {
	c := &Cache{src: src, stop: make(chan struct{}), done: make(chan struct{}), lastRefresh: map[string]time.Time{}, writeMu: make(chan struct{}, 1)}
	if opts != nil {
		c.opts = *opts
		c.opts.Domains = slices.Clone(opts.Domains)
	}
	if c.opts.Interval <= 0 {
		c.opts.Interval = DefaultPollInterval
	}
	if c.opts.Timeout <= 0 {
		c.opts.Timeout = max(c.opts.Interval, 10*time.Second)
	}
	if c.opts.RefreshGap <= 0 {
		c.opts.RefreshGap = time.Second
	}
	c.log = c.opts.Logger
	if c.log == nil {
		c.log = slog.Default()
	}
	c.snap.Store(newSnapshot(map[string]*Domain{}, 0))
	c.lastGood.Store(&map[string]time.Time{})

	lctx, cancel := context.WithTimeout(ctx, c.opts.Timeout)
	defer cancel()
	_, err := c.poll(lctx)
	if err != nil && !errors.Is(err, ErrInvalid) {
		if !errors.Is(err, ErrUnavailable) && !errors.Is(err, ErrDenied) && !errors.Is(err, ErrUnknownDomain) {
			err = fmt.Errorf("%w: %w", ErrUnavailable, err)
		}
		return nil, fmt.Errorf("keys: loading the domains: %w", err)
	}
	if err != nil {
		c.log.Error("keys: some domains are invalid and not served", "err", err)
	}
	c.health.Store(&healthState{err: err})
	go c.run()
	return c, nil
}

// Domain returns the current snapshot of a domain. It does no I/O. The error
// wraps [ErrUnknownDomain].
func (c *Cache) Domain(name string) (*Domain, error) {
	if d, ok := c.snap.Load().domains[name]; ok {
		return d, nil
	}
	return nil, fmt.Errorf("%w: %q", ErrUnknownDomain, name)
}

// Domains returns the names of the domains in the snapshot, sorted.
func (c *Cache) Domains() []string { return slices.Clone(c.snap.Load().names) }

// IsOwner reports whether principal is an owner (Policy.Owners) of any
// domain of the snapshot, or whether some domain lists "*" as owner. It
// does no I/O.
func (c *Cache) IsOwner(principal string) bool {
	s := c.snap.Load()
	return s.anyOwner || s.owners[principal]
}

// LastGood returns when the key store last confirmed that the version of
// domain name the cache serves is the store's current one: the end of the
// last poll (or Refresh) that read the domain's version or content without
// error and kept what it read. It is the zero time for a domain that is not
// served. It stops advancing while the store cannot be read (the whole
// poll fails) and while the domain's newest version is refused (invalid,
// or breaking an invariant across domains, so that an older version is
// served): time.Since(LastGood(name)) is how stale the domain's keys may
// be. Monitoring exports it (pseudonymizer_keys_last_good_read_age_seconds).
func (c *Cache) LastGood(name string) time.Time { return (*c.lastGood.Load())[name] }

// markGood records that the source confirmed the served version of each of
// good at now, and forgets the domains that are no longer served. Under
// writeMu.
func (c *Cache) markGood(served map[string]*Domain, good []string, now time.Time) {
	old := *c.lastGood.Load()
	next := make(map[string]time.Time, len(served))
	for name := range served {
		if t, ok := old[name]; ok {
			next[name] = t
		}
	}
	for _, name := range good {
		if _, ok := served[name]; ok {
			next[name] = now
		}
	}
	c.lastGood.Store(&next)
}

// logChanges writes one record per domain that was added, changed or
// removed between two snapshots: its name, generation and active transit
// key id and, for a split domain, its mode and the generation of the share
// k₁ now used (an operator sees when a split or a refresh of the shares is
// taken), never key material.
func (c *Cache) logChanges(old, next map[string]*Domain, changed []string) {
	for _, name := range changed {
		d, ok := next[name]
		if !ok {
			c.log.Info("keys: domain removed", "domain", name)
			continue
		}
		msg := "keys: domain changed"
		if _, was := old[name]; !was {
			msg = "keys: domain added"
		}
		attrs := []any{"domain", name, "generation", d.Generation, "active_kid", d.Transit.Active}
		if d.Mode == ModeSplit {
			attrs = append(attrs, "mode", d.Mode.String(), "share_generation", d.ShareGeneration)
		}
		c.log.Info(msg, attrs...)
	}
}

// Generation changes (increases) every time the snapshot changes.
func (c *Cache) Generation() uint64 { return c.snap.Load().generation }

// Health returns nil when the last poll succeeded. Otherwise the cache is
// degraded: it still serves its last snapshot, and the error wraps
// [ErrUnavailable] (the source could not be read, its listing does not
// parse, or it suddenly lists no domain at all), [ErrDenied], or
// [ErrInvalid] (some domain in the source is invalid and not served).
func (c *Cache) Health() error { return c.health.Load().err }

// Refresh re-reads one domain from the source now, out of the polling
// schedule, and returns the newest snapshot of it. The service calls it
// when it meets a transit key id it does not know: an owner may have seen
// a rotation before the next poll. Reads of one domain are at least
// RefreshGap apart; a call within the gap returns the current snapshot.
// Unlike Domain, Refresh does I/O: keep it off the common path.
func (c *Cache) Refresh(ctx context.Context, name string) (*Domain, error) {
	if err := c.lock(ctx); err != nil {
		return nil, err
	}
	defer c.unlock()
	old := c.snap.Load()
	now := time.Now()
	if now.Sub(c.lastRefresh[name]) < c.opts.RefreshGap {
		return c.Domain(name)
	}
	if len(c.lastRefresh) > 4096 { // bound the table: names come from callers
		clear(c.lastRefresh)
	}
	if _, known := old.domains[name]; !known && len(c.opts.Domains) > 0 && !slices.Contains(c.opts.Domains, name) {
		return c.Domain(name)
	}
	c.lastRefresh[name] = now
	rctx, cancel := context.WithTimeout(ctx, c.opts.Timeout)
	defer cancel()
	d, err := c.src.Domain(rctx, name)
	if err != nil {
		if errors.Is(err, ErrUnknownDomain) {
			return c.Domain(name)
		}
		return nil, err
	}
	if d.Name != name {
		return nil, fmt.Errorf("%w: source returned domain %q for %q", ErrInvalid, d.Name, name)
	}
	if cur, ok := old.domains[name]; ok && cur.Generation == d.Generation {
		c.markGood(old.domains, []string{name}, time.Now())
		return cur, nil
	}
	next := maps.Clone(old.domains)
	next[name] = d
	if errs, _ := c.keepConsistent(old, next); len(errs) > 0 {
		c.log.Error("keys: a domain breaks an invariant across domains and is not taken", "err", errors.Join(errs...))
		if next[name] != d {
			return c.Domain(name)
		}
	}
	c.snap.Store(newSnapshot(next, old.generation+1, old.refused...))
	c.markGood(next, []string{name}, time.Now())
	c.logChanges(old.domains, next, []string{name})
	if c.opts.OnChange != nil {
		c.opts.OnChange([]string{name})
	}
	return d, nil
}

// keepConsistent enforces the invariants that span domains (ValidateSet:
// unique audiences, no owner allowed to identify) on the next snapshot:
// a domain new or changed in it that breaks one is refused (its last good
// version is kept, or it is left out), and the errors are returned for
// Health. Domains that were already served and did not change are kept
// even if they offend (the service's authorizer refuses owners anyway):
// faults degrade, they never wipe.
func (c *Cache) keepConsistent(old *snapshot, next map[string]*Domain) (errs []error, refused []*Domain) {
	for range 2 {
		bad := ValidateSet(slices.Collect(maps.Values(next)))
		if len(bad) == 0 {
			break
		}
		reverted := false
		for _, name := range slices.Sorted(maps.Keys(bad)) {
			d, served := old.domains[name]
			refused = append(refused, next[name])
			switch {
			case !served:
				delete(next, name)
				reverted = true
			case d != next[name]:
				next[name] = d
				reverted = true
			default:
				continue
			}
			errs = append(errs, bad[name])
		}
		if !reverted {
			for _, name := range slices.Sorted(maps.Keys(bad)) {
				errs = append(errs, bad[name])
			}
			break
		}
	}
	return errs, refused
}

// Close stops polling. The cache keeps serving its last snapshot.
func (c *Cache) Close() error {
	c.closeOnce.Do(func() { close(c.stop) })
	<-c.done
	return nil
}

func (c *Cache) run() {
	defer close(c.done)
	t := time.NewTicker(c.opts.Interval)
	defer t.Stop()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		defer func() { _ = recover() }() // nothing here panics; no goroutine of ours may end the process
		select {
		case <-c.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	for {
		select {
		case <-c.stop:
			return
		case <-t.C:
		}
		pctx, pcancel := context.WithTimeout(ctx, c.opts.Timeout)
		changed, err := c.poll(pctx)
		pcancel()
		if ctx.Err() != nil {
			return
		}
		prev := c.health.Swap(&healthState{err: err})
		switch {
		case err != nil:
			c.log.Warn("keys: key store poll failed, serving the last snapshot", "err", err, "domains", len(c.snap.Load().names))
		case prev.err != nil:
			c.log.Info("keys: key store poll succeeded again")
		}
		if len(changed) > 0 && c.opts.OnChange != nil {
			c.opts.OnChange(changed)
		}
		if c.opts.OnPoll != nil {
			c.opts.OnPoll(err)
		}
	}
}

// poll brings the snapshot up to date. On an error that makes the source
// unusable (unreachable, access denied, a listing that does not parse) it
// stops and changes nothing; a domain that is invalid is kept as it was (or
// left out) and reported in the returned error, and the other domains are
// updated.
//
// Faults degrade, they never wipe: a source that suddenly lists no domain
// while the snapshot has some (a Vault restored empty, a key file
// truncated) is a fault, not a removal: the snapshot is kept and the error
// wraps ErrUnavailable. A domain is only dropped when a listing that still
// has other domains no longer names it (an administrator removed it).
func (c *Cache) poll(ctx context.Context) (changed []string, err error) {
	if err := c.lock(ctx); err != nil {
		return nil, err
	}
	defer c.unlock()
	old := c.snap.Load()
	names := c.opts.Domains
	if len(names) == 0 {
		if names, err = c.src.Domains(ctx); err != nil {
			if !errors.Is(err, ErrUnavailable) && !errors.Is(err, ErrDenied) {
				err = fmt.Errorf("%w: listing the domains: %w", ErrUnavailable, err)
			}
			return nil, err
		}
		if len(names) == 0 && len(old.domains) > 0 {
			return nil, fmt.Errorf("%w: the key store lists no domain while %d are served: keeping them", ErrUnavailable, len(old.domains))
		}
	}
	// A domain that disappears from the listing was removed; one that the
	// options name must exist.
	missingOK := len(c.opts.Domains) == 0
	next := make(map[string]*Domain, len(names))
	var invalid []error
	// read are the domains whose version or content was read without
	// error: their served version is confirmed unless refused below.
	read := make(map[string]*Domain, len(names))
	for _, name := range names {
		d, ok := old.domains[name]
		if ok {
			v, err := c.src.Version(ctx, name)
			switch {
			case errors.Is(err, ErrUnknownDomain):
				// Still listed, but unreadable (a half-deleted or
				// soft-deleted entry): a fault, not a removal.
				invalid = append(invalid, fmt.Errorf("%w: domain %q is listed but cannot be read: keeping it", ErrUnavailable, name))
				next[name] = d
				continue
			case errors.Is(err, ErrInvalid):
				invalid = append(invalid, err)
				next[name] = d
				continue
			case err != nil:
				return nil, err
			case v == d.Generation:
				next[name] = d
				read[name] = d
				continue
			}
		}
		nd, err := c.src.Domain(ctx, name)
		switch {
		case errors.Is(err, ErrUnknownDomain) && ok:
			invalid = append(invalid, fmt.Errorf("%w: domain %q is listed but cannot be read: keeping it", ErrUnavailable, name))
			next[name] = d
			continue
		case errors.Is(err, ErrUnknownDomain) && missingOK:
			continue // being created
		case errors.Is(err, ErrInvalid):
			invalid = append(invalid, err)
			if ok {
				next[name] = d
			}
			continue
		case err != nil:
			return nil, err
		}
		if nd.Name != name {
			invalid = append(invalid, fmt.Errorf("%w: source returned domain %q for %q", ErrInvalid, nd.Name, name))
			continue
		}
		next[name] = nd
		read[name] = nd
	}
	setErrs, refused := c.keepConsistent(old, next)
	invalid = append(invalid, setErrs...)
	for name, nd := range next {
		if d, ok := old.domains[name]; !ok || d != nd {
			changed = append(changed, name)
		}
	}
	for name := range old.domains {
		if _, ok := next[name]; !ok {
			changed = append(changed, name)
		}
	}
	ns := newSnapshot(next, old.generation+1, refused...)
	if len(changed) > 0 || !maps.Equal(ns.owners, old.owners) || ns.anyOwner != old.anyOwner {
		slices.Sort(changed)
		c.snap.Store(ns)
		c.logChanges(old.domains, next, changed)
	}
	var good []string
	for name, d := range read {
		if next[name] == d {
			good = append(good, name)
		}
	}
	c.markGood(next, good, time.Now())
	return changed, errors.Join(invalid...)
}
