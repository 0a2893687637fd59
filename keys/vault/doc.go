// Package vault stores pseudonymization domains in HashiCorp Vault, in a KV
// version 2 secrets engine. It is a separate package so that programs that do
// not use Vault never import the Vault client.
//
// # Layout
//
// Under the KV v2 mount (default "pseudonymizer", see [DefaultMount]):
//
//	domains/<domain>/meta     {"audience": "urn:…", "ttl": "5m0s",
//	                           "active": "t2", "accepted": ["t1", "t2"],
//	                           "policy": {"pseudonymize": […], "identify": […],
//	                                      "convert": {"<domain>": […]}, "owners": […]}}
//	domains/<domain>/scalar   {"k": "<base64 of the 32-byte scalar>"}
//	domains/<domain>/transit  {"keys": {"t1": "<base64 of a 32-byte key>", "t2": "…"}}
//	owners/<owner>/<domain>/k2  {"k2": "<base64 of the owner's 32-byte scalar>"}
//
// The scalar and the transit keys are at separate paths so that a Vault
// policy can grant an owner its domain's meta and transit keys and nothing
// else (vault/policies/owner.hcl.tmpl); the service reads all of domains/
// but nothing under owners/ (vault/policies/service.hcl); administrators
// create and rotate, and cannot read scalars (vault/policies/admin.hcl).
//
// The transit keys of a domain are those of the transit path whose kid the
// meta path accepts. Writers keep every intermediate state valid: a rotation
// writes the new key to transit, then makes it active in meta; retiring
// removes the kid from meta, then the key from transit (and destroys the
// older versions of the transit path, which still hold it); creation writes
// scalar, transit and meta last, so a domain exists once its meta does.
// Every write uses check-and-set, so concurrent administrators fail with
// keys.ErrConflict instead of overwriting each other.
//
// The Generation of a domain is a hash of the current version number and
// creation time of each of its paths, so [Store.Version] needs the KV
// metadata only (read capability on <mount>/metadata/domains/<domain>/meta
// and …/transit, plus …/scalar for the service).
//
// # Setting up Vault
//
//	vault secrets enable -path=pseudonymizer kv-v2
//	vault policy write pseudonymizer-service vault/policies/service.hcl
//	vault policy write pseudonymizer-admin vault/policies/admin.hcl
//	pseudoctl policy owner recip-e prescriptions_v1 |
//	    vault policy write pseudonymizer-owner-recip-e-prescriptions_v1 -
//	vault auth enable approle
//	vault write auth/approle/role/pseudonymizer \
//	    token_policies=pseudonymizer-service token_no_default_policy=true \
//	    token_ttl=1h token_max_ttl=24h
//	vault read auth/approle/role/pseudonymizer/role-id
//	vault write -f auth/approle/role/pseudonymizer/secret-id
//
// # Authentication
//
// [Open] logs in with a token (development) or AppRole (role_id and
// secret_id, production), keeps the token alive with a
// [api.LifetimeWatcher] and logs in again before it reaches its maximum
// TTL. TLS to Vault is verified with Config.CACert.
//
// # High availability
//
// Config.Address may list the nodes of a Vault HA cluster (integrated
// storage) separated by commas:
//
//	https://vault-0:8200,https://vault-1:8200,https://vault-2:8200
//
// The store then follows the active node. Its requests ask standbys not to
// forward them (X-Vault-No-Request-Forwarding), and each request goes to
// the node that answered the previous one. When that node cannot be
// reached, answers with a 5xx (sealed, "local node not active but active
// cluster node not found", no active node during an election) or is a
// standby (a redirect), the request goes to the next address, each address
// at most once per request and never past the request's context; the
// store sticks to the first node that answers. A request that no node
// answers fails as with a single address (keys.ErrUnavailable, after
// Config.MaxRetries retries); the other errors are classified as with a
// single address too. Login (AppRole), token lookup, renewal and
// revocation go through the same failover.
package vault
