# Policy of the pseudonymization service (cmd/pseudonymizer).
#
# It reads every domain: meta, scalar k and transit keys, and the KV
# metadata (versions, for change detection, and the list of domains). It
# cannot write anything, and it cannot read the owners' second keys (k2):
# double pseudonymization exists to keep those away from the service.
#
# The KV v2 engine is mounted at "pseudonymizer/"; for another mount, replace
# that prefix. Layout: see the documentation of package keys/vault.

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
# generation of the service's k₁ and answers (health).
path "pseudonymizer-shares/multiply" {
  capabilities = ["update"]
}

path "pseudonymizer-shares/domains/+" {
  capabilities = ["read"]
}
