package vault

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"net/http"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/ehealth-pseudo/pseudonymizer/keys"
)

// now is the clock of rotations; tests replace it.
var now = time.Now

// DefaultMount is the path of the KV v2 secrets engine when none is given.
const DefaultMount = "pseudonymizer"

// Mode says what a [Store] reads.
type Mode int

const (
	// Service reads everything of a domain, scalar included.
	Service Mode = iota
	// Owner reads the meta and transit paths of a domain and never the
	// scalar path: domains are returned with an empty Scalar. Owners (whose
	// Vault policy grants no scalar) and administrators (pseudoctl) use it.
	Owner
)

// Store reads and writes domains in Vault. It implements keys.Source and
// keys.Admin, and is safe for concurrent use.
type Store struct {
	client *api.Client
	kv     *api.KVv2
	mount  string
	mode   Mode
	auth   *authenticator // nil when the caller manages the token
	// shares is where split domains' shares are (see shares.go).
	shares shareSource
}

var (
	_ keys.Source  = (*Store)(nil)
	_ keys.Admin   = (*Store)(nil)
	_ keys.Creator = (*Store)(nil)
)

// NewStore returns a store that uses client as it is (its token is neither
// renewed nor revoked) and the KV v2 engine mounted at mount (DefaultMount
// when empty). Use [Open] to log in and keep the token alive.
func NewStore(client *api.Client, mount string, mode Mode) *Store {
	mount = strings.Trim(mount, "/")
	if mount == "" {
		mount = DefaultMount
	}
	return &Store{client: client, kv: client.KVv2(mount), mount: mount, mode: mode,
		shares: shareSource{mount: DefaultSharesMount}}
}

// Client returns the Vault client the store uses.
func (s *Store) Client() *api.Client { return s.client }

// Close stops renewing the token and, if [Open] logged in with AppRole,
// revokes it. It does nothing for a store made by NewStore.
func (s *Store) Close() error {
	if s.auth != nil {
		s.auth.close()
	}
	return nil
}

func metaPath(d string) string     { return "domains/" + d + "/meta" }
func scalarPath(d string) string   { return "domains/" + d + "/scalar" }
func transitPath(d string) string  { return "domains/" + d + "/transit" }
func ownerPath(o, d string) string { return "owners/" + o + "/" + d + "/k2" }
func sharePath(d string) string    { return "domains/" + d + "/share" }

type metaJSON struct {
	Audience    string      `json:"audience"`
	TTL         string      `json:"ttl,omitempty"`
	MaxLifetime string      `json:"max_lifetime,omitempty"` // see keys.FormatMaxLifetime
	Active      string      `json:"active"`
	ActiveSince string      `json:"active_since,omitempty"` // see keys.FormatActiveSince
	Accepted    []string    `json:"accepted"`
	Policy      keys.Policy `json:"policy"`
	// Mode is "split" for a split domain, absent for single (see keys.Mode).
	Mode string `json:"mode,omitempty"`
	// Disabled is keys.Domain.Disabled.
	Disabled bool `json:"disabled,omitempty"`
}

// lifetimes decodes the ttl (keys.DefaultTTL when absent) and the max
// lifetime (unset when absent) of domain name.
func (m *metaJSON) lifetimes(name string) (ttl, maxLifetime time.Duration, err error) {
	ttl = keys.DefaultTTL
	if m.TTL != "" {
		if ttl, err = time.ParseDuration(m.TTL); err != nil {
			return 0, 0, fmt.Errorf("%w: domain %q: ttl %q is not a duration", keys.ErrInvalid, name, m.TTL)
		}
	}
	if maxLifetime, err = keys.ParseMaxLifetime(m.MaxLifetime); err != nil {
		return 0, 0, fmt.Errorf("domain %q: %w", name, err)
	}
	return ttl, maxLifetime, nil
}

type scalarJSON struct {
	K string `json:"k"`
}

type transitJSON struct {
	Keys map[string]string `json:"keys"`
}

type ownerJSON struct {
	K2 string `json:"k2"`
}

// version identifies one version of one path.
type version struct {
	n       int
	created time.Time
}

// generation hashes the versions of a domain's paths.
func generation(vs ...version) uint64 {
	h := fnv.New64a()
	var b [16]byte
	for _, v := range vs {
		binary.BigEndian.PutUint64(b[:8], uint64(v.n))
		binary.BigEndian.PutUint64(b[8:], uint64(v.created.UnixNano()))
		h.Write(b[:])
	}
	return h.Sum64()
}

// errNotFound marks a path that does not exist (or whose current version is
// deleted); callers translate it to the right keys error.
var errNotFound = errors.New("not found")

// wrap translates a Vault error to the keys errors. The result also wraps
// the Vault error (an *api.ResponseError for an HTTP error). Vault errors
// name paths and never carry secret values.
func wrap(err error, op, path string) error {
	var re *api.ResponseError
	switch {
	case errors.Is(err, api.ErrSecretNotFound):
		return fmt.Errorf("%w: vault: %s %s", errNotFound, op, path)
	case errors.As(err, &re) && re.StatusCode == http.StatusForbidden:
		return fmt.Errorf("%w: vault: %s %s: %w", keys.ErrDenied, op, path, err)
	case errors.As(err, &re) && re.StatusCode == http.StatusNotFound:
		return fmt.Errorf("%w: vault: %s %s", errNotFound, op, path)
	default:
		return fmt.Errorf("%w: vault: %s %s: %w", keys.ErrUnavailable, op, path, err)
	}
}

// get reads the current version of a path into v.
func (s *Store) get(ctx context.Context, path string, v any) (version, error) {
	sec, err := s.kv.Get(ctx, path)
	if err != nil {
		return version{}, wrap(err, "reading", s.mount+"/"+path)
	}
	if sec == nil || sec.Data == nil || sec.VersionMetadata == nil {
		return version{}, fmt.Errorf("%w: vault: reading %s/%s", errNotFound, s.mount, path)
	}
	b, err := json.Marshal(sec.Data)
	if err == nil {
		err = json.Unmarshal(b, v)
	}
	if err != nil {
		// The json error could quote a value: do not include it.
		return version{}, fmt.Errorf("%w: vault: %s/%s has an unexpected shape", keys.ErrInvalid, s.mount, path)
	}
	return version{n: sec.VersionMetadata.Version, created: sec.VersionMetadata.CreatedTime}, nil
}

// current returns the current version of a path from its metadata; n is 0
// when the path does not exist.
func (s *Store) current(ctx context.Context, path string) (version, error) {
	md, err := s.kv.GetMetadata(ctx, path)
	if err != nil {
		err = wrap(err, "reading metadata of", s.mount+"/"+path)
		if errors.Is(err, errNotFound) {
			return version{}, nil
		}
		return version{}, err
	}
	v := version{n: md.CurrentVersion}
	if vm, ok := md.Versions[fmt.Sprint(md.CurrentVersion)]; ok {
		if !vm.DeletionTime.IsZero() || vm.Destroyed {
			return version{}, nil
		}
		v.created = vm.CreatedTime
	}
	return v, nil
}

// put writes v to path if its current version is cas (0: if it does not
// exist). A failed check-and-set is reported as keys.ErrConflict.
func (s *Store) put(ctx context.Context, path string, v any, cas int) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("vault: encoding %s: %v", path, err)
	}
	var data map[string]any
	if err := json.Unmarshal(b, &data); err != nil {
		return fmt.Errorf("vault: encoding %s: %v", path, err)
	}
	_, err = s.kv.Put(ctx, path, data, api.WithCheckAndSet(cas))
	if err != nil {
		var re *api.ResponseError
		if errors.As(err, &re) && re.StatusCode == http.StatusBadRequest {
			// The only bad request we can make is a failed check-and-set.
			return fmt.Errorf("%w: vault: writing %s/%s: %w", keys.ErrConflict, s.mount, path, err)
		}
		return wrap(err, "writing", s.mount+"/"+path)
	}
	return nil
}

func unknownDomain(err error, name string) error {
	if errors.Is(err, errNotFound) {
		return fmt.Errorf("%w: %q", keys.ErrUnknownDomain, name)
	}
	return err
}

func decodeKey(s string, size int, what string) (keys.Secret, error) {
	b, err := base64.StdEncoding.Strict().DecodeString(s)
	if err != nil || len(b) != size {
		return nil, fmt.Errorf("%w: %s is not %d bytes of base64", keys.ErrInvalid, what, size)
	}
	return keys.Secret(b), nil
}

func encodeKey(k keys.Secret) string { return base64.StdEncoding.EncodeToString(k) }

// readMeta reads the meta path of a domain.
func (s *Store) readMeta(ctx context.Context, name string) (*metaJSON, version, error) {
	if !keys.ValidName(name) {
		return nil, version{}, fmt.Errorf("%w: %q", keys.ErrUnknownDomain, name)
	}
	var m metaJSON
	v, err := s.get(ctx, metaPath(name), &m)
	if err != nil {
		return nil, version{}, unknownDomain(err, name)
	}
	return &m, v, nil
}

// readTransit reads the transit path of a domain: every stored key, accepted
// or not.
func (s *Store) readTransit(ctx context.Context, name string) (map[string]keys.Secret, version, error) {
	var t transitJSON
	v, err := s.get(ctx, transitPath(name), &t)
	if err != nil {
		if errors.Is(err, errNotFound) {
			return nil, version{}, fmt.Errorf("%w: domain %q has no transit keys", keys.ErrInvalid, name)
		}
		return nil, version{}, err
	}
	ks := make(map[string]keys.Secret, len(t.Keys))
	for kid, k := range t.Keys {
		if !keys.ValidKid(kid) {
			return nil, version{}, fmt.Errorf("%w: domain %q: transit key id %q", keys.ErrInvalid, name, kid)
		}
		sk, err := decodeKey(k, keys.TransitKeySize, fmt.Sprintf("domain %q: transit key %q", name, kid))
		if err != nil {
			return nil, version{}, err
		}
		ks[kid] = sk
	}
	return ks, v, nil
}

// Domain implements keys.Source. In Owner mode the scalar path is not read
// and Scalar is empty.
func (s *Store) Domain(ctx context.Context, name string) (*keys.Domain, error) {
	m, mv, err := s.readMeta(ctx, name)
	if err != nil {
		return nil, err
	}
	stored, tv, err := s.readTransit(ctx, name)
	if err != nil {
		return nil, err
	}
	d := &keys.Domain{
		Name:     name,
		Audience: m.Audience,
		Transit:  keys.Transit{Active: m.Active, Keys: make(map[string]keys.Secret, len(m.Accepted))},
		Policy:   m.Policy,
		Disabled: m.Disabled,
	}
	if d.TTL, d.MaxLifetime, err = m.lifetimes(name); err != nil {
		return nil, err
	}
	if d.Transit.ActiveSince, err = keys.ParseActiveSince(m.ActiveSince); err != nil {
		return nil, fmt.Errorf("domain %q: %w", name, err)
	}
	if d.Mode, err = keys.ParseMode(m.Mode); err != nil {
		return nil, fmt.Errorf("domain %q: %w", name, err)
	}
	// meta is read before transit: a key retired in between is accepted in
	// meta and gone from transit. It is left out; the active key must be
	// there (a rotation writes transit before meta).
	for _, kid := range m.Accepted {
		if k, ok := stored[kid]; ok {
			d.Transit.Keys[kid] = k
		}
	}
	vs := []version{mv, tv}
	if s.mode == Service && d.Mode == keys.ModeSplit {
		sv, err := s.readSplit(ctx, d)
		if err != nil {
			return nil, err
		}
		vs = append(vs, sv)
	} else if s.mode == Service {
		var sc scalarJSON
		sv, err := s.get(ctx, scalarPath(name), &sc)
		if errors.Is(err, errNotFound) {
			return nil, fmt.Errorf("%w: domain %q has no scalar", keys.ErrInvalid, name)
		}
		if err != nil {
			return nil, err
		}
		if d.Scalar, err = decodeKey(sc.K, keys.ScalarSize, fmt.Sprintf("domain %q: scalar", name)); err != nil {
			return nil, err
		}
		vs = append(vs, sv)
	}
	if err := d.Validate(); err != nil {
		return nil, err
	}
	d.Generation = generation(vs...)
	return d, nil
}

// Version implements keys.Source: it reads the KV metadata of the domain's
// paths only.
func (s *Store) Version(ctx context.Context, name string) (uint64, error) {
	if !keys.ValidName(name) {
		return 0, fmt.Errorf("%w: %q", keys.ErrUnknownDomain, name)
	}
	paths := []string{metaPath(name), transitPath(name)}
	vs := make([]version, len(paths))
	for i, p := range paths {
		v, err := s.current(ctx, p)
		if err != nil {
			return 0, err
		}
		if v.n == 0 {
			if i == 0 {
				return 0, fmt.Errorf("%w: %q", keys.ErrUnknownDomain, name)
			}
			return 0, fmt.Errorf("%w: domain %q: %s/%s is missing", keys.ErrInvalid, name, s.mount, p)
		}
		vs[i] = v
	}
	if s.mode != Service {
		return generation(vs...), nil
	}
	// The scalar k (single mode), or the share k₁ (split mode), or both
	// while a split is under way: meta's mode decides which Domain reads,
	// and a change of either changes the generation.
	sv, err := s.current(ctx, scalarPath(name))
	if err != nil {
		return 0, err
	}
	kv, found, err := s.shareVersion(ctx, name)
	if err != nil {
		return 0, err
	}
	if sv.n == 0 && !found {
		return 0, fmt.Errorf("%w: domain %q has neither a scalar nor a share", keys.ErrInvalid, name)
	}
	if sv.n != 0 {
		vs = append(vs, sv)
	}
	if found {
		vs = append(vs, kv)
	}
	return generation(vs...), nil
}

// Domains implements keys.Source. It lists <mount>/metadata/domains/.
func (s *Store) Domains(ctx context.Context) ([]string, error) {
	path := s.mount + "/metadata/domains"
	sec, err := s.client.Logical().ListWithContext(ctx, path)
	if err != nil {
		err = wrap(err, "listing", path)
		if errors.Is(err, errNotFound) {
			return []string{}, nil
		}
		return nil, err
	}
	names := []string{}
	if sec == nil || sec.Data == nil {
		return names, nil
	}
	l, _ := sec.Data["keys"].([]any)
	for _, k := range l {
		name, _ := k.(string)
		name = strings.TrimSuffix(name, "/")
		if keys.ValidName(name) {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	return names, nil
}

// CreateDomain implements keys.Admin. It needs create on the scalar path and
// read on the metadata; it does not read scalars.
func (s *Store) CreateDomain(ctx context.Context, spec keys.DomainSpec) (*keys.Domain, error) {
	return s.CreateDomainWith(ctx, spec, keys.DomainOptions{})
}

// CreateDomainWith implements keys.Creator, like CreateDomain.
func (s *Store) CreateDomainWith(ctx context.Context, spec keys.DomainSpec, opts keys.DomainOptions) (*keys.Domain, error) {
	d, err := keys.GenerateDomainWith(spec, opts, nil)
	if err != nil {
		return nil, err
	}
	mv, err := s.current(ctx, metaPath(d.Name))
	if err != nil {
		return nil, err
	}
	if mv.n != 0 {
		return nil, fmt.Errorf("%w: domain %q", keys.ErrExists, d.Name)
	}
	// A scalar is never replaced (the admin policy cannot): one left by an
	// interrupted creation must be deleted by an operator. Transit keys left
	// that way are overwritten.
	sv, err := s.current(ctx, scalarPath(d.Name))
	if err != nil {
		return nil, err
	}
	if sv.n != 0 {
		return nil, fmt.Errorf("%w: domain %q has a scalar but no meta (interrupted creation?): delete %s/metadata/%s first",
			keys.ErrExists, d.Name, s.mount, scalarPath(d.Name))
	}
	if opts.Split {
		// k₂ drawn by the plugin, k₁ here (the scalar just drawn): k never
		// exists.
		if err := s.createShares(ctx, d.Name, d.Scalar); err != nil {
			return nil, err
		}
		d.Mode, d.ShareGeneration = keys.ModeSplit, 1
	} else if err := s.put(ctx, scalarPath(d.Name), scalarJSON{K: encodeKey(d.Scalar)}, 0); err != nil {
		if errors.Is(err, keys.ErrConflict) {
			return nil, fmt.Errorf("%w: domain %q", keys.ErrExists, d.Name)
		}
		return nil, err
	}
	tv, err := s.current(ctx, transitPath(d.Name))
	if err != nil {
		return nil, err
	}
	t := transitJSON{Keys: map[string]string{}}
	for kid, k := range d.Transit.Keys {
		t.Keys[kid] = encodeKey(k)
	}
	if err := s.put(ctx, transitPath(d.Name), t, tv.n); err != nil {
		return nil, err
	}
	m := metaJSON{
		Audience:    d.Audience,
		TTL:         d.TTL.String(),
		MaxLifetime: keys.FormatMaxLifetime(d.MaxLifetime),
		Active:      d.Transit.Active,
		Accepted:    d.Transit.Kids(),
		Policy:      d.Policy,
		Mode:        string(d.Mode),
	}
	if err := s.put(ctx, metaPath(d.Name), m, 0); err != nil {
		if errors.Is(err, keys.ErrConflict) {
			return nil, fmt.Errorf("%w: domain %q", keys.ErrExists, d.Name)
		}
		return nil, err
	}
	return d, nil
}

// RotateTransitKey implements keys.Admin.
func (s *Store) RotateTransitKey(ctx context.Context, name string) (string, error) {
	m, mv, err := s.readMeta(ctx, name)
	if err != nil {
		return "", err
	}
	stored, tv, err := s.readTransit(ctx, name)
	if err != nil {
		return "", err
	}
	all := append(slices.Clone(m.Accepted), m.Active)
	for kid := range stored {
		all = append(all, kid)
	}
	kid := keys.NextKid(all...)
	k, err := keys.NewTransitKey(nil)
	if err != nil {
		return "", err
	}
	t := transitJSON{Keys: map[string]string{kid: encodeKey(k)}}
	for id, k := range stored {
		t.Keys[id] = encodeKey(k)
	}
	if err := s.put(ctx, transitPath(name), t, tv.n); err != nil {
		return "", err
	}
	m.Active = kid
	m.ActiveSince = keys.FormatActiveSince(now().UTC().Truncate(time.Second))
	m.Accepted = append(m.Accepted, kid)
	if err := s.put(ctx, metaPath(name), m, mv.n); err != nil {
		return "", err
	}
	return kid, nil
}

// RetireTransitKey implements keys.Admin. It also destroys the older
// versions of the transit path, which hold the retired key.
func (s *Store) RetireTransitKey(ctx context.Context, name, kid string) error {
	m, mv, err := s.readMeta(ctx, name)
	if err != nil {
		return err
	}
	if kid == m.Active {
		return fmt.Errorf("%w: %q of domain %q", keys.ErrActiveKey, kid, name)
	}
	stored, tv, err := s.readTransit(ctx, name)
	if err != nil {
		return err
	}
	_, isStored := stored[kid]
	if !slices.Contains(m.Accepted, kid) && !isStored {
		return fmt.Errorf("%w: no transit key %q in domain %q", keys.ErrUnknownKey, kid, name)
	}
	if slices.Contains(m.Accepted, kid) {
		m.Accepted = slices.DeleteFunc(m.Accepted, func(k string) bool { return k == kid })
		if err := s.put(ctx, metaPath(name), m, mv.n); err != nil {
			return err
		}
	}
	if !isStored {
		return nil
	}
	t := transitJSON{Keys: map[string]string{}}
	for id, k := range stored {
		if id != kid {
			t.Keys[id] = encodeKey(k)
		}
	}
	if err := s.put(ctx, transitPath(name), t, tv.n); err != nil {
		return err
	}
	old := make([]int, 0, tv.n)
	for i := 1; i <= tv.n; i++ {
		old = append(old, i)
	}
	if err := s.kv.Destroy(ctx, transitPath(name), old); err != nil {
		return wrap(err, "destroying old versions of", s.mount+"/"+transitPath(name))
	}
	return nil
}

// NewVersion implements keys.Admin. The new domain has the audience, TTL,
// max lifetime and policy of old.
func (s *Store) NewVersion(ctx context.Context, old, newName string) (*keys.Domain, error) {
	m, _, err := s.readMeta(ctx, old)
	if err != nil {
		return nil, err
	}
	od := &keys.Domain{Name: old, Audience: m.Audience, Policy: m.Policy}
	if od.TTL, od.MaxLifetime, err = m.lifetimes(old); err != nil {
		return nil, err
	}
	spec, err := keys.NextVersionSpec(od, newName)
	if err != nil {
		return nil, err
	}
	return s.NewVersionWith(ctx, old, spec, keys.DomainOptions{MaxLifetime: od.MaxLifetime})
}

// NewVersionWith implements keys.Creator. The new domain is created first,
// then the convert policy of old is updated (retried on concurrent changes).
func (s *Store) NewVersionWith(ctx context.Context, old string, spec keys.DomainSpec, opts keys.DomainOptions) (*keys.Domain, error) {
	newName := spec.Name
	if newName == old {
		return nil, fmt.Errorf("%w: new version of %q must have another name", keys.ErrInvalid, old)
	}
	if _, _, err := s.readMeta(ctx, old); err != nil {
		return nil, err
	}
	nd, err := s.CreateDomainWith(ctx, spec, opts)
	if err != nil {
		return nil, err
	}
	// The new domain exists: retry the policy update of the old one on
	// concurrent changes rather than leave the work half done.
	for try := 0; ; try++ {
		m, mv, err := s.readMeta(ctx, old)
		if err != nil {
			return nil, err
		}
		m.Policy = m.Policy.WithConvert(newName, m.Policy.Owners)
		err = s.put(ctx, metaPath(old), m, mv.n)
		if err == nil {
			return nd, nil
		}
		if !errors.Is(err, keys.ErrConflict) || try == 4 {
			return nil, fmt.Errorf("domain %q created, but the convert policy of %q not updated: %w", newName, old, err)
		}
	}
}

// CreateOwnerKey implements keys.Admin.
func (s *Store) CreateOwnerKey(ctx context.Context, owner, domain string) error {
	if !keys.ValidOwner(owner) {
		return fmt.Errorf("%w: owner name %q: want 1 to %d characters from [A-Za-z0-9_.@-]", keys.ErrInvalid, owner, keys.MaxNameLen)
	}
	if _, _, err := s.readMeta(ctx, domain); err != nil {
		return err
	}
	// Vault asks for "update" rather than "create" when the path exists,
	// which the admin policy does not grant: look first.
	v, err := s.current(ctx, ownerPath(owner, domain))
	if err != nil {
		return err
	}
	if v.n != 0 {
		return fmt.Errorf("%w: owner key of %q for domain %q", keys.ErrExists, owner, domain)
	}
	k2, err := keys.NewScalar(nil)
	if err != nil {
		return err
	}
	err = s.put(ctx, ownerPath(owner, domain), ownerJSON{K2: encodeKey(k2)}, 0)
	if errors.Is(err, keys.ErrConflict) {
		return fmt.Errorf("%w: owner key of %q for domain %q", keys.ErrExists, owner, domain)
	}
	return err
}

// OwnerKey implements keys.Admin. The owner's policy grants it.
func (s *Store) OwnerKey(ctx context.Context, owner, domain string) (keys.Secret, error) {
	if !keys.ValidOwner(owner) || !keys.ValidName(domain) {
		return nil, fmt.Errorf("%w: no owner key of %q for domain %q", keys.ErrUnknownKey, owner, domain)
	}
	var o ownerJSON
	if _, err := s.get(ctx, ownerPath(owner, domain), &o); err != nil {
		if errors.Is(err, errNotFound) {
			return nil, fmt.Errorf("%w: no owner key of %q for domain %q", keys.ErrUnknownKey, owner, domain)
		}
		return nil, err
	}
	k2, err := decodeKey(o.K2, keys.ScalarSize, fmt.Sprintf("owner key of %q for domain %q", owner, domain))
	if err != nil {
		return nil, err
	}
	if err := keys.CheckScalar(k2); err != nil {
		return nil, fmt.Errorf("owner key of %q for domain %q: %w", owner, domain, err)
	}
	return k2, nil
}

// settings returns the settings of domain name in m, for validation.
func (m *metaJSON) settings(name string) (*keys.Domain, error) {
	d := &keys.Domain{Name: name, Audience: m.Audience, Policy: m.Policy, Disabled: m.Disabled}
	var err error
	if d.TTL, d.MaxLifetime, err = m.lifetimes(name); err != nil {
		return nil, err
	}
	return d, nil
}

// updateMeta applies f to the settings of domain name and writes them back
// to its meta path, with check-and-set.
func (s *Store) updateMeta(ctx context.Context, name string, f func(d *keys.Domain) error) error {
	m, mv, err := s.readMeta(ctx, name)
	if err != nil {
		return err
	}
	d, err := m.settings(name)
	if err != nil {
		return err
	}
	if err := f(d); err != nil {
		return err
	}
	if err := d.ValidateSettings(); err != nil {
		return err
	}
	m.TTL = d.TTL.String()
	m.MaxLifetime = keys.FormatMaxLifetime(d.MaxLifetime)
	m.Policy = d.Policy
	m.Disabled = d.Disabled
	return s.put(ctx, metaPath(name), m, mv.n)
}

// SetPolicy implements keys.Admin.
func (s *Store) SetPolicy(ctx context.Context, name string, p keys.Policy) error {
	return s.updateMeta(ctx, name, func(d *keys.Domain) error {
		d.Policy = p.Clone()
		return nil
	})
}

// SetLifetimes implements keys.Admin.
func (s *Store) SetLifetimes(ctx context.Context, name string, ttl, maxLifetime time.Duration) error {
	if ttl < 0 || maxLifetime < 0 {
		return fmt.Errorf("%w: domain %q: negative ttl or max lifetime", keys.ErrInvalid, name)
	}
	return s.updateMeta(ctx, name, func(d *keys.Domain) error {
		if ttl > 0 {
			d.TTL = ttl
		}
		if maxLifetime > 0 {
			d.MaxLifetime = maxLifetime
		}
		return nil
	})
}

// SetDisabled implements keys.Admin.
func (s *Store) SetDisabled(ctx context.Context, name string, disabled bool) error {
	return s.updateMeta(ctx, name, func(d *keys.Domain) error {
		d.Disabled = disabled
		return nil
	})
}

// DeleteDomain implements keys.Admin. It deletes the metadata (every
// version) of the meta path first, so that readers see an unknown domain
// at once, then those of the transit and scalar paths.
func (s *Store) DeleteDomain(ctx context.Context, name string) error {
	m, _, err := s.readMeta(ctx, name)
	if err != nil {
		return err
	}
	for _, p := range []string{metaPath(name), transitPath(name), scalarPath(name), sharePath(name)} {
		if err := s.kv.DeleteMetadata(ctx, p); err != nil {
			return wrap(err, "deleting", s.mount+"/metadata/"+p)
		}
	}
	if mode, _ := keys.ParseMode(m.Mode); mode == keys.ModeSplit {
		return s.deleteShares(ctx, name)
	}
	return nil
}

// RotateOwnerKey implements keys.Admin. It writes a new k2 and destroys the
// older versions.
func (s *Store) RotateOwnerKey(ctx context.Context, owner, domain string) error {
	v, err := s.ownerKeyVersion(ctx, owner, domain)
	if err != nil {
		return err
	}
	k2, err := keys.NewScalar(nil)
	if err != nil {
		return err
	}
	p := ownerPath(owner, domain)
	if err := s.put(ctx, p, ownerJSON{K2: encodeKey(k2)}, v.n); err != nil {
		return err
	}
	old := make([]int, 0, v.n)
	for i := 1; i <= v.n; i++ {
		old = append(old, i)
	}
	if err := s.kv.Destroy(ctx, p, old); err != nil {
		return wrap(err, "destroying old versions of", s.mount+"/"+p)
	}
	return nil
}

// DeleteOwnerKey implements keys.Admin: it deletes every version of k2.
func (s *Store) DeleteOwnerKey(ctx context.Context, owner, domain string) error {
	if _, err := s.ownerKeyVersion(ctx, owner, domain); err != nil {
		return err
	}
	p := ownerPath(owner, domain)
	if err := s.kv.DeleteMetadata(ctx, p); err != nil {
		return wrap(err, "deleting", s.mount+"/metadata/"+p)
	}
	return nil
}

// ownerKeyVersion returns the current version of an owner key, or an error
// wrapping keys.ErrUnknownKey when there is none.
func (s *Store) ownerKeyVersion(ctx context.Context, owner, domain string) (version, error) {
	if !keys.ValidOwner(owner) || !keys.ValidName(domain) {
		return version{}, fmt.Errorf("%w: no owner key of %q for domain %q", keys.ErrUnknownKey, owner, domain)
	}
	v, err := s.current(ctx, ownerPath(owner, domain))
	if err != nil {
		return version{}, err
	}
	if v.n == 0 {
		return version{}, fmt.Errorf("%w: no owner key of %q for domain %q", keys.ErrUnknownKey, owner, domain)
	}
	return v, nil
}
