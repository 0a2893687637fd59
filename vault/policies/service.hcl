# Policy of the pseudonymization service (cmd/pseudonymizer).
#
# It reads every domain: meta, scalar k and transit keys, and the KV
# metadata (versions, for change detection, and the list of domains). It
# cannot write anything, and it cannot read the owners' second keys (k2):
# double pseudonymization exists to keep those away from the service.
#
# The KV v2 engine is mounted at "pseudonymizer/"; for another mount, replace
# that prefix. Layout: see the documentation of package keys/vault.
#
# The policy is complete without Vault's "default" policy: give the
# service's role token_no_default_policy=true. Vault evaluates every policy
# of a token on each request, and "default" alone cost about 0.9 ms of
# Vault's CPU per request to the key-share plugin (3.0 ms against 2.1 ms,
# docs/split-keys.md), for paths the service does not use.

# The service's own token: look it up (when given a token), renew it, and
# revoke it when the service stops.
path "auth/token/lookup-self" {
  capabilities = ["read"]
}

path "auth/token/renew-self" {
  capabilities = ["update"]
}

path "auth/token/revoke-self" {
  capabilities = ["update"]
}

path "pseudonymizer/data/domains/+/meta" {
  capabilities = ["read"]
}

path "pseudonymizer/data/domains/+/scalar" {
  capabilities = ["read"]
}

path "pseudonymizer/data/domains/+/transit" {
  capabilities = ["read"]
}

path "pseudonymizer/metadata/domains/*" {
  capabilities = ["read", "list"]
}

path "pseudonymizer/metadata/domains" {
  capabilities = ["list"]
}

# Split domains (mode "split" in meta): the service's share k₁ and its
# generation, when kept in KV (it may instead be in a file of the service's,
# see keys/vault).
path "pseudonymizer/data/domains/+/share" {
  capabilities = ["read"]
}

# The plugin that holds the other share k₂ (mounted at
# "pseudonymizer-shares/", package keyshare): multiply points, and read a
# domain's metadata (generations; never k₂) to check that the plugin has the
# generation of the service's k₁ and answers (health). The service
# multiplies with PATCH (Vault asks the plugin whether the resource exists
# before a PUT or POST, a round trip of its own: docs/PROTOCOL.md, decision
# 25); "update" lets an operator holding this policy try the endpoint with
# `vault write`: both methods do the same.
path "pseudonymizer-shares/multiply" {
  capabilities = ["update", "patch"]
}

path "pseudonymizer-shares/domains/+" {
  capabilities = ["read"]
}
