package vault_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/ehealth-pseudo/pseudonymizer/client"
	"github.com/ehealth-pseudo/pseudonymizer/identifier"
	"github.com/ehealth-pseudo/pseudonymizer/internal/sharetest"
	"github.com/ehealth-pseudo/pseudonymizer/internal/waitfor"
	"github.com/ehealth-pseudo/pseudonymizer/keys"
	"github.com/ehealth-pseudo/pseudonymizer/keys/vault"
	"github.com/ehealth-pseudo/pseudonymizer/keyshare"
	"github.com/ehealth-pseudo/pseudonymizer/owner"
	"github.com/ehealth-pseudo/pseudonymizer/pseudonym"
	"github.com/ehealth-pseudo/pseudonymizer/pseudonymizer"
)

// splitEnv is Vault with the real plugin, and the stores of the service,
// the administrators and the migration, sharing one place for k₁ (KV, or
// a file when file is set).
type splitEnv struct {
	*sharetest.Env
	service, admin, migrate *vault.Store
}

func newSplitEnv(t *testing.T, file bool) *splitEnv {
	t.Helper()
	e := &splitEnv{Env: sharetest.Start(t)}
	sc := vault.ShareConfig{Options: vault.SharesOptions{Timeout: 3 * time.Second}}
	if file {
		sc.File = filepath.Join(t.TempDir(), "shares.json")
	}
	mk := func(tok string, mode vault.Mode) *vault.Store {
		s := vault.NewStore(e.ClientWithToken(t, tok), "", mode)
		s.SetShares(sc)
		return s
	}
	e.service = mk(e.ServiceToken, vault.Service)
	e.admin = mk(e.AdminToken, vault.Owner)
	e.migrate = mk(e.MigrateToken, vault.Owner)
	return e
}

func (e *splitEnv) create(t *testing.T, name string, split bool, convertTo ...string) {
	t.Helper()
	p := keys.Policy{Pseudonymize: []string{"client"}, Identify: []string{"client"}, Owners: []string{"owner-" + name},
		Convert: map[string][]string{}}
	for _, to := range convertTo {
		p.Convert[to] = []string{"owner-" + name}
	}
	_, err := e.admin.CreateDomainWith(context.Background(), keys.DomainSpec{Name: name, Audience: "urn:test:" + name, Policy: p},
		keys.DomainOptions{Split: split})
	if err != nil {
		t.Fatalf("creating %s: %v", name, err)
	}
}

// domain is the service's evaluation domain, read now.
func (e *splitEnv) domain(t *testing.T, name string) *pseudonymizer.Domain {
	t.Helper()
	kd, err := e.service.Domain(context.Background(), name)
	if err != nil {
		t.Fatalf("service reading %s: %v", name, err)
	}
	d, err := pseudonymizer.NewDomain(kd)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func (e *splitEnv) owner(t *testing.T, name string) *owner.Owner {
	t.Helper()
	o, err := owner.New(context.Background(), name, e.admin, owner.WithRefreshInterval(0))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { o.Close() })
	return o
}

func niss(t *testing.T, n int) []byte {
	t.Helper()
	id, err := identifier.NISS(validNISS(n))
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// validNISS returns a well-formed NISS (check digits: 97 − (first nine
// digits mod 97)), born in the 1900s.
func validNISS(n int) string {
	base := 850101000 + n%1000
	return fmt.Sprintf("%09d%02d", base, 97-base%97)
}

// pseudonymize runs the client and the service for one identifier and
// returns the transit pseudonym, or the item's error.
func pseudonymize(t *testing.T, d *pseudonymizer.Domain, id []byte) (*pseudonym.Transit, error) {
	t.Helper()
	blinded, u, err := client.Blind(id)
	if err != nil {
		t.Fatal(err)
	}
	out, errs := d.PseudonymizeBatch([][]byte{blinded}, &pseudonymizer.Params{Now: time.Now()})
	if errs[0] != nil {
		return nil, errs[0]
	}
	tp, err := u.Unblind(out[0].Point[:], out[0].TransitInfo)
	if err != nil {
		t.Fatal(err)
	}
	return tp, nil
}

func atRest(t *testing.T, o *owner.Owner, tp *pseudonym.Transit) pseudonym.AtRest {
	t.Helper()
	p, err := o.AtRest(context.Background(), tp)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func identify(t *testing.T, d *pseudonymizer.Domain, tp *pseudonym.Transit) []byte {
	t.Helper()
	blinded, u, err := client.BlindTransit(tp)
	if err != nil {
		t.Fatal(err)
	}
	out, errs := d.IdentifyBatch([]pseudonymizer.Item{{Blinded: blinded, TransitInfo: tp.Info}}, &pseudonymizer.Params{Now: time.Now(), Caller: "client"})
	if errs[0] != nil {
		t.Fatalf("identify: %v", errs[0])
	}
	id, err := u.Identify(out[0][:])
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func convert(t *testing.T, from, to *pseudonymizer.Domain, o *owner.Owner, p pseudonym.AtRest) *pseudonym.Transit {
	t.Helper()
	tp, err := o.InTransit(p)
	if err != nil {
		t.Fatal(err)
	}
	blinded, u, err := client.BlindTransit(tp)
	if err != nil {
		t.Fatal(err)
	}
	out, errs := pseudonymizer.ConvertBatch(from, to, []pseudonymizer.Item{{Blinded: blinded, TransitInfo: tp.Info}},
		&pseudonymizer.Params{Now: time.Now(), Caller: "owner-" + from.Name()})
	if errs[0] != nil {
		t.Fatalf("convert %s→%s: %v", from.Name(), to.Name(), errs[0])
	}
	res, err := u.Unblind(out[0].Point[:], out[0].TransitInfo)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// TestSplitKeepsPseudonyms migrates a domain to split mode and refreshes
// its shares: its pseudonyms at rest, as its owner computes them, are the
// same before, after the split and after the refresh; identify and
// convert (split → single, single → split, split → split, and a domain
// created split) work throughout; the KV holds no k after the split.
func TestSplitKeepsPseudonyms(t *testing.T) {
	for _, file := range []bool{false, true} {
		t.Run(map[bool]string{false: "k1 in KV", true: "k1 in a file"}[file], func(t *testing.T) {
			e := newSplitEnv(t, file)
			ctx := context.Background()
			e.create(t, "prescriptions_v1", false, "therlink_v1", "created_v1")
			e.create(t, "therlink_v1", false, "prescriptions_v1")
			e.create(t, "created_v1", true, "prescriptions_v1")
			oA, oB, oC := e.owner(t, "prescriptions_v1"), e.owner(t, "therlink_v1"), e.owner(t, "created_v1")
			id := niss(t, 1)

			dA := e.domain(t, "prescriptions_v1")
			dB := e.domain(t, "therlink_v1")
			dC := e.domain(t, "created_v1")
			if dA.Mode() != keys.ModeSingle || dC.Mode() != keys.ModeSplit {
				t.Fatalf("modes %v %v", dA.Mode(), dC.Mode())
			}
			tp, err := pseudonymize(t, dA, id)
			if err != nil {
				t.Fatal(err)
			}
			before := atRest(t, oA, tp)
			inB := atRest(t, oB, convert(t, dA, dB, oA, before))

			// Split.
			if _, err := e.admin.SplitDomain(ctx, "prescriptions_v1"); !errors.Is(err, keys.ErrDenied) {
				t.Errorf("split with the admin token alone: %v, want denied (it cannot read k)", err)
			}
			gen, err := e.migrate.SplitDomain(ctx, "prescriptions_v1")
			if err != nil || gen != 1 {
				t.Fatalf("split: %d, %v", gen, err)
			}
			if gen, err := e.migrate.SplitDomain(ctx, "prescriptions_v1"); err != nil || gen != 1 {
				t.Fatalf("split again: %d, %v", gen, err)
			}
			root := e.Client(t)
			if md, err := root.KVv2(e.Mount).GetMetadata(ctx, "domains/prescriptions_v1/scalar"); err == nil {
				t.Fatalf("the KV still holds k after the split: %d versions", len(md.Versions))
			}
			for _, name := range []string{"created_v1"} {
				if _, err := root.KVv2(e.Mount).GetMetadata(ctx, "domains/"+name+"/scalar"); err == nil {
					t.Fatalf("domain %s created split has a k in KV", name)
				}
			}
			st, err := e.admin.ShareStatus(ctx, "prescriptions_v1")
			if err != nil || st.Mode != keys.ModeSplit || st.Plugin.Generation != 1 || st.Plugin.Origin != keyshare.OriginSplit {
				t.Fatalf("status %+v %v", st, err)
			}
			dA1 := e.domain(t, "prescriptions_v1")
			if dA1.Mode() != keys.ModeSplit {
				t.Fatal("not split after the split")
			}
			tp, err = pseudonymize(t, dA1, id)
			if err != nil {
				t.Fatal(err)
			}
			if after := atRest(t, oA, tp); after != before {
				t.Fatal("the pseudonym at rest changed with the split")
			}
			if got := identify(t, dA1, tp); string(got) != string(id) {
				t.Fatal("identify after the split")
			}
			if atRest(t, oB, convert(t, dA1, dB, oA, before)) != inB {
				t.Fatal("convert split → single changed")
			}
			if atRest(t, oA, convert(t, dB, dA1, oB, inB)) != before {
				t.Fatal("convert single → split changed")
			}
			inC := atRest(t, oC, convert(t, dA1, dC, oA, before))
			tpC, err := pseudonymize(t, dC, id)
			if err != nil {
				t.Fatal(err)
			}
			if atRest(t, oC, tpC) != inC {
				t.Fatal("convert split → split differs from pseudonymize in the target")
			}
			if atRest(t, oA, convert(t, dC, dA1, oC, inC)) != before {
				t.Fatal("convert back split → split")
			}

			// Refresh.
			gen, err = e.admin.RefreshShares(ctx, "prescriptions_v1", false)
			if err != nil || gen != 2 {
				t.Fatalf("refresh: %d, %v", gen, err)
			}
			dA2 := e.domain(t, "prescriptions_v1")
			for _, d := range []*pseudonymizer.Domain{dA2, dA1} { // the previous generation still works
				tp, err := pseudonymize(t, d, id)
				if err != nil {
					t.Fatalf("after refresh (generation %d of the service): %v", d.Generation(), err)
				}
				if atRest(t, oA, tp) != before {
					t.Fatal("the pseudonym at rest changed with the refresh")
				}
			}
			if !file {
				md, err := root.KVv2(e.Mount).GetMetadata(ctx, "domains/prescriptions_v1/share")
				if err != nil {
					t.Fatal(err)
				}
				for v, vm := range md.Versions {
					if fmt.Sprint(md.CurrentVersion) != v && !vm.Destroyed {
						t.Errorf("old version %s of the share is not destroyed", v)
					}
				}
			}
			// The next refresh waits while generation 1 is in use; forced, the
			// old k₁ (generation 1) becomes useless.
			if _, err := e.admin.RefreshShares(ctx, "prescriptions_v1", false); !errors.Is(err, keys.ErrConflict) {
				t.Fatalf("refresh while the previous generation is in use: %v", err)
			}
			if _, err := e.admin.RefreshShares(ctx, "prescriptions_v1", true); err != nil {
				t.Fatal(err)
			}
			if _, err := pseudonymize(t, dA1, id); !errors.Is(err, keys.ErrUnavailable) {
				t.Fatalf("the stolen generation-1 k₁: %v, want unavailable", err)
			}
			tp, err = pseudonymize(t, e.domain(t, "prescriptions_v1"), id)
			if err != nil || atRest(t, oA, tp) != before {
				t.Fatalf("generation 3: %v", err)
			}

			// Delete destroys the shares.
			if err := e.admin.DeleteDomain(ctx, "created_v1"); err != nil {
				t.Fatal(err)
			}
			if sec, err := root.Logical().Read(e.SharesMount + "/domains/created_v1"); err != nil || sec != nil {
				t.Fatalf("the plugin still has shares of a deleted domain: %v", err)
			}
		})
	}
}

// TestSplitUnderLoad pseudonymizes without pause through a keys.Cache (as
// the service does) while the shares are refreshed twice and the plugin is
// restarted: no call fails once items that failed UNAVAILABLE are retried,
// and every pseudonym at rest stays the same. Then the plugin is made
// unable to start: items fail UNAVAILABLE and the cache's health degrades;
// once it is back, both recover.
func TestSplitUnderLoad(t *testing.T) {
	e := newSplitEnv(t, false)
	ctx := context.Background()
	e.create(t, "prescriptions_v1", false)
	o := e.owner(t, "prescriptions_v1")
	id := niss(t, 2)
	tp, err := pseudonymize(t, e.domain(t, "prescriptions_v1"), id)
	if err != nil {
		t.Fatal(err)
	}
	want := atRest(t, o, tp)
	if _, err := e.migrate.SplitDomain(ctx, "prescriptions_v1"); err != nil {
		t.Fatal(err)
	}
	// Refreshes back to back: no grace for the previous generation.
	if _, err := e.Client(t).Logical().Write(e.SharesMount+"/"+keyshare.PathConfig, map[string]any{"previous_grace": 0}); err != nil {
		t.Fatal(err)
	}
	cache, err := keys.NewCache(ctx, e.service, &keys.CacheOptions{Interval: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer cache.Close()
	var prepared sync.Map // generation → *pseudonymizer.Domain
	current := func() *pseudonymizer.Domain {
		kd, err := cache.Domain("prescriptions_v1")
		if err != nil {
			t.Error(err)
			return nil
		}
		if d, ok := prepared.Load(kd.Generation); ok {
			return d.(*pseudonymizer.Domain)
		}
		d, err := pseudonymizer.NewDomain(kd)
		if err != nil {
			t.Error(err)
			return nil
		}
		prepared.Store(kd.Generation, d)
		return d
	}
	var calls, retries, failed, wrong atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				calls.Add(1)
				ok := false
				for try := 0; try < 50 && !ok; try++ {
					d := current()
					if d == nil {
						return
					}
					tp, err := pseudonymize(t, d, id)
					switch {
					case errors.Is(err, keys.ErrUnavailable):
						retries.Add(1)
						time.Sleep(20 * time.Millisecond) // a client's backoff, not a synchronization
					case err != nil:
						t.Errorf("pseudonymize: %v", err)
						return
					default:
						ok = true
						if atRest(t, o, tp) != want {
							wrong.Add(1)
						}
					}
				}
				if !ok {
					failed.Add(1)
				}
			}
		})
	}
	waitCalls := func(n int64) {
		base := calls.Load()
		waitfor.Cond(t, 30*time.Second, "calls under load", func() bool { return calls.Load() >= base+n })
	}
	waitCalls(20)
	for range 2 {
		gen, err := e.admin.RefreshShares(ctx, "prescriptions_v1", false)
		if err != nil {
			t.Fatalf("refresh under load: %v", err)
		}
		waitfor.Cond(t, 10*time.Second, "the cache to serve the new share", func() bool {
			kd, err := cache.Domain("prescriptions_v1")
			return err == nil && kd.ShareGeneration == gen
		})
		waitCalls(20)
	}
	e.ReloadPlugin(t, keyshare.Name)
	waitCalls(40)
	close(stop)
	wg.Wait()
	t.Logf("%d calls, %d retries, %d failed, %d wrong", calls.Load(), retries.Load(), failed.Load(), wrong.Load())
	if failed.Load() != 0 || wrong.Load() != 0 {
		t.Fatalf("%d calls failed after retries, %d pseudonyms changed", failed.Load(), wrong.Load())
	}

	// The plugin down: a binary that does not match its registered
	// checksum cannot be started again.
	good := e.Plugin
	e.WritePluginFile(t, keyshare.Name, []byte("#!/bin/sh\nexit 1\n"))
	// Stops the running plugin; starting it again fails.
	_, _ = e.Client(t).Sys().ReloadPluginWithContext(ctx, &api.ReloadPluginInput{Plugin: keyshare.Name})
	waitfor.Cond(t, 30*time.Second, "items to fail UNAVAILABLE", func() bool {
		_, err := pseudonymize(t, current(), id)
		return errors.Is(err, keys.ErrUnavailable)
	})
	waitfor.Cond(t, 30*time.Second, "health to degrade", func() bool { return errors.Is(cache.Health(), keys.ErrUnavailable) })
	e.InstallPlugin(t, good, keyshare.Name)
	waitfor.Cond(t, 60*time.Second, "the plugin to recover", func() bool {
		tp, err := pseudonymize(t, current(), id)
		return err == nil && atRest(t, o, tp) == want
	})
	waitfor.Cond(t, 30*time.Second, "health to recover", func() bool { return cache.Health() == nil })
}
