package vault

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/gtank/ristretto255"
	"github.com/hashicorp/vault/api"

	"github.com/ehealth-pseudo/pseudonymizer/internal/point"
	"github.com/ehealth-pseudo/pseudonymizer/keys"
)

// Split domains (keys.ModeSplit, "mode": "split" in meta): the domain's
// scalar is k = k₁·k₂. The service's share k₁ and its generation are in KV
// at domains/<domain>/share, {"k1": "<base64>", "generation": n}, or, with
// ShareConfig.File, in a file of the service's (see [ShareFile]); the
// other share k₂ is in the key-share plugin (package keyshare) mounted at
// ShareConfig.Mount, which the service reaches through [Shares].

// ShareConfig says where a [Store] finds the shares of split domains.
type ShareConfig struct {
	// Mount is the path of the key-share plugin; DefaultSharesMount when
	// empty.
	Mount string
	// File, when set, is the JSON file of the service's shares k₁ (see
	// [ShareFile]) instead of KV: then neither Vault's operators (who do
	// not have the file) nor whoever has the file (without the service's
	// Vault token) can compute a pseudonym.
	File string
	// Options tune the service's client of the plugin.
	Options SharesOptions
}

// shareSource is a Store's ShareConfig and its plugin client, made when
// first needed.
type shareSource struct {
	mount, file string
	opts        SharesOptions

	once   sync.Once
	client *Shares
	err    error
}

// SetShares configures where the store finds the shares of split domains
// (by default: k₁ in KV, the plugin at DefaultSharesMount). Call it before
// using the store.
func (s *Store) SetShares(c ShareConfig) {
	if c.Mount == "" {
		c.Mount = DefaultSharesMount
	}
	s.shares = shareSource{mount: strings.Trim(c.Mount, "/"), file: c.File, opts: c.Options}
}

// Shares returns the store's client of the key-share plugin.
func (s *Store) Shares() (*Shares, error) {
	s.shares.once.Do(func() {
		s.shares.client, s.shares.err = NewShares(s.client, s.shares.mount, s.shares.opts)
	})
	return s.shares.client, s.shares.err
}

type shareJSON struct {
	K1         string `json:"k1"`
	Generation uint64 `json:"generation"`
}

// ShareFile is the format of ShareConfig.File: the service's share k₁ and
// its generation per split domain, standard base64 with padding. The file
// must not be readable by others (mode 0600 or stricter); pseudoctl
// writes it atomically.
//
//	{"domains": {"prescriptions_v1": {"k1": "<base64 of 32 bytes>", "generation": 2}}}
type ShareFile struct {
	Domains map[string]shareJSON `json:"domains"`
}

func readShareFile(path string) (*ShareFile, error) {
	fi, err := os.Stat(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return &ShareFile{Domains: map[string]shareJSON{}}, nil
	case err != nil:
		return nil, fmt.Errorf("%w: share file: %v", keys.ErrUnavailable, err)
	case fi.Mode().Perm()&0o077 != 0:
		return nil, fmt.Errorf("%w: share file %s has mode %04o, others may read the shares: chmod 600 it", keys.ErrInvalid, path, fi.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: share file: %v", keys.ErrUnavailable, err)
	}
	var f ShareFile
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("%w: share file %s does not decode", keys.ErrInvalid, path)
	}
	if f.Domains == nil {
		f.Domains = map[string]shareJSON{}
	}
	return &f, nil
}

func writeShareFile(path string, f *ShareFile) error {
	b, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".shares-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// shareFileMu serializes the read-modify-write of share files by this
// process.
var shareFileMu sync.Mutex

// readShare reads the service's share of a domain: k₁, its generation, and
// the version that enters the domain's Generation. found is false when
// there is none.
func (s *Store) readShare(ctx context.Context, name string) (k1 keys.Secret, gen uint64, v version, found bool, err error) {
	var sj shareJSON
	if s.shares.file != "" {
		f, err := readShareFile(s.shares.file)
		if err != nil {
			return nil, 0, version{}, false, err
		}
		var ok bool
		if sj, ok = f.Domains[name]; !ok {
			return nil, 0, version{}, false, nil
		}
		v = version{n: int(sj.Generation)}
	} else {
		v, err = s.get(ctx, sharePath(name), &sj)
		if errors.Is(err, errNotFound) {
			return nil, 0, version{}, false, nil
		}
		if err != nil {
			return nil, 0, version{}, false, err
		}
	}
	if k1, err = decodeKey(sj.K1, keys.ScalarSize, fmt.Sprintf("domain %q: share", name)); err != nil {
		return nil, 0, version{}, false, err
	}
	if err := keys.CheckScalar(k1); err != nil || sj.Generation == 0 {
		return nil, 0, version{}, false, fmt.Errorf("%w: domain %q: the share is not a valid scalar with a generation", keys.ErrInvalid, name)
	}
	return k1, sj.Generation, v, true, nil
}

// shareVersion is the version of the service's share (from the KV
// metadata, or the generation in the file), and whether there is one. With
// one, it also checks that the plugin answers and has the domain: a
// service whose plugin is down reports it at its next poll.
func (s *Store) shareVersion(ctx context.Context, name string) (version, bool, error) {
	var v version
	if s.shares.file != "" {
		_, _, fv, found, err := s.readShare(ctx, name)
		if err != nil || !found {
			return version{}, false, err
		}
		v = fv
	} else {
		kv, err := s.current(ctx, sharePath(name))
		if err != nil || kv.n == 0 {
			return version{}, false, err
		}
		v = kv
	}
	if _, err := s.pluginDomain(ctx, name); err != nil {
		return version{}, false, err
	}
	return v, true, nil
}

// PluginDomain is what the key-share plugin says of a split domain: never
// k₂.
type PluginDomain struct {
	Generation         uint64
	PreviousGeneration uint64 // 0: none
	PreviousLastUsed   string // RFC 3339, "" when there is no previous generation
	Origin             string // "created" or "split"
}

// pluginDomain reads the plugin's metadata of a domain; ErrInvalid when
// the plugin has no shares for it.
func (s *Store) pluginDomain(ctx context.Context, name string) (*PluginDomain, error) {
	p := s.shares.mount + "/domains/" + name
	sec, err := s.client.Logical().ReadWithContext(ctx, p)
	if err != nil {
		err = wrap(err, "reading", p)
		if errors.Is(err, errNotFound) {
			return nil, fmt.Errorf("%w: domain %q: the key-share plugin has no shares for it", keys.ErrInvalid, name)
		}
		return nil, err
	}
	if sec == nil || sec.Data == nil {
		return nil, fmt.Errorf("%w: domain %q: the key-share plugin has no shares for it", keys.ErrInvalid, name)
	}
	num := func(k string) uint64 {
		n, _ := sec.Data[k].(json.Number)
		v, _ := n.Int64()
		return uint64(v)
	}
	str := func(k string) string { v, _ := sec.Data[k].(string); return v }
	return &PluginDomain{Generation: num("generation"), PreviousGeneration: num("previous_generation"),
		PreviousLastUsed: str("previous_last_used"), Origin: str("origin")}, nil
}

// readSplit fills in the split share of d (Service mode): k₁, its
// generation and the plugin client, after checking that the plugin has
// that generation (the current or the previous one).
func (s *Store) readSplit(ctx context.Context, d *keys.Domain) (version, error) {
	k1, gen, v, found, err := s.readShare(ctx, d.Name)
	if err != nil {
		return version{}, err
	}
	if !found {
		return version{}, fmt.Errorf("%w: split domain %q has no share", keys.ErrInvalid, d.Name)
	}
	pd, err := s.pluginDomain(ctx, d.Name)
	if err != nil {
		return version{}, err
	}
	if gen != pd.Generation && gen != pd.PreviousGeneration {
		return version{}, fmt.Errorf("%w: split domain %q: the service's share has generation %d, the plugin has %d (previous %d): refresh the service's share",
			keys.ErrInvalid, d.Name, gen, pd.Generation, pd.PreviousGeneration)
	}
	m, err := s.Shares()
	if err != nil {
		return version{}, err
	}
	d.Scalar, d.ShareGeneration, d.Share = k1, gen, m
	return v, nil
}

// writeShare writes the service's share of a domain: to the file, or to KV
// with check-and-set cas (the KV version read, 0 for none).
func (s *Store) writeShare(ctx context.Context, name string, k1 *ristretto255.Scalar, gen uint64, cas int) error {
	sj := shareJSON{K1: encodeKey(k1.Bytes()), Generation: gen}
	if s.shares.file == "" {
		return s.put(ctx, sharePath(name), sj, cas)
	}
	shareFileMu.Lock()
	defer shareFileMu.Unlock()
	f, err := readShareFile(s.shares.file)
	if err != nil {
		return err
	}
	f.Domains[name] = sj
	if err := writeShareFile(s.shares.file, f); err != nil {
		return fmt.Errorf("%w: writing the share file: %v", keys.ErrUnavailable, err)
	}
	return nil
}

func (s *Store) pluginWrite(ctx context.Context, path string, data map[string]any) (*api.Secret, error) {
	p := s.shares.mount + "/" + path
	sec, err := s.client.Logical().WriteWithContext(ctx, p, data)
	if err != nil {
		var re *api.ResponseError
		if errors.As(err, &re) && re.StatusCode == 400 {
			return nil, fmt.Errorf("%w: vault: %s: %s", keys.ErrConflict, p, strings.Join(re.Errors, "; "))
		}
		return nil, wrap(err, "writing", p)
	}
	if sec == nil || sec.Data == nil {
		return nil, fmt.Errorf("%w: vault: %s answered nothing", keys.ErrUnavailable, p)
	}
	return sec, nil
}

func scalarField(sec *api.Secret, field string) (*ristretto255.Scalar, error) {
	str, _ := sec.Data[field].(string)
	b, err := decodeKey(str, keys.ScalarSize, field)
	if err != nil {
		return nil, err
	}
	return point.DecodeScalar(b)
}

func genField(sec *api.Secret) uint64 {
	n, _ := sec.Data["generation"].(json.Number)
	v, _ := n.Int64()
	return uint64(v)
}

// createShares creates a split domain's shares: the plugin draws k₂
// (generation 1), and k1, drawn by the caller, is the service's share.
func (s *Store) createShares(ctx context.Context, name string, k1 keys.Secret) error {
	k, err := point.DecodeScalar(k1)
	if err != nil {
		return err
	}
	if _, err := s.pluginWrite(ctx, "domains/"+name, nil); err != nil {
		if errors.Is(err, keys.ErrConflict) {
			return fmt.Errorf("%w: domain %q already has shares in the plugin (interrupted creation?): delete %s/domains/%s first",
				keys.ErrExists, name, s.shares.mount, name)
		}
		return err
	}
	cas := 0
	if s.shares.file == "" {
		v, err := s.current(ctx, sharePath(name))
		if err != nil {
			return err
		}
		cas = v.n
	}
	return s.writeShare(ctx, name, k, 1, cas)
}

// deleteShares destroys the plugin's shares of a domain and the service's
// share in the file, if any (DeleteDomain deletes the KV paths).
func (s *Store) deleteShares(ctx context.Context, name string) error {
	if s.shares.file != "" {
		shareFileMu.Lock()
		f, err := readShareFile(s.shares.file)
		if err == nil {
			if _, ok := f.Domains[name]; ok {
				delete(f.Domains, name)
				err = writeShareFile(s.shares.file, f)
			}
		}
		shareFileMu.Unlock()
		if err != nil {
			return fmt.Errorf("%w: share file: %v", keys.ErrUnavailable, err)
		}
	}
	p := s.shares.mount + "/domains/" + name
	if _, err := s.client.Logical().DeleteWithContext(ctx, p); err != nil {
		var re *api.ResponseError
		if errors.As(err, &re) && re.StatusCode == 404 {
			return nil // no plugin mounted: no shares
		}
		return wrap(err, "deleting", p)
	}
	return nil
}

// ShareStatus is what pseudoctl shows of a domain's key mode.
type ShareStatus struct {
	Mode keys.Mode
	// ServiceGeneration is the generation of the service's share k₁ (split
	// mode; 0 when it cannot be read with this token).
	ServiceGeneration uint64
	// Plugin is what the plugin says (split mode).
	Plugin *PluginDomain
}

// ShareStatus reports a domain's mode and, in split mode, the generations
// of its shares. It reads meta, the service's share (when the token may)
// and the plugin's metadata.
func (s *Store) ShareStatus(ctx context.Context, name string) (*ShareStatus, error) {
	m, _, err := s.readMeta(ctx, name)
	if err != nil {
		return nil, err
	}
	mode, err := keys.ParseMode(m.Mode)
	if err != nil {
		return nil, err
	}
	st := &ShareStatus{Mode: mode}
	if mode != keys.ModeSplit {
		return st, nil
	}
	if _, gen, _, found, err := s.readShare(ctx, name); err == nil && found {
		st.ServiceGeneration = gen
	}
	if st.Plugin, err = s.pluginDomain(ctx, name); err != nil {
		return nil, err
	}
	return st, nil
}

// SplitDomain migrates a single-mode domain to split mode without changing
// a pseudonym: it reads k (the token needs the migrate policy besides the
// admin one), hands it to the plugin once, which draws k₂ and returns
// k₁ = k·k₂⁻¹, writes k₁ (generation 1) as the service's share, marks the
// domain split in meta, and destroys every KV version of k. Run again after
// a failure, it resumes: the plugin returns the same k₁ for the same k, and
// a domain already split only has its remaining scalar destroyed. It
// returns the share generation.
func (s *Store) SplitDomain(ctx context.Context, name string) (uint64, error) {
	m, mv, err := s.readMeta(ctx, name)
	if err != nil {
		return 0, err
	}
	mode, err := keys.ParseMode(m.Mode)
	if err != nil {
		return 0, err
	}
	if mode != keys.ModeSplit {
		var sc scalarJSON
		if _, err := s.get(ctx, scalarPath(name), &sc); err != nil {
			if errors.Is(err, errNotFound) {
				return 0, fmt.Errorf("%w: domain %q has no scalar", keys.ErrInvalid, name)
			}
			return 0, err
		}
		k, err := decodeKey(sc.K, keys.ScalarSize, fmt.Sprintf("domain %q: scalar", name))
		if err != nil {
			return 0, err
		}
		sec, err := s.pluginWrite(ctx, "domains/"+name+"/split", map[string]any{"k": encodeKey(k)})
		clear(k)
		if err != nil {
			return 0, err
		}
		k1, err := scalarField(sec, "k1")
		if err != nil {
			return 0, fmt.Errorf("%w: the plugin's k1", keys.ErrInvalid)
		}
		gen := genField(sec)
		cas := 0
		if s.shares.file == "" {
			v, err := s.current(ctx, sharePath(name))
			if err != nil {
				return 0, err
			}
			cas = v.n
		}
		if err := s.writeShare(ctx, name, k1, gen, cas); err != nil {
			return 0, err
		}
		m.Mode = string(keys.ModeSplit)
		if err := s.put(ctx, metaPath(name), m, mv.n); err != nil {
			return 0, err
		}
	}
	// Destroy every version of k: deleting the metadata of a KV v2 path
	// removes all its versions for good.
	if err := s.kv.DeleteMetadata(ctx, scalarPath(name)); err != nil {
		return 0, wrap(err, "deleting", s.mount+"/metadata/"+scalarPath(name))
	}
	_, gen, _, found, err := s.readShare(ctx, name)
	if err != nil {
		return 0, err
	}
	if !found {
		return 0, fmt.Errorf("%w: split domain %q has no share", keys.ErrInvalid, name)
	}
	return gen, nil
}

// RefreshShares replaces the shares (k₁, k₂) of a split domain by
// (k₁·r, k₂·r⁻¹): k, and so every pseudonym, is unchanged, and the old k₁
// is useless once the plugin drops its generation (at the next refresh,
// which the plugin refuses while that generation is still in use unless
// force). It reads k₁, has the plugin draw r (the same r when asked again
// from the same generation), writes k₁·r with the new generation and, in
// KV, destroys the older versions of the share. It returns the new
// generation.
func (s *Store) RefreshShares(ctx context.Context, name string, force bool) (uint64, error) {
	m, _, err := s.readMeta(ctx, name)
	if err != nil {
		return 0, err
	}
	if mode, err := keys.ParseMode(m.Mode); err != nil || mode != keys.ModeSplit {
		return 0, fmt.Errorf("%w: domain %q is not split", keys.ErrInvalid, name)
	}
	k1raw, gen, v, found, err := s.readShare(ctx, name)
	if err != nil {
		return 0, err
	}
	if !found {
		return 0, fmt.Errorf("%w: split domain %q has no share", keys.ErrInvalid, name)
	}
	k1, err := point.DecodeScalar(k1raw)
	clear(k1raw)
	if err != nil {
		return 0, err
	}
	sec, err := s.pluginWrite(ctx, "domains/"+name+"/refresh", map[string]any{"generation": gen, "force": force})
	if err != nil {
		return 0, err
	}
	r, err := scalarField(sec, "r")
	if err != nil {
		return 0, fmt.Errorf("%w: the plugin's r", keys.ErrInvalid)
	}
	next := genField(sec)
	k1.Multiply(k1, r)
	r.Zero()
	if err := s.writeShare(ctx, name, k1, next, v.n); err != nil {
		return 0, err
	}
	k1.Zero()
	if s.shares.file == "" {
		// v.n+1 is the version just written; destroy the older ones.
		old := make([]int, 0, v.n)
		for i := 1; i <= v.n; i++ {
			old = append(old, i)
		}
		if len(old) > 0 {
			if err := s.kv.Destroy(ctx, sharePath(name), old); err != nil {
				return next, wrap(err, "destroying old versions of", s.mount+"/"+sharePath(name))
			}
		}
	}
	return next, nil
}
