package vault

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/ehealth-pseudo/pseudonymizer/keys"
)

// Config says how to reach and log in to Vault. Empty fields take the
// values of the VAULT_* environment variables the Vault client reads
// (VAULT_ADDR, VAULT_TOKEN, VAULT_CACERT, …).
type Config struct {
	// Address of Vault, such as "https://vault.example:8200", or the
	// addresses of the nodes of a Vault HA cluster separated by commas,
	// such as "https://10.0.0.1:8200,https://10.0.0.2:8200,https://10.0.0.3:8200".
	// With several addresses the store follows the active node: a request
	// goes to the node that answered last and, when that node fails (a
	// network error, a 5xx such as sealed or "local node not active") or
	// is a standby, to the next ones, each at most once per request (and
	// within its context); the store then sticks to the node that
	// answered. Login and token renewal go the same way. Requests ask
	// standbys not to forward them, so only the active node serves the
	// store. All nodes share CACert.
	Address string
	// CACert is a PEM file of the CA certificates that verify Vault's TLS
	// certificate.
	CACert string

	// Token logs in with a token (development). When Token, RoleID and
	// VAULT_TOKEN are empty, Open fails.
	Token string
	// RoleID and SecretID (or SecretIDFile, whose content is trimmed) log
	// in with AppRole (production). They take precedence over Token.
	RoleID       string
	SecretID     string
	SecretIDFile string
	// AppRoleMount is the path of the AppRole auth method; "approle" when
	// empty.
	AppRoleMount string

	// Mount is the path of the KV v2 secrets engine; DefaultMount when
	// empty.
	Mount string
	// Mode is Service (the default) or Owner.
	Mode Mode
	// Shares says where the shares of split domains are (the key-share
	// plugin's mount, the service's share k₁ in KV or a file); empty
	// fields take the defaults (DefaultSharesMount, k₁ in KV). See
	// [Store.SetShares]. (cmd/pseudonymizer sets them from its flags
	// -vault-shares-mount and -share-file.)
	Shares ShareConfig
	// Timeout of one request to Vault; 30 s when zero.
	Timeout time.Duration
	// MaxRetries of a request that failed on the network or with a 5xx;
	// the client's default (2) when zero, none when negative.
	MaxRetries int
	// Logger receives the authentication events (never a token);
	// slog.Default() when nil.
	Logger *slog.Logger
}

// Open connects to Vault, logs in and starts renewing the token in the
// background. It fails with an error wrapping keys.ErrUnavailable when Vault
// cannot be reached and keys.ErrDenied when the credentials are refused.
// Call Close to stop renewing.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	vc := api.DefaultConfig()
	if vc.Error != nil {
		return nil, fmt.Errorf("vault: reading the environment: %v", vc.Error)
	}
	if cfg.Address != "" {
		vc.Address = cfg.Address
	}
	var nodes []*url.URL
	if strings.Contains(vc.Address, ",") {
		var err error
		if nodes, err = splitAddresses(vc.Address); err != nil {
			return nil, err
		}
		vc.Address = nodes[0].String()
	}
	vc.Timeout = 30 * time.Second
	if cfg.Timeout > 0 {
		vc.Timeout = cfg.Timeout
	}
	switch {
	case cfg.MaxRetries > 0:
		vc.MaxRetries = cfg.MaxRetries
	case cfg.MaxRetries < 0:
		vc.MaxRetries = 0
	}
	if cfg.CACert != "" {
		if err := vc.ConfigureTLS(&api.TLSConfig{CACert: cfg.CACert}); err != nil {
			return nil, fmt.Errorf("vault: CA certificate %s: %v", cfg.CACert, err)
		}
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	if len(nodes) > 1 {
		t, ok := vc.HttpClient.Transport.(*http.Transport)
		if !ok {
			return nil, fmt.Errorf("vault: unexpected HTTP transport %T", vc.HttpClient.Transport)
		}
		vc.HttpClient.Transport = failoverTransport(t, nodes, vc.Timeout, log)
	}
	client, err := api.NewClient(vc)
	if err != nil {
		return nil, fmt.Errorf("vault: %v", err)
	}
	a := &authenticator{client: client, log: log, stop: make(chan struct{}), done: make(chan struct{})}
	var first *api.Secret
	switch {
	case cfg.RoleID != "":
		if cfg.SecretID == "" && cfg.SecretIDFile == "" {
			return nil, errors.New("vault: AppRole needs a secret_id (SecretID or SecretIDFile)")
		}
		mount := strings.Trim(cfg.AppRoleMount, "/")
		if mount == "" {
			mount = "approle"
		}
		// The secret_id file is read at every login, so that a secret_id
		// rotated by the deployment (a new file) is used at the next
		// re-login without a restart.
		a.login = func(ctx context.Context) (*api.Secret, error) {
			secretID := cfg.SecretID
			if secretID == "" {
				b, err := os.ReadFile(cfg.SecretIDFile)
				if err != nil {
					return nil, fmt.Errorf("%w: vault: reading the AppRole secret_id file: %v", keys.ErrDenied, err)
				}
				secretID = strings.TrimSpace(string(b))
				if secretID == "" {
					return nil, fmt.Errorf("%w: vault: the AppRole secret_id file is empty", keys.ErrDenied)
				}
			}
			return client.Logical().WriteWithContext(ctx, "auth/"+mount+"/login", map[string]any{
				"role_id":   cfg.RoleID,
				"secret_id": secretID,
			})
		}
		if first, err = a.doLogin(ctx); err != nil {
			return nil, err
		}
	default:
		if cfg.Token != "" {
			client.SetToken(cfg.Token)
		}
		if client.Token() == "" {
			return nil, errors.New("vault: no credentials: set a token (VAULT_TOKEN) or an AppRole role_id and secret_id")
		}
		sec, err := client.Auth().Token().LookupSelfWithContext(ctx)
		if err != nil {
			return nil, wrap(err, "looking up", "the token")
		}
		first = tokenSecret(client.Token(), sec)
	}
	s := NewStore(client, cfg.Mount, cfg.Mode)
	s.SetShares(cfg.Shares)
	s.auth = a
	go a.run(first)
	return s, nil
}

// tokenSecret turns a token lookup into the secret a LifetimeWatcher
// renews.
func tokenSecret(token string, lookup *api.Secret) *api.Secret {
	auth := &api.SecretAuth{ClientToken: token}
	if lookup != nil {
		auth.Renewable, _ = lookup.TokenIsRenewable()
		ttl, _ := lookup.TokenTTL()
		auth.LeaseDuration = int(ttl / time.Second)
	}
	return &api.Secret{Auth: auth}
}

// authenticator keeps the client's token alive: it renews it while it can,
// then logs in again (AppRole) before it expires.
type authenticator struct {
	client *api.Client
	log    *slog.Logger
	login  func(context.Context) (*api.Secret, error) // nil for a token

	stop      chan struct{}
	done      chan struct{}
	closeOnce sync.Once
}

func (a *authenticator) doLogin(ctx context.Context) (*api.Secret, error) {
	sec, err := a.login(ctx)
	var re *api.ResponseError
	if errors.As(err, &re) && re.StatusCode >= 400 && re.StatusCode < 500 && re.StatusCode != http.StatusTooManyRequests {
		// Vault answers 400 to a wrong role_id or secret_id.
		return nil, fmt.Errorf("%w: vault: AppRole login refused: %w", keys.ErrDenied, err)
	}
	if errors.Is(err, keys.ErrDenied) { // the secret_id file
		return nil, err
	}
	if err != nil {
		return nil, wrap(err, "logging in with", "AppRole")
	}
	if sec == nil || sec.Auth == nil || sec.Auth.ClientToken == "" {
		return nil, fmt.Errorf("%w: vault: AppRole login returned no token", keys.ErrUnavailable)
	}
	a.client.SetToken(sec.Auth.ClientToken)
	return sec, nil
}

func (a *authenticator) run(sec *api.Secret) {
	defer close(a.done)
	for {
		a.keepAlive(sec)
		select {
		case <-a.stop:
			return
		default:
		}
		if a.login == nil {
			a.log.Warn("vault: the token can no longer be renewed and will expire; restart with a new token")
			<-a.stop
			return
		}
		// Log in again, retrying with backoff until it works or Close.
		wait := time.Second
		for {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			next, err := a.doLogin(ctx)
			cancel()
			if err == nil {
				sec = next
				a.log.Debug("vault: logged in again with AppRole", "ttl_seconds", sec.Auth.LeaseDuration)
				break
			}
			a.log.Warn("vault: AppRole login failed, retrying", "err", err, "retry_in", wait)
			select {
			case <-a.stop:
				return
			case <-time.After(wait):
			}
			wait = min(2*wait, 30*time.Second)
		}
	}
}

// keepAlive renews the token of sec until it cannot be renewed any more
// (maximum TTL), then returns; it returns at once for a token without TTL
// (a root token), and when Close is called.
func (a *authenticator) keepAlive(sec *api.Secret) {
	if sec.Auth.LeaseDuration <= 0 {
		<-a.stop
		return
	}
	w, err := a.client.NewLifetimeWatcher(&api.LifetimeWatcherInput{Secret: sec})
	if err != nil {
		a.log.Warn("vault: cannot renew the token", "err", err)
		return
	}
	go w.Start()
	defer w.Stop()
	for {
		select {
		case <-a.stop:
			return
		case err := <-w.DoneCh():
			if err != nil {
				a.log.Warn("vault: token renewal failed", "err", err)
			}
			a.log.Debug("vault: token renewal over")
			return
		case r := <-w.RenewCh():
			ttl := 0
			if r.Secret != nil && r.Secret.Auth != nil {
				ttl = r.Secret.Auth.LeaseDuration
			}
			a.log.Debug("vault: token renewed", "ttl_seconds", ttl)
			// Near its maximum TTL, a renewal returns less than the
			// token's TTL: log in again now, while the token is still
			// valid for a while, rather than at the watcher's last grace
			// (Vault counts TTLs in whole seconds, which makes that
			// grace too short for short TTLs).
			if a.login != nil && ttl < sec.Auth.LeaseDuration {
				return
			}
		}
	}
}

func (a *authenticator) close() {
	a.closeOnce.Do(func() {
		close(a.stop)
		<-a.done
		if a.login != nil {
			// Revoke the token we created; a token given to us is the
			// caller's.
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			_ = a.client.Auth().Token().RevokeSelfWithContext(ctx, "")
		}
	})
}
