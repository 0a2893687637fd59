# Policy of the one-time migration of a domain to split mode
# (`pseudoctl domain split <domain>`), given to an administrator's token
# together with pseudonymizer-admin for that operation only.
#
# Splitting hands the domain's whole scalar k to the plugin once (which
# returns the service's share k₁ = k·k₂⁻¹), so the tool must read k: no
# other policy can. Afterwards every KV version of k is destroyed (the admin
# policy deletes the scalar path's metadata), so this policy reads nothing
# any more for that domain. Revoke the token after the migration.

path "pseudonymizer/data/domains/+/scalar" {
  capabilities = ["read"]
}
