# Vault server configuration for a 3-node HA cluster with integrated
# storage (Raft), as run by the official Helm chart in the "vault"
# namespace (StatefulSet vault-0..2, headless Service vault-internal).
# Install with:
#
#   helm install vault hashicorp/vault -n vault -f deploy/vault/values.yaml \
#       --set-file server.ha.raft.config=deploy/vault/vault-config.hcl
#
# The chart sets VAULT_API_ADDR, VAULT_CLUSTER_ADDR and VAULT_RAFT_NODE_ID
# (the pod name) in each pod; they complete this file.

ui            = false
disable_mlock = true # recommended with integrated storage (see Vault docs)
cluster_name  = "pseudonymizer"

listener "tcp" {
  address         = "[::]:8200"
  cluster_address = "[::]:8201"
  tls_cert_file   = "/vault/userconfig/vault-tls/tls.crt"
  tls_key_file    = "/vault/userconfig/vault-tls/tls.key"
  tls_min_version = "tls12"

  telemetry {
    unauthenticated_metrics_access = false
  }
}

# Three voters: the cluster stays writable with one node down; reads of a
# standby are forwarded to the active node.
storage "raft" {
  path = "/vault/data"

  retry_join {
    leader_api_addr     = "https://vault-0.vault-internal:8200"
    leader_ca_cert_file = "/vault/userconfig/vault-tls/ca.crt"
  }
  retry_join {
    leader_api_addr     = "https://vault-1.vault-internal:8200"
    leader_ca_cert_file = "/vault/userconfig/vault-tls/ca.crt"
  }
  retry_join {
    leader_api_addr     = "https://vault-2.vault-internal:8200"
    leader_ca_cert_file = "/vault/userconfig/vault-tls/ca.crt"
  }
}

# Autopilot (dead server clean-up) is configured at run time:
#   vault operator raft autopilot set-config -cleanup-dead-servers=true \
#       -dead-server-last-contact-threshold=10m -min-quorum=3

# Auto-unseal, so that a restarted node rejoins without operators. Use the
# KMS or HSM of your platform; for example a cloud KMS:
#
#   seal "gcpckms" {
#     project    = "ehealth-prod"
#     region     = "europe-west1"
#     key_ring   = "vault"
#     crypto_key = "pseudonymizer-unseal"
#   }

# Labels the active pod (vault-active Service) and the standbys.
service_registration "kubernetes" {}

telemetry {
  prometheus_retention_time = "30s"
  disable_hostname          = true
}
