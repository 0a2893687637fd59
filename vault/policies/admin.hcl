# Policy of the administrators (cmd/pseudoctl).
#
# They create domains, rotate and retire transit keys, create new domain
# versions and owner second keys. They can write a domain scalar k only when
# creating the domain and can never read it; they can create an owner key k2
# but never read or replace it. (Vault decides between "create" and
# "update" by whether the path exists.)
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

path "pseudonymizer/metadata/domains/*" {
  capabilities = ["read", "list"]
}

path "pseudonymizer/metadata/domains" {
  capabilities = ["list"]
}

path "pseudonymizer/data/owners/+/+/k2" {
  capabilities = ["create"]
}

path "pseudonymizer/metadata/owners/+/+/k2" {
  capabilities = ["read"]
}
