package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/ehealth-pseudo/pseudonymizer/internal/grpcserver"
	"github.com/ehealth-pseudo/pseudonymizer/keys"
	"github.com/ehealth-pseudo/pseudonymizer/keys/vault"
	"github.com/ehealth-pseudo/pseudonymizer/pseudonymizer"
)

// envPrefix starts the environment variable of each flag.
const envPrefix = "PSEUDONYMIZER_"

// usageError is a mistake in the command line, environment or config file.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, a ...any) error { return &usageError{fmt.Sprintf(format, a...)} }

// config is the command's configuration, from flags, environment and file.
type config struct {
	configFile string
	// version: print the build and exit; nothing else is read or checked.
	version bool

	dev     bool
	dataDir string

	listen        string
	metricsListen string
	healthListen  string
	restListen    string
	restOrigins   string

	tlsCert, tlsKey, tlsClientCA string

	jwtJWKS, jwtKey, jwtIssuer, jwtAudience string

	maxBatch      int
	maxMsgSize    int
	maxConns      int
	maxStreams    int
	streamIdle    time.Duration
	maxSeals      uint64
	rate          float64
	burst         int
	maxPrincipals int

	pollInterval    time.Duration
	healthInterval  time.Duration
	shutdownTimeout time.Duration

	vaultAddr, vaultToken, vaultRoleID, vaultSecretIDFile, vaultCA, vaultMount string
	// vaultSharesMount and shareFile: where the shares of split domains
	// are (the key-share plugin's mount; the service's k₁ in a file
	// instead of KV).
	vaultSharesMount, shareFile string
	// sharesWindow and sharesInFlight tune the micro-batching of the
	// service's round trips to the plugin (vault.SharesOptions).
	sharesWindow   time.Duration
	sharesInFlight int
	// schedBatch: the process runs with SCHED_BATCH (package cpusched).
	schedBatch bool

	logLevel, logFormat string
}

// Defaults.
const (
	defaultDevListen = "127.0.0.1:50051"
	defaultListen    = ":50051"
	defaultRate      = 1000
	defaultBurst     = 2000
	defaultMaxConns  = 1024
)

func (c *config) flags(stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("pseudonymizer", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, usage)
		fs.PrintDefaults()
	}
	fs.StringVar(&c.configFile, "config", "", "JSON config `file` whose keys are flag names")
	fs.BoolVar(&c.version, "version", false, "print the version and VCS revision, and exit")

	fs.BoolVar(&c.dev, "dev", false, "development mode: plaintext on loopback, demo domain in a local key file, principal from x-pseudonymizer-principal")
	fs.StringVar(&c.dataDir, "data-dir", "", "`directory` of the development key file keys.json (default: the user cache dir + /pseudonymizer/dev)")

	fs.StringVar(&c.listen, "listen", "", "gRPC listen `host:port` (default "+defaultDevListen+" with -dev, "+defaultListen+" otherwise)")
	fs.StringVar(&c.metricsListen, "metrics-listen", "127.0.0.1:9090", "`host:port` of the HTTP /metrics endpoint; empty disables it")
	fs.StringVar(&c.restListen, "rest-listen", "", "`host:port` of the REST/JSON gateway (/pseudo/v1/..., same TLS and authentication as gRPC); empty disables it")
	fs.StringVar(&c.restOrigins, "rest-cors-origins", "", "comma-separated browser `origins` (scheme://host[:port]) allowed to call the REST/JSON gateway; others are refused")
	fs.StringVar(&c.healthListen, "health-listen", "", "`host:port` of a plaintext listener serving only grpc.health.v1.Health, for probes that cannot do mTLS (kubelet); empty disables it")

	fs.StringVar(&c.tlsCert, "tls-cert", "", "PEM `file` of the server certificate (chain)")
	fs.StringVar(&c.tlsKey, "tls-key", "", "PEM `file` of the server private key")
	fs.StringVar(&c.tlsClientCA, "tls-client-ca", "", "PEM `file` of the CAs that verify client certificates (enables mTLS)")

	fs.StringVar(&c.jwtJWKS, "jwt-jwks", "", "JWKS `file` of the keys that sign bearer tokens")
	fs.StringVar(&c.jwtKey, "jwt-key", "", "PEM public key `file` that signs bearer tokens")
	fs.StringVar(&c.jwtIssuer, "jwt-issuer", "", "required iss of bearer tokens")
	fs.StringVar(&c.jwtAudience, "jwt-audience", "", "required aud of bearer tokens")

	fs.IntVar(&c.maxBatch, "max-batch", grpcserver.DefaultMaxBatch, "maximum items per call or stream chunk")
	fs.IntVar(&c.maxMsgSize, "max-msg-size", 0, "maximum request message size in `bytes` (default: what -max-batch items of the largest size need)")
	fs.IntVar(&c.maxConns, "max-connections", defaultMaxConns, "concurrent client connections accepted on -listen; further ones wait")
	fs.IntVar(&c.maxStreams, "max-streams", grpcserver.DefaultMaxConcurrentStreams, "concurrent calls per connection")
	fs.DurationVar(&c.streamIdle, "stream-idle-timeout", grpcserver.DefaultStreamIdleTimeout, "a stream whose caller sends nothing for this long ends with DEADLINE_EXCEEDED")
	fs.Uint64Var(&c.maxSeals, "max-seals-per-key", pseudonymizer.DefaultMaxSealsPerKey, "transitInfo values this process seals under one transit key before refusing (rotate keys long before)")
	fs.Float64Var(&c.rate, "rate", defaultRate, "items per second each principal may submit; 0 disables rate limiting")
	fs.IntVar(&c.burst, "burst", defaultBurst, "items a principal may submit at once (at least -max-batch)")
	fs.IntVar(&c.maxPrincipals, "max-principals", 10000, "principals tracked by the rate limiter")

	fs.DurationVar(&c.pollInterval, "poll-interval", keys.DefaultPollInterval, "how often the key store is polled for changes")
	fs.DurationVar(&c.healthInterval, "health-interval", grpcserver.DefaultHealthInterval, "how often the health status is refreshed")
	fs.DurationVar(&c.shutdownTimeout, "shutdown-timeout", 30*time.Second, "how long in-flight calls may run after SIGTERM/SIGINT")

	fs.StringVar(&c.vaultAddr, "vault-addr", "", "Vault `url`s, comma-separated for the nodes of an HA cluster (the key store outside development mode; default $VAULT_ADDR)")
	fs.StringVar(&c.vaultToken, "vault-token", "", "Vault token (prefer $VAULT_TOKEN or AppRole: arguments are visible in ps)")
	fs.StringVar(&c.vaultRoleID, "vault-role-id", "", "AppRole role_id (logs in with AppRole instead of a token)")
	fs.StringVar(&c.vaultSecretIDFile, "vault-secret-id-file", "", "`file` holding the AppRole secret_id")
	fs.StringVar(&c.vaultCA, "vault-ca", "", "PEM `file` of the CAs that verify Vault's TLS certificate (default $VAULT_CACERT)")
	fs.StringVar(&c.vaultMount, "vault-mount", "", "`path` of the KV v2 mount (default pseudonymizer)")
	fs.StringVar(&c.vaultSharesMount, "vault-shares-mount", "", "`path` of the key-share plugin that holds k₂ of split domains (default pseudonymizer-shares)")
	fs.DurationVar(&c.sharesWindow, "vault-shares-window", vault.DefaultSharesWindow, "longest `wait` of a point for others to share its round trip to the key-share plugin while one is in flight (50 windows when -vault-shares-inflight are)")
	fs.IntVar(&c.sharesInFlight, "vault-shares-inflight", vault.DefaultSharesInFlight, "most round trips to the key-share plugin in flight at once before points wait for one to end (fewer, fuller round trips cost less CPU)")
	fs.StringVar(&c.shareFile, "share-file", "", "JSON `file` (mode 0600) of the service's shares k₁ of split domains, written by pseudoctl -share-file (default: k₁ in Vault KV)")

	fs.BoolVar(&c.schedBatch, "sched-batch", false, "run with Linux's SCHED_BATCH scheduling policy: a thread of this process, when woken, does not preempt the running one (for the service, Vault and its plugin on shared cores; docs/split-keys.md)")

	fs.StringVar(&c.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&c.logFormat, "log-format", "json", "json or text")
	return fs
}

// envName is the environment variable of a flag.
func envName(flagName string) string {
	return envPrefix + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// envAliases are earlier names of flags' environment variables, read when
// the flag's own variable (envName) is unset.
var envAliases = map[string]string{"vault-shares-mount": "PSEUDONYMIZER_SHARES_MOUNT"}

// parseConfig layers the flags over the environment over the config file
// over the defaults.
func parseConfig(args []string, getenv func(string) string, stderr io.Writer) (*config, error) {
	c := &config{}
	fs := c.flags(stderr)
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return nil, err
		}
		return nil, &usageError{err.Error()}
	}
	if fs.NArg() > 0 {
		return nil, usagef("unexpected argument %q", fs.Arg(0))
	}
	if c.version {
		return c, nil // only from the command line: not the environment nor the config file
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })

	// Environment, for the flags not on the command line.
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if err != nil || set[f.Name] || f.Name == "version" {
			return
		}
		name := envName(f.Name)
		v, ok := lookup(getenv, name)
		if alias := envAliases[f.Name]; !ok && alias != "" {
			name = alias
			v, ok = lookup(getenv, name)
		}
		if ok {
			if e := fs.Set(f.Name, v); e != nil {
				err = usagef("%s: %v", name, e)
				return
			}
			set[f.Name] = true
		}
	})
	if err != nil {
		return nil, err
	}

	// Config file, for the flags set nowhere else.
	if c.configFile != "" {
		values, err := readConfigFile(c.configFile)
		if err != nil {
			return nil, err
		}
		for name, v := range values {
			f := fs.Lookup(name)
			if f == nil || name == "config" || name == "version" {
				return nil, usagef("%s: unknown key %q", c.configFile, name)
			}
			if set[name] {
				continue
			}
			if err := fs.Set(name, v); err != nil {
				return nil, usagef("%s: key %q: %v", c.configFile, name, err)
			}
		}
	}
	return c, nil
}

// origins returns the -rest-cors-origins list.
func (c *config) origins() []string {
	var out []string
	for o := range strings.SplitSeq(c.restOrigins, ",") {
		if o = strings.TrimSpace(o); o != "" {
			out = append(out, o)
		}
	}
	return out
}

// lookup reads an environment variable; an empty one counts as unset.
func lookup(getenv func(string) string, name string) (string, bool) {
	v := getenv(name)
	return v, v != ""
}

// readConfigFile reads a JSON object of flag values: strings, numbers or
// booleans.
func readConfigFile(path string) (map[string]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading the config file: %v", err)
	}
	var raw map[string]json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&raw); err != nil {
		return nil, usagef("%s: not a JSON object: %v", path, err)
	}
	out := make(map[string]string, len(raw))
	for k, v := range raw {
		var x any
		if err := json.Unmarshal(v, &x); err != nil {
			return nil, usagef("%s: key %q: %v", path, k, err)
		}
		switch x := x.(type) {
		case string:
			out[k] = x
		case bool:
			out[k] = strconv.FormatBool(x)
		case float64:
			out[k] = string(v) // keeps integers as written
		default:
			return nil, usagef("%s: key %q: want a string, number or boolean", path, k)
		}
	}
	return out, nil
}

// defaultDataDir is where the development key file lives by default:
// outside any source tree, so that it is not committed by accident.
func defaultDataDir() string {
	if dir, err := os.UserCacheDir(); err == nil {
		return filepath.Join(dir, "pseudonymizer", "dev")
	}
	return filepath.Join(os.TempDir(), fmt.Sprintf("pseudonymizer-dev-%d", os.Getuid()))
}

// check validates the combination of settings and fills derived defaults.
func (c *config) check(getenv func(string) string) error {
	if c.listen == "" {
		c.listen = defaultListen
		if c.dev {
			c.listen = defaultDevListen
		}
	}
	if c.dev && c.dataDir == "" {
		c.dataDir = defaultDataDir()
	}
	if (c.tlsCert == "") != (c.tlsKey == "") {
		return usagef("-tls-cert and -tls-key go together")
	}
	if c.jwtJWKS != "" && c.jwtKey != "" {
		return usagef("give -jwt-jwks or -jwt-key, not both")
	}
	jwt := c.jwtJWKS != "" || c.jwtKey != ""
	if jwt && (c.jwtIssuer == "" || c.jwtAudience == "") {
		return usagef("bearer tokens need -jwt-issuer and -jwt-audience")
	}
	if c.tlsCert == "" && !c.dev {
		return usagef("TLS is required: give -tls-cert and -tls-key (plaintext only with -dev, on a loopback address)")
	}
	if c.dev {
		// Development mode is loopback-only, whatever else is set: with or
		// without TLS, the dev principal header must not be reachable from
		// another machine. Every listener is checked.
		for _, l := range []struct{ flag, addr string }{{"-listen", c.listen}, {"-health-listen", c.healthListen}, {"-metrics-listen", c.metricsListen}, {"-rest-listen", c.restListen}} {
			if l.addr == "" {
				continue
			}
			if err := grpcserver.CheckLoopbackAddr(l.addr); err != nil {
				return usagef("-dev is loopback-only: %s: %v", l.flag, err)
			}
		}
	}
	if !c.dev && c.tlsClientCA == "" && !jwt {
		return usagef("no way to identify callers: give -tls-client-ca (mTLS) and/or -jwt-jwks or -jwt-key (bearer tokens)")
	}
	if c.tlsClientCA != "" && c.tlsCert == "" {
		return usagef("-tls-client-ca needs -tls-cert and -tls-key")
	}
	if c.maxBatch < 1 {
		return usagef("-max-batch must be at least 1")
	}
	if c.restOrigins != "" && c.restListen == "" {
		return usagef("-rest-cors-origins needs -rest-listen")
	}
	for _, o := range c.origins() {
		if u, err := url.Parse(o); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Path != "" || u.RawQuery != "" || u.User != nil {
			return usagef("-rest-cors-origins: %q is not an origin (scheme://host[:port], no path)", o)
		}
	}
	if c.maxMsgSize == 0 {
		c.maxMsgSize = grpcserver.MaxRecvMsgSizeFor(c.maxBatch)
	}
	if c.maxMsgSize < 1024 {
		return usagef("-max-msg-size must be at least 1024 bytes")
	}
	if c.maxConns < 1 || c.maxStreams < 1 || c.streamIdle <= 0 || c.maxSeals < 1 {
		return usagef("-max-connections, -max-streams, -stream-idle-timeout and -max-seals-per-key must be positive")
	}
	if c.rate < 0 {
		return usagef("-rate must not be negative")
	}
	if c.rate > 0 && c.burst < c.maxBatch {
		return usagef("-burst (%d) must be at least -max-batch (%d): a larger batch could never pass the rate limit", c.burst, c.maxBatch)
	}
	if c.pollInterval <= 0 || c.healthInterval <= 0 || c.shutdownTimeout <= 0 {
		return usagef("-poll-interval, -health-interval and -shutdown-timeout must be positive")
	}
	if c.sharesWindow <= 0 || c.sharesInFlight <= 0 {
		return usagef("-vault-shares-window and -vault-shares-inflight must be positive")
	}
	if c.vaultAddr == "" && !c.dev {
		c.vaultAddr = getenv("VAULT_ADDR")
	}
	switch {
	case c.dev && c.vaultAddr != "":
		return usagef("-dev uses the development key file: drop -vault-addr, or drop -dev")
	case c.dev && c.shareFile != "":
		return usagef("-dev keeps every domain whole (single mode) in the development key file: drop -share-file (split keys need Vault and its key-share plugin)")
	case !c.dev && c.vaultAddr == "":
		return usagef("no key store: give -vault-addr (or VAULT_ADDR), or -dev for the development key file")
	}
	switch c.logFormat {
	case "json", "text":
	default:
		return usagef("-log-format must be json or text")
	}
	return nil
}
