# Policy of the administrators (cmd/pseudoctl).
#
# They create, change and delete domains, rotate and retire transit keys,
# create new domain versions, and create, rotate and delete owner second
# keys. They can write a domain scalar k only when creating the domain and
# can never read it (deleting a domain deletes it); they never read an owner
# key k2. (Vault decides between "create" and "update" by whether the path
# exists.)
#
# The KV v2 engine is mounted at "pseudonymizer/"; for another mount, replace
# that prefix. Layout: see the documentation of package keys/vault.

path "pseudonymizer/data/domains/+/meta" {
  capabilities = ["create", "read", "update"]
}

path "pseudonymizer/data/domains/+/transit" {
  capabilities = ["create", "read", "update"]
}

path "pseudonymizer/data/domains/+/scalar" {
  capabilities = ["create"]
}

# Retiring a transit key destroys the older versions that still hold it.
path "pseudonymizer/destroy/domains/+/transit" {
  capabilities = ["update"]
}

# Deleting a domain deletes the metadata (all versions) of its paths.
path "pseudonymizer/metadata/domains/*" {
  capabilities = ["read", "list", "delete"]
}

path "pseudonymizer/metadata/domains" {
  capabilities = ["list"]
}

# Rotating an owner key writes a new version and destroys the older ones.
path "pseudonymizer/data/owners/+/+/k2" {
  capabilities = ["create", "update"]
}

path "pseudonymizer/destroy/owners/+/+/k2" {
  capabilities = ["update"]
}

path "pseudonymizer/metadata/owners/+/+/k2" {
  capabilities = ["read", "delete"]
}

# Split domains. The service's share k₁ (with its generation) when kept in
# KV: administrators write it when creating or splitting a domain and
# read it to refresh the shares (k₁ alone computes nothing: the other share
# is in the plugin, which only the service may use); a refresh destroys the
# older versions.
path "pseudonymizer/data/domains/+/share" {
  capabilities = ["create", "read", "update"]
}

path "pseudonymizer/destroy/domains/+/share" {
  capabilities = ["update"]
}

# The plugin that holds the other share k₂ (package keyshare): create a split
# domain (k₂ drawn there), split a domain's k once, refresh the shares,
# read the metadata (generations), destroy a domain's shares, list, and set
# the limits. No endpoint returns k₂; multiply is the service's alone.
path "pseudonymizer-shares/domains/+" {
  capabilities = ["create", "read", "update", "delete"]
}

path "pseudonymizer-shares/domains/+/split" {
  capabilities = ["update"]
}

path "pseudonymizer-shares/domains/+/refresh" {
  capabilities = ["update"]
}

path "pseudonymizer-shares/domains/" {
  capabilities = ["list"]
}

path "pseudonymizer-shares/config" {
  capabilities = ["read", "update"]
}
