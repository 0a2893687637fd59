// Command pseudoctl administers the pseudonymization domains: it creates,
// changes and deletes domains, rotates and retires transit keys, creates new
// domain versions, and creates, rotates and deletes owner second keys, in
// the file store of development mode or in Vault. It never prints key
// material.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"os/signal"
	"slices"
	"strings"
	"time"

	"github.com/ehealth-pseudo/pseudonymizer/internal/buildinfo"
	"github.com/ehealth-pseudo/pseudonymizer/keys"
	"github.com/ehealth-pseudo/pseudonymizer/keys/vault"
	"github.com/ehealth-pseudo/pseudonymizer/vault/policies"
)

const usage = `Usage:
    pseudoctl [store flags] domain create <name> -audience <uri> [-ttl 5m]
                  [-max-lifetime 24h] [-pseudonymize p1,p2] [-identify p1,p2]
                  [-owners o1,o2] [-convert target=p1,p2 ...] [-split]
    pseudoctl [store flags] domain show [-json] <name>
    pseudoctl [store flags] domain split <name>
    pseudoctl [store flags] domain refresh-shares [-force] <name>
    pseudoctl [store flags] domain list
    pseudoctl [store flags] domain new-version <old> <new> [-audience <uri>]
                  [-max-lifetime <duration>]
    pseudoctl [store flags] domain set-policy <name> [-pseudonymize p1,p2]
                  [-identify p1,p2] [-owners o1,o2] [-convert target=p1,p2 ...]
    pseudoctl [store flags] domain set-ttl <name> [-ttl 5m] [-max-lifetime 24h]
    pseudoctl [store flags] domain disable <name>
    pseudoctl [store flags] domain enable <name>
    pseudoctl [store flags] domain delete <name> -yes
    pseudoctl [store flags] transit-key rotate <domain>
    pseudoctl [store flags] transit-key retire [-force] <domain> <kid>
    pseudoctl [store flags] owner-key create <owner> <domain>
    pseudoctl [store flags] owner-key rotate <owner> <domain> -yes
    pseudoctl [store flags] owner-key delete <owner> <domain> -yes
    pseudoctl policy service | admin | migrate | owner <owner> <domain>
    pseudoctl -version

Store flags (also accepted after the command; the same names as
pseudonymizer's):
    -store file:<path>             the JSON file store of development mode
                                   (default $PSEUDOCTL_STORE)
    -vault-addr <url>              Vault address (default $VAULT_ADDR)
    -vault-token <token>           Vault token (default $VAULT_TOKEN; prefer
                                   the variable: arguments are visible in ps)
    -vault-role-id <id>            log in with AppRole instead of a token
                                   (default $VAULT_ROLE_ID)
    -vault-secret-id-file <path>   file holding the AppRole secret_id
                                   (default $VAULT_SECRET_ID_FILE)
    -vault-ca <file>               PEM CA certificates that verify Vault's TLS
                                   (default $VAULT_CACERT)
    -vault-mount <path>            KV v2 mount (default pseudonymizer)
    -vault-shares-mount <path>     mount of the key-share plugin (default
                                   pseudonymizer-shares)
    -share-file <path>             the service's shares k1 of split domains
                                   are in this file, not in KV (default
                                   $PSEUDOCTL_SHARE_FILE)
(-approle-role-id and -approle-secret-id-file are old names of the AppRole
flags.)

A transit key is retired once every transit pseudonym sealed under it has
expired: transit-key retire refuses until the longest lifetime the domain
accepts (its max lifetime, at least its ttl) plus 60 s of clock skew have
passed since the last rotation, unless -force. Rotating the scalar k is
done by creating a new domain version and converting the stored pseudonyms.

domain set-policy replaces the lists it is given and keeps the others; an
empty list ("") clears one; -convert replaces every convert target. It
checks the new policy against every domain, like domain create. set-ttl
changes the ttl and/or the max lifetime.

domain disable stops the service from serving a domain, reversibly:
every call on it is refused as for a domain that does not exist (services
notice at their next poll), while all its keys stay; domain enable serves
it again, with the same keys, so the same pseudonyms. Its owners keep
opening what they hold.

domain delete removes the domain and all its keys, its scalar included:
services drop it at their next poll, and its pseudonyms can never be
identified or converted again. owner-key rotate and delete destroy the
owner's current k2, so that the owner's stored double pseudonyms can no
longer be matched. All three want -yes.

-max-lifetime is the longest lifetime (exp - iat) of a transit pseudonym
the service accepts for identify and convert (owners make transit forms
with their own lifetimes); at least the ttl.

A new version copies the ttl, max lifetime and policy of the old domain, and
gets its own audience: -audience, or else one derived from the old audience
by replacing a trailing version "v<n>" (after ':' '/' '.' '_' '-') with that
of the new name ("urn:x:prescriptions:v1" -> "urn:x:prescriptions:v2" for
prescriptions_v2), or else by appending ":<new name>".

Split keys (Vault with the key-share plugin only; see README): a domain's
scalar k = k1*k2, with k1 the service's (in KV, or in -share-file) and k2
in the plugin, which never returns it. domain create -split makes a domain
split from the start (k never exists). domain split hands an existing
domain's k to the plugin once, writes k1, and destroys every KV version of
k; pseudonyms do not change. It needs a token with the migrate policy
besides the admin one; run again after a failure, it resumes.
domain refresh-shares replaces (k1, k2) by (k1*r, k2/r): pseudonyms do not
change, and the old k1 is useless once the plugin drops its generation (at
the next refresh, refused while that generation is still in use, unless
-force). domain show prints the mode and the generations.

Every domain needs its own audience, and a principal that owns any domain
may not be listed in -identify of any domain ("*" is fine: the service
never lets owners identify). domain create and new-version refuse a domain
that would break either rule.

Exit status: 0 on success, 1 on error, 2 on a usage error.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr, os.Getenv)
	stop()
	os.Exit(code)
}

// usageError is a command line mistake: exit status 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, a ...any) error { return &usageError{fmt.Sprintf(format, a...)} }

// storeFlags says which key store to use.
type storeFlags struct {
	store, addr, token, roleID, secretIDFile, ca, mount string
	sharesMount, shareFile                              string
}

// aliases are the old names of store flags, accepted but not documented.
var aliases = map[string]string{"approle-role-id": "vault-role-id", "approle-secret-id-file": "vault-secret-id-file"}

// register defines the store flags on fs, with the current values as
// defaults, so that they can be given before or after the command.
func (sf *storeFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&sf.store, "store", sf.store, "file:<path> of the file store")
	fs.StringVar(&sf.addr, "vault-addr", sf.addr, "Vault address")
	fs.StringVar(&sf.token, "vault-token", sf.token, "Vault token")
	fs.StringVar(&sf.roleID, "vault-role-id", sf.roleID, "AppRole role_id")
	fs.StringVar(&sf.secretIDFile, "vault-secret-id-file", sf.secretIDFile, "file of the AppRole secret_id")
	for old, name := range aliases {
		f := fs.Lookup(name)
		fs.Var(f.Value, old, f.Usage)
	}
	fs.StringVar(&sf.ca, "vault-ca", sf.ca, "PEM file of Vault's CA")
	fs.StringVar(&sf.mount, "vault-mount", sf.mount, "KV v2 mount")
	fs.StringVar(&sf.sharesMount, "vault-shares-mount", sf.sharesMount, "mount of the key-share plugin")
	fs.StringVar(&sf.shareFile, "share-file", sf.shareFile, "file of the service's shares k1 (instead of KV)")
}

// store is what both key stores (keys.FileStore, vault.Store) implement.
type store interface {
	keys.Admin
	keys.Creator
}

// open opens the store the flags name. create says whether a missing file
// store may be created.
func (sf *storeFlags) open(ctx context.Context, create bool, stderr io.Writer) (store, func(), error) {
	switch {
	case sf.store != "":
		path, ok := strings.CutPrefix(sf.store, "file:")
		if !ok || path == "" {
			return nil, nil, usagef("-store must be file:<path>")
		}
		fs, err := keys.OpenFileStore(path, create)
		if err != nil {
			return nil, nil, err
		}
		return fs, func() {}, nil
	case sf.addr != "":
		st, err := vault.Open(ctx, vault.Config{
			Address:      sf.addr,
			CACert:       sf.ca,
			Token:        sf.token,
			RoleID:       sf.roleID,
			SecretIDFile: sf.secretIDFile,
			Mount:        sf.mount,
			Shares:       vault.ShareConfig{Mount: sf.sharesMount, File: sf.shareFile},
			// Administrators never read scalars.
			Mode:   vault.Owner,
			Logger: slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
		})
		if err != nil {
			return nil, nil, err
		}
		return st, func() { _ = st.Close() }, nil
	}
	return nil, nil, usagef("no key store: give -store file:<path> (or PSEUDOCTL_STORE), or -vault-addr (or VAULT_ADDR)")
}

// run is pseudoctl, minus the process: it returns the exit status.
func run(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	if buildinfo.Requested(args) {
		buildinfo.Print(stdout, "pseudoctl")
		return 0
	}
	err := runErr(ctx, args, stdout, stderr, getenv)
	var ue *usageError
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		fmt.Fprint(stdout, usage)
		return 0
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "pseudoctl: %v\n\n%s", err, usage)
		return 2
	default:
		fmt.Fprintf(stderr, "pseudoctl: %v\n", err)
		return 1
	}
}

func runErr(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) error {
	sf := &storeFlags{store: getenv("PSEUDOCTL_STORE"), addr: getenv("VAULT_ADDR"), token: getenv("VAULT_TOKEN"),
		roleID: getenv("VAULT_ROLE_ID"), secretIDFile: getenv("VAULT_SECRET_ID_FILE"), ca: getenv("VAULT_CACERT"),
		shareFile: getenv("PSEUDOCTL_SHARE_FILE")}
	top := newFlagSet("pseudoctl")
	sf.register(top)
	if err := top.Parse(args); err != nil {
		return err
	}
	args = top.Args()
	if len(args) == 0 {
		return usagef("no command")
	}
	name := args[0]
	if len(args) > 1 && name != "policy" {
		name += " " + args[1]
		args = args[2:]
	} else {
		args = args[1:]
	}
	cmd, ok := commands[name]
	if !ok {
		return usagef("unknown command %q", name)
	}
	fs := newFlagSet("pseudoctl " + name)
	sf.register(fs)
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	return cmd(&call{ctx: ctx, stdout: stdout, stderr: stderr, sf: sf, fs: fs, args: args})
}

// commands are pseudoctl's commands by name ("policy" has none, the others
// a noun and a verb).
var commands = map[string]func(*call) error{
	"policy":                policyCmd,
	"domain create":         domainCreate,
	"domain show":           domainShow,
	"domain list":           domainList,
	"domain new-version":    domainNewVersion,
	"domain set-policy":     domainSetPolicy,
	"domain set-ttl":        domainSetTTL,
	"domain delete":         domainDelete,
	"domain disable":        domainDisable,
	"domain enable":         domainEnable,
	"domain split":          domainSplit,
	"domain refresh-shares": domainRefreshShares,
	"transit-key rotate":    transitKeyRotate,
	"transit-key retire":    transitKeyRetire,
	"owner-key create":      ownerKeyCreate,
	"owner-key rotate":      ownerKeyRotate,
	"owner-key delete":      ownerKeyDelete,
}

// now is pseudoctl's clock (transit-key retire); tests replace it.
var now = time.Now

// call is one invocation of a command: fs has the store flags; the command
// adds its own, then parses args with parse or withStore.
type call struct {
	ctx            context.Context
	stdout, stderr io.Writer
	sf             *storeFlags
	fs             *flag.FlagSet
	args           []string
}

// parse parses the command's flags and n positional arguments (any number
// when n < 0).
func (c *call) parse(n int) ([]string, error) { return parse(c.fs, c.args, n) }

// withStore parses n positional arguments (after the command's own flags
// are registered), opens the store and runs f on it.
func (c *call) withStore(n int, f func(st store, pos []string) error) error {
	pos, err := c.parse(n)
	if err != nil {
		return err
	}
	st, done, err := c.sf.open(c.ctx, false, c.stderr)
	if err != nil {
		return err
	}
	defer done()
	return f(st, pos)
}

func policyCmd(c *call) error {
	pos, err := c.parse(-1)
	if err != nil {
		return err
	}
	return printPolicy(c.stdout, pos)
}

func domainCreate(c *call) error {
	fs, ctx := c.fs, c.ctx
	audience := fs.String("audience", "", "URI naming the domain (required)")
	ttl := fs.Duration("ttl", keys.DefaultTTL, "lifetime of pseudonyms in transit")
	maxLifetime := fs.Duration("max-lifetime", keys.DefaultMaxLifetime, "longest lifetime of a transit pseudonym the service accepts")
	pseudonymize := fs.String("pseudonymize", "", "comma-separated principals that may pseudonymize")
	identify := fs.String("identify", "", "comma-separated principals that may identify")
	owners := fs.String("owners", "", "comma-separated principals of the domain's owners")
	convert := convertFlag(fs)
	split := fs.Bool("split", false, "create the domain with split keys: k2 drawn by the Vault plugin, k1 by pseudoctl; k never exists")
	pos, err := c.parse(1)
	if err != nil {
		return err
	}
	if *audience == "" {
		return usagef("domain create: -audience is required")
	}
	if *ttl <= 0 {
		return usagef("domain create: -ttl must be positive")
	}
	if *maxLifetime <= 0 {
		return usagef("domain create: -max-lifetime must be positive")
	}
	st, done, err := c.sf.open(ctx, true, c.stderr)
	if err != nil {
		return err
	}
	defer done()
	spec := keys.DomainSpec{
		Name:     pos[0],
		Audience: *audience,
		TTL:      *ttl,
		Policy: keys.Policy{
			Pseudonymize: list(*pseudonymize),
			Identify:     list(*identify),
			Owners:       list(*owners),
			Convert:      convert,
		},
	}
	if err := checkSet(ctx, st, c.stderr, spec); err != nil {
		return err
	}
	d, err := st.CreateDomainWith(ctx, spec, keys.DomainOptions{MaxLifetime: *maxLifetime, Split: *split})
	if err != nil {
		return err
	}
	fmt.Fprintf(c.stdout, "created domain %s (audience %s, ttl %v, max lifetime %v, active transit key %s, mode %s)\n",
		d.Name, d.Audience, d.TTL, d.EffectiveMaxLifetime(), d.Transit.Active, d.Mode)
	return nil
}

// convertFlag defines the repeatable -convert target=p1,p2 on fs.
func convertFlag(fs *flag.FlagSet) map[string][]string {
	convert := map[string][]string{}
	fs.Func("convert", "`target=p1,p2`: principals that may convert this domain's pseudonyms into target (repeatable)", func(v string) error {
		target, who, ok := strings.Cut(v, "=")
		if !ok || target == "" || who == "" {
			return errors.New("want target=principal1,principal2")
		}
		convert[target] = append(convert[target], list(who)...)
		return nil
	})
	return convert
}

func domainSetPolicy(c *call) error {
	fs := c.fs
	pseudonymize := fs.String("pseudonymize", "", "comma-separated principals that may pseudonymize")
	identify := fs.String("identify", "", "comma-separated principals that may identify")
	owners := fs.String("owners", "", "comma-separated principals of the domain's owners")
	convert := convertFlag(fs)
	return c.withStore(1, func(st store, pos []string) error {
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		if !set["pseudonymize"] && !set["identify"] && !set["owners"] && !set["convert"] {
			return usagef("domain set-policy: give -pseudonymize, -identify, -owners or -convert")
		}
		d, err := st.Domain(c.ctx, pos[0])
		if err != nil {
			return err
		}
		p := d.Policy.Clone()
		if set["pseudonymize"] {
			p.Pseudonymize = list(*pseudonymize)
		}
		if set["identify"] {
			p.Identify = list(*identify)
		}
		if set["owners"] {
			p.Owners = list(*owners)
		}
		if set["convert"] {
			p.Convert = convert
		}
		spec := keys.DomainSpec{Name: d.Name, Audience: d.Audience, TTL: d.TTL, Policy: p}
		if err := checkSet(c.ctx, st, c.stderr, spec); err != nil {
			return err
		}
		if err := st.SetPolicy(c.ctx, d.Name, p); err != nil {
			return err
		}
		fmt.Fprintf(c.stdout, "domain %s: policy set; services apply it at their next poll\n", d.Name)
		return nil
	})
}

func domainSetTTL(c *call) error {
	ttl := c.fs.Duration("ttl", 0, "lifetime of pseudonyms in transit")
	maxLifetime := c.fs.Duration("max-lifetime", 0, "longest lifetime of a transit pseudonym the service accepts")
	return c.withStore(1, func(st store, pos []string) error {
		if *ttl < 0 || *maxLifetime < 0 || *ttl == 0 && *maxLifetime == 0 {
			return usagef("domain set-ttl: give a positive -ttl and/or -max-lifetime")
		}
		if err := st.SetLifetimes(c.ctx, pos[0], *ttl, *maxLifetime); err != nil {
			return err
		}
		d, err := st.Domain(c.ctx, pos[0])
		if err != nil {
			return err
		}
		fmt.Fprintf(c.stdout, "domain %s: ttl %v, max lifetime %v\n", d.Name, d.TTL, d.EffectiveMaxLifetime())
		return nil
	})
}

func domainDelete(c *call) error {
	yes := c.fs.Bool("yes", false, "confirm: the domain's pseudonyms can never be identified again")
	return c.withStore(1, func(st store, pos []string) error {
		if !*yes {
			return usagef("domain delete: deleting %s destroys its keys: its pseudonyms can never be identified or converted again; add -yes to confirm", pos[0])
		}
		if err := st.DeleteDomain(c.ctx, pos[0]); err != nil {
			return err
		}
		fmt.Fprintf(c.stdout, "domain %s deleted; services drop it at their next poll\n", pos[0])
		return nil
	})
}

func domainDisable(c *call) error { return setDisabled(c, true) }

func domainEnable(c *call) error { return setDisabled(c, false) }

// setDisabled disables or enables the domain named on the command line.
func setDisabled(c *call, disabled bool) error {
	return c.withStore(1, func(st store, pos []string) error {
		if err := st.SetDisabled(c.ctx, pos[0], disabled); err != nil {
			return err
		}
		if disabled {
			fmt.Fprintf(c.stdout, "domain %s disabled: services refuse its calls from their next poll; its keys are kept (domain enable %s)\n", pos[0], pos[0])
		} else {
			fmt.Fprintf(c.stdout, "domain %s enabled: services serve it again from their next poll, with the same keys\n", pos[0])
		}
		return nil
	})
}

func domainShow(c *call) error {
	asJSON := c.fs.Bool("json", false, "print JSON")
	return c.withStore(1, func(st store, pos []string) error {
		d, err := st.Domain(c.ctx, pos[0])
		if err != nil {
			return err
		}
		var ss *vault.ShareStatus
		if vs, ok := st.(*vault.Store); ok && d.Mode == keys.ModeSplit {
			if ss, err = vs.ShareStatus(c.ctx, d.Name); err != nil {
				return err
			}
		}
		return show(c.stdout, d, ss, *asJSON)
	})
}

// splitStore is the Vault store, the only one with split keys.
func splitStore(st store) (*vault.Store, error) {
	vs, ok := st.(*vault.Store)
	if !ok {
		return nil, fmt.Errorf("%w: split keys need Vault and its key-share plugin: the file store keeps the single mode", keys.ErrInvalid)
	}
	return vs, nil
}

func domainSplit(c *call) error {
	return c.withStore(1, func(st store, pos []string) error {
		vs, err := splitStore(st)
		if err != nil {
			return err
		}
		gen, err := vs.SplitDomain(c.ctx, pos[0])
		if errors.Is(err, keys.ErrDenied) {
			return fmt.Errorf("%w (splitting reads k once: the token needs the migrate policy, see pseudoctl policy migrate)", err)
		}
		if err != nil {
			return err
		}
		fmt.Fprintf(c.stdout, "domain %s: split (share generation %d); every KV version of k is destroyed; services use the shares at their next poll; pseudonyms do not change\n", pos[0], gen)
		return nil
	})
}

func domainRefreshShares(c *call) error {
	force := c.fs.Bool("force", false, "drop the previous generation even if a service used it recently")
	return c.withStore(1, func(st store, pos []string) error {
		vs, err := splitStore(st)
		if err != nil {
			return err
		}
		gen, err := vs.RefreshShares(c.ctx, pos[0], *force)
		if err != nil {
			return err
		}
		fmt.Fprintf(c.stdout, "domain %s: shares refreshed (generation %d); services use them at their next poll; the previous generation is accepted until the next refresh; pseudonyms do not change\n", pos[0], gen)
		return nil
	})
}

func domainList(c *call) error {
	return c.withStore(0, func(st store, _ []string) error {
		names, err := st.Domains(c.ctx)
		if err != nil {
			return err
		}
		for _, n := range names {
			fmt.Fprintln(c.stdout, n)
		}
		return nil
	})
}

func domainNewVersion(c *call) error {
	ctx := c.ctx
	audience := c.fs.String("audience", "", "URI naming the new version (default: derived from the old audience)")
	maxLifetime := c.fs.Duration("max-lifetime", 0, "longest lifetime of a transit pseudonym the service accepts (default: that of the old domain)")
	return c.withStore(2, func(st store, pos []string) error {
		if *maxLifetime < 0 {
			return usagef("domain new-version: -max-lifetime must be positive")
		}
		od, err := st.Domain(ctx, pos[0])
		if err != nil {
			return err
		}
		spec, err := keys.NextVersionSpec(od, pos[1])
		if err != nil {
			return err
		}
		if spec.Audience = *audience; spec.Audience == "" {
			spec.Audience = keys.NextAudience(od.Audience, pos[1])
			if !keys.ValidAudience(spec.Audience) {
				return fmt.Errorf("%w: the audience derived for %s from that of %s, %q, is not a valid URI: give -audience",
					keys.ErrInvalid, pos[1], pos[0], spec.Audience)
			}
		}
		opts := keys.DomainOptions{MaxLifetime: od.MaxLifetime}
		if *maxLifetime > 0 {
			opts.MaxLifetime = *maxLifetime
		}
		if err := checkSet(ctx, st, c.stderr, spec); err != nil {
			return err
		}
		d, err := st.NewVersionWith(ctx, pos[0], spec, opts)
		if err != nil {
			return err
		}
		fmt.Fprintf(c.stdout, "created domain %s from %s (audience %s, max lifetime %v, active transit key %s); the owners of %s may now convert to %s\n",
			d.Name, pos[0], d.Audience, d.EffectiveMaxLifetime(), d.Transit.Active, pos[0], d.Name)
		return nil
	})
}

func transitKeyRotate(c *call) error {
	return c.withStore(1, func(st store, pos []string) error {
		kid, err := st.RotateTransitKey(c.ctx, pos[0])
		if err != nil {
			return err
		}
		fmt.Fprintf(c.stdout, "domain %s: transit key %s is active; retire the previous ones once the pseudonyms in transit have expired\n", pos[0], kid)
		return nil
	})
}

func transitKeyRetire(c *call) error {
	force := c.fs.Bool("force", false, "retire before every pseudonym sealed under the key has expired")
	return c.withStore(2, func(st store, pos []string) error {
		if !*force {
			d, err := st.Domain(c.ctx, pos[0])
			if err != nil {
				return err
			}
			if err := retirable(d, pos[1], now()); err != nil {
				return err
			}
		}
		if err := st.RetireTransitKey(c.ctx, pos[0], pos[1]); err != nil {
			return err
		}
		fmt.Fprintf(c.stdout, "domain %s: transit key %s retired\n", pos[0], pos[1])
		return nil
	})
}

// retirable says whether kid of d may be retired at t: once the longest
// lifetime of a transit pseudonym plus the skew have passed since the last
// rotation (see keys.Domain.RetireAfter). The active key and unknown kids
// are left to the store to refuse.
func retirable(d *keys.Domain, kid string, t time.Time) error {
	if _, ok := d.Transit.Keys[kid]; !ok || kid == d.Transit.Active {
		return nil
	}
	wait := max(d.TTL, d.EffectiveMaxLifetime()) + keys.RetireSkew
	after := d.RetireAfter()
	if after.IsZero() {
		return fmt.Errorf("domain %s: the time of the last rotation is unknown (rotated by an older pseudoctl): retire %s with -force once %v have passed since that rotation",
			d.Name, kid, wait)
	}
	if t.Before(after) {
		return fmt.Errorf("domain %s: transit key %s may still seal live pseudonyms: retire it after %s (%v after the rotation to %s at %s: max lifetime plus 60 s skew), or give -force",
			d.Name, kid, after.Format(time.RFC3339), wait, d.Transit.Active, d.Transit.ActiveSince.Format(time.RFC3339))
	}
	return nil
}

func ownerKeyRotate(c *call) error {
	yes := c.fs.Bool("yes", false, "confirm: the current k2 is destroyed")
	return c.withStore(2, func(st store, pos []string) error {
		if !*yes {
			return usagef("owner-key rotate: the current k2 of %s for %s is destroyed: double pseudonyms made with it can no longer be matched; add -yes to confirm", pos[0], pos[1])
		}
		if err := st.RotateOwnerKey(c.ctx, pos[0], pos[1]); err != nil {
			return err
		}
		fmt.Fprintf(c.stdout, "replaced the second key (k2) of owner %s for domain %s\n", pos[0], pos[1])
		return nil
	})
}

func ownerKeyDelete(c *call) error {
	yes := c.fs.Bool("yes", false, "confirm: the k2 is destroyed")
	return c.withStore(2, func(st store, pos []string) error {
		if !*yes {
			return usagef("owner-key delete: the k2 of %s for %s is destroyed: double pseudonyms made with it can no longer be matched; add -yes to confirm", pos[0], pos[1])
		}
		if err := st.DeleteOwnerKey(c.ctx, pos[0], pos[1]); err != nil {
			return err
		}
		fmt.Fprintf(c.stdout, "deleted the second key (k2) of owner %s for domain %s\n", pos[0], pos[1])
		return nil
	})
}

func ownerKeyCreate(c *call) error {
	return c.withStore(2, func(st store, pos []string) error {
		if err := st.CreateOwnerKey(c.ctx, pos[0], pos[1]); err != nil {
			return err
		}
		fmt.Fprintf(c.stdout, "created the second key (k2) of owner %s for domain %s\n", pos[0], pos[1])
		return nil
	})
}

func newFlagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	return fs
}

// parse parses flags and positional arguments in any order; it wants n
// positional arguments (any number when n < 0).
func parse(fs *flag.FlagSet, args []string, n int) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, usagef("%s: %v", fs.Name(), err)
		}
		args = fs.Args()
		if len(args) == 0 {
			break
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
	if n >= 0 && len(pos) != n {
		return nil, usagef("%s: want %d argument(s), got %d", fs.Name(), n, len(pos))
	}
	return pos, nil
}

// list splits a comma-separated list, dropping empty items.
func list(s string) []string {
	var l []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			l = append(l, p)
		}
	}
	return l
}

// domainInfo is what pseudoctl shows of a domain: no key material.
type domainInfo struct {
	Name     string `json:"name"`
	Audience string `json:"audience"`
	TTL      string `json:"ttl"`
	// MaxLifetime is the effective max lifetime (the default when the
	// domain sets none; DefaultMaxLifetime says which).
	MaxLifetime        string      `json:"max_lifetime"`
	DefaultMaxLifetime bool        `json:"default_max_lifetime,omitempty"`
	Active             string      `json:"active"`
	ActiveSince        string      `json:"active_since,omitempty"`
	Kids               []string    `json:"kids"`
	Policy             keys.Policy `json:"policy"`
	Generation         uint64      `json:"generation"`
	// Mode is "single" or "split"; Shares the generations of a split
	// domain's shares.
	Mode   string     `json:"mode"`
	Shares *shareInfo `json:"shares,omitempty"`
	// Disabled: the service refuses every call on the domain.
	Disabled bool `json:"disabled,omitempty"`
}

type shareInfo struct {
	// Service is the generation of the service's share k1 (0 when this
	// token cannot read it); Plugin and PluginPrevious those the plugin
	// accepts.
	Service          uint64 `json:"service_generation"`
	Plugin           uint64 `json:"plugin_generation"`
	PluginPrevious   uint64 `json:"plugin_previous_generation,omitempty"`
	PreviousLastUsed string `json:"previous_last_used,omitempty"`
	Origin           string `json:"origin"`
}

func show(w io.Writer, d *keys.Domain, ss *vault.ShareStatus, asJSON bool) error {
	info := domainInfo{
		Name:               d.Name,
		Audience:           d.Audience,
		TTL:                d.TTL.String(),
		MaxLifetime:        d.EffectiveMaxLifetime().String(),
		DefaultMaxLifetime: d.MaxLifetime == 0,
		Active:             d.Transit.Active,
		ActiveSince:        keys.FormatActiveSince(d.Transit.ActiveSince),
		Kids:               d.Transit.Kids(),
		Policy:             d.Policy,
		Generation:         d.Generation,
		Mode:               d.Mode.String(),
		Disabled:           d.Disabled,
	}
	if ss != nil && ss.Plugin != nil {
		info.Shares = &shareInfo{Service: ss.ServiceGeneration, Plugin: ss.Plugin.Generation, PluginPrevious: ss.Plugin.PreviousGeneration,
			PreviousLastUsed: ss.Plugin.PreviousLastUsed, Origin: ss.Plugin.Origin}
	}
	if asJSON {
		e := json.NewEncoder(w)
		e.SetIndent("", "  ")
		return e.Encode(info)
	}
	p := d.Policy
	fmt.Fprintf(w, "domain:        %s\n", info.Name)
	fmt.Fprintf(w, "audience:      %s\n", info.Audience)
	fmt.Fprintf(w, "ttl:           %s\n", info.TTL)
	if info.DefaultMaxLifetime {
		fmt.Fprintf(w, "max lifetime:  %s (default)\n", info.MaxLifetime)
	} else {
		fmt.Fprintf(w, "max lifetime:  %s\n", info.MaxLifetime)
	}
	fmt.Fprintf(w, "transit keys:  %s (active %s)\n", strings.Join(info.Kids, ", "), info.Active)
	if info.ActiveSince != "" {
		fmt.Fprintf(w, "rotated:       %s (older keys may be retired after %s)\n", info.ActiveSince, d.RetireAfter().Format(time.RFC3339))
	}
	fmt.Fprintf(w, "pseudonymize:  %s\n", strings.Join(p.Pseudonymize, ", "))
	fmt.Fprintf(w, "identify:      %s\n", strings.Join(p.Identify, ", "))
	fmt.Fprintf(w, "owners:        %s\n", strings.Join(p.Owners, ", "))
	for _, target := range sortedKeys(p.Convert) {
		fmt.Fprintf(w, "convert to %s: %s\n", target, strings.Join(p.Convert[target], ", "))
	}
	fmt.Fprintf(w, "generation:    %d\n", info.Generation)
	fmt.Fprintf(w, "mode:          %s\n", info.Mode)
	if info.Disabled {
		fmt.Fprintf(w, "status:        disabled (the service refuses its calls; pseudoctl domain enable %s)\n", info.Name)
	}
	if s := info.Shares; s != nil {
		fmt.Fprintf(w, "shares:        service k1 generation %d; plugin k2 generation %d", s.Service, s.Plugin)
		if s.PluginPrevious != 0 {
			fmt.Fprintf(w, " (previous %d accepted, last used %s)", s.PluginPrevious, s.PreviousLastUsed)
		}
		fmt.Fprintf(w, "; %s\n", s.Origin)
	}
	return nil
}

// checkSet refuses a domain that would break an invariant spanning domains
// (see keys.ValidateSet: unique audiences, owners never identify). It reads
// every domain of the store, puts spec in place of the domain of the same
// name, if any, and fails when spec's domain is involved in a violation,
// with an error naming the other domain and, for owners, the principal.
// Violations among the other domains exist already: they are reported on
// stderr, and do not block. Domains that do not load (invalid) are skipped
// with a warning.
//
// It is not atomic: a domain created meanwhile by another administrator is
// not seen. The service checks the whole set again when it loads it.
func checkSet(ctx context.Context, st store, stderr io.Writer, spec keys.DomainSpec) error {
	names, err := st.Domains(ctx)
	if err != nil {
		return fmt.Errorf("checking the other domains: %w", err)
	}
	set := []*keys.Domain{{Name: spec.Name, Audience: spec.Audience, Policy: spec.Policy}}
	for _, name := range names {
		if name == spec.Name {
			continue
		}
		d, err := st.Domain(ctx, name)
		switch {
		case errors.Is(err, keys.ErrUnknownDomain):
			continue // deleted meanwhile
		case errors.Is(err, keys.ErrInvalid):
			fmt.Fprintf(stderr, "pseudoctl: warning: domain %s not checked against %s: %v\n", name, spec.Name, err)
			continue
		case err != nil:
			return fmt.Errorf("checking the other domains: %w", err)
		}
		set = append(set, d)
	}
	errs := keys.ValidateSet(set)
	if err := errs[spec.Name]; err != nil {
		return err
	}
	// Every violation names both its domains: these do not involve spec.
	for _, name := range names {
		if err := errs[name]; err != nil {
			fmt.Fprintf(stderr, "pseudoctl: warning: %v\n", err)
		}
	}
	return nil
}

func printPolicy(w io.Writer, pos []string) error {
	switch {
	case len(pos) == 1 && pos[0] == "service":
		fmt.Fprint(w, policies.Service)
	case len(pos) == 1 && pos[0] == "admin":
		fmt.Fprint(w, policies.Admin)
	case len(pos) == 1 && pos[0] == "migrate":
		fmt.Fprint(w, policies.Migrate)
	case len(pos) == 3 && pos[0] == "owner":
		p, err := policies.Owner(pos[1], pos[2])
		if err != nil {
			return err
		}
		fmt.Fprint(w, p)
	default:
		return usagef("policy: want service, admin, migrate, or owner <owner> <domain>")
	}
	return nil
}

func sortedKeys(m map[string][]string) []string {
	return slices.Sorted(maps.Keys(m))
}
