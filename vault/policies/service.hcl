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
