// Package deploy holds the deployment of the pseudonymization service:
// Kubernetes manifests for several replicas behind client-side or L7 load
// balancing (kubernetes/), and the configuration of a Vault HA cluster with
// integrated Raft storage (vault/). README.md explains them.
//
// The package has no code. Its tests parse every manifest and every HCL
// file and check what a deployment must not get wrong: resource identity,
// selectors that match, replicas with probes and a restricted security
// context, no development mode, and Vault HA with three Raft joins.
package deploy
