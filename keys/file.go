package keys

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"sync"
	"time"
)

// DemoDomain is the domain [FileStore.EnsureDemo] creates.
const DemoDomain = "demo_v1"

// DemoSpec is the spec of [DemoDomain]: everyone may pseudonymize and
// identify, "demo-owner" owns it. For development only.
var DemoSpec = DomainSpec{
	Name:     DemoDomain,
	Audience: "urn:pseudonymizer:demo:v1",
	TTL:      DefaultTTL,
	Policy: Policy{
		Pseudonymize: []string{"*"},
		Identify:     []string{"*"},
		Owners:       []string{"demo-owner"},
	},
}

// FileStore keeps every domain (scalars included) and the owners' second
// keys in one JSON file, readable by its owner only (mode 0600). It is the
// store of development mode (-dev); production uses keys/vault.
//
// Every read reads the file again, so that changes made by another process
// (pseudoctl) are seen. Writes replace the file atomically (temporary file
// and rename) under an exclusive lock (flock on Unix), so that readers never
// see a partial file and concurrent writers do not lose changes.
type FileStore struct {
	path string
	rnd  io.Reader
	mu   sync.Mutex // serializes the writers of this process
}

var (
	_ Source  = (*FileStore)(nil)
	_ Admin   = (*FileStore)(nil)
	_ Creator = (*FileStore)(nil)
)

// OpenFileStore opens the file store at path. When the file does not exist
// it is created empty (with its directory, mode 0700) if create is true, and
// an error wrapping [ErrUnavailable] is returned otherwise. A file that group
// or others may read is refused.
func OpenFileStore(path string, create bool) (*FileStore, error) {
	s := &FileStore{path: path}
	fi, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist) && create:
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
		}
		err := s.update(func(st *fileState) error { return nil })
		if err != nil {
			return nil, err
		}
		return s, nil
	case err != nil:
		return nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
	case !fi.Mode().IsRegular():
		return nil, fmt.Errorf("%w: %s is not a regular file", ErrUnavailable, path)
	case runtime.GOOS != "windows" && fi.Mode().Perm()&0o077 != 0:
		return nil, fmt.Errorf("keys: %s has mode %04o, others may read the keys: chmod 600 it", path, fi.Mode().Perm())
	}
	if _, err := s.load(); err != nil {
		return nil, err
	}
	return s, nil
}

// Path returns the path of the file.
func (s *FileStore) Path() string { return s.path }

// EnsureDemo creates [DemoDomain] (see [DemoSpec]) if the store has no
// domain at all, and reports whether it did.
func (s *FileStore) EnsureDemo(ctx context.Context) (bool, error) {
	created := false
	err := s.update(func(st *fileState) error {
		if len(st.domains) > 0 {
			return nil
		}
		d, err := GenerateDomain(DemoSpec, s.rnd)
		if err != nil {
			return err
		}
		st.domains[d.Name] = d
		created = true
		return nil
	})
	return created, err
}

// Domain implements [Source].
func (s *FileStore) Domain(ctx context.Context, name string) (*Domain, error) {
	st, err := s.load()
	if err != nil {
		return nil, err
	}
	d, ok := st.domains[name]
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrUnknownDomain, name)
	}
	return d, nil
}

// Domains implements [Source].
func (s *FileStore) Domains(ctx context.Context) ([]string, error) {
	st, err := s.load()
	if err != nil {
		return nil, err
	}
	names := make([]string, 0, len(st.domains))
	for name := range st.domains {
		names = append(names, name)
	}
	sort.Strings(names)
	return names, nil
}

// Version implements [Source]: it is a hash of the domain's content.
func (s *FileStore) Version(ctx context.Context, name string) (uint64, error) {
	d, err := s.Domain(ctx, name)
	if err != nil {
		return 0, err
	}
	return d.Generation, nil
}

// CreateDomain implements [Admin].
func (s *FileStore) CreateDomain(ctx context.Context, spec DomainSpec) (*Domain, error) {
	return s.CreateDomainWith(ctx, spec, DomainOptions{})
}

// CreateDomainWith implements [Creator].
func (s *FileStore) CreateDomainWith(ctx context.Context, spec DomainSpec, opts DomainOptions) (*Domain, error) {
	if opts.Split {
		return nil, fmt.Errorf("%w: domain %q: the file store keeps the single mode (split keys need Vault and its key-share plugin)", ErrInvalid, spec.Name)
	}
	var d *Domain
	err := s.update(func(st *fileState) error {
		if _, ok := st.domains[spec.Name]; ok {
			return fmt.Errorf("%w: domain %q", ErrExists, spec.Name)
		}
		var err error
		d, err = GenerateDomainWith(spec, opts, s.rnd)
		if err != nil {
			return err
		}
		st.domains[d.Name] = d
		return nil
	})
	if err != nil {
		return nil, err
	}
	return s.Domain(ctx, d.Name)
}

// RotateTransitKey implements [Admin].
func (s *FileStore) RotateTransitKey(ctx context.Context, domain string) (string, error) {
	var kid string
	err := s.updateDomain(domain, func(d *Domain) error {
		k, err := NewTransitKey(s.rnd)
		if err != nil {
			return err
		}
		kid = NextKid(append(d.Transit.Kids(), d.Transit.Active)...)
		d.Transit.Keys[kid] = k
		d.Transit.Active = kid
		d.Transit.ActiveSince = now().UTC().Truncate(time.Second)
		return nil
	})
	return kid, err
}

// RetireTransitKey implements [Admin].
func (s *FileStore) RetireTransitKey(ctx context.Context, domain, kid string) error {
	return s.updateDomain(domain, func(d *Domain) error {
		return retire(&d.Transit, d.Name, kid)
	})
}

func retire(t *Transit, domain, kid string) error {
	if kid == t.Active {
		return fmt.Errorf("%w: %q of domain %q", ErrActiveKey, kid, domain)
	}
	if _, ok := t.Keys[kid]; !ok {
		return fmt.Errorf("%w: no transit key %q in domain %q", ErrUnknownKey, kid, domain)
	}
	delete(t.Keys, kid)
	return nil
}

// NewVersion implements [Admin]. The new domain has the audience, TTL, max
// lifetime and policy of old.
func (s *FileStore) NewVersion(ctx context.Context, old, newName string) (*Domain, error) {
	return s.newVersion(ctx, old, newName, func(od *Domain) (DomainSpec, DomainOptions, error) {
		spec, err := NextVersionSpec(od, newName)
		return spec, DomainOptions{MaxLifetime: od.MaxLifetime}, err
	})
}

// NewVersionWith implements [Creator].
func (s *FileStore) NewVersionWith(ctx context.Context, old string, spec DomainSpec, opts DomainOptions) (*Domain, error) {
	if spec.Name == old {
		return nil, fmt.Errorf("%w: new version of %q must have another name", ErrInvalid, old)
	}
	return s.newVersion(ctx, old, spec.Name, func(*Domain) (DomainSpec, DomainOptions, error) {
		return spec, opts, nil
	})
}

// newVersion creates domain newName from what f returns for domain old, and
// lets the owners of old convert into it, in one update of the file.
func (s *FileStore) newVersion(ctx context.Context, old, newName string, f func(od *Domain) (DomainSpec, DomainOptions, error)) (*Domain, error) {
	err := s.update(func(st *fileState) error {
		od, ok := st.domains[old]
		if !ok {
			return fmt.Errorf("%w: %q", ErrUnknownDomain, old)
		}
		if _, ok := st.domains[newName]; ok {
			return fmt.Errorf("%w: domain %q", ErrExists, newName)
		}
		spec, opts, err := f(od)
		if err != nil {
			return err
		}
		nd, err := GenerateDomainWith(spec, opts, s.rnd)
		if err != nil {
			return err
		}
		od = od.clone()
		od.Policy = od.Policy.WithConvert(newName, od.Policy.Owners)
		st.domains[old] = od
		st.domains[newName] = nd
		return nil
	})
	if err != nil {
		return nil, err
	}
	return s.Domain(ctx, newName)
}

// CreateOwnerKey implements [Admin].
func (s *FileStore) CreateOwnerKey(ctx context.Context, owner, domain string) error {
	if !ValidOwner(owner) {
		return fmt.Errorf("%w: owner name %q: want 1 to %d characters from [A-Za-z0-9_.@-]", ErrInvalid, owner, MaxNameLen)
	}
	return s.update(func(st *fileState) error {
		if _, ok := st.domains[domain]; !ok {
			return fmt.Errorf("%w: %q", ErrUnknownDomain, domain)
		}
		if _, ok := st.ownerKeys[owner][domain]; ok {
			return fmt.Errorf("%w: owner key of %q for domain %q", ErrExists, owner, domain)
		}
		k2, err := NewScalar(s.rnd)
		if err != nil {
			return err
		}
		if st.ownerKeys[owner] == nil {
			st.ownerKeys[owner] = map[string]Secret{}
		}
		st.ownerKeys[owner][domain] = k2
		return nil
	})
}

// OwnerKey implements [Admin].
func (s *FileStore) OwnerKey(ctx context.Context, owner, domain string) (Secret, error) {
	st, err := s.load()
	if err != nil {
		return nil, err
	}
	k2, ok := st.ownerKeys[owner][domain]
	if !ok {
		return nil, fmt.Errorf("%w: no owner key of %q for domain %q", ErrUnknownKey, owner, domain)
	}
	return k2, nil
}

// SetPolicy implements [Admin].
func (s *FileStore) SetPolicy(ctx context.Context, domain string, p Policy) error {
	return s.updateDomain(domain, func(d *Domain) error {
		d.Policy = p.Clone()
		return nil
	})
}

// SetLifetimes implements [Admin].
func (s *FileStore) SetLifetimes(ctx context.Context, domain string, ttl, maxLifetime time.Duration) error {
	return s.updateDomain(domain, func(d *Domain) error {
		return setLifetimes(d, ttl, maxLifetime)
	})
}

// SetDisabled implements [Admin].
func (s *FileStore) SetDisabled(ctx context.Context, domain string, disabled bool) error {
	return s.updateDomain(domain, func(d *Domain) error {
		d.Disabled = disabled
		return nil
	})
}

// setLifetimes sets the non-zero ones of ttl and maxLifetime on d.
func setLifetimes(d *Domain, ttl, maxLifetime time.Duration) error {
	if ttl < 0 || maxLifetime < 0 {
		return fmt.Errorf("%w: domain %q: negative ttl or max lifetime", ErrInvalid, d.Name)
	}
	if ttl > 0 {
		d.TTL = ttl
	}
	if maxLifetime > 0 {
		d.MaxLifetime = maxLifetime
	}
	return d.Validate()
}

// DeleteDomain implements [Admin].
func (s *FileStore) DeleteDomain(ctx context.Context, domain string) error {
	return s.update(func(st *fileState) error {
		if _, ok := st.domains[domain]; !ok {
			return fmt.Errorf("%w: %q", ErrUnknownDomain, domain)
		}
		delete(st.domains, domain)
		return nil
	})
}

// RotateOwnerKey implements [Admin].
func (s *FileStore) RotateOwnerKey(ctx context.Context, owner, domain string) error {
	return s.update(func(st *fileState) error {
		if _, ok := st.ownerKeys[owner][domain]; !ok {
			return fmt.Errorf("%w: no owner key of %q for domain %q", ErrUnknownKey, owner, domain)
		}
		k2, err := NewScalar(s.rnd)
		if err != nil {
			return err
		}
		st.ownerKeys[owner][domain] = k2
		return nil
	})
}

// DeleteOwnerKey implements [Admin].
func (s *FileStore) DeleteOwnerKey(ctx context.Context, owner, domain string) error {
	return s.update(func(st *fileState) error {
		if _, ok := st.ownerKeys[owner][domain]; !ok {
			return fmt.Errorf("%w: no owner key of %q for domain %q", ErrUnknownKey, owner, domain)
		}
		delete(st.ownerKeys[owner], domain)
		return nil
	})
}

// updateDomain applies f to a copy of the domain and stores the result.
func (s *FileStore) updateDomain(name string, f func(d *Domain) error) error {
	return s.update(func(st *fileState) error {
		d, ok := st.domains[name]
		if !ok {
			return fmt.Errorf("%w: %q", ErrUnknownDomain, name)
		}
		d = d.clone()
		if err := f(d); err != nil {
			return err
		}
		if err := d.Validate(); err != nil {
			return err
		}
		st.domains[name] = d
		return nil
	})
}

// update reads the file, applies f and writes the result, under the locks.
// A missing file is an empty store.
func (s *FileStore) update(f func(st *fileState) error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	unlock, err := lockFile(s.path + ".lock")
	if err != nil {
		return fmt.Errorf("%w: locking %s: %v", ErrUnavailable, s.path, err)
	}
	defer unlock()
	st, err := s.load()
	if errors.Is(err, fs.ErrNotExist) {
		st, err = newFileState(), nil
	}
	if err != nil {
		return err
	}
	if err := f(st); err != nil {
		return err
	}
	b, err := encodeFile(st)
	if err != nil {
		return err
	}
	return writeFileAtomic(s.path, b)
}

// load reads and decodes the file. A missing file is reported with an error
// that wraps both ErrUnavailable and fs.ErrNotExist.
func (s *FileStore) load() (*fileState, error) {
	b, err := os.ReadFile(s.path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
		}
		return nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	st, err := decodeFile(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", s.path, err)
	}
	return st, nil
}

// writeFileAtomic writes b to a temporary file (mode 0600) in the directory of
// path, syncs it and renames it to path.
func writeFileAtomic(path string, b []byte) (err error) {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	tmp, err := os.CreateTemp(dir, "."+base+".tmp*")
	if err != nil {
		return fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	defer func() {
		if err != nil {
			_ = tmp.Close()
			_ = os.Remove(tmp.Name())
		}
	}()
	if err := tmp.Chmod(0o600); err != nil && runtime.GOOS != "windows" {
		return fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	if _, err := tmp.Write(b); err != nil {
		return fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync() // make the rename durable; not supported everywhere
		_ = d.Close()
	}
	return nil
}

// The file format, version 1:
//
//	{
//	  "version": 1,
//	  "domains": {
//	    "<name>": {
//	      "audience": "urn:…", "ttl": "5m0s", "max_lifetime": "24h0m0s", "scalar": "<base64>",
//	      "transit": {"active": "t2", "active_since": "2025-01-02T03:04:05Z", "keys": {"t1": "<base64>", "t2": "<base64>"}},
//	      "policy": {"pseudonymize": […], "identify": […], "convert": {…}, "owners": […]}
//	    }
//	  },
//	  "owner_keys": {"<owner>": {"<domain>": "<base64 k2>"}}
//	}
//
// "ttl" and "max_lifetime" are Go duration strings; a missing "ttl" means
// DefaultTTL, a missing "max_lifetime" an unset Domain.MaxLifetime (the
// default).
const fileFormatVersion = 1

type fileJSON struct {
	Version   int                          `json:"version"`
	Domains   map[string]*fileDomain       `json:"domains"`
	OwnerKeys map[string]map[string][]byte `json:"owner_keys,omitempty"`
}

type fileDomain struct {
	Audience    string      `json:"audience"`
	TTL         string      `json:"ttl,omitempty"`
	MaxLifetime string      `json:"max_lifetime,omitempty"`
	Scalar      []byte      `json:"scalar"`
	Transit     fileTransit `json:"transit"`
	Policy      Policy      `json:"policy"`
	Disabled    bool        `json:"disabled,omitempty"`
}

type fileTransit struct {
	Active      string            `json:"active"`
	ActiveSince string            `json:"active_since,omitempty"` // see FormatActiveSince
	Keys        map[string][]byte `json:"keys"`
}

// fileState is a decoded, validated file.
type fileState struct {
	domains   map[string]*Domain
	ownerKeys map[string]map[string]Secret
}

func newFileState() *fileState {
	return &fileState{domains: map[string]*Domain{}, ownerKeys: map[string]map[string]Secret{}}
}

// decodeFile parses and validates a store file. Errors wrap ErrInvalid and
// never quote the input (json.SyntaxError messages can contain a byte of
// it).
func decodeFile(b []byte) (*fileState, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var f fileJSON
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("%w: malformed store file at byte %d", ErrInvalid, dec.InputOffset())
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("%w: trailing data in store file", ErrInvalid)
	}
	if f.Version != fileFormatVersion {
		return nil, fmt.Errorf("%w: store file version %d, want %d", ErrInvalid, f.Version, fileFormatVersion)
	}
	st := newFileState()
	for name, fd := range f.Domains {
		if fd == nil {
			return nil, fmt.Errorf("%w: domain %q is null", ErrInvalid, name)
		}
		d, err := fd.domain(name)
		if err != nil {
			return nil, err
		}
		st.domains[name] = d
	}
	for owner, m := range f.OwnerKeys {
		if !ValidOwner(owner) {
			return nil, fmt.Errorf("%w: owner name %q", ErrInvalid, owner)
		}
		st.ownerKeys[owner] = make(map[string]Secret, len(m))
		for domain, k2 := range m {
			if !ValidName(domain) {
				return nil, fmt.Errorf("%w: owner %q: domain name %q", ErrInvalid, owner, domain)
			}
			if err := CheckScalar(k2); err != nil {
				return nil, fmt.Errorf("owner key of %q for domain %q: %w", owner, domain, err)
			}
			st.ownerKeys[owner][domain] = Secret(k2)
		}
	}
	return st, nil
}

func (fd *fileDomain) domain(name string) (*Domain, error) {
	ttl := DefaultTTL
	if fd.TTL != "" {
		var err error
		if ttl, err = time.ParseDuration(fd.TTL); err != nil {
			return nil, fmt.Errorf("%w: domain %q: ttl %q is not a duration", ErrInvalid, name, fd.TTL)
		}
	}
	maxLifetime, err := ParseMaxLifetime(fd.MaxLifetime)
	if err != nil {
		return nil, fmt.Errorf("domain %q: %w", name, err)
	}
	if len(fd.Scalar) == 0 {
		return nil, fmt.Errorf("%w: domain %q has no scalar", ErrInvalid, name)
	}
	d := &Domain{
		Name:        name,
		Audience:    fd.Audience,
		TTL:         ttl,
		MaxLifetime: maxLifetime,
		Scalar:      Secret(fd.Scalar),
		Transit:     Transit{Active: fd.Transit.Active, Keys: make(map[string]Secret, len(fd.Transit.Keys))},
		Policy:      fd.Policy,
		Disabled:    fd.Disabled,
	}
	for kid, k := range fd.Transit.Keys {
		d.Transit.Keys[kid] = Secret(k)
	}
	if d.Transit.ActiveSince, err = ParseActiveSince(fd.Transit.ActiveSince); err != nil {
		return nil, fmt.Errorf("domain %q: %w", name, err)
	}
	if err := d.Validate(); err != nil {
		return nil, err
	}
	d.Generation = domainHash(d)
	return d, nil
}

func toFileDomain(d *Domain) *fileDomain {
	fd := &fileDomain{
		Audience:    d.Audience,
		TTL:         d.TTL.String(),
		MaxLifetime: FormatMaxLifetime(d.MaxLifetime),
		Scalar:      []byte(d.Scalar),
		Transit:     fileTransit{Active: d.Transit.Active, ActiveSince: FormatActiveSince(d.Transit.ActiveSince), Keys: make(map[string][]byte, len(d.Transit.Keys))},
		Policy:      d.Policy,
		Disabled:    d.Disabled,
	}
	for kid, k := range d.Transit.Keys {
		fd.Transit.Keys[kid] = []byte(k)
	}
	return fd
}

// encodeFile encodes a store file. The encoding is deterministic.
func encodeFile(st *fileState) ([]byte, error) {
	f := fileJSON{Version: fileFormatVersion, Domains: map[string]*fileDomain{}}
	for name, d := range st.domains {
		f.Domains[name] = toFileDomain(d)
	}
	for owner, m := range st.ownerKeys {
		if len(m) == 0 {
			continue
		}
		if f.OwnerKeys == nil {
			f.OwnerKeys = map[string]map[string][]byte{}
		}
		f.OwnerKeys[owner] = make(map[string][]byte, len(m))
		for domain, k2 := range m {
			f.OwnerKeys[owner][domain] = []byte(k2)
		}
	}
	b, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("keys: encoding the store file: %v", err)
	}
	return append(b, '\n'), nil
}

// domainHash is the Generation of a domain of the file store: a hash of its
// name and its deterministic encoding, so it changes when anything changes.
func domainHash(d *Domain) uint64 {
	b, err := json.Marshal(toFileDomain(d))
	if err != nil {
		panic("keys: encoding a domain: " + err.Error()) // cannot happen: only strings, bytes and maps
	}
	h := sha256.New()
	h.Write([]byte(d.Name))
	h.Write([]byte{0})
	h.Write(b)
	var sum [sha256.Size]byte
	return binary.BigEndian.Uint64(h.Sum(sum[:0]))
}
