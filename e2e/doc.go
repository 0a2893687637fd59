// Package e2e runs the pseudonymization service the way it is deployed:
// the pseudonymizer and pseudoctl binaries built from this checkout, a real
// HashiCorp Vault (internal/vaulttest), TCP with mutual TLS, and the client
// and owner SDKs acting as prescriber software, the prescription service and
// TherLink. Nothing is faked: no in-process server, no Vault stub, no
// bufconn (those are the package tests' job, STYLE.md #13).
//
// # What runs
//
// TestMain builds cmd/pseudonymizer and cmd/pseudoctl into a temporary
// directory. Each test then starts what it needs:
//
//   - Vault in dev mode, seeded the way an operator does it: the KV v2
//     mount, the policies printed by `pseudoctl policy …`, domains created
//     with `pseudoctl domain create` under an admin-policy token, owner
//     second keys with `pseudoctl owner-key create`.
//   - pseudonymizer processes on 127.0.0.1 with mTLS (certificates made by
//     internal/testpki for each principal), logging in to Vault with an
//     AppRole bound to the service policy (or, in the outage test, a token
//     with that policy).
//   - owners (owner.New) that read their transit keys and k2 from Vault with
//     a token of their owner policy, in vault.Owner mode: the policies are
//     exercised end to end, including what they refuse.
//
// # Tests
//
//   - TestFlows shares one Vault and one server among the scenarios of the
//     prescription use case (register, look up, "my prescriptions of
//     yesterday" with subject binding and expiry, convert to TherLink, double
//     pseudonymization), the Vault policies, transit key rotation and
//     retirement under load, AppRole re-login past several token TTLs, and
//     two replicas behind client-side round robin with one killed under
//     load. Its last subtest checks the blind property over everything the
//     server received and logged during the others.
//   - TestVaultOutage stops Vault under load, checks that no call fails and
//     that health turns NOT_SERVING, restores Vault and waits for SERVING.
//   - TestBlindOnTheWire runs every scenario again through a recording TCP
//     proxy in front of a plaintext development-mode server.
//   - TestDeployConfig runs the server with the arguments, environment and
//     config.json of deploy/kubernetes (paths and addresses pointed at the
//     test's), against a Vault served over TLS: a key the binary does not
//     know would crash the pods.
//   - TestVaultHA starts a three-node Vault cluster (integrated storage,
//     raft) on loopback, points the service at all three nodes, stops the
//     active node under load (no call may fail) and checks that the service
//     follows the new active node.
//   - TestSplitKeys runs split domain keys (k = k₁·k₂, k₂ in the real
//     key-share plugin, cmd/pseudonymizer-vault-plugin, registered in Vault
//     with its SHA-256) in two deployments side by side: k₁ in Vault KV, and
//     k₁ in the service's file (-share-file) with the plugin at another
//     mount (-vault-shares-mount). The prescription scenarios run on
//     domains created with `pseudoctl domain create -split`; domains
//     migrated with `pseudoctl domain split` and refreshed with `domain
//     refresh-shares` keep their pseudonyms at rest; a refresh, a reload
//     and a SIGKILL of the plugin under load fail no call; the plugin unable
//     to start fails items with UNAVAILABLE and turns health NOT_SERVING,
//     and both recover.
//   - TestVaultDevScript runs scripts/vault-dev.sh and the command lines it
//     prints: the service and a round trip in each demo domain (one split).
//   - TestHostileInputs runs a table of attacks (bad points, lengths and
//     encodings, transitInfo tampering, authentication bypasses, floods,
//     faults) against the production-mode binary, each with its expected
//     code and reason, and checks after each one that the process is alive
//     and its RSS bounded.
//
// # How the blind property is checked
//
// The service must never receive nor log an identifier or a pseudonym at
// rest (docs/PROTOCOL.md). With mTLS, the bytes on the network are
// encrypted, so a capture of them proves nothing. Two captures are
// therefore combined:
//
//  1. In TestFlows (mTLS, Vault), every SDK connection has a client
//     interceptor that records each request message serialized with the
//     protobuf codec, the metadata sent with it, and each response: exactly
//     what the server's gRPC layer decodes after TLS. The server's stdout and
//     stderr (at debug level) and its /metrics page are recorded too.
//  2. In TestBlindOnTheWire, the server runs in plaintext development mode
//     behind a TCP proxy that records the raw bytes in both directions:
//     HTTP/2 frames, headers and gRPC messages, whatever the SDK does. This
//     does not rely on the interceptor seeing everything.
//
// Each capture is searched for every identifier used (NISS normalized,
// formatted, and as typed), every pseudonym at rest (single and double) and
// every transit point P_T, as raw bytes, hex (lower and upper case) and
// base64 (standard and URL alphabets, with and without padding, at each of
// the three byte alignments, so that a value embedded in a longer base64
// string is found too).
//
// Tests never skip: a missing dependency (Vault binary, Go toolchain) fails
// them.
package e2e
