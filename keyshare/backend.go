package keyshare

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gtank/ristretto255"
	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/ehealth-pseudo/pseudonymizer/internal/point"
	"github.com/ehealth-pseudo/pseudonymizer/keys"
	"github.com/ehealth-pseudo/pseudonymizer/keyshare/wire"
)

// Name is the name the plugin is registered under in Vault's catalog, and
// the binary's name in the plugin directory.
const Name = "pseudonymizer-vault-plugin"

// DefaultMount is where the engine is mounted when nothing else is said.
const DefaultMount = "pseudonymizer-shares"

// Paths of the engine, relative to its mount.
const (
	PathMultiply = "multiply"
	PathDomains  = "domains/"
	PathConfig   = "config"
)

// DefaultMaxBatch is the most points one multiply request may hold, when
// the configuration sets none: the service's default maximum batch.
const DefaultMaxBatch = 1000

// DefaultPreviousGrace is how long after its last use a refresh keeps
// refusing to drop the previous generation, when the configuration sets
// none.
const DefaultPreviousGrace = 5 * time.Minute

// Origins of a domain's shares, as its metadata reports them.
const (
	OriginCreated = "created" // created split: k never existed
	OriginSplit   = "split"   // a single-mode domain's k was split
)

// Operations of a multiply group (package wire).
const (
	OpPseudonymize = wire.OpPseudonymize
	OpIdentify     = wire.OpIdentify
	OpConvert      = wire.OpConvert
)

// Errors of multiply groups and items, as the response names them.
const (
	ErrorInvalidPoint      = "invalid_point"
	ErrorUnknownDomain     = "unknown_domain"
	ErrorUnknownGeneration = "unknown_generation"
	ErrorInternal          = "internal"
)

// share is one generation of a domain's second share, as stored.
type share struct {
	Generation uint64 `json:"generation"`
	K2         []byte `json:"k2"`
}

// entry is what the plugin stores for a domain, at "domains/<name>" in its
// Vault storage (encrypted by the barrier).
type entry struct {
	Current  share  `json:"current"`
	Previous *share `json:"previous,omitempty"`
	Origin   string `json:"origin"`
	// SplitCheck is SHA-256 of the k that was split, kept until the first
	// refresh so that the same split can be asked again.
	SplitCheck []byte    `json:"split_check,omitempty"`
	Created    time.Time `json:"created"`
	Refreshed  time.Time `json:"refreshed,omitzero"`
}

// genKey is one generation of k₂ ready to use.
type genKey struct {
	gen      uint64
	k2, k2in *ristretto255.Scalar
}

// loaded is a domain's shares ready to use, cached in memory.
type loaded struct {
	name string
	meta entry // without key bytes
	cur  genKey
	prev *genKey
	// prevUsed is when the previous generation was last used (Unix
	// nanoseconds), or when the shares were loaded.
	prevUsed atomic.Int64
}

type settings struct {
	MaxBatch      int           `json:"max_batch"`
	PreviousGrace time.Duration `json:"previous_grace"`
}

type backend struct {
	*framework.Backend

	// mu serializes the changes of storage and the loads of the cache, so
	// that a load never puts back a state older than a change.
	mu    sync.Mutex
	cache sync.Map // domain name → *loaded
	cfg   atomic.Pointer[settings]
	now   func() time.Time
}

// Factory makes the backend; cmd/pseudonymizer-vault-plugin serves it.
func Factory(ctx context.Context, conf *logical.BackendConfig) (logical.Backend, error) {
	b := newBackend()
	if err := b.Setup(ctx, conf); err != nil {
		return nil, err
	}
	return b, nil
}

func newBackend() *backend {
	b := &backend{now: time.Now}
	name := `(?P<name>[a-z0-9][a-z0-9_.-]{0,63})`
	b.Backend = &framework.Backend{
		Help:        "Holds the second share k₂ of split pseudonymization domain keys and multiplies points by it. No endpoint returns k₂.",
		BackendType: logical.TypeLogical,
		Invalidate:  b.invalidate,
		Paths: []*framework.Path{
			{
				Pattern: PathMultiply + "$",
				Fields: map[string]*framework.FieldSchema{
					"groups": {Type: framework.TypeSlice, Description: "groups of points, each of one operation on one domain generation"},
				},
				// PATCH is the service's method: Vault asks the plugin
				// whether the resource exists before a PUT or POST, not
				// before a PATCH (docs/PROTOCOL.md, decision 25); PUT and
				// POST stay for `vault write`. Callbacks, not Operations:
				// for an operation of Operations the framework asks Vault
				// for its replication state, another round trip, on every
				// request; multiply neither writes nor needs forwarding.
				Callbacks: map[logical.Operation]framework.OperationFunc{
					logical.UpdateOperation: b.multiply,
					logical.PatchOperation:  b.multiply,
				},
				HelpSynopsis: "Multiply blinded points by k₂, k₂⁻¹ or k₂,B·k₂,A⁻¹.",
			},
			{
				Pattern: "domains/?$",
				Operations: map[logical.Operation]framework.OperationHandler{
					logical.ListOperation: &framework.PathOperation{Callback: b.list},
				},
				HelpSynopsis: "List the split domains.",
			},
			{
				Pattern: "domains/" + name + "/split$",
				Fields: map[string]*framework.FieldSchema{
					"name": {Type: framework.TypeString},
					"k":    {Type: framework.TypeString, Description: "base64 of the domain's 32-byte scalar k"},
				},
				Operations: map[logical.Operation]framework.OperationHandler{
					logical.UpdateOperation: &framework.PathOperation{Callback: b.split},
				},
				HelpSynopsis: "Split k: draw k₂, return k₁ = k·k₂⁻¹.",
			},
			{
				Pattern: "domains/" + name + "/refresh$",
				Fields: map[string]*framework.FieldSchema{
					"name":       {Type: framework.TypeString},
					"generation": {Type: framework.TypeInt64, Description: "the generation of the administrator's k₁"},
					"force":      {Type: framework.TypeBool, Description: "drop the previous generation even if it was used recently"},
				},
				Operations: map[logical.Operation]framework.OperationHandler{
					logical.UpdateOperation: &framework.PathOperation{Callback: b.refresh},
				},
				HelpSynopsis: "Replace k₂ by k₂·r⁻¹ under a new generation; return r.",
			},
			{
				Pattern: "domains/" + name + "$",
				Fields: map[string]*framework.FieldSchema{
					"name": {Type: framework.TypeString},
				},
				Operations: map[logical.Operation]framework.OperationHandler{
					logical.UpdateOperation: &framework.PathOperation{Callback: b.create},
					logical.ReadOperation:   &framework.PathOperation{Callback: b.read},
					logical.DeleteOperation: &framework.PathOperation{Callback: b.delete},
				},
				HelpSynopsis: "Create a split domain (k₂ drawn here), read its metadata, or destroy its shares.",
			},
			{
				Pattern: PathConfig + "$",
				Fields: map[string]*framework.FieldSchema{
					"max_batch":      {Type: framework.TypeInt, Description: "most points per multiply request"},
					"previous_grace": {Type: framework.TypeDurationSecond, Description: "how recently used a previous generation blocks a refresh"},
				},
				Operations: map[logical.Operation]framework.OperationHandler{
					logical.ReadOperation:   &framework.PathOperation{Callback: b.readConfig},
					logical.UpdateOperation: &framework.PathOperation{Callback: b.writeConfig},
				},
				HelpSynopsis: "Limits of the engine.",
			},
		},
	}
	return b
}

func (b *backend) invalidate(_ context.Context, key string) {
	switch {
	case strings.HasPrefix(key, PathDomains):
		b.cache.Delete(strings.TrimPrefix(key, PathDomains))
	case key == PathConfig:
		b.cfg.Store(nil)
	}
}

// errResponse is a 400 answer whose text names no secret.
func errResponse(format string, args ...any) (*logical.Response, error) {
	return logical.ErrorResponse(format, args...), logical.ErrInvalidRequest
}

func (b *backend) settings(ctx context.Context, s logical.Storage) (*settings, error) {
	if c := b.cfg.Load(); c != nil {
		return c, nil
	}
	c := &settings{MaxBatch: DefaultMaxBatch, PreviousGrace: DefaultPreviousGrace}
	se, err := s.Get(ctx, PathConfig)
	if err != nil {
		return nil, err
	}
	if se != nil {
		if err := se.DecodeJSON(c); err != nil {
			return nil, errors.New("keyshare: stored configuration does not decode")
		}
	}
	b.cfg.Store(c)
	return c, nil
}

func (b *backend) readConfig(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	c, err := b.settings(ctx, req.Storage)
	if err != nil {
		return nil, err
	}
	return &logical.Response{Data: map[string]any{
		"max_batch":      c.MaxBatch,
		"previous_grace": int64(c.PreviousGrace / time.Second),
	}}, nil
}

func (b *backend) writeConfig(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	old, err := b.settings(ctx, req.Storage)
	if err != nil {
		return nil, err
	}
	c := *old
	if v, ok := d.GetOk("max_batch"); ok {
		c.MaxBatch = v.(int)
	}
	if v, ok := d.GetOk("previous_grace"); ok {
		c.PreviousGrace = time.Duration(v.(int)) * time.Second
	}
	if c.MaxBatch < 1 || c.MaxBatch > 100000 {
		return errResponse("max_batch must be between 1 and 100000")
	}
	if c.PreviousGrace < 0 {
		return errResponse("previous_grace must not be negative")
	}
	se, err := logical.StorageEntryJSON(PathConfig, &c)
	if err != nil {
		return nil, err
	}
	if err := req.Storage.Put(ctx, se); err != nil {
		return nil, err
	}
	b.cfg.Store(&c)
	return nil, nil
}

// readEntry reads a domain's stored shares; nil when there are none.
func readEntry(ctx context.Context, s logical.Storage, name string) (*entry, error) {
	se, err := s.Get(ctx, PathDomains+name)
	if err != nil || se == nil {
		return nil, err
	}
	var e entry
	if err := json.Unmarshal(se.Value, &e); err != nil {
		// The error could quote stored bytes: do not include it.
		return nil, fmt.Errorf("keyshare: stored shares of domain %q do not decode", name)
	}
	return &e, nil
}

func writeEntry(ctx context.Context, s logical.Storage, name string, e *entry) error {
	v, err := json.Marshal(e)
	if err != nil {
		return errors.New("keyshare: encoding shares failed")
	}
	return s.Put(ctx, &logical.StorageEntry{Key: PathDomains + name, Value: v, SealWrap: true})
}

func prepare(name string, e *entry, now time.Time) (*loaded, error) {
	gk := func(s *share) (*genKey, error) {
		k2, err := point.DecodeScalar(s.K2)
		if err != nil {
			return nil, fmt.Errorf("keyshare: stored share of domain %q, generation %d, is not a valid scalar", name, s.Generation)
		}
		return &genKey{gen: s.Generation, k2: k2, k2in: ristretto255.NewScalar().Invert(k2)}, nil
	}
	cur, err := gk(&e.Current)
	if err != nil {
		return nil, err
	}
	l := &loaded{name: name, cur: *cur}
	if e.Previous != nil {
		if l.prev, err = gk(e.Previous); err != nil {
			return nil, err
		}
	}
	l.meta = *e
	l.meta.Current.K2, l.meta.Previous, l.meta.SplitCheck = nil, nil, nil
	if e.Previous != nil {
		l.meta.Previous = &share{Generation: e.Previous.Generation}
	}
	l.prevUsed.Store(now.UnixNano())
	return l, nil
}

// domain returns a domain's shares from the cache, loading them when
// absent; nil when the domain has none.
func (b *backend) domain(ctx context.Context, s logical.Storage, name string) (*loaded, error) {
	if v, ok := b.cache.Load(name); ok {
		return v.(*loaded), nil
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if v, ok := b.cache.Load(name); ok {
		return v.(*loaded), nil
	}
	e, err := readEntry(ctx, s, name)
	if err != nil || e == nil {
		return nil, err
	}
	l, err := prepare(name, e, b.now())
	if err != nil {
		return nil, err
	}
	b.cache.Store(name, l)
	return l, nil
}

// store writes a domain's shares and puts them in the cache. b.mu is held.
func (b *backend) store(ctx context.Context, s logical.Storage, name string, e *entry) (*loaded, error) {
	if err := writeEntry(ctx, s, name, e); err != nil {
		b.cache.Delete(name)
		return nil, err
	}
	l, err := prepare(name, e, b.now())
	if err != nil {
		b.cache.Delete(name)
		return nil, err
	}
	b.cache.Store(name, l)
	return l, nil
}

func domainName(d *framework.FieldData) (string, error) {
	name := d.Get("name").(string)
	if !keys.ValidName(name) {
		return "", fmt.Errorf("invalid domain name")
	}
	return name, nil
}

func (b *backend) list(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	names, err := req.Storage.List(ctx, PathDomains)
	if err != nil {
		return nil, err
	}
	return logical.ListResponse(names), nil
}

func (b *backend) create(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	name, err := domainName(d)
	if err != nil {
		return errResponse("%v", err)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	old, err := readEntry(ctx, req.Storage, name)
	if err != nil {
		return nil, err
	}
	if old != nil {
		return errResponse("domain %q already has shares", name)
	}
	k2, err := point.RandomScalar(nil)
	if err != nil {
		return nil, err
	}
	e := &entry{Current: share{Generation: 1, K2: k2.Bytes()}, Origin: OriginCreated, Created: b.now().UTC()}
	l, err := b.store(ctx, req.Storage, name, e)
	if err != nil {
		return nil, err
	}
	return &logical.Response{Data: metadata(l)}, nil
}

// metadata is what read returns: never k₂.
func metadata(l *loaded) map[string]any {
	m := map[string]any{
		"domain":              l.name,
		"generation":          l.cur.gen,
		"previous_generation": uint64(0),
		"previous_last_used":  "",
		"origin":              l.meta.Origin,
		"created":             l.meta.Created.Format(time.RFC3339),
		"refreshed":           "",
	}
	if l.prev != nil {
		m["previous_generation"] = l.prev.gen
		m["previous_last_used"] = time.Unix(0, l.prevUsed.Load()).UTC().Format(time.RFC3339Nano)
	}
	if !l.meta.Refreshed.IsZero() {
		m["refreshed"] = l.meta.Refreshed.Format(time.RFC3339)
	}
	return m
}

func (b *backend) read(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	name, err := domainName(d)
	if err != nil {
		return errResponse("%v", err)
	}
	l, err := b.domain(ctx, req.Storage, name)
	if err != nil || l == nil {
		return nil, err
	}
	return &logical.Response{Data: metadata(l)}, nil
}

func (b *backend) delete(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	name, err := domainName(d)
	if err != nil {
		return errResponse("%v", err)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.cache.Delete(name)
	return nil, req.Storage.Delete(ctx, PathDomains+name)
}

func splitCheck(k []byte) []byte {
	h := sha256.New()
	h.Write([]byte("pseudonymizer keyshare split check\x00"))
	h.Write(k)
	return h.Sum(nil)
}

func (b *backend) split(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	name, err := domainName(d)
	if err != nil {
		return errResponse("%v", err)
	}
	raw, err := decodeBase64(d.Get("k").(string))
	if err != nil {
		return errResponse("k is not base64")
	}
	k, err := point.DecodeScalar(raw)
	if err != nil {
		return errResponse("k is not a canonical non-zero scalar")
	}
	check := splitCheck(raw)
	clear(raw)
	b.mu.Lock()
	defer b.mu.Unlock()
	old, err := readEntry(ctx, req.Storage, name)
	if err != nil {
		return nil, err
	}
	var l *loaded
	if old != nil {
		// The same split again (an interrupted migration): only with the
		// same k, and only before the first refresh, else this would be an
		// oracle for k₂⁻¹.
		if old.Origin != OriginSplit || old.Previous != nil || old.Current.Generation != 1 ||
			subtle.ConstantTimeCompare(old.SplitCheck, check) != 1 {
			return errResponse("domain %q already has shares", name)
		}
		if l, err = prepare(name, old, b.now()); err != nil {
			return nil, err
		}
	} else {
		k2, err := point.RandomScalar(nil)
		if err != nil {
			return nil, err
		}
		e := &entry{Current: share{Generation: 1, K2: k2.Bytes()}, Origin: OriginSplit, SplitCheck: check, Created: b.now().UTC()}
		if l, err = b.store(ctx, req.Storage, name, e); err != nil {
			return nil, err
		}
	}
	k1 := ristretto255.NewScalar().Multiply(k, l.cur.k2in)
	k.Zero()
	return &logical.Response{Data: map[string]any{
		"k1":         encodeBase64(k1.Bytes()),
		"generation": l.cur.gen,
	}}, nil
}

func (b *backend) refresh(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	name, err := domainName(d)
	if err != nil {
		return errResponse("%v", err)
	}
	gen := uint64(d.Get("generation").(int64))
	force := d.Get("force").(bool)
	c, err := b.settings(ctx, req.Storage)
	if err != nil {
		return nil, err
	}
	l, err := b.domain(ctx, req.Storage, name)
	if err != nil {
		return nil, err
	}
	if l == nil {
		return errResponse("domain %q has no shares", name)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if v, ok := b.cache.Load(name); ok {
		l = v.(*loaded)
	}
	switch {
	case l.prev != nil && gen == l.prev.gen:
		// Asked again: the same r, k₂,g·k₂,g+1⁻¹.
		r := ristretto255.NewScalar().Multiply(l.prev.k2, l.cur.k2in)
		return &logical.Response{Data: map[string]any{"r": encodeBase64(r.Bytes()), "generation": l.cur.gen}}, nil
	case gen != l.cur.gen:
		return errResponse("domain %q: generation %d is neither the current nor the previous one", name, gen)
	}
	if l.prev != nil && !force {
		if used := time.Unix(0, l.prevUsed.Load()); b.now().Sub(used) < c.PreviousGrace {
			return errResponse("domain %q: previous generation %d was used %s ago (less than %s): replicas may still hold its k₁; wait, or force",
				name, l.prev.gen, b.now().Sub(used).Round(time.Second), c.PreviousGrace)
		}
	}
	e, err := readEntry(ctx, req.Storage, name)
	if err != nil {
		return nil, err
	}
	if e == nil || e.Current.Generation != gen {
		return errResponse("domain %q changed meanwhile", name)
	}
	r, err := point.RandomScalar(nil)
	if err != nil {
		return nil, err
	}
	k2 := ristretto255.NewScalar().Multiply(l.cur.k2, ristretto255.NewScalar().Invert(r))
	prev := e.Current
	e.Previous = &prev
	e.Current = share{Generation: gen + 1, K2: k2.Bytes()}
	e.SplitCheck = nil
	e.Refreshed = b.now().UTC()
	if _, err := b.store(ctx, req.Storage, name, e); err != nil {
		return nil, err
	}
	return &logical.Response{Data: map[string]any{"r": encodeBase64(r.Bytes()), "generation": gen + 1}}, nil
}
